//! Liveness and limits over real sockets: a real relay on 127.0.0.1 and
//! real str0m clients (see `common`).
//!
//! - a client whose packets silently stop (a network-lab blackout on its
//!   peer scope: no DTLS close, nothing) has its session `Closed` once
//!   `dead_after` has passed since the server last heard it, never before;
//! - idle clients in a quiet relay room outlive several `dead_after`
//!   periods: the server's heartbeats make their SCTP stacks answer;
//! - a datagram flood from one peer is dropped and counted before any
//!   processing, while its room-mates keep talking;
//! - `max_peers` sessions at once, the next offer gets `ServerFull`;
//! - `Relay::active_matches` counts a running Dizolaur match and goes back
//!   to zero when it ends.
//!
//! Timing is only ever a lower bound the server must respect (closed no
//! sooner than `dead_after` after the last packet) or a patience limit
//! that stops a hung test.

mod common;

use std::sync::Arc;

use common::*;
use rtcrelay_netlab::{Lab, Scope};

const DEAD_AFTER: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_millis(200);

fn short_liveness(lab: Arc<Lab>) -> RelayConfig {
    RelayConfig {
        shards: 1,
        netlab: lab,
        dead_after: DEAD_AFTER,
        heartbeat_interval: HEARTBEAT,
        ..RelayConfig::default()
    }
}

fn closed_reason(c: &Client) -> Option<String> {
    c.session_events.iter().find_map(|e| match e {
        SessionEvent::Closed { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn rejected(m: &RelayMetrics, reason: &'static str) -> u64 {
    m.sessions_rejected
        .get_or_create(&ReasonLabel { reason })
        .get()
}

async fn relay_pair(config: RelayConfig, room: &str) -> (Relay, RelayMetrics, Client, Client) {
    let (relay, m) = start_relay_with(config).await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "ada", 1, room, &both).await;
    let mut b = connect(&*host, "bob", 2, room, &both).await;
    let ready = pump(&mut [&mut a, &mut b], |cs| {
        cs.iter().all(|c| c.ready().is_some())
    })
    .await;
    assert!(ready, "both sessions ready");
    (relay, m, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_packets_silently_stop_is_closed_after_dead_after() {
    let lab = Arc::new(Lab::default());
    let (relay, m, mut a, mut b) = relay_pair(short_liveness(lab.clone()), "r1").await;

    // The last thing the server hears from a (and it hears it: b gets it).
    let last_sent = Instant::now();
    assert!(a.send("control", false, b"last words"));
    let heard = pump(&mut [&mut a, &mut b], |cs| {
        cs[1].relayed("control").len() == 1
    })
    .await;
    assert!(heard, "b gets a's message");

    // Cut a's packets both ways, silently: no close of any kind.
    lab.set(Scope::Peer("1".into()), blackout(), Instant::now())
        .unwrap();
    let mut closed_seen = None;
    let closed = pump(&mut [&mut a, &mut b], |cs| {
        if closed_reason(cs[0]).is_some() {
            closed_seen = Some(Instant::now());
        }
        closed_seen.is_some()
    })
    .await;
    assert!(closed, "a's session is closed as dead");
    let reason = closed_reason(&a).unwrap();
    assert_eq!(reason, "no packets from the client for 1 s");
    // The server heard a's message at or after `last_sent`, so it may not
    // have given up on a any sooner than this.
    let waited = closed_seen.unwrap() - last_sent;
    assert!(
        waited >= DEAD_AFTER,
        "closed {waited:?} after the last packet, before dead_after"
    );
    assert_eq!(m.dead_peers.get(), 1);
    assert!(
        closed_reason(&b).is_none(),
        "b is fine: {:?}",
        b.session_events
    );

    // b's session goes on: it still gets heartbeats and answers them.
    let before = b.heartbeats;
    let alive = pump(&mut [&mut b], |cs| cs[0].heartbeats >= before + 3).await;
    assert!(alive, "b keeps getting heartbeats");
    assert!(closed_reason(&b).is_none());
    assert_eq!(m.dead_peers.get(), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_in_a_quiet_room_are_kept_alive_by_heartbeats() {
    // Longer than the other tests' dead_after: here the test task itself
    // must answer in time, and a loaded machine can starve it for over a
    // second.
    let dead_after = Duration::from_secs(3);
    let config = RelayConfig {
        dead_after,
        ..short_liveness(Arc::new(Lab::default()))
    };
    let (relay, m, mut a, mut b) = relay_pair(config, "quiet").await;

    // Nobody says anything for three dead_after periods, fifteen times
    // the heartbeat interval.
    let start = Instant::now();
    let waited = pump(&mut [&mut a, &mut b], |_| start.elapsed() >= 3 * dead_after).await;
    assert!(waited);
    for c in [&a, &b] {
        assert!(
            closed_reason(c).is_none(),
            "{}: {:?}",
            c.name,
            c.session_events
        );
        assert!(c.heartbeats > 0, "{} got no heartbeat", c.name);
        assert!(!c.closed, "{}'s Rtc is alive", c.name);
    }
    assert_eq!(m.dead_peers.get(), 0);
    assert!(m.heartbeats.get() >= a.heartbeats + b.heartbeats);
    // Heartbeats are not messages: nothing was relayed.
    assert_eq!(relayed(&m, "control"), 0);
    assert!(a.relayed("control").is_empty() && b.relayed("control").is_empty());

    // And the room still works.
    assert!(a.send("control", true, b"still here"));
    let got = pump(&mut [&mut a, &mut b], |cs| {
        cs[1].relayed("control").len() == 1
    })
    .await;
    assert!(got);
    assert_eq!(
        b.relayed("control")[0],
        (PeerId(1), false, b"still here".to_vec())
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_flood_is_dropped_and_counted_while_room_mates_talk() {
    const RATE: u32 = 100;
    const FLOOD: u64 = 3000;
    let (relay, m) = start_relay_with(RelayConfig {
        shards: 1,
        peer_datagram_rate: RATE,
        ..RelayConfig::default()
    })
    .await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "ada", 1, "r1", &both).await;
    let mut b = connect(&*host, "bob", 2, "r1", &both).await;
    let mut c = connect(&*host, "cy", 3, "r1", &both).await;
    let ready = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs.iter().all(|c| c.ready().is_some())
    })
    .await;
    assert!(ready);

    // a floods from its own (learned) address; the bytes are not even
    // STUN, DTLS or RTP, so only what gets past the limit is looked at.
    let server = relay.local_addr();
    let junk = [0xffu8; 64];
    let flood_start = Instant::now();
    let drops_before = kernel_drops(server);
    for i in 0..FLOOD {
        // The socket is non-blocking: a full send buffer just loses some.
        let _ = a.socket.send_to(&junk, server);
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for i in 0..20u8 {
        assert!(b.send("control", false, &[i]));
    }
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[2].relayed("control").len() == 20
    })
    .await;
    assert!(got, "c gets all of b's messages during a's flood");
    let from_b: Vec<u8> = c
        .relayed("control")
        .iter()
        .map(|(from, _, p)| {
            assert_eq!(*from, PeerId(2));
            p[0]
        })
        .collect();
    assert_eq!(from_b, (0..20).collect::<Vec<u8>>(), "in order, none lost");

    // Every flood datagram was dropped by the kernel, dropped by the
    // limit, or let through; the limit lets through at most one second's
    // worth plus RATE per second since the flood began (a's own traffic
    // included), so the rest must be counted.
    let counted = pump(&mut [&mut a, &mut b, &mut c], |_| {
        let allowed = u64::from(RATE) * (1 + flood_start.elapsed().as_secs() + 1);
        let kernel = kernel_drops(server).saturating_sub(drops_before);
        dropped(&m, "rate_limited") + kernel + allowed >= FLOOD
    })
    .await;
    assert!(
        counted,
        "rate_limited {} kernel {} of {FLOOD}",
        dropped(&m, "rate_limited"),
        kernel_drops(server).saturating_sub(drops_before)
    );
    assert!(dropped(&m, "rate_limited") > 0);
    // What got through was junk, dropped as such, not a session error.
    assert!(dropped(&m, "unparseable") <= u64::from(RATE) * (2 + flood_start.elapsed().as_secs()));

    // The flooder hurt only itself, for a while: once it stops, it talks.
    assert!(a.send("control", false, b"sorry"));
    let got = pump(&mut [&mut a, &mut b, &mut c], |cs| {
        cs[1]
            .relayed("control")
            .iter()
            .any(|(_, _, p)| p == b"sorry")
    })
    .await;
    assert!(got, "a's message arrives after its flood");
    for cl in [&a, &b, &c] {
        assert!(
            closed_reason(cl).is_none(),
            "{}: {:?}",
            cl.name,
            cl.session_events
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_max_peers_are_refused_with_server_full() {
    let (relay, m) = start_relay_with(RelayConfig {
        shards: 1,
        max_peers: 2,
        ..RelayConfig::default()
    })
    .await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "ada", 1, "r1", &both).await;
    let mut b = connect(&*host, "bob", 2, "r1", &both).await;

    let offer = |peer: u32| {
        let (client, offer_sdp, _pending, events) = new_client("extra", peer, &both);
        let request = SessionRequest {
            peer: client.peer,
            room: RoomId::try_from("r1").unwrap(),
            kind: RoomKind::Relay,
            name: "extra".into(),
            offer_sdp,
            events,
        };
        (client, request)
    };
    let (_c, request) = offer(3);
    assert_eq!(
        host.open(request).await.unwrap_err(),
        SessionError::ServerFull(2)
    );
    assert_eq!(rejected(&m, "server_full"), 1);

    // The two sessions are unharmed.
    let ready = pump(&mut [&mut a, &mut b], |cs| {
        cs.iter().all(|c| c.ready().is_some())
    })
    .await;
    assert!(ready);
    assert!(a.send("control", false, b"hi"));
    let got = pump(&mut [&mut a, &mut b], |cs| {
        cs[1].relayed("control").len() == 1
    })
    .await;
    assert!(got);

    // One leaves: there is room again.
    host.close(PeerId(1), &room("r1"), SeatEnd::Leave).await;
    let (_c, request) = offer(3);
    assert!(host.open(request).await.is_ok());
    let (_d, request) = offer(4);
    assert_eq!(
        host.open(request).await.unwrap_err(),
        SessionError::ServerFull(2)
    );
    assert_eq!(rejected(&m, "server_full"), 2);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_matches_counts_a_running_dizolaur_match_until_it_ends() {
    let (relay, _m) = start_relay_with(RelayConfig {
        shards: 2,
        ..RelayConfig::default()
    })
    .await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect_to(&*host, "ada", 1, "g1", RoomKind::Authoritative, &both).await;
    let hello = pump(&mut [&mut a], |cs| {
        cs[0]
            .received
            .iter()
            .any(|(l, _, d)| l == "control" && d.starts_with(br#"{"type":"hello""#))
    })
    .await;
    assert!(hello, "a gets hello");
    assert_eq!(relay.active_matches(), 0, "in the lobby");

    assert!(a.send(
        "control",
        false,
        br#"{"type":"command","command":{"start":{"max_seconds":10}}}"#
    ));
    let running = pump(&mut [&mut a], |_| relay.active_matches() == 1).await;
    assert!(running, "the match counts while it runs");
    // The lone runner, given no input, crashes at the first cactus (or
    // reaches the 10 s limit): the match ends.
    let ended = pump_long(&mut a, || relay.active_matches() == 0).await;
    assert!(ended, "the count drops back when the match ends");
    let events: Vec<String> = a
        .received
        .iter()
        .filter(|(l, _, _)| l == "control")
        .map(|(_, _, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(
        events.iter().any(|e| e.contains("\"match_end\"")),
        "the client was told the match ended"
    );

    // A second match, then the room goes away with it running.
    assert!(a.send(
        "control",
        false,
        br#"{"type":"command","command":{"start":{"max_seconds":60}}}"#
    ));
    let running = pump(&mut [&mut a], |_| relay.active_matches() == 1).await;
    assert!(running);
    host.close(PeerId(1), &room("g1"), SeatEnd::Leave).await;
    let gone = pump(&mut [&mut a], |_| relay.active_matches() == 0).await;
    assert!(gone, "a closed room's match no longer counts");
    relay.shutdown().await;
}

/// Steps `client` until `done` (a match lasts its countdown and up to its
/// time limit, longer than `PATIENCE` would allow on a busy machine).
async fn pump_long(client: &mut Client, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < 4 * PATIENCE {
        client.step();
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}
