//! What a bot presses each tick: seeded random buttons, or a script read
//! from a file and looped. Plain state machines stepped once per local tick,
//! so the sequences are tested without a server.

use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_relay::dizolaur::{INPUT_DUCK, INPUT_JUMP, INPUT_MASK};

/// Longest script accepted, in lines: a script is a short loop, and a bot
/// holds its own copy of the pointer only.
const MAX_SCRIPT_LINES: usize = 100_000;
/// Largest tick offset in a script (about 4.6 hours at 60 Hz).
const MAX_SCRIPT_TICK: u32 = 1_000_000;

/// A script: `(tick offset, buttons)` changes in tick order, and the loop
/// length in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputScript {
    changes: Vec<(u32, u8)>,
    length: u32,
}

/// Why a script file does not parse: the line (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl InputScript {
    /// Parses the format documented in docs/benchmarks.md ("`rtcrelay
    /// bot`"): one `TICK BUTTONS` per line, `#` comments, blank lines
    /// ignored; ticks strictly increasing from 0; BUTTONS is `none`,
    /// `jump`, `duck`, `jump+duck` or a number (decimal or `0x..`) using
    /// only Dizolaur's button bits; an optional last `TICK end` sets the
    /// loop length (otherwise the last tick + 1).
    pub fn parse(text: &str) -> Result<InputScript, ScriptError> {
        let mut changes: Vec<(u32, u8)> = Vec::new();
        let mut end = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ScriptError { line, message };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if end.is_some() {
                return Err(err("nothing may follow the `end` line".into()));
            }
            if changes.len() >= MAX_SCRIPT_LINES {
                return Err(err(format!("more than {MAX_SCRIPT_LINES} lines")));
            }
            let mut words = content.split_whitespace();
            let (Some(tick), Some(what), None) = (words.next(), words.next(), words.next()) else {
                return Err(err(format!(
                    "expected `TICK BUTTONS` (e.g. `30 jump`), got {content:?}"
                )));
            };
            let tick: u32 = tick
                .parse()
                .ok()
                .filter(|t| *t <= MAX_SCRIPT_TICK)
                .ok_or_else(|| {
                    err(format!(
                        "tick {tick:?} is not a number 0..={MAX_SCRIPT_TICK}"
                    ))
                })?;
            match changes.last() {
                None if tick != 0 => {
                    return Err(err(format!("the first line must be tick 0, not {tick}")))
                }
                Some(&(previous, _)) if tick <= previous => {
                    return Err(err(format!("ticks must increase: {tick} after {previous}")))
                }
                _ => {}
            }
            if what == "end" {
                if changes.is_empty() {
                    return Err(err("`end` needs at least one line before it".into()));
                }
                end = Some(tick);
                continue;
            }
            let buttons = parse_buttons(what).map_err(err)?;
            changes.push((tick, buttons));
        }
        let Some(&(last, _)) = changes.last() else {
            return Err(ScriptError {
                line: 0,
                message: "the script has no `TICK BUTTONS` line".into(),
            });
        };
        Ok(InputScript {
            changes,
            length: end.unwrap_or(last + 1),
        })
    }

    /// The buttons at `tick` ticks since the loop started, looping.
    pub fn buttons_at(&self, tick: u64) -> u8 {
        let t = (tick % u64::from(self.length)) as u32;
        let i = self.changes.partition_point(|&(at, _)| at <= t);
        // Tick 0 is always the first change, so `i >= 1`.
        self.changes[i.saturating_sub(1)].1
    }

    pub fn length(&self) -> u32 {
        self.length
    }
}

fn parse_buttons(word: &str) -> Result<u8, String> {
    let value = if let Some(hex) = word.strip_prefix("0x") {
        u8::from_str_radix(hex, 16).map_err(|_| format!("bad hex buttons {word:?}"))?
    } else if let Ok(n) = word.parse::<u8>() {
        n
    } else {
        let mut bits = 0;
        for name in word.split('+') {
            bits |= match name {
                "none" => 0,
                "jump" => INPUT_JUMP,
                "duck" => INPUT_DUCK,
                other => {
                    return Err(format!(
                        "unknown button {other:?} (none, jump, duck, jump+duck or a number)"
                    ))
                }
            };
        }
        bits
    };
    if value & !INPUT_MASK != 0 {
        return Err(format!(
            "buttons {word:?} = {value:#04x} set bits the game ignores (allowed mask {INPUT_MASK:#04x})"
        ));
    }
    Ok(value)
}

/// Where a bot's buttons come from.
#[derive(Debug, Clone)]
pub enum InputMode {
    Random,
    Script(Arc<InputScript>),
}

/// One bot session's input sequence, stepped once per local tick.
#[derive(Debug)]
pub struct InputPlayer {
    mode: InputMode,
    rng: ChaCha8Rng,
    tick: u64,
    current: u8,
    hold: u32,
}

impl InputPlayer {
    pub fn new(mode: InputMode, seed: u64) -> InputPlayer {
        InputPlayer {
            mode,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tick: 0,
            current: 0,
            hold: 0,
        }
    }

    /// The buttons for the next tick.
    pub fn next_buttons(&mut self) -> u8 {
        let tick = self.tick;
        self.tick += 1;
        match &self.mode {
            InputMode::Script(script) => script.buttons_at(tick),
            InputMode::Random => {
                if self.hold == 0 {
                    // Mostly running, with jumps and ducks held for a
                    // plausible time: a human-like input rate, so the
                    // server's delta snapshots and rewinds see realistic
                    // change, not noise every tick.
                    let roll: f64 = self.rng.random();
                    let (buttons, hold) = if roll < 0.6 {
                        (0, self.rng.random_range(10..=60))
                    } else if roll < 0.85 {
                        (INPUT_JUMP, self.rng.random_range(3..=15))
                    } else {
                        (INPUT_DUCK, self.rng.random_range(5..=30))
                    };
                    self.current = buttons;
                    self.hold = hold;
                }
                self.hold -= 1;
                self.current
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_loops_over_its_changes() {
        let script = InputScript::parse(
            "# a jump every half second\n0 none\n\n20 jump   # hold it\n25 0\n30 end\n",
        )
        .unwrap();
        assert_eq!(script.length(), 30);
        let seq: Vec<u8> = (0..65).map(|t| script.buttons_at(t)).collect();
        for (t, &b) in seq.iter().enumerate() {
            let in_loop = t % 30;
            let want = if (20..25).contains(&in_loop) {
                INPUT_JUMP
            } else {
                0
            };
            assert_eq!(b, want, "tick {t}");
        }
    }

    #[test]
    fn without_end_the_loop_is_the_last_tick_plus_one() {
        let script = InputScript::parse("0 duck\n3 jump+duck\n").unwrap();
        assert_eq!(script.length(), 4);
        assert_eq!(script.buttons_at(3), INPUT_JUMP | INPUT_DUCK);
        assert_eq!(script.buttons_at(4), INPUT_DUCK);
        assert_eq!(InputScript::parse("0 0x02").unwrap().buttons_at(7), 2);
    }

    #[test]
    fn bad_scripts_name_the_line() {
        for (text, line, needle) in [
            ("", 0, "no `TICK BUTTONS`"),
            ("5 jump", 1, "must be tick 0"),
            ("0 jump\n0 duck", 2, "must increase"),
            ("0 jump\nx duck", 2, "not a number"),
            ("0 fly", 1, "unknown button"),
            ("0 4", 1, "bits the game ignores"),
            ("0 jump extra", 1, "expected `TICK BUTTONS`"),
            ("0 jump\n9 end\n10 duck", 3, "follow the `end`"),
            ("0 end", 1, "at least one line"),
        ] {
            let e = InputScript::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn random_inputs_are_valid_varied_and_reproducible() {
        let take = |seed| {
            let mut p = InputPlayer::new(InputMode::Random, seed);
            (0..6000).map(|_| p.next_buttons()).collect::<Vec<u8>>()
        };
        let a = take(7);
        assert_eq!(a, take(7), "same seed, same inputs");
        assert_ne!(a, take(8), "another seed, other inputs");
        assert!(a.iter().all(|b| b & !INPUT_MASK == 0));
        let jumps = a.iter().filter(|&&b| b == INPUT_JUMP).count();
        let ducks = a.iter().filter(|&&b| b == INPUT_DUCK).count();
        let changes = a.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(jumps > 100 && ducks > 100, "{jumps} jumps, {ducks} ducks");
        // Held, not flipped every tick: 100 s at 60 Hz, a change every
        // fraction of a second.
        assert!((100..3000).contains(&changes), "{changes} changes");
    }
}
