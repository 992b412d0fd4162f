//! [`TickClock`]: the fixed timestep of a room.
//!
//! Tick `k` is due at `epoch + k * 1 s / tick_rate`, computed from `k` each
//! time (never by adding up per-tick durations, which would drift: at 60 Hz
//! a tick is 16,666,666.6… ns, and rounding it loses 144 µs an hour). After
//! a stall the clock hands out at most [`MAX_CATCH_UP_TICKS`] ticks per call
//! and the rest on the following calls: no tick is ever skipped, so the
//! server tick stays `elapsed * tick_rate` and clients' estimates stay right.

use std::time::{Duration, Instant};

/// Most ticks [`TickClock::due`] hands out at once.
pub const MAX_CATCH_UP_TICKS: u32 = 8;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct TickClock {
    epoch: Instant,
    tick_rate: u32,
    snapshot_rate: u32,
    /// The last tick run (0: none yet; tick 0 is the initial state).
    last_tick: u32,
}

impl TickClock {
    /// A clock whose tick 0 is at `epoch`. Rates are clamped to at least 1
    /// and the snapshot rate to at most the tick rate.
    pub fn new(epoch: Instant, tick_rate: u32, snapshot_rate: u32) -> TickClock {
        let tick_rate = tick_rate.max(1);
        TickClock {
            epoch,
            tick_rate,
            snapshot_rate: snapshot_rate.clamp(1, tick_rate),
            last_tick: 0,
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn tick_rate(&self) -> u32 {
        self.tick_rate
    }

    pub fn snapshot_rate(&self) -> u32 {
        self.snapshot_rate
    }

    /// The last tick run.
    pub fn last_tick(&self) -> u32 {
        self.last_tick
    }

    /// When tick `k` is due: `epoch + floor(k * 1e9 / tick_rate)` ns.
    pub fn tick_at(&self, k: u32) -> Instant {
        // k < 2^32 and the rate >= 1: at most 4.3e18 ns, within u64.
        let nanos = u128::from(k) * NANOS_PER_SECOND / u128::from(self.tick_rate);
        self.epoch + Duration::from_nanos(nanos as u64)
    }

    /// When the next tick is due (in the past while catching up).
    pub fn next_tick_at(&self) -> Instant {
        self.tick_at(self.last_tick.saturating_add(1))
    }

    /// How many ticks to run now: those due by `now`, at most
    /// [`MAX_CATCH_UP_TICKS`].
    pub fn due(&self, now: Instant) -> u32 {
        let mut n = 0;
        while n < MAX_CATCH_UP_TICKS {
            let Some(k) = self.last_tick.checked_add(n + 1) else {
                break;
            };
            if self.tick_at(k) > now {
                break;
            }
            n += 1;
        }
        n
    }

    /// Marks the next tick as run and returns it.
    pub fn advance(&mut self) -> u32 {
        self.last_tick = self.last_tick.saturating_add(1);
        self.last_tick
    }

    /// A snapshot follows tick `k` when `floor(k * snapshot_rate / tick_rate)`
    /// increased at `k` (30 of 60 Hz: every 2nd tick).
    pub fn is_snapshot_tick(&self, k: u32) -> bool {
        if k == 0 {
            return false;
        }
        let s = u64::from(self.snapshot_rate);
        let r = u64::from(self.tick_rate);
        u64::from(k) * s / r > u64::from(k - 1) * s / r
    }

    /// Server time for control messages: ms since the epoch.
    pub fn server_time_ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_nanos() as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hour_of_ticks_does_not_drift() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(t0, 60, 30);
        let hour = 3600 * 60;
        // Run every tick exactly when it is due.
        for k in 1..=hour {
            let at = clock.next_tick_at();
            assert_eq!(at, clock.tick_at(k));
            assert_eq!(clock.due(at), 1, "tick {k}");
            if k > 1 {
                // Not due a nanosecond early.
                assert_eq!(clock.due(at - Duration::from_nanos(1)), 0, "tick {k}");
            }
            assert_eq!(clock.advance(), k);
        }
        assert_eq!(clock.tick_at(hour), t0 + Duration::from_secs(3600));
        assert_eq!(clock.tick_at(60), t0 + Duration::from_secs(1));
        // Every tick is within a nanosecond of its exact time k/60 s.
        for k in [1u32, 7, 59, 61, 12_345, hour - 1] {
            let exact = f64::from(k) / 60.0 * 1e9;
            let got = clock.tick_at(k).duration_since(t0).as_nanos() as f64;
            assert!((exact - got).abs() < 1.0, "tick {k}: {got} vs {exact}");
        }
        // Summing a rounded per-tick duration would have drifted.
        let step = Duration::from_secs(1) / 60;
        assert_ne!(step * hour, Duration::from_secs(3600));
    }

    #[test]
    fn catch_up_is_bounded_and_skips_nothing() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(t0, 60, 30);
        // A 1 s stall: 60 ticks due, 8 per call.
        let now = t0 + Duration::from_secs(1);
        let mut calls = 0;
        let mut run = 0;
        loop {
            let n = clock.due(now);
            if n == 0 {
                break;
            }
            assert!(n <= MAX_CATCH_UP_TICKS);
            assert!(clock.next_tick_at() <= now);
            for _ in 0..n {
                run += 1;
                assert_eq!(clock.advance(), run);
            }
            calls += 1;
        }
        assert_eq!(run, 60);
        assert_eq!(calls, 8);
        assert_eq!(clock.next_tick_at(), t0 + Duration::from_secs(1) + step60());
        // Before the epoch nothing is due and the server time is 0.
        let fresh = TickClock::new(t0 + Duration::from_secs(5), 60, 30);
        assert_eq!(fresh.due(t0), 0);
        assert_eq!(fresh.server_time_ms(t0), 0.0);
    }

    fn step60() -> Duration {
        Duration::from_nanos(16_666_666)
    }

    #[test]
    fn snapshot_ticks_follow_the_rate() {
        let clock = TickClock::new(Instant::now(), 60, 30);
        let ticks: Vec<u32> = (0..=10).filter(|&k| clock.is_snapshot_tick(k)).collect();
        assert_eq!(ticks, [2, 4, 6, 8, 10]);
        let clock = TickClock::new(Instant::now(), 60, 20);
        let ticks: Vec<u32> = (1..=12).filter(|&k| clock.is_snapshot_tick(k)).collect();
        assert_eq!(ticks, [3, 6, 9, 12]);
        // 60 of 60: every tick; a rate above the tick rate is clamped.
        let clock = TickClock::new(Instant::now(), 60, 100);
        assert_eq!(clock.snapshot_rate(), 60);
        assert!((1..=120).all(|k| clock.is_snapshot_tick(k)));
        // 25 of 60: 25 snapshots a second, none twice in a tick.
        let clock = TickClock::new(Instant::now(), 60, 25);
        assert_eq!((1..=60).filter(|&k| clock.is_snapshot_tick(k)).count(), 25);
    }

    #[test]
    fn server_time_is_ms_since_the_epoch() {
        let t0 = Instant::now();
        let clock = TickClock::new(t0, 60, 30);
        assert_eq!(clock.server_time_ms(t0 + Duration::from_micros(1500)), 1.5);
        assert_eq!(clock.server_time_ms(t0 + Duration::from_secs(2)), 2000.0);
    }
}
