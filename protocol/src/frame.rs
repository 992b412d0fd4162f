//! Binary frames the server sends on DataChannels.
//!
//! Every server frame starts with a one-byte frame type, so that later frame
//! kinds (inputs, snapshots, clock sync) share the channels without ambiguity.
//! Clients send raw payloads in relay rooms; the server adds the header.
//!
//! Relayed frame (type `0x01`), all integers big-endian:
//!
//! ```text
//! 0      1      2              6
//! +------+------+--------------+----------------------+
//! | 0x01 | flags| sender u32   | payload ...          |
//! +------+------+--------------+----------------------+
//! flags bit 0: the sender sent a text (UTF-8) message; other bits are zero.
//! ```

use crate::ids::PeerId;

pub const FRAME_RELAYED: u8 = 0x01;
pub const RELAYED_HEADER_LEN: usize = 6;
const FLAG_TEXT: u8 = 0x01;

/// A relayed message, borrowed from the frame it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub sender: PeerId,
    /// The sender sent a text message; `payload` is then valid UTF-8.
    pub text: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is empty")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("frame is {len} bytes, shorter than its {need}-byte header")]
    Truncated { len: usize, need: usize },
    #[error("reserved flag bits set: 0x{0:02x}")]
    ReservedFlags(u8),
    #[error("text payload is not UTF-8")]
    NotUtf8,
}

impl Relayed<'_> {
    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(RELAYED_HEADER_LEN + self.payload.len());
        out.push(FRAME_RELAYED);
        out.push(if self.text { FLAG_TEXT } else { 0 });
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        out.extend_from_slice(self.payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Relayed<'_>, FrameError> {
        let (&ty, _) = frame.split_first().ok_or(FrameError::Empty)?;
        if ty != FRAME_RELAYED {
            return Err(FrameError::UnknownType(ty));
        }
        if frame.len() < RELAYED_HEADER_LEN {
            return Err(FrameError::Truncated {
                len: frame.len(),
                need: RELAYED_HEADER_LEN,
            });
        }
        let flags = frame[1];
        if flags & !FLAG_TEXT != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        let sender = PeerId(u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]));
        let payload = &frame[RELAYED_HEADER_LEN..];
        let text = flags & FLAG_TEXT != 0;
        if text && std::str::from_utf8(payload).is_err() {
            return Err(FrameError::NotUtf8);
        }
        Ok(Relayed {
            sender,
            text,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = Relayed {
            sender: PeerId(0xA1B2C3D4),
            text: true,
            payload: "héllo".as_bytes(),
        };
        let bytes = r.encode();
        assert_eq!(&bytes[..6], &[0x01, 0x01, 0xA1, 0xB2, 0xC3, 0xD4]);
        assert_eq!(Relayed::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn rejects_malformed_frames() {
        assert_eq!(Relayed::decode(&[]), Err(FrameError::Empty));
        assert_eq!(
            Relayed::decode(&[9, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownType(9))
        );
        assert_eq!(
            Relayed::decode(&[1, 0, 0]),
            Err(FrameError::Truncated { len: 3, need: 6 })
        );
        assert_eq!(
            Relayed::decode(&[1, 2, 0, 0, 0, 1]),
            Err(FrameError::ReservedFlags(2))
        );
        assert_eq!(
            Relayed::decode(&[1, 1, 0, 0, 0, 1, 0xff]),
            Err(FrameError::NotUtf8)
        );
        // Every byte string decodes to a value or an error, never a panic.
        for len in 0..8 {
            for seed in 0..=255u8 {
                let v: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i))
                    .collect();
                let _ = Relayed::decode(&v);
            }
        }
    }
}
