//! Counters and gauges of the packet path and of authoritative rooms,
//! registered into the process's Prometheus registry by the binary, and the
//! network lab's injected totals ([`NetlabMetrics`]).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rtcrelay_netlab::{Counters, Lab, ScopeTotals};

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
    /// Sessions refused or closed by the server, by reason
    /// (`connect_timeout`, `channel_rejected`, `bad_sdp`, `server_full`).
    pub sessions_rejected: Family<ReasonLabel, Counter>,
    /// Ready sessions closed because nothing was heard from the client for
    /// `dead_after`.
    pub dead_peers: Counter,
    /// Heartbeat frames written on `control` to peers sent nothing for
    /// `heartbeat_interval`.
    pub heartbeats: Counter,
    /// Authoritative rooms (`rtcrelay_game_*`).
    pub game: GameMetrics,
    /// The network lab's injected totals per scope (`rtcrelay_netlab_*`),
    /// read from the lab the relay was started with.
    pub netlab: NetlabMetrics,
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
        r.register(
            "dead_peers",
            "Sessions closed because no packet came from the client for dead_after",
            self.dead_peers.clone(),
        );
        r.register(
            "heartbeats",
            "Heartbeat frames sent on control to peers the server had sent nothing to",
            self.heartbeats.clone(),
        );
        self.game.register(registry);
        registry.register_collector(Box::new(self.netlab.clone()));
    }
}

/// What the network lab injected, per scope, as `/metrics` shows it:
///
/// - `rtcrelay_netlab_packets_total{scope,direction,outcome}`: datagrams by
///   outcome: `pushed` (entered the lab), `passed` (accepted for delivery),
///   `dropped_loss`, `dropped_blackout`, `dropped_queue`, `duplicated`
///   (extra copies), `reordered`, `corrupted`;
/// - `rtcrelay_netlab_added_delay_seconds_total{scope,direction}`: delay
///   added, summed over delivered copies (divide by `passed + duplicated`
///   for the mean).
///
/// `scope` is `global`, `room:NAME`, `peer:ID` or `turn_user:NAME` (the lab
/// holds at most 1024 scopes, so the label set is bounded); `direction` is
/// `up` (client → server) or `down`. A scope's series exist while its
/// setting is in force and disappear when it is cleared. Every driver that
/// reports to the lab is included (the relay's peer paths; TURN
/// allocations when they report), so register this once per lab.
///
/// Cheap to clone; the lab is read on each scrape. Until a lab is attached
/// (the relay attaches its own when it starts), nothing is exported; then
/// the families are always described (`# HELP`, `# TYPE`).
#[derive(Debug, Clone, Default)]
pub struct NetlabMetrics {
    lab: Arc<Mutex<Option<Arc<Lab>>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetlabPacketLabels {
    scope: String,
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetlabDirectionLabels {
    scope: String,
    direction: &'static str,
}

/// Reads one counter of a direction's totals.
type ReadCounter = fn(&Counters) -> u64;

/// The `outcome` label values and the counter each one reads.
const NETLAB_OUTCOMES: [(&str, ReadCounter); 8] = [
    ("pushed", |c| c.pushed),
    ("passed", |c| c.passed),
    ("dropped_loss", |c| c.dropped_loss),
    ("dropped_blackout", |c| c.dropped_blackout),
    ("dropped_queue", |c| c.dropped_queue),
    ("duplicated", |c| c.duplicated),
    ("reordered", |c| c.reordered),
    ("corrupted", |c| c.corrupted),
];

impl NetlabMetrics {
    /// Exports `lab`'s totals from now on (replacing any lab attached
    /// before).
    pub fn attach(&self, lab: Arc<Lab>) {
        *self.lab.lock().unwrap_or_else(PoisonError::into_inner) = Some(lab);
    }

    /// The attached lab's totals by scope name; None with no lab.
    fn totals(&self) -> Option<Vec<(String, ScopeTotals)>> {
        let lab = self
            .lab
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        Some(
            lab.totals()
                .into_iter()
                .map(|(scope, totals)| (scope.to_string(), totals))
                .collect(),
        )
    }
}

impl Collector for NetlabMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The families are described as soon as a lab is attached; a
        // scope has samples while its setting is in force.
        let Some(totals) = self.totals() else {
            return Ok(());
        };
        let directions = |t: &ScopeTotals| [("up", t.up), ("down", t.down)];
        {
            let mut family = encoder.encode_descriptor(
                "netlab_packets",
                "Datagrams through the network lab, by scope, direction (up: client to \
                 server) and outcome (pushed, passed, dropped_loss, dropped_blackout, \
                 dropped_queue, duplicated, reordered, corrupted)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (scope, t) in &totals {
                for (direction, counters) in directions(t) {
                    for (outcome, read) in NETLAB_OUTCOMES {
                        let labels = NetlabPacketLabels {
                            scope: scope.clone(),
                            direction,
                            outcome,
                        };
                        ConstCounter::new(read(&counters))
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "netlab_added_delay",
            "Delay the network lab added, summed over delivered copies, by scope and direction",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (scope, t) in &totals {
            for (direction, counters) in directions(t) {
                let labels = NetlabDirectionLabels {
                    scope: scope.clone(),
                    direction,
                };
                ConstCounter::new(counters.added_delay.as_secs_f64())
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
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
            "rtcrelay_relay_dead_peers_total 0",
            "rtcrelay_relay_heartbeats_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(!text.contains("netlab"), "no lab attached: {text}");
    }

    #[test]
    fn netlab_totals_are_exported_per_scope_direction_and_outcome() {
        use rtcrelay_netlab::{Direction, Scope, Setting};
        use std::time::{Duration, Instant};

        let metrics = RelayMetrics::default();
        let mut registry = Registry::with_prefix("rtcrelay");
        metrics.register(&mut registry);
        let lab = Arc::new(Lab::default());
        metrics.netlab.attach(lab.clone());
        let encoded = || {
            let mut text = String::new();
            encode(&mut text, &registry).expect("encode");
            text
        };
        let idle = encoded();
        assert!(
            idle.contains("# TYPE rtcrelay_netlab_packets counter")
                && !idle.contains("rtcrelay_netlab_packets_total{"),
            "described, no samples yet: {idle}"
        );

        let room = Scope::Room("lobby".into());
        lab.set(room.clone(), Setting::profile("3g"), Instant::now())
            .expect("set");
        let up = Counters {
            pushed: 10,
            passed: 8,
            dropped_loss: 1,
            dropped_queue: 1,
            duplicated: 2,
            added_delay: Duration::from_millis(1500),
            ..Counters::default()
        };
        lab.record(&room, Direction::Up, &up);
        lab.record(
            &room,
            Direction::Down,
            &Counters {
                pushed: 3,
                passed: 3,
                reordered: 1,
                ..Counters::default()
            },
        );
        let text = encoded();
        for line in [
            "# TYPE rtcrelay_netlab_packets counter",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"up\",outcome=\"pushed\"} 10",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"up\",outcome=\"dropped_loss\"} 1",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"up\",outcome=\"dropped_queue\"} 1",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"up\",outcome=\"duplicated\"} 2",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"down\",outcome=\"reordered\"} 1",
            "rtcrelay_netlab_packets_total{scope=\"room:lobby\",direction=\"down\",outcome=\"corrupted\"} 0",
            "# UNIT rtcrelay_netlab_added_delay_seconds seconds",
            "rtcrelay_netlab_added_delay_seconds_total{scope=\"room:lobby\",direction=\"up\"} 1.5",
            "rtcrelay_netlab_added_delay_seconds_total{scope=\"room:lobby\",direction=\"down\"} 0.0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Cleared: the scope's series are gone.
        assert!(lab.clear(&room));
        assert!(!encoded().contains("room:lobby"));
    }
}
