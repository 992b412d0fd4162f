//! Determinism: a Dizolaur match recorded by a real `AuthoritativeRoom`
//! (scripted, changing inputs from two players, bots in the other seats,
//! inputs arriving early, late and twice) replays to the same state hash at
//! every tick: twice in this process, and again in a second process with
//! `rtcrelay replay`. A tampered log is caught at the tick it changes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::InputDatagram;
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::authoritative::{replay, AuthoritativeRoom, GameConfig, MatchLog};
use rtcrelay_relay::{BuiltinGames, GameFactory, RelayMetrics};

/// A tiny seeded generator for the scripted buttons (xorshift64*).
struct Script(u64);

impl Script {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Jump (bit 0) or duck (bit 1) now and then, held for a few ticks.
    fn buttons(&mut self) -> u8 {
        match self.next() % 10 {
            0 | 1 => 1,
            2 => 2,
            _ => 0,
        }
    }
}

fn record_match(seed: u64) -> MatchLog {
    let t0 = Instant::now();
    let sim = BuiltinGames.create("dizolaur", seed).expect("dizolaur");
    let config = GameConfig::default();
    let tick = Duration::from_secs(1) / config.tick_rate;
    let mut room = AuthoritativeRoom::new(sim, seed, config, RelayMetrics::default(), t0);
    let players = [PeerId(11), PeerId(12)];
    for (i, p) in players.iter().enumerate() {
        room.join(*p, &format!("p{i}"), t0).unwrap();
        room.ready(*p, t0);
    }
    room.on_control(
        players[0],
        r#"{"type":"command","command":{"start":{"bots":true,"max_seconds":20}}}"#,
        t0,
    );
    let mut script = Script(seed | 1);
    let mut seq = 0;
    let mut now = t0;
    // 25 s: countdown, a 20-s match at most, the end.
    for step in 0..(25 * 60) {
        now += tick;
        for (i, p) in players.iter().enumerate() {
            // Player 0 stamps inputs 2 ticks ahead; player 1 one tick late
            // every 7th tick (lag compensation), and sends duplicates.
            let lead: i64 = if i == 1 && step % 7 == 0 { -1 } else { 2 };
            let target = (i64::from(room.tick()) + lead).max(1) as u32;
            seq += 1;
            let d = InputDatagram {
                seq,
                ack: None::<SnapshotAck>,
                first_tick: target,
                input_size: 1,
                inputs: vec![script.buttons()],
            }
            .encode();
            room.on_realtime(*p, &d, now);
            if step % 5 == 0 {
                room.on_realtime(*p, &d, now);
            }
        }
        room.handle_timeout(now);
        while room.poll_output().is_some() {}
    }
    room.leave(players[1], now);
    room.match_log().clone()
}

fn write(log: &MatchLog, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rtcrelay-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, log.to_json()).unwrap();
    path
}

fn replay_process(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args(["replay", "--hashes"])
        .arg(path)
        .output()
        .expect("run rtcrelay replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_recorded_match_replays_to_the_same_hash_at_every_tick() {
    let log = record_match(0x5eed_0001);
    assert!(log.hashes.len() >= 20 * 60, "{} ticks", log.hashes.len());
    assert!(!log.truncated);
    let inputs = log
        .entries
        .iter()
        .filter(|e| {
            matches!(
                e,
                rtcrelay_relay::authoritative::log::LogEntry::Input { .. }
            )
        })
        .count();
    assert!(inputs > 100, "the script changed inputs often: {inputs}");

    // Twice in this process.
    let first = replay(&log, &BuiltinGames).unwrap();
    let second = replay(&log, &BuiltinGames).unwrap();
    assert_eq!(first, log.hashes, "replay equals the recording");
    assert_eq!(first, second, "two replays agree");
    // The game state changes over the match: the hashes are not constant.
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(distinct.len() > first.len() / 2);

    // Through JSON, in a second process.
    let path = write(&log, "match.json");
    let (code, stdout, stderr) = replay_process(&path);
    assert_eq!(code, 0, "stderr: {stderr}");
    let printed: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, h)| u64::from_str_radix(h, 16).ok())
        .collect();
    assert_eq!(
        printed, log.hashes,
        "the second process computes the same hashes"
    );

    // Another seed gives another match.
    let other = record_match(0x5eed_0002);
    assert_ne!(other.hashes, log.hashes);
}

#[test]
fn a_tampered_log_is_caught_at_the_tick_it_changes() {
    let log = record_match(0x5eed_0003);
    let mut json: serde_json::Value = serde_json::from_str(&log.to_json()).unwrap();
    // Take back every jump: the runners' heights, and so the hashes, change
    // from the first jump of the running match on.
    let mut jumps = 0;
    for e in json["entries"].as_array_mut().unwrap() {
        if e["type"] == "input" && e["input"] == "01" {
            e["input"] = "00".into();
            jumps += 1;
        }
    }
    assert!(jumps > 10, "{jumps} jumps");
    let path = write(&serde_json::from_value(json).unwrap(), "tampered.json");
    let (code, _, stderr) = replay_process(&path);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stderr.contains("diverges at tick"), "{stderr}");

    let garbage = std::env::temp_dir().join(format!("rtcrelay-replay-{}.json", std::process::id()));
    std::fs::write(&garbage, "{not json").unwrap();
    let (code, _, stderr) = replay_process(&garbage);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("bad match log"), "{stderr}");
}
