//! Snapshot encode time per client and tick, and an authoritative room's
//! cost per tick (criterion). Run with `scripts/bench-game` (or
//! `cargo bench -p rtcrelay-relay --bench snapshot`).
//!
//! - `encode/*`: a Dizolaur state 30 s into a 4-player race (4 runners, the
//!   obstacles in view), encoded with one reused [`SnapshotEncoder`], output
//!   buffer and view, as the room does for each client: a delta against the
//!   state 1, 2 and 4 snapshots back (2, 4, 8 ticks at 60/30 Hz: what a
//!   client acknowledges at a round trip of about 0, 50 and 120 ms), and a
//!   full snapshot. Sizes are printed first.
//! - `client/decode_apply_delta_2_back`: the client's side of the 2-back
//!   delta (`SnapshotView::decode` + `apply` into a reused state).
//! - `room/snapshot_period_4_players`: one snapshot period (2 ticks at
//!   60/30 Hz) of a real [`AuthoritativeRoom`] in mid-race, on a synthetic
//!   clock: per tick, 4 input datagrams (`on_realtime`), `handle_timeout`
//!   (inputs, the game's step, its events) and `poll_output`; on the second
//!   tick also the 4 snapshots (encode against each client's acked
//!   baseline and record them). The simulated clients (perfect players,
//!   acking every snapshot at once) run outside the timed part. A room
//!   serves 60 s of race (30 s to 90 s) and is then replaced by a new one
//!   (set up outside the timed part).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{
    FrameSpec, InputDatagram, SnapshotEncoder, SnapshotView, WorldState,
};
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::{AuthoritativeRoom, GameConfig, RoomOutput, Simulation};
use rtcrelay_relay::dizolaur::{self as dz, bot_input, Dizolaur};
use rtcrelay_relay::RelayMetrics;
use serde_json::json;

const SEED: u64 = 0x0d15_0a0f;
const PLAYERS: u32 = 4;
const TICK_RATE: u32 = 60;
/// Ticks per snapshot at 60/30 Hz.
const SNAPSHOT_EVERY: u32 = 2;
/// The encoded state: this far into the race.
const MID_RACE_TICKS: u32 = 30 * TICK_RATE;
/// A benchmark room serves this many ticks, then a fresh one takes over.
const ROOM_SERVES_TICKS: u32 = 60 * TICK_RATE;
const MAX_FRAME: usize = 1200;

fn peer(i: u32) -> PeerId {
    PeerId(i + 1)
}

/// The input a perfect player gives for the next tick, from the state.
fn inputs_from(world: &WorldState) -> [u8; PLAYERS as usize] {
    std::array::from_fn(|lane| {
        world
            .get(dz::LANE_ID_BASE + lane as u32)
            .map_or(0, |e| bot_input(&e.fields, world))
    })
}

/// Dizolaur states of the ticks around 30 s into a 4-player race (perfect
/// players): `(tick, state)` for the last 9 ticks, oldest first.
fn mid_race_states() -> Vec<(u32, WorldState)> {
    let mut sim = Dizolaur::new(SEED);
    for i in 0..PLAYERS {
        sim.add_player(peer(i), "p").expect("seat");
    }
    sim.command(peer(0), &json!({"start": {"bots": false}}))
        .expect("start");
    let mut world = WorldState::new();
    let mut events = Vec::new();
    let mut states = Vec::new();
    let end = dz::COUNTDOWN_TICKS + 1 + MID_RACE_TICKS;
    while sim.tick() < end {
        sim.snapshot(&mut world);
        let next = sim.tick() + 1;
        for (i, input) in inputs_from(&world).into_iter().enumerate() {
            sim.apply_input(peer(i as u32), next, &[input]);
        }
        sim.step(&mut events);
        events.clear();
        if sim.tick() + 8 >= end {
            let mut state = WorldState::new();
            sim.snapshot(&mut state);
            states.push((sim.tick(), state));
        }
    }
    states
}

fn bench_encode(c: &mut Criterion) {
    let states = mid_race_states();
    let (tick, current) = states.last().expect("states").clone();
    let back = |snapshots: u32| {
        let t = tick - snapshots * SNAPSHOT_EVERY;
        let (_, state) = states.iter().find(|(s, _)| *s == t).expect("state");
        (t, state.clone())
    };
    let mut encoder = SnapshotEncoder::new();
    let mut out = Vec::with_capacity(MAX_FRAME);
    let mut view = WorldState::new();
    let frame = FrameSpec {
        tick,
        input_ack: tick,
        max_len: MAX_FRAME,
    };
    let obstacles = current
        .entities()
        .iter()
        .filter(|e| e.id >= dz::OBSTACLE_ID_BASE)
        .count();
    println!(
        "state at tick {tick}: {} entities (1 match, 4 runners, {obstacles} obstacles)",
        current.len()
    );
    let cases: Vec<(String, Option<(u32, WorldState)>)> = vec![
        ("delta_1_back".into(), Some(back(1))),
        ("delta_2_back".into(), Some(back(2))),
        ("delta_4_back".into(), Some(back(4))),
        ("full".into(), None),
    ];
    let mut group = c.benchmark_group("encode");
    for (name, baseline) in &cases {
        let baseline = baseline.as_ref().map(|(t, s)| (*t, s));
        let encoded = encoder.encode(frame, baseline, &current, &mut out, &mut view);
        println!(
            "encode/{name}: {} bytes, partial {}",
            encoded.len, encoded.partial
        );
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                encoder.encode(
                    black_box(frame),
                    black_box(baseline),
                    black_box(&current),
                    &mut out,
                    &mut view,
                )
            })
        });
    }
    group.finish();

    // The client's side of the 2-back delta.
    let (base_tick, base) = back(2);
    encoder.encode(
        frame,
        Some((base_tick, &base)),
        &current,
        &mut out,
        &mut view,
    );
    let frame_bytes = out.clone();
    let mut applied = WorldState::new();
    c.bench_function("client/decode_apply_delta_2_back", |b| {
        b.iter(|| {
            let snapshot = SnapshotView::decode(black_box(&frame_bytes)).expect("decode");
            snapshot.apply(Some(&base), &mut applied).expect("apply");
        })
    });
    assert_eq!(applied, current, "the decoded delta is the state");
}

/// A room in mid-race with its 4 players' simulated clients.
struct RoomRun {
    room: AuthoritativeRoom,
    epoch: Instant,
    world: WorldState,
    seq: u32,
    acked: Option<u32>,
    end: u32,
    datagrams: Vec<Vec<u8>>,
    outputs: Vec<RoomOutput>,
}

impl RoomRun {
    fn mid_race(metrics: &RelayMetrics) -> RoomRun {
        let epoch = Instant::now();
        let mut room = AuthoritativeRoom::new(
            Box::new(Dizolaur::new(SEED)),
            SEED,
            GameConfig::default(),
            metrics.clone(),
            epoch,
        );
        for i in 0..PLAYERS {
            room.join(peer(i), "p", epoch).expect("join");
            room.ready(peer(i), epoch);
        }
        room.on_control(
            peer(0),
            r#"{"type":"command","command":{"start":{"bots":false}}}"#,
            epoch,
        );
        let start = dz::COUNTDOWN_TICKS + 1;
        let mut run = RoomRun {
            room,
            epoch,
            world: WorldState::new(),
            seq: 0,
            acked: None,
            end: start + MID_RACE_TICKS + ROOM_SERVES_TICKS,
            datagrams: Vec::new(),
            outputs: Vec::new(),
        };
        run.client_side();
        while run.room.tick() < start + MID_RACE_TICKS {
            run.prepare();
            run.server_side();
            run.client_side();
        }
        run
    }

    fn next_at(&self) -> Instant {
        let k = u64::from(self.room.tick() + 1);
        self.epoch + Duration::from_nanos(k * 1_000_000_000 / u64::from(TICK_RATE))
    }

    /// The clients' datagrams for the next tick (not timed).
    fn prepare(&mut self) {
        self.room.simulation().snapshot(&mut self.world);
        let next = self.room.tick() + 1;
        self.seq += 1;
        self.datagrams.clear();
        for input in inputs_from(&self.world) {
            self.datagrams.push(
                InputDatagram {
                    seq: self.seq,
                    ack: self.acked.map(|tick| SnapshotAck { tick, delay_ms: 0 }),
                    first_tick: next,
                    input_size: 1,
                    inputs: vec![input],
                }
                .encode(),
            );
        }
    }

    /// What the server does for one tick (timed).
    fn server_side(&mut self) {
        let at = self.next_at();
        for (i, datagram) in self.datagrams.iter().enumerate() {
            self.room.on_realtime(peer(i as u32), datagram, at);
        }
        self.room.handle_timeout(at);
        self.outputs.clear();
        while let Some(out) = self.room.poll_output() {
            self.outputs.push(out);
        }
    }

    /// The clients: ack the newest snapshot, ack events (not timed).
    fn client_side(&mut self) {
        let at = self.next_at();
        for out in std::mem::take(&mut self.outputs) {
            match out {
                RoomOutput::Realtime { data, .. } => {
                    if let Ok(view) = SnapshotView::decode(&data) {
                        self.acked = Some(view.header.tick);
                    }
                }
                RoomOutput::Control { peer, text } => {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if v["type"] == "event" {
                        let ack = json!({"type": "event_ack", "id": v["id"]}).to_string();
                        self.room.on_control(peer, &ack, at);
                    }
                }
            }
        }
        while self.room.poll_output().is_some() {}
    }
}

fn bench_room(c: &mut Criterion) {
    let metrics = RelayMetrics::default();
    let mut group = c.benchmark_group("room");
    group.sample_size(30);
    let mut run: Option<RoomRun> = None;
    group.bench_function("snapshot_period_4_players", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if run.as_ref().is_none_or(|r| r.room.tick() >= r.end) {
                    run = Some(RoomRun::mid_race(&metrics));
                }
                let Some(r) = run.as_mut() else { break };
                // Start each period on a snapshot tick's successor.
                if r.room.tick() % SNAPSHOT_EVERY != 0 {
                    r.prepare();
                    r.server_side();
                    r.client_side();
                }
                for _ in 0..SNAPSHOT_EVERY {
                    r.prepare();
                    let start = Instant::now();
                    r.server_side();
                    timed += start.elapsed();
                    r.client_side();
                }
            }
            timed
        })
    });
    group.finish();
    let snapshots = metrics
        .game
        .snapshots
        .get_or_create(&rtcrelay_relay::metrics::SnapshotKindLabel { kind: "delta" });
    println!("room: {} delta snapshots sent in all", snapshots.get());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_encode, bench_room
}
criterion_main!(benches);
