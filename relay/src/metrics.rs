//! Counters and gauges of the packet path, registered into the process's
//! Prometheus registry by the binary.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: &'static str,
}

/// Cheap to clone: every metric is an `Arc` inside.
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    /// Sessions with both channels open.
    pub peers_connected: Gauge,
    /// Sessions registered with the UDP loop (answered, not yet closed).
    pub sessions: Gauge,
    pub datagrams_in: Counter,
    pub bytes_in: Counter,
    pub datagrams_out: Counter,
    pub bytes_out: Counter,
    /// Datagrams dropped before reaching a peer, by reason
    /// (`unknown_source`, `not_accepted`, `peer_error`, ...).
    pub datagrams_dropped: Family<ReasonLabel, Counter>,
    /// DataChannel messages forwarded to another member, by channel.
    pub messages_relayed: Family<ChannelLabel, Counter>,
    /// DataChannel messages dropped, by reason (`too_large`, `buffer_full`, ...).
    pub messages_dropped: Family<ReasonLabel, Counter>,
    pub sessions_rejected: Family<ReasonLabel, Counter>,
}

impl RelayMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("relay");
        r.register(
            "peers_connected",
            "Peers with both DataChannels open",
            self.peers_connected.clone(),
        );
        r.register(
            "sessions",
            "WebRTC sessions registered with the UDP loop",
            self.sessions.clone(),
        );
        r.register(
            "datagrams_in",
            "UDP datagrams received",
            self.datagrams_in.clone(),
        );
        r.register("bytes_in", "UDP bytes received", self.bytes_in.clone());
        r.register(
            "datagrams_out",
            "UDP datagrams sent",
            self.datagrams_out.clone(),
        );
        r.register("bytes_out", "UDP bytes sent", self.bytes_out.clone());
        r.register(
            "datagrams_dropped",
            "UDP datagrams dropped before reaching a peer, by reason",
            self.datagrams_dropped.clone(),
        );
        r.register(
            "messages_relayed",
            "DataChannel messages forwarded to a room member, by channel",
            self.messages_relayed.clone(),
        );
        r.register(
            "messages_dropped",
            "DataChannel messages dropped, by reason",
            self.messages_dropped.clone(),
        );
        r.register(
            "sessions_rejected",
            "WebRTC sessions refused or closed by the server, by reason",
            self.sessions_rejected.clone(),
        );
    }
}
