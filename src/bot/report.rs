//! What the bots measured: each bot's own tally, merged at the end into a
//! [`Report`] printed as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// One bot's numbers over the whole run (all of its sessions).
#[derive(Debug, Default, Clone)]
pub struct BotTally {
    /// Sessions that connected.
    pub sessions: u64,
    /// Sessions after the first (leave, then join again).
    pub rejoins: u64,
    /// Lost connections the client resumed by itself (same seat, same
    /// peer id; the session goes on).
    pub resumes: u64,
    /// Lost connections it could not resume (grace period over, or the
    /// server refused the resume token): the session ended.
    pub resume_failures: u64,
    /// Dial to both channels open and `ready`, per session.
    pub setup: Vec<Duration>,
    /// Clock-sync RTT (client's SRTT on `control`), sampled once a second.
    pub rtt_ms: Vec<f64>,
    /// The server's RTT measurement of this client (realtime path).
    pub server_rtt_ms: Vec<f64>,
    /// Snapshot loss on the way down over the last second, sampled once a
    /// second.
    pub loss_down: Vec<f64>,
    /// Input loss on the way up as the server reported it.
    pub loss_up: Vec<f64>,
    pub snapshots: u64,
    /// Time from each session's first snapshot to its end: what the
    /// snapshot rate is measured over.
    pub in_game: Duration,
    pub inputs_sent: u64,
    pub events_received: u64,
    /// Event ids missing between the lowest and highest id a session got,
    /// across its resumes: `control` is ordered and events are resent
    /// until acked (after a resume too), so a hole is a critical event
    /// lost.
    pub events_lost: u64,
    pub match_starts: u64,
    pub match_ends: u64,
    /// `start` commands this bot sent.
    pub starts_sent: u64,
    pub errors: BTreeMap<String, u64>,
}

impl BotTally {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` without samples.
    pub fn of(mut samples: Vec<f64>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = (p * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Some(Percentiles {
            count: samples.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            max: samples[samples.len() - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotRate {
    /// Mean over the clients that got snapshots, per second in game.
    pub mean_hz: f64,
    /// The slowest of those clients.
    pub min_hz: f64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Loss {
    /// Mean of the per-second downstream (snapshot) loss samples.
    pub down_mean: f64,
    /// Mean of the server-reported upstream (input) loss samples.
    pub up_mean: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resumes {
    /// Lost connections resumed (same seat, the session went on).
    pub ok: u64,
    /// Lost connections not resumed (the session ended).
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Events {
    pub received: u64,
    pub lost: u64,
    pub match_start: u64,
    pub match_end: u64,
    pub start_commands_sent: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
}

/// The run's results (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub clients: usize,
    pub room_size: usize,
    pub rooms: usize,
    pub duration_s: f64,
    /// Clients that connected at least once.
    pub clients_connected: usize,
    /// Clients that connected but never got a snapshot (and clients that
    /// never connected).
    pub clients_without_snapshots: usize,
    pub sessions: u64,
    pub rejoins: u64,
    pub resumes: Resumes,
    pub setup_ms: Option<Percentiles>,
    pub rtt_ms: Option<Percentiles>,
    pub server_rtt_ms: Option<Percentiles>,
    pub snapshot_rate: SnapshotRate,
    pub loss: Loss,
    pub inputs_sent: u64,
    pub events: Events,
    pub errors: Errors,
    pub max_errors: u64,
    /// `errors.total <= max_errors`: the exit status is 0 exactly then.
    pub passed: bool,
}

fn mean(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        0.0
    } else {
        samples.iter().sum::<f64>() / samples.len() as f64
    }
}

impl Report {
    /// Merges the bots' tallies (one per client, index = client) and the
    /// run-wide errors.
    pub fn new(
        tallies: &[BotTally],
        run_errors: &BTreeMap<String, u64>,
        room_size: usize,
        elapsed: Duration,
        max_errors: u64,
    ) -> Report {
        let all = |f: fn(&BotTally) -> &Vec<f64>| -> Vec<f64> {
            tallies.iter().flat_map(|t| f(t).iter().copied()).collect()
        };
        let sum = |f: fn(&BotTally) -> u64| -> u64 { tallies.iter().map(f).sum() };
        let rates: Vec<f64> = tallies
            .iter()
            .filter(|t| t.snapshots > 0 && !t.in_game.is_zero())
            .map(|t| t.snapshots as f64 / t.in_game.as_secs_f64())
            .collect();
        let mut by_kind = run_errors.clone();
        for tally in tallies {
            for (kind, n) in &tally.errors {
                *by_kind.entry(kind.clone()).or_default() += n;
            }
        }
        let total = by_kind.values().sum();
        Report {
            clients: tallies.len(),
            room_size,
            rooms: tallies.len().div_ceil(room_size.max(1)),
            duration_s: elapsed.as_secs_f64(),
            clients_connected: tallies.iter().filter(|t| t.sessions > 0).count(),
            clients_without_snapshots: tallies.iter().filter(|t| t.snapshots == 0).count(),
            sessions: sum(|t| t.sessions),
            rejoins: sum(|t| t.rejoins),
            resumes: Resumes {
                ok: sum(|t| t.resumes),
                failed: sum(|t| t.resume_failures),
            },
            setup_ms: Percentiles::of(
                tallies
                    .iter()
                    .flat_map(|t| t.setup.iter().map(|d| d.as_secs_f64() * 1000.0))
                    .collect(),
            ),
            rtt_ms: Percentiles::of(all(|t| &t.rtt_ms)),
            server_rtt_ms: Percentiles::of(all(|t| &t.server_rtt_ms)),
            snapshot_rate: SnapshotRate {
                mean_hz: mean(&rates),
                min_hz: rates.iter().copied().fold(f64::NAN, f64::min),
                total: sum(|t| t.snapshots),
            },
            loss: Loss {
                down_mean: mean(&all(|t| &t.loss_down)),
                up_mean: mean(&all(|t| &t.loss_up)),
            },
            inputs_sent: sum(|t| t.inputs_sent),
            events: Events {
                received: sum(|t| t.events_received),
                lost: sum(|t| t.events_lost),
                match_start: sum(|t| t.match_starts),
                match_end: sum(|t| t.match_ends),
                start_commands_sent: sum(|t| t.starts_sent),
            },
            errors: Errors { total, by_kind },
            max_errors,
            passed: total <= max_errors,
        }
    }

    /// JSON (one line); a NaN (no sample) becomes `null`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let pct = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:.1}  p95 {:.1}  max {:.1}  ({} samples)",
                p.p50, p.p95, p.max, p.count
            ),
            None => "no samples".into(),
        };
        let rows: Vec<(&str, String)> = vec![
            (
                "clients",
                format!(
                    "{} in {} rooms of {}; {} connected, {} without snapshots",
                    self.clients,
                    self.rooms,
                    self.room_size,
                    self.clients_connected,
                    self.clients_without_snapshots
                ),
            ),
            ("duration", format!("{:.1} s", self.duration_s)),
            (
                "sessions",
                format!("{} ({} rejoins)", self.sessions, self.rejoins),
            ),
            (
                "resumes",
                format!(
                    "{} resumed, {} failed",
                    self.resumes.ok, self.resumes.failed
                ),
            ),
            ("setup time (ms)", pct(&self.setup_ms)),
            ("RTT, clock sync (ms)", pct(&self.rtt_ms)),
            ("RTT, server's view (ms)", pct(&self.server_rtt_ms)),
            (
                "snapshots per client",
                format!(
                    "mean {:.1}/s  min {:.1}/s  ({} in all)",
                    self.snapshot_rate.mean_hz, self.snapshot_rate.min_hz, self.snapshot_rate.total
                ),
            ),
            (
                "loss",
                format!(
                    "down {:.2}%  up {:.2}%",
                    self.loss.down_mean * 100.0,
                    self.loss.up_mean * 100.0
                ),
            ),
            ("inputs sent", self.inputs_sent.to_string()),
            (
                "critical events",
                format!(
                    "{} received, {} lost; {} match_start, {} match_end; {} start commands",
                    self.events.received,
                    self.events.lost,
                    self.events.match_start,
                    self.events.match_end,
                    self.events.start_commands_sent
                ),
            ),
            (
                "errors",
                format!("{} (max {})", self.errors.total, self.max_errors),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "{name:<24} {value}");
        }
        for (kind, n) in &self.errors.by_kind {
            let _ = writeln!(out, "{:<24} {n}", format!("  {kind}"));
        }
        let _ = writeln!(
            out,
            "{:<24} {}",
            "result",
            if self.passed { "ok" } else { "FAILED" }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(Vec::new()), None);
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect()).unwrap();
        assert_eq!((p.count, p.p50, p.p95, p.max), (100, 50.0, 95.0, 100.0));
        let one = Percentiles::of(vec![3.0]).unwrap();
        assert_eq!((one.p50, one.p95, one.max), (3.0, 3.0, 3.0));
    }

    #[test]
    fn tallies_merge_into_rates_errors_and_a_verdict() {
        let mut a = BotTally {
            sessions: 2,
            rejoins: 1,
            snapshots: 300,
            in_game: Duration::from_secs(10),
            setup: vec![Duration::from_millis(40), Duration::from_millis(60)],
            events_lost: 1,
            resumes: 2,
            ..BotTally::default()
        };
        a.error("session_closed");
        let b = BotTally {
            sessions: 1,
            resumes: 1,
            resume_failures: 1,
            snapshots: 150,
            in_game: Duration::from_secs(10),
            ..BotTally::default()
        };
        let never = BotTally::default();
        let run_errors = BTreeMap::from([("admin_netlab".to_owned(), 2)]);
        let r = Report::new(&[a, b, never], &run_errors, 4, Duration::from_secs(12), 3);
        assert_eq!((r.clients, r.rooms, r.clients_connected), (3, 1, 2));
        assert_eq!(r.clients_without_snapshots, 1);
        assert_eq!((r.sessions, r.rejoins), (3, 1));
        assert_eq!(r.snapshot_rate.mean_hz, 22.5);
        assert_eq!(r.snapshot_rate.min_hz, 15.0);
        assert_eq!(r.setup_ms.as_ref().unwrap().max, 60.0);
        assert_eq!(r.errors.total, 3);
        assert_eq!(r.errors.by_kind["admin_netlab"], 2);
        assert!(r.passed, "3 errors, 3 allowed");
        assert_eq!(r.events.lost, 1);
        assert_eq!(r.resumes, Resumes { ok: 3, failed: 1 });
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["errors"]["by_kind"]["session_closed"], 1);
        assert_eq!(json["resumes"], serde_json::json!({"ok": 3, "failed": 1}));
        assert!(r.table().contains("3 resumed, 1 failed"));
        assert!(r.table().contains("result                   ok"));

        let strict = Report::new(&[BotTally::default()], &run_errors, 4, Duration::ZERO, 0);
        assert!(!strict.passed);
        assert!(strict.table().contains("FAILED"));
        // No client got snapshots: the minimum is not a number, JSON null.
        let json: serde_json::Value = serde_json::from_str(&strict.json()).unwrap();
        assert!(json["snapshot_rate"]["min_hz"].is_null());
    }
}
