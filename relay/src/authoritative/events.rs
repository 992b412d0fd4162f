//! Critical events (match start, score changes, match end) delivered
//! reliably on `control`: each gets an id (1, 2, … per room), goes to every
//! ready player, and is resent to a player who has not acked it after 1 s,
//! then 2, 4 and 8 s, then every 8 s, until it acks or leaves. Acks of
//! unknown ids (duplicates, or ids never sent) are harmless.
//!
//! `control` is reliable already; retransmission covers what it does not: a
//! client that reconnects, or drops a message it could not handle yet.
//! Clients apply each id once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcrelay_protocol::game::control::ServerControl;
use rtcrelay_protocol::PeerId;

/// First retransmission delay.
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(1);
/// The delay doubles up to this.
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(8);
/// Unacked events kept per player; beyond, the oldest is given up (a client
/// this far behind is broken, and memory must stay bounded).
pub const MAX_PENDING_PER_PLAYER: usize = 1024;

#[derive(Debug, Clone)]
struct Pending {
    text: Arc<str>,
    resend_at: Instant,
    backoff: Duration,
}

#[derive(Debug)]
pub struct ReliableEvents {
    next_id: u64,
    /// Per player, unacked events by id.
    pending: BTreeMap<PeerId, BTreeMap<u64, Pending>>,
}

impl Default for ReliableEvents {
    fn default() -> Self {
        ReliableEvents {
            next_id: 1,
            pending: BTreeMap::new(),
        }
    }
}

impl ReliableEvents {
    pub fn new() -> ReliableEvents {
        ReliableEvents::default()
    }

    /// Numbers a new event of `tick`, remembers it as unacked by each of
    /// `recipients` (sent at `now`), and returns its id and the `event`
    /// message to send them now.
    pub fn push(
        &mut self,
        tick: u32,
        event: serde_json::Value,
        recipients: impl IntoIterator<Item = PeerId>,
        now: Instant,
    ) -> (u64, Arc<str>) {
        let id = self.next_id;
        self.next_id += 1;
        let message = ServerControl::Event { id, tick, event };
        let text: Arc<str> = serde_json::to_string(&message)
            .unwrap_or_else(|e| {
                // A Value always serializes; keep the id sequence intact anyway.
                format!(r#"{{"type":"event","id":{id},"tick":{tick},"event":{{"error":"{e}"}}}}"#)
            })
            .into();
        for peer in recipients {
            let pending = self.pending.entry(peer).or_default();
            if pending.len() >= MAX_PENDING_PER_PLAYER {
                pending.pop_first();
            }
            pending.insert(
                id,
                Pending {
                    text: text.clone(),
                    resend_at: now + FIRST_RETRANSMIT,
                    backoff: FIRST_RETRANSMIT,
                },
            );
        }
        (id, text)
    }

    /// `peer` acked `id`; unknown ids are ignored. True if it was pending.
    pub fn ack(&mut self, peer: PeerId, id: u64) -> bool {
        let Some(pending) = self.pending.get_mut(&peer) else {
            return false;
        };
        let removed = pending.remove(&id).is_some();
        if pending.is_empty() {
            self.pending.remove(&peer);
        }
        removed
    }

    /// `peer` left: nothing more is resent to it.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.pending.remove(&peer);
    }

    /// Appends the retransmissions due at `now` to `out` (player order, then
    /// id order) and schedules the next ones. Returns how many.
    pub fn poll_retransmits(&mut self, now: Instant, out: &mut Vec<(PeerId, Arc<str>)>) -> usize {
        let mut n = 0;
        for (&peer, pending) in &mut self.pending {
            for p in pending.values_mut() {
                if p.resend_at <= now {
                    out.push((peer, p.text.clone()));
                    p.backoff = (p.backoff * 2).min(MAX_RETRANSMIT);
                    p.resend_at = now + p.backoff;
                    n += 1;
                }
            }
        }
        n
    }

    /// Appends every event `peer` has not acknowledged (in id order) to
    /// `out`, as sent at `now`: for a player whose new session just opened.
    /// Returns how many.
    pub fn resend_all(
        &mut self,
        peer: PeerId,
        now: Instant,
        out: &mut Vec<(PeerId, Arc<str>)>,
    ) -> usize {
        let Some(pending) = self.pending.get_mut(&peer) else {
            return 0;
        };
        for p in pending.values_mut() {
            out.push((peer, p.text.clone()));
            p.backoff = FIRST_RETRANSMIT;
            p.resend_at = now + FIRST_RETRANSMIT;
        }
        pending.len()
    }

    /// The earliest retransmission, if any is pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .flat_map(|p| p.values())
            .map(|p| p.resend_at)
            .min()
    }

    /// Events `peer` has not acked.
    pub fn unacked(&self, peer: PeerId) -> usize {
        self.pending.get(&peer).map_or(0, BTreeMap::len)
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn ids_start_at_one_and_the_message_has_the_documented_shape() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        let (id, text) = ev.push(7, json!({"match_start": {}}), [A, B], t0);
        assert_eq!(id, 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            json!({"type": "event", "id": 1, "tick": 7, "event": {"match_start": {}}})
        );
        let (id, _) = ev.push(8, json!({}), [], t0);
        assert_eq!(id, 2);
        assert_eq!(ev.next_id(), 3);
    }

    #[test]
    fn resent_after_1_s_doubling_to_8_s_until_acked() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        ev.push(1, json!({"x": 1}), [A], t0);
        let mut out = Vec::new();
        let mut resent_at = Vec::new();
        // Step through 40 s in 100 ms steps, collecting resend times.
        for step in 0..=400u64 {
            let now = t0 + Duration::from_millis(step * 100);
            out.clear();
            if ev.poll_retransmits(now, &mut out) > 0 {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].0, A);
                resent_at.push(step / 10);
            }
        }
        // 1, then +2, +4, +8, then every 8 s.
        assert_eq!(resent_at, [1, 3, 7, 15, 23, 31, 39]);
        assert_eq!(ev.next_timeout(), Some(t0 + s(47)));
        assert!(ev.ack(A, 1));
        assert_eq!(ev.next_timeout(), None);
        out.clear();
        assert_eq!(ev.poll_retransmits(t0 + s(100), &mut out), 0);
    }

    #[test]
    fn acks_are_per_player_and_unknown_ones_are_harmless() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        ev.push(1, json!(1), [A, B], t0);
        ev.push(2, json!(2), [A, B], t0);
        assert!(!ev.ack(A, 99));
        assert!(!ev.ack(PeerId(42), 1));
        assert!(ev.ack(A, 1));
        assert!(!ev.ack(A, 1));
        assert_eq!(ev.unacked(A), 1);
        assert_eq!(ev.unacked(B), 2);
        let mut out = Vec::new();
        assert_eq!(ev.poll_retransmits(t0 + s(1), &mut out), 3);
        let who: Vec<(PeerId, u64)> = out
            .iter()
            .map(|(p, t)| {
                let v: serde_json::Value = serde_json::from_str(t).expect("json");
                (*p, v["id"].as_u64().expect("id"))
            })
            .collect();
        assert_eq!(who, [(A, 2), (B, 1), (B, 2)]);
    }

    #[test]
    fn a_player_who_leaves_gets_nothing_more() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        ev.push(1, json!(1), [A, B], t0);
        ev.remove_peer(B);
        let mut out = Vec::new();
        assert_eq!(ev.poll_retransmits(t0 + s(1), &mut out), 1);
        assert_eq!(out[0].0, A);
        assert_eq!(ev.unacked(B), 0);
    }

    #[test]
    fn pending_events_per_player_are_bounded() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        for i in 0..(MAX_PENDING_PER_PLAYER as u32 + 10) {
            ev.push(i, json!(i), [A], t0);
        }
        assert_eq!(ev.unacked(A), MAX_PENDING_PER_PLAYER);
        // The oldest were given up.
        assert!(!ev.ack(A, 1));
        assert!(ev.ack(A, MAX_PENDING_PER_PLAYER as u64 + 10));
    }
    #[test]
    fn resend_all_sends_every_unacked_event_in_order_and_restarts_the_backoff() {
        let t0 = Instant::now();
        let mut ev = ReliableEvents::new();
        for i in 1..=3 {
            ev.push(i, json!(i), [A, B], t0);
        }
        ev.ack(A, 2);
        // A was away long enough for the backoff to reach 8 s.
        let mut out = Vec::new();
        for step in [1, 3, 7, 15] {
            ev.poll_retransmits(t0 + s(step), &mut out);
        }
        out.clear();
        let back = t0 + s(16);
        assert_eq!(ev.resend_all(A, back, &mut out), 2);
        let ids: Vec<(PeerId, u64)> = out
            .iter()
            .map(|(p, t)| {
                let v: serde_json::Value = serde_json::from_str(t).expect("json");
                (*p, v["id"].as_u64().expect("id"))
            })
            .collect();
        assert_eq!(ids, [(A, 1), (A, 3)], "A's only, acked ones left out");
        // Still pending: resent 1 s later, then 2 s after that.
        out.clear();
        assert_eq!(ev.poll_retransmits(back + s(1), &mut out), 2);
        assert!(out.iter().all(|(p, _)| *p == A), "B's are due at 23 s");
        out.clear();
        assert_eq!(ev.poll_retransmits(back + s(2), &mut out), 0);
        assert_eq!(ev.poll_retransmits(back + s(3), &mut out), 2);
        // Nobody pending, or unknown: nothing.
        out.clear();
        assert_eq!(ev.resend_all(PeerId(9), back, &mut out), 0);
        ev.remove_peer(B);
        assert_eq!(ev.resend_all(B, back, &mut out), 0);
        assert!(out.is_empty());
    }
}
