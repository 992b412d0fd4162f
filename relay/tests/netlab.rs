//! The network lab on the relay's UDP path, end to end: a real relay on
//! 127.0.0.1 with a shared [`Lab`], real str0m clients (see `common`).
//!
//! - a relay room under `3g` and then under 10 % random loss + 50 ms: every
//!   `control` message arrives, in order; the loss seen on `realtime`
//!   matches what the lab injected, hop by hop and end to end (binomial
//!   tolerances, not timing);
//! - a 4-player Dizolaur match under 10 % loss and 50 ± 20 ms finishes,
//!   every client sees the same result, the match log replays, and the
//!   players' `stats` carry what the lab injected;
//! - per-room and per-peer scopes hit only their peers, clearing restores
//!   the flow, and `/metrics` shows the per-scope counters.
//!
//! No wall-clock assertions: the time limits only stop a hung test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use rtcrelay_netlab::{
    DelayConfig, Distribution, ImpairmentConfig, Lab, LinkConfig, LossConfig, RandomLoss, Scope,
    ScopeTotals, Setting,
};
use rtcrelay_protocol::game::control::{Hello, PlayerNetStats, ServerControl};
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{InputDatagram, SnapshotView, WorldState};
use rtcrelay_relay::authoritative::{replay, MatchLog};
use rtcrelay_relay::dizolaur::{
    bot_input, DizolaurFactory, LANE_COUNT, LANE_ID_BASE, MATCH_ID, M_PHASE, PHASE_LOBBY, P_PEER,
};

/// Bounds a whole phase of a test (a hung test fails, a slow one does not).
const LONG_PATIENCE: Duration = Duration::from_secs(90);

async fn start_with_lab(
    lab: Arc<Lab>,
    record_dir: Option<std::path::PathBuf>,
) -> (Relay, RelayMetrics) {
    let metrics = RelayMetrics::default();
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        netlab: lab,
        record_dir,
        // These tests measure impairment, not liveness: on a loaded machine
        // a test task starved for a few seconds (seen: over 1 s) must not
        // pass for a dead client, nor may a peer blacked out on purpose.
        dead_after: Duration::from_secs(30),
        ..RelayConfig::default()
    };
    (
        Relay::start(config, metrics.clone()).await.unwrap(),
        metrics,
    )
}

/// Random loss `p` and a delay of `latency ± jitter` (uniform), both ways,
/// with a fixed seed.
fn lossy(p: f64, latency_ms: u64, jitter_ms: u64, preserve_order: bool, seed: u64) -> Setting {
    let one_way = ImpairmentConfig {
        loss: LossConfig::Random(RandomLoss {
            p,
            correlation: 0.0,
        }),
        delay: DelayConfig {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            distribution: Distribution::Uniform,
            preserve_order,
            ..DelayConfig::default()
        },
        ..ImpairmentConfig::default()
    };
    Setting {
        link: Some(LinkConfig::symmetric(one_way)),
        seed: Some(seed),
        ..Setting::default()
    }
}

/// A fixed 20 ms each way, nothing lost.
fn slow() -> Setting {
    let one_way = ImpairmentConfig {
        delay: DelayConfig {
            latency: Duration::from_millis(20),
            ..DelayConfig::default()
        },
        ..ImpairmentConfig::default()
    };
    Setting {
        link: Some(LinkConfig::symmetric(one_way)),
        ..Setting::default()
    }
}

fn totals(lab: &Lab, scope: &Scope) -> ScopeTotals {
    lab.totals()
        .into_iter()
        .find(|(s, _)| s == scope)
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// Steps the clients until nothing new has arrived for `quiet` (at least
/// one report interval, so the lab's totals are complete).
async fn until_quiet(clients: &mut [&mut Client], quiet: Duration) {
    let start = Instant::now();
    let mut count = usize::MAX;
    let mut since = Instant::now();
    while start.elapsed() < LONG_PATIENCE {
        for c in clients.iter_mut() {
            c.step();
        }
        let now: usize = clients.iter().map(|c| c.received.len()).sum();
        if now != count {
            count = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Pumps, with the client at `pinger` sending unchecked realtime pings,
/// until `scope` has counted some of its traffic: its setting is then in
/// force on the shard.
async fn until_counted(lab: &Lab, scope: &Scope, clients: &mut [&mut Client], pinger: usize) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        let t = totals(lab, scope);
        if t.up.pushed > 0 {
            return;
        }
        clients[pinger].send("realtime", true, b"ping");
        for c in clients.iter_mut() {
            c.step();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{scope} counted nothing: {:?}", lab.totals());
}

/// How many standard deviations `observed` is from a binomial(n, q) mean;
/// `clustering` widens the deviation for losses that come in groups (two
/// messages in one datagram share its fate).
fn z(observed: f64, n: f64, q: f64, clustering: f64) -> f64 {
    let sigma = (n * q * (1.0 - q) * clustering).sqrt().max(1.0);
    (observed - n * q) / sigma
}

/// The numbered messages `from` sent on `label` that `to` got, in arrival
/// order.
fn numbered(to: &Client, label: &str, from: PeerId) -> Vec<u32> {
    to.relayed(label)
        .into_iter()
        .filter(|(s, _, _)| *s == from)
        .map(|(_, _, p)| u32::from_be_bytes(p[..4].try_into().expect("4 bytes")))
        .collect()
}

async fn control_exchange(a: &mut Client, b: &mut Client, base: u32, n: u32) {
    for i in base..base + n {
        assert!(a.send("control", true, &i.to_be_bytes()));
        assert!(b.send("control", true, &i.to_be_bytes()));
    }
    let (pa, pb) = (a.peer, b.peer);
    let expected: Vec<u32> = (0..base + n).collect();
    let start = Instant::now();
    while start.elapsed() < LONG_PATIENCE {
        a.step();
        b.step();
        if numbered(b, "control", pa).len() >= expected.len()
            && numbered(a, "control", pb).len() >= expected.len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        numbered(b, "control", pa),
        expected,
        "every control message a sent arrives, once, in order"
    );
    assert_eq!(numbered(a, "control", pb), expected, "and b's too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_room_control_is_whole_and_realtime_loss_matches_the_lab() {
    let lab = Arc::new(Lab::default());
    let mut three_g = Setting::profile("3g");
    three_g.seed = Some(3);
    lab.set(Scope::Global, three_g, Instant::now()).unwrap();
    let (relay, m) = start_with_lab(lab.clone(), None).await;
    let t0 = Instant::now();
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "a", 1, "r1", &both).await;
    let mut b = connect(&*host, "b", 2, "r1", &both).await;
    let ready = pump(&mut [&mut a, &mut b], |cs| {
        cs.iter()
            .all(|c| c.ready().is_some() && c.channels.len() == 2)
    })
    .await;
    assert!(ready, "both connect through 3g");

    eprintln!("connected at {:?}", t0.elapsed());
    // 3g: control is reliable whatever the lab does.
    control_exchange(&mut a, &mut b, 0, 200).await;
    eprintln!("control at {:?}", t0.elapsed());
    until_quiet(&mut [&mut a, &mut b], Duration::from_millis(1500)).await;
    let g = totals(&lab, &Scope::Global);
    assert!(g.up.pushed > 0 && g.down.pushed > 0, "{g:?}");
    assert_eq!(g.up.pushed, g.up.passed + g.up.dropped(), "{g:?}");

    // Now 10 % random loss and 50 ms each way (order kept). Clearing first
    // restarts the scope's totals.
    const P: f64 = 0.10;
    lab.clear(&Scope::Global);
    lab.set(Scope::Global, lossy(P, 50, 0, true, 42), Instant::now())
        .unwrap();
    let applied = pump(&mut [&mut a, &mut b], |_| {
        let t = totals(&lab, &Scope::Global);
        t.up.pushed > 0 && t.down.pushed > 0
    })
    .await;
    assert!(applied, "the new setting reaches the live peers");
    let before = totals(&lab, &Scope::Global);
    eprintln!("applied at {:?}", t0.elapsed());
    let relayed0 = relayed(&m, "realtime");
    let dgrams0 = a.datagrams_in + b.datagrams_in;
    let full0 = msg_dropped(&m, "buffer_full");

    // 1,000 numbered messages each way, one per client and step, paced:
    // each goes out in a datagram of its own unless SCTP's window holds
    // some back (then they share one). Pacing by steps, not by a rate, so
    // a slow machine only sends more slowly.
    const N: u32 = 1000;
    let (mut sent_a, mut sent_b) = (0u32, 0u32);
    for i in 0..N {
        sent_a += u32::from(a.send("realtime", true, &i.to_be_bytes()));
        a.step();
        sent_b += u32::from(b.send("realtime", true, &i.to_be_bytes()));
        b.step();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!("sent at {:?}", t0.elapsed());
    until_quiet(&mut [&mut a, &mut b], Duration::from_millis(1500)).await;
    let after = totals(&lab, &Scope::Global);
    eprintln!(
        "datagrams: down passed {} (dup {}), clients read {}; relay drops {:?}",
        after.down.passed - before.down.passed,
        after.down.duplicated - before.down.duplicated,
        a.datagrams_in + b.datagrams_in - dgrams0,
        [
            "send_failed",
            "peer_error",
            "unparseable",
            "stale_route",
            "shard_busy"
        ]
        .map(|r| (r, dropped(&m, r)))
    );

    let at_b = numbered(&b, "realtime", PeerId(1));
    let at_a = numbered(&a, "realtime", PeerId(2));
    for got in [&at_a, &at_b] {
        let unique: BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "no message twice");
    }
    let sent = f64::from(sent_a + sent_b);
    let received = (at_a.len() + at_b.len()) as f64;
    let forwarded = (relayed(&m, "realtime") - relayed0) as f64;
    let full = (msg_dropped(&m, "buffer_full") - full0) as f64;
    let at_relay = forwarded + full;
    // The lab's own account of this phase, all datagrams (SCTP acks too).
    let pushed_up = (after.up.pushed - before.up.pushed) as f64;
    let lost_up = (after.up.dropped_loss - before.up.dropped_loss) as f64;
    let pushed_down = (after.down.pushed - before.down.pushed) as f64;
    let lost_down = (after.down.dropped_loss - before.down.dropped_loss) as f64;
    let (p_up, p_down) = (lost_up / pushed_up, lost_down / pushed_down);
    let expected_e2e = (sent * (1.0 - p_up) - full) * (1.0 - p_down);
    eprintln!(
        "realtime under {P} loss: sent {sent}, at the relay {at_relay} (forwarded {forwarded}, \
         buffer_full {full}), received {received} (expected end to end {expected_e2e:.0}); \
         lab: up {lost_up}/{pushed_up} = {p_up:.4}, down {lost_down}/{pushed_down} = {p_down:.4}"
    );
    assert!(
        sent >= f64::from(2 * N) * 0.99,
        "the clients took the messages"
    );
    // The lab drops what it was told to, over every datagram.
    assert!(z(lost_up, pushed_up, P, 1.0).abs() < 5.0, "up loss {p_up}");
    assert!(
        z(lost_down, pushed_down, P, 1.0).abs() < 5.0,
        "down loss {p_down}"
    );
    // Each relayed message crosses its sender's up path and its receiver's
    // down path: the realtime channel loses what the lab dropped there.
    // Clustering 2: two messages may share a datagram.
    let hop_up = z(at_relay, sent, 1.0 - P, 2.0);
    let hop_down = z(received, forwarded, 1.0 - P, 2.0);
    let e2e = (received - expected_e2e) / (sent * 0.19 * 0.81 * 2.0).sqrt();
    eprintln!(
        "z: up hop {hop_up:.2}, down hop {hop_down:.2}, end to end {e2e:.2}; kernel drops a {} b {}; t {:?}",
        kernel_drops(a.local),
        kernel_drops(b.local),
        t0.elapsed()
    );
    assert!(
        hop_up.abs() < 5.0,
        "up hop: {at_relay} of {sent} (z {hop_up:.2})"
    );
    assert!(
        hop_down.abs() < 5.0,
        "down hop: {received} of {forwarded} (z {hop_down:.2})"
    );
    assert!(
        e2e.abs() < 5.0,
        "end to end: {received}, expected {expected_e2e:.0} (z {e2e:.2})"
    );

    // Control stays whole under 10 % loss too.
    control_exchange(&mut a, &mut b, 200, 200).await;
    eprintln!("done at {:?}", t0.elapsed());
    relay.shutdown().await;
}

/// A Dizolaur player by hand: hello, snapshots (kept by tick for deltas),
/// events acked, stats kept; inputs from the game's bot policy for a tick
/// a little ahead of its estimate of the server's.
struct Player {
    client: Client,
    seen: usize,
    hello: Option<(Hello, Instant)>,
    states: BTreeMap<u32, WorldState>,
    events: BTreeMap<u64, serde_json::Value>,
    stats: Vec<Vec<PlayerNetStats>>,
    errors: Vec<String>,
    /// The newest snapshot's tick and when it came.
    newest_at: Option<(u32, Instant)>,
    seq: u32,
    last_target: u32,
    inputs: BTreeMap<u32, u8>,
}

/// Ticks the inputs lead the estimated server tick by: the estimate lags by
/// the down path's delay, the input takes the up path's (each 50 ± 20 ms,
/// about 3 ticks), plus a margin.
const INPUT_LEAD: u32 = 10;
/// Inputs per datagram: the new one and the three before it (redundancy
/// against loss).
const INPUTS_PER_DATAGRAM: u32 = 4;

impl Player {
    fn new(client: Client) -> Player {
        Player {
            client,
            seen: 0,
            hello: None,
            states: BTreeMap::new(),
            events: BTreeMap::new(),
            stats: Vec::new(),
            errors: Vec::new(),
            newest_at: None,
            seq: 0,
            last_target: 0,
            inputs: BTreeMap::new(),
        }
    }

    fn step(&mut self) {
        self.client.step();
        let received = &self.client.received;
        let mut acks = Vec::new();
        for (label, binary, data) in &received[self.seen..] {
            if label == "control" {
                assert!(!binary);
                match serde_json::from_slice::<ServerControl>(data).expect("control JSON") {
                    ServerControl::Hello(h) => self.hello = Some((h, Instant::now())),
                    ServerControl::Event { id, event, .. } => {
                        acks.push(id);
                        self.events.insert(id, event);
                    }
                    ServerControl::Stats { players, .. } => self.stats.push(players),
                    ServerControl::Error { code, message } => {
                        self.errors.push(format!("{code}: {message}"))
                    }
                    ServerControl::Clock { .. } => {}
                }
            } else if label == "realtime" {
                let Ok(view) = SnapshotView::decode(data) else {
                    continue;
                };
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
                    self.states.insert(view.header.tick, out);
                    while self.states.len() > 64 {
                        self.states.pop_first();
                    }
                }
            }
        }
        self.seen = received.len();
        for id in acks {
            let ack = format!(r#"{{"type":"event_ack","id":{id}}}"#);
            self.send("control", false, ack.as_bytes());
        }
        self.play();
    }

    /// Sends if the channel is open (events may come before the other
    /// channel's open is seen).
    fn send(&mut self, label: &str, binary: bool, data: &[u8]) {
        if self.client.channels.contains_key(label) {
            self.client.send(label, binary, data);
        }
    }

    fn newest(&self) -> Option<(u32, &WorldState)> {
        self.states.iter().next_back().map(|(t, s)| (*t, s))
    }

    fn play(&mut self) {
        let Some((hello, at)) = &self.hello else {
            return;
        };
        if self.client.channels.len() < 2 {
            return;
        }
        // The server's tick now, from the newest of hello and the newest
        // snapshot (a hello resent after a loss comes late).
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
        let entity = hello.entity;
        let input = match (self.newest(), entity) {
            (Some((_, world)), Some(e)) => {
                world.get(e).map_or(0, |own| bot_input(&own.fields, world))
            }
            _ => 0,
        };
        for t in self.last_target + 1..=target {
            self.inputs.insert(t, input);
        }
        self.last_target = target;
        while self.inputs.len() > 64 {
            self.inputs.pop_first();
        }
        let first = target + 1 - INPUTS_PER_DATAGRAM.min(target);
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
        self.send("realtime", true, &datagram);
    }

    fn seated(&self) -> usize {
        self.newest().map_or(0, |(_, w)| {
            (0..LANE_COUNT as u32)
                .filter_map(|i| w.get(LANE_ID_BASE + i))
                .filter(|lane| lane.fields[P_PEER] != 0)
                .count()
        })
    }

    fn in_lobby(&self) -> bool {
        self.newest()
            .and_then(|(_, w)| w.get(MATCH_ID))
            .is_some_and(|m| m.fields[M_PHASE] == PHASE_LOBBY)
    }

    fn match_end(&self) -> Option<&serde_json::Value> {
        self.events.values().find(|e| e["kind"] == "match_end")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_player_match_under_loss_and_jitter_ends_the_same_for_all() {
    let record = std::env::temp_dir().join(format!("rtcrelay-netlab-match-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&record);
    std::fs::create_dir_all(&record).unwrap();
    const P: f64 = 0.10;
    let lab = Arc::new(Lab::default());
    // 50 ± 20 ms uniform, each packet on its own delay (jitter reorders).
    lab.set(Scope::Global, lossy(P, 50, 20, false, 7), Instant::now())
        .unwrap();
    let (relay, m) = start_with_lab(lab.clone(), Some(record.clone())).await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut players = Vec::new();
    for (i, name) in ["p1", "p2", "p3", "p4"].into_iter().enumerate() {
        let c = connect_to(
            &*host,
            name,
            11 + i as u32,
            "dino",
            RoomKind::Authoritative,
            &both,
        )
        .await;
        players.push(Player::new(c));
    }

    let start = Instant::now();
    let mut start_sent: Option<Instant> = None;
    let mut match_started = false;
    while start.elapsed() < LONG_PATIENCE {
        for p in players.iter_mut() {
            p.step();
        }
        match_started |= players[0]
            .events
            .values()
            .any(|e| e["kind"] == "match_start");
        // Once all four are seated and ready (events go to ready players
        // only), p1 starts a 10 s race (again if no match_start came
        // within a few seconds).
        let retry = start_sent.is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        let all_ready = players.iter().all(|p| p.hello.is_some());
        if !match_started && retry && all_ready && players[0].seated() == 4 && players[0].in_lobby()
        {
            let start = r#"{"type":"command","command":{"start":{"bots":false,"max_seconds":10}}}"#;
            players[0].send("control", false, start.as_bytes());
            start_sent = Some(Instant::now());
        }
        if players.iter().all(|p| p.match_end().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for p in &players {
        assert!(
            p.match_end().is_some(),
            "{} saw no match_end: events {:?}, errors {:?}",
            p.client.name,
            p.events
                .values()
                .map(|e| e["kind"].clone())
                .collect::<Vec<_>>(),
            p.errors
        );
        assert!(p.errors.is_empty(), "{}: {:?}", p.client.name, p.errors);
    }
    let result = players[0].match_end().cloned().unwrap();
    for p in &players[1..] {
        assert_eq!(p.match_end(), Some(&result), "{} agrees", p.client.name);
        // Events are per room: those both got are the same.
        for (id, event) in &p.events {
            if let Some(other) = players[0].events.get(id) {
                assert_eq!(event, other, "event {id}");
            }
        }
        let starts = p.events.values().filter(|e| e["kind"] == "match_start");
        assert_eq!(starts.count(), 1, "{}", p.client.name);
    }
    assert_eq!(
        result["ranking"].as_array().map(Vec::len),
        Some(4),
        "{result}"
    );
    let peers: BTreeSet<i64> = result["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["peer"].as_i64())
        .collect();
    assert_eq!(peers, BTreeSet::from([11, 12, 13, 14]), "{result}");
    eprintln!("match under {P} loss, 50±20 ms: {result}");

    // The players' stats tell injected loss and delay apart: every player
    // has an `injected` entry under the global scope, and the figures match
    // the setting.
    let mut sums = BTreeMap::<u32, [u64; 4]>::new();
    let mut delays = Vec::new();
    for stats in &players[0].stats {
        for s in stats {
            let Some(inj) = &s.injected else {
                continue;
            };
            assert_eq!(inj.scope, "global");
            let e = sums.entry(s.peer.0).or_default();
            e[0] += inj.up.datagrams;
            e[1] += inj.up.dropped;
            e[2] += inj.down.datagrams;
            e[3] += inj.down.dropped;
            if inj.down.datagrams > 10 {
                delays.push(inj.down.delay_ms);
            }
        }
    }
    assert_eq!(
        sums.keys().copied().collect::<Vec<_>>(),
        [11, 12, 13, 14],
        "{sums:?}"
    );
    let all = sums.values().fold([0u64; 4], |a, s| {
        [a[0] + s[0], a[1] + s[1], a[2] + s[2], a[3] + s[3]]
    });
    let (up, down) = (all[1] as f64 / all[0] as f64, all[3] as f64 / all[2] as f64);
    eprintln!(
        "stats: injected up {}/{} = {up:.4}, down {}/{} = {down:.4}",
        all[1], all[0], all[3], all[2]
    );
    assert!(
        z(all[1] as f64, all[0] as f64, P, 1.0).abs() < 5.0,
        "up {up}"
    );
    assert!(
        z(all[3] as f64, all[2] as f64, P, 1.0).abs() < 5.0,
        "down {down}"
    );
    assert!(!delays.is_empty());
    let mean_delay = delays.iter().sum::<f64>() / delays.len() as f64;
    assert!(
        (45.0..55.0).contains(&mean_delay),
        "mean added delay {mean_delay} ms"
    );
    let outcomes: Vec<(&str, u64)> = ["accepted", "duplicate", "late_applied", "late", "too_early"]
        .into_iter()
        .map(|o| (o, outcome_count(&m, o)))
        .collect();
    eprintln!("inputs: {outcomes:?}");
    assert!(
        outcome_count(&m, "accepted") > 500,
        "inputs got through: {outcomes:?}"
    );

    // Leaving closes the room, which writes its match log: it replays.
    for p in &players {
        host.close(p.client.peer, &room("dino"), SeatEnd::Leave)
            .await;
    }
    let log = tokio::time::timeout(LONG_PATIENCE, async {
        loop {
            let found = std::fs::read_dir(&record)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"));
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
    assert_eq!(hashes, log.hashes, "every tick matches");
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&record);
}

fn outcome_count(m: &RelayMetrics, outcome: &'static str) -> u64 {
    m.game
        .inputs
        .get_or_create(&rtcrelay_relay::metrics::OutcomeLabel { outcome })
        .get()
}

/// The value of one sample line of the text encoding, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_peer_scopes_hit_only_their_peers_and_clearing_restores_the_flow() {
    let lab = Arc::new(Lab::default());
    let (relay, m) = start_with_lab(lab.clone(), None).await;
    let mut registry = Registry::with_prefix("rtcrelay");
    m.register(&mut registry);
    let metrics_text = || {
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    };
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let mut a = connect(&*host, "a", 1, "r1", &both).await;
    let mut b = connect(&*host, "b", 2, "r1", &both).await;
    let mut c = connect(&*host, "c", 3, "r1", &both).await;
    let mut d = connect(&*host, "d", 4, "r2", &both).await;
    let mut e = connect(&*host, "e", 5, "r2", &both).await;
    let ready = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |cs| {
        cs.iter()
            .all(|c| c.ready().is_some() && c.channels.len() == 2)
    })
    .await;
    assert!(ready);
    assert!(lab.totals().is_empty(), "nothing in force, nothing counted");

    // Room r2 blacked out: d and e hear nothing, r1 is untouched.
    let r2 = Scope::Room("r2".into());
    lab.set(r2.clone(), blackout(), Instant::now()).unwrap();
    until_counted(&lab, &r2, &mut [&mut a, &mut b, &mut c, &mut d, &mut e], 3).await;
    assert!(d.send("control", false, b"d in the dark"));
    assert!(a.send("control", false, b"a in r1"));
    let got = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |cs| {
        cs[1].relayed("control").len() == 1 && cs[2].relayed("control").len() == 1
    })
    .await;
    assert!(got, "r1 is not affected by r2's blackout");
    settle(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], 200).await;
    assert!(e.relayed("control").is_empty(), "r2 is blacked out");
    let counted = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |_| {
        totals(&lab, &r2).up.dropped_blackout > 0
    })
    .await;
    assert!(counted, "the blackout is counted under room:r2");
    let scopes: Vec<Scope> = lab.totals().into_iter().map(|(s, _)| s).collect();
    assert_eq!(scopes, vec![r2.clone()], "only r2's paths report");
    // Cleared: the message sent in the dark arrives (SCTP retransmits it).
    assert!(lab.clear(&r2));
    let got = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |cs| {
        cs[4].relayed("control").len() == 1
    })
    .await;
    assert!(got, "clearing r2 restores its flow");
    assert_eq!(e.relayed("control")[0].2, b"d in the dark");

    // Room r1 slowed down, and peer 1 (in r1) blacked out: the most
    // specific scope wins, so b and c keep talking, a hears nothing.
    let r1 = Scope::Room("r1".into());
    let p1 = Scope::Peer("1".into());
    lab.set(r1.clone(), slow(), Instant::now()).unwrap();
    lab.set(p1.clone(), blackout(), Instant::now()).unwrap();
    until_counted(&lab, &p1, &mut [&mut a, &mut b, &mut c, &mut d, &mut e], 0).await;
    assert!(b.send("control", false, b"b while a is dark"));
    assert!(a.send("control", false, b"a in the dark"));
    let got = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |cs| {
        cs[2].relayed("control").len() == 2
    })
    .await;
    assert!(got, "c hears b while a is blacked out");
    assert_eq!(
        c.relayed("control")[1],
        (PeerId(2), true, b"b while a is dark".to_vec())
    );
    let counted = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |_| {
        let t = totals(&lab, &p1);
        let r = totals(&lab, &r1);
        t.up.dropped_blackout > 0 && t.down.dropped_blackout > 0 && r.down.pushed > 0
    })
    .await;
    assert!(counted, "{:?}", lab.totals());
    assert_eq!(a.relayed("control").len(), 0, "a is dark");
    assert_eq!(b.relayed("control").len(), 1, "nothing new from a");
    let r = totals(&lab, &r1);
    assert_eq!(
        r.up.dropped() + r.down.dropped(),
        0,
        "r1's setting drops nothing"
    );
    assert!(r.up.added_delay > Duration::ZERO);

    // /metrics has both scopes.
    let text = metrics_text();
    let series = |scope: &str, direction: &str, outcome: &str| {
        format!(
            "rtcrelay_netlab_packets_total{{scope=\"{scope}\",direction=\"{direction}\",\
             outcome=\"{outcome}\"}}"
        )
    };
    for direction in ["up", "down"] {
        let dark = sample(&text, &series("peer:1", direction, "dropped_blackout"));
        assert!(dark.is_some_and(|v| v > 0.0), "peer:1 {direction}: {text}");
        let pushed = sample(&text, &series("room:r1", direction, "pushed"));
        assert!(
            pushed.is_some_and(|v| v > 0.0),
            "room:r1 {direction}: {text}"
        );
        assert_eq!(
            sample(&text, &series("room:r1", direction, "dropped_loss")),
            Some(0.0)
        );
    }
    let delay = sample(
        &text,
        "rtcrelay_netlab_added_delay_seconds_total{scope=\"room:r1\",direction=\"down\"}",
    );
    assert!(delay.is_some_and(|v| v > 0.0), "{text}");
    assert!(!text.contains("room:r2"), "a cleared scope is gone: {text}");

    // Cleared: a is back (under r1's setting), both held messages arrive.
    assert!(lab.clear(&p1));
    let got = pump(&mut [&mut a, &mut b, &mut c, &mut d, &mut e], |cs| {
        cs[0].relayed("control").len() == 1 && cs[1].relayed("control").len() == 2
    })
    .await;
    assert!(got, "clearing peer 1 restores its flow");
    assert_eq!(a.relayed("control")[0].2, b"b while a is dark");
    assert_eq!(b.relayed("control")[1].2, b"a in the dark");
    assert!(!metrics_text().contains("peer:1"));
    relay.shutdown().await;
}
