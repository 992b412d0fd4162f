//! The `[turn]` section of the configuration file.
//!
//! Every key has a default, so `rtcrelay serve` needs no file; the defaults
//! are safe: listeners on loopback only, no TLS, relay sockets on loopback,
//! every private and loopback peer denied. Unknown keys are errors
//! (`deny_unknown_fields`), like in the rest of the configuration.
//!
//! ```toml
//! [turn]
//! realm = "rtcrelay"
//! listen_udp = ["127.0.0.1:3478"]
//! listen_tcp = ["127.0.0.1:3478"]
//! listen_tls = []                     # e.g. ["0.0.0.0:443"], with tls_cert / tls_key (PEM)
//! relay_ip = "127.0.0.1"              # address relay sockets bind to
//! external_ip = ""                    # address advertised in XOR-RELAYED-ADDRESS (1:1 NAT)
//! relay_ports = "49152-65535"
//! max_allocation_lifetime = "1h"
//! user_quota = 10                     # concurrent allocations per username (486 when exceeded)
//! total_quota = 10000
//! max_bps_per_allocation = 0          # 0 = unlimited
//! unauthenticated_rate_per_ip = 10    # requests/s that may get a nonce, per source IP (0 = unlimited)
//! unauthenticated_rate_total = 100    # the same, all sources together
//! [turn.auth]
//! secrets = ["change-me"]             # TURN REST API shared secrets, coturn use-auth-secret compatible
//! users = { alice = "password" }      # static long-term credentials
//! [turn.peers]
//! allow_loopback = false
//! allow_private = false
//! allow = []                          # CIDRs that override the denies
//! deny = []
//! ```
//!
//! Serde checks each key on its own (types, [`PortRange`] syntax, durations,
//! CIDRs); [`TurnConfig::validate`] checks the rules between keys and
//! returns one message per problem, each starting with the key it is about
//! (``key `turn.relay_ports`: ...``). [`TurnConfig::warnings`] lists
//! settings that work but are probably not what the operator meant.
//!
//! # Authentication and the default secret
//!
//! `turn.auth.secrets` and `turn.auth.users` are both empty by default, and
//! that is valid: when `secrets` is empty the server generates a random
//! secret at startup ([`crate::credentials::generate_secret`]), kept in
//! memory only, with which signaling mints short-lived credentials for the
//! clients it admits. So `rtcrelay serve` works with no configuration and
//! no guessable secret ever exists. Configure `secrets` only when something
//! outside this process mints credentials (another backend, coturn's
//! `turnutils_uclient -W`, or several rtcrelay nodes sharing one TURN
//! secret). A standalone TURN server (`rtcrelay turn`) with neither secrets
//! nor users could admit nobody; refusing that is the caller's job
//! ([`TurnConfig::has_configured_credentials`]), since the same section is
//! fine inside `rtcrelay serve`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::credentials;

/// Shortest accepted `turn.max_allocation_lifetime`.
pub const MIN_ALLOCATION_LIFETIME: Duration = Duration::from_secs(60);
/// Longest accepted `turn.max_allocation_lifetime`. The `turn` crate (0.17.2)
/// grants at most 3599 s per Allocate/Refresh (it falls back to its 10 min
/// default for larger requests), so a longer cap could never take effect.
pub const MAX_ALLOCATION_LIFETIME: Duration = Duration::from_secs(3600);
/// Shortest accepted `turn.auth.credential_lifetime`.
pub const MIN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(60);
/// Longest accepted `turn.auth.credential_lifetime`.
pub const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest realm (RFC 5389 §15.7: fewer than 128 characters).
pub const MAX_REALM_CHARS: usize = 127;
/// Longest user name in bytes (RFC 5389 §15.3: fewer than 513 bytes).
pub const MAX_USERNAME_BYTES: usize = 512;
/// Secrets shorter than this get a warning.
pub const MIN_SECRET_BYTES: usize = 16;

/// The `[turn]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Run the bundled TURN server (default `true`). `false` keeps
    /// `rtcrelay serve` from opening any TURN port; signaling then hands out
    /// no TURN servers of ours.
    pub enabled: bool,
    /// REALM of the long-term credential mechanism; part of every key
    /// (`MD5(username:realm:password)`), so changing it invalidates static
    /// users' keys computed elsewhere, never REST credentials.
    pub realm: String,
    /// UDP listeners (`turn:host:port`).
    pub listen_udp: Vec<SocketAddr>,
    /// TCP listeners, RFC 6544 framing (`turn:host:port?transport=tcp`).
    /// Empty by default while the binary does not serve TURN over TCP yet
    /// (it validates the key and warns that it is ignored).
    pub listen_tcp: Vec<SocketAddr>,
    /// TLS-over-TCP listeners (`turns:host:port`); need `tls_cert` and
    /// `tls_key`.
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain for `listen_tls`. `""` means unset.
    #[serde(with = "empty_as_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `listen_tls`. `""` means unset.
    #[serde(with = "empty_as_none")]
    pub tls_key: Option<PathBuf>,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Address advertised in XOR-RELAYED-ADDRESS instead of `relay_ip`, for a
    /// 1:1 NAT (a cloud VM's public address). `""` means unset. Required when
    /// `relay_ip` is a wildcard address.
    #[serde(with = "empty_as_none")]
    pub external_ip: Option<IpAddr>,
    /// Ports relay sockets are taken from, `"LOW-HIGH"` (or one port).
    pub relay_ports: PortRange,
    /// Longest lifetime granted to an allocation per Allocate/Refresh
    /// (humantime, e.g. `"10m"`, `"1h"`; a bare integer is seconds);
    /// 1 min to 1 h.
    #[serde(with = "duration")]
    pub max_allocation_lifetime: Duration,
    /// Concurrent allocations per username; one more gets 486 (Allocation
    /// Quota Reached).
    pub user_quota: u32,
    /// Concurrent allocations in all; one more gets 486.
    pub total_quota: u32,
    /// Bandwidth cap of one allocation, bits per second each way; 0 means
    /// unlimited.
    pub max_bps_per_allocation: u64,
    /// Requests per second from one source IP that may reach the server
    /// without a nonce it issued to that source (each costs the `turn`
    /// crate a nonce kept for an hour; see [`crate::limit`]); bursts of
    /// 10 s worth. 0 = unlimited.
    pub unauthenticated_rate_per_ip: u32,
    /// The same budget for all sources together: the nonce map grows at
    /// most this fast. 0 = unlimited.
    pub unauthenticated_rate_total: u32,
    pub auth: AuthConfig,
    pub peers: PeersConfig,
}

/// `[turn.auth]`: who may allocate.
///
/// `Debug` prints how many secrets and users there are, never their values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TURN REST API shared secrets (coturn's `use-auth-secret` /
    /// `static-auth-secret`): username `expiry-unix-time[:user-id]`,
    /// password `base64(HMAC-SHA1(secret, username))`. Several at once for
    /// rotation: the first one mints, every one is accepted. Empty (the
    /// default): a random secret is generated at startup for signaling to
    /// mint with (see the module docs).
    pub secrets: Vec<String>,
    /// Static long-term credentials, user name → password. A name that looks
    /// like a REST username (`digits` or `digits:...`) is refused, so the
    /// two kinds never collide.
    pub users: BTreeMap<String, String>,
    /// Lifetime of the REST credentials signaling mints for each client
    /// (humantime; a bare integer is seconds); 1 min to 7 days. An
    /// allocation cannot be refreshed once its credentials have expired, so
    /// this bounds how long one client can keep relaying without fetching
    /// new credentials.
    #[serde(with = "duration")]
    pub credential_lifetime: Duration,
}

/// `[turn.peers]`: which peer addresses clients may relay to. Interpreted by
/// [`crate::PeerPolicy`]. The TURN server's own addresses are denied whatever
/// this says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// Allow 127.0.0.0/8, ::1, 0.0.0.0, :: and their IPv4-mapped forms.
    pub allow_loopback: bool,
    /// Allow RFC 1918, link-local, ULA, CGNAT and multicast addresses.
    pub allow_private: bool,
    /// CIDRs allowed even when a rule above denies them. A bare address
    /// means that one host (/32 or /128).
    #[serde(deserialize_with = "deserialize_nets")]
    pub allow: Vec<IpNet>,
    /// CIDRs always denied (unless also in `allow`). A bare address means
    /// that one host.
    #[serde(deserialize_with = "deserialize_nets")]
    pub deny: Vec<IpNet>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 3478));
        TurnConfig {
            enabled: true,
            realm: "rtcrelay".into(),
            listen_udp: vec![loopback],
            listen_tcp: vec![loopback],
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            relay_ip: IpAddr::from([127, 0, 0, 1]),
            external_ip: None,
            relay_ports: PortRange::DEFAULT,
            max_allocation_lifetime: Duration::from_secs(3600),
            user_quota: 10,
            total_quota: 10_000,
            max_bps_per_allocation: 0,
            unauthenticated_rate_per_ip: 10,
            unauthenticated_rate_total: 100,
            auth: AuthConfig::default(),
            peers: PeersConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secrets: Vec::new(),
            users: BTreeMap::new(),
            credential_lifetime: Duration::from_secs(3600),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("credential_lifetime", &self.credential_lifetime)
            .finish()
    }
}

impl TurnConfig {
    /// The rules between keys, which serde cannot check. Each message starts
    /// with ``key `turn.<key>`: `` (callers add their own prefix, e.g.
    /// `config error: `). All problems are reported, not just the first.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(format!("key `turn.{key}`: {message}"));
        };

        // realm
        let realm_chars = self.realm.chars().count();
        if self.realm.is_empty() {
            problem("realm", "must not be empty".into());
        } else if realm_chars > MAX_REALM_CHARS {
            problem(
                "realm",
                format!("must be at most {MAX_REALM_CHARS} characters, got {realm_chars}"),
            );
        }
        if self.realm.chars().any(|c| c.is_control() || c == '"') {
            problem(
                "realm",
                "must not contain control characters or '\"'".into(),
            );
        }

        // listeners
        if self.enabled
            && self.listen_udp.is_empty()
            && self.listen_tcp.is_empty()
            && self.listen_tls.is_empty()
        {
            problem(
                "listen_udp",
                "no listener configured (listen_udp, listen_tcp and listen_tls are all empty); \
                 set one, or `enabled = false`"
                    .into(),
            );
        }
        for (key, list) in [
            ("listen_udp", &self.listen_udp),
            ("listen_tcp", &self.listen_tcp),
        ] {
            for addr in duplicates(list) {
                problem(key, format!("{addr} is listed twice"));
            }
        }
        for addr in duplicates(&self.listen_tls) {
            problem("listen_tls", format!("{addr} is listed twice"));
        }
        // TCP and TLS listeners are both TCP sockets: one address cannot be both.
        for addr in &self.listen_tls {
            if addr.port() != 0 && self.listen_tcp.contains(addr) {
                problem(
                    "listen_tls",
                    format!("{addr} is also in turn.listen_tcp; TCP and TLS need different ports"),
                );
            }
        }

        // TLS material
        if !self.listen_tls.is_empty() {
            if self.tls_cert.is_none() {
                problem(
                    "tls_cert",
                    "required when turn.listen_tls is set (PEM certificate chain)".into(),
                );
            }
            if self.tls_key.is_none() {
                problem(
                    "tls_key",
                    "required when turn.listen_tls is set (PEM private key)".into(),
                );
            }
        }

        // relay addresses
        if self.relay_ip.is_multicast() {
            problem(
                "relay_ip",
                format!("{} is a multicast address", self.relay_ip),
            );
        }
        match self.external_ip {
            None if self.relay_ip.is_unspecified() => problem(
                "external_ip",
                format!(
                    "required when turn.relay_ip is a wildcard address ({}), since clients \
                     need one relayed address they can reach",
                    self.relay_ip
                ),
            ),
            None => {}
            Some(ip) => {
                if ip.is_unspecified() || ip.is_multicast() {
                    problem(
                        "external_ip",
                        format!("{ip} cannot be advertised as a relayed address"),
                    );
                }
                if ip.is_ipv4() != self.relay_ip.is_ipv4() {
                    problem(
                        "external_ip",
                        format!(
                            "{ip} is not of the same address family as turn.relay_ip ({})",
                            self.relay_ip
                        ),
                    );
                }
            }
        }

        // lifetimes and quotas
        let lifetime = self.max_allocation_lifetime;
        if !(MIN_ALLOCATION_LIFETIME..=MAX_ALLOCATION_LIFETIME).contains(&lifetime) {
            problem(
                "max_allocation_lifetime",
                format!(
                    "must be 1m to 1h (the turn crate grants at most 1h per refresh), got {}",
                    humantime::format_duration(lifetime)
                ),
            );
        }
        if self.user_quota == 0 {
            problem("user_quota", "must be at least 1".into());
        }
        if self.total_quota == 0 {
            problem("total_quota", "must be at least 1".into());
        }

        // auth
        for (i, secret) in self.auth.secrets.iter().enumerate() {
            if secret.is_empty() {
                problem(&format!("auth.secrets[{i}]"), "must not be empty".into());
            }
        }
        for (name, password) in &self.auth.users {
            if name.is_empty() {
                problem("auth.users", "a user name must not be empty".into());
            } else if name.len() > MAX_USERNAME_BYTES {
                problem(
                    "auth.users",
                    format!(
                        "user name {:?}... is longer than {MAX_USERNAME_BYTES} bytes",
                        name.chars().take(16).collect::<String>()
                    ),
                );
            } else if credentials::parse_rest_expiry(name).is_some() {
                problem(
                    "auth.users",
                    format!(
                        "user name {name:?} looks like a TURN REST API username \
                         (expiry[:user-id]); choose a name that does not"
                    ),
                );
            }
            if name.chars().any(char::is_control) {
                problem(
                    "auth.users",
                    format!("user name {name:?} contains control characters"),
                );
            }
            if password.is_empty() {
                problem("auth.users", format!("user {name:?} has an empty password"));
            }
        }
        let lifetime = self.auth.credential_lifetime;
        if !(MIN_CREDENTIAL_LIFETIME..=MAX_CREDENTIAL_LIFETIME).contains(&lifetime) {
            problem(
                "auth.credential_lifetime",
                format!(
                    "must be 1m to 7days, got {}",
                    humantime::format_duration(lifetime)
                ),
            );
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Settings that are valid but probably not meant, in the same
    /// ``key `turn.<key>`: `` format; for logging at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut warn = |key: &str, message: String| {
            warnings.push(format!("key `turn.{key}`: {message}"));
        };
        for (i, secret) in self.auth.secrets.iter().enumerate() {
            let key = format!("auth.secrets[{i}]");
            if secret == "change-me" {
                warn(
                    &key,
                    "is the documentation's placeholder \"change-me\"; anyone can mint \
                     credentials with it"
                        .into(),
                );
            } else if !secret.is_empty() && secret.len() < MIN_SECRET_BYTES {
                warn(
                    &key,
                    format!("is shorter than {MIN_SECRET_BYTES} bytes; use a long random secret"),
                );
            }
        }
        for i in duplicate_indices(&self.auth.secrets) {
            warn(
                &format!("auth.secrets[{i}]"),
                "repeats an earlier secret".into(),
            );
        }
        let ports = self.relay_ports.len();
        if ports < self.total_quota {
            warn(
                "relay_ports",
                format!(
                    "{} has {ports} ports, fewer than turn.total_quota ({}); allocations are \
                     refused once the ports run out",
                    self.relay_ports, self.total_quota
                ),
            );
        }
        if self.relay_ports.low < 1024 {
            warn(
                "relay_ports",
                format!(
                    "{} includes privileged ports (below 1024)",
                    self.relay_ports
                ),
            );
        }
        if self.user_quota > self.total_quota {
            warn(
                "user_quota",
                format!(
                    "{} is above turn.total_quota ({}), so it never applies",
                    self.user_quota, self.total_quota
                ),
            );
        }
        for (key, rate) in [
            (
                "unauthenticated_rate_per_ip",
                self.unauthenticated_rate_per_ip,
            ),
            (
                "unauthenticated_rate_total",
                self.unauthenticated_rate_total,
            ),
        ] {
            if rate == 0 {
                warn(
                    key,
                    "is 0 (unlimited): a flood of unauthenticated requests grows the TURN \
                     server's nonce table without bound"
                        .into(),
                );
            }
        }
        if self.listen_tls.is_empty() && (self.tls_cert.is_some() || self.tls_key.is_some()) {
            warn(
                "listen_tls",
                "is empty, so turn.tls_cert and turn.tls_key are unused".into(),
            );
        }
        for (key, nets) in [
            ("peers.allow", &self.peers.allow),
            ("peers.deny", &self.peers.deny),
        ] {
            for net in nets {
                if net.trunc() != *net {
                    warn(
                        key,
                        format!("{net} has host bits set; it means {}", net.trunc()),
                    );
                }
            }
        }
        warnings
    }

    /// Whether the file configures any way to authenticate (secrets or
    /// users). When not, the server must generate a secret at startup, and
    /// only credentials minted in-process (by signaling) can work; a
    /// standalone TURN server should refuse to start then.
    pub fn has_configured_credentials(&self) -> bool {
        !self.auth.secrets.is_empty() || !self.auth.users.is_empty()
    }

    /// The address advertised to clients for relay sockets: `external_ip`,
    /// else `relay_ip`.
    pub fn advertised_relay_ip(&self) -> IpAddr {
        self.external_ip.unwrap_or(self.relay_ip)
    }
}

fn duplicates(list: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut seen = BTreeSet::new();
    let mut reported = BTreeSet::new();
    list.iter()
        .filter(|a| a.port() != 0 && !seen.insert(**a) && reported.insert(**a))
        .copied()
        .collect()
}

fn duplicate_indices(list: &[String]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    list.iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty() && !seen.insert(s.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// An inclusive range of UDP ports, written `"LOW-HIGH"` (`"49152-65535"`)
/// or as one port (`"50000"`, or the integer `50000`). Port 0 is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

/// Why a [`PortRange`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("expected a port range \"LOW-HIGH\" such as \"49152-65535\", got {0:?}")]
    Syntax(String),
    #[error("port {0} is out of range: ports are 1 to 65535")]
    OutOfRange(u64),
    #[error("the low port {low} is above the high port {high}")]
    Reversed { low: u16, high: u16 },
}

impl PortRange {
    /// The IANA dynamic/private range, 49152-65535.
    pub const DEFAULT: PortRange = PortRange {
        low: 49152,
        high: 65535,
    };

    pub fn new(low: u16, high: u16) -> Result<PortRange, PortRangeError> {
        for port in [low, high] {
            if port == 0 {
                return Err(PortRangeError::OutOfRange(0));
            }
        }
        if low > high {
            return Err(PortRangeError::Reversed { low, high });
        }
        Ok(PortRange { low, high })
    }

    /// Number of ports in the range (at least 1).
    pub fn len(&self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    /// Always false: a range holds at least one port. (For clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::DEFAULT
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PortRangeError::Syntax(s.to_owned());
        let port = |text: &str| -> Result<u16, PortRangeError> {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let value: u64 = text
                .parse()
                .map_err(|_| PortRangeError::OutOfRange(u64::MAX))?;
            u16::try_from(value)
                .ok()
                .filter(|&p| p != 0)
                .ok_or(PortRangeError::OutOfRange(value))
        };
        let (low, high) = match s.split_once('-') {
            Some((low, high)) => (port(low)?, port(high)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        PortRange::new(low, high)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port range \"LOW-HIGH\" such as \"49152-65535\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortRange, E> {
                let port =
                    u16::try_from(v).map_err(|_| E::custom(PortRangeError::OutOfRange(v)))?;
                PortRange::new(port, port).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "port {v} is out of range: ports are 1 to 65535"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `Option<T>` written as a string where `""` means `None`.
mod empty_as_none {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => v.serialize(serializer),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// A `Duration` written the humantime way (`"90s"`, `"10m"`, `"1h 30m"`), or
/// as an integer number of seconds: `#[serde(with = "duration")]`. The
/// binary's own config sections use it too, so every duration key of the
/// config file reads and fails the same way.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"10m\" or \"1h\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim()).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write e.g. \"500ms\", \"5s\" or \"1h\""
                    ))
                })
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// CIDR lists where a bare address means one host.
fn deserialize_nets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| parse_net(text).map_err(serde::de::Error::custom))
        .collect()
}

/// Parses `"10.0.0.0/8"`, `"fd00::/8"`, or a bare address as a host route.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{text:?} is not a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", nor an IP address"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[turn]` example of issue 4, verbatim.
    const ISSUE_EXAMPLE: &str = r#"
[turn]
realm = "rtcrelay"
listen_udp = ["127.0.0.1:3478"]
listen_tcp = ["127.0.0.1:3478"]
listen_tls = []                     # e.g. ["0.0.0.0:443"], with tls_cert / tls_key (PEM)
relay_ip = "127.0.0.1"              # address relay sockets bind to
external_ip = ""                    # address advertised in XOR-RELAYED-ADDRESS (1:1 NAT)
relay_ports = "49152-65535"
max_allocation_lifetime = "1h"
user_quota = 10                     # concurrent allocations per username (486 when exceeded)
total_quota = 10000
max_bps_per_allocation = 0          # 0 = unlimited
[turn.auth]
secrets = ["change-me"]             # TURN REST API shared secrets, coturn use-auth-secret compatible
users = { alice = "password" }      # static long-term credentials
[turn.peers]
allow_loopback = false              # deny 127.0.0.0/8, ::1, 0.0.0.0, :: and their IPv4-mapped forms
allow_private = false               # deny RFC 1918, link-local, ULA, CGNAT, multicast
allow = []                          # CIDRs that override the denies
deny = []
"#;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        turn: TurnConfig,
    }

    fn parse(text: &str) -> Result<TurnConfig, String> {
        toml::from_str::<File>(text)
            .map(|f| f.turn)
            .map_err(|e| e.to_string())
    }

    /// Parses `[turn]` + `body` and validates; the messages on failure.
    fn check(body: &str) -> Result<TurnConfig, Vec<String>> {
        let config = parse(&format!("[turn]\n{body}")).map_err(|e| vec![e])?;
        config.validate()?;
        Ok(config)
    }

    fn assert_problem(body: &str, key: &str, fragment: &str) {
        let problems = check(body).expect_err(body);
        let prefix = format!("key `turn.{key}`: ");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&prefix) && p.contains(fragment)),
            "{body:?}: expected a problem starting {prefix:?} containing {fragment:?}, got {problems:#?}"
        );
    }

    #[test]
    fn issue_example_parses_verbatim_and_validates() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert!(c.enabled);
        assert_eq!(c.realm, "rtcrelay");
        assert_eq!(c.listen_udp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(c.listen_tcp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert!(c.listen_tls.is_empty());
        assert_eq!(c.relay_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.external_ip, None);
        assert_eq!(c.relay_ports, PortRange::new(49152, 65535).unwrap());
        assert_eq!(c.relay_ports.len(), 16384);
        assert_eq!(c.max_allocation_lifetime, Duration::from_secs(3600));
        assert_eq!((c.user_quota, c.total_quota), (10, 10_000));
        assert_eq!(c.max_bps_per_allocation, 0);
        assert_eq!(c.auth.secrets, vec!["change-me".to_string()]);
        assert_eq!(
            c.auth.users.get("alice").map(String::as_str),
            Some("password")
        );
        assert_eq!(c.auth.credential_lifetime, Duration::from_secs(3600));
        assert_eq!(c.peers, PeersConfig::default());
        c.validate().unwrap();
        // ... but the placeholder secret is called out.
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].starts_with("key `turn.auth.secrets[0]`: "));
        assert!(warnings[0].contains("change-me"));
    }

    #[test]
    fn defaults_are_valid_secure_and_equal_an_empty_section() {
        let d = TurnConfig::default();
        d.validate().unwrap();
        assert!(d.warnings().is_empty(), "{:#?}", d.warnings());
        assert_eq!(parse("[turn]\n").unwrap(), d);
        assert!(d.enabled);
        assert_eq!(d.listen_udp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(d.listen_tcp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(
            (d.unauthenticated_rate_per_ip, d.unauthenticated_rate_total),
            (10, 100)
        );
        assert!(d.listen_tls.is_empty() && d.tls_cert.is_none() && d.tls_key.is_none());
        assert_eq!(d.relay_ip, IpAddr::from([127, 0, 0, 1]));
        assert!(!d.peers.allow_loopback && !d.peers.allow_private);
        assert!(d.peers.allow.is_empty() && d.peers.deny.is_empty());
        assert!(d.auth.secrets.is_empty() && d.auth.users.is_empty());
        assert!(!d.has_configured_credentials());
        assert_eq!(d.advertised_relay_ip(), d.relay_ip);
    }

    #[test]
    fn serializes_and_parses_back_identically() {
        let mut c = parse(ISSUE_EXAMPLE).unwrap();
        c.external_ip = Some("203.0.113.7".parse().unwrap());
        c.tls_cert = Some("/etc/cert.pem".into());
        c.peers.allow = vec!["10.1.0.0/16".parse().unwrap()];
        let text = toml::to_string(&File2 { turn: c.clone() }).unwrap();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
        // The defaults too (figment layers them from their serialized form).
        let d = TurnConfig::default();
        let text = toml::to_string(&File2 { turn: d.clone() }).unwrap();
        assert_eq!(parse(&text).unwrap(), d, "{text}");
    }

    #[derive(Serialize)]
    struct File2 {
        turn: TurnConfig,
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        for (body, key) in [
            ("[turn]\nrelam = \"x\"\n", "relam"),
            ("[turn.auth]\nsecret = [\"x\"]\n", "secret"),
            ("[turn.peers]\nallow_loopbacks = true\n", "allow_loopbacks"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(
                err.contains("unknown field") && err.contains(key),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn typed_keys_give_clear_errors() {
        for (body, fragment) in [
            (
                "relay_ports = \"65535-49152\"",
                "the low port 65535 is above the high port 49152",
            ),
            ("relay_ports = \"0-100\"", "port 0 is out of range"),
            ("relay_ports = \"1000-70000\"", "port 70000 is out of range"),
            (
                "relay_ports = \"lots\"",
                "expected a port range \"LOW-HIGH\"",
            ),
            ("relay_ports = \"1-2-3\"", "expected a port range"),
            ("relay_ports = -5", "port -5 is out of range"),
            (
                "max_allocation_lifetime = \"forever\"",
                "\"forever\" is not a duration",
            ),
            ("max_allocation_lifetime = -1", "cannot be negative"),
            ("external_ip = \"example.com\"", "\"example.com\""),
            ("relay_ip = \"\"", "invalid IP address"),
            ("listen_udp = [\"127.0.0.1\"]", "invalid socket address"),
            ("user_quota = -1", "invalid value"),
        ] {
            let err = parse(&format!("[turn]\n{body}\n")).unwrap_err();
            assert!(err.contains(fragment), "{body}: {err}");
        }
        let err = parse("[turn.peers]\nallow = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.contains("\"10.0.0.0/33\" is not a CIDR"), "{err}");
    }

    #[test]
    fn lenient_forms() {
        let c = check(
            "relay_ports = \" 50000 - 50010 \"\nmax_allocation_lifetime = 600\n\
             external_ip = \" 2001:db8::1 \"\nrelay_ip = \"::1\"\n\
             [turn.peers]\nallow = [\"10.0.0.7\", \"fd00::/8\"]\ndeny = [\"::ffff:127.0.0.1\"]\n",
        )
        .unwrap();
        assert_eq!(c.relay_ports, PortRange::new(50000, 50010).unwrap());
        assert_eq!(c.relay_ports.len(), 11);
        assert!(c.relay_ports.contains(50010) && !c.relay_ports.contains(50011));
        assert_eq!(c.max_allocation_lifetime, Duration::from_secs(600));
        assert_eq!(
            c.advertised_relay_ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(c.peers.allow[0], "10.0.0.7/32".parse::<IpNet>().unwrap());
        assert_eq!(
            c.peers.deny[0],
            "::ffff:127.0.0.1/128".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse("[turn]\nrelay_ports = 3479\n")
                .unwrap()
                .relay_ports
                .len(),
            1
        );
        assert_eq!("7".parse::<PortRange>().unwrap().to_string(), "7-7");
    }

    #[test]
    fn each_invalid_key_is_named() {
        assert_problem("realm = \"\"", "realm", "must not be empty");
        assert_problem(
            &format!("realm = \"{}\"", "r".repeat(128)),
            "realm",
            "at most 127",
        );
        assert_problem("realm = \"a\\u0007b\"", "realm", "control characters");
        assert_problem(
            "listen_udp = []\nlisten_tcp = []\nlisten_tls = []",
            "listen_udp",
            "no listener",
        );
        assert_problem(
            "listen_udp = [\"127.0.0.1:3478\", \"127.0.0.1:3478\"]",
            "listen_udp",
            "listed twice",
        );
        assert_problem(
            "listen_tcp = [\"[::1]:3478\", \"[::1]:3478\"]",
            "listen_tcp",
            "listed twice",
        );
        assert_problem(
            "listen_tcp = [\"127.0.0.1:3478\"]\nlisten_tls = [\"127.0.0.1:3478\"]\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
            "listen_tls",
            "also in turn.listen_tcp",
        );
        assert_problem(
            "listen_tls = [\"127.0.0.1:5349\"]\ntls_key = \"k.pem\"",
            "tls_cert",
            "required",
        );
        assert_problem(
            "listen_tls = [\"127.0.0.1:5349\"]\ntls_cert = \"c.pem\"",
            "tls_key",
            "required",
        );
        assert_problem(
            "relay_ip = \"0.0.0.0\"",
            "external_ip",
            "required when turn.relay_ip is a wildcard",
        );
        assert_problem("relay_ip = \"224.0.0.1\"", "relay_ip", "multicast");
        assert_problem(
            "external_ip = \"0.0.0.0\"",
            "external_ip",
            "cannot be advertised",
        );
        assert_problem(
            "external_ip = \"2001:db8::1\"",
            "external_ip",
            "same address family",
        );
        assert_problem(
            "max_allocation_lifetime = \"59s\"",
            "max_allocation_lifetime",
            "must be 1m to 1h",
        );
        assert_problem(
            "max_allocation_lifetime = \"2h\"",
            "max_allocation_lifetime",
            "got 2h",
        );
        assert_problem("user_quota = 0", "user_quota", "at least 1");
        assert_problem("total_quota = 0", "total_quota", "at least 1");
        assert_problem(
            "[turn.auth]\nsecrets = [\"ok-secret\", \"\"]",
            "auth.secrets[1]",
            "must not be empty",
        );
        assert_problem(
            "[turn.auth]\nusers = { \"\" = \"pw\" }",
            "auth.users",
            "must not be empty",
        );
        assert_problem(
            "[turn.auth]\nusers = { bob = \"\" }",
            "auth.users",
            "\"bob\" has an empty password",
        );
        assert_problem(
            "[turn.auth]\nusers = { \"1700000000\" = \"pw\" }",
            "auth.users",
            "looks like a TURN REST API username",
        );
        assert_problem(
            "[turn.auth]\nusers = { \"1700000000:bob\" = \"pw\" }",
            "auth.users",
            "REST API",
        );
        assert_problem(
            "[turn.auth]\nusers = { \"bob:1700000000\" = \"pw\" }",
            "auth.users",
            "REST API",
        );
        assert_problem(
            &format!(
                "[turn.auth]\nusers = {{ \"{}\" = \"pw\" }}",
                "u".repeat(513)
            ),
            "auth.users",
            "longer than 512 bytes",
        );
        assert_problem(
            "[turn.auth]\nusers = { \"a\\tb\" = \"pw\" }",
            "auth.users",
            "control characters",
        );
        assert_problem(
            "[turn.auth]\ncredential_lifetime = \"30s\"",
            "auth.credential_lifetime",
            "must be 1m to 7days",
        );
        assert_problem(
            "[turn.auth]\ncredential_lifetime = \"8days\"",
            "auth.credential_lifetime",
            "got 8days",
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let problems = check("realm = \"\"\nuser_quota = 0\ntotal_quota = 0").unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }

    #[test]
    fn disabled_needs_no_listener_but_is_still_checked() {
        check("enabled = false\nlisten_udp = []\nlisten_tcp = []").unwrap();
        assert_problem(
            "enabled = false\nuser_quota = 0",
            "user_quota",
            "at least 1",
        );
    }

    #[test]
    fn valid_edge_values() {
        check("max_allocation_lifetime = \"1m\"").unwrap();
        check("max_allocation_lifetime = \"1h\"").unwrap();
        check("relay_ip = \"0.0.0.0\"\nexternal_ip = \"203.0.113.7\"").unwrap();
        check("listen_udp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]").unwrap();
        check(
            "listen_udp = []\nlisten_tcp = []\nlisten_tls = [\"0.0.0.0:443\"]\n\
             tls_cert = \"/etc/rtcrelay/cert.pem\"\ntls_key = \"/etc/rtcrelay/key.pem\"",
        )
        .unwrap();
        check("[turn.auth]\nusers = { \"bob:x1\" = \"pw\", \"12ab\" = \"pw\" }").unwrap();
        check("[turn.auth]\ncredential_lifetime = \"7days\"").unwrap();
    }

    #[test]
    fn warnings_name_their_key() {
        let c = parse(
            "[turn]\nrelay_ports = \"1000-1009\"\nuser_quota = 20\ntotal_quota = 15\n\
             tls_cert = \"c.pem\"\n\
             [turn.auth]\nsecrets = [\"short\", \"short\"]\n\
             [turn.peers]\ndeny = [\"10.0.0.1/8\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let warnings = c.warnings();
        for key in [
            "auth.secrets[0]",
            "auth.secrets[1]",
            "relay_ports",
            "user_quota",
            "listen_tls",
            "peers.deny",
        ] {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("key `turn.{key}`: "))),
                "{key}: {warnings:#?}"
            );
        }
        assert!(warnings.iter().any(|w| w.contains("privileged")));
        assert!(warnings.iter().any(|w| w.contains("it means 10.0.0.0/8")));
        assert!(warnings.iter().any(|w| w.contains("repeats")));
    }

    /// The root crate's loader: defaults, then TOML, then `(key, value)`
    /// overrides, errors formatted as ``key `turn.x` (source): ...``.
    fn figment_load(toml: &str, overrides: &[(&str, &str)]) -> Result<TurnConfig, Vec<String>> {
        use figment::providers::{Format, Serialized, Toml};

        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Root {
            turn: TurnConfig,
        }
        let mut figment =
            figment::Figment::from(Serialized::defaults(Root::default())).merge(Toml::string(toml));
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        let root: Root = figment.extract().map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("key `{}`: {}", e.path.join("."), e.kind))
                .collect::<Vec<_>>()
        })?;
        root.turn.validate()?;
        Ok(root.turn)
    }

    #[test]
    fn figment_layers_and_names_keys() {
        // Defaults survive their serialized form; the file and flags layer.
        assert_eq!(figment_load("", &[]).unwrap(), TurnConfig::default());
        let c = figment_load(
            ISSUE_EXAMPLE,
            &[
                ("turn.relay_ports", "50000-50100"),
                ("turn.external_ip", "203.0.113.9"),
            ],
        )
        .unwrap();
        assert_eq!(c.relay_ports, PortRange::new(50000, 50100).unwrap());
        assert_eq!(c.external_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.auth.secrets, vec!["change-me".to_string()]);
        // Errors name the key, whether serde or validate() found them.
        for (toml, key) in [
            ("[turn]\nrelay_ports = \"9-1\"", "turn.relay_ports"),
            (
                "[turn]\nmax_allocation_lifetime = \"soon\"",
                "turn.max_allocation_lifetime",
            ),
            ("[turn]\nexternal_ip = \"nope\"", "turn.external_ip"),
            ("[turn.peers]\ndeny = [\"x/8\"]", "turn.peers.deny"),
            (
                "[turn.auth]\ncredential_lifetime = \"10s\"",
                "turn.auth.credential_lifetime",
            ),
            ("[turn]\nuser_quota = 0", "turn.user_quota"),
        ] {
            let errors = figment_load(toml, &[]).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("key `{key}`"))),
                "{toml}: {errors:#?}"
            );
        }
        let errors = figment_load("[turn]\nrelm = \"x\"", &[]).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("relm")), "{errors:#?}");
    }

    #[test]
    fn debug_never_prints_secrets_or_passwords() {
        let c = parse(
            "[turn.auth]\nsecrets = [\"s3cr3t-value-xyz\"]\nusers = { alice = \"pa55w0rd-xyz\" }\n",
        )
        .unwrap();
        let text = format!("{c:?} {:#?}", c.auth);
        assert!(
            !text.contains("s3cr3t-value-xyz") && !text.contains("pa55w0rd-xyz"),
            "{text}"
        );
        assert!(text.contains("alice"));
    }
}
