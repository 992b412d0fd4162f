//! Authoritative rooms end to end, in one process: the real relay (str0m)
//! running Dizolaur and real signaling on loopback, and two `GameClient`s
//! (webrtc crate) that play with the game's own bot policy on their
//! predicted runner. The time limit only stops a hung test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rtcrelay_client::{ClientConfig, GameClient, GameEvent, Predictor, WorldState};
use rtcrelay_relay::dizolaur::{
    bot_input, predict_player, Dizolaur, MATCH_ID, M_PHASE, PHASE_ENDED, P_PEER,
};
use rtcrelay_relay::{GameFactory, Relay, RelayConfig, RelayMetrics, Simulation};
use rtcrelay_signaling::{router, AppState, SignalingConfig};
use serde_json::json;

/// Only there so that a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(90);

struct Games;

impl GameFactory for Games {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
        (game == "dizolaur").then(|| Box::new(Dizolaur::new(seed)) as Box<dyn Simulation>)
    }
}

struct Physics;

impl Predictor for Physics {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

/// Relay + signaling on free loopback ports; returns the signaling URL.
async fn start_server() -> (Relay, String) {
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        ..RelayConfig::default()
    };
    let relay = Relay::start_with_games(config, RelayMetrics::default(), Arc::new(Games))
        .await
        .expect("relay starts");
    let state = AppState::new(
        SignalingConfig::default(),
        relay.host(),
        prometheus_client::registry::Registry::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    (relay, format!("ws://{http}/ws"))
}

async fn player(url: &str, name: &str) -> GameClient {
    let game = GameClient::connect(ClientConfig::new(url, "dino", name))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot join: {e}"));
    game.set_predictor(Box::new(Physics));
    game.set_input_source(Box::new(|core| {
        Some(vec![bot_input(core.predicted()?, core.state()?)])
    }));
    game
}

/// Everything one player saw until its `match_end`, and a little after.
struct Seen {
    ids: Vec<u64>,
    match_end: Vec<serde_json::Value>,
    kinds: Vec<String>,
}

async fn play(game: &mut GameClient, start: bool) -> Seen {
    let mut seen = Seen {
        ids: Vec::new(),
        match_end: Vec::new(),
        kinds: Vec::new(),
    };
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
        match next.expect("session ended early") {
            GameEvent::Snapshot { .. } if start && !start_sent => {
                // Start once both people are seated.
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
                    // Stay a while: a resent copy must not surface again.
                    linger_until = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
                }
                seen.kinds.push(kind);
            }
            GameEvent::Error { code, message } => panic!("server error {code}: {message}"),
            GameEvent::Closed => panic!("closed"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_players_and_bots_play_a_match_to_the_end() {
    let (relay, url) = start_server().await;
    let mut alice = player(&url, "alice").await;
    let mut bob = player(&url, "bob").await;

    let (a, b) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(play(&mut alice, true), play(&mut bob, false))
    })
    .await
    .expect("the match ended in time");

    for (name, seen, game) in [("alice", &a, &alice), ("bob", &b, &bob)] {
        assert_eq!(seen.match_end.len(), 1, "{name}: match_end exactly once");
        let unique: BTreeSet<u64> = seen.ids.iter().copied().collect();
        assert_eq!(unique.len(), seen.ids.len(), "{name}: an event id twice");
        assert!(seen.kinds.contains(&"match_start".to_owned()), "{name}");
        let hello = game.hello().expect("hello");
        assert_eq!((hello.game.as_str(), hello.input_size), ("dizolaur", 1));
        assert!(hello.entity.is_some(), "{name} is seated");
        let (_, state) = game.state().expect("a state");
        assert_eq!(state.get(MATCH_ID).unwrap().fields[M_PHASE], PHASE_ENDED);
        let net = game.net_stats();
        assert!(net.rtt_ms > 0.0, "{name}: {net:?}");
        assert!(net.snapshot_bytes_per_s > 0.0, "{name}: {net:?}");
        assert!(net.loss_down < 0.5, "{name}: {net:?}");
        assert_eq!(net.invalid, 0, "{name}: {net:?}");
        eprintln!("{name}: {net:?}");
    }
    assert_eq!(a.match_end, b.match_end, "both saw the same result");
    assert_eq!(a.match_end[0]["ranking"].as_array().map(Vec::len), Some(4));

    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}
