//! Dizolaur, the demo game: a Chrome-dino-like runner for up to 4 players
//! racing in 4 lanes side by side, server-authoritative, as a
//! [`Simulation`](crate::authoritative::Simulation). `docs/simulation.md`
//! walks through it as the example of writing a game.
//!
//! # Rules
//!
//! - **Seats.** [`Dizolaur::add_player`](crate::authoritative::Simulation::add_player)
//!   seats a person in the lowest free lane; with no free lane, in lobby or
//!   ended it takes the lowest bot's seat; mid-match it is refused ("every
//!   lane is taken until the match ends"), and with 4 people "the match is
//!   full". Someone who joins during a match waits (`STATE_IDLE`) for the
//!   next one. Leaving mid-race puts the runner out (`STATE_OUT`, a
//!   `player_out` event with `"reason":"left"`; it cannot win); leaving
//!   with a crash pending lets the crash stand.
//! - **Phases.** lobby → countdown (3 s) → running → ended; a `start`
//!   command from any seated person in lobby or ended starts the countdown:
//!   `{"start":{"bots":true,"max_seconds":180}}` (both optional; defaults
//!   false and 180; `max_seconds` in 10..=600). `bots: true` fills the empty
//!   lanes with bots, `false` removes them. Anything else is refused with a
//!   message. Each match draws its own seed from the game's seed.
//! - **Input**, 1 byte: bit 0 jump (held), bit 1 duck (held), other bits
//!   must be zero. A jump starts on a *press* on the ground; releasing it
//!   early makes a lower hop; duck on the ground lowers the hitbox, in the
//!   air it falls fast. The physics is [`physics::advance`].
//! - **The race.** Everyone shares one scroll: its speed rises with the run
//!   tick ([`physics::speed_at`], [`physics::scroll_at`], 6 → 13 px/tick
//!   over ~2 minutes). The obstacles (cacti in groups of 1..=3, birds at
//!   low/mid/high heights) come from a `ChaCha8Rng` seeded with the match
//!   seed, at fixed world x, identical in every lane, spaced so that a
//!   perfect player always survives ([`obstacles`] documents the gap rule).
//!   A runner touching an obstacle crashes.
//! - **Lag compensation.** A late input for tick `t` with
//!   `tick - MAX_REWIND < t <= tick` replaces the one used at `t`, and that
//!   racer's lane alone is re-simulated from `t` before the next step
//!   (lanes never interact and the track does not depend on the runners).
//!   Older inputs are ignored. So a crash at tick `c` is *pending*
//!   (`P_PENDING = 1`) until tick `c + MAX_REWIND`, when it is confirmed and
//!   `player_out` is sent; score milestones are likewise sent once the tick
//!   that reached them is `MAX_REWIND` ticks old.
//! - **The end.** The match ends when every racer's outcome is final: left,
//!   crash confirmed, or still running at the time limit (run tick
//!   `max_ticks`; nothing moves after it) and `MAX_REWIND` ticks since.
//!   Ranking: those who stayed, by the tick their race ended (later is
//!   better, i.e. the last one standing first), then those who left; equal
//!   ticks share a place. Winners: those who stayed with the best tick —
//!   the last one standing, everyone who crashed on the same last tick, or
//!   everyone still running at the time limit.
//! - **Bots** play [`bot_input`] (perfect) with seeded reaction delays
//!   ([`bot::BotReflexes`]), so their matches end.
//! - **Pause** (the room's `pause` away policy, `set_paused`): only a
//!   match counting down or running pauses (in the lobby or after the end
//!   it is a no-op). While paused each step advances the tick and takes the
//!   inputs, and nothing else: no runner moves, no obstacle is made or
//!   dropped, no crash, milestone or end is decided, bots do not act. Every
//!   tick stamp of the match (`M_START_TICK`, `M_PHASE_TICK`, crash and
//!   leave ticks) moves on by one per paused tick, so run tick = tick −
//!   `M_START_TICK`, the countdown and the time limit stand still and the
//!   race resumes exactly where it stopped; ticks in later events and
//!   snapshots are on this shifted clock. `M_SPEED` is 0 while paused.
//!   Pausing applies the late inputs already given and then forgets the
//!   rewind history: no late input rewinds across a pause.
//! - **Bot takeover** (the room's `bot` after-grace rule,
//!   `replace_with_bot`): a bot takes over the lane of a person whose
//!   runner is still running (countdown or race), with the usual reaction
//!   delays; a `bot_takeover` event says so, and the lane keeps naming the
//!   person: `P_PEER` stays their id with `P_BOT` = 1, and its later
//!   `score`, `player_out` and `match_end` entries carry their `peer` with
//!   `"bot":true`. A person already out (crashed, even pending, or left),
//!   waiting for the next match, or in the lobby or after the end gets no
//!   bot (false: the room removes them). The lane stays a bot lane until
//!   the next `start` (which empties it unless `bots` is true).
//!
//! # Events (`step` pushes them; the room delivers them reliably)
//!
//! ```text
//! {"kind":"match_start","match":n,"tick":start_tick,"seed":match_seed,"max_seconds":s,
//!  "players":[{"lane":0,"peer":7,"bot":false},{"lane":1,"peer":null,"bot":true}]}
//! {"kind":"score","lane":0,"peer":7,"bot":false,"distance":500}   (each 500 m, confirmed)
//! {"kind":"player_out","lane":0,"peer":7,"bot":false,"distance":812,"tick":t,"reason":"crash"|"left"}
//! {"kind":"bot_takeover","lane":0,"peer":7,"tick":t}         (a bot plays the lane from tick t)
//! {"kind":"match_end","tick":t,"ranking":[{"lane","peer","bot","distance"}...],"winners":[lanes]}
//! ```
//! `peer` is `null` for bots; a lane a bot took over keeps the person's
//! `peer`, with `"bot":true`. `match_start` is sent at the first tick of the
//! countdown; its `tick` is the race clock's zero (see `M_START_TICK`).
//!
//! # Snapshot layout
//!
//! Units: positions, sizes and speeds in 1/256 px ([`UNITS_PER_PX`]); y up
//! from the ground; world x from the lane's left edge at the start, so the
//! lane's left edge is at world x = scroll and the runner at scroll +
//! [`RUNNER_X`]. Distance: whole meters, 1 m = 40 px of scroll. Run tick =
//! tick − `M_START_TICK` (≤ 0 during the countdown).
//!
//! | id | kind | fields |
//! |----|------|--------|
//! | 0 | `KIND_MATCH` 0 | `M_PHASE` (`PHASE_*`: lobby 0, countdown 1, running 2, ended 3), `M_PHASE_TICK` (tick the phase began), `M_COUNTDOWN` (ticks left; 0 outside the countdown), `M_START_TICK`, `M_MAX_TICKS` (run ticks the race lasts at most), `M_SPEED` (units/tick, 0 when not moving: countdown, paused, past the limit), `M_SCROLL` (units), `M_MATCH` (match number), `M_BOTS` (0/1), `M_WINNERS` (bit per lane), `M_RUNNING` (racers alive or crash pending) |
//! | 1..=4 (lane 0..=3) | `KIND_RUNNER` 1 | `P_PEER` (peer id as i32, 0 = none; on a lane a bot took over, the person's), `P_BOT` (0/1), `P_STATE` (`STATE_*`: empty 0, idle 1, running 2, jumping 3, ducking 4, crashed 5, out 6, finished 7), `P_Y`, `P_VY` (units, units/tick, up > 0), `P_INPUT` (last input applied), `P_TICK` (tick of this state), `P_DISTANCE` (m), `P_PENDING` (crash not yet confirmed), `P_OUT_TICK` (crash or leave tick, 0 = none), `P_PLACE` (after the end, 1 = winner) |
//! | 100 + serial | `KIND_CACTUS_SMALL` 2, `KIND_CACTUS_LARGE` 3, `KIND_BIRD_LOW` 4, `KIND_BIRD_MID` 5, `KIND_BIRD_HIGH` 6 | `O_X`, `O_Y` (bottom), `O_W`, `O_H` (units) |
//!
//! Obstacles are sent only near the view: `x + w > scroll − 100 px` and
//! `x < scroll + 1200 px`, nearer first in id order (ids are the priority
//! when a snapshot is cut to fit). A full state is a few hundred bytes.
//! The constants are in [`layout`] (re-exported here) and mirrored for the
//! browser in `web/dizolaur/fields.js`.
//!
//! # Client prediction
//!
//! [`predict_player`] advances a lane entity by one tick given its input,
//! with the simulation's own code (`web/dizolaur/physics.js` is its exact
//! port, checked against `relay/testdata/dizolaur-prediction.json`).
//! Crashes are never predicted.

pub mod bot;
mod game;
pub mod layout;
pub mod obstacles;
pub mod physics;

#[cfg(test)]
mod tests;

pub use bot::bot_input;
pub use game::{Dizolaur, GAME_NAME};
pub use layout::*;
pub use physics::{predict_player, scroll_at, speed_at};

use crate::authoritative::{GameFactory, Simulation};

/// Creates [`Dizolaur`] games (game name `"dizolaur"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DizolaurFactory;

impl GameFactory for DizolaurFactory {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
        (game == GAME_NAME).then(|| Box::new(Dizolaur::new(seed)) as Box<dyn Simulation>)
    }
}
