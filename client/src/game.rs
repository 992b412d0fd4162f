//! The client side of authoritative rooms: the server runs the game, this
//! client sends inputs and receives delta snapshots, predicts its own entity
//! and interpolates the others.
//!
//! - [`GameCore`] is the whole protocol as a sans-IO state machine: it is fed
//!   the server's messages (bytes and text) and `now`, and produces the
//!   messages to send ([`GameOutput`]) and what happened ([`GameEvent`]).
//!   Tests drive it without any network.
//! - [`GameClient`] is the thin async driver: a [`Client`](crate::Client)
//!   joined to an authoritative room, a local tick timer at the room's
//!   tick rate, and a task that moves bytes and time between the two.
//!
//! Inside the core (private modules, in the order data flows):
//! - `clock`: NTP-style clock sync on `control` → offset to the server clock,
//!   RTT and jitter, hence the estimated server tick;
//! - `inputs`: the input pipeline (target ticks, redundancy, sequence
//!   numbers, snapshot acks);
//! - `snapshots`: the ring of applied states, delta application, snapshot
//!   arrival jitter, downstream loss and bytes;
//! - `core`: [`GameCore`], which ties them together with prediction,
//!   interpolation, events and stats;
//! - `driver`: [`GameClient`].
//!
//! The rules (tick numbering, when to sync the clock, which ticks an input
//! datagram carries…) are those of the server (`rtcrelay-relay`'s
//! `authoritative` module) and of the browser library; they are restated
//! where they are implemented.

mod clock;
mod core;
mod driver;
mod inputs;
mod snapshots;

use serde::Serialize;

pub use rtcrelay_protocol::game::control::{InjectedNetStats, PlayerNetStats};
pub use rtcrelay_protocol::game::{Entity, WorldState};

pub use self::core::GameCore;
pub use self::driver::{GameClient, InputSource};

/// Predicts how the client's own entity evolves, so that its own actions
/// show at once instead of a round trip later. Use the game's own physics
/// (the code the server runs) and predictions are exact unless something
/// else (another player, a late input) changed the outcome.
pub trait Predictor: Send {
    /// Advances `own` (the fields of the client's own entity) by one tick
    /// with `input` (`input_size` bytes) in `world` (the newest snapshot).
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState);
}

pub use rtcrelay_protocol::game::control::Hello;

/// A message [`GameCore`] wants sent to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameOutput {
    /// A binary message on `realtime` (an input datagram).
    Realtime(Vec<u8>),
    /// A JSON text message on `control`.
    Control(String),
}

/// What happened in the game, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum GameEvent {
    /// The server's `hello`: the room's parameters. Sent again at the
    /// start of each resumed session (see [`GameEvent::Connection`]).
    Hello(Hello),
    /// A snapshot newer than every one before was applied: the state
    /// ([`GameCore::state`]) is now that of `tick`.
    Snapshot { tick: u32 },
    /// A critical event (match start, score, match end…), handed out once
    /// per id however often the server resends it.
    Event {
        id: u64,
        tick: u32,
        event: serde_json::Value,
    },
    /// The server's net stats of every player of the room.
    Stats {
        tick: u32,
        players: Vec<PlayerNetStats>,
    },
    /// The server refused a command or a control message.
    Error { code: String, message: String },
    /// Room and connection news from the [`Client`](crate::Client) under a
    /// [`GameClient`]: [`ClientEvent::PeerJoined`], `PeerLeft` (of others),
    /// `PeerAway`, `PeerBack`, `Disconnected`, and the automatic
    /// reconnection's `Reconnecting`, `Resumed` and `ResumeFailed`. The
    /// game goes on across a resume: the server sends `hello` and a full
    /// snapshot again, and events missed meanwhile (surfaced once per id).
    Connection(crate::ClientEvent),
    /// The session is over (only from [`GameClient`]).
    Closed,
}

/// How the network looks from this client.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetStats {
    /// Smoothed round-trip time of the clock exchanges (RFC 6298 SRTT).
    pub rtt_ms: f64,
    /// Mean deviation of those RTTs (RFC 6298 RTTVAR).
    pub jitter_ms: f64,
    /// Snapshots not received over the last second (fraction of those the
    /// server's snapshot schedule says were due between the oldest and
    /// newest received), including those the server itself dropped.
    pub loss_down: f64,
    /// Input datagrams lost on the way up, as the server counted them (its
    /// last `stats`).
    pub loss_up: f64,
    /// Realtime bytes received over the last second.
    pub snapshot_bytes_per_s: f64,
    /// Times a snapshot showed the own entity's prediction was wrong.
    pub corrections: u64,
    /// How far behind the (estimated) newest server state remote entities
    /// are drawn: snapshot interval + 2 × snapshot arrival jitter.
    pub interp_delay_ms: f64,
    /// How many ticks ahead of the estimated server tick the last input was
    /// sent for.
    pub input_lead: f64,
    /// Snapshots applied after a newer one (kept as baselines, not shown).
    pub stale: u64,
    /// Deltas against a baseline this client no longer (or never) had.
    pub unknown_baseline: u64,
    /// Snapshots received twice.
    pub duplicate: u64,
    /// Frames or control messages that did not decode or apply.
    pub invalid: u64,
    /// Estimated server clock minus local clock (ms).
    pub clock_offset_ms: f64,
    /// The server's measurement of this client's RTT (realtime path).
    pub server_rtt_ms: f64,
    /// Sessions resumed after a lost connection (a `hello` after the first).
    pub resumes: u64,
}
