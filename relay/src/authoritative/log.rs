//! The match log: everything needed to re-run a match exactly — the game,
//! its seed, and the calls the room made on it, in order — plus the state
//! hash after every tick, to check the re-run against.
//!
//! Entries, in call order, each with `tick` = the tick about to be simulated
//! (the last simulated tick + 1):
//! - `join {tick, peer, name}`: `add_player` succeeded (refused joins are
//!   not calls that changed anything, and are not logged);
//! - `leave {tick, peer}`: `remove_player`;
//! - `command {tick, peer, command}`: `command` (also refused ones: the call
//!   was made);
//! - `input {tick, peer, input_tick, input}` (input as hex): when
//!   `input_tick < tick`, a late input given to the game at that point; when
//!   `input_tick == tick`, the input the player gets before tick `tick` is
//!   simulated, logged only when it differs from the one it got for the
//!   previous tick (a player starts with all zeros when it joins).
//!
//! Before each step the room gives every present player, in ascending
//! `PeerId` order, its input for the tick; [`replay`] does the same with the
//! inputs the log implies. `hashes[i]` is the hash after tick `i + 1`.
//!
//! The log is bounded: after [`MAX_LOG_RECORDS`] entries and hashes
//! together it stops recording and is marked `truncated`; a truncated log
//! still replays, up to its last hash.

use std::collections::BTreeMap;
use std::fmt;

use rtcrelay_protocol::game::input::MAX_INPUT_BYTES;
use rtcrelay_protocol::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::simulation::GameFactory;

/// Entries plus hashes a log holds at most (about 100 MB worst case; a
/// hash per tick alone fills it after 9 hours at 60 Hz).
pub const MAX_LOG_RECORDS: usize = 2_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchLog {
    pub game: String,
    pub seed: u64,
    pub tick_rate: u32,
    pub entries: Vec<LogEntry>,
    /// The state hash after each tick: `hashes[i]` after tick `i + 1`.
    pub hashes: Vec<u64>,
    /// Recording stopped at the size bound.
    #[serde(default)]
    pub truncated: bool,
    #[serde(skip, default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    MAX_LOG_RECORDS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEntry {
    Join {
        tick: u32,
        peer: PeerId,
        name: String,
    },
    Leave {
        tick: u32,
        peer: PeerId,
    },
    Command {
        tick: u32,
        peer: PeerId,
        command: serde_json::Value,
    },
    Input {
        tick: u32,
        peer: PeerId,
        input_tick: u32,
        input: InputBytes,
    },
    /// `Simulation::set_paused(paused)` (the `pause` away policy).
    Paused {
        tick: u32,
        paused: bool,
    },
    /// `Simulation::replace_with_bot(peer)` returned true: a bot plays the
    /// seat of `peer`, who stays out of the room from then on. (When it
    /// returns false the room logs a `Leave`.)
    BotTakeover {
        tick: u32,
        peer: PeerId,
    },
}

impl LogEntry {
    /// The tick about to be simulated when the call was made.
    pub fn tick(&self) -> u32 {
        match self {
            LogEntry::Join { tick, .. }
            | LogEntry::Leave { tick, .. }
            | LogEntry::Command { tick, .. }
            | LogEntry::Input { tick, .. }
            | LogEntry::Paused { tick, .. }
            | LogEntry::BotTakeover { tick, .. } => *tick,
        }
    }
}

/// One input, stored inline, written as a hex string in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InputBytes {
    len: u8,
    bytes: [u8; MAX_INPUT_BYTES],
}

impl InputBytes {
    /// At most [`MAX_INPUT_BYTES`]; longer inputs are cut (never happens for
    /// inputs the room accepted).
    pub fn new(input: &[u8]) -> InputBytes {
        let len = input.len().min(MAX_INPUT_BYTES);
        let mut bytes = [0; MAX_INPUT_BYTES];
        bytes[..len].copy_from_slice(&input[..len]);
        InputBytes {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn to_hex(self) -> String {
        self.as_slice().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Result<InputBytes, String> {
        if !s.len().is_multiple_of(2) || s.len() / 2 > MAX_INPUT_BYTES || !s.is_ascii() {
            return Err(format!(
                "input must be 0 to {MAX_INPUT_BYTES} bytes of hex, got {s:?}"
            ));
        }
        let mut out = [0; MAX_INPUT_BYTES];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(pair, 16).map_err(|_| format!("bad hex {pair:?}"))?;
        }
        Ok(InputBytes {
            len: (s.len() / 2) as u8,
            bytes: out,
        })
    }
}

impl fmt::Debug for InputBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InputBytes({})", self.to_hex())
    }
}

impl Serialize for InputBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for InputBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InputBytes, D::Error> {
        let s = String::deserialize(d)?;
        InputBytes::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl MatchLog {
    pub fn new(game: &str, seed: u64, tick_rate: u32) -> MatchLog {
        MatchLog {
            game: game.to_owned(),
            seed,
            tick_rate,
            entries: Vec::new(),
            hashes: Vec::new(),
            truncated: false,
            limit: MAX_LOG_RECORDS,
        }
    }

    /// The same log with a smaller bound on entries plus hashes (tests).
    pub fn with_limit(mut self, limit: usize) -> MatchLog {
        self.limit = limit.min(MAX_LOG_RECORDS);
        self
    }

    fn has_room(&mut self) -> bool {
        if self.truncated {
            return false;
        }
        if self.entries.len() + self.hashes.len() >= self.limit {
            self.truncated = true;
            return false;
        }
        true
    }

    pub fn push(&mut self, entry: LogEntry) {
        if self.has_room() {
            self.entries.push(entry);
        }
    }

    /// The state hash after the next tick.
    pub fn push_hash(&mut self, hash: u64) {
        if self.has_room() {
            self.hashes.push(hash);
        }
    }

    /// Ticks recorded (hashes).
    pub fn ticks(&self) -> usize {
        self.hashes.len()
    }

    pub fn to_json(&self) -> String {
        // Only strings, numbers and JSON values: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<MatchLog, String> {
        serde_json::from_str(text).map_err(|e| format!("bad match log: {e}"))
    }
}

/// Re-runs a match from its log: creates the game from the seed and makes
/// the same calls in the same order. Returns the state hash after each of
/// the `log.hashes.len()` ticks (compare them with `log.hashes`), or why
/// the log cannot be replayed.
pub fn replay(log: &MatchLog, factory: &dyn GameFactory) -> Result<Vec<u64>, String> {
    let mut sim = factory
        .create(&log.game, log.seed)
        .ok_or_else(|| format!("unknown game {:?}", log.game))?;
    let input_size = usize::from(sim.input_size());
    let zeros = vec![0u8; input_size];
    let total = log.hashes.len();
    // Each present player's input for the next tick.
    let mut current: BTreeMap<PeerId, Vec<u8>> = BTreeMap::new();
    let mut hashes = Vec::with_capacity(total);
    let mut events = Vec::new();
    let mut done: u32 = 0;

    let mut step = |sim: &mut Box<dyn super::Simulation>,
                    current: &BTreeMap<PeerId, Vec<u8>>,
                    done: &mut u32,
                    hashes: &mut Vec<u64>| {
        let tick = *done + 1;
        for (&peer, input) in current {
            sim.apply_input(peer, tick, input);
        }
        events.clear();
        sim.step(&mut events);
        *done = tick;
        hashes.push(sim.state_hash());
    };

    for (i, entry) in log.entries.iter().enumerate() {
        let tick = entry.tick();
        if tick == 0 || u64::from(tick) > total as u64 + 1 {
            return Err(format!(
                "entry {i}: tick {tick} outside 1..={}",
                total as u64 + 1
            ));
        }
        if tick < done + 1 {
            return Err(format!(
                "entry {i}: tick {tick} after tick {done} was simulated"
            ));
        }
        while done + 1 < tick {
            step(&mut sim, &current, &mut done, &mut hashes);
        }
        match entry {
            LogEntry::Join { peer, name, .. } => {
                if current.contains_key(peer) {
                    return Err(format!("entry {i}: {peer} joined twice"));
                }
                sim.add_player(*peer, name)
                    .map_err(|e| format!("entry {i}: the game refused {peer}: {e}"))?;
                current.insert(*peer, zeros.clone());
            }
            LogEntry::Leave { peer, .. } => {
                sim.remove_player(*peer);
                current.remove(peer);
            }
            LogEntry::Paused { paused, .. } => sim.set_paused(*paused),
            LogEntry::BotTakeover { peer, .. } => {
                if !sim.replace_with_bot(*peer) {
                    return Err(format!(
                        "entry {i}: the game has no bot to take {peer}'s seat"
                    ));
                }
                current.remove(peer);
            }
            LogEntry::Command { peer, command, .. } => {
                // Refused commands were logged too; the result is the game's.
                let _ = sim.command(*peer, command);
            }
            LogEntry::Input {
                peer,
                input_tick,
                input,
                ..
            } => {
                let bytes = input.as_slice();
                if bytes.len() != input_size {
                    return Err(format!(
                        "entry {i}: input of {} bytes, the game's are {input_size}",
                        bytes.len()
                    ));
                }
                let Some(slot) = current.get_mut(peer) else {
                    return Err(format!("entry {i}: input of {peer}, who is not present"));
                };
                if *input_tick == tick {
                    slot.clear();
                    slot.extend_from_slice(bytes);
                } else if *input_tick < tick {
                    sim.apply_input(*peer, *input_tick, bytes);
                } else {
                    return Err(format!(
                        "entry {i}: input for tick {input_tick} logged before tick {tick}"
                    ));
                }
            }
        }
    }
    while (done as usize) < total {
        step(&mut sim, &current, &mut done, &mut hashes);
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authoritative::room::test_game::{CounterFactory, COUNTER_GAME};
    use serde_json::json;

    fn input(tick: u32, peer: u32, input_tick: u32, byte: u8) -> LogEntry {
        LogEntry::Input {
            tick,
            peer: PeerId(peer),
            input_tick,
            input: InputBytes::new(&[byte]),
        }
    }

    fn join(tick: u32, peer: u32) -> LogEntry {
        LogEntry::Join {
            tick,
            peer: PeerId(peer),
            name: format!("p{peer}"),
        }
    }

    /// A hand-written log: replaying it runs the game through the calls a
    /// room would have made, checked against a direct run.
    #[test]
    fn replay_makes_the_logged_calls_in_order() {
        let mut log = MatchLog::new(COUNTER_GAME, 7, 60);
        log.push(join(1, 2));
        log.push(join(1, 1));
        log.push(input(2, 1, 2, 5));
        log.push(LogEntry::Command {
            tick: 3,
            peer: PeerId(2),
            command: json!({"add": 10}),
        });
        log.push(input(4, 2, 2, 9)); // late, for tick 2
        log.push(LogEntry::Leave {
            tick: 5,
            peer: PeerId(1),
        });
        for _ in 0..6 {
            log.push_hash(0);
        }
        let replayed = replay(&log, &CounterFactory).expect("replay");
        assert_eq!(replayed.len(), 6);

        // The same calls made directly.
        let mut sim = CounterFactory.create(COUNTER_GAME, 7).expect("game");
        let mut ev = Vec::new();
        let mut direct = Vec::new();
        sim.add_player(PeerId(2), "p2").expect("join");
        sim.add_player(PeerId(1), "p1").expect("join");
        sim.apply_input(PeerId(1), 1, &[0]);
        sim.apply_input(PeerId(2), 1, &[0]);
        sim.step(&mut ev);
        direct.push(sim.state_hash());
        sim.apply_input(PeerId(1), 2, &[5]);
        sim.apply_input(PeerId(2), 2, &[0]);
        sim.step(&mut ev);
        direct.push(sim.state_hash());
        sim.command(PeerId(2), &json!({"add": 10}))
            .expect("command");
        sim.apply_input(PeerId(1), 3, &[5]);
        sim.apply_input(PeerId(2), 3, &[0]);
        sim.step(&mut ev);
        direct.push(sim.state_hash());
        sim.apply_input(PeerId(2), 2, &[9]);
        sim.apply_input(PeerId(1), 4, &[5]);
        sim.apply_input(PeerId(2), 4, &[0]);
        sim.step(&mut ev);
        direct.push(sim.state_hash());
        sim.remove_player(PeerId(1));
        for tick in 5..=6 {
            sim.apply_input(PeerId(2), tick, &[0]);
            sim.step(&mut ev);
            direct.push(sim.state_hash());
        }
        assert_eq!(replayed, direct);
    }

    #[test]
    fn json_round_trip_with_hex_inputs() {
        let mut log = MatchLog::new(COUNTER_GAME, u64::MAX, 60);
        log.push(join(1, 3));
        log.push(input(1, 3, 1, 0xab));
        log.push_hash(0x0123_4567_89ab_cdef);
        let text = log.to_json();
        assert!(text.contains(r#""input":"ab""#), "{text}");
        assert!(text.contains(r#""type":"join""#), "{text}");
        assert!(text.contains(&u64::MAX.to_string()), "{text}");
        let back = MatchLog::from_json(&text).expect("parse");
        assert_eq!(back, log);
        assert!(MatchLog::from_json(&text.replace(r#""ab""#, r#""zz""#)).is_err());
        assert!(MatchLog::from_json(&text.replace(r#""ab""#, r#""abc""#)).is_err());
        let long = format!("\"{}\"", "00".repeat(MAX_INPUT_BYTES + 1));
        assert!(MatchLog::from_json(&text.replace(r#""ab""#, &long)).is_err());
        assert!(MatchLog::from_json(&text.replace(r#""ab""#, "\"é0\"")).is_err());
    }

    #[test]
    fn bad_logs_are_errors() {
        let base = || {
            let mut log = MatchLog::new(COUNTER_GAME, 1, 60);
            log.push_hash(0);
            log.push_hash(0);
            log
        };
        let mut log = base();
        log.game = "nope".into();
        assert!(replay(&log, &CounterFactory).is_err());
        // Out of order.
        let mut log = base();
        log.push(join(2, 1));
        log.push(join(1, 2));
        assert!(replay(&log, &CounterFactory).is_err());
        // Beyond the recorded ticks (would step forever otherwise).
        let mut log = base();
        log.push(join(u32::MAX, 1));
        assert!(replay(&log, &CounterFactory).is_err());
        // Input of someone absent, wrong size, from the future.
        let mut log = base();
        log.push(input(1, 1, 1, 0));
        assert!(replay(&log, &CounterFactory).is_err());
        let mut log = base();
        log.push(join(1, 1));
        log.push(LogEntry::Input {
            tick: 1,
            peer: PeerId(1),
            input_tick: 1,
            input: InputBytes::new(&[1, 2]),
        });
        assert!(replay(&log, &CounterFactory).is_err());
        let mut log = base();
        log.push(join(1, 1));
        log.push(input(1, 1, 2, 0));
        assert!(replay(&log, &CounterFactory).is_err());
        // Joining twice.
        let mut log = base();
        log.push(join(1, 1));
        log.push(join(2, 1));
        assert!(replay(&log, &CounterFactory).is_err());
    }

    #[test]
    fn the_log_stops_at_its_bound_and_says_so() {
        let mut log = MatchLog::new(COUNTER_GAME, 1, 60).with_limit(5);
        log.push(join(1, 1));
        for _ in 0..3 {
            log.push_hash(1);
        }
        log.push(input(4, 1, 4, 1));
        assert!(!log.truncated);
        log.push_hash(2);
        log.push(input(5, 1, 5, 2));
        assert!(log.truncated);
        assert_eq!(log.entries.len() + log.hashes.len(), 5);
        assert_eq!(log.ticks(), 3);
        // Still replays, up to its last hash.
        assert_eq!(replay(&log, &CounterFactory).expect("replay").len(), 3);
    }
    #[test]
    fn pauses_and_bot_takeovers_are_logged_as_json_and_replayed_in_order() {
        let mut log = MatchLog::new(COUNTER_GAME, 3, 60);
        log.push(join(1, 1));
        log.push(join(1, 2));
        log.push(input(1, 1, 1, 4));
        log.push(LogEntry::Paused {
            tick: 3,
            paused: true,
        });
        log.push(input(4, 1, 4, 6)); // given while paused: not counted
        log.push(LogEntry::Paused {
            tick: 5,
            paused: false,
        });
        log.push(LogEntry::BotTakeover {
            tick: 6,
            peer: PeerId(2),
        });
        for _ in 0..7 {
            log.push_hash(0);
        }
        let text = log.to_json();
        assert!(
            text.contains(r#"{"type":"paused","tick":3,"paused":true}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"type":"bot_takeover","tick":6,"peer":2}"#),
            "{text}"
        );
        assert_eq!(MatchLog::from_json(&text).expect("parse"), log);
        let replayed = replay(&log, &CounterFactory).expect("replay");

        // The same calls made directly; after the takeover peer 2 gets no
        // more inputs (the bot plays it).
        let mut sim = CounterFactory.create(COUNTER_GAME, 3).expect("game");
        let mut ev = Vec::new();
        let mut direct = Vec::new();
        sim.add_player(PeerId(1), "p1").expect("join");
        sim.add_player(PeerId(2), "p2").expect("join");
        let mut tick =
            |sim: &mut Box<dyn crate::authoritative::Simulation>, t: u32, inputs: &[(u32, u8)]| {
                for &(p, i) in inputs {
                    sim.apply_input(PeerId(p), t, &[i]);
                }
                sim.step(&mut ev);
                direct.push(sim.state_hash());
            };
        tick(&mut sim, 1, &[(1, 4), (2, 0)]);
        tick(&mut sim, 2, &[(1, 4), (2, 0)]);
        sim.set_paused(true);
        tick(&mut sim, 3, &[(1, 4), (2, 0)]);
        tick(&mut sim, 4, &[(1, 6), (2, 0)]);
        sim.set_paused(false);
        tick(&mut sim, 5, &[(1, 6), (2, 0)]);
        assert!(sim.replace_with_bot(PeerId(2)));
        tick(&mut sim, 6, &[(1, 6)]);
        tick(&mut sim, 7, &[(1, 6)]);
        assert_eq!(replayed, direct);

        // An input for a peer a bot replaced is an error, as is a takeover
        // the game cannot make (CounterGame has bots for even ids only).
        let mut bad = log.clone();
        bad.push(input(7, 2, 7, 1));
        assert!(replay(&bad, &CounterFactory)
            .unwrap_err()
            .contains("not present"));
        let mut bad = log.clone();
        bad.entries[6] = LogEntry::BotTakeover {
            tick: 6,
            peer: PeerId(1),
        };
        assert!(replay(&bad, &CounterFactory)
            .unwrap_err()
            .contains("no bot"));
    }
}
