//! Time-scripted scenarios: which condition is in force at `now`.
//!
//! ```toml
//! repeat = false
//! steps = [
//!     { duration = "10s", profile = "good" },
//!     { duration = "5s", blackout = true },
//!     { duration = "20s", profile = "3g" },
//!     { duration = "30s", link = { up = { loss = { model = "random", p = 0.1 } } } },
//! ]
//! ```
//!
//! A step names a profile (a preset or one of the user's), gives a
//! [`LinkConfig`] inline, or is a blackout. A [`Scenario`] is the sans-IO
//! clock over the steps: [`stage`](Scenario::stage) says which step is in
//! force at `now` and until when, and the driver applies it (e.g. with
//! [`Link::apply`](crate::Link::apply)) whenever the stage changes. It never
//! touches a link itself, so one scenario can drive many links. A link flap
//! is a repeating pair of a profile and a blackout
//! ([`ScenarioConfig::link_flap`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{at_most, duration_text, invalid, ConfigError, LinkConfig, MAX_SCHEDULE};
use crate::preset::Profiles;

/// At most this many steps in one scenario.
pub const MAX_STEPS: usize = 10_000;

/// A scenario as written in TOML or JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Start over after the last step (otherwise the scenario ends there).
    #[serde(default)]
    pub repeat: bool,
    /// The steps, in order.
    pub steps: Vec<StepConfig>,
}

/// One step: a duration and exactly one of `profile`, `link`, `blackout`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// How long the step lasts, e.g. `"10s"`.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// A profile by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A profile given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkConfig>,
    /// The link is down: everything is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blackout: bool,
}

impl StepConfig {
    /// A step running the profile `name`.
    pub fn profile(duration: Duration, name: impl Into<String>) -> Self {
        Self {
            duration,
            profile: Some(name.into()),
            ..Self::default()
        }
    }

    /// A blackout step.
    pub fn blackout(duration: Duration) -> Self {
        Self {
            duration,
            blackout: true,
            ..Self::default()
        }
    }
}

impl ScenarioConfig {
    /// Parse a TOML document. Values are checked by [`Scenario::new`], which
    /// needs the profiles to resolve names.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// A link that works for `up` under `profile`, then is down for `down`,
    /// over and over.
    pub fn link_flap(profile: impl Into<String>, up: Duration, down: Duration) -> Self {
        Self {
            repeat: true,
            steps: vec![StepConfig::profile(up, profile), StepConfig::blackout(down)],
        }
    }
}

/// What a step puts in force.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Impair both directions by `link`; `name` is the profile's name, or
    /// `None` when the step gave it inline.
    Profile {
        /// The profile's name, if it had one.
        name: Option<String>,
        /// Both directions (boxed: a blackout needs none of it).
        link: Box<LinkConfig>,
    },
    /// Drop everything.
    Blackout,
}

/// The step in force at some `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage<'a> {
    /// Index of the step in the scenario.
    pub step: usize,
    /// How many times the scenario has started over (0 the first time).
    pub cycle: u64,
    /// What the step puts in force.
    pub condition: &'a Condition,
    /// When the step ends (and the next one, if any, begins).
    pub ends_at: Instant,
}

/// A validated scenario started at some instant: a clock over its steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    started_at: Instant,
    repeat: bool,
    steps: Vec<Step>,
    total: Duration,
}

#[derive(Debug, Clone)]
struct Step {
    /// Offset from the cycle's start at which the step ends.
    ends_after: Duration,
    condition: Condition,
}

impl Scenario {
    /// Check `config`, resolve profile names against `profiles`, and start
    /// the scenario at `now`. Errors name the step: `steps[2].profile …`.
    pub fn new(
        config: &ScenarioConfig,
        profiles: &Profiles,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        if config.steps.is_empty() {
            return Err(invalid("", "steps", "must hold at least one step"));
        }
        if config.steps.len() > MAX_STEPS {
            return Err(invalid(
                "",
                "steps",
                format!("must hold at most {MAX_STEPS} steps"),
            ));
        }
        let mut steps = Vec::with_capacity(config.steps.len());
        let mut total = Duration::ZERO;
        for (i, step) in config.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if step.duration.is_zero() {
                return Err(invalid(&at, "duration", "must be longer than 0"));
            }
            at_most(&at, "duration", step.duration, MAX_SCHEDULE)?;
            let condition = match (&step.profile, &step.link, step.blackout) {
                (Some(name), None, false) => {
                    let link = profiles.get(name).ok_or_else(|| {
                        invalid(
                            &at,
                            "profile",
                            format!(
                                "{name:?} is not a known profile (known: {})",
                                profiles.names().join(", ")
                            ),
                        )
                    })?;
                    Condition::Profile {
                        name: Some(name.clone()),
                        link: Box::new(link),
                    }
                }
                (None, Some(link), false) => {
                    link.validate_at(&format!("{at}.link"))?;
                    Condition::Profile {
                        name: None,
                        link: Box::new(link.clone()),
                    }
                }
                (None, None, true) => Condition::Blackout,
                _ => {
                    return Err(ConfigError::Invalid {
                        field: at,
                        reason: "needs exactly one of profile, link or blackout = true".into(),
                    })
                }
            };
            // 10 000 steps of at most 30 days: far below Duration's range.
            total += step.duration;
            steps.push(Step {
                ends_after: total,
                condition,
            });
        }
        Ok(Self {
            started_at: now,
            repeat: config.repeat,
            steps,
            total,
        })
    }

    /// The step in force at `now`, or `None` once a non-repeating scenario
    /// has run out (the driver then falls back to its default profile).
    pub fn stage(&self, now: Instant) -> Option<Stage<'_>> {
        let elapsed = now.saturating_duration_since(self.started_at);
        let (cycle, within) = if elapsed < self.total {
            (0, elapsed)
        } else if self.repeat {
            let total = self.total.as_nanos();
            let elapsed = elapsed.as_nanos();
            let within = u64::try_from(elapsed % total).unwrap_or(u64::MAX);
            (
                u64::try_from(elapsed / total).unwrap_or(u64::MAX),
                Duration::from_nanos(within),
            )
        } else {
            return None;
        };
        let step = self
            .steps
            .partition_point(|s| s.ends_after <= within)
            .min(self.steps.len() - 1);
        let remaining = self.steps[step].ends_after.saturating_sub(within);
        Some(Stage {
            step,
            cycle,
            condition: &self.steps[step].condition,
            ends_at: now.checked_add(remaining).unwrap_or(now),
        })
    }

    /// When the stage in force at `now` ends: the driver's next wake-up for
    /// this scenario (`None` once it has run out).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.stage(now).map(|stage| stage.ends_at)
    }

    /// When the scenario started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The length of one pass over the steps.
    pub fn cycle_length(&self) -> Duration {
        self.total
    }

    /// Whether it starts over after the last step.
    pub fn repeats(&self) -> bool {
        self.repeat
    }
}
