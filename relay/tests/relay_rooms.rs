//! A real relay on 127.0.0.1 and real str0m clients (full ICE, not lite) on
//! their own UDP sockets, connected through `SessionHost::open` exactly as
//! signaling does it. No wall-clock assertions: the time limits only stop a
//! hung test. The harness is in `common`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_between_members_of_a_room_only() {
    let (relay, m) = start_relay(2).await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "a", 1, "r1", &both).await;
    let mut b = connect(&*host, "b", 2, "r1", &both).await;
    let mut c = connect(&*host, "c", 3, "r2", &both).await;
    assert_eq!(m.sessions.get(), 3);

    let all_ready = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs.iter()
            .all(|c| c.ready().is_some() && c.channels.len() == 2)
    })
    .await;
    assert!(
        all_ready,
        "all three clients get Ready and open both channels"
    );
    for cl in [&a, &b, &c] {
        assert_eq!(
            cl.ready(),
            Some((ChannelParams::REALTIME, ChannelParams::CONTROL)),
            "{}",
            cl.name
        );
    }
    assert_eq!(m.peers_connected.get(), 3);

    // Control, both ways, text and binary.
    assert!(a.send("control", false, b"hello from a"));
    assert!(b.send("control", true, &[1, 2, 3]));
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[0].relayed("control").len() == 1 && cs[1].relayed("control").len() == 1
    })
    .await;
    assert!(got, "control messages are relayed both ways");
    assert_eq!(
        a.relayed("control"),
        vec![(PeerId(2), false, vec![1, 2, 3])]
    );
    assert_eq!(
        b.relayed("control"),
        vec![(PeerId(1), true, b"hello from a".to_vec())]
    );
    assert_eq!(relayed(&m, "control"), 2);

    // Realtime is unreliable: send paced messages and expect most of them.
    const N: usize = 10;
    for i in 0..N {
        assert!(a.send("realtime", true, &[0xA0, i as u8]));
        assert!(b.send("realtime", false, format!("b{i}").as_bytes()));
        settle(&mut [&mut a, &mut b, &mut c], 5).await;
    }
    pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[0].relayed("realtime").len() == N && cs[1].relayed("realtime").len() == N
    })
    .await;
    let at_a = a.relayed("realtime");
    let at_b = b.relayed("realtime");
    assert!(
        at_a.len() * 2 >= N && at_b.len() * 2 >= N,
        "{} and {} of {N}",
        at_a.len(),
        at_b.len()
    );
    assert!(at_a
        .iter()
        .all(|(s, text, p)| *s == PeerId(2) && *text && p.starts_with(b"b")));
    assert!(at_b
        .iter()
        .all(|(s, text, p)| *s == PeerId(1) && !*text && p[0] == 0xA0));
    assert_eq!(relayed(&m, "realtime"), (at_a.len() + at_b.len()) as u64);

    // Too large for the lane (the 6-byte header counts): dropped, counted.
    assert!(a.send("control", true, &vec![7; 16 * 1024 - 6 + 1]));
    assert!(a.send("realtime", true, &[7; 1200 - 6 + 1]));
    // An exact fit passes.
    assert!(a.send("control", true, &vec![8; 16 * 1024 - 6]));
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[1].relayed("control").len() == 2
    })
    .await;
    assert!(got);
    assert_eq!(b.relayed("control")[1].2.len(), 16 * 1024 - 6);
    assert_eq!(msg_dropped(&m, "too_large"), 2);

    // The peer in the other room heard nothing.
    assert!(c.received.is_empty(), "c got {:?}", c.received.len());

    // Garbage: from unknown sources, a STUN request for an unknown ufrag,
    // and undecodable bytes from a member's own address.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr();
    for i in 0..20u8 {
        stranger.send_to(&[i; 100], relay_addr).unwrap();
    }
    stranger.send_to(&[], relay_addr).unwrap();
    stranger
        .send_to(&stun_request("nosuchufrag:x"), relay_addr)
        .unwrap();
    for _ in 0..5 {
        a.socket.send_to(&[0xff; 50], relay_addr).unwrap();
    }
    let counted = pump(&mut [&mut a, &mut b, &mut c], |_| {
        dropped(&m, "unknown_source") >= 21
            && dropped(&m, "unknown_ufrag") >= 1
            && dropped(&m, "unparseable") >= 5
    })
    .await;
    assert!(
        counted,
        "unknown_source={} unknown_ufrag={} unparseable={}",
        dropped(&m, "unknown_source"),
        dropped(&m, "unknown_ufrag"),
        dropped(&m, "unparseable")
    );

    // ... and disturbed nobody.
    assert!(b.send("control", false, b"still here"));
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[0].relayed("control").len() == 2
    })
    .await;
    assert!(got);
    assert_eq!(
        a.relayed("control")[1],
        (PeerId(2), true, b"still here".to_vec())
    );
    assert_eq!(m.peers_connected.get(), 3);
    assert!(m.datagrams_in.get() > 0 && m.bytes_in.get() > m.datagrams_in.get());
    assert!(m.datagrams_out.get() > 0 && m.bytes_out.get() > m.datagrams_out.get());

    // A client that closes its side (DTLS close_notify) is reported Closed.
    c.rtc.close().unwrap();
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[2]
            .session_events
            .iter()
            .any(|e| matches!(e, SessionEvent::Closed { .. }))
    })
    .await;
    assert!(
        got,
        "c's session is reported closed: {:?}",
        c.session_events
    );
    assert_eq!(m.sessions.get(), 2);
    assert_eq!(m.peers_connected.get(), 2);

    // close() from signaling: no event, and b is out of the room.
    host.close(PeerId(2), &room("r1"), SeatEnd::Leave).await;
    let before = relayed(&m, "control");
    assert!(a.send("control", false, b"anyone?"));
    settle(&mut [&mut a, &mut b], 50).await;
    assert_eq!(relayed(&m, "control"), before, "nobody left to relay to");
    assert!(b
        .session_events
        .iter()
        .all(|e| matches!(e, SessionEvent::Ready { .. })));
    assert_eq!(m.sessions.get(), 1);
    assert_eq!(m.peers_connected.get(), 1);

    // Shutdown closes the rest, with an event.
    relay.shutdown().await;
    a.step();
    assert!(a
        .session_events
        .iter()
        .any(|e| matches!(e, SessionEvent::Closed { .. })));
    assert_eq!(m.sessions.get(), 0);
    assert_eq!(m.peers_connected.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_configured_channels_are_rejected() {
    let (relay, m) = start_relay(1).await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "a", 1, "r1", &both).await;
    let reliable_realtime = ChannelConfig {
        label: "realtime".into(),
        ..Default::default()
    };
    let mut d = connect(&*host, "d", 4, "r1", &[reliable_realtime, control_config()]).await;
    let chat = ChannelConfig {
        label: "chat".into(),
        ..Default::default()
    };
    let mut e = connect(&*host, "e", 5, "r1", &[chat]).await;

    let rejected = |c: &Client| {
        c.session_events.iter().find_map(|e| match e {
            SessionEvent::ChannelRejected { reason } => Some(reason.clone()),
            _ => None,
        })
    };
    let got = pump(&mut [&mut a, &mut d, &mut e], |cs| {
        cs[0].ready().is_some() && rejected(cs[1]).is_some() && rejected(cs[2]).is_some()
    })
    .await;
    assert!(got, "d: {:?} e: {:?}", d.session_events, e.session_events);
    assert_eq!(
        rejected(&d).unwrap(),
        "channel \"realtime\" must be ordered=false maxRetransmits=0, got ordered=true reliable"
    );
    assert!(rejected(&e).unwrap().contains("unknown channel \"chat\""));
    assert_eq!(d.ready(), None);
    assert_eq!(
        m.sessions_rejected
            .get_or_create(&ReasonLabel {
                reason: "channel_rejected"
            })
            .get(),
        2
    );
    assert_eq!(m.sessions.get(), 1);
    assert_eq!(m.peers_connected.get(), 1);
    // The rejected sessions are gone: their ids are free again.
    let (_, offer, _, tx) = new_client("d2", 4, &both);
    let again = host
        .open(SessionRequest {
            peer: PeerId(4),
            room: RoomId::try_from("r1").unwrap(),
            kind: RoomKind::Relay,
            name: "d2".into(),
            offer_sdp: offer,
            events: tx,
        })
        .await;
    assert!(again.is_ok(), "{again:?}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_host_errors() {
    let (relay, m) = start_relay(1).await;
    let host = relay.host();
    let request = |peer: u32, offer_sdp: String, kind: RoomKind| SessionRequest {
        peer: PeerId(peer),
        room: RoomId::try_from("r").unwrap(),
        kind,
        name: format!("p{peer}"),
        offer_sdp,
        events: mpsc::unbounded_channel().0,
    };
    let both = [realtime_config(), control_config()];

    let err = host
        .open(request(1, "v=0\r\nnonsense".into(), RoomKind::Relay))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::BadSdp(_)), "{err}");

    let (_, offer, _, _) = new_client("x", 1, &both);
    host.open(request(1, offer.clone(), RoomKind::Relay))
        .await
        .unwrap();
    let err = host
        .open(request(1, offer, RoomKind::Relay))
        .await
        .unwrap_err();
    assert_eq!(err, SessionError::SessionExists(PeerId(1)));

    assert_eq!(
        host.add_remote_candidate(PeerId(9), "candidate:1 1 udp 1 127.0.0.1 9 typ host".into())
            .await,
        Err(SessionError::NoSession(PeerId(9)))
    );
    assert_eq!(
        host.add_remote_candidate(PeerId(1), String::new()).await,
        Ok(())
    );
    let mdns = "candidate:1 1 udp 2122260223 3f2a1c9e-1111-2222-3333-444455556666.local 5 typ host";
    assert_eq!(
        host.add_remote_candidate(PeerId(1), mdns.into()).await,
        Ok(())
    );
    let ok = "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host";
    assert_eq!(
        host.add_remote_candidate(PeerId(1), ok.into()).await,
        Ok(())
    );
    assert_eq!(
        host.add_remote_candidate(PeerId(1), ok.trim_start_matches("candidate:").into())
            .await,
        Ok(())
    );
    let err = host
        .add_remote_candidate(PeerId(1), "candidate:garbage".into())
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::BadCandidate(_)), "{err}");

    host.close(PeerId(1), &room("r"), SeatEnd::Leave).await;
    host.close(PeerId(1), &room("r"), SeatEnd::Leave).await; // twice is harmless
    assert_eq!(
        host.add_remote_candidate(PeerId(1), ok.into()).await,
        Err(SessionError::NoSession(PeerId(1)))
    );
    assert_eq!(
        m.sessions_rejected
            .get_or_create(&ReasonLabel { reason: "bad_sdp" })
            .get(),
        1
    );

    relay.shutdown().await;
    let (_, offer, _, _) = new_client("late", 2, &both);
    let err = host
        .open(request(2, offer, RoomKind::Relay))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::Unavailable(_)), "{err}");
}

/// A STUN binding request with just a USERNAME (no integrity).
fn stun_request(username: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[1; 12]);
    m.extend_from_slice(&attr);
    m
}
