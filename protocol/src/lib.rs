//! Wire formats of rtcrelay. No I/O, no async: every decoder takes bytes and
//! returns a `Result`, bounds every length and never panics.
//!
//! - [`signaling`]: the JSON messages exchanged over `GET /ws` (protocol v1).
//! - [`frame`]: the binary frames the relay puts on DataChannels.
//! - [`game`]: authoritative rooms: input and snapshot datagrams, the world
//!   state they carry, and the JSON control messages.
//! - [`limits`]: sizes and counts shared by server and clients.
//! - [`ids`]: peer and room identifiers and their validation.

pub mod frame;
pub mod game;
pub mod ids;
pub mod limits;
pub mod signaling;

pub use ids::{PeerId, RoomId};
pub use signaling::{ClientMessage, ErrorCode, RoomKind, ServerMessage};

/// The signaling protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// DataChannel labels a client must open, and the parameters each must have.
pub mod channels {
    /// Unreliable, unordered (`ordered: false, maxRetransmits: 0`): inputs up,
    /// snapshots and relayed realtime messages down.
    pub const REALTIME: &str = "realtime";
    /// Reliable, ordered: everything that must arrive.
    pub const CONTROL: &str = "control";
}
