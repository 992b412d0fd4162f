//! Per-player network measurements the server reports in `stats` messages
//! and metrics:
//!
//! - RTT on the realtime path: a sample is `now - sent time of the acked
//!   snapshot - the client's ack delay`, taken only when an ack is newer
//!   than the previous one. Smoothed as RFC 6298 (α = 1/8, β = 1/4): the
//!   first sample R sets `srtt = R, rttvar = R / 2`; then
//!   `rttvar = 3/4 rttvar + 1/4 |srtt - R|` and `srtt = 7/8 srtt + 1/8 R`.
//!   Jitter is `rttvar`.
//! - Upstream loss per stats interval, from the input datagrams' `seq`:
//!   `1 - received / expected` with `expected = highest - lowest + 1` seen
//!   in the interval; 0 with fewer than 2 datagrams. Clamped to [0, 1]
//!   (duplicates could push it below 0).
//! - Snapshot bytes per second over the interval.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct NetStats {
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    /// Sequence numbers of this interval, relative to its first datagram
    /// (wrapping-aware): lowest and highest offset, count.
    interval_first_seq: Option<u32>,
    interval_lowest: i64,
    interval_highest: i64,
    interval_received: u64,
    interval_bytes: u64,
    interval_start: Instant,
    /// Results of the last finished interval.
    loss: f64,
    bytes_per_s: f64,
}

/// What one stats interval measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalStats {
    pub loss: f64,
    pub bytes_per_s: f64,
}

impl NetStats {
    pub fn new(now: Instant) -> NetStats {
        NetStats {
            srtt_ms: None,
            rttvar_ms: 0.0,
            interval_first_seq: None,
            interval_lowest: 0,
            interval_highest: 0,
            interval_received: 0,
            interval_bytes: 0,
            interval_start: now,
            loss: 0.0,
            bytes_per_s: 0.0,
        }
    }

    /// Adds an RTT sample (RFC 6298).
    pub fn on_rtt_sample(&mut self, sample: Duration) {
        let r = sample.as_nanos() as f64 / 1e6;
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(r);
                self.rttvar_ms = r / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - r).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * r);
            }
        }
    }

    /// Smoothed RTT in ms (0 before the first sample).
    pub fn srtt_ms(&self) -> f64 {
        self.srtt_ms.unwrap_or(0.0)
    }

    /// RTT variation in ms: the jitter.
    pub fn rttvar_ms(&self) -> f64 {
        self.rttvar_ms
    }

    /// An input datagram with sequence number `seq` was received.
    pub fn on_datagram(&mut self, seq: u32) {
        self.interval_received += 1;
        let Some(first) = self.interval_first_seq else {
            self.interval_first_seq = Some(seq);
            self.interval_lowest = 0;
            self.interval_highest = 0;
            return;
        };
        // Offsets within ±2^31 of the first: wrapping of `seq` is harmless.
        let offset = i64::from(seq.wrapping_sub(first) as i32);
        self.interval_lowest = self.interval_lowest.min(offset);
        self.interval_highest = self.interval_highest.max(offset);
    }

    /// A snapshot of `bytes` was sent.
    pub fn on_snapshot_sent(&mut self, bytes: usize) {
        self.interval_bytes = self.interval_bytes.saturating_add(bytes as u64);
    }

    /// Ends the stats interval at `now` and starts the next one.
    pub fn end_interval(&mut self, now: Instant) -> IntervalStats {
        self.loss = if self.interval_received < 2 {
            0.0
        } else {
            let expected = (self.interval_highest - self.interval_lowest + 1) as f64;
            (1.0 - self.interval_received as f64 / expected).clamp(0.0, 1.0)
        };
        let secs = now
            .saturating_duration_since(self.interval_start)
            .as_secs_f64();
        self.bytes_per_s = if secs > 0.0 {
            self.interval_bytes as f64 / secs
        } else {
            0.0
        };
        self.interval_first_seq = None;
        self.interval_received = 0;
        self.interval_bytes = 0;
        self.interval_start = now;
        IntervalStats {
            loss: self.loss,
            bytes_per_s: self.bytes_per_s,
        }
    }

    /// The last finished interval's loss.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The last finished interval's snapshot bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rtt_follows_rfc_6298() {
        let mut s = NetStats::new(Instant::now());
        assert_eq!(s.srtt_ms(), 0.0);
        s.on_rtt_sample(ms(100));
        assert_eq!(s.srtt_ms(), 100.0);
        assert_eq!(s.rttvar_ms(), 50.0);
        s.on_rtt_sample(ms(200));
        // rttvar = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; srtt = 87.5 + 25.
        assert_eq!(s.rttvar_ms(), 62.5);
        assert_eq!(s.srtt_ms(), 112.5);
        s.on_rtt_sample(ms(112) + Duration::from_micros(500));
        assert_eq!(s.rttvar_ms(), 46.875);
        assert_eq!(s.srtt_ms(), 112.5);
        // Constant samples converge: srtt → R, rttvar → 0.
        for _ in 0..200 {
            s.on_rtt_sample(ms(40));
        }
        assert!((s.srtt_ms() - 40.0).abs() < 1e-6, "{}", s.srtt_ms());
        assert!(s.rttvar_ms() < 1e-6);
    }

    #[test]
    fn loss_comes_from_sequence_gaps_per_interval() {
        let t0 = Instant::now();
        let mut s = NetStats::new(t0);
        // 10..=19 with 12, 15 and 16 lost, reordered: 7 of 10.
        for seq in [10, 11, 14, 13, 17, 19, 18] {
            s.on_datagram(seq);
        }
        let r = s.end_interval(t0 + ms(1000));
        assert!((r.loss - 0.3).abs() < 1e-12, "{}", r.loss);
        assert_eq!(s.loss(), r.loss);
        // Fewer than 2 datagrams: 0.
        s.on_datagram(50);
        assert_eq!(s.end_interval(t0 + ms(2000)).loss, 0.0);
        assert_eq!(s.end_interval(t0 + ms(3000)).loss, 0.0);
        // Duplicates cannot make it negative.
        for seq in [1, 1, 2, 2] {
            s.on_datagram(seq);
        }
        assert_eq!(s.end_interval(t0 + ms(4000)).loss, 0.0);
        // Across the u32 wrap: MAX-1, MAX, 0, (1 lost), 2 → 4 of 5.
        for seq in [u32::MAX - 1, u32::MAX, 0, 2] {
            s.on_datagram(seq);
        }
        assert!((s.end_interval(t0 + ms(5000)).loss - 0.2).abs() < 1e-12);
    }

    #[test]
    fn snapshot_bytes_per_second_over_the_interval() {
        let t0 = Instant::now();
        let mut s = NetStats::new(t0);
        for _ in 0..30 {
            s.on_snapshot_sent(100);
        }
        let r = s.end_interval(t0 + ms(500));
        assert_eq!(r.bytes_per_s, 6000.0);
        assert_eq!(s.end_interval(t0 + ms(1500)).bytes_per_s, 0.0);
        // A zero-length interval reports 0, not infinity.
        s.on_snapshot_sent(10);
        assert_eq!(s.end_interval(t0 + ms(1500)).bytes_per_s, 0.0);
    }
}
