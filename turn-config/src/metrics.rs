//! Prometheus metrics of the bundled TURN server, `rtcrelay_turn_*` once
//! registered in the process's registry (prefix `rtcrelay`).
//!
//! The counters live where the packets are (atomics in [`RelayCounters`],
//! [`ListenerStats`], the [`TurnAuthHandler`] and the allocation tracker of
//! [`crate::server`]); [`TurnMetrics`] reads them on each scrape through a
//! prometheus `Collector`, so the data path never touches a metrics family
//! or a label map. No metric has a per-username label.
//!
//! | family | labels | what |
//! |---|---|---|
//! | `rtcrelay_turn_allocations` (gauge) | `protocol` | allocations alive |
//! | `rtcrelay_turn_allocations_created_total` | `protocol` | allocations granted |
//! | `rtcrelay_turn_allocations_refused_total` | `protocol`, `reason` | Allocate requests refused: `user_quota`, `total_quota` (486), `insufficient_capacity` (508) |
//! | `rtcrelay_turn_auth_failures_total` | `reason` | `unknown_user`, `expired`, `no_secret`, `wrong_realm`, `bad_password` |
//! | `rtcrelay_turn_peers_denied_total` | `protocol`, `direction`, `reason` | peer-policy refusals: `direction` = `to_peer` / `from_peer` (datagrams dropped) or `request` (CreatePermission/ChannelBind answered 403); `reason` as [`Denied::as_str`] |
//! | `rtcrelay_turn_relayed_packets_total` | `protocol`, `direction` | datagrams relayed, `to_peer` / `from_peer` |
//! | `rtcrelay_turn_relayed_bytes_total` | `protocol`, `direction` | their payload bytes |
//! | `rtcrelay_turn_datagrams_dropped_total` | `protocol`, `reason` | relay datagrams dropped by `bandwidth` (`turn.max_bps_per_allocation`) |
//! | `rtcrelay_turn_requests_dropped_total` | `protocol`, `reason` | requests dropped over the unauthenticated budgets: `unauthenticated_per_ip`, `unauthenticated_total` ([`crate::limit`]) |
//! | `rtcrelay_turn_lifetimes_capped_total` | `protocol` | Allocate/Refresh requests capped at `turn.max_allocation_lifetime` |
//! | `rtcrelay_turn_connections` (gauge) | `protocol` | TCP/TLS connections open |
//! | `rtcrelay_turn_connections_closed_total` | `protocol`, `reason` | TCP/TLS connections ended: `client`, `garbage`, `timeout`, `slow_reader`, `tls_handshake`, refused `listener_limit` / `ip_limit` |
//! | `rtcrelay_turn_stream_messages_dropped_total` | `protocol`, `reason` | TCP/TLS messages dropped: `oversize`, `queue_full`, `no_connection` |
//! | `rtcrelay_turn_reloads_total` | `result` | SIGHUP reloads of `[turn]`, `ok` / `error` |
//!
//! `protocol` is the listener's transport: `udp`, `tcp`, `tls`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::credentials::{AuthError, TurnAuthHandler};
use crate::limit::Admission;
use crate::policy::Denied;
use crate::relay_conn::{RelayCounters, RelayStats};
use crate::stream::{StreamListener, StreamStats};

/// A TURN listener's transport, the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    /// `udp`, `tcp`, `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an Allocate request was refused by us (not by authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocationRefusal {
    /// 486: the username holds `turn.user_quota` allocations.
    UserQuota,
    /// 486: the server holds `turn.total_quota` allocations.
    TotalQuota,
    /// 508: no relay port could be bound.
    InsufficientCapacity,
}

impl AllocationRefusal {
    pub const ALL: [AllocationRefusal; 3] = [
        AllocationRefusal::UserQuota,
        AllocationRefusal::TotalQuota,
        AllocationRefusal::InsufficientCapacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllocationRefusal::UserQuota => "user_quota",
            AllocationRefusal::TotalQuota => "total_quota",
            AllocationRefusal::InsufficientCapacity => "insufficient_capacity",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one listener that are not about relayed traffic (those are
/// in its [`RelayCounters`]).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub(crate) allocations_created: AtomicU64,
    pub(crate) allocations_refused: [AtomicU64; 3],
    /// Relay datagrams dropped by the per-allocation bandwidth cap.
    pub(crate) bandwidth_drops: AtomicU64,
    /// Requests dropped over the unauthenticated budgets: per source IP,
    /// total.
    pub(crate) unauthenticated_drops: [AtomicU64; 2],
    /// Allocate/Refresh requests whose LIFETIME was capped.
    pub(crate) lifetimes_capped: AtomicU64,
}

impl ListenerStats {
    pub fn allocations_created(&self) -> u64 {
        self.allocations_created.load(Ordering::Relaxed)
    }

    pub fn allocations_refused(&self, reason: AllocationRefusal) -> u64 {
        self.allocations_refused[reason.index()].load(Ordering::Relaxed)
    }

    pub fn bandwidth_drops(&self) -> u64 {
        self.bandwidth_drops.load(Ordering::Relaxed)
    }

    /// Requests dropped over the unauthenticated budget of their source IP
    /// and over the total one.
    pub fn unauthenticated_drops(&self) -> [u64; 2] {
        self.unauthenticated_drops
            .each_ref()
            .map(|a| a.load(Ordering::Relaxed))
    }

    pub fn lifetimes_capped(&self) -> u64 {
        self.lifetimes_capped.load(Ordering::Relaxed)
    }

    pub(crate) fn unauthenticated_dropped(&self, admission: Admission) {
        let i = match admission {
            Admission::OverSourceBudget => 0,
            Admission::OverTotalBudget => 1,
            Admission::KnownNonce | Admission::Budgeted => return,
        };
        self.unauthenticated_drops[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, reason: AllocationRefusal) {
        self.allocations_refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Live allocations per transport, as the allocation tracker counts them.
pub(crate) trait ActiveAllocations: Send + Sync + std::fmt::Debug {
    fn active(&self, transport: Transport) -> u64;
}

#[derive(Debug)]
struct ListenerSource {
    transport: Transport,
    stats: Arc<ListenerStats>,
    relay: Arc<RelayCounters>,
}

#[derive(Debug, Default)]
struct Sources {
    listeners: Vec<ListenerSource>,
    streams: Vec<(Transport, Arc<StreamListener>)>,
    auth: Option<Arc<TurnAuthHandler>>,
    active: Option<Arc<dyn ActiveAllocations>>,
}

#[derive(Debug, Default)]
struct Inner {
    sources: Mutex<Sources>,
    bad_password: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// The TURN server's metrics. Cheap to clone (one `Arc`); register it once
/// with [`TurnMetrics::register`], hand a clone to
/// [`crate::server::TurnServer::start`].
#[derive(Debug, Clone, Default)]
pub struct TurnMetrics {
    inner: Arc<Inner>,
}

impl TurnMetrics {
    /// Adds the `turn_*` families to `registry` (which usually has the
    /// `rtcrelay` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("turn")
            .register_collector(Box::new(self.clone()));
    }

    /// Counts one SIGHUP reload.
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.inner.reloads_ok
        } else {
            &self.inner.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_listener(
        &self,
        transport: Transport,
        stats: Arc<ListenerStats>,
        relay: Arc<RelayCounters>,
    ) {
        self.lock().listeners.push(ListenerSource {
            transport,
            stats,
            relay,
        });
    }

    pub(crate) fn add_stream(&self, transport: Transport, listener: Arc<StreamListener>) {
        self.lock().streams.push((transport, listener));
    }

    pub(crate) fn set_auth(&self, auth: Arc<TurnAuthHandler>) {
        self.lock().auth = Some(auth);
    }

    pub(crate) fn set_active(&self, active: Arc<dyn ActiveAllocations>) {
        self.lock().active = Some(active);
    }

    pub(crate) fn bad_password(&self) {
        self.inner.bad_password.fetch_add(1, Ordering::Relaxed);
    }

    /// Wrong-password refusals so far (MESSAGE-INTEGRITY that no key of a
    /// known username verifies).
    pub fn bad_password_count(&self) -> u64 {
        self.inner.bad_password.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.inner.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-transport sums, for the transports that have a listener.
    fn per_transport(&self) -> Vec<(Transport, RelayStats, ListenerTotals)> {
        let sources = self.lock();
        let mut out: Vec<(Transport, RelayStats, ListenerTotals)> = Vec::new();
        for transport in Transport::ALL {
            let mut relay = RelayStats::default();
            let mut totals = ListenerTotals::default();
            let mut any = false;
            for l in sources
                .listeners
                .iter()
                .filter(|l| l.transport == transport)
            {
                any = true;
                add_stats(&mut relay, &l.relay.snapshot());
                totals.created += l.stats.allocations_created();
                for reason in AllocationRefusal::ALL {
                    totals.refused[reason.index()] += l.stats.allocations_refused(reason);
                }
                totals.bandwidth_drops += l.stats.bandwidth_drops();
                for (sum, n) in totals
                    .unauthenticated_drops
                    .iter_mut()
                    .zip(l.stats.unauthenticated_drops())
                {
                    *sum += n;
                }
                totals.lifetimes_capped += l.stats.lifetimes_capped();
            }
            if any {
                totals.active = sources.active.as_ref().map_or(0, |a| a.active(transport));
                out.push((transport, relay, totals));
            }
        }
        out
    }
}

impl TurnMetrics {
    /// The TCP/TLS connection families, summed per transport.
    fn encode_streams(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_transport: Vec<(Transport, Vec<StreamStats>)> = {
            let sources = self.lock();
            Transport::ALL
                .into_iter()
                .map(|t| {
                    let stats = sources
                        .streams
                        .iter()
                        .filter(|(st, _)| *st == t)
                        .map(|(_, l)| l.stats())
                        .collect::<Vec<_>>();
                    (t, stats)
                })
                .filter(|(_, stats)| !stats.is_empty())
                .collect()
        };
        if per_transport.is_empty() {
            return Ok(());
        }
        let sum = |stats: &[StreamStats], f: fn(&StreamStats) -> u64| stats.iter().map(f).sum();
        {
            let mut family = encoder.encode_descriptor(
                "connections",
                "TURN TCP/TLS connections open",
                None,
                MetricType::Gauge,
            )?;
            for (t, stats) in &per_transport {
                let active: u64 = sum(stats, |s| s.active);
                ConstGauge::new(active as i64)
                    .encode(family.encode_family(&[("protocol", t.as_str())])?)?;
            }
        }
        type Field = (&'static str, fn(&StreamStats) -> u64);
        const ENDS: [Field; 7] = [
            ("client", |s| s.closed_by_client),
            ("garbage", |s| s.closed_garbage),
            ("timeout", |s| s.closed_timeout),
            ("slow_reader", |s| s.closed_slow_reader),
            ("tls_handshake", |s| s.tls_handshake_failed),
            ("listener_limit", |s| s.refused_listener_limit),
            ("ip_limit", |s| s.refused_ip_limit),
        ];
        counter_family(
            encoder,
            "connections_closed",
            "TURN TCP/TLS connections ended, by reason (client: closed by the client; \
             listener_limit / ip_limit: refused at accept)",
            per_transport.iter().flat_map(|(t, stats)| {
                ENDS.map(|(reason, f)| {
                    (
                        vec![("protocol", t.as_str()), ("reason", reason)],
                        sum(stats, f),
                    )
                })
            }),
        )?;
        const DROPS: [Field; 3] = [
            ("oversize", |s| s.dropped_oversize),
            ("queue_full", |s| s.dropped_queue_full),
            ("no_connection", |s| s.dropped_no_connection),
        ];
        counter_family(
            encoder,
            "stream_messages_dropped",
            "TURN TCP/TLS messages dropped: oversize (received, larger than the server \
             takes), queue_full (to a client that reads too slowly), no_connection (to a \
             closed connection)",
            per_transport.iter().flat_map(|(t, stats)| {
                DROPS.map(|(reason, f)| {
                    (
                        vec![("protocol", t.as_str()), ("reason", reason)],
                        sum(stats, f),
                    )
                })
            }),
        )
    }
}

#[derive(Debug, Default)]
struct ListenerTotals {
    active: u64,
    created: u64,
    refused: [u64; 3],
    bandwidth_drops: u64,
    unauthenticated_drops: [u64; 2],
    lifetimes_capped: u64,
}

fn add_stats(sum: &mut RelayStats, s: &RelayStats) {
    sum.to_peer_packets += s.to_peer_packets;
    sum.to_peer_bytes += s.to_peer_bytes;
    sum.from_peer_packets += s.from_peer_packets;
    sum.from_peer_bytes += s.from_peer_bytes;
    for i in 0..Denied::COUNT {
        sum.denied_to_peer[i] += s.denied_to_peer[i];
        sum.denied_from_peer[i] += s.denied_from_peer[i];
        sum.denied_requests[i] += s.denied_requests[i];
    }
}

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for TurnMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let transports = self.per_transport();
        let auth = self.lock().auth.clone();

        {
            let mut family = encoder.encode_descriptor(
                "allocations",
                "TURN allocations alive",
                None,
                MetricType::Gauge,
            )?;
            for (t, _, totals) in &transports {
                let labels = [("protocol", t.as_str())];
                ConstGauge::new(totals.active as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        counter_family(
            &mut encoder,
            "allocations_created",
            "TURN allocations granted",
            transports
                .iter()
                .map(|(t, _, totals)| (vec![("protocol", t.as_str())], totals.created)),
        )?;
        counter_family(
            &mut encoder,
            "allocations_refused",
            "TURN Allocate requests refused, by reason (486 quotas, 508 no relay port)",
            transports.iter().flat_map(|(t, _, totals)| {
                AllocationRefusal::ALL.map(|r| {
                    (
                        vec![("protocol", t.as_str()), ("reason", r.as_str())],
                        totals.refused[r.index()],
                    )
                })
            }),
        )?;
        if auth.is_some() || !transports.is_empty() {
            let refusals = auth.map(|a| a.refusals()).unwrap_or_default();
            let mut samples: Vec<(Vec<(&str, &str)>, u64)> = AuthError::ALL
                .iter()
                .map(|e| (vec![("reason", e.reason())], refusals.get(*e)))
                .collect();
            samples.push((vec![("reason", "bad_password")], self.bad_password_count()));
            counter_family(
                &mut encoder,
                "auth_failures",
                "TURN requests refused by authentication, by reason",
                samples,
            )?;
        }
        counter_family(
            &mut encoder,
            "peers_denied",
            "TURN peer-policy refusals: datagrams dropped (to_peer, from_peer) and \
             CreatePermission/ChannelBind answered 403 (request)",
            transports.iter().flat_map(|(t, relay, _)| {
                Denied::ALL.into_iter().flat_map(move |d| {
                    [
                        ("to_peer", relay.denied_to_peer[d.index()]),
                        ("from_peer", relay.denied_from_peer[d.index()]),
                        ("request", relay.denied_requests[d.index()]),
                    ]
                    .map(|(direction, v)| {
                        (
                            vec![
                                ("protocol", t.as_str()),
                                ("direction", direction),
                                ("reason", d.as_str()),
                            ],
                            v,
                        )
                    })
                })
            }),
        )?;
        counter_family(
            &mut encoder,
            "relayed_packets",
            "Datagrams relayed through TURN allocations",
            transports.iter().flat_map(|(t, relay, _)| {
                [
                    ("to_peer", relay.to_peer_packets),
                    ("from_peer", relay.from_peer_packets),
                ]
                .map(|(direction, v)| (vec![("protocol", t.as_str()), ("direction", direction)], v))
            }),
        )?;
        counter_family(
            &mut encoder,
            "relayed_bytes",
            "Payload bytes relayed through TURN allocations",
            transports.iter().flat_map(|(t, relay, _)| {
                [
                    ("to_peer", relay.to_peer_bytes),
                    ("from_peer", relay.from_peer_bytes),
                ]
                .map(|(direction, v)| (vec![("protocol", t.as_str()), ("direction", direction)], v))
            }),
        )?;
        counter_family(
            &mut encoder,
            "datagrams_dropped",
            "Relay datagrams dropped by the per-allocation bandwidth cap",
            transports.iter().map(|(t, _, totals)| {
                (
                    vec![("protocol", t.as_str()), ("reason", "bandwidth")],
                    totals.bandwidth_drops,
                )
            }),
        )?;
        counter_family(
            &mut encoder,
            "requests_dropped",
            "TURN requests dropped before the server saw them: over the unauthenticated \
             budget of their source IP or of the whole server (each would cost a nonce)",
            transports.iter().flat_map(|(t, _, totals)| {
                ["unauthenticated_per_ip", "unauthenticated_total"]
                    .into_iter()
                    .zip(totals.unauthenticated_drops)
                    .map(|(reason, v)| (vec![("protocol", t.as_str()), ("reason", reason)], v))
            }),
        )?;
        counter_family(
            &mut encoder,
            "lifetimes_capped",
            "Allocate/Refresh requests whose lifetime was capped at turn.max_allocation_lifetime",
            transports
                .iter()
                .map(|(t, _, totals)| (vec![("protocol", t.as_str())], totals.lifetimes_capped)),
        )?;
        self.encode_streams(&mut encoder)?;
        counter_family(
            &mut encoder,
            "reloads",
            "SIGHUP reloads of the [turn] configuration",
            [
                (
                    vec![("result", "ok")],
                    self.inner.reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    vec![("result", "error")],
                    self.inner.reloads_failed.load(Ordering::Relaxed),
                ),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;
    impl ActiveAllocations for Fixed {
        fn active(&self, t: Transport) -> u64 {
            if t == Transport::Udp {
                3
            } else {
                0
            }
        }
    }

    fn scrape(m: &TurnMetrics) -> String {
        let mut registry = Registry::with_prefix("rtcrelay");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn families_sum_listeners_by_protocol_without_user_labels() {
        let m = TurnMetrics::default();
        let stats = Arc::new(ListenerStats::default());
        stats.allocations_created.fetch_add(5, Ordering::Relaxed);
        stats.refused(AllocationRefusal::UserQuota);
        m.add_listener(Transport::Udp, stats.clone(), RelayCounters::new());
        m.add_listener(Transport::Udp, stats, RelayCounters::new());
        m.set_active(Arc::new(Fixed));
        m.bad_password();
        m.reloaded(true);
        let text = scrape(&m);
        for line in [
            "rtcrelay_turn_allocations{protocol=\"udp\"} 3",
            "rtcrelay_turn_allocations_created_total{protocol=\"udp\"} 10",
            "rtcrelay_turn_allocations_refused_total{protocol=\"udp\",reason=\"user_quota\"} 2",
            "rtcrelay_turn_auth_failures_total{reason=\"bad_password\"} 1",
            "rtcrelay_turn_auth_failures_total{reason=\"expired\"} 0",
            "rtcrelay_turn_relayed_packets_total{protocol=\"udp\",direction=\"to_peer\"} 0",
            "rtcrelay_turn_peers_denied_total{protocol=\"udp\",direction=\"request\",reason=\"loopback\"} 0",
            "rtcrelay_turn_reloads_total{result=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("protocol=\"tcp\""), "{text}");
        assert!(!text.contains("user="), "{text}");
    }
}
