//! The network lab on TURN allocations (issue 5): each allocation's relayed
//! traffic impaired as the [`Lab`] says for its username.
//!
//! # What applies
//!
//! An allocation follows the setting [`resolve_turn_user`] finds for the
//! username that allocated it: `turn_user:USERNAME`, then — for a REST
//! username (`expiry:user-id`, or coturn's `user-id:expiry`) —
//! `turn_user:USER-ID`, then `global`. Signaling mints REST credentials
//! with the peer id as the user id, so `turn_user:<peer id>` impairs every
//! allocation of that peer whatever its credentials' expiry. `peer` and
//! `room` scopes do not apply to TURN (the relay's own paths follow them;
//! applying them here too would impair a relay room's traffic that comes
//! through TURN twice). `global` does apply, to both.
//!
//! # Directions
//!
//! As seen from the TURN client: **up** is client → peer (the datagrams the
//! crate hands the relay socket's `send_to`), **down** is peer → client
//! (what the relay socket's `recv_from` returns to the crate). The lab sits
//! on the client's side of the server: up datagrams are impaired before the
//! bandwidth cap, down datagrams after it.
//!
//! # Cost and timers
//!
//! Each allocation caches its resolution and re-resolves
//! only when [`Lab::version`] changes: while nothing applies, a datagram
//! costs one atomic load of the lab's version (and one of this
//! allocation's own word). While a setting applies, each datagram is copied
//! into a [`PathImpairment`] (one per direction, both from the same seed
//! and streams as one `Link`, so each direction has its own wake-up time)
//! behind a mutex. Timers need no task per datagram: down datagrams are
//! released by the relay socket's reader itself (the crate runs one
//! `recv_from` loop per allocation, which waits for the next datagram or
//! the next release, whichever comes first); up datagrams due at once are
//! sent by the `send_to` that pushed them, later ones by one driver task
//! per impaired allocation (started when a setting first applies, ended
//! when none applies and nothing is held, or when the allocation ends).
//! The driver also reports the injected counters to the lab once a
//! [`REPORT_INTERVAL`]; they are reported when a setting is replaced and
//! when the allocation ends too.
//!
//! # Changes at runtime
//!
//! A change to another scope keeps an allocation's paths (and their state).
//! When its own setting is replaced or cleared, datagrams already held are
//! still delivered at their release times; new ones follow the new setting
//! at once. The old paths' counters since their last report go to their
//! scope's totals, unless the new setting is for the same scope (replacing
//! a setting starts its scope's totals afresh: `Lab::reset_totals`).
//!
//! # Reproducibility
//!
//! Each allocation's random streams come from the setting's seed salted
//! with its username (FNV-1a), so the same seed, username and datagram
//! sequence give the same decisions. Two allocations of one username share
//! their streams.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtcrelay_netlab::{Decision, Direction, Lab, PathImpairment, Payload, Plan, Resolved, Scope};
use tokio::sync::Notify;

/// How often an impaired allocation reports its counters to the lab.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// `clean_at` while the allocation may be impaired or hold datagrams: every
/// datagram takes the lock.
const CHECK: u64 = u64::MAX;

/// Far enough to release everything a path holds (delays are capped at a
/// minute; a rate queue of the largest size drains within days).
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A relayed datagram held by the lab, with its peer (the target up, the
/// source down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub data: Vec<u8>,
    pub peer: SocketAddr,
}

impl Payload for Datagram {
    fn byte_len(&self) -> usize {
        self.data.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        self.data.flip_bit(bit);
    }
}

/// The user id of a REST username: `"1700000000:alice"` → `alice`, and
/// coturn's other order `"alice:1700000000"` → `alice`; `None` for a
/// username that is not `expiry:id` or `id:expiry`.
pub fn rest_user_id(username: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (prefix, rest) = username.split_once(':')?;
    if digits(prefix) && !rest.is_empty() {
        Some(rest)
    } else if digits(rest) && !prefix.is_empty() {
        Some(prefix)
    } else {
        None
    }
}

/// What applies to an allocation of `username`: `turn_user:USERNAME`, then
/// `turn_user:USER-ID` for a REST username, then `global`; `None` when
/// nothing does.
pub fn resolve_turn_user(lab: &Lab, username: Option<&str>) -> Option<Resolved> {
    let full = lab.resolve(None, None, username);
    if matches!(&full, Some(r) if matches!(r.scope, Scope::TurnUser(_))) {
        return full;
    }
    match username.and_then(rest_user_id) {
        Some(id) => match lab.resolve(None, None, Some(id)) {
            Some(r) if matches!(r.scope, Scope::TurnUser(_)) => Some(r),
            _ => full,
        },
        None => full,
    }
}

/// What [`AllocationLab::push`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Nothing applies: send or return it as it is.
    Bypass,
    /// The lab took it (it may have dropped it).
    Taken {
        /// No driver runs: the caller starts one ([`AllocationLab`] docs).
        start_driver: bool,
        /// The driver sleeps past this datagram's release: wake it.
        wake_driver: bool,
    },
}

/// What [`AllocationLab::next`] has for one direction.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A datagram due now.
    Due(Datagram),
    /// Nothing due; the next release (or scenario stage end) is then.
    Wait(Option<Instant>),
}

/// A datagram left from a replaced setting, due at `at`.
struct Leftover {
    at: Instant,
    seq: u64,
    datagram: Datagram,
}

impl PartialEq for Leftover {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Leftover {}

impl PartialOrd for Leftover {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Leftover {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The setting in force and a path per direction.
struct Current {
    scope: Scope,
    seed: u64,
    plan: usize,
    /// Indexed by [`index`]: up, down.
    paths: [PathImpairment<Datagram>; 2],
}

/// Identity of a plan: `Lab::set` makes a new one each time, and the paths
/// keep it alive, so equal addresses mean the same setting.
fn plan_id(plan: &Plan) -> usize {
    match plan {
        Plan::Link { link, .. } => Arc::as_ptr(link) as *const () as usize,
        Plan::Scenario(scenario) => Arc::as_ptr(scenario) as *const () as usize,
    }
}

impl Current {
    fn new(resolved: &Resolved, salt: u64, now: Instant) -> Self {
        Current {
            scope: resolved.scope.clone(),
            seed: resolved.seed,
            plan: plan_id(&resolved.plan),
            paths: [
                PathImpairment::new(resolved, salt, now),
                PathImpairment::new(resolved, salt, now),
            ],
        }
    }

    fn is(&self, resolved: &Resolved) -> bool {
        self.scope == resolved.scope
            && self.seed == resolved.seed
            && self.plan == plan_id(&resolved.plan)
    }

    fn report(&mut self, lab: &Lab) {
        for path in &mut self.paths {
            path.report(lab);
        }
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Up => 0,
        Direction::Down => 1,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Finds the username when it was not known at allocation time.
pub(crate) type UsernameLookup = Box<dyn Fn() -> Option<String> + Send + Sync>;

struct State {
    username: Option<String>,
    lookup: Option<UsernameLookup>,
    /// The lab version `current` was resolved at.
    resolved_at: Option<u64>,
    current: Option<Current>,
    /// Per direction (see [`index`]).
    leftovers: [BinaryHeap<Reverse<Leftover>>; 2],
    next_seq: u64,
    last_report: Instant,
    driver_running: bool,
    /// When the driver sleeps until (`None`: it has not slept yet).
    driver_deadline: Option<Instant>,
}

/// One allocation's share of the lab (see the module docs). Shared by the
/// relay socket's `send_to` (up), its `recv_from` (down) and the driver.
pub(crate) struct AllocationLab {
    lab: Arc<Lab>,
    /// The lab version at which nothing applies to this allocation and it
    /// holds nothing, or [`CHECK`].
    clean_at: AtomicU64,
    state: Mutex<State>,
    /// Wakes the driver: an earlier release, or the allocation ended.
    wake: Notify,
    closed: AtomicBool,
    /// Up datagrams leave in release order, whoever sends them (`send_to`
    /// or the driver).
    sending: tokio::sync::Mutex<()>,
}

impl fmt::Debug for AllocationLab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocationLab")
            .field("clean_at", &self.clean_at)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl AllocationLab {
    /// An allocation of `username` under `lab`; `lookup` finds the username
    /// later if it is not known now.
    pub(crate) fn new(
        lab: Arc<Lab>,
        username: Option<String>,
        lookup: Option<UsernameLookup>,
    ) -> Self {
        AllocationLab {
            lab,
            clean_at: AtomicU64::new(CHECK),
            state: Mutex::new(State {
                username,
                lookup,
                resolved_at: None,
                current: None,
                leftovers: [BinaryHeap::new(), BinaryHeap::new()],
                next_seq: 0,
                last_report: Instant::now(),
                driver_running: false,
                driver_deadline: None,
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fast path: nothing applies and nothing is held, as of the lab's
    /// current version. One atomic load of the lab's version.
    pub(crate) fn is_clean(&self) -> bool {
        self.lab.version() == self.clean_at.load(Ordering::Relaxed)
    }

    /// Whether datagrams may be held (then readers ask [`next`](Self::next)
    /// before waiting). `false` means none is held in either direction.
    pub(crate) fn may_hold(&self) -> bool {
        self.clean_at.load(Ordering::Relaxed) == CHECK
    }

    /// Takes `data` travelling `direction` to or from `peer`, unless nothing
    /// applies.
    pub(crate) fn push(
        &self,
        direction: Direction,
        now: Instant,
        data: &[u8],
        peer: SocketAddr,
    ) -> Pushed {
        let mut s = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Pushed::Bypass;
        }
        self.refresh(&mut s, now);
        let Some(current) = &mut s.current else {
            return Pushed::Bypass;
        };
        let datagram = Datagram {
            data: data.to_vec(),
            peer,
        };
        let decision = current.paths[index(direction)].push(direction, now, datagram);
        let start_driver = !s.driver_running;
        if start_driver {
            s.driver_running = true;
            s.driver_deadline = None;
        }
        let wake_driver = match decision {
            Decision::Accepted(a) if direction == Direction::Up && !start_driver => {
                let at = a.duplicate.map_or(a.original.release_at, |d| {
                    d.release_at.min(a.original.release_at)
                });
                at > now && s.driver_deadline.is_some_and(|sleep| at < sleep)
            }
            _ => false,
        };
        Pushed::Taken {
            start_driver,
            wake_driver,
        }
    }

    /// The next datagram due in `direction` at `now`, or when to ask again.
    pub(crate) fn next(&self, direction: Direction, now: Instant) -> Next {
        let mut s = self.lock();
        self.refresh(&mut s, now);
        let i = index(direction);
        if s.leftovers[i].peek().is_some_and(|l| l.0.at <= now) {
            let Some(Reverse(left)) = s.leftovers[i].pop() else {
                unreachable!("peeked")
            };
            self.update_clean(&s);
            return Next::Due(left.datagram);
        }
        let mut wait = s.leftovers[i].peek().map(|l| l.0.at);
        if let Some(current) = &mut s.current {
            let path = &mut current.paths[i];
            if let Some(released) = path.poll(direction, now) {
                return Next::Due(released.payload);
            }
            wait = earliest(wait, path.poll_timeout(now));
        }
        Next::Wait(wait)
    }

    /// The driver's bookkeeping between rounds: reports when due, and says
    /// when to wake up next, or `None` to stop (the allocation ended, or
    /// nothing applies and no up datagram is held).
    pub(crate) fn driver_sleep(&self, now: Instant) -> Option<Instant> {
        let mut s = self.lock();
        if self.closed.load(Ordering::Acquire) {
            s.driver_running = false;
            return None;
        }
        self.refresh(&mut s, now);
        let up = index(Direction::Up);
        if s.current.is_none() && s.leftovers[up].is_empty() {
            s.driver_running = false;
            s.driver_deadline = None;
            return None;
        }
        if now >= s.last_report + REPORT_INTERVAL {
            if let Some(current) = &mut s.current {
                current.report(&self.lab);
                s.last_report = now;
            }
        }
        let mut wake = s.leftovers[up].peek().map(|l| l.0.at);
        if let Some(current) = &s.current {
            wake = earliest(wake, Some(s.last_report + REPORT_INTERVAL));
            wake = earliest(wake, current.paths[up].poll_timeout(now));
        }
        s.driver_deadline = wake;
        wake
    }

    /// Waits for [`wake`](Self::wake) or `until`, whichever comes first.
    pub(crate) async fn sleep(&self, until: Instant) {
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep_until(until.into()) => {}
        }
    }

    /// Wakes the driver (it re-reads its deadline).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Serializes the sending of released up datagrams.
    pub(crate) async fn sending(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sending.lock().await
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The allocation ended: final report, the driver stops, held datagrams
    /// are dropped with it. Idempotent.
    pub(crate) fn finish(&self) {
        let mut s = self.lock();
        if let Some(current) = &mut s.current {
            current.report(&self.lab);
        }
        self.closed.store(true, Ordering::Release);
        drop(s);
        self.wake.notify_one();
    }

    /// Re-resolves when the lab changed: keeps the paths when the same
    /// setting still applies, else retires them (held datagrams kept as
    /// leftovers, counters reported unless the new setting is for the same
    /// scope) and starts new ones.
    fn refresh(&self, s: &mut State, now: Instant) {
        let version = self.lab.version();
        if s.resolved_at == Some(version) {
            return;
        }
        s.resolved_at = Some(version);
        if s.username.is_none() {
            s.username = s.lookup.as_ref().and_then(|lookup| lookup());
        }
        let resolved = resolve_turn_user(&self.lab, s.username.as_deref());
        let keep = match (&s.current, &resolved) {
            (Some(current), Some(resolved)) => current.is(resolved),
            (None, None) => true,
            _ => false,
        };
        if !keep {
            if let Some(mut old) = s.current.take() {
                let far = now + FOREVER;
                for direction in [Direction::Up, Direction::Down] {
                    let i = index(direction);
                    while let Some(released) = old.paths[i].poll(direction, far) {
                        let seq = s.next_seq;
                        s.next_seq += 1;
                        s.leftovers[i].push(Reverse(Leftover {
                            at: released.release_at,
                            seq,
                            datagram: released.payload,
                        }));
                    }
                }
                // A replaced setting of the same scope starts its totals
                // afresh (the admin API resets them): what the old one did
                // since the last report is not added to the new one's.
                if resolved.as_ref().map(|r| &r.scope) != Some(&old.scope) {
                    old.report(&self.lab);
                }
            }
            if let Some(resolved) = resolved {
                let salt = salt(s.username.as_deref());
                s.current = Some(Current::new(&resolved, salt, now));
                s.last_report = now;
            }
        }
        self.update_clean(s);
    }

    fn update_clean(&self, s: &State) {
        let clean = s.current.is_none() && s.leftovers.iter().all(BinaryHeap::is_empty);
        let word = match (clean, s.resolved_at) {
            (true, Some(version)) => version,
            _ => CHECK,
        };
        self.clean_at.store(word, Ordering::Relaxed);
    }
}

/// FNV-1a of the username: a stable salt (std's hasher is randomly keyed).
fn salt(username: Option<&str>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for b in username.unwrap_or_default().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use rtcrelay_netlab::{LinkConfig, Setting};

    use super::*;

    fn link(toml: &str) -> Setting {
        Setting {
            link: Some(LinkConfig::from_toml_str(toml).unwrap()),
            seed: Some(7),
            ..Setting::default()
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:9".parse().unwrap()
    }

    fn user(name: &str) -> Scope {
        Scope::TurnUser(name.into())
    }

    #[test]
    fn rest_user_ids() {
        assert_eq!(rest_user_id("1700000000:alice"), Some("alice"));
        assert_eq!(rest_user_id("1700000000:a:b"), Some("a:b"));
        assert_eq!(rest_user_id("alice:1700000000"), Some("alice"));
        assert_eq!(rest_user_id("1700000000"), None);
        assert_eq!(rest_user_id("alice"), None);
        assert_eq!(rest_user_id("alice:bob"), None);
        assert_eq!(rest_user_id(":1700000000"), None);
        assert_eq!(rest_user_id("1700000000:"), None);
    }

    #[test]
    fn resolution_prefers_the_full_username_then_the_user_id_then_global() {
        let lab = Lab::default();
        let now = Instant::now();
        assert!(resolve_turn_user(&lab, Some("1700000000:p7")).is_none());
        lab.set(Scope::Global, Setting::profile("wifi"), now)
            .unwrap();
        let scope = |u| resolve_turn_user(&lab, u).map(|r| r.scope);
        assert_eq!(scope(Some("1700000000:p7")), Some(Scope::Global));
        assert_eq!(scope(None), Some(Scope::Global));
        lab.set(user("p7"), Setting::profile("3g"), now).unwrap();
        assert_eq!(scope(Some("1700000000:p7")), Some(user("p7")));
        assert_eq!(scope(Some("p7:1700000000")), Some(user("p7")));
        assert_eq!(scope(Some("1700000000:p8")), Some(Scope::Global));
        lab.set(user("1700000000:p7"), Setting::profile("4g"), now)
            .unwrap();
        assert_eq!(scope(Some("1700000000:p7")), Some(user("1700000000:p7")));
        // Peer and room scopes are the relay's.
        lab.clear_all();
        lab.set(Scope::Peer("p7".into()), Setting::profile("3g"), now)
            .unwrap();
        assert!(scope(Some("1700000000:p7")).is_none());
    }

    #[test]
    fn nothing_applies_is_the_fast_path_after_one_check() {
        let lab = Arc::new(Lab::default());
        let a = AllocationLab::new(Arc::clone(&lab), Some("alice".into()), None);
        assert!(!a.is_clean(), "unresolved at first");
        let now = Instant::now();
        assert_eq!(a.push(Direction::Up, now, b"x", peer()), Pushed::Bypass);
        assert!(a.is_clean() && !a.may_hold());
        // Another user's setting: checked once, still clean.
        lab.set(user("bob"), Setting::profile("3g"), now).unwrap();
        assert!(!a.is_clean());
        assert_eq!(a.next(Direction::Down, now), Next::Wait(None));
        assert!(a.is_clean());
    }

    #[test]
    fn delays_hold_datagrams_and_a_cleared_setting_still_delivers_them() {
        let lab = Arc::new(Lab::default());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        lab.set(
            user("alice"),
            link("[down]\ndelay = { latency = \"100ms\" }"),
            t0,
        )
        .unwrap();
        let a = AllocationLab::new(Arc::clone(&lab), Some("alice".into()), None);
        let pushed = a.push(Direction::Down, t0, b"one", peer());
        assert_eq!(
            pushed,
            Pushed::Taken {
                start_driver: true,
                wake_driver: false
            }
        );
        assert!(a.may_hold() && !a.is_clean());
        assert_eq!(a.next(Direction::Down, t0), Next::Wait(Some(t0 + ms(100))));
        assert_eq!(a.next(Direction::Up, t0), Next::Wait(None));
        // Up is a pass-through: due at once.
        assert!(matches!(
            a.push(Direction::Up, t0, b"up", peer()),
            Pushed::Taken {
                start_driver: false,
                ..
            }
        ));
        assert!(matches!(a.next(Direction::Up, t0), Next::Due(d) if d.data == b"up"));

        // A change elsewhere keeps the path and what it holds.
        lab.set(user("bob"), Setting::profile("3g"), t0).unwrap();
        a.push(Direction::Down, t0 + ms(10), b"two", peer());
        assert_eq!(
            a.next(Direction::Down, t0 + ms(50)),
            Next::Wait(Some(t0 + ms(100)))
        );

        // Cleared: held datagrams leave on time, new ones pass untouched.
        assert!(lab.clear(&user("alice")));
        assert_eq!(
            a.push(Direction::Down, t0 + ms(60), b"three", peer()),
            Pushed::Bypass
        );
        assert_eq!(
            a.next(Direction::Down, t0 + ms(60)),
            Next::Wait(Some(t0 + ms(100)))
        );
        let due = |at| match a.next(Direction::Down, at) {
            Next::Due(d) => d.data,
            other => panic!("{other:?}"),
        };
        assert_eq!(due(t0 + ms(100)), b"one");
        assert!(a.may_hold());
        assert_eq!(due(t0 + ms(110)), b"two");
        assert!(!a.may_hold() && a.is_clean(), "clean once drained");
        // Nothing applies and nothing is held: the driver stops.
        assert_eq!(a.driver_sleep(t0 + ms(120)), None);
    }

    #[test]
    fn counters_reach_the_lab_per_scope_on_report_and_on_finish() {
        let lab = Arc::new(Lab::default());
        let t0 = Instant::now();
        lab.set(
            user("1700000000:p1"),
            link("[up]\nloss = { model = \"random\", p = 1.0 }"),
            t0,
        )
        .unwrap();
        let a = AllocationLab::new(
            Arc::clone(&lab),
            None,
            Some(Box::new(|| Some("1700000000:p1".to_owned()))),
        );
        for _ in 0..5 {
            a.push(Direction::Up, t0, b"lost", peer());
        }
        assert!(lab.totals().is_empty());
        // The driver reports once an interval has passed.
        let next = a.driver_sleep(t0 + REPORT_INTERVAL).unwrap();
        assert!(next > t0 + REPORT_INTERVAL);
        let totals = lab.totals();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].0, user("1700000000:p1"));
        assert_eq!(totals[0].1.up.dropped_loss, 5);
        a.push(Direction::Up, t0, b"lost", peer());
        a.finish();
        assert_eq!(lab.totals()[0].1.up.dropped_loss, 6);
        assert_eq!(a.driver_sleep(t0), None, "finished");
    }

    #[test]
    fn a_replaced_setting_reports_to_the_scope_it_leaves_only() {
        let lab = Arc::new(Lab::default());
        let t0 = Instant::now();
        let lose_all = || link("[up]\nloss = { model = \"random\", p = 1.0 }");
        lab.set(Scope::Global, lose_all(), t0).unwrap();
        let a = AllocationLab::new(Arc::clone(&lab), Some("u".into()), None);
        a.push(Direction::Up, t0, b"x", peer());
        // A more specific scope takes over: global gets what it injected.
        lab.set(user("u"), lose_all(), t0).unwrap();
        a.push(Direction::Up, t0, b"x", peer());
        let up = |scope: &Scope| {
            lab.totals()
                .into_iter()
                .find(|(s, _)| s == scope)
                .map_or(0, |(_, t)| t.up.dropped_loss)
        };
        assert_eq!(up(&Scope::Global), 1);
        assert_eq!(up(&user("u")), 0, "not reported yet");
        // Replaced in place (the admin API resets its totals): the old
        // setting's count does not leak into the new one's.
        lab.set(user("u"), lose_all(), t0).unwrap();
        lab.reset_totals(&user("u"));
        a.push(Direction::Up, t0, b"x", peer());
        a.finish();
        assert_eq!(up(&user("u")), 1);
        assert_eq!(up(&Scope::Global), 1);
    }

    #[test]
    fn the_driver_is_woken_only_for_an_earlier_up_release() {
        let lab = Arc::new(Lab::default());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        lab.set(
            Scope::Global,
            link("[up]\ndelay = { latency = \"50ms\" }"),
            t0,
        )
        .unwrap();
        let a = AllocationLab::new(Arc::clone(&lab), Some("u".into()), None);
        assert!(matches!(
            a.push(Direction::Up, t0, b"a", peer()),
            Pushed::Taken {
                start_driver: true,
                ..
            }
        ));
        assert_eq!(a.driver_sleep(t0), Some(t0 + ms(50)));
        // Released later than the driver wakes: no wake-up needed.
        assert_eq!(
            a.push(Direction::Up, t0 + ms(1), b"b", peer()),
            Pushed::Taken {
                start_driver: false,
                wake_driver: false
            }
        );
        // The driver sleeps until the report; a release before it wakes it.
        assert!(matches!(a.next(Direction::Up, t0 + ms(60)), Next::Due(_)));
        assert!(matches!(a.next(Direction::Up, t0 + ms(60)), Next::Due(_)));
        assert_eq!(a.driver_sleep(t0 + ms(60)), Some(t0 + REPORT_INTERVAL));
        assert_eq!(
            a.push(Direction::Up, t0 + ms(70), b"c", peer()),
            Pushed::Taken {
                start_driver: false,
                wake_driver: true
            }
        );
    }
}
