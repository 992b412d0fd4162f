//! Is a peer still there? Sans-IO: the shard tells it when a datagram from
//! the peer reached its `Rtc` and when something was written to one of its
//! channels, and asks what is due at `now`.
//!
//! A peer that stops sending is dead `dead_after` after the last datagram
//! heard from it, however it went (no DTLS close or FIN needed). An idle
//! but healthy client in a quiet room sends nothing by itself, so the
//! server writes a heartbeat frame on `control` when it has written nothing
//! to the peer for `heartbeat_interval`: the client's SCTP stack
//! acknowledges it, and that acknowledgement is a datagram heard.
//!
//! Two timestamps per peer, updated in O(1); the shard folds
//! [`Liveness::next_deadline`] into the peer's deadline in its heap.

use std::time::{Duration, Instant};

/// Neither period may be shorter than this: a zero would wake the shard
/// on every pass (heartbeats) or kill every peer at once (dead_after).
const MIN_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LivenessConfig {
    pub dead_after: Duration,
    pub heartbeat_interval: Duration,
}

impl LivenessConfig {
    pub fn new(dead_after: Duration, heartbeat_interval: Duration) -> LivenessConfig {
        LivenessConfig {
            dead_after: dead_after.max(MIN_PERIOD),
            heartbeat_interval: heartbeat_interval.max(MIN_PERIOD),
        }
    }

    /// The `Closed` reason of a peer found dead.
    pub fn dead_reason(&self) -> String {
        format!("no packets from the client for {}", human(self.dead_after))
    }
}

/// What the shard must do for a peer at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing heard for `dead_after`: close the session.
    Dead,
    /// Nothing written for `heartbeat_interval`: write a heartbeat.
    Heartbeat,
    Nothing,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Liveness {
    last_heard: Instant,
    last_sent: Instant,
}

impl Liveness {
    /// Starts the clocks at `now` (the session became ready: the datagram
    /// that opened its last channel was just heard).
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            last_heard: now,
            last_sent: now,
        }
    }

    /// A datagram from the peer reached its `Rtc` at `at`. Datagrams are
    /// stamped when the UDP loop read them and may be handed over out of
    /// order (the network lab delays some), so time never goes back.
    pub fn heard(&mut self, at: Instant) {
        self.last_heard = self.last_heard.max(at);
    }

    /// Something was written to one of the peer's channels at `at`.
    pub fn sent(&mut self, at: Instant) {
        self.last_sent = self.last_sent.max(at);
    }

    pub fn dead_at(&self, config: &LivenessConfig) -> Instant {
        self.last_heard + config.dead_after
    }

    pub fn heartbeat_at(&self, config: &LivenessConfig) -> Instant {
        self.last_sent + config.heartbeat_interval
    }

    /// When [`Liveness::due`] next has something to say.
    pub fn next_deadline(&self, config: &LivenessConfig) -> Instant {
        self.dead_at(config).min(self.heartbeat_at(config))
    }

    /// Death first: a heartbeat to a dead peer is wasted.
    pub fn due(&self, now: Instant, config: &LivenessConfig) -> Due {
        if now >= self.dead_at(config) {
            Due::Dead
        } else if now >= self.heartbeat_at(config) {
            Due::Heartbeat
        } else {
            Due::Nothing
        }
    }
}

/// `5 s`, `1.5 s`, `250 ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LivenessConfig {
        LivenessConfig::new(Duration::from_secs(5), Duration::from_secs(1))
    }

    #[test]
    fn an_idle_peer_gets_heartbeats_and_one_that_answers_lives() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let cfg = config();
        let mut peer = Liveness::new(t0);
        assert_eq!(peer.due(s(999), &cfg), Due::Nothing);
        assert_eq!(peer.next_deadline(&cfg), s(1000));
        assert_eq!(peer.due(s(1000), &cfg), Due::Heartbeat);
        // The shard writes the heartbeat; the client's SCTP ack comes back.
        peer.sent(s(1000));
        peer.heard(s(1020));
        assert_eq!(peer.next_deadline(&cfg), s(2000));
        // Ten minutes of that: never dead.
        for n in 2..600u64 {
            assert_eq!(peer.due(s(n * 1000), &cfg), Due::Heartbeat, "second {n}");
            peer.sent(s(n * 1000));
            peer.heard(s(n * 1000 + 20));
        }
        assert_eq!(peer.due(s(599_500), &cfg), Due::Nothing);
    }

    #[test]
    fn a_peer_that_goes_silent_is_dead_exactly_dead_after_later() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let cfg = config();
        let mut peer = Liveness::new(t0);
        peer.heard(s(300));
        // Heartbeats keep going out, nothing comes back.
        for n in 1..=4u64 {
            assert_eq!(peer.due(s(n * 1000), &cfg), Due::Heartbeat);
            peer.sent(s(n * 1000));
        }
        assert_eq!(peer.next_deadline(&cfg), s(5000));
        assert_eq!(peer.due(s(5000), &cfg), Due::Heartbeat);
        peer.sent(s(5000));
        assert_eq!(peer.next_deadline(&cfg), s(5300));
        assert_eq!(peer.due(s(5299), &cfg), Due::Nothing);
        assert_eq!(peer.due(s(5300), &cfg), Due::Dead);
        // Dead wins over a heartbeat due at the same time.
        assert_eq!(peer.due(s(9000), &cfg), Due::Dead);
    }

    #[test]
    fn a_busy_sender_needs_no_heartbeat() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let cfg = config();
        let mut peer = Liveness::new(t0);
        for n in 1..=300u64 {
            // Snapshots at 30 Hz, acks coming back.
            peer.sent(s(n * 33));
            peer.heard(s(n * 33 + 10));
            assert_eq!(peer.due(s(n * 33 + 10), &cfg), Due::Nothing);
        }
    }

    #[test]
    fn out_of_order_stamps_never_move_time_back() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let cfg = config();
        let mut peer = Liveness::new(t0);
        peer.heard(s(4000));
        peer.heard(s(3000));
        peer.sent(s(900));
        peer.sent(s(100));
        assert_eq!(peer.dead_at(&cfg), s(9000));
        assert_eq!(peer.heartbeat_at(&cfg), s(1900));
    }

    #[test]
    fn zero_periods_are_floored_and_reasons_read_well() {
        let cfg = LivenessConfig::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(cfg.dead_after, MIN_PERIOD);
        assert_eq!(cfg.heartbeat_interval, MIN_PERIOD);
        assert_eq!(config().dead_reason(), "no packets from the client for 5 s");
        let cfg = LivenessConfig::new(Duration::from_millis(1500), Duration::from_secs(1));
        assert_eq!(cfg.dead_reason(), "no packets from the client for 1.5 s");
        let cfg = LivenessConfig::new(Duration::from_millis(250), Duration::from_secs(1));
        assert_eq!(cfg.dead_reason(), "no packets from the client for 250 ms");
    }
}
