//! The snapshot datagram, server → client on `realtime` (frame type `0x03`).
//!
//! ```text
//! offset size
//! 0      1   0x03
//! 1      1   flags: bit 0 = full (no baseline), bit 1 = partial (cut to fit);
//!            other bits zero
//! 2      4   tick u32: the server tick this state is from
//! 6      4   baseline u32: the snapshot tick this is a delta against (0 if full)
//! 10     4   input_ack u32: no input of this client for a tick <= input_ack
//!            is worth sending again: each was received, or is too old for
//!            the game to take late (docs/protocol.md 3.4)
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
//!
//! **Decoder rules** (every implementation must reject the same frames):
//! flag bits other than 0 and 1; a full snapshot with a non-zero baseline,
//! with removals, or with an update not flagged new; more than
//! `MAX_ENTITIES` removals or updates; an id gap of 0 after the first id or
//! an id beyond `u32::MAX`; an id both removed and updated; head bits other
//! than bit 0; `field_count` above `MAX_FIELDS`; mask bits at or above a
//! new entity's `field_count`; bad varints; trailing bytes. Applying then
//! rejects a removal of an id the baseline lacks, an update (not new) of an
//! id the baseline lacks, mask bits at or above the baseline entity's field
//! count, and a result of more than `MAX_ENTITIES` entities.

use super::varint::{get_u32, len_u32, put_u32, unzigzag, zigzag};
use super::world::{Entity, WorldState, MAX_ENTITIES, MAX_FIELDS};
use super::{GameFrameError, FRAME_SNAPSHOT};

pub const SNAPSHOT_HEADER_LEN: usize = 14;
const FLAG_FULL: u8 = 0x01;
const FLAG_PARTIAL: u8 = 0x02;
/// Entity head bit 0: the entity is new (replace, deltas against zeros).
const HEAD_NEW: u8 = 0x01;

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

fn invalid(what: impl Into<String>) -> GameFrameError {
    GameFrameError::Invalid(what.into())
}

fn get_u8(buf: &[u8], at: &mut usize) -> Result<u8, GameFrameError> {
    let byte = *buf
        .get(*at)
        .ok_or(GameFrameError::Truncated { at: *at, need: 1 })?;
    *at += 1;
    Ok(byte)
}

/// A count, bounded by `MAX_ENTITIES`.
fn get_count(buf: &[u8], at: &mut usize, what: &'static str) -> Result<usize, GameFrameError> {
    let count = get_u32(buf, at)?;
    match usize::try_from(count) {
        Ok(count) if count <= MAX_ENTITIES => Ok(count),
        _ => Err(GameFrameError::TooMany {
            what,
            got: usize::try_from(count).unwrap_or(usize::MAX),
            max: MAX_ENTITIES,
        }),
    }
}

/// The next id of an ascending list: the first gap is the id itself, every
/// later gap is at least 1.
fn get_id(buf: &[u8], at: &mut usize, previous: Option<u32>) -> Result<u32, GameFrameError> {
    let gap = get_u32(buf, at)?;
    match previous {
        None => Ok(gap),
        Some(_) if gap == 0 => Err(invalid("entity ids not strictly ascending")),
        Some(previous) => previous
            .checked_add(gap)
            .ok_or_else(|| invalid("entity id beyond u32::MAX")),
    }
}

fn u32_be(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Slot `w` of `dst`, growing it by one empty entity if needed, so that a
/// state rebuilt in place reuses its field allocations.
fn slot(dst: &mut Vec<Entity>, w: usize) -> &mut Entity {
    if w == dst.len() {
        dst.push(Entity {
            id: 0,
            kind: 0,
            fields: Vec::new(),
        });
    }
    &mut dst[w]
}

fn copy_entity(dst: &mut Vec<Entity>, w: &mut usize, src: &Entity) {
    let e = slot(dst, *w);
    e.id = src.id;
    e.kind = src.kind;
    e.fields.clone_from(&src.fields);
    *w += 1;
}

impl SnapshotView {
    /// Parses a snapshot frame. Bounds: at most `MAX_ENTITIES` removals and
    /// updates, at most `MAX_FIELDS` fields, ids strictly ascending, no
    /// trailing bytes.
    pub fn decode(frame: &[u8]) -> Result<SnapshotView, GameFrameError> {
        let (&ty, _) = frame.split_first().ok_or(GameFrameError::Empty)?;
        if ty != FRAME_SNAPSHOT {
            return Err(GameFrameError::UnknownType(ty));
        }
        let Some(h) = frame.get(..SNAPSHOT_HEADER_LEN) else {
            return Err(GameFrameError::Truncated {
                at: frame.len(),
                need: SNAPSHOT_HEADER_LEN - frame.len(),
            });
        };
        let flags = h[1];
        if flags & !(FLAG_FULL | FLAG_PARTIAL) != 0 {
            return Err(GameFrameError::ReservedFlags(flags));
        }
        let full = flags & FLAG_FULL != 0;
        let tick = u32_be(h, 2);
        let baseline = u32_be(h, 6);
        if full && baseline != 0 {
            return Err(invalid("full snapshot with a baseline tick"));
        }
        let header = SnapshotHeader {
            tick,
            baseline: (!full).then_some(baseline),
            partial: flags & FLAG_PARTIAL != 0,
            input_ack: u32_be(h, 10),
        };

        let mut at = SNAPSHOT_HEADER_LEN;
        let removed_count = get_count(frame, &mut at, "removed entities")?;
        if full && removed_count != 0 {
            return Err(invalid("full snapshot with removals"));
        }
        // Every entry takes at least one byte: never reserve beyond the frame.
        let mut removed = Vec::with_capacity(removed_count.min(frame.len() - at));
        for _ in 0..removed_count {
            let id = get_id(frame, &mut at, removed.last().copied())?;
            removed.push(id);
        }

        let update_count = get_count(frame, &mut at, "updated entities")?;
        let mut updates: Vec<EntityUpdate> = Vec::with_capacity(update_count.min(frame.len() - at));
        for _ in 0..update_count {
            let id = get_id(frame, &mut at, updates.last().map(|u| u.id))?;
            let head = get_u8(frame, &mut at)?;
            if head & !HEAD_NEW != 0 {
                return Err(GameFrameError::ReservedFlags(head));
            }
            let new = if head & HEAD_NEW != 0 {
                let kind = get_u8(frame, &mut at)?;
                let field_count = get_u8(frame, &mut at)?;
                if usize::from(field_count) > MAX_FIELDS {
                    return Err(GameFrameError::TooMany {
                        what: "field_count",
                        got: usize::from(field_count),
                        max: MAX_FIELDS,
                    });
                }
                Some((kind, field_count))
            } else if full {
                return Err(invalid("full snapshot updates an existing entity"));
            } else {
                None
            };
            let mask = get_u32(frame, &mut at)?;
            if let Some((_, field_count)) = new {
                if u64::from(mask) >> field_count != 0 {
                    return Err(invalid(format!(
                        "mask 0x{mask:x} beyond the {field_count} fields of new entity {id}"
                    )));
                }
            }
            let mut changes = Vec::with_capacity(mask.count_ones() as usize);
            let mut bits = mask;
            while bits != 0 {
                let index = bits.trailing_zeros() as u8;
                bits &= bits - 1;
                changes.push((index, unzigzag(get_u32(frame, &mut at)?)));
            }
            updates.push(EntityUpdate { id, new, changes });
        }
        if at < frame.len() {
            return Err(GameFrameError::Trailing(frame.len() - at));
        }

        // Both lists ascend: one merge pass finds an id in both.
        let (mut r, mut u) = (0, 0);
        while let (Some(&removed_id), Some(update)) = (removed.get(r), updates.get(u)) {
            match removed_id.cmp(&update.id) {
                std::cmp::Ordering::Less => r += 1,
                std::cmp::Ordering::Greater => u += 1,
                std::cmp::Ordering::Equal => {
                    return Err(invalid(format!(
                        "entity {removed_id} both removed and updated"
                    )))
                }
            }
        }
        Ok(SnapshotView {
            header,
            removed,
            updates,
        })
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
        let empty = WorldState::new();
        let base = match self.header.baseline {
            None => &empty,
            Some(tick) => baseline.ok_or(GameFrameError::UnknownBaseline(tick))?,
        };
        let base = base.entities();
        let dst = out.entities_vec_mut();
        let (mut b, mut r, mut u, mut w) = (0, 0, 0, 0);
        loop {
            let base_entity = base.get(b);
            let base_id = base_entity.map(|e| e.id);
            if let Some(&removed_id) = self.removed.get(r) {
                match base_id {
                    Some(id) if id == removed_id => {
                        b += 1;
                        r += 1;
                        continue;
                    }
                    Some(id) if id < removed_id => {}
                    _ => {
                        return Err(invalid(format!(
                            "removal of entity {removed_id}, not in the baseline"
                        )))
                    }
                }
            }
            let update = self.updates.get(u);
            let (old, update) = match (base_entity, update) {
                (None, None) => break,
                (Some(e), None) => (Some(e), None),
                (None, Some(up)) => (None, Some(up)),
                (Some(e), Some(up)) => match e.id.cmp(&up.id) {
                    std::cmp::Ordering::Less => (Some(e), None),
                    std::cmp::Ordering::Equal => (Some(e), Some(up)),
                    std::cmp::Ordering::Greater => (None, Some(up)),
                },
            };
            if old.is_some() {
                b += 1;
            }
            if update.is_some() {
                u += 1;
            }
            if w == MAX_ENTITIES {
                return Err(GameFrameError::TooMany {
                    what: "entities",
                    got: MAX_ENTITIES + 1,
                    max: MAX_ENTITIES,
                });
            }
            let Some(update) = update else {
                if let Some(old) = old {
                    copy_entity(dst, &mut w, old);
                }
                continue;
            };
            let e = slot(dst, w);
            e.id = update.id;
            match (update.new, old) {
                (Some((kind, field_count)), _) => {
                    e.kind = kind;
                    e.fields.clear();
                    e.fields.resize(usize::from(field_count), 0);
                }
                (None, Some(old)) => {
                    e.kind = old.kind;
                    e.fields.clone_from(&old.fields);
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "update of entity {}, not in the baseline",
                        update.id
                    )))
                }
            }
            let field_count = e.fields.len();
            for &(index, delta) in &update.changes {
                let field = e.fields.get_mut(usize::from(index)).ok_or_else(|| {
                    invalid(format!(
                        "field {index} of entity {}, which has {field_count} fields",
                        update.id
                    ))
                })?;
                *field = field.wrapping_add(delta);
            }
            w += 1;
        }
        if r < self.removed.len() {
            return Err(invalid(format!(
                "removal of entity {}, not in the baseline",
                self.removed[r]
            )));
        }
        dst.truncate(w);
        Ok(())
    }
}

/// Encodes snapshots; keeps scratch buffers between calls.
///
/// One call does two merge passes over the baseline and the current state
/// (O(entities)) and allocates nothing once its buffers and the caller's
/// `out` and `view` have grown to size.
#[derive(Debug, Default)]
pub struct SnapshotEncoder {
    /// Encoded removals, back to back, and where each one ends.
    removed_bytes: Vec<u8>,
    removed_ends: Vec<usize>,
    removed_ids: Vec<u32>,
    /// Encoded entity updates, back to back, and where each one ends.
    update_bytes: Vec<u8>,
    update_ends: Vec<usize>,
    update_ids: Vec<u32>,
}

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
        debug_assert!(frame.max_len >= SNAPSHOT_HEADER_LEN + 2, "{frame:?}");
        debug_assert!(current.len() <= MAX_ENTITIES, "{} entities", current.len());
        let empty = WorldState::new();
        let (baseline_tick, base) = match baseline {
            Some((tick, state)) => (Some(tick), state),
            None => (None, &empty),
        };

        // Pass 1: encode every removal and every update, in id order.
        self.removed_bytes.clear();
        self.removed_ends.clear();
        self.removed_ids.clear();
        self.update_bytes.clear();
        self.update_ends.clear();
        self.update_ids.clear();
        let (old, cur) = (base.entities(), current.entities());
        let (mut b, mut c) = (0, 0);
        loop {
            match (old.get(b), cur.get(c)) {
                (None, None) => break,
                (Some(o), Some(n)) if o.id == n.id => {
                    self.push_update(Some(o), n);
                    b += 1;
                    c += 1;
                }
                (Some(o), n) if n.is_none_or(|n| o.id < n.id) => {
                    self.push_removal(o.id);
                    b += 1;
                }
                (_, Some(n)) => {
                    self.push_update(None, n);
                    c += 1;
                }
                (Some(_), None) => unreachable!("handled by the removal arm"),
            }
        }

        // Fit: the longest prefix of (removals, then updates) within max_len.
        let removals = self.removed_ids.len();
        let updates = self.update_ids.len();
        let max_items = if removals > MAX_ENTITIES {
            MAX_ENTITIES
        } else {
            removals + updates.min(MAX_ENTITIES)
        };
        let frame_len = |items: usize| {
            let r = items.min(removals);
            let u = items - r;
            let removed_len = r.checked_sub(1).map_or(0, |i| self.removed_ends[i]);
            let update_len = u.checked_sub(1).map_or(0, |i| self.update_ends[i]);
            SNAPSHOT_HEADER_LEN + len_u32(r as u32) + removed_len + len_u32(u as u32) + update_len
        };
        let items = if frame_len(max_items) <= frame.max_len {
            max_items
        } else {
            // frame_len grows with the prefix: binary search the last fit.
            let (mut lo, mut hi) = (0, max_items);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if frame_len(mid) <= frame.max_len {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        };
        let kept_removals = items.min(removals);
        let kept_updates = items - kept_removals;
        let partial = items < removals + updates;

        // The frame.
        let mut flags = 0;
        if baseline_tick.is_none() {
            flags |= FLAG_FULL;
        }
        if partial {
            flags |= FLAG_PARTIAL;
        }
        out.clear();
        out.reserve(frame_len(items));
        out.push(FRAME_SNAPSHOT);
        out.push(flags);
        out.extend_from_slice(&frame.tick.to_be_bytes());
        out.extend_from_slice(&baseline_tick.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&frame.input_ack.to_be_bytes());
        put_u32(out, kept_removals as u32);
        let removed_len = kept_removals
            .checked_sub(1)
            .map_or(0, |i| self.removed_ends[i]);
        out.extend_from_slice(&self.removed_bytes[..removed_len]);
        put_u32(out, kept_updates as u32);
        let update_len = kept_updates
            .checked_sub(1)
            .map_or(0, |i| self.update_ends[i]);
        out.extend_from_slice(&self.update_bytes[..update_len]);

        // Pass 2: the client's view. Lists are cut at a prefix, so an item
        // was sent iff its id is below the first id left out.
        let removal_cut = self.removed_ids.get(kept_removals).copied();
        let update_cut = self.update_ids.get(kept_updates).copied();
        let sent = |cut: Option<u32>, id: u32| cut.is_none_or(|cut| id < cut);
        let dst = view.entities_vec_mut();
        let (mut b, mut c, mut w) = (0, 0, 0);
        loop {
            match (old.get(b), cur.get(c)) {
                (None, None) => break,
                (Some(o), Some(n)) if o.id == n.id => {
                    // Unchanged entities are not in the list; then o == n.
                    let src = if sent(update_cut, n.id) { n } else { o };
                    copy_entity(dst, &mut w, src);
                    b += 1;
                    c += 1;
                }
                (Some(o), n) if n.is_none_or(|n| o.id < n.id) => {
                    if !sent(removal_cut, o.id) {
                        copy_entity(dst, &mut w, o);
                    }
                    b += 1;
                }
                (_, Some(n)) => {
                    if sent(update_cut, n.id) {
                        copy_entity(dst, &mut w, n);
                    }
                    c += 1;
                }
                (Some(_), None) => unreachable!("handled by the removal arm"),
            }
        }
        dst.truncate(w);

        Encoded {
            partial,
            len: out.len(),
        }
    }

    fn push_removal(&mut self, id: u32) {
        let gap = self
            .removed_ids
            .last()
            .map_or(id, |&previous| id - previous);
        put_u32(&mut self.removed_bytes, gap);
        self.removed_ends.push(self.removed_bytes.len());
        self.removed_ids.push(id);
    }

    /// Encodes `entity` against `old` (same id), unless nothing changed.
    fn push_update(&mut self, old: Option<&Entity>, entity: &Entity) {
        debug_assert!(entity.fields.len() <= MAX_FIELDS, "entity {}", entity.id);
        let fields = &entity.fields[..entity.fields.len().min(MAX_FIELDS)];
        // Same kind and field count: a delta; anything else replaces it.
        let old = old.filter(|o| o.kind == entity.kind && o.fields.len() == fields.len());
        let old_value = |i: usize| old.map_or(0, |o| o.fields[i]);
        let mut mask = 0u32;
        for (i, &value) in fields.iter().enumerate() {
            if value != old_value(i) {
                mask |= 1 << i;
            }
        }
        if old.is_some() && mask == 0 {
            return;
        }
        let gap = self
            .update_ids
            .last()
            .map_or(entity.id, |&previous| entity.id - previous);
        let buf = &mut self.update_bytes;
        put_u32(buf, gap);
        if old.is_some() {
            buf.push(0);
        } else {
            buf.push(HEAD_NEW);
            buf.push(entity.kind);
            buf.push(fields.len() as u8);
        }
        put_u32(buf, mask);
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            put_u32(buf, zigzag(fields[i].wrapping_sub(old_value(i))));
        }
        self.update_ends.push(buf.len());
        self.update_ids.push(entity.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: u32, kind: u8, fields: &[i32]) -> Entity {
        Entity {
            id,
            kind,
            fields: fields.to_vec(),
        }
    }

    fn state(entities: &[Entity]) -> WorldState {
        WorldState::from_entities(entities.iter().cloned())
    }

    fn spec(tick: u32, input_ack: u32) -> FrameSpec {
        FrameSpec {
            tick,
            input_ack,
            max_len: 1200,
        }
    }

    fn encode(
        frame: FrameSpec,
        baseline: Option<(u32, &WorldState)>,
        current: &WorldState,
    ) -> (Vec<u8>, Encoded, WorldState) {
        let mut out = Vec::new();
        let mut view = WorldState::new();
        let encoded = SnapshotEncoder::new().encode(frame, baseline, current, &mut out, &mut view);
        (out, encoded, view)
    }

    fn apply(frame: &[u8], baseline: Option<&WorldState>) -> Result<WorldState, GameFrameError> {
        let mut out = WorldState::new();
        SnapshotView::decode(frame)?.apply(baseline, &mut out)?;
        Ok(out)
    }

    fn header(flags: u8, tick: u32, baseline: u32, input_ack: u32) -> Vec<u8> {
        let mut out = vec![FRAME_SNAPSHOT, flags];
        out.extend_from_slice(&tick.to_be_bytes());
        out.extend_from_slice(&baseline.to_be_bytes());
        out.extend_from_slice(&input_ack.to_be_bytes());
        out
    }

    fn with(mut head: Vec<u8>, body: &[u8]) -> Vec<u8> {
        head.extend_from_slice(body);
        head
    }

    fn s4() -> WorldState {
        state(&[entity(0, 1, &[1, -2]), entity(5, 2, &[0, 300])])
    }

    fn s6() -> WorldState {
        state(&[entity(0, 1, &[1, -1]), entity(7, 3, &[])])
    }

    // The examples of docs/protocol.md.
    const FULL_4: &[u8] = &[
        0x03, 0x01, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3,    // header
        0x00, // no removals
        0x02, // two updates
        0x00, 0x01, 0x01, 0x02, 0x03, 0x02,
        0x03, // id 0, new, kind 1, 2 fields, mask 0b11, 1, -2
        0x05, 0x01, 0x02, 0x02, 0x02, 0xD8,
        0x04, // id 5, new, kind 2, 2 fields, mask 0b10, 300
    ];
    const DELTA_6: &[u8] = &[
        0x03, 0x00, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 5, // header
        0x01, 0x05, // remove id 5
        0x02, // two updates
        0x00, 0x00, 0x02, 0x02, // id 0, delta, mask 0b10, +1
        0x07, 0x01, 0x03, 0x00, 0x00, // id 7, new, kind 3, no fields, mask 0
    ];

    #[test]
    fn full_snapshot_layout_is_as_documented() {
        let (out, encoded, view) = encode(spec(4, 3), None, &s4());
        assert_eq!(out, FULL_4);
        assert_eq!(
            encoded,
            Encoded {
                partial: false,
                len: FULL_4.len()
            }
        );
        assert_eq!(view, s4());
        let decoded = SnapshotView::decode(FULL_4).unwrap();
        assert_eq!(
            decoded.header,
            SnapshotHeader {
                tick: 4,
                baseline: None,
                partial: false,
                input_ack: 3
            }
        );
        assert_eq!(decoded.removed, Vec::<u32>::new());
        assert_eq!(
            decoded.updates,
            [
                EntityUpdate {
                    id: 0,
                    new: Some((1, 2)),
                    changes: vec![(0, 1), (1, -2)]
                },
                EntityUpdate {
                    id: 5,
                    new: Some((2, 2)),
                    changes: vec![(1, 300)]
                },
            ]
        );
        assert_eq!(apply(FULL_4, None), Ok(s4()));
    }

    #[test]
    fn delta_layout_is_as_documented() {
        let (out, encoded, view) = encode(spec(6, 5), Some((4, &s4())), &s6());
        assert_eq!(out, DELTA_6);
        assert!(!encoded.partial);
        assert_eq!(view, s6());
        let decoded = SnapshotView::decode(DELTA_6).unwrap();
        assert_eq!(decoded.header.baseline, Some(4));
        assert_eq!(decoded.removed, [5]);
        assert_eq!(apply(DELTA_6, Some(&s4())), Ok(s6()));
    }

    #[test]
    fn a_full_snapshot_ignores_the_baseline_given() {
        assert_eq!(apply(FULL_4, Some(&s6())), Ok(s4()));
    }

    #[test]
    fn deltas_list_only_changed_fields_and_entities() {
        let base = state(&[
            entity(1, 1, &[10, 20, 30, 40]),
            entity(2, 1, &[1, 2]),
            entity(3, 1, &[5]),
        ]);
        let cur = state(&[
            entity(1, 1, &[10, 21, 30, 39]),
            entity(2, 1, &[1, 2]),
            entity(3, 1, &[5]),
        ]);
        let (out, _, view) = encode(spec(2, 2), Some((1, &base)), &cur);
        assert_eq!(view, cur);
        let decoded = SnapshotView::decode(&out).unwrap();
        assert!(decoded.removed.is_empty());
        assert_eq!(
            decoded.updates,
            [EntityUpdate {
                id: 1,
                new: None,
                changes: vec![(1, 1), (3, -1)]
            }]
        );
    }

    #[test]
    fn kind_or_field_count_changes_are_sent_as_new() {
        let base = state(&[entity(1, 1, &[10, 20]), entity(2, 1, &[1, 2])]);
        let cur = state(&[entity(1, 9, &[10, 20]), entity(2, 1, &[1, 0, 0])]);
        let (out, _, view) = encode(spec(2, 2), Some((1, &base)), &cur);
        assert_eq!(view, cur);
        let decoded = SnapshotView::decode(&out).unwrap();
        assert_eq!(
            decoded.updates,
            [
                EntityUpdate {
                    id: 1,
                    new: Some((9, 2)),
                    changes: vec![(0, 10), (1, 20)]
                },
                EntityUpdate {
                    id: 2,
                    new: Some((1, 3)),
                    changes: vec![(0, 1)]
                },
            ]
        );
        assert_eq!(apply(&out, Some(&base)), Ok(cur));
    }

    #[test]
    fn extreme_values_wrap() {
        let base = state(&[entity(1, 1, &[i32::MIN, i32::MAX, 0])]);
        let cur = state(&[entity(1, 1, &[i32::MAX, i32::MIN, i32::MIN])]);
        let (out, _, _) = encode(spec(2, 2), Some((1, &base)), &cur);
        let decoded = SnapshotView::decode(&out).unwrap();
        assert_eq!(
            decoded.updates[0].changes,
            [(0, -1), (1, 1), (2, i32::MIN)],
            "MAX - MIN wraps to -1"
        );
        assert_eq!(apply(&out, Some(&base)), Ok(cur.clone()));
        let (full, _, _) = encode(spec(2, 2), None, &cur);
        assert_eq!(apply(&full, None), Ok(cur));
    }

    #[test]
    fn a_partial_snapshot_is_cut_at_entity_boundaries() {
        let base = state(&(0..10).map(|i| entity(i, 1, &[0])).collect::<Vec<_>>());
        // Removes 0..5, updates 5..10, adds 10..15.
        let cur = state(
            &(5..15)
                .map(|i| entity(i, 1, &[1000 + i as i32]))
                .collect::<Vec<_>>(),
        );
        let (whole, encoded, _) = encode(spec(2, 2), Some((1, &base)), &cur);
        assert!(!encoded.partial);
        let mut previous: Option<(usize, usize)> = None; // (max_len, items)
        for max_len in SNAPSHOT_HEADER_LEN + 2..whole.len() {
            let frame = FrameSpec {
                max_len,
                ..spec(2, 2)
            };
            let (out, encoded, view) = encode(frame, Some((1, &base)), &cur);
            assert!(encoded.partial, "{max_len}");
            assert!(
                out.len() <= max_len && encoded.len == out.len(),
                "{max_len}"
            );
            let decoded = SnapshotView::decode(&out).unwrap();
            assert!(decoded.header.partial);
            // Removals come first: no update unless every removal is in.
            if !decoded.updates.is_empty() {
                assert_eq!(decoded.removed, [0, 1, 2, 3, 4]);
            }
            assert_eq!(apply(&out, Some(&base)).as_ref(), Ok(&view), "{max_len}");
            // As many items as fit: one more byte of room lets more in only
            // if the longer frame uses that byte.
            let items = decoded.removed.len() + decoded.updates.len();
            if let Some((_, previous_items)) = previous {
                assert!(items >= previous_items, "{max_len}");
                if items > previous_items {
                    assert_eq!(out.len(), max_len, "{max_len}: room was left before");
                }
            }
            previous = Some((max_len, items));
        }
        assert_eq!(
            previous.map(|(_, items)| items),
            Some(14),
            "all but the last"
        );
    }

    #[test]
    fn the_cut_part_is_sent_next_time() {
        let base = WorldState::new();
        let cur = state(
            &(0..100)
                .map(|i| entity(i, 2, &[i as i32 * 100_000, -1, 2, 3]))
                .collect::<Vec<_>>(),
        );
        let frame = FrameSpec {
            max_len: 120,
            ..spec(2, 2)
        };
        let mut held = base;
        let mut rounds = 0;
        loop {
            let (out, encoded, view) = encode(frame, Some((1, &held)), &cur);
            assert!(out.len() <= 120);
            let applied = apply(&out, Some(&held)).unwrap();
            assert_eq!(applied, view);
            assert!(applied.len() > held.len() || !encoded.partial, "progress");
            held = applied;
            rounds += 1;
            if !encoded.partial {
                break;
            }
        }
        assert_eq!(held, cur);
        assert!(rounds > 2, "{rounds} rounds");
    }

    #[test]
    fn encoder_overwrites_view_and_out_and_reuses_scratch() {
        let mut encoder = SnapshotEncoder::new();
        let mut out = vec![0xAA; 5000];
        let mut view = state(&(0..50).map(|i| entity(i, 7, &[9; 32])).collect::<Vec<_>>());
        for (baseline, current) in [(None, s4()), (Some((4, s4())), s6()), (None, s6())] {
            let encoded = encoder.encode(
                spec(9, 9),
                baseline.as_ref().map(|(t, s)| (*t, s)),
                &current,
                &mut out,
                &mut view,
            );
            assert_eq!(encoded.len, out.len());
            assert_eq!(view, current);
            let mut applied = state(&[entity(99, 1, &[1])]);
            SnapshotView::decode(&out)
                .unwrap()
                .apply(baseline.as_ref().map(|(_, s)| s), &mut applied)
                .unwrap();
            assert_eq!(applied, current);
        }
    }

    #[test]
    fn every_prefix_is_truncated() {
        for frame in [FULL_4, DELTA_6] {
            assert_eq!(SnapshotView::decode(&[]), Err(GameFrameError::Empty));
            for len in 1..frame.len() {
                assert!(
                    matches!(
                        SnapshotView::decode(&frame[..len]),
                        Err(GameFrameError::Truncated { .. })
                    ),
                    "prefix {len}: {:?}",
                    SnapshotView::decode(&frame[..len])
                );
            }
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            SnapshotView::decode(&[0x02; 20]),
            Err(GameFrameError::UnknownType(0x02))
        );
        for bit in 2..8 {
            let flags = 1u8 << bit;
            assert_eq!(
                SnapshotView::decode(&with(header(flags, 1, 0, 0), &[0, 0])),
                Err(GameFrameError::ReservedFlags(flags))
            );
        }
        assert!(matches!(
            SnapshotView::decode(&with(header(FLAG_FULL, 1, 1, 0), &[0, 0])),
            Err(GameFrameError::Invalid(_))
        ));
        // Partial alone, full and partial: both valid.
        for flags in [FLAG_PARTIAL, FLAG_FULL | FLAG_PARTIAL] {
            let view = SnapshotView::decode(&with(header(flags, 1, 0, 0), &[0, 0])).unwrap();
            assert!(view.header.partial);
        }
    }

    fn decode_err(body: &[u8]) -> GameFrameError {
        SnapshotView::decode(&with(header(0, 2, 1, 0), body)).unwrap_err()
    }

    #[test]
    fn rejects_bad_lists() {
        let too_many = |what| GameFrameError::TooMany {
            what,
            got: MAX_ENTITIES + 1,
            max: MAX_ENTITIES,
        };
        assert_eq!(decode_err(&[0x81, 0x08]), too_many("removed entities"));
        assert_eq!(
            decode_err(&[0x00, 0x81, 0x08]),
            too_many("updated entities")
        );
        assert_eq!(
            decode_err(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            GameFrameError::TooMany {
                what: "removed entities",
                got: u32::MAX as usize,
                max: MAX_ENTITIES
            }
        );
        // Gap 0 after the first id.
        assert!(matches!(
            decode_err(&[0x02, 0x03, 0x00, 0x00]),
            GameFrameError::Invalid(_)
        ));
        assert!(matches!(
            decode_err(&[0x00, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]),
            GameFrameError::Invalid(_)
        ));
        // First id 0 is fine, then u32::MAX overflows.
        assert!(matches!(
            decode_err(&[0x02, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00]),
            GameFrameError::Invalid(_)
        ));
        // A removal up to u32::MAX exactly is fine (the baseline lacks it).
        let view = SnapshotView::decode(&with(
            header(0, 2, 1, 0),
            &[0x02, 0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0x00],
        ))
        .unwrap();
        assert_eq!(view.removed, [1, u32::MAX]);
        // Removed and updated.
        assert!(matches!(
            decode_err(&[0x01, 0x04, 0x01, 0x04, 0x00, 0x00]),
            GameFrameError::Invalid(_)
        ));
        assert_eq!(decode_err(&[0x00, 0x00, 0x00]), GameFrameError::Trailing(1));
    }

    #[test]
    fn rejects_bad_entities() {
        assert_eq!(
            decode_err(&[0x00, 0x01, 0x01, 0x03, 0x00]),
            GameFrameError::ReservedFlags(0x03)
        );
        assert_eq!(
            decode_err(&[0x00, 0x01, 0x01, 0x01, 0x01, 33, 0x00]),
            GameFrameError::TooMany {
                what: "field_count",
                got: 33,
                max: MAX_FIELDS
            }
        );
        // A new entity of 2 fields with mask bit 2.
        assert!(matches!(
            decode_err(&[0x00, 0x01, 0x01, 0x01, 0x01, 0x02, 0x04, 0x00]),
            GameFrameError::Invalid(_)
        ));
        // A new entity of 0 fields with any mask bit.
        assert!(matches!(
            decode_err(&[0x00, 0x01, 0x01, 0x01, 0x01, 0x00, 0x01, 0x00]),
            GameFrameError::Invalid(_)
        ));
        // 32 fields: mask bit 31 is allowed.
        let mut body = vec![
            0x00, 0x01, 0x01, 0x01, 0x01, 32, 0x80, 0x80, 0x80, 0x80, 0x08,
        ];
        body.push(0x01);
        let view = SnapshotView::decode(&with(header(0, 2, 1, 0), &body)).unwrap();
        assert_eq!(view.updates[0].changes, [(31, -1)]);
        // Full snapshots hold only new entities, no removals.
        let full = |body: &[u8]| SnapshotView::decode(&with(header(FLAG_FULL, 2, 0, 0), body));
        assert!(matches!(
            full(&[0x01, 0x00, 0x00]),
            Err(GameFrameError::Invalid(_))
        ));
        assert!(matches!(
            full(&[0x00, 0x01, 0x00, 0x00, 0x00]),
            Err(GameFrameError::Invalid(_))
        ));
        assert!(full(&[0x00, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00]).is_ok());
        assert_eq!(
            decode_err(&[0x00, 0x01, 0x00, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10]),
            GameFrameError::BadVarint(18)
        );
    }

    #[test]
    fn apply_rejects_what_does_not_fit_the_baseline() {
        let base = s4();
        let invalid = |body: &[u8]| {
            let frame = with(header(0, 6, 4, 0), body);
            matches!(apply(&frame, Some(&base)), Err(GameFrameError::Invalid(_)))
        };
        assert!(invalid(&[0x01, 0x03, 0x00]), "removal of an unknown id");
        assert!(invalid(&[0x01, 0x06, 0x00]), "removal beyond the last id");
        assert!(
            invalid(&[0x00, 0x01, 0x03, 0x00, 0x01, 0x02]),
            "update of an unknown id"
        );
        assert!(
            invalid(&[0x00, 0x01, 0x09, 0x00, 0x01, 0x02]),
            "update beyond the last id"
        );
        assert!(
            invalid(&[0x00, 0x01, 0x00, 0x00, 0x04, 0x02]),
            "field 2 of 2"
        );
        assert_eq!(
            apply(&with(header(0, 6, 4, 0), &[0x00, 0x00]), None),
            Err(GameFrameError::UnknownBaseline(4))
        );
        // A new entity may replace one the baseline has.
        let frame = with(
            header(0, 6, 4, 0),
            &[0x00, 0x01, 0x05, 0x01, 0x09, 0x01, 0x01, 0x02],
        );
        assert_eq!(
            apply(&frame, Some(&base)),
            Ok(state(&[entity(0, 1, &[1, -2]), entity(5, 9, &[1])]))
        );
    }

    #[test]
    fn apply_bounds_the_entity_count() {
        let base = state(
            &(0..MAX_ENTITIES as u32)
                .map(|i| entity(i * 2, 1, &[]))
                .collect::<Vec<_>>(),
        );
        // One new entity at an odd id: MAX_ENTITIES + 1 in all.
        let frame = with(
            header(0, 6, 4, 0),
            &[0x00, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00],
        );
        assert!(matches!(
            apply(&frame, Some(&base)),
            Err(GameFrameError::TooMany {
                what: "entities",
                ..
            })
        ));
        // Replacing one keeps the count.
        let frame = with(
            header(0, 6, 4, 0),
            &[0x00, 0x01, 0x02, 0x01, 0x01, 0x00, 0x00],
        );
        assert_eq!(
            apply(&frame, Some(&base)).map(|s| s.len()),
            Ok(MAX_ENTITIES)
        );
    }

    #[test]
    fn a_huge_delta_still_fits() {
        // 1024 entities of 32 extreme fields: far beyond one datagram.
        let cur = state(
            &(0..MAX_ENTITIES as u32)
                .map(|i| entity(i, 1, &[i32::MIN; 32]))
                .collect::<Vec<_>>(),
        );
        let (out, encoded, view) = encode(spec(2, 2), None, &cur);
        assert!(encoded.partial && out.len() <= 1200);
        assert!(!view.is_empty() && view.len() < cur.len());
        assert_eq!(apply(&out, None), Ok(view));
    }
}
