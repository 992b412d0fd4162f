//! The bots: a pure, perfect policy on snapshot-visible state
//! ([`bot_input`], also usable by Rust client bots), and the server bots'
//! seeded imperfection ([`BotReflexes`]) so that bot matches end.

use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::WorldState;

use super::layout::*;
use super::obstacles::roll;
use super::physics::{is_alive, jump_clears, race_clock, runner_x_at, Body, ObstacleBox};
use crate::authoritative::StateHasher;

/// Start ducking when standing would reach a mid bird within this many ticks.
const DUCK_LEAD_TICKS: i64 = 6;

/// The input a perfect player would give for the tick after `lane_player`'s
/// state (a lane entity's fields), reading only the snapshot `world` (the
/// match entity and the obstacles in view). In the air it holds jump while
/// rising (the highest jump) and releases it while falling (ready for the
/// next press). On the ground it looks at the nearest obstacle not yet
/// passed: a cactus or low bird is jumped over at the first tick from which
/// a jump clears it without touching anything in view ([`jump_clears`]); a
/// mid bird is ducked under; a high bird is run under. Because the track
/// generator guarantees that this strategy survives (see
/// [`super::obstacles`]), a player following it never crashes.
pub fn bot_input(lane_player: &[i32], world: &WorldState) -> u8 {
    if lane_player.len() < LANE_FIELDS || !is_alive(lane_player[P_STATE]) {
        return 0;
    }
    let (start_tick, max_ticks) = race_clock(world);
    let now = i64::from(lane_player[P_TICK]) - start_tick;
    let next = now + 1;
    if next < 1 || next > max_ticks {
        return 0;
    }
    let body = Body {
        state: lane_player[P_STATE],
        y: lane_player[P_Y],
        vy: lane_player[P_VY],
        last_input: lane_player[P_INPUT] as u8,
    };
    if body.airborne() {
        return if body.vy > 0 { INPUT_JUMP } else { 0 };
    }
    let obstacles: Vec<ObstacleBox> = world
        .entities()
        .iter()
        .filter_map(|e| ObstacleBox::from_entity(e.kind, &e.fields))
        .collect();
    let runner_x = runner_x_at(now, max_ticks);
    let Some(target) = obstacles
        .iter()
        .filter(|o| o.end() > runner_x.saturating_add(STAND_HITBOX_X0))
        .min_by_key(|o| o.x)
    else {
        return 0;
    };
    match target.kind {
        KIND_BIRD_HIGH => 0,
        KIND_BIRD_MID => {
            let soon = runner_x_at(now + DUCK_LEAD_TICKS, max_ticks);
            if soon.saturating_add(STAND_HITBOX_X1) > target.x {
                INPUT_DUCK
            } else {
                0
            }
        }
        _ => {
            if jump_clears(body, next, max_ticks, &obstacles, target.end()).is_some() {
                INPUT_JUMP
            } else {
                0
            }
        }
    }
}

/// A server bot's reaction delay: each time the policy says "press jump",
/// the bot draws how many ticks late it presses. Mostly 0, sometimes 1..=3
/// (usually harmless), rarely 4..=13 (usually a crash), rarer early in the
/// race: the fatal chance is 1.5% per jump plus 0.1% per 6 s raced, capped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BotReflexes {
    delay: Option<u32>,
}

impl BotReflexes {
    pub fn act(
        &mut self,
        rng: &mut ChaCha8Rng,
        ideal: u8,
        lane_player: &[i32],
        run_tick: i64,
    ) -> u8 {
        let on_ground =
            lane_player.len() >= LANE_FIELDS && lane_player[P_Y] <= 0 && lane_player[P_VY] <= 0;
        if ideal & INPUT_JUMP == 0 || !on_ground {
            if on_ground {
                self.delay = None;
            }
            return ideal;
        }
        let delay = *self.delay.get_or_insert_with(|| {
            let fatal = 15 + (run_tick.max(0) / 360).min(40) as u32;
            let r = roll(rng, 1000);
            if r < fatal {
                4 + roll(rng, 10)
            } else if r < fatal + 80 {
                1 + roll(rng, 3)
            } else {
                0
            }
        });
        if delay > 0 {
            self.delay = Some(delay - 1);
            ideal & !INPUT_JUMP
        } else {
            self.delay = None;
            ideal
        }
    }

    pub fn hash_into(&self, h: &mut StateHasher) {
        h.u32(self.delay.map_or(u32::MAX, |d| d));
    }
}
