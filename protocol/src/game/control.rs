//! JSON text messages on the `control` channel of an authoritative room
//! (reliable, ordered). Tagged by `type`, snake_case, like signaling.
//!
//! Server time is milliseconds since the room's epoch; tick `k` is simulated
//! at `k * 1000 / tick_rate` ms. A client estimates the server's clock with
//! `clock` exchanges (NTP-style: `offset = ((t1 - t0) + (t2 - t3)) / 2`,
//! `rtt = (t3 - t0) - (t2 - t1)`, `t3` = client time the reply arrived).

use serde::{Deserialize, Serialize};

use crate::ids::PeerId;

/// Largest control message a client may send (bytes).
pub const MAX_CLIENT_CONTROL_BYTES: usize = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerControl {
    /// Sent once when the session is ready: how to talk to this room.
    Hello {
        /// Which game runs (`dizolaur`).
        game: String,
        tick_rate: u32,
        snapshot_rate: u32,
        /// Bytes per input.
        input_size: u8,
        /// Inputs for ticks beyond `tick + max_input_lead` are rejected.
        max_input_lead: u32,
        /// Inputs that arrive this many ticks late or less are still given
        /// to the game (lag compensation); older ones are dropped.
        max_rewind: u32,
        /// The server tick and time when this was sent.
        tick: u32,
        server_time_ms: f64,
        /// This client's own entity in snapshots, if it has one yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<u32>,
    },
    /// Reply to a client's `clock`.
    Clock {
        id: u32,
        /// Echoed client send time.
        t0: f64,
        /// Server time the request was received.
        t1: f64,
        /// Server time this reply was sent.
        t2: f64,
        /// Server tick at `t2`.
        tick: u32,
    },
    /// A critical event (match start, score change, match end…): resent
    /// until the client acks its `id`; ids increase by one per room.
    Event {
        id: u64,
        tick: u32,
        event: serde_json::Value,
    },
    /// Net stats of every player of the room, about once a second.
    Stats { tick: u32, players: Vec<PlayerNetStats> },
    /// A command or control message was refused.
    Error { code: String, message: String },
}

/// What the server measures per player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerNetStats {
    pub peer: PeerId,
    /// Round-trip time on the realtime path (snapshot → ack), smoothed.
    pub rtt_ms: f64,
    /// Mean deviation of the RTT samples, smoothed.
    pub jitter_ms: f64,
    /// Fraction of input datagrams lost client → server (by sequence gaps).
    pub loss: f64,
    pub inputs_late: u64,
    pub inputs_missing: u64,
    /// Snapshot bytes sent to this player per second.
    pub snapshot_bytes_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientControl {
    /// Clock sync request; `t0` is the client's own clock (ms).
    Clock { id: u32, t0: f64 },
    /// The event with this id was applied.
    EventAck { id: u64 },
    /// A game command (e.g. Dizolaur's `{"start":{"bots":true}}`).
    Command { command: serde_json::Value },
}

/// Decodes a client control message: size-bounded, then JSON.
pub fn decode_client_control(text: &str) -> Result<ClientControl, String> {
    if text.len() > MAX_CLIENT_CONTROL_BYTES {
        return Err(format!(
            "control message is {} bytes, limit {MAX_CLIENT_CONTROL_BYTES}",
            text.len()
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("bad control message: {e}"))
}
