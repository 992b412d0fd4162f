// rtcrelay game codec: the binary frames of authoritative rooms, in plain
// JavaScript with no DOM, so that Node tests and browsers share it.
// The normative formats are the doc comments of protocol/src/game/*.rs
// (input.rs: frame 0x02, snapshot.rs: frame 0x03, varint.rs, world.rs);
// this module decodes every frame exactly as the Rust decoder does, with the
// same bounds, and throws a GameCodecError (with a stable `code`) on anything
// else. Typings: rtcrelay-codec.d.ts.
//
// A world state is a Map<id, {id, kind, fields: Int32Array}> iterated in
// ascending id order. States share entity objects with the states they were
// derived from: treat entities and their fields as read-only.

export const FRAME_INPUT = 0x02;
export const FRAME_SNAPSHOT = 0x03;
/** Most entities a state may hold (world.rs MAX_ENTITIES). */
export const MAX_ENTITIES = 1024;
/** Most fields an entity may have: the delta mask is one u32. */
export const MAX_FIELDS = 32;
/** Most inputs one input datagram carries (the redundancy window). */
export const MAX_INPUTS_PER_DATAGRAM = 32;
/** Largest input of any game, in bytes. */
export const MAX_INPUT_BYTES = 16;
export const INPUT_HEADER_LEN = 18;
export const SNAPSHOT_HEADER_LEN = 14;
/** Longest varint: 5 bytes carry a u32. */
export const MAX_VARINT_BYTES = 5;

const INPUT_FLAG_ACK = 0x01;
const SNAPSHOT_FLAG_FULL = 0x01;
const SNAPSHOT_FLAG_PARTIAL = 0x02;
const UPDATE_HEAD_NEW = 0x01;
const U32_MAX = 0xffffffff;

/**
 * Why a game frame could not be decoded, encoded or applied. `code` mirrors
 * the Rust GameFrameError variant in snake_case: empty, unknown_type,
 * truncated, trailing, reserved_flags, bad_varint, too_many, invalid,
 * unknown_baseline.
 */
export class GameCodecError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'GameCodecError';
    this.code = code;
    Object.assign(this, details);
  }
}

function truncated(at, need) {
  return new GameCodecError('truncated', `frame ends early: need ${need} more bytes at offset ${at}`, { at, need });
}

function tooMany(what, got, max) {
  return new GameCodecError('too_many', `${what} is ${got}, limit ${max}`, { what, got, max });
}

function invalid(message) {
  return new GameCodecError('invalid', `invalid value: ${message}`);
}

function hex2(b) {
  return b.toString(16).padStart(2, '0');
}

/** Views any binary input as a Uint8Array over exactly its bytes. */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (Array.isArray(data)) return Uint8Array.from(data);
  throw new TypeError('expected an ArrayBuffer, an ArrayBufferView or an array of bytes');
}

function isU32(v) {
  return Number.isInteger(v) && v >= 0 && v <= U32_MAX;
}

// ---- varint and zigzag (varint.rs) ----

/** Appends `v` (a u32) as LEB128 to the array of bytes `out`. */
export function putVarint(out, v) {
  if (!isU32(v)) throw invalid(`varint value ${v} is not a u32`);
  let x = v;
  while (x >= 0x80) {
    out.push((x & 0x7f) | 0x80);
    x = Math.floor(x / 128);
  }
  out.push(x);
  return out;
}

/** Bytes `putVarint` uses for `v`. */
export function varintLen(v) {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  return 5;
}

/**
 * Reads a LEB128 varint at `at`. Returns [value, nextOffset]. Rejects more
 * than 5 bytes, values above u32::MAX (bad_varint) and truncation.
 */
export function getVarint(bytes, at) {
  let value = 0;
  let scale = 1;
  let pos = at;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos >= bytes.length) throw truncated(pos, 1);
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) {
      if (value > U32_MAX) break;
      return [value, pos];
    }
  }
  throw new GameCodecError('bad_varint', `varint longer than 5 bytes or above u32::MAX at offset ${at}`, { at });
}

/** Zigzag: 0, -1, 1, -2, 2 … → 0, 1, 2, 3, 4 … (i32 → u32). */
export function zigzag(v) {
  return ((v << 1) ^ (v >> 31)) >>> 0;
}

/** Inverse of zigzag (u32 → i32). */
export function unzigzag(u) {
  return (u >>> 1) ^ -(u & 1);
}

function readU32(bytes, at) {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

function writeU32(out, at, v) {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

// ---- input datagram (input.rs) ----

/**
 * Encodes an input datagram. `ack` is null or {tick, delayMs} (delayMs is
 * clamped to 0..=65535 and rounded); `inputs` holds count * inputSize bytes,
 * oldest first. Throws GameCodecError "invalid"/"too_many" when a limit is
 * broken (a bug in the caller: nothing is sent).
 */
export function encodeInput({ seq, ack = null, firstTick, inputSize, inputs }) {
  const data = asBytes(inputs);
  if (!isU32(seq)) throw invalid(`seq ${seq} is not a u32`);
  if (!isU32(firstTick)) throw invalid(`first_tick ${firstTick} is not a u32`);
  if (!Number.isInteger(inputSize) || inputSize < 1 || inputSize > MAX_INPUT_BYTES) {
    throw tooMany('input_size', inputSize, MAX_INPUT_BYTES);
  }
  if (data.length % inputSize !== 0) throw invalid(`${data.length} input bytes are not a multiple of input_size ${inputSize}`);
  const count = data.length / inputSize;
  if (count < 1) throw invalid('an input datagram carries at least one input');
  if (count > MAX_INPUTS_PER_DATAGRAM) throw tooMany('input count', count, MAX_INPUTS_PER_DATAGRAM);
  const out = new Uint8Array(INPUT_HEADER_LEN + data.length);
  out[0] = FRAME_INPUT;
  if (ack) {
    if (!isU32(ack.tick)) throw invalid(`ack tick ${ack.tick} is not a u32`);
    const delay = Math.min(0xffff, Math.max(0, Math.round(Number(ack.delayMs) || 0)));
    out[1] = INPUT_FLAG_ACK;
    writeU32(out, 6, ack.tick);
    out[10] = delay >>> 8;
    out[11] = delay & 0xff;
  }
  writeU32(out, 2, seq);
  writeU32(out, 12, firstTick);
  out[16] = inputSize;
  out[17] = count;
  out.set(data, INPUT_HEADER_LEN);
  return out;
}

/** Decodes an input datagram; every limit of input.rs is checked. */
export function decodeInput(frame) {
  const bytes = asBytes(frame);
  if (bytes.length === 0) throw new GameCodecError('empty', 'frame is empty');
  if (bytes[0] !== FRAME_INPUT) {
    throw new GameCodecError('unknown_type', `unknown frame type 0x${hex2(bytes[0])}`, { frameType: bytes[0] });
  }
  if (bytes.length < INPUT_HEADER_LEN) throw truncated(bytes.length, INPUT_HEADER_LEN - bytes.length);
  const flags = bytes[1];
  if ((flags & ~INPUT_FLAG_ACK) !== 0) {
    throw new GameCodecError('reserved_flags', `reserved flag bits set: 0x${hex2(flags)}`, { flags });
  }
  const seq = readU32(bytes, 2);
  const ackTick = readU32(bytes, 6);
  const ackDelay = (bytes[10] << 8) | bytes[11];
  if ((flags & INPUT_FLAG_ACK) === 0 && (ackTick !== 0 || ackDelay !== 0)) {
    throw invalid('ack fields set without the ack flag');
  }
  const firstTick = readU32(bytes, 12);
  const inputSize = bytes[16];
  const count = bytes[17];
  if (inputSize === 0) throw invalid('input_size is 0');
  if (inputSize > MAX_INPUT_BYTES) throw tooMany('input_size', inputSize, MAX_INPUT_BYTES);
  if (count === 0) throw invalid('input count is 0');
  if (count > MAX_INPUTS_PER_DATAGRAM) throw tooMany('input count', count, MAX_INPUTS_PER_DATAGRAM);
  const end = INPUT_HEADER_LEN + count * inputSize;
  if (bytes.length < end) throw truncated(bytes.length, end - bytes.length);
  if (bytes.length > end) {
    throw new GameCodecError('trailing', `${bytes.length - end} trailing bytes after the frame`, { count: bytes.length - end });
  }
  return {
    seq,
    ack: (flags & INPUT_FLAG_ACK) !== 0 ? { tick: ackTick, delayMs: ackDelay } : null,
    firstTick,
    inputSize,
    inputs: bytes.slice(INPUT_HEADER_LEN, end),
  };
}

// ---- snapshot datagram (snapshot.rs) ----

// The next id of an ascending list: the first gap is the id itself, every
// later gap is at least 1.
function readId(bytes, at, previous) {
  const [gap, next] = getVarint(bytes, at);
  if (previous === null) return [gap, next];
  if (gap === 0) throw invalid('entity ids not strictly ascending');
  const id = previous + gap;
  if (id > U32_MAX) throw invalid('entity id beyond u32::MAX');
  return [id, next];
}

function readCount(bytes, at, what) {
  const [count, next] = getVarint(bytes, at);
  if (count > MAX_ENTITIES) throw tooMany(what, count, MAX_ENTITIES);
  return [count, next];
}

function readU8(bytes, at) {
  if (at >= bytes.length) throw truncated(at, 1);
  return bytes[at];
}

/**
 * Parses a snapshot frame, without applying it. Rejects exactly what the
 * Rust decoder rejects (snapshot.rs "Decoder rules"): reserved flag bits; a
 * full snapshot with a baseline tick, removals, or an update not flagged
 * new; more than MAX_ENTITIES removals or updates; ids not strictly
 * ascending or beyond u32::MAX; an id both removed and updated; head bits
 * other than bit 0; field_count above MAX_FIELDS; mask bits at or above a
 * new entity's field_count; bad varints; truncation; trailing bytes.
 * Returns {header: {tick, baseline, partial, inputAck}, removed: number[],
 * updates: [{id, new: {kind, fieldCount} | null, changes: [fieldIndex, delta][]}]}.
 */
export function decodeSnapshot(frame) {
  const bytes = asBytes(frame);
  if (bytes.length === 0) throw new GameCodecError('empty', 'frame is empty');
  if (bytes[0] !== FRAME_SNAPSHOT) {
    throw new GameCodecError('unknown_type', `unknown frame type 0x${hex2(bytes[0])}`, { frameType: bytes[0] });
  }
  if (bytes.length < SNAPSHOT_HEADER_LEN) throw truncated(bytes.length, SNAPSHOT_HEADER_LEN - bytes.length);
  const flags = bytes[1];
  if ((flags & ~(SNAPSHOT_FLAG_FULL | SNAPSHOT_FLAG_PARTIAL)) !== 0) {
    throw new GameCodecError('reserved_flags', `reserved flag bits set: 0x${hex2(flags)}`, { flags });
  }
  const full = (flags & SNAPSHOT_FLAG_FULL) !== 0;
  const tick = readU32(bytes, 2);
  const baselineTick = readU32(bytes, 6);
  if (full && baselineTick !== 0) throw invalid('full snapshot with a baseline tick');
  const header = {
    tick,
    baseline: full ? null : baselineTick,
    partial: (flags & SNAPSHOT_FLAG_PARTIAL) !== 0,
    inputAck: readU32(bytes, 10),
  };
  let at = SNAPSHOT_HEADER_LEN;

  let removedCount;
  [removedCount, at] = readCount(bytes, at, 'removed entities');
  if (full && removedCount !== 0) throw invalid('full snapshot with removals');
  const removed = [];
  let id = null;
  for (let i = 0; i < removedCount; i++) {
    [id, at] = readId(bytes, at, id);
    removed.push(id);
  }

  let updateCount;
  [updateCount, at] = readCount(bytes, at, 'updated entities');
  const updates = [];
  id = null;
  for (let i = 0; i < updateCount; i++) {
    [id, at] = readId(bytes, at, id);
    const head = readU8(bytes, at++);
    if ((head & ~UPDATE_HEAD_NEW) !== 0) {
      throw new GameCodecError('reserved_flags', `reserved flag bits set: 0x${hex2(head)}`, { flags: head });
    }
    let isNew = null;
    if ((head & UPDATE_HEAD_NEW) !== 0) {
      const kind = readU8(bytes, at++);
      const fieldCount = readU8(bytes, at++);
      if (fieldCount > MAX_FIELDS) throw tooMany('field_count', fieldCount, MAX_FIELDS);
      isNew = { kind, fieldCount };
    } else if (full) {
      throw invalid('full snapshot updates an existing entity');
    }
    let mask;
    [mask, at] = getVarint(bytes, at);
    if (isNew && mask >= 2 ** isNew.fieldCount) {
      throw invalid(`mask 0x${mask.toString(16)} beyond the ${isNew.fieldCount} fields of new entity ${id}`);
    }
    const changes = [];
    for (let field = 0; mask !== 0; field++) {
      if (mask % 2 === 1) {
        let zz;
        [zz, at] = getVarint(bytes, at);
        changes.push([field, unzigzag(zz)]);
      }
      mask = Math.floor(mask / 2);
    }
    updates.push({ id, new: isNew, changes });
  }
  if (at < bytes.length) {
    throw new GameCodecError('trailing', `${bytes.length - at} trailing bytes after the frame`, { count: bytes.length - at });
  }
  // Both lists ascend: one merge pass finds an id in both.
  for (let r = 0, u = 0; r < removed.length && u < updates.length; ) {
    if (removed[r] < updates[u].id) r++;
    else if (removed[r] > updates[u].id) u++;
    else throw invalid(`entity ${removed[r]} both removed and updated`);
  }
  return { header, removed, updates };
}

// Entities of a state in ascending id order (states built here already are).
function sortedEntities(state) {
  const list = [...state.values()];
  for (let i = 1; i < list.length; i++) {
    if (list[i - 1].id >= list[i].id) {
      list.sort((a, b) => a.id - b.id);
      break;
    }
  }
  return list;
}

/**
 * Applies a decoded snapshot to the state of its baseline (ignored for a
 * full snapshot; null for a delta → unknown_baseline) and returns the new
 * state, in ascending id order. Errors, in the order Rust finds them: a
 * removal of an id the baseline lacks, an update (not new) of an id the
 * baseline lacks, a field index beyond the entity's fields, more than
 * MAX_ENTITIES entities. The baseline is not modified; unchanged entities
 * are shared with it.
 */
export function applySnapshot(view, baselineState) {
  const { header, removed, updates } = view;
  let base;
  if (header.baseline === null) {
    base = [];
  } else {
    if (!baselineState) {
      throw new GameCodecError('unknown_baseline', `baseline tick ${header.baseline} is unknown`, { tick: header.baseline });
    }
    base = sortedEntities(baselineState);
  }
  const out = new Map();
  let b = 0;
  let r = 0;
  let u = 0;
  for (;;) {
    const baseEntity = b < base.length ? base[b] : null;
    if (r < removed.length) {
      const removedId = removed[r];
      if (baseEntity && baseEntity.id === removedId) {
        b++;
        r++;
        continue;
      }
      if (!baseEntity || baseEntity.id > removedId) throw invalid(`removal of entity ${removedId}, not in the baseline`);
    }
    const up = u < updates.length ? updates[u] : null;
    let old = null;
    let update = null;
    if (!baseEntity && !up) break;
    if (baseEntity && !up) old = baseEntity;
    else if (!baseEntity) update = up;
    else if (baseEntity.id < up.id) old = baseEntity;
    else if (baseEntity.id === up.id) {
      old = baseEntity;
      update = up;
    } else update = up;
    if (old) b++;
    if (update) u++;
    if (out.size === MAX_ENTITIES) throw tooMany('entities', MAX_ENTITIES + 1, MAX_ENTITIES);
    if (!update) {
      out.set(old.id, old);
      continue;
    }
    let kind;
    let fields;
    if (update.new) {
      kind = update.new.kind;
      fields = new Int32Array(update.new.fieldCount);
    } else if (old) {
      kind = old.kind;
      fields = Int32Array.from(old.fields);
    } else {
      throw invalid(`update of entity ${update.id}, not in the baseline`);
    }
    for (const [index, delta] of update.changes) {
      if (index >= fields.length) {
        throw invalid(`field ${index} of entity ${update.id}, which has ${fields.length} fields`);
      }
      fields[index] = (fields[index] + delta) | 0;
    }
    out.set(update.id, { id: update.id, kind, fields });
  }
  if (r < removed.length) throw invalid(`removal of entity ${removed[r]}, not in the baseline`);
  return out;
}

/** A state from an array of {id, kind, fields} (any order; ids unique). */
export function stateFromEntities(entities) {
  const sorted = [...entities].sort((a, b) => a.id - b.id);
  const out = new Map();
  for (const e of sorted) {
    if (out.has(e.id)) throw invalid(`entity ${e.id} twice`);
    out.set(e.id, { id: e.id, kind: e.kind, fields: Int32Array.from(e.fields) });
  }
  return out;
}

/** The entities of a state as plain objects, ascending ids (for JSON and tests). */
export function stateToEntities(state) {
  return sortedEntities(state).map((e) => ({ id: e.id, kind: e.kind, fields: Array.from(e.fields) }));
}

function sameFields(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** True when two states hold the same entities with the same kinds and fields. */
export function statesEqual(a, b) {
  if (a.size !== b.size) return false;
  for (const [id, ea] of a) {
    const eb = b.get(id);
    if (!eb || ea.kind !== eb.kind || !sameFields(ea.fields, eb.fields)) return false;
  }
  return true;
}

// One entity's update bytes against `old` (same id), or null when nothing
// changed: id gap, head, [kind, field_count], mask, zigzag deltas.
function encodeUpdate(gap, entity, old) {
  const fields = entity.fields;
  // Same kind and field count: a delta; anything else replaces it.
  const base = old && old.kind === entity.kind && old.fields.length === fields.length ? old : null;
  let mask = 0;
  const deltas = [];
  for (let i = 0; i < fields.length; i++) {
    const delta = (fields[i] - (base ? base.fields[i] : 0)) | 0;
    if (delta !== 0) {
      mask += 2 ** i;
      deltas.push(zigzag(delta));
    }
  }
  if (base && mask === 0) return null;
  const bytes = [];
  putVarint(bytes, gap);
  if (base) bytes.push(0);
  else bytes.push(UPDATE_HEAD_NEW, entity.kind, fields.length);
  putVarint(bytes, mask);
  for (const d of deltas) putVarint(bytes, d);
  return bytes;
}

/**
 * Encodes `current` as a delta against `baseline` ({tick, state}) or as a
 * full snapshot (null), at most `maxLen` bytes (default 1,200). Byte for
 * byte what the Rust SnapshotEncoder writes: a frame that does not fit is
 * cut to the longest prefix of (removals, then updates in ascending id
 * order) and flagged partial. Returns {bytes, partial, view}: `view` is the
 * state the client holds after applying it. The server side of the format,
 * for tests and tools.
 */
export function encodeSnapshot({ tick, inputAck = 0, baseline = null, current, maxLen = 1200 }) {
  if (!isU32(tick) || !isU32(inputAck)) throw invalid('tick and inputAck must be u32');
  if (!(maxLen >= SNAPSHOT_HEADER_LEN + 2)) throw invalid(`maxLen ${maxLen} is below ${SNAPSHOT_HEADER_LEN + 2}`);
  if (baseline && !isU32(baseline.tick)) throw invalid('baseline tick must be a u32');
  const cur = sortedEntities(current);
  if (cur.length > MAX_ENTITIES) throw tooMany('entities', cur.length, MAX_ENTITIES);
  for (const e of cur) {
    if (!isU32(e.id)) throw invalid(`entity id ${e.id}`);
    if (e.fields.length > MAX_FIELDS) throw tooMany('fields', e.fields.length, MAX_FIELDS);
    if (!Number.isInteger(e.kind) || e.kind < 0 || e.kind > 255) throw invalid(`entity ${e.id} kind ${e.kind}`);
  }
  const old = baseline ? sortedEntities(baseline.state) : [];

  // Every removal and every update, in id order, with their byte offsets.
  const removedIds = [];
  const removedBytes = [];
  const removedEnds = [];
  const updateIds = [];
  const updateBytes = [];
  const updateEnds = [];
  const pushUpdate = (o, n) => {
    const gap = updateIds.length === 0 ? n.id : n.id - updateIds[updateIds.length - 1];
    const bytes = encodeUpdate(gap, n, o);
    if (!bytes) return;
    for (const x of bytes) updateBytes.push(x);
    updateEnds.push(updateBytes.length);
    updateIds.push(n.id);
  };
  for (let b = 0, c = 0; b < old.length || c < cur.length; ) {
    const o = b < old.length ? old[b] : null;
    const n = c < cur.length ? cur[c] : null;
    if (o && n && o.id === n.id) {
      pushUpdate(o, n);
      b++;
      c++;
    } else if (o && (!n || o.id < n.id)) {
      putVarint(removedBytes, removedIds.length === 0 ? o.id : o.id - removedIds[removedIds.length - 1]);
      removedEnds.push(removedBytes.length);
      removedIds.push(o.id);
      b++;
    } else {
      pushUpdate(null, n);
      c++;
    }
  }

  // Fit: the longest prefix of (removals, then updates) within maxLen.
  const removals = removedIds.length;
  const updates = updateIds.length;
  const maxItems = removals > MAX_ENTITIES ? MAX_ENTITIES : removals + Math.min(updates, MAX_ENTITIES);
  const lenOf = (items) => {
    const r = Math.min(items, removals);
    const u = items - r;
    return (
      SNAPSHOT_HEADER_LEN + varintLen(r) + (r ? removedEnds[r - 1] : 0) + varintLen(u) + (u ? updateEnds[u - 1] : 0)
    );
  };
  let items = maxItems;
  if (lenOf(maxItems) > maxLen) {
    let lo = 0;
    let hi = maxItems;
    while (lo < hi) {
      const mid = lo + Math.ceil((hi - lo) / 2);
      if (lenOf(mid) <= maxLen) lo = mid;
      else hi = mid - 1;
    }
    items = lo;
  }
  const keptRemovals = Math.min(items, removals);
  const keptUpdates = items - keptRemovals;
  const partial = items < removals + updates;

  const out = new Uint8Array(lenOf(items));
  out[0] = FRAME_SNAPSHOT;
  out[1] = (baseline ? 0 : SNAPSHOT_FLAG_FULL) | (partial ? SNAPSHOT_FLAG_PARTIAL : 0);
  writeU32(out, 2, tick);
  writeU32(out, 6, baseline ? baseline.tick : 0);
  writeU32(out, 10, inputAck);
  const body = [];
  putVarint(body, keptRemovals);
  for (let i = 0; i < (keptRemovals ? removedEnds[keptRemovals - 1] : 0); i++) body.push(removedBytes[i]);
  putVarint(body, keptUpdates);
  for (let i = 0; i < (keptUpdates ? updateEnds[keptUpdates - 1] : 0); i++) body.push(updateBytes[i]);
  out.set(body, SNAPSHOT_HEADER_LEN);

  // The client's view: lists are cut at a prefix, so an item was sent iff
  // its id is below the first id left out.
  const removalCut = keptRemovals < removals ? removedIds[keptRemovals] : Infinity;
  const updateCut = keptUpdates < updates ? updateIds[keptUpdates] : Infinity;
  const view = new Map();
  const copy = (e) => view.set(e.id, { id: e.id, kind: e.kind, fields: Int32Array.from(e.fields) });
  for (let b = 0, c = 0; b < old.length || c < cur.length; ) {
    const o = b < old.length ? old[b] : null;
    const n = c < cur.length ? cur[c] : null;
    if (o && n && o.id === n.id) {
      copy(n.id < updateCut ? n : o);
      b++;
      c++;
    } else if (o && (!n || o.id < n.id)) {
      if (o.id >= removalCut) copy(o);
      b++;
    } else {
      if (n.id < updateCut) copy(n);
      c++;
    }
  }
  return { bytes: out, partial, view };
}

/** Lowercase hex of bytes (for logs and test vectors). */
export function toHex(data) {
  return Array.from(asBytes(data), hex2).join('');
}

/** Bytes of a hex string; throws GameCodecError "invalid" on bad hex. */
export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw invalid('not a hex string');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
