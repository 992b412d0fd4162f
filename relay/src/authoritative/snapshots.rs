//! Per-client snapshot history: what each client was sent, which of it it
//! acknowledged, and so which baseline the next delta is encoded against.
//!
//! A client keeps the last 64 states it applied; the server keeps, per
//! client, the last [`SNAPSHOT_RING`] snapshots it sent: tick, send time and
//! the client's *view* after applying it (equal to the state, unless the
//! frame was cut to fit). Acks ride on input datagrams. The baseline of the
//! next snapshot is the newest acked tick still in the ring; with none, the
//! snapshot is full. An ack of a tick the ring does not hold (never sent, or
//! too old), or not newer than the newest ack, changes nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtcrelay_protocol::game::{FrameSpec, SnapshotEncoder, WorldState};

/// Snapshots remembered per client (the client keeps as many states).
pub const SNAPSHOT_RING: usize = 64;

/// How a snapshot was encoded (the `kind` label of
/// `rtcrelay_game_snapshots_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Against the empty state: the client had no usable baseline.
    Full,
    /// Against the newest acknowledged snapshot.
    Delta,
    /// Cut to fit one datagram (full or delta).
    Partial,
}

impl SnapshotKind {
    pub fn label(self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Delta => "delta",
            SnapshotKind::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone)]
struct Sent {
    tick: u32,
    sent_at: Instant,
    /// The client's state after applying this snapshot.
    view: WorldState,
}

/// The snapshots sent to one client, oldest first.
#[derive(Debug, Default)]
pub struct ClientSnapshots {
    ring: VecDeque<Sent>,
    /// The newest acknowledged tick (it may have left the ring since).
    acked: Option<u32>,
}

impl ClientSnapshots {
    pub fn new() -> ClientSnapshots {
        ClientSnapshots::default()
    }

    /// The newest acknowledged tick, if any.
    pub fn acked(&self) -> Option<u32> {
        self.acked
    }

    /// The baseline of the next snapshot: the newest acked tick still in the
    /// ring, and the client's view at that tick.
    pub fn baseline(&self) -> Option<(u32, &WorldState)> {
        let acked = self.acked?;
        self.find(acked).map(|s| (s.tick, &s.view))
    }

    fn find(&self, tick: u32) -> Option<&Sent> {
        // Ticks ascend along the ring.
        let i = self.ring.binary_search_by_key(&tick, |s| s.tick).ok()?;
        self.ring.get(i)
    }

    /// Remembers a snapshot sent at `now`; `view` is the client's state once
    /// applied. Ticks must increase; an older or repeated tick is ignored.
    pub fn record(&mut self, tick: u32, now: Instant, view: &WorldState) {
        if self.ring.back().is_some_and(|s| s.tick >= tick) {
            return;
        }
        // Reuse the oldest entry's allocation once the ring is full.
        let mut sent = if self.ring.len() >= SNAPSHOT_RING {
            self.ring.pop_front().unwrap_or_else(|| Sent {
                tick,
                sent_at: now,
                view: WorldState::new(),
            })
        } else {
            Sent {
                tick,
                sent_at: now,
                view: WorldState::new(),
            }
        };
        sent.tick = tick;
        sent.sent_at = now;
        sent.view.clone_from(view);
        self.ring.push_back(sent);
    }

    /// An ack of `tick`, received at `now`, sent `delay` after the client got
    /// that snapshot. Returns an RTT sample (`now - sent_at - delay`, at
    /// least 0) when the ack is newer than the previous one and its tick is
    /// in the ring; anything else is ignored.
    pub fn on_ack(&mut self, tick: u32, delay: Duration, now: Instant) -> Option<Duration> {
        if self.acked.is_some_and(|a| tick <= a) {
            return None;
        }
        let sent_at = self.find(tick)?.sent_at;
        self.acked = Some(tick);
        // Older snapshots can never be a baseline again.
        while self.ring.front().is_some_and(|s| s.tick < tick) {
            self.ring.pop_front();
        }
        Some(now.saturating_duration_since(sent_at).saturating_sub(delay))
    }

    /// Encodes `current` for tick `frame.tick` against the baseline (full if
    /// none) into `out`, remembers it as sent at `now`, and says how it was
    /// encoded. `view` is scratch space.
    pub fn encode(
        &mut self,
        encoder: &mut SnapshotEncoder,
        frame: FrameSpec,
        current: &WorldState,
        now: Instant,
        out: &mut Vec<u8>,
        view: &mut WorldState,
    ) -> SnapshotKind {
        let baseline = self.baseline();
        let is_delta = baseline.is_some();
        let encoded = encoder.encode(frame, baseline, current, out, view);
        self.record(frame.tick, now, view);
        if encoded.partial {
            SnapshotKind::Partial
        } else if is_delta {
            SnapshotKind::Delta
        } else {
            SnapshotKind::Full
        }
    }

    /// Snapshots remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcrelay_protocol::game::Entity;

    fn state(v: i32) -> WorldState {
        let mut w = WorldState::new();
        w.insert(Entity {
            id: 1,
            kind: 0,
            fields: vec![v],
        });
        w
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_ack_means_no_baseline() {
        let t0 = Instant::now();
        let mut c = ClientSnapshots::new();
        assert!(c.baseline().is_none());
        c.record(2, t0, &state(2));
        c.record(4, t0, &state(4));
        assert!(c.baseline().is_none());
    }

    #[test]
    fn newest_ack_wins_and_older_acks_are_ignored() {
        let t0 = Instant::now();
        let mut c = ClientSnapshots::new();
        for tick in [2, 4, 6, 8] {
            c.record(tick, t0 + ms(u64::from(tick) * 10), &state(tick as i32));
        }
        assert_eq!(c.on_ack(4, ms(5), t0 + ms(100)), Some(ms(55)));
        assert_eq!(c.baseline(), Some((4, &state(4))));
        // Older or equal acks: ignored, no RTT sample.
        assert_eq!(c.on_ack(2, ms(0), t0 + ms(110)), None);
        assert_eq!(c.on_ack(4, ms(0), t0 + ms(110)), None);
        assert_eq!(c.baseline(), Some((4, &state(4))));
        // Unknown tick (never sent): ignored.
        assert_eq!(c.on_ack(7, ms(0), t0 + ms(110)), None);
        assert_eq!(c.on_ack(1000, ms(0), t0 + ms(110)), None);
        assert_eq!(c.acked(), Some(4));
        // Newer: wins.
        assert_eq!(c.on_ack(8, ms(0), t0 + ms(130)), Some(ms(50)));
        assert_eq!(c.baseline(), Some((8, &state(8))));
        // A delay larger than the elapsed time gives 0, not a wrap.
        c.record(10, t0 + ms(200), &state(10));
        assert_eq!(c.on_ack(10, ms(500), t0 + ms(210)), Some(ms(0)));
    }

    #[test]
    fn an_ack_that_left_the_ring_gives_no_baseline() {
        let t0 = Instant::now();
        let mut c = ClientSnapshots::new();
        c.record(1, t0, &state(1));
        assert!(c.on_ack(1, ms(0), t0).is_some());
        assert_eq!(c.baseline().map(|b| b.0), Some(1));
        for tick in 2..=(SNAPSHOT_RING as u32 + 1) {
            c.record(tick, t0, &state(tick as i32));
        }
        assert_eq!(c.len(), SNAPSHOT_RING);
        // Tick 1 was evicted: the next snapshot must be full.
        assert!(c.baseline().is_none());
        // A late ack of an evicted tick is ignored.
        let mut c2 = ClientSnapshots::new();
        for tick in 1..=(SNAPSHOT_RING as u32 + 5) {
            c2.record(tick, t0, &state(tick as i32));
        }
        assert_eq!(c2.on_ack(3, ms(0), t0), None);
        assert!(c2.baseline().is_none());
        assert!(c2.on_ack(10, ms(0), t0).is_some());
        assert_eq!(c2.baseline(), Some((10, &state(10))));
    }

    #[test]
    fn repeated_or_older_ticks_are_not_recorded() {
        let t0 = Instant::now();
        let mut c = ClientSnapshots::new();
        c.record(5, t0, &state(5));
        c.record(5, t0, &state(99));
        c.record(3, t0, &state(3));
        assert_eq!(c.len(), 1);
        c.on_ack(5, ms(0), t0);
        assert_eq!(c.baseline(), Some((5, &state(5))));
    }
}
