//! Reconnection with session resume, end to end against the real binary.
//!
//! - Two Rust game clients play a Dizolaur match; one of them has every
//!   packet of its WebRTC path dropped by the network lab (no close, no
//!   FIN: it simply goes silent). The server notices, tells the room-mate
//!   `peer_away`; once the path is back the client reconnects by itself
//!   and is back in its own seat (same peer id, same lane), and what it
//!   reconstructs from snapshots equals what the room-mate reconstructs
//!   for the same ticks. The match ends with the same result for both,
//!   the server's match log replays to the same hash at every tick (in
//!   another process, and here, where the replay's own `match_end` is
//!   compared with the clients'), and no input appears twice in the log.
//! - A client whose signaling connection breaks (a proxy drops both TCP
//!   sockets: no Close frame) rejoins on a new one with its resume token:
//!   same peer id, the roster of the time away, messages flow both ways;
//!   a client with `reconnect = false` just reports `Closed`.
//! - Resume tokens for another room, expired, forged, or replaced by a
//!   newer one are refused with their error codes (raw WebSockets).
//! - A seat whose grace period ends is released: the room-mate gets
//!   `peer_left` (reason `disconnected`), the cut-off client gives up
//!   (`ResumeFailed`, then `Closed`), and its token no longer works.
//!
//! The time limits only stop a hung test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{RawWs, TestServer};
use rtcrelay_client::{
    Client, ClientConfig, ClientEvent, GameClient, GameEvent, LeaveReason, PeerId, Predictor,
    RoomKind, WorldState,
};
use rtcrelay_relay::authoritative::log::LogEntry;
use rtcrelay_relay::authoritative::MatchLog;
use rtcrelay_relay::dizolaur::{
    bot_input, predict_player, LANE_COUNT, LANE_ID_BASE, MATCH_ID, M_PHASE, PHASE_ENDED, P_PEER,
};
use rtcrelay_relay::{BuiltinGames, GameFactory};
use rtcrelay_signaling::ResumeKey;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Resume tokens of the token tests are signed with this (so the test can
/// mint an expired one).
const SECRET: &str = "e2e-resume-secret-0123456789abcdef0123456789";

/// A 100 % loss both ways: the path goes silent, nothing is closed.
const BLACKOUT: &str = r#"{"link": {
    "up":   {"loss": {"model": "random", "p": 1.0}},
    "down": {"loss": {"model": "random", "p": 1.0}}}}"#;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rtcrelay-e2e-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rtcrelay serve` with `config` (TOML) and `extra` flags.
fn serve(name: &str, config: &str, extra: &[&str]) -> TestServer {
    let path = temp_dir(name).join("rtcrelay.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--no-turn", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

struct Physics;

impl Predictor for Physics {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

/// One game client and what it has seen.
struct Player {
    name: &'static str,
    game: GameClient,
    /// Event ids in the order surfaced.
    ids: Vec<u64>,
    match_start: usize,
    match_end: Vec<Value>,
    /// Room and connection events, in order.
    connection: Vec<ClientEvent>,
    snapshots: u64,
    /// (tick, state) of each snapshot while `record` is on.
    states: BTreeMap<u32, WorldState>,
    record: bool,
    closed: bool,
}

impl Player {
    async fn join(url: &str, room: &str, name: &'static str) -> Player {
        let game = GameClient::connect(ClientConfig::new(url, room, name))
            .await
            .unwrap_or_else(|e| panic!("{name} cannot join: {e}"));
        game.set_predictor(Box::new(Physics));
        game.set_input_source(Box::new(|core| {
            Some(vec![bot_input(core.predicted()?, core.state()?)])
        }));
        Player {
            name,
            game,
            ids: Vec::new(),
            match_start: 0,
            match_end: Vec::new(),
            connection: Vec::new(),
            snapshots: 0,
            states: BTreeMap::new(),
            record: false,
            closed: false,
        }
    }

    fn on(&mut self, event: Option<GameEvent>) {
        match event {
            Some(GameEvent::Snapshot { tick }) => {
                self.snapshots += 1;
                if self.record {
                    if let Some(state) = self.game.with_core(|c| c.state_at(tick).cloned()) {
                        self.states.insert(tick, state);
                    }
                }
            }
            Some(GameEvent::Event { id, event, .. }) => {
                self.ids.push(id);
                match event["kind"].as_str() {
                    Some("match_start") => self.match_start += 1,
                    Some("match_end") => self.match_end.push(event),
                    _ => {}
                }
            }
            Some(GameEvent::Connection(e)) => self.connection.push(e),
            Some(GameEvent::Error { code, message }) => {
                panic!("{}: server error {code}: {message}", self.name)
            }
            Some(GameEvent::Closed) | None => self.closed = true,
            Some(GameEvent::Hello(_) | GameEvent::Stats { .. }) => {}
        }
    }

    /// The lane (entity id) whose `P_PEER` is this player.
    fn lane(&self) -> Option<u32> {
        let me = self.game.peer_id().0 as i32;
        let (_, world) = self.game.state()?;
        (LANE_ID_BASE..LANE_ID_BASE + LANE_COUNT as u32)
            .find(|&id| world.get(id).is_some_and(|e| e.fields[P_PEER] == me))
    }

    fn saw(&self, wanted: impl Fn(&ClientEvent) -> bool) -> bool {
        self.connection.iter().any(wanted)
    }
}

/// Feeds both players' events until `done` holds; panics after `limit`.
async fn pump(
    players: &mut [Player; 2],
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&[Player; 2]) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(players) {
        let [a, b] = players;
        tokio::select! {
            e = a.game.next_game_event(), if !a.closed => a.on(e),
            e = b.game.next_game_event(), if !b.closed => b.on(e),
            _ = tokio::time::sleep_until(deadline) => panic!(
                "{what}: not within {limit:?}; {}: {:?}; {}: {:?}",
                a.name, a.connection, b.name, b.connection
            ),
        }
    }
}

/// Waits until `dir` holds a complete `.json` match log.
async fn match_log(dir: &std::path::Path) -> (std::path::PathBuf, MatchLog) {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let path = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"));
            if let Some(path) = path {
                if let Some(log) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| MatchLog::from_json(&t).ok())
                {
                    return (path, log);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.expect("the match log is written when the room closes")
}

/// Re-runs `log` as the room did (the rules of `rtcrelay replay`), also
/// keeping the events the game emitted: (hash after every tick, events).
fn replay_with_events(log: &MatchLog) -> (Vec<u64>, Vec<Value>) {
    let mut sim = BuiltinGames.create(&log.game, log.seed).expect("the game");
    let zeros = vec![0u8; usize::from(sim.input_size())];
    let mut current: BTreeMap<PeerId, Vec<u8>> = BTreeMap::new();
    let (mut hashes, mut events) = (Vec::new(), Vec::new());
    let mut done = 0u32;
    let mut step = |sim: &mut Box<dyn rtcrelay_relay::authoritative::Simulation>,
                    current: &BTreeMap<PeerId, Vec<u8>>,
                    done: &mut u32| {
        let tick = *done + 1;
        for (&peer, input) in current {
            sim.apply_input(peer, tick, input);
        }
        sim.step(&mut events);
        *done = tick;
        hashes.push(sim.state_hash());
    };
    for entry in &log.entries {
        while done + 1 < entry.tick() {
            step(&mut sim, &current, &mut done);
        }
        match entry {
            LogEntry::Join { peer, name, .. } => {
                sim.add_player(*peer, name).expect("a logged join");
                current.insert(*peer, zeros.clone());
            }
            LogEntry::Leave { peer, .. } => {
                sim.remove_player(*peer);
                current.remove(peer);
            }
            LogEntry::Command { peer, command, .. } => {
                let _ = sim.command(*peer, command);
            }
            LogEntry::Input {
                tick,
                peer,
                input_tick,
                input,
            } => {
                if input_tick == tick {
                    current.insert(*peer, input.as_slice().to_vec());
                } else {
                    sim.apply_input(*peer, *input_tick, input.as_slice());
                }
            }
            LogEntry::Paused { paused, .. } => sim.set_paused(*paused),
            LogEntry::BotTakeover { peer, .. } => {
                assert!(sim.replace_with_bot(*peer), "a logged takeover");
                current.remove(peer);
            }
        }
    }
    while (done as usize) < log.hashes.len() {
        step(&mut sim, &current, &mut done);
    }
    (hashes, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cut_off_without_a_close_resumes_its_seat_and_the_match_replays() {
    let record = temp_dir("record");
    let server = serve(
        "match",
        "[resume]\ngrace = \"30s\"\n",
        &["--game-record-dir", record.to_str().unwrap()],
    );
    let url = server.ws_url.clone();
    let alice = Player::join(&url, "resume-match", "alice").await;
    let bob = Player::join(&url, "resume-match", "bob").await;
    let bob_id = bob.game.peer_id();
    let mut players = [alice, bob];

    // Both seated, then a match with bots in the free seats.
    pump(&mut players, "both seated", Duration::from_secs(30), |p| {
        p.iter().all(|p| p.lane().is_some())
    })
    .await;
    let bob_lane = players[1].lane();
    players[0]
        .game
        .command(json!({"start": {"bots": true, "max_seconds": 40}}));
    pump(&mut players, "match_start", Duration::from_secs(30), |p| {
        p.iter().all(|p| p.match_start > 0)
    })
    .await;

    // Bob's path goes silent: no close anywhere.
    let scope = format!("/admin/netlab/peer/{}", bob_id.0);
    let (status, body) = server.put_json(&scope, BLACKOUT, None);
    assert_eq!(status, 200, "{body}");
    pump(
        &mut players,
        "alice hears bob is away",
        Duration::from_secs(20),
        |p| p[0].saw(|e| matches!(e, ClientEvent::PeerAway { peer_id, .. } if *peer_id == bob_id)),
    )
    .await;
    let away = players[0]
        .connection
        .iter()
        .find_map(|e| match e {
            ClientEvent::PeerAway { peer_id, grace } if *peer_id == bob_id => Some(*grace),
            _ => None,
        })
        .unwrap();
    // What is left of the 30-s grace period.
    assert!(
        away <= Duration::from_secs(30) && away > Duration::from_secs(20),
        "{away:?}"
    );
    assert!(
        !players[0].saw(|e| matches!(e, ClientEvent::PeerLeft { .. })),
        "{:?}",
        players[0].connection
    );

    // The path is back: bob reconnects by himself.
    let (status, body) = server.call_json("DELETE", &scope, None);
    assert_eq!(status, 200, "{body}");
    pump(&mut players, "bob resumes", Duration::from_secs(40), |p| {
        p[1].saw(|e| matches!(e, ClientEvent::Resumed { .. }))
            && p[0].saw(|e| matches!(e, ClientEvent::PeerBack { peer_id } if *peer_id == bob_id))
    })
    .await;
    let bob_events = &players[1].connection;
    let reconnecting = bob_events
        .iter()
        .position(|e| matches!(e, ClientEvent::Reconnecting { attempt: 1, .. }));
    let resumed = bob_events
        .iter()
        .position(|e| matches!(e, ClientEvent::Resumed { peer_id, .. } if *peer_id == bob_id));
    assert!(
        matches!((reconnecting, resumed), (Some(r), Some(s)) if r < s),
        "{bob_events:?}"
    );
    assert!(
        !bob_events
            .iter()
            .any(|e| matches!(e, ClientEvent::ResumeFailed { .. })),
        "{bob_events:?}"
    );
    assert_eq!(players[1].game.peer_id(), bob_id);

    // Back in the same lane, and what bob reconstructs from the new
    // session's snapshots (a full one, then deltas) is what alice, who
    // never left, reconstructs for the same ticks.
    for p in players.iter_mut() {
        p.record = true;
        p.states.clear();
    }
    pump(
        &mut players,
        "snapshots after the resume",
        Duration::from_secs(30),
        |p| {
            let common = p[1]
                .states
                .keys()
                .filter(|t| p[0].states.contains_key(t))
                .count();
            common >= 20
        },
    )
    .await;
    assert_eq!(players[1].lane(), bob_lane, "bob is back in his own lane");
    let mut compared = 0;
    for (tick, state) in &players[1].states {
        if let Some(other) = players[0].states.get(tick) {
            assert_eq!(
                state, other,
                "tick {tick}: bob's state differs from alice's"
            );
            compared += 1;
        }
    }
    assert!(compared >= 20, "{compared} ticks compared");
    for p in players.iter_mut() {
        p.record = false;
    }

    // To the end of the match; then a moment for any duplicate.
    pump(&mut players, "match_end", Duration::from_secs(90), |p| {
        p.iter().all(|p| !p.match_end.is_empty())
    })
    .await;
    let linger = Instant::now() + Duration::from_millis(1500);
    pump(&mut players, "linger", Duration::from_secs(5), |_| {
        Instant::now() >= linger
    })
    .await;
    for p in &players {
        assert_eq!(p.match_end.len(), 1, "{}: match_end exactly once", p.name);
        let unique: BTreeSet<u64> = p.ids.iter().copied().collect();
        assert_eq!(unique.len(), p.ids.len(), "{}: an event id twice", p.name);
        // Events of the time away were resent after the resume: no hole.
        let (lo, hi) = (unique.first().unwrap(), unique.last().unwrap());
        assert_eq!(
            hi - lo + 1,
            unique.len() as u64,
            "{}: event ids with a hole: {:?}",
            p.name,
            p.ids
        );
        let (_, state) = p.game.state().expect("a state");
        assert_eq!(state.get(MATCH_ID).unwrap().fields[M_PHASE], PHASE_ENDED);
        assert!(!p.closed, "{}", p.name);
    }
    assert_eq!(
        players[0].match_end, players[1].match_end,
        "the same result"
    );
    assert_eq!(players[1].game.net_stats().resumes, 1);
    // Bob's signaling socket never broke: he came back with a new offer on
    // it, not with a resume join; his seat was kept, never released.
    assert_eq!(server.metric("rtcrelay_signaling_players_away_total"), 1.0);
    assert_eq!(
        server.metric("rtcrelay_signaling_seats_released_total"),
        0.0
    );
    let result = players[0].match_end[0].clone();

    // Leaving closes the room, which writes its match log.
    let [alice, bob] = players;
    alice.game.close().await;
    bob.game.close().await;
    let (path, log) = match_log(&record).await;

    // No input was applied twice: each (player, tick) has one logged input.
    let mut inputs = BTreeSet::new();
    for entry in &log.entries {
        if let LogEntry::Input {
            peer, input_tick, ..
        } = entry
        {
            assert!(
                inputs.insert((*peer, *input_tick)),
                "input of {peer} for tick {input_tick} logged twice"
            );
        }
    }
    assert!(
        inputs.iter().any(|(p, _)| *p == bob_id),
        "bob's inputs logged"
    );

    // The log replays to the recorded hash at every tick, in another
    // process and here; here the replay's own match_end is the clients'.
    common::assert_replays(&path);
    let (hashes, events) = replay_with_events(&log);
    assert_eq!(hashes, log.hashes, "the test's replay diverges");
    let ends: Vec<&Value> = events.iter().filter(|e| e["kind"] == "match_end").collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0], &result, "the replay's result is the clients'");
    server.terminate();
}

/// A raw join; returns the welcome.
async fn raw_join(ws: &mut RawWs, room: &str, resume: Option<&str>) -> Value {
    let mut join = json!({
        "type": "join", "version": 1, "room": room, "kind": "relay", "name": "raw",
    });
    if let Some(token) = resume {
        join["resume"] = token.into();
    }
    ws.send_text(&join.to_string()).await;
    ws.next().await.expect("an answer to the join")
}

fn token_of(welcome: &Value) -> String {
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    welcome["resume_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no resume token in {welcome}"))
        .to_owned()
}

/// The next message that is not about other members coming and going.
async fn next_for_me(ws: &mut RawWs) -> Value {
    loop {
        let msg = ws.next().await.expect("connection open");
        if msg["type"] != "peer_joined" {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_tokens_for_another_room_expired_forged_or_replaced_are_refused() {
    let server = serve("tokens", &format!("[resume]\nsecret = \"{SECRET}\"\n"), &[]);
    let mut mate = RawWs::connect(&server).await;
    let welcome = raw_join(&mut mate, "tok", None).await;
    assert!(welcome["resume_grace_ms"].as_u64().is_some(), "{welcome}");
    let mut first = RawWs::connect(&server).await;
    let welcome = raw_join(&mut first, "tok", None).await;
    let peer = welcome["peer_id"].as_u64().unwrap();
    let token = token_of(&welcome);
    assert_eq!(
        welcome["resumed"],
        Value::Null,
        "absent when false: {welcome}"
    );

    // Another room.
    let mut ws = RawWs::connect(&server).await;
    ws.send_text(
        &json!({"type": "join", "version": 1, "room": "other", "kind": "relay",
                "name": "raw", "resume": token})
        .to_string(),
    )
    .await;
    ws.expect_error("resume_wrong_room").await;

    // Forged: one character of the signature changed.
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let answer = raw_join(&mut ws, "tok", Some(&forged)).await;
    assert_eq!(answer["code"], "resume_invalid", "{answer}");
    // Not a token at all.
    let answer = raw_join(&mut ws, "tok", Some("not-a-token")).await;
    assert_eq!(answer["code"], "resume_invalid", "{answer}");

    // Expired: signed with the server's secret, an hour ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = ResumeKey::new(SECRET).mint(
        &"tok".try_into().unwrap(),
        PeerId(peer as u32),
        1,
        now - 3600,
    );
    let answer = raw_join(&mut ws, "tok", Some(&expired)).await;
    assert_eq!(answer["code"], "resume_expired", "{answer}");

    // The first connection dies without a Close frame; its token takes the
    // seat back on a new one (same peer id, a new token).
    drop(first);
    let away = next_for_me(&mut mate).await;
    assert_eq!(away["type"], "peer_away", "{away}");
    assert_eq!(away["peer_id"], peer);
    let mut second = RawWs::connect(&server).await;
    let welcome = raw_join(&mut second, "tok", Some(&token)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["resumed"], true, "{welcome}");
    assert_eq!(welcome["peer_id"], peer);
    let newer = token_of(&welcome);
    assert_ne!(newer, token);
    let back = next_for_me(&mut mate).await;
    assert_eq!(back, json!({"type": "peer_back", "peer_id": peer}));

    // The older token no longer works.
    let answer = raw_join(&mut ws, "tok", Some(&token)).await;
    assert_eq!(answer["code"], "resume_invalid", "{answer}");
    // Each refusal was non-fatal: the same socket still joins afresh.
    let fresh = raw_join(&mut ws, "tok", None).await;
    assert_eq!(fresh["type"], "welcome", "{fresh}");
    assert_ne!(fresh["peer_id"], peer);
    let outcomes = |o: &str| {
        server.metric(&format!(
            "rtcrelay_signaling_resumes_total{{outcome=\"{o}\"}}"
        ))
    };
    assert_eq!(outcomes("resumed"), 1.0);
    assert_eq!(outcomes("wrong_room"), 1.0);
    assert_eq!(outcomes("expired"), 1.0);
    assert_eq!(outcomes("invalid"), 3.0);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_is_released_when_its_grace_period_ends() {
    let server = serve(
        "grace",
        "[resume]\ngrace = \"30s\"\n\n[[resume.rooms]]\nprefix = \"short-\"\ngrace = \"2s\"\n",
        &[],
    );
    let config = |name: &str| {
        let mut c = ClientConfig::new(&server.ws_url, "short-1", name);
        c.kind = RoomKind::Relay;
        c
    };
    let mut mate = Client::connect(config("mate")).await.expect("mate joins");
    let mut cut = Client::connect(config("cut")).await.expect("cut joins");
    let cut_id = cut.peer_id();

    // Cut off for good: the path goes silent and never comes back.
    let (status, body) =
        server.put_json(&format!("/admin/netlab/peer/{}", cut_id.0), BLACKOUT, None);
    assert_eq!(status, 200, "{body}");

    let mut mate_saw = Vec::new();
    let mut cut_saw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let released = |saw: &[ClientEvent]| {
        saw.iter().any(|e| {
            matches!(e, ClientEvent::PeerLeft { peer_id, reason: LeaveReason::Disconnected }
                if *peer_id == cut_id)
        })
    };
    while !(released(&mate_saw) && cut_saw.contains(&ClientEvent::Closed)) {
        tokio::select! {
            e = mate.next_event() => mate_saw.push(e.expect("mate still connected")),
            e = cut.next_event(), if !cut_saw.contains(&ClientEvent::Closed) => {
                cut_saw.push(e.unwrap_or(ClientEvent::Closed));
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("not released in time; mate: {mate_saw:?}; cut: {cut_saw:?}")
            }
        }
    }
    // Away (with what is left of the room's own 2-s grace period) first,
    // then released.
    let away = mate_saw.iter().position(|e| {
        matches!(e, ClientEvent::PeerAway { peer_id, grace }
            if *peer_id == cut_id && *grace <= Duration::from_secs(2) && *grace > Duration::ZERO)
    });
    let left = mate_saw
        .iter()
        .position(|e| matches!(e, ClientEvent::PeerLeft { .. }));
    assert!(
        matches!((away, left), (Some(a), Some(l)) if a < l),
        "{mate_saw:?}"
    );
    // The cut-off client tried, then gave up, and said so.
    let tried = cut_saw
        .iter()
        .any(|e| matches!(e, ClientEvent::Reconnecting { .. }));
    let gave_up = cut_saw
        .iter()
        .position(|e| matches!(e, ClientEvent::ResumeFailed { .. }));
    assert!(tried, "{cut_saw:?}");
    assert_eq!(gave_up.map(|i| i + 2), Some(cut_saw.len()), "{cut_saw:?}");
    assert_eq!(cut_saw.last(), Some(&ClientEvent::Closed));
    assert!(!cut.is_reconnecting());
    let _ = server.call_json("DELETE", &format!("/admin/netlab/peer/{}", cut_id.0), None);
    mate.close().await;
    cut.close().await;

    // A released seat's token no longer works (raw sockets, to hold the
    // token): the connection dies, the grace period passes, the token is
    // refused.
    let mut watcher = RawWs::connect(&server).await;
    raw_join(&mut watcher, "short-2", None).await;
    let mut gone = RawWs::connect(&server).await;
    let welcome = raw_join(&mut gone, "short-2", None).await;
    let token = token_of(&welcome);
    let gone_id = welcome["peer_id"].clone();
    drop(gone);
    let away = next_for_me(&mut watcher).await;
    assert_eq!(
        (&away["type"], &away["peer_id"]),
        (&json!("peer_away"), &gone_id)
    );
    let left = next_for_me(&mut watcher).await;
    assert_eq!(
        left,
        json!({"type": "peer_left", "peer_id": gone_id, "reason": "disconnected"})
    );
    let mut again = RawWs::connect(&server).await;
    let answer = raw_join(&mut again, "short-2", Some(&token)).await;
    assert_eq!(answer["code"], "resume_expired", "{answer}");
    assert!(server.metric("rtcrelay_signaling_seats_released_total") >= 2.0);
    server.terminate();
}

/// A TCP proxy in front of the signaling listener whose connections can be
/// cut: both sockets dropped, so each side sees its WebSocket end without
/// a Close frame, as when a network path breaks. New connections still go
/// through.
struct CutProxy {
    addr: std::net::SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(conn);
            }
        });
        CutProxy {
            addr,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_whose_signaling_connection_breaks_rejoins_with_its_token() {
    let server = serve("rejoin", "[resume]\ngrace = \"30s\"\n", &[]);
    let proxy = CutProxy::start(server.http).await;
    let mut mate = Client::connect(ClientConfig::new(&server.ws_url, "rejoin-1", "mate"))
        .await
        .expect("mate joins");
    let via_proxy = ClientConfig::new(format!("ws://{}/ws", proxy.addr), "rejoin-1", "cut");
    let mut cut = Client::connect(via_proxy.clone()).await.expect("cut joins");
    let cut_id = cut.peer_id();
    assert!(cut.reconnects());
    // The same break without automatic reconnection: the old behaviour.
    let mut no_reconnect = via_proxy;
    no_reconnect.name = "old".into();
    no_reconnect.reconnect = false;
    let mut old = Client::connect(no_reconnect).await.expect("old joins");
    assert!(!old.reconnects());

    proxy.cut();
    let mut mate_saw = Vec::new();
    let mut cut_saw = Vec::new();
    let mut old_saw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed =
        |saw: &[ClientEvent]| saw.iter().any(|e| matches!(e, ClientEvent::Resumed { .. }));
    let back = |saw: &[ClientEvent]| {
        saw.iter()
            .any(|e| matches!(e, ClientEvent::PeerBack { peer_id } if *peer_id == cut_id))
    };
    while !(resumed(&cut_saw) && back(&mate_saw) && old_saw.contains(&ClientEvent::Closed)) {
        tokio::select! {
            e = mate.next_event() => mate_saw.push(e.expect("mate still connected")),
            e = cut.next_event() => cut_saw.push(e.expect("cut still connected")),
            e = old.next_event(), if !old_saw.contains(&ClientEvent::Closed) => {
                old_saw.push(e.unwrap_or(ClientEvent::Closed));
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("no resume in time; mate: {mate_saw:?}; cut: {cut_saw:?}; old: {old_saw:?}")
            }
        }
    }
    assert!(
        !old_saw.iter().any(|e| matches!(
            e,
            ClientEvent::Reconnecting { .. } | ClientEvent::Resumed { .. }
        )),
        "{old_saw:?}"
    );
    // A new signaling connection: the roster comes with the resume.
    let roster = cut_saw.iter().find_map(|e| match e {
        ClientEvent::Resumed { peer_id, roster } if *peer_id == cut_id => roster.clone(),
        _ => None,
    });
    let roster = roster.unwrap_or_else(|| panic!("no roster in {cut_saw:?}"));
    assert!(
        roster.iter().any(|r| r.peer_id == mate.peer_id()),
        "{roster:?}"
    );
    // The mate, and `old`, whose seat is kept (away) for its grace period.
    assert_eq!(cut.roster().len(), 2, "{:?}", cut.roster());
    assert!(
        mate_saw
            .iter()
            .any(|e| matches!(e, ClientEvent::PeerAway { peer_id, .. } if *peer_id == cut_id)),
        "{mate_saw:?}"
    );
    assert!(
        !mate_saw
            .iter()
            .any(|e| matches!(e, ClientEvent::PeerLeft { .. })),
        "{mate_saw:?}"
    );
    assert_eq!(
        server.metric("rtcrelay_signaling_resumes_total{outcome=\"resumed\"}"),
        1.0
    );

    // The resumed session carries messages both ways, under the same id.
    assert!(!cut.is_reconnecting());
    cut.send_text(rtcrelay_client::Channel::Control, "back")
        .await
        .expect("send after the resume");
    mate.send_text(rtcrelay_client::Channel::Control, "welcome back")
        .await
        .expect("send to the resumed client");
    let got = |saw: &[ClientEvent], from: PeerId, text: &str| {
        saw.iter().any(|e| {
            matches!(e, ClientEvent::Message { from: f, .. } if *f == from)
                && e.text() == Some(text)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mate_id = mate.peer_id();
    while !(got(&mate_saw, cut_id, "back") && got(&cut_saw, mate_id, "welcome back")) {
        tokio::select! {
            e = mate.next_event() => mate_saw.push(e.expect("mate still connected")),
            e = cut.next_event() => cut_saw.push(e.expect("cut still connected")),
            _ = tokio::time::sleep_until(deadline) => {
                panic!("no messages after the resume; mate: {mate_saw:?}; cut: {cut_saw:?}")
            }
        }
    }
    mate.close().await;
    cut.close().await;
    server.terminate();
}
