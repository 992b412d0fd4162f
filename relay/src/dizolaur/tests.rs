//! Dizolaur tests: determinism, the track's gap rule, lag compensation,
//! events, commands, seats, snapshot size and the prediction contract.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::{FrameSpec, SnapshotEncoder, WorldState};
use rtcrelay_protocol::PeerId;
use serde_json::{json, Value};

use super::obstacles::roll;
use super::physics::{hits, is_alive, runner_x_at, Body, ObstacleBox};
use super::*;
use crate::authoritative::Simulation;

const A: PeerId = PeerId(11);
const B: PeerId = PeerId(22);
const C: PeerId = PeerId(33);
const D: PeerId = PeerId(44);

fn world(sim: &Dizolaur) -> WorldState {
    let mut w = WorldState::new();
    sim.snapshot(&mut w);
    w
}

fn fields(w: &WorldState, id: u32) -> Vec<i32> {
    w.get(id).map(|e| e.fields.clone()).unwrap_or_default()
}

fn lane(sim: &Dizolaur, lane: u32) -> Vec<i32> {
    fields(&world(sim), LANE_ID_BASE + lane)
}

fn match_fields(sim: &Dizolaur) -> Vec<i32> {
    fields(&world(sim), MATCH_ID)
}

/// A game with `people` seated (lanes 0..) and a match started by the first.
fn started(seed: u64, people: &[PeerId], start: Value) -> Dizolaur {
    let mut sim = Dizolaur::new(seed);
    for &p in people {
        sim.add_player(p, "p").unwrap();
    }
    sim.command(people[0], &start).unwrap();
    sim
}

/// Applies on-time inputs for the next tick and steps; returns its events.
fn step(sim: &mut Dizolaur, inputs: &[(PeerId, u8)]) -> Vec<Value> {
    let next = sim.tick() + 1;
    for &(p, input) in inputs {
        sim.apply_input(p, next, &[input]);
    }
    let mut events = Vec::new();
    sim.step(&mut events);
    events
}

fn kinds(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Steps with no input until the race has begun (phase running).
fn to_race(sim: &mut Dizolaur, events: &mut Vec<Value>) {
    while match_fields(sim)[M_PHASE] != PHASE_RUNNING {
        events.extend(step(sim, &[]));
    }
}

/// The perfect player's input for `player`, from the state clients see.
fn perfect(sim: &Dizolaur, player: PeerId) -> u8 {
    let w = world(sim);
    let id = sim.player_entity(player).unwrap();
    bot_input(&fields(&w, id), &w)
}

#[test]
fn same_seed_and_inputs_give_the_same_hash_every_tick() {
    fn play(seed: u64) -> Vec<u64> {
        let mut sim = started(
            seed,
            &[A, B],
            json!({"start":{"bots":true,"max_seconds":120}}),
        );
        let mut noise = ChaCha8Rng::seed_from_u64(99);
        let mut hashes = vec![sim.state_hash()];
        let mut late: Vec<(u32, u8)> = Vec::new();
        while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
            let next = sim.tick() + 1;
            // A plays perfectly but a third of its inputs arrive 1..=7 ticks
            // late (it held the last one meanwhile); B mashes buttons.
            let a = perfect(&sim, A);
            if roll(&mut noise, 3) == 0 {
                late.push((next, a));
            } else {
                sim.apply_input(A, next, &[a]);
            }
            sim.apply_input(B, next, &[roll(&mut noise, 4) as u8]);
            late.retain(|&(t, input)| {
                if next - t > 1 + roll(&mut noise, 7) {
                    sim.apply_input(A, t, &[input]);
                    false
                } else {
                    true
                }
            });
            sim.step(&mut Vec::new());
            hashes.push(sim.state_hash());
        }
        hashes
    }
    let first = play(5);
    let second = play(5);
    assert!(
        first.len() > 120 * 60,
        "a 2-minute match: {} ticks",
        first.len()
    );
    assert_eq!(first, second);
    let mut distinct = first.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > first.len() / 2,
        "the hash follows the state"
    );
}

#[test]
fn different_seeds_make_different_tracks() {
    let track = |seed| {
        let mut sim = started(seed, &[A], json!({"start":{}}));
        let mut events = Vec::new();
        to_race(&mut sim, &mut events);
        let w = world(&sim);
        w.entities()
            .iter()
            .filter(|e| e.id >= OBSTACLE_ID_BASE)
            .map(|e| (e.kind, e.fields.clone()))
            .collect::<Vec<_>>()
    };
    assert!(track(1).len() >= 2);
    assert_eq!(track(1), track(1));
    assert_ne!(track(1), track(2));
    // Two games with different seeds differ from the first match on.
    let hash = |seed| started(seed, &[A], json!({"start":{}})).state_hash();
    assert_ne!(hash(1), hash(2));
}

#[test]
fn a_runner_without_input_crashes_at_the_first_cactus_in_every_lane_alike() {
    let mut sim = started(7, &[A, B, C, D], json!({"start":{}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    let first = world(&sim).get(OBSTACLE_ID_BASE).cloned().unwrap();
    assert!(
        first.kind == KIND_CACTUS_SMALL || first.kind == KIND_CACTUS_LARGE,
        "the first obstacle is a cactus: {first:?}"
    );
    let cactus = ObstacleBox::from_entity(first.kind, &first.fields).unwrap();
    let crash_ticks = loop {
        events.extend(step(&mut sim, &[]));
        let lanes: Vec<Vec<i32>> = (0..4).map(|l| lane(&sim, l)).collect();
        if lanes.iter().any(|l| l[P_STATE] == STATE_CRASHED) {
            break lanes;
        }
        assert!(sim.tick() < 2000, "nobody crashed");
    };
    let m = match_fields(&sim);
    for l in &crash_ticks {
        assert_eq!(
            l[P_STATE], STATE_CRASHED,
            "all lanes crash on the same tick"
        );
        assert_eq!(l[P_OUT_TICK], sim.tick() as i32);
        assert_eq!(l[P_PENDING], 1);
    }
    // The crash is at that cactus: the runner touches it now, not before.
    let run_tick = i64::from(sim.tick()) - i64::from(m[M_START_TICK]);
    let max = i64::from(m[M_MAX_TICKS]);
    let standing = Body::ready(0);
    assert!(hits(runner_x_at(run_tick, max), &standing, &cactus));
    assert!(!hits(runner_x_at(run_tick - 1, max), &standing, &cactus));
    assert!(kinds(&events, "player_out").is_empty(), "still pending");
}

/// Runs a one-player match to the tick before the first jump the perfect
/// player makes; returns (game, tick of that jump press, first tick at
/// which the runner has passed the first obstacle).
fn before_first_jump(seed: u64) -> (Dizolaur, u32, u32) {
    let mut sim = started(seed, &[A], json!({"start":{}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    let first = world(&sim).get(OBSTACLE_ID_BASE).cloned().unwrap();
    let first = ObstacleBox::from_entity(first.kind, &first.fields).unwrap();
    let m = match_fields(&sim);
    let (start, max) = (m[M_START_TICK], i64::from(m[M_MAX_TICKS]));
    let passed = (0..)
        .find(|&r| runner_x_at(r, max) + STAND_HITBOX_X0 >= first.end())
        .unwrap();
    let passed = (start as i64 + passed) as u32;
    loop {
        let input = perfect(&sim, A);
        if input & INPUT_JUMP != 0 {
            return (sim.clone(), sim.tick() + 1, passed);
        }
        step(&mut sim, &[(A, input)]);
    }
}

/// From `sim`, the player presses jump at `press` (holding it 12 ticks),
/// otherwise gives no input, until tick `until`; each input reaches the
/// game `lateness` ticks late. Returns the game and all events.
fn jump_late(mut sim: Dizolaur, press: u32, lateness: u32, until: u32) -> (Dizolaur, Vec<Value>) {
    let input_at = |t: u32| {
        if (press..press.saturating_add(12)).contains(&t) {
            INPUT_JUMP
        } else {
            0
        }
    };
    let mut events = Vec::new();
    while sim.tick() < until {
        let next = sim.tick() + 1;
        // What the room does: a missing input repeats the last one (0
        // here); a late one is given with its own tick before the next step.
        if next >= lateness && lateness > 0 {
            let sent = next - lateness;
            if sent >= press {
                sim.apply_input(A, sent, &[input_at(sent)]);
            }
        }
        sim.apply_input(A, next, &[if lateness == 0 { input_at(next) } else { 0 }]);
        let mut step_events = Vec::new();
        sim.step(&mut step_events);
        events.extend(step_events);
    }
    (sim, events)
}

#[test]
fn a_late_jump_within_the_rewind_window_avoids_the_crash() {
    let (sim, earliest, passed) = before_first_jump(3);
    // Play until a crash at the first obstacle would be confirmed; only
    // that obstacle counts (the player stops playing after it).
    let until = passed + MAX_REWIND + 1;
    let at_first = |out: &Value| out["tick"].as_u64().is_some_and(|t| t <= u64::from(passed));
    let crash_at_first = |press: u32, lateness: u32| {
        let (after, events) = jump_late(sim.clone(), press, lateness, until);
        let out_tick = lane(&after, 0)[P_OUT_TICK] as u32;
        let outs = kinds(&events, "player_out")
            .iter()
            .filter(|o| at_first(o))
            .count();
        (
            (out_tick != 0 && out_tick <= passed).then_some(out_tick),
            outs,
        )
    };
    assert_eq!(
        crash_at_first(earliest, 0),
        (None, 0),
        "the perfect jump clears it"
    );
    // The latest press that still clears it, found on copies of the game.
    let latest = (earliest..earliest + 40)
        .take_while(|&p| crash_at_first(p, 0).0.is_none())
        .last()
        .unwrap();
    assert!(crash_at_first(latest + 1, 0).0.is_some());
    // Without a jump the runner crashes within 5 ticks of `latest`, so a
    // 5-tick-late jump really has a crash to undo.
    let (crash, outs) = crash_at_first(u32::MAX - 20, 0);
    let crash = crash.unwrap();
    assert!(
        crash > latest && crash <= latest + 5,
        "crash {crash}, latest press {latest}"
    );
    assert_eq!(outs, 1);

    assert_eq!(
        crash_at_first(latest, 5),
        (None, 0),
        "5 ticks late: compensated"
    );
    // `lateness` L: the input arrives after tick t + L - 1 was simulated;
    // the game takes it while tick - MAX_REWIND < t, i.e. L <= MAX_REWIND.
    assert_eq!(
        crash_at_first(latest, 8),
        (None, 0),
        "8 ticks late: compensated"
    );
    assert_eq!(
        crash_at_first(latest, 9),
        (Some(crash), 1),
        "9 ticks late: too late"
    );
    assert_eq!(
        crash_at_first(latest, 12),
        (Some(crash), 1),
        "12 ticks late: too late"
    );
}

#[test]
fn a_pending_crash_is_confirmed_after_max_rewind_ticks_with_one_player_out() {
    let mut sim = started(8, &[A, B], json!({"start":{}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    // A plays perfectly, B does nothing and crashes.
    let crash = loop {
        let a = perfect(&sim, A);
        events.extend(step(&mut sim, &[(A, a), (B, 0)]));
        let b = lane(&sim, 1);
        if b[P_STATE] == STATE_CRASHED {
            break b[P_OUT_TICK] as u32;
        }
    };
    assert_eq!(crash, sim.tick());
    while sim.tick() < crash + MAX_REWIND {
        assert!(
            kinds(&events, "player_out").is_empty(),
            "tick {}",
            sim.tick()
        );
        assert_eq!(lane(&sim, 1)[P_PENDING], 1);
        let a = perfect(&sim, A);
        events.extend(step(&mut sim, &[(A, a), (B, 0)]));
    }
    assert_eq!(sim.tick(), crash + MAX_REWIND);
    let outs = kinds(&events, "player_out");
    assert_eq!(outs.len(), 1, "{outs:?}");
    let b = lane(&sim, 1);
    assert_eq!(
        outs[0],
        json!({"kind":"player_out","lane":1,"peer":22,"bot":false,"distance":b[P_DISTANCE],
               "tick":crash,"reason":"crash"})
    );
    assert_eq!(b[P_PENDING], 0);
    assert_eq!(b[P_STATE], STATE_CRASHED);
    for _ in 0..100 {
        let a = perfect(&sim, A);
        events.extend(step(&mut sim, &[(A, a), (B, INPUT_JUMP)]));
    }
    assert_eq!(kinds(&events, "player_out").len(), 1, "exactly once");
    assert!(is_alive(lane(&sim, 0)[P_STATE]), "A still runs");
    assert_eq!(match_fields(&sim)[M_RUNNING], 1);
}

#[test]
fn a_perfect_player_survives_the_rising_speed_to_the_time_limit() {
    for seed in [1, 2] {
        let mut sim = started(seed, &[A], json!({"start":{"max_seconds":180}}));
        let mut events = Vec::new();
        to_race(&mut sim, &mut events);
        let start_speed = speed_at(1);
        let mut birds = 0;
        let mut seen = std::collections::BTreeSet::new();
        while match_fields(&sim)[M_PHASE] == PHASE_RUNNING {
            let a = perfect(&sim, A);
            events.extend(step(&mut sim, &[(A, a)]));
            let l = lane(&sim, 0);
            assert_ne!(l[P_STATE], STATE_CRASHED, "seed {seed} tick {}", sim.tick());
            for e in world(&sim).entities() {
                if e.id >= OBSTACLE_ID_BASE && seen.insert(e.id) && e.kind >= KIND_BIRD_LOW {
                    birds += 1;
                }
            }
            if sim.tick() - match_fields(&sim)[M_START_TICK] as u32 == 60 * TICK_RATE {
                assert!(match_fields(&sim)[M_SPEED] > start_speed, "speed rises");
            }
        }
        assert!(birds > 5, "birds were met: {birds}");
        assert!(seen.len() > 100, "{} obstacles", seen.len());
        assert_eq!(speed_at(180 * 60), SPEED_MAX);
        let ends = kinds(&events, "match_end");
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0]["winners"], json!([0]));
        let l = lane(&sim, 0);
        assert_eq!(l[P_STATE], STATE_FINISHED);
        assert_eq!(l[P_PLACE], 1);
        assert_eq!(l[P_DISTANCE], distance_at_limit(180));
        let scores = kinds(&events, "score");
        assert_eq!(scores.len() as i32, l[P_DISTANCE] / SCORE_MILESTONE);
        assert_eq!(scores[0]["distance"], 500);
    }
}

#[test]
fn the_gap_rule_holds_on_many_tracks() {
    for seed in 100..108 {
        let mut sim = started(seed, &[A], json!({"start":{"max_seconds":150}}));
        while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
            let a = perfect(&sim, A);
            step(&mut sim, &[(A, a)]);
            assert_ne!(
                lane(&sim, 0)[P_STATE],
                STATE_CRASHED,
                "seed {seed} tick {}",
                sim.tick()
            );
        }
        assert_eq!(lane(&sim, 0)[P_STATE], STATE_FINISHED);
    }
}

fn distance_at_limit(seconds: i64) -> i32 {
    scroll_at(seconds * 60) / METER
}

#[test]
fn the_match_ends_exactly_once_and_can_be_restarted() {
    let mut sim = started(4, &[A, B], json!({"start":{"max_seconds":60}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    assert_eq!(kinds(&events, "match_start").len(), 1);
    let start = &kinds(&events, "match_start")[0];
    assert_eq!(
        start["players"],
        json!([{"lane":0,"peer":11,"bot":false},{"lane":1,"peer":22,"bot":false}])
    );
    assert_eq!(start["tick"], match_fields(&sim)[M_START_TICK]);
    // Both do nothing: they crash on the same tick and share the win.
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        events.extend(step(&mut sim, &[]));
    }
    for _ in 0..300 {
        events.extend(step(&mut sim, &[]));
    }
    let ends = kinds(&events, "match_end");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["winners"], json!([0, 1]));
    assert_eq!(match_fields(&sim)[M_WINNERS], 0b11);
    assert_eq!(lane(&sim, 0)[P_PLACE], 1);
    assert_eq!(lane(&sim, 1)[P_PLACE], 1);
    assert_eq!(kinds(&events, "player_out").len(), 2);
    // The end comes with the last confirmation.
    let out_index = events
        .iter()
        .rposition(|e| e["kind"] == "player_out")
        .unwrap();
    let end_index = events
        .iter()
        .position(|e| e["kind"] == "match_end")
        .unwrap();
    assert_eq!(end_index, out_index + 1);

    // Restart from ended; the second match has its own track.
    assert!(sim.command(B, &json!({"start":{}})).is_ok());
    let mut second = Vec::new();
    to_race(&mut sim, &mut second);
    let m = match_fields(&sim);
    assert_eq!(m[M_MATCH], 2);
    assert_eq!(m[M_WINNERS], 0);
    assert_eq!(lane(&sim, 0)[P_STATE], STATE_RUNNING);
    let start2 = &kinds(&second, "match_start")[0];
    assert_ne!(start2["seed"], start["seed"]);
}

#[test]
fn the_last_one_standing_wins_over_an_earlier_crash() {
    let mut sim = started(12, &[A, B], json!({"start":{"max_seconds":30}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        let a = perfect(&sim, A);
        events.extend(step(&mut sim, &[(A, a), (B, 0)]));
    }
    let end = &kinds(&events, "match_end")[0];
    assert_eq!(end["winners"], json!([0]));
    assert_eq!(end["ranking"][0]["lane"], 0);
    assert_eq!(end["ranking"][1]["lane"], 1);
    assert!(end["ranking"][0]["distance"].as_i64() > end["ranking"][1]["distance"].as_i64());
    assert_eq!(lane(&sim, 0)[P_STATE], STATE_FINISHED);
    assert_eq!(lane(&sim, 1)[P_PLACE], 2);
    // Time limit: ended MAX_REWIND ticks after the last race tick.
    let m = match_fields(&sim);
    assert_eq!(
        m[M_PHASE_TICK],
        m[M_START_TICK] + m[M_MAX_TICKS] + MAX_REWIND as i32
    );
}

#[test]
fn a_bots_only_match_ends() {
    let mut sim = started(21, &[A], json!({"start":{"bots":true,"max_seconds":600}}));
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    for l in 1..4 {
        assert_eq!(lane(&sim, l)[P_BOT], 1);
    }
    // The person leaves: out, not a crash; the three bots race on.
    sim.remove_player(A);
    events.extend(step(&mut sim, &[]));
    let outs = kinds(&events, "player_out");
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["reason"], "left");
    assert_eq!(lane(&sim, 0)[P_STATE], STATE_OUT);
    let mut ticks = 0;
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        events.extend(step(&mut sim, &[]));
        ticks += 1;
        assert!(ticks < 601 * 60, "ended by the time limit at the latest");
    }
    let end = &kinds(&events, "match_end")[0];
    assert_eq!(end["ranking"].as_array().unwrap().len(), 4);
    assert_eq!(end["ranking"][3]["lane"], 0, "who left ranks last");
    assert!(!end["winners"].as_array().unwrap().contains(&json!(0)));
    // The bots' imperfection ends the match before the limit.
    assert!(ticks < 600 * 60, "bots crash eventually ({ticks} ticks)");
    assert_eq!(kinds(&events, "player_out").len(), 4);
    assert!(kinds(&events, "score").len() >= 3, "the bots ran a while");
}

#[test]
fn commands_are_validated() {
    let mut sim = Dizolaur::new(1);
    sim.add_player(A, "a").unwrap();
    for bad in [
        json!("start"),
        json!({}),
        json!({"stop": {}}),
        json!({"start": {}, "stop": {}}),
        json!({"start": 3}),
        json!({"start": {"bots": "yes"}}),
        json!({"start": {"max_seconds": 9}}),
        json!({"start": {"max_seconds": 601}}),
        json!({"start": {"max_seconds": 60.5}}),
        json!({"start": {"turbo": true}}),
    ] {
        let err = sim.command(A, &bad).unwrap_err();
        assert!(!err.is_empty(), "{bad}");
        assert_eq!(match_fields(&sim)[M_PHASE], PHASE_LOBBY, "{bad}: {err}");
    }
    assert!(sim
        .command(A, &json!({"start":{"turbo":true}}))
        .unwrap_err()
        .contains("turbo"));
    assert!(sim
        .command(B, &json!({"start":{}}))
        .unwrap_err()
        .contains("seated"));
    assert!(sim.command(A, &json!({"start":null})).is_ok());
    assert_eq!(match_fields(&sim)[M_PHASE], PHASE_COUNTDOWN);
    assert_eq!(match_fields(&sim)[M_MAX_TICKS], 180 * 60);
    assert!(sim
        .command(A, &json!({"start":{}}))
        .unwrap_err()
        .contains("already"));

    assert!(sim.validate_input(&[0]).is_ok());
    assert!(sim.validate_input(&[INPUT_JUMP | INPUT_DUCK]).is_ok());
    assert!(sim.validate_input(&[4]).is_err());
    assert!(sim.validate_input(&[0x80]).is_err());
    assert!(sim.validate_input(&[]).is_err());
    assert!(sim.validate_input(&[0, 0]).is_err());
    assert_eq!(sim.input_size(), 1);
    assert_eq!(sim.max_rewind(), 8);
    assert_eq!(sim.max_players(), 4);
    assert_eq!(sim.game(), "dizolaur");
}

#[test]
fn seats_fill_the_lowest_lane_and_bots_yield_only_between_matches() {
    let mut sim = Dizolaur::new(1);
    sim.add_player(A, "a").unwrap();
    sim.add_player(B, "b").unwrap();
    assert!(sim.add_player(A, "a").is_err());
    sim.remove_player(A);
    sim.add_player(C, "c").unwrap();
    assert_eq!(sim.player_entity(C), Some(1), "lowest free lane");
    assert_eq!(sim.player_entity(A), None);
    sim.command(B, &json!({"start":{"bots":true}})).unwrap();
    assert_eq!(lane(&sim, 2)[P_BOT], 1);
    assert_eq!(lane(&sim, 2)[P_PEER], 0);
    assert_eq!(lane(&sim, 1)[P_PEER], 22);
    // Mid-match the bots keep their seats.
    assert_eq!(
        sim.add_player(D, "d").unwrap_err(),
        "every lane is taken until the match ends"
    );
    // A person leaves mid-match; a newcomer takes the lane and waits.
    sim.remove_player(C);
    sim.add_player(D, "d").unwrap();
    assert_eq!(sim.player_entity(D), Some(1));
    step(&mut sim, &[(D, INPUT_JUMP)]);
    let d = lane(&sim, 0);
    assert_eq!((d[P_STATE], d[P_PEER], d[P_INPUT]), (STATE_IDLE, 44, 1));
    // In lobby/ended a person replaces a bot; 4 people is full.
    let mut lobby = Dizolaur::new(2);
    lobby.add_player(A, "a").unwrap();
    lobby
        .command(A, &json!({"start":{"bots":true,"max_seconds":10}}))
        .unwrap();
    let mut events = Vec::new();
    while match_fields(&lobby)[M_PHASE] != PHASE_ENDED {
        events.extend(step(&mut lobby, &[]));
    }
    lobby.add_player(B, "b").unwrap();
    lobby.add_player(C, "c").unwrap();
    lobby.add_player(D, "d").unwrap();
    assert_eq!(lane(&lobby, 3)[P_PEER], 44);
    assert_eq!(lane(&lobby, 3)[P_STATE], STATE_IDLE);
    assert_eq!(
        lobby.add_player(PeerId(55), "e").unwrap_err(),
        "the match is full"
    );
    // Starting without bots keeps the people only.
    lobby.remove_player(B);
    lobby.command(A, &json!({"start":{"bots":false}})).unwrap();
    assert_eq!(lane(&lobby, 1)[P_STATE], STATE_EMPTY);
    assert_eq!(match_fields(&lobby)[M_BOTS], 0);
}

/// Bytes of a full snapshot of `w`, from the protocol's encoder.
fn full_snapshot_len(encoder: &mut SnapshotEncoder, w: &WorldState, tick: u32) -> (usize, bool) {
    let mut out = Vec::new();
    let mut view = WorldState::new();
    let spec = FrameSpec {
        tick,
        input_ack: tick,
        max_len: 64 * 1024,
    };
    let encoded = encoder.encode(spec, None, w, &mut out, &mut view);
    (encoded.len, encoded.partial)
}

#[test]
fn a_full_snapshot_stays_well_under_a_datagram() {
    let mut sim = started(6, &[A, B], json!({"start":{"bots":true,"max_seconds":180}}));
    let mut encoder = SnapshotEncoder::new();
    let mut largest = 0;
    let mut most_obstacles = 0;
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        let a = perfect(&sim, A);
        let b = perfect(&sim, B);
        step(&mut sim, &[(A, a), (B, b)]);
        let w = world(&sim);
        let (len, partial) = full_snapshot_len(&mut encoder, &w, sim.tick());
        assert!(!partial);
        largest = largest.max(len);
        most_obstacles = most_obstacles.max(w.len() - 5);
    }
    assert!(largest <= 600, "largest full snapshot {largest} bytes");
    eprintln!("largest full snapshot: {largest} bytes, at most {most_obstacles} obstacles");
    for l in 0..2 {
        assert_eq!(
            lane(&sim, l)[P_STATE],
            STATE_FINISHED,
            "perfect players survive"
        );
    }
    assert!(most_obstacles >= 3, "{most_obstacles}");
    assert!(most_obstacles <= 12, "{most_obstacles}");
}

#[test]
fn prediction_matches_the_server_tick_by_tick() {
    let mut sim = started(9, &[A, B], json!({"start":{"max_seconds":60}}));
    let mut noise = ChaCha8Rng::seed_from_u64(3);
    let mut checked = 0;
    let mut airborne = 0;
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED && sim.tick() < 3000 {
        let before = world(&sim);
        let a = perfect(&sim, A);
        // B presses random buttons (jumps, ducks, fast-falls).
        let b = if roll(&mut noise, 4) == 0 {
            roll(&mut noise, 4) as u8
        } else {
            0
        };
        step(&mut sim, &[(A, a), (B, b)]);
        let after = world(&sim);
        for (id, input) in [(LANE_ID_BASE, a), (LANE_ID_BASE + 1, b)] {
            let server = fields(&after, id);
            let phase_changed =
                fields(&before, MATCH_ID)[M_PHASE] != fields(&after, MATCH_ID)[M_PHASE];
            let crashed_now =
                server[P_STATE] == STATE_CRASHED && server[P_OUT_TICK] == sim.tick() as i32;
            let confirmed_now = fields(&before, id)[P_PENDING] != server[P_PENDING];
            if crashed_now || confirmed_now || phase_changed {
                continue; // crashes and phase changes are the server's
            }
            let mut predicted = fields(&before, id);
            predict_player(&mut predicted, input, &before);
            assert_eq!(predicted, server, "lane {id} tick {}", sim.tick());
            checked += 1;
            if server[P_Y] > 0 {
                airborne += 1;
            }
        }
    }
    assert!(checked > 2000, "{checked}");
    assert!(airborne > 100, "{airborne}");
}

#[test]
fn the_factory_makes_dizolaur_only() {
    use crate::authoritative::GameFactory;
    let game = DizolaurFactory.create("dizolaur", 3).unwrap();
    assert_eq!(game.game(), "dizolaur");
    assert_eq!(game.state_hash(), Dizolaur::new(3).state_hash());
    assert!(DizolaurFactory.create("chess", 3).is_none());
}

/// The shared prediction vectors: written with RTCRELAY_WRITE_VECTORS=1,
/// checked otherwise (web/dizolaur/physics.test.js checks the same file).
#[test]
fn prediction_vectors_match_the_shared_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/dizolaur-prediction.json"
    );
    let vectors = prediction_vectors();
    if std::env::var_os("RTCRELAY_WRITE_VECTORS").is_some_and(|v| v == "1") {
        let text = pretty_with_flat_arrays(&vectors, 0);
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).unwrap();
        std::fs::write(path, text + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(stored, vectors, "regenerate with RTCRELAY_WRITE_VECTORS=1");
}

fn prediction_vectors() -> Value {
    // Race clock: start tick 1000, limit 600 run ticks.
    let mut m = vec![0; MATCH_FIELDS];
    m[M_PHASE] = PHASE_RUNNING;
    m[M_START_TICK] = 1000;
    m[M_MAX_TICKS] = 600;
    let mut w = WorldState::new();
    w.insert(rtcrelay_protocol::game::Entity {
        id: MATCH_ID,
        kind: KIND_MATCH,
        fields: m.clone(),
    });
    let runner = |state: i32, tick: i32, y: i32, vy: i32, input: i32| {
        let mut f = vec![0; LANE_FIELDS];
        f[P_PEER] = 7;
        f[P_STATE] = state;
        f[P_TICK] = tick;
        f[P_Y] = y;
        f[P_VY] = vy;
        f[P_INPUT] = input;
        f[P_DISTANCE] = 3;
        f
    };
    let j = INPUT_JUMP;
    let d = INPUT_DUCK;
    let cases: Vec<(&str, Vec<i32>, Vec<u8>)> = vec![
        (
            "held jump, then release while falling, landing",
            runner(STATE_RUNNING, 1100, 0, 0, 0),
            [vec![j; 20], vec![0; 20]].concat(),
        ),
        (
            "tap jump (released early: low hop)",
            runner(STATE_RUNNING, 1100, 0, 0, 0),
            [vec![j; 2], vec![0; 20]].concat(),
        ),
        (
            "held jump from before is no press, then release and press",
            runner(STATE_RUNNING, 1100, 0, 0, j as i32),
            [vec![j; 3], vec![0], vec![j; 5]].concat(),
        ),
        (
            "duck on the ground, then jump out of a duck",
            runner(STATE_RUNNING, 1100, 0, 0, 0),
            [vec![d; 4], vec![d | j; 2], vec![j; 3]].concat(),
        ),
        (
            "fast-fall: jump then duck in the air",
            runner(STATE_RUNNING, 1100, 0, 0, 0),
            [vec![j; 8], vec![d; 12], vec![0; 2]].concat(),
        ),
        (
            "countdown: jump in place, no distance",
            runner(STATE_RUNNING, 990, 0, 0, 0),
            [vec![j; 6], vec![0; 14]].concat(),
        ),
        (
            "race limit: nothing moves after run tick 600",
            runner(STATE_JUMPING, 1598, 3000, 500, j as i32),
            vec![j, j, 0, j],
        ),
        (
            "the speed ramp and distance over a long stretch",
            runner(STATE_RUNNING, 1000, 0, 0, 0),
            vec![0; 40],
        ),
        (
            "crashed and idle runners only count ticks",
            runner(STATE_CRASHED, 1200, 2000, -300, 0),
            vec![j, d, 0],
        ),
        ("idle", runner(STATE_IDLE, 5, 0, 0, 0), vec![j, 0]),
    ];
    let cases: Vec<Value> = cases
        .into_iter()
        .map(|(name, initial, inputs)| {
            let mut f = initial.clone();
            let expected: Vec<Vec<i32>> = inputs
                .iter()
                .map(|&input| {
                    predict_player(&mut f, input, &w);
                    f.clone()
                })
                .collect();
            json!({"name": name, "initial": initial, "inputs": inputs, "expected": expected})
        })
        .collect();
    let scroll: Vec<Value> = [
        -5i64,
        0,
        1,
        2,
        3,
        4,
        5,
        100,
        1023,
        7167,
        7168,
        7169,
        36000,
        100_000_000,
    ]
    .iter()
    .map(|&r| json!({"run_tick": r, "speed": speed_at(r), "scroll": scroll_at(r)}))
    .collect();
    // Every layout constant, so that web/dizolaur/fields.js is checked too.
    macro_rules! constants {
        ($($name:ident),* $(,)?) => {{
            let mut map = serde_json::Map::new();
            $(map.insert(stringify!($name).into(), json!($name));)*
            Value::Object(map)
        }};
    }
    let constants = constants!(
        TICK_RATE,
        COUNTDOWN_TICKS,
        MAX_REWIND,
        DEFAULT_MAX_SECONDS,
        MIN_MAX_SECONDS,
        MAX_MAX_SECONDS,
        UNITS_PER_PX,
        METER_PX,
        METER,
        SCORE_MILESTONE,
        LANE_WIDTH_PX,
        LANE_HEIGHT_PX,
        RUNNER_X_PX,
        RUNNER_X,
        VIEW_BEHIND,
        VIEW_AHEAD,
        STAND_HITBOX_X0,
        STAND_HITBOX_X1,
        STAND_HITBOX_H,
        DUCK_HITBOX_X0,
        DUCK_HITBOX_X1,
        DUCK_HITBOX_H,
        GRAVITY,
        JUMP_VELOCITY,
        DROP_VELOCITY,
        FAST_FALL_GRAVITY,
        SPEED_START,
        SPEED_MAX,
        SPEED_RAMP_TICKS,
        CACTUS_SMALL_W_PX,
        CACTUS_SMALL_H_PX,
        CACTUS_LARGE_W_PX,
        CACTUS_LARGE_H_PX,
        BIRD_W_PX,
        BIRD_H_PX,
        BIRD_LOW_Y_PX,
        BIRD_MID_Y_PX,
        BIRD_HIGH_Y_PX,
        INPUT_SIZE,
        INPUT_JUMP,
        INPUT_DUCK,
        INPUT_MASK,
        MATCH_ID,
        LANE_ID_BASE,
        LANE_COUNT,
        OBSTACLE_ID_BASE,
        KIND_MATCH,
        KIND_RUNNER,
        KIND_CACTUS_SMALL,
        KIND_CACTUS_LARGE,
        KIND_BIRD_LOW,
        KIND_BIRD_MID,
        KIND_BIRD_HIGH,
        M_PHASE,
        M_PHASE_TICK,
        M_COUNTDOWN,
        M_START_TICK,
        M_MAX_TICKS,
        M_SPEED,
        M_SCROLL,
        M_MATCH,
        M_BOTS,
        M_WINNERS,
        M_RUNNING,
        MATCH_FIELDS,
        PHASE_LOBBY,
        PHASE_COUNTDOWN,
        PHASE_RUNNING,
        PHASE_ENDED,
        P_PEER,
        P_BOT,
        P_STATE,
        P_Y,
        P_VY,
        P_INPUT,
        P_TICK,
        P_DISTANCE,
        P_PENDING,
        P_OUT_TICK,
        P_PLACE,
        LANE_FIELDS,
        STATE_EMPTY,
        STATE_IDLE,
        STATE_RUNNING,
        STATE_JUMPING,
        STATE_DUCKING,
        STATE_CRASHED,
        STATE_OUT,
        STATE_FINISHED,
        O_X,
        O_Y,
        O_W,
        O_H,
        OBSTACLE_FIELDS,
    );
    json!({
        "constants": constants,
        "description": "Dizolaur client prediction vectors: predict_player(initial, inputs[i], world) gives expected[i]; world holds only the match entity. Generated by relay/src/dizolaur/tests.rs (RTCRELAY_WRITE_VECTORS=1).",
        "world": [{"id": MATCH_ID, "kind": KIND_MATCH, "fields": m}],
        "cases": cases,
        "scroll": scroll,
    })
}

/// Pretty JSON, but arrays of numbers on one line (readable vectors).
fn pretty_with_flat_arrays(v: &Value, indent: usize) -> String {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            serde_json::to_string(v).unwrap()
        }
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| format!("{pad}{}", pretty_with_flat_arrays(i, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", inner.join(",\n"))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, i)| {
                    let key = serde_json::to_string(k).unwrap();
                    format!("{pad}{key}: {}", pretty_with_flat_arrays(i, indent + 1))
                })
                .collect();
            format!("{{\n{}\n{end}}}", inner.join(",\n"))
        }
        scalar => serde_json::to_string(scalar).unwrap(),
    }
}

/// Records a match the way the room does (joins, leaves, commands, on-time
/// inputs when they change, late inputs as given) and replays its log.
#[test]
fn a_recorded_match_replays_to_the_same_hashes() {
    use crate::authoritative::log::{InputBytes, LogEntry};
    use crate::authoritative::{replay, MatchLog};
    use std::collections::BTreeMap;

    let seed = 77;
    let mut sim = Dizolaur::new(seed);
    let mut log = MatchLog::new(GAME_NAME, seed, 60);
    let mut noise = ChaCha8Rng::seed_from_u64(1);
    let mut present: BTreeMap<PeerId, u8> = BTreeMap::new();
    let join =
        |sim: &mut Dizolaur, log: &mut MatchLog, p: PeerId, present: &mut BTreeMap<PeerId, u8>| {
            let tick = sim.tick() + 1;
            sim.add_player(p, "p").unwrap();
            log.push(LogEntry::Join {
                tick,
                peer: p,
                name: "p".into(),
            });
            present.insert(p, 0);
        };
    join(&mut sim, &mut log, A, &mut present);
    join(&mut sim, &mut log, B, &mut present);
    let command = json!({"start":{"bots":true,"max_seconds":40}});
    log.push(LogEntry::Command {
        tick: 1,
        peer: A,
        command: command.clone(),
    });
    sim.command(A, &command).unwrap();
    let mut late: Vec<(u32, u8)> = Vec::new();
    let mut matches = 0;
    while matches < 2 {
        let tick = sim.tick() + 1;
        if tick == 900 {
            join(&mut sim, &mut log, C, &mut present);
        }
        if tick == 600 {
            sim.remove_player(B);
            log.push(LogEntry::Leave { tick, peer: B });
            present.remove(&B);
        }
        if match_fields(&sim)[M_PHASE] == PHASE_ENDED {
            matches += 1;
            let refused = json!({"start":{"max_seconds":5}});
            log.push(LogEntry::Command {
                tick,
                peer: A,
                command: refused.clone(),
            });
            assert!(sim.command(A, &refused).is_err(), "5 s is too short");
            let again = json!({"start":{"bots":false,"max_seconds":20}});
            log.push(LogEntry::Command {
                tick,
                peer: A,
                command: again.clone(),
            });
            sim.command(A, &again).unwrap();
        }
        // A plays perfectly, some inputs late; the others mash.
        let a = perfect(&sim, A);
        late.retain(|&(t, input)| {
            if tick - t > roll(&mut noise, 8) {
                sim.apply_input(A, t, &[input]);
                log.push(LogEntry::Input {
                    tick,
                    peer: A,
                    input_tick: t,
                    input: InputBytes::new(&[input]),
                });
                false
            } else {
                true
            }
        });
        let mut inputs = present.clone();
        for (&p, input) in inputs.iter_mut() {
            *input = if p == A {
                if roll(&mut noise, 4) == 0 {
                    late.push((tick, a));
                    present[&A]
                } else {
                    a
                }
            } else {
                roll(&mut noise, 4) as u8
            };
        }
        for (&p, &input) in &inputs {
            if present[&p] != input {
                log.push(LogEntry::Input {
                    tick,
                    peer: p,
                    input_tick: tick,
                    input: InputBytes::new(&[input]),
                });
            }
            sim.apply_input(p, tick, &[input]);
        }
        present = inputs;
        sim.step(&mut Vec::new());
        log.push_hash(sim.state_hash());
    }
    assert!(log.ticks() > 1000);
    let log = MatchLog::from_json(&log.to_json()).unwrap();
    assert_eq!(replay(&log, &DizolaurFactory).unwrap(), log.hashes);
    let mut tampered = log.clone();
    if let Some(LogEntry::Command { command, .. }) = tampered.entries.get_mut(2) {
        *command = json!({"start":{"bots":false}});
    }
    assert_ne!(replay(&tampered, &DizolaurFactory).unwrap(), log.hashes);
}

#[test]
fn a_match_is_in_progress_from_countdown_to_end_only() {
    let mut sim = Dizolaur::new(9);
    sim.add_player(A, "a").unwrap();
    assert!(!sim.in_match(), "lobby");
    step(&mut sim, &[]);
    assert!(!sim.in_match(), "still the lobby");
    sim.command(A, &json!({"start":{"max_seconds":10}}))
        .unwrap();
    assert_eq!(match_fields(&sim)[M_PHASE], PHASE_COUNTDOWN);
    assert!(sim.in_match(), "countdown");
    let mut events = Vec::new();
    to_race(&mut sim, &mut events);
    assert!(sim.in_match(), "running");
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        step(&mut sim, &[]);
    }
    assert!(!sim.in_match(), "ended");
    sim.command(A, &json!({"start":{}})).unwrap();
    assert!(sim.in_match(), "a second match");
}

// ---- Pause (the `pause` away policy) and bot takeover ----

/// The state with the tick stamps left out: what must be the same in a
/// paused game, later, as in its twin that never paused.
fn stampless(sim: &Dizolaur) -> Vec<(u32, Vec<i32>)> {
    world(sim)
        .entities()
        .iter()
        .map(|e| {
            let mut f = e.fields.clone();
            if e.id == MATCH_ID {
                f[M_PHASE_TICK] = 0;
                f[M_START_TICK] = 0;
            } else if e.kind == KIND_RUNNER {
                f[P_TICK] = 0;
                f[P_OUT_TICK] = 0;
            }
            (e.id, f)
        })
        .collect()
}

/// Events with their tick fields shifted back by `by` (a paused game's
/// events on its twin's clock).
fn shifted(events: &[Value], by: u32) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(t) = e["tick"].as_u64() {
                e["tick"] = json!(t - u64::from(by));
            }
            e
        })
        .collect()
}

#[test]
fn a_paused_race_resumes_exactly_where_it_stopped_with_a_pending_crash() {
    // A plays perfectly, B does nothing. Pause on the tick B crashes (the
    // crash still pending) for 100 ticks; its twin never pauses. After the
    // pause both play out the same: same states, same events, same result,
    // only the tick stamps are 100 later.
    const PAUSE: u32 = 100;
    let mut twin = started(8, &[A, B], json!({"start":{"max_seconds":20}}));
    let mut events = Vec::new();
    to_race(&mut twin, &mut events);
    loop {
        let a = perfect(&twin, A);
        events.extend(step(&mut twin, &[(A, a), (B, 0)]));
        if lane(&twin, 1)[P_STATE] == STATE_CRASHED {
            break;
        }
    }
    assert_eq!(lane(&twin, 1)[P_PENDING], 1);
    assert!(match_fields(&twin)[M_SPEED] > 0);
    let mut paused = twin.clone();
    let before = paused.state_hash();
    paused.set_paused(true);
    assert_ne!(paused.state_hash(), before, "the hash covers the pause");
    let frozen = stampless(&paused);
    let m0 = match_fields(&paused);
    for i in 1..=PAUSE {
        // Inputs keep coming (a held jump, say); nothing moves.
        let e = step(&mut paused, &[(A, INPUT_JUMP), (B, INPUT_JUMP)]);
        assert!(e.is_empty(), "no events while paused: {e:?}");
        let mut now = stampless(&paused);
        let m = match_fields(&paused);
        assert_eq!(m[M_SPEED], 0, "not moving");
        assert_eq!(m[M_START_TICK], m0[M_START_TICK] + i as i32);
        assert_eq!(m[M_SCROLL], m0[M_SCROLL], "the race clock is frozen");
        now.retain(|(id, _)| *id != MATCH_ID);
        let mut was = frozen.clone();
        was.retain(|(id, _)| *id != MATCH_ID);
        assert_eq!(now, was, "tick {}", paused.tick());
        assert_eq!(lane(&paused, 1)[P_PENDING], 1, "the crash stays pending");
        assert!(paused.in_match());
    }
    paused.set_paused(false);
    paused.set_paused(false);
    // Both go on with the same inputs, the twin PAUSE ticks earlier.
    let mut twin_events = Vec::new();
    let mut paused_events = Vec::new();
    while match_fields(&twin).get(M_PHASE) != Some(&PHASE_ENDED) {
        let a = perfect(&twin, A);
        assert_eq!(
            a,
            perfect(&paused, A),
            "the same view, tick {}",
            twin.tick()
        );
        twin_events.extend(step(&mut twin, &[(A, a), (B, 0)]));
        paused_events.extend(step(&mut paused, &[(A, a), (B, 0)]));
        assert_eq!(paused.tick(), twin.tick() + PAUSE);
        assert_eq!(stampless(&paused), stampless(&twin), "tick {}", twin.tick());
    }
    assert_eq!(shifted(&paused_events, PAUSE), twin_events);
    let outs = kinds(&twin_events, "player_out");
    assert_eq!(outs.len(), 1, "B's crash, confirmed after the pause");
    assert_eq!(outs[0]["peer"], 22);
    assert_eq!(kinds(&twin_events, "match_end").len(), 1);
    // The clock relation holds on the paused game's own ticks.
    let (m, t) = (match_fields(&paused), match_fields(&twin));
    assert_eq!(m[M_START_TICK], t[M_START_TICK] + PAUSE as i32);
    assert_eq!(
        lane(&paused, 1)[P_OUT_TICK],
        lane(&twin, 1)[P_OUT_TICK] + PAUSE as i32
    );
}

#[test]
fn a_paused_countdown_holds_and_late_inputs_do_not_rewind_across_a_pause() {
    let mut sim = started(3, &[A], json!({"start":{}}));
    step(&mut sim, &[]);
    let countdown = match_fields(&sim)[M_COUNTDOWN];
    sim.set_paused(true);
    for _ in 0..50 {
        step(&mut sim, &[]);
        assert_eq!(match_fields(&sim)[M_COUNTDOWN], countdown);
        assert_eq!(match_fields(&sim)[M_PHASE], PHASE_COUNTDOWN);
    }
    sim.set_paused(false);
    step(&mut sim, &[]);
    assert_eq!(match_fields(&sim)[M_COUNTDOWN], countdown - 1);

    // In the race: a late jump asked for just before the pause is applied
    // when the pause begins (the rewind is not lost) ...
    let (mut sim, press, _) = before_first_jump(3);
    for _ in 0..3 {
        step(&mut sim, &[(A, 0)]);
    }
    assert_eq!(lane(&sim, 0)[P_Y], 0, "on the ground");
    sim.apply_input(A, press, &[INPUT_JUMP]);
    sim.set_paused(true);
    let airborne = lane(&sim, 0);
    assert!(
        airborne[P_Y] > 0,
        "the late press took effect: {airborne:?}"
    );
    // ... while one for a tick before the pause, given after it, is not:
    // that history is gone.
    step(&mut sim, &[(A, INPUT_JUMP)]);
    sim.set_paused(false);
    let twin = sim.clone();
    sim.apply_input(A, press + 1, &[0]);
    sim.apply_input(A, sim.tick() - 1, &[INPUT_DUCK]);
    assert_eq!(sim.state_hash(), twin.state_hash(), "ignored");
    let mut a = sim.clone();
    let mut b = twin;
    step(&mut a, &[(A, INPUT_JUMP)]);
    step(&mut b, &[(A, INPUT_JUMP)]);
    assert_eq!(a.state_hash(), b.state_hash());
}

#[test]
fn pausing_in_the_lobby_or_after_the_end_changes_nothing() {
    let mut sim = Dizolaur::new(5);
    sim.add_player(A, "a").unwrap();
    let mut twin = sim.clone();
    sim.set_paused(true);
    assert_eq!(sim.state_hash(), twin.state_hash());
    step(&mut sim, &[]);
    step(&mut twin, &[]);
    assert_eq!(sim.state_hash(), twin.state_hash());
    // The match it starts is not frozen.
    sim.command(A, &json!({"start":{"max_seconds":10}}))
        .unwrap();
    let countdown = match_fields(&sim)[M_COUNTDOWN];
    step(&mut sim, &[]);
    assert_eq!(match_fields(&sim)[M_COUNTDOWN], countdown - 1);
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        step(&mut sim, &[]);
    }
    let ended = sim.clone();
    sim.set_paused(true);
    assert_eq!(sim.state_hash(), ended.state_hash());
    assert!(!sim.in_match());
}

#[test]
fn a_bot_takes_over_a_running_lane_and_keeps_the_peer_id() {
    let mut sim = started(6, &[A, B], json!({"start":{"max_seconds":30}}));
    let mut events = step(&mut sim, &[]);
    let before = sim.state_hash();
    assert!(sim.replace_with_bot(A), "in the countdown");
    assert_ne!(sim.state_hash(), before, "the hash covers the takeover");
    assert!(!sim.replace_with_bot(A), "A has no seat any more");
    assert_eq!(sim.player_entity(A), None);
    let first = step(&mut sim, &[]);
    assert_eq!(
        kinds(&first, "bot_takeover"),
        [json!({"kind":"bot_takeover","lane":0,"peer":11,"tick":sim.tick()})]
    );
    events.extend(first);
    let l = lane(&sim, 0);
    assert_eq!((l[P_PEER], l[P_BOT]), (11, 1));
    // A's inputs no longer steer the lane; removing A changes nothing.
    sim.remove_player(A);
    to_race(&mut sim, &mut events);
    // B does nothing and crashes at the first cactus; the bot jumps it.
    while lane(&sim, 1)[P_OUT_TICK] == 0 {
        events.extend(step(&mut sim, &[(A, INPUT_DUCK)]));
    }
    assert!(
        !sim.replace_with_bot(B),
        "a crashed runner has nothing to play"
    );
    for _ in 0..2 * MAX_REWIND {
        events.extend(step(&mut sim, &[]));
    }
    assert!(is_alive(lane(&sim, 0)[P_STATE]), "{:?}", lane(&sim, 0));
    assert_eq!(
        lane(&sim, 0)[P_INPUT] & INPUT_DUCK as i32,
        0,
        "A's duck is ignored"
    );
    while match_fields(&sim)[M_PHASE] != PHASE_ENDED {
        events.extend(step(&mut sim, &[]));
    }
    assert!(
        kinds(&events, "player_out")
            .iter()
            .all(|o| o["reason"] == "crash"),
        "nobody left: {events:?}"
    );
    let end = &kinds(&events, "match_end")[0];
    assert_eq!(end["winners"], json!([0]), "{end}");
    assert_eq!(
        end["ranking"][0],
        json!({"lane":0,"peer":11,"bot":true,"distance":end["ranking"][0]["distance"]})
    );
    assert_eq!(end["ranking"][1]["bot"], false);
    assert!(!sim.replace_with_bot(B), "after the end");
    // The next match without bots empties the lane; with nobody waiting
    // it is seatable again.
    sim.command(B, &json!({"start":{}})).unwrap();
    assert_eq!(lane(&sim, 0)[P_STATE], STATE_EMPTY);
}

#[test]
fn no_bot_for_a_seat_outside_a_match() {
    let mut sim = Dizolaur::new(2);
    sim.add_player(A, "a").unwrap();
    assert!(!sim.replace_with_bot(A), "lobby");
    assert!(!sim.replace_with_bot(B), "not seated");
    sim.command(A, &json!({"start":{}})).unwrap();
    // Someone seated mid-match waits for the next one: no racer to take.
    sim.add_player(B, "b").unwrap();
    assert!(!sim.replace_with_bot(B), "waiting, not racing");
    assert_eq!(lane(&sim, 1)[P_BOT], 0);
}

/// The room's `pause` policy and `bot` after-grace rule on Dizolaur: the
/// countdown holds while a player is away, a bot takes the seat of one who
/// did not come back, and the match log (with its `paused` and
/// `bot_takeover` entries) replays to the same hash at every tick.
#[test]
fn a_room_pauses_for_an_away_player_gives_a_lost_seat_to_a_bot_and_replays() {
    use crate::authoritative::{
        replay, AfterGrace, AuthoritativeRoom, AwayPolicy, GameConfig, RoomOutput,
    };
    use crate::metrics::RelayMetrics;
    use std::time::{Duration, Instant};

    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let config = GameConfig {
        away: AwayPolicy::Pause,
        after_grace: AfterGrace::Bot,
        ..GameConfig::default()
    };
    let mut room = AuthoritativeRoom::new(
        Box::new(Dizolaur::new(31)),
        31,
        config,
        RelayMetrics::default(),
        t0,
    );
    // A's events by id (it never acks: resent ones come again).
    let mut events = std::collections::BTreeMap::<u64, Value>::new();
    let mut run = |room: &mut AuthoritativeRoom, until| {
        while room.next_timeout() <= until {
            let at = room.next_timeout();
            room.handle_timeout(at);
            while let Some(out) = room.poll_output() {
                if let RoomOutput::Control { peer, text } = out {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if peer == A && v["type"] == "event" {
                        events.insert(v["id"].as_u64().unwrap(), v["event"].clone());
                    }
                }
            }
        }
    };
    let m = |room: &AuthoritativeRoom| {
        let mut w = WorldState::new();
        room.simulation().snapshot(&mut w);
        fields(&w, MATCH_ID)
    };
    for p in [A, B] {
        room.join(p, "p", t0).unwrap();
        room.ready(p, t0);
    }
    room.on_control(
        A,
        r#"{"type":"command","command":{"start":{"max_seconds":30}}}"#,
        t0,
    );
    run(&mut room, ms(1000));
    // A's connection is lost in the countdown: it holds.
    room.away(A, ms(1000));
    run(&mut room, ms(1100));
    let held = m(&room)[M_COUNTDOWN];
    run(&mut room, ms(3000));
    assert_eq!(m(&room)[M_COUNTDOWN], held, "the countdown holds");
    assert_eq!(m(&room)[M_PHASE], PHASE_COUNTDOWN);
    // A is back: it runs on.
    assert!(room.rejoin(A, ms(3000)));
    room.ready(A, ms(3000));
    run(&mut room, ms(3500));
    assert!(m(&room)[M_COUNTDOWN] < held);
    // In the race B's connection is lost and its grace period ends.
    run(&mut room, ms(5000));
    assert_eq!(m(&room)[M_PHASE], PHASE_RUNNING);
    room.away(B, ms(5000));
    run(&mut room, ms(6000));
    room.release(B, ms(6000));
    run(&mut room, ms(12_000));
    let w = {
        let mut w = WorldState::new();
        room.simulation().snapshot(&mut w);
        w
    };
    let b = fields(&w, LANE_ID_BASE + 1);
    assert_eq!((b[P_PEER], b[P_BOT]), (22, 1), "a bot plays B's lane");
    assert_eq!(room.player_count(), 1);
    let log = room.match_log();
    let paused: Vec<bool> = log
        .entries
        .iter()
        .filter_map(|e| match e {
            crate::authoritative::log::LogEntry::Paused { paused, .. } => Some(*paused),
            _ => None,
        })
        .collect();
    assert_eq!(
        paused,
        [true, false, true, false],
        "A away, back; B away, replaced"
    );
    assert!(log.entries.iter().any(
        |e| matches!(e, crate::authoritative::log::LogEntry::BotTakeover { peer, .. } if *peer == B)
    ));
    assert_eq!(replay(log, &DizolaurFactory).unwrap(), log.hashes);
    // A was told; the lane's events name B, marked as a bot.
    let events: Vec<Value> = events.into_values().collect();
    let takeover = kinds(&events, "bot_takeover");
    assert_eq!(takeover.len(), 1, "{events:?}");
    assert_eq!(
        (&takeover[0]["lane"], &takeover[0]["peer"]),
        (&json!(1), &json!(22))
    );
}
