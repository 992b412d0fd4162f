//! Signaling counters and gauges.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rtcrelay_protocol::ErrorCode;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// The `limit` label values of `limit_hits`.
pub const LIMITS: &[&str] = &[
    LIMIT_CONNECTIONS_PER_IP,
    LIMIT_CONNECTIONS,
    LIMIT_MESSAGE_RATE,
    LIMIT_ROOMS,
    LIMIT_PEERS,
    LIMIT_MESSAGE_SIZE,
];
pub const LIMIT_CONNECTIONS_PER_IP: &str = "connections_per_ip";
pub const LIMIT_CONNECTIONS: &str = "connections";
pub const LIMIT_MESSAGE_RATE: &str = "message_rate";
pub const LIMIT_ROOMS: &str = "rooms";
pub const LIMIT_PEERS: &str = "peers";
pub const LIMIT_MESSAGE_SIZE: &str = "message_size";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Cheap to clone: every metric is an `Arc` inside.
#[derive(Debug, Clone, Default)]
pub struct SignalingMetrics {
    pub connections: Gauge,
    pub rooms: Gauge,
    pub room_members: Gauge,
    pub joins: Family<KindLabel, Counter>,
    pub messages_in: Counter,
    pub errors: Family<CodeLabel, Counter>,
    /// Clients disconnected because they did not read their messages.
    pub slow_clients: Counter,
    /// `signal` messages forwarded between members of p2p rooms.
    pub signals_forwarded: Counter,
    /// Joins refused for their token, by error code.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// WebSocket upgrades refused for their `Origin`.
    pub origin_refused: Counter,
    /// Breaches of each limit (refused connections, dropped messages,
    /// refused rooms, peers and messages).
    pub limit_hits: Family<LimitLabel, Counter>,
    /// Connections closed because nothing arrived for `dead_after`.
    pub dead_connections: Counter,
    /// Resume joins, by outcome (`resumed`, or why refused).
    pub resumes: Family<OutcomeLabel, Counter>,
    /// Players that lost their connection and whose seat was kept.
    pub players_away: Counter,
    /// Kept seats released because their grace period ended.
    pub seats_released: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// The `outcome` label values of `resumes`.
pub const RESUME_OUTCOMES: &[&str] = &[
    "resumed",
    "invalid",
    "expired",
    "wrong_room",
    "kind_mismatch",
];

impl SignalingMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("signaling");
        r.register(
            "connections",
            "Open signaling WebSockets",
            self.connections.clone(),
        );
        r.register("rooms", "Open rooms", self.rooms.clone());
        r.register("room_members", "Peers in a room", self.room_members.clone());
        r.register(
            "joins",
            "Successful joins, by room kind",
            self.joins.clone(),
        );
        r.register(
            "messages_in",
            "Signaling messages received",
            self.messages_in.clone(),
        );
        r.register(
            "errors",
            "Errors sent to clients, by stable error code",
            self.errors.clone(),
        );
        r.register(
            "slow_clients",
            "Clients disconnected for not reading their messages",
            self.slow_clients.clone(),
        );
        r.register(
            "signals_forwarded",
            "Signal messages forwarded between members of peer-to-peer rooms",
            self.signals_forwarded.clone(),
        );
        r.register(
            "auth_failures",
            "Joins refused for their join token, by reason (the error code)",
            self.auth_failures.clone(),
        );
        r.register(
            "origin_refused",
            "WebSocket upgrades refused (HTTP 403) for an Origin not allowed",
            self.origin_refused.clone(),
        );
        r.register(
            "limit_hits",
            "Breaches of a configured limit, by limit",
            self.limit_hits.clone(),
        );
        r.register(
            "dead_connections",
            "Signaling connections closed after nothing arrived for signaling.dead_after",
            self.dead_connections.clone(),
        );
        r.register(
            "resumes",
            "Joins with a resume token, by outcome (resumed, invalid, expired, wrong_room, \
             kind_mismatch)",
            self.resumes.clone(),
        );
        r.register(
            "players_away",
            "Players that lost their connection and whose seat was kept for resume",
            self.players_away.clone(),
        );
        r.register(
            "seats_released",
            "Kept seats released because their grace period ended",
            self.seats_released.clone(),
        );
        for &outcome in RESUME_OUTCOMES {
            let _ = self.resumes.get_or_create(&OutcomeLabel { outcome });
        }
        for reason in [
            ErrorCode::AuthRequired,
            ErrorCode::TokenInvalid,
            ErrorCode::TokenExpired,
            ErrorCode::TokenWrongRoom,
        ] {
            let _ = self.auth_failures.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for &limit in LIMITS {
            let _ = self.limit_hits.get_or_create(&LimitLabel { limit });
        }
        // Every code appears from the start, so a dashboard can rate() it
        // before the first error happens.
        for code in ErrorCode::ALL {
            let _ = self.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
    }

    pub fn auth_failure(&self, code: ErrorCode) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: code.as_str(),
            })
            .inc();
    }

    pub fn resume(&self, outcome: &'static str) {
        self.resumes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabel { limit }).inc();
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }
}
