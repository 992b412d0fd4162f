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
//! A decoder rejects: another first byte, flag bits other than bit 0,
//! non-zero `ack`/`ack_delay` when the flag is clear, `input_size` or
//! `count` out of range, and a length other than exactly
//! `18 + count * input_size` (trailing bytes are an error too). So every
//! frame that decodes re-encodes to the same bytes.
//!
//! The last input is for the client's target tick (the tick it wants the
//! input applied at); the ones before it repeat inputs the server has not
//! acknowledged yet (redundancy: a lost datagram costs nothing as long as a
//! later one arrives within `MAX_INPUTS_PER_DATAGRAM` ticks).

use super::{GameFrameError, FRAME_INPUT};

const FLAG_ACK: u8 = 0x01;

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
        let size = usize::from(self.input_size);
        debug_assert!((1..=MAX_INPUT_BYTES).contains(&size), "input_size {size}");
        debug_assert!(
            size > 0
                && self.inputs.chunks_exact(size).remainder().is_empty()
                && (1..=MAX_INPUTS_PER_DATAGRAM).contains(&(self.inputs.len() / size)),
            "{} input bytes of size {size}",
            self.inputs.len()
        );
        let count = self.count() as u8;
        let (flags, ack) = match self.ack {
            Some(ack) => (FLAG_ACK, ack),
            None => (
                0,
                SnapshotAck {
                    tick: 0,
                    delay_ms: 0,
                },
            ),
        };
        out.reserve(INPUT_HEADER_LEN + self.inputs.len());
        out.push(FRAME_INPUT);
        out.push(flags);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&ack.tick.to_be_bytes());
        out.extend_from_slice(&ack.delay_ms.to_be_bytes());
        out.extend_from_slice(&self.first_tick.to_be_bytes());
        out.push(self.input_size);
        out.push(count);
        out.extend_from_slice(&self.inputs);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INPUT_HEADER_LEN + self.inputs.len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes one datagram; every limit above is checked.
    pub fn decode(frame: &[u8]) -> Result<InputDatagram, GameFrameError> {
        let (&ty, _) = frame.split_first().ok_or(GameFrameError::Empty)?;
        if ty != FRAME_INPUT {
            return Err(GameFrameError::UnknownType(ty));
        }
        let Some(header) = frame.get(..INPUT_HEADER_LEN) else {
            return Err(GameFrameError::Truncated {
                at: frame.len(),
                need: INPUT_HEADER_LEN - frame.len(),
            });
        };
        let u32_at =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let flags = header[1];
        if flags & !FLAG_ACK != 0 {
            return Err(GameFrameError::ReservedFlags(flags));
        }
        let seq = u32_at(2);
        let ack_tick = u32_at(6);
        let ack_delay = u16::from_be_bytes([header[10], header[11]]);
        let ack = if flags & FLAG_ACK != 0 {
            Some(SnapshotAck {
                tick: ack_tick,
                delay_ms: ack_delay,
            })
        } else if ack_tick != 0 || ack_delay != 0 {
            return Err(GameFrameError::Invalid(
                "ack fields set without the ack flag".into(),
            ));
        } else {
            None
        };
        let first_tick = u32_at(12);
        let input_size = header[16];
        let size = usize::from(input_size);
        if size == 0 {
            return Err(GameFrameError::Invalid("input_size is 0".into()));
        }
        if size > MAX_INPUT_BYTES {
            return Err(GameFrameError::TooMany {
                what: "input_size",
                got: size,
                max: MAX_INPUT_BYTES,
            });
        }
        let count = usize::from(header[17]);
        if count == 0 {
            return Err(GameFrameError::Invalid("input count is 0".into()));
        }
        if count > MAX_INPUTS_PER_DATAGRAM {
            return Err(GameFrameError::TooMany {
                what: "input count",
                got: count,
                max: MAX_INPUTS_PER_DATAGRAM,
            });
        }
        let body = &frame[INPUT_HEADER_LEN..];
        let want = count * size;
        if body.len() < want {
            return Err(GameFrameError::Truncated {
                at: frame.len(),
                need: want - body.len(),
            });
        }
        if body.len() > want {
            return Err(GameFrameError::Trailing(body.len() - want));
        }
        Ok(InputDatagram {
            seq,
            ack,
            first_tick,
            input_size,
            inputs: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InputDatagram {
        InputDatagram {
            seq: 0x0102_0304,
            ack: Some(SnapshotAck {
                tick: 0x0A0B_0C0D,
                delay_ms: 0x1234,
            }),
            first_tick: 0xFFFF_FFFF,
            input_size: 2,
            inputs: vec![0xA1, 0xA2, 0xB1, 0xB2],
        }
    }

    fn frame(flags: u8, size: u8, count: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![FRAME_INPUT, flags, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        f.push(size);
        f.push(count);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = sample().encode();
        assert_eq!(
            bytes,
            [
                0x02, 0x01, // type, flags: ack
                0x01, 0x02, 0x03, 0x04, // seq
                0x0A, 0x0B, 0x0C, 0x0D, // ack tick
                0x12, 0x34, // ack delay
                0xFF, 0xFF, 0xFF, 0xFF, // first tick
                0x02, 0x02, // input size, count
                0xA1, 0xA2, 0xB1, 0xB2,
            ]
        );
        assert_eq!(InputDatagram::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn without_ack_the_ack_fields_are_zero() {
        let d = InputDatagram {
            ack: None,
            ..sample()
        };
        let bytes = d.encode();
        assert_eq!(bytes[1], 0);
        assert_eq!(&bytes[6..12], &[0; 6]);
        assert_eq!(InputDatagram::decode(&bytes), Ok(d));
    }

    #[test]
    fn encode_into_appends() {
        let mut out = vec![0xEE];
        sample().encode_into(&mut out);
        assert_eq!(out[0], 0xEE);
        assert_eq!(&out[1..], sample().encode().as_slice());
    }

    #[test]
    fn count_and_ticks_wrap() {
        let d = sample();
        assert_eq!(d.count(), 2);
        let ticks: Vec<(u32, Vec<u8>)> = d.iter().map(|(t, x)| (t, x.to_vec())).collect();
        assert_eq!(ticks, [(u32::MAX, vec![0xA1, 0xA2]), (0, vec![0xB1, 0xB2])]);
    }

    #[test]
    fn limits_are_accepted_at_their_bounds() {
        for (size, count) in [(1, 1), (16, 1), (1, 32), (16, 32)] {
            let body = vec![7; size * count];
            let bytes = frame(0, size as u8, count as u8, &body);
            let d = InputDatagram::decode(&bytes).expect("at the limit");
            assert_eq!(d.count(), count);
            assert_eq!(d.encode(), bytes);
        }
    }

    #[test]
    fn every_prefix_is_truncated() {
        let bytes = sample().encode();
        assert_eq!(InputDatagram::decode(&[]), Err(GameFrameError::Empty));
        for len in 1..bytes.len() {
            match InputDatagram::decode(&bytes[..len]) {
                Err(GameFrameError::Truncated { need, .. }) => {
                    let need_total = if len < INPUT_HEADER_LEN {
                        INPUT_HEADER_LEN - len
                    } else {
                        bytes.len() - len
                    };
                    assert_eq!(need, need_total, "prefix {len}");
                }
                other => panic!("prefix {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_other_frame_types() {
        for ty in [0x00, 0x01, 0x03, 0xFF] {
            assert_eq!(
                InputDatagram::decode(&[ty; 20]),
                Err(GameFrameError::UnknownType(ty))
            );
        }
    }

    #[test]
    fn rejects_reserved_flags() {
        for bit in 1..8 {
            let flags = 1u8 << bit;
            assert_eq!(
                InputDatagram::decode(&frame(flags, 1, 1, &[0])),
                Err(GameFrameError::ReservedFlags(flags))
            );
        }
    }

    #[test]
    fn rejects_ack_fields_without_the_flag() {
        let mut bytes = frame(0, 1, 1, &[0]);
        bytes[9] = 1;
        assert!(matches!(
            InputDatagram::decode(&bytes),
            Err(GameFrameError::Invalid(_))
        ));
        let mut bytes = frame(0, 1, 1, &[0]);
        bytes[11] = 1;
        assert!(matches!(
            InputDatagram::decode(&bytes),
            Err(GameFrameError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_bad_sizes_and_counts() {
        assert!(matches!(
            InputDatagram::decode(&frame(0, 0, 1, &[])),
            Err(GameFrameError::Invalid(_))
        ));
        for size in [17u8, 255] {
            assert_eq!(
                InputDatagram::decode(&frame(0, size, 1, &vec![0; size.into()])),
                Err(GameFrameError::TooMany {
                    what: "input_size",
                    got: size.into(),
                    max: MAX_INPUT_BYTES
                })
            );
        }
        assert!(matches!(
            InputDatagram::decode(&frame(0, 1, 0, &[])),
            Err(GameFrameError::Invalid(_))
        ));
        for count in [33u8, 255] {
            assert_eq!(
                InputDatagram::decode(&frame(0, 1, count, &vec![0; count.into()])),
                Err(GameFrameError::TooMany {
                    what: "input count",
                    got: count.into(),
                    max: MAX_INPUTS_PER_DATAGRAM
                })
            );
        }
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert_eq!(
            InputDatagram::decode(&frame(0, 4, 2, &[0; 7])),
            Err(GameFrameError::Truncated { at: 25, need: 1 })
        );
        assert_eq!(
            InputDatagram::decode(&frame(0, 4, 2, &[0; 9])),
            Err(GameFrameError::Trailing(1))
        );
        assert_eq!(
            InputDatagram::decode(&frame(0, 1, 1, &[0; 1000])),
            Err(GameFrameError::Trailing(999))
        );
    }

    #[test]
    fn every_single_byte_corruption_decodes_or_errs_consistently() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for v in 0..=255u8 {
                let mut corrupted = bytes.clone();
                corrupted[i] = v;
                if let Ok(d) = InputDatagram::decode(&corrupted) {
                    // Anything accepted is canonical.
                    assert_eq!(d.encode(), corrupted, "byte {i} = {v:#x}");
                }
            }
        }
    }
}
