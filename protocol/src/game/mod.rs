//! Authoritative-room wire formats: what a client and the server peer
//! exchange on the two DataChannels once a game runs. No I/O.
//!
//! - [`varint`]: LEB128 and zigzag, the building blocks of the binary frames.
//! - [`input`]: the input datagram (client → server, `realtime`): sequence
//!   number, snapshot ack, and the last few inputs, each stamped with its tick.
//! - [`world`]: [`WorldState`], a game's state as the clients see it: entities
//!   with quantized integer fields.
//! - [`snapshot`]: the snapshot datagram (server → client, `realtime`): a
//!   delta of a [`WorldState`] against a baseline the client acknowledged,
//!   or a full state; the encoder and the decoder/applier.
//! - [`control`]: JSON messages on `control`: hello, clock sync, reliable
//!   events and their acks, commands, room stats.
//!
//! Frame types (first byte of every binary `realtime` message): `0x01`
//! relayed (relay rooms, see [`crate::frame`]), `0x02` input, `0x03`
//! snapshot. All fixed-width integers are big-endian.

pub mod control;
pub mod input;
pub mod snapshot;
pub mod varint;
pub mod world;

pub use input::InputDatagram;
pub use snapshot::{
    Encoded, EntityUpdate, FrameSpec, SnapshotEncoder, SnapshotHeader, SnapshotView,
};
pub use world::{Entity, WorldState};

/// Frame type of an input datagram.
pub const FRAME_INPUT: u8 = 0x02;
/// Frame type of a snapshot datagram.
pub const FRAME_SNAPSHOT: u8 = 0x03;

/// Why a game datagram could not be decoded or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameFrameError {
    #[error("frame is empty")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("frame ends early: need {need} more bytes at offset {at}")]
    Truncated { at: usize, need: usize },
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    #[error("reserved flag bits set: 0x{0:02x}")]
    ReservedFlags(u8),
    #[error("varint longer than 5 bytes or above u32::MAX at offset {0}")]
    BadVarint(usize),
    #[error("{what} is {got}, limit {max}")]
    TooMany {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("invalid value: {0}")]
    Invalid(String),
    /// A delta whose baseline the decoder does not have.
    #[error("baseline tick {0} is unknown")]
    UnknownBaseline(u32),
}

impl GameFrameError {
    /// A stable short name of the error kind (`truncated`, `bad_varint`…),
    /// the same in every implementation: used by the shared test vectors
    /// (`protocol/testdata/game-vectors.json`) and in logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GameFrameError::Empty => "empty",
            GameFrameError::UnknownType(_) => "unknown_type",
            GameFrameError::Truncated { .. } => "truncated",
            GameFrameError::Trailing(_) => "trailing",
            GameFrameError::ReservedFlags(_) => "reserved_flags",
            GameFrameError::BadVarint(_) => "bad_varint",
            GameFrameError::TooMany { .. } => "too_many",
            GameFrameError::Invalid(_) => "invalid",
            GameFrameError::UnknownBaseline(_) => "unknown_baseline",
        }
    }
}
