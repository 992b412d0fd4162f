//! Shared by the `authoritative_*` tests: a small deterministic game that
//! records what the room gave it, a seeded lossy link, and helpers. All
//! time is synthetic (`t0 + …`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::{Entity, WorldState};
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::{GameFactory, Simulation, StateHasher};
use rtcrelay_relay::metrics::{OutcomeLabel, SnapshotKindLabel};
use rtcrelay_relay::RelayMetrics;
use serde_json::json;

pub const TEST_GAME: &str = "test_counter";
/// The game emits an event every this many ticks.
pub const EVENT_EVERY: u32 = 120;

/// One `apply_input` call the room made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub peer: PeerId,
    pub tick: u32,
    pub input: Vec<u8>,
    /// The tick was already simulated (a late input).
    pub late: bool,
}

/// What the game saw, shared with the test.
#[derive(Debug, Default)]
pub struct Record {
    pub applied: Vec<Applied>,
    /// The state of every snapshot the room took, by tick.
    pub states: BTreeMap<u32, WorldState>,
}

#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Record>>);

impl Recorder {
    pub fn get(&self) -> MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default, Clone)]
struct Player {
    last_input: u8,
    sum: i32,
    applied: i32,
    late: i32,
}

/// A counter game: each player's entity sums its inputs; seeded "obstacles"
/// (ids >= 100) appear, move and vanish so that snapshots have new, changed
/// and removed entities; the state hash folds every call the room makes.
pub struct TestGame {
    tick: u32,
    extra: i32,
    max_rewind: u32,
    rng: ChaCha8Rng,
    players: BTreeMap<PeerId, Player>,
    /// id → (x, y, kind)
    obstacles: BTreeMap<u32, (i32, i32, u8)>,
    next_obstacle: u32,
    /// From this tick on nothing moves (to test convergence).
    freeze_at: Option<u32>,
    hash: StateHasher,
    record: Recorder,
}

impl TestGame {
    pub fn new(seed: u64, max_rewind: u32, record: Recorder) -> TestGame {
        let mut hash = StateHasher::new();
        hash.u64(seed);
        TestGame {
            tick: 0,
            extra: 0,
            max_rewind,
            rng: ChaCha8Rng::seed_from_u64(seed),
            players: BTreeMap::new(),
            obstacles: BTreeMap::new(),
            next_obstacle: 100,
            freeze_at: None,
            hash,
            record,
        }
    }

    pub fn frozen_from(mut self, tick: u32) -> TestGame {
        self.freeze_at = Some(tick);
        self
    }
}

pub fn entity_of(peer: PeerId) -> u32 {
    10 + peer.0
}

impl Simulation for TestGame {
    fn game(&self) -> &'static str {
        TEST_GAME
    }
    fn input_size(&self) -> u8 {
        1
    }
    fn max_players(&self) -> usize {
        8
    }
    fn max_rewind(&self) -> u32 {
        self.max_rewind
    }
    fn validate_input(&self, input: &[u8]) -> Result<(), String> {
        match input {
            [b] if *b < 0x80 => Ok(()),
            [_] => Err("bit 7 is reserved".into()),
            _ => Err("one byte".into()),
        }
    }
    fn add_player(&mut self, player: PeerId, _name: &str) -> Result<(), String> {
        if self.players.len() >= 8 {
            return Err("full".into());
        }
        self.hash.bytes(b"join").u32(player.0);
        self.players.insert(player, Player::default());
        Ok(())
    }
    fn remove_player(&mut self, player: PeerId) {
        self.hash.bytes(b"leave").u32(player.0);
        self.players.remove(&player);
    }
    fn command(&mut self, player: PeerId, command: &serde_json::Value) -> Result<(), String> {
        let add = command
            .get("add")
            .and_then(serde_json::Value::as_i64)
            .ok_or("unknown command")?;
        self.extra = self.extra.wrapping_add(add as i32);
        self.hash.bytes(b"cmd").u32(player.0).i32(add as i32);
        Ok(())
    }
    fn apply_input(&mut self, player: PeerId, tick: u32, input: &[u8]) {
        self.hash.bytes(b"in").u32(player.0).u32(tick).bytes(input);
        let late = tick <= self.tick;
        self.record.get().applied.push(Applied {
            peer: player,
            tick,
            input: input.to_vec(),
            late,
        });
        if let Some(p) = self.players.get_mut(&player) {
            let v = input.first().copied().unwrap_or(0);
            p.sum = p.sum.wrapping_add(i32::from(v));
            p.applied += 1;
            if late {
                p.late += 1;
            } else {
                p.last_input = v;
            }
        }
    }
    fn step(&mut self, events: &mut Vec<serde_json::Value>) {
        self.tick += 1;
        self.hash.bytes(b"step").u32(self.tick);
        if self.freeze_at.is_some_and(|f| self.tick >= f) {
            return;
        }
        for (x, y, _) in self.obstacles.values_mut() {
            *x -= 7;
            *y = (*y + 3) % 50;
        }
        self.obstacles.retain(|_, (x, _, _)| *x > 0);
        if self.rng.random_bool(0.15) && self.obstacles.len() < 12 {
            let kind = self.rng.random_range(0..4u8);
            let y = self.rng.random_range(-1000..1000);
            self.obstacles.insert(
                self.next_obstacle,
                (self.rng.random_range(200..2000), y, kind),
            );
            self.next_obstacle += 1;
        }
        for (id, (x, y, kind)) in &self.obstacles {
            self.hash.u32(*id).i32(*x).i32(*y).bytes(&[*kind]);
        }
        if self.tick.is_multiple_of(EVENT_EVERY) {
            events.push(json!({ "mark": self.tick }));
        }
    }
    fn tick(&self) -> u32 {
        self.tick
    }
    fn snapshot(&self, out: &mut WorldState) {
        out.clear();
        out.insert(Entity {
            id: 0,
            kind: 0,
            fields: vec![self.tick as i32, self.extra],
        });
        for (peer, p) in &self.players {
            out.insert(Entity {
                id: entity_of(*peer),
                kind: 1,
                fields: vec![
                    peer.0 as i32,
                    i32::from(p.last_input),
                    p.sum,
                    p.applied,
                    p.late,
                    // A large, fast-changing field: multi-byte deltas.
                    p.sum
                        .wrapping_mul(7919)
                        .wrapping_add(self.tick as i32 * 100_003),
                ],
            });
        }
        for (id, (x, y, kind)) in &self.obstacles {
            // Kinds differ in field count, so some entities are "new" shapes.
            let mut fields = vec![*x, *y];
            fields.extend((0..*kind).map(|i| i32::from(i) * *x));
            out.insert(Entity {
                id: *id,
                kind: *kind,
                fields,
            });
        }
        self.record.get().states.insert(self.tick, out.clone());
    }
    fn state_hash(&self) -> u64 {
        let mut h = self.hash;
        h.u32(self.tick).i32(self.extra);
        for (peer, p) in &self.players {
            h.u32(peer.0).i32(p.sum).i32(p.applied).i32(p.late);
        }
        h.finish()
    }
    fn player_entity(&self, player: PeerId) -> Option<u32> {
        self.players
            .contains_key(&player)
            .then(|| entity_of(player))
    }
}

/// Creates [`TestGame`]s (max_rewind 8) for replays.
pub struct TestFactory;

impl GameFactory for TestFactory {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
        (game == TEST_GAME)
            .then(|| Box::new(TestGame::new(seed, 8, Recorder::default())) as Box<dyn Simulation>)
    }
}

/// A one-way link: seeded loss, duplication, and a random delay per copy
/// (so messages overtake each other).
pub struct LossyLink {
    rng: ChaCha8Rng,
    loss: f64,
    duplicate: f64,
    min_delay: Duration,
    max_delay: Duration,
    /// (delivery time, order) → message
    queue: BTreeMap<(Instant, u64), Vec<u8>>,
    order: u64,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    last_delivery: Option<(Instant, u64)>,
}

impl LossyLink {
    pub fn new(
        seed: u64,
        loss: f64,
        duplicate: f64,
        min_delay: Duration,
        max_delay: Duration,
    ) -> LossyLink {
        LossyLink {
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            duplicate,
            min_delay,
            max_delay,
            queue: BTreeMap::new(),
            order: 0,
            sent: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            last_delivery: None,
        }
    }

    pub fn send(&mut self, data: Vec<u8>, now: Instant) {
        self.sent += 1;
        let copies = if self.rng.random_bool(self.duplicate) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.random_bool(self.loss) {
                self.lost += 1;
                continue;
            }
            let span = (self.max_delay - self.min_delay).as_nanos() as u64;
            let delay = self.min_delay + Duration::from_nanos(self.rng.random_range(0..=span));
            self.order += 1;
            self.queue.insert((now + delay, self.order), data.clone());
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The next message due by `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (&key, _) = self.queue.iter().next().filter(|((at, _), _)| *at <= now)?;
        if self.last_delivery.is_some_and(|(_, order)| key.1 < order) {
            self.reordered += 1;
        }
        self.last_delivery = Some(key);
        self.queue.remove(&key)
    }
}

pub fn outcome(metrics: &RelayMetrics, outcome: &'static str) -> u64 {
    metrics
        .game
        .inputs
        .get_or_create(&OutcomeLabel { outcome })
        .get()
}

pub fn snapshots_of_kind(metrics: &RelayMetrics, kind: &'static str) -> u64 {
    metrics
        .game
        .snapshots
        .get_or_create(&SnapshotKindLabel { kind })
        .get()
}

/// A client's ring of the last 64 applied states, by tick.
#[derive(Default)]
pub struct StateRing {
    states: BTreeMap<u32, WorldState>,
}

impl StateRing {
    pub const LEN: usize = 64;

    pub fn get(&self, tick: u32) -> Option<&WorldState> {
        self.states.get(&tick)
    }

    pub fn insert(&mut self, tick: u32, state: WorldState) {
        self.states.insert(tick, state);
        while self.states.len() > Self::LEN {
            self.states.pop_first();
        }
    }

    pub fn newest(&self) -> Option<(u32, &WorldState)> {
        self.states.iter().next_back().map(|(t, s)| (*t, s))
    }

    pub fn ticks(&self) -> BTreeSet<u32> {
        self.states.keys().copied().collect()
    }
}
