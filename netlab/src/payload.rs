//! What the model holds for each packet: anything that knows its length and
//! can have a bit flipped.

use bytes::{Bytes, BytesMut};

/// A packet's contents as the model sees them. `Clone` makes duplicates;
/// [`byte_len`](Payload::byte_len) feeds the rate limit;
/// [`flip_bit`](Payload::flip_bit) is corruption.
pub trait Payload: Clone {
    /// Length in bytes (without `rate.overhead_bytes`).
    fn byte_len(&self) -> usize;

    /// Invert bit `bit` (`0..byte_len() * 8`, bit 0 = least significant bit
    /// of byte 0). Out-of-range bits are ignored.
    fn flip_bit(&mut self, bit: usize);
}

/// A packet known only by its length: for simulations and drivers that keep
/// the bytes elsewhere. Corruption is reported in the
/// [`Decision`](crate::Decision) but has nothing to flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketLen(pub usize);

impl Payload for PacketLen {
    fn byte_len(&self) -> usize {
        self.0
    }

    fn flip_bit(&mut self, _bit: usize) {}
}

fn flip(bytes: &mut [u8], bit: usize) {
    if let Some(byte) = bytes.get_mut(bit / 8) {
        *byte ^= 1 << (bit % 8);
    }
}

impl Payload for Vec<u8> {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        flip(self, bit);
    }
}

impl Payload for Box<[u8]> {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        flip(self, bit);
    }
}

impl Payload for BytesMut {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        flip(self, bit);
    }
}

/// `Bytes` is shared and immutable: a corrupted packet gets its own copy, so
/// other holders (a duplicate, the sender) keep the original.
impl Payload for Bytes {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn flip_bit(&mut self, bit: usize) {
        let mut own = BytesMut::from(self.as_ref());
        flip(&mut own, bit);
        *self = own.freeze();
    }
}
