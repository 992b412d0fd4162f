//! The configuration file model. Every key has an embedded default, so
//! `rtcrelay serve` needs no file. Layers, later ones winning: defaults, the
//! TOML file (`--config`), environment variables `RTCRELAY_<SECTION>__<KEY>`
//! (e.g. `RTCRELAY_HTTP__LISTEN=0.0.0.0:8080`), command-line flags.
//!
//! figment does the layering and reports which key of which source was bad;
//! unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use rtcrelay_netlab::{Lab, LinkConfig, Profiles, Scenario, ScenarioConfig, Scope, Setting};
use rtcrelay_protocol::limits::MAX_ROOM_CAPACITY;
use rtcrelay_protocol::signaling::IceServer;
use rtcrelay_relay::GameFactory;
use rtcrelay_turn::config::duration;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub relay: RelayConfig,
    pub rooms: RoomsConfig,
    pub signaling: SignalingConfig,
    pub game: GameConfig,
    pub log: LogConfig,
    /// The bundled TURN server; validated by `rtcrelay_turn` (errors name
    /// `turn.*` keys).
    pub turn: rtcrelay_turn::TurnConfig,
    /// The network lab: what is in force at startup, the profiles and
    /// scenarios the admin API can name.
    pub netlab: NetlabConfig,
    /// The admin API (`/admin/netlab/...`).
    pub admin: AdminConfig,
    /// Join tokens and allowed origins.
    pub auth: AuthConfig,
    /// Connection and message limits of signaling.
    pub limits: LimitsConfig,
    /// The process as a whole: how it stops.
    pub server: ServerConfig,
    /// Reconnection: how long a lost player's seat is kept, and what the
    /// match does meanwhile.
    pub resume: ResumeConfig,
}

/// `[resume]`. `Debug` never shows the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// How long a player that lost its connection keeps its seat. 0: no
    /// resume (seats are released at once).
    #[serde(with = "duration")]
    pub grace: Duration,
    /// `repeat` (the match goes on with the player's last input) or
    /// `pause` (the game freezes the match until it is back).
    pub away: rtcrelay_relay::AwayPolicy,
    /// `forfeit` or `bot` (a server bot plays the seat).
    pub after_grace: rtcrelay_relay::AfterGrace,
    /// A resume token's lifetime.
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// HMAC key of resume tokens (at least 32 bytes). Empty: a random key
    /// per process (tokens then work on this process only, where the seats
    /// are).
    pub secret: String,
    /// Per-room rules by room-id prefix; the first match wins.
    pub rooms: Vec<RoomResumeConfig>,
}

/// `[[resume.rooms]]`: the rules of rooms whose id starts with `prefix`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomResumeConfig {
    pub prefix: String,
    #[serde(with = "duration")]
    pub grace: Duration,
    #[serde(default)]
    pub away: rtcrelay_relay::AwayPolicy,
    #[serde(default)]
    pub after_grace: rtcrelay_relay::AfterGrace,
}

/// Longest grace period: a seat kept longer blocks a match for everyone.
const MAX_RESUME_GRACE: Duration = Duration::from_secs(600);

impl Default for ResumeConfig {
    fn default() -> Self {
        let policy = rtcrelay_relay::ResumePolicy::default();
        ResumeConfig {
            grace: policy.grace,
            away: policy.away,
            after_grace: policy.after_grace,
            token_ttl: Duration::from_secs(6 * 3600),
            secret: String::new(),
            rooms: Vec::new(),
        }
    }
}

impl fmt::Debug for ResumeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeConfig")
            .field("grace", &self.grace)
            .field("away", &self.away)
            .field("after_grace", &self.after_grace)
            .field("token_ttl", &self.token_ttl)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("rooms", &self.rooms)
            .finish()
    }
}

impl ResumeConfig {
    /// The rules, as relay and signaling take them.
    pub fn rules(&self) -> rtcrelay_relay::ResumeRules {
        rtcrelay_relay::ResumeRules {
            default: rtcrelay_relay::ResumePolicy {
                grace: self.grace,
                away: self.away,
                after_grace: self.after_grace,
            },
            rooms: self
                .rooms
                .iter()
                .map(|r| {
                    let policy = rtcrelay_relay::ResumePolicy {
                        grace: r.grace,
                        away: r.away,
                        after_grace: r.after_grace,
                    };
                    (r.prefix.clone(), policy)
                })
                .collect(),
        }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        let graces = std::iter::once(("resume.grace".to_string(), self.grace)).chain(
            self.rooms
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("resume.rooms[{i}].grace"), r.grace)),
        );
        for (key, grace) in graces {
            if grace > MAX_RESUME_GRACE {
                problems.push(format!(
                    "key `{key}`: at most {}, got {}",
                    humantime::format_duration(MAX_RESUME_GRACE),
                    humantime::format_duration(grace)
                ));
            }
        }
        for (i, room) in self.rooms.iter().enumerate() {
            if room.prefix.is_empty() {
                problems.push(format!(
                    "key `resume.rooms[{i}].prefix`: must not be empty (use resume.grace etc. \
                     for every room)"
                ));
            }
        }
        if self.token_ttl < Duration::from_secs(60) {
            problems.push(format!(
                "key `resume.token_ttl`: must be at least 1m, got {}",
                humantime::format_duration(self.token_ttl)
            ));
        }
        let min = rtcrelay_signaling::auth::MIN_SECRET_BYTES;
        if !self.secret.is_empty() && self.secret.len() < min {
            problems.push(format!(
                "key `resume.secret`: must be at least {min} bytes (e.g. `openssl rand -hex 32`), \
                 or empty for a random key"
            ));
        }
    }

    /// Signaling's resume settings.
    pub fn signaling(&self) -> rtcrelay_signaling::ResumeConfig {
        rtcrelay_signaling::ResumeConfig {
            rules: self.rules(),
            key: if self.secret.is_empty() {
                rtcrelay_signaling::ResumeKey::random()
            } else {
                rtcrelay_signaling::ResumeKey::new(&self.secret)
            },
            token_ttl: self.token_ttl,
        }
    }
}

/// `[auth]`. `Debug` never shows the secrets.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (anyone joins any room: local development only) or `token`
    /// (every join needs a join token signed with one of `secrets`).
    pub mode: rtcrelay_signaling::AuthMode,
    /// HMAC-SHA256 keys of join tokens (the UTF-8 bytes of each string);
    /// any of them verifies a token, so a key can be rotated. Prefer
    /// `RTCRELAY_AUTH__SECRETS` or a file readable only by the server.
    pub secrets: Vec<String>,
    /// Origins (`https://game.example.com`) whose pages may open the
    /// signaling WebSocket besides the server's own; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

/// `[limits]`: each breach is answered and counted in
/// `rtcrelay_signaling_limit_hits_total{limit}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open signaling WebSockets from one IP address; more get HTTP 429.
    pub max_connections_per_ip: usize,
    /// Open signaling WebSockets in all; more get HTTP 503.
    pub max_connections: usize,
    /// Messages per second one connection may send on average; more are
    /// dropped (the client hears `rate_limited` at most once a second).
    pub messages_per_sec: u32,
    /// Messages one connection may send at once.
    pub message_burst: u32,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// After SIGTERM/SIGINT, running matches may finish for up to this
    /// long before every connection is closed.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

/// `[netlab]`: impairment injected on the relay's (and TURN's) paths.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetlabConfig {
    /// Profile in force for every path at startup (scope global): a preset
    /// (`good`, `wifi`, `wifi-lossy`, `4g`, `3g`, `satellite`, `congested`)
    /// or a name of `profiles`. Empty: none.
    pub profile: String,
    /// Scenario of `scenarios` to start for scope global at startup, instead
    /// of `profile`. Empty: none.
    pub scenario: String,
    /// Seed of the startup setting (the same seed and traffic give the same
    /// decisions). Unset: random.
    pub seed: Option<u64>,
    /// The user's own profiles by name (may shadow a preset).
    pub profiles: BTreeMap<String, LinkConfig>,
    /// Named time-scripted scenarios, which the admin API starts with
    /// `{"scenario_name": NAME}`.
    pub scenarios: BTreeMap<String, ScenarioConfig>,
}

/// `[admin]`. `Debug` never shows the token.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of the admin API. Empty: no token; the API then works
    /// only on a loopback HTTP listener. Prefer `RTCRELAY_ADMIN__TOKEN` to
    /// `--admin-token` (command lines are visible in `ps`).
    pub token: String,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &if self.token.is_empty() { "" } else { "<set>" })
            .finish()
    }
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// Longest profile or scenario name (they appear in URLs and metrics).
const MAX_NETLAB_NAME_BYTES: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTP + WebSocket listener (demo page, `/ws`, `/healthz`, `/metrics`).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The server peer's one UDP socket.
    pub listen: SocketAddr,
    /// Extra host candidate for a 1:1 NAT, e.g. a cloud VM's public address.
    pub public_addr: Option<SocketAddr>,
    /// Worker shards; 0 means one per core.
    pub shards: usize,
    /// Bytes the `realtime` channel may hold buffered before messages are
    /// dropped instead of queued.
    pub realtime_buffer_bytes: usize,
    /// A WebRTC peer from which nothing arrived for this long is dead: its
    /// session closes and its room hears `disconnected`.
    #[serde(with = "duration")]
    pub dead_after: Duration,
    /// A heartbeat goes on `control` to a peer sent nothing for this long.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Most WebRTC sessions at once; more offers get `server_full`.
    pub max_peers: usize,
    /// Datagrams per second one peer may send (bursts of one second's
    /// worth); the rest are dropped and counted. 0: no limit.
    pub peer_datagram_rate: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Capacity of a room whose creator asks for none.
    pub default_capacity: usize,
    /// Largest capacity a creator may ask for.
    pub max_capacity: usize,
    pub max_rooms: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    pub max_message_bytes: usize,
    /// Extra STUN/TURN servers handed to clients in `welcome`.
    pub ice_servers: Vec<IceServer>,
    /// A WebSocket Ping goes to every client this often.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// A connection from which nothing arrived (no message, no Pong) for
    /// this long is closed and its room hears `disconnected`.
    #[serde(with = "duration")]
    pub dead_after: Duration,
}

/// Authoritative rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameConfig {
    /// The game authoritative rooms run (`dizolaur`).
    pub name: String,
    /// Simulation ticks per second.
    pub tick_rate: u32,
    /// Snapshots per second to each client (at most `tick_rate`).
    pub snapshot_rate: u32,
    /// Inputs for ticks further ahead of the server than this are rejected.
    pub max_input_lead_ms: u32,
    /// Directory where each room's match log is written when the room
    /// closes (for `rtcrelay replay`). Unset: logs are not kept.
    pub record_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `rtcrelay_relay=debug,info`; the
    /// `RTCRELAY_LOG` environment variable wins over it.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        let relay = rtcrelay_relay::RelayConfig::default();
        RelayConfig {
            listen: relay.listen,
            public_addr: relay.public_addr,
            shards: relay.shards,
            realtime_buffer_bytes: relay.realtime_buffer_limit,
            dead_after: relay.dead_after,
            heartbeat_interval: relay.heartbeat_interval,
            max_peers: relay.max_peers,
            peer_datagram_rate: relay.peer_datagram_rate,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = rtcrelay_signaling::LimitsConfig::default();
        LimitsConfig {
            max_connections_per_ip: l.max_connections_per_ip,
            max_connections: l.max_connections,
            messages_per_sec: l.messages_per_sec as u32,
            message_burst: l.message_burst as u32,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        let s = rtcrelay_signaling::SignalingConfig::default();
        RoomsConfig {
            default_capacity: s.default_room_capacity,
            max_capacity: 16,
            max_rooms: s.max_rooms,
        }
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        let s = rtcrelay_signaling::SignalingConfig::default();
        SignalingConfig {
            max_message_bytes: s.max_message_bytes,
            ice_servers: s.ice_servers,
            heartbeat_interval: s.heartbeat_interval,
            dead_after: s.dead_after,
        }
    }
}

impl Default for GameConfig {
    fn default() -> Self {
        let relay = rtcrelay_relay::RelayConfig::default();
        let game = relay.game;
        GameConfig {
            name: relay.game_name,
            tick_rate: game.tick_rate,
            snapshot_rate: game.snapshot_rate,
            max_input_lead_ms: game.max_input_lead * 1000 / game.tick_rate,
            record_dir: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem, naming the key and where it came from.
#[derive(Debug)]
pub struct ConfigError(Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads the layers; `overrides` are (dotted key, value) pairs from flags.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&'static str, Value)],
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(vec![format!(
                    "config file {}: not found or not a file",
                    path.display()
                )]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only double-underscore names are keys: RTCRELAY_LOG (the log
        // filter) and RTCRELAY_CONFIG (the file) are not.
        figment = figment.merge(
            Env::prefixed("RTCRELAY_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment.extract().map_err(|errors| {
            ConfigError(
                errors
                    .into_iter()
                    .map(|e| {
                        let key = e.path.join(".");
                        let source = e
                            .metadata
                            .as_ref()
                            .map(|m| m.name.to_string())
                            .unwrap_or_else(|| "configuration".into());
                        if key.is_empty() {
                            format!("{source}: {}", e.kind)
                        } else {
                            format!("key `{key}` ({source}): {}", e.kind)
                        }
                    })
                    .collect(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Rules between keys, which serde cannot check.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let rooms = &self.rooms;
        if !(1..=MAX_ROOM_CAPACITY).contains(&rooms.max_capacity) {
            problems.push(format!(
                "key `rooms.max_capacity`: must be 1 to {MAX_ROOM_CAPACITY}, got {}",
                rooms.max_capacity
            ));
        }
        if rooms.default_capacity == 0 || rooms.default_capacity > rooms.max_capacity {
            problems.push(format!(
                "key `rooms.default_capacity`: must be 1 to rooms.max_capacity ({}), got {}",
                rooms.max_capacity, rooms.default_capacity
            ));
        }
        if rooms.max_rooms == 0 {
            problems.push("key `rooms.max_rooms`: must be at least 1".into());
        }
        let bytes = self.signaling.max_message_bytes;
        if !(4096..=16 << 20).contains(&bytes) {
            problems.push(format!(
                "key `signaling.max_message_bytes`: must be 4096 to 16777216, got {bytes}"
            ));
        }
        for (i, server) in self.signaling.ice_servers.iter().enumerate() {
            if server.urls.is_empty() {
                problems.push(format!(
                    "key `signaling.ice_servers[{i}].urls`: must list at least one URL"
                ));
            }
            for url in &server.urls {
                if !["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    problems.push(format!(
                        "key `signaling.ice_servers[{i}].urls`: {url:?} is not a stun:, stuns:, turn: or turns: URL"
                    ));
                }
            }
        }
        if self.relay.realtime_buffer_bytes < rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES
        {
            problems.push(format!(
                "key `relay.realtime_buffer_bytes`: must hold at least one message ({} bytes), got {}",
                rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES,
                self.relay.realtime_buffer_bytes
            ));
        }
        if self.relay.listen.ip().is_unspecified() && self.relay.public_addr.is_none() {
            problems.push(format!(
                "key `relay.public_addr`: required when relay.listen is a wildcard address ({}), \
                 since clients need one address they can reach",
                self.relay.listen
            ));
        }
        let game = &self.game;
        if !(1..=240).contains(&game.tick_rate) {
            problems.push(format!(
                "key `game.tick_rate`: must be 1 to 240 ticks per second, got {}",
                game.tick_rate
            ));
        }
        if game.snapshot_rate == 0 || game.snapshot_rate > game.tick_rate {
            problems.push(format!(
                "key `game.snapshot_rate`: must be 1 to game.tick_rate ({}), got {}",
                game.tick_rate, game.snapshot_rate
            ));
        }
        if !(50..=10_000).contains(&game.max_input_lead_ms) {
            problems.push(format!(
                "key `game.max_input_lead_ms`: must be 50 to 10000, got {}",
                game.max_input_lead_ms
            ));
        }
        if rtcrelay_relay::BuiltinGames.create(&game.name, 0).is_none() {
            problems.push(format!(
                "key `game.name`: unknown game {:?}; this build runs \"dizolaur\"",
                game.name
            ));
        }
        if let Err(turn) = self.turn.validate() {
            problems.extend(turn);
        }
        if let Err(netlab) = self.netlab_lab() {
            problems.extend(netlab.0);
        }
        let token = &self.admin.token;
        if !token.is_empty()
            && (token.len() < MIN_ADMIN_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            problems.push(format!(
                "key `admin.token`: must be at least {MIN_ADMIN_TOKEN_BYTES} printable ASCII \
                 characters without spaces (e.g. `openssl rand -hex 32`), or empty for none"
            ));
        }
        self.validate_issue6(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// `[auth]`, `[limits]`, `[server]`, `[resume]` and the liveness keys.
    fn validate_issue6(&self, problems: &mut Vec<String>) {
        self.resume.validate(problems);
        use rtcrelay_signaling::auth::MIN_SECRET_BYTES;
        let auth = &self.auth;
        if auth.mode == rtcrelay_signaling::AuthMode::Token && auth.secrets.is_empty() {
            problems.push(
                "key `auth.secrets`: auth.mode = \"token\" needs at least one secret \
                 (e.g. `openssl rand -hex 32`)"
                    .into(),
            );
        }
        for (i, secret) in auth.secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                problems.push(format!(
                    "key `auth.secrets[{i}]`: must be at least {MIN_SECRET_BYTES} bytes \
                     (e.g. `openssl rand -hex 32`)"
                ));
            }
        }
        for (i, origin) in auth.allowed_origins.iter().enumerate() {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                problems.push(format!(
                    "key `auth.allowed_origins[{i}]`: {origin:?} is not an origin like \
                     \"https://game.example.com\" or \"*\""
                ));
            }
        }
        let limits = &self.limits;
        for (key, value) in [
            (
                "limits.max_connections_per_ip",
                limits.max_connections_per_ip,
            ),
            ("limits.max_connections", limits.max_connections),
            ("limits.messages_per_sec", limits.messages_per_sec as usize),
            ("limits.message_burst", limits.message_burst as usize),
            ("relay.max_peers", self.relay.max_peers),
        ] {
            if value == 0 {
                problems.push(format!("key `{key}`: must be at least 1"));
            }
        }
        for (section, interval, dead_after) in [
            (
                "signaling",
                self.signaling.heartbeat_interval,
                self.signaling.dead_after,
            ),
            (
                "relay",
                self.relay.heartbeat_interval,
                self.relay.dead_after,
            ),
        ] {
            if interval < Duration::from_millis(100) {
                problems.push(format!(
                    "key `{section}.heartbeat_interval`: must be at least 100ms, got {}",
                    humantime::format_duration(interval)
                ));
            }
            if dead_after <= interval {
                problems.push(format!(
                    "key `{section}.dead_after`: must be longer than {section}.heartbeat_interval \
                     ({}), got {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(dead_after)
                ));
            }
        }
    }

    pub fn relay(&self) -> rtcrelay_relay::RelayConfig {
        rtcrelay_relay::RelayConfig {
            listen: self.relay.listen,
            public_addr: self.relay.public_addr,
            shards: self.relay.shards,
            realtime_buffer_limit: self.relay.realtime_buffer_bytes,
            dead_after: self.relay.dead_after,
            heartbeat_interval: self.relay.heartbeat_interval,
            max_peers: self.relay.max_peers,
            peer_datagram_rate: self.relay.peer_datagram_rate,
            game: rtcrelay_relay::GameConfig {
                tick_rate: self.game.tick_rate,
                snapshot_rate: self.game.snapshot_rate,
                max_input_lead: (self.game.max_input_lead_ms * self.game.tick_rate)
                    .div_ceil(1000)
                    .max(1),
                ..Default::default()
            },
            game_name: self.game.name.clone(),
            record_dir: self.game.record_dir.clone(),
            resume: self.resume.rules(),
            ..Default::default()
        }
    }

    /// The network lab as `[netlab]` says: its profiles, and the startup
    /// setting for scope global in force. Errors name the key.
    pub fn netlab_lab(&self) -> Result<Lab, ConfigError> {
        let netlab = &self.netlab;
        let mut problems = Vec::new();
        let mut profiles = Profiles::builtin();
        for (name, link) in &netlab.profiles {
            if let Err(reason) = check_name(name) {
                problems.push(format!("key `netlab.profiles.{name}`: {reason}"));
            } else if let Err(e) = profiles.insert(name.clone(), link.clone()) {
                problems.push(netlab_problem("", &e));
            }
        }
        let now = Instant::now();
        for (name, scenario) in &netlab.scenarios {
            if let Err(reason) = check_name(name) {
                problems.push(format!("key `netlab.scenarios.{name}`: {reason}"));
            } else if let Err(e) = Scenario::new(scenario, &profiles, now) {
                problems.push(netlab_problem(&format!("scenarios.{name}."), &e));
            }
        }
        let startup = match (netlab.profile.as_str(), netlab.scenario.as_str()) {
            ("", "") => None,
            (profile, "") => match profiles.get(profile) {
                Some(_) => Some(Setting {
                    seed: netlab.seed,
                    ..Setting::profile(profile)
                }),
                None => {
                    problems.push(format!(
                        "key `netlab.profile`: {profile:?} is not a preset or a profile of \
                         [netlab.profiles] (known: {})",
                        profiles.names().join(", ")
                    ));
                    None
                }
            },
            ("", scenario) => match netlab.scenarios.get(scenario) {
                Some(config) => Some(Setting {
                    scenario: Some(config.clone()),
                    seed: netlab.seed,
                    ..Setting::default()
                }),
                None => {
                    problems.push(format!(
                        "key `netlab.scenario`: {scenario:?} is not a scenario of \
                         [netlab.scenarios] (known: {})",
                        netlab
                            .scenarios
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    None
                }
            },
            _ => {
                problems.push(
                    "key `netlab.scenario`: cannot be set together with netlab.profile".into(),
                );
                None
            }
        };
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        let lab = Lab::new(profiles);
        if let Some(setting) = startup {
            lab.set(Scope::Global, setting, now)
                .map_err(|e| ConfigError(vec![netlab_problem("", &e)]))?;
        }
        Ok(lab)
    }

    /// The admin API's settings for signaling: the token, whether the HTTP
    /// listener is public, the lab it controls and the named scenarios.
    pub fn admin(&self, lab: Arc<Lab>) -> rtcrelay_signaling::AdminConfig {
        rtcrelay_signaling::AdminConfig {
            token: rtcrelay_signaling::AdminToken::new(&self.admin.token),
            public_listener: !self.http.listen.ip().is_loopback(),
            netlab: Some(lab),
            scenarios: self.netlab.scenarios.clone(),
        }
    }

    /// Seats of the configured game: the capacity of authoritative rooms.
    pub fn game_seats(&self) -> usize {
        rtcrelay_relay::BuiltinGames
            .create(&self.game.name, 0)
            .map_or(0, |g| g.max_players())
    }

    pub fn signaling(&self) -> rtcrelay_signaling::SignalingConfig {
        rtcrelay_signaling::SignalingConfig {
            max_message_bytes: self.signaling.max_message_bytes,
            default_room_capacity: self.rooms.default_capacity,
            max_room_capacity: self.rooms.max_capacity,
            max_rooms: self.rooms.max_rooms,
            ice_servers: self.signaling.ice_servers.clone(),
            game_seats: self.game_seats(),
            auth: rtcrelay_signaling::AuthConfig {
                mode: self.auth.mode,
                secrets: rtcrelay_signaling::auth::Secrets::new(&self.auth.secrets),
                allowed_origins: self.auth.allowed_origins.clone(),
            },
            limits: rtcrelay_signaling::LimitsConfig {
                max_connections_per_ip: self.limits.max_connections_per_ip,
                max_connections: self.limits.max_connections,
                messages_per_sec: f64::from(self.limits.messages_per_sec),
                message_burst: f64::from(self.limits.message_burst),
            },
            heartbeat_interval: self.signaling.heartbeat_interval,
            dead_after: self.signaling.dead_after,
            resume: self.resume.signaling(),
            ..Default::default()
        }
    }
}

/// Profile and scenario names: `[A-Za-z0-9_.-]`, 1 to 64 bytes.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NETLAB_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "a name is 1 to {MAX_NETLAB_NAME_BYTES} characters of A-Z, a-z, 0-9, '_', '-', '.'"
        ));
    }
    Ok(())
}

/// A netlab error as a config problem, its field under `netlab.PREFIX`.
fn netlab_problem(prefix: &str, e: &rtcrelay_netlab::ConfigError) -> String {
    match e {
        rtcrelay_netlab::ConfigError::Invalid { field, reason } => {
            format!("key `netlab.{prefix}{field}`: {reason}")
        }
        rtcrelay_netlab::ConfigError::Parse(text) => format!("key `netlab`: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("rtcrelay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.toml",
            text.len() * 7919 + text.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path), &[]).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        result
    }

    /// The documented file (docs/configuration.md, "The file, with every
    /// key at its default") loads, and means the defaults.
    #[test]
    fn the_documented_file_is_the_defaults() {
        let doc = include_str!("../docs/configuration.md");
        let file = documented_file(doc);
        let c = load_toml(file).unwrap();
        let defaults = Config::load(None, &[]).unwrap();
        assert_eq!(format!("{c:?}"), format!("{defaults:?}"));
    }

    fn documented_file(doc: &str) -> &str {
        let start = doc
            .find("## The file, with every key at its default")
            .and_then(|i| {
                doc[i..]
                    .find("```toml\n")
                    .map(|j| i + j + "```toml\n".len())
            })
            .expect("the documented file");
        let end = doc[start..].find("\n```").expect("its end") + start;
        &doc[start..end]
    }

    /// What the `config_file` fuzz target checks, in every `cargo test`: no
    /// panic, and a refusal names a problem, over the fuzz seeds, the
    /// documented file and seeded mutations of them (bytes flipped, lines
    /// dropped, duplicated or cut, values swapped between keys). The
    /// instrumented fuzz build links the whole server and is too slow for the
    /// CI's fuzz smoke (docs/fuzzing.md); `scripts/fuzz config_file` runs the
    /// real fuzzer.
    #[test]
    fn mutated_config_files_never_panic() {
        use rand::{Rng, SeedableRng};
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_file");
        let mut seeds: Vec<String> = std::fs::read_dir(corpus)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        seeds.push(documented_file(include_str!("../docs/configuration.md")).to_owned());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let dir = std::env::temp_dir().join(format!("rtcrelay-config-mut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..1500 {
            let seed = &seeds[round % seeds.len()];
            let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
            for _ in 0..rng.random_range(1..4) {
                if lines.is_empty() {
                    break;
                }
                let i = rng.random_range(0..lines.len());
                match rng.random_range(0..5) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let line = lines[i].clone();
                        lines.insert(i, line);
                    }
                    2 => {
                        let cut = rng.random_range(0..=lines[i].len());
                        let cut = (0..=cut).rev().find(|c| lines[i].is_char_boundary(*c));
                        lines[i].truncate(cut.unwrap_or(0));
                    }
                    3 => {
                        // A value from another line (wrong type, range, unit).
                        let j = rng.random_range(0..lines.len());
                        if let (Some((key, _)), Some((_, value))) =
                            (lines[i].split_once('='), lines[j].split_once('='))
                        {
                            lines[i] = format!("{key}={value}");
                        }
                    }
                    _ => {
                        let mut bytes = std::mem::take(&mut lines[i]).into_bytes();
                        if !bytes.is_empty() {
                            let b = rng.random_range(0..bytes.len());
                            bytes[b] = rng.random_range(0x20..0x7f);
                        }
                        lines[i] = String::from_utf8_lossy(&bytes).into_owned();
                    }
                }
            }
            std::fs::write(&path, lines.join("\n")).unwrap();
            match Config::load(Some(&path), &[]) {
                Ok(config) => {
                    accepted += 1;
                    let _ = config.relay();
                    let _ = config.signaling();
                    let lab = config.netlab_lab().expect("load validated the lab");
                    let _ = config.admin(Arc::new(lab));
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Both outcomes were exercised, so the mutations reached past the
        // TOML parser into the shapes and the validation.
        assert!(
            accepted > 50 && refused > 50,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.relay.listen.to_string(), "127.0.0.1:3480");
        assert_eq!(c.rooms.default_capacity, 4);
    }

    #[test]
    fn file_and_flags_layer() {
        let c = load_toml("[http]\nlisten = \"127.0.0.1:9000\"\n[rooms]\ndefault_capacity = 2\n")
            .unwrap();
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.rooms.default_capacity, 2);
        let c = Config::load(None, &[("relay.listen", "127.0.0.1:0".into())]).unwrap();
        assert_eq!(c.relay.listen.port(), 0);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_toml("[http]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("`http.listen`"), "{e}");
        let e = load_toml("[rooms]\ndefault_capcity = 3\n").unwrap_err();
        assert!(e.contains("default_capcity"), "{e}");
        let e = load_toml("[rooms]\ndefault_capacity = 0\n").unwrap_err();
        assert!(e.contains("`rooms.default_capacity`"), "{e}");
        let e = load_toml("[signaling]\nice_servers = [{ urls = [\"http://x\"] }]\n").unwrap_err();
        assert!(e.contains("`signaling.ice_servers[0].urls`"), "{e}");
        let e = load_toml("[relay]\nlisten = \"0.0.0.0:3480\"\n").unwrap_err();
        assert!(e.contains("`relay.public_addr`"), "{e}");
        load_toml("[relay]\nlisten = \"0.0.0.0:3480\"\npublic_addr = \"203.0.113.7:3480\"\n")
            .expect("a wildcard listen with a public address is fine");
        let e = load_toml("[http\n").unwrap_err();
        assert!(e.contains("TOML"), "{e}");
    }

    #[test]
    fn turn_section_layers_and_names_its_keys() {
        let c = Config::load(None, &[]).unwrap();
        assert!(c.turn.enabled);
        assert_eq!(
            c.turn.listen_udp,
            vec!["127.0.0.1:3478".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            c.turn.listen_tcp,
            vec!["127.0.0.1:3478".parse::<SocketAddr>().unwrap()]
        );
        let c = load_toml(
            "[turn]\nrelay_ports = \"50000-50100\"\n[turn.auth]\nusers = { alice = \"pw\" }\n\
             [turn.peers]\nallow_loopback = true\n",
        )
        .unwrap();
        assert_eq!(c.turn.relay_ports.low, 50000);
        assert!(c.turn.peers.allow_loopback);
        let c = Config::load(
            None,
            &[
                ("turn.listen_udp", vec!["127.0.0.1:0"].into()),
                ("turn.enabled", false.into()),
            ],
        )
        .unwrap();
        assert_eq!(c.turn.listen_udp[0].port(), 0);
        assert!(!c.turn.enabled);
        for (toml, key) in [
            ("[turn]\nrelay_ports = \"9-1\"\n", "turn.relay_ports"),
            ("[turn]\nuser_quota = 0\n", "turn.user_quota"),
            ("[turn]\nrelay_ip = \"0.0.0.0\"\n", "turn.external_ip"),
            ("[turn.auth]\nusers = { bob = \"\" }\n", "turn.auth.users"),
            ("[turn.peers]\ndeny = [\"x/8\"]\n", "turn.peers.deny"),
        ] {
            let e = load_toml(toml).unwrap_err();
            assert!(
                e.contains(&format!("config error: key `{key}`")),
                "{toml}: {e}"
            );
        }
        let e = load_toml("[turn]\nrelam = \"x\"\n").unwrap_err();
        assert!(e.contains("relam"), "{e}");
    }

    #[test]
    fn netlab_and_admin_sections() {
        let c = Config::load(None, &[]).unwrap();
        assert!(c.netlab_lab().unwrap().settings().is_empty());
        assert!(c.admin.token.is_empty());
        let c = load_toml(
            "[netlab]\nprofile = \"mine\"\nseed = 7\n\
             [netlab.profiles.mine.up]\nloss = { model = \"random\", p = 0.05 }\n\
             [netlab.profiles.mine.down]\ndelay = { latency = \"40ms\", jitter = \"5ms\" }\n\
             [netlab.scenarios.flap]\nrepeat = true\nsteps = [{ duration = \"10s\", profile = \"mine\" }, \
             { duration = \"2s\", blackout = true }]\n\
             [admin]\ntoken = \"0123456789abcdef0123\"\n",
        )
        .unwrap();
        let lab = c.netlab_lab().unwrap();
        let settings = lab.settings();
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].0, Scope::Global);
        assert_eq!(settings[0].1.profile.as_deref(), Some("mine"));
        assert_eq!(settings[0].2, 7);
        assert!(lab.profiles().names().contains(&"mine".to_owned()));
        let admin = c.admin(Arc::new(lab));
        assert!(admin.token.is_some() && !admin.public_listener);
        assert!(admin.scenarios.contains_key("flap"));
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));

        let c = Config::load(
            None,
            &[
                ("netlab.profile", "3g".into()),
                ("netlab.seed", 42u64.into()),
            ],
        )
        .unwrap();
        assert_eq!(c.netlab_lab().unwrap().settings()[0].2, 42);
        let c = load_toml("[netlab]\nscenario = \"s\"\n[netlab.scenarios.s]\nsteps = [{ duration = \"1s\", profile = \"4g\" }]\n").unwrap();
        assert!(c.netlab_lab().unwrap().settings()[0].1.scenario.is_some());

        for (toml, key) in [
            ("[netlab]\nprofile = \"5g\"\n", "netlab.profile"),
            ("[netlab]\nscenario = \"nope\"\n", "netlab.scenario"),
            (
                "[netlab.profiles.bad.up]\nloss = { model = \"random\", p = 1.5 }\n",
                "netlab.profiles.bad.up.loss.p",
            ),
            ("[netlab.profiles.\"a b\"]\n", "netlab.profiles.a b"),
            (
                "[netlab.scenarios.s]\nsteps = [{ duration = \"1s\", profile = \"5g\" }]\n",
                "netlab.scenarios.s.steps[0].profile",
            ),
            ("[admin]\ntoken = \"short\"\n", "admin.token"),
            (
                "[admin]\ntoken = \"with spaces in the token\"\n",
                "admin.token",
            ),
        ] {
            let e = load_toml(toml).unwrap_err();
            assert!(
                e.contains(&format!("config error: key `{key}`")),
                "{toml}: {e}"
            );
        }
        let e = load_toml("[netlab]\nprofle = \"3g\"\n").unwrap_err();
        assert!(e.contains("profle"), "{e}");
        let e = load_toml("[netlab.profiles.x.up]\nloss = { model = \"random\", p = \"high\" }\n")
            .unwrap_err();
        assert!(e.contains("netlab.profiles.x.up.loss"), "{e}");
    }

    #[test]
    fn auth_limits_server_and_liveness_keys() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.auth.mode, rtcrelay_signaling::AuthMode::None);
        assert_eq!(c.limits.max_connections_per_ip, 64);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(
            (c.limits.messages_per_sec, c.limits.message_burst),
            (50, 100)
        );
        assert_eq!(c.server.drain_timeout, Duration::from_secs(60));
        assert_eq!(c.signaling.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.signaling.dead_after, Duration::from_secs(5));
        let secret = "0123456789abcdef0123456789abcdef";
        let c = load_toml(&format!(
            "[auth]\nmode = \"token\"\nsecrets = [\"{secret}\"]\n\
             allowed_origins = [\"https://game.example.com\"]\n\
             [limits]\nmax_connections_per_ip = 3\nmessages_per_sec = 5\n\
             [server]\ndrain_timeout = \"2m\"\n\
             [signaling]\nheartbeat_interval = \"250ms\"\ndead_after = 2\n\
             [relay]\ndead_after = \"3s\"\nheartbeat_interval = \"500ms\"\nmax_peers = 7\n\
             peer_datagram_rate = 100\n"
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains(secret), "secrets are redacted");
        assert_eq!(c.server.drain_timeout, Duration::from_secs(120));
        let s = c.signaling();
        assert_eq!(s.auth.mode, rtcrelay_signaling::AuthMode::Token);
        assert_eq!(s.auth.secrets.len(), 1);
        assert!(!format!("{s:?}").contains(secret), "secrets are redacted");
        assert_eq!(s.limits.max_connections_per_ip, 3);
        assert_eq!(s.limits.messages_per_sec, 5.0);
        assert_eq!(s.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(s.dead_after, Duration::from_secs(2));
        let r = c.relay();
        assert_eq!(r.dead_after, Duration::from_secs(3));
        assert_eq!(r.heartbeat_interval, Duration::from_millis(500));
        assert_eq!((r.max_peers, r.peer_datagram_rate), (7, 100));

        for (toml, key) in [
            ("[auth]\nmode = \"token\"\n", "auth.secrets"),
            ("[auth]\nsecrets = [\"short\"]\n", "auth.secrets[0]"),
            (
                "[auth]\nallowed_origins = [\"game.example.com\"]\n",
                "auth.allowed_origins[0]",
            ),
            ("[auth]\nmode = \"jwt\"\n", "auth.mode"),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            (
                "[server]\ndrain_timeout = \"soon\"\n",
                "server.drain_timeout",
            ),
            ("[signaling]\ndead_after = \"1s\"\n", "signaling.dead_after"),
            (
                "[relay]\nheartbeat_interval = \"1ms\"\n",
                "relay.heartbeat_interval",
            ),
            ("[relay]\nmax_peers = 0\n", "relay.max_peers"),
        ] {
            let e = load_toml(toml).unwrap_err();
            assert!(
                e.contains(&format!("config error: key `{key}`")),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/rtcrelay.toml")), &[]).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }
}
