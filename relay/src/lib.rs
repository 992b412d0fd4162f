//! The server-side WebRTC peer: str0m in ICE-lite mode, many peers on one UDP
//! socket, and the rooms that run on it.
//!
//! - [`Relay`]: starts the relay (binds the one UDP socket) and hands out
//!   the [`SessionHost`] that signaling uses.
//! - [`session`]: the hand-off from signaling (offer in, answer out, events
//!   back). Signaling sees only the [`SessionHost`] trait.
//! - [`metrics`]: counters and gauges of the packet path, and the network
//!   lab's injected totals per scope ([`metrics::NetlabMetrics`]).
//! - [`config`]: what the relay needs to start.
//! - [`authoritative`]: authoritative rooms (the [`Simulation`] trait, the
//!   tick loop, input buffers, delta snapshots), sans-IO.
//! - [`dizolaur`]: the demo game, a [`Simulation`]; [`games`]: the games
//!   this build runs ([`BuiltinGames`]).
//! - `host` (private): the UDP receive loop, routing each datagram to its
//!   peer's shard in O(1), and the `SessionHost` implementation.
//! - `routes` (private): the routing table (source address or STUN USERNAME
//!   to peer), sans-IO; `stun` (private): the USERNAME parser it uses.
//! - `shard` (private): a worker owning some peers' `Rtc`s and their rooms;
//!   it touches only peers that got input or whose deadline passed
//!   (`deadlines`, private). `shard::netlab` runs the network lab's
//!   impairment ([`RelayConfig::netlab`]) on each affected peer's datagrams,
//!   both ways, on the shard itself.
//! - `liveness` (private): when a peer is dead (nothing heard for
//!   [`RelayConfig::dead_after`]) and when it needs a heartbeat frame,
//!   sans-IO; the shard folds it into the peer's deadline.
//! - `room` (private): relay rooms, the required channels and the
//!   forwarding limits, sans-IO.

pub mod authoritative;
pub mod config;
pub mod dizolaur;
pub mod games;
pub mod metrics;
pub mod session;

mod deadlines;
mod host;
mod liveness;
mod room;
mod routes;
mod shard;
mod stun;

pub use authoritative::{
    AfterGrace, AuthoritativeRoom, AwayPolicy, GameConfig, GameFactory, ResumePolicy, ResumeRules,
    Simulation,
};
pub use config::RelayConfig;
pub use games::BuiltinGames;
pub use host::Relay;
pub use metrics::RelayMetrics;
pub use session::{
    SeatEnd, SessionAnswer, SessionError, SessionEvent, SessionHost, SessionRequest,
};
