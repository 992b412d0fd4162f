//! Relay rooms end to end: real `rtcrelay serve`, real WebRTC clients
//! (rtcrelay-client). Members of a room hear each other on both channels,
//! see each other come and go, and nobody outside the room hears anything.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use rtcrelay_client::{
    Channel, ChannelParams, Client, ClientConfig, ClientError, ClientEvent, ConnectOptions,
    ErrorCode, LeaveReason, PeerId,
};

/// Only there so that a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long without a realtime message before the rest count as lost.
const REALTIME_IDLE: Duration = Duration::from_secs(2);
const N: usize = 100;

async fn connect(server: &TestServer, room: &str, name: &str) -> Client {
    Client::connect(ClientConfig::new(&server.ws_url, room, name))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

async fn next_event(client: &mut Client) -> ClientEvent {
    tokio::time::timeout(PATIENCE, client.next_event())
        .await
        .unwrap_or_else(|_| panic!("peer {} waited too long for an event", client.peer_id()))
        .expect("client event stream ended")
}

/// The next event that is not a message; a message here is a test failure.
async fn next_room_event(client: &mut Client) -> ClientEvent {
    let event = next_event(client).await;
    assert!(
        !matches!(event, ClientEvent::Message { .. }),
        "unexpected message: {event:?}"
    );
    event
}

/// Receives `n` messages on `channel`, all from `from`, and returns them in
/// arrival order. Any other message fails the test.
async fn expect_messages(
    client: &mut Client,
    from: PeerId,
    channel: Channel,
    text: bool,
    n: usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match next_event(client).await {
            ClientEvent::Message {
                from: f,
                channel: c,
                text: t,
                payload,
            } => {
                assert_eq!(
                    (f, c, t),
                    (from, channel, text),
                    "message from the wrong place"
                );
                got.push(payload.to_vec());
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

/// Receives realtime messages from `from` until `n` arrived or none came for
/// [`REALTIME_IDLE`]; returns the distinct payloads.
async fn collect_realtime(
    client: &mut Client,
    from: PeerId,
    text: bool,
    n: usize,
) -> BTreeSet<Vec<u8>> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let Ok(event) = tokio::time::timeout(REALTIME_IDLE, client.next_event()).await else {
            break;
        };
        match event.expect("client event stream ended") {
            ClientEvent::Message {
                from: f,
                channel,
                text: t,
                payload,
            } => {
                assert_eq!(
                    (f, channel, t),
                    (from, Channel::Realtime, text),
                    "message from the wrong place"
                );
                assert!(got.insert(payload.to_vec()), "duplicate realtime message");
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

fn payloads(prefix: &str) -> Vec<Vec<u8>> {
    (0..N)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// Pacing keeps the unreliable channel's loss to what the network does,
/// not what a burst into a full buffer does.
async fn pace() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_room_members_hear_each_other_and_only_each_other() {
    let server = TestServer::start();

    let mut alice = connect(&server, "room1", "alice").await;
    assert!(alice.roster().is_empty(), "first member sees an empty room");
    // The server peer reports the parameters it saw on its side.
    let (realtime, control) = alice.server_channel_params();
    assert!(!realtime.ordered, "realtime must be unordered: {realtime}");
    assert_eq!(realtime.max_retransmits, Some(0), "realtime: {realtime}");
    assert_eq!(
        realtime.max_packet_lifetime_ms, None,
        "realtime: {realtime}"
    );
    assert_eq!(control, ChannelParams::CONTROL);

    let mut bob = connect(&server, "room1", "bob").await;
    assert_ne!(alice.peer_id(), bob.peer_id());
    let roster: Vec<_> = bob
        .roster()
        .iter()
        .map(|r| (r.peer_id, r.name.as_str()))
        .collect();
    assert_eq!(roster, [(alice.peer_id(), "alice")]);
    assert_eq!(
        next_room_event(&mut alice).await,
        ClientEvent::PeerJoined {
            peer_id: bob.peer_id(),
            name: "bob".into()
        }
    );
    let roster: Vec<_> = alice
        .roster()
        .iter()
        .map(|r| (r.peer_id, r.name.as_str()))
        .collect();
    assert_eq!(roster, [(bob.peer_id(), "bob")]);

    // Another room, connected the whole time, talking to itself.
    let mut carol = connect(&server, "room2", "carol").await;
    assert!(carol.roster().is_empty(), "room2 is a different room");
    for i in 0..10 {
        carol
            .send_text(Channel::Control, &format!("carol-{i}"))
            .await
            .unwrap();
        carol.send(Channel::Realtime, b"carol").await.unwrap();
    }

    // control, alice → bob, text: all of it, in order.
    let sent = payloads("a2b");
    for p in &sent {
        alice
            .send_text(Channel::Control, std::str::from_utf8(p).unwrap())
            .await
            .unwrap();
    }
    let got = expect_messages(&mut bob, alice.peer_id(), Channel::Control, true, N).await;
    assert_eq!(got, sent, "control delivers everything in order");

    // control, bob → alice, binary.
    let sent: Vec<Vec<u8>> = (0..N as u32).map(|i| i.to_be_bytes().repeat(50)).collect();
    for p in &sent {
        bob.send(Channel::Control, p).await.unwrap();
    }
    let got = expect_messages(&mut alice, bob.peer_id(), Channel::Control, false, N).await;
    assert_eq!(got, sent, "control delivers everything in order");

    // realtime, alice → bob, binary, paced: most of it.
    let sent = payloads("rt-a2b");
    for p in &sent {
        alice.send(Channel::Realtime, p).await.unwrap();
        pace().await;
    }
    let got = collect_realtime(&mut bob, alice.peer_id(), false, N).await;
    eprintln!("realtime alice→bob: {}/{N} delivered", got.len());
    assert!(got.iter().all(|p| sent.contains(p)), "only what alice sent");
    assert!(
        got.len() >= 90,
        "realtime alice→bob delivered {}/{N}",
        got.len()
    );

    // realtime, bob → alice, text.
    let sent = payloads("rt-b2a");
    for p in &sent {
        bob.send_text(Channel::Realtime, std::str::from_utf8(p).unwrap())
            .await
            .unwrap();
        pace().await;
    }
    let got = collect_realtime(&mut alice, bob.peer_id(), true, N).await;
    eprintln!("realtime bob→alice: {}/{N} delivered", got.len());
    assert!(got.iter().all(|p| sent.contains(p)), "only what bob sent");
    assert!(
        got.len() >= 90,
        "realtime bob→alice delivered {}/{N}",
        got.len()
    );

    // A third member who leaves with `leave`; the ws stays usable.
    let dave = connect(&server, "room1", "dave").await;
    for member in [&mut alice, &mut bob] {
        assert_eq!(
            next_room_event(member).await,
            ClientEvent::PeerJoined {
                peer_id: dave.peer_id(),
                name: "dave".into()
            }
        );
    }
    dave.leave().await;
    for member in [&mut alice, &mut bob] {
        assert_eq!(
            next_room_event(member).await,
            ClientEvent::PeerLeft {
                peer_id: dave.peer_id(),
                reason: LeaveReason::Left
            }
        );
    }
    dave.ping().await.expect("the WebSocket outlives leave");
    dave.close().await;

    // bob closes: alice is alone again.
    let bob_id = bob.peer_id();
    bob.close().await;
    assert_eq!(
        next_room_event(&mut alice).await,
        ClientEvent::PeerLeft {
            peer_id: bob_id,
            reason: LeaveReason::Left
        }
    );
    assert!(alice.roster().is_empty(), "roster follows the events");

    // A round trip on the reliable channel inside room2 proves carol's
    // session is alive; everything room1 sent would have reached her by now.
    let mut erin = connect(&server, "room2", "erin").await;
    erin.send_text(Channel::Control, "to carol").await.unwrap();
    let mut heard = Vec::new();
    loop {
        match next_event(&mut carol).await {
            ClientEvent::Message {
                from,
                channel: Channel::Control,
                payload,
                ..
            } if from == erin.peer_id() => {
                assert_eq!(&payload[..], b"to carol");
                break;
            }
            other => heard.push(other),
        }
    }
    while let Some(e) = carol.try_next_event() {
        heard.push(e);
    }
    assert_eq!(
        heard,
        [ClientEvent::PeerJoined {
            peer_id: erin.peer_id(),
            name: "erin".into()
        }],
        "carol hears only her own room"
    );
    // And erin, who joined room2 after carol talked, got none of it either:
    // the relay does not replay history.
    assert!(erin.try_next_event().is_none());

    // alice heard nothing from room2 the whole time (checked by the `from`
    // assertions above) and nothing is pending.
    assert!(alice.try_next_event().is_none());
    alice.close().await;
    carol.close().await;
    erin.close().await;
}

/// The server must refuse the session with `channel_rejected`: either
/// `connect` fails with it, or (when the server sent `ready` for the two good
/// channels before it saw the bad one) it is the next event.
async fn assert_rejected(result: Result<Client, ClientError>, what: &str) {
    match result {
        Err(ClientError::Signaling(ErrorCode::ChannelRejected, _)) => {}
        Err(e) => panic!("{what}: wrong error {e}"),
        Ok(mut client) => match next_room_event(&mut client).await {
            ClientEvent::Error {
                code: ErrorCode::ChannelRejected,
                ..
            } => {}
            other => panic!("{what}: accepted, then {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_with_wrong_parameters_or_labels_are_rejected() {
    let server = TestServer::start();
    // One room per case: a refused client's `peer_left` must not reach the
    // next case's client before its own `channel_rejected`.
    let config = |name: &str| ClientConfig::new(&server.ws_url, format!("refused-{name}"), name);

    // `realtime` opened reliable, as a naive client would.
    let options = ConnectOptions {
        realtime: ChannelParams::CONTROL,
        ..ConnectOptions::default()
    };
    let result = Client::connect_with(config("naive"), options).await;
    assert_rejected(result, "reliable realtime").await;

    // `realtime` ordered but without retransmissions.
    let options = ConnectOptions {
        realtime: ChannelParams {
            ordered: true,
            ..ChannelParams::REALTIME
        },
        ..ConnectOptions::default()
    };
    let result = Client::connect_with(config("ordered"), options).await;
    assert_rejected(result, "ordered realtime").await;

    // `control` opened unreliable.
    let options = ConnectOptions {
        control: ChannelParams::REALTIME,
        ..ConnectOptions::default()
    };
    let result = Client::connect_with(config("lossy"), options).await;
    assert_rejected(result, "unreliable control").await;

    // A label the server does not know.
    let options = ConnectOptions {
        extra_channels: vec![("chat".into(), ChannelParams::CONTROL)],
        ..ConnectOptions::default()
    };
    let result = Client::connect_with(config("chatty"), options).await;
    assert_rejected(result, "unknown label").await;

    // The server still serves well-behaved clients afterwards.
    let mut a = connect(&server, "fine", "good-a").await;
    let mut b = connect(&server, "fine", "good-b").await;
    assert_eq!(b.roster().len(), 1);
    assert!(matches!(
        next_room_event(&mut a).await,
        ClientEvent::PeerJoined { .. }
    ));
    b.send_text(Channel::Control, "hi").await.unwrap();
    let got = expect_messages(&mut a, b.peer_id(), Channel::Control, true, 1).await;
    assert_eq!(got, [b"hi".to_vec()]);
    a.send(Channel::Control, b"yo").await.unwrap();
    let got = expect_messages(&mut b, a.peer_id(), Channel::Control, false, 1).await;
    assert_eq!(got, [b"yo".to_vec()]);
}
