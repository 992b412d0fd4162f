//! LEB128 unsigned varints (at most 5 bytes, values up to `u32::MAX`) and
//! zigzag mapping of signed deltas, so that small changes cost one byte.
//!
//! A decoder accepts any encoding of at most 5 bytes whose value fits a
//! `u32` (non-minimal encodings such as `80 00` for 0 included); the 5th
//! byte carries the top 4 bits, so it must be at most `0x0F` (which also
//! means it has no continuation bit). Encoders always write the shortest
//! form.

use super::GameFrameError;

/// Longest varint, in bytes.
pub const MAX_VARINT_LEN: usize = 5;

/// Appends `v` as LEB128 (7 bits per byte, least significant group first,
/// high bit set on every byte but the last).
pub fn put_u32(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes [`put_u32`] writes for `v`.
pub fn len_u32(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

/// Reads a LEB128 varint at `*at`, advancing it. Rejects more than 5 bytes,
/// values above `u32::MAX` and truncation.
pub fn get_u32(buf: &[u8], at: &mut usize) -> Result<u32, GameFrameError> {
    let start = *at;
    let mut value: u32 = 0;
    for i in 0..MAX_VARINT_LEN {
        let pos = start + i;
        let Some(&byte) = buf.get(pos) else {
            return Err(GameFrameError::Truncated { at: pos, need: 1 });
        };
        if i == MAX_VARINT_LEN - 1 && byte > 0x0F {
            // Bits 32 and up, or a 6th byte: neither fits a u32.
            return Err(GameFrameError::BadVarint(start));
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            *at = pos + 1;
            return Ok(value);
        }
    }
    // The loop returns on the 5th byte at the latest: it is either rejected
    // or has no continuation bit.
    Err(GameFrameError::BadVarint(start))
}

/// Zigzag: 0, -1, 1, -2, 2 … → 0, 1, 2, 3, 4 …
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, v);
        out
    }

    fn dec(buf: &[u8]) -> Result<(u32, usize), GameFrameError> {
        let mut at = 0;
        get_u32(buf, &mut at).map(|v| (v, at))
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7F]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xAC, 0x02]);
        assert_eq!(enc(16_383), [0xFF, 0x7F]);
        assert_eq!(enc(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(enc(u32::MAX), [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    }

    #[test]
    fn len_matches_encoding_at_every_boundary() {
        for shift in 0..32 {
            for v in [1u32 << shift, (1u32 << shift) - 1, (1u32 << shift) + 1] {
                assert_eq!(len_u32(v), enc(v).len(), "{v}");
            }
        }
        assert_eq!(len_u32(u32::MAX), 5);
    }

    #[test]
    fn decodes_what_it_encodes() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            1 << 28,
            u32::MAX,
        ] {
            let bytes = enc(v);
            assert_eq!(dec(&bytes), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn reads_at_offset_and_advances() {
        let buf = [0xFF, 0xAC, 0x02, 0x05];
        let mut at = 1;
        assert_eq!(get_u32(&buf, &mut at), Ok(300));
        assert_eq!(at, 3);
        assert_eq!(get_u32(&buf, &mut at), Ok(5));
        assert_eq!(at, 4);
        assert_eq!(
            get_u32(&buf, &mut at),
            Err(GameFrameError::Truncated { at: 4, need: 1 })
        );
        assert_eq!(at, 4, "a failed read does not advance");
    }

    #[test]
    fn accepts_non_minimal_encodings() {
        assert_eq!(dec(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(dec(&[0x81, 0x80, 0x80, 0x80, 0x00]), Ok((1, 5)));
    }

    #[test]
    fn rejects_truncation() {
        assert_eq!(dec(&[]), Err(GameFrameError::Truncated { at: 0, need: 1 }));
        assert_eq!(
            dec(&[0x80]),
            Err(GameFrameError::Truncated { at: 1, need: 1 })
        );
        assert_eq!(
            dec(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(GameFrameError::Truncated { at: 4, need: 1 })
        );
    }

    #[test]
    fn rejects_overlong_and_oversized() {
        // Value 2^32: fifth byte 0x10.
        assert_eq!(
            dec(&[0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(GameFrameError::BadVarint(0))
        );
        // Six bytes.
        assert_eq!(
            dec(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(GameFrameError::BadVarint(0))
        );
        assert_eq!(
            dec(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(GameFrameError::BadVarint(0))
        );
        let mut at = 2;
        assert_eq!(
            get_u32(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F], &mut at),
            Err(GameFrameError::BadVarint(2))
        );
    }

    #[test]
    fn every_fifth_byte_decides_validity() {
        for last in 0..=255u8 {
            let r = dec(&[0xFF, 0xFF, 0xFF, 0xFF, last]);
            if last <= 0x0F {
                let want = 0x0FFF_FFFF | (u32::from(last) << 28);
                assert_eq!(r, Ok((want, 5)));
            } else {
                assert_eq!(r, Err(GameFrameError::BadVarint(0)), "{last:#x}");
            }
        }
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_codes() {
        let pairs = [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4)];
        for (v, z) in pairs {
            assert_eq!(zigzag(v), z);
            assert_eq!(unzigzag(z), v);
        }
        assert_eq!(zigzag(i32::MAX), u32::MAX - 1);
        assert_eq!(zigzag(i32::MIN), u32::MAX);
        assert_eq!(unzigzag(u32::MAX), i32::MIN);
        assert_eq!(unzigzag(u32::MAX - 1), i32::MAX);
    }
}
