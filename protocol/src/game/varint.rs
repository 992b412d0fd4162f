//! LEB128 unsigned varints (at most 5 bytes, values up to `u32::MAX`) and
//! zigzag mapping of signed deltas, so that small changes cost one byte.

use super::GameFrameError;

/// Appends `v` as LEB128 (7 bits per byte, least significant group first,
/// high bit set on every byte but the last).
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    todo!("{out:?}{v}")
}

/// Reads a LEB128 varint at `*at`, advancing it. Rejects more than 5 bytes,
/// values above `u32::MAX` and truncation.
pub fn get_u32(buf: &[u8], at: &mut usize) -> Result<u32, GameFrameError> {
    todo!("{buf:?}{at}")
}

/// Zigzag: 0, -1, 1, -2, 2 … → 0, 1, 2, 3, 4 …
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}
