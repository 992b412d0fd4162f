// Dizolaur client physics: an exact port of relay/src/dizolaur/physics.rs
// (speed_at, scroll_at, distance_at, advance, predict_player), so that the
// browser predicts its own runner to the unit. All values are integers that
// fit i32; intermediate sums stay far below 2^53, and every result is
// saturated to i32 exactly where Rust saturates. Checked against
// relay/testdata/dizolaur-prediction.json by physics.test.js.

import {
  DROP_VELOCITY,
  DUCK_HITBOX,
  FAST_FALL_GRAVITY,
  GRAVITY,
  INPUT_DUCK,
  INPUT_JUMP,
  JUMP_VELOCITY,
  LANE_FIELDS,
  MATCH_FIELDS,
  MATCH_ID,
  METER,
  M_MAX_TICKS,
  M_PHASE,
  M_SCROLL,
  M_START_TICK,
  PHASE_COUNTDOWN,
  PHASE_RUNNING,
  P_DISTANCE,
  P_INPUT,
  P_STATE,
  P_TICK,
  P_VY,
  P_Y,
  RUNNER_X,
  SPEED_MAX,
  SPEED_RAMP_TICKS,
  SPEED_START,
  STAND_HITBOX,
  STATE_DUCKING,
  STATE_JUMPING,
  STATE_RUNNING,
  isAlive,
} from './fields.js';

const I32_MAX = 2147483647;
const I32_MIN = -2147483648;
/** The run tick from which the speed is SPEED_MAX. */
const RAMP_END = (SPEED_MAX - SPEED_START) * SPEED_RAMP_TICKS;

/** Rust's i32 saturating arithmetic, on an exact integer sum. */
function sat(v) {
  return v > I32_MAX ? I32_MAX : v < I32_MIN ? I32_MIN : v;
}

/** Scroll speed at a run tick, units/tick (0 before the race). */
export function speedAtRunTick(runTick) {
  if (runTick <= 0) return 0;
  return Math.min(SPEED_START + Math.floor(runTick / SPEED_RAMP_TICKS), SPEED_MAX);
}

/** Scroll after a run tick, units: the sum of the speeds of run ticks 1..=runTick. */
export function scrollAtRunTick(runTick) {
  if (runTick <= 0) return 0;
  const r = Math.min(runTick, 2 ** 32);
  const ramped = Math.min(r, RAMP_END);
  const k = SPEED_RAMP_TICKS;
  const q = Math.floor(ramped / k);
  const rem = ramped - k * q;
  let sum = ramped * SPEED_START + (k * q * (q - 1)) / 2 + q * (rem + 1);
  if (r > RAMP_END) sum += (r - RAMP_END) * SPEED_MAX;
  return Math.min(sum, I32_MAX);
}

/** Whole meters run by a runner alive at `runTick` of a race limited to `maxTicks`. */
export function distanceAtRunTick(runTick, maxTicks) {
  return Math.floor(scrollAtRunTick(Math.min(runTick, maxTicks)) / METER);
}

/** The race clock of a match entity's fields: {startTick, maxTicks}. */
export function raceClock(matchFields) {
  if (!matchFields || matchFields.length < MATCH_FIELDS) return { startTick: 0, maxTicks: 0 };
  return { startTick: matchFields[M_START_TICK], maxTicks: matchFields[M_MAX_TICKS] };
}

/**
 * The scroll (units) at a server tick, e.g. a predicted one, from the match
 * entity's fields. While counting down or racing it follows the race clock
 * (stopping at the time limit); otherwise the scene is still: M_SCROLL.
 */
export function scrollAt(tick, matchFields) {
  const phase = matchFields[M_PHASE];
  if (phase !== PHASE_RUNNING && phase !== PHASE_COUNTDOWN) return matchFields[M_SCROLL];
  const { startTick, maxTicks } = raceClock(matchFields);
  return scrollAtRunTick(Math.min(tick - startTick, maxTicks));
}

/** The scroll speed (units/tick) at a server tick, from the match entity's fields. */
export function speedAt(tick, matchFields) {
  if (matchFields[M_PHASE] !== PHASE_RUNNING) return 0;
  const { startTick, maxTicks } = raceClock(matchFields);
  const runTick = tick - startTick;
  return runTick > maxTicks ? 0 : speedAtRunTick(runTick);
}

/**
 * One tick of a runner's motion, in place on body = {state, y, vy, lastInput}
 * (physics.rs `advance`): a jump press on the ground, the early-release
 * cut, duck fast-fall in the air, gravity, landing; then the state.
 */
export function advance(body, input, runTick, maxTicks) {
  if (isAlive(body.state) && runTick <= maxTicks) {
    const jump = (input & INPUT_JUMP) !== 0;
    const duck = (input & INPUT_DUCK) !== 0;
    const pressed = jump && (body.lastInput & INPUT_JUMP) === 0;
    const wasAirborne = body.y > 0;
    if (!(body.y > 0 || body.vy > 0) && pressed) body.vy = JUMP_VELOCITY;
    if (body.y > 0 || body.vy > 0) {
      if (!jump && body.vy > DROP_VELOCITY) body.vy = DROP_VELOCITY;
      if (duck && wasAirborne) body.vy = sat(Math.min(body.vy, 0) - FAST_FALL_GRAVITY);
      else body.vy = sat(body.vy - GRAVITY);
      body.y = sat(body.y + body.vy);
      if (body.y <= 0) {
        body.y = 0;
        body.vy = 0;
      }
    }
    body.state = body.y > 0 ? STATE_JUMPING : duck ? STATE_DUCKING : STATE_RUNNING;
  }
  body.lastInput = input;
}

/**
 * Client prediction (physics.rs `predict_player`): a lane entity's fields
 * advanced by one tick with `input`, as a new Int32Array. Motion, state,
 * P_INPUT, P_TICK and P_DISTANCE change; crashes are never predicted; a
 * runner that is not alive only gets P_TICK and P_INPUT. `world` is a
 * snapshot state (Map<id, {id, kind, fields}>): its match entity gives the
 * race clock.
 */
export function predictPlayer(fields, input, world) {
  const out = Int32Array.from(fields);
  if (out.length < LANE_FIELDS) return out;
  const match = world && typeof world.get === 'function' ? world.get(MATCH_ID) : undefined;
  const { startTick, maxTicks } = raceClock(match ? match.fields : undefined);
  const tick = out[P_TICK] + 1;
  const runTick = tick - startTick;
  const body = { state: out[P_STATE], y: out[P_Y], vy: out[P_VY], lastInput: out[P_INPUT] & 0xff };
  advance(body, input & 0xff, runTick, maxTicks);
  out[P_STATE] = body.state;
  out[P_Y] = body.y;
  out[P_VY] = body.vy;
  out[P_INPUT] = body.lastInput;
  out[P_TICK] = Math.min(tick, I32_MAX);
  if (isAlive(body.state)) out[P_DISTANCE] = distanceAtRunTick(runTick, maxTicks);
  return out;
}

/** A runner's hitbox for its state: {x0, x1, h}, units, x from its left edge. */
export function hitbox(state) {
  return state === STATE_DUCKING ? DUCK_HITBOX : STAND_HITBOX;
}

/** The runner's left edge (world x) at a scroll. */
export function runnerX(scroll) {
  return scroll + RUNNER_X;
}
