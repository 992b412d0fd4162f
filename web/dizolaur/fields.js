// Dizolaur snapshot layout and game constants, shared with the browser.
// The source of truth is relay/src/dizolaur/mod.rs (its module doc and
// constants); this file mirrors it value for value. A snapshot state is a
// Map<id, {id, kind, fields: Int32Array}> (see web/client/rtcrelay-codec.js).
//
// Coordinates: x grows to the right along the track, y grows upwards from
// the ground (y = 0). Positions, sizes and speeds are integers in UNITS, 1/256
// of a pixel (UNITS_PER_PX). "World x" is measured from the lane's left edge
// at the start of the race: the lane's left edge is at world x = scroll, so an
// obstacle is drawn at screen x = (x - scroll) / UNITS_PER_PX px. The runner
// stands at screen x = RUNNER_X_PX, so its world x is scroll + RUNNER_X.

// ---- Time ----------------------------------------------------------------
/** Simulation ticks per second the physics is tuned for. */
export const TICK_RATE = 60;
/** Ticks of the countdown (3 s). */
export const COUNTDOWN_TICKS = 180;
/** Late inputs up to this many ticks old rewind the player's lane; a crash
 * is pending (PENDING = 1) for this many ticks before it is confirmed. */
export const MAX_REWIND = 8;
/** Match duration bounds of the `start` command, seconds. */
export const DEFAULT_MAX_SECONDS = 180;
export const MIN_MAX_SECONDS = 10;
export const MAX_MAX_SECONDS = 600;

// ---- Units and screen ----------------------------------------------------
export const UNITS_PER_PX = 256;
/** One distance unit ("meter" in the UI) is 40 px of scroll. */
export const METER_PX = 40;
export const METER = METER_PX * UNITS_PER_PX;
/** A `score` event is sent each time a runner passes a multiple of this. */
export const SCORE_MILESTONE = 500;
/** One lane's view, px. Lanes are drawn one below the other. */
export const LANE_WIDTH_PX = 600;
export const LANE_HEIGHT_PX = 150;
/** Suggested ground line, px from the top of a lane's view. */
export const GROUND_FROM_TOP_PX = 140;
/** The runner's left edge, px from the lane's left edge. */
export const RUNNER_X_PX = 50;
export const RUNNER_X = RUNNER_X_PX * UNITS_PER_PX;
/** Obstacles are in snapshots while x + w > scroll - VIEW_BEHIND and
 * x < scroll + VIEW_AHEAD. */
export const VIEW_BEHIND_PX = 100;
export const VIEW_AHEAD_PX = 1200;
export const VIEW_BEHIND = VIEW_BEHIND_PX * UNITS_PER_PX;
export const VIEW_AHEAD = VIEW_AHEAD_PX * UNITS_PER_PX;

// ---- Runner sprite and hitboxes (px; x from the runner's left edge) -------
export const RUNNER_SPRITE_W_PX = 44;
export const RUNNER_SPRITE_H_PX = 47;
export const DUCK_SPRITE_W_PX = 59;
export const DUCK_SPRITE_H_PX = 30;
/** Standing, running and in the air (units). */
export const STAND_HITBOX_X0 = 6 * UNITS_PER_PX;
export const STAND_HITBOX_X1 = 38 * UNITS_PER_PX;
export const STAND_HITBOX_H = 44 * UNITS_PER_PX;
/** Ducking on the ground (ducking in the air only falls faster). */
export const DUCK_HITBOX_X0 = 4 * UNITS_PER_PX;
export const DUCK_HITBOX_X1 = 54 * UNITS_PER_PX;
export const DUCK_HITBOX_H = 26 * UNITS_PER_PX;
export const STAND_HITBOX = Object.freeze({ x0: STAND_HITBOX_X0, x1: STAND_HITBOX_X1, h: STAND_HITBOX_H });
export const DUCK_HITBOX = Object.freeze({ x0: DUCK_HITBOX_X0, x1: DUCK_HITBOX_X1, h: DUCK_HITBOX_H });

// ---- Physics (units, per tick) --------------------------------------------
export const GRAVITY = 154;
/** Vertical speed given by a jump press on the ground. */
export const JUMP_VELOCITY = 2560;
/** Releasing jump while rising faster than this cuts the speed to it. */
export const DROP_VELOCITY = 1280;
/** Gravity while duck is held in the air (upward speed is cancelled). */
export const FAST_FALL_GRAVITY = 462;
/** Scroll speed: SPEED_START + floor(runTick / SPEED_RAMP_TICKS), at most SPEED_MAX. */
export const SPEED_START = 1536;
export const SPEED_MAX = 3328;
export const SPEED_RAMP_TICKS = 4;

// ---- Obstacles (px) ---------------------------------------------------------
/** Cacti stand on the ground in groups of 1..=3; w = count * the width. */
export const CACTUS_SMALL_W_PX = 17;
export const CACTUS_SMALL_H_PX = 35;
export const CACTUS_LARGE_W_PX = 25;
export const CACTUS_LARGE_H_PX = 50;
export const BIRD_W_PX = 42;
export const BIRD_H_PX = 26;
/** Bird bottom heights: low = jump over it, mid = duck under it (or jump
 * high), high = just keep running (a jump may hit it). */
export const BIRD_LOW_Y_PX = 14;
export const BIRD_MID_Y_PX = 32;
export const BIRD_HIGH_Y_PX = 50;

// ---- Input (1 byte) ------------------------------------------------------
export const INPUT_SIZE = 1;
export const INPUT_JUMP = 0x01; // held
export const INPUT_DUCK = 0x02; // held
export const INPUT_MASK = 0x03; // other bits must be zero

// ---- Entities ------------------------------------------------------------
export const MATCH_ID = 0;
/** Lane i (0..=3) is entity LANE_ID_BASE + i: ids 1..=4. */
export const LANE_ID_BASE = 1;
export const LANE_COUNT = 4;
/** Obstacles: OBSTACLE_ID_BASE + serial, in track order (nearer = lower). */
export const OBSTACLE_ID_BASE = 100;

export const KIND_MATCH = 0;
export const KIND_RUNNER = 1;
export const KIND_CACTUS_SMALL = 2;
export const KIND_CACTUS_LARGE = 3;
export const KIND_BIRD_LOW = 4;
export const KIND_BIRD_MID = 5;
export const KIND_BIRD_HIGH = 6;

// Match entity (id 0) fields.
export const M_PHASE = 0; // PHASE_*
export const M_PHASE_TICK = 1; // tick the phase began
export const M_COUNTDOWN = 2; // ticks left before the race (0 outside the countdown)
export const M_START_TICK = 3; // race clock zero: runTick = tick - M_START_TICK
export const M_MAX_TICKS = 4; // the race stops at runTick = M_MAX_TICKS
export const M_SPEED = 5; // scroll speed at this tick, units/tick (0 when not moving)
export const M_SCROLL = 6; // scroll at this tick, units
export const M_MATCH = 7; // match number in this room (0 before the first)
export const M_BOTS = 8; // 1: the current/last match filled empty seats with bots
export const M_WINNERS = 9; // bit i = lane i won (after the match ended)
export const M_RUNNING = 10; // runners still in the race (alive or crash pending)
export const MATCH_FIELDS = 11;

export const PHASE_LOBBY = 0;
export const PHASE_COUNTDOWN = 1;
export const PHASE_RUNNING = 2;
export const PHASE_ENDED = 3;

// Lane entity (ids 1..=4) fields.
export const P_PEER = 0; // peer id of the seated person (u32 bits; `>>> 0`), 0 = none
export const P_BOT = 1; // 1 = a bot sits here
export const P_STATE = 2; // STATE_*
export const P_Y = 3; // height of the runner's feet above the ground, units
export const P_VY = 4; // vertical speed, units/tick (up > 0)
export const P_INPUT = 5; // last input applied (jump is a press: needs bit 0 clear here)
export const P_TICK = 6; // the tick this runner state is at
export const P_DISTANCE = 7; // whole meters run
export const P_PENDING = 8; // 1 = crashed, not yet confirmed (a late input may undo it)
export const P_OUT_TICK = 9; // tick of the crash or leave, 0 = none
export const P_PLACE = 10; // final place (1 = winner) after the match ended, 0 otherwise
export const LANE_FIELDS = 11;

export const STATE_EMPTY = 0; // nobody sits in this lane
export const STATE_IDLE = 1; // seated, not racing (lobby, or joined mid-match)
export const STATE_RUNNING = 2; // on the ground
export const STATE_JUMPING = 3; // in the air
export const STATE_DUCKING = 4; // ducking on the ground
export const STATE_CRASHED = 5; // hit an obstacle (P_PENDING tells if confirmed)
export const STATE_OUT = 6; // left the match (not a crash)
export const STATE_FINISHED = 7; // still running when the time ran out

/** Racing and not crashed: the states the physics moves. */
export function isAlive(state) {
  return state === STATE_RUNNING || state === STATE_JUMPING || state === STATE_DUCKING;
}

// Obstacle entity (ids >= 100) fields, units.
export const O_X = 0; // world x of the left edge
export const O_Y = 1; // bottom, above the ground
export const O_W = 2;
export const O_H = 3;
export const OBSTACLE_FIELDS = 4;

export function isObstacleKind(kind) {
  return kind >= KIND_CACTUS_SMALL && kind <= KIND_BIRD_HIGH;
}

/** Lane index (0..=3) of a lane entity id, or -1. */
export function laneOfId(id) {
  return id >= LANE_ID_BASE && id < LANE_ID_BASE + LANE_COUNT ? id - LANE_ID_BASE : -1;
}
