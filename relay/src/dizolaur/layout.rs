//! Dizolaur's constants and snapshot layout (documented in [`super`]).
//! `web/dizolaur/fields.js` mirrors every value here; change both.

// ---- Time ----
/// Ticks per second the physics is tuned for.
pub const TICK_RATE: u32 = 60;
/// Ticks of the countdown (3 s).
pub const COUNTDOWN_TICKS: u32 = 3 * TICK_RATE;
/// Late inputs up to this many ticks old rewind the player's lane; a crash
/// (and a score milestone) is confirmed this many ticks after it happened.
pub const MAX_REWIND: u32 = 8;
pub const DEFAULT_MAX_SECONDS: u32 = 180;
pub const MIN_MAX_SECONDS: u32 = 10;
pub const MAX_MAX_SECONDS: u32 = 600;

// ---- Units and screen ----
/// Positions, sizes and speeds are in units of 1/256 px.
pub const UNITS_PER_PX: i32 = 256;
/// One distance unit ("meter") is 40 px of scroll.
pub const METER_PX: i32 = 40;
pub const METER: i32 = METER_PX * UNITS_PER_PX;
/// A `score` event each time a runner passes a multiple of this distance.
pub const SCORE_MILESTONE: i32 = 500;
pub const LANE_WIDTH_PX: i32 = 600;
pub const LANE_HEIGHT_PX: i32 = 150;
/// The runner's left edge, px from the lane's left edge (at world x scroll).
pub const RUNNER_X_PX: i32 = 50;
pub const RUNNER_X: i32 = RUNNER_X_PX * UNITS_PER_PX;
/// Obstacles are in snapshots while `x + w > scroll - VIEW_BEHIND` and
/// `x < scroll + VIEW_AHEAD`.
pub const VIEW_BEHIND: i32 = 100 * UNITS_PER_PX;
pub const VIEW_AHEAD: i32 = 1200 * UNITS_PER_PX;

// ---- Runner hitboxes (units, x from the runner's left edge) ----
pub const STAND_HITBOX_X0: i32 = 6 * UNITS_PER_PX;
pub const STAND_HITBOX_X1: i32 = 38 * UNITS_PER_PX;
pub const STAND_HITBOX_H: i32 = 44 * UNITS_PER_PX;
pub const DUCK_HITBOX_X0: i32 = 4 * UNITS_PER_PX;
pub const DUCK_HITBOX_X1: i32 = 54 * UNITS_PER_PX;
pub const DUCK_HITBOX_H: i32 = 26 * UNITS_PER_PX;

// ---- Physics (units, per tick) ----
pub const GRAVITY: i32 = 154;
pub const JUMP_VELOCITY: i32 = 2560;
pub const DROP_VELOCITY: i32 = 1280;
pub const FAST_FALL_GRAVITY: i32 = 462;
pub const SPEED_START: i32 = 1536;
pub const SPEED_MAX: i32 = 3328;
pub const SPEED_RAMP_TICKS: i32 = 4;

// ---- Obstacles (px) ----
pub const CACTUS_SMALL_W_PX: i32 = 17;
pub const CACTUS_SMALL_H_PX: i32 = 35;
pub const CACTUS_LARGE_W_PX: i32 = 25;
pub const CACTUS_LARGE_H_PX: i32 = 50;
pub const BIRD_W_PX: i32 = 42;
pub const BIRD_H_PX: i32 = 26;
pub const BIRD_LOW_Y_PX: i32 = 14;
pub const BIRD_MID_Y_PX: i32 = 32;
pub const BIRD_HIGH_Y_PX: i32 = 50;

// ---- Input ----
pub const INPUT_SIZE: u8 = 1;
pub const INPUT_JUMP: u8 = 0x01;
pub const INPUT_DUCK: u8 = 0x02;
pub const INPUT_MASK: u8 = INPUT_JUMP | INPUT_DUCK;

// ---- Entities ----
pub const MATCH_ID: u32 = 0;
pub const LANE_ID_BASE: u32 = 1;
pub const LANE_COUNT: usize = 4;
pub const OBSTACLE_ID_BASE: u32 = 100;

pub const KIND_MATCH: u8 = 0;
pub const KIND_RUNNER: u8 = 1;
pub const KIND_CACTUS_SMALL: u8 = 2;
pub const KIND_CACTUS_LARGE: u8 = 3;
pub const KIND_BIRD_LOW: u8 = 4;
pub const KIND_BIRD_MID: u8 = 5;
pub const KIND_BIRD_HIGH: u8 = 6;

// Match entity fields.
pub const M_PHASE: usize = 0;
pub const M_PHASE_TICK: usize = 1;
pub const M_COUNTDOWN: usize = 2;
pub const M_START_TICK: usize = 3;
pub const M_MAX_TICKS: usize = 4;
pub const M_SPEED: usize = 5;
pub const M_SCROLL: usize = 6;
pub const M_MATCH: usize = 7;
pub const M_BOTS: usize = 8;
pub const M_WINNERS: usize = 9;
pub const M_RUNNING: usize = 10;
pub const MATCH_FIELDS: usize = 11;

pub const PHASE_LOBBY: i32 = 0;
pub const PHASE_COUNTDOWN: i32 = 1;
pub const PHASE_RUNNING: i32 = 2;
pub const PHASE_ENDED: i32 = 3;

// Lane entity fields.
pub const P_PEER: usize = 0;
pub const P_BOT: usize = 1;
pub const P_STATE: usize = 2;
pub const P_Y: usize = 3;
pub const P_VY: usize = 4;
pub const P_INPUT: usize = 5;
pub const P_TICK: usize = 6;
pub const P_DISTANCE: usize = 7;
pub const P_PENDING: usize = 8;
pub const P_OUT_TICK: usize = 9;
pub const P_PLACE: usize = 10;
pub const LANE_FIELDS: usize = 11;

pub const STATE_EMPTY: i32 = 0;
pub const STATE_IDLE: i32 = 1;
pub const STATE_RUNNING: i32 = 2;
pub const STATE_JUMPING: i32 = 3;
pub const STATE_DUCKING: i32 = 4;
pub const STATE_CRASHED: i32 = 5;
pub const STATE_OUT: i32 = 6;
pub const STATE_FINISHED: i32 = 7;

// Obstacle entity fields.
pub const O_X: usize = 0;
pub const O_Y: usize = 1;
pub const O_W: usize = 2;
pub const O_H: usize = 3;
pub const OBSTACLE_FIELDS: usize = 4;
