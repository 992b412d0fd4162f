//! Connection and message limits: plain structs, driven by `now`.
//!
//! - [`ConnectionLimits`]: WebSocket connections per client IP and in
//!   total, checked before the upgrade; a [`ConnectionPermit`] gives its
//!   slot back when dropped.
//! - [`TokenBucket`]: messages per connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Open signaling WebSockets from one IP address.
    pub max_connections_per_ip: usize,
    /// Open signaling WebSockets in all.
    pub max_connections: usize,
    /// Messages per second one connection may send, on average...
    pub messages_per_sec: f64,
    /// ...and at once: a WebRTC offer comes with a burst of trickled
    /// candidates.
    pub message_burst: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_ip: 64,
            max_connections: 10_000,
            messages_per_sec: 50.0,
            message_burst: 100.0,
        }
    }
}

/// Which connection limit refused an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefused {
    PerIp,
    Total,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open connections, by client IP.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    per_ip: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimits {
    pub fn new(config: &LimitsConfig) -> ConnectionLimits {
        ConnectionLimits {
            per_ip: config.max_connections_per_ip,
            total: config.max_connections,
            counts: Arc::default(),
        }
    }

    /// A slot for a connection from `ip` (unknown for in-process servers
    /// without connection info: only the total applies).
    pub fn try_acquire(&self, ip: Option<IpAddr>) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut counts = self.lock();
        if counts.total >= self.total {
            return Err(ConnectionRefused::Total);
        }
        if let Some(ip) = ip {
            let n = counts.per_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip {
                return Err(ConnectionRefused::PerIp);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(ConnectionPermit {
            ip,
            counts: Arc::clone(&self.counts),
        })
    }

    /// IP addresses with at least one open connection.
    pub fn tracked_ips(&self) -> usize {
        self.lock().per_ip.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Each update is a couple of integer ops; poison cannot leave them
        // half done.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection's slot; released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    ip: Option<IpAddr>,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            // Forget an address without connections, so the map stays as
            // small as the set of connected clients.
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token; false when there is none (the caller drops the
    /// message).
    pub fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Lets something happen at most once per `every` (e.g. telling a client
/// it is rate limited, without answering a flood with a flood).
#[derive(Debug, Clone)]
pub struct AtMostEvery {
    every: Duration,
    last: Option<Instant>,
}

impl AtMostEvery {
    pub fn new(every: Duration) -> AtMostEvery {
        AtMostEvery { every, last: None }
    }

    pub fn ready(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn per_ip_and_total_limits_release_on_drop() {
        let limits = ConnectionLimits::new(&LimitsConfig {
            max_connections_per_ip: 2,
            max_connections: 3,
            ..Default::default()
        });
        let a1 = limits.try_acquire(ip(1)).unwrap();
        let _a2 = limits.try_acquire(ip(1)).unwrap();
        assert_eq!(
            limits.try_acquire(ip(1)).unwrap_err(),
            ConnectionRefused::PerIp
        );
        let _b1 = limits.try_acquire(ip(2)).unwrap();
        assert_eq!(
            limits.try_acquire(ip(3)).unwrap_err(),
            ConnectionRefused::Total
        );
        assert_eq!(
            limits.try_acquire(None).unwrap_err(),
            ConnectionRefused::Total
        );
        drop(a1);
        let _a3 = limits.try_acquire(ip(1)).unwrap();
        assert_eq!(limits.tracked_ips(), 2);
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let limits = ConnectionLimits::new(&LimitsConfig::default());
        let permits: Vec<_> = (0..50)
            .map(|i| limits.try_acquire(ip(i)).unwrap())
            .collect();
        assert_eq!(limits.tracked_ips(), 50);
        drop(permits);
        assert_eq!(limits.tracked_ips(), 0);
        let _none = limits.try_acquire(None).unwrap();
        assert_eq!(limits.tracked_ips(), 0);
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50.0, 100.0, t0);
        let burst = (0..1000).take_while(|_| bucket.take(t0)).count();
        assert_eq!(burst, 100);
        // One second later: 50 more, not 100.
        let t1 = t0 + Duration::from_secs(1);
        let refilled = (0..1000).take_while(|_| bucket.take(t1)).count();
        assert_eq!(refilled, 50);
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(3600);
        let capped = (0..1000).take_while(|_| bucket.take(t2)).count();
        assert_eq!(capped, 100);
        // A steady 50/s is never refused.
        let mut t = t2 + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(50.0, 100.0, t);
        for _ in 0..100 {
            bucket.take(t);
        }
        for _ in 0..500 {
            t += Duration::from_millis(20);
            assert!(bucket.take(t));
        }
    }

    #[test]
    fn at_most_every() {
        let t0 = Instant::now();
        let mut gate = AtMostEvery::new(Duration::from_secs(1));
        assert!(gate.ready(t0));
        assert!(!gate.ready(t0 + Duration::from_millis(999)));
        assert!(gate.ready(t0 + Duration::from_secs(1)));
        assert!(!gate.ready(t0 + Duration::from_millis(1500)));
    }
}
