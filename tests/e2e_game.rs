//! A Dizolaur match end to end against the real binary: two Rust game
//! clients (prediction with the game's own physics, the bot policy as
//! input) join an authoritative room, one starts a short match with bots in
//! the free seats, both play it to the end. Each gets `match_end` exactly
//! once and both agree on the result. The server wrote the room's match
//! log, and `rtcrelay replay` reproduces every tick of it in another
//! process. The time limits only stop a hung test.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use rtcrelay_client::{ClientConfig, GameClient, GameEvent, Predictor, WorldState};
use rtcrelay_relay::dizolaur::{bot_input, predict_player, MATCH_ID, M_PHASE, PHASE_ENDED, P_PEER};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(120);

struct Physics;

impl Predictor for Physics {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

async fn player(url: &str, room: &str, name: &str) -> GameClient {
    let game = GameClient::connect(ClientConfig::new(url, room, name))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot join: {e}"));
    game.set_predictor(Box::new(Physics));
    game.set_input_source(Box::new(|core| {
        Some(vec![bot_input(core.predicted()?, core.state()?)])
    }));
    game
}

#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    kinds: Vec<String>,
    match_end: Vec<serde_json::Value>,
}

/// Plays until `match_end`, then lingers a little to catch any duplicate.
async fn play(game: &mut GameClient, starter: bool) -> Seen {
    let mut seen = Seen::default();
    let mut start_sent = false;
    let mut linger_until = None;
    loop {
        let next = match linger_until {
            None => game.next_game_event().await,
            Some(until) => match tokio::time::timeout_at(until, game.next_game_event()).await {
                Ok(e) => e,
                Err(_) => return seen,
            },
        };
        match next.expect("the session ended early") {
            GameEvent::Snapshot { .. } if starter && !start_sent => {
                let seated = game.state().is_some_and(|(_, w)| {
                    (1..=4u32)
                        .filter_map(|id| w.get(id))
                        .filter(|lane| lane.fields[P_PEER] != 0)
                        .count()
                        == 2
                });
                if seated {
                    game.command(json!({"start": {"bots": true, "max_seconds": 10}}));
                    start_sent = true;
                }
            }
            GameEvent::Event { id, event, .. } => {
                seen.ids.push(id);
                let kind = event["kind"].as_str().unwrap_or("?").to_owned();
                if kind == "match_end" {
                    seen.match_end.push(event.clone());
                    linger_until = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
                }
                seen.kinds.push(kind);
            }
            GameEvent::Error { code, message } => panic!("server error {code}: {message}"),
            GameEvent::Closed => panic!("the session closed"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_players_and_bots_play_a_match_that_replays_exactly() {
    let record = std::env::temp_dir().join(format!("rtcrelay-e2e-game-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&record);
    std::fs::create_dir_all(&record).unwrap();
    let server = TestServer::start_with(&["--game-record-dir", record.to_str().unwrap()]);
    let url = server.ws_url.clone();

    let mut alice = player(&url, "dino", "alice").await;
    let mut bob = player(&url, "dino", "bob").await;
    let (a, b) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(play(&mut alice, true), play(&mut bob, false))
    })
    .await
    .expect("the match ended in time");

    for (name, seen, game) in [("alice", &a, &alice), ("bob", &b, &bob)] {
        assert_eq!(seen.match_end.len(), 1, "{name}: match_end exactly once");
        let unique: BTreeSet<u64> = seen.ids.iter().copied().collect();
        assert_eq!(unique.len(), seen.ids.len(), "{name}: an event id twice");
        assert_eq!(
            seen.kinds.first().map(String::as_str),
            Some("match_start"),
            "{name}"
        );
        let hello = game.hello().expect("hello");
        assert_eq!(
            (hello.game.as_str(), hello.tick_rate, hello.input_size),
            ("dizolaur", 60, 1)
        );
        let (_, state) = game.state().expect("a state");
        assert_eq!(state.get(MATCH_ID).unwrap().fields[M_PHASE], PHASE_ENDED);
        let net = game.net_stats();
        assert!(net.snapshot_bytes_per_s > 0.0, "{name}: {net:?}");
        assert_eq!(net.invalid, 0, "{name}: {net:?}");
    }
    assert_eq!(a.match_end, b.match_end, "both saw the same result");
    assert_eq!(a.match_end[0]["ranking"].as_array().map(Vec::len), Some(4));

    // The server's own account: deltas, accepted inputs, no invalid ones.
    let deltas = server.metric("rtcrelay_game_snapshots_total{kind=\"delta\"}");
    let fulls = server.metric("rtcrelay_game_snapshots_total{kind=\"full\"}");
    assert!(deltas > 10.0 * fulls, "{deltas} deltas, {fulls} full");
    assert!(server.metric("rtcrelay_game_inputs_total{outcome=\"accepted\"}") > 100.0);
    assert_eq!(server.metric_sum("rtcrelay_game_control_errors_total"), 0.0);

    // Leaving closes the room, which writes its match log.
    alice.close().await;
    bob.close().await;
    let log = tokio::time::timeout(PATIENCE, async {
        loop {
            let found = std::fs::read_dir(&record)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"));
            if let Some(path) = found {
                // Written in one go; wait for it to parse.
                if std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .is_some()
                {
                    return path;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the match log is written when the room closes");
    assert!(log
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("dino-"));

    common::assert_replays(&log);
    server.terminate();
}
