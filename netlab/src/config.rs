//! What one direction's impairment is, as configured (serde) and validated.
//!
//! Every knob defaults to "off", so `ImpairmentConfig::default()` passes
//! packets through untouched and a TOML table names only what it changes:
//!
//! ```toml
//! duplicate = 0.001
//! corrupt = 0.0
//! loss = { model = "gilbert-elliott", mean_loss = 0.02, mean_burst = 3 }
//! delay = { latency = "40ms", jitter = "10ms", distribution = "normal", correlation = 0.25 }
//! reorder = { p = 0.01, gap = 1 }
//! rate = { kbit_per_s = 2000, overhead_bytes = 28, queue_limit_bytes = 64000 }
//! blackouts = [{ start = "10s", duration = "2s" }]
//! ```
//!
//! Deserializing checks the shape (unknown keys are errors); [`validate`]
//! checks the values and names the offending field, e.g.
//! `loss.p must be within 0..=1 (got 1.5)`. Constructors of the model
//! validate, so no configuration can make it panic.
//!
//! [`validate`]: ImpairmentConfig::validate

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::distribution::Distribution;

/// Upper bound of `delay.latency` and `delay.jitter`: a network lab, not a
/// postal service. Keeps every `Instant` sum far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Upper bound of blackout window offsets and scenario step durations.
pub const MAX_SCHEDULE: Duration = Duration::from_secs(30 * 24 * 3600);
/// At most this many blackout windows (each packet checks all of them).
pub const MAX_BLACKOUTS: usize = 1024;
/// Upper bound of `rate.kbit_per_s` (100 Gbit/s).
pub const MAX_RATE_KBIT_PER_S: u64 = 100_000_000;
/// Upper bound of the queue and held-packet limits.
pub const MAX_QUEUE_PACKETS: u32 = 1_000_000;

/// One direction's impairment. The pipeline a packet goes through, in this
/// order: blackout, loss, duplicate, corrupt, rate (bottleneck queue), then
/// delay or reorder. See [`Impairment`](crate::Impairment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImpairmentConfig {
    /// Which packets are lost at random.
    pub loss: LossConfig,
    /// How long a packet travels after leaving the bottleneck.
    pub delay: DelayConfig,
    /// Packets that skip the delay and so overtake earlier ones.
    pub reorder: ReorderConfig,
    /// Probability that a packet is delivered twice (netem `duplicate`).
    pub duplicate: f64,
    /// Probability that one random bit of a packet is flipped (netem
    /// `corrupt`).
    pub corrupt: f64,
    /// A bottleneck link: serialization at a rate, a FIFO queue, tail drop.
    pub rate: Option<RateConfig>,
    /// Scheduled outages, relative to the model's start: everything pushed
    /// inside a window is dropped.
    pub blackouts: Vec<BlackoutWindow>,
    /// Bound on the packets held at once (queued or in flight); beyond it a
    /// packet is tail-dropped as a queue drop. A memory guard like netem's
    /// `limit` (whose default of 1000 is too small for seconds of delay at
    /// game rates, hence 10 000 here).
    pub max_held_packets: u32,
}

impl Default for ImpairmentConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::None,
            delay: DelayConfig::default(),
            reorder: ReorderConfig::default(),
            duplicate: 0.0,
            corrupt: 0.0,
            rate: None,
            blackouts: Vec::new(),
            max_held_packets: 10_000,
        }
    }
}

/// The loss process, in TOML a table tagged by `model`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum LossConfig {
    /// No random loss.
    #[default]
    None,
    /// `{ model = "random", p, correlation }`.
    Random(RandomLoss),
    /// `{ model = "gilbert-elliott", ... }`.
    GilbertElliott(GilbertElliott),
}

/// Random loss with probability `p`, optionally correlated.
///
/// With `correlation = rho`, the loss of a packet depends on the previous
/// packet's: `P(lost | previous lost) = p + rho (1 - p)` and
/// `P(lost | previous passed) = p (1 - rho)`. The long-run loss stays `p`,
/// consecutive decisions have correlation `rho`, and losses come in runs of
/// mean length `1 / ((1 - p)(1 - rho))`. (netem's correlated loss blends the
/// uniform draws instead, which changes the loss rate away from `p`: 1% at
/// 50% correlation loses well under 1%.)
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomLoss {
    /// Long-run loss probability, `0..=1`.
    pub p: f64,
    /// Correlation of consecutive decisions, `0..=1`.
    pub correlation: f64,
}

/// Gilbert-Elliott loss: a two-state Markov chain (good, bad) with a loss
/// probability per state, as netem's `loss gemodel p r 1-h 1-k`.
///
/// Give the transitions either directly (`p` good→bad, `r` bad→good, per
/// packet) or through the convenience pair `mean_loss` (long-run loss rate,
/// instead of `p`) and `mean_burst` (mean packets per bad period, `1 / r`,
/// instead of `r`). With the defaults `loss_in_bad = 1` and
/// `loss_in_good = 0` (the "simple Gilbert" model) a bad period is a burst of
/// consecutive losses, so `mean_burst` is the mean loss burst length.
///
/// The chain starts in the good state (as netem's); each packet is lost or
/// not by the current state, then the state may change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GilbertElliott {
    /// Good → bad transition probability per packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// Bad → good transition probability per packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<f64>,
    /// Long-run loss rate; sets `p` from `r` and the per-state losses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_loss: Option<f64>,
    /// Mean length of a bad period in packets (`>= 1`); sets `r = 1 / it`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_burst: Option<f64>,
    /// Loss probability in the bad state (netem's `1-h`).
    #[serde(alias = "1-h")]
    pub loss_in_bad: f64,
    /// Loss probability in the good state (netem's `1-k`).
    #[serde(alias = "1-k")]
    pub loss_in_good: f64,
}

impl Default for GilbertElliott {
    fn default() -> Self {
        Self {
            p: None,
            r: None,
            mean_loss: None,
            mean_burst: None,
            loss_in_bad: 1.0,
            loss_in_good: 0.0,
        }
    }
}

impl GilbertElliott {
    /// Simple Gilbert: a long-run loss rate in bursts of `mean_burst` packets.
    pub fn bursts(mean_loss: f64, mean_burst: f64) -> Self {
        Self {
            mean_loss: Some(mean_loss),
            mean_burst: Some(mean_burst),
            ..Self::default()
        }
    }

    /// netem's four parameters: `p`, `r`, `1-h` (loss in bad), `1-k` (loss in
    /// good).
    pub fn transitions(p: f64, r: f64, loss_in_bad: f64, loss_in_good: f64) -> Self {
        Self {
            p: Some(p),
            r: Some(r),
            loss_in_bad,
            loss_in_good,
            ..Self::default()
        }
    }

    /// The chain's `(p, r)` after the convenience fields are applied, or the
    /// field that makes them impossible.
    pub fn resolve(&self) -> Result<ResolvedGilbertElliott, ConfigError> {
        self.resolve_at("loss")
    }

    fn resolve_at(&self, prefix: &str) -> Result<ResolvedGilbertElliott, ConfigError> {
        probability(prefix, "loss_in_bad", self.loss_in_bad)?;
        probability(prefix, "loss_in_good", self.loss_in_good)?;
        let r = match (self.r, self.mean_burst) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    prefix,
                    "mean_burst",
                    "cannot be set together with r",
                ))
            }
            (None, None) => return Err(invalid(prefix, "r", "is required (or mean_burst)")),
            (Some(r), None) => {
                if !(r > 0.0 && r <= 1.0) {
                    return Err(invalid(
                        prefix,
                        "r",
                        format!("must be within (0, 1] (got {r})"),
                    ));
                }
                r
            }
            (None, Some(burst)) => {
                if !(burst >= 1.0 && burst.is_finite()) {
                    return Err(invalid(
                        prefix,
                        "mean_burst",
                        format!("must be a number of packets >= 1 (got {burst})"),
                    ));
                }
                1.0 / burst
            }
        };
        let p = match (self.p, self.mean_loss) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    prefix,
                    "mean_loss",
                    "cannot be set together with p",
                ))
            }
            (None, None) => return Err(invalid(prefix, "p", "is required (or mean_loss)")),
            (Some(p), None) => {
                probability(prefix, "p", p)?;
                p
            }
            (None, Some(loss)) => {
                probability(prefix, "mean_loss", loss)?;
                let (bad, good) = (self.loss_in_bad, self.loss_in_good);
                if !(loss >= good && loss < bad) {
                    return Err(invalid(
                        prefix,
                        "mean_loss",
                        format!(
                            "must be within [loss_in_good, loss_in_bad) = [{good}, {bad}) (got {loss})"
                        ),
                    ));
                }
                // Stationary share of the bad state: pi = p / (p + r), and
                // loss = pi * bad + (1 - pi) * good.
                let pi_bad = (loss - good) / (bad - good);
                let p = r * pi_bad / (1.0 - pi_bad);
                if p > 1.0 {
                    return Err(invalid(
                        prefix,
                        "mean_loss",
                        format!(
                            "is not reachable with this mean_burst/r: {loss} needs p = {p:.3} > 1"
                        ),
                    ));
                }
                p
            }
        };
        Ok(ResolvedGilbertElliott {
            p,
            r,
            loss_in_bad: self.loss_in_bad,
            loss_in_good: self.loss_in_good,
        })
    }
}

/// A Gilbert-Elliott chain with both transitions known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedGilbertElliott {
    /// Good → bad per packet.
    pub p: f64,
    /// Bad → good per packet.
    pub r: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
    /// Loss probability in the good state.
    pub loss_in_good: f64,
}

impl ResolvedGilbertElliott {
    /// Long-run loss rate of the chain.
    pub fn mean_loss(&self) -> f64 {
        let pi_bad = if self.p + self.r > 0.0 {
            self.p / (self.p + self.r)
        } else {
            0.0
        };
        pi_bad * self.loss_in_bad + (1.0 - pi_bad) * self.loss_in_good
    }
}

/// Delay after the bottleneck: `latency + jitter * t`, `t` from the
/// distribution, never below zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelayConfig {
    /// Base one-way delay, e.g. `"40ms"`.
    #[serde(with = "duration_text")]
    pub latency: Duration,
    /// Spread around the latency: the half-width for `uniform`, one standard
    /// deviation for `normal`, netem's scale for `pareto`/`paretonormal`.
    #[serde(with = "duration_text")]
    pub jitter: Duration,
    /// The shape of the spread.
    pub distribution: Distribution,
    /// Correlation of consecutive delays, `0..=1` (see
    /// [`distribution`](crate::distribution)).
    pub correlation: f64,
    /// `true` (the default): a packet is never released before one pushed
    /// earlier, as on a single path; jitter then shows as bunching, not
    /// reordering. `false`: each packet keeps its own delay, so jitter larger
    /// than the packet spacing reorders packets (netem's behaviour). Explicit
    /// [`reorder`](ImpairmentConfig::reorder) works in both modes.
    pub preserve_order: bool,
}

impl Default for DelayConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
            correlation: 0.0,
            preserve_order: true,
        }
    }
}

/// netem's `reorder p gap`: once `gap - 1` packets in a row have been
/// delayed, each further packet is sent without delay with probability `p`
/// (then the count restarts). `gap = 1`: every packet with probability `p`;
/// `p = 1`: exactly every `gap`-th packet. The long-run share of reordered
/// packets is `p / (1 + (gap - 1) p)`. Needs a delay to overtake.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReorderConfig {
    /// Probability, `0..=1`; 0 disables reordering.
    pub p: f64,
    /// Packets delayed in a row before the next may be reordered, `>= 1`.
    pub gap: u32,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        Self { p: 0.0, gap: 1 }
    }
}

/// A bottleneck: each packet occupies the link for
/// `(len + overhead_bytes) * 8 / rate`; packets wait in a FIFO queue, and one
/// arriving at a full queue is dropped (tail drop). The queue counts every
/// packet not yet fully sent, the one on the wire included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Link rate in kbit/s (1 kbit = 1000 bit), `1..=100_000_000`.
    pub kbit_per_s: u64,
    /// Bytes added to each packet's length on the wire, e.g. 28 for the
    /// IPv4 + UDP headers around a UDP payload (48 for IPv6).
    #[serde(default)]
    pub overhead_bytes: u32,
    /// Queue limit in packets (default 1000, netem's default `limit`).
    #[serde(default = "default_queue_limit_packets")]
    pub queue_limit_packets: u32,
    /// Queue limit in bytes on the wire, in addition to the packet limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit_bytes: Option<u64>,
}

fn default_queue_limit_packets() -> u32 {
    1000
}

impl RateConfig {
    /// A rate in kbit/s with no overhead and the default queue limit.
    pub fn kbit_per_s(kbit_per_s: u64) -> Self {
        Self {
            kbit_per_s,
            overhead_bytes: 0,
            queue_limit_packets: default_queue_limit_packets(),
            queue_limit_bytes: None,
        }
    }

    /// Time on the wire of a packet of `len` bytes (payload).
    pub fn transmission_time(&self, len: usize) -> Duration {
        let kbit_per_s = self.kbit_per_s.max(1);
        let wire_bytes = (len as u64).saturating_add(u64::from(self.overhead_bytes));
        // bits * 10^6 / kbit/s = ns. u64 for any real packet; u128 beyond.
        let nanos = match wire_bytes.checked_mul(8_000_000) {
            Some(scaled) => scaled / kbit_per_s,
            None => u64::try_from(u128::from(wire_bytes) * 8_000_000 / u128::from(kbit_per_s))
                .unwrap_or(u64::MAX),
        };
        Duration::from_nanos(nanos)
    }
}

/// An outage from `start` for `duration`, both relative to the model's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackoutWindow {
    /// When the outage begins, after the model's start.
    #[serde(with = "duration_text")]
    pub start: Duration,
    /// How long it lasts.
    #[serde(with = "duration_text")]
    pub duration: Duration,
}

impl BlackoutWindow {
    /// Whether `elapsed` (since the model's start) falls inside the window.
    pub fn contains(&self, elapsed: Duration) -> bool {
        elapsed >= self.start && elapsed - self.start < self.duration
    }
}

impl ImpairmentConfig {
    /// Parse a TOML table and validate it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Whether this configuration leaves packets untouched (all knobs off).
    pub fn is_passthrough(&self) -> bool {
        let Self {
            loss,
            delay,
            reorder,
            duplicate,
            corrupt,
            rate,
            blackouts,
            max_held_packets: _,
        } = self;
        *loss == LossConfig::None
            && delay.latency.is_zero()
            && delay.jitter.is_zero()
            && reorder.p == 0.0
            && *duplicate == 0.0
            && *corrupt == 0.0
            && rate.is_none()
            && blackouts.is_empty()
    }

    /// Check every value; the error names the first offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("")
    }

    /// As [`validate`](Self::validate), with field names under `prefix`
    /// (e.g. `up` gives `up.loss.p`).
    pub fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        let loss = join(prefix, "loss");
        match &self.loss {
            LossConfig::None => {}
            LossConfig::Random(random) => {
                probability(&loss, "p", random.p)?;
                probability(&loss, "correlation", random.correlation)?;
            }
            LossConfig::GilbertElliott(ge) => {
                ge.resolve_at(&loss)?;
            }
        }

        let delay = join(prefix, "delay");
        at_most(&delay, "latency", self.delay.latency, MAX_DELAY)?;
        at_most(&delay, "jitter", self.delay.jitter, MAX_DELAY)?;
        probability(&delay, "correlation", self.delay.correlation)?;

        let reorder = join(prefix, "reorder");
        probability(&reorder, "p", self.reorder.p)?;
        if self.reorder.gap == 0 {
            return Err(invalid(&reorder, "gap", "must be at least 1"));
        }
        if self.reorder.p > 0.0 && self.delay.latency.is_zero() {
            return Err(invalid(
                &reorder,
                "p",
                "needs a delay to reorder against: set delay.latency above 0",
            ));
        }

        probability(prefix, "duplicate", self.duplicate)?;
        probability(prefix, "corrupt", self.corrupt)?;

        if let Some(rate) = &self.rate {
            let at = join(prefix, "rate");
            if !(1..=MAX_RATE_KBIT_PER_S).contains(&rate.kbit_per_s) {
                return Err(invalid(
                    &at,
                    "kbit_per_s",
                    format!(
                        "must be within 1..={MAX_RATE_KBIT_PER_S} (got {})",
                        rate.kbit_per_s
                    ),
                ));
            }
            if rate.overhead_bytes > 65_535 {
                return Err(invalid(&at, "overhead_bytes", "must be at most 65535"));
            }
            if !(1..=MAX_QUEUE_PACKETS).contains(&rate.queue_limit_packets) {
                return Err(invalid(
                    &at,
                    "queue_limit_packets",
                    format!("must be within 1..={MAX_QUEUE_PACKETS}"),
                ));
            }
            if rate.queue_limit_bytes == Some(0) {
                return Err(invalid(&at, "queue_limit_bytes", "must be at least 1"));
            }
        }

        if self.blackouts.len() > MAX_BLACKOUTS {
            return Err(invalid(
                prefix,
                "blackouts",
                format!("must hold at most {MAX_BLACKOUTS} windows"),
            ));
        }
        for (i, window) in self.blackouts.iter().enumerate() {
            let at = join(prefix, &format!("blackouts[{i}]"));
            at_most(&at, "start", window.start, MAX_SCHEDULE)?;
            at_most(&at, "duration", window.duration, MAX_SCHEDULE)?;
        }

        if !(1..=MAX_QUEUE_PACKETS).contains(&self.max_held_packets) {
            return Err(invalid(
                prefix,
                "max_held_packets",
                format!("must be within 1..={MAX_QUEUE_PACKETS}"),
            ));
        }
        Ok(())
    }
}

/// Both directions of a path. `up` is client → server, `down` server →
/// client (the presets are written from the player's side).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// Client → server.
    pub up: ImpairmentConfig,
    /// Server → client.
    pub down: ImpairmentConfig,
}

impl LinkConfig {
    /// The same impairment both ways.
    pub fn symmetric(config: ImpairmentConfig) -> Self {
        Self {
            up: config.clone(),
            down: config,
        }
    }

    /// Parse a TOML document with `[up]` and `[down]` tables and validate it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Validate both directions (fields named `up.…` and `down.…`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("")
    }

    /// As [`validate`](Self::validate), under `prefix`.
    pub fn validate_at(&self, prefix: &str) -> Result<(), ConfigError> {
        self.up.validate_at(&join(prefix, "up"))?;
        self.down.validate_at(&join(prefix, "down"))
    }
}

/// A configuration that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or inconsistent; `field` is its dotted path.
    #[error("{field} {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `up.loss.p` or `steps[2].profile`.
        field: String,
        /// What is wrong, e.g. `must be within 0..=1 (got 1.5)`.
        reason: String,
    },
    /// The text did not parse (TOML syntax, unknown key, wrong type).
    #[error("{0}")]
    Parse(String),
}

impl ConfigError {
    /// The offending field, for `Invalid`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Parse(_) => None,
        }
    }
}

pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

pub(crate) fn invalid(prefix: &str, name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: join(prefix, name),
        reason: reason.into(),
    }
}

fn probability(prefix: &str, name: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            prefix,
            name,
            format!("must be within 0..=1 (got {value})"),
        ))
    }
}

pub(crate) fn at_most(
    prefix: &str,
    name: &str,
    value: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value <= max {
        Ok(())
    } else {
        Err(invalid(
            prefix,
            name,
            format!(
                "must be at most {} (got {})",
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ))
    }
}

/// Durations as human text both ways: `"50ms"`, `"1m 30s"`.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"50ms\" or \"10s\""
            ))
        })
    }
}
