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
//!
//! Heartbeat frame (type `0x04`), on `control`, in every room kind: exactly
//! one byte, no body. The server sends it to a peer it sent nothing to for
//! `relay.heartbeat_interval`, so that an idle client's SCTP stack has
//! something to acknowledge; those acknowledgements are what tells the
//! server the client is alive. Clients ignore it (it is not a message, nor
//! an error). Types `0x02` (input) and `0x03` (snapshot) are the game frames
//! of authoritative rooms (`crate::game`).

use crate::ids::PeerId;

pub const FRAME_RELAYED: u8 = 0x01;
pub const RELAYED_HEADER_LEN: usize = 6;
/// The heartbeat frame's type byte; the frame is this one byte.
pub const FRAME_HEARTBEAT: u8 = 0x04;
/// The whole heartbeat frame.
pub const HEARTBEAT: [u8; 1] = [FRAME_HEARTBEAT];

/// Is this DataChannel message from the server a heartbeat (which a client
/// drops without surfacing it)? Only a binary message can be one: `control`
/// carries JSON text in authoritative rooms, and a text `"\u{4}"` is text.
pub fn is_heartbeat(binary: bool, message: &[u8]) -> bool {
    binary && message == HEARTBEAT
}
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
    fn heartbeat_is_one_binary_byte() {
        assert_eq!(HEARTBEAT, [0x04]);
        assert!(is_heartbeat(true, &[0x04]));
        assert!(!is_heartbeat(false, &[0x04]), "a text message is never one");
        assert!(!is_heartbeat(true, &[0x04, 0]), "no body");
        assert!(!is_heartbeat(true, &[]));
        assert!(!is_heartbeat(true, &[FRAME_RELAYED]));
        // Not a relayed frame: a relay-room decoder that skipped the check
        // would report it as an unknown type, never misread it.
        assert_eq!(
            Relayed::decode(&HEARTBEAT),
            Err(FrameError::UnknownType(0x04))
        );
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
