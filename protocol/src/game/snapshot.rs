//! The snapshot datagram, server → client on `realtime` (frame type `0x03`).
//!
//! ```text
//! offset size
//! 0      1   0x03
//! 1      1   flags: bit 0 = full (no baseline), bit 1 = partial (cut to fit);
//!            other bits zero
//! 2      4   tick u32: the server tick this state is from
//! 6      4   baseline u32: the snapshot tick this is a delta against (0 if full)
//! 10     4   input_ack u32: every input of this client for ticks <= input_ack
//!            has been received or is no longer needed (its tick was simulated)
//! 14     ... removed: varint count, then that many varint id gaps
//!            (first id, then each id minus the previous one)
//!        ... updated: varint count, then per entity, in ascending id order:
//!              varint id gap (as above)
//!              u8 head: bit 0 = new (not in the baseline, or its kind or
//!                       field count changed: replace it); other bits zero
//!              if new: u8 kind, u8 field_count (0..=32)
//!              varint mask: bit i set = field i follows
//!              per set bit, lowest first: zigzag varint (value - old), with
//!              wrapping i32 arithmetic; old = the baseline's field, or 0 for
//!              a new entity
//! ```
//!
//! A full snapshot is a delta against the empty state. Fields of an updated
//! entity not in its mask keep the baseline's value; entities neither
//! removed nor updated are unchanged.
//!
//! **Fitting one datagram.** An encoding that would exceed the limit is cut
//! at an entity boundary: removals first, then updates in ascending id order,
//! as many as fit; the frame is flagged `partial`. The encoder reports the
//! state the client holds after applying what was sent (its *view*); the
//! server keeps that view as the baseline for this tick, so whatever was cut
//! is simply still different next time and is sent then. A partial snapshot
//! is a valid baseline. Games give low ids to what matters most (players).

use super::world::WorldState;
use super::GameFrameError;

pub const SNAPSHOT_HEADER_LEN: usize = 14;
const FLAG_FULL: u8 = 0x01;
const FLAG_PARTIAL: u8 = 0x02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub tick: u32,
    /// None: a full snapshot.
    pub baseline: Option<u32>,
    pub partial: bool,
    pub input_ack: u32,
}

/// A decoded snapshot, not yet applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotView {
    pub header: SnapshotHeader,
    pub removed: Vec<u32>,
    pub updates: Vec<EntityUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityUpdate {
    pub id: u32,
    /// Some((kind, field_count)) for a new entity.
    pub new: Option<(u8, u8)>,
    /// (field index, zigzag-decoded wrapping delta), ascending field index.
    pub changes: Vec<(u8, i32)>,
}

impl SnapshotView {
    /// Parses a snapshot frame. Bounds: at most `MAX_ENTITIES` removals and
    /// updates, at most `MAX_FIELDS` fields, ids strictly ascending, no
    /// trailing bytes.
    pub fn decode(frame: &[u8]) -> Result<SnapshotView, GameFrameError> {
        todo!("{frame:?}")
    }

    /// Applies the snapshot to `baseline` (must be the state of
    /// `header.baseline`; ignored for a full snapshot), writing the result to
    /// `out`. Errors (an update of an entity the baseline lacks, a removal of
    /// an unknown id, a field index beyond the entity's fields, a baseline
    /// missing for a delta) leave `out` unspecified.
    pub fn apply(
        &self,
        baseline: Option<&WorldState>,
        out: &mut WorldState,
    ) -> Result<(), GameFrameError> {
        todo!("{baseline:?}{out:?}")
    }
}

/// Encodes snapshots; keeps scratch buffers between calls.
#[derive(Debug, Default)]
pub struct SnapshotEncoder {}

/// Per-frame parameters of [`SnapshotEncoder::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub tick: u32,
    pub input_ack: u32,
    /// Largest frame allowed (at least `SNAPSHOT_HEADER_LEN + 2`).
    pub max_len: usize,
}

/// What [`SnapshotEncoder::encode`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The frame was cut to fit `max_len`.
    pub partial: bool,
    /// Bytes written to `out`.
    pub len: usize,
}

impl SnapshotEncoder {
    pub fn new() -> SnapshotEncoder {
        SnapshotEncoder::default()
    }

    /// Encodes `current` as a delta against `baseline` (`Some((tick, state))`)
    /// or as a full snapshot (`None`), into `out` (cleared first), at most
    /// `frame.max_len` bytes. `view` receives
    /// the state the client will hold after applying the frame: equal to
    /// `current` unless the frame is partial.
    pub fn encode(
        &mut self,
        frame: FrameSpec,
        baseline: Option<(u32, &WorldState)>,
        current: &WorldState,
        out: &mut Vec<u8>,
        view: &mut WorldState,
    ) -> Encoded {
        todo!("{frame:?}{baseline:?}{current:?}{out:?}{view:?}")
    }
}
