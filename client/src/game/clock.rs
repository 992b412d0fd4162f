//! Clock sync: estimates the server's clock from `clock` exchanges on
//! `control`.
//!
//! Rule (shared with the server and the browser library): after `hello`,
//! send `{"type":"clock","id":n,"t0":<client ms>}` five times 100 ms apart,
//! then every second. Keep the last 8 samples; the offset is that of the
//! sample with the smallest RTT (the one least inflated by queueing, hence
//! the least skewed by asymmetric delays).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept; the offset comes from the one with the smallest RTT.
const SAMPLES: usize = 8;
/// Quick requests after `hello`, and their spacing.
const QUICK_REQUESTS: u32 = 5;
const QUICK_INTERVAL: Duration = Duration::from_millis(100);
/// Spacing after the quick ones.
const STEADY_INTERVAL: Duration = Duration::from_secs(1);
/// Requests waiting for a reply; older ones are forgotten (their replies
/// are then ignored), so a silent server cannot grow this.
const MAX_PENDING: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Sample {
    rtt_ms: f64,
    offset_ms: f64,
}

#[derive(Debug)]
pub(crate) struct ClockSync {
    next_id: u32,
    sent: u32,
    next_at: Option<Instant>,
    /// (id, t0) of requests not answered yet.
    pending: VecDeque<(u32, f64)>,
    samples: VecDeque<Sample>,
    /// Until the first sample: from `hello`, taking its one-way delay as 0.
    initial_offset_ms: Option<f64>,
    /// RFC 6298 smoothed RTT and RTT variation.
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
}

impl ClockSync {
    pub(crate) fn new() -> ClockSync {
        ClockSync {
            next_id: 1,
            sent: 0,
            next_at: None,
            pending: VecDeque::new(),
            samples: VecDeque::new(),
            initial_offset_ms: None,
            srtt_ms: None,
            rttvar_ms: 0.0,
        }
    }

    /// `hello` arrived at `local_ms` (`now`) carrying the server time: a
    /// first guess of the offset, and the start of the request schedule.
    pub(crate) fn on_hello(&mut self, server_time_ms: f64, local_ms: f64, now: Instant) {
        self.initial_offset_ms = Some(server_time_ms - local_ms);
        self.sent = 0;
        self.next_at = Some(now);
    }

    /// When the next request is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.next_at
    }

    /// If a request is due at `now`, its (id, t0) to send.
    pub(crate) fn poll_request(&mut self, now: Instant, local_ms: f64) -> Option<(u32, f64)> {
        let due = self.next_at?;
        if now < due {
            return None;
        }
        self.sent += 1;
        let gap = if self.sent < QUICK_REQUESTS {
            QUICK_INTERVAL
        } else {
            STEADY_INTERVAL
        };
        // From the due time, not from `now`: a late driver does not stretch
        // the schedule; after a long stall it restarts from now.
        let next = due + gap;
        self.next_at = Some(if next > now { next } else { now + gap });
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((id, local_ms));
        Some((id, local_ms))
    }

    /// A `clock` reply arrived at `t3` (local ms). Replies to requests this
    /// client did not send (or already counted), or with times that make no
    /// sense, are ignored; returns whether the sample was taken.
    pub(crate) fn on_reply(&mut self, id: u32, t0: f64, t1: f64, t2: f64, t3: f64) -> bool {
        let Some(i) = self.pending.iter().position(|&(p, _)| p == id) else {
            return false;
        };
        let (_, sent_t0) = self.pending[i];
        if sent_t0 != t0 || ![t1, t2, t3].iter().all(|t| t.is_finite()) || t2 < t1 || t3 < t0 {
            return false;
        }
        self.pending.remove(i);
        let rtt_ms = ((t3 - t0) - (t2 - t1)).max(0.0);
        let offset_ms = ((t1 - t0) + (t2 - t3)) / 2.0;
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { rtt_ms, offset_ms });
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(rtt_ms);
                self.rttvar_ms = rtt_ms / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - rtt_ms).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * rtt_ms);
            }
        }
        true
    }

    fn best(&self) -> Option<Sample> {
        self.samples
            .iter()
            .copied()
            .min_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms))
    }

    /// Server clock minus local clock (ms), once known.
    pub(crate) fn offset_ms(&self) -> Option<f64> {
        self.best().map(|s| s.offset_ms).or(self.initial_offset_ms)
    }

    /// One-way delay estimate: half the smallest recent RTT.
    pub(crate) fn one_way_ms(&self) -> f64 {
        self.best().map_or(0.0, |s| s.rtt_ms / 2.0)
    }

    /// Smoothed RTT; 0 before any sample. Not a larger guess: the input
    /// target rule lets the lead grow at once but never shrink (targets
    /// only move forward), so a lead must start low.
    pub(crate) fn srtt_ms(&self) -> f64 {
        self.srtt_ms.unwrap_or(0.0)
    }

    /// RTT variation; 0 before any sample.
    pub(crate) fn rttvar_ms(&self) -> f64 {
        self.rttvar_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_five_quick_then_one_per_second() {
        let start = Instant::now();
        let mut c = ClockSync::new();
        assert_eq!(c.poll_request(start, 0.0), None, "nothing before hello");
        c.on_hello(5000.0, 0.0, start);
        let mut sent_at = Vec::new();
        let mut t = start;
        while t < start + Duration::from_millis(3500) {
            if c.poll_request(t, 0.0).is_some() {
                sent_at.push((t - start).as_millis());
            }
            t += Duration::from_millis(10);
        }
        assert_eq!(sent_at, [0, 100, 200, 300, 400, 1400, 2400, 3400]);
    }

    #[test]
    fn offset_comes_from_the_smallest_rtt_sample() {
        let now = Instant::now();
        let mut c = ClockSync::new();
        c.on_hello(1000.0, 0.0, now);
        assert_eq!(c.offset_ms(), Some(1000.0));
        // True offset 500 ms. Sample 1: symmetric 10 ms each way. Sample 2:
        // 100 ms queued on the way back only (skews its offset by -50).
        let (id1, _) = c.poll_request(now, 0.0).unwrap();
        assert!(c.on_reply(id1, 0.0, 510.0, 510.0, 20.0));
        c.next_at = Some(now);
        let (id2, _) = c.poll_request(now, 100.0).unwrap();
        assert!(c.on_reply(id2, 100.0, 610.0, 610.0, 220.0));
        assert_eq!(c.offset_ms(), Some(500.0));
        assert_eq!(c.one_way_ms(), 10.0);
        // Duplicates and unknown ids are ignored.
        assert!(!c.on_reply(id2, 100.0, 610.0, 610.0, 220.0));
        assert!(!c.on_reply(99, 0.0, 1.0, 1.0, 2.0));
    }
}
