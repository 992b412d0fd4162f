// The page's autopilot (?autoplay=1 or the checkbox): the same policy as the
// game's bots, `bot_input` in relay/src/dizolaur/bot.rs, ported onto
// physics.js. It reads only what a player sees: its own predicted runner
// and the newest snapshot (the match entity and the obstacles in view).
//
// On the ground it looks at the nearest obstacle not yet passed: a cactus or
// a low bird is jumped over at the first tick from which a held jump clears
// it without touching anything in view; a mid bird is ducked under; a high
// bird is run under. In the air it holds jump while rising (the highest
// jump) and releases it while falling (ready for the next press). The track
// generator guarantees that this survives when the inputs arrive in time.
import {
  INPUT_DUCK,
  INPUT_JUMP,
  KIND_BIRD_HIGH,
  KIND_BIRD_MID,
  LANE_FIELDS,
  MATCH_ID,
  OBSTACLE_FIELDS,
  O_H,
  O_W,
  O_X,
  O_Y,
  P_INPUT,
  P_STATE,
  P_TICK,
  P_VY,
  P_Y,
  RUNNER_X,
  STAND_HITBOX,
  isAlive,
  isObstacleKind,
} from './fields.js';
import { advance, hitbox, raceClock, scrollAtRunTick } from './physics.js';

/** Start ducking when standing would reach a mid bird within this many ticks. */
const DUCK_LEAD_TICKS = 6;
/** A jump that has not landed past its obstacle within this many ticks fails. */
const JUMP_HORIZON_TICKS = 240;

/** The runner's left edge (world x) at a run tick (physics.rs `runner_x_at`). */
export function runnerXAt(runTick, maxTicks) {
  return scrollAtRunTick(Math.min(runTick, maxTicks)) + RUNNER_X;
}

/** Whether a runner with its left edge at world x `runnerX` overlaps obstacle `o` (physics.rs `hits`). */
export function hits(runnerX, body, o) {
  const { x0, x1, h } = hitbox(body.state);
  return runnerX + x0 < o.x + o.w && o.x < runnerX + x1 && body.y < o.y + o.h && o.y < body.y + h;
}

/**
 * physics.rs `jump_clears`: a runner on the ground presses jump at run tick
 * `from`, holds it while rising, releases it while falling. The landing run
 * tick if it lands past world x `pastX` without touching `obstacles`, else null.
 * One difference: reaching the time limit untouched counts as clearing
 * (nothing moves after it), where the Rust version says no, so that the
 * runner does not stand still into a cactus in the race's last second.
 */
export function jumpClears(start, from, maxTicks, obstacles, pastX) {
  const body = { ...start };
  for (let t = from; t < from + JUMP_HORIZON_TICKS; t++) {
    if (t > maxTicks) return maxTicks;
    const input = t === from || body.vy > 0 ? INPUT_JUMP : 0;
    advance(body, input, t, maxTicks);
    const x = runnerXAt(t, maxTicks);
    if (obstacles.some((o) => hits(x, body, o))) return null;
    if (!(body.y > 0 || body.vy > 0) && x + STAND_HITBOX.x0 >= pastX) return t;
  }
  return null;
}

/** The obstacles of a snapshot state: [{kind, x, y, w, h}]. */
export function obstaclesOf(world) {
  const out = [];
  for (const e of world.values()) {
    if (!isObstacleKind(e.kind) || e.fields.length < OBSTACLE_FIELDS) continue;
    out.push({ kind: e.kind, x: e.fields[O_X], y: e.fields[O_Y], w: e.fields[O_W], h: e.fields[O_H] });
  }
  return out;
}

/**
 * The input for the tick after `player`'s (a lane entity's fields, e.g. the
 * predicted own runner), reading the snapshot state `world`. 0 when not racing.
 */
export function autopilotInput(player, world) {
  if (!player || player.length < LANE_FIELDS || !isAlive(player[P_STATE]) || !world) return 0;
  const match = world.get(MATCH_ID);
  const { startTick, maxTicks } = raceClock(match?.fields);
  const now = player[P_TICK] - startTick;
  const next = now + 1;
  if (next < 1 || next > maxTicks) return 0;
  const body = { state: player[P_STATE], y: player[P_Y], vy: player[P_VY], lastInput: player[P_INPUT] & 0xff };
  if (body.y > 0 || body.vy > 0) return body.vy > 0 ? INPUT_JUMP : 0;
  const obstacles = obstaclesOf(world);
  const runnerX = runnerXAt(now, maxTicks);
  let target = null;
  for (const o of obstacles) {
    if (o.x + o.w > runnerX + STAND_HITBOX.x0 && (target === null || o.x < target.x)) target = o;
  }
  if (target === null) return 0;
  if (target.kind === KIND_BIRD_HIGH) return 0;
  if (target.kind === KIND_BIRD_MID) {
    const soon = runnerXAt(now + DUCK_LEAD_TICKS, maxTicks);
    return soon + STAND_HITBOX.x1 > target.x ? INPUT_DUCK : 0;
  }
  return jumpClears(body, next, maxTicks, obstacles, target.x + target.w) !== null ? INPUT_JUMP : 0;
}
