//! Determinism: a room runs a scripted match (joins, leaves, a rejoin,
//! commands, inputs on time, duplicated, late within the rewind and too
//! late); its match log, replayed twice (and in a second process), gives
//! exactly the room's per-tick state hashes.

mod authoritative_support;

use std::process::Command;
use std::time::{Duration, Instant};

use authoritative_support::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::InputDatagram;
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::log::{InputBytes, LogEntry};
use rtcrelay_relay::authoritative::{replay, AuthoritativeRoom, GameConfig, MatchLog};
use rtcrelay_relay::RelayMetrics;

const TICK: Duration = Duration::from_nanos(16_666_667);
const MATCH_TICKS: u32 = 20 * 60;

struct Scripted {
    log: MatchLog,
    final_hash: u64,
    metrics: RelayMetrics,
}

/// 20 s at 60 Hz, three players, every kind of call a room makes.
fn scripted_match() -> Scripted {
    let t0 = Instant::now();
    let metrics = RelayMetrics::default();
    let mut room = AuthoritativeRoom::new(
        Box::new(TestGame::new(42, 8, Recorder::default())),
        42,
        GameConfig::default(),
        metrics.clone(),
        t0,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(4242);
    let mut present: Vec<PeerId> = Vec::new();
    let mut buttons = [0u8; 4];
    let mut seq = 0u32;
    // Datagrams held back to arrive late: (deliver at, peer, frame).
    let mut held: Vec<(Instant, PeerId, Vec<u8>)> = Vec::new();
    let join = |room: &mut AuthoritativeRoom, present: &mut Vec<PeerId>, p: u32, now| {
        room.join(PeerId(p), &format!("player {p}"), now)
            .expect("join");
        room.ready(PeerId(p), now);
        present.push(PeerId(p));
    };
    for k in 0..MATCH_TICKS {
        let now = t0 + k * TICK + Duration::from_millis(3);
        match k {
            0 => {
                join(&mut room, &mut present, 1, now);
                join(&mut room, &mut present, 2, now);
            }
            180 => join(&mut room, &mut present, 3, now),
            720 => {
                room.leave(PeerId(1), now);
                present.retain(|p| *p != PeerId(1));
            }
            900 => join(&mut room, &mut present, 1, now),
            300 | 600 => room.on_control(
                PeerId(2),
                &format!(r#"{{"type":"command","command":{{"add":{k}}}}}"#),
                now,
            ),
            450 => room.on_control(PeerId(3), r#"{"type":"command","command":{"nope":1}}"#, now),
            _ => {}
        }
        for &peer in &present {
            let b = &mut buttons[peer.0 as usize];
            if rng.random_bool(0.3) {
                *b = rng.random_range(0..0x80);
            }
            seq += 1;
            let frame = InputDatagram {
                seq,
                ack: None,
                first_tick: room.tick() + 2,
                input_size: 1,
                inputs: vec![*b],
            }
            .encode();
            let roll: f64 = rng.random();
            if roll < 0.1 {
                // Held 3 to 14 ticks: late (applied or dropped) or missing.
                let delay = TICK * rng.random_range(3..15);
                held.push((now + delay, peer, frame));
            } else {
                if roll < 0.15 {
                    room.on_realtime(peer, &frame, now);
                }
                room.on_realtime(peer, &frame, now);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _, _)| *at <= now);
        held = later;
        for (_, peer, frame) in due {
            room.on_realtime(peer, &frame, now);
        }
        while room.next_timeout() <= now {
            let at = room.next_timeout();
            room.handle_timeout(at);
        }
        while room.poll_output().is_some() {}
    }
    let end = t0 + MATCH_TICKS * TICK;
    while room.next_timeout() <= end {
        let at = room.next_timeout();
        room.handle_timeout(at);
    }
    assert_eq!(room.tick(), MATCH_TICKS);
    Scripted {
        log: room.match_log().clone(),
        final_hash: room.simulation().state_hash(),
        metrics,
    }
}

#[test]
fn a_replayed_log_gives_the_rooms_hashes_twice() {
    let Scripted {
        log,
        final_hash,
        metrics,
    } = scripted_match();
    assert_eq!(log.hashes.len(), MATCH_TICKS as usize);
    assert_eq!(log.hashes.last(), Some(&final_hash));
    assert!(!log.truncated);
    // The script exercised every kind of call.
    let count = |f: fn(&LogEntry) -> bool| log.entries.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, LogEntry::Join { .. })), 4);
    assert_eq!(count(|e| matches!(e, LogEntry::Leave { .. })), 1);
    assert_eq!(count(|e| matches!(e, LogEntry::Command { .. })), 3);
    let late =
        count(|e| matches!(e, LogEntry::Input { tick, input_tick, .. } if input_tick < tick));
    assert!(late > 20, "{late} late inputs logged");
    assert_eq!(late as u64, outcome(&metrics, "late_applied"));
    assert!(outcome(&metrics, "late") > 0);
    assert!(outcome(&metrics, "duplicate") > 0);
    assert!(outcome(&metrics, "missing") > 0);
    // Only changed inputs are logged.
    let on_time =
        count(|e| matches!(e, LogEntry::Input { tick, input_tick, .. } if input_tick == tick));
    assert!(
        on_time < 3 * MATCH_TICKS as usize / 2,
        "{on_time} inputs logged"
    );

    // Through JSON, replayed twice.
    let parsed = MatchLog::from_json(&log.to_json()).expect("parse");
    assert_eq!(parsed, log);
    let first = replay(&parsed, &TestFactory).expect("replay");
    let second = replay(&parsed, &TestFactory).expect("replay");
    assert_eq!(first, second);
    assert_eq!(first, log.hashes);
    // The hashes are not trivially equal: they change every tick.
    let mut distinct = log.hashes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), log.hashes.len());
}

#[test]
fn the_same_script_gives_the_same_log() {
    let a = scripted_match();
    let b = scripted_match();
    assert_eq!(a.log, b.log);
}

#[test]
fn a_tampered_log_no_longer_matches() {
    let Scripted { mut log, .. } = scripted_match();
    let tick_changed = log
        .entries
        .iter_mut()
        .find_map(|e| match e {
            LogEntry::Input {
                tick,
                input_tick,
                input,
                ..
            } if *tick > 100 && input_tick == tick => {
                let flipped = input.as_slice()[0] ^ 1;
                *input = InputBytes::new(&[flipped]);
                Some(*tick)
            }
            _ => None,
        })
        .expect("an on-time input after tick 100");
    let replayed = replay(&log, &TestFactory).expect("replay");
    let first_diff = replayed
        .iter()
        .zip(&log.hashes)
        .position(|(a, b)| a != b)
        .expect("a difference");
    // Hashes up to the tick before agree; from the changed tick on, not.
    assert_eq!(first_diff as u32 + 1, tick_changed);
}

const CHILD_TEST: &str = "replay_child_process";
const LOG_ENV: &str = "RTCRELAY_TEST_REPLAY_LOG";
const OUT_ENV: &str = "RTCRELAY_TEST_REPLAY_OUT";

#[test]
fn a_second_process_replays_to_the_same_hashes() {
    let Scripted { log, .. } = scripted_match();
    let dir = std::env::temp_dir();
    let id = std::process::id();
    let log_path = dir.join(format!("rtcrelay-match-log-{id}.json"));
    let out_path = dir.join(format!("rtcrelay-match-hashes-{id}.json"));
    std::fs::write(&log_path, log.to_json()).expect("write log");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            CHILD_TEST,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(LOG_ENV, &log_path)
        .env(OUT_ENV, &out_path)
        .status()
        .expect("run the test binary");
    let hashes = std::fs::read_to_string(&out_path);
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&out_path);
    assert!(status.success(), "child: {status}");
    let hashes: Vec<u64> = serde_json::from_str(&hashes.expect("child output")).expect("json");
    assert_eq!(hashes, log.hashes);
}

/// Run by [`a_second_process_replays_to_the_same_hashes`] in a child
/// process: replays the log it is given and writes the hashes. Run alone,
/// it checks a fresh match's replay.
#[test]
#[ignore = "run as a child process by a_second_process_replays_to_the_same_hashes"]
fn replay_child_process() {
    match (std::env::var_os(LOG_ENV), std::env::var_os(OUT_ENV)) {
        (Some(log_path), Some(out_path)) => {
            let text = std::fs::read_to_string(log_path).expect("read log");
            let log = MatchLog::from_json(&text).expect("parse log");
            let hashes = replay(&log, &TestFactory).expect("replay");
            std::fs::write(out_path, serde_json::to_string(&hashes).expect("json"))
                .expect("write hashes");
        }
        _ => {
            let Scripted { log, .. } = scripted_match();
            assert_eq!(replay(&log, &TestFactory).expect("replay"), log.hashes);
        }
    }
}
