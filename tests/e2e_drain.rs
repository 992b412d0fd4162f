//! Graceful drain against the real binary: two Rust game clients play a
//! short Dizolaur match; SIGTERM arrives mid-match. The server stops taking
//! joins (`draining`), tells every connected client (`draining` with a
//! deadline), answers `/healthz` with 503 "draining", lets the match finish
//! (`match_end` reaches both players), then closes and exits 0. The time
//! limits only stop a hung test. A second signal during the drain exits at
//! once with status 1.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{RawWs, TestServer};
use rtcrelay_client::{ClientConfig, GameClient, GameEvent, Predictor, WorldState};
use rtcrelay_protocol::RoomKind;
use rtcrelay_relay::dizolaur::{bot_input, predict_player, P_PEER};
use serde_json::json;
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(120);
/// The shortest match Dizolaur allows.
const MATCH_SECONDS: u32 = 10;

struct Physics;

impl Predictor for Physics {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

async fn player(url: &str, name: &str) -> GameClient {
    let mut config = ClientConfig::new(url, "dino", name);
    config.kind = RoomKind::Authoritative;
    let game = GameClient::connect(config)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot join: {e}"));
    game.set_predictor(Box::new(Physics));
    game.set_input_source(Box::new(|core| {
        Some(vec![bot_input(core.predicted()?, core.state()?)])
    }));
    game
}

/// Plays until the session ends; returns how many `match_end` events came.
/// The starter starts the match once both players are seated and reports
/// `match_start` on `started`.
async fn play(
    mut game: GameClient,
    starter: bool,
    mut started: Option<oneshot::Sender<()>>,
) -> usize {
    let mut start_sent = false;
    let mut match_ends = 0;
    loop {
        let Some(event) = game.next_game_event().await else {
            return match_ends;
        };
        match event {
            GameEvent::Snapshot { .. } if starter && !start_sent => {
                let seated = game.state().is_some_and(|(_, w)| {
                    (1..=4u32)
                        .filter_map(|id| w.get(id))
                        .filter(|lane| lane.fields[P_PEER] != 0)
                        .count()
                        == 2
                });
                if seated {
                    game.command(json!({"start": {"bots": true, "max_seconds": MATCH_SECONDS}}));
                    start_sent = true;
                }
            }
            GameEvent::Event { event, .. } => match event["kind"].as_str() {
                Some("match_start") => {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(());
                    }
                }
                Some("match_end") => match_ends += 1,
                _ => {}
            },
            GameEvent::Error { code, message } => panic!("server error {code}: {message}"),
            GameEvent::Closed => return match_ends,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_match_lets_the_match_finish_then_exits_zero() {
    let server = TestServer::start_with(&["--no-turn"]);
    let url = server.ws_url.clone();
    let mut lobby = RawWs::connect(&server).await;
    lobby.join("lobby", None).await;
    // Read all along (so it answers the server's Pings like any live
    // client): each message, then the close code.
    let (lobby_tx, mut lobby_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let next = lobby.next().await;
            let closed = next.is_err();
            let _ = lobby_tx.send(next);
            if closed {
                return;
            }
        }
    });

    let alice = player(&url, "alice").await;
    let bob = player(&url, "bob").await;
    let (started_tx, started_rx) = oneshot::channel();
    let alice = tokio::spawn(play(alice, true, Some(started_tx)));
    let bob = tokio::spawn(play(bob, false, None));
    tokio::time::timeout(PATIENCE, started_rx)
        .await
        .expect("the match started in time")
        .expect("alice reports the match start");

    let pid = server.pid().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    // Every connected client is told, with the deadline (drain_timeout 60 s).
    let draining = lobby_rx.recv().await.unwrap().expect("a message");
    assert_eq!(draining["type"], "draining", "{draining}");
    let deadline_ms = draining["deadline_ms"].as_u64().expect("deadline_ms");
    assert!(deadline_ms > 0 && deadline_ms <= 60_000, "{draining}");

    let (status, body) = server.get("/healthz");
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
    assert_eq!(health["status"], "draining");

    // A newcomer is told at once and cannot join.
    let mut late = RawWs::connect(&server).await;
    late.expect("draining").await;
    late.send_text(
        &json!({"type": "join", "version": 1, "room": "late", "kind": "relay", "name": "late"})
            .to_string(),
    )
    .await;
    late.expect_error("draining").await;

    let (a, b) = tokio::time::timeout(PATIENCE, async { tokio::join!(alice, bob) })
        .await
        .expect("the match ended and the server closed in time");
    assert_eq!(a.expect("alice's task"), 1, "alice: match_end exactly once");
    assert_eq!(b.expect("bob's task"), 1, "bob: match_end exactly once");

    // Then every connection is closed (going away) and the process exits 0.
    let closed = tokio::time::timeout(PATIENCE, lobby_rx.recv())
        .await
        .expect("the lobby connection closed in time")
        .unwrap();
    assert_eq!(closed.expect_err("closed"), Some(1001));
    let status = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || server.wait()))
        .await
        .expect("the server exited in time")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// A second signal during the drain exits at once, abandoning the match:
/// status 1 (a finished drain exits 0), while the match is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_signal_during_the_drain_exits_at_once() {
    let server = TestServer::start_with(&["--no-turn"]);
    let url = server.ws_url.clone();
    let alice = player(&url, "alice").await;
    let bob = player(&url, "bob").await;
    let (started_tx, started_rx) = oneshot::channel();
    let alice = tokio::spawn(play(alice, true, Some(started_tx)));
    let bob = tokio::spawn(play(bob, false, None));
    tokio::time::timeout(PATIENCE, started_rx)
        .await
        .expect("the match started in time")
        .expect("alice reports the match start");

    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Draining has begun once /healthz says so.
    let draining = tokio::time::timeout(PATIENCE, async {
        loop {
            if server.get("/healthz").0 == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(draining.is_ok(), "the server started draining");
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || server.wait()))
        .await
        .expect("the server exited in time")
        .unwrap();
    assert_eq!(status.code(), Some(1), "exit status {status}");
    // The match had not ended: nobody got match_end.
    let (a, b) = tokio::join!(alice, bob);
    assert_eq!((a.unwrap(), b.unwrap()), (0, 0));
}
