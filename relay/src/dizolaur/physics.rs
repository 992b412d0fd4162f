//! Dizolaur's integer physics: the scroll clock, a runner's vertical motion,
//! hitboxes and collisions. The simulation, client prediction
//! ([`predict_player`]), the bots and the obstacle planner all call these
//! same functions, so they agree to the unit. `web/dizolaur/physics.js` is
//! a line-by-line port (keep them in step; the shared vectors in
//! `relay/testdata/dizolaur-prediction.json` check it).
//!
//! Everything is `i32`/`i64` arithmetic with saturation where a value could
//! come from the wire; no floats.

use rtcrelay_protocol::game::WorldState;

use super::layout::*;

/// A runner's motion state: what [`advance`] reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Body {
    /// One of the `STATE_*` codes.
    pub state: i32,
    /// Height of the feet above the ground, units (0 = on the ground).
    pub y: i32,
    /// Vertical speed, units/tick, up > 0.
    pub vy: i32,
    /// The input applied at the previous tick (a jump is a press: it needs
    /// bit 0 clear here).
    pub last_input: u8,
}

impl Body {
    /// Standing on the ground, ready to race.
    pub fn ready(last_input: u8) -> Body {
        Body {
            state: STATE_RUNNING,
            y: 0,
            vy: 0,
            last_input,
        }
    }

    pub fn airborne(&self) -> bool {
        self.y > 0 || self.vy > 0
    }
}

/// Racing and not crashed: the states [`advance`] moves.
pub fn is_alive(state: i32) -> bool {
    matches!(state, STATE_RUNNING | STATE_JUMPING | STATE_DUCKING)
}

/// Scroll speed at run tick `run_tick`, units/tick: 0 before the race,
/// then `SPEED_START + floor(run_tick / SPEED_RAMP_TICKS)`, at most
/// `SPEED_MAX`.
pub fn speed_at(run_tick: i64) -> i32 {
    if run_tick <= 0 {
        return 0;
    }
    let ramp = i64::from(SPEED_START) + run_tick / i64::from(SPEED_RAMP_TICKS);
    ramp.min(i64::from(SPEED_MAX)) as i32
}

/// The run tick from which the speed is `SPEED_MAX`.
const RAMP_END: i64 = (SPEED_MAX - SPEED_START) as i64 * SPEED_RAMP_TICKS as i64;

/// Scroll after run tick `run_tick` (the sum of [`speed_at`] over run ticks
/// 1..=run_tick), units, in closed form so that any tick can be computed
/// without history. Saturates at `i32::MAX` (about 2.3 hours of racing).
pub fn scroll_at(run_tick: i64) -> i32 {
    if run_tick <= 0 {
        return 0;
    }
    // sum_{i=1}^{r} floor(i / k) with q = floor(r / k), rem = r - k q:
    // k * (0 + 1 + .. + (q - 1)) + q * (rem + 1).
    fn ramp_sum(r: i64) -> i64 {
        let k = i64::from(SPEED_RAMP_TICKS);
        let q = r / k;
        let rem = r - k * q;
        k * q * (q - 1) / 2 + q * (rem + 1)
    }
    // Beyond this the sum exceeds i32::MAX anyway (and i64 math stays exact).
    let run_tick = run_tick.min(1 << 32);
    let ramped = run_tick.min(RAMP_END);
    let mut sum = ramped * i64::from(SPEED_START) + ramp_sum(ramped);
    if run_tick > RAMP_END {
        sum += (run_tick - RAMP_END) * i64::from(SPEED_MAX);
    }
    sum.min(i64::from(i32::MAX)) as i32
}

/// Whole meters run by a runner alive at run tick `run_tick` of a race
/// limited to `max_ticks` (the scroll stops there).
pub fn distance_at(run_tick: i64, max_ticks: i64) -> i32 {
    scroll_at(run_tick.min(max_ticks)) / METER
}

/// Advances `body` by one tick with `input`; `run_tick` is the run tick
/// being simulated and `max_ticks` the race's limit (beyond it nothing
/// moves). Only alive runners move; everyone's `last_input` is updated.
///
/// Rules, in order: on the ground, a jump *press* (bit 0 set now, clear at
/// the previous tick) gives `JUMP_VELOCITY`. In the air: releasing jump
/// while rising faster than `DROP_VELOCITY` cuts the speed to it (a tap is
/// a low hop, holding jumps higher); holding duck cancels upward speed and
/// falls with `FAST_FALL_GRAVITY`, otherwise `GRAVITY` applies; then
/// `y += vy`, landing at `y <= 0`. The state is then JUMPING in the air,
/// else DUCKING if duck is held, else RUNNING.
pub fn advance(body: &mut Body, input: u8, run_tick: i64, max_ticks: i64) {
    if is_alive(body.state) && run_tick <= max_ticks {
        let jump = input & INPUT_JUMP != 0;
        let duck = input & INPUT_DUCK != 0;
        let pressed = jump && body.last_input & INPUT_JUMP == 0;
        let was_airborne = body.y > 0;
        if !body.airborne() && pressed {
            body.vy = JUMP_VELOCITY;
        }
        if body.airborne() {
            if !jump && body.vy > DROP_VELOCITY {
                body.vy = DROP_VELOCITY;
            }
            if duck && was_airborne {
                body.vy = body.vy.min(0).saturating_sub(FAST_FALL_GRAVITY);
            } else {
                body.vy = body.vy.saturating_sub(GRAVITY);
            }
            body.y = body.y.saturating_add(body.vy);
            if body.y <= 0 {
                body.y = 0;
                body.vy = 0;
            }
        }
        body.state = if body.y > 0 {
            STATE_JUMPING
        } else if duck {
            STATE_DUCKING
        } else {
            STATE_RUNNING
        };
    }
    body.last_input = input;
}

/// A runner's hitbox for its state: (x0, x1, height), x from the runner's
/// left edge (world x = scroll + `RUNNER_X`).
pub fn hitbox(state: i32) -> (i32, i32, i32) {
    if state == STATE_DUCKING {
        (DUCK_HITBOX_X0, DUCK_HITBOX_X1, DUCK_HITBOX_H)
    } else {
        (STAND_HITBOX_X0, STAND_HITBOX_X1, STAND_HITBOX_H)
    }
}

/// An obstacle's box, units, world coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObstacleBox {
    pub kind: u8,
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl ObstacleBox {
    pub fn end(&self) -> i32 {
        self.x.saturating_add(self.w)
    }

    /// Reads an obstacle entity's fields (None: not an obstacle).
    pub fn from_entity(kind: u8, fields: &[i32]) -> Option<ObstacleBox> {
        if !is_obstacle_kind(kind) || fields.len() < OBSTACLE_FIELDS {
            return None;
        }
        Some(ObstacleBox {
            kind,
            x: fields[O_X],
            y: fields[O_Y],
            w: fields[O_W],
            h: fields[O_H],
        })
    }
}

pub fn is_obstacle_kind(kind: u8) -> bool {
    (KIND_CACTUS_SMALL..=KIND_BIRD_HIGH).contains(&kind)
}

/// Whether a runner whose left edge is at world x `runner_x` overlaps `o`
/// (boxes overlap with positive area; touching is not a hit).
pub fn hits(runner_x: i32, body: &Body, o: &ObstacleBox) -> bool {
    let (x0, x1, h) = hitbox(body.state);
    let rx0 = runner_x.saturating_add(x0);
    let rx1 = runner_x.saturating_add(x1);
    let ry1 = body.y.saturating_add(h);
    rx0 < o.end() && o.x < rx1 && body.y < o.y.saturating_add(o.h) && o.y < ry1
}

/// The runner's left edge (world x) at run tick `run_tick`.
pub fn runner_x_at(run_tick: i64, max_ticks: i64) -> i32 {
    scroll_at(run_tick.min(max_ticks)).saturating_add(RUNNER_X)
}

/// The race clock of a snapshot's match entity: (start tick, max ticks).
pub fn race_clock(world: &WorldState) -> (i64, i64) {
    match world.get(MATCH_ID) {
        Some(m) if m.fields.len() >= MATCH_FIELDS => (
            i64::from(m.fields[M_START_TICK]),
            i64::from(m.fields[M_MAX_TICKS]),
        ),
        _ => (0, 0),
    }
}

/// Client prediction: advances a lane entity's fields (see the layout in
/// [`super`]) by one tick with `input`, exactly as the server does —
/// vertical motion, state, `P_INPUT`, `P_TICK` and `P_DISTANCE`. Crashes are
/// never predicted (the server decides them); a runner that is not alive
/// only gets `P_TICK` and `P_INPUT` updated. `world` supplies the race
/// clock (the match entity). Slices shorter than `LANE_FIELDS` are left
/// alone.
pub fn predict_player(player: &mut [i32], input: u8, world: &WorldState) {
    if player.len() < LANE_FIELDS {
        return;
    }
    let (start_tick, max_ticks) = race_clock(world);
    let tick = i64::from(player[P_TICK]) + 1;
    let run_tick = tick - start_tick;
    let mut body = Body {
        state: player[P_STATE],
        y: player[P_Y],
        vy: player[P_VY],
        last_input: player[P_INPUT] as u8,
    };
    advance(&mut body, input, run_tick, max_ticks);
    player[P_STATE] = body.state;
    player[P_Y] = body.y;
    player[P_VY] = body.vy;
    player[P_INPUT] = i32::from(body.last_input);
    player[P_TICK] = tick.min(i64::from(i32::MAX)) as i32;
    if is_alive(body.state) {
        player[P_DISTANCE] = distance_at(run_tick, max_ticks);
    }
}

/// Simulates a runner on the ground pressing jump at run tick `from`,
/// holding it while rising and releasing it while falling, then running
/// with no input. Some(landing run tick) if it lands with its left edge past
/// world x `past_x` without touching any of `obstacles`; None on a hit or
/// if that takes too long. The bots and the obstacle planner use it.
pub fn jump_clears(
    mut body: Body,
    from: i64,
    max_ticks: i64,
    obstacles: &[ObstacleBox],
    past_x: i32,
) -> Option<i64> {
    const HORIZON: i64 = 240;
    for t in from..from + HORIZON {
        if t > max_ticks {
            return None;
        }
        let input = if t == from || body.vy > 0 {
            INPUT_JUMP
        } else {
            0
        };
        advance(&mut body, input, t, max_ticks);
        let runner_x = runner_x_at(t, max_ticks);
        if obstacles.iter().any(|o| hits(runner_x, &body, o)) {
            return None;
        }
        if !body.airborne() && runner_x.saturating_add(STAND_HITBOX_X0) >= past_x {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scroll_is_the_sum_of_speeds() {
        let mut sum: i64 = 0;
        for r in 1..=(RAMP_END + 500) {
            sum += i64::from(speed_at(r));
            assert_eq!(i64::from(scroll_at(r)), sum, "run tick {r}");
        }
        assert_eq!(scroll_at(0), 0);
        assert_eq!(scroll_at(-5), 0);
        assert_eq!(speed_at(1), SPEED_START);
        assert_eq!(speed_at(RAMP_END), SPEED_MAX);
        assert_eq!(speed_at(RAMP_END + 1), SPEED_MAX);
        assert_eq!(scroll_at(i64::MAX / 4), i32::MAX);
    }

    #[test]
    fn a_held_jump_goes_higher_than_a_tap_and_lands() {
        fn apex(hold: u32) -> (i32, u32) {
            let mut body = Body::ready(0);
            let mut top = 0;
            for t in 1..200u32 {
                let input = if t <= hold { INPUT_JUMP } else { 0 };
                advance(&mut body, input, i64::from(t), 1000);
                top = top.max(body.y);
                if t > 1 && !body.airborne() {
                    return (top, t);
                }
            }
            panic!("never landed");
        }
        let (tap, tap_air) = apex(1);
        let (held, held_air) = apex(100);
        assert!(tap < held, "tap {tap} held {held}");
        assert!(tap_air < held_air);
        // Tuned: a held jump clears the tallest cactus, a tap the bird gap.
        assert!(held > CACTUS_LARGE_H_PX * UNITS_PER_PX, "{held}");
        assert!((20..40).contains(&held_air), "{held_air}");
    }

    #[test]
    fn jump_needs_a_new_press_and_duck_falls_fast() {
        let mut body = Body::ready(INPUT_JUMP);
        advance(&mut body, INPUT_JUMP, 1, 100);
        assert_eq!(body.y, 0, "holding from before is not a press");
        let mut body = Body::ready(0);
        advance(&mut body, INPUT_JUMP, 1, 100);
        assert_eq!(body.state, STATE_JUMPING);
        let mut slow = body;
        let mut fast = body;
        for t in 2..6 {
            advance(&mut slow, INPUT_JUMP, t, 100);
            advance(&mut fast, INPUT_DUCK, t, 100);
        }
        assert!(fast.y < slow.y);
        let mut ducking = Body::ready(0);
        advance(&mut ducking, INPUT_DUCK, 1, 100);
        assert_eq!(ducking.state, STATE_DUCKING);
        // Past the race limit nothing moves.
        let mut frozen = Body::ready(0);
        advance(&mut frozen, INPUT_JUMP, 101, 100);
        assert_eq!((frozen.y, frozen.last_input), (0, INPUT_JUMP));
    }
}
