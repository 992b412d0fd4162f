//! The running TURN server: the `turn` crate's [`Server`] with our pieces
//! plugged into its extension points.
//!
//! For each `turn.listen_udp` address, [`TurnServer::start`] binds a UDP
//! socket, and for each `turn.listen_tcp` / `turn.listen_tls` address a
//! [`StreamListener`] (all its connections as one packet `Conn`), and
//! stacks on each, outermost first:
//!
//! 1. [`PeerRequestGuard`]: answers CreatePermission/ChannelBind for denied
//!    peers with 403;
//! 2. `ListenerConn` (here): shows each datagram to
//!    [`TurnAuthHandler::observe`] (secret rotation); drops requests over
//!    the unauthenticated budgets ([`crate::limit`]); refuses Allocate
//!    requests over `turn.user_quota` / `turn.total_quota` with 486; caps
//!    the LIFETIME of Allocate and Refresh requests at
//!    `turn.max_allocation_lifetime`; and watches the crate's responses to
//!    count allocations (created, 508), wrong passwords, nonces issued, and
//!    to record which username holds which allocation;
//! 3. the socket or stream listener.
//!
//! Relay sockets come from [`PolicedRelayGenerator`] (relay IP, port range,
//! external IP, peer policy on every datagram), wrapped by a tracking
//! generator whose sockets apply the network lab ([`crate::netlab`]: the
//! setting for the allocation's username, read from the Allocate the
//! listener is handling), enforce `turn.max_bps_per_allocation` and tell
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
//! # Lifetime cap
//!
//! The crate grants what a client asks for (10 min when it asks nothing or
//! 1 h or more) and has no setting to grant less. So an Allocate or Refresh
//! whose MESSAGE-INTEGRITY verifies and whose granted lifetime would exceed
//! `turn.max_allocation_lifetime` is rewritten before the crate sees it:
//! LIFETIME set to the cap, MESSAGE-INTEGRITY recomputed with the same key
//! (and FINGERPRINT, if it had one). The crate then grants the cap, tells
//! the client so in its response, and expires the allocation on time if it
//! is not refreshed. A Refresh with LIFETIME 0 (deallocation) is untouched.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rtcrelay_netlab::{Direction, Lab};
use stun::attributes::{
    ATTR_FINGERPRINT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME,
};
use stun::error_code::{
    ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_INSUFFICIENT_CAPACITY,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler;
use turn::proto::lifetime::{Lifetime, DEFAULT_LIFETIME};
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::Conn;

use crate::config::{TurnConfig, MAX_ALLOCATION_LIFETIME};
use crate::credentials::{
    generate_secret, system_unix_time, Credentials, MintError, RealmChanged, TurnAuthHandler,
};
use crate::limit::{TokenBucket, UnauthenticatedLimiter, UnauthenticatedRates};
use crate::metrics::{ActiveAllocations, AllocationRefusal, ListenerStats, Transport, TurnMetrics};
use crate::netlab::{AllocationLab, Next, Pushed, UsernameLookup};
use crate::policy::{OwnAddresses, PeerPolicy, PeerRules, SharedPeerPolicy};
use crate::relay_conn::{PeerRequestGuard, PolicedRelayGenerator, RelayCounters};
use crate::stream::{tls_acceptor_from_pem_files, StreamListener, StreamOptions, TlsSetupError};

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
        "key `turn.{key}`: cannot bind {} {addr}: {error} (another TURN server on \
         that port? set turn.{key} / --turn-{}, or turn.enabled = false / --no-turn)",
        .transport.as_str().to_uppercase(), .key.replace('_', "-")
    )]
    Bind {
        key: &'static str,
        transport: Transport,
        addr: SocketAddr,
        /// (Not a `#[source]`: the message already says it.)
        error: std::io::Error,
    },
    /// `turn.tls_cert` / `turn.tls_key` cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
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
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// One served listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    /// The bound address (the real port when the config said 0).
    pub addr: SocketAddr,
}

impl Listener {
    fn new(transport: Transport, addr: SocketAddr) -> Self {
        Listener { transport, addr }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Seconds; `turn.max_allocation_lifetime`.
    max_lifetime: AtomicU64,
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
        self.max_lifetime
            .store(config.max_allocation_lifetime.as_secs(), Ordering::Relaxed);
    }
}

fn unauthenticated_rates(config: &TurnConfig) -> UnauthenticatedRates {
    UnauthenticatedRates {
        per_ip: config.unauthenticated_rate_per_ip,
        total: config.unauthenticated_rate_total,
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
    /// The TCP and TLS listeners, to stop them and to renew certificates.
    streams: Vec<Arc<StreamListener>>,
    unauthenticated: Arc<Mutex<UnauthenticatedLimiter>>,
    urls: Arc<Vec<String>>,
    tracker: Arc<AllocationTracker>,
    metrics: TurnMetrics,
    netlab: Arc<Lab>,
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
    /// Validates `config`, binds every listener (UDP, TCP, TLS) and starts
    /// serving. Warnings (settings that work but are probably not meant) are
    /// in [`TurnServer::start_warnings`]. No network lab: see
    /// [`start_with_lab`](Self::start_with_lab).
    pub async fn start(
        config: &TurnConfig,
        metrics: TurnMetrics,
    ) -> Result<TurnServer, StartError> {
        Self::start_with_lab(config, metrics, Arc::new(Lab::default())).await
    }

    /// As [`start`](Self::start), with each allocation's relayed traffic
    /// impaired as `netlab` says for its username (see [`crate::netlab`]).
    pub async fn start_with_lab(
        config: &TurnConfig,
        metrics: TurnMetrics,
        netlab: Arc<Lab>,
    ) -> Result<TurnServer, StartError> {
        if !config.enabled {
            return Err(StartError::Disabled);
        }
        config.validate().map_err(StartError::Invalid)?;

        let startup_secret = generate_secret();
        let auth = Arc::new(TurnAuthHandler::new(Credentials::from_config(
            config,
            &startup_secret,
        )));
        let auth_dyn: Arc<dyn AuthHandler + Send + Sync> = auth.clone();
        let limits = Arc::new(Limits::default());
        limits.store(config);
        let tracker = Arc::new(AllocationTracker::default());

        // Bind everything first: the peer policy denies every bound address.
        let mut bound: Vec<(Arc<dyn Conn + Send + Sync>, Listener)> = Vec::new();
        for &addr in &config.listen_udp {
            let bind_error = |error| StartError::Bind {
                key: "listen_udp",
                transport: Transport::Udp,
                addr,
                error,
            };
            let socket = bind_listener_udp(addr).map_err(bind_error)?;
            let local = socket.local_addr().map_err(bind_error)?;
            bound.push((Arc::new(socket), Listener::new(Transport::Udp, local)));
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) if !config.listen_tls.is_empty() => {
                Some(tls_acceptor_from_pem_files(cert, key)?)
            }
            _ => None,
        };
        let stream_options = StreamOptions {
            release_allocations: Some(Arc::clone(&auth_dyn)),
            ..StreamOptions::default()
        };
        let mut streams = Vec::new();
        let stream_addrs = config
            .listen_tcp
            .iter()
            .map(|a| ("listen_tcp", Transport::Tcp, *a))
            .chain(
                config
                    .listen_tls
                    .iter()
                    .map(|a| ("listen_tls", Transport::Tls, *a)),
            );
        for (key, transport, addr) in stream_addrs {
            let bind_error = |error| StartError::Bind {
                key,
                transport,
                addr,
                error,
            };
            let listener = match (transport, &tls) {
                (Transport::Tls, Some(tls)) => {
                    StreamListener::bind_tls(addr, tls.clone(), stream_options.clone()).await
                }
                _ => StreamListener::bind_tcp(addr, stream_options.clone()).await,
            }
            .map_err(bind_error)?;
            let listener = Arc::new(listener);
            let local = listener
                .local_addr()
                .map_err(|e| bind_error(std::io::Error::other(e.to_string())))?;
            metrics.add_stream(transport, Arc::clone(&listener));
            streams.push(Arc::clone(&listener));
            bound.push((listener, Listener::new(transport, local)));
        }
        let listeners: Vec<Listener> = bound.iter().map(|(_, l)| *l).collect();

        let own = own_addresses(config, &listeners);
        let policy = SharedPeerPolicy::new(PeerPolicy::new(&peer_rules(config), &own));
        let unauthenticated = Arc::new(Mutex::new(UnauthenticatedLimiter::new(
            unauthenticated_rates(config),
        )));

        metrics.set_auth(Arc::clone(&auth));
        metrics.set_active(tracker.clone());
        let parts = ListenerParts {
            config,
            auth: &auth,
            auth_dyn: &auth_dyn,
            policy: &policy,
            tracker: &tracker,
            limits: &limits,
            unauthenticated: &unauthenticated,
            metrics: &metrics,
            netlab: &netlab,
        };
        let conn_configs: Vec<ConnConfig> = bound
            .into_iter()
            .map(|(conn, l)| parts.conn_config(conn, l.addr, l.transport))
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
            streams,
            unauthenticated,
            urls,
            tracker,
            metrics,
            netlab,
        })
    }

    /// Settings of `config` that work but are probably not what the operator
    /// meant, one line per key (``key `turn.x`: ...``), for logging at
    /// startup.
    pub fn start_warnings(config: &TurnConfig) -> Vec<String> {
        config.warnings()
    }

    /// The listeners being served.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The TCP and TLS listeners, in `listen_tcp` then `listen_tls` order
    /// (for their connection statistics).
    pub fn stream_listeners(&self) -> &[Arc<StreamListener>] {
        &self.streams
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
    /// bandwidth cap, the lifetime cap, the unauthenticated budgets, and the
    /// TLS certificate (the files are read again, so a renewed certificate
    /// is served to new connections). Keys that need a restart (listeners,
    /// relay address and ports, `enabled`) are not applied; each one that
    /// changed is returned as a warning. An invalid section, another realm or
    /// unreadable TLS files are refused whole (the running settings stay).
    pub fn reload(&self, config: &TurnConfig) -> Result<Vec<String>, ReloadError> {
        config.validate().map_err(ReloadError::Invalid)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) if !config.listen_tls.is_empty() => {
                Some(tls_acceptor_from_pem_files(cert, key)?)
            }
            _ => None,
        };
        self.auth
            .replace(Credentials::from_config(config, &self.startup_secret))?;
        self.policy
            .store(PeerPolicy::new(&peer_rules(config), &self.own));
        self.limits.store(config);
        lock(&self.unauthenticated).set_rates(unauthenticated_rates(config));
        if let Some(tls) = tls {
            for stream in &self.streams {
                stream.replace_tls(tls.clone());
            }
        }

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
        restart("relay_ip", s.relay_ip != config.relay_ip);
        restart("external_ip", s.external_ip != config.external_ip);
        restart("relay_ports", s.relay_ports != config.relay_ports);
        Ok(warnings)
    }

    /// Stops every listener and closes every allocation.
    pub async fn shutdown(&self) {
        for stream in &self.streams {
            stream.shutdown();
        }
        let _ = self.server.close().await;
    }

    /// The metrics this server reports to.
    pub fn metrics(&self) -> &TurnMetrics {
        &self.metrics
    }

    /// The network lab the allocations follow.
    pub fn netlab(&self) -> &Arc<Lab> {
        &self.netlab
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
    unauthenticated: &'a Arc<Mutex<UnauthenticatedLimiter>>,
    metrics: &'a TurnMetrics,
    netlab: &'a Arc<Lab>,
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
        let pending = Arc::new(Mutex::new(None));
        let listener = ListenerConn {
            inner: conn,
            local,
            transport,
            auth: Arc::clone(self.auth),
            tracker: Arc::clone(self.tracker),
            limits: Arc::clone(self.limits),
            unauthenticated: Arc::clone(self.unauthenticated),
            stats: Arc::clone(&stats),
            metrics: self.metrics.clone(),
            last: Arc::clone(&pending),
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
                pending,
                netlab: Arc::clone(self.netlab),
            }),
        }
    }
}

/// Socket buffers asked of the kernel for each UDP listener (it grants at
/// most `net.core.rmem_max` / `wmem_max`). Every client of the listener
/// shares it; Linux's default (about 208 KiB, some 250 small datagrams)
/// overflows in a few milliseconds of a burst, which `scripts/bench-turn`
/// showed as loss at 10,000 messages/s with most of the core idle (coturn
/// asks for the same 4 MiB).
const LISTENER_SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn bind_listener_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner.
    let _ = socket.set_recv_buffer_size(LISTENER_SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(LISTENER_SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
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

    /// Who holds the allocation on `relay_port`.
    fn username_of(&self, relay_port: u16) -> Option<String> {
        self.lock()
            .by_port
            .get(&relay_port)
            .map(|a| a.username.clone())
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
    /// The listener's pending request (see the module docs).
    pending: Arc<Mutex<Option<LastRequest>>>,
    netlab: Arc<Lab>,
}

#[async_trait]
impl RelayAddressGenerator for TrackingGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        self.inner.validate()
    }

    /// The crate calls this while it handles an Allocate, which is the
    /// request this listener returned last (one read loop per listener, see
    /// the module docs): its USERNAME is the allocation's. Should it be
    /// missing, the lab asks the tracker later (committed when the crate
    /// answers).
    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (conn, relay_addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        let port = relay_addr.port();
        let username = lock(&self.pending)
            .as_ref()
            .filter(|r| r.method == METHOD_ALLOCATE)
            .and_then(|r| r.username.clone());
        let tracker = Arc::clone(&self.tracker);
        let lookup: UsernameLookup = Box::new(move || tracker.username_of(port));
        let tracked = TrackedRelayConn {
            path: Arc::new(RelayPath {
                inner: conn,
                limits: Arc::clone(&self.limits),
                stats: Arc::clone(&self.stats),
                to_peer: Mutex::new(TokenBucket::default()),
                from_peer: Mutex::new(TokenBucket::default()),
                lab: AllocationLab::new(Arc::clone(&self.netlab), username, Some(lookup)),
            }),
            port,
            tracker: Arc::clone(&self.tracker),
        };
        Ok((Arc::new(tracked), relay_addr))
    }
}

/// Whether `len` bytes fit `bucket` at `bps` bits per second (0 =
/// unlimited). The bucket holds at most 200 ms of traffic (at least two full
/// datagrams), so an idle allocation cannot save up a long burst.
fn admit_bytes(bucket: &mut TokenBucket, len: usize, bps: u64, now: Instant) -> bool {
    if bps == 0 {
        return true;
    }
    let rate = bps as f64 / 8.0;
    let burst = (rate / 5.0).max(3000.0);
    bucket.admit(len as f64, rate, burst, now)
}

/// An allocation's relay socket and what its lab driver shares with it.
struct RelayPath {
    inner: Arc<dyn Conn + Send + Sync>,
    limits: Arc<Limits>,
    stats: Arc<ListenerStats>,
    to_peer: Mutex<TokenBucket>,
    from_peer: Mutex<TokenBucket>,
    lab: AllocationLab,
}

impl RelayPath {
    fn admit(&self, bucket: &Mutex<TokenBucket>, len: usize) -> bool {
        let bps = self.limits.max_bps.load(Ordering::Relaxed);
        if bps == 0 {
            return true;
        }
        let ok = admit_bytes(&mut lock(bucket), len, bps, Instant::now());
        if !ok {
            self.stats.bandwidth_drops.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Sends to a peer within the bandwidth cap; a datagram over it is
    /// dropped, counted and reported sent.
    async fn send_capped(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.admit(&self.to_peer, buf.len()) {
            return Ok(buf.len());
        }
        self.inner.send_to(buf, target).await
    }

    /// Sends the up datagrams the lab has due now, in release order.
    async fn release_up(&self) {
        let _order = self.lab.sending().await;
        while let Next::Due(datagram) = self.lab.next(Direction::Up, Instant::now()) {
            // As for the crate's own sends: a failed datagram is lost.
            let _ = self.send_capped(&datagram.data, datagram.peer).await;
        }
    }
}

/// The lab's driver for one impaired allocation: sends up datagrams when
/// they are due and reports the counters; ends when nothing applies and
/// nothing is held, or when the allocation ends.
async fn drive_lab(path: Arc<RelayPath>) {
    while !path.lab.is_closed() {
        path.release_up().await;
        let Some(until) = path.lab.driver_sleep(Instant::now()) else {
            break;
        };
        path.lab.sleep(until).await;
    }
}

/// An allocation's relay socket: the network lab, the bandwidth cap, and
/// tells the tracker when the crate drops it (the allocation is gone then).
struct TrackedRelayConn {
    path: Arc<RelayPath>,
    port: u16,
    tracker: Arc<AllocationTracker>,
}

impl TrackedRelayConn {
    fn start_driver(&self) {
        tokio::spawn(drive_lab(Arc::clone(&self.path)));
    }
}

impl Drop for TrackedRelayConn {
    fn drop(&mut self) {
        self.path.lab.finish();
        self.tracker.release(self.port);
    }
}

#[async_trait]
impl Conn for TrackedRelayConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.path.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    /// The next datagram from a peer, within the bandwidth cap, as the lab
    /// lets it through. The crate calls this from one loop per allocation,
    /// so this is the only reader: it releases held datagrams itself,
    /// waiting for the next datagram or the next release, whichever comes
    /// first. (Cancel-safe: a received datagram is returned or held before
    /// the next await.)
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let path = &self.path;
        loop {
            let release = if path.lab.may_hold() {
                match path.lab.next(Direction::Down, Instant::now()) {
                    Next::Due(datagram) => {
                        let n = datagram.data.len().min(buf.len());
                        buf[..n].copy_from_slice(&datagram.data[..n]);
                        return Ok((n, datagram.peer));
                    }
                    Next::Wait(at) => at,
                }
            } else {
                None
            };
            let (n, src) = match release {
                None => path.inner.recv_from(buf).await?,
                Some(at) => tokio::select! {
                    got = path.inner.recv_from(buf) => got?,
                    () = tokio::time::sleep_until(at.into()) => continue,
                },
            };
            if !path.admit(&path.from_peer, n) {
                continue;
            }
            if path.lab.is_clean() {
                return Ok((n, src));
            }
            match path
                .lab
                .push(Direction::Down, Instant::now(), &buf[..n], src)
            {
                Pushed::Bypass => return Ok((n, src)),
                Pushed::Taken { start_driver, .. } => {
                    if start_driver {
                        self.start_driver();
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.path.inner.send(buf).await
    }

    /// To a peer, as the lab lets it through (held datagrams are reported
    /// sent), within the bandwidth cap.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let path = &self.path;
        if path.lab.is_clean() {
            return path.send_capped(buf, target).await;
        }
        match path.lab.push(Direction::Up, Instant::now(), buf, target) {
            Pushed::Bypass => path.send_capped(buf, target).await,
            Pushed::Taken {
                start_driver,
                wake_driver,
            } => {
                if start_driver {
                    self.start_driver();
                } else if wake_driver {
                    path.lab.wake();
                }
                path.release_up().await;
                Ok(buf.len())
            }
        }
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.path.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.path.inner.remote_addr()
    }

    /// The crate closes the relay socket when the allocation closes: held
    /// datagrams go with it.
    async fn close(&self) -> webrtc_util::Result<()> {
        self.path.lab.finish();
        self.path.inner.close().await
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
    unauthenticated: Arc<Mutex<UnauthenticatedLimiter>>,
    stats: Arc<ListenerStats>,
    metrics: TurnMetrics,
    /// Shared with the listener's relay generator, which reads the username
    /// of the Allocate being handled.
    last: Arc<Mutex<Option<LastRequest>>>,
}

/// What `ListenerConn` does with a datagram before the crate sees it.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Hand it to the crate as it is.
    Pass,
    /// Hand the crate this instead (the lifetime cap).
    Replace(Vec<u8>),
    /// Send this answer ourselves (486); the crate sees nothing.
    Answer(Vec<u8>),
    /// Drop it (counted): over an unauthenticated budget.
    Drop,
}

/// The methods the crate authenticates (and answers with a nonce when
/// they carry none it issued).
fn is_authenticated_method(method: stun::message::Method) -> bool {
    [
        METHOD_ALLOCATE,
        METHOD_REFRESH,
        METHOD_CREATE_PERMISSION,
        METHOD_CHANNEL_BIND,
    ]
    .contains(&method)
}

/// The lifetime the crate grants for an Allocate or Refresh `m` (its own
/// rule: the requested LIFETIME if below 1 h, else 10 minutes).
fn granted_lifetime(m: &Message) -> Duration {
    let mut lifetime = Lifetime::default();
    match lifetime.get_from(m) {
        Ok(()) if lifetime.0 < MAX_ALLOCATION_LIFETIME => lifetime.0,
        _ => DEFAULT_LIFETIME,
    }
}

/// `m` with LIFETIME set to `lifetime`, signed again with `key` (and a
/// FINGERPRINT again if it had one).
fn with_lifetime(m: &Message, lifetime: Duration, key: &[u8]) -> Option<Vec<u8>> {
    let mut out = Message::new();
    out.build(&[Box::new(m.transaction_id), Box::new(m.typ)])
        .ok()?;
    let mut fingerprint = false;
    for attr in &m.attributes.0 {
        if attr.typ == ATTR_MESSAGE_INTEGRITY {
            // Only FINGERPRINT may follow it.
            fingerprint = m.contains(ATTR_FINGERPRINT);
            break;
        }
        if attr.typ != ATTR_LIFETIME {
            out.add(attr.typ, &attr.value);
        }
    }
    Lifetime(lifetime).add_to(&mut out).ok()?;
    MessageIntegrity(key.to_vec()).add_to(&mut out).ok()?;
    if fingerprint {
        FINGERPRINT.add_to(&mut out).ok()?;
    }
    Some(out.raw)
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
    /// and records `packet`; decides what becomes of it (see [`Verdict`]).
    fn on_request(&self, packet: &[u8], src: SocketAddr) -> Verdict {
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
            return Verdict::Pass;
        }
        let Some(m) = decode(packet) else {
            return Verdict::Pass;
        };
        if m.typ.class != CLASS_REQUEST || !is_authenticated_method(m.typ.method) {
            return Verdict::Pass;
        }
        let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).ok();
        let admission = lock(&self.unauthenticated).admit(
            Instant::now(),
            src.ip(),
            nonce.as_ref().map(|n| n.text.as_str()),
        );
        if !admission.is_admitted() {
            self.stats.unauthenticated_dropped(admission);
            return Verdict::Drop;
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
        if m.typ.method == METHOD_ALLOCATE && signed {
            if let Some(user) = &record.username {
                if !self.tracker.has_five_tuple(self.local, src) {
                    match self.tracker.reserve(user, &self.limits) {
                        Ok(()) => record.reserved = true,
                        Err(reason) => {
                            if let Some(answer) = self.quota_answer(&m, packet, reason) {
                                return Verdict::Answer(answer);
                            }
                        }
                    }
                }
            }
        }
        *self.lock_last() = Some(record);
        if signed && [METHOD_ALLOCATE, METHOD_REFRESH].contains(&m.typ.method) {
            if let Some(capped) = self.cap_lifetime(&m, packet) {
                self.stats.lifetimes_capped.fetch_add(1, Ordering::Relaxed);
                return Verdict::Replace(capped);
            }
        }
        Verdict::Pass
    }

    /// `packet` rewritten to ask for `turn.max_allocation_lifetime` when the
    /// crate would grant more (see the module docs); `None` when it is
    /// within the cap, a deallocation, or does not authenticate.
    fn cap_lifetime(&self, m: &Message, packet: &[u8]) -> Option<Vec<u8>> {
        let cap = Duration::from_secs(self.limits.max_lifetime.load(Ordering::Relaxed));
        let granted = granted_lifetime(m);
        if granted.is_zero() || granted <= cap {
            return None;
        }
        let (_, _, key) = self
            .auth
            .credentials()
            .verify_message(packet, system_unix_time())?;
        with_lifetime(m, cap, &key)
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
        let decoded = decode(packet);
        if let Some(nonce) = decoded
            .as_ref()
            .filter(|m| m.typ.class == CLASS_ERROR_RESPONSE)
            .and_then(|m| TextAttribute::get_from_as(m, ATTR_NONCE).ok())
        {
            lock(&self.unauthenticated).issued(Instant::now(), target.ip(), &nonce.text);
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
        let Some(m) = decoded else {
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
                Verdict::Pass => return Ok((n, src)),
                Verdict::Replace(replaced) if replaced.len() <= buf.len() => {
                    buf[..replaced.len()].copy_from_slice(&replaced);
                    return Ok((replaced.len(), src));
                }
                // (Longer than the crate's buffer: cannot happen with its
                // 1500-byte buffer and a request that fit in it, plus 8.)
                Verdict::Replace(_) => return Ok((n, src)),
                Verdict::Answer(answer) => {
                    let _ = self.inner.send_to(&answer, src).await;
                }
                Verdict::Drop => {}
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
        client_from("127.0.0.1:0", server, user, password).await
    }

    /// A client whose socket binds `bind` (another loopback address is
    /// another source IP).
    async fn client_from(bind: &str, server: SocketAddr, user: &str, password: &str) -> Client {
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            username: user.into(),
            password: password.into(),
            realm: "rtcrelay".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(UdpSocket::bind(bind).await.unwrap()),
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
    fn start_refuses_disabled_and_names_the_key_of_what_cannot_start() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut c = config(&[]);
        c.enabled = false;
        assert!(matches!(
            rt.block_on(TurnServer::start(&c, TurnMetrics::default())),
            Err(StartError::Disabled)
        ));
        // A TCP port someone else holds.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = config(&[]);
        c.listen_tcp = vec![taken.local_addr().unwrap()];
        let err = rt
            .block_on(TurnServer::start(&c, TurnMetrics::default()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("key `turn.listen_tcp`: cannot bind TCP 127.0.0.1:"),
            "{err}"
        );
        assert!(err.contains("--turn-listen-tcp"), "{err}");
        // TLS files that are not there.
        let mut c = config(&[]);
        c.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_cert = Some("/nonexistent/cert.pem".into());
        c.tls_key = Some("/nonexistent/key.pem".into());
        let err = rt
            .block_on(TurnServer::start(&c, TurnMetrics::default()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("key `turn.tls_cert`: cannot read"), "{err}");
    }

    fn scrape(metrics: &TurnMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("rtcrelay");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn stun_request(method: stun::message::Method, setters: Vec<Box<dyn Setter>>) -> Message {
        let mut all: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        all.extend(setters);
        let mut m = Message::new();
        m.build(&all).unwrap();
        m
    }

    fn unsigned_allocate() -> Message {
        stun_request(
            METHOD_ALLOCATE,
            vec![Box::new(turn::proto::reqtrans::RequestedTransport {
                protocol: turn::proto::PROTO_UDP,
            })],
        )
    }

    async fn exchange(socket: &UdpSocket, server: SocketAddr, request: &Message) -> Message {
        socket.send_to(&request.raw, server).await.unwrap();
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            let m = decode(&buf[..n]).expect("a STUN message");
            if m.transaction_id == request.transaction_id {
                return m;
            }
        }
    }

    #[tokio::test]
    async fn lifetimes_are_capped_in_allocate_and_refresh_and_deallocation_still_works() {
        let mut c = config(&[("alice", "pw")]);
        c.max_allocation_lifetime = Duration::from_secs(120);
        let metrics = TurnMetrics::default();
        let server = TurnServer::start(&c, metrics.clone()).await.unwrap();
        let addr = server.listeners()[0].addr;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let challenge = exchange(&socket, addr, &unsigned_allocate()).await;
        let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE).unwrap();
        let key = crate::credentials::long_term_key("alice", "rtcrelay", "pw").to_vec();
        let signed = |method, lifetime: Option<u64>, fingerprint: bool| {
            let mut setters: Vec<Box<dyn Setter>> = Vec::new();
            if method == METHOD_ALLOCATE {
                setters.push(Box::new(turn::proto::reqtrans::RequestedTransport {
                    protocol: turn::proto::PROTO_UDP,
                }));
            }
            if let Some(secs) = lifetime {
                setters.push(Box::new(Lifetime(Duration::from_secs(secs))));
            }
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, "alice".into())));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, "rtcrelay".into())));
            setters.push(Box::new(nonce.clone()));
            setters.push(Box::new(MessageIntegrity(key.clone())));
            if fingerprint {
                setters.push(Box::new(FINGERPRINT));
            }
            stun_request(method, setters)
        };
        let granted = |m: &Message| {
            assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE, "{m}");
            // The crate signs its answer with the same key: the client can
            // trust the capped lifetime.
            MessageIntegrity(key.clone()).check(&mut m.clone()).unwrap();
            let mut l = Lifetime::default();
            l.get_from(m).unwrap();
            l.0.as_secs()
        };

        // Asking for 50 minutes (with a FINGERPRINT) gets 2.
        let allocated = exchange(&socket, addr, &signed(METHOD_ALLOCATE, Some(3000), true)).await;
        assert_eq!(granted(&allocated), 120);
        // A Refresh asking nothing (the crate's 10 min) gets 2; one asking
        // 1 minute gets 1.
        let refreshed = exchange(&socket, addr, &signed(METHOD_REFRESH, None, false)).await;
        assert_eq!(granted(&refreshed), 120);
        let refreshed = exchange(&socket, addr, &signed(METHOD_REFRESH, Some(60), false)).await;
        assert_eq!(granted(&refreshed), 60);
        let text = scrape(&metrics);
        let line = "rtcrelay_turn_lifetimes_capped_total{protocol=\"udp\"} 2";
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        // LIFETIME 0 deallocates.
        assert_eq!(server.active_allocations(), 1);
        let closed = exchange(&socket, addr, &signed(METHOD_REFRESH, Some(0), false)).await;
        assert_eq!(granted(&closed), 0);
        eventually("the allocation to close", || {
            server.active_allocations() == 0
        })
        .await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_unauthenticated_flood_gets_its_budget_of_nonces_and_others_still_allocate() {
        let mut c = config(&[("alice", "pw")]);
        c.unauthenticated_rate_per_ip = 10;
        c.unauthenticated_rate_total = 1000;
        let metrics = TurnMetrics::default();
        let server = TurnServer::start(&c, metrics.clone()).await.unwrap();
        let addr = server.listeners()[0].addr;
        let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        const FLOOD: usize = 5000;
        for i in 0..FLOOD {
            flooder
                .send_to(&unsigned_allocate().raw, addr)
                .await
                .unwrap();
            if i % 50 == 49 {
                // Let the server keep up: drops must be its choice, not
                // the socket buffer's.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // Every answer carries a nonce the crate keeps for an hour.
        let mut nonces = 0u64;
        let mut buf = vec![0u8; 1500];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), flooder.recv_from(&mut buf)).await
        {
            let m = decode(&buf[..n]).unwrap();
            assert!(m.contains(ATTR_NONCE));
            nonces += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let budget = 100.0 + 10.0 * elapsed;
        assert!(
            nonces >= 100 && nonces as f64 <= budget + 1.0,
            "{nonces} nonces issued to one source in {elapsed:.2} s (budget {budget:.0})"
        );
        let text = scrape(&metrics);
        let dropped: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "rtcrelay_turn_requests_dropped_total{protocol=\"udp\",reason=\"unauthenticated_per_ip\"} ",
                )
            })
            .expect("the drop counter")
            .parse()
            .unwrap();
        // Every request the socket delivered was answered or counted (a few
        // may be lost in the loopback socket's buffer before that).
        let seen = dropped + nonces;
        assert!(
            seen <= FLOOD as u64 && seen * 100 >= FLOOD as u64 * 98,
            "{seen} of {FLOOD} requests answered or counted"
        );

        // Another address, during the flood's penalty, allocates normally.
        let other = client_from("127.0.0.2:0", addr, "alice", "pw").await;
        let relay = tokio::time::timeout(WAIT, other.allocate())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(server.active_allocations(), 1);
        relay.close().await.unwrap();
        other.close().await.unwrap();
        server.shutdown().await;
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
    fn bandwidth_bucket_caps_rate_and_burst() {
        let mut b = TokenBucket::default();
        let t0 = Instant::now();
        // 80 kbit/s = 10 kB/s; burst max(2 kB, 3000 B) = 3000 B.
        assert!(admit_bytes(&mut b, 1500, 80_000, t0));
        assert!(admit_bytes(&mut b, 1500, 80_000, t0));
        assert!(!admit_bytes(&mut b, 1500, 80_000, t0));
        // 150 ms later: 1500 B more.
        let t1 = t0 + Duration::from_millis(150);
        assert!(admit_bytes(&mut b, 1500, 80_000, t1));
        assert!(!admit_bytes(&mut b, 100, 80_000, t1));
        assert!(admit_bytes(&mut b, 1500, 0, t0), "0 = unlimited");
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
