//! Bandwidth and server-added latency of an authoritative Dizolaur room.
//! Run with `scripts/bench-game` (or `cargo bench -p rtcrelay-relay --bench
//! bandwidth`); prints markdown tables for docs/benchmarks.md.
//!
//! **Synthetic runs** (no sleeping, no sockets): the real
//! [`AuthoritativeRoom`] runs a 4-player Dizolaur match, driven by a fake
//! clock (`epoch + …`): the harness calls `handle_timeout` at
//! `next_timeout` and delivers messages at their arrival times. Each seat is
//! a person played by a simulated client that does what the design says a
//! client does:
//!
//! - a local tick timer at 60 Hz that samples the input for
//!   `target = max(previous + 1, floor(server tick) + lead)`, with
//!   `lead = ceil((rtt/2 + 2·jitter) / tick) + 1` (the link's delay is
//!   fixed, so jitter = 0, and the clock estimate is exact, as NTP-style
//!   sync gives on a symmetric path). The input is what [`bot_input`] (a
//!   perfect player) decides on the client's prediction of its own runner
//!   ([`predict_player`] from the newest snapshot with the inputs it sent
//!   since), so nobody crashes and the match lasts;
//! - the timers have a random phase, run 100–400 ppm slow (so their phase
//!   against the server's ticks sweeps during the run, as real clients'
//!   clocks drift) and fire 0–1 ms late;
//! - one input datagram per local tick with every input from
//!   `input_ack + 1` to the target (at most 32), the newest snapshot tick
//!   applied as `ack` and the ms since it arrived;
//! - snapshots decoded and applied (`SnapshotView::decode`/`apply`) into a
//!   ring of the last 64 states; a delta whose baseline it lacks is
//!   ignored. Every applied (non-partial) state is compared with the
//!   server's state of that tick;
//! - events acked on `control`.
//!
//! The link: a fixed one-way delay each way and, on `realtime` only, seeded
//! random loss each way (`control` is reliable: delivered after the delay).
//!
//! Measured over the first 60 s of the race (3,600 ticks, 1,800 snapshots
//! per player; the 3 s countdown before it is excluded):
//!
//! - downstream snapshot payload bytes per player per second (what the room
//!   emits, lost or not), and on the wire (see [`wire_bytes`]);
//! - the naive baseline: the full state as JSON with named fields and float
//!   pixels ([`naive_json`]), once per snapshot tick (30 Hz), per player,
//!   also with the wire overhead; the ratio;
//! - full / delta / partial snapshot counts and mean sizes;
//! - upstream input datagram bytes per player per second;
//! - server-added latency: for each tick T of each player, from the arrival
//!   at the room of the first datagram carrying the input for T, to the
//!   room emitting that player's first snapshot of a tick >= T. The time is
//!   synthetic, so the room's own processing counts as zero here; it is
//!   split into the wait until tick T is simulated (the client's lead: it
//!   stamps inputs for a future tick) and the wait from there to the next
//!   snapshot tick (snapshots go out every 2nd tick).
//!
//! **Real-time run**: the same room and clients (no delay, no loss), driven
//! by `Instant::now()`, sleeping until the next timeout, for 10 s of race:
//! the wall-clock time of `on_realtime`, and of `handle_timeout` plus
//! `poll_output`, and the same latency in real time (it adds processing and
//! the sleep's wake-up lateness).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{InputDatagram, SnapshotHeader, SnapshotView, WorldState};
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::{AuthoritativeRoom, GameConfig, RoomOutput};
use rtcrelay_relay::dizolaur::{self as dz, bot_input, predict_player, Dizolaur};
use rtcrelay_relay::metrics::OutcomeLabel;
use rtcrelay_relay::RelayMetrics;
use serde_json::{json, Value};

const TICK_RATE: u32 = 60;
const SNAPSHOT_RATE: u32 = 30;
const PLAYERS: usize = 4;
/// Game seed (the match seed derives from it).
const SEED: u64 = 0x0d15_0a0f;
/// The measured window: the first 60 s of the race.
const RACE_TICKS: u32 = 60 * TICK_RATE;
/// The real-time run's window.
const REALTIME_RACE_TICKS: u32 = 10 * TICK_RATE;
const ONE_WAY_MS: [u64; 3] = [0, 25, 50];
const LOSSES: [f64; 2] = [0.0, 0.05];
/// States a client keeps (the server keeps as many snapshots per client).
const CLIENT_RING: usize = 64;
/// Most inputs per datagram (`MAX_INPUTS_PER_DATAGRAM`).
const MAX_INPUTS: u32 = 32;

// ---- On-the-wire estimate of one DataChannel message ----
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const DTLS12_RECORD_HEADER: usize = 13;
/// AES-128-GCM in DTLS 1.2: 8-byte explicit nonce + 16-byte tag per record.
const AES_GCM_NONCE_AND_TAG: usize = 8 + 16;
const SCTP_COMMON_HEADER: usize = 12;
const SCTP_DATA_CHUNK_HEADER: usize = 16;
/// Bytes around each SCTP DATA chunk on the wire (before padding): 93.
const PER_PACKET_OVERHEAD: usize = IPV4_HEADER
    + UDP_HEADER
    + DTLS12_RECORD_HEADER
    + AES_GCM_NONCE_AND_TAG
    + SCTP_COMMON_HEADER
    + SCTP_DATA_CHUNK_HEADER;
/// User data per SCTP DATA chunk in str0m 0.25: `DATAGRAM_MTU_TARGET` 1150
/// − `MAX_DTLS_OVERHEAD` 48 − `SCTP_OVERHEAD` 40. Larger messages are
/// fragmented, one packet per fragment.
const SCTP_MAX_CHUNK_PAYLOAD: usize = 1062;

/// Estimated IPv4 bytes of one DataChannel message of `payload` bytes, one
/// message per packet (no bundling, SACKs not counted): per fragment of at
/// most 1,062 bytes, 93 bytes of headers (IPv4 20 + UDP 8 + DTLS 1.2 record
/// header 13 + AES-GCM explicit nonce 8 + tag 16 + SCTP common header 12 +
/// DATA chunk header 16) + the fragment padded to a multiple of 4.
fn wire_bytes(payload: usize) -> usize {
    if payload == 0 {
        return PER_PACKET_OVERHEAD;
    }
    let mut left = payload;
    let mut total = 0;
    while left > 0 {
        let fragment = left.min(SCTP_MAX_CHUNK_PAYLOAD);
        total += PER_PACKET_OVERHEAD + fragment.next_multiple_of(4);
        left -= fragment;
    }
    total
}

/// When tick `k` is simulated (the room's clock rule).
fn tick_at(epoch: Instant, k: u32) -> Instant {
    epoch + Duration::from_nanos((u64::from(k) * 1_000_000_000) / u64::from(TICK_RATE))
}

/// The design's input lead for a fixed one-way delay (rtt = 2 · one way,
/// jitter 0): `ceil((rtt/2 + 2·jitter) / tick) + 1`.
fn lead_for(one_way: Duration) -> u32 {
    let ticks = (one_way.as_nanos() * u128::from(TICK_RATE)).div_ceil(1_000_000_000);
    ticks as u32 + 1
}

/// What a naive server would send: the whole state as JSON, named fields
/// (the names of `dizolaur::layout`), positions and speeds as float pixels,
/// flags as booleans, enums as their numbers.
fn naive_json(tick: u32, world: &WorldState) -> String {
    let px = |units: i32| f64::from(units) / f64::from(dz::UNITS_PER_PX);
    let mut match_state = Value::Null;
    let mut players = Vec::new();
    let mut obstacles = Vec::new();
    for e in world.entities() {
        let f = &e.fields;
        match e.kind {
            dz::KIND_MATCH if f.len() >= dz::MATCH_FIELDS => {
                match_state = json!({
                    "phase": f[dz::M_PHASE],
                    "phase_tick": f[dz::M_PHASE_TICK],
                    "countdown": f[dz::M_COUNTDOWN],
                    "start_tick": f[dz::M_START_TICK],
                    "max_ticks": f[dz::M_MAX_TICKS],
                    "speed": px(f[dz::M_SPEED]),
                    "scroll": px(f[dz::M_SCROLL]),
                    "match": f[dz::M_MATCH],
                    "bots": f[dz::M_BOTS] != 0,
                    "winners": f[dz::M_WINNERS],
                    "running": f[dz::M_RUNNING],
                });
            }
            dz::KIND_RUNNER if f.len() >= dz::LANE_FIELDS => players.push(json!({
                "id": e.id,
                "peer": if f[dz::P_PEER] == 0 { Value::Null } else { json!(f[dz::P_PEER]) },
                "bot": f[dz::P_BOT] != 0,
                "state": f[dz::P_STATE],
                "y": px(f[dz::P_Y]),
                "vy": px(f[dz::P_VY]),
                "input": f[dz::P_INPUT],
                "tick": f[dz::P_TICK],
                "distance": f[dz::P_DISTANCE],
                "pending": f[dz::P_PENDING] != 0,
                "out_tick": f[dz::P_OUT_TICK],
                "place": f[dz::P_PLACE],
            })),
            _ if f.len() >= dz::OBSTACLE_FIELDS => obstacles.push(json!({
                "id": e.id,
                "kind": e.kind,
                "x": px(f[dz::O_X]),
                "y": px(f[dz::O_Y]),
                "w": px(f[dz::O_W]),
                "h": px(f[dz::O_H]),
            })),
            _ => {}
        }
    }
    json!({"tick": tick, "match": match_state, "players": players, "obstacles": obstacles})
        .to_string()
}

// ---------------------------------------------------------------------------
// The simulated client

struct Client {
    /// Its runner's entity (from `hello`).
    entity: Option<u32>,
    /// Applied states, ascending tick, at most `CLIENT_RING`.
    ring: VecDeque<(u32, WorldState)>,
    /// The newest applied tick and when it arrived.
    newest: Option<(u32, Instant)>,
    input_ack: Option<u32>,
    /// The input sent for each recent tick.
    inputs: BTreeMap<u32, u8>,
    first_target: Option<u32>,
    target: Option<u32>,
    seq: u32,
    ignored_deltas: u64,
    errors: u64,
    /// Local tick timer: fire k at `timer_start + k · period` + lateness.
    timer_start: Instant,
    period_ns: f64,
    fired: u64,
    /// Per datagram: target − the server's tick at sending (the lead used).
    leads: Vec<u32>,
}

impl Client {
    fn new(epoch: Instant, slow_ppm: f64, rng: &mut ChaCha8Rng) -> Client {
        let tick_ns = 1e9 / f64::from(TICK_RATE);
        let phase = Duration::from_nanos(rng.random_range(0..tick_ns as u64));
        Client {
            entity: None,
            ring: VecDeque::with_capacity(CLIENT_RING + 1),
            newest: None,
            input_ack: None,
            inputs: BTreeMap::new(),
            first_target: None,
            target: None,
            seq: 0,
            ignored_deltas: 0,
            errors: 0,
            timer_start: epoch + phase,
            period_ns: tick_ns * (1.0 + slow_ppm * 1e-6),
            fired: 0,
            leads: Vec::new(),
        }
    }

    /// When the local timer fires next (0–1 ms late).
    fn next_fire(&mut self, rng: &mut ChaCha8Rng) -> Instant {
        let at = self.timer_start
            + Duration::from_nanos((self.fired as f64 * self.period_ns) as u64)
            + Duration::from_nanos(rng.random_range(0..1_000_000));
        self.fired += 1;
        at
    }

    /// The next firing after `now`: firings missed while the thread was
    /// late are skipped, not run in a burst (a burst would make `target`
    /// run ahead of `floor(server tick) + lead` for good: it only ever
    /// advances by one per firing).
    fn next_fire_after(&mut self, now: Instant, rng: &mut ChaCha8Rng) -> Instant {
        loop {
            let at = self.next_fire(rng);
            if at > now {
                return at;
            }
        }
    }

    fn state(&self, tick: u32) -> Option<&WorldState> {
        let i = self.ring.binary_search_by_key(&tick, |(t, _)| *t).ok()?;
        Some(&self.ring[i].1)
    }

    /// Decodes and applies a snapshot; its header if it was applied.
    fn on_snapshot(&mut self, frame: &[u8], now: Instant) -> Option<SnapshotHeader> {
        let Ok(view) = SnapshotView::decode(frame) else {
            self.errors += 1;
            return None;
        };
        let h = view.header;
        if self.state(h.tick).is_some() {
            return None;
        }
        let baseline = match h.baseline {
            None => None,
            Some(b) => match self.state(b) {
                Some(state) => Some(state),
                None => {
                    self.ignored_deltas += 1;
                    return None;
                }
            },
        };
        let mut state = WorldState::new();
        if view.apply(baseline, &mut state).is_err() {
            self.errors += 1;
            return None;
        }
        let at = self.ring.partition_point(|(t, _)| *t < h.tick);
        self.ring.insert(at, (h.tick, state));
        if self.ring.len() > CLIENT_RING {
            self.ring.pop_front();
        }
        if self.newest.is_none_or(|(t, _)| h.tick > t) {
            self.newest = Some((h.tick, now));
            self.input_ack = Some(h.input_ack);
        }
        Some(h)
    }

    /// The input for `target`: a perfect player's, on the prediction of its
    /// runner from the newest state with the inputs sent since.
    fn decide(&self, target: u32) -> u8 {
        let (Some((_, world)), Some(entity)) = (self.ring.back(), self.entity) else {
            return 0;
        };
        let Some(runner) = world.get(entity) else {
            return 0;
        };
        let mut fields = runner.fields.clone();
        if fields.len() < dz::LANE_FIELDS {
            return 0;
        }
        let mut t = fields[dz::P_TICK] as u32 + 1;
        while t < target {
            let input = self.inputs.get(&t).copied().unwrap_or(0);
            predict_player(&mut fields, input, world);
            t += 1;
        }
        bot_input(&fields, world)
    }

    /// A local tick at `now`: the datagram, and the ticks sampled for the
    /// first time (`from..=to`).
    fn on_tick(&mut self, now: Instant, epoch: Instant, lead: u32) -> (Vec<u8>, u32, u32) {
        let elapsed = now.saturating_duration_since(epoch).as_nanos();
        let server_tick = (elapsed * u128::from(TICK_RATE) / 1_000_000_000) as u32;
        let target = (server_tick + lead).max(self.target.map_or(0, |t| t + 1));
        self.leads.push(target - server_tick);
        let input = self.decide(target);
        let from = self.target.map_or(target, |t| t + 1);
        // Skipped ticks (the local timer fell behind) get the same input.
        for t in from..=target {
            self.inputs.insert(t, input);
        }
        self.target = Some(target);
        let first_target = *self.first_target.get_or_insert(target);
        let first = self
            .input_ack
            .map_or(first_target, |a| a.saturating_add(1))
            .max(first_target)
            .max(target.saturating_sub(MAX_INPUTS - 1))
            .min(target);
        let inputs: Vec<u8> = (first..=target)
            .map(|t| self.inputs.get(&t).copied().unwrap_or(0))
            .collect();
        self.inputs = self.inputs.split_off(&target.saturating_sub(256));
        self.seq += 1;
        let datagram = InputDatagram {
            seq: self.seq,
            ack: self.newest.map(|(tick, at)| SnapshotAck {
                tick,
                delay_ms: now.saturating_duration_since(at).as_millis().min(65_535) as u16,
            }),
            first_tick: first,
            input_size: 1,
            inputs,
        };
        (datagram.encode(), from, target)
    }

    /// A control message: remembers its entity; the ack to send, if any.
    fn on_control(&mut self, text: &str) -> Option<String> {
        let v: Value = serde_json::from_str(text).ok()?;
        match v["type"].as_str()? {
            "hello" => {
                self.entity = v["entity"].as_u64().map(|e| e as u32);
                None
            }
            "event" => Some(json!({"type": "event_ack", "id": v["id"]}).to_string()),
            _ => None,
        }
    }
}

/// A room with 4 ready players and `start` sent by the first at `epoch`.
fn start_room(epoch: Instant, metrics: &RelayMetrics) -> AuthoritativeRoom {
    let mut room = AuthoritativeRoom::new(
        Box::new(Dizolaur::new(SEED)),
        SEED,
        GameConfig {
            tick_rate: TICK_RATE,
            snapshot_rate: SNAPSHOT_RATE,
            ..GameConfig::default()
        },
        metrics.clone(),
        epoch,
    );
    for p in 0..PLAYERS {
        let peer = peer_of(p);
        room.join(peer, &format!("p{p}"), epoch).expect("join");
        room.ready(peer, epoch);
    }
    room.on_control(
        peer_of(0),
        r#"{"type":"command","command":{"start":{"bots":false}}}"#,
        epoch,
    );
    room
}

fn peer_of(index: usize) -> PeerId {
    PeerId(index as u32 + 1)
}

fn index_of(peer: PeerId) -> usize {
    peer.0 as usize - 1
}

/// The server's state now (the room's game), and its race window.
fn server_state(room: &AuthoritativeRoom, out: &mut WorldState) -> Option<u32> {
    room.simulation().snapshot(out);
    let m = out.get(dz::MATCH_ID)?;
    (m.fields.get(dz::M_PHASE).copied()? >= dz::PHASE_COUNTDOWN)
        .then(|| m.fields[dz::M_START_TICK] as u32)
}

fn outcome(metrics: &RelayMetrics, outcome: &'static str) -> u64 {
    metrics
        .game
        .inputs
        .get_or_create(&OutcomeLabel { outcome })
        .get()
}

const OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "late_applied",
    "late",
    "too_early",
    "missing",
];

// ---------------------------------------------------------------------------
// The synthetic run

enum Event {
    ClientTimer(usize),
    InputArrives(usize, Vec<u8>),
    ControlToServer(usize, String),
    SnapshotArrives(usize, Vec<u8>),
    ControlToClient(usize, String),
}

struct Scheduled {
    at: Instant,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Default)]
struct KindStats {
    count: u64,
    bytes: u64,
}

#[derive(Default)]
struct Results {
    one_way: Duration,
    loss: f64,
    lead: u32,
    snapshot_bytes: u64,
    snapshot_wire: u64,
    /// full, delta, partial
    kinds: [KindStats; 3],
    json_frames: u64,
    json_bytes: u64,
    json_wire: u64,
    input_datagrams: u64,
    input_bytes: u64,
    input_wire: u64,
    control_bytes: u64,
    control_wire: u64,
    /// Server-added latency samples and their parts.
    latency: Vec<Duration>,
    wait_for_tick: Vec<Duration>,
    wait_for_snapshot: Vec<Duration>,
    /// Inputs whose first copy arrived after their tick was simulated.
    arrived_late: u64,
    /// Client: input sampled → a snapshot reflecting it applied.
    round_trip: Vec<Duration>,
    checked: u64,
    mismatches: u64,
    ignored_deltas: u64,
    errors: u64,
    /// Room wall-clock time per `handle_timeout` + drain: with snapshots
    /// and without.
    cost_snapshot_ticks: Vec<Duration>,
    cost_other_ticks: Vec<Duration>,
    cost_on_realtime: Vec<Duration>,
    outcomes: [u64; OUTCOMES.len()],
    /// Runners still racing at the end of the window.
    racing_at_end: usize,
    /// Mean target − server tick of the datagrams sent.
    mean_lead: f64,
}

struct Synthetic {
    room: AuthoritativeRoom,
    metrics: RelayMetrics,
    epoch: Instant,
    lead: u32,
    one_way: Duration,
    loss: f64,
    rng: ChaCha8Rng,
    clients: Vec<Client>,
    queue: BinaryHeap<Scheduled>,
    order: u64,
    /// The measured ticks: (start, end].
    window: Option<(u32, u32)>,
    server_states: BTreeMap<u32, WorldState>,
    scratch: WorldState,
    outputs: Vec<RoomOutput>,
    /// Per player: the highest input tick that reached the room, and the
    /// first arrival of each tick not yet reflected in a snapshot.
    highest_arrived: Vec<Option<u32>>,
    arrivals: Vec<BTreeMap<u32, Instant>>,
    /// Per player: when the client sampled each tick's input.
    sampled: Vec<BTreeMap<u32, Instant>>,
    outcomes_at_start: Option<[u64; OUTCOMES.len()]>,
    r: Results,
}

impl Synthetic {
    fn new(one_way_ms: u64, loss: f64, scenario: u64) -> Synthetic {
        let epoch = Instant::now();
        let metrics = RelayMetrics::default();
        let room = start_room(epoch, &metrics);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ scenario.wrapping_mul(0x9e37_79b9));
        let one_way = Duration::from_millis(one_way_ms);
        let clients = (0..PLAYERS)
            .map(|p| Client::new(epoch, 100.0 * (p as f64 + 1.0), &mut rng))
            .collect();
        let lead = lead_for(one_way);
        let mut s = Synthetic {
            room,
            metrics,
            epoch,
            lead,
            one_way,
            loss,
            rng,
            clients,
            queue: BinaryHeap::new(),
            order: 0,
            window: None,
            server_states: BTreeMap::new(),
            scratch: WorldState::new(),
            outputs: Vec::new(),
            highest_arrived: vec![None; PLAYERS],
            arrivals: vec![BTreeMap::new(); PLAYERS],
            sampled: vec![BTreeMap::new(); PLAYERS],
            outcomes_at_start: None,
            r: Results {
                one_way,
                loss,
                lead,
                ..Results::default()
            },
        };
        for p in 0..PLAYERS {
            let at = s.clients[p].next_fire(&mut s.rng);
            s.schedule(at, Event::ClientTimer(p));
        }
        s.drain(epoch);
        s
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.order += 1;
        self.queue.push(Scheduled {
            at,
            order: self.order,
            event,
        });
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.random_bool(self.loss)
    }

    fn in_window_tick(&self, tick: u32) -> bool {
        self.window.is_some_and(|(s, e)| tick > s && tick <= e)
    }

    fn in_window_time(&self, at: Instant) -> bool {
        self.window
            .is_some_and(|(s, e)| at >= tick_at(self.epoch, s) && at < tick_at(self.epoch, e))
    }

    fn run(mut self) -> Results {
        loop {
            let room_at = self.room.next_timeout();
            if self.queue.peek().is_some_and(|s| s.at <= room_at) {
                let Some(s) = self.queue.pop() else { break };
                self.handle(s.at, s.event);
                continue;
            }
            let start = Instant::now();
            self.room.handle_timeout(room_at);
            self.outputs.clear();
            while let Some(out) = self.room.poll_output() {
                self.outputs.push(out);
            }
            let cost = start.elapsed();
            let tick = self.room.tick();
            if self.window.is_none() {
                self.window =
                    server_state(&self.room, &mut self.scratch).map(|s| (s, s + RACE_TICKS));
            }
            if self.in_window_tick(tick) {
                let snapshots = self
                    .outputs
                    .iter()
                    .any(|o| matches!(o, RoomOutput::Realtime { .. }));
                if snapshots {
                    self.r.cost_snapshot_ticks.push(cost);
                } else {
                    self.r.cost_other_ticks.push(cost);
                }
            }
            if let Some((start, end)) = self.window {
                if tick == start {
                    self.outcomes_at_start = Some(OUTCOMES.map(|o| outcome(&self.metrics, o)));
                }
                if tick == end {
                    let before = self.outcomes_at_start.unwrap_or_default();
                    for (i, o) in OUTCOMES.iter().enumerate() {
                        self.r.outcomes[i] = outcome(&self.metrics, o) - before[i];
                    }
                    server_state(&self.room, &mut self.scratch);
                    self.r.racing_at_end = self
                        .scratch
                        .entities()
                        .iter()
                        .filter(|e| e.kind == dz::KIND_RUNNER)
                        .filter(|e| {
                            matches!(
                                e.fields[dz::P_STATE],
                                dz::STATE_RUNNING | dz::STATE_JUMPING | dz::STATE_DUCKING
                            ) && e.fields[dz::P_PENDING] == 0
                        })
                        .count();
                }
                // A few more ticks so that the last inputs get their snapshot.
                if tick >= end + 10 {
                    break;
                }
            }
            let outputs = std::mem::take(&mut self.outputs);
            for out in &outputs {
                self.on_output(out, room_at);
            }
            self.outputs = outputs;
        }
        let leads: Vec<u32> = self
            .clients
            .iter()
            .flat_map(|c| c.leads.iter().copied())
            .collect();
        self.r.mean_lead = f64::from(leads.iter().sum::<u32>()) / leads.len().max(1) as f64;
        for c in &self.clients {
            self.r.ignored_deltas += c.ignored_deltas;
            self.r.errors += c.errors;
        }
        self.r
    }

    /// Outputs of a call other than `handle_timeout` (e.g. `on_control`).
    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.room.poll_output() {
            self.on_output(&out, now);
        }
    }

    fn on_output(&mut self, out: &RoomOutput, now: Instant) {
        match out {
            RoomOutput::Realtime { peer, data } => {
                self.on_snapshot_sent(index_of(*peer), data, now)
            }
            RoomOutput::Control { peer, text } => {
                if self.in_window_time(now) {
                    self.r.control_bytes += text.len() as u64;
                    self.r.control_wire += wire_bytes(text.len()) as u64;
                }
                let at = now + self.one_way;
                self.schedule(at, Event::ControlToClient(index_of(*peer), text.clone()));
            }
        }
    }

    fn on_snapshot_sent(&mut self, player: usize, data: &[u8], now: Instant) {
        let Ok(view) = SnapshotView::decode(data) else {
            self.r.errors += 1;
            return;
        };
        let h = view.header;
        if !self.server_states.contains_key(&h.tick) && self.room.tick() == h.tick {
            let mut state = WorldState::new();
            server_state(&self.room, &mut state);
            if self.in_window_tick(h.tick) {
                let json = naive_json(h.tick, &state);
                self.r.json_frames += 1;
                self.r.json_bytes += json.len() as u64;
                self.r.json_wire += wire_bytes(json.len()) as u64;
            }
            self.server_states.insert(h.tick, state);
            while self.server_states.len() > 4 * CLIENT_RING {
                self.server_states.pop_first();
            }
        }
        if self.in_window_tick(h.tick) {
            self.r.snapshot_bytes += data.len() as u64;
            self.r.snapshot_wire += wire_bytes(data.len()) as u64;
            let kind = if h.partial {
                2
            } else if h.baseline.is_none() {
                0
            } else {
                1
            };
            self.r.kinds[kind].count += 1;
            self.r.kinds[kind].bytes += data.len() as u64;
        }
        // Every input tick <= this snapshot's tick that had arrived.
        while let Some((&t, &arrived)) = self.arrivals[player].first_key_value() {
            if t > h.tick {
                break;
            }
            self.arrivals[player].pop_first();
            if self.in_window_tick(t) {
                let due = tick_at(self.epoch, t);
                self.r.latency.push(now - arrived);
                self.r
                    .wait_for_tick
                    .push(due.saturating_duration_since(arrived));
                self.r.wait_for_snapshot.push(now - due.max(arrived));
                if arrived > due {
                    self.r.arrived_late += 1;
                }
            }
        }
        if !self.lost() {
            let at = now + self.one_way;
            self.schedule(at, Event::SnapshotArrives(player, data.to_vec()));
        }
    }

    fn handle(&mut self, at: Instant, event: Event) {
        match event {
            Event::ClientTimer(p) => {
                let (data, from, to) = self.clients[p].on_tick(at, self.epoch, self.lead);
                for t in from..=to {
                    self.sampled[p].insert(t, at);
                }
                if self.in_window_time(at) {
                    self.r.input_datagrams += 1;
                    self.r.input_bytes += data.len() as u64;
                    self.r.input_wire += wire_bytes(data.len()) as u64;
                }
                if !self.lost() {
                    self.schedule(at + self.one_way, Event::InputArrives(p, data));
                }
                let next = self.clients[p].next_fire(&mut self.rng);
                self.schedule(next, Event::ClientTimer(p));
            }
            Event::InputArrives(p, data) => {
                if let Ok(d) = InputDatagram::decode(&data) {
                    let last = d.first_tick + d.count() as u32 - 1;
                    let from = self.highest_arrived[p].map_or(d.first_tick, |h| h + 1);
                    for t in from.max(d.first_tick)..=last {
                        self.arrivals[p].insert(t, at);
                    }
                    if self.highest_arrived[p].is_none_or(|h| last > h) {
                        self.highest_arrived[p] = Some(last);
                    }
                }
                let start = Instant::now();
                self.room.on_realtime(peer_of(p), &data, at);
                let cost = start.elapsed();
                if self.in_window_time(at) {
                    self.r.cost_on_realtime.push(cost);
                }
                self.drain(at);
            }
            Event::ControlToServer(p, text) => {
                self.room.on_control(peer_of(p), &text, at);
                self.drain(at);
            }
            Event::SnapshotArrives(p, data) => {
                let Some(h) = self.clients[p].on_snapshot(&data, at) else {
                    return;
                };
                if !h.partial {
                    if let Some(server) = self.server_states.get(&h.tick) {
                        self.r.checked += 1;
                        if self.clients[p].state(h.tick) != Some(server) {
                            self.r.mismatches += 1;
                        }
                    }
                }
                while let Some((&t, &sampled)) = self.sampled[p].first_key_value() {
                    if t > h.tick {
                        break;
                    }
                    self.sampled[p].pop_first();
                    if self.in_window_tick(t) {
                        self.r.round_trip.push(at - sampled);
                    }
                }
            }
            Event::ControlToClient(p, text) => {
                if let Some(ack) = self.clients[p].on_control(&text) {
                    self.schedule(at + self.one_way, Event::ControlToServer(p, ack));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The real-time run

#[derive(Default)]
struct Realtime {
    race: Duration,
    on_realtime: Vec<Duration>,
    snapshot_ticks: Vec<Duration>,
    other_ticks: Vec<Duration>,
    /// Wake-up lateness at the room's timeouts.
    oversleep: Vec<Duration>,
    latency: Vec<Duration>,
    busy: Duration,
    /// Per datagram: target − server tick when sent.
    leads: Vec<u32>,
}

/// Hands a room output to its client at once (no delay); an event ack goes
/// straight back.
fn deliver(clients: &mut [Client], room: &mut AuthoritativeRoom, out: &RoomOutput, now: Instant) {
    match out {
        RoomOutput::Realtime { peer, data } => {
            clients[index_of(*peer)].on_snapshot(data, now);
        }
        RoomOutput::Control { peer, text } => {
            if let Some(ack) = clients[index_of(*peer)].on_control(text) {
                room.on_control(*peer, &ack, now);
            }
        }
    }
}

fn realtime_run() -> Realtime {
    let metrics = RelayMetrics::default();
    let epoch = Instant::now();
    let mut room = start_room(epoch, &metrics);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut clients: Vec<Client> = (0..PLAYERS)
        .map(|p| Client::new(epoch, 100.0 * (p as f64 + 1.0), &mut rng))
        .collect();
    let mut fires: Vec<Instant> = clients.iter_mut().map(|c| c.next_fire(&mut rng)).collect();
    let lead = lead_for(Duration::ZERO);
    let mut arrivals: Vec<BTreeMap<u32, Instant>> = vec![BTreeMap::new(); PLAYERS];
    let mut highest: Vec<Option<u32>> = vec![None; PLAYERS];
    let mut outputs: Vec<(RoomOutput, Instant)> = Vec::new();
    let mut scratch = WorldState::new();
    let mut window: Option<(u32, u32)> = None;
    let mut r = Realtime::default();
    // Hello and the first events.
    while let Some(out) = room.poll_output() {
        deliver(&mut clients, &mut room, &out, epoch);
    }
    loop {
        let room_at = room.next_timeout();
        let next = fires
            .iter()
            .copied()
            .min()
            .map_or(room_at, |f| f.min(room_at));
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let woke = Instant::now();
        if room.next_timeout() <= woke {
            let start = Instant::now();
            room.handle_timeout(start);
            outputs.clear();
            while let Some(out) = room.poll_output() {
                outputs.push((out, Instant::now()));
            }
            let end = Instant::now();
            let tick = room.tick();
            if window.is_none() {
                window = server_state(&room, &mut scratch).map(|s| (s, s + REALTIME_RACE_TICKS));
            }
            let in_window = window.is_some_and(|(s, e)| tick > s && tick <= e);
            if in_window {
                r.oversleep.push(start.saturating_duration_since(room_at));
                r.busy += end - start;
                if outputs
                    .iter()
                    .any(|(o, _)| matches!(o, RoomOutput::Realtime { .. }))
                {
                    r.snapshot_ticks.push(end - start);
                } else {
                    r.other_ticks.push(end - start);
                }
            }
            for (out, sent) in &outputs {
                if let RoomOutput::Realtime { peer, data } = out {
                    let p = index_of(*peer);
                    let tick = SnapshotView::decode(data).map_or(0, |v| v.header.tick);
                    while let Some((&t, &arrived)) = arrivals[p].first_key_value() {
                        if t > tick {
                            break;
                        }
                        arrivals[p].pop_first();
                        if window.is_some_and(|(s, e)| t > s && t <= e) {
                            r.latency.push(*sent - arrived);
                        }
                    }
                }
                deliver(&mut clients, &mut room, out, end);
            }
            while let Some(out) = room.poll_output() {
                deliver(&mut clients, &mut room, &out, end);
            }
            if let Some((_, e)) = window {
                if tick >= e + 10 {
                    break;
                }
            }
        }
        for p in 0..PLAYERS {
            let now = Instant::now();
            if fires[p] > now {
                continue;
            }
            let (data, _, _) = clients[p].on_tick(now, epoch, lead);
            let arrived = Instant::now();
            if let Ok(d) = InputDatagram::decode(&data) {
                let last = d.first_tick + d.count() as u32 - 1;
                let from = highest[p].map_or(d.first_tick, |h| h + 1).max(d.first_tick);
                for t in from..=last {
                    arrivals[p].insert(t, arrived);
                }
                if highest[p].is_none_or(|h| last > h) {
                    highest[p] = Some(last);
                }
            }
            let start = Instant::now();
            room.on_realtime(peer_of(p), &data, start);
            let cost = start.elapsed();
            let tick = room.tick();
            if window.is_some_and(|(s, e)| tick >= s && tick < e) {
                r.on_realtime.push(cost);
                r.busy += cost;
            }
            while let Some(out) = room.poll_output() {
                deliver(&mut clients, &mut room, &out, Instant::now());
            }
            fires[p] = clients[p].next_fire_after(Instant::now(), &mut rng);
        }
    }
    r.race = Duration::from_secs(u64::from(REALTIME_RACE_TICKS / TICK_RATE));
    r.leads = clients
        .iter()
        .flat_map(|c| c.leads.iter().copied())
        .collect();
    r
}

// ---------------------------------------------------------------------------
// Output

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort_unstable();
    v
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(v: &[Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.iter().sum::<Duration>() / v.len() as u32
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn per_player_per_s(bytes: u64) -> f64 {
    bytes as f64 / PLAYERS as f64 / f64::from(RACE_TICKS / TICK_RATE)
}

fn scenario(r: &Results) -> String {
    format!("{} ms, {:.0}%", r.one_way.as_millis(), r.loss * 100.0)
}

fn main() {
    let wall = Instant::now();
    let mut results = Vec::new();
    let mut n = 0;
    for &one_way in &ONE_WAY_MS {
        for &loss in &LOSSES {
            n += 1;
            let started = Instant::now();
            let r = Synthetic::new(one_way, loss, n).run();
            eprintln!(
                "bandwidth: {one_way} ms one way, {:.0}% loss: {:.2} s",
                loss * 100.0,
                started.elapsed().as_secs_f64()
            );
            results.push(r);
        }
    }
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let realtime = realtime_run();
    eprintln!("bandwidth: done in {:.1} s", wall.elapsed().as_secs_f64());

    println!(
        "4-player Dizolaur match, {TICK_RATE} Hz ticks, {SNAPSHOT_RATE} Hz snapshots, first {} s of the race; \
         per player and second; wire = estimated IPv4 bytes (93 bytes per packet + padding)\n",
        RACE_TICKS / TICK_RATE
    );
    println!("| one-way delay, loss | snapshots: payload B/s | on the wire B/s | naive JSON: payload B/s | on the wire B/s | ratio payload | ratio wire | inputs up: payload B/s | on the wire B/s | control down: payload / wire B/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let snap = per_player_per_s(r.snapshot_bytes);
        let snap_wire = per_player_per_s(r.snapshot_wire);
        // One JSON frame per snapshot tick, sent to each of the 4 players.
        let json = per_player_per_s(r.json_bytes * PLAYERS as u64);
        let json_wire = per_player_per_s(r.json_wire * PLAYERS as u64);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}× | {:.1}× | {:.0} | {:.0} | {:.0} / {:.0} |",
            scenario(r),
            snap,
            snap_wire,
            json,
            json_wire,
            json / snap,
            json_wire / snap_wire,
            per_player_per_s(r.input_bytes),
            per_player_per_s(r.input_wire),
            per_player_per_s(r.control_bytes),
            per_player_per_s(r.control_wire),
        );
    }

    println!("\n| one-way delay, loss | full: n, mean B | delta: n, mean B | partial: n, mean B | naive JSON mean B | input datagram mean B | deltas ignored (no baseline) / errors | states checked / mismatches | runners racing at 60 s | inputs: accepted / duplicate / late applied / late / missing |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &results {
        let k = |i: usize| {
            let s = &r.kinds[i];
            if s.count == 0 {
                "0".to_string()
            } else {
                format!("{}, {:.1}", s.count, s.bytes as f64 / s.count as f64)
            }
        };
        let o = &r.outcomes;
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {} / {} | {} / {} | {}/4 | {} / {} / {} / {} / {} |",
            scenario(r),
            k(0),
            k(1),
            k(2),
            r.json_bytes as f64 / r.json_frames.max(1) as f64,
            r.input_bytes as f64 / r.input_datagrams.max(1) as f64,
            r.ignored_deltas,
            r.errors,
            r.checked,
            r.mismatches,
            r.racing_at_end,
            o[0],
            o[1],
            o[2],
            o[3],
            o[5],
        );
    }

    println!("\nServer-added latency (synthetic time: processing = 0), input datagram arrival → first snapshot of a tick ≥ the input's leaves the room\n");
    println!("| one-way delay, loss | lead (ticks; mean used) | n | p50 | p99 | max | mean wait for its tick | mean tick → snapshot | arrived after its tick | client: sampled → snapshot back, p50 / p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let lat = sorted(r.latency.clone());
        let rt = sorted(r.round_trip.clone());
        println!(
            "| {} | {} ({:.2}) | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            scenario(r),
            r.lead,
            r.mean_lead,
            lat.len(),
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(pct(&lat, 1.0)),
            ms(mean(&r.wait_for_tick)),
            ms(mean(&r.wait_for_snapshot)),
            r.arrived_late,
            ms(pct(&rt, 0.5)),
            ms(pct(&rt, 0.99)),
        );
    }

    println!("\nRoom processing (wall clock)\n");
    println!("| run | measured | n | p50 | p99 | max | mean |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let row = |run: &str, what: &str, v: &[Duration]| {
        let s = sorted(v.to_vec());
        println!(
            "| {run} | {what} | {} | {} | {} | {} | {} |",
            s.len(),
            us(pct(&s, 0.5)),
            us(pct(&s, 0.99)),
            us(pct(&s, 1.0)),
            us(mean(&s)),
        );
    };
    let all = |f: fn(&Results) -> &Vec<Duration>| -> Vec<Duration> {
        results.iter().flat_map(|r| f(r).iter().copied()).collect()
    };
    row(
        "synthetic (6 runs, tight loop)",
        "`handle_timeout` + `poll_output`, tick with 4 snapshots",
        &all(|r| &r.cost_snapshot_ticks),
    );
    row(
        "synthetic (6 runs, tight loop)",
        "`handle_timeout` + `poll_output`, tick without",
        &all(|r| &r.cost_other_ticks),
    );
    row(
        "synthetic (6 runs, tight loop)",
        "`on_realtime` (one input datagram)",
        &all(|r| &r.cost_on_realtime),
    );
    row(
        "real time (10 s)",
        "`handle_timeout` + `poll_output`, tick with 4 snapshots",
        &realtime.snapshot_ticks,
    );
    row(
        "real time (10 s)",
        "`handle_timeout` + `poll_output`, tick without",
        &realtime.other_ticks,
    );
    row(
        "real time (10 s)",
        "`on_realtime` (one input datagram)",
        &realtime.on_realtime,
    );
    row(
        "real time (10 s)",
        "wake-up lateness at the room's timeout",
        &realtime.oversleep,
    );
    let lat = sorted(realtime.latency.clone());
    let with_lead = |f: fn(u32) -> bool| realtime.leads.iter().filter(|&&l| f(l)).count();
    println!(
        "\nReal-time run (0 ms, 0%, lead 1): arrival → snapshot leaves, n = {}, p50 {}, p99 {}, max {}; \
         datagrams sent with target − server tick = 1: {}, 2: {}, ≥ 3: {}; \
         room busy {:.3}% of one core ({} in {} s); load average before: {}",
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
        with_lead(|l| l <= 1),
        with_lead(|l| l == 2),
        with_lead(|l| l >= 3),
        realtime.busy.as_secs_f64() / realtime.race.as_secs_f64() * 100.0,
        ms(realtime.busy),
        realtime.race.as_secs(),
        load_average,
    );
}
