//! One direction of an impaired path: the sans-IO state machine.
//!
//! ```text
//! push(now, packet) ─► blackout? ─► lost? ─► duplicate? ─► corrupt? ─┐
//!                       (drop)      (drop)   (clone)      (flip bit) │
//!   ┌────────────────────────────────────────────────────────────────┘
//!   └─► rate: FIFO bottleneck queue (tail drop) ─► delay, or reorder (no delay)
//!       ─► held until release_at ─► poll(now) hands it back
//! ```
//!
//! The order follows netem's `netem_enqueue` (duplicate before corrupt, so a
//! duplicate is an intact copy; loss takes the packet before anything else)
//! except for the rate: netem spaces packets after their delay, here they
//! queue at the bottleneck first and travel afterwards, which is how a slow
//! access link in front of a long path behaves and makes the queue limit mean
//! "packets waiting for the link". Each copy (original, duplicate) gets its
//! own bottleneck slot, reorder decision and delay.
//!
//! Everything a packet will experience is decided in [`push`]: the returned
//! [`Decision`] already holds its release time. [`poll`] then hands packets
//! back in release order and [`poll_timeout`] says when the next one is due.
//! Time comes only from the `now` arguments and never goes backwards (an
//! earlier `now` counts as the latest one seen).
//!
//! [`push`]: Impairment::push
//! [`poll`]: Impairment::poll
//! [`poll_timeout`]: Impairment::poll_timeout

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{ConfigError, DelayConfig, ImpairmentConfig, RateConfig};
use crate::dice::Dice;
use crate::distribution::{normal_cdf, normal_quantile, Distribution, TABLE_LIMIT};
use crate::loss::LossState;
use crate::payload::Payload;

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The packet is gone.
    Dropped(DropCause),
    /// The packet (and maybe a duplicate) will be released by `poll`.
    Accepted(Accepted),
}

impl Decision {
    /// Whether the original packet will be delivered.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Decision::Accepted(_))
    }
}

/// Why a packet was dropped; each cause has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// The loss model (random or Gilbert-Elliott).
    Loss,
    /// A blackout window or `set_blackout(true)`.
    Blackout,
    /// Tail drop: the bottleneck queue or `max_held_packets` was full.
    Queue,
}

/// The fate of an accepted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The original copy.
    pub original: Scheduled,
    /// The duplicate, if one was made and fit in the queue.
    pub duplicate: Option<Scheduled>,
    /// Whether a bit of the original was flipped (the duplicate is intact).
    pub corrupted: bool,
}

/// When one copy of a packet comes out, and whether it skipped the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// When `poll` will hand it back.
    pub release_at: Instant,
    /// Sent without delay by the reorder rule, overtaking earlier packets.
    pub reordered: bool,
}

/// A packet handed back by [`Impairment::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released<P> {
    /// The (possibly corrupted) packet.
    pub payload: P,
    /// When it was pushed.
    pub pushed_at: Instant,
    /// When it was due; `poll` may be called later than this.
    pub release_at: Instant,
    /// Whether this is the extra copy of a duplicated packet.
    pub duplicate: bool,
}

/// Running totals of one direction, for `/metrics` and per-peer stats: what
/// the lab injected, as opposed to what the real network did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Packets pushed.
    pub pushed: u64,
    /// Pushed packets accepted for delivery (duplicates not included).
    pub passed: u64,
    /// Dropped by the loss model.
    pub dropped_loss: u64,
    /// Dropped during a blackout.
    pub dropped_blackout: u64,
    /// Dropped because a queue was full.
    pub dropped_queue: u64,
    /// Extra copies accepted for delivery.
    pub duplicated: u64,
    /// Copies (original or duplicate) that skipped the delay by the reorder
    /// rule.
    pub reordered: u64,
    /// Packets with a bit flipped.
    pub corrupted: u64,
    /// Copies handed back by `poll`.
    pub released: u64,
    /// Sum over accepted copies of `release_at - pushed_at` (queueing plus
    /// delay): divide by `passed + duplicated` for the mean.
    pub added_delay: Duration,
}

impl Counters {
    /// All drops, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_blackout + self.dropped_queue
    }
}

/// One direction's impairment model, generic over the packet type.
///
/// ```
/// use std::time::{Duration, Instant};
/// use rtcrelay_netlab::{Impairment, ImpairmentConfig};
///
/// let config = ImpairmentConfig::from_toml_str(r#"
///     delay = { latency = "50ms", jitter = "10ms", distribution = "normal" }
///     loss = { model = "random", p = 0.01 }
/// "#).unwrap();
/// let start = Instant::now();
/// let mut up = Impairment::new(config, 42, start).unwrap();
/// up.push(start, vec![1u8, 2, 3]);
/// // A driver sleeps until poll_timeout(), then drains poll(now).
/// while let Some(due) = up.poll_timeout() {
///     while let Some(released) = up.poll(due) {
///         assert_eq!(released.payload, vec![1, 2, 3]);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Impairment<P> {
    config: ImpairmentConfig,
    dice: Dice,
    started_at: Instant,
    clock: Instant,
    blackout: bool,
    loss: LossState,
    jitter: JitterState,
    /// netem's reorder counter: packets delayed since the last reorder.
    delayed_in_a_row: u32,
    bottleneck: Bottleneck,
    /// Release time of the last delayed (not reordered) copy, for
    /// `preserve_order`.
    last_delayed_release: Option<Instant>,
    held: BinaryHeap<Reverse<Held<P>>>,
    /// The pass-through fast lane: packets due at their push time, FIFO.
    /// Used only while the config is a pass-through and `held` is empty, so
    /// everything in it is due before anything in `held`.
    ready: VecDeque<(Instant, P)>,
    passthrough: bool,
    next_seq: u64,
    counters: Counters,
}

impl<P: Payload> Impairment<P> {
    /// A model started at `now` (blackout windows count from here), with
    /// decisions drawn from `seed`, stream 0.
    pub fn new(config: ImpairmentConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        Self::with_stream(config, seed, 0, now)
    }

    /// As [`new`](Self::new), drawing from stream `stream` of `seed`: ChaCha
    /// gives 2^64 independent streams per seed, so one seed can serve every
    /// direction of every peer (a [`Link`](crate::Link) uses 1 and 2).
    pub fn with_stream(
        config: ImpairmentConfig,
        seed: u64,
        stream: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            loss: LossState::new(&config.loss),
            passthrough: config.is_passthrough(),
            jitter: JitterState::default(),
            config,
            dice: Dice::new(seed, stream),
            started_at: now,
            clock: now,
            blackout: false,
            delayed_in_a_row: 0,
            bottleneck: Bottleneck::default(),
            last_delayed_release: None,
            held: BinaryHeap::new(),
            ready: VecDeque::new(),
            next_seq: 0,
            counters: Counters::default(),
        })
    }

    /// Take a packet at `now` and decide its fate.
    pub fn push(&mut self, now: Instant, packet: P) -> Decision {
        let now = self.advance(now);
        self.counters.pushed += 1;

        if self.passthrough && !self.blackout && self.held.is_empty() {
            return self.pass_through(now, packet);
        }
        if self.is_blacked_out(now) {
            self.counters.dropped_blackout += 1;
            return Decision::Dropped(DropCause::Blackout);
        }
        if self.loss.lose(&mut self.dice) {
            self.counters.dropped_loss += 1;
            return Decision::Dropped(DropCause::Loss);
        }

        let copy = self
            .dice
            .chance(self.config.duplicate)
            .then(|| packet.clone());
        let mut packet = packet;
        let corrupted = self.dice.chance(self.config.corrupt) && self.corrupt(&mut packet);

        let Some(original) = self.schedule(now, packet, false) else {
            self.counters.dropped_queue += 1;
            return Decision::Dropped(DropCause::Queue);
        };
        self.counters.passed += 1;
        if corrupted {
            self.counters.corrupted += 1;
        }
        let duplicate = copy.and_then(|copy| self.schedule(now, copy, true));
        if duplicate.is_some() {
            self.counters.duplicated += 1;
        }
        Decision::Accepted(Accepted {
            original,
            duplicate,
            corrupted,
        })
    }

    /// The next packet due at `now`, in release order (ties in push order).
    pub fn poll(&mut self, now: Instant) -> Option<Released<P>> {
        let now = self.advance(now);
        if let Some((at, payload)) = self.ready.pop_front() {
            self.counters.released += 1;
            return Some(Released {
                payload,
                pushed_at: at,
                release_at: at,
                duplicate: false,
            });
        }
        if self.held.peek()?.0.release_at > now {
            return None;
        }
        let Reverse(held) = self.held.pop()?;
        self.counters.released += 1;
        Some(Released {
            payload: held.payload,
            pushed_at: held.pushed_at,
            release_at: held.release_at,
            duplicate: held.duplicate,
        })
    }

    /// When the next held packet is due, if any: the driver's next wake-up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.ready.front() {
            Some((at, _)) => Some(*at),
            None => self.held.peek().map(|held| held.0.release_at),
        }
    }

    /// Switch to another configuration from now on. Packets already held
    /// keep their release times, the bottleneck stays busy with what it
    /// holds, and order preservation still holds against earlier packets.
    /// The loss and delay-correlation state restart if their model changed.
    pub fn set_config(&mut self, config: ImpairmentConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if config.loss != self.config.loss {
            self.loss = LossState::new(&config.loss);
        }
        if config.delay.distribution != self.config.delay.distribution
            || config.delay.correlation != self.config.delay.correlation
        {
            self.jitter = JitterState::default();
        }
        self.passthrough = config.is_passthrough();
        self.config = config;
        Ok(())
    }

    /// Drop everything pushed from now on (`true`) until switched off: a
    /// manual link-down, on top of the configured windows. Held packets are
    /// still delivered.
    pub fn set_blackout(&mut self, on: bool) {
        self.blackout = on;
    }

    /// Whether a packet pushed at `now` would be dropped as a blackout.
    pub fn is_blacked_out(&self, now: Instant) -> bool {
        if self.blackout {
            return true;
        }
        if self.config.blackouts.is_empty() {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.started_at);
        self.config.blackouts.iter().any(|w| w.contains(elapsed))
    }

    /// The configuration in force.
    pub fn config(&self) -> &ImpairmentConfig {
        &self.config
    }

    /// Totals since the model was created.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Packets held (queued at the bottleneck or in flight).
    pub fn held_len(&self) -> usize {
        self.ready.len() + self.held.len()
    }

    /// The instant the model was created at (blackout windows count from
    /// here).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.clock {
            self.clock = now;
        }
        self.clock
    }

    /// The disabled case, kept cheap so the lab can stay compiled in: no
    /// draws, no heap.
    fn pass_through(&mut self, now: Instant, packet: P) -> Decision {
        if self.ready.len() >= self.config.max_held_packets as usize {
            self.counters.dropped_queue += 1;
            return Decision::Dropped(DropCause::Queue);
        }
        self.ready.push_back((now, packet));
        self.counters.passed += 1;
        Decision::Accepted(Accepted {
            original: Scheduled {
                release_at: now,
                reordered: false,
            },
            duplicate: None,
            corrupted: false,
        })
    }

    fn corrupt(&mut self, packet: &mut P) -> bool {
        let bits = packet.byte_len() as u64 * 8;
        if bits == 0 {
            return false;
        }
        let bit = self.dice.below(bits);
        packet.flip_bit(usize::try_from(bit).unwrap_or(usize::MAX));
        true
    }

    /// Pass one copy through the bottleneck and the delay; `None` if a queue
    /// was full.
    fn schedule(&mut self, now: Instant, payload: P, duplicate: bool) -> Option<Scheduled> {
        if self.held_len() >= self.config.max_held_packets as usize {
            return None;
        }
        let departure = match &self.config.rate {
            Some(rate) => self.bottleneck.admit(now, payload.byte_len(), rate)?,
            None => now,
        };
        let reordered = self.reorder_this_one();
        let release_at = if reordered {
            self.counters.reordered += 1;
            departure
        } else {
            let delay = self.jitter.sample(&self.config.delay, &mut self.dice);
            let mut at = departure.checked_add(delay).unwrap_or(departure);
            if self.config.delay.preserve_order {
                if let Some(last) = self.last_delayed_release {
                    at = at.max(last);
                }
                self.last_delayed_release = Some(at);
            }
            at
        };
        if release_at > now {
            self.counters.added_delay = self.counters.added_delay.saturating_add(release_at - now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // Release time since the start in ns, then push order: one integer
        // compare per heap step. u64 ns covers 584 years.
        let since_start = release_at.saturating_duration_since(self.started_at);
        let nanos = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX);
        self.held.push(Reverse(Held {
            order: (u128::from(nanos) << 64) | u128::from(seq),
            release_at,
            pushed_at: now,
            duplicate,
            payload,
        }));
        Some(Scheduled {
            release_at,
            reordered,
        })
    }

    /// netem's rule: after `gap - 1` delayed packets, each packet is sent at
    /// once with probability `p`.
    fn reorder_this_one(&mut self) -> bool {
        let reorder = self.config.reorder;
        if reorder.p <= 0.0 {
            return false;
        }
        if self.delayed_in_a_row.saturating_add(1) < reorder.gap || !self.dice.chance(reorder.p) {
            self.delayed_in_a_row = self.delayed_in_a_row.saturating_add(1);
            return false;
        }
        self.delayed_in_a_row = 0;
        true
    }
}

/// The rate-limited link: when it is free again and what it still has to
/// send.
#[derive(Debug, Default)]
struct Bottleneck {
    busy_until: Option<Instant>,
    /// Departure time and wire bytes of each packet not yet fully sent.
    queue: VecDeque<(Instant, u64)>,
    queued_bytes: u64,
}

impl Bottleneck {
    /// The departure time of a packet of `len` bytes arriving at `now`, or
    /// `None` if the queue is full (tail drop).
    fn admit(&mut self, now: Instant, len: usize, rate: &RateConfig) -> Option<Instant> {
        while let Some(&(departure, bytes)) = self.queue.front() {
            if departure > now {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= bytes;
        }
        let wire_bytes = len as u64 + u64::from(rate.overhead_bytes);
        let full_packets = self.queue.len() >= rate.queue_limit_packets as usize;
        let full_bytes = rate
            .queue_limit_bytes
            .is_some_and(|limit| self.queued_bytes.saturating_add(wire_bytes) > limit);
        if full_packets || full_bytes {
            return None;
        }
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        let departure = start.checked_add(rate.transmission_time(len))?;
        self.busy_until = Some(departure);
        self.queue.push_back((departure, wire_bytes));
        self.queued_bytes += wire_bytes;
        Some(departure)
    }
}

/// The previous delay's position, for correlated delays.
#[derive(Debug, Default, Clone)]
struct JitterState {
    /// The last standard-normal value of the AR(1) process.
    last_z: Option<f64>,
}

impl JitterState {
    fn sample(&mut self, delay: &DelayConfig, dice: &mut Dice) -> Duration {
        if delay.jitter.is_zero() {
            return delay.latency;
        }
        let t = if delay.correlation == 0.0 {
            delay.distribution.quantile(dice.open_unit())
        } else {
            let rho = delay.correlation;
            let fresh = normal_quantile(dice.open_unit());
            let z = match self.last_z {
                None => fresh,
                Some(last) => rho * last + (1.0 - rho * rho).sqrt() * fresh,
            };
            self.last_z = Some(z);
            match delay.distribution {
                Distribution::Normal => z.clamp(-TABLE_LIMIT, TABLE_LIMIT),
                other => other.quantile(normal_cdf(z).clamp(f64::EPSILON, 1.0 - f64::EPSILON)),
            }
        };
        // Whole nanoseconds as u64 (validation caps both at 60 s): the u128
        // of `as_nanos` would cost a software conversion per packet.
        let latency =
            delay.latency.as_secs() as f64 * 1e9 + f64::from(delay.latency.subsec_nanos());
        let jitter = delay.jitter.as_secs() as f64 * 1e9 + f64::from(delay.jitter.subsec_nanos());
        let nanos = latency + jitter * t;
        // Both terms are bounded by validation (<= 60 s, |t| < 4): no overflow.
        Duration::from_nanos(nanos.max(0.0) as u64)
    }
}

#[derive(Debug)]
struct Held<P> {
    /// Release time (ns since the model's start) in the high half, push
    /// sequence in the low half.
    order: u128,
    release_at: Instant,
    pushed_at: Instant,
    duplicate: bool,
    payload: P,
}

impl<P> PartialEq for Held<P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<P> Eq for Held<P> {}

impl<P> PartialOrd for Held<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for Held<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order.cmp(&other.order)
    }
}
