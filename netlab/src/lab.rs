//! The lab: which impairment is in force where, shared by every driver.
//!
//! A [`Lab`] maps [`Scope`]s (the whole server, a room, a peer, a TURN
//! username) to a [`Setting`] (a named profile, an inline [`LinkConfig`] or
//! a [`ScenarioConfig`]). Drivers (the relay's per-peer paths, TURN
//! allocations) ask it which setting applies to a path with
//! [`Lab::resolve`] — the most specific scope wins: peer, then TURN
//! username, then room, then global — and re-ask only when
//! [`Lab::version`] changes, so a packet never takes the lab's lock. Each
//! path keeps its own [`PathImpairment`] (its own seeded [`Link`]) and
//! reports what it injected back with [`Lab::record`], so the lab can give
//! totals per scope for `/metrics`.
//!
//! No I/O and no clock: `now` is passed in, like everywhere in this crate.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, LinkConfig};
use crate::impairment::{Counters, Decision, Released};
use crate::link::{Direction, Link};
use crate::payload::Payload;
use crate::preset::Profiles;
use crate::scenario::{Scenario, ScenarioConfig};

/// Scopes the lab holds at most (each one a tester set).
pub const MAX_SCOPES: usize = 1024;
/// Longest scope id (room name, peer id, TURN username).
pub const MAX_SCOPE_ID_BYTES: usize = 256;

/// Where a setting applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every path of the server.
    Global,
    /// Every peer of one room.
    Room(String),
    /// One peer (its id as signaling gave it).
    Peer(String),
    /// Every TURN allocation of one username.
    TurnUser(String),
}

impl Scope {
    /// `global`, `room`, `peer`, `turn_user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Room(_) => "room",
            Scope::Peer(_) => "peer",
            Scope::TurnUser(_) => "turn_user",
        }
    }

    /// The scope named by a kind (as [`kind`](Self::kind) gives it) and an
    /// id (ignored for `global`).
    pub fn parse(kind: &str, id: &str) -> Result<Scope, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "scope".into(),
            reason,
        };
        if kind != "global" && (id.is_empty() || id.len() > MAX_SCOPE_ID_BYTES) {
            return Err(invalid(format!(
                "id must be 1 to {MAX_SCOPE_ID_BYTES} bytes"
            )));
        }
        Ok(match kind {
            "global" => Scope::Global,
            "room" => Scope::Room(id.into()),
            "peer" => Scope::Peer(id.into()),
            "turn_user" => Scope::TurnUser(id.into()),
            other => {
                return Err(invalid(format!(
                    "{other:?} is not a scope (global, room, peer, turn_user)"
                )))
            }
        })
    }
}

impl fmt::Display for Scope {
    /// `global`, `room:NAME`, `peer:ID`, `turn_user:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Room(id) | Scope::Peer(id) | Scope::TurnUser(id) => {
                write!(f, "{}:{id}", self.kind())
            }
        }
    }
}

/// What to put in force: exactly one of a profile name, an inline link or
/// a scenario; `seed` makes the run reproducible (random when absent).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<ScenarioConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Setting {
    /// The profile `name`.
    pub fn profile(name: impl Into<String>) -> Self {
        Setting {
            profile: Some(name.into()),
            ..Setting::default()
        }
    }
}

/// A setting checked and resolved: what drivers build their paths from.
#[derive(Debug, Clone)]
pub enum Plan {
    /// A fixed link (a profile or an inline one); `name` is the profile's.
    Link {
        name: Option<String>,
        link: Arc<LinkConfig>,
    },
    /// A scenario, started when it was set.
    Scenario(Arc<Scenario>),
}

/// What applies to one path: the scope it came from, the plan, the seed.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub scope: Scope,
    pub plan: Plan,
    pub seed: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    setting: Setting,
    plan: Plan,
    seed: u64,
}

/// What injected, per scope and direction, as drivers reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeTotals {
    pub up: Counters,
    pub down: Counters,
}

/// See the module docs.
#[derive(Debug)]
pub struct Lab {
    profiles: Profiles,
    entries: RwLock<BTreeMap<Scope, Entry>>,
    version: AtomicU64,
    totals: Mutex<BTreeMap<Scope, ScopeTotals>>,
    next_seed: AtomicU64,
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new(Profiles::builtin())
    }
}

impl Lab {
    /// A lab that knows `profiles` (the presets plus the user's own), with
    /// nothing in force.
    pub fn new(profiles: Profiles) -> Self {
        Lab {
            profiles,
            entries: RwLock::default(),
            version: AtomicU64::new(0),
            totals: Mutex::default(),
            next_seed: AtomicU64::new(random_seed()),
        }
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// Bumped by every change; drivers compare it to re-resolve.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Puts `setting` in force for `scope` (a scenario starts at `now`).
    /// Nothing changes on error; the error names the field.
    pub fn set(&self, scope: Scope, setting: Setting, now: Instant) -> Result<(), ConfigError> {
        let plan = self.plan(&setting, now)?;
        let seed = setting.seed.unwrap_or_else(|| {
            self.next_seed
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        });
        let mut entries = write(&self.entries);
        if !entries.contains_key(&scope) && entries.len() >= MAX_SCOPES {
            return Err(ConfigError::Invalid {
                field: "scope".into(),
                reason: format!("the lab holds at most {MAX_SCOPES} scopes; clear some first"),
            });
        }
        entries.insert(
            scope,
            Entry {
                setting,
                plan,
                seed,
            },
        );
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Takes `scope`'s setting out of force; `false` if it had none.
    pub fn clear(&self, scope: &Scope) -> bool {
        let removed = write(&self.entries).remove(scope).is_some();
        if removed {
            lock(&self.totals).remove(scope);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// Takes every setting out of force.
    pub fn clear_all(&self) {
        write(&self.entries).clear();
        lock(&self.totals).clear();
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The settings in force, by scope, with their seeds.
    pub fn settings(&self) -> Vec<(Scope, Setting, u64)> {
        read(&self.entries)
            .iter()
            .map(|(scope, e)| (scope.clone(), e.setting.clone(), e.seed))
            .collect()
    }

    /// What applies to a path of `peer` in `room` (through TURN as
    /// `turn_user`, if any): the most specific scope set, or `None`.
    pub fn resolve(
        &self,
        peer: Option<&str>,
        room: Option<&str>,
        turn_user: Option<&str>,
    ) -> Option<Resolved> {
        let entries = read(&self.entries);
        if entries.is_empty() {
            return None;
        }
        let candidates = [
            peer.map(|p| Scope::Peer(p.into())),
            turn_user.map(|u| Scope::TurnUser(u.into())),
            room.map(|r| Scope::Room(r.into())),
            Some(Scope::Global),
        ];
        candidates.into_iter().flatten().find_map(|scope| {
            entries.get(&scope).map(|e| Resolved {
                plan: e.plan.clone(),
                seed: e.seed,
                scope,
            })
        })
    }

    /// Adds what a path injected since its last report to its scope's
    /// totals (ignored when the scope was cleared meanwhile).
    pub fn record(&self, scope: &Scope, direction: Direction, delta: &Counters) {
        if !read(&self.entries).contains_key(scope) {
            return;
        }
        let mut totals = lock(&self.totals);
        let t = totals.entry(scope.clone()).or_default();
        let sum = match direction {
            Direction::Up => &mut t.up,
            Direction::Down => &mut t.down,
        };
        add(sum, delta);
    }

    /// Totals per scope in force.
    pub fn totals(&self) -> Vec<(Scope, ScopeTotals)> {
        lock(&self.totals)
            .iter()
            .map(|(s, t)| (s.clone(), *t))
            .collect()
    }

    /// Zeroes `scope`'s totals, e.g. after its setting was replaced, so they
    /// count what the new setting injects.
    pub fn reset_totals(&self, scope: &Scope) {
        lock(&self.totals).remove(scope);
    }

    fn plan(&self, setting: &Setting, now: Instant) -> Result<Plan, ConfigError> {
        match (&setting.profile, &setting.link, &setting.scenario) {
            (Some(name), None, None) => {
                let link = self
                    .profiles
                    .get(name)
                    .ok_or_else(|| ConfigError::Invalid {
                        field: "profile".into(),
                        reason: format!(
                            "{name:?} is not a known profile (known: {})",
                            self.profiles.names().join(", ")
                        ),
                    })?;
                Ok(Plan::Link {
                    name: Some(name.clone()),
                    link: Arc::new(link),
                })
            }
            (None, Some(link), None) => {
                link.validate_at("link")?;
                Ok(Plan::Link {
                    name: None,
                    link: Arc::new(link.clone()),
                })
            }
            (None, None, Some(scenario)) => {
                let scenario =
                    Scenario::new(scenario, &self.profiles, now).map_err(|e| match e {
                        ConfigError::Invalid { field, reason } => ConfigError::Invalid {
                            field: format!("scenario.{field}").trim_end_matches('.').into(),
                            reason,
                        },
                        other => other,
                    })?;
                Ok(Plan::Scenario(Arc::new(scenario)))
            }
            _ => Err(ConfigError::Invalid {
                field: "setting".into(),
                reason: "needs exactly one of profile, link or scenario".into(),
            }),
        }
    }
}

/// One path's impairment (both directions), driven by the driver that owns
/// the path: [`push`](Self::push) each packet, [`poll`](Self::poll) what is
/// due, wake up at [`poll_timeout`](Self::poll_timeout). A scenario's
/// stages are applied as `now` passes them; once a non-repeating scenario
/// has run out, packets pass untouched.
#[derive(Debug)]
pub struct PathImpairment<P> {
    scope: Scope,
    plan: Plan,
    link: Link<P>,
    /// The scenario stage applied last: (step, cycle), or `Some(None)` for
    /// the pass-through after the scenario ran out; `None` before the first.
    applied: Option<Option<(usize, u64)>>,
    reported: [Counters; 2],
}

impl<P: Payload> PathImpairment<P> {
    /// A path under `resolved`, started at `now`; `salt` (e.g. a hash of the
    /// peer id) gives each path of one scope its own random stream, so two
    /// players in one room do not lose the same packets.
    pub fn new(resolved: &Resolved, salt: u64, now: Instant) -> Self {
        let seed = resolved.seed ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let initial = match &resolved.plan {
            Plan::Link { link, .. } => (**link).clone(),
            Plan::Scenario(_) => LinkConfig::default(),
        };
        // A plan's configs were validated when set; a path cannot fail.
        let link = Link::new(&initial, seed, now).unwrap_or_else(|_| {
            Link::new(&LinkConfig::default(), seed, now).expect("the default link is valid")
        });
        let mut path = PathImpairment {
            scope: resolved.scope.clone(),
            plan: resolved.plan.clone(),
            link,
            applied: None,
            reported: [Counters::default(); 2],
        };
        path.advance(now);
        path
    }

    /// The scope whose setting this path follows.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Pushes a packet travelling `direction`.
    pub fn push(&mut self, direction: Direction, now: Instant, packet: P) -> Decision {
        self.advance(now);
        self.link.push(direction, now, packet)
    }

    /// The next packet due by `now` in `direction`.
    pub fn poll(&mut self, direction: Direction, now: Instant) -> Option<Released<P>> {
        self.advance(now);
        self.link.poll(direction, now)
    }

    /// When the path next needs the driver: a packet due, or a scenario
    /// stage ending.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let stage_end = match &self.plan {
            Plan::Scenario(s) => s.poll_timeout(now),
            Plan::Link { .. } => None,
        };
        match (self.link.poll_timeout(), stage_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One direction's running totals.
    pub fn counters(&self, direction: Direction) -> &Counters {
        self.link.direction(direction).counters()
    }

    /// Reports what was injected since the last report to `lab` (call it
    /// now and then, and when the path ends).
    pub fn report(&mut self, lab: &Lab) {
        for (i, direction) in [Direction::Up, Direction::Down].into_iter().enumerate() {
            let now = *self.counters(direction);
            let delta = difference(&now, &self.reported[i]);
            if delta != Counters::default() {
                lab.record(&self.scope, direction, &delta);
            }
            self.reported[i] = now;
        }
    }

    fn advance(&mut self, now: Instant) {
        let Plan::Scenario(scenario) = &self.plan else {
            return;
        };
        let stage = scenario.stage(now);
        let key = stage.map(|st| (st.step, st.cycle));
        if self.applied == Some(key) {
            return;
        }
        self.applied = Some(key);
        match stage {
            Some(stage) => {
                // Validated when the scenario was set.
                let _ = self.link.apply(stage.condition);
            }
            None => {
                let _ = self.link.set_config(&LinkConfig::default());
                self.link.set_blackout(false);
            }
        }
    }
}

fn add(sum: &mut Counters, d: &Counters) {
    sum.pushed += d.pushed;
    sum.passed += d.passed;
    sum.dropped_loss += d.dropped_loss;
    sum.dropped_blackout += d.dropped_blackout;
    sum.dropped_queue += d.dropped_queue;
    sum.duplicated += d.duplicated;
    sum.reordered += d.reordered;
    sum.corrupted += d.corrupted;
    sum.released += d.released;
    sum.added_delay += d.added_delay;
}

fn difference(now: &Counters, before: &Counters) -> Counters {
    Counters {
        pushed: now.pushed.saturating_sub(before.pushed),
        passed: now.passed.saturating_sub(before.passed),
        dropped_loss: now.dropped_loss.saturating_sub(before.dropped_loss),
        dropped_blackout: now.dropped_blackout.saturating_sub(before.dropped_blackout),
        dropped_queue: now.dropped_queue.saturating_sub(before.dropped_queue),
        duplicated: now.duplicated.saturating_sub(before.duplicated),
        reordered: now.reordered.saturating_sub(before.reordered),
        corrupted: now.corrupted.saturating_sub(before.corrupted),
        released: now.released.saturating_sub(before.released),
        added_delay: now.added_delay.saturating_sub(before.added_delay),
    }
}

fn random_seed() -> u64 {
    // Not for security: distinct seeds per process when none is given.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
