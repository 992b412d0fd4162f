//! Named network profiles: the built-in presets and the user's own.
//!
//! Each preset is a [`LinkConfig`]: `up` is the player's uplink (client →
//! server), `down` the downlink; delays are one-way (half the round trip).
//! The numbers are round, typical values, not a particular operator's:
//!
//! | preset | one-way delay (jitter, shape) | loss (long-run, mean burst) | rate down / up, queue |
//! |---|---|---|---|
//! | `good` | 10 ms (±1 ms normal) | none | unlimited |
//! | `wifi` | 12 ms (4 ms paretonormal, corr. 0.25) | 0.5 %, bursts of 2 | 50 / 20 Mbit/s, 1000 pkts |
//! | `wifi-lossy` | 20 ms (15 ms paretonormal, corr. 0.5) | 3 %, bursts of 3 | 5 / 2 Mbit/s, 128 KB |
//! | `4g` | 30 ms (8 ms normal, corr. 0.5) | 0.5 %, bursts of 3 | 20 / 8 Mbit/s, 256 KB |
//! | `3g` | 75 ms (20 ms normal, corr. 0.5) | 1.5 %, bursts of 3 | 1.6 / 0.75 Mbit/s, 64 KB |
//! | `satellite` | 300 ms (20 ms normal, corr. 0.5) | 1 %, bursts of 5 | 25 / 3 Mbit/s, 1 MB |
//! | `congested` | 40 ms (30 ms pareto, corr. 0.5) | 2 % random (corr. 0.25) | 4 / 1 Mbit/s, 256 / 64 KB |
//!
//! Why these numbers:
//!
//! - `good`: a wired (fibre, cable) line to a server in the same region.
//!   Such lines measure round trips of about 10–25 ms (the FCC's Measuring
//!   Broadband America reports put fibre and cable medians there) and
//!   practically no loss. The control condition: only a realistic delay.
//! - `wifi`: the same line behind home Wi-Fi. 802.11 retransmits lost frames
//!   itself, so most radio loss shows as extra delay with a late tail
//!   (paretonormal, netem's shape for measured delays) and only a little
//!   reaches the IP layer, in short bursts. Rates are not the limit.
//! - `wifi-lossy`: a weak or contended Wi-Fi signal (far from the access
//!   point, a busy 2.4 GHz band): tens of ms of jitter and percent-level
//!   bursty loss, a few Mbit/s of usable rate.
//! - `4g`: LTE round trips are typically 40–70 ms with scheduler-driven
//!   jitter; HARQ/RLC hide radio loss except around handovers (rare, bursty).
//!   Cellular buffers are deep (bufferbloat), hence the byte queues; rates
//!   near published LTE medians.
//! - `3g`: the profile web tooling uses for "slow mobile" (Lighthouse's
//!   mobile throttling, formerly DevTools' "Fast 3G"): 150 ms round trip,
//!   1.6 Mbit/s down, 750 kbit/s up; HSPA-like loss of 1–2 %.
//! - `satellite`: geostationary. The signal alone needs about 240 ms
//!   ground → satellite (35 786 km up) → ground each way; with the ground
//!   segment, round trips measure about 600 ms. Rain fade gives longer loss
//!   bursts; 25/3 Mbit/s is the tier such services were sold at.
//! - `congested`: a line shared with bulk traffic (someone uploading):
//!   queueing delay with a heavy tail (pareto), random correlated loss and a
//!   small rate with a bloated buffer (64 KB is half a second at 1 Mbit/s).
//!
//! All presets keep packet order (`preserve_order`) and do not duplicate or
//! corrupt: those are for explicit experiments.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{
    ConfigError, DelayConfig, GilbertElliott, ImpairmentConfig, LinkConfig, LossConfig, RandomLoss,
    RateConfig,
};
use crate::distribution::Distribution;

/// A built-in network profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Wired line to a nearby server: delay only.
    Good,
    /// Good home Wi-Fi.
    Wifi,
    /// Weak or contended Wi-Fi.
    WifiLossy,
    /// LTE.
    FourG,
    /// HSPA / "slow mobile".
    ThreeG,
    /// Geostationary satellite.
    Satellite,
    /// A line shared with bulk traffic.
    Congested,
}

impl Preset {
    /// Every preset, in the order of the table above.
    pub const ALL: [Preset; 7] = [
        Preset::Good,
        Preset::Wifi,
        Preset::WifiLossy,
        Preset::FourG,
        Preset::ThreeG,
        Preset::Satellite,
        Preset::Congested,
    ];

    /// The name used in configs, scenarios and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Good => "good",
            Preset::Wifi => "wifi",
            Preset::WifiLossy => "wifi-lossy",
            Preset::FourG => "4g",
            Preset::ThreeG => "3g",
            Preset::Satellite => "satellite",
            Preset::Congested => "congested",
        }
    }

    /// The preset called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Both directions of the preset.
    pub fn link_config(self) -> LinkConfig {
        match self {
            Preset::Good => LinkConfig::symmetric(ImpairmentConfig {
                delay: delay(10, 1, Distribution::Normal, 0.0),
                ..ImpairmentConfig::default()
            }),
            Preset::Wifi => {
                let base = ImpairmentConfig {
                    loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.005, 2.0)),
                    delay: delay(12, 4, Distribution::ParetoNormal, 0.25),
                    ..ImpairmentConfig::default()
                };
                directions(base, rate(50_000, None), rate(20_000, None))
            }
            Preset::WifiLossy => {
                let base = ImpairmentConfig {
                    loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.03, 3.0)),
                    delay: delay(20, 15, Distribution::ParetoNormal, 0.5),
                    ..ImpairmentConfig::default()
                };
                directions(base, rate(5_000, Some(128_000)), rate(2_000, Some(128_000)))
            }
            Preset::FourG => {
                let base = ImpairmentConfig {
                    loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.005, 3.0)),
                    delay: delay(30, 8, Distribution::Normal, 0.5),
                    ..ImpairmentConfig::default()
                };
                directions(
                    base,
                    rate(20_000, Some(256_000)),
                    rate(8_000, Some(256_000)),
                )
            }
            Preset::ThreeG => {
                let base = ImpairmentConfig {
                    loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.015, 3.0)),
                    delay: delay(75, 20, Distribution::Normal, 0.5),
                    ..ImpairmentConfig::default()
                };
                directions(base, rate(1_600, Some(64_000)), rate(750, Some(64_000)))
            }
            Preset::Satellite => {
                let base = ImpairmentConfig {
                    loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.01, 5.0)),
                    delay: delay(300, 20, Distribution::Normal, 0.5),
                    ..ImpairmentConfig::default()
                };
                directions(
                    base,
                    rate(25_000, Some(1_000_000)),
                    rate(3_000, Some(1_000_000)),
                )
            }
            Preset::Congested => {
                let base = ImpairmentConfig {
                    loss: LossConfig::Random(RandomLoss {
                        p: 0.02,
                        correlation: 0.25,
                    }),
                    delay: delay(40, 30, Distribution::Pareto, 0.5),
                    ..ImpairmentConfig::default()
                };
                directions(base, rate(4_000, Some(256_000)), rate(1_000, Some(64_000)))
            }
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name).ok_or_else(|| ConfigError::Invalid {
            field: "profile".to_string(),
            reason: format!("{name:?} is not a preset (known: {})", preset_names()),
        })
    }
}

fn preset_names() -> String {
    Preset::ALL.map(Preset::name).join(", ")
}

fn delay(
    latency_ms: u64,
    jitter_ms: u64,
    distribution: Distribution,
    correlation: f64,
) -> DelayConfig {
    DelayConfig {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        distribution,
        correlation,
        preserve_order: true,
    }
}

/// A rate with the IPv4 + UDP header overhead (the model sees UDP payloads).
fn rate(kbit_per_s: u64, queue_limit_bytes: Option<u64>) -> RateConfig {
    RateConfig {
        overhead_bytes: 28,
        queue_limit_bytes,
        ..RateConfig::kbit_per_s(kbit_per_s)
    }
}

fn directions(base: ImpairmentConfig, down: RateConfig, up: RateConfig) -> LinkConfig {
    LinkConfig {
        up: ImpairmentConfig {
            rate: Some(up),
            ..base.clone()
        },
        down: ImpairmentConfig {
            rate: Some(down),
            ..base
        },
    }
}

/// The profiles a name can refer to: the presets, plus the user's own
/// (which may shadow a preset of the same name).
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    custom: BTreeMap<String, LinkConfig>,
}

impl Profiles {
    /// Only the built-in presets.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// Add (or replace) a profile of the user's, after validating it.
    pub fn insert(&mut self, name: impl Into<String>, link: LinkConfig) -> Result<(), ConfigError> {
        let name = name.into();
        link.validate_at(&format!("profiles.{name}"))?;
        self.custom.insert(name, link);
        Ok(())
    }

    /// The profile called `name`: the user's first, then the presets.
    pub fn get(&self, name: &str) -> Option<LinkConfig> {
        self.custom
            .get(name)
            .cloned()
            .or_else(|| Preset::from_name(name).map(Preset::link_config))
    }

    /// Every name that resolves, presets first.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Preset::ALL.iter().map(|p| p.name().to_string()).collect();
        for name in self.custom.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}
