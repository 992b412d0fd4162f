//! The relay's network-lab glue (issue 5): a peer whose (peer id, room)
//! resolves to a lab setting ([`Lab::resolve`]: peer, then room, then
//! global) gets a [`PathImpairment`], owned by its `Peer` on the shard like
//! the rest of its state. Nothing else changes for the other peers.
//!
//! - **Up** (client → server): a datagram of an impaired peer goes into its
//!   path on arrival; str0m gets it when the path releases it, with the
//!   release time as its receive time (STUN address learning included).
//! - **Down** (server → client): what str0m transmits to an impaired peer
//!   goes into its path instead of the outbox; it is sent when released.
//! - **Wake-ups**: each path's [`poll_timeout`](PathImpairment::poll_timeout)
//!   sits in a [`Deadlines`] heap of its own (only ever moved earlier on a
//!   push, re-armed after a release), and the shard wakes for the earliest
//!   of it, its peers' and its game rooms' deadlines. Released up-datagrams
//!   are fed one at a time with the shard's output drained after each, as
//!   for datagrams from the socket.
//! - **Changes**: once per loop iteration the shard compares
//!   [`Lab::version`] with the one it saw (one atomic load; no lock and no
//!   allocation while the lab is unchanged, so an empty lab costs nothing
//!   more). On a change it re-resolves each of its peers: a peer whose
//!   setting is unchanged keeps its path (and its random stream); one whose
//!   setting changed gets a new path; one whose setting was cleared drops
//!   it. A replaced or dropped path **releases everything it holds at
//!   once** (up to str0m, down to the socket) rather than dropping it: a
//!   cleared lab then looks like a link that suddenly got fast, not like a
//!   loss burst the tester did not ask for.
//! - **Session end**: the path reports, what it holds for the client is
//!   sent, what it holds for the server is discarded, and the DTLS close
//!   goes out unimpaired.
//! - **Counters**: every [`REPORT_INTERVAL`] each path reports what it
//!   injected to the lab ([`PathImpairment::report`], per scope, exported
//!   on `/metrics` by [`NetlabMetrics`](crate::metrics::NetlabMetrics)),
//!   and a game-room player's interval figures go to its room, which puts
//!   them in the `stats` it sends ([`InjectedNetStats`]).
//!
//! Each path's random stream is its setting's seed mixed with a hash of
//! the peer id, so two players of one room do not lose the same packets
//! and a run with a fixed seed is reproducible per peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcrelay_netlab::{Counters, Direction, Lab, PathImpairment, Payload, Plan, Resolved};
use rtcrelay_protocol::game::control::{InjectedDirection, InjectedNetStats};
use rtcrelay_protocol::{PeerId, RoomId};
use str0m::net::{Protocol, Transmit};

use super::{receive, Datagram, Incoming, Shard};
use crate::deadlines::Deadlines;

/// How often each path reports to the lab (and a player's room gets its
/// injected figures).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How far ahead a path being dropped is polled to release all it holds
/// (delays are at most a minute; a slow rate queue may hold longer).
const DRAIN_HORIZON: Duration = Duration::from_secs(365 * 24 * 3600);

/// A datagram held by the lab: up, its source and whether it was routed by
/// its STUN USERNAME; down, its destination.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub addr: SocketAddr,
    pub by_ufrag: bool,
    pub data: Vec<u8>,
}

impl Payload for Packet {
    fn byte_len(&self) -> usize {
        self.data.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        self.data.flip_bit(bit);
    }
}

impl Packet {
    /// A down-datagram back as something to send from `local`.
    pub fn transmit(self, local: SocketAddr) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: local,
            destination: self.addr,
            contents: self.data.into(),
        }
    }
}

/// One impaired peer's path and what it last reported.
#[derive(Debug)]
pub(crate) struct PeerPath {
    /// The setting it follows (to tell whether a lab change concerns it).
    resolved: Resolved,
    path: PathImpairment<Packet>,
    /// Its counters at the last report, for per-interval figures.
    last: [Counters; 2],
}

impl PeerPath {
    /// Whether `current` (a peer's path, if any) still follows what the lab
    /// resolves for it now.
    fn follows(current: Option<&PeerPath>, resolved: Option<&Resolved>) -> bool {
        match (current, resolved) {
            (None, None) => true,
            (Some(p), Some(r)) => {
                let same_plan = match (&p.resolved.plan, &r.plan) {
                    (Plan::Link { link: a, .. }, Plan::Link { link: b, .. }) => Arc::ptr_eq(a, b),
                    (Plan::Scenario(a), Plan::Scenario(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                same_plan && p.resolved.scope == r.scope && p.resolved.seed == r.seed
            }
            _ => false,
        }
    }

    /// Reports to `lab`; with `stats`, also what it injected since the last
    /// report, for the player's `stats`.
    fn report(&mut self, lab: &Lab, stats: bool) -> Option<InjectedNetStats> {
        self.path.report(lab);
        let now = [
            *self.path.counters(Direction::Up),
            *self.path.counters(Direction::Down),
        ];
        let out = stats.then(|| InjectedNetStats {
            scope: self.resolved.scope.to_string(),
            up: interval(&now[0], &self.last[0]),
            down: interval(&now[1], &self.last[1]),
        });
        self.last = now;
        out
    }
}

/// What one direction injected between two readings of its counters.
fn interval(now: &Counters, before: &Counters) -> InjectedDirection {
    let d = |f: fn(&Counters) -> u64| f(now).saturating_sub(f(before));
    let datagrams = d(|c| c.pushed);
    let dropped = d(Counters::dropped);
    let copies = d(|c| c.passed) + d(|c| c.duplicated);
    let delay = now.added_delay.saturating_sub(before.added_delay);
    InjectedDirection {
        datagrams,
        dropped,
        loss: if datagrams == 0 {
            0.0
        } else {
            dropped as f64 / datagrams as f64
        },
        duplicated: d(|c| c.duplicated),
        reordered: d(|c| c.reordered),
        corrupted: d(|c| c.corrupted),
        delay_ms: if copies == 0 {
            0.0
        } else {
            delay.as_secs_f64() * 1000.0 / copies as f64
        },
    }
}

/// A path's salt: the peer id, mixed (splitmix64), so that neighbouring ids
/// get unrelated streams.
fn salt(id: PeerId) -> u64 {
    let mut z = u64::from(id.0).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A shard's side of the lab: the version it saw, its paths' wake-ups and
/// the report timer.
pub(crate) struct ShardLab {
    lab: Arc<Lab>,
    version: u64,
    deadlines: Deadlines<PeerId>,
    /// Live paths on this shard.
    paths: usize,
    next_report: Option<Instant>,
    // Scratch, kept to avoid an allocation per wake-up.
    due: Vec<PeerId>,
    released: Vec<Packet>,
}

impl ShardLab {
    pub fn new(lab: Arc<Lab>) -> ShardLab {
        ShardLab {
            version: lab.version(),
            lab,
            deadlines: Deadlines::default(),
            paths: 0,
            next_report: None,
            due: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Whether the lab changed since the last call: one atomic load.
    fn changed(&mut self) -> bool {
        let version = self.lab.version();
        if version == self.version {
            return false;
        }
        self.version = version;
        true
    }

    fn resolve(&self, id: PeerId, room: &RoomId) -> Option<Resolved> {
        self.lab
            .resolve(Some(&id.to_string()), Some(room.as_str()), None)
    }

    /// The path a peer opening now gets, if a setting applies to it.
    pub fn path_for(&mut self, id: PeerId, room: &RoomId, now: Instant) -> Option<Box<PeerPath>> {
        let resolved = self.resolve(id, room)?;
        Some(self.open(resolved, id, now))
    }

    fn open(&mut self, resolved: Resolved, id: PeerId, now: Instant) -> Box<PeerPath> {
        self.paths += 1;
        self.next_report.get_or_insert(now + REPORT_INTERVAL);
        Box::new(PeerPath {
            path: PathImpairment::new(&resolved, salt(id), now),
            resolved,
            last: [Counters::default(); 2],
        })
    }

    /// Ends a path: everything it holds is handed to `release` at once, it
    /// reports one last time.
    pub fn close(
        &mut self,
        id: PeerId,
        mut path: Box<PeerPath>,
        now: Instant,
        mut release: impl FnMut(Direction, Packet),
    ) {
        let horizon = now.checked_add(DRAIN_HORIZON).unwrap_or(now);
        for direction in [Direction::Down, Direction::Up] {
            while let Some(r) = path.path.poll(direction, horizon) {
                release(direction, r.payload);
            }
        }
        path.path.report(&self.lab);
        self.deadlines.remove(id);
        self.paths = self.paths.saturating_sub(1);
        if self.paths == 0 {
            self.next_report = None;
        }
    }

    /// The earliest path or report deadline.
    pub fn next_wake(&mut self) -> Option<Instant> {
        if self.paths == 0 {
            return None;
        }
        match (self.deadlines.next(), self.next_report) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A datagram from an impaired peer, at its arrival.
    pub fn push_up(&mut self, id: PeerId, path: &mut PeerPath, d: Datagram) {
        let packet = Packet {
            addr: d.source,
            by_ufrag: d.route.by_ufrag,
            data: d.data,
        };
        path.path.push(Direction::Up, d.received, packet);
        self.arm(id, path, d.received);
    }

    /// A datagram str0m wants sent to an impaired peer.
    pub fn push_down(&mut self, id: PeerId, path: &mut PeerPath, t: Transmit) {
        let now = Instant::now();
        let packet = Packet {
            addr: t.destination,
            by_ufrag: false,
            data: t.contents.into(),
        };
        path.path.push(Direction::Down, now, packet);
        self.arm(id, path, now);
    }

    fn arm(&mut self, id: PeerId, path: &PeerPath, now: Instant) {
        if let Some(at) = path.path.poll_timeout(now) {
            self.deadlines.set_earlier(id, at);
        }
    }
}

impl Shard {
    /// Re-resolves every peer's path if the lab changed (see the module
    /// docs); one atomic load otherwise.
    pub(super) fn refresh_lab(&mut self, now: Instant) {
        if !self.lab.changed() {
            return;
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let resolved = self.lab.resolve(id, &peer.room);
            if PeerPath::follows(peer.impaired.as_deref(), resolved.as_ref()) {
                continue;
            }
            let new = resolved.map(|r| self.lab.open(r, id, now));
            let cleared = new.is_none();
            let old = std::mem::replace(&mut peer.impaired, new);
            if cleared {
                if let Some(room) = peer.game.and_then(|key| self.games.get_mut(&key)) {
                    room.set_injected(id, None);
                }
            }
            let Some(old) = old else {
                continue;
            };
            let mut up = std::mem::take(&mut self.lab.released);
            let local = self.ctx.local;
            let outbox = &mut self.outbox;
            self.lab
                .close(id, old, now, |direction, p| match direction {
                    Direction::Down => outbox.push(p.transmit(local)),
                    Direction::Up => up.push(p),
                });
            self.deliver_up(id, &mut up, now);
            self.lab.released = up;
            // The new path's first push arms its deadline.
        }
    }

    /// Releases what is due on the paths whose deadline passed, and
    /// reports when it is time.
    pub(super) fn expire_lab(&mut self, now: Instant) {
        if self.lab.paths == 0 {
            return;
        }
        let mut due = std::mem::take(&mut self.lab.due);
        let mut up = std::mem::take(&mut self.lab.released);
        self.lab.deadlines.expire(now, &mut due);
        for id in due.drain(..) {
            let Some(path) = self
                .peers
                .get_mut(&id)
                .and_then(|p| p.impaired.as_deref_mut())
            else {
                continue;
            };
            while let Some(r) = path.path.poll(Direction::Down, now) {
                self.outbox.push(r.payload.transmit(self.ctx.local));
            }
            while let Some(r) = path.path.poll(Direction::Up, now) {
                up.push(r.payload);
            }
            self.lab.arm(id, path, now);
            self.deliver_up(id, &mut up, now);
        }
        self.lab.due = due;
        self.lab.released = up;
        if self.lab.next_report.is_some_and(|at| at <= now) {
            self.lab.next_report = Some(now + REPORT_INTERVAL);
            self.report_paths();
        }
    }

    /// Feeds released up-datagrams to `id`'s `Rtc`, draining the shard's
    /// output after each (str0m's DTLS keeps few unprocessed records).
    fn deliver_up(&mut self, id: PeerId, up: &mut Vec<Packet>, now: Instant) {
        for p in up.drain(..) {
            let Some(peer) = self.peers.get_mut(&id).filter(|p| p.end.is_none()) else {
                continue;
            };
            let incoming = Incoming {
                source: p.addr,
                by_ufrag: p.by_ufrag,
                received: now,
                data: &p.data,
            };
            receive(
                &self.ctx,
                &mut self.ending,
                &mut self.dirty,
                id,
                peer,
                incoming,
            );
            self.process();
        }
    }

    /// Every path reports to the lab; game-room players' rooms get their
    /// figures for the interval.
    fn report_paths(&mut self) {
        for (&id, peer) in &mut self.peers {
            let Some(path) = peer.impaired.as_deref_mut() else {
                continue;
            };
            let room = peer.game.and_then(|key| self.games.get_mut(&key));
            let stats = path.report(&self.lab.lab, room.is_some());
            if let (Some(room), Some(stats)) = (room, stats) {
                room.set_injected(id, Some(stats));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcrelay_netlab::{Scope, Setting};

    #[test]
    fn interval_figures_are_differences_with_means() {
        let before = Counters {
            pushed: 10,
            passed: 9,
            dropped_loss: 1,
            added_delay: Duration::from_millis(90),
            ..Counters::default()
        };
        let now = Counters {
            pushed: 110,
            passed: 97,
            dropped_loss: 6,
            dropped_blackout: 2,
            dropped_queue: 2,
            duplicated: 2,
            reordered: 3,
            corrupted: 1,
            added_delay: Duration::from_millis(90 + 4500),
            ..Counters::default()
        };
        let i = interval(&now, &before);
        assert_eq!(
            (
                i.datagrams,
                i.dropped,
                i.duplicated,
                i.reordered,
                i.corrupted
            ),
            (100, 9, 2, 3, 1)
        );
        assert!((i.loss - 0.09).abs() < 1e-12);
        // 4.5 s over 88 passed + 2 duplicates.
        assert!((i.delay_ms - 50.0).abs() < 1e-9, "{}", i.delay_ms);
        let idle = interval(&now, &now);
        assert_eq!((idle.loss, idle.delay_ms), (0.0, 0.0));
    }

    #[test]
    fn a_path_follows_its_setting_until_the_lab_changes_it() {
        let lab = Arc::new(Lab::default());
        let now = Instant::now();
        let mut shard_lab = ShardLab::new(lab.clone());
        let room = RoomId::try_from("r").unwrap();
        assert!(!shard_lab.changed());
        assert!(shard_lab.path_for(PeerId(1), &room, now).is_none());
        assert_eq!(shard_lab.next_wake(), None);

        lab.set(Scope::Global, Setting::profile("3g"), now).unwrap();
        assert!(shard_lab.changed());
        assert!(!shard_lab.changed(), "seen once");
        let path = shard_lab.path_for(PeerId(1), &room, now).expect("global");
        assert_eq!(shard_lab.next_wake(), Some(now + REPORT_INTERVAL));
        let again = shard_lab.resolve(PeerId(1), &room);
        assert!(PeerPath::follows(Some(&path), again.as_ref()));

        // A room setting wins, and is a different plan.
        lab.set(Scope::Room("r".into()), Setting::profile("3g"), now)
            .unwrap();
        let room_wide = shard_lab.resolve(PeerId(1), &room);
        assert!(!PeerPath::follows(Some(&path), room_wide.as_ref()));
        // Cleared everywhere: no path.
        lab.clear_all();
        assert!(!PeerPath::follows(Some(&path), None));
        assert!(PeerPath::follows(None, None));
        let mut released = 0;
        shard_lab.close(PeerId(1), path, now, |_, _| released += 1);
        assert_eq!(released, 0);
        assert_eq!(shard_lab.next_wake(), None);
    }

    #[test]
    fn a_closing_path_releases_everything_it_holds() {
        let lab = Arc::new(Lab::default());
        let now = Instant::now();
        lab.set(Scope::Global, Setting::profile("satellite"), now)
            .unwrap();
        let mut shard_lab = ShardLab::new(lab.clone());
        let room = RoomId::try_from("r").unwrap();
        let mut path = shard_lab.path_for(PeerId(7), &room, now).unwrap();
        for i in 0..20u8 {
            let t = Transmit {
                proto: Protocol::Udp,
                source: "127.0.0.1:1".parse().unwrap(),
                destination: "127.0.0.1:2".parse().unwrap(),
                contents: vec![i; 100].into(),
            };
            shard_lab.push_down(PeerId(7), &mut path, t);
        }
        let wake = shard_lab.next_wake().expect("a wake-up");
        assert!(wake > now + Duration::from_millis(200), "300 ms delay");
        let accepted = path.path.counters(Direction::Down).passed;
        let mut released = Vec::new();
        shard_lab.close(PeerId(7), path, now, |d, p| {
            assert_eq!(d, Direction::Down);
            released.push(p);
        });
        assert_eq!(released.len() as u64, accepted);
        assert!(released.iter().all(|p| p.addr.port() == 2));
        let totals = lab.totals();
        assert_eq!(totals[0].0, Scope::Global);
        assert_eq!(totals[0].1.down.pushed, 20);
    }

    #[test]
    fn salts_differ_per_peer() {
        let salts: std::collections::HashSet<u64> = (0..1000).map(|i| salt(PeerId(i))).collect();
        assert_eq!(salts.len(), 1000);
    }
}
