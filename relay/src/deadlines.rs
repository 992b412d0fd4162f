//! Deadlines in a min-heap (per peer, per game room), so a wake-up touches
//! only what is due. Updating a deadline pushes a new entry and leaves the
//! old one to be skipped when it surfaces (lazy deletion); the heap is rebuilt
//! when stale entries outnumber live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    current: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
        }
    }
}

impl<K: Copy + Ord + Hash> Deadlines<K> {
    pub fn set(&mut self, peer: K, at: Instant) {
        if self.current.insert(peer, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, peer)));
        if self.heap.len() > 2 * self.current.len() + 64 {
            self.heap = self
                .current
                .iter()
                .map(|(p, t)| Reverse((*t, *p)))
                .collect();
        }
    }

    /// Sets `peer`'s deadline to `at` unless it already has an earlier (or
    /// the same) one: for wake-ups that only ever need to come sooner.
    pub fn set_earlier(&mut self, peer: K, at: Instant) {
        if self.current.get(&peer).is_some_and(|t| *t <= at) {
            return;
        }
        self.set(peer, at);
    }

    pub fn remove(&mut self, peer: K) {
        self.current.remove(&peer);
    }

    /// The earliest live deadline.
    pub fn next(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Moves the peers whose deadline is at or before `now` into `out`; their
    /// deadlines are cleared (polling the peer sets a new one).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<K>) {
        loop {
            self.drop_stale();
            match self.heap.peek() {
                Some(Reverse((t, peer))) if *t <= now => {
                    let peer = *peer;
                    self.heap.pop();
                    self.current.remove(&peer);
                    out.push(peer);
                }
                _ => return,
            }
        }
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((t, peer))) = self.heap.peek() {
            if self.current.get(peer) == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcrelay_protocol::PeerId;
    use std::time::Duration;

    #[test]
    fn expires_only_due_peers_in_order_and_honours_updates() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set(PeerId(1), ms(30));
        d.set(PeerId(2), ms(10));
        d.set(PeerId(3), ms(20));
        d.set(PeerId(1), ms(5)); // moved earlier
        d.set(PeerId(3), ms(50)); // moved later
        d.remove(PeerId(2));
        assert_eq!(d.next(), Some(ms(5)));
        let mut out = Vec::new();
        d.expire(ms(25), &mut out);
        assert_eq!(out, vec![PeerId(1)]);
        assert_eq!(d.next(), Some(ms(50)));
        out.clear();
        d.expire(ms(49), &mut out);
        assert!(out.is_empty());
        d.expire(ms(50), &mut out);
        assert_eq!(out, vec![PeerId(3)]);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn set_earlier_only_moves_a_deadline_forward() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set_earlier(PeerId(1), ms(30));
        d.set_earlier(PeerId(1), ms(40));
        assert_eq!(d.next(), Some(ms(30)));
        d.set_earlier(PeerId(1), ms(10));
        assert_eq!(d.next(), Some(ms(10)));
        let mut out = Vec::new();
        d.expire(ms(10), &mut out);
        assert_eq!(out, vec![PeerId(1)]);
        // Expired: the next one is taken as is.
        d.set_earlier(PeerId(1), ms(50));
        assert_eq!(d.next(), Some(ms(50)));
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for i in 0..10_000u64 {
            d.set(PeerId((i % 3) as u32), t0 + Duration::from_micros(i));
        }
        assert!(d.heap_len() <= 2 * 3 + 64 + 1, "heap has {}", d.heap_len());
        let mut out = Vec::new();
        d.expire(t0 + Duration::from_secs(1), &mut out);
        out.sort();
        assert_eq!(out, vec![PeerId(0), PeerId(1), PeerId(2)]);
    }
}
