//! Each signaling limit breached in a bounded loop on loopback against the
//! real binary with small configured limits: the answer (HTTP status or
//! error code), the `rtcrelay_signaling_limit_hits_total{limit}` counter,
//! and a room-mate that keeps being served. Also the WebSocket heartbeat:
//! a client that goes silent without closing is dropped and its room told.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{RawWs, TestServer};
use rtcrelay_client::{Client, ClientConfig, ClientError};
use rtcrelay_protocol::ErrorCode;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite;

fn start(toml: &str) -> TestServer {
    let dir = std::env::temp_dir().join(format!("rtcrelay-e2e-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.toml",
        toml.len() * 31 + toml.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::write(&path, toml).unwrap();
    TestServer::start_with(&["--no-turn", "--config", path.to_str().unwrap()])
}

fn hits(server: &TestServer, limit: &str) -> f64 {
    server.metric(&format!(
        "rtcrelay_signaling_limit_hits_total{{limit=\"{limit}\"}}"
    ))
}

/// A `ping` answered: the connection is served.
async fn served(ws: &mut RawWs, id: u32) {
    ws.send_text(&json!({"type": "ping", "id": id}).to_string())
        .await;
    let pong = ws.expect("pong").await;
    assert_eq!(pong["id"], id);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket from the loopback address `from` (127.0.0.0/8 is all
/// loopback), so that one test can be several client IPs.
async fn connect_from(server: &TestServer, from: [u8; 4]) -> Result<Ws, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(server.http).await.unwrap();
    tokio_tungstenite::client_async(server.ws_url.as_str(), stream)
        .await
        .map(|(ws, _)| ws)
}

fn status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

#[tokio::test]
async fn connections_per_ip_and_in_total() {
    let server = start("[limits]\nmax_connections_per_ip = 2\nmax_connections = 3\n");
    let mut a = RawWs::connect(&server).await;
    a.join("room", None).await;
    let b = connect_from(&server, [127, 0, 0, 1]).await.expect("second");
    for _ in 0..5 {
        assert_eq!(status(connect_from(&server, [127, 0, 0, 1]).await), 429);
    }
    assert_eq!(hits(&server, "connections_per_ip"), 5.0);
    // Another address still gets in, up to the total.
    let c = connect_from(&server, [127, 0, 0, 2])
        .await
        .expect("other ip");
    for _ in 0..3 {
        assert_eq!(status(connect_from(&server, [127, 0, 0, 3]).await), 503);
    }
    assert_eq!(hits(&server, "connections"), 3.0);
    served(&mut a, 1).await;
    // A closed connection gives its slot back.
    drop(b);
    drop(c);
    let mut again = None;
    for _ in 0..100 {
        match connect_from(&server, [127, 0, 0, 1]).await {
            Ok(ws) => {
                again = Some(ws);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(again.is_some(), "the slots of closed connections came back");
    served(&mut a, 2).await;
}

#[tokio::test]
async fn message_rate_drops_and_tells_once_per_second() {
    let server = start("[limits]\nmessages_per_sec = 5\nmessage_burst = 10\n");
    let mut flooder = RawWs::connect(&server).await;
    flooder.join("room", None).await;
    let mut mate = RawWs::connect(&server).await;
    mate.join("room", None).await;
    flooder.expect("peer_joined").await;
    let before = hits(&server, "message_rate");
    const SENT: u32 = 200;
    for id in 0..SENT {
        flooder
            .send_text(&json!({"type": "ping", "id": id}).to_string())
            .await;
    }
    // The room-mate is served throughout.
    served(&mut mate, 7).await;
    // A last ping after the bucket refilled marks the end of the answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    flooder
        .send_text(&json!({"type": "ping", "id": 9999}).to_string())
        .await;
    let (mut pongs, mut notices) = (0u32, 0u32);
    loop {
        let msg = flooder.next().await.expect("still connected");
        match msg["type"].as_str() {
            Some("pong") if msg["id"] == 9999 => break,
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(msg["code"], "rate_limited", "{msg}");
                assert_eq!(msg["fatal"], false);
                notices += 1;
            }
            other => panic!("unexpected {other:?}: {msg}"),
        }
    }
    // The burst of 10, less the join, and whatever refilled meanwhile.
    assert!((9..SENT).contains(&pongs), "{pongs} of {SENT} answered");
    assert!(notices >= 1 && notices < SENT - pongs, "{notices} notices");
    // Every message was answered or dropped and counted.
    assert_eq!(
        hits(&server, "message_rate") - before,
        f64::from(SENT - pongs)
    );
    served(&mut mate, 8).await;
}

#[tokio::test]
async fn rooms_and_message_size() {
    let server = start("[rooms]\nmax_rooms = 2\n[signaling]\nmax_message_bytes = 4096\n");
    let mut a = RawWs::connect(&server).await;
    a.join("one", None).await;
    let mut b = RawWs::connect(&server).await;
    b.join("two", None).await;
    for _ in 0..3 {
        let mut c = RawWs::connect(&server).await;
        c.send_text(
            &json!({"type": "join", "version": 1, "room": "three", "kind": "relay", "name": "c"})
                .to_string(),
        )
        .await;
        c.expect_error("too_many_rooms").await;
    }
    assert_eq!(hits(&server, "rooms"), 3.0);

    let mut big = RawWs::connect(&server).await;
    big.join("one", None).await;
    a.expect("peer_joined").await;
    let padding = "x".repeat(5000);
    big.send_text(&json!({"type": "ping", "id": 1, "pad": padding}).to_string())
        .await;
    let err = big.expect_error("message_too_large").await;
    assert_eq!(err["fatal"], true);
    assert_eq!(big.next().await.expect_err("closed"), Some(1009));
    assert_eq!(hits(&server, "message_size"), 1.0);
    // Its room-mate hears it leave and is served.
    a.expect("peer_left").await;
    served(&mut a, 3).await;
    served(&mut b, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_peers_beyond_max_peers_get_server_full() {
    let server = start("[relay]\nmax_peers = 1\n");
    let first = Client::connect(ClientConfig::new(&server.ws_url, "room", "first"))
        .await
        .expect("the first peer fits");
    let refused = Client::connect(ClientConfig::new(&server.ws_url, "room", "second")).await;
    match refused {
        Err(ClientError::Signaling(code, message)) => {
            assert_eq!(code, ErrorCode::ServerFull, "{message}")
        }
        Err(e) => panic!("expected server_full, got {e}"),
        Ok(_) => panic!("a second peer was admitted beyond relay.max_peers = 1"),
    }
    assert_eq!(hits(&server, "peers"), 1.0);
    assert!(first.peer_id().0 > 0);
    drop(first);
}

#[tokio::test]
async fn a_silent_connection_is_dropped_and_its_room_told() {
    let server = start(
        "[signaling]\nheartbeat_interval = \"200ms\"\ndead_after = \"1s\"\n\
         [resume]\ngrace = \"1s\"\n",
    );
    let mut silent = RawWs::connect(&server).await;
    let welcome = silent.join("room", None).await;
    let silent_id = welcome["peer_id"].clone();
    let mut mate = RawWs::connect(&server).await;
    mate.join("room", None).await;
    silent.expect("peer_joined").await;
    // `silent` is never polled again: it neither reads (so it answers no
    // Ping) nor writes, and never closes its TCP connection. `mate` keeps
    // reading, so its WebSocket library answers the Pings. Its seat is kept
    // for the grace period (it might resume), then released.
    let away = mate.expect("peer_away").await;
    assert_eq!(away["peer_id"], silent_id);
    assert!(
        away["grace_ms"].as_u64().is_some_and(|ms| ms <= 1000),
        "{away}"
    );
    let left = mate.expect("peer_left").await;
    assert_eq!(left["peer_id"], silent_id);
    assert_eq!(left["reason"], "disconnected", "{left}");
    assert_eq!(
        server.metric("rtcrelay_signaling_dead_connections_total"),
        1.0
    );
    assert_eq!(server.metric("rtcrelay_signaling_players_away_total"), 1.0);
    assert_eq!(
        server.metric("rtcrelay_signaling_seats_released_total"),
        1.0
    );
    served(&mut mate, 1).await;
    // The server closed the silent one's connection.
    let mut silent = silent;
    let mut closed = false;
    for _ in 0..100 {
        match silent.next().await {
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed);
}
