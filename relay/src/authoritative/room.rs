//! [`AuthoritativeRoom`]: one running game and its players' pipelines.

use std::time::{Duration, Instant};

use rtcrelay_protocol::PeerId;

use super::simulation::Simulation;

/// How an authoritative room runs. Filled from the `[game]` config section.
#[derive(Debug, Clone)]
pub struct GameConfig {
    /// Simulation ticks per second (default 60).
    pub tick_rate: u32,
    /// Snapshots per second to each client (default 30; at most `tick_rate`).
    pub snapshot_rate: u32,
    /// Inputs for ticks more than this many ticks ahead of the server are
    /// rejected (default: one second of ticks).
    pub max_input_lead: u32,
    /// How often each client gets a `stats` message (default 1 s).
    pub stats_interval: Duration,
    /// Largest snapshot frame (default and maximum 1,200 bytes).
    pub max_snapshot_bytes: usize,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            tick_rate: 60,
            snapshot_rate: 30,
            max_input_lead: 60,
            stats_interval: Duration::from_secs(1),
            max_snapshot_bytes: rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES,
        }
    }
}

/// A message the room wants sent. The shard writes it; a realtime message
/// that does not fit the channel's buffer is dropped, never queued.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomOutput {
    /// A binary frame on `realtime` (a snapshot).
    Realtime { peer: PeerId, data: Vec<u8> },
    /// A JSON text message on `control`.
    Control { peer: PeerId, text: String },
}

pub struct AuthoritativeRoom {
    _sim: Box<dyn Simulation>,
}

impl AuthoritativeRoom {
    /// A room running `sim` (created with `seed`), its tick 0 at `now`.
    pub fn new(
        sim: Box<dyn Simulation>,
        seed: u64,
        config: GameConfig,
        metrics: crate::metrics::RelayMetrics,
        now: Instant,
    ) -> AuthoritativeRoom {
        todo!("{seed}{config:?}{metrics:?}{now:?}{}", sim.game())
    }

    /// A player entered (its session was opened). Err: the game refused.
    pub fn join(&mut self, peer: PeerId, name: &str, now: Instant) -> Result<(), String> {
        todo!("{peer}{name}{now:?}")
    }

    /// The player's channels are open: it gets `hello`, then snapshots.
    pub fn ready(&mut self, peer: PeerId, now: Instant) {
        todo!("{peer}{now:?}")
    }

    /// The player left or was disconnected.
    pub fn leave(&mut self, peer: PeerId, now: Instant) {
        todo!("{peer}{now:?}")
    }

    /// A binary message on `realtime` (an input datagram). Bad ones are
    /// dropped and counted.
    pub fn on_realtime(&mut self, peer: PeerId, data: &[u8], now: Instant) {
        todo!("{peer}{data:?}{now:?}")
    }

    /// A text message on `control`. Bad ones get an `error` reply.
    pub fn on_control(&mut self, peer: PeerId, text: &str, now: Instant) {
        todo!("{peer}{text}{now:?}")
    }

    /// When `handle_timeout` must next be called (next tick, snapshot,
    /// retransmission or stats message).
    pub fn next_timeout(&self) -> Instant {
        todo!()
    }

    /// Runs every tick due by `now` (bounded catch-up), sends the snapshots,
    /// retransmissions and stats that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!("{now:?}")
    }

    /// The next message to send, if any.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        todo!()
    }

    /// No players left: the shard drops the room.
    pub fn is_empty(&self) -> bool {
        todo!()
    }
}
