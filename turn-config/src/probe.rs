//! `rtcrelay turn probe`: check a TURN deployment from the outside, as a
//! browser would use it, and measure the path through the relay.
//!
//! One run, each step named and timed; the first step that fails ends the
//! run with a [`ProbeFailure`] naming it:
//!
//! 1. `resolve`: the URL's host (an IP, or a name through the system
//!    resolver; the first address it gives).
//! 2. `connect` (`?transport=tcp` and `turns:` only): the TCP connection and
//!    the TLS handshake ([`StreamConn`]).
//! 3. `allocate`: the `turn` crate's [`Client`] allocates a UDP relay (the
//!    unauthenticated request, the 401 with realm and nonce, the signed
//!    request). The mapped address and lifetime are read from the answer.
//! 4. `peer`: a local UDP socket that echoes the probe's packets back, bound
//!    on `--peer-ip` (default: the local address the OS routes toward the
//!    relay address, i.e. the one the relay would reach this host on).
//! 5. `permission`: CreatePermission for the peer's IP. The crate sends it
//!    on the first `send_to` and waits for the answer.
//! 6. `channel bind`: the ChannelBind the crate starts in the background
//!    after that first `send_to`; its answer is watched on the wire.
//! 7. `echo`: `count` packets of `size` bytes at a steady pace through the
//!    relay to the peer and back: RTT percentiles, loss, duplicates,
//!    reordering, rate.
//! 8. `throughput` (only with `--throughput`): as many packets as the path
//!    takes for a while, to see what the relay (and its per-allocation cap)
//!    delivers.
//! 9. `refresh`: a Refresh with a new lifetime, signed like the crate signs
//!    its requests.
//! 10. `close`: the crate's Refresh with LIFETIME 0 (deallocation), whose
//!     answer is awaited.
//!
//! # Observing the crate
//!
//! The crate's client shows little: `allocate()` gives a relay `Conn`, and
//! permissions and channel bindings happen inside its `send_to`. So the
//! client runs over a [`Conn`] of ours (`Tap`) that sees every message
//! between it and the server: it matches requests to answers by transaction
//! id, which times each step and gives the error code and reason of a
//! refusal, and it sends the `refresh` request itself (answers to its own
//! requests are not passed on to the crate).
//!
//! The tap also shields the crate from garbage: the crate's read loop ends
//! for good on a STUN message it cannot decode, a request, a Data indication
//! without its attributes or ChannelData on an unknown channel, and its
//! error messages panic on an error reason that is not UTF-8. The tap drops
//! such packets (counting them, see [`ProbeReport::ignored_from_server`]) and
//! replaces non-UTF-8 bytes in error reasons with `?`.
//!
//! Over UDP the socket is connected to the server, so an ICMP port
//! unreachable shows up; it is noted (the probe keeps listening until its
//! timeout, as the answer may still come) and named in the error.
//!
//! # Everything bounded
//!
//! Every step waits at most [`ProbeOptions::timeout`]; a failing run still
//! releases its allocation (best effort, within a second) and stops its
//! tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_ERROR_CODE, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Method, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use turn::client::{Client, ClientConfig};
use turn::proto::chandata::ChannelData;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use webrtc_util::Conn;

use crate::credentials::{long_term_key, system_unix_time, Credentials};
use crate::metrics::Transport;
use crate::server::turn_url;
use crate::stream::{crypto_provider, tls_client_config, StreamConn};

/// `turn:` URLs without a port mean this one (RFC 7065).
pub const DEFAULT_PORT: u16 = 3478;
/// `turns:` URLs without a port mean this one (RFC 7065).
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// Probe packets carry a 12-byte header (magic, phase, run id, sequence).
pub const MIN_PACKET_BYTES: usize = PROBE_HEADER_BYTES;
/// Largest probe packet: ChannelData (4 bytes more) or a Send indication
/// (about 40 more) stays within the 1500-byte datagrams the `turn` crate's
/// server reads.
pub const MAX_PACKET_BYTES: usize = 1400;
/// Lifetime asked for by the `refresh` step (the crate's default).
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(600);
/// How long REST credentials minted by the probe are valid.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(600);
/// The REST user id minted with `--secret` unless `--user` names one.
pub const DEFAULT_USER_ID: &str = "probe";

// ---------------------------------------------------------------------------
// TURN URLs
// ---------------------------------------------------------------------------

/// The host of a TURN URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lower-cased.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed TURN URL (RFC 7065): `turn:HOST[:PORT][?transport=udp|tcp]` or
/// `turns:HOST[:PORT][?transport=tcp]` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub transport: Transport,
    pub host: Host,
    pub port: u16,
}

/// Why a string is not a TURN URL; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl UrlError {
    fn new(message: impl Into<String>) -> UrlError {
        UrlError(message.into())
    }
}

impl FromStr for TurnUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<TurnUrl, UrlError> {
        const FORM: &str = "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]";
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(UrlError::new(format!(
                "{text:?} is not a TURN URL; write {FORM}"
            )));
        };
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "turn" => false,
            "turns" => true,
            "stun" | "stuns" => {
                return Err(UrlError::new(format!(
                    "{scheme}: is a STUN URL; the probe needs a TURN server: {FORM}"
                )))
            }
            _ => {
                return Err(UrlError::new(format!(
                    "unknown scheme {scheme:?}; write {FORM}"
                )))
            }
        };
        if rest.starts_with("//") {
            return Err(UrlError::new(format!(
                "TURN URLs have no \"//\" (RFC 7065): write {scheme}:{}",
                rest.trim_start_matches('/')
            )));
        }
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        if authority.contains('@') {
            return Err(UrlError::new(
                "credentials do not go in a TURN URL; pass --secret, or --user and --password",
            ));
        }
        if authority.contains('/') {
            return Err(UrlError::new(format!(
                "a TURN URL has no path: {authority:?}; write {FORM}"
            )));
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None if secure => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(p) => p,
        };
        let mut transport = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !key.eq_ignore_ascii_case("transport") {
                return Err(UrlError::new(format!(
                    "unknown URL parameter {key:?}; only ?transport=udp|tcp is defined"
                )));
            }
            if transport.is_some() {
                return Err(UrlError::new("?transport= is given twice"));
            }
            transport = Some(match value.to_ascii_lowercase().as_str() {
                "udp" if secure => {
                    return Err(UrlError::new(
                        "turns: with ?transport=udp would be DTLS, which is not supported; \
                         use turns:HOST[:PORT] (TLS over TCP) or turn:HOST[:PORT]?transport=udp",
                    ))
                }
                "udp" => Transport::Udp,
                "tcp" if secure => Transport::Tls,
                "tcp" => Transport::Tcp,
                other => {
                    return Err(UrlError::new(format!(
                        "unknown transport {other:?}; write ?transport=udp or ?transport=tcp"
                    )))
                }
            });
        }
        let transport = transport.unwrap_or(if secure {
            Transport::Tls
        } else {
            Transport::Udp
        });
        Ok(TurnUrl {
            transport,
            host,
            port,
        })
    }
}

/// `HOST[:PORT]`, `[IPv6][:PORT]`.
fn split_host_port(authority: &str) -> Result<(Host, Option<u16>), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::new("the TURN URL has no host"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(UrlError::new(format!("no closing ] in {authority:?}")));
        };
        let ip: std::net::Ipv6Addr = inside
            .parse()
            .map_err(|_| UrlError::new(format!("{inside:?} in brackets is not an IPv6 address")))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                UrlError::new(format!("unexpected {after:?} after ]; write [IPv6]:PORT"))
            })?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if authority.matches(':').count() > 1 {
            return Err(UrlError::new(format!(
                "{authority:?}: IPv6 addresses go in brackets, e.g. turn:[2001:db8::1]:3478"
            )));
        }
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(UrlError::new("the TURN URL has no host"));
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(dns_name(host)?),
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, UrlError> {
    if text.is_empty() {
        return Err(UrlError::new("empty port after ':'"));
    }
    match text.parse::<u16>() {
        Ok(0) => Err(UrlError::new("port 0 is not a port to connect to")),
        Ok(port) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(UrlError::new(format!(
            "port {text:?} is not a number from 1 to 65535"
        ))),
    }
}

/// A plausible DNS name (letters, digits, `-`, `_`, dots between labels),
/// lower-cased.
fn dns_name(text: &str) -> Result<String, UrlError> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(UrlError::new(format!(
            "{text:?} is neither an IP address nor a host name"
        )))
    }
}

impl TurnUrl {
    /// `HOST:PORT` for the resolver (`[v6]:PORT` for IPv6).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for TurnUrl {
    /// The canonical form: `turn:HOST:PORT?transport=udp|tcp`,
    /// `turns:HOST:PORT?transport=tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, transport) = match self.transport {
            Transport::Udp => ("turn", "udp"),
            Transport::Tcp => ("turn", "tcp"),
            Transport::Tls => ("turns", "tcp"),
        };
        write!(
            f,
            "{scheme}:{}:{}?transport={transport}",
            self.host, self.port
        )
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// How the probe authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum ProbeAuth {
    /// A TURN REST API shared secret: the probe mints `EXPIRY:USER_ID` and
    /// its password like signaling does ([`Credentials::mint`]).
    Secret { secret: String, user_id: String },
    /// A static long-term user.
    Static { username: String, password: String },
}

impl fmt::Debug for ProbeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeAuth::Secret { user_id, .. } => f
                .debug_struct("Secret")
                .field("user_id", user_id)
                .finish_non_exhaustive(),
            ProbeAuth::Static { username, .. } => f
                .debug_struct("Static")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

impl ProbeAuth {
    /// `(username, password)` to use at `now_unix`.
    pub fn credentials(&self, now_unix: u64) -> Result<(String, String), String> {
        match self {
            ProbeAuth::Secret { secret, user_id } => {
                Credentials::new("", [secret.clone()], BTreeMap::new())
                    .mint(Some(user_id), now_unix, CREDENTIAL_LIFETIME)
                    .map_err(|e| e.to_string())
            }
            ProbeAuth::Static { username, password } => Ok((username.clone(), password.clone())),
        }
    }
}

/// Which TLS server certificates `turns:` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's CA bundle (`SSL_CERT_FILE`, or the usual
    /// `/etc/ssl/certs/ca-certificates.crt` and friends).
    System,
    /// The CA certificates in this PEM file (e.g. a self-signed
    /// certificate itself).
    CaFile(PathBuf),
    /// Any certificate (handshake signatures are still checked). For
    /// self-signed test deployments only.
    Insecure,
}

/// What to probe and how. [`ProbeOptions::new`] has the defaults of the
/// command line.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub url: TurnUrl,
    pub auth: ProbeAuth,
    /// Echo packets to send.
    pub count: u32,
    /// Bytes per echo packet, [`MIN_PACKET_BYTES`]..=[`MAX_PACKET_BYTES`].
    pub size: usize,
    /// Time between two echo packets.
    pub interval: Duration,
    /// The longest any step may wait for an answer.
    pub timeout: Duration,
    /// Where the local echo peer binds; `None`: the address the OS routes
    /// toward the relay address.
    pub peer_ip: Option<IpAddr>,
    pub tls_trust: TlsTrust,
    /// The name the TLS certificate must be valid for; default: the URL's
    /// host.
    pub tls_name: Option<String>,
    /// Run the throughput phase for this long.
    pub throughput: Option<Duration>,
    /// Fail the `echo` step when more than this share of packets is lost
    /// (percent). 100: only when nothing comes back.
    pub max_loss_percent: f64,
}

impl ProbeOptions {
    /// 200 packets of 100 bytes at 50 per second, 5 s timeout, no
    /// throughput phase.
    pub fn new(url: TurnUrl, auth: ProbeAuth) -> ProbeOptions {
        ProbeOptions {
            url,
            auth,
            count: 200,
            size: 100,
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            peer_ip: None,
            tls_trust: TlsTrust::System,
            tls_name: None,
            throughput: None,
            max_loss_percent: 100.0,
        }
    }

    /// Checks the numbers and the TLS settings (reads `--ca`); the message
    /// names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.count) {
            return Err(format!(
                "--count {}: must be 1 to 1000000 packets",
                self.count
            ));
        }
        if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&self.size) {
            return Err(format!(
                "--size {}: must be {MIN_PACKET_BYTES} to {MAX_PACKET_BYTES} bytes",
                self.size
            ));
        }
        if self.interval > Duration::from_secs(10) {
            return Err("--interval/--rate: at most 10 s between packets".into());
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(300) {
            return Err("--timeout: must be 100ms to 300s".into());
        }
        if let Some(d) = self.throughput {
            if d.is_zero() || d > Duration::from_secs(60) {
                return Err("--throughput: must be more than 0 and at most 60s".into());
            }
        }
        if !(0.0..=100.0).contains(&self.max_loss_percent) {
            return Err("--max-loss: must be a percentage from 0 to 100".into());
        }
        if let Some(name) = &self.tls_name {
            ServerName::try_from(name.clone())
                .map_err(|_| format!("--tls-name {name:?}: not a DNS name or IP address"))?;
        }
        if let Err(e) = self.auth.credentials(system_unix_time()) {
            return Err(format!("credentials: {e}"));
        }
        if self.url.transport == Transport::Tls {
            tls_config(&self.tls_trust)?;
        }
        Ok(())
    }
}

/// `50`, `50/s`: packets per second, as the time between two packets.
pub fn parse_rate(text: &str) -> Result<Duration, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(rate) if (0.1..=1_000_000.0).contains(&rate) => Ok(Duration::from_secs_f64(1.0 / rate)),
        _ => Err(format!(
            "{text:?}: a rate in packets per second from 0.1 to 1000000, e.g. 50 or 50/s"
        )),
    }
}

/// A duration such as `20ms`, `1.5s`, `2s`; a bare number is in `bare`
/// units (milliseconds for `--interval`, seconds for `--timeout`).
pub fn parse_duration(text: &str, bare: Duration) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        if (0.0..=1e6).contains(&n) {
            return Ok(bare.mul_f64(n));
        }
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: not a duration such as 20ms or 5s ({e})"))
}

// ---------------------------------------------------------------------------
// Steps, report, failure
// ---------------------------------------------------------------------------

/// A step of the probe, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The options themselves (only when [`run`] is handed bad ones).
    Options,
    Resolve,
    Connect,
    Allocate,
    Peer,
    Permission,
    ChannelBind,
    Echo,
    Throughput,
    Refresh,
    Close,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Options => "options",
            Step::Resolve => "resolve",
            Step::Connect => "connect",
            Step::Allocate => "allocate",
            Step::Peer => "peer",
            Step::Permission => "permission",
            Step::ChannelBind => "channel bind",
            Step::Echo => "echo",
            Step::Throughput => "throughput",
            Step::Refresh => "refresh",
            Step::Close => "close",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// How long a step took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTime {
    pub step: Step,
    pub ms: f64,
}

/// RTT statistics of a phase, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RttStats {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one phase (echo or throughput) measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseStats {
    /// Bytes per packet.
    pub size: usize,
    pub sent: u64,
    /// Distinct packets that came back.
    pub received: u64,
    pub duplicates: u64,
    /// Packets that came back after one sent later.
    pub reordered: u64,
    pub loss_percent: f64,
    /// RTT through the relay and back; `None` when nothing came back.
    pub rtt_ms: Option<RttStats>,
    /// From the first send to the last packet sent or received.
    pub duration_ms: f64,
    /// Packets sent per second (the pace).
    pub sent_per_s: f64,
    /// Packets that came back per second, from the first to the last that
    /// did.
    pub received_per_s: f64,
    /// The same as payload bits (kbit/s).
    pub received_kbit_per_s: f64,
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// The URL probed, in canonical form.
    pub url: String,
    pub transport: &'static str,
    /// The address the host resolved to, as a URL.
    pub server_url: String,
    pub server: SocketAddr,
    /// This end of the connection to the server.
    pub local: SocketAddr,
    pub username: String,
    /// The realm the server asked for.
    pub realm: Option<String>,
    /// This host's address as the server sees it (XOR-MAPPED-ADDRESS).
    pub mapped: Option<SocketAddr>,
    /// The relayed transport address (XOR-RELAYED-ADDRESS).
    pub relay: SocketAddr,
    /// Lifetime granted by the Allocate answer, seconds.
    pub lifetime_s: Option<u64>,
    /// Lifetime granted by the `refresh` step, seconds.
    pub refreshed_lifetime_s: Option<u64>,
    /// The local echo peer the relay sent to.
    pub peer: SocketAddr,
    /// Where the peer's packets came from (the relay address unless a NAT
    /// sits between them).
    pub relay_seen_by_peer: Option<SocketAddr>,
    /// The `allocate` step, milliseconds.
    pub allocation_ms: f64,
    pub steps: Vec<StepTime>,
    pub echo: PhaseStats,
    pub throughput: Option<PhaseStats>,
    /// Messages the client sent as ChannelData (after the channel was
    /// bound) and as Send indications (before).
    pub channel_data_sent: u64,
    pub send_indications_sent: u64,
    /// Packets from the server the probe dropped as malformed or unexpected.
    pub ignored_from_server: u64,
    /// Observations worth a look (NAT, odd addresses, retransmissions).
    pub notes: Vec<String>,
}

/// A failed probe: the step, what went wrong, and what to try.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeFailure {
    pub step: Step,
    pub error: String,
    pub hint: Option<String>,
    /// The steps that completed before.
    pub steps: Vec<StepTime>,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe failed at step {}: {}", self.step, self.error)
    }
}

impl std::error::Error for ProbeFailure {}

/// A step's error before it becomes a [`ProbeFailure`].
#[derive(Debug)]
struct StepError {
    error: String,
    hint: Option<String>,
}

impl StepError {
    fn new(error: impl Into<String>) -> StepError {
        StepError {
            error: error.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> StepError {
        self.hint = Some(hint.into());
        self
    }
}

// ---------------------------------------------------------------------------
// Statistics (pure)
// ---------------------------------------------------------------------------

/// The nearest-rank percentile `p` (0..=100) of ascending `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !p.is_finite() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Share of `sent` that did not come back, percent (0 when nothing was
/// sent; `received` above `sent` counts as no loss).
pub fn loss_percent(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    sent.saturating_sub(received) as f64 * 100.0 / sent as f64
}

/// Min, percentiles, max and mean of RTT samples, in milliseconds (to the
/// microsecond).
pub fn rtt_stats(samples: &[Duration]) -> Option<RttStats> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(RttStats {
        min: round3(*ms.first()?),
        p50: round3(percentile(&ms, 50.0)?),
        p99: round3(percentile(&ms, 99.0)?),
        max: round3(*ms.last()?),
        mean: round3(ms.iter().sum::<f64>() / ms.len() as f64),
    })
}

impl PhaseStats {
    /// Statistics of a phase: `sent[seq]` is when packet `seq` was sent,
    /// `arrivals` the `(seq, when)` of each packet that came back, in the
    /// order they came. Sequence numbers never sent are ignored.
    pub fn compute(size: usize, sent: &[Instant], arrivals: &[(u32, Instant)]) -> PhaseStats {
        let mut seen = vec![false; sent.len()];
        let mut rtts = Vec::with_capacity(arrivals.len().min(sent.len()));
        let (mut duplicates, mut reordered) = (0u64, 0u64);
        let mut highest: Option<u32> = None;
        let mut end = sent.last().copied();
        let mut arrived: Option<(Instant, Instant)> = None;
        for &(seq, at) in arrivals {
            let Some(slot) = seen.get_mut(seq as usize) else {
                continue;
            };
            if *slot {
                duplicates += 1;
                continue;
            }
            *slot = true;
            match highest {
                Some(h) if seq < h => reordered += 1,
                _ => highest = Some(seq),
            }
            rtts.push(at.saturating_duration_since(sent[seq as usize]));
            end = end.max(Some(at));
            arrived = Some(match arrived {
                None => (at, at),
                Some((first, last)) => (first.min(at), last.max(at)),
            });
        }
        let duration = match (sent.first(), end) {
            (Some(&start), Some(end)) => end.saturating_duration_since(start),
            _ => Duration::ZERO,
        };
        let secs = duration.as_secs_f64();
        // Rates: packets after the first per second from the first to the
        // last, of sending and of arriving (the pace, and what the path
        // delivered).
        let rate = |n: usize, span: Option<(Instant, Instant)>| match span {
            Some((first, last)) if n > 1 && last > first => {
                (n - 1) as f64 / last.duration_since(first).as_secs_f64()
            }
            _ => 0.0,
        };
        let sent_per_s = rate(sent.len(), sent.first().copied().zip(sent.last().copied()));
        let received_per_s = rate(rtts.len(), arrived);
        let received = rtts.len() as u64;
        PhaseStats {
            size,
            sent: sent.len() as u64,
            received,
            duplicates,
            reordered,
            loss_percent: round3(loss_percent(sent.len() as u64, received)),
            rtt_ms: rtt_stats(&rtts),
            duration_ms: round3(secs * 1e3),
            sent_per_s: round3(sent_per_s),
            received_per_s: round3(received_per_s),
            received_kbit_per_s: round3(received_per_s * size as f64 * 8.0 / 1e3),
        }
    }
}

// ---------------------------------------------------------------------------
// Probe packets (pure)
// ---------------------------------------------------------------------------

const PROBE_MAGIC: [u8; 4] = *b"rtcP";
const PROBE_HEADER_BYTES: usize = 12;

/// Which part of the run a probe packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup = 1,
    Echo = 2,
    Throughput = 3,
}

/// A probe packet of `size` bytes (at least the 12-byte header): magic,
/// phase, 3-byte run id, big-endian sequence number, then filler.
pub fn encode_probe(phase: Phase, run: [u8; 3], seq: u32, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(PROBE_HEADER_BYTES));
    p.extend_from_slice(&PROBE_MAGIC);
    p.push(phase as u8);
    p.extend_from_slice(&run);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((p.len()..size).map(|i| i as u8));
    p
}

/// The phase and sequence number of a probe packet of run `run`, or `None`
/// for anything else.
pub fn decode_probe(packet: &[u8], run: [u8; 3]) -> Option<(Phase, u32)> {
    if packet.len() < PROBE_HEADER_BYTES || packet[..4] != PROBE_MAGIC || packet[5..8] != run {
        return None;
    }
    let phase = match packet[4] {
        1 => Phase::Warmup,
        2 => Phase::Echo,
        3 => Phase::Throughput,
        _ => return None,
    };
    let seq = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    Some((phase, seq))
}

/// Replaces bytes that are not printable ASCII in the reason phrase of an
/// ERROR-CODE attribute with `?`, in place (same length, so the message
/// stays well-formed). The `turn` crate formats reasons with a `Display`
/// that fails, and so panics, on invalid UTF-8.
pub fn sanitize_error_reason(message: &mut [u8]) {
    let mut at = 20;
    while at + 4 <= message.len() {
        let typ = u16::from_be_bytes([message[at], message[at + 1]]);
        let len = usize::from(u16::from_be_bytes([message[at + 2], message[at + 3]]));
        let value = at + 4;
        let end = (value + len).min(message.len());
        if typ == ATTR_ERROR_CODE.0 && value + 4 <= end {
            for b in &mut message[value + 4..end] {
                if !(0x20..0x7f).contains(b) {
                    *b = b'?';
                }
            }
        }
        at = value + len.div_ceil(4) * 4;
    }
}

// ---------------------------------------------------------------------------
// The tap: our Conn under the crate's Client
// ---------------------------------------------------------------------------

/// An answer to a request, as the tap saw it.
#[derive(Debug, Clone, Default)]
struct Answer {
    at: Option<Instant>,
    success: bool,
    /// ERROR-CODE: code and reason (sanitised).
    error: Option<(u16, String)>,
    mapped: Option<SocketAddr>,
    relayed: Option<SocketAddr>,
    lifetime: Option<Duration>,
    realm: Option<String>,
    nonce: Option<String>,
}

impl Answer {
    fn from_message(m: &Message) -> Answer {
        let mut a = Answer {
            at: Some(Instant::now()),
            success: m.typ.class == CLASS_SUCCESS_RESPONSE,
            ..Answer::default()
        };
        let mut code = ErrorCodeAttribute::default();
        if code.get_from(m).is_ok() {
            a.error = Some((
                code.code.0,
                String::from_utf8_lossy(&code.reason).into_owned(),
            ));
        }
        let mut mapped = XorMappedAddress::default();
        if mapped.get_from(m).is_ok() {
            a.mapped = Some(SocketAddr::new(mapped.ip, mapped.port));
        }
        let mut relayed = RelayedAddress::default();
        if relayed.get_from(m).is_ok() {
            a.relayed = Some(SocketAddr::new(relayed.ip, relayed.port));
        }
        let mut lifetime = Lifetime::default();
        if lifetime.get_from(m).is_ok() {
            a.lifetime = Some(lifetime.0);
        }
        a.realm = TextAttribute::get_from_as(m, ATTR_REALM)
            .ok()
            .map(|t| t.text);
        a.nonce = TextAttribute::get_from_as(m, ATTR_NONCE)
            .ok()
            .map(|t| t.text);
        a
    }

    /// `"403 Forbidden IP"`, or the class when there is no ERROR-CODE.
    fn describe(&self) -> String {
        match &self.error {
            Some((code, reason)) if reason.trim().is_empty() => match reason_phrase(*code) {
                Some(phrase) => format!("{code} {phrase}"),
                None => code.to_string(),
            },
            Some((code, reason)) => format!("{code} {reason}"),
            None if self.success => "success".into(),
            None => "an error without ERROR-CODE".into(),
        }
    }

    fn code(&self) -> Option<u16> {
        self.error.as_ref().map(|(c, _)| *c)
    }
}

/// The usual reason phrase of a STUN/TURN error code, for answers that
/// carry none.
fn reason_phrase(code: u16) -> Option<&'static str> {
    Some(match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => return None,
    })
}

/// One request the client sent and what came back.
#[derive(Debug, Clone)]
struct Exchange {
    method: Method,
    txid: [u8; 12],
    sent: Instant,
    sends: u32,
    answer: Option<Answer>,
}

impl Exchange {
    fn rtt(&self) -> Option<Duration> {
        Some(
            self.answer
                .as_ref()?
                .at?
                .saturating_duration_since(self.sent),
        )
    }
}

/// Credentials as the crate puts them on its requests.
#[derive(Debug, Clone)]
struct SeenAuth {
    username: String,
    realm: String,
    nonce: String,
}

#[derive(Default)]
struct TapState {
    exchanges: Vec<Exchange>,
    /// Requests the probe itself sent (not the crate): who waits.
    own: HashMap<[u8; 12], oneshot::Sender<Answer>>,
    channels: HashSet<u16>,
    auth: Option<SeenAuth>,
    channel_data_sent: u64,
    send_indications_sent: u64,
    ignored: u64,
    icmp_unreachable: u64,
    recv_error: Option<String>,
}

const MAX_EXCHANGES: usize = 1000;

enum Wire {
    Udp(UdpSocket),
    Stream(StreamConn),
}

/// The crate's client's `Conn`: a connected UDP socket or a TCP/TLS
/// [`StreamConn`], with every message looked at (see the module docs).
struct Tap {
    wire: Wire,
    server: SocketAddr,
    local: SocketAddr,
    state: Mutex<TapState>,
    changed: watch::Sender<u64>,
}

impl Tap {
    fn new(wire: Wire, server: SocketAddr, local: SocketAddr) -> Tap {
        Tap {
            wire,
            server,
            local,
            state: Mutex::new(TapState::default()),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Waits until `f` gives something or `deadline` passes (then `f` once
    /// more).
    async fn wait_for<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&TapState) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(t) = f(&self.lock()) {
                return Some(t);
            }
            let until = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return f(&self.lock()),
            }
        }
    }

    fn exchange_count(&self) -> usize {
        self.lock().exchanges.len()
    }

    /// The first exchange of `method` at or after index `from`.
    fn find(state: &TapState, method: Method, from: usize) -> Option<&Exchange> {
        state
            .exchanges
            .iter()
            .skip(from)
            .find(|e| e.method == method)
    }

    /// The last answered exchange of `method` at or after `from`.
    fn last_answer(&self, method: Method, from: usize) -> Option<Answer> {
        let state = self.lock();
        state
            .exchanges
            .iter()
            .skip(from)
            .rev()
            .filter(|e| e.method == method)
            .find_map(|e| e.answer.clone())
    }

    /// Looks at a message the crate sends.
    fn outbound(&self, packet: &[u8]) {
        let mut changed = false;
        {
            let mut state = self.lock();
            if stun::message::is_message(packet) {
                let mut m = Message::new();
                m.raw = packet.to_vec();
                if m.decode().is_ok() {
                    if m.typ.class == CLASS_REQUEST {
                        note_request(&mut state, &m);
                        changed = true;
                    } else if m.typ == MessageType::new(METHOD_SEND, CLASS_INDICATION) {
                        state.send_indications_sent += 1;
                    }
                }
            } else if ChannelData::is_channel_data(packet) {
                state.channel_data_sent += 1;
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Looks at a message from the server (sanitising it in place):
    /// whether to hand it to the crate.
    fn inbound(&self, packet: &mut [u8]) -> bool {
        let what = {
            let mut state = self.lock();
            let what = classify_inbound(&mut state, packet);
            if what == Inbound::Drop {
                state.ignored += 1;
            }
            what
        };
        self.bump();
        what == Inbound::Pass
    }

    /// Sends a request of the probe's own and waits for its answer,
    /// retransmitting over UDP (500 ms, then doubling).
    async fn transact(&self, raw: &[u8], txid: [u8; 12], deadline: Instant) -> Option<Answer> {
        let (tx, mut rx) = oneshot::channel();
        self.lock().own.insert(txid, tx);
        let mut wait = Duration::from_millis(500);
        let answer = loop {
            if self.write(raw).await.is_err() {
                break None;
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            let until = tokio::time::Instant::from_std((now + wait).min(deadline));
            match tokio::time::timeout_at(until, &mut rx).await {
                Ok(Ok(answer)) => break Some(answer),
                Ok(Err(_)) => break None,
                Err(_) if matches!(self.wire, Wire::Udp(_)) => wait *= 2,
                Err(_) => {
                    // Over TCP/TLS no retransmission: wait out the deadline.
                    let until = tokio::time::Instant::from_std(deadline);
                    break tokio::time::timeout_at(until, &mut rx)
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
            }
        };
        self.lock().own.remove(&txid);
        answer
    }

    async fn write(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        match &self.wire {
            Wire::Udp(socket) => match socket.send(buf).await {
                Ok(n) => Ok(n),
                // An ICMP error from an earlier datagram; the socket
                // reports it on the next call. Count it and carry on.
                Err(e) if is_unreachable(&e) => {
                    self.lock().icmp_unreachable += 1;
                    Ok(buf.len())
                }
                Err(e) => Err(e.into()),
            },
            Wire::Stream(conn) => conn.send_to(buf, self.server).await,
        }
    }
}

fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Records a request: a new exchange or a retransmission, the credentials
/// it carries, the channel number of a ChannelBind.
fn note_request(state: &mut TapState, m: &Message) {
    let txid = m.transaction_id.0;
    if let Some(e) = state.exchanges.iter_mut().rev().find(|e| e.txid == txid) {
        e.sends += 1;
    } else if !state.own.contains_key(&txid) && state.exchanges.len() < MAX_EXCHANGES {
        state.exchanges.push(Exchange {
            method: m.typ.method,
            txid,
            sent: Instant::now(),
            sends: 1,
            answer: None,
        });
    }
    let text = |attr| TextAttribute::get_from_as(m, attr).ok().map(|t| t.text);
    if let (Some(username), Some(realm), Some(nonce)) =
        (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
    {
        state.auth = Some(SeenAuth {
            username,
            realm,
            nonce,
        });
    }
    if m.typ.method == METHOD_CHANNEL_BIND {
        let mut number = ChannelNumber::default();
        if number.get_from(m).is_ok() {
            state.channels.insert(number.0);
        }
    }
}

/// What the tap does with a packet from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// Hand it to the crate.
    Pass,
    /// An answer to one of the probe's own requests, delivered.
    Own,
    /// Malformed or unexpected: dropped and counted.
    Drop,
}

/// What to do with a packet from the server (see the module docs);
/// records answers on the way, and delivers answers to the probe's own
/// requests.
fn classify_inbound(state: &mut TapState, packet: &mut [u8]) -> Inbound {
    let pass = |ok: bool| if ok { Inbound::Pass } else { Inbound::Drop };
    if stun::message::is_message(packet) {
        sanitize_error_reason(packet);
        let mut m = Message::new();
        m.raw = packet.to_vec();
        if m.decode().is_err() {
            return Inbound::Drop;
        }
        if m.typ.class == CLASS_INDICATION {
            let mut peer = PeerAddress::default();
            let mut data = Data::default();
            return pass(
                m.typ.method == METHOD_DATA
                    && peer.get_from(&m).is_ok()
                    && data.get_from(&m).is_ok(),
            );
        }
        if m.typ.class != CLASS_SUCCESS_RESPONSE && m.typ.class != CLASS_ERROR_RESPONSE {
            return Inbound::Drop;
        }
        let txid = m.transaction_id.0;
        if let Some(waiter) = state.own.remove(&txid) {
            let _ = waiter.send(Answer::from_message(&m));
            return Inbound::Own;
        }
        if let Some(e) = state.exchanges.iter_mut().rev().find(|e| e.txid == txid) {
            if e.answer.is_none() && e.method == m.typ.method {
                e.answer = Some(Answer::from_message(&m));
            }
        }
        Inbound::Pass
    } else if ChannelData::is_channel_data(packet) {
        let mut data = ChannelData {
            raw: packet.to_vec(),
            ..ChannelData::default()
        };
        pass(data.decode().is_ok() && state.channels.contains(&data.number.0))
    } else {
        Inbound::Drop
    }
}

#[async_trait]
impl Conn for Tap {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(io::Error::other("not applicable").into())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let n = match &self.wire {
                Wire::Udp(socket) => match socket.recv(buf).await {
                    Ok(n) => n,
                    Err(e) if is_unreachable(&e) => {
                        self.lock().icmp_unreachable += 1;
                        self.bump();
                        continue;
                    }
                    Err(e) => {
                        self.lock().recv_error = Some(e.to_string());
                        self.bump();
                        return Err(e.into());
                    }
                },
                Wire::Stream(conn) => match conn.recv_from(buf).await {
                    Ok((n, _)) => n,
                    Err(e) => {
                        self.lock().recv_error = Some(e.to_string());
                        self.bump();
                        return Err(e);
                    }
                },
            };
            if self.inbound(&mut buf[..n]) {
                return Ok((n, self.server));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.server).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if target != self.server {
            return Err(io::Error::other(format!(
                "the probe only talks to the TURN server {}, not {target}",
                self.server
            ))
            .into());
        }
        self.outbound(buf);
        self.write(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        match &self.wire {
            Wire::Udp(_) => Ok(()),
            Wire::Stream(conn) => conn.close().await,
        }
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// Places the system CA bundle usually is.
const SYSTEM_CA_FILES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

fn roots_from_pem_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CERTIFICATE in it", path.display()));
    }
    Ok(roots)
}

/// The client TLS configuration for `trust`.
pub fn tls_config(trust: &TlsTrust) -> Result<Arc<rustls::ClientConfig>, String> {
    match trust {
        TlsTrust::CaFile(path) => Ok(tls_client_config(
            roots_from_pem_file(path).map_err(|e| format!("--ca: {e}"))?,
        )),
        TlsTrust::System => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let path = from_env
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    "no system CA bundle found (SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt, ...); \
                     pass --ca FILE, or --insecure for a self-signed test server"
                        .to_string()
                })?;
            Ok(tls_client_config(roots_from_pem_file(&path)?))
        }
        TlsTrust::Insecure => {
            let provider = crypto_provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        }
    }
}

/// `--insecure`: accepts any certificate chain but still checks that the
/// server holds the key of the certificate it presents.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// What a run holds, for the report and for cleaning up whatever happens.
#[derive(Default)]
struct Session {
    steps: Vec<StepTime>,
    tap: Option<Arc<Tap>>,
    client: Option<Client>,
    relay: Option<Arc<dyn Conn + Send + Sync>>,
    closed: bool,
    tasks: Vec<AbortHandle>,
}

impl Session {
    fn done(&mut self, step: Step, took: Duration) {
        self.steps.push(StepTime {
            step,
            ms: round3(took.as_secs_f64() * 1e3),
        });
    }

    /// Releases the allocation (if the close step did not) and stops
    /// everything, within about a second.
    async fn cleanup(&mut self) {
        if let (Some(relay), false) = (&self.relay, self.closed) {
            let mark = self.tap.as_ref().map_or(0, |t| t.exchange_count());
            let bound = Duration::from_millis(500);
            let _ = tokio::time::timeout(bound, relay.close()).await;
            if let Some(tap) = &self.tap {
                let deadline = Instant::now() + bound;
                tap.wait_for(deadline, |s| {
                    Tap::find(s, METHOD_REFRESH, mark)?
                        .answer
                        .as_ref()
                        .map(|_| ())
                })
                .await;
            }
        }
        if let Some(client) = &self.client {
            let _ = tokio::time::timeout(Duration::from_millis(500), client.close()).await;
        }
        if let Some(tap) = &self.tap {
            let _ = tokio::time::timeout(Duration::from_millis(500), tap.close()).await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the probe (see the module docs). Never panics on what the server
/// sends; every step is bounded by `opts.timeout`.
pub async fn run(opts: ProbeOptions) -> Result<ProbeReport, ProbeFailure> {
    let mut session = Session::default();
    let result = run_steps(&opts, &mut session).await;
    session.cleanup().await;
    result.map_err(|(step, e)| ProbeFailure {
        step,
        error: e.error,
        hint: e.hint,
        steps: session.steps.clone(),
    })
}

type StepResult<T> = Result<T, (Step, StepError)>;

fn at<T>(step: Step, r: Result<T, StepError>) -> StepResult<T> {
    r.map_err(|e| (step, e))
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

async fn run_steps(opts: &ProbeOptions, session: &mut Session) -> StepResult<ProbeReport> {
    at(Step::Options, opts.validate().map_err(StepError::new))?;
    let mut notes = Vec::new();

    // resolve
    let t = Instant::now();
    let server = at(Step::Resolve, resolve(&opts.url, opts.timeout).await)?;
    session.done(Step::Resolve, t.elapsed());

    // connect (TCP/TLS), or a UDP socket connected to the server
    let t = Instant::now();
    let (wire, local) = match opts.url.transport {
        Transport::Udp => at(Step::Connect, udp_wire(server).await)?,
        Transport::Tcp | Transport::Tls => {
            let r = at(Step::Connect, stream_wire(opts, server).await)?;
            session.done(Step::Connect, t.elapsed());
            r
        }
    };
    let tap = Arc::new(Tap::new(wire, server, local));
    session.tap = Some(Arc::clone(&tap));

    // allocate
    let t = Instant::now();
    let (username, password) = at(
        Step::Allocate,
        opts.auth
            .credentials(system_unix_time())
            .map_err(StepError::new),
    )?;
    let relay = at(
        Step::Allocate,
        allocate(opts, session, &tap, &username, password.clone()).await,
    )?;
    let relay_addr = at(
        Step::Allocate,
        relay
            .local_addr()
            .map_err(|e| StepError::new(format!("no relay address: {e}"))),
    )?;
    let allocation_took = t.elapsed();
    session.done(Step::Allocate, allocation_took);
    let allocated = tap.last_answer(METHOD_ALLOCATE, 0).unwrap_or_default();
    let realm = tap.lock().auth.as_ref().map(|a| a.realm.clone());

    // peer
    let t = Instant::now();
    let run_id: [u8; 3] = rand::random();
    let peer = at(
        Step::Peer,
        EchoPeer::bind(opts.peer_ip, relay_addr, run_id).await,
    )?;
    session.tasks.push(peer.task.clone());
    session.done(Step::Peer, t.elapsed());
    let peer_addr = peer.addr;

    // Arrivals through the relay, for every phase.
    let arrivals = Arc::new(Arrivals::default());
    let receiver = tokio::spawn(receive(
        Arc::clone(&relay),
        peer_addr,
        run_id,
        Arc::clone(&arrivals),
    ));
    session.tasks.push(receiver.abort_handle());

    // permission: the crate's first send_to makes it (and starts the
    // ChannelBind in the background)
    let t = Instant::now();
    let mark = tap.exchange_count();
    at(
        Step::Permission,
        permission(opts, &tap, &relay, peer_addr, run_id, mark).await,
    )?;
    session.done(Step::Permission, t.elapsed());

    // channel bind
    let t = Instant::now();
    let bound = at(
        Step::ChannelBind,
        channel_bind(opts, &tap, peer_addr, mark).await,
    )?;
    session.done(Step::ChannelBind, bound.unwrap_or_else(|| t.elapsed()));

    // echo
    let t = Instant::now();
    let echo = run_phase(
        opts,
        &relay,
        peer_addr,
        run_id,
        &arrivals,
        Phase::Echo,
        Pace::Count(opts.count, opts.interval),
    )
    .await
    .map_err(|e| (Step::Echo, e))?;
    if echo.received == 0 {
        return Err((
            Step::Echo,
            nothing_came_back(&echo, &peer, relay_addr, allocated.mapped, opts),
        ));
    }
    if echo.loss_percent > opts.max_loss_percent {
        return Err((
            Step::Echo,
            StepError::new(format!(
                "{:.1} % of {} packets lost, more than --max-loss {} %",
                echo.loss_percent, echo.sent, opts.max_loss_percent
            )),
        ));
    }
    session.done(Step::Echo, t.elapsed());

    // throughput
    let throughput = match opts.throughput {
        None => None,
        Some(duration) => {
            let t = Instant::now();
            let stats = run_phase(
                opts,
                &relay,
                peer_addr,
                run_id,
                &arrivals,
                Phase::Throughput,
                Pace::Flood(duration),
            )
            .await
            .map_err(|e| (Step::Throughput, e))?;
            if stats.received == 0 {
                return Err((
                    Step::Throughput,
                    StepError::new(format!(
                        "none of {} packets came back during the throughput phase",
                        stats.sent
                    )),
                ));
            }
            session.done(Step::Throughput, t.elapsed());
            Some(stats)
        }
    };

    // refresh
    let t = Instant::now();
    let refreshed = at(Step::Refresh, refresh(opts, &tap, &password).await)?;
    session.done(Step::Refresh, t.elapsed());

    // close
    let t = Instant::now();
    let mark = tap.exchange_count();
    let _ = tokio::time::timeout(opts.timeout, relay.close()).await;
    session.closed = true;
    at(Step::Close, close(opts, &tap, mark).await)?;
    session.done(Step::Close, t.elapsed());

    // notes
    let state = tap.lock();
    let retransmitted: u32 = state.exchanges.iter().map(|e| e.sends - 1).sum();
    if retransmitted > 0 {
        notes.push(format!(
            "{retransmitted} request(s) were retransmitted: answers were lost or slow"
        ));
    }
    if state.icmp_unreachable > 0 {
        notes.push(format!(
            "{} ICMP unreachable error(s) on the way to the server",
            state.icmp_unreachable
        ));
    }
    if let Some(mapped) = allocated.mapped {
        if mapped.ip() != local.ip() {
            notes.push(format!(
                "behind NAT: local address {local}, the server sees {mapped}"
            ));
        }
    }
    let seen_by_peer = peer.first_source();
    if let Some(seen) = seen_by_peer {
        if seen != relay_addr {
            notes.push(format!(
                "the peer received from {seen}, not the relay address {relay_addr} \
                 (NAT in front of the relay? check turn.external_ip)"
            ));
        }
    }
    if relay_addr.ip().is_unspecified() {
        notes.push(
            "the relay address is unspecified (0.0.0.0/::): clients cannot reach it; \
             set turn.relay_ip or turn.external_ip"
                .into(),
        );
    }
    let ignored = state.ignored;
    if ignored > 0 {
        notes.push(format!(
            "{ignored} malformed or unexpected packet(s) from the server were ignored"
        ));
    }
    Ok(ProbeReport {
        url: opts.url.to_string(),
        transport: opts.url.transport.as_str(),
        server_url: turn_url(opts.url.transport, server),
        server,
        local,
        username,
        realm,
        mapped: allocated.mapped,
        relay: relay_addr,
        lifetime_s: allocated.lifetime.map(|d| d.as_secs()),
        refreshed_lifetime_s: refreshed.map(|d| d.as_secs()),
        peer: peer_addr,
        relay_seen_by_peer: seen_by_peer,
        allocation_ms: round3(allocation_took.as_secs_f64() * 1e3),
        steps: session.steps.clone(),
        echo,
        throughput,
        channel_data_sent: state.channel_data_sent,
        send_indications_sent: state.send_indications_sent,
        ignored_from_server: ignored,
        notes,
    })
}

async fn resolve(url: &TurnUrl, timeout: Duration) -> Result<SocketAddr, StepError> {
    let name = match &url.host {
        Host::Ip(ip) => return Ok(SocketAddr::new(*ip, url.port)),
        Host::Name(name) => name,
    };
    let lookup = tokio::net::lookup_host((name.as_str(), url.port));
    match tokio::time::timeout(timeout, lookup).await {
        Err(_) => Err(StepError::new(format!(
            "no answer from the resolver for {name} within {}",
            secs(timeout)
        ))),
        Ok(Err(e)) => Err(StepError::new(format!("cannot resolve {name}: {e}"))
            .hint("check the host name and this host's DNS settings")),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| StepError::new(format!("{name} has no addresses"))),
    }
}

async fn udp_wire(server: SocketAddr) -> Result<(Wire, SocketAddr), StepError> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| StepError::new(format!("cannot open a UDP socket: {e}")))?;
    socket
        .connect(server)
        .await
        .map_err(|e| StepError::new(format!("no route to {server}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| StepError::new(e.to_string()))?;
    Ok((Wire::Udp(socket), local))
}

async fn stream_wire(
    opts: &ProbeOptions,
    server: SocketAddr,
) -> Result<(Wire, SocketAddr), StepError> {
    let timeout = opts.timeout;
    let connect = async {
        match opts.url.transport {
            Transport::Tls => {
                let config = tls_config(&opts.tls_trust).map_err(StepError::new)?;
                let name = match (&opts.tls_name, &opts.url.host) {
                    (Some(name), _) => ServerName::try_from(name.clone())
                        .map_err(|_| StepError::new(format!("bad --tls-name {name:?}")))?,
                    (None, Host::Name(name)) => ServerName::try_from(name.clone())
                        .map_err(|_| StepError::new(format!("{name:?} is not a TLS name")))?,
                    (None, Host::Ip(ip)) => ServerName::IpAddress((*ip).into()),
                };
                StreamConn::connect_tls(server, name, config)
                    .await
                    .map_err(|e| connect_error(server, "TLS", e))
            }
            _ => StreamConn::connect_tcp(server)
                .await
                .map_err(|e| connect_error(server, "TCP", e)),
        }
    };
    let conn = tokio::time::timeout(timeout, connect).await.map_err(|_| {
        StepError::new(format!(
            "no connection to {server} within {}",
            secs(timeout)
        ))
        .hint("is the port open? a firewall may drop TCP to it silently")
    })??;
    let local = conn
        .local_addr()
        .map_err(|e| StepError::new(e.to_string()))?;
    Ok((Wire::Stream(conn), local))
}

fn connect_error(server: SocketAddr, what: &str, e: io::Error) -> StepError {
    let text = e.to_string();
    let error = StepError::new(format!("{what} to {server}: {text}"));
    if e.kind() == io::ErrorKind::ConnectionRefused {
        error.hint(format!(
            "nothing listens on TCP {server}: check turn.listen_tcp / turn.listen_tls and the port in the URL"
        ))
    } else if text.contains("certificate") || text.contains("Certificate") {
        error.hint(
            "the server's certificate is not trusted for this name: pass --ca FILE with its CA \
             (or the self-signed certificate), --tls-name NAME when the URL has an IP, \
             or --insecure to skip the check on a test server",
        )
    } else if what == "TLS" {
        error.hint("does the port speak TLS? turn: with ?transport=tcp is plain TCP")
    } else {
        error
    }
}

async fn allocate(
    opts: &ProbeOptions,
    session: &mut Session,
    tap: &Arc<Tap>,
    username: &str,
    password: String,
) -> Result<Arc<dyn Conn + Send + Sync>, StepError> {
    let conn: Arc<dyn Conn + Send + Sync> = tap.clone();
    let client = Client::new(ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: tap.server.to_string(),
        username: username.to_owned(),
        password,
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .map_err(|e| StepError::new(format!("TURN client: {e}")))?;
    session.client = Some(client.clone());
    client
        .listen()
        .await
        .map_err(|e| StepError::new(format!("TURN client: {e}")))?;
    // On a task: a panic in the crate becomes an error here.
    let task = tokio::spawn(async move {
        client
            .allocate()
            .await
            .map(|relay| Arc::new(relay) as Arc<dyn Conn + Send + Sync>)
    });
    let abort = task.abort_handle();
    let started = Instant::now();
    let result = tokio::time::timeout(opts.timeout, task).await;
    let detail = || tap.last_answer(METHOD_ALLOCATE, 0);
    match result {
        Ok(Ok(Ok(relay))) => {
            session.relay = Some(Arc::clone(&relay));
            Ok(relay)
        }
        Err(_) => {
            abort.abort();
            Err(no_answer(tap, "Allocate", opts.timeout))
        }
        Ok(Err(e)) => Err(StepError::new(format!(
            "the TURN client failed on the server's answer: {e}"
        ))),
        Ok(Ok(Err(e))) => Err(match detail() {
            Some(answer) if !answer.success => allocate_refused(tap, &answer),
            Some(_) => StepError::new(format!("Allocate: {e}")),
            None => no_answer(tap, "Allocate", started.elapsed()),
        }),
    }
}

/// "no answer" with what the tap knows (ICMP, receive errors).
fn no_answer(tap: &Tap, what: &str, waited: Duration) -> StepError {
    let state = tap.lock();
    let transport = match tap.wire {
        Wire::Udp(_) => "UDP",
        Wire::Stream(_) => "TCP",
    };
    let mut error = format!(
        "no answer to {what} from {} within {} (timed out)",
        tap.server,
        secs(waited)
    );
    if state.icmp_unreachable > 0 {
        let _ = write!(
            error,
            "; ICMP port unreachable came back: nothing listens on {transport} {}",
            tap.server
        );
    }
    if let Some(e) = &state.recv_error {
        let _ = write!(error, "; connection: {e}");
    }
    let hint = if state.icmp_unreachable > 0 {
        format!(
            "check the port: is the TURN server running and listening on {transport} {}?",
            tap.server
        )
    } else {
        format!(
            "is a TURN server listening on {transport} {}? a firewall may drop {transport} \
             to it silently; try another transport (?transport=tcp, turns:)",
            tap.server
        )
    };
    StepError::new(error).hint(hint)
}

fn allocate_refused(tap: &Tap, answer: &Answer) -> StepError {
    let error = StepError::new(format!(
        "the server refused Allocate: {}",
        answer.describe()
    ));
    let authenticated = tap.lock().auth.is_some();
    match answer.code() {
        Some(400 | 401) if authenticated => error.hint(
            "the server refused the credentials: --secret must be one of its turn.auth.secrets \
             (or --user/--password one of turn.auth.users); REST usernames carry an expiry, \
             so check this host's clock",
        ),
        Some(437) => error.hint("this address already has an allocation; retry in a moment"),
        Some(486) => error.hint(
            "allocation quota reached for this user (turn.user_quota) or the whole server \
             (turn.total_quota)",
        ),
        Some(508) => {
            error.hint("the server has no relay port free (turn.relay_ports, turn.relay_ip)")
        }
        _ => error,
    }
}

/// Sends the warm-up packet: the crate makes the permission first.
async fn permission(
    opts: &ProbeOptions,
    tap: &Tap,
    relay: &Arc<dyn Conn + Send + Sync>,
    peer: SocketAddr,
    run_id: [u8; 3],
    mark: usize,
) -> Result<(), StepError> {
    let packet = encode_probe(Phase::Warmup, run_id, 0, MIN_PACKET_BYTES);
    let relay2 = Arc::clone(relay);
    let task = tokio::spawn(async move { relay2.send_to(&packet, peer).await });
    let abort = task.abort_handle();
    let started = Instant::now();
    let result = tokio::time::timeout(opts.timeout, task).await;
    let answer = tap.last_answer(METHOD_CREATE_PERMISSION, mark);
    match result {
        Ok(Ok(Ok(_))) => Ok(()),
        Err(_) => {
            abort.abort();
            Err(no_answer(tap, "CreatePermission", opts.timeout))
        }
        Ok(Err(e)) => Err(StepError::new(format!(
            "the TURN client failed on the server's answer: {e}"
        ))),
        Ok(Ok(Err(e))) => Err(match answer {
            Some(a) if !a.success => {
                peer_refused("CreatePermission", peer, &a, opts.peer_ip.is_some())
            }
            Some(_) => StepError::new(format!("CreatePermission for {}: {e}", peer.ip())),
            None => no_answer(tap, "CreatePermission", started.elapsed()),
        }),
    }
}

fn peer_refused(what: &str, peer: SocketAddr, answer: &Answer, explicit: bool) -> StepError {
    let error = StepError::new(format!(
        "{what} for {} refused: {}",
        peer.ip(),
        answer.describe()
    ));
    if answer.code() == Some(403) {
        let choose = if explicit {
            "pass a --peer-ip the server may relay to"
        } else {
            "run the probe from a host whose address the server may relay to (or pass --peer-ip)"
        };
        error.hint(format!(
            "the server's peer policy denies {}; {choose}, or allow it in [turn.peers]",
            peer.ip()
        ))
    } else {
        error
    }
}

/// Waits for the answer to the crate's ChannelBind; its round trip.
async fn channel_bind(
    opts: &ProbeOptions,
    tap: &Tap,
    peer: SocketAddr,
    mark: usize,
) -> Result<Option<Duration>, StepError> {
    let deadline = Instant::now() + opts.timeout;
    let exchange = tap
        .wait_for(deadline, |s| {
            let e = Tap::find(s, METHOD_CHANNEL_BIND, mark)?;
            e.answer.as_ref().map(|_| e.clone())
        })
        .await;
    let Some(exchange) = exchange else {
        let sent = Tap::find(&tap.lock(), METHOD_CHANNEL_BIND, mark).is_some();
        return Err(if sent {
            no_answer(tap, "ChannelBind", opts.timeout)
        } else {
            StepError::new("the TURN client sent no ChannelBind")
        });
    };
    let answer = exchange.answer.clone().unwrap_or_default();
    if !answer.success {
        return Err(peer_refused(
            "ChannelBind",
            peer,
            &answer,
            opts.peer_ip.is_some(),
        ));
    }
    Ok(exchange.rtt())
}

/// How a phase sends.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// This many packets, this far apart.
    Count(u32, Duration),
    /// As fast as the relay conn takes them, for this long.
    Flood(Duration),
}

/// Probe packets that came back through the relay.
struct Arrivals {
    inner: Mutex<ArrivalsInner>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct ArrivalsInner {
    /// `(phase, seq, when)` in the order they came.
    list: Vec<(Phase, u32, Instant)>,
    seen: HashSet<(u8, u32)>,
    /// Distinct packets per phase.
    distinct: [u64; 4],
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals {
            inner: Mutex::new(ArrivalsInner::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Arrivals {
    fn lock(&self) -> std::sync::MutexGuard<'_, ArrivalsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, phase: Phase, seq: u32, at: Instant) {
        {
            let mut inner = self.lock();
            if inner.seen.insert((phase as u8, seq)) {
                inner.distinct[phase as usize] += 1;
            }
            inner.list.push((phase, seq, at));
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn distinct(&self, phase: Phase) -> u64 {
        self.lock().distinct[phase as usize]
    }

    fn snapshot(&self, phase: Phase) -> Vec<(u32, Instant)> {
        self.lock()
            .list
            .iter()
            .filter(|(p, _, _)| *p == phase)
            .map(|&(_, seq, at)| (seq, at))
            .collect()
    }
}

/// Reads the relay conn until it closes.
async fn receive(
    relay: Arc<dyn Conn + Send + Sync>,
    peer: SocketAddr,
    run_id: [u8; 3],
    arrivals: Arc<Arrivals>,
) {
    let mut buf = vec![0u8; 2048];
    while let Ok((n, from)) = relay.recv_from(&mut buf).await {
        let at = Instant::now();
        if from.ip() != peer.ip() {
            continue;
        }
        if let Some((phase, seq)) = decode_probe(&buf[..n], run_id) {
            arrivals.push(phase, seq, at);
        }
    }
}

async fn run_phase(
    opts: &ProbeOptions,
    relay: &Arc<dyn Conn + Send + Sync>,
    peer: SocketAddr,
    run_id: [u8; 3],
    arrivals: &Arrivals,
    phase: Phase,
    pace: Pace,
) -> Result<PhaseStats, StepError> {
    let mut sent: Vec<Instant> = Vec::new();
    let start = Instant::now();
    let mut seq = 0u32;
    loop {
        match pace {
            Pace::Count(count, _) if seq >= count => break,
            Pace::Count(_, interval) => {
                let due = start + interval * seq;
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            }
            Pace::Flood(duration) => {
                if start.elapsed() >= duration || seq == u32::MAX {
                    break;
                }
                if seq.is_multiple_of(32) {
                    tokio::task::yield_now().await;
                }
            }
        }
        let packet = encode_probe(phase, run_id, seq, opts.size);
        let at = Instant::now();
        match tokio::time::timeout(opts.timeout, relay.send_to(&packet, peer)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(StepError::new(format!(
                    "sending packet {seq} through the relay: {e}"
                )))
            }
            Err(_) => {
                return Err(StepError::new(format!(
                    "sending packet {seq} through the relay took over {}",
                    secs(opts.timeout)
                )))
            }
        }
        sent.push(at);
        seq += 1;
    }
    // Linger for late packets: a few times the slowest RTT so far, at
    // least 200 ms, at most the timeout; the whole timeout when nothing
    // came back yet.
    let expected = sent.len() as u64;
    let so_far = PhaseStats::compute(opts.size, &sent, &arrivals.snapshot(phase));
    let linger = match &so_far.rtt_ms {
        Some(rtt) => Duration::from_secs_f64(rtt.max * 3.0 / 1e3)
            .max(Duration::from_millis(200))
            .min(opts.timeout),
        None => opts.timeout,
    };
    let deadline = tokio::time::Instant::now() + linger;
    let mut rx = arrivals.changed.subscribe();
    loop {
        if arrivals.distinct(phase) >= expected {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    Ok(PhaseStats::compute(
        opts.size,
        &sent,
        &arrivals.snapshot(phase),
    ))
}

/// The echo phase got nothing back: where did it stop?
fn nothing_came_back(
    echo: &PhaseStats,
    peer: &EchoPeer,
    relay: SocketAddr,
    mapped: Option<SocketAddr>,
    opts: &ProbeOptions,
) -> StepError {
    let reached = peer.received();
    let error = StepError::new(format!(
        "none of {} packets came back through the relay within {} \
         ({reached} reached the peer {})",
        echo.sent,
        secs(opts.timeout),
        peer.addr
    ));
    if reached > 0 {
        error.hint(format!(
            "the relay reached the peer, but the peer's answers to {relay} did not come back: \
             a firewall in front of the relay ports (turn.relay_ports) or of this host drops them"
        ))
    } else {
        let nat = match mapped {
            Some(m) if m.ip() != peer.addr.ip() => format!(
                " This host is behind NAT (the server sees {}): the relay cannot reach {} \
                 unless the NAT forwards it; run the probe from a host with a public address.",
                m.ip(),
                peer.addr.ip()
            ),
            _ => String::new(),
        };
        error.hint(format!(
            "the relay {relay} did not reach the peer {}: a firewall between them drops UDP, \
             or the relay's outgoing traffic is blocked.{nat}",
            peer.addr
        ))
    }
}

/// A Refresh with [`REFRESH_LIFETIME`], signed like the crate's requests;
/// one retry with a fresh nonce on 438.
async fn refresh(
    opts: &ProbeOptions,
    tap: &Tap,
    password: &str,
) -> Result<Option<Duration>, StepError> {
    let Some(seen) = tap.lock().auth.clone() else {
        return Err(StepError::new(
            "the TURN client sent no authenticated request to copy",
        ));
    };
    let key = long_term_key(&seen.username, &seen.realm, password);
    let deadline = Instant::now() + opts.timeout;
    let mut nonce = seen.nonce.clone();
    for _attempt in 0..2 {
        let txid = TransactionId::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(txid),
            Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
            Box::new(Lifetime(REFRESH_LIFETIME)),
            Box::new(TextAttribute::new(ATTR_USERNAME, seen.username.clone())),
            Box::new(TextAttribute::new(ATTR_REALM, seen.realm.clone())),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce.clone())),
            Box::new(MessageIntegrity(key.to_vec())),
            Box::new(FINGERPRINT),
        ];
        let mut m = Message::new();
        m.build(&setters)
            .map_err(|e| StepError::new(format!("building Refresh: {e}")))?;
        let Some(answer) = tap.transact(&m.raw, txid.0, deadline).await else {
            return Err(no_answer(tap, "Refresh", opts.timeout));
        };
        if answer.success {
            return Ok(answer.lifetime);
        }
        match (answer.code(), &answer.nonce) {
            (Some(438), Some(fresh)) => nonce = fresh.clone(),
            _ => {
                return Err(StepError::new(format!(
                    "the server refused Refresh: {}",
                    answer.describe()
                )))
            }
        }
    }
    Err(StepError::new(
        "the server kept answering Refresh with 438 (stale nonce)",
    ))
}

/// Waits for the answer to the crate's deallocating Refresh.
async fn close(opts: &ProbeOptions, tap: &Tap, mark: usize) -> Result<(), StepError> {
    let deadline = Instant::now() + opts.timeout;
    let answer = tap
        .wait_for(deadline, |s| {
            Tap::find(s, METHOD_REFRESH, mark)?.answer.clone()
        })
        .await;
    match answer {
        Some(a) if a.success => Ok(()),
        Some(a) => Err(StepError::new(format!(
            "the server refused the deallocating Refresh: {}",
            a.describe()
        ))),
        None => Err(no_answer(tap, "Refresh (LIFETIME 0)", opts.timeout)),
    }
}

// ---------------------------------------------------------------------------
// The echo peer
// ---------------------------------------------------------------------------

/// A local UDP socket that sends the probe's packets back where they came
/// from.
struct EchoPeer {
    addr: SocketAddr,
    task: AbortHandle,
    stats: Arc<Mutex<PeerStats>>,
}

#[derive(Default)]
struct PeerStats {
    received: u64,
    first_source: Option<SocketAddr>,
}

impl EchoPeer {
    async fn bind(
        peer_ip: Option<IpAddr>,
        relay: SocketAddr,
        run_id: [u8; 3],
    ) -> Result<EchoPeer, StepError> {
        let ip = match peer_ip {
            Some(ip) => ip,
            None => route_toward(relay).await.map_err(|e| {
                StepError::new(format!(
                    "cannot tell which local address routes toward the relay {relay}: {e}"
                ))
                .hint("pass --peer-ip with an address of this host")
            })?,
        };
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(|e| {
            StepError::new(format!("cannot bind the echo peer on {ip}: {e}"))
                .hint("--peer-ip must be an address of this host")
        })?;
        let addr = socket
            .local_addr()
            .map_err(|e| StepError::new(e.to_string()))?;
        let stats = Arc::new(Mutex::new(PeerStats::default()));
        let counters = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if decode_probe(&buf[..n], run_id).is_none() {
                    continue;
                }
                {
                    let mut s = counters.lock().unwrap_or_else(|e| e.into_inner());
                    s.received += 1;
                    s.first_source.get_or_insert(from);
                }
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        Ok(EchoPeer {
            addr,
            task: task.abort_handle(),
            stats,
        })
    }

    fn received(&self) -> u64 {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
    }

    fn first_source(&self) -> Option<SocketAddr> {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_source
    }
}

/// The local IP the OS would send from toward `addr` (a UDP socket
/// connected there; nothing is sent).
async fn route_toward(addr: SocketAddr) -> io::Result<IpAddr> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    Ok(socket.local_addr()?.ip())
}

// ---------------------------------------------------------------------------
// Output (pure)
// ---------------------------------------------------------------------------

/// `0.42 ms`, `12.3 ms`, `1234 ms`.
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `40.0 kbit/s`, `1.52 Mbit/s`.
pub fn format_kbit(kbit: f64) -> String {
    if kbit >= 1000.0 {
        format!("{:.2} Mbit/s", kbit / 1000.0)
    } else {
        format!("{kbit:.1} kbit/s")
    }
}

fn format_phase(out: &mut String, title: &str, p: &PhaseStats) {
    let _ = writeln!(
        out,
        "  {title}: {} packets of {} bytes in {}",
        p.sent,
        p.size,
        format_ms(p.duration_ms)
    );
    let _ = writeln!(
        out,
        "    sent {}, received {}, loss {:.1} % (duplicates {}, reordered {})",
        p.sent, p.received, p.loss_percent, p.duplicates, p.reordered
    );
    if let Some(r) = &p.rtt_ms {
        let _ = writeln!(
            out,
            "    rtt min {}, p50 {}, p99 {}, max {}",
            format_ms(r.min),
            format_ms(r.p50),
            format_ms(r.p99),
            format_ms(r.max)
        );
    }
    let _ = writeln!(
        out,
        "    rate sent {:.1} packets/s, received {:.1} packets/s, {}",
        p.sent_per_s,
        p.received_per_s,
        format_kbit(p.received_kbit_per_s)
    );
}

fn format_steps(out: &mut String, steps: &[StepTime]) {
    for s in steps {
        let _ = writeln!(out, "  {:<14}{:>12}", s.step.name(), format_ms(s.ms));
    }
}

/// The human report.
pub fn format_report(r: &ProbeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "TURN probe of {}: OK", r.url);
    let _ = writeln!(
        out,
        "  server        {} over {}, from {}",
        r.server, r.transport, r.local
    );
    let _ = writeln!(
        out,
        "  realm         {} (username {})",
        r.realm.as_deref().unwrap_or("-"),
        r.username
    );
    let _ = writeln!(
        out,
        "  mapped        {}",
        r.mapped.map_or("-".into(), |a| a.to_string())
    );
    let lifetime = |l: Option<u64>| l.map_or("-".into(), |s| format!("{s} s"));
    let _ = writeln!(
        out,
        "  relay         {} (lifetime {}, refreshed to {})",
        r.relay,
        lifetime(r.lifetime_s),
        lifetime(r.refreshed_lifetime_s)
    );
    let _ = writeln!(out, "  peer          {} (local echo socket)", r.peer);
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<14}{:>12}", "step", "time");
    format_steps(&mut out, &r.steps);
    let _ = writeln!(out);
    format_phase(&mut out, "echo", &r.echo);
    if let Some(t) = &r.throughput {
        format_phase(&mut out, "throughput", t);
    }
    let _ = writeln!(
        out,
        "  relayed as {} ChannelData and {} Send indications",
        r.channel_data_sent, r.send_indications_sent
    );
    for note in &r.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}

/// The human failure: `probe failed at step <name>: <error>`, the hint,
/// and the steps that completed.
pub fn format_failure(f: &ProbeFailure) -> String {
    let mut out = format!("{f}\n");
    if let Some(hint) = &f.hint {
        let _ = writeln!(out, "hint: {hint}");
    }
    if !f.steps.is_empty() {
        let done: Vec<String> = f
            .steps
            .iter()
            .map(|s| format!("{} {}", s.step, format_ms(s.ms)))
            .collect();
        let _ = writeln!(out, "completed: {}", done.join(", "));
    }
    out
}

/// `{"ok": true, ...report}`.
pub fn report_json(r: &ProbeReport) -> String {
    let mut value = serde_json::to_value(r).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("ok".into(), true.into());
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// `{"ok": false, "step": ..., "error": ..., "hint": ..., "steps": [...]}`.
pub fn failure_json(f: &ProbeFailure) -> String {
    let mut value = serde_json::to_value(f).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("ok".into(), false.into());
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> TurnUrl {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn url_err(text: &str) -> String {
        match text.parse::<TurnUrl>() {
            Ok(u) => panic!("{text:?} parsed as {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_urls_with_defaults() {
        let u = url("turn:turn.example.org");
        assert_eq!(u.transport, Transport::Udp);
        assert_eq!(u.host, Host::Name("turn.example.org".into()));
        assert_eq!(u.port, DEFAULT_PORT);
        assert_eq!(u.to_string(), "turn:turn.example.org:3478?transport=udp");

        let u = url("turns:Turn.Example.org.");
        assert_eq!(u.transport, Transport::Tls);
        assert_eq!(u.host, Host::Name("turn.example.org".into()));
        assert_eq!(u.port, DEFAULT_TLS_PORT);
        assert_eq!(u.to_string(), "turns:turn.example.org:5349?transport=tcp");

        let u = url("turn:203.0.113.7:3479?transport=tcp");
        assert_eq!(u.transport, Transport::Tcp);
        assert_eq!(u.host, Host::Ip("203.0.113.7".parse().unwrap()));
        assert_eq!(u.port, 3479);
        assert_eq!(u.host_port(), "203.0.113.7:3479");

        let u = url("TURN:[2001:db8::1]:443?Transport=UDP");
        assert_eq!(u.transport, Transport::Udp);
        assert_eq!(u.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(u.host_port(), "[2001:db8::1]:443");
        assert_eq!(u.to_string(), "turn:[2001:db8::1]:443?transport=udp");

        assert_eq!(url("turns:[::1]").port, 5349);
        assert_eq!(url("turns:h:443?transport=tcp").transport, Transport::Tls);
        assert_eq!(url(" turn:a_b-c.d:1 ").port, 1);
        assert_eq!(url("turn:host?").transport, Transport::Udp);
        // What TurnServer prints parses back to itself.
        let printed = turn_url(Transport::Tls, "127.0.0.1:443".parse().unwrap());
        assert_eq!(url(&printed).to_string(), printed);
        let printed = turn_url(Transport::Udp, "[::1]:3478".parse().unwrap());
        assert_eq!(url(&printed).to_string(), printed);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("", "not a TURN URL"),
            ("turn.example.org", "not a TURN URL"),
            ("http://x", "unknown scheme \"http\""),
            ("stun:stun.l.google.com:19302", "STUN URL"),
            ("turn://host:3478", "no \"//\""),
            ("turn:", "no host"),
            ("turn::3478", "no host"),
            ("turn:host:", "empty port"),
            ("turn:host:0", "port 0"),
            ("turn:host:65536", "1 to 65535"),
            ("turn:host:+80", "1 to 65535"),
            ("turn:host:http", "1 to 65535"),
            ("turn:::1", "brackets"),
            ("turn:2001:db8::1:3478", "brackets"),
            ("turn:[::1", "no closing ]"),
            ("turn:[nope]:1", "not an IPv6 address"),
            ("turn:[::1]x", "after ]"),
            ("turn:[127.0.0.1]:1", "not an IPv6 address"),
            ("turn:user:pw@host", "credentials do not go"),
            ("turn:host/path", "no path"),
            ("turn:host?transport=sctp", "unknown transport \"sctp\""),
            ("turn:host?transport", "unknown transport \"\""),
            ("turn:host?foo=bar", "unknown URL parameter \"foo\""),
            ("turn:host?transport=udp&transport=tcp", "given twice"),
            ("turns:host?transport=udp", "DTLS"),
            (
                "turn:-bad-.example",
                "neither an IP address nor a host name",
            ),
            ("turn:a..b", "neither an IP address nor a host name"),
            ("turn:exa mple.org", "neither an IP address nor a host name"),
            ("turn:😀", "neither an IP address nor a host name"),
        ];
        for (text, expect) in cases {
            let err = url_err(text);
            assert!(err.contains(expect), "{text:?}: {err:?} lacks {expect:?}");
        }
        let long = format!("turn:{}.org", "a".repeat(64));
        assert!(url_err(&long).contains("neither"));
        // Garbage never panics.
        for text in [
            "turn:[",
            "turn:]",
            "turn:[]",
            "turn:?",
            "turn:@",
            "turns:[::1]:",
            "::::",
            "turn:\0",
        ] {
            let _ = text.parse::<TurnUrl>();
        }
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate("50").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_rate("50/s").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_rate(" 1000/s ").unwrap(), Duration::from_millis(1));
        for bad in ["0", "-1", "abc", "50/m", "NaN", "inf", "", "2000000"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        let ms = Duration::from_millis(1);
        assert_eq!(parse_duration("20", ms).unwrap(), Duration::from_millis(20));
        assert_eq!(
            parse_duration("20ms", ms).unwrap(),
            Duration::from_millis(20)
        );
        assert_eq!(
            parse_duration("2", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_duration("1.5", Duration::from_secs(1)).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2s", ms).unwrap(), Duration::from_secs(2));
        for bad in ["", "x", "-1", "5 parsecs", "1e300"] {
            assert!(parse_duration(bad, ms).is_err(), "{bad}");
        }
    }

    fn opts() -> ProbeOptions {
        ProbeOptions::new(
            url("turn:127.0.0.1"),
            ProbeAuth::Static {
                username: "u".into(),
                password: "p".into(),
            },
        )
    }

    #[test]
    fn options_are_validated_with_the_flag_named() {
        opts().validate().unwrap();
        let check = |f: &dyn Fn(&mut ProbeOptions), flag: &str| {
            let mut o = opts();
            f(&mut o);
            let err = o.validate().unwrap_err();
            assert!(err.contains(flag), "{err}");
        };
        check(&|o| o.count = 0, "--count");
        check(&|o| o.size = 11, "--size");
        check(&|o| o.size = 1401, "--size");
        check(&|o| o.timeout = Duration::from_millis(10), "--timeout");
        check(&|o| o.interval = Duration::from_secs(11), "--interval");
        check(&|o| o.throughput = Some(Duration::ZERO), "--throughput");
        check(&|o| o.max_loss_percent = 101.0, "--max-loss");
        check(&|o| o.max_loss_percent = f64::NAN, "--max-loss");
        check(&|o| o.tls_name = Some("bad name!".into()), "--tls-name");
        check(
            &|o| {
                o.url = url("turns:127.0.0.1");
                o.tls_trust = TlsTrust::CaFile("/nonexistent/ca.pem".into());
            },
            "--ca",
        );
        check(
            &|o| {
                o.auth = ProbeAuth::Secret {
                    secret: "s".into(),
                    user_id: "x".repeat(1000),
                }
            },
            "credentials",
        );
        // TLS settings only matter for turns:.
        let mut o = opts();
        o.tls_trust = TlsTrust::CaFile("/nonexistent/ca.pem".into());
        o.validate().unwrap();
        let mut o = opts();
        o.url = url("turns:127.0.0.1");
        o.tls_trust = TlsTrust::Insecure;
        o.validate().unwrap();
    }

    #[test]
    fn rest_credentials_reuse_the_minting_code() {
        let auth = ProbeAuth::Secret {
            secret: "s3cret".into(),
            user_id: "probe".into(),
        };
        let (user, pass) = auth.credentials(1_700_000_000).unwrap();
        assert_eq!(user, format!("{}:probe", 1_700_000_000 + 600));
        assert_eq!(pass, crate::credentials::rest_password("s3cret", &user));
        assert!(!format!("{auth:?}").contains("s3cret"));
        let auth = ProbeAuth::Static {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert_eq!(
            auth.credentials(0).unwrap(),
            ("alice".to_string(), "hunter2".to_string())
        );
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 0.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 150.0), Some(100.0));
        assert_eq!(percentile(&v, f64::NAN), None);
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 51.0), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(4.0));
    }

    #[test]
    fn loss_is_a_share_of_what_was_sent() {
        assert_eq!(loss_percent(0, 0), 0.0);
        assert_eq!(loss_percent(200, 200), 0.0);
        assert_eq!(loss_percent(200, 150), 25.0);
        assert_eq!(loss_percent(200, 0), 100.0);
        assert_eq!(loss_percent(10, 12), 0.0);
    }

    #[test]
    fn phase_stats_count_rtt_duplicates_reordering_and_rate() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Four packets 10 ms apart; #2 is lost, #3 overtakes #1, #0 twice.
        let sent = [ms(0), ms(10), ms(20), ms(30)];
        let arrivals = [
            (0, ms(5)),
            (3, ms(33)),
            (1, ms(40)),
            (0, ms(41)),
            (99, ms(42)),
        ];
        let p = PhaseStats::compute(100, &sent, &arrivals);
        assert_eq!(p.sent, 4);
        assert_eq!(p.received, 3);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.reordered, 1);
        assert_eq!(p.loss_percent, 25.0);
        let rtt = p.rtt_ms.clone().unwrap();
        assert!((rtt.min - 3.0).abs() < 1e-3, "{rtt:?}");
        assert!((rtt.p50 - 5.0).abs() < 1e-3, "{rtt:?}");
        assert!((rtt.max - 30.0).abs() < 1e-3, "{rtt:?}");
        assert!((rtt.p99 - 30.0).abs() < 1e-3, "{rtt:?}");
        assert!((rtt.mean - 38.0 / 3.0).abs() < 1e-3, "{rtt:?}");
        // 40 ms from the first send to the last distinct arrival.
        assert!((p.duration_ms - 40.0).abs() < 1e-3, "{p:?}");
        // Sent: 3 gaps in 30 ms; arrived: 2 gaps in 35 ms (5 to 40 ms).
        assert!((p.sent_per_s - 100.0).abs() < 1e-3, "{p:?}");
        assert!((p.received_per_s - 2.0 / 0.035).abs() < 1e-3, "{p:?}");
        // 100 bytes × 8 bits each.
        assert!(
            (p.received_kbit_per_s - 0.8 * 2.0 / 0.035).abs() < 1e-3,
            "{p:?}"
        );

        let none = PhaseStats::compute(100, &sent, &[]);
        assert_eq!((none.received, none.loss_percent), (0, 100.0));
        assert!(none.rtt_ms.is_none());
        let empty = PhaseStats::compute(100, &[], &[(0, ms(1))]);
        assert_eq!(
            (empty.sent, empty.received, empty.loss_percent),
            (0, 0, 0.0)
        );
        assert_eq!(empty.received_per_s, 0.0);
    }

    #[test]
    fn probe_packets_roundtrip_and_reject_strangers() {
        let run = [1, 2, 3];
        let p = encode_probe(Phase::Echo, run, 0xDEAD_BEEF, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(decode_probe(&p, run), Some((Phase::Echo, 0xDEAD_BEEF)));
        assert_eq!(decode_probe(&p, [1, 2, 4]), None);
        assert_eq!(decode_probe(&p[..11], run), None);
        let short = encode_probe(Phase::Warmup, run, 7, 0);
        assert_eq!(short.len(), PROBE_HEADER_BYTES);
        assert_eq!(decode_probe(&short, run), Some((Phase::Warmup, 7)));
        let mut bad = p.clone();
        bad[4] = 9;
        assert_eq!(decode_probe(&bad, run), None);
        bad[4] = 3;
        assert_eq!(
            decode_probe(&bad, run),
            Some((Phase::Throughput, 0xDEAD_BEEF))
        );
        bad[0] = b'x';
        assert_eq!(decode_probe(&bad, run), None);
        assert_eq!(decode_probe(&[], run), None);
    }

    fn error_response(reason: &[u8]) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute {
                code: stun::error_code::ErrorCode(403),
                reason: reason.to_vec(),
            }),
            Box::new(TextAttribute::new(ATTR_REALM, "r".into())),
        ])
        .unwrap();
        m.raw
    }

    #[test]
    fn error_reasons_are_made_printable_in_place() {
        let mut raw = error_response(b"Forbidden \xff\xfe IP");
        let len = raw.len();
        sanitize_error_reason(&mut raw);
        assert_eq!(raw.len(), len);
        let mut m = Message::new();
        m.raw = raw;
        m.decode().unwrap();
        let answer = Answer::from_message(&m);
        assert_eq!(answer.describe(), "403 Forbidden ?? IP");
        assert_eq!(answer.realm.as_deref(), Some("r"));
        // The crate's Display of the attribute no longer fails.
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).unwrap();
        assert_eq!(format!("{code}"), "403: Forbidden ?? IP");
        // Answers without a reason phrase get the usual one.
        let bare = |code| Answer {
            error: Some((code, String::new())),
            ..Answer::default()
        };
        assert_eq!(bare(400).describe(), "400 Bad Request");
        assert_eq!(bare(486).describe(), "486 Allocation Quota Reached");
        assert_eq!(bare(499).describe(), "499");
        // Garbage and truncations never panic.
        let good = error_response(b"x");
        for n in 0..good.len() {
            let mut p = good[..n].to_vec();
            sanitize_error_reason(&mut p);
        }
        let mut junk = vec![0xffu8; 64];
        sanitize_error_reason(&mut junk);
    }

    #[test]
    fn inbound_filter_keeps_the_crate_alive() {
        let mut state = TapState::default();
        // Garbage, a request, ChannelData on an unknown channel: dropped.
        assert_eq!(
            Inbound::Drop,
            classify_inbound(&mut state, &mut [0x80, 1, 2, 3])
        );
        let mut req = Message::new();
        req.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        ])
        .unwrap();
        assert_eq!(
            Inbound::Drop,
            classify_inbound(&mut state, &mut req.raw.clone())
        );
        let mut cd = vec![0x40, 0x01, 0x00, 0x02, 9, 9];
        assert_eq!(Inbound::Drop, classify_inbound(&mut state, &mut cd.clone()));
        // A known channel passes; a bad length does not.
        state.channels.insert(0x4001);
        assert_eq!(Inbound::Pass, classify_inbound(&mut state, &mut cd));
        assert_eq!(
            Inbound::Drop,
            classify_inbound(&mut state, &mut [0x40, 0x01, 0x00, 0x09, 1])
        );
        // A Data indication without its attributes is dropped.
        let mut ind = Message::new();
        ind.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
        ])
        .unwrap();
        assert_eq!(
            Inbound::Drop,
            classify_inbound(&mut state, &mut ind.raw.clone())
        );
        // A response is recorded against its request and passed on.
        let mut answer = error_response(b"no \xff");
        let mut m = Message::new();
        m.raw = answer.clone();
        m.decode().unwrap();
        state.exchanges.push(Exchange {
            method: METHOD_ALLOCATE,
            txid: m.transaction_id.0,
            sent: Instant::now(),
            sends: 1,
            answer: None,
        });
        assert_eq!(Inbound::Pass, classify_inbound(&mut state, &mut answer));
        let a = state.exchanges[0].answer.clone().unwrap();
        assert_eq!(a.describe(), "403 no ?");
        // An answer to the probe's own request goes to its waiter only.
        let mut own = error_response(b"mine");
        let mut m = Message::new();
        m.raw = own.clone();
        m.decode().unwrap();
        let (tx, mut rx) = oneshot::channel();
        state.own.insert(m.transaction_id.0, tx);
        assert_eq!(Inbound::Own, classify_inbound(&mut state, &mut own));
        assert_eq!(rx.try_recv().unwrap().describe(), "403 mine");
        assert!(state.own.is_empty());
        // Truncated STUN never panics.
        let raw = error_response(b"x");
        for n in 0..raw.len() {
            let _ = classify_inbound(&mut state, &mut raw[..n].to_vec());
        }
    }

    /// A UDP "TURN server" that answers each datagram with `answer(request)`.
    async fn fake_server(
        answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, AbortHandle) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                for reply in answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        (addr, task.abort_handle())
    }

    fn probe_of(addr: SocketAddr) -> ProbeOptions {
        let mut o = opts();
        o.url = url(&format!("turn:{addr}"));
        o.timeout = Duration::from_millis(800);
        o.count = 3;
        o
    }

    #[tokio::test]
    async fn garbage_from_the_server_never_panics() {
        let (addr, server) = fake_server(|request| {
            let mut m = Message::new();
            m.raw = request.to_vec();
            let txid = match m.decode() {
                Ok(()) => m.transaction_id,
                Err(_) => return Vec::new(),
            };
            let mut replies = vec![
                vec![0xff; 37],
                vec![0x40, 0x01, 0xff, 0xff, 1],
                request.to_vec(),
                request[..request.len().min(25)].to_vec(),
                Vec::new(),
            ];
            // Then an error answer without NONCE whose reason is not UTF-8.
            let mut e = Message::new();
            e.build(&[
                Box::new(txid),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
                Box::new(ErrorCodeAttribute {
                    code: stun::error_code::ErrorCode(401),
                    reason: b"\xff\xfe".to_vec(),
                }),
            ])
            .unwrap();
            replies.push(e.raw);
            replies
        })
        .await;
        let started = Instant::now();
        let failure = run(probe_of(addr)).await.unwrap_err();
        assert_eq!(failure.step, Step::Allocate, "{failure}");
        assert!(failure.error.contains("401 ??"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(3));
        server.abort();

        // Only junk: a timeout, bounded by the option.
        let (addr, server) = fake_server(|_| vec![vec![0u8; 20], b"garbage".to_vec()]).await;
        let started = Instant::now();
        let failure = run(probe_of(addr)).await.unwrap_err();
        assert_eq!(failure.step, Step::Allocate, "{failure}");
        assert!(failure.error.contains("timed out"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(3));
        server.abort();
    }

    fn report() -> ProbeReport {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let sent = [ms(0), ms(20)];
        ProbeReport {
            url: "turn:127.0.0.1:3478?transport=udp".into(),
            transport: "udp",
            server_url: "turn:127.0.0.1:3478?transport=udp".into(),
            server: "127.0.0.1:3478".parse().unwrap(),
            local: "127.0.0.1:40000".parse().unwrap(),
            username: "1700000600:probe".into(),
            realm: Some("rtcrelay".into()),
            mapped: Some("127.0.0.1:40000".parse().unwrap()),
            relay: "127.0.0.1:50000".parse().unwrap(),
            lifetime_s: Some(600),
            refreshed_lifetime_s: Some(600),
            peer: "127.0.0.1:40001".parse().unwrap(),
            relay_seen_by_peer: Some("127.0.0.1:50000".parse().unwrap()),
            allocation_ms: 1.234,
            steps: vec![
                StepTime {
                    step: Step::Resolve,
                    ms: 0.01,
                },
                StepTime {
                    step: Step::ChannelBind,
                    ms: 0.5,
                },
            ],
            echo: PhaseStats::compute(100, &sent, &[(0, ms(1)), (1, ms(22))]),
            throughput: None,
            channel_data_sent: 2,
            send_indications_sent: 1,
            ignored_from_server: 0,
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn human_report_and_json() {
        let text = format_report(&report());
        for expect in [
            "TURN probe of turn:127.0.0.1:3478?transport=udp: OK",
            "relay         127.0.0.1:50000 (lifetime 600 s, refreshed to 600 s)",
            "mapped        127.0.0.1:40000",
            "channel bind",
            "0.50 ms",
            "sent 2, received 2, loss 0.0 %",
            "rtt min 1.00 ms, p50 1.00 ms, p99 2.00 ms, max 2.00 ms",
            "note: a note",
        ] {
            assert!(text.contains(expect), "{expect:?} not in\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&report_json(&report())).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["relay"], "127.0.0.1:50000");
        assert_eq!(json["echo"]["received"], 2);
        assert_eq!(json["echo"]["loss_percent"], 0.0);
        assert_eq!(json["steps"][1]["step"], "channel bind");
        assert_eq!(json["throughput"], serde_json::Value::Null);
    }

    #[test]
    fn failure_output() {
        let f = ProbeFailure {
            step: Step::Permission,
            error: "CreatePermission for 127.0.0.1 refused: 403 Forbidden IP".into(),
            hint: Some("the server's peer policy denies 127.0.0.1".into()),
            steps: vec![StepTime {
                step: Step::Allocate,
                ms: 12.345,
            }],
        };
        let text = format_failure(&f);
        assert!(text.starts_with(
            "probe failed at step permission: CreatePermission for 127.0.0.1 refused: 403 Forbidden IP\n"
        ));
        assert!(text.contains("hint: the server's peer policy denies 127.0.0.1\n"));
        assert!(text.contains("completed: allocate 12.3 ms"));
        let json: serde_json::Value = serde_json::from_str(&failure_json(&f)).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["step"], "permission");
        assert_eq!(json["steps"][0]["step"], "allocate");
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(format_ms(0.4242), "0.42 ms");
        assert_eq!(format_ms(12.34), "12.3 ms");
        assert_eq!(format_ms(1234.5), "1234 ms");
        assert_eq!(format_ms(f64::NAN), "-");
        assert_eq!(format_kbit(40.0), "40.0 kbit/s");
        assert_eq!(format_kbit(1520.0), "1.52 Mbit/s");
    }
}
