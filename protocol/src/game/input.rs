//! The input datagram, client → server on `realtime` (frame type `0x02`).
//!
//! ```text
//! offset size
//! 0      1   0x02
//! 1      1   flags: bit 0 = `ack` present; other bits zero
//! 2      4   seq u32: datagram sequence number, +1 per datagram sent
//! 6      4   ack u32: newest snapshot tick the client decoded (0 if absent)
//! 10     2   ack_delay u16: ms between receiving that snapshot and sending
//!            this datagram (0 if absent)
//! 12     4   first_tick u32: the tick of the first input
//! 16     1   input_size u8: bytes per input, 1..=MAX_INPUT_BYTES
//! 17     1   count u8: inputs, 1..=MAX_INPUTS_PER_DATAGRAM
//! 18     count * input_size: inputs for ticks first_tick, first_tick+1, …
//! ```
//!
//! The last input is for the client's target tick (the tick it wants the
//! input applied at); the ones before it repeat inputs the server has not
//! acknowledged yet (redundancy: a lost datagram costs nothing as long as a
//! later one arrives within `MAX_INPUTS_PER_DATAGRAM` ticks).

use super::GameFrameError;

/// Most inputs one datagram carries (the redundancy window, in ticks).
pub const MAX_INPUTS_PER_DATAGRAM: usize = 32;
/// Largest input of any game, in bytes.
pub const MAX_INPUT_BYTES: usize = 16;
pub const INPUT_HEADER_LEN: usize = 18;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDatagram {
    pub seq: u32,
    /// Newest snapshot tick decoded, and how long ago (ms) it was received.
    pub ack: Option<SnapshotAck>,
    pub first_tick: u32,
    pub input_size: u8,
    /// `count * input_size` bytes: the inputs, oldest first.
    pub inputs: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotAck {
    pub tick: u32,
    pub delay_ms: u16,
}

impl InputDatagram {
    /// Number of inputs carried.
    pub fn count(&self) -> usize {
        if self.input_size == 0 {
            0
        } else {
            self.inputs.len() / usize::from(self.input_size)
        }
    }

    /// The inputs with their ticks, oldest first. Ticks wrap with `u32`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let size = usize::from(self.input_size.max(1));
        self.inputs
            .chunks_exact(size)
            .enumerate()
            .map(|(i, input)| (self.first_tick.wrapping_add(i as u32), input))
    }

    /// Appends the encoded datagram to `out`. Panics in debug builds if the
    /// datagram breaks the limits above (a bug in the caller).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        todo!("{out:?}")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INPUT_HEADER_LEN + self.inputs.len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes one datagram; every limit above is checked.
    pub fn decode(frame: &[u8]) -> Result<InputDatagram, GameFrameError> {
        todo!("{frame:?}")
    }
}
