//! The running TURN server: the `turn` crate's [`Server`] with our pieces
//! plugged into its extension points.
//!
//! For each `turn.listen_udp` address, [`TurnServer::start`] binds a UDP
//! socket and stacks, outermost first:
//!
//! 1. [`PeerRequestGuard`]: answers CreatePermission/ChannelBind for denied
//!    peers with 403;
//! 2. `ListenerConn` (here): shows each datagram to
//!    [`TurnAuthHandler::observe`] (secret rotation), refuses Allocate
//!    requests over `turn.user_quota` / `turn.total_quota` with 486, and
//!    watches the crate's responses to count allocations (created, 508),
//!    wrong passwords, and to record which username holds which allocation;
//! 3. the socket.
//!
//! Relay sockets come from [`PolicedRelayGenerator`] (relay IP, port range,
//! external IP, peer policy on every datagram), wrapped by a tracking
//! generator whose sockets enforce `turn.max_bps_per_allocation` and tell
//! the allocation tracker when the crate drops the allocation (whatever the
//! reason: expiry, Refresh with lifetime 0, shutdown).
//!
//! # Why one pending request per listener is enough
//!
//! The crate's server reads each listener `Conn` in one loop that handles a
//! datagram completely — including sending its response through the same
//! `Conn` — before reading the next. So the response a listener sends always
//! answers the request it returned last, and `ListenerConn` only remembers
//! that one. A TCP/TLS adapter that multiplexes its connections into one
//! `Conn` keeps that property (one read loop per `Conn`).
//!
//! # Quotas
//!
//! An Allocate request that carries USERNAME and MESSAGE-INTEGRITY reserves
//! a slot for its username before the crate handles it; the response turns
//! the reservation into a live allocation (success) or releases it (error),
//! and a reservation left unanswered is released when the listener's next
//! request arrives. So concurrent listeners cannot overshoot the quotas. A
//! request over a quota whose MESSAGE-INTEGRITY verifies is answered 486
//! (Allocation Quota Reached) here; one that does not verify goes to the
//! crate, which refuses it (401/400), so 486 tells strangers nothing. The
//! user quota counts usernames as the client sends them: a REST username is
//! the whole `expiry:user-id` string (as in coturn).
//!
//! # Not here yet
//!
//! - `turn.listen_tcp` / `turn.listen_tls` are validated but not served.
//!   The TCP/TLS adapter (`crate::stream::StreamListener`) plugs in where
//!   [`TurnServer::start`] binds UDP listeners: bind it, add its address to
//!   the listeners (own addresses, URLs), and `ListenerParts::conn_config`
//!   it with [`Transport::Tcp`] / [`Transport::Tls`]; keep it to call its
//!   `shutdown` from [`TurnServer::shutdown`], and drop the
//!   [`StartError::NoListener`] / `start_warnings` notes about TCP/TLS.
//! - `turn.max_allocation_lifetime` below 1 h is not enforced: the crate
//!   grants what the client asks up to its own 1 h cap and offers no hook to
//!   shorten it.
//! - No rate limit on unauthenticated requests yet (the crate's nonce map).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{
    ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_INSUFFICIENT_CAPACITY,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
};
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler;
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::Conn;

use crate::config::TurnConfig;
use crate::credentials::{
    generate_secret, system_unix_time, Credentials, MintError, RealmChanged, TurnAuthHandler,
};
use crate::metrics::{ActiveAllocations, AllocationRefusal, ListenerStats, Transport, TurnMetrics};
use crate::policy::{OwnAddresses, PeerPolicy, PeerRules, SharedPeerPolicy};
use crate::relay_conn::{PeerRequestGuard, PolicedRelayGenerator, RelayCounters};

/// Why the TURN server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `[turn]` section has problems (each names its key).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// `turn.enabled` is false.
    #[error("key `turn.enabled`: the TURN server is disabled")]
    Disabled,
    #[error(
        "key `turn.listen_udp`: cannot bind UDP {addr}: {error} (another TURN server on \
         that port? set turn.listen_udp / --turn-listen-udp, or turn.enabled = false / --no-turn)"
    )]
    Bind {
        addr: SocketAddr,
        /// (Not a `#[source]`: the message already says it.)
        error: std::io::Error,
    },
    #[error(
        "no TURN listener is served (turn.listen_udp is empty; TCP and TLS are not served yet)"
    )]
    NoListener,
    #[error("the TURN server did not start: {0}")]
    Turn(#[from] turn::Error),
}

/// Why a reload was refused (nothing was applied).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    RealmChanged(#[from] RealmChanged),
}

/// One served listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    /// The bound address (the real port when the config said 0).
    pub addr: SocketAddr,
}

/// The settings a reload can change without touching allocations.
#[derive(Debug, Default)]
struct Limits {
    user_quota: AtomicU32,
    total_quota: AtomicU32,
    /// Bits per second each way per allocation; 0 = unlimited.
    max_bps: AtomicU64,
    /// Seconds; what signaling mints with.
    credential_lifetime: AtomicU64,
}

impl Limits {
    fn store(&self, config: &TurnConfig) {
        self.user_quota.store(config.user_quota, Ordering::Relaxed);
        self.total_quota
            .store(config.total_quota, Ordering::Relaxed);
        self.max_bps
            .store(config.max_bps_per_allocation, Ordering::Relaxed);
        self.credential_lifetime
            .store(config.auth.credential_lifetime.as_secs(), Ordering::Relaxed);
    }
}

/// The bundled TURN server, running.
pub struct TurnServer {
    server: Server,
    auth: Arc<TurnAuthHandler>,
    policy: SharedPeerPolicy,
    own: OwnAddresses,
    /// Used when `turn.auth.secrets` is empty; kept for the process's life so
    /// credentials minted before a reload stay valid.
    startup_secret: String,
    started: TurnConfig,
    limits: Arc<Limits>,
    listeners: Vec<Listener>,
    urls: Arc<Vec<String>>,
    tracker: Arc<AllocationTracker>,
    metrics: TurnMetrics,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("listeners", &self.listeners)
            .field("urls", &self.urls)
            .field("credentials", &self.auth.credentials())
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    /// Validates `config`, binds every UDP listener and starts serving.
    /// Warnings (settings accepted but not in force yet) are in
    /// [`TurnServer::start_warnings`].
    pub async fn start(
        config: &TurnConfig,
        metrics: TurnMetrics,
    ) -> Result<TurnServer, StartError> {
        if !config.enabled {
            return Err(StartError::Disabled);
        }
        config.validate().map_err(StartError::Invalid)?;
        if config.listen_udp.is_empty() {
            return Err(StartError::NoListener);
        }

        let startup_secret = generate_secret();
        let auth = Arc::new(TurnAuthHandler::new(Credentials::from_config(
            config,
            &startup_secret,
        )));
        let limits = Arc::new(Limits::default());
        limits.store(config);
        let tracker = Arc::new(AllocationTracker::default());

        let mut sockets = Vec::new();
        for &addr in &config.listen_udp {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|error| StartError::Bind { addr, error })?;
            let bound = socket
                .local_addr()
                .map_err(|error| StartError::Bind { addr, error })?;
            sockets.push((socket, bound));
        }
        let listeners: Vec<Listener> = sockets
            .iter()
            .map(|(_, addr)| Listener {
                transport: Transport::Udp,
                addr: *addr,
            })
            .collect();

        let own = own_addresses(config, &listeners);
        let policy = SharedPeerPolicy::new(PeerPolicy::new(&peer_rules(config), &own));
        let auth_dyn: Arc<dyn AuthHandler + Send + Sync> = auth.clone();

        metrics.set_auth(Arc::clone(&auth));
        metrics.set_active(tracker.clone());
        let parts = ListenerParts {
            config,
            auth: &auth,
            auth_dyn: &auth_dyn,
            policy: &policy,
            tracker: &tracker,
            limits: &limits,
            metrics: &metrics,
        };
        // TCP / TLS plug in here: bind a `StreamListener` per
        // `listen_tcp` / `listen_tls` address (before `own_addresses`, so
        // their addresses are denied as peers) and push
        // `parts.conn_config(Arc::new(stream_listener), bound, Transport::Tcp)`.
        let conn_configs: Vec<ConnConfig> = sockets
            .into_iter()
            .map(|(socket, bound)| parts.conn_config(Arc::new(socket), bound, Transport::Udp))
            .collect();

        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: auth_dyn,
            // The crate's default (10 min, RFC 8656 §12).
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await?;

        let urls = Arc::new(ice_urls(config, &listeners));
        Ok(TurnServer {
            server,
            auth,
            policy,
            own,
            startup_secret,
            started: config.clone(),
            limits,
            listeners,
            urls,
            tracker,
            metrics,
        })
    }

    /// Settings of `config` that are accepted but not in force in this build,
    /// one line per key (``key `turn.x`: ...``), for logging at startup.
    pub fn start_warnings(config: &TurnConfig) -> Vec<String> {
        let mut warnings = config.warnings();
        if !config.listen_tcp.is_empty() {
            warnings.push(
                "key `turn.listen_tcp`: TURN over TCP is not served by this build yet; ignored"
                    .into(),
            );
        }
        if !config.listen_tls.is_empty() {
            warnings.push(
                "key `turn.listen_tls`: TURN over TLS is not served by this build yet; ignored"
                    .into(),
            );
        }
        if config.max_allocation_lifetime < crate::config::MAX_ALLOCATION_LIFETIME {
            warnings.push(format!(
                "key `turn.max_allocation_lifetime`: caps below 1h are not enforced yet \
                 (allocations may live up to 1h per Refresh), got {}",
                humantime::format_duration(config.max_allocation_lifetime)
            ));
        }
        warnings
    }

    /// The listeners being served.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The URLs of the served listeners, as handed to clients
    /// (`turn:127.0.0.1:3478?transport=udp`). A wildcard listener is named by
    /// `turn.external_ip`, else by `turn.relay_ip`; one that neither names is
    /// left out.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The authentication handler in force (credentials, refusals).
    pub fn auth(&self) -> &Arc<TurnAuthHandler> {
        &self.auth
    }

    /// The peer policy in force.
    pub fn policy(&self) -> &SharedPeerPolicy {
        &self.policy
    }

    /// Allocations alive (all listeners).
    pub fn active_allocations(&self) -> u64 {
        self.tracker.total_live()
    }

    /// Mints short-lived credentials for this server's URLs, for signaling.
    pub fn minter(&self) -> TurnMinter {
        TurnMinter {
            auth: Arc::clone(&self.auth),
            urls: Arc::clone(&self.urls),
            limits: Arc::clone(&self.limits),
        }
    }

    /// Applies a new `[turn]` section without dropping allocations: secrets,
    /// users and credential lifetime, the peer policy, quotas and the
    /// bandwidth cap. Keys that need a restart (listeners, relay address and
    /// ports, TLS files, `enabled`) are not applied; each one that changed is
    /// returned as a warning. An invalid section or another realm is refused
    /// whole (the running settings stay).
    pub fn reload(&self, config: &TurnConfig) -> Result<Vec<String>, ReloadError> {
        config.validate().map_err(ReloadError::Invalid)?;
        self.auth
            .replace(Credentials::from_config(config, &self.startup_secret))?;
        self.policy
            .store(PeerPolicy::new(&peer_rules(config), &self.own));
        self.limits.store(config);

        let s = &self.started;
        let mut warnings = Vec::new();
        let mut restart = |key: &str, changed: bool| {
            if changed {
                warnings.push(format!(
                    "key `turn.{key}`: changed, but takes effect only after a restart"
                ));
            }
        };
        restart("enabled", s.enabled != config.enabled);
        restart("listen_udp", s.listen_udp != config.listen_udp);
        restart("listen_tcp", s.listen_tcp != config.listen_tcp);
        restart("listen_tls", s.listen_tls != config.listen_tls);
        restart("tls_cert", s.tls_cert != config.tls_cert);
        restart("tls_key", s.tls_key != config.tls_key);
        restart("relay_ip", s.relay_ip != config.relay_ip);
        restart("external_ip", s.external_ip != config.external_ip);
        restart("relay_ports", s.relay_ports != config.relay_ports);
        Ok(warnings)
    }

    /// Stops every listener and closes every allocation.
    pub async fn shutdown(&self) {
        let _ = self.server.close().await;
    }

    /// The metrics this server reports to.
    pub fn metrics(&self) -> &TurnMetrics {
        &self.metrics
    }
}

/// What every listener's `ConnConfig` is built from.
struct ListenerParts<'a> {
    config: &'a TurnConfig,
    auth: &'a Arc<TurnAuthHandler>,
    auth_dyn: &'a Arc<dyn AuthHandler + Send + Sync>,
    policy: &'a SharedPeerPolicy,
    tracker: &'a Arc<AllocationTracker>,
    limits: &'a Arc<Limits>,
    metrics: &'a TurnMetrics,
}

impl ListenerParts<'_> {
    /// One listener for the crate: `conn` (a UDP socket, or a TCP/TLS
    /// adapter presenting its connections as one packet `Conn`, bound to
    /// `local`) under [`ListenerConn`] and [`PeerRequestGuard`], with its
    /// own counters and a tracking, policed relay generator.
    fn conn_config(
        &self,
        conn: Arc<dyn Conn + Send + Sync>,
        local: SocketAddr,
        transport: Transport,
    ) -> ConnConfig {
        let counters = RelayCounters::new();
        let stats = Arc::new(ListenerStats::default());
        self.metrics
            .add_listener(transport, Arc::clone(&stats), Arc::clone(&counters));
        let listener = ListenerConn {
            inner: conn,
            local,
            transport,
            auth: Arc::clone(self.auth),
            tracker: Arc::clone(self.tracker),
            limits: Arc::clone(self.limits),
            stats: Arc::clone(&stats),
            metrics: self.metrics.clone(),
            last: Mutex::new(None),
        };
        let guard = PeerRequestGuard::new(
            Arc::new(listener),
            self.policy.clone(),
            Arc::clone(self.auth_dyn),
            Arc::clone(&counters),
        );
        let generator = PolicedRelayGenerator::new(
            self.config.relay_ip,
            self.config.relay_ports.low..=self.config.relay_ports.high,
            self.policy.clone(),
            counters,
        )
        .with_advertised_ip(self.config.advertised_relay_ip());
        ConnConfig {
            conn: Arc::new(guard),
            relay_addr_generator: Box::new(TrackingGenerator {
                inner: generator,
                tracker: Arc::clone(self.tracker),
                limits: Arc::clone(self.limits),
                stats,
            }),
        }
    }
}

fn peer_rules(config: &TurnConfig) -> PeerRules {
    PeerRules {
        allow_loopback: config.peers.allow_loopback,
        allow_private: config.peers.allow_private,
        allow: config.peers.allow.clone(),
        deny: config.peers.deny.clone(),
    }
}

/// The server's own addresses for the peer policy: the bound listeners, the
/// relay and external IPs, and every interface address when a listener or
/// the relay IP is a wildcard (then the server is reachable on all of them).
fn own_addresses(config: &TurnConfig, listeners: &[Listener]) -> OwnAddresses {
    let mut host_ips = vec![config.relay_ip];
    host_ips.extend(config.external_ip);
    let wildcard =
        config.relay_ip.is_unspecified() || listeners.iter().any(|l| l.addr.ip().is_unspecified());
    if wildcard {
        if let Ok(interfaces) = webrtc_util::ifaces::ifaces() {
            host_ips.extend(interfaces.iter().filter_map(|i| i.addr.map(|a| a.ip())));
        }
    }
    host_ips.sort();
    host_ips.dedup();
    OwnAddresses {
        listeners: listeners.iter().map(|l| l.addr).collect(),
        host_ips,
        deny_relay_ports: None,
    }
}

fn ice_urls(config: &TurnConfig, listeners: &[Listener]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| {
            let ip = if l.addr.ip().is_unspecified() {
                config
                    .external_ip
                    .or((!config.relay_ip.is_unspecified()).then_some(config.relay_ip))?
            } else {
                l.addr.ip()
            };
            Some(turn_url(l.transport, SocketAddr::new(ip, l.addr.port())))
        })
        .collect()
}

/// `turn:HOST:PORT?transport=udp|tcp`, `turns:HOST:PORT?transport=tcp`.
pub fn turn_url(transport: Transport, addr: SocketAddr) -> String {
    let host = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    match transport {
        Transport::Udp => format!("turn:{host}:{}?transport=udp", addr.port()),
        Transport::Tcp => format!("turn:{host}:{}?transport=tcp", addr.port()),
        Transport::Tls => format!("turns:{host}:{}?transport=tcp", addr.port()),
    }
}

/// Credentials for one client, as a browser's `RTCIceServer` wants them.
/// `Debug` does not print the credential.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedIceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl fmt::Debug for MintedIceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedIceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Mints REST credentials (first secret in force, `turn.auth.credential_lifetime`
/// in force) for the TURN server's URLs. Cheap to clone; follows reloads.
#[derive(Clone)]
pub struct TurnMinter {
    auth: Arc<TurnAuthHandler>,
    urls: Arc<Vec<String>>,
    limits: Arc<Limits>,
}

impl fmt::Debug for TurnMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnMinter")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl TurnMinter {
    /// The URLs credentials are minted for.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Credentials for `user_id` (username `expiry:user_id`), valid for the
    /// configured lifetime from now.
    pub fn mint(&self, user_id: &str) -> Result<MintedIceServer, MintError> {
        let lifetime = Duration::from_secs(self.limits.credential_lifetime.load(Ordering::Relaxed));
        let (username, credential) =
            self.auth
                .credentials()
                .mint(Some(user_id), system_unix_time(), lifetime)?;
        Ok(MintedIceServer {
            urls: self.urls.to_vec(),
            username,
            credential,
        })
    }
}

// ---- allocation tracking --------------------------------------------------

#[derive(Debug)]
struct Allocation {
    username: String,
    transport: Transport,
    /// (listener, client): the crate's 5-tuple.
    five_tuple: (SocketAddr, SocketAddr),
}

#[derive(Debug, Default)]
struct TrackerState {
    /// Live allocations by relay port (unique: one relay IP per server).
    by_port: HashMap<u16, Allocation>,
    five_tuples: HashSet<(SocketAddr, SocketAddr)>,
    /// Live allocations plus reservations, per username.
    per_user: HashMap<String, u32>,
    /// Live allocations plus reservations.
    total: u32,
    live_per_transport: [u64; 3],
}

/// Who holds which allocation, for quotas and the active gauge.
#[derive(Debug, Default)]
pub(crate) struct AllocationTracker {
    state: Mutex<TrackerState>,
}

impl AllocationTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn total_live(&self) -> u64 {
        self.lock().by_port.len() as u64
    }

    fn has_five_tuple(&self, listener: SocketAddr, client: SocketAddr) -> bool {
        self.lock().five_tuples.contains(&(listener, client))
    }

    /// Counts one more allocation for `username`, unless a quota is reached.
    fn reserve(&self, username: &str, limits: &Limits) -> Result<(), AllocationRefusal> {
        let mut s = self.lock();
        let user = s.per_user.get(username).copied().unwrap_or(0);
        if user >= limits.user_quota.load(Ordering::Relaxed) {
            return Err(AllocationRefusal::UserQuota);
        }
        if s.total >= limits.total_quota.load(Ordering::Relaxed) {
            return Err(AllocationRefusal::TotalQuota);
        }
        *s.per_user.entry(username.to_owned()).or_insert(0) += 1;
        s.total += 1;
        Ok(())
    }

    fn unreserve(&self, username: &str) {
        let mut s = self.lock();
        s.decrement(username);
    }

    /// An allocation was granted; `reserved` says whether
    /// [`reserve`](Self::reserve) counted it already.
    fn commit(&self, relay_port: u16, allocation: Allocation, reserved: bool) {
        let mut s = self.lock();
        if let Some(old) = s.by_port.remove(&relay_port) {
            s.forget(&old);
        }
        if !reserved {
            *s.per_user.entry(allocation.username.clone()).or_insert(0) += 1;
            s.total += 1;
        }
        s.five_tuples.insert(allocation.five_tuple);
        s.live_per_transport[allocation.transport.index()] += 1;
        s.by_port.insert(relay_port, allocation);
    }

    /// The relay socket on `relay_port` was dropped: its allocation is gone.
    fn release(&self, relay_port: u16) {
        let mut s = self.lock();
        if let Some(old) = s.by_port.remove(&relay_port) {
            s.forget(&old);
        }
    }
}

impl TrackerState {
    fn decrement(&mut self, username: &str) {
        if let Some(n) = self.per_user.get_mut(username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(username);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    fn forget(&mut self, a: &Allocation) {
        self.five_tuples.remove(&a.five_tuple);
        let live = &mut self.live_per_transport[a.transport.index()];
        *live = live.saturating_sub(1);
        self.decrement(&a.username);
    }
}

impl ActiveAllocations for AllocationTracker {
    fn active(&self, transport: Transport) -> u64 {
        self.lock().live_per_transport[transport.index()]
    }
}

/// Wraps [`PolicedRelayGenerator`]'s sockets in [`TrackedRelayConn`].
struct TrackingGenerator {
    inner: PolicedRelayGenerator,
    tracker: Arc<AllocationTracker>,
    limits: Arc<Limits>,
    stats: Arc<ListenerStats>,
}

#[async_trait]
impl RelayAddressGenerator for TrackingGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        self.inner.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (conn, relay_addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        let tracked = TrackedRelayConn {
            inner: conn,
            port: relay_addr.port(),
            tracker: Arc::clone(&self.tracker),
            limits: Arc::clone(&self.limits),
            stats: Arc::clone(&self.stats),
            to_peer: Mutex::new(Bucket::default()),
            from_peer: Mutex::new(Bucket::default()),
        };
        Ok((Arc::new(tracked), relay_addr))
    }
}

/// A token bucket, in bytes.
#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    /// Whether `len` bytes fit at `bps` bits per second (0 = unlimited). The
    /// bucket holds at most 200 ms of traffic (at least two full datagrams),
    /// so an idle allocation cannot save up a long burst.
    fn admit(&mut self, len: usize, bps: u64, now: Instant) -> bool {
        if bps == 0 {
            return true;
        }
        let rate = bps as f64 / 8.0;
        let burst = (rate / 5.0).max(3000.0);
        let elapsed = self.last.map_or(burst / rate, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            true
        } else {
            false
        }
    }
}

/// An allocation's relay socket: bandwidth cap, and tells the tracker when
/// the crate drops it (the allocation is gone then).
struct TrackedRelayConn {
    inner: Arc<dyn Conn + Send + Sync>,
    port: u16,
    tracker: Arc<AllocationTracker>,
    limits: Arc<Limits>,
    stats: Arc<ListenerStats>,
    to_peer: Mutex<Bucket>,
    from_peer: Mutex<Bucket>,
}

impl TrackedRelayConn {
    fn admit(&self, bucket: &Mutex<Bucket>, len: usize) -> bool {
        let bps = self.limits.max_bps.load(Ordering::Relaxed);
        if bps == 0 {
            return true;
        }
        let ok = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(len, bps, Instant::now());
        if !ok {
            self.stats.bandwidth_drops.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl Drop for TrackedRelayConn {
    fn drop(&mut self) {
        self.tracker.release(self.port);
    }
}

#[async_trait]
impl Conn for TrackedRelayConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            if self.admit(&self.from_peer, n) {
                return Ok((n, src));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.admit(&self.to_peer, buf.len()) {
            return Ok(buf.len());
        }
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

// ---- the listener wrapper -------------------------------------------------

/// The request a listener returned last (see the module docs).
#[derive(Debug)]
struct LastRequest {
    src: SocketAddr,
    transaction_id: [u8; 12],
    method: stun::message::Method,
    username: Option<String>,
    realm: Option<String>,
    /// The raw request when it carried MESSAGE-INTEGRITY (to tell a wrong
    /// password from other 400s).
    signed: Option<Vec<u8>>,
    /// An Allocate that reserved a quota slot for `username`.
    reserved: bool,
}

/// A listener `Conn` (see the module docs): rotation hints, quotas, and
/// bookkeeping from the crate's responses.
struct ListenerConn {
    inner: Arc<dyn Conn + Send + Sync>,
    local: SocketAddr,
    transport: Transport,
    auth: Arc<TurnAuthHandler>,
    tracker: Arc<AllocationTracker>,
    limits: Arc<Limits>,
    stats: Arc<ListenerStats>,
    metrics: TurnMetrics,
    last: Mutex<Option<LastRequest>>,
}

/// Whether `packet` starts like a STUN request (magic cookie, class bits
/// clear), from its first 8 bytes.
fn is_request(packet: &[u8]) -> bool {
    stun::message::is_message(packet)
        && packet[0] & 0xC0 == 0
        && u16::from_be_bytes([packet[0], packet[1]]) & 0x0110 == 0
}

/// Whether `packet` starts like a STUN success or error response.
fn is_response(packet: &[u8]) -> bool {
    stun::message::is_message(packet)
        && packet[0] & 0xC0 == 0
        && u16::from_be_bytes([packet[0], packet[1]]) & 0x0100 != 0
}

fn decode(packet: &[u8]) -> Option<Message> {
    let mut m = Message {
        raw: packet.to_vec(),
        ..Default::default()
    };
    m.decode().ok()?;
    Some(m)
}

impl ListenerConn {
    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<LastRequest>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the previous request (releasing an unanswered reservation)
    /// and records `packet`; returns the 486 answer when an authenticated
    /// Allocate is over a quota.
    fn on_request(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let previous = self.lock_last().take();
        if let Some(LastRequest {
            reserved: true,
            username: Some(user),
            ..
        }) = previous
        {
            self.tracker.unreserve(&user);
        }
        if !is_request(packet) {
            return None;
        }
        let m = decode(packet)?;
        if m.typ.class != CLASS_REQUEST {
            return None;
        }
        let username = TextAttribute::get_from_as(&m, ATTR_USERNAME)
            .ok()
            .map(|u| u.text);
        let realm = TextAttribute::get_from_as(&m, ATTR_REALM)
            .ok()
            .map(|r| r.text);
        let signed = m.contains(ATTR_MESSAGE_INTEGRITY);
        let mut record = LastRequest {
            src,
            transaction_id: m.transaction_id.0,
            method: m.typ.method,
            username,
            realm,
            signed: signed.then(|| packet.to_vec()),
            reserved: false,
        };
        let mut answer = None;
        if m.typ.method == METHOD_ALLOCATE && signed {
            if let Some(user) = &record.username {
                if !self.tracker.has_five_tuple(self.local, src) {
                    match self.tracker.reserve(user, &self.limits) {
                        Ok(()) => record.reserved = true,
                        Err(reason) => {
                            answer = self.quota_answer(&m, packet, reason);
                        }
                    }
                }
            }
        }
        if answer.is_none() {
            *self.lock_last() = Some(record);
        }
        answer
    }

    /// 486 for an Allocate over a quota, signed with the request's key; `None`
    /// (let the crate refuse it) when the request does not authenticate.
    fn quota_answer(
        &self,
        m: &Message,
        packet: &[u8],
        reason: AllocationRefusal,
    ) -> Option<Vec<u8>> {
        let (_, _, key) = self
            .auth
            .credentials()
            .verify_message(packet, system_unix_time())?;
        let mut response = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(m.transaction_id),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute {
                code: CODE_ALLOC_QUOTA_REACHED,
                reason: b"Allocation Quota Reached".to_vec(),
            }),
            Box::new(MessageIntegrity(key.to_vec())),
        ];
        response.build(&setters).ok()?;
        self.stats.refused(reason);
        Some(response.raw)
    }

    /// Bookkeeping from a response the crate sent to `target`.
    fn on_response(&self, packet: &[u8], target: SocketAddr) {
        if !is_response(packet) {
            return;
        }
        let request = {
            let mut last = self.lock_last();
            match last.as_ref() {
                Some(r) if r.src == target && packet.get(8..20) == Some(&r.transaction_id[..]) => {
                    last.take()
                }
                _ => None,
            }
        };
        let Some(request) = request else {
            return;
        };
        let Some(m) = decode(packet) else {
            if request.reserved {
                if let Some(user) = &request.username {
                    self.tracker.unreserve(user);
                }
            }
            return;
        };
        if request.method == METHOD_ALLOCATE && m.typ.class == CLASS_SUCCESS_RESPONSE {
            let mut relayed = turn::proto::relayaddr::RelayedAddress::default();
            match (relayed.get_from(&m), request.username) {
                (Ok(()), Some(username)) => {
                    self.stats
                        .allocations_created
                        .fetch_add(1, Ordering::Relaxed);
                    self.tracker.commit(
                        relayed.port,
                        Allocation {
                            username,
                            transport: self.transport,
                            five_tuple: (self.local, target),
                        },
                        request.reserved,
                    );
                }
                (_, username) => {
                    if let (true, Some(user)) = (request.reserved, username) {
                        self.tracker.unreserve(&user);
                    }
                }
            }
            return;
        }
        if request.reserved {
            if let Some(user) = &request.username {
                self.tracker.unreserve(user);
            }
        }
        if m.typ.class != CLASS_ERROR_RESPONSE {
            return;
        }
        let mut code = ErrorCodeAttribute::default();
        if code.get_from(&m).is_err() {
            return;
        }
        if request.method == METHOD_ALLOCATE && code.code == CODE_INSUFFICIENT_CAPACITY {
            self.stats.refused(AllocationRefusal::InsufficientCapacity);
        }
        if code.code == CODE_BAD_REQUEST {
            // The crate answers 400 both for unknown users (counted by the
            // auth handler) and for a MESSAGE-INTEGRITY no key verifies.
            if let (Some(signed), Some(user), Some(realm)) =
                (&request.signed, &request.username, &request.realm)
            {
                let credentials = self.auth.credentials();
                let now = system_unix_time();
                if credentials.keys_for(user, realm, now).is_ok()
                    && credentials.verify_message(signed, now).is_none()
                {
                    self.metrics.bad_password();
                }
            }
        }
    }
}

#[async_trait]
impl Conn for ListenerConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = match self.inner.recv_from(buf).await {
                Ok(got) => got,
                // An ICMP error reported on the socket is about one peer; the
                // crate would end the whole listener on an error.
                Err(webrtc_util::Error::Io(e))
                    if matches!(
                        e.0.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let packet = &buf[..n];
            self.auth.observe(src, packet);
            match self.on_request(packet, src) {
                None => return Ok((n, src)),
                Some(answer) => {
                    let _ = self.inner.send_to(&answer, src).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let result = self.inner.send_to(buf, target).await;
        self.on_response(buf, target);
        result
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    /// The crate "closes" the listener conn whenever an allocation closes
    /// (`Allocation::close` closes its `turn_socket`); the listener lives on.
    /// It is released when the server stops and drops it.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::net::UdpSocket;
    use turn::client::{Client, ClientConfig};

    use super::*;
    use crate::credentials::{long_term_key, rest_password};
    use crate::metrics::AllocationRefusal;

    const WAIT: Duration = Duration::from_secs(5);

    fn config(users: &[(&str, &str)]) -> TurnConfig {
        let mut c = TurnConfig {
            listen_udp: vec!["127.0.0.1:0".parse().unwrap()],
            listen_tcp: Vec::new(),
            ..TurnConfig::default()
        };
        c.peers.allow_loopback = true;
        c.auth.users = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect::<BTreeMap<_, _>>();
        c
    }

    async fn client(server: SocketAddr, user: &str, password: &str) -> Client {
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            username: user.into(),
            password: password.into(),
            realm: "rtcrelay".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        client
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn relays_counts_and_enforces_the_user_quota_with_486() {
        let mut c = config(&[("alice", "pw"), ("bob", "pw")]);
        c.user_quota = 2;
        c.total_quota = 3;
        let metrics = TurnMetrics::default();
        let server = TurnServer::start(&c, metrics.clone()).await.unwrap();
        let addr = server.listeners()[0].addr;
        assert_eq!(
            server.urls(),
            [format!("turn:127.0.0.1:{}?transport=udp", addr.port())]
        );

        // Two allocations for alice, the third gets 486.
        let a1 = client(addr, "alice", "pw").await;
        let r1 = tokio::time::timeout(WAIT, a1.allocate())
            .await
            .unwrap()
            .unwrap();
        let a2 = client(addr, "alice", "pw").await;
        let _r2 = a2.allocate().await.unwrap();
        assert_eq!(server.active_allocations(), 2);
        let a3 = client(addr, "alice", "pw").await;
        let Err(err) = a3.allocate().await else {
            panic!("over the user quota")
        };
        assert!(err.to_string().contains("486"), "{err}");
        let stats = &server.tracker;
        assert_eq!(stats.total_live(), 2);

        // bob gets the last slot of the total quota, then 486 for him too.
        let b1 = client(addr, "bob", "pw").await;
        let _rb = b1.allocate().await.unwrap();
        let b2 = client(addr, "bob", "pw").await;
        let Err(err) = b2.allocate().await else {
            panic!("over the total quota")
        };
        assert!(err.to_string().contains("486"), "{err}");

        // Relaying works and is counted.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        r1.send_to(b"hello", peer.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"hello");

        // Closing an allocation (Refresh lifetime 0) frees a slot.
        r1.close().await.unwrap();
        eventually("alice's first allocation to be released", || {
            server.active_allocations() == 2
        })
        .await;
        let _r3 = a3.allocate().await.unwrap();
        assert_eq!(server.active_allocations(), 3);

        let mut registry = prometheus_client::registry::Registry::with_prefix("rtcrelay");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "rtcrelay_turn_allocations{protocol=\"udp\"} 3",
            "rtcrelay_turn_allocations_created_total{protocol=\"udp\"} 4",
            "rtcrelay_turn_allocations_refused_total{protocol=\"udp\",reason=\"user_quota\"} 1",
            "rtcrelay_turn_allocations_refused_total{protocol=\"udp\",reason=\"total_quota\"} 1",
            "rtcrelay_turn_relayed_packets_total{protocol=\"udp\",direction=\"to_peer\"} 1",
            "rtcrelay_turn_relayed_bytes_total{protocol=\"udp\",direction=\"to_peer\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        for c in [a1, a2, a3, b1, b2] {
            c.close().await.unwrap();
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_counted() {
        let metrics = TurnMetrics::default();
        let server = TurnServer::start(&config(&[("alice", "pw")]), metrics.clone())
            .await
            .unwrap();
        let addr = server.listeners()[0].addr;
        let c = client(addr, "alice", "wrong").await;
        assert!(c.allocate().await.is_err());
        let c2 = client(addr, "mallory", "pw").await;
        assert!(c2.allocate().await.is_err());
        assert_eq!(metrics.bad_password_count(), 1);
        assert_eq!(server.auth().refusals().unknown_user, 1);
        assert_eq!(server.active_allocations(), 0);
        // No reservation leaked: the quota is intact.
        assert_eq!(server.tracker.lock().total, 0);
        c.close().await.unwrap();
        c2.close().await.unwrap();
        server.shutdown().await;
    }

    #[tokio::test]
    async fn reload_rotates_secrets_and_policy_without_dropping_allocations() {
        let mut c = config(&[]);
        c.auth.secrets = vec!["old-secret-0123456789".into()];
        let server = TurnServer::start(&c, TurnMetrics::default()).await.unwrap();
        let addr = server.listeners()[0].addr;
        let old = server.minter().mint("7").unwrap();
        assert!(old.username.ends_with(":7"), "{old:?}");
        assert!(!format!("{old:?}").contains(&old.credential));
        let cl = client(addr, &old.username, &old.credential).await;
        let relay = cl.allocate().await.unwrap();

        // Rotate: the new secret mints, the old one is still accepted.
        let mut rotated = c.clone();
        rotated.auth.secrets = vec![
            "new-secret-0123456789".into(),
            "old-secret-0123456789".into(),
        ];
        rotated.listen_udp = vec!["127.0.0.1:1".parse().unwrap()];
        let warnings = server.reload(&rotated).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("key `turn.listen_udp`"),
            "{warnings:?}"
        );
        let new = server.minter().mint("7").unwrap();
        assert_eq!(
            new.credential,
            rest_password("new-secret-0123456789", &new.username)
        );

        // The old allocation keeps relaying (a new permission needs its
        // credentials to authenticate: rotation hints at work).
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay
            .send_to(b"after-reload", peer.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"after-reload");

        // Policy reload: loopback denied from now on.
        let mut strict = rotated.clone();
        strict.peers.allow_loopback = false;
        server.reload(&strict).unwrap();
        assert!(server
            .policy()
            .check("127.0.0.1:9".parse().unwrap())
            .is_err());

        // A realm change or an invalid section is refused whole.
        let mut other_realm = strict.clone();
        other_realm.realm = "elsewhere".into();
        other_realm.auth.secrets = vec!["x-secret-0123456789".into()];
        assert!(server.reload(&other_realm).is_err());
        let mut invalid = strict.clone();
        invalid.user_quota = 0;
        invalid.auth.secrets = vec!["y-secret-0123456789".into()];
        assert!(server.reload(&invalid).is_err());
        assert_eq!(server.auth().credentials().secret_count(), 2);
        let _ = long_term_key; // (keys are the crate's business here)

        relay.close().await.unwrap();
        cl.close().await.unwrap();
        server.shutdown().await;
    }

    #[tokio::test]
    async fn without_configured_secrets_a_startup_secret_mints() {
        let server = TurnServer::start(&config(&[]), TurnMetrics::default())
            .await
            .unwrap();
        let addr = server.listeners()[0].addr;
        let minted = server.minter().mint("42").unwrap();
        let cl = client(addr, &minted.username, &minted.credential).await;
        let relay = cl.allocate().await.unwrap();
        relay.close().await.unwrap();
        cl.close().await.unwrap();
        // The startup secret survives a reload.
        server.reload(&config(&[])).unwrap();
        let again = server.minter().mint("42").unwrap();
        let cl = client(addr, &again.username, &again.credential).await;
        assert!(cl.allocate().await.is_ok());
        cl.close().await.unwrap();
        server.shutdown().await;
    }

    #[test]
    fn start_refuses_disabled_and_empty_udp() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut c = config(&[]);
        c.enabled = false;
        assert!(matches!(
            rt.block_on(TurnServer::start(&c, TurnMetrics::default())),
            Err(StartError::Disabled)
        ));
        let mut c = config(&[]);
        c.listen_udp.clear();
        c.listen_tcp = vec!["127.0.0.1:0".parse().unwrap()];
        assert!(matches!(
            rt.block_on(TurnServer::start(&c, TurnMetrics::default())),
            Err(StartError::NoListener)
        ));
        let warnings = TurnServer::start_warnings(&c);
        assert!(warnings
            .iter()
            .any(|w| w.starts_with("key `turn.listen_tcp`")));
    }

    #[test]
    fn urls_name_wildcard_listeners_by_external_or_relay_ip() {
        let mut c = config(&[]);
        let l = |a: &str| Listener {
            transport: Transport::Udp,
            addr: a.parse().unwrap(),
        };
        assert_eq!(
            ice_urls(&c, &[l("0.0.0.0:3478"), l("[::1]:3479")]),
            [
                "turn:127.0.0.1:3478?transport=udp",
                "turn:[::1]:3479?transport=udp"
            ]
        );
        c.relay_ip = "0.0.0.0".parse().unwrap();
        assert!(ice_urls(&c, &[l("0.0.0.0:3478")]).is_empty());
        c.external_ip = Some("203.0.113.5".parse().unwrap());
        assert_eq!(
            ice_urls(&c, &[l("0.0.0.0:3478")]),
            ["turn:203.0.113.5:3478?transport=udp"]
        );
        assert_eq!(
            turn_url(Transport::Tls, "127.0.0.1:443".parse().unwrap()),
            "turns:127.0.0.1:443?transport=tcp"
        );
    }

    #[test]
    fn bucket_caps_rate_and_burst() {
        let mut b = Bucket::default();
        let t0 = Instant::now();
        // 80 kbit/s = 10 kB/s; burst max(2 kB, 3000 B) = 3000 B.
        assert!(b.admit(1500, 80_000, t0));
        assert!(b.admit(1500, 80_000, t0));
        assert!(!b.admit(1500, 80_000, t0));
        // 150 ms later: 1500 B more.
        assert!(b.admit(1500, 80_000, t0 + Duration::from_millis(150)));
        assert!(!b.admit(100, 80_000, t0 + Duration::from_millis(150)));
        assert!(b.admit(1500, 0, t0), "0 = unlimited");
    }

    #[test]
    fn tracker_reservations_and_releases_balance() {
        let t = AllocationTracker::default();
        let limits = Limits::default();
        limits.user_quota.store(1, Ordering::Relaxed);
        limits.total_quota.store(2, Ordering::Relaxed);
        let a = |user: &str, port: u16| Allocation {
            username: user.into(),
            transport: Transport::Udp,
            five_tuple: (
                "127.0.0.1:3478".parse().unwrap(),
                SocketAddr::from(([127, 0, 0, 1], port)),
            ),
        };
        t.reserve("u", &limits).unwrap();
        assert_eq!(t.reserve("u", &limits), Err(AllocationRefusal::UserQuota));
        t.commit(50000, a("u", 1), true);
        t.reserve("v", &limits).unwrap();
        assert_eq!(t.reserve("w", &limits), Err(AllocationRefusal::TotalQuota));
        t.unreserve("v");
        assert!(t.has_five_tuple(
            "127.0.0.1:3478".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap()
        ));
        t.release(50000);
        t.release(50000);
        assert_eq!(t.total_live(), 0);
        let s = t.lock();
        assert_eq!(s.total, 0);
        assert!(s.per_user.is_empty() && s.five_tuples.is_empty());
    }
}
