//! The peer policy on the `turn` crate's packet paths, through its extension
//! points (no copy or patch of the crate):
//!
//! - [`PolicedRelayConn`]: a `Conn` wrapper for an allocation's relay socket.
//!   Every datagram the crate relays to a peer goes through its `send_to`
//!   (Send indications and ChannelData alike), and every datagram from a peer
//!   through its `recv_from`. Both are checked against the current
//!   [`PeerPolicy`]; denied ones are dropped and counted, allowed ones counted
//!   (packets, bytes, per direction) in [`RelayCounters`].
//! - [`PolicedRelayGenerator`]: a `RelayAddressGenerator` that binds relay
//!   sockets on the relay IP within the relay port range (random port,
//!   RFC 8656 §7.2), advertises the external IP if one is set, and wraps each
//!   socket in a [`PolicedRelayConn`].
//! - [`PeerRequestGuard`]: a `Conn` wrapper for a *listener*. The crate has no
//!   hook to refuse CreatePermission or ChannelBind (it installs a permission
//!   for any XOR-PEER-ADDRESS), so the guard reads those requests before the
//!   crate does; when one names a denied peer and its MESSAGE-INTEGRITY checks
//!   out with the key from our `AuthHandler`, the guard answers
//!   403 (Forbidden) itself and the crate never sees the request. Unauthenticated
//!   or malformed requests pass through to the crate (which answers 401/400),
//!   so the 403 is no oracle for strangers.
//!
//! How a denied datagram looks to the crate: `send_to` returns `Ok(len)` (an
//! error would make the crate log at error level for every packet, a log flood
//! a client controls), and `recv_from` waits for the next allowed datagram (an
//! error would end the allocation).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{ErrorCodeAttribute, CODE_FORBIDDEN};
use stun::integrity::MessageIntegrity;
use stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, MAGIC_COOKIE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
};
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::policy::{Denied, PeerPolicy, SharedPeerPolicy};

/// Counters of one TURN listener's relayed traffic and peer-policy refusals.
/// Share one `Arc` between a listener's [`PolicedRelayGenerator`] (and so all
/// its relay sockets) and its [`PeerRequestGuard`].
#[derive(Debug, Default)]
pub struct RelayCounters {
    to_peer_packets: AtomicU64,
    to_peer_bytes: AtomicU64,
    from_peer_packets: AtomicU64,
    from_peer_bytes: AtomicU64,
    denied_to_peer: [AtomicU64; Denied::COUNT],
    denied_from_peer: [AtomicU64; Denied::COUNT],
    denied_requests: [AtomicU64; Denied::COUNT],
}

/// A point-in-time copy of [`RelayCounters`]. The `denied_*` arrays are
/// indexed by [`Denied::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams (and their payload bytes) relayed from clients to peers.
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    /// Datagrams (and their payload bytes) received from peers on relay sockets.
    pub from_peer_packets: u64,
    pub from_peer_bytes: u64,
    /// Datagrams to peers dropped by the policy.
    pub denied_to_peer: [u64; Denied::COUNT],
    /// Datagrams from peers dropped by the policy.
    pub denied_from_peer: [u64; Denied::COUNT],
    /// CreatePermission / ChannelBind requests answered with 403.
    pub denied_requests: [u64; Denied::COUNT],
}

impl RelayStats {
    pub fn denied_to_peer_total(&self) -> u64 {
        self.denied_to_peer.iter().sum()
    }
    pub fn denied_from_peer_total(&self) -> u64 {
        self.denied_from_peer.iter().sum()
    }
    pub fn denied_requests_total(&self) -> u64 {
        self.denied_requests.iter().sum()
    }
}

impl RelayCounters {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn snapshot(&self) -> RelayStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            to_peer_packets: load(&self.to_peer_packets),
            to_peer_bytes: load(&self.to_peer_bytes),
            from_peer_packets: load(&self.from_peer_packets),
            from_peer_bytes: load(&self.from_peer_bytes),
            denied_to_peer: self.denied_to_peer.each_ref().map(load),
            denied_from_peer: self.denied_from_peer.each_ref().map(load),
            denied_requests: self.denied_requests.each_ref().map(load),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn unsupported(what: &str) -> webrtc_util::Error {
    webrtc_util::Error::Other(format!("{what} is not supported on a policed relay socket"))
}

/// An allocation's relay socket with the peer policy applied to every datagram.
pub struct PolicedRelayConn {
    inner: Arc<dyn Conn + Send + Sync>,
    policy: SharedPeerPolicy,
    counters: Arc<RelayCounters>,
}

impl PolicedRelayConn {
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        policy: SharedPeerPolicy,
        counters: Arc<RelayCounters>,
    ) -> Self {
        PolicedRelayConn {
            inner,
            policy,
            counters,
        }
    }
}

#[async_trait]
impl Conn for PolicedRelayConn {
    /// Refused: a connected socket would let `send` skip the policy. The
    /// `turn` crate never connects relay sockets.
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported("connect"))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    /// The next datagram from an allowed peer; datagrams from denied sources
    /// are dropped and counted.
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match self.policy.check(src) {
                Ok(()) => {
                    RelayCounters::add(&self.counters.from_peer_packets, 1);
                    RelayCounters::add(&self.counters.from_peer_bytes, n as u64);
                    return Ok((n, src));
                }
                Err(reason) => {
                    RelayCounters::add(&self.counters.denied_from_peer[reason.index()], 1)
                }
            }
        }
    }

    /// Refused: see [`connect`](Self::connect).
    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported("send"))
    }

    /// Sends to an allowed peer; a denied one is dropped, counted and reported
    /// as sent (`Ok(buf.len())`), so the crate neither logs nor fails.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        match self.policy.check(target) {
            Ok(()) => {
                let n = self.inner.send_to(buf, target).await?;
                RelayCounters::add(&self.counters.to_peer_packets, 1);
                RelayCounters::add(&self.counters.to_peer_bytes, n as u64);
                Ok(n)
            }
            Err(reason) => {
                RelayCounters::add(&self.counters.denied_to_peer[reason.index()], 1);
                Ok(buf.len())
            }
        }
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Default number of ports tried per allocation in a range wider than it
/// (a smaller range is scanned whole).
pub const DEFAULT_MAX_PORT_ATTEMPTS: u32 = 64;

/// Binds relay sockets on `relay_ip` within a port range and wraps them in
/// [`PolicedRelayConn`]. One per listener (`turn::server::config::ConnConfig`).
pub struct PolicedRelayGenerator {
    bind_ip: IpAddr,
    advertised_ip: IpAddr,
    ports: RangeInclusive<u16>,
    max_attempts: u32,
    policy: SharedPeerPolicy,
    counters: Arc<RelayCounters>,
}

impl PolicedRelayGenerator {
    /// Relay sockets bind `bind_ip` (the `relay_ip` key) on a port in `ports`
    /// (`relay_ports`) and advertise `bind_ip` unless
    /// [`with_advertised_ip`](Self::with_advertised_ip) says otherwise.
    pub fn new(
        bind_ip: IpAddr,
        ports: RangeInclusive<u16>,
        policy: SharedPeerPolicy,
        counters: Arc<RelayCounters>,
    ) -> Self {
        PolicedRelayGenerator {
            bind_ip,
            advertised_ip: bind_ip,
            ports,
            max_attempts: DEFAULT_MAX_PORT_ATTEMPTS,
            policy,
            counters,
        }
    }

    /// The address put in XOR-RELAYED-ADDRESS (the `external_ip` key, 1:1 NAT).
    pub fn with_advertised_ip(mut self, ip: IpAddr) -> Self {
        self.advertised_ip = ip;
        self
    }

    /// Ports tried per allocation when the range is wider than this.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn counters(&self) -> &Arc<RelayCounters> {
        &self.counters
    }

    pub fn policy(&self) -> &SharedPeerPolicy {
        &self.policy
    }

    async fn bind(&self, port: u16) -> std::io::Result<(Arc<dyn Conn + Send + Sync>, SocketAddr)> {
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).await?;
        let relay_addr = SocketAddr::new(self.advertised_ip, socket.local_addr()?.port());
        let conn = PolicedRelayConn::new(
            Arc::new(socket),
            self.policy.clone(),
            Arc::clone(&self.counters),
        );
        Ok((Arc::new(conn), relay_addr))
    }
}

#[async_trait]
impl RelayAddressGenerator for PolicedRelayGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        if *self.ports.start() == 0 {
            return Err(turn::Error::ErrMinPortNotZero);
        }
        if self.ports.end() < self.ports.start() {
            return Err(turn::Error::ErrMaxPortLessThanMinPort);
        }
        if self.advertised_ip.is_unspecified()
            || self.advertised_ip.is_ipv4() != self.bind_ip.is_ipv4()
        {
            return Err(turn::Error::ErrRelayAddressInvalid);
        }
        Ok(())
    }

    /// The crate asks with `requested_port == 0` for an allocation, and with a
    /// port it got from an earlier call for EVEN-PORT; only ports in the range
    /// are bound. An address family other than the relay IP's is refused (the
    /// crate answers 508).
    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(turn::Error::Other(format!(
                "relay address family {} requested; the relay IP is {}",
                if use_ipv4 { "IPv4" } else { "IPv6" },
                self.bind_ip
            )));
        }
        if requested_port != 0 {
            if !self.ports.contains(&requested_port) {
                return Err(turn::Error::Other(format!(
                    "requested relay port {requested_port} is outside the relay port range"
                )));
            }
            return Ok(self.bind(requested_port).await?);
        }
        let (start, end) = (*self.ports.start(), *self.ports.end());
        if start == 0 || end < start {
            return Err(turn::Error::ErrMaxPortLessThanMinPort);
        }
        let len = u32::from(end - start) + 1;
        // A range no wider than the attempts is scanned whole from a random
        // offset; a wider one is probed at random ports.
        let scan = len <= self.max_attempts;
        let offset = rand::random::<u32>() % len;
        for i in 0..len.min(self.max_attempts) {
            let step = if scan {
                (offset + i) % len
            } else {
                rand::random::<u32>() % len
            };
            let port = start + step as u16;
            match self.bind(port).await {
                Ok(bound) => return Ok(bound),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                // Address not available, permission denied…: no port will do.
                Err(e) => return Err(e.into()),
            }
        }
        Err(turn::Error::ErrMaxRetriesExceeded)
    }
}

/// Reads the peer addresses of a CreatePermission / ChannelBind request and,
/// when one is denied and the request authenticates, builds the 403 answer.
///
/// Returns `None` for everything the crate should handle itself: other
/// messages, ChannelData, requests naming only allowed peers, and requests
/// that do not authenticate (no MESSAGE-INTEGRITY, unknown user, bad HMAC),
/// which the crate then refuses with 401/400. Sans-IO.
pub fn screen_peer_request(
    packet: &[u8],
    src: SocketAddr,
    policy: &PeerPolicy,
    auth: &dyn AuthHandler,
) -> Option<(Denied, Vec<u8>)> {
    // Cheap header test first, so Send indications and ChannelData (the data
    // path) cost two comparisons: a STUN message with the magic cookie whose
    // type is a CreatePermission (0x0008) or ChannelBind (0x0009) request.
    if !stun::message::is_message(packet)
        || !matches!(u16::from_be_bytes([packet[0], packet[1]]), 0x0008 | 0x0009)
    {
        return None;
    }
    let mut m = Message {
        raw: packet.to_vec(),
        ..Default::default()
    };
    m.decode().ok()?;
    if m.typ.class != CLASS_REQUEST
        || (m.typ.method != METHOD_CREATE_PERMISSION && m.typ.method != METHOD_CHANNEL_BIND)
    {
        return None;
    }
    // A permission covers every port of the peer's IP (RFC 8656 §9), so
    // CreatePermission is checked by IP; a channel is bound to one transport
    // address, so ChannelBind gets the full check (own ports included).
    let is_permission = m.typ.method == METHOD_CREATE_PERMISSION;
    let reason = m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .filter_map(|a| decode_xor_address(&a.value, &m.transaction_id.0))
        .find_map(|peer| {
            if is_permission {
                policy.check_ip(peer.ip()).err()
            } else {
                policy.check(peer).err()
            }
        })?;

    // Authenticate as the crate would, so strangers learn nothing.
    if !m.contains(ATTR_MESSAGE_INTEGRITY) {
        return None;
    }
    let username = TextAttribute::get_from_as(&m, ATTR_USERNAME).ok()?;
    let realm = TextAttribute::get_from_as(&m, ATTR_REALM).ok()?;
    let key = auth
        .auth_handle(&username.to_string(), &realm.to_string(), src)
        .ok()?;
    let integrity = MessageIntegrity(key);
    integrity.check(&mut m.clone()).ok()?;

    let mut response = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(m.transaction_id),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: CODE_FORBIDDEN,
            reason: b"Forbidden IP".to_vec(),
        }),
        Box::new(integrity),
    ];
    response.build(&setters).ok()?;
    Some((reason, response.raw))
}

/// Decodes one XOR-PEER-ADDRESS value (RFC 8489 §14.2).
fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value.get(2).copied()?, value.get(3).copied()?])
        ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match value.get(1)? {
        0x01 => {
            let b: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(b) ^ MAGIC_COOKIE))
        }
        0x02 => {
            let b: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut x = [0u8; 16];
            for (i, out) in x.iter_mut().enumerate() {
                let pad = if i < 4 {
                    cookie[i]
                } else {
                    transaction_id[i - 4]
                };
                *out = b[i] ^ pad;
            }
            IpAddr::V6(Ipv6Addr::from(x))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A listener `Conn` that answers CreatePermission / ChannelBind requests for
/// denied peers with 403 before the `turn` crate sees them (see
/// [`screen_peer_request`]). Wrap each listener's conn (UDP socket, or a
/// TCP/TLS adapter) in one before handing it to `ConnConfig`.
pub struct PeerRequestGuard {
    inner: Arc<dyn Conn + Send + Sync>,
    policy: SharedPeerPolicy,
    auth: Arc<dyn AuthHandler + Send + Sync>,
    counters: Arc<RelayCounters>,
}

impl PeerRequestGuard {
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        policy: SharedPeerPolicy,
        auth: Arc<dyn AuthHandler + Send + Sync>,
        counters: Arc<RelayCounters>,
    ) -> Self {
        PeerRequestGuard {
            inner,
            policy,
            auth,
            counters,
        }
    }
}

#[async_trait]
impl Conn for PeerRequestGuard {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            let policy = self.policy.load();
            match screen_peer_request(&buf[..n], src, &policy, self.auth.as_ref()) {
                None => return Ok((n, src)),
                Some((reason, response)) => {
                    RelayCounters::add(&self.counters.denied_requests[reason.index()], 1);
                    // Best effort, like any UDP answer; the request is consumed.
                    let _ = self.inner.send_to(&response, src).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UdpSocket;
    use turn::client::{Client, ClientConfig};
    use turn::server::config::{ConnConfig, ServerConfig};
    use turn::server::Server;

    use super::*;
    use crate::policy::{OwnAddresses, PeerRules};

    const WAIT: Duration = Duration::from_secs(5);
    const SILENCE: Duration = Duration::from_millis(200);

    fn loopback_policy(deny: &[&str], listeners: &[SocketAddr]) -> PeerPolicy {
        PeerPolicy::new(
            &PeerRules {
                allow_loopback: true,
                deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
                ..PeerRules::default()
            },
            &OwnAddresses {
                listeners: listeners.to_vec(),
                ..OwnAddresses::default()
            },
        )
    }

    async fn udp(ip: &str) -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind((ip, 0)).await.unwrap())
    }

    async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 1500];
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
            _ => None,
        }
    }

    #[tokio::test]
    async fn send_to_denied_peer_is_dropped_counted_and_reported_sent() {
        let relay = udp("127.0.0.1").await;
        let peer = udp("127.0.0.1").await;
        let peer_addr = peer.local_addr().unwrap();
        let shared = SharedPeerPolicy::new(PeerPolicy::default());
        let counters = RelayCounters::new();
        let conn = PolicedRelayConn::new(relay.clone(), shared.clone(), counters.clone());

        assert_eq!(conn.send_to(b"nope", peer_addr).await.unwrap(), 4);
        assert_eq!(recv_within(&peer, SILENCE).await, None);
        let stats = counters.snapshot();
        assert_eq!(stats.denied_to_peer[Denied::Loopback.index()], 1);
        assert_eq!(stats.denied_to_peer_total(), 1);
        assert_eq!((stats.to_peer_packets, stats.to_peer_bytes), (0, 0));

        // Reload: the same socket now relays.
        shared.store(loopback_policy(&[], &[]));
        assert_eq!(conn.send_to(b"hello", peer_addr).await.unwrap(), 5);
        let (data, from) = recv_within(&peer, WAIT).await.expect("relayed datagram");
        assert_eq!(data, b"hello");
        assert_eq!(from, relay.local_addr().unwrap());
        let stats = counters.snapshot();
        assert_eq!((stats.to_peer_packets, stats.to_peer_bytes), (1, 5));
        assert_eq!(stats.denied_to_peer_total(), 1);

        // Mapped spelling of the same peer: same verdicts.
        shared.store(PeerPolicy::default());
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            peer_addr.port(),
        );
        assert_eq!(conn.send_to(b"x", mapped).await.unwrap(), 1);
        assert_eq!(
            counters.snapshot().denied_to_peer[Denied::Loopback.index()],
            2
        );

        assert!(conn.connect(peer_addr).await.is_err());
        assert!(conn.send(b"x").await.is_err());
    }

    #[tokio::test]
    async fn own_listen_address_is_dropped_even_with_allow_loopback() {
        let relay = udp("127.0.0.1").await;
        let listener = udp("127.0.0.1").await;
        let listen_addr = listener.local_addr().unwrap();
        let counters = RelayCounters::new();
        let conn = PolicedRelayConn::new(
            relay,
            SharedPeerPolicy::new(loopback_policy(&[], &[listen_addr])),
            counters.clone(),
        );
        for target in [
            listen_addr,
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), listen_addr.port()),
            SocketAddr::new(
                IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
                listen_addr.port(),
            ),
        ] {
            assert_eq!(conn.send_to(b"loop", target).await.unwrap(), 4);
        }
        assert_eq!(recv_within(&listener, SILENCE).await, None);
        assert_eq!(
            counters.snapshot().denied_to_peer[Denied::OwnAddress.index()],
            3
        );
    }

    #[tokio::test]
    async fn recv_from_skips_denied_sources() {
        let relay = udp("127.0.0.1").await;
        let relay_addr = relay.local_addr().unwrap();
        let bad = udp("127.0.0.2").await;
        let good = udp("127.0.0.1").await;
        let counters = RelayCounters::new();
        let conn = PolicedRelayConn::new(
            relay,
            SharedPeerPolicy::new(loopback_policy(&["127.0.0.2/32"], &[])),
            counters.clone(),
        );
        bad.send_to(b"bad", relay_addr).await.unwrap();
        good.send_to(b"good", relay_addr).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(WAIT, conn.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"good");
        assert_eq!(from, good.local_addr().unwrap());
        let stats = counters.snapshot();
        assert_eq!(stats.denied_from_peer[Denied::DenyList.index()], 1);
        assert_eq!((stats.from_peer_packets, stats.from_peer_bytes), (1, 4));
    }

    async fn free_port() -> u16 {
        udp("127.0.0.1").await.local_addr().unwrap().port()
    }

    fn generator(ports: RangeInclusive<u16>, policy: PeerPolicy) -> PolicedRelayGenerator {
        PolicedRelayGenerator::new(
            "127.0.0.1".parse().unwrap(),
            ports,
            SharedPeerPolicy::new(policy),
            RelayCounters::new(),
        )
    }

    #[tokio::test]
    async fn generator_binds_in_range_and_reports_exhaustion() {
        let port = free_port().await;
        let g = generator(port..=port, PeerPolicy::default());
        g.validate().unwrap();
        let (conn, addr) = g.allocate_conn(true, 0).await.unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(conn.local_addr().unwrap(), addr);
        assert_eq!(
            g.allocate_conn(true, 0).await.err(),
            Some(turn::Error::ErrMaxRetriesExceeded)
        );
        drop(conn);
        let (_conn, again) = g.allocate_conn(true, 0).await.unwrap();
        assert_eq!(again.port(), port);
    }

    #[tokio::test]
    async fn generator_refuses_ports_outside_range_and_other_family() {
        let port = free_port().await;
        let g = generator(port..=port, PeerPolicy::default());
        let outside = if port > 1024 { port - 1 } else { port + 1 };
        assert!(g.allocate_conn(true, outside).await.is_err());
        assert!(g.allocate_conn(false, 0).await.is_err());
        let (_conn, addr) = g.allocate_conn(true, port).await.unwrap();
        assert_eq!(addr.port(), port);
    }

    #[tokio::test]
    async fn generator_scans_a_small_range_whole() {
        let base = free_port().await;
        // Some ports of the range may be taken by others: count what we get.
        let range = base.saturating_sub(8).max(1024)..=base;
        let g = generator(range.clone(), PeerPolicy::default());
        let mut held = Vec::new();
        while let Ok((conn, addr)) = g.allocate_conn(true, 0).await {
            assert!(range.contains(&addr.port()));
            held.push(conn);
        }
        assert!(!held.is_empty());
        let mut ports: Vec<u16> = held
            .iter()
            .map(|c| c.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), held.len());
    }

    #[tokio::test]
    async fn generator_advertises_external_ip_and_wraps_with_policy() {
        let port = free_port().await;
        let g = generator(port..=port, PeerPolicy::default())
            .with_advertised_ip("203.0.113.7".parse().unwrap());
        g.validate().unwrap();
        let (conn, addr) = g.allocate_conn(true, 0).await.unwrap();
        assert_eq!(addr, SocketAddr::from(([203, 0, 113, 7], port)));
        assert_eq!(
            conn.local_addr().unwrap().ip(),
            IpAddr::from([127, 0, 0, 1])
        );
        let peer = udp("127.0.0.1").await;
        conn.send_to(b"x", peer.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(recv_within(&peer, SILENCE).await, None);
        assert_eq!(g.counters().snapshot().denied_to_peer_total(), 1);
    }

    #[test]
    fn generator_validate_rejects_bad_settings() {
        let p = || SharedPeerPolicy::new(PeerPolicy::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let c = RelayCounters::new;
        assert!(PolicedRelayGenerator::new(ip, 0..=10, p(), c())
            .validate()
            .is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5000..=4000;
        assert!(PolicedRelayGenerator::new(ip, reversed, p(), c())
            .validate()
            .is_err());
        let wildcard =
            PolicedRelayGenerator::new("0.0.0.0".parse().unwrap(), 5000..=6000, p(), c());
        assert!(wildcard.validate().is_err());
        assert!(wildcard
            .with_advertised_ip("198.51.100.1".parse().unwrap())
            .validate()
            .is_ok());
        let mixed = PolicedRelayGenerator::new(ip, 5000..=6000, p(), c())
            .with_advertised_ip("2001:db8::1".parse().unwrap());
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn xor_peer_address_decodes_both_families() {
        let tid = [7u8; 12];
        // 192.0.2.1:32853 from RFC 5769 §2.2 style encoding.
        let v4 = SocketAddr::from(([192, 0, 2, 1], 32853));
        let mut m = Message::new();
        m.transaction_id = stun::agent::TransactionId(tid);
        m.write_header();
        for addr in [
            v4,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
        ] {
            let attr = turn::proto::peeraddr::PeerAddress {
                ip: addr.ip(),
                port: addr.port(),
            };
            attr.add_to(&mut m).unwrap();
        }
        let decoded: Vec<_> = m
            .attributes
            .0
            .iter()
            .map(|a| decode_xor_address(&a.value, &tid).unwrap())
            .collect();
        assert_eq!(decoded[0], v4);
        assert_eq!(
            decoded[1],
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse::<SocketAddr>()
                .unwrap()
        );
        assert_eq!(decode_xor_address(&[0, 1, 0], &tid), None);
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &tid), None);
    }

    struct StaticAuth;
    impl AuthHandler for StaticAuth {
        fn auth_handle(
            &self,
            username: &str,
            realm: &str,
            _src: SocketAddr,
        ) -> Result<Vec<u8>, turn::Error> {
            if username == "user" {
                Ok(turn::auth::generate_auth_key(username, realm, "pass"))
            } else {
                Err(turn::Error::ErrNoSuchUser)
            }
        }
    }

    struct TestServer {
        server: Server,
        addr: SocketAddr,
        policy: SharedPeerPolicy,
        counters: Arc<RelayCounters>,
    }

    /// A `turn` server on 127.0.0.1 with our generator and guard; the policy
    /// allows loopback but denies 127.0.0.2 and the listener itself.
    async fn start_server() -> TestServer {
        let listener = udp("127.0.0.1").await;
        let addr = listener.local_addr().unwrap();
        let policy = SharedPeerPolicy::new(loopback_policy(&["127.0.0.2/32"], &[addr]));
        let counters = RelayCounters::new();
        let auth: Arc<dyn AuthHandler + Send + Sync> = Arc::new(StaticAuth);
        let guard = PeerRequestGuard::new(listener, policy.clone(), auth.clone(), counters.clone());
        let server = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(guard),
                relay_addr_generator: Box::new(PolicedRelayGenerator::new(
                    "127.0.0.1".parse().unwrap(),
                    40000..=49999,
                    policy.clone(),
                    counters.clone(),
                )),
            }],
            realm: "rtcrelay".into(),
            auth_handler: auth,
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: None,
        })
        .await
        .unwrap();
        TestServer {
            server,
            addr,
            policy,
            counters,
        }
    }

    async fn client(server: SocketAddr, password: &str) -> Client {
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            username: "user".into(),
            password: password.into(),
            realm: "rtcrelay".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn: udp("127.0.0.1").await,
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        client
    }

    #[tokio::test]
    async fn turn_server_relays_allowed_peers_and_refuses_denied_with_403() {
        let ts = start_server().await;
        let client = client(ts.addr, "pass").await;
        let relay = tokio::time::timeout(WAIT, client.allocate())
            .await
            .unwrap()
            .unwrap();
        let relay_addr = relay.local_addr().unwrap();
        assert!((40000..=49999).contains(&relay_addr.port()));

        // Allowed peer: both directions.
        let peer = udp("127.0.0.1").await;
        let peer_addr = peer.local_addr().unwrap();
        tokio::time::timeout(WAIT, relay.send_to(b"to-peer", peer_addr))
            .await
            .unwrap()
            .unwrap();
        let (data, from) = recv_within(&peer, WAIT).await.expect("relayed to peer");
        assert_eq!(data, b"to-peer");
        assert_eq!(from, relay_addr);
        peer.send_to(b"to-client", relay_addr).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"to-client"[..], peer_addr));

        // Denied peer IP: CreatePermission gets 403, nothing is relayed.
        let denied_peer = udp("127.0.0.2").await;
        let err =
            tokio::time::timeout(WAIT, relay.send_to(b"x", denied_peer.local_addr().unwrap()))
                .await
                .unwrap()
                .expect_err("permission refused");
        assert!(err.to_string().contains("403"), "{err}");
        assert_eq!(
            ts.counters.snapshot().denied_requests[Denied::DenyList.index()],
            1
        );
        assert_eq!(recv_within(&denied_peer, SILENCE).await, None);

        // The listener's own address: 127.0.0.1 already has a permission (they
        // are per IP), so the client sends a Send indication (dropped by the
        // relay socket) and a ChannelBind in the background (403 by the guard).
        relay.send_to(b"loop", ts.addr).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let stats = ts.counters.snapshot();
            if stats.denied_requests[Denied::OwnAddress.index()] == 1 {
                assert!(stats.denied_to_peer[Denied::OwnAddress.index()] >= 1);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Reload to deny loopback: the existing permission's traffic is dropped.
        ts.policy.store(PeerPolicy::default());
        let before = ts.counters.snapshot();
        relay.send_to(b"after-reload", peer_addr).await.unwrap();
        assert_eq!(recv_within(&peer, SILENCE).await, None);
        let after = ts.counters.snapshot();
        assert_eq!(after.to_peer_packets, before.to_peer_packets);
        assert_eq!(
            after.denied_to_peer[Denied::Loopback.index()],
            before.denied_to_peer[Denied::Loopback.index()] + 1
        );

        client.close().await.unwrap();
        ts.server.close().await.unwrap();
    }

    #[tokio::test]
    async fn unauthenticated_peer_requests_are_left_to_the_crate() {
        let policy = loopback_policy(&["127.0.0.2/32"], &[]);
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let denied = turn::proto::peeraddr::PeerAddress {
            ip: "127.0.0.2".parse().unwrap(),
            port: 9,
        };
        let build = |integrity: Option<MessageIntegrity>, user: &str| {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(stun::agent::TransactionId::new()),
                Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
                Box::new(turn::proto::peeraddr::PeerAddress {
                    ip: denied.ip,
                    port: denied.port,
                }),
                Box::new(TextAttribute::new(ATTR_USERNAME, user.into())),
                Box::new(TextAttribute::new(ATTR_REALM, "rtcrelay".into())),
                Box::new(TextAttribute::new(stun::attributes::ATTR_NONCE, "n".into())),
            ];
            if let Some(mi) = integrity {
                setters.push(Box::new(mi));
            }
            setters.push(Box::new(stun::fingerprint::FINGERPRINT));
            let mut m = Message::new();
            m.build(&setters).unwrap();
            m.raw
        };
        let good_key = || {
            MessageIntegrity::new_long_term_integrity(
                "user".into(),
                "rtcrelay".into(),
                "pass".into(),
            )
        };
        // Authenticated: 403 with integrity.
        let (reason, response) =
            screen_peer_request(&build(Some(good_key()), "user"), src, &policy, &StaticAuth)
                .expect("403");
        assert_eq!(reason, Denied::DenyList);
        let mut r = Message {
            raw: response,
            ..Default::default()
        };
        r.decode().unwrap();
        assert_eq!(
            r.typ,
            MessageType::new(METHOD_CREATE_PERMISSION, CLASS_ERROR_RESPONSE)
        );
        let mut code = ErrorCodeAttribute::default();
        stun::message::Getter::get_from(&mut code, &r).unwrap();
        assert!(code.code == CODE_FORBIDDEN, "{}", code.code.0);
        good_key().check(&mut r).unwrap();

        // No integrity, wrong password, unknown user: passed through.
        assert!(screen_peer_request(&build(None, "user"), src, &policy, &StaticAuth).is_none());
        let wrong = MessageIntegrity::new_long_term_integrity(
            "user".into(),
            "rtcrelay".into(),
            "wrong".into(),
        );
        assert!(
            screen_peer_request(&build(Some(wrong), "user"), src, &policy, &StaticAuth).is_none()
        );
        assert!(
            screen_peer_request(&build(Some(good_key()), "eve"), src, &policy, &StaticAuth)
                .is_none()
        );
        // Allowed peer or other traffic: passed through.
        assert!(screen_peer_request(
            &build(Some(good_key()), "user"),
            src,
            &loopback_policy(&[], &[]),
            &StaticAuth
        )
        .is_none());
        assert!(
            screen_peer_request(&[0x40, 0, 0, 4, 1, 2, 3, 4], src, &policy, &StaticAuth).is_none()
        );
        assert!(screen_peer_request(&[0u8; 3], src, &policy, &StaticAuth).is_none());
    }
}
