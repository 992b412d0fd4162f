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
}

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
        // Every code appears from the start, so a dashboard can rate() it
        // before the first error happens.
        for code in ErrorCode::ALL {
            let _ = self.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }
}
