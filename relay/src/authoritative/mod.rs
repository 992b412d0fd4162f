//! Authoritative rooms, sans-IO: the server runs the game. Inputs come in
//! on `realtime` (unreliable, unordered), the fixed-timestep simulation
//! advances, and each client gets delta snapshots against what it
//! acknowledged; clock sync, reliable events and stats go on `control`.
//!
//! - [`simulation`]: the [`Simulation`] trait a game implements.
//! - [`clock`]: [`TickClock`], the fixed timestep that never drifts.
//! - [`inputs`]: per-player input buffers and their acceptance rules.
//! - [`snapshots`]: per-client baselines and delta encoding.
//! - [`events`]: critical events, retransmitted until acknowledged.
//! - [`netstats`]: per-player RTT, jitter and loss.
//! - [`log`]: the match log (seed + accepted inputs) and its replay.
//! - [`resume`]: the rules for players who lost their connection (grace
//!   period, away policy, what happens to the seat after).
//! - [`room`]: [`AuthoritativeRoom`], which ties them together; the shard
//!   drives it with bytes and `now`.

pub mod clock;
pub mod events;
pub mod inputs;
pub mod log;
pub mod netstats;
pub mod resume;
pub mod room;
pub mod simulation;
pub mod snapshots;

pub use clock::TickClock;
pub use log::{replay, MatchLog};
pub use resume::{AfterGrace, AwayPolicy, ResumePolicy, ResumeRules};
pub use room::{AuthoritativeRoom, GameConfig, RoomOutput};
pub use simulation::{GameFactory, Simulation, StateHasher};
