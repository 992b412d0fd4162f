//! Counters and gauges of the packet path and of authoritative rooms,
//! registered into the process's Prometheus registry by the binary.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: &'static str,
}

/// What became of an input (see `authoritative::inputs::InputOutcome`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// `full`, `delta` or `partial` (cut to fit one datagram).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotKindLabel {
    pub kind: &'static str,
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
    /// Authoritative rooms (`rtcrelay_game_*`).
    pub game: GameMetrics,
}

/// Metrics of authoritative rooms. The rooms update them, except
/// `snapshots_dropped`, which the shard counts when a channel refuses a
/// snapshot.
#[derive(Debug, Clone)]
pub struct GameMetrics {
    /// Inputs by outcome: `accepted`, `duplicate`, `late_applied`, `late`,
    /// `too_early` (per input); `invalid`, `rate_limited` (per datagram);
    /// `missing` (per player and tick without an input).
    pub inputs: Family<OutcomeLabel, Counter>,
    /// Snapshots encoded, by kind (`full`, `delta`, `partial`).
    pub snapshots: Family<SnapshotKindLabel, Counter>,
    pub snapshot_bytes: Counter,
    /// Snapshots the realtime channel could not take (dropped, not queued).
    pub snapshots_dropped: Counter,
    /// Simulation ticks run, all rooms.
    pub ticks: Counter,
    /// Authoritative rooms alive.
    pub rooms: Gauge,
    pub events_retransmitted: Counter,
    /// RTT samples (snapshot sent → acked, minus the client's ack delay).
    pub player_rtt: Histogram,
    /// Each ready player's smoothed jitter (RTT mean deviation), once per
    /// stats interval.
    pub player_jitter: Histogram,
    /// Each ready player's upstream (input datagram) loss ratio over the
    /// last stats interval.
    pub player_loss: Histogram,
    /// `error` replies on `control` (bad message, refused command).
    pub control_errors: Counter,
}

impl Default for GameMetrics {
    fn default() -> Self {
        GameMetrics {
            inputs: Family::default(),
            snapshots: Family::default(),
            snapshot_bytes: Counter::default(),
            snapshots_dropped: Counter::default(),
            ticks: Counter::default(),
            rooms: Gauge::default(),
            events_retransmitted: Counter::default(),
            // 1 ms to about 4 s.
            player_rtt: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            // 0.25 ms to about 1 s.
            player_jitter: Histogram::new(exponential_buckets(0.000_25, 2.0, 13)),
            player_loss: Histogram::new([0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
            control_errors: Counter::default(),
        }
    }
}

impl GameMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("game");
        r.register(
            "inputs",
            "Inputs of authoritative rooms, by outcome",
            self.inputs.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots encoded, by kind (full, delta, partial)",
            self.snapshots.clone(),
        );
        r.register(
            "snapshot_bytes",
            "Snapshot bytes encoded",
            self.snapshot_bytes.clone(),
        );
        r.register(
            "snapshots_dropped",
            "Snapshots dropped because the realtime channel's buffer was full",
            self.snapshots_dropped.clone(),
        );
        r.register(
            "ticks",
            "Simulation ticks run by authoritative rooms",
            self.ticks.clone(),
        );
        r.register("rooms", "Authoritative rooms alive", self.rooms.clone());
        r.register(
            "events_retransmitted",
            "Critical events resent because they were not acknowledged in time",
            self.events_retransmitted.clone(),
        );
        r.register_with_unit(
            "player_rtt",
            "Players' RTT samples on the realtime path (snapshot to ack)",
            Unit::Seconds,
            self.player_rtt.clone(),
        );
        r.register_with_unit(
            "player_jitter",
            "Players' smoothed RTT deviation, sampled once per stats interval",
            Unit::Seconds,
            self.player_jitter.clone(),
        );
        r.register(
            "player_upstream_loss",
            "Players' input datagram loss ratio per stats interval",
            self.player_loss.clone(),
        );
        r.register(
            "control_errors",
            "Error replies on the control channel (bad message, refused command)",
            self.control_errors.clone(),
        );
    }
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
        self.game.register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn game_metrics_have_the_documented_names() {
        let metrics = RelayMetrics::default();
        metrics
            .game
            .inputs
            .get_or_create(&OutcomeLabel {
                outcome: "accepted",
            })
            .inc();
        metrics
            .game
            .snapshots
            .get_or_create(&SnapshotKindLabel { kind: "delta" })
            .inc();
        metrics.game.player_rtt.observe(0.05);
        let mut registry = Registry::with_prefix("rtcrelay");
        metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for name in [
            "rtcrelay_game_inputs_total{outcome=\"accepted\"} 1",
            "rtcrelay_game_snapshots_total{kind=\"delta\"} 1",
            "rtcrelay_game_snapshot_bytes_total 0",
            "rtcrelay_game_snapshots_dropped_total 0",
            "rtcrelay_game_ticks_total 0",
            "rtcrelay_game_rooms 0",
            "rtcrelay_game_events_retransmitted_total 0",
            "rtcrelay_game_player_rtt_seconds_count 1",
            "rtcrelay_game_control_errors_total 0",
            "rtcrelay_relay_sessions 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
