//! The input pipeline: redundancy makes a lossy uplink cost nothing, and
//! every acceptance rule holds (duplicates, order, too early, late, rate,
//! validation), checked through the inputs the game was actually given.

mod authoritative_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use authoritative_support::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{InputDatagram, SnapshotView};
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::{AuthoritativeRoom, GameConfig, RoomOutput};
use rtcrelay_relay::RelayMetrics;

const P: PeerId = PeerId(1);
const TICK: Duration = Duration::from_nanos(16_666_667);

fn room(t0: Instant, max_rewind: u32) -> (AuthoritativeRoom, RelayMetrics, Recorder) {
    let metrics = RelayMetrics::default();
    let record = Recorder::default();
    let mut room = AuthoritativeRoom::new(
        Box::new(TestGame::new(3, max_rewind, record.clone())),
        3,
        GameConfig::default(),
        metrics.clone(),
        t0,
    );
    room.join(P, "p", t0).expect("join");
    room.ready(P, t0);
    (room, metrics, record)
}

/// Runs the room at each of its timeouts up to `until`.
fn run_until(room: &mut AuthoritativeRoom, until: Instant) {
    while room.next_timeout() <= until {
        let at = room.next_timeout();
        room.handle_timeout(at);
        while room.poll_output().is_some() {}
    }
}

fn datagram(seq: u32, first_tick: u32, inputs: &[u8]) -> Vec<u8> {
    InputDatagram {
        seq,
        ack: None,
        first_tick,
        input_size: 1,
        inputs: inputs.to_vec(),
    }
    .encode()
}

/// The inputs the game got on time, by tick, for `peer`.
fn applied_on_time(record: &Recorder, peer: PeerId) -> BTreeMap<u32, u8> {
    let mut out = BTreeMap::new();
    for a in record.get().applied.iter().filter(|a| a.peer == peer) {
        if !a.late {
            assert!(
                out.insert(a.tick, a.input[0]).is_none(),
                "tick {} applied twice",
                a.tick
            );
        }
    }
    out
}

/// The input the game ended up with for each tick of `peer`: the on-time
/// one, replaced by a late one when lag compensation applied it.
fn applied_finally(record: &Recorder, peer: PeerId) -> BTreeMap<u32, u8> {
    let mut out = BTreeMap::new();
    for a in record.get().applied.iter().filter(|a| a.peer == peer) {
        out.insert(a.tick, a.input[0]);
    }
    out
}

/// A client following the input rules: each local tick (60 Hz) it samples
/// its buttons for `target = max(previous + 1, server tick + lead)` and
/// sends every input from `input_ack + 1` to the target (at most 32), or,
/// without redundancy, only the new ones.
struct InputClient {
    up: LossyLink,
    down: LossyLink,
    rng: ChaCha8Rng,
    lead: u32,
    redundancy: bool,
    buttons: u8,
    target: u32,
    sent: BTreeMap<u32, u8>,
    input_ack: u32,
    newest: Option<(u32, Instant)>,
    seq: u32,
    /// Inputs whose first datagram was lost.
    first_copy_lost: usize,
}

impl InputClient {
    fn local_tick(&mut self, server_tick: u32, now: Instant) {
        if self.rng.random_bool(0.25) {
            self.buttons = self.rng.random_range(0..16);
        }
        let previous = self.target;
        self.target = (previous + 1).max(server_tick + self.lead);
        // Ticks skipped by a jump get the same input; the first target has
        // no previous one to fill from.
        let from = if previous == 0 {
            self.target
        } else {
            previous + 1
        };
        for t in from..=self.target {
            self.sent.insert(t, self.buttons);
        }
        let first_sent = *self.sent.keys().next().expect("sent");
        let first = if self.redundancy {
            (self.input_ack + 1)
                .max(self.target.saturating_sub(31))
                .max(first_sent)
        } else {
            from
        };
        let inputs: Vec<u8> = (first..=self.target).map(|t| self.sent[&t]).collect();
        self.seq += 1;
        let datagram = InputDatagram {
            seq: self.seq,
            ack: self.newest.map(|(tick, at)| SnapshotAck {
                tick,
                delay_ms: now.duration_since(at).as_millis() as u16,
            }),
            first_tick: first,
            input_size: 1,
            inputs,
        };
        let lost_before = self.up.lost;
        self.up.send(datagram.encode(), now);
        if self.up.lost > lost_before {
            self.first_copy_lost += (self.target + 1 - from) as usize;
        }
    }

    fn on_snapshot(&mut self, frame: &[u8], now: Instant) {
        let header = SnapshotView::decode(frame).expect("decode").header;
        if self.newest.is_none_or(|(t, _)| header.tick > t) {
            self.newest = Some((header.tick, now));
            self.input_ack = header.input_ack;
        }
    }
}

/// A 60 s match at 60 Hz through a link losing 20% client → server.
/// Returns the client, the room's metrics and the game's record.
fn play_60s(redundancy: bool, seed: u64) -> (InputClient, RelayMetrics, Recorder, u32) {
    // RTT 60-100 ms is 4-6 ticks; a lead of 10 ticks gives each input about
    // 8 datagrams that arrive before its tick: all lost with probability
    // 0.2^8 ≈ 2.6e-6 per tick.
    play_60s_with_lead(redundancy, seed, 10, (30, 50))
}

fn play_60s_with_lead(
    redundancy: bool,
    seed: u64,
    lead: u32,
    one_way_ms: (u64, u64),
) -> (InputClient, RelayMetrics, Recorder, u32) {
    let (min, max) = (
        Duration::from_millis(one_way_ms.0),
        Duration::from_millis(one_way_ms.1),
    );
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 8);
    let mut client = InputClient {
        up: LossyLink::new(seed, 0.2, 0.0, min, max),
        down: LossyLink::new(seed + 1, 0.0, 0.0, min, max),
        rng: ChaCha8Rng::seed_from_u64(seed + 2),
        lead,
        redundancy,
        buttons: 0,
        target: 0,
        sent: BTreeMap::new(),
        input_ack: 0,
        newest: None,
        seq: 0,
        first_copy_lost: 0,
    };
    let end = t0 + Duration::from_secs(60);
    let mut now = t0;
    let mut next_local = t0 + Duration::from_millis(7);
    while now <= end {
        while let Some(d) = client.up.poll(now) {
            room.on_realtime(P, &d, now);
        }
        if room.next_timeout() <= now {
            room.handle_timeout(now);
        }
        while let Some(out) = room.poll_output() {
            if let RoomOutput::Realtime { data, .. } = out {
                client.down.send(data, now);
            }
        }
        while let Some(d) = client.down.poll(now) {
            client.on_snapshot(&d, now);
        }
        if now >= next_local {
            client.local_tick(room.tick(), now);
            next_local += TICK;
        }
        let mut next = room.next_timeout().min(next_local);
        for at in [client.up.next_delivery(), client.down.next_delivery()]
            .into_iter()
            .flatten()
        {
            next = next.min(at);
        }
        if next > end {
            break;
        }
        now = next.max(now);
    }
    assert_eq!(room.tick(), 3600);
    let first_target = *client.sent.keys().next().expect("sent");
    (client, metrics, record, first_target)
}

/// On a LAN-like link (0-4 ms one way) the design's lead is 1 tick: an input
/// whose datagram is lost can only arrive after its tick, by which time the
/// snapshot of that tick is already back at the client. The server keeps
/// such a tick un-acked while the game could still take it late, so the
/// client keeps resending it, and every input is applied, on time or by lag
/// compensation.
#[test]
fn with_a_short_lead_lost_inputs_arrive_late_and_are_still_applied() {
    for seed in [5, 77] {
        let (client, metrics, record, first) = play_60s_with_lead(true, seed, 1, (0, 4));
        let finally = applied_finally(&record, P);
        for tick in first..=3600 {
            assert_eq!(
                finally.get(&tick),
                client.sent.get(&tick),
                "seed {seed}, tick {tick}: applied vs sent"
            );
        }
        assert!(
            outcome(&metrics, "late_applied") > 0,
            "the short lead does make inputs late"
        );
        assert_eq!(outcome(&metrics, "late"), 0, "none too late to apply");
    }
}

#[test]
fn with_20_percent_uplink_loss_no_input_is_lost_in_a_60_s_match() {
    for seed in [99, 7, 2024] {
        check_no_input_lost(seed);
    }
}

fn check_no_input_lost(seed: u64) {
    let (client, metrics, record, first) = play_60s(true, seed);
    let applied = applied_on_time(&record, P);
    assert_eq!(applied.len(), 3600);
    let mut changes = 0;
    for tick in first..=3600 {
        assert_eq!(
            applied.get(&tick),
            client.sent.get(&tick),
            "seed {seed}, tick {tick}: applied vs sent"
        );
        if client.sent.get(&tick) != client.sent.get(&(tick - 1)) {
            changes += 1;
        }
    }
    assert!(changes > 600, "the buttons changed {changes} times");
    // Only the ticks before the client's first input went without one.
    assert_eq!(outcome(&metrics, "missing"), u64::from(first - 1));
    assert_eq!(outcome(&metrics, "late"), 0);
    assert_eq!(outcome(&metrics, "late_applied"), 0);
    assert!(record.get().applied.iter().all(|a| !a.late));
    assert_eq!(outcome(&metrics, "invalid"), 0);
    assert_eq!(outcome(&metrics, "rate_limited"), 0);
    assert_eq!(outcome(&metrics, "too_early"), 0);
    // The link did lose a fifth, and redundancy recovered those inputs.
    let lost = client.up.lost as f64 / client.up.sent as f64;
    assert!((0.17..0.23).contains(&lost), "loss {lost}");
    assert!(client.first_copy_lost > 600, "{}", client.first_copy_lost);
    assert!(outcome(&metrics, "duplicate") > outcome(&metrics, "accepted"));
    eprintln!(
        "sent {} datagrams, lost {}; inputs accepted {}, duplicate {}; first input tick {first}",
        client.up.sent,
        client.up.lost,
        outcome(&metrics, "accepted"),
        outcome(&metrics, "duplicate"),
    );
}

/// The control experiment: the same link without redundancy loses inputs,
/// so the test above would catch a pipeline that dropped redundant copies.
#[test]
fn without_redundancy_the_same_link_loses_inputs() {
    let (client, metrics, record, first) = play_60s(false, 99);
    let applied = applied_on_time(&record, P);
    let wrong = (first..=3600)
        .filter(|t| applied.get(t) != client.sent.get(t))
        .count();
    let missing = outcome(&metrics, "missing") - u64::from(first - 1);
    eprintln!("missing {missing}, wrong {wrong}");
    assert!(missing > 500, "missing {missing}");
    assert!(wrong > 100, "wrong {wrong}");
}

#[test]
fn duplicates_are_idempotent() {
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 0);
    room.on_realtime(P, &datagram(1, 1, &[1, 2, 3]), t0);
    room.on_realtime(P, &datagram(2, 1, &[9, 9, 9]), t0);
    room.on_realtime(P, &datagram(1, 1, &[1, 2, 3]), t0);
    assert_eq!(outcome(&metrics, "accepted"), 3);
    assert_eq!(outcome(&metrics, "duplicate"), 6);
    run_until(&mut room, t0 + 3 * TICK);
    // Copies after the tick ran are duplicates too, and change nothing.
    room.on_realtime(P, &datagram(3, 2, &[7, 7]), t0 + 3 * TICK);
    assert_eq!(outcome(&metrics, "duplicate"), 8);
    assert_eq!(outcome(&metrics, "late"), 0);
    let applied: Vec<(u32, u8)> = applied_on_time(&record, P).into_iter().collect();
    assert_eq!(applied, [(1, 1), (2, 2), (3, 3)]);
    assert!(record.get().applied.iter().all(|a| !a.late));
}

#[test]
fn out_of_order_inputs_are_placed_by_tick() {
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 0);
    room.on_realtime(P, &datagram(3, 5, &[5]), t0);
    room.on_realtime(P, &datagram(2, 3, &[3, 4]), t0);
    room.on_realtime(P, &datagram(1, 1, &[1, 2]), t0);
    assert_eq!(outcome(&metrics, "accepted"), 5);
    run_until(&mut room, t0 + 5 * TICK);
    let applied: Vec<(u32, u8)> = applied_on_time(&record, P).into_iter().collect();
    assert_eq!(applied, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
    assert_eq!(outcome(&metrics, "missing"), 0);
}

#[test]
fn too_early_inputs_are_rejected() {
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 0);
    run_until(&mut room, t0 + 10 * TICK);
    assert_eq!(room.tick(), 10);
    // max_input_lead = 60: tick 70 is the furthest accepted.
    room.on_realtime(P, &datagram(1, 70, &[7, 1]), t0 + 10 * TICK);
    assert_eq!(outcome(&metrics, "accepted"), 1);
    assert_eq!(outcome(&metrics, "too_early"), 1);
    room.on_realtime(
        P,
        &datagram(2, u32::MAX - 2, &[1, 1, 1, 1, 1]),
        t0 + 10 * TICK,
    );
    // Ticks MAX-2..=MAX are too early; 0 and 1 (wrapped) are long past.
    assert_eq!(outcome(&metrics, "too_early"), 4);
    assert_eq!(outcome(&metrics, "late"), 2);
    run_until(&mut room, t0 + 71 * TICK);
    let applied = applied_on_time(&record, P);
    assert_eq!(applied[&70], 7);
    assert_eq!(applied[&71], 7, "71 was refused: 70's input repeats");
}

#[test]
fn late_inputs_within_the_rewind_are_given_late_older_ones_dropped() {
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 8);
    run_until(&mut room, t0 + 20 * TICK);
    // Ticks 13..=20 are within 8 of tick 20; 11 and 12 are not.
    room.on_realtime(P, &datagram(1, 11, &[1, 2, 3]), t0 + 20 * TICK);
    room.on_realtime(P, &datagram(2, 13, &[4]), t0 + 20 * TICK);
    assert_eq!(outcome(&metrics, "late"), 2);
    assert_eq!(outcome(&metrics, "late_applied"), 1);
    assert_eq!(outcome(&metrics, "duplicate"), 1);
    let late: Vec<Applied> = record
        .get()
        .applied
        .iter()
        .filter(|a| a.late)
        .cloned()
        .collect();
    assert_eq!(
        late,
        [Applied {
            peer: P,
            tick: 13,
            input: vec![3],
            late: true
        }]
    );
    // The late input is the newest received: later missing ticks repeat it.
    run_until(&mut room, t0 + 21 * TICK);
    assert_eq!(applied_on_time(&record, P)[&21], 3);
}

#[test]
fn datagrams_above_the_rate_are_dropped() {
    let t0 = Instant::now();
    let (mut room, metrics, _) = room(t0, 0);
    // Burst: tick_rate (60) datagrams, the rest of 200 refused.
    for seq in 0..200 {
        room.on_realtime(P, &datagram(seq, 1, &[1]), t0);
    }
    assert_eq!(outcome(&metrics, "rate_limited"), 140);
    assert_eq!(
        outcome(&metrics, "accepted") + outcome(&metrics, "duplicate"),
        60
    );
    // Then 2 * tick_rate per second: one every 1/120 s passes, a second
    // one at the same instant does not.
    let mut now = t0;
    for seq in 0..240 {
        now += Duration::from_nanos(8_333_334);
        room.on_realtime(P, &datagram(1000 + seq, 2, &[1]), now);
        room.on_realtime(P, &datagram(2000 + seq, 2, &[1]), now);
    }
    assert_eq!(outcome(&metrics, "rate_limited"), 140 + 240);
}

#[test]
fn invalid_datagrams_are_dropped_whole_and_counted() {
    let t0 = Instant::now();
    let (mut room, metrics, record) = room(t0, 0);
    let mut wide = InputDatagram {
        seq: 1,
        ack: None,
        first_tick: 1,
        input_size: 2,
        inputs: vec![1, 1],
    }
    .encode();
    let valid = datagram(1, 1, &[1, 2]);
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut wrong_type = valid.clone();
    wrong_type[0] = 0x03;
    let bad: Vec<Vec<u8>> = vec![
        datagram(1, 1, &[1, 0x80]), // the game refuses bit 7: all dropped
        std::mem::take(&mut wide),  // wrong input size
        valid[..valid.len() - 1].to_vec(),
        trailing,
        wrong_type,
        Vec::new(),
        vec![0x02],
        b"\x02\x00garbage garbage garbage".to_vec(),
    ];
    for frame in &bad {
        room.on_realtime(P, frame, t0);
    }
    assert_eq!(outcome(&metrics, "invalid"), bad.len() as u64);
    assert_eq!(outcome(&metrics, "accepted"), 0);
    run_until(&mut room, t0 + 2 * TICK);
    // Nothing was stored: both ticks ran without input (zeros).
    let applied: Vec<(u32, u8)> = applied_on_time(&record, P).into_iter().collect();
    assert_eq!(applied, [(1, 0), (2, 0)]);
    assert_eq!(outcome(&metrics, "missing"), 2);
    // The good one still works afterwards.
    room.on_realtime(P, &datagram(2, 3, &[5]), t0 + 2 * TICK);
    assert_eq!(outcome(&metrics, "accepted"), 1);
}
