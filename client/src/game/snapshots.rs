//! Received snapshots: the ring of applied states, and what their arrivals
//! say about the downstream path (jitter, loss, bytes).
//!
//! Rules (shared with the server and the browser library): keep the last 64
//! applied states by tick; a delta whose baseline is not kept is ignored
//! (counted); a snapshot older than the newest applied one is still applied
//! into the ring (the server may use it as a later baseline) but does not
//! change the displayed state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rtcrelay_protocol::game::{GameFrameError, SnapshotView, WorldState};

/// States kept, by tick: as many as the server keeps per client, so any
/// baseline it may pick is here.
pub(crate) const RING: usize = 64;
/// Length of the window for loss and byte rates.
pub(crate) const STATS_WINDOW: Duration = Duration::from_secs(1);

/// What became of one received snapshot frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// Applied and newer than every other: the displayed state changed.
    Newest { tick: u32, input_ack: u32 },
    /// Applied into the ring, but older than the newest.
    Stale { tick: u32, input_ack: u32 },
    /// That tick is already applied.
    Duplicate,
    /// A delta against a state not in the ring.
    UnknownBaseline(u32),
    /// Did not decode or did not apply.
    Invalid(GameFrameError),
}

#[derive(Debug, Default)]
pub(crate) struct SnapshotRing {
    states: BTreeMap<u32, WorldState>,
    newest: Option<(u32, Instant)>,
    // Arrival jitter (RFC 3550 style) of in-order snapshots: how much the
    // transit time (arrival minus the tick's server time) varies.
    last_transit_ms: Option<f64>,
    jitter_ms: f64,
    // Loss and bytes over the current window, and the last full window's.
    window_start: Option<Instant>,
    window_ticks: Option<(u32, u32)>,
    window_received: u32,
    window_bytes: usize,
    loss: f64,
    bytes_per_s: f64,
}

impl SnapshotRing {
    /// Decodes and applies one frame received at `now` (`local_ms` on the
    /// core's clock). `tick_ms` (once known) feeds the arrival jitter.
    pub(crate) fn receive(
        &mut self,
        frame: &[u8],
        now: Instant,
        local_ms: f64,
        tick_ms: Option<f64>,
    ) -> Received {
        self.window_start.get_or_insert(now);
        self.window_bytes += frame.len();
        let view = match SnapshotView::decode(frame) {
            Ok(v) => v,
            Err(e) => return Received::Invalid(e),
        };
        let tick = view.header.tick;
        if self.states.contains_key(&tick) {
            return Received::Duplicate;
        }
        let baseline = match view.header.baseline {
            None => None,
            Some(b) => match self.states.get(&b) {
                Some(state) => Some(state),
                None => return Received::UnknownBaseline(b),
            },
        };
        let mut state = WorldState::new();
        if let Err(e) = view.apply(baseline, &mut state) {
            return Received::Invalid(e);
        }
        self.states.insert(tick, state);
        if self.states.len() > RING {
            self.states.pop_first();
        }
        self.window_received += 1;
        self.window_ticks = Some(match self.window_ticks {
            None => (tick, tick),
            Some((lo, hi)) => (lo.min(tick), hi.max(tick)),
        });
        let input_ack = view.header.input_ack;
        if self.newest.is_some_and(|(n, _)| tick < n) {
            return Received::Stale { tick, input_ack };
        }
        self.newest = Some((tick, now));
        if let Some(tick_ms) = tick_ms {
            let transit = local_ms - f64::from(tick) * tick_ms;
            if let Some(last) = self.last_transit_ms {
                self.jitter_ms += ((transit - last).abs() - self.jitter_ms) / 16.0;
            }
            self.last_transit_ms = Some(transit);
        }
        Received::Newest { tick, input_ack }
    }

    /// Closes the stats window when it is a second old. `rates` =
    /// (tick_rate, snapshot_rate) once known: the schedule of snapshot
    /// ticks, to count how many were due.
    pub(crate) fn roll_window(&mut self, now: Instant, rates: Option<(u32, u32)>) {
        let Some(start) = self.window_start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < STATS_WINDOW {
            return;
        }
        self.bytes_per_s = self.window_bytes as f64 / elapsed.as_secs_f64();
        self.loss = match (self.window_ticks, rates) {
            (Some((lo, hi)), Some((tick_rate, snapshot_rate))) => {
                let due = snapshots_due(lo, hi, tick_rate, snapshot_rate);
                if due < 2 {
                    0.0
                } else {
                    (1.0 - f64::from(self.window_received) / due as f64).max(0.0)
                }
            }
            _ => 0.0,
        };
        self.window_start = Some(now);
        self.window_ticks = None;
        self.window_received = 0;
        self.window_bytes = 0;
    }

    /// A new session after time away: the next arrival starts the jitter
    /// estimate afresh (the gap is not jitter).
    pub(crate) fn restart_arrivals(&mut self) {
        self.last_transit_ms = None;
    }

    /// The newest applied state and its tick.
    pub(crate) fn newest(&self) -> Option<(u32, &WorldState)> {
        let (tick, _) = self.newest?;
        Some((tick, self.states.get(&tick)?))
    }

    /// When the newest applied snapshot arrived.
    pub(crate) fn newest_arrival(&self) -> Option<(u32, Instant)> {
        self.newest
    }

    pub(crate) fn states(&self) -> &BTreeMap<u32, WorldState> {
        &self.states
    }

    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    pub(crate) fn loss(&self) -> f64 {
        self.loss
    }

    pub(crate) fn bytes_per_s(&self) -> f64 {
        self.bytes_per_s
    }
}

/// Snapshot ticks in `lo..=hi`: the server sends one after tick `k` when
/// `floor(k * snapshot_rate / tick_rate)` increased.
pub(crate) fn snapshots_due(lo: u32, hi: u32, tick_rate: u32, snapshot_rate: u32) -> u64 {
    if tick_rate == 0 || hi < lo {
        return 0;
    }
    let step = |k: i64| (k * i64::from(snapshot_rate)).div_euclid(i64::from(tick_rate));
    (step(i64::from(hi)) - step(i64::from(lo) - 1)).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::snapshots_due;

    #[test]
    fn snapshot_schedule_counts_every_second_tick_at_30_of_60() {
        // Ticks 2, 4, 6, 8, 10.
        assert_eq!(snapshots_due(1, 10, 60, 30), 5);
        assert_eq!(snapshots_due(2, 10, 60, 30), 5);
        assert_eq!(snapshots_due(3, 10, 60, 30), 4);
        assert_eq!(snapshots_due(0, 0, 60, 60), 1);
        assert_eq!(snapshots_due(5, 4, 60, 30), 0);
    }
}
