//! Which peer (and shard) a datagram belongs to, in O(1): by source address,
//! or for a STUN binding request by the server ufrag in its USERNAME. Sans-IO;
//! the UDP receive loop asks, the shards and the session host update.
//!
//! Two limits live here because this is the first place that knows which
//! peer a datagram is from: each session's datagram rate (a token bucket,
//! checked before the datagram is even copied to its shard, so a flood
//! costs one lookup per datagram and never fills a shard's inbox), and the
//! number of sessions at once.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rtcrelay_protocol::PeerId;

use crate::authoritative::inputs::TokenBucket;
use crate::stun;

/// Addresses remembered per peer. A client uses one or two (host and
/// reflexive, IPv4 and IPv6); the cap bounds the map however many a peer
/// tries. The oldest is forgotten first (NAT rebinding).
pub(crate) const MAX_ADDRS_PER_PEER: usize = 8;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub shard: usize,
    pub peer: PeerId,
    pub session: u64,
    /// Routed by STUN USERNAME: the shard checks the message integrity
    /// before it remembers the source address.
    pub by_ufrag: bool,
}

/// Why a datagram has no route. The strings are metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// Not a STUN request naming a known session, from an address no session uses.
    UnknownSource,
    /// A STUN request whose USERNAME names no session.
    UnknownUfrag,
    /// The session's peer sent more than its datagram rate allows.
    RateLimited,
}

impl NoRoute {
    pub fn label(self) -> &'static str {
        match self {
            NoRoute::UnknownSource => "unknown_source",
            NoRoute::UnknownUfrag => "unknown_ufrag",
            NoRoute::RateLimited => "rate_limited",
        }
    }
}

/// Why [`Routes::reserve`] refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer has a session already.
    SessionExists,
    /// `max_peers` sessions exist.
    Full,
}

#[derive(Debug)]
struct PeerRoute {
    shard: usize,
    session: u64,
    ufrag: Option<String>,
    addrs: VecDeque<SocketAddr>,
    /// None: no rate limit.
    bucket: Option<TokenBucket>,
}

#[derive(Debug)]
pub(crate) struct Routes {
    peers: HashMap<PeerId, PeerRoute>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    next_session: u64,
    max_peers: usize,
    /// Datagrams per second per session; 0 = unlimited.
    datagram_rate: u32,
}

impl Default for Routes {
    /// No limits.
    fn default() -> Self {
        Routes::with_limits(usize::MAX, 0)
    }
}

impl Routes {
    /// At most `max_peers` sessions; each may send `datagram_rate`
    /// datagrams per second with a burst of one second's worth (0 = no
    /// limit).
    pub fn with_limits(max_peers: usize, datagram_rate: u32) -> Routes {
        Routes {
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            next_session: 0,
            max_peers,
            datagram_rate,
        }
    }

    /// Claims `peer` for a new session on `shard`; no datagram routes to it
    /// until [`Routes::set_ufrag`]. Returns the session number, which tells
    /// this session from an earlier or later one of the same peer.
    pub fn reserve(&mut self, peer: PeerId, shard: usize, now: Instant) -> Result<u64, Refused> {
        if self.peers.contains_key(&peer) {
            return Err(Refused::SessionExists);
        }
        if self.peers.len() >= self.max_peers {
            return Err(Refused::Full);
        }
        self.next_session += 1;
        let rate = u64::from(self.datagram_rate);
        self.peers.insert(
            peer,
            PeerRoute {
                shard,
                session: self.next_session,
                ufrag: None,
                addrs: VecDeque::new(),
                bucket: (rate > 0).then(|| TokenBucket::new(rate, rate, now)),
            },
        );
        Ok(self.next_session)
    }

    /// Makes STUN requests naming `ufrag` route to this session. False if
    /// the session is gone (closed while it was being opened).
    pub fn set_ufrag(&mut self, peer: PeerId, session: u64, ufrag: &str) -> bool {
        let Some(route) = self.peers.get_mut(&peer).filter(|r| r.session == session) else {
            return false;
        };
        if let Some(old) = route.ufrag.replace(ufrag.to_owned()) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag.to_owned(), peer);
        true
    }

    /// Remembers that `addr` belongs to this session (after str0m accepted a
    /// STUN request from it). An address moves from any other peer to this one.
    pub fn learn_addr(&mut self, peer: PeerId, session: u64, addr: SocketAddr) -> bool {
        match self.peers.get(&peer) {
            Some(r) if r.session == session => {}
            _ => return false,
        }
        if let Some(previous) = self.by_addr.insert(addr, peer) {
            if previous == peer {
                return true;
            }
            if let Some(prev) = self.peers.get_mut(&previous) {
                prev.addrs.retain(|a| *a != addr);
            }
        }
        let Some(route) = self.peers.get_mut(&peer) else {
            return false;
        };
        route.addrs.push_back(addr);
        if route.addrs.len() > MAX_ADDRS_PER_PEER {
            if let Some(oldest) = route.addrs.pop_front() {
                self.by_addr.remove(&oldest);
            }
        }
        true
    }

    /// The shard and session of `peer`, if it has one.
    pub fn session_of(&self, peer: PeerId) -> Option<(usize, u64)> {
        self.peers.get(&peer).map(|r| (r.shard, r.session))
    }

    /// Forgets `peer` and everything that routes to it; `session` = None
    /// removes whatever session it has. Returns the removed `(shard, session)`.
    pub fn remove(&mut self, peer: PeerId, session: Option<u64>) -> Option<(usize, u64)> {
        let route = self.peers.get(&peer)?;
        if session.is_some_and(|s| s != route.session) {
            return None;
        }
        let route = self.peers.remove(&peer)?;
        if let Some(ufrag) = &route.ufrag {
            self.by_ufrag.remove(ufrag);
        }
        for addr in &route.addrs {
            self.by_addr.remove(addr);
        }
        Some((route.shard, route.session))
    }

    /// Where `datagram` from `source`, read at `now`, goes. A STUN request
    /// naming a session goes to it even from a known address (a client
    /// re-joining from the same socket); everything else goes by source
    /// address. Each routed datagram takes a token from its session's
    /// bucket, and none is left for it past the rate.
    pub fn route(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Route, NoRoute> {
        let stun = stun::is_stun(datagram);
        if stun {
            if let Some(ufrag) = stun::server_ufrag(datagram) {
                let peer = *self.by_ufrag.get(ufrag).ok_or(NoRoute::UnknownUfrag)?;
                return self.route_to(peer, true, now, NoRoute::UnknownUfrag);
            }
        }
        let peer = *self.by_addr.get(&source).ok_or(NoRoute::UnknownSource)?;
        self.route_to(peer, false, now, NoRoute::UnknownSource)
    }

    fn route_to(
        &mut self,
        peer: PeerId,
        by_ufrag: bool,
        now: Instant,
        missing: NoRoute,
    ) -> Result<Route, NoRoute> {
        let r = self.peers.get_mut(&peer).ok_or(missing)?;
        if let Some(bucket) = &mut r.bucket {
            if !bucket.try_take(now) {
                return Err(NoRoute::RateLimited);
            }
        }
        Ok(Route {
            shard: r.shard,
            peer,
            session: r.session,
            by_ufrag,
        })
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.by_ufrag.is_empty() && self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::tests::binding_request;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    const DTLS: &[u8] = &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn routes_by_ufrag_then_by_learned_address() {
        let mut routes = Routes::default();
        let s = routes.reserve(PeerId(1), 3, now()).unwrap();
        // Reserved but no ufrag yet: nothing routes.
        assert_eq!(
            routes.route(addr(1), &binding_request("u1:c"), now()),
            Err(NoRoute::UnknownUfrag)
        );
        assert!(routes.set_ufrag(PeerId(1), s, "u1"));
        let r = routes
            .route(addr(1), &binding_request("u1:c"), now())
            .unwrap();
        assert_eq!(
            (r.shard, r.peer, r.session, r.by_ufrag),
            (3, PeerId(1), s, true)
        );
        // DTLS from that address is unknown until the address is learned.
        assert_eq!(
            routes.route(addr(1), DTLS, now()),
            Err(NoRoute::UnknownSource)
        );
        assert!(routes.learn_addr(PeerId(1), s, addr(1)));
        let r = routes.route(addr(1), DTLS, now()).unwrap();
        assert_eq!((r.peer, r.by_ufrag), (PeerId(1), false));
        assert_eq!(
            routes.route(addr(2), DTLS, now()),
            Err(NoRoute::UnknownSource)
        );
        assert_eq!(
            routes.route(addr(1), &binding_request("other:c"), now()),
            Err(NoRoute::UnknownUfrag)
        );
    }

    #[test]
    fn a_peer_has_one_session_and_stale_sessions_do_not_touch_new_ones() {
        let mut routes = Routes::default();
        let s1 = routes.reserve(PeerId(1), 0, now()).unwrap();
        assert_eq!(
            routes.reserve(PeerId(1), 0, now()),
            Err(Refused::SessionExists)
        );
        assert!(routes.set_ufrag(PeerId(1), s1, "a"));
        assert_eq!(routes.remove(PeerId(1), None), Some((0, s1)));
        let s2 = routes.reserve(PeerId(1), 1, now()).unwrap();
        assert_ne!(s1, s2);
        // The old session's late updates and removal are ignored.
        assert!(!routes.set_ufrag(PeerId(1), s1, "old"));
        assert!(!routes.learn_addr(PeerId(1), s1, addr(9)));
        assert_eq!(routes.remove(PeerId(1), Some(s1)), None);
        assert_eq!(routes.session_of(PeerId(1)), Some((1, s2)));
        assert_eq!(routes.remove(PeerId(1), Some(s2)), Some((1, s2)));
        assert!(routes.is_empty());
    }

    #[test]
    fn removal_forgets_ufrag_and_addresses() {
        let mut routes = Routes::default();
        let s = routes.reserve(PeerId(7), 0, now()).unwrap();
        routes.set_ufrag(PeerId(7), s, "u7");
        routes.learn_addr(PeerId(7), s, addr(1));
        routes.learn_addr(PeerId(7), s, addr(2));
        routes.remove(PeerId(7), Some(s));
        assert!(routes.is_empty());
        assert_eq!(
            routes.route(addr(1), DTLS, now()),
            Err(NoRoute::UnknownSource)
        );
    }

    #[test]
    fn addresses_are_capped_and_move_between_peers() {
        let mut routes = Routes::default();
        let s1 = routes.reserve(PeerId(1), 0, now()).unwrap();
        let s2 = routes.reserve(PeerId(2), 0, now()).unwrap();
        for port in 0..(MAX_ADDRS_PER_PEER as u16 + 3) {
            routes.learn_addr(PeerId(1), s1, addr(port));
        }
        assert_eq!(routes.by_addr.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(
            routes.route(addr(0), DTLS, now()),
            Err(NoRoute::UnknownSource)
        );
        let last = addr(MAX_ADDRS_PER_PEER as u16 + 2);
        assert_eq!(routes.route(last, DTLS, now()).unwrap().peer, PeerId(1));
        // The address moves to peer 2; removing peer 1 does not take it away.
        routes.learn_addr(PeerId(2), s2, last);
        assert_eq!(routes.route(last, DTLS, now()).unwrap().peer, PeerId(2));
        routes.remove(PeerId(1), None);
        assert_eq!(routes.route(last, DTLS, now()).unwrap().peer, PeerId(2));
        routes.remove(PeerId(2), None);
        assert!(routes.is_empty());
    }

    #[test]
    fn sessions_beyond_max_peers_are_refused_until_one_goes() {
        let mut routes = Routes::with_limits(2, 0);
        let s1 = routes.reserve(PeerId(1), 0, now()).unwrap();
        routes.reserve(PeerId(2), 0, now()).unwrap();
        assert_eq!(routes.reserve(PeerId(3), 0, now()), Err(Refused::Full));
        // A peer that has a session hears that first.
        assert_eq!(
            routes.reserve(PeerId(2), 0, now()),
            Err(Refused::SessionExists)
        );
        assert_eq!(routes.peers.len(), 2);
        routes.remove(PeerId(1), Some(s1));
        assert!(routes.reserve(PeerId(3), 0, now()).is_ok());
        assert_eq!(routes.reserve(PeerId(4), 0, now()), Err(Refused::Full));
    }

    #[test]
    fn each_session_gets_its_own_datagram_budget() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
        let mut routes = Routes::with_limits(usize::MAX, 100);
        let s1 = routes.reserve(PeerId(1), 0, t0).unwrap();
        let s2 = routes.reserve(PeerId(2), 0, t0).unwrap();
        routes.learn_addr(PeerId(1), s1, addr(1));
        routes.learn_addr(PeerId(2), s2, addr(2));
        // One second's worth at once, then nothing until it refills.
        let flood: Vec<_> = (0..1000).map(|_| routes.route(addr(1), DTLS, t0)).collect();
        assert_eq!(flood.iter().filter(|r| r.is_ok()).count(), 100);
        assert_eq!(
            flood
                .iter()
                .filter(|r| **r == Err(NoRoute::RateLimited))
                .count(),
            900
        );
        // The other peer is untouched.
        assert_eq!(routes.route(addr(2), DTLS, t0).unwrap().peer, PeerId(2));
        // 100/s: 50 ms refills 5 datagrams.
        let later: Vec<_> = (0..20)
            .map(|_| routes.route(addr(1), DTLS, ms(50)))
            .collect();
        assert_eq!(later.iter().filter(|r| r.is_ok()).count(), 5);
        // STUN naming the session is charged to it as well.
        routes.set_ufrag(PeerId(1), s1, "u1");
        assert_eq!(
            routes.route(addr(9), &binding_request("u1:c"), ms(50)),
            Err(NoRoute::RateLimited)
        );
        // A new session of the peer starts with a full bucket.
        routes.remove(PeerId(1), Some(s1));
        let s3 = routes.reserve(PeerId(1), 0, ms(50)).unwrap();
        routes.learn_addr(PeerId(1), s3, addr(1));
        assert!(routes.route(addr(1), DTLS, ms(50)).is_ok());
    }

    #[test]
    fn no_rate_means_no_limit() {
        let t0 = Instant::now();
        let mut routes = Routes::default();
        let s = routes.reserve(PeerId(1), 0, t0).unwrap();
        routes.learn_addr(PeerId(1), s, addr(1));
        assert!((0..100_000).all(|_| routes.route(addr(1), DTLS, t0).is_ok()));
    }
}
