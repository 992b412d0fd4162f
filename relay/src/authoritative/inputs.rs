//! Per-player input buffers: what the server does with each input that
//! arrives on `realtime`, and which input each player gets for each tick.
//!
//! The rules (docs/protocol.md), per player, with `last` the last simulated
//! tick and `next = last + 1`:
//!
//! 1. Rate: a token bucket of `2 * tick_rate` datagrams/s, burst `tick_rate`;
//!    excess datagrams are dropped (`rate_limited`).
//! 2. A datagram with the wrong input size, no input, or any input the game
//!    refuses ([`super::Simulation::validate_input`]) is dropped whole
//!    (`invalid`). See [`check_datagram`].
//! 3. Each input, by its tick `t`: `t > last + max_input_lead` →
//!    `too_early`; `t` already received → `duplicate` (the first copy wins);
//!    `t >= next` → stored (`accepted`); `last - max_rewind < t <= last` and
//!    never received → given to the game late (`late_applied`); older →
//!    `late` (dropped).
//! 4. Before tick `n` is simulated the player gets the input stored for `n`,
//!    or else (`missing`) the input of the newest tick received so far
//!    repeated (all zeros if it never sent one).
//!
//! Received ticks are remembered for [`HISTORY_TICKS`] ticks after they are
//! simulated, so that the redundant copies a client keeps sending until its
//! `input_ack` catches up count as duplicates, not late. A copy older than
//! that counts as `late`. Ticks up to the one the player joined at are never
//! its own: inputs for them are `late`.

use std::collections::BTreeMap;
use std::time::Instant;

use rtcrelay_protocol::game::input::MAX_INPUT_BYTES;
use rtcrelay_protocol::game::InputDatagram;

/// Ticks after simulation during which a received tick is still recognized
/// as a duplicate; also the largest `max_rewind` the room honours.
pub const HISTORY_TICKS: u32 = 128;

/// What became of an input (or a datagram, or a tick without input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputOutcome {
    /// Stored for a tick not yet simulated.
    Accepted,
    /// That tick was already received; this copy is ignored.
    Duplicate,
    /// Its tick was simulated at most `max_rewind` ticks ago and had no input
    /// yet: given to the game, which may compensate.
    LateApplied,
    /// Its tick was simulated too long ago: dropped.
    Late,
    /// Beyond `last + max_input_lead`: dropped.
    TooEarly,
    /// The whole datagram was malformed or refused by the game.
    Invalid,
    /// The whole datagram came above the player's rate.
    RateLimited,
    /// A tick simulated without an input from the player (the last one
    /// repeated).
    Missing,
}

impl InputOutcome {
    pub const ALL: [InputOutcome; 8] = [
        InputOutcome::Accepted,
        InputOutcome::Duplicate,
        InputOutcome::LateApplied,
        InputOutcome::Late,
        InputOutcome::TooEarly,
        InputOutcome::Invalid,
        InputOutcome::RateLimited,
        InputOutcome::Missing,
    ];

    /// The `outcome` label of `rtcrelay_game_inputs_total`.
    pub fn label(self) -> &'static str {
        match self {
            InputOutcome::Accepted => "accepted",
            InputOutcome::Duplicate => "duplicate",
            InputOutcome::LateApplied => "late_applied",
            InputOutcome::Late => "late",
            InputOutcome::TooEarly => "too_early",
            InputOutcome::Invalid => "invalid",
            InputOutcome::RateLimited => "rate_limited",
            InputOutcome::Missing => "missing",
        }
    }
}

/// Decodes an input datagram and checks it against the game (rule 2):
/// `input_size` must match and every input must pass `validate`.
pub fn check_datagram(
    frame: &[u8],
    input_size: u8,
    validate: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<InputDatagram, String> {
    let datagram = InputDatagram::decode(frame).map_err(|e| e.to_string())?;
    if datagram.input_size != input_size {
        return Err(format!(
            "input size {}, the game's is {input_size}",
            datagram.input_size
        ));
    }
    if datagram.count() == 0 {
        return Err("no inputs".into());
    }
    for (tick, input) in datagram.iter() {
        validate(input).map_err(|e| format!("input for tick {tick}: {e}"))?;
    }
    Ok(datagram)
}

/// A token bucket driven by the caller's `now`. Written here rather than
/// taken from a crate such as `governor` because those read their own clock,
/// and everything in a room runs on the `now` it is given (sans-IO, and
/// testable with synthetic time). Integer arithmetic: one token is
/// 1e9 units and `rate` tokens refill per second, so the refill after `d`
/// ns is exactly `d * rate` units.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: u64,
    capacity_units: u128,
    units: u128,
    last: Instant,
}

const UNITS_PER_TOKEN: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket of `burst` tokens refilling at `rate_per_s` tokens/s.
    pub fn new(rate_per_s: u64, burst: u64, now: Instant) -> TokenBucket {
        let capacity_units = u128::from(burst.max(1)) * UNITS_PER_TOKEN;
        TokenBucket {
            rate_per_s,
            capacity_units,
            units: capacity_units,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        if now > self.last {
            self.last = now;
        }
        let refill = elapsed.saturating_mul(u128::from(self.rate_per_s));
        self.units = self.units.saturating_add(refill).min(self.capacity_units);
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }
}

/// One player's inputs: future ones by tick, and which recent ticks were
/// received.
#[derive(Debug, Clone)]
pub struct InputBuffer {
    input_size: usize,
    max_input_lead: u32,
    max_rewind: u32,
    /// The last simulated tick.
    last: u32,
    /// The tick the player joined at: its inputs start after it.
    joined_at: u32,
    /// Inputs for ticks > `last` (at most `max_input_lead` of them).
    stored: BTreeMap<u32, Input>,
    /// Bit `i` set: tick `last - i` was received.
    received_past: u128,
    /// The input repeated when one is missing, and the tick it came from.
    repeat: Input,
    repeat_tick: Option<u32>,
    bucket: TokenBucket,
}

/// One input, inline (at most `MAX_INPUT_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Input {
    len: u8,
    bytes: [u8; MAX_INPUT_BYTES],
}

impl Input {
    fn zeros(len: usize) -> Input {
        Input {
            len: len.min(MAX_INPUT_BYTES) as u8,
            bytes: [0; MAX_INPUT_BYTES],
        }
    }

    fn from_slice(input: &[u8]) -> Input {
        let mut out = Input::zeros(input.len());
        let len = usize::from(out.len);
        out.bytes[..len].copy_from_slice(&input[..len]);
        out
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl InputBuffer {
    /// A buffer for a player who joins when `last` is the last simulated
    /// tick. `max_rewind` is capped at [`HISTORY_TICKS`].
    pub fn new(
        input_size: u8,
        tick_rate: u32,
        max_input_lead: u32,
        max_rewind: u32,
        last: u32,
        now: Instant,
    ) -> InputBuffer {
        let input_size = usize::from(input_size).min(MAX_INPUT_BYTES);
        let tick_rate = u64::from(tick_rate.max(1));
        InputBuffer {
            input_size,
            max_input_lead: max_input_lead.max(1),
            max_rewind: max_rewind.min(HISTORY_TICKS),
            last,
            joined_at: last,
            stored: BTreeMap::new(),
            received_past: 0,
            repeat: Input::zeros(input_size),
            repeat_tick: None,
            bucket: TokenBucket::new(2 * tick_rate, tick_rate, now),
        }
    }

    /// Rule 1: whether a datagram arriving at `now` is within the rate.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.bucket.try_take(now)
    }

    /// The last simulated tick, as this buffer knows it.
    pub fn last(&self) -> u32 {
        self.last
    }

    /// Rule 3 for one input of a checked datagram (`input` has the game's
    /// size). On `LateApplied` the caller gives it to the game now.
    pub fn offer(&mut self, tick: u32, input: &[u8]) -> InputOutcome {
        if input.len() != self.input_size {
            return InputOutcome::Invalid;
        }
        if u64::from(tick) > u64::from(self.last) + u64::from(self.max_input_lead) {
            return InputOutcome::TooEarly;
        }
        if tick > self.last {
            return match self.stored.entry(tick) {
                std::collections::btree_map::Entry::Occupied(_) => InputOutcome::Duplicate,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Input::from_slice(input));
                    InputOutcome::Accepted
                }
            };
        }
        if tick <= self.joined_at {
            return InputOutcome::Late;
        }
        let age = self.last - tick;
        if age < HISTORY_TICKS && self.received_past & (1u128 << age) != 0 {
            return InputOutcome::Duplicate;
        }
        if age < self.max_rewind {
            self.received_past |= 1u128 << age;
            if self.repeat_tick.is_none_or(|r| tick > r) {
                self.repeat = Input::from_slice(input);
                self.repeat_tick = Some(tick);
            }
            return InputOutcome::LateApplied;
        }
        InputOutcome::Late
    }

    /// Rule 4: the input for tick `last + 1`, which is now simulated, and
    /// whether it was missing (the last one repeated).
    pub fn take_next(&mut self) -> (&[u8], bool) {
        let tick = self.last.wrapping_add(1);
        self.last = tick;
        self.received_past <<= 1;
        let missing = match self.stored.remove(&tick) {
            Some(input) => {
                self.received_past |= 1;
                self.repeat = input;
                self.repeat_tick = Some(tick);
                false
            }
            None => true,
        };
        (self.repeat.as_slice(), missing)
    }

    /// The largest `t` such that the client need not send any input for a
    /// tick `<= t` again: every such tick was received, or is too old for
    /// the game to take late (at or before `last - max_rewind`, or not
    /// after the join). Acking a simulated but never received tick would
    /// stop the client resending an input that lag compensation could still
    /// apply.
    pub fn input_ack(&self) -> u32 {
        let mut t = self
            .last
            .saturating_sub(self.max_rewind)
            .max(self.joined_at)
            .min(self.last);
        while t < self.last {
            // `age < max_rewind <= HISTORY_TICKS`: inside the bit set.
            let age = self.last - (t + 1);
            if self.received_past & (1u128 << age) == 0 {
                return t;
            }
            t += 1;
        }
        for &tick in self.stored.keys() {
            if Some(tick) != t.checked_add(1) {
                break;
            }
            t = tick;
        }
        t
    }

    /// Inputs stored for ticks not yet simulated.
    pub fn pending(&self) -> usize {
        self.stored.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn buffer(last: u32, max_rewind: u32) -> InputBuffer {
        InputBuffer::new(1, 60, 60, max_rewind, last, Instant::now())
    }

    #[test]
    fn future_inputs_are_stored_by_tick_and_applied_in_order() {
        let mut b = buffer(10, 0);
        // Out of order: placed by tick.
        assert_eq!(b.offer(13, &[3]), InputOutcome::Accepted);
        assert_eq!(b.offer(11, &[1]), InputOutcome::Accepted);
        assert_eq!(b.offer(12, &[2]), InputOutcome::Accepted);
        assert_eq!(b.pending(), 3);
        assert_eq!(b.input_ack(), 13);
        assert_eq!(b.take_next(), (&[1u8][..], false));
        assert_eq!(b.take_next(), (&[2u8][..], false));
        assert_eq!(b.take_next(), (&[3u8][..], false));
        assert_eq!(b.last(), 13);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn duplicates_are_idempotent_the_first_copy_wins() {
        let mut b = buffer(0, 0);
        assert_eq!(b.offer(1, &[5]), InputOutcome::Accepted);
        assert_eq!(b.offer(1, &[9]), InputOutcome::Duplicate);
        assert_eq!(b.take_next(), (&[5u8][..], false));
        // After its tick is simulated, a copy is still a duplicate, not late.
        assert_eq!(b.offer(1, &[5]), InputOutcome::Duplicate);
        for _ in 0..HISTORY_TICKS - 1 {
            b.take_next();
        }
        assert_eq!(b.last(), HISTORY_TICKS);
        assert_eq!(b.offer(1, &[5]), InputOutcome::Duplicate);
        b.take_next();
        // Beyond the history it is just late.
        assert_eq!(b.offer(1, &[5]), InputOutcome::Late);
    }

    #[test]
    fn too_early_is_beyond_last_plus_lead() {
        let mut b = buffer(100, 0);
        assert_eq!(b.offer(160, &[1]), InputOutcome::Accepted);
        assert_eq!(b.offer(161, &[1]), InputOutcome::TooEarly);
        assert_eq!(b.offer(u32::MAX, &[1]), InputOutcome::TooEarly);
        assert_eq!(b.pending(), 1);
    }

    #[test]
    fn late_inputs_without_rewind_are_dropped() {
        let mut b = buffer(0, 0);
        b.take_next();
        b.take_next();
        assert_eq!(b.offer(2, &[1]), InputOutcome::Late);
        assert_eq!(b.offer(1, &[1]), InputOutcome::Late);
    }

    #[test]
    fn late_inputs_within_rewind_are_applied_once() {
        let mut b = buffer(0, 8);
        for _ in 0..20 {
            let (_, missing) = b.take_next();
            assert!(missing);
        }
        // last = 20: ticks 13..=20 are within the rewind (20 - 8 < t).
        assert_eq!(b.offer(20, &[1]), InputOutcome::LateApplied);
        assert_eq!(b.offer(13, &[1]), InputOutcome::LateApplied);
        assert_eq!(b.offer(12, &[1]), InputOutcome::Late);
        // Received now: a second copy is a duplicate.
        assert_eq!(b.offer(13, &[2]), InputOutcome::Duplicate);
        assert_eq!(b.offer(20, &[2]), InputOutcome::Duplicate);
        // A tick received on time is a duplicate, never late-applied.
        assert_eq!(b.offer(21, &[3]), InputOutcome::Accepted);
        b.take_next();
        assert_eq!(b.offer(21, &[3]), InputOutcome::Duplicate);
    }

    #[test]
    fn ticks_before_joining_are_late() {
        let mut b = buffer(50, 8);
        assert_eq!(b.offer(50, &[1]), InputOutcome::Late);
        assert_eq!(b.offer(45, &[1]), InputOutcome::Late);
        b.take_next();
        assert_eq!(b.offer(51, &[1]), InputOutcome::LateApplied);
    }

    #[test]
    fn missing_repeats_the_newest_received_input() {
        let mut b = buffer(0, 8);
        // Never sent anything: zeros.
        assert_eq!(b.take_next(), (&[0u8][..], true));
        assert_eq!(b.offer(2, &[7]), InputOutcome::Accepted);
        assert_eq!(b.take_next(), (&[7u8][..], false));
        assert_eq!(b.take_next(), (&[7u8][..], true));
        assert_eq!(b.take_next(), (&[7u8][..], true));
        // A late input for tick 4 is newer than tick 2: it is repeated next.
        assert_eq!(b.offer(4, &[9]), InputOutcome::LateApplied);
        assert_eq!(b.take_next(), (&[9u8][..], true));
        // An older late one (tick 3) does not replace it.
        assert_eq!(b.offer(3, &[4]), InputOutcome::LateApplied);
        assert_eq!(b.take_next(), (&[9u8][..], true));
    }

    #[test]
    fn input_ack_is_contiguous_from_last() {
        let mut b = buffer(10, 0);
        assert_eq!(b.input_ack(), 10);
        b.offer(12, &[1]);
        assert_eq!(b.input_ack(), 10);
        b.offer(11, &[1]);
        assert_eq!(b.input_ack(), 12);
        b.offer(14, &[1]);
        assert_eq!(b.input_ack(), 12);
        b.take_next();
        b.take_next();
        b.take_next(); // 13 missing
        assert_eq!(b.input_ack(), 14);
    }

    #[test]
    fn input_ack_waits_for_ticks_the_game_could_still_take_late() {
        let mut b = buffer(10, 8);
        for _ in 0..3 {
            b.take_next(); // 11, 12, 13 missing
        }
        assert_eq!(
            b.input_ack(),
            10,
            "11 is missing and could still be late-applied"
        );
        assert_eq!(b.offer(11, &[1]), InputOutcome::LateApplied);
        assert_eq!(b.input_ack(), 11);
        b.offer(12, &[1]);
        b.offer(13, &[1]);
        b.offer(14, &[1]);
        assert_eq!(b.input_ack(), 14, "past and stored ticks, contiguous");
        for _ in 0..10 {
            b.take_next(); // 14 received, 15..=23 missing
        }
        // Ticks 15 and older are out of the rewind window (23 - 8).
        assert_eq!(b.input_ack(), 15);
        assert_eq!(b.offer(16, &[1]), InputOutcome::LateApplied);
        assert_eq!(b.input_ack(), 16);
    }

    #[test]
    fn wrong_size_inputs_are_invalid() {
        let mut b = buffer(0, 0);
        assert_eq!(b.offer(1, &[1, 2]), InputOutcome::Invalid);
        assert_eq!(b.offer(1, &[]), InputOutcome::Invalid);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(120, 60, t0);
        // The burst, all at once.
        assert_eq!((0..100).filter(|_| bucket.try_take(t0)).count(), 60);
        assert!(!bucket.try_take(t0));
        // 1/120 s later exactly one more token.
        let t1 = t0 + Duration::from_secs(1) / 120;
        assert!(!bucket.try_take(t1 - Duration::from_nanos(1)));
        // 8,333,333 ns refill 999,999,960 units; 2 ns more complete the token.
        assert!(bucket.try_take(t1 + Duration::from_nanos(1)));
        assert!(!bucket.try_take(t1 + Duration::from_nanos(1)));
        // Sending at exactly the rate for a minute never runs dry.
        let mut bucket = TokenBucket::new(120, 60, t0);
        for i in 1..=7200u32 {
            let now = t0 + Duration::from_nanos(u64::from(i) * 1_000_000_000 / 120);
            assert!(bucket.try_take(now), "datagram {i}");
        }
        // Twice the rate: about half refused once the burst is spent.
        let mut bucket = TokenBucket::new(120, 60, t0);
        let taken = (1..=2400u64)
            .filter(|i| bucket.try_take(t0 + Duration::from_nanos(i * 1_000_000_000 / 240)))
            .count();
        assert!((1250..=1262).contains(&taken), "{taken}");
        // Time going backwards refills nothing.
        let mut bucket = TokenBucket::new(1, 1, t0 + Duration::from_secs(10));
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
    }

    #[test]
    fn admit_uses_twice_the_tick_rate_with_a_tick_rate_burst() {
        let t0 = Instant::now();
        let mut b = InputBuffer::new(1, 60, 60, 0, 0, t0);
        assert_eq!((0..200).filter(|_| b.admit(t0)).count(), 60);
        // A token per 1/120 s (8,333,333.3 ns).
        let t1 = t0 + Duration::from_nanos(8_333_334);
        assert!(b.admit(t1));
        assert!(!b.admit(t1));
    }

    #[test]
    fn outcome_labels_are_distinct() {
        let mut labels: Vec<&str> = InputOutcome::ALL.iter().map(|o| o.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), InputOutcome::ALL.len());
    }
}
