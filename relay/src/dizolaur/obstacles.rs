//! The track: obstacles from a seeded RNG, placed so that a perfect runner
//! can always survive.
//!
//! **The gap rule.** The generator keeps a *reference runner*: the run tick
//! from which a perfect player is on the ground with jump released
//! (`free_tick`). Each new obstacle gets a random kind and a Chrome-like
//! random gap (`120 px + width × speed / 2`, up to 1.5×), then is pushed
//! further along the track until the reference runner can handle it
//! starting no earlier than `free_tick`, using the very physics of the game
//! ([`jump_clears`], [`scroll_at`]): a cactus or a low bird by the earliest
//! held jump that clears it (then `free_tick` = landing + 1), a mid bird by
//! ducking on the ground under it, a high bird by staying on the ground
//! under it (then `free_tick` = the tick after the runner passed it). The
//! runner must not have reached the obstacle before `free_tick`. So a
//! strategy that survives exists for every track, at every speed; the
//! bots' policy ([`super::bot_input`]) finds it. Cactus groups too wide to
//! clear are narrowed.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::layout::*;
use super::physics::{jump_clears, runner_x_at, speed_at, Body, ObstacleBox};
use crate::authoritative::StateHasher;

/// An obstacle on the track, its entity id and box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Obstacle {
    pub id: u32,
    pub body: ObstacleBox,
}

/// Where the first obstacle may start (just off the right edge at the start).
const FIRST_X: i32 = 700 * UNITS_PER_PX;
/// The reference runner may jump during the countdown: free from here.
const FIRST_FREE_TICK: i64 = 60;
/// Birds appear once the scroll is this fast (7 px/tick).
const BIRD_MIN_SPEED: i32 = 7 * UNITS_PER_PX;
const MIN_GAP: i32 = 120 * UNITS_PER_PX;
/// How far an obstacle is pushed per try, and how many tries per shape.
const PUSH_STEP: i32 = 4 * UNITS_PER_PX;
const MAX_PUSHES: i32 = 200;

/// A number in `0..n`, from 32 random bits (multiply-shift: stable across
/// rand versions, unlike `random_range`).
pub fn roll(rng: &mut ChaCha8Rng, n: u32) -> u32 {
    ((u64::from(rng.next_u32()) * u64::from(n)) >> 32) as u32
}

/// Makes the obstacles of one match, in track order.
#[derive(Debug, Clone)]
pub struct ObstacleGenerator {
    rng: ChaCha8Rng,
    next_id: u32,
    /// World x where the last obstacle ends; None before the first.
    last_end: Option<i32>,
    /// The reference runner is on the ground, jump released, from this run
    /// tick.
    free_tick: i64,
    max_ticks: i64,
}

impl ObstacleGenerator {
    pub fn new(seed: u64, max_ticks: i64) -> ObstacleGenerator {
        ObstacleGenerator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_id: OBSTACLE_ID_BASE,
            last_end: None,
            free_tick: FIRST_FREE_TICK,
            max_ticks,
        }
    }

    /// World x up to which the track is generated.
    pub fn frontier(&self) -> i32 {
        self.last_end.unwrap_or(0)
    }

    pub fn hash_into(&self, h: &mut StateHasher) {
        h.bytes(&self.rng.get_seed())
            .u64(self.rng.get_stream())
            .bytes(&self.rng.get_word_pos().to_le_bytes())
            .u32(self.next_id)
            .i32(self.last_end.unwrap_or(i32::MIN))
            .u64(self.free_tick as u64)
            .u64(self.max_ticks as u64);
    }

    /// The next obstacle along the track.
    pub fn next_obstacle(&mut self) -> Obstacle {
        let speed = speed_at(self.free_tick.max(1));
        let (kind, count) = if speed >= BIRD_MIN_SPEED && roll(&mut self.rng, 100) < 25 {
            let kind = match roll(&mut self.rng, 3) {
                0 => KIND_BIRD_LOW,
                1 => KIND_BIRD_MID,
                _ => KIND_BIRD_HIGH,
            };
            (kind, 1)
        } else {
            let kind = if roll(&mut self.rng, 100) < 55 {
                KIND_CACTUS_SMALL
            } else {
                KIND_CACTUS_LARGE
            };
            (kind, 1 + roll(&mut self.rng, 3) as i32)
        };
        let gap_extra = roll(&mut self.rng, 1 << 16);
        // Narrower groups if the chosen one cannot be placed; a single small
        // cactus always can (far enough).
        for count in (1..=count).rev() {
            let shape = shape(kind, count);
            if let Some(obstacle) = self.place(shape, speed, gap_extra, MAX_PUSHES) {
                return obstacle;
            }
        }
        let shape = shape(KIND_CACTUS_SMALL, 1);
        self.place(shape, speed, gap_extra, i32::MAX / PUSH_STEP)
            .unwrap_or_else(|| self.commit(shape, self.frontier(), None))
    }

    fn place(
        &mut self,
        shape: ObstacleBox,
        speed: i32,
        gap_extra: u32,
        max_pushes: i32,
    ) -> Option<Obstacle> {
        let base = match self.last_end {
            None => FIRST_X,
            Some(end) => {
                let gap = MIN_GAP + shape.w / UNITS_PER_PX * speed / 2;
                let extra = ((i64::from(gap / 2) * i64::from(gap_extra)) >> 16) as i32;
                end.saturating_add(gap).saturating_add(extra)
            }
        };
        for push in 0..max_pushes {
            let x = base.saturating_add(push.saturating_mul(PUSH_STEP));
            let candidate = ObstacleBox { x, ..shape };
            if let Some(free) = self.plan(&candidate) {
                return Some(self.commit(shape, x, Some(free)));
            }
            if x == i32::MAX {
                break;
            }
        }
        None
    }

    fn commit(&mut self, shape: ObstacleBox, x: i32, free: Option<i64>) -> Obstacle {
        let body = ObstacleBox { x, ..shape };
        let obstacle = Obstacle {
            id: self.next_id,
            body,
        };
        self.next_id = self.next_id.saturating_add(1);
        self.last_end = Some(body.end());
        if let Some(free) = free {
            self.free_tick = free;
        }
        obstacle
    }

    /// How the reference runner, free from `self.free_tick`, gets past `o`:
    /// Some(the run tick it is free again), None if it cannot.
    fn plan(&self, o: &ObstacleBox) -> Option<i64> {
        let Some(reach) = self
            .first_tick(|t| runner_x_at(t, self.max_ticks).saturating_add(STAND_HITBOX_X1) > o.x)
        else {
            // The race ends before anyone gets there.
            return Some(self.free_tick);
        };
        if reach < self.free_tick {
            return None;
        }
        match o.kind {
            KIND_BIRD_MID | KIND_BIRD_HIGH => {
                let pass = self.first_tick(|t| {
                    runner_x_at(t, self.max_ticks).saturating_add(STAND_HITBOX_X0) >= o.end()
                });
                Some(pass.map_or(self.max_ticks + 1, |p| p + 1))
            }
            _ => {
                // A jump from further back than this lands before `o`.
                let earliest = self.free_tick.max(reach - 60);
                (earliest..=reach).find_map(|j| {
                    jump_clears(Body::ready(0), j, self.max_ticks, &[*o], o.end())
                        .map(|land| land + 1)
                })
            }
        }
    }

    /// The first run tick in 1..=max_ticks where `pred` (monotonic: false
    /// then true) holds.
    fn first_tick(&self, pred: impl Fn(i64) -> bool) -> Option<i64> {
        let (mut lo, mut hi) = (1, self.max_ticks + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (lo <= self.max_ticks).then_some(lo)
    }
}

/// An obstacle of `kind` (`count` cacti in a group), at x = 0.
fn shape(kind: u8, count: i32) -> ObstacleBox {
    let px = UNITS_PER_PX;
    let (y, w, h) = match kind {
        KIND_CACTUS_SMALL => (0, CACTUS_SMALL_W_PX * count, CACTUS_SMALL_H_PX),
        KIND_CACTUS_LARGE => (0, CACTUS_LARGE_W_PX * count, CACTUS_LARGE_H_PX),
        KIND_BIRD_LOW => (BIRD_LOW_Y_PX, BIRD_W_PX, BIRD_H_PX),
        KIND_BIRD_MID => (BIRD_MID_Y_PX, BIRD_W_PX, BIRD_H_PX),
        _ => (BIRD_HIGH_Y_PX, BIRD_W_PX, BIRD_H_PX),
    };
    ObstacleBox {
        kind,
        x: 0,
        y: y * px,
        w: w * px,
        h: h * px,
    }
}
