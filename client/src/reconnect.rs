//! Automatic reconnection, without I/O: when to try again, and how.
//!
//! The client's supervisor task feeds a [`Reconnector`] what happens (the
//! server's own `peer_away` on a signaling socket that is still open, the
//! socket closing, an attempt failing) and `now`; it answers with the next
//! [`Step`]: wait for the server to notice the loss too, try again after a
//! delay (with which [`Strategy`]), or give up because the grace period is
//! over.
//!
//! Rules:
//! - the server keeps the seat for the room's grace period (`welcome`'s
//!   `resume_grace_ms`, or the `grace_ms` of this client's own
//!   `peer_away`), counted from when it noticed the loss; the client
//!   counts from when it noticed, and restarts the count when the server's
//!   `peer_away` says when the server started;
//! - a new WebRTC session on the same signaling socket ([`Strategy::NewOffer`])
//!   only right after the server said, on that socket, that this client's
//!   session is gone; every other attempt opens a new socket and joins with
//!   the resume token ([`Strategy::Rejoin`]), which also works when the old
//!   socket is still open (the server closes it);
//! - when this client noticed first (silence, a failed peer connection)
//!   and its signaling socket is still open, it waits up to [`AWAY_WAIT`]
//!   for the server's `peer_away`, which the server sends once its own
//!   dead-peer detection fires;
//! - delays: exponential backoff with full jitter, a random delay in
//!   `[0, backoff]` where backoff starts at [`MIN_BACKOFF`] and doubles up
//!   to [`MAX_BACKOFF`], so that clients cut off together do not all come
//!   back in the same instant.

use std::time::{Duration, Instant};

/// First backoff ceiling; doubles after every attempt.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Largest backoff ceiling.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a client that noticed the loss first waits for the server's
/// `peer_away` on a signaling socket that is still open. The server's
/// dead-peer detection (`relay.dead_after`, 5 s) starts from the same
/// silence, so it fires at about the same time as the client's.
pub(crate) const AWAY_WAIT: Duration = Duration::from_secs(5);

/// What made the client consider its connection lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The server sent `peer_away` for this client on the signaling socket,
    /// which is still open.
    ServerAway { grace: Duration },
    /// The signaling socket closed (or failed) without this client asking.
    SignalingClosed,
    /// Nothing came from the server for `dead_after`, or the peer
    /// connection failed, while the signaling socket is still open.
    SessionDead,
}

/// How the next attempt reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// A new peer connection and `offer` on the signaling socket that is
    /// still open.
    NewOffer,
    /// Drop the signaling socket, open a new one and `join` with `resume`.
    Rejoin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep reading the open signaling socket until this instant (or until
    /// the server's `peer_away` or the socket's end), then ask again.
    WaitForServer(Instant),
    /// Attempt number `attempt` (from 1), after waiting `after`.
    Attempt {
        attempt: u32,
        strategy: Strategy,
        after: Duration,
    },
    /// The grace period is over: the seat is gone.
    GiveUp,
}

/// Backoff ceilings doubling from `min` to `max`, each delay drawn
/// uniformly from `[0, ceiling]` ("full jitter").
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    ceiling: Duration,
    max: Duration,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            ceiling: min.min(max),
            max,
            rng: SplitMix64(seed),
        }
    }

    /// The next delay; the ceiling doubles for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // `nanos + 1` values: the ceiling itself can be drawn.
        Duration::from_nanos(self.rng.below(nanos.saturating_add(1)))
    }
}

/// The reconnection of one lost connection, from the loss to the resumed
/// session or the end of the grace period.
#[derive(Debug, Clone)]
pub(crate) struct Reconnector {
    deadline: Instant,
    backoff: Backoff,
    attempts: u32,
    /// The server said on the open signaling socket that this client's
    /// session is gone, and no attempt has been made since.
    server_away: bool,
    /// Until then, wait for the server's `peer_away` rather than attempt.
    await_server_until: Option<Instant>,
}

impl Reconnector {
    /// A connection lost at `now` (for the reason `loss`) in a room whose
    /// grace period is `grace`; `seed` seeds the jitter.
    pub(crate) fn new(loss: Loss, now: Instant, grace: Duration, seed: u64) -> Reconnector {
        let mut r = Reconnector {
            deadline: now + grace,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF, seed),
            attempts: 0,
            server_away: false,
            await_server_until: None,
        };
        match loss {
            Loss::ServerAway { grace } => r.on_server_away(now, grace),
            Loss::SignalingClosed => {}
            Loss::SessionDead => r.await_server_until = Some(now + AWAY_WAIT),
        }
        r
    }

    /// The server sent this client's own `peer_away` (grace `grace`) on
    /// the signaling socket, which is open.
    pub(crate) fn on_server_away(&mut self, now: Instant, grace: Duration) {
        self.server_away = true;
        self.await_server_until = None;
        self.deadline = now + grace;
    }

    /// The signaling socket closed: the next attempt needs a new one.
    pub(crate) fn on_signaling_closed(&mut self) {
        self.server_away = false;
        self.await_server_until = None;
    }

    /// The last attempt failed (not for good).
    pub(crate) fn on_attempt_failed(&mut self) {
        // Whatever the server thinks of the socket now, a rejoin works.
        self.server_away = false;
    }

    /// Attempts made so far.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the seat is (or was) released, as far as this client knows.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What to do at `now`.
    pub(crate) fn next(&mut self, now: Instant) -> Step {
        if now >= self.deadline {
            return Step::GiveUp;
        }
        if let Some(until) = self.await_server_until {
            if now < until {
                return Step::WaitForServer(until.min(self.deadline));
            }
            self.await_server_until = None;
        }
        let strategy = if self.server_away {
            Strategy::NewOffer
        } else {
            Strategy::Rejoin
        };
        // The first attempt after the server's own word goes at once: the
        // server is known to be ready for it.
        let after = if self.attempts == 0 && self.server_away {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        let after = after.min(self.deadline.saturating_duration_since(now));
        self.attempts += 1;
        self.server_away = false;
        Step::Attempt {
            attempt: self.attempts,
            strategy,
            after,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, plenty
/// for spreading retry delays.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; the bias is at most
    /// n / 2^64, nothing for delays); 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A seed that differs between clients and runs.
pub(crate) fn fresh_seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut mix = SplitMix64(nanos ^ salt.rotate_left(32));
    mix.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_ceilings_double_to_the_cap_and_delays_stay_under_them() {
        let mut b = Backoff::new(MIN_BACKOFF, MAX_BACKOFF, 7);
        let ceilings = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];
        for (i, ceiling) in ceilings.iter().enumerate() {
            let d = b.next_delay();
            assert!(d <= *ceiling * MS, "attempt {i}: {d:?} > {ceiling} ms");
        }
        // The same seed gives the same schedule; another seed another one.
        let run = |seed| {
            let mut b = Backoff::new(MIN_BACKOFF, MAX_BACKOFF, seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn full_jitter_spreads_delays_over_the_whole_range() {
        // Many clients lost together: their first delays cover [0, 250 ms]
        // rather than bunching (each quarter of the range gets a share).
        let mut quarters = [0u32; 4];
        for seed in 0..2000 {
            let d = Backoff::new(MIN_BACKOFF, MAX_BACKOFF, seed).next_delay();
            assert!(d <= MIN_BACKOFF);
            let q = (d.as_nanos() * 4 / (MIN_BACKOFF.as_nanos() + 1)) as usize;
            quarters[q] += 1;
        }
        for (i, n) in quarters.iter().enumerate() {
            assert!((400..=600).contains(n), "quarter {i}: {n} of 2000");
        }
    }

    #[test]
    fn the_servers_own_peer_away_brings_a_new_offer_at_once() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut r = Reconnector::new(Loss::ServerAway { grace }, t0, grace, 1);
        assert_eq!(
            r.next(t0),
            Step::Attempt {
                attempt: 1,
                strategy: Strategy::NewOffer,
                after: Duration::ZERO
            }
        );
        r.on_attempt_failed();
        // Then rejoins on a new socket, after a jittered delay.
        match r.next(t0 + 3 * MS) {
            Step::Attempt {
                attempt: 2,
                strategy: Strategy::Rejoin,
                after,
            } => assert!(after <= MIN_BACKOFF),
            other => panic!("{other:?}"),
        }
        // A new peer_away on the (new) open socket: a new offer again.
        r.on_server_away(t0 + 10 * MS, grace);
        assert!(matches!(
            r.next(t0 + 10 * MS),
            Step::Attempt {
                attempt: 3,
                strategy: Strategy::NewOffer,
                ..
            }
        ));
    }

    #[test]
    fn a_client_that_noticed_first_waits_for_the_server_then_rejoins() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut r = Reconnector::new(Loss::SessionDead, t0, grace, 1);
        assert_eq!(r.next(t0), Step::WaitForServer(t0 + AWAY_WAIT));
        assert_eq!(
            r.next(t0 + AWAY_WAIT / 2),
            Step::WaitForServer(t0 + AWAY_WAIT)
        );
        // The server's word comes: a new offer, at once.
        let mut heard = r.clone();
        heard.on_server_away(t0 + 2 * AWAY_WAIT / 3, grace);
        assert_eq!(
            heard.next(t0 + 2 * AWAY_WAIT / 3),
            Step::Attempt {
                attempt: 1,
                strategy: Strategy::NewOffer,
                after: Duration::ZERO
            }
        );
        // The socket closes instead: rejoin without waiting longer.
        let mut closed = r.clone();
        closed.on_signaling_closed();
        assert!(matches!(
            closed.next(t0 + MS),
            Step::Attempt {
                attempt: 1,
                strategy: Strategy::Rejoin,
                ..
            }
        ));
        // Nothing at all: rejoin once the wait is over.
        assert!(matches!(
            r.next(t0 + AWAY_WAIT),
            Step::Attempt {
                attempt: 1,
                strategy: Strategy::Rejoin,
                ..
            }
        ));
    }

    #[test]
    fn attempts_stop_when_the_grace_period_ends() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let mut r = Reconnector::new(Loss::SignalingClosed, t0, grace, 3);
        let mut now = t0;
        let mut attempts = 0;
        loop {
            match r.next(now) {
                Step::Attempt {
                    attempt,
                    strategy,
                    after,
                } => {
                    attempts += 1;
                    assert_eq!(attempt, attempts);
                    assert_eq!(strategy, Strategy::Rejoin);
                    // No delay reaches past the deadline.
                    assert!(now + after <= t0 + grace);
                    // Each attempt itself takes 300 ms and fails.
                    now += after + 300 * MS;
                    r.on_attempt_failed();
                }
                Step::GiveUp => break,
                Step::WaitForServer(_) => panic!("the socket is closed"),
            }
        }
        assert!(now >= t0 + grace);
        assert!((2..=8).contains(&attempts), "{attempts} attempts");
        assert_eq!(r.attempts(), attempts);
        // The server's peer_away moves the deadline to its own count.
        let mut r = Reconnector::new(Loss::SessionDead, t0, grace, 3);
        r.on_server_away(t0 + Duration::from_secs(1), grace);
        assert_eq!(r.deadline(), t0 + Duration::from_secs(3));
        assert_ne!(r.next(t0 + Duration::from_millis(2500)), Step::GiveUp);
        assert_eq!(r.next(t0 + Duration::from_secs(3)), Step::GiveUp);
    }

    #[test]
    fn below_is_within_range() {
        let mut rng = SplitMix64(42);
        assert_eq!(rng.below(0), 0);
        for n in [1, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(rng.below(n) < n);
            }
        }
    }
}
