//! Session resume in an authoritative room, over real sockets: a real relay
//! on 127.0.0.1 and real str0m clients (see `common`) playing Dizolaur.
//!
//! - a player whose packets silently stop (a network-lab blackout on its
//!   peer scope) has its session `Closed` once `dead_after` has passed, and
//!   keeps its seat: the room-mate's snapshots still show its lane, the
//!   match still counts in `active_matches`;
//! - a new session of the same peer gets `hello` again, a full snapshot
//!   first, and every event it had not acknowledged (its own `player_out`,
//!   confirmed while it was away);
//! - `close(.., SeatEnd::GraceOver)` on an away seat gives it to a bot
//!   (`after_grace = bot`: a `bot_takeover` event, the lane marked as a bot
//!   under the same peer id) or forfeits it (`player_out`, reason `left`);
//! - with `away = pause` the race clock stands still while a player is
//!   away and runs again once it is back;
//! - the match logs of these rooms replay to the same state hashes.
//!
//! No wall-clock assertions: the time limits only stop a hung test.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use rtcrelay_netlab::{Lab, Scope};
use rtcrelay_protocol::game::control::{Hello, ServerControl};
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{InputDatagram, SnapshotView, WorldState};
use rtcrelay_relay::authoritative::{replay, MatchLog};
use rtcrelay_relay::dizolaur::{
    bot_input, DizolaurFactory, LANE_ID_BASE, MATCH_ID, M_PHASE, M_SCROLL, M_SPEED, PHASE_RUNNING,
    P_BOT, P_PEER, P_STATE, STATE_OUT,
};
use rtcrelay_relay::{AfterGrace, AwayPolicy, ResumePolicy, ResumeRules};
use serde_json::Value;

/// Bounds a whole phase of a test (a hung test fails, a slow one does not).
const LONG_PATIENCE: Duration = Duration::from_secs(90);
/// Short enough that the cut player is found dead soon; the players who are
/// not cut send inputs every few milliseconds.
const DEAD_AFTER: Duration = Duration::from_secs(2);

/// A Dizolaur client made by hand: it decodes snapshots, acks events and
/// snapshots, and (when `playing`) plays the game's perfect policy on the
/// newest state. `reconnect` gives it a new session of the same peer.
struct Player {
    client: Client,
    room: &'static str,
    playing: bool,
    /// Per session: what came since it opened.
    seen: usize,
    hello: Option<(Hello, Instant)>,
    /// Control messages of this session, in order: "hello", "event:<id>",
    /// "stats", ...
    controls: Vec<String>,
    /// This session's first snapshot header: (baseline, partial).
    first_snapshot: Option<(Option<u32>, bool)>,
    states: BTreeMap<u32, WorldState>,
    newest_at: Option<(u32, Instant)>,
    /// Over every session: events by id (applied once, as a client does).
    events: BTreeMap<u64, Value>,
    /// Every snapshot (tick, match entity fields) over every session.
    matches: Vec<(u32, Vec<i32>)>,
    seq: u32,
    last_target: u32,
    inputs: BTreeMap<u32, u8>,
}

/// Ticks the inputs lead the estimated server tick by.
const INPUT_LEAD: u32 = 6;

impl Player {
    async fn join(
        host: &dyn SessionHost,
        name: &'static str,
        peer: u32,
        room: &'static str,
    ) -> Player {
        let both = [realtime_config(), control_config()];
        let client = connect_to(host, name, peer, room, RoomKind::Authoritative, &both).await;
        Player {
            client,
            room,
            playing: true,
            seen: 0,
            hello: None,
            controls: Vec::new(),
            first_snapshot: None,
            states: BTreeMap::new(),
            newest_at: None,
            events: BTreeMap::new(),
            matches: Vec::new(),
            seq: 0,
            last_target: 0,
            inputs: BTreeMap::new(),
        }
    }

    /// A new session (new socket, new str0m client) for the same peer.
    async fn reconnect(&mut self, host: &dyn SessionHost) {
        let both = [realtime_config(), control_config()];
        let peer = self.client.peer.0;
        self.client = connect_to(
            host,
            self.client.name,
            peer,
            self.room,
            RoomKind::Authoritative,
            &both,
        )
        .await;
        self.seen = 0;
        self.hello = None;
        self.controls.clear();
        self.first_snapshot = None;
        self.states.clear();
        self.newest_at = None;
    }

    fn step(&mut self) {
        self.client.step();
        let mut acks = Vec::new();
        let received = &self.client.received;
        for (label, _, data) in &received[self.seen..] {
            if label == "control" {
                match serde_json::from_slice::<ServerControl>(data).expect("control JSON") {
                    ServerControl::Hello(h) => {
                        self.controls.push("hello".into());
                        self.hello = Some((h, Instant::now()));
                    }
                    ServerControl::Event { id, event, .. } => {
                        self.controls.push(format!("event:{id}"));
                        acks.push(id);
                        self.events.insert(id, event);
                    }
                    ServerControl::Stats { .. } => self.controls.push("stats".into()),
                    ServerControl::Error { code, message } => {
                        panic!("{}: error {code}: {message}", self.client.name)
                    }
                    ServerControl::Clock { .. } => {}
                }
            } else if label == "realtime" {
                let view = SnapshotView::decode(data).expect("a snapshot");
                self.first_snapshot
                    .get_or_insert((view.header.baseline, view.header.partial));
                let baseline = match view.header.baseline {
                    None => None,
                    Some(t) => match self.states.get(&t) {
                        Some(s) => Some(s),
                        None => continue,
                    },
                };
                let mut out = WorldState::new();
                if view.apply(baseline, &mut out).is_ok() {
                    if self.newest().is_none_or(|(t, _)| view.header.tick > t) {
                        self.newest_at = Some((view.header.tick, Instant::now()));
                    }
                    if let Some(m) = out.get(MATCH_ID) {
                        self.matches.push((view.header.tick, m.fields.clone()));
                    }
                    self.states.insert(view.header.tick, out);
                    while self.states.len() > 64 {
                        self.states.pop_first();
                    }
                }
            }
        }
        self.seen = received.len();
        if !self.playing {
            return;
        }
        for id in acks {
            let ack = format!(r#"{{"type":"event_ack","id":{id}}}"#);
            self.send("control", ack.as_bytes());
        }
        self.play();
    }

    fn send(&mut self, label: &str, data: &[u8]) {
        if self.client.channels.contains_key(label) && !self.client.closed {
            self.client.send(label, label == "realtime", data);
        }
    }

    fn command(&mut self, command: &str) {
        let text = format!(r#"{{"type":"command","command":{command}}}"#);
        self.send("control", text.as_bytes());
    }

    fn newest(&self) -> Option<(u32, &WorldState)> {
        self.states.iter().next_back().map(|(t, s)| (*t, s))
    }

    /// The newest state's lane `lane` fields.
    fn lane(&self, lane: u32) -> Option<Vec<i32>> {
        let (_, w) = self.newest()?;
        Some(w.get(LANE_ID_BASE + lane)?.fields.clone())
    }

    fn match_fields(&self) -> Option<Vec<i32>> {
        let (_, w) = self.newest()?;
        Some(w.get(MATCH_ID)?.fields.clone())
    }

    fn running(&self) -> bool {
        self.match_fields()
            .is_some_and(|m| m[M_PHASE] == PHASE_RUNNING)
    }

    fn event(&self, kind: &str) -> Option<&Value> {
        self.events.values().find(|e| e["kind"] == kind)
    }

    /// Inputs for the ticks up to the estimated server tick + a lead, the
    /// last four in each datagram, with an ack of the newest snapshot.
    fn play(&mut self) {
        let Some((hello, at)) = &self.hello else {
            return;
        };
        if self.client.channels.len() < 2 {
            return;
        }
        let since = |tick: u32, at: &Instant| {
            tick + (at.elapsed().as_secs_f64() * f64::from(hello.tick_rate)) as u32
        };
        let estimate = since(hello.tick, at).max(
            self.newest_at
                .as_ref()
                .map_or(0, |(tick, at)| since(*tick, at)),
        );
        let target = estimate + INPUT_LEAD;
        if target <= self.last_target {
            return;
        }
        let input = match (self.newest(), hello.entity) {
            (Some((_, world)), Some(e)) => {
                world.get(e).map_or(0, |own| bot_input(&own.fields, world))
            }
            _ => 0,
        };
        for t in (self.last_target + 1).max(target.saturating_sub(64))..=target {
            self.inputs.insert(t, input);
        }
        self.last_target = target;
        while self.inputs.len() > 64 {
            self.inputs.pop_first();
        }
        let first = target + 1 - 4.min(target);
        let inputs: Vec<u8> = (first..=target)
            .map(|t| self.inputs.get(&t).copied().unwrap_or(0))
            .collect();
        self.seq += 1;
        let datagram = InputDatagram {
            seq: self.seq,
            ack: self
                .newest()
                .map(|(tick, _)| SnapshotAck { tick, delay_ms: 0 }),
            first_tick: first,
            input_size: 1,
            inputs,
        }
        .encode();
        self.send("realtime", &datagram);
    }
}

/// Steps every player until `done` holds or `LONG_PATIENCE` runs out.
async fn play_until(
    players: &mut [&mut Player],
    mut done: impl FnMut(&mut [&mut Player]) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < LONG_PATIENCE {
        for p in players.iter_mut() {
            p.step();
        }
        if done(players) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn closed_reason(c: &Client) -> Option<String> {
    c.session_events.iter().find_map(|e| match e {
        SessionEvent::Closed { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn record_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtcrelay-resume-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(lab: Arc<Lab>, record: &std::path::Path, resume: ResumeRules) -> Relay {
    let (relay, _) = start_relay_with(RelayConfig {
        shards: 1,
        netlab: lab,
        record_dir: Some(record.to_path_buf()),
        dead_after: DEAD_AFTER,
        heartbeat_interval: Duration::from_millis(200),
        resume,
        ..RelayConfig::default()
    })
    .await;
    relay
}

fn policy(away: AwayPolicy, after_grace: AfterGrace) -> ResumePolicy {
    ResumePolicy {
        grace: Duration::from_secs(30),
        away,
        after_grace,
    }
}

/// Two players, peers `first` (lane 0) and `first + 1` (lane 1), seated in
/// `room`, ready, and a 10-minute match started with bots in the other
/// lanes (they keep it going whatever happens to the people); returns once
/// both have seen `match_start`.
async fn two_in_a_match(
    host: &dyn SessionHost,
    room: &'static str,
    first: u32,
) -> (Player, Player) {
    let mut a = Player::join(host, "ada", first, room).await;
    let mut b = Player::join(host, "bob", first + 1, room).await;
    let (pa, pb) = (first as i32, first as i32 + 1);
    let seated = play_until(&mut [&mut a, &mut b], |ps| {
        ps.iter().all(|p| {
            p.hello.is_some()
                && p.lane(0).is_some_and(|l| l[P_PEER] == pa)
                && p.lane(1).is_some_and(|l| l[P_PEER] == pb)
        })
    })
    .await;
    assert!(seated, "{room}: both seated and ready");
    b.command(r#"{"start":{"bots":true,"max_seconds":600}}"#);
    let started = play_until(&mut [&mut a, &mut b], |ps| {
        ps.iter().all(|p| p.event("match_start").is_some())
    })
    .await;
    assert!(started, "{room}: the match started");
    (a, b)
}

/// Leaves `room` with every player, then waits for its match log and
/// checks that it replays to the same hash at every tick.
async fn leave_and_replay(
    host: &dyn SessionHost,
    record: &std::path::Path,
    room_id: &str,
    peers: &[u32],
) -> MatchLog {
    for &p in peers {
        host.close(PeerId(p), &room(room_id), SeatEnd::Leave).await;
    }
    let log = tokio::time::timeout(LONG_PATIENCE, async {
        loop {
            let found = std::fs::read_dir(record)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && p.file_name().is_some_and(|n| {
                            n.to_string_lossy().starts_with(&format!("{room_id}-"))
                        })
                });
            if let Some(text) = found.and_then(|p| std::fs::read_to_string(p).ok()) {
                if let Ok(log) = MatchLog::from_json(&text) {
                    return log;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the match log is written when the room closes");
    let hashes = replay(&log, &DizolaurFactory).expect("the log replays");
    assert_eq!(hashes, log.hashes, "{room_id}: every tick matches");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_player_keeps_its_seat_and_resumes_with_hello_a_full_snapshot_and_missed_events() {
    let record = record_dir("cut");
    let lab = Arc::new(Lab::default());
    let relay = start(lab.clone(), &record, ResumeRules::default()).await;
    let host = relay.host();
    let (mut a, mut b) = two_in_a_match(&*host, "dino", 1).await;

    // a's packets stop both ways, silently; its runner gets no new input
    // (its last one, none, repeats), so it crashes at the first cactus.
    lab.set(Scope::Peer("1".into()), blackout(), Instant::now())
        .unwrap();
    a.playing = false;
    let acked_before_cut: Vec<u64> = a.events.keys().copied().collect();
    let closed = play_until(&mut [&mut a, &mut b], |ps| {
        closed_reason(&ps[0].client).is_some()
    })
    .await;
    assert!(closed, "a's session is closed as dead");
    let reason = closed_reason(&a.client).unwrap();
    assert!(reason.contains("no packets"), "{reason}");
    assert_eq!(relay.active_matches(), 1, "the match goes on");

    // Its seat is kept: b's snapshots still show a's lane, and a's crash
    // is confirmed to b while a is away.
    let out = play_until(&mut [&mut a, &mut b], |ps| {
        ps[1]
            .events
            .values()
            .any(|e| e["kind"] == "player_out" && e["peer"] == 1)
    })
    .await;
    assert!(out, "a's runner crashed while it was away; b was told");
    let lane = b.lane(0).unwrap();
    assert_eq!(lane[P_PEER], 1, "the seat is kept: {lane:?}");
    assert_ne!(lane[P_STATE], STATE_OUT, "a did not leave: {lane:?}");
    assert_eq!(relay.active_matches(), 1);
    let missed: Vec<u64> = b
        .events
        .keys()
        .copied()
        .filter(|id| !acked_before_cut.contains(id))
        .collect();
    let out_id = *b
        .events
        .iter()
        .find(|(_, e)| e["kind"] == "player_out" && e["peer"] == 1)
        .unwrap()
        .0;
    assert!(
        !a.events.contains_key(&out_id),
        "the cut client never got it"
    );

    // A new session of the same peer takes the seat back.
    let hello_tick = a.hello.as_ref().unwrap().0.tick;
    lab.clear(&Scope::Peer("1".into()));
    a.reconnect(&*host).await;
    a.playing = true;
    let back = play_until(&mut [&mut a, &mut b], |ps| {
        let a = &ps[0];
        a.hello.is_some()
            && a.first_snapshot.is_some()
            && missed.iter().all(|id| a.events.contains_key(id))
    })
    .await;
    assert!(back, "a is back: controls {:?}", a.controls);
    let (hello, _) = a.hello.as_ref().unwrap();
    assert!(hello.tick > hello_tick, "hello again, at the current tick");
    assert_eq!(hello.entity, Some(LANE_ID_BASE), "the same entity");
    assert_eq!(a.controls[0], "hello", "{:?}", a.controls);
    // Then every event it had not acked, in id order, its crash among them.
    let resent: Vec<u64> = a.controls[1..]
        .iter()
        .map_while(|c| c.strip_prefix("event:")?.parse().ok())
        .collect();
    assert!(resent.windows(2).all(|w| w[0] < w[1]), "{resent:?}");
    for id in &missed {
        assert!(resent.contains(id), "event {id} resent: {resent:?}");
    }
    assert!(resent.contains(&out_id));
    assert_eq!(a.events[&out_id]["lane"], 0);
    // Its first snapshot is a full one (no baseline, not partial).
    assert_eq!(a.first_snapshot, Some((None, false)));
    assert_eq!(a.lane(0).unwrap()[P_PEER], 1);
    assert_eq!(relay.active_matches(), 1);

    leave_and_replay(&*host, &record, "dino", &[1, 2]).await;
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_seat_goes_to_a_bot_or_is_forfeited() {
    let record = record_dir("grace");
    let resume = ResumeRules {
        default: policy(AwayPolicy::Repeat, AfterGrace::Forfeit),
        rooms: vec![("bot-".into(), policy(AwayPolicy::Repeat, AfterGrace::Bot))],
    };
    let relay = start(Arc::new(Lab::default()), &record, resume).await;
    let host = relay.host();
    let (mut a, mut b) = two_in_a_match(&*host, "bot-1", 1).await;
    let (mut c, mut d) = two_in_a_match(&*host, "ff-1", 3).await;
    // a and c lose their connection (as when their WebSocket dies: the
    // server closes the session, the seat is kept), and do not come back.
    for (p, r) in [(1, "bot-1"), (3, "ff-1")] {
        host.close(PeerId(p), &room(r), SeatEnd::Keep).await;
    }
    a.playing = false;
    c.playing = false;
    settle_players(&mut [&mut a, &mut b, &mut c, &mut d], 50).await;
    assert!(b.lane(0).is_some_and(|l| l[P_PEER] == 1 && l[P_BOT] == 0));
    assert!(d
        .lane(0)
        .is_some_and(|l| l[P_PEER] == 3 && l[P_STATE] != STATE_OUT));
    for (p, r) in [(1, "bot-1"), (3, "ff-1")] {
        host.close(PeerId(p), &room(r), SeatEnd::GraceOver).await;
    }
    // bot-1: a bot plays a's lane under a's peer id; the race goes on.
    let taken = play_until(&mut [&mut b, &mut d], |ps| {
        ps[0].event("bot_takeover").is_some()
            && ps[0].lane(0).is_some_and(|l| l[P_BOT] == 1)
            && ps[1].event("player_out").is_some()
    })
    .await;
    assert!(taken, "b: {:?}, d: {:?}", b.events, d.events);
    let takeover = b.event("bot_takeover").unwrap();
    assert_eq!(
        (&takeover["lane"], &takeover["peer"]),
        (&0.into(), &1.into()),
        "{takeover}"
    );
    let lane = b.lane(0).unwrap();
    assert_eq!((lane[P_PEER], lane[P_BOT]), (1, 1), "{lane:?}");
    assert!(
        !b.events.values().any(|e| e["reason"] == "left"),
        "nobody left bot-1: {:?}",
        b.events
    );
    // ff-1: c forfeits, out of the race (not a crash).
    let out = d.event("player_out").unwrap();
    assert_eq!(
        (&out["peer"], &out["reason"]),
        (&3.into(), &"left".into()),
        "{out}"
    );
    let gone = play_until(&mut [&mut b, &mut d], |ps| {
        ps[1].lane(0).is_some_and(|l| l[P_STATE] == STATE_OUT)
    })
    .await;
    assert!(gone, "d's snapshots show c's lane out: {:?}", d.lane(0));
    // Both matches go on.
    let racing = play_until(&mut [&mut b, &mut d], |ps| ps.iter().all(|p| p.running())).await;
    assert!(racing);
    assert_eq!(relay.active_matches(), 2);
    let bot_lane = b.lane(0).unwrap();
    assert_ne!(bot_lane[P_STATE], STATE_OUT, "{bot_lane:?}");

    let log = leave_and_replay(&*host, &record, "bot-1", &[2]).await;
    assert!(log.to_json().contains(r#""type":"bot_takeover","#));
    let log = leave_and_replay(&*host, &record, "ff-1", &[4]).await;
    assert!(!log.to_json().contains(r#""type":"bot_takeover","#));
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pause_policy_the_race_clock_stops_while_a_player_is_away() {
    let record = record_dir("pause");
    let resume = ResumeRules {
        default: policy(AwayPolicy::Pause, AfterGrace::Forfeit),
        rooms: Vec::new(),
    };
    let relay = start(Arc::new(Lab::default()), &record, resume).await;
    let host = relay.host();
    let (mut a, mut b) = two_in_a_match(&*host, "race", 1).await;
    let racing = play_until(&mut [&mut a, &mut b], |ps| {
        ps[1]
            .match_fields()
            .is_some_and(|m| m[M_PHASE] == PHASE_RUNNING && m[M_SCROLL] > 0)
    })
    .await;
    assert!(racing);
    // a's session is lost; the seat is kept and the match pauses.
    host.close(PeerId(1), &room("race"), SeatEnd::Keep).await;
    a.playing = false;
    let paused = play_until(&mut [&mut b], |ps| {
        ps[0].match_fields().is_some_and(|m| m[M_SPEED] == 0)
    })
    .await;
    assert!(paused, "b sees the race stop");
    let from = b.matches.len() - 1;
    let (tick0, m0) = b.matches[from].clone();
    let long = play_until(&mut [&mut b], |ps| {
        ps[0].newest().is_some_and(|(t, _)| t >= tick0 + 90)
    })
    .await;
    assert!(long, "the ticks go on");
    // (Realtime is unordered: a late older snapshot is left out.)
    let frozen: Vec<_> = b.matches[from..]
        .iter()
        .filter(|(t, _)| *t >= tick0)
        .collect();
    assert!(frozen.len() > 10, "{} snapshots", frozen.len());
    for (tick, m) in frozen {
        assert_eq!(
            m[M_SCROLL], m0[M_SCROLL],
            "tick {tick}: the scroll stands still"
        );
        assert_eq!(m[M_SPEED], 0, "tick {tick}");
        assert_eq!(m[M_PHASE], PHASE_RUNNING);
    }
    assert_eq!(relay.active_matches(), 1);

    // a comes back: the race runs on.
    a.reconnect(&*host).await;
    a.playing = true;
    let runs = play_until(&mut [&mut a, &mut b], |ps| {
        ps[1]
            .match_fields()
            .is_some_and(|m| m[M_SCROLL] > m0[M_SCROLL] && m[M_SPEED] > 0)
    })
    .await;
    assert!(runs, "the race clock runs again after the rejoin");
    assert_eq!(a.first_snapshot, Some((None, false)));

    let log = leave_and_replay(&*host, &record, "race", &[1, 2]).await;
    let log_text = log.to_json();
    assert!(
        log_text.contains(r#""type":"paused","#),
        "the pause is in the log"
    );
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&record);
}

/// Steps every player for a number of rounds.
async fn settle_players(players: &mut [&mut Player], rounds: usize) {
    for _ in 0..rounds {
        for p in players.iter_mut() {
            p.step();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
