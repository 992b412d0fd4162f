//! Is the server still there? Every DataChannel message from the server
//! (heartbeats included) stamps [`Heard`]; a watchdog task reports
//! [`ClientEvent::Disconnected`](crate::ClientEvent::Disconnected) once
//! nothing has come for `dead_after`. The server writes a heartbeat on
//! `control` whenever it has sent this client nothing for its
//! `relay.heartbeat_interval` (1 s by default), so a healthy server is
//! never silent that long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the last message from the server arrived, shared by the channel
/// tasks (writers) and the watchdog (reader).
#[derive(Debug)]
pub(crate) struct Heard {
    base: Instant,
    /// Microseconds after `base`.
    last_us: AtomicU64,
}

impl Heard {
    pub fn new(now: Instant) -> Heard {
        Heard {
            base: now,
            last_us: AtomicU64::new(0),
        }
    }

    pub fn stamp(&self, now: Instant) {
        let us =
            u64::try_from(now.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX);
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.base + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }
}

/// How long the server has been silent at `now`, once that is `dead_after`
/// or more; None while it is not dead yet.
pub(crate) fn silent_for(last: Instant, now: Instant, dead_after: Duration) -> Option<Duration> {
    let silent = now.saturating_duration_since(last);
    (silent >= dead_after).then_some(silent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_dead_only_after_dead_after_of_silence() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let heard = Heard::new(t0);
        assert_eq!(heard.last(), t0);
        heard.stamp(ms(1000));
        // A late stamp from another channel task does not move time back.
        heard.stamp(ms(400));
        assert_eq!(heard.last(), ms(1000));
        let dead_after = Duration::from_secs(5);
        assert_eq!(silent_for(heard.last(), ms(5999), dead_after), None);
        assert_eq!(
            silent_for(heard.last(), ms(6000), dead_after),
            Some(Duration::from_secs(5))
        );
        // A heartbeat a second later keeps it alive.
        heard.stamp(ms(2000));
        assert_eq!(silent_for(heard.last(), ms(6000), dead_after), None);
        // A clock read before the last stamp is not silence.
        assert_eq!(silent_for(heard.last(), ms(10), dead_after), None);
    }
}
