//! GameCore without a network: a fake authoritative server (the shared
//! rules: fixed ticks, input buffer with `input_ack`, per-client snapshot
//! ring with delta baselines, clock replies, events) talks to a `GameCore`
//! through seeded lossy, reordering, duplicating links, in simulated time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_client::game::{Entity, WorldState};
use rtcrelay_client::{GameCore, GameEvent, GameOutput, PeerId, Predictor};
use rtcrelay_protocol::game::control::{ClientControl, Hello, PlayerNetStats, ServerControl};
use rtcrelay_protocol::game::{FrameSpec, InputDatagram, SnapshotEncoder};

const ME: PeerId = PeerId(7);
/// The client's own entity.
const OWN: u32 = 1;
const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------- links

/// One direction of a path: each message is lost with `loss`, duplicated
/// with `dup`, and delayed uniformly in `delay_ms` (so later messages can
/// overtake earlier ones), unless `ordered` (a reliable, ordered channel:
/// no loss, no duplicates, delivered in order).
struct Link<T> {
    rng: ChaCha8Rng,
    loss: f64,
    dup: f64,
    delay_ms: (u64, u64),
    ordered: bool,
    last_delivery: Option<Instant>,
    queue: Vec<(Instant, u64, T)>,
    /// Messages given to `send`, copies queued, copies delivered.
    offered: u64,
    sent: u64,
    delivered: u64,
}

impl<T: Clone> Link<T> {
    fn lossy(seed: u64, loss: f64, dup: f64, delay_ms: (u64, u64)) -> Link<T> {
        Link {
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            dup,
            delay_ms,
            ordered: false,
            last_delivery: None,
            queue: Vec::new(),
            offered: 0,
            sent: 0,
            delivered: 0,
        }
    }

    fn reliable(seed: u64, delay_ms: (u64, u64)) -> Link<T> {
        Link {
            ordered: true,
            ..Link::lossy(seed, 0.0, 0.0, delay_ms)
        }
    }

    fn send(&mut self, now: Instant, msg: T) {
        self.offered += 1;
        if !self.ordered && self.rng.random_bool(self.loss) {
            return;
        }
        let copies = if !self.ordered && self.rng.random_bool(self.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(self.delay_ms.0..=self.delay_ms.1);
            let mut at = now + Duration::from_millis(delay);
            if self.ordered {
                at = at.max(self.last_delivery.unwrap_or(at));
                self.last_delivery = Some(at);
            }
            self.queue.push((at, self.sent, msg.clone()));
            self.sent += 1;
        }
    }

    fn recv(&mut self, now: Instant) -> Vec<T> {
        let mut due: Vec<(Instant, u64, T)> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].0 <= now {
                due.push(self.queue.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(at, n, _)| (*at, *n));
        self.delivered += due.len() as u64;
        due.into_iter().map(|(_, _, m)| m).collect()
    }
}

// ---------------------------------------------------------------- server

/// How the fake server's world changes.
#[derive(Clone, Copy)]
struct WorldShape {
    /// Remote entities at the start (ids 100…).
    remotes: u32,
    fields: usize,
}

/// The server side of the rules, for one client.
struct FakeServer {
    epoch: Instant,
    tick_rate: u32,
    snapshot_rate: u32,
    max_input_lead: u32,
    max_rewind: u32,
    rng: ChaCha8Rng,
    shape: WorldShape,
    /// Last simulated tick, and the state after it.
    last: u32,
    world: WorldState,
    /// Own entity x after every tick (for the prediction test).
    own_x: BTreeMap<u32, i32>,
    /// Inputs stored by tick (the first copy wins), and the `last` tick when
    /// each arrived.
    inputs: BTreeMap<u32, (u8, u32)>,
    last_applied: u8,
    /// Inputs that arrived for ticks already simulated.
    late_inputs: u64,
    too_early: u64,
    /// Added to the own entity at that tick: a server-side event the
    /// client cannot predict.
    push_at: Option<(u32, i32)>,
    // Snapshots to this client.
    encoder: SnapshotEncoder,
    ring: VecDeque<(u32, WorldState)>,
    acked: Option<u32>,
    /// The view (state the client holds after applying) of every snapshot.
    views: HashMap<u32, WorldState>,
    partial: u64,
    frame: Vec<u8>,
    realtime_out: Vec<Vec<u8>>,
    control_out: Vec<String>,
    next_entity: u32,
}

impl FakeServer {
    fn new(epoch: Instant, seed: u64, shape: WorldShape) -> FakeServer {
        let mut s = FakeServer {
            epoch,
            tick_rate: 60,
            snapshot_rate: 30,
            max_input_lead: 60,
            max_rewind: 8,
            rng: ChaCha8Rng::seed_from_u64(seed),
            shape,
            last: 0,
            world: WorldState::new(),
            own_x: BTreeMap::new(),
            inputs: BTreeMap::new(),
            last_applied: 0,
            late_inputs: 0,
            too_early: 0,
            push_at: None,
            encoder: SnapshotEncoder::new(),
            ring: VecDeque::new(),
            acked: None,
            views: HashMap::new(),
            partial: 0,
            frame: Vec::new(),
            realtime_out: Vec::new(),
            control_out: Vec::new(),
            next_entity: 100,
        };
        s.world.insert(Entity {
            id: OWN,
            kind: 1,
            fields: vec![0, 0],
        });
        s.own_x.insert(0, 0);
        for _ in 0..shape.remotes {
            s.spawn();
        }
        s
    }

    fn spawn(&mut self) {
        let fields = (0..self.shape.fields)
            .map(|_| self.rng.random_range(-1000..1000))
            .collect();
        self.world.insert(Entity {
            id: self.next_entity,
            kind: 2,
            fields,
        });
        self.next_entity += 1;
    }

    fn tick_ms(&self) -> f64 {
        1000.0 / f64::from(self.tick_rate)
    }

    fn time_ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64() * 1000.0
    }

    fn hello(&mut self, now: Instant) {
        let msg = ServerControl::Hello(Hello {
            game: "toy".into(),
            tick_rate: self.tick_rate,
            snapshot_rate: self.snapshot_rate,
            input_size: 1,
            max_input_lead: self.max_input_lead,
            max_rewind: self.max_rewind,
            tick: self.last,
            server_time_ms: self.time_ms(now),
            entity: Some(OWN),
        });
        self.control_out.push(serde_json::to_string(&msg).unwrap());
    }

    /// Runs every tick due by `now`, with a snapshot after each tick the
    /// snapshot schedule picks.
    fn advance(&mut self, now: Instant) {
        while self.time_ms(now) >= f64::from(self.last + 1) * self.tick_ms() {
            let n = self.last + 1;
            let input = match self.inputs.get(&n) {
                Some(&(x, _)) => x,
                None => self.last_applied,
            };
            self.last_applied = input;
            self.step(n, input);
            self.last = n;
            let sr = u64::from(self.snapshot_rate);
            let tr = u64::from(self.tick_rate);
            if u64::from(n) * sr / tr > u64::from(n - 1) * sr / tr {
                self.snapshot();
            }
        }
    }

    fn step(&mut self, tick: u32, input: u8) {
        let own = self.world.get_mut(OWN).unwrap();
        own.fields[0] = own.fields[0].wrapping_add(i32::from(input));
        own.fields[1] = tick as i32;
        if let Some((at, by)) = self.push_at {
            if at == tick {
                own.fields[0] += by;
            }
        }
        self.own_x.insert(tick, own.fields[0]);
        let ids: Vec<u32> = self
            .world
            .entities()
            .iter()
            .map(|e| e.id)
            .filter(|&id| id >= 100)
            .collect();
        for id in ids {
            let roll: f64 = self.rng.random();
            if roll < 0.002 {
                self.world.remove(id);
                continue;
            }
            let e = self.world.get_mut(id).unwrap();
            for f in e.fields.iter_mut() {
                if self.rng.random_bool(0.3) {
                    *f = f.wrapping_add(self.rng.random_range(-40..=40));
                }
            }
            if self.rng.random_bool(0.0005) {
                // A large jump, to exercise multi-byte varints.
                e.fields[0] = self.rng.random();
            }
        }
        if self.rng.random_bool(0.01) {
            self.spawn();
        }
    }

    /// `input_ack`: every tick up to it was received or already simulated.
    fn input_ack(&self) -> u32 {
        let mut t = self.last;
        while self.inputs.contains_key(&(t + 1)) {
            t += 1;
        }
        t
    }

    fn snapshot(&mut self) {
        let baseline = self
            .acked
            .and_then(|a| self.ring.iter().find(|(t, _)| *t == a))
            .map(|(t, s)| (*t, s));
        let spec = FrameSpec {
            tick: self.last,
            input_ack: self.input_ack(),
            max_len: 1200,
        };
        let mut view = WorldState::new();
        let encoded = self
            .encoder
            .encode(spec, baseline, &self.world, &mut self.frame, &mut view);
        assert_eq!(encoded.len, self.frame.len());
        if encoded.partial {
            self.partial += 1;
        } else {
            assert_eq!(view, self.world, "a complete snapshot's view is the state");
        }
        self.views.insert(self.last, view.clone());
        self.ring.push_back((self.last, view));
        if self.ring.len() > 64 {
            self.ring.pop_front();
        }
        self.realtime_out.push(self.frame.clone());
    }

    fn on_realtime(&mut self, data: &[u8]) {
        let d = InputDatagram::decode(data).expect("the client sends valid datagrams");
        assert_eq!(d.input_size, 1);
        assert!((1..=32).contains(&d.count()), "{} inputs", d.count());
        if let Some(ack) = d.ack {
            if self.acked.is_none_or(|a| ack.tick > a) {
                self.acked = Some(ack.tick);
            }
        }
        for (t, input) in d.iter() {
            if t > self.last + self.max_input_lead {
                self.too_early += 1;
            } else if self.inputs.contains_key(&t) {
                // Duplicate: the first copy wins.
            } else if t > self.last {
                self.inputs.insert(t, (input[0], self.last));
            } else if t + self.max_rewind > self.last {
                // Late but within the rewind window: counted apart.
                self.inputs.insert(t, (input[0], self.last));
                self.late_inputs += 1;
            }
        }
    }

    fn on_control(&mut self, text: &str, now: Instant) -> ClientControl {
        let msg: ClientControl = serde_json::from_str(text).expect("valid client control");
        if let ClientControl::Clock { id, t0 } = &msg {
            let t = self.time_ms(now);
            let reply = ServerControl::Clock {
                id: *id,
                t0: *t0,
                t1: t,
                t2: t,
                tick: self.last,
            };
            self.control_out
                .push(serde_json::to_string(&reply).unwrap());
        }
        msg
    }
}

// ---------------------------------------------------------------- harness

struct Paths {
    up_realtime: Link<Vec<u8>>,
    down_realtime: Link<Vec<u8>>,
    up_control: Link<String>,
    down_control: Link<String>,
}

impl Paths {
    fn clean(seed: u64, delay_ms: (u64, u64)) -> Paths {
        Paths {
            up_realtime: Link::lossy(seed, 0.0, 0.0, delay_ms),
            down_realtime: Link::lossy(seed + 1, 0.0, 0.0, delay_ms),
            up_control: Link::reliable(seed + 2, delay_ms),
            down_control: Link::reliable(seed + 3, delay_ms),
        }
    }
}

/// A server and a client in simulated time, 1 ms per step.
struct Sim {
    now: Instant,
    server: FakeServer,
    core: GameCore,
    paths: Paths,
    next_local_tick: Instant,
    /// The input the test wants for the next local tick.
    input: u8,
    /// Every input the client sampled, by tick.
    sampled: BTreeMap<u32, u8>,
    /// Game events and client control messages seen, in order.
    events: Vec<GameEvent>,
    client_control: Vec<ClientControl>,
    /// (tick, equal to the server's view) for every displayed snapshot.
    checked_snapshots: u64,
}

impl Sim {
    /// The server starts at `start`; the client joins `join_after` later
    /// (so the clocks differ by that much).
    fn new(seed: u64, shape: WorldShape, paths: Paths, join_after: Duration) -> Sim {
        let start = Instant::now();
        let now = start + join_after;
        let mut server = FakeServer::new(start, seed, shape);
        server.advance(now);
        server.realtime_out.clear();
        server.hello(now);
        Sim {
            now,
            server,
            core: GameCore::new(ME, now),
            paths,
            next_local_tick: now,
            input: 0,
            sampled: BTreeMap::new(),
            events: Vec::new(),
            client_control: Vec::new(),
            checked_snapshots: 0,
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
            self.now += MS;
        }
    }

    fn step(&mut self) {
        let now = self.now;
        self.server.advance(now);
        for frame in self.server.realtime_out.drain(..) {
            self.paths.down_realtime.send(now, frame);
        }
        for text in self.server.control_out.drain(..) {
            self.paths.down_control.send(now, text);
        }
        for text in self.paths.down_control.recv(now) {
            self.core.handle_control(&text, now);
        }
        for frame in self.paths.down_realtime.recv(now) {
            self.core.handle_realtime(&frame, now);
            self.check_events();
        }
        if now >= self.next_local_tick && self.core.hello().is_some() {
            let before = self.core.input_target();
            self.core.set_input(&[self.input]);
            self.core.local_tick(now);
            let after = self.core.input_target().expect("a tick sampled an input");
            let first = before.map_or(after, |b| b + 1);
            for t in first..=after {
                self.sampled.insert(t, self.input);
            }
            self.next_local_tick += Duration::from_nanos(16_666_667);
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        while let Some(out) = self.core.poll_output() {
            match out {
                GameOutput::Realtime(b) => self.paths.up_realtime.send(now, b),
                GameOutput::Control(t) => self.paths.up_control.send(now, t),
            }
        }
        for b in self.paths.up_realtime.recv(now) {
            self.server.on_realtime(&b);
        }
        for t in self.paths.up_control.recv(now) {
            let msg = self.server.on_control(&t, now);
            self.client_control.push(msg);
        }
        self.check_events();
    }

    /// Collects the core's events; after every displayed snapshot, the state
    /// must be exactly what the server says the client holds.
    fn check_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            if let GameEvent::Snapshot { tick } = e {
                let view = &self.server.views[&tick];
                assert_eq!(self.core.state(), Some(view), "state after snapshot {tick}");
                assert_eq!(self.core.state_tick(), Some(tick));
                self.checked_snapshots += 1;
            }
            self.events.push(e);
        }
    }
}

fn small_world() -> WorldShape {
    WorldShape {
        remotes: 12,
        fields: 5,
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn delta_snapshots_over_a_lossy_reordering_duplicating_link_match_the_server() {
    for seed in [1u64, 2, 3] {
        let paths = Paths {
            up_realtime: Link::lossy(seed * 10, 0.2, 0.1, (20, 80)),
            down_realtime: Link::lossy(seed * 10 + 1, 0.2, 0.1, (20, 80)),
            up_control: Link::reliable(seed * 10 + 2, (20, 80)),
            down_control: Link::reliable(seed * 10 + 3, (20, 80)),
        };
        let mut sim = Sim::new(seed, small_world(), paths, Duration::from_millis(3210));
        sim.run_for(Duration::from_secs(20));

        // 20 s at 30 Hz = 600 snapshots sent; about 70% arrive (20% lost,
        // some overtaken by newer ones), each checked on arrival.
        assert!(
            sim.checked_snapshots > 300,
            "seed {seed}: only {} snapshots displayed",
            sim.checked_snapshots
        );
        // Stale ones (applied behind a newer one) are kept as baselines:
        // they must hold the server's view too.
        let mut kept = 0;
        for (tick, view) in &sim.server.views {
            if let Some(state) = sim.core.state_at(*tick) {
                assert_eq!(state, view, "seed {seed}: kept state of tick {tick}");
                kept += 1;
            }
        }
        assert!(kept > 30, "seed {seed}: {kept} states kept");
        let stats = sim.core.net_stats();
        assert!(
            stats.stale > 0,
            "seed {seed}: reordering made no stale snapshot"
        );
        assert!(stats.duplicate > 0, "seed {seed}: no duplicate seen");
        assert_eq!(stats.invalid, 0);
        // The newest state is recent: acks kept flowing, deltas kept applying.
        let newest = sim.core.state_tick().unwrap();
        assert!(
            sim.server.last - newest < 20,
            "{} vs {newest}",
            sim.server.last
        );
        assert!(
            (0.1..0.45).contains(&stats.loss_down),
            "seed {seed}: loss_down {}",
            stats.loss_down
        );
        assert!(stats.snapshot_bytes_per_s > 0.0);
    }
}

#[test]
fn a_world_too_big_for_one_datagram_converges_through_partial_snapshots() {
    let shape = WorldShape {
        remotes: 400,
        fields: 6,
    };
    let paths = Paths {
        up_realtime: Link::lossy(5, 0.1, 0.05, (10, 40)),
        down_realtime: Link::lossy(6, 0.1, 0.05, (10, 40)),
        up_control: Link::reliable(7, (10, 40)),
        down_control: Link::reliable(8, (10, 40)),
    };
    let mut sim = Sim::new(9, shape, paths, Duration::from_millis(500));
    sim.run_for(Duration::from_secs(5));
    assert!(
        sim.server.partial > 10,
        "{} partial snapshots",
        sim.server.partial
    );
    assert!(sim.checked_snapshots > 50, "{}", sim.checked_snapshots);
}

#[test]
fn inputs_survive_20_percent_upstream_loss_for_a_whole_match() {
    let paths = Paths {
        up_realtime: Link::lossy(21, 0.2, 0.0, (20, 60)),
        down_realtime: Link::lossy(22, 0.05, 0.0, (20, 60)),
        up_control: Link::reliable(23, (20, 60)),
        down_control: Link::reliable(24, (20, 60)),
    };
    let mut sim = Sim::new(20, small_world(), paths, Duration::from_millis(1000));
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let end = sim.now + Duration::from_secs(60);
    while sim.now < end {
        // Change the buttons every few ticks so that every tick's input is
        // checkable.
        if rng.random_bool(0.2) {
            sim.input = rng.random_range(0..4);
        }
        sim.step();
        sim.now += MS;
    }
    let lost_datagrams = sim.paths.up_realtime.offered - sim.paths.up_realtime.sent;
    assert!(lost_datagrams > 500, "{lost_datagrams} datagrams lost");

    // Every tick the client sampled, except the last few still in flight,
    // reached the server in time to be simulated, with the sampled value.
    let (&first, _) = sim.sampled.first_key_value().unwrap();
    let mut checked = 0;
    let mut late = 0;
    for (&tick, &input) in &sim.sampled {
        if tick + 10 > sim.server.last {
            break;
        }
        let (got, last_when_received) = sim
            .server
            .inputs
            .get(&tick)
            .unwrap_or_else(|| panic!("input of tick {tick} never arrived (first {first})"));
        assert_eq!(*got, input, "tick {tick}");
        if *last_when_received >= tick {
            late += 1;
        }
        checked += 1;
    }
    assert!(checked > 3400, "{checked} ticks checked");
    // The lead covers RTT/2 + 2 jitter: nearly every input is early.
    assert!(
        late * 100 <= checked,
        "{late} of {checked} inputs arrived late"
    );
    assert_eq!(sim.server.too_early, 0);
    let lead = sim.core.net_stats().input_lead;
    assert!((1.0..10.0).contains(&lead), "input lead {lead}");
}

#[test]
fn events_are_surfaced_once_per_id_and_every_copy_is_acked() {
    let mut sim = Sim::new(30, small_world(), Paths::clean(31, (10, 30)), MS * 100);
    sim.run_for(Duration::from_millis(200));
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let mut copies: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sent = Vec::new();
    // 40 events, each sent 1 to 3 times (a resend before the ack arrived);
    // resends interleave with newer events.
    for id in 1..=40u64 {
        sent.push(id);
        for _ in 0..rng.random_range(1..=3) {
            let resend = sent[rng.random_range(0..sent.len())];
            let id = if copies.contains_key(&id) { resend } else { id };
            let event = ServerControl::Event {
                id,
                tick: id as u32 * 10,
                event: serde_json::json!({ "type": "score", "n": id }),
            };
            sim.server
                .control_out
                .push(serde_json::to_string(&event).unwrap());
            *copies.entry(id).or_default() += 1;
        }
        sim.run_for(MS * 7);
    }
    sim.run_for(Duration::from_millis(200));

    let surfaced: Vec<(u64, u32, serde_json::Value)> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            GameEvent::Event { id, tick, event } => Some((*id, *tick, event.clone())),
            _ => None,
        })
        .collect();
    let ids: Vec<u64> = surfaced.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>(), "each id once, in order");
    for (id, tick, event) in &surfaced {
        assert_eq!(*tick, *id as u32 * 10);
        assert_eq!(event["n"], *id);
    }
    let mut acks: BTreeMap<u64, u64> = BTreeMap::new();
    for msg in &sim.client_control {
        if let ClientControl::EventAck { id } = msg {
            *acks.entry(*id).or_default() += 1;
        }
    }
    assert_eq!(acks, copies, "every copy acked");
    assert!(copies.values().any(|&n| n > 1), "no duplicate was sent");
}

#[test]
fn clock_offset_converges_despite_jittery_asymmetric_delays() {
    // The server started 12.3456 s before the client: that is the offset.
    let paths = Paths {
        up_realtime: Link::lossy(41, 0.0, 0.0, (10, 20)),
        down_realtime: Link::lossy(42, 0.0, 0.0, (10, 20)),
        // Control: one way 10..60 ms, the other 10..90 ms.
        up_control: Link::reliable(43, (10, 60)),
        down_control: Link::reliable(44, (10, 90)),
    };
    let join = Duration::from_micros(12_345_600);
    let mut sim = Sim::new(40, small_world(), paths, join);
    // Before any sample, the offset comes from hello (one-way delay
    // counted as 0): off by that delay.
    sim.run_for(Duration::from_millis(95));
    let first = sim.core.clock_offset_ms().expect("offset from hello");
    assert!((12_345.6 - first) > 5.0, "hello offset {first}");

    sim.run_for(Duration::from_secs(10));
    let offset = sim.core.clock_offset_ms().unwrap();
    assert!(
        (offset - 12_345.6).abs() < 15.0,
        "offset {offset}, true 12345.6"
    );
    let est = sim.core.estimated_server_tick(sim.now).unwrap();
    let truth = sim.server.time_ms(sim.now) / sim.server.tick_ms();
    assert!(
        (est - truth).abs() < 1.0,
        "estimated tick {est}, true {truth}"
    );
    // 5 quick requests, then one a second: 5 + 9 in the first 10 s.
    let requests = sim
        .client_control
        .iter()
        .filter(|m| matches!(m, ClientControl::Clock { .. }))
        .count();
    assert!((13..=15).contains(&requests), "{requests} clock requests");
    let stats = sim.core.net_stats();
    assert!(
        (20.0..150.0).contains(&stats.rtt_ms),
        "rtt {} ms",
        stats.rtt_ms
    );
    assert!(stats.jitter_ms > 0.0);
}

/// The toy game's physics: x += input.
struct Toy;

impl Predictor for Toy {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], _world: &WorldState) {
        own[0] = own[0].wrapping_add(i32::from(input[0]));
        own[1] += 1;
    }
}

#[test]
fn prediction_runs_ahead_and_is_corrected_by_an_unpredictable_push() {
    let mut sim = Sim::new(50, small_world(), Paths::clean(51, (20, 30)), MS * 700);
    sim.core.set_predictor(Box::new(Toy));
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    let mut play = |sim: &mut Sim, d: Duration| {
        let until = sim.now + d;
        while sim.now < until {
            if rng.random_bool(0.1) {
                sim.input = rng.random_range(0..3);
            }
            sim.step();
            sim.now += MS;
        }
    };
    // Until the first clock samples, the lead is too short (the estimate
    // from hello ignores the one-way delay): the first inputs arrive late,
    // the server repeats the previous input, and predictions are corrected.
    play(&mut sim, Duration::from_secs(1));
    let warm_up = sim.core.net_stats().corrections;
    play(&mut sim, Duration::from_secs(3));
    assert_eq!(
        sim.core.net_stats().corrections,
        warm_up,
        "exact physics, every input on time: no correction"
    );
    // The prediction is the server's state at the last target tick, given
    // the inputs sent: the server will reach exactly that.
    let target = sim.core.predicted_tick().unwrap();
    assert_eq!(target, sim.core.input_target().unwrap());
    assert!(target > sim.core.state_tick().unwrap() + 2, "runs ahead");
    let predicted_x = sim.core.predicted().unwrap()[0];
    sim.server.push_at = Some((target + 200, 1000));
    let later = sim.now + Duration::from_millis(300);
    while sim.now < later {
        sim.step();
        sim.now += MS;
    }
    assert_eq!(sim.server.own_x[&target], predicted_x);
    assert_eq!(sim.core.net_stats().corrections, warm_up);

    // The push lands at target + 200: the client learns of it one snapshot
    // later, then its prediction includes it.
    sim.run_for(Duration::from_secs(5));
    let corrections = sim.core.net_stats().corrections - warm_up;
    assert!(
        (1..=2).contains(&corrections),
        "{corrections} corrections for one push"
    );
    let (tick, predicted) = (
        sim.core.predicted_tick().unwrap(),
        sim.core.predicted().unwrap()[0],
    );
    sim.run_for(Duration::from_millis(500));
    assert_eq!(
        sim.server.own_x[&tick], predicted,
        "prediction after the push"
    );
}

#[test]
fn remote_entities_are_interpolated_between_snapshots() {
    // 50 Hz ticks, 25 Hz snapshots: 20 ms ticks, 40 ms = 2 ticks interval.
    let start = Instant::now();
    let mut core = GameCore::new(ME, start);
    let hello = ServerControl::Hello(Hello {
        game: "toy".into(),
        tick_rate: 50,
        snapshot_rate: 25,
        input_size: 1,
        max_input_lead: 50,
        max_rewind: 0,
        tick: 0,
        server_time_ms: 0.0,
        entity: Some(OWN),
    });
    core.handle_control(&serde_json::to_string(&hello).unwrap(), start);
    let remote = |x: i32| Entity {
        id: 100,
        kind: 2,
        fields: vec![x, -x, 7],
    };
    let mut enc = SnapshotEncoder::new();
    let (mut frame, mut view10, mut view12) = (Vec::new(), WorldState::new(), WorldState::new());
    let s10 = WorldState::from_entities([remote(0)]);
    let spec = |tick| FrameSpec {
        tick,
        input_ack: 0,
        max_len: 1200,
    };
    enc.encode(spec(10), None, &s10, &mut frame, &mut view10);
    // Snapshots arrive exactly at their tick's server time: no jitter.
    core.handle_realtime(&frame, start + MS * 200);
    let s12 = WorldState::from_entities([remote(100)]);
    enc.encode(spec(12), Some((10, &view10)), &s12, &mut frame, &mut view12);
    core.handle_realtime(&frame, start + MS * 240);
    assert_eq!(core.state(), Some(&s12));
    assert_eq!(core.interp_delay_ms(), 40.0);

    // At 260 ms the server is at tick 13; drawn 2 ticks behind: tick 11.
    assert_eq!(core.render_tick(start + MS * 260), Some(11.0));
    assert_eq!(
        core.interpolated(100, start + MS * 260),
        Some(vec![50, -50, 7])
    );
    assert_eq!(
        core.interpolated(100, start + MS * 250),
        Some(vec![25, -25, 7])
    );
    // Outside the kept states: the nearest one, no extrapolation.
    assert_eq!(
        core.interpolated(100, start + MS * 400),
        Some(vec![100, -100, 7])
    );
    assert_eq!(
        core.interpolated(100, start + MS * 100),
        Some(vec![0, 0, 7])
    );
    assert_eq!(core.interpolated(999, start + MS * 260), None);
}

#[test]
fn unknown_baselines_stale_and_garbage_are_counted_without_changing_the_state() {
    let start = Instant::now();
    let mut core = GameCore::new(ME, start);
    let mut enc = SnapshotEncoder::new();
    let (mut frame, mut view) = (Vec::new(), WorldState::new());
    let spec = |tick| FrameSpec {
        tick,
        input_ack: 0,
        max_len: 1200,
    };
    let state = |x: i32| {
        WorldState::from_entities([Entity {
            id: 5,
            kind: 1,
            fields: vec![x],
        }])
    };
    let frames: Vec<Vec<u8>> = [(4u32, None, 4), (6, Some(4), 6), (8, Some(6), 8)]
        .into_iter()
        .map(|(tick, base, x)| {
            let base_state = base.map(|b| (b, state(b as i32)));
            enc.encode(
                spec(tick),
                base_state.as_ref().map(|(t, s)| (*t, s)),
                &state(x),
                &mut frame,
                &mut view,
            );
            frame.clone()
        })
        .collect();
    // Delta 6 against 4 before 4 arrived: unknown baseline, ignored.
    core.handle_realtime(&frames[1], start);
    assert_eq!(core.state(), None);
    core.handle_realtime(&frames[0], start);
    core.handle_realtime(&frames[2], start); // against 6: unknown
    core.handle_realtime(&frames[1], start);
    assert_eq!(core.state_tick(), Some(6));
    core.handle_realtime(&frames[2], start);
    assert_eq!(
        (core.state_tick(), core.state()),
        (Some(8), Some(&state(8)))
    );
    // 4 again: duplicate. Garbage: invalid. Neither changes the state.
    core.handle_realtime(&frames[0], start);
    core.handle_realtime(&[3, 0xff, 1], start);
    core.handle_realtime(&[], start);
    core.handle_control("{not json", start);
    assert_eq!(core.state(), Some(&state(8)));
    let stats = core.net_stats();
    assert_eq!(
        (
            stats.unknown_baseline,
            stats.duplicate,
            stats.invalid,
            stats.stale
        ),
        (2, 1, 3, 0)
    );
    // A stale one: 7 (full) after 8 is applied into the ring, not shown.
    enc.encode(spec(7), None, &state(7), &mut frame, &mut view);
    core.handle_realtime(&frame, start);
    assert_eq!(core.state_tick(), Some(8));
    assert_eq!(core.state_at(7), Some(&state(7)));
    assert_eq!(core.net_stats().stale, 1);
    let snapshots: Vec<u32> = std::iter::from_fn(|| core.poll_event())
        .filter_map(|e| match e {
            GameEvent::Snapshot { tick } => Some(tick),
            _ => None,
        })
        .collect();
    assert_eq!(snapshots, [4, 6, 8]);
}

#[test]
fn server_stats_feed_upstream_loss_and_errors_are_surfaced() {
    let start = Instant::now();
    let mut core = GameCore::new(ME, start);
    let stats = ServerControl::Stats {
        tick: 60,
        players: vec![
            PlayerNetStats {
                peer: PeerId(3),
                rtt_ms: 1.0,
                jitter_ms: 1.0,
                loss: 0.5,
                inputs_late: 0,
                inputs_missing: 0,
                snapshot_bytes_per_s: 0.0,
                injected: None,
            },
            PlayerNetStats {
                peer: ME,
                rtt_ms: 42.0,
                jitter_ms: 3.0,
                loss: 0.125,
                inputs_late: 1,
                inputs_missing: 2,
                snapshot_bytes_per_s: 900.0,
                injected: None,
            },
        ],
    };
    core.handle_control(&serde_json::to_string(&stats).unwrap(), start);
    core.handle_control(
        r#"{"type":"error","code":"command_refused","message":"match running"}"#,
        start,
    );
    core.command(serde_json::json!({"start": {"bots": true}}));
    let net = core.net_stats();
    assert_eq!((net.loss_up, net.server_rtt_ms), (0.125, 42.0));
    assert!(matches!(
        core.poll_event(),
        Some(GameEvent::Stats { tick: 60, .. })
    ));
    assert_eq!(
        core.poll_event(),
        Some(GameEvent::Error {
            code: "command_refused".into(),
            message: "match running".into()
        })
    );
    let Some(GameOutput::Control(text)) = core.poll_output() else {
        panic!("no command sent");
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"type": "command", "command": {"start": {"bots": true}}})
    );
    // No hello yet: local ticks send nothing.
    core.local_tick(start + MS * 20);
    assert_eq!(core.poll_output(), None);
}

#[test]
fn garbage_and_extreme_values_from_the_server_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(60);
    let start = Instant::now();
    let mut core = GameCore::new(ME, start);
    core.set_predictor(Box::new(Toy));
    // Valid frames to mutate.
    let mut enc = SnapshotEncoder::new();
    let (mut frame, mut view) = (Vec::new(), WorldState::new());
    let world = WorldState::from_entities([Entity {
        id: OWN,
        kind: 1,
        fields: vec![1, 2],
    }]);
    let spec = FrameSpec {
        tick: 5,
        input_ack: u32::MAX,
        max_len: 1200,
    };
    enc.encode(spec, None, &world, &mut frame, &mut view);
    let hellos = [
        (1u32, 1u32, 1u8, 1u32, 1e300f64),
        (10_000, 10_000, 16, 0, -1e9),
        (60, 30, 1, u32::MAX, 4.0e12),
        (0, 0, 0, 0, 0.0),
    ];
    let mut now = start;
    for round in 0..4000u32 {
        now += MS * rng.random_range(0..30);
        match rng.random_range(0..6) {
            0 => {
                let mut f = frame.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..f.len());
                    f[i] = rng.random();
                }
                f.truncate(rng.random_range(0..=f.len()));
                core.handle_realtime(&f, now);
            }
            1 => {
                let len = rng.random_range(0..64);
                let f: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                core.handle_realtime(&f, now);
            }
            2 => {
                let (tick_rate, snapshot_rate, input_size, lead, time) =
                    hellos[rng.random_range(0..hellos.len())];
                let hello = ServerControl::Hello(Hello {
                    game: "x".into(),
                    tick_rate,
                    snapshot_rate,
                    input_size,
                    max_input_lead: lead,
                    max_rewind: 0,
                    tick: rng.random(),
                    server_time_ms: time,
                    entity: Some(OWN),
                });
                core.handle_control(&serde_json::to_string(&hello).unwrap(), now);
            }
            3 => {
                let text = [
                    r#"{"type":"clock","id":1,"t0":0,"t1":1e308,"t2":-1e308,"tick":0}"#,
                    r#"{"type":"event","id":18446744073709551615,"tick":0,"event":null}"#,
                    r#"{"type":"stats","tick":0,"players":[]}"#,
                    r#"{"type":"nope"}"#,
                    "\u{0}",
                ][rng.random_range(0..5)];
                core.handle_control(text, now);
            }
            4 => {
                core.set_input(&[rng.random(); 20][..rng.random_range(0..20)]);
                core.local_tick(now);
            }
            _ => core.handle_timeout(now),
        }
        while core.poll_output().is_some() {}
        while core.poll_event().is_some() {}
        let _ = (core.net_stats(), core.interpolated(OWN, now), round);
    }
    assert!(core.net_stats().invalid > 100);
}
