//! Rate limits of the TURN server, sans-IO (driven by `now`).
//!
//! - [`TokenBucket`]: the one bucket every limit here is made of (the
//!   per-allocation bandwidth cap, the unauthenticated-request budgets).
//! - [`UnauthenticatedLimiter`]: bounds how fast the `turn` crate's nonce
//!   map can grow.
//!
//! # Why the nonce map needs a limit
//!
//! The `turn` crate (0.17.2) answers every Allocate, Refresh,
//! CreatePermission or ChannelBind request that does not carry a nonce it
//! issued (no MESSAGE-INTEGRITY at all, or an unknown or stale NONCE) with
//! 401/438 and a fresh nonce, and keeps every nonce it issued for an hour. A
//! stream of unauthenticated requests therefore grows its memory by one
//! entry each, and nothing in the crate bounds it.
//!
//! So a request goes to the crate only if it carries a nonce recently issued
//! to its source IP (a client finishing its handshake, or refreshing), or
//! if its source IP's budget *and* the server's total budget both have a
//! token left. Everything else is dropped and counted, as a lost datagram
//! (clients retransmit). The nonce map then grows at most at the total rate
//! (default 100/s, so at most 360,000 live nonces, about 40 MB, however
//! many sources flood it), and one flooding address spends at most its own
//! budget (default 10/s), not everyone's. Legitimate clients are unaffected:
//! each ICE server costs a browser one unauthenticated request per
//! allocation.
//!
//! The table of sources is bounded ([`MAX_SOURCES`]); when it is full,
//! sources whose budget is back to full (idle) are forgotten, and a new
//! source that still finds no room shares the total budget only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::policy::canonical_ip;

/// Sources remembered at once by [`UnauthenticatedLimiter`].
pub const MAX_SOURCES: usize = 16_384;
/// Nonces remembered per source: a client on the latest, plus a few
/// clients behind the same NAT between their 401 and their signed retry.
const NONCES_PER_SOURCE: usize = 8;
/// A budget's burst, in seconds of its rate.
const BURST_SECONDS: f64 = 10.0;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Default, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub fn full(burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            last: Some(now),
        }
    }

    /// Refills for the time since the last call, then takes `cost` tokens
    /// if there are that many. A bucket never used before starts full.
    pub fn admit(&mut self, cost: f64, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (refilling it).
    pub fn is_full(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= burst
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        self.tokens = match self.last {
            None => burst,
            Some(last) => {
                (self.tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(burst)
            }
        };
        self.last = Some(now);
    }
}

/// Unauthenticated-request budgets, requests per second; 0 = unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnauthenticatedRates {
    pub per_ip: u32,
    pub total: u32,
}

#[derive(Debug)]
struct Source {
    bucket: TokenBucket,
    /// Nonces the crate issued to this source lately, newest last.
    nonces: Vec<String>,
}

/// What [`UnauthenticatedLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Carries a nonce recently issued to its source: free.
    KnownNonce,
    /// Spent a token of its source's budget and of the total budget.
    Budgeted,
    /// Over its source's budget.
    OverSourceBudget,
    /// Over the server's total budget.
    OverTotalBudget,
}

impl Admission {
    pub fn is_admitted(self) -> bool {
        matches!(self, Admission::KnownNonce | Admission::Budgeted)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct UnauthenticatedLimiter {
    rates: UnauthenticatedRates,
    total: TokenBucket,
    sources: HashMap<IpAddr, Source>,
}

impl UnauthenticatedLimiter {
    pub fn new(rates: UnauthenticatedRates) -> Self {
        UnauthenticatedLimiter {
            rates,
            total: TokenBucket::default(),
            sources: HashMap::new(),
        }
    }

    /// New rates (a reload); budgets keep their tokens.
    pub fn set_rates(&mut self, rates: UnauthenticatedRates) {
        self.rates = rates;
    }

    /// Sources remembered now (bounded by [`MAX_SOURCES`]).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Whether a request that authenticates (Allocate, Refresh,
    /// CreatePermission, ChannelBind) from `src`, carrying `nonce` if any,
    /// may go to the crate.
    pub fn admit(&mut self, now: Instant, src: IpAddr, nonce: Option<&str>) -> Admission {
        let src = canonical_ip(src);
        if let (Some(nonce), Some(source)) = (nonce, self.sources.get(&src)) {
            if source.nonces.iter().any(|n| n == nonce) {
                return Admission::KnownNonce;
            }
        }
        let UnauthenticatedRates { per_ip, total } = self.rates;
        if per_ip > 0 {
            let (rate, burst) = rate_and_burst(per_ip);
            if let Some(source) = self.source_mut(src, now) {
                if !source.bucket.admit(1.0, rate, burst, now) {
                    return Admission::OverSourceBudget;
                }
            }
        }
        if total > 0 {
            let (rate, burst) = rate_and_burst(total);
            if !self.total.admit(1.0, rate, burst, now) {
                return Admission::OverTotalBudget;
            }
        }
        Admission::Budgeted
    }

    /// The crate answered `dst` with `nonce` (a 401 or 438): its retry
    /// carrying that nonce is free.
    pub fn issued(&mut self, now: Instant, dst: IpAddr, nonce: &str) {
        let dst = canonical_ip(dst);
        if let Some(source) = self.source_mut(dst, now) {
            if source.nonces.iter().any(|n| n == nonce) {
                return;
            }
            if source.nonces.len() >= NONCES_PER_SOURCE {
                source.nonces.remove(0);
            }
            source.nonces.push(nonce.to_owned());
        }
    }

    /// `src`'s entry, made if there is room (forgetting idle sources when
    /// the table is full).
    fn source_mut(&mut self, src: IpAddr, now: Instant) -> Option<&mut Source> {
        if !self.sources.contains_key(&src) && self.sources.len() >= MAX_SOURCES {
            let (rate, burst) = rate_and_burst(self.rates.per_ip.max(1));
            self.sources
                .retain(|_, s| !s.bucket.is_full(rate, burst, now));
            if self.sources.len() >= MAX_SOURCES {
                return None;
            }
        }
        let burst = rate_and_burst(self.rates.per_ip.max(1)).1;
        Some(self.sources.entry(src).or_insert_with(|| Source {
            bucket: TokenBucket::full(burst, now),
            nonces: Vec::new(),
        }))
    }
}

fn rate_and_burst(rate: u32) -> (f64, f64) {
    let rate = f64::from(rate);
    (rate, rate * BURST_SECONDS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn limiter(per_ip: u32, total: u32) -> UnauthenticatedLimiter {
        UnauthenticatedLimiter::new(UnauthenticatedRates { per_ip, total })
    }

    #[test]
    fn bucket_starts_full_refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::default();
        assert!((0..5).all(|_| b.admit(1.0, 1.0, 5.0, t0)));
        assert!(!b.admit(1.0, 1.0, 5.0, t0));
        assert!(b.admit(1.0, 1.0, 5.0, t0 + Duration::from_secs(1)));
        assert!(!b.admit(1.0, 1.0, 5.0, t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(1.0, 5.0, later));
        assert_eq!((0..10).filter(|_| b.admit(1.0, 1.0, 5.0, later)).count(), 5);
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = limiter(10, 0);
        let admitted = (0..1000)
            .filter(|_| l.admit(t0, A, None).is_admitted())
            .count();
        assert_eq!(admitted, 100, "burst = 10 s of 10/s");
        assert_eq!(l.admit(t0, A, None), Admission::OverSourceBudget);
        // Ten seconds of a steady flood: 10 per second.
        let mut admitted = 0;
        for ms in (0..10_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms + 10);
            admitted += usize::from(l.admit(now, A, None).is_admitted());
        }
        assert!((99..=101).contains(&admitted), "{admitted}");
        // Another source is not affected.
        assert_eq!(l.admit(t0, B, None), Admission::Budgeted);
    }

    #[test]
    fn the_total_budget_caps_all_sources_together() {
        let t0 = Instant::now();
        let mut l = limiter(10, 100);
        let mut admitted = 0;
        for i in 0..5000u32 {
            let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            admitted += usize::from(l.admit(t0, src, None).is_admitted());
        }
        assert_eq!(admitted, 1000, "total burst = 10 s of 100/s");
        assert_eq!(l.admit(t0, A, None), Admission::OverTotalBudget);
    }

    #[test]
    fn a_nonce_issued_to_the_source_is_free_and_only_there() {
        let t0 = Instant::now();
        let mut l = limiter(1, 0);
        while l.admit(t0, A, None).is_admitted() {}
        l.issued(t0, A, "n1");
        assert_eq!(l.admit(t0, A, Some("n1")), Admission::KnownNonce);
        assert_eq!(l.admit(t0, A, Some("forged")), Admission::OverSourceBudget);
        // The same nonce from another address is not known there.
        while l.admit(t0, B, None).is_admitted() {}
        assert_eq!(l.admit(t0, B, Some("n1")), Admission::OverSourceBudget);
        // IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(l.admit(t0, mapped, Some("n1")), Admission::KnownNonce);
    }

    #[test]
    fn nonces_per_source_are_bounded_newest_kept() {
        let t0 = Instant::now();
        let mut l = limiter(1, 0);
        for i in 0..100 {
            l.issued(t0, A, &format!("n{i}"));
        }
        while l.admit(t0, A, None).is_admitted() {}
        assert_eq!(l.admit(t0, A, Some("n99")), Admission::KnownNonce);
        assert_eq!(l.admit(t0, A, Some("n0")), Admission::OverSourceBudget);
        assert_eq!(l.sources[&A].nonces.len(), NONCES_PER_SOURCE);
    }

    #[test]
    fn the_source_table_is_bounded_and_forgets_idle_sources() {
        let t0 = Instant::now();
        let mut l = limiter(10, 0);
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            assert!(l.admit(t0, src, None).is_admitted());
        }
        assert_eq!(l.source_count(), MAX_SOURCES);
        // Once their budgets are full again, new sources find room.
        let later = t0 + Duration::from_secs(60);
        assert!(l.admit(later, A, None).is_admitted());
        assert!(l.source_count() <= 1 + 1, "idle sources forgotten");
    }

    #[test]
    fn zero_rates_mean_unlimited() {
        let t0 = Instant::now();
        let mut l = limiter(0, 0);
        assert!((0..10_000).all(|_| l.admit(t0, A, None).is_admitted()));
    }
}
