// Unit tests of rtcrelay-codec.js (node:test): the shared vectors
// (protocol/testdata/game-vectors.json, also checked by the Rust codec),
// round trips, truncation and seeded mutation fuzzing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  GameCodecError,
  MAX_ENTITIES,
  MAX_FIELDS,
  applySnapshot,
  decodeInput,
  decodeSnapshot,
  encodeInput,
  encodeSnapshot,
  fromHex,
  getVarint,
  putVarint,
  stateFromEntities,
  stateToEntities,
  statesEqual,
  toHex,
  unzigzag,
  varintLen,
  zigzag,
} from './rtcrelay-codec.js';

const VECTORS_URL = new URL('../../protocol/testdata/game-vectors.json', import.meta.url);

// Seeded PRNG (mulberry32): deterministic tests.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (n) => Math.floor(next() * n);
  return next;
}

const CODES = new Set([
  'empty',
  'unknown_type',
  'truncated',
  'trailing',
  'reserved_flags',
  'bad_varint',
  'too_many',
  'invalid',
  'unknown_baseline',
]);

function assertCoded(fn, code, what) {
  let thrown = null;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown, `${what}: expected an error${code ? ` ${code}` : ''}, got none`);
  assert.ok(thrown instanceof GameCodecError, `${what}: ${thrown?.stack ?? thrown} is not a GameCodecError`);
  assert.ok(CODES.has(thrown.code), `${what}: unknown code ${thrown.code}`);
  if (code) assert.equal(thrown.code, code, `${what}: ${thrown.message}`);
  return thrown;
}

// Decodes and applies; returns the state or throws only GameCodecError.
function decodeApply(bytes, baseline) {
  const view = decodeSnapshot(bytes);
  return { view, state: applySnapshot(view, baseline) };
}

function randomState(r, { maxEntities = 12, maxId = 300, maxFields = 6 } = {}) {
  const entities = [];
  const ids = new Set();
  const n = r.int(maxEntities + 1);
  for (let i = 0; i < n; i++) {
    const id = r.int(maxId);
    if (ids.has(id)) continue;
    ids.add(id);
    const fields = [];
    const count = r.int(maxFields + 1);
    for (let f = 0; f < count; f++) fields.push(randomI32(r));
    entities.push({ id, kind: r.int(4), fields });
  }
  return stateFromEntities(entities);
}

function randomI32(r) {
  switch (r.int(4)) {
    case 0:
      return r.int(3) - 1;
    case 1:
      return r.int(2000) - 1000;
    case 2:
      return [-2147483648, 2147483647, -1, 0][r.int(4)];
    default:
      return (r() * 4294967296) | 0;
  }
}

// A changed copy: some fields moved, some entities gone, some new.
function mutateState(r, state) {
  const entities = stateToEntities(state).filter(() => r() > 0.1);
  for (const e of entities) {
    for (let f = 0; f < e.fields.length; f++) if (r() < 0.3) e.fields[f] = (e.fields[f] + r.int(200) - 100) | 0;
    if (r() < 0.05) e.kind = (e.kind + 1) % 4;
  }
  const extra = randomState(r, { maxEntities: 3 });
  const ids = new Set(entities.map((e) => e.id));
  for (const e of stateToEntities(extra)) if (!ids.has(e.id)) entities.push(e);
  return stateFromEntities(entities);
}

// ---------------------------------------------------------------- varint

test('varint: round trip of edge values, shortest form, lengths', () => {
  const values = [0, 1, 127, 128, 255, 16383, 16384, 2097151, 2097152, 268435455, 268435456, 0x7fffffff, 0xffffffff];
  for (const v of values) {
    const bytes = putVarint([], v);
    assert.equal(bytes.length, varintLen(v), `length of ${v}`);
    const [got, next] = getVarint(Uint8Array.from(bytes), 0);
    assert.equal(got, v);
    assert.equal(next, bytes.length);
  }
  assert.deepEqual(putVarint([], 300), [0xac, 0x02]);
  assert.deepEqual(putVarint([], 0xffffffff), [0xff, 0xff, 0xff, 0xff, 0x0f]);
});

test('varint: non-minimal accepted; 6 bytes, > u32::MAX and truncation rejected', () => {
  assert.deepEqual(getVarint(Uint8Array.from([0x80, 0x00]), 0), [0, 2]);
  assert.deepEqual(getVarint(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x00]), 0), [0, 5]);
  assertCoded(() => getVarint(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x10]), 0), 'bad_varint', '2^32');
  assertCoded(() => getVarint(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), 0), 'bad_varint', '6 bytes');
  const e = assertCoded(() => getVarint(Uint8Array.from([0x00, 0x80, 0x80]), 1), 'truncated', 'cut');
  assert.equal(e.at, 3);
  assertCoded(() => getVarint(new Uint8Array(0), 0), 'truncated', 'empty');
  assertCoded(() => putVarint([], -1), 'invalid', 'negative');
  assertCoded(() => putVarint([], 2 ** 32), 'invalid', 'too big');
});

test('zigzag: small magnitudes map to small codes; extremes round trip', () => {
  assert.deepEqual([0, -1, 1, -2, 2].map(zigzag), [0, 1, 2, 3, 4]);
  assert.equal(zigzag(2147483647), 0xfffffffe);
  assert.equal(zigzag(-2147483648), 0xffffffff);
  const r = rng(1);
  for (let i = 0; i < 10000; i++) {
    const v = randomI32(r);
    assert.equal(unzigzag(zigzag(v)), v);
  }
});

// ---------------------------------------------------------------- inputs

test('input: encode/decode round trip with and without ack', () => {
  const r = rng(2);
  for (let i = 0; i < 500; i++) {
    const inputSize = 1 + r.int(16);
    const count = 1 + r.int(32);
    const inputs = Uint8Array.from({ length: inputSize * count }, () => r.int(256));
    const ack = r() < 0.5 ? null : { tick: r.int(2 ** 32), delayMs: r.int(65536) };
    const d = { seq: r.int(2 ** 32), ack, firstTick: r.int(2 ** 32), inputSize, inputs };
    const bytes = encodeInput(d);
    assert.equal(bytes.length, 18 + inputs.length);
    assert.deepEqual(decodeInput(bytes), d);
  }
});

test('input: the delay is clamped and rounded; limits are enforced when encoding', () => {
  const one = Uint8Array.of(1);
  const base = { seq: 1, firstTick: 5, inputSize: 1, inputs: one };
  assert.equal(decodeInput(encodeInput({ ...base, ack: { tick: 3, delayMs: 1e9 } })).ack.delayMs, 65535);
  assert.equal(decodeInput(encodeInput({ ...base, ack: { tick: 3, delayMs: -4 } })).ack.delayMs, 0);
  assert.equal(decodeInput(encodeInput({ ...base, ack: { tick: 3, delayMs: 2.6 } })).ack.delayMs, 3);
  assertCoded(() => encodeInput({ ...base, inputs: new Uint8Array(0) }), 'invalid', 'no inputs');
  assertCoded(() => encodeInput({ ...base, inputs: new Uint8Array(33) }), 'too_many', '33 inputs');
  assertCoded(() => encodeInput({ ...base, inputSize: 17, inputs: new Uint8Array(17) }), 'too_many', 'size 17');
  assertCoded(() => encodeInput({ ...base, inputSize: 2, inputs: new Uint8Array(3) }), 'invalid', 'ragged');
  assertCoded(() => encodeInput({ ...base, seq: -1 }), 'invalid', 'seq');
});

test('input: malformed datagrams are rejected with the Rust error codes', () => {
  const good = encodeInput({ seq: 1, ack: null, firstTick: 5, inputSize: 1, inputs: Uint8Array.of(1) });
  const patch = (i, v) => {
    const b = Uint8Array.from(good);
    b[i] = v;
    return b;
  };
  assertCoded(() => decodeInput(new Uint8Array(0)), 'empty', 'empty');
  assertCoded(() => decodeInput(patch(0, 3)), 'unknown_type', 'type');
  assertCoded(() => decodeInput(patch(1, 2)), 'reserved_flags', 'flags');
  assertCoded(() => decodeInput(patch(9, 1)), 'invalid', 'ack without flag');
  assertCoded(() => decodeInput(patch(16, 0)), 'invalid', 'size 0');
  assertCoded(() => decodeInput(patch(16, 17)), 'too_many', 'size 17');
  assertCoded(() => decodeInput(patch(17, 0)), 'invalid', 'count 0');
  assertCoded(() => decodeInput(patch(17, 33)), 'too_many', 'count 33');
  assertCoded(() => decodeInput(patch(17, 2)), 'truncated', 'count 2, one input');
  assertCoded(() => decodeInput(Uint8Array.of(...good, 0)), 'trailing', 'trailing');
});

// ---------------------------------------------------------------- snapshots

test('snapshot: encode → decode → apply reproduces the state (random deltas, full and partial)', () => {
  const r = rng(3);
  let baseline = null;
  let client = null;
  let checked = 0;
  for (let i = 0; i < 3000; i++) {
    const current = i % 50 === 0 ? randomState(r) : mutateState(r, client ?? randomState(r));
    const maxLen = r() < 0.2 ? 16 + r.int(60) : 1200;
    const enc = encodeSnapshot({ tick: i + 1, inputAck: i, baseline, current, maxLen });
    assert.ok(enc.bytes.length <= maxLen);
    const { view, state } = decodeApply(enc.bytes, baseline ? baseline.state : null);
    assert.equal(view.header.tick, i + 1);
    assert.equal(view.header.inputAck, i);
    assert.equal(view.header.baseline, baseline ? baseline.tick : null);
    assert.equal(view.header.partial, enc.partial);
    assert.ok(statesEqual(state, enc.view), `tick ${i + 1}: applied state differs from the encoder's view`);
    if (!enc.partial) {
      assert.ok(statesEqual(state, current), `tick ${i + 1}: complete snapshot differs from the state`);
      checked++;
    }
    // Ids come out ascending.
    const ids = [...state.keys()];
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    baseline = r() < 0.1 ? null : { tick: i + 1, state };
    client = state;
  }
  assert.ok(checked > 1000, `only ${checked} complete snapshots`);
});

test('snapshot: a partial snapshot converges: resending against its view completes the state', () => {
  const r = rng(4);
  const current = randomState(r, { maxEntities: 200, maxId: 5000, maxFields: 12 });
  let baseline = null;
  let state = null;
  for (let round = 0; round < 100; round++) {
    const enc = encodeSnapshot({ tick: round + 1, baseline, current, maxLen: 200 });
    state = decodeApply(enc.bytes, baseline?.state ?? null).state;
    baseline = { tick: round + 1, state };
    if (!enc.partial) break;
  }
  assert.ok(statesEqual(state, current));
});

test('snapshot: i32 arithmetic wraps exactly', () => {
  const base = stateFromEntities([{ id: 0, kind: 1, fields: [2147483647, -2147483648, 5] }]);
  const cur = stateFromEntities([{ id: 0, kind: 1, fields: [-2147483648, 2147483647, 5] }]);
  const enc = encodeSnapshot({ tick: 2, baseline: { tick: 1, state: base }, current: cur });
  const { view, state } = decodeApply(enc.bytes, base);
  assert.deepEqual(view.updates[0].changes, [
    [0, 1],
    [1, -1],
  ]);
  assert.deepEqual(stateToEntities(state), stateToEntities(cur));
  // The baseline is left untouched.
  assert.deepEqual(Array.from(base.get(0).fields), [2147483647, -2147483648, 5]);
});

test('snapshot: decoder rules (each rejected frame has its code)', () => {
  const header = (flags, tick, baseline, inputAck) => {
    const b = new Uint8Array(14);
    b[0] = 3;
    b[1] = flags;
    new DataView(b.buffer).setUint32(2, tick);
    new DataView(b.buffer).setUint32(6, baseline);
    new DataView(b.buffer).setUint32(10, inputAck);
    return [...b];
  };
  const delta = (...body) => Uint8Array.from([...header(0, 6, 4, 5), ...body]);
  const full = (...body) => Uint8Array.from([...header(1, 6, 0, 5), ...body]);
  assertCoded(() => decodeSnapshot(new Uint8Array(0)), 'empty', 'empty');
  assertCoded(() => decodeSnapshot(Uint8Array.of(1, 0)), 'unknown_type', 'relayed type');
  assertCoded(() => decodeSnapshot(delta().subarray(0, 13)), 'truncated', 'header');
  assertCoded(() => decodeSnapshot(Uint8Array.from([...header(4, 6, 4, 5), 0, 0])), 'reserved_flags', 'flag bit 2');
  assertCoded(() => decodeSnapshot(Uint8Array.from([...header(1, 6, 4, 5), 0, 0])), 'invalid', 'full with baseline');
  assertCoded(() => decodeSnapshot(full(1, 0, 0)), 'invalid', 'full with removals');
  assertCoded(() => decodeSnapshot(full(0, 1, 0, 0, 0)), 'invalid', 'full with an update not new');
  assertCoded(() => decodeSnapshot(delta(0)), 'truncated', 'no update count');
  assertCoded(() => decodeSnapshot(delta(0x81, 0x08)), 'too_many', '1025 removals');
  assertCoded(() => decodeSnapshot(delta(0, 0x81, 0x08)), 'too_many', '1025 updates');
  assertCoded(() => decodeSnapshot(delta(2, 5, 0, 0)), 'invalid', 'removal gap 0');
  assertCoded(() => decodeSnapshot(delta(2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0)), 'invalid', 'id beyond u32');
  assertCoded(() => decodeSnapshot(delta(0, 2, 1, 0, 0, 0, 0, 0)), 'invalid', 'update gap 0');
  assertCoded(() => decodeSnapshot(delta(1, 7, 1, 7, 0, 0)), 'invalid', 'removed and updated');
  assertCoded(() => decodeSnapshot(delta(0, 1, 7, 2, 0)), 'reserved_flags', 'head bit 1');
  assertCoded(() => decodeSnapshot(delta(0, 1, 7, 1, 2, 33, 0)), 'too_many', '33 fields');
  assertCoded(() => decodeSnapshot(delta(0, 1, 7, 1, 2, 2, 4, 0)), 'invalid', 'mask beyond new fields');
  assertCoded(() => decodeSnapshot(delta(0, 1, 7, 0, 0xff, 0xff, 0xff, 0xff, 0x1f)), 'bad_varint', 'mask above u32');
  assertCoded(() => decodeSnapshot(delta(0, 1, 7, 0, 1)), 'truncated', 'delta missing');
  assertCoded(() => decodeSnapshot(delta(0, 0, 9)), 'trailing', 'trailing');
  // A full-width mask is fine for a 32-field entity.
  const wide = decodeSnapshot(full(0, 1, 7, 1, 2, 32, 0xff, 0xff, 0xff, 0xff, 0x0f, ...new Array(32).fill(2)));
  assert.equal(wide.updates[0].changes.length, 32);
  assert.equal(stateToEntities(applySnapshot(wide, null))[0].fields[31], 1);
});

test('snapshot: apply rules (unknown baseline, removals and updates of unknown ids, fields, entity count)', () => {
  const base = stateFromEntities([
    { id: 1, kind: 2, fields: [10, 20] },
    { id: 5, kind: 2, fields: [1] },
  ]);
  const hdr = [3, 0, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 5];
  const view = (...body) => decodeSnapshot(Uint8Array.from([...hdr, ...body]));
  assertCoded(() => applySnapshot(view(0, 0), null), 'unknown_baseline', 'no baseline');
  assertCoded(() => applySnapshot(view(1, 3, 0), base), 'invalid', 'removal of 3');
  assertCoded(() => applySnapshot(view(1, 9, 0), base), 'invalid', 'removal of 9');
  assertCoded(() => applySnapshot(view(0, 1, 3, 0, 1, 2), base), 'invalid', 'update of 3');
  assertCoded(() => applySnapshot(view(0, 1, 5, 0, 2, 2), base), 'invalid', 'field 1 of a one-field entity');
  const ok = applySnapshot(view(1, 5, 1, 1, 0, 3, 2, 4), base);
  assert.deepEqual(stateToEntities(ok), [{ id: 1, kind: 2, fields: [11, 22] }]);
  // More than MAX_ENTITIES after applying.
  const many = stateFromEntities(Array.from({ length: MAX_ENTITIES }, (_, i) => ({ id: i, kind: 0, fields: [] })));
  assertCoded(() => applySnapshot(view(0, 1, 0xd0, 0x0f, 1, 0, 0, 0), many), 'too_many', '1025 entities');
});

test('snapshot: encoder limits', () => {
  assertCoded(
    () => encodeSnapshot({ tick: 1, current: stateFromEntities([{ id: 1, kind: 0, fields: new Array(MAX_FIELDS + 1).fill(0) }]) }),
    'too_many',
    '33 fields',
  );
  assertCoded(() => encodeSnapshot({ tick: 1, current: new Map(), maxLen: 15 }), 'invalid', 'maxLen 15');
  const empty = encodeSnapshot({ tick: 1, current: new Map(), maxLen: 16 });
  assert.equal(toHex(empty.bytes), '030100000001000000000000000000' + '00');
});

// ---------------------------------------------------------------- robustness

function validFrames() {
  const r = rng(5);
  const frames = [];
  let base = null;
  for (let i = 0; i < 40; i++) {
    const current = mutateState(r, base?.state ?? randomState(r, { maxEntities: 20, maxFields: 8 }));
    const enc = encodeSnapshot({ tick: i + 1, inputAck: i, baseline: base, current, maxLen: 100 + r.int(1100) });
    frames.push({ kind: 'snapshot', bytes: enc.bytes, baseline: base?.state ?? null });
    base = { tick: i + 1, state: enc.view };
  }
  for (let i = 0; i < 20; i++) {
    const inputSize = 1 + r.int(16);
    const count = 1 + r.int(32);
    const inputs = Uint8Array.from({ length: inputSize * count }, () => r.int(256));
    frames.push({
      kind: 'input',
      bytes: encodeInput({ seq: i, ack: i % 2 ? { tick: i, delayMs: i } : null, firstTick: i * 7, inputSize, inputs }),
    });
  }
  return frames;
}

function decodeAny(kind, bytes, baseline) {
  if (kind === 'input') return decodeInput(bytes);
  const view = decodeSnapshot(bytes);
  return applySnapshot(view, baseline);
}

test('every strict prefix of a valid frame is rejected with a coded error', () => {
  let prefixes = 0;
  for (const { kind, bytes, baseline } of validFrames()) {
    decodeAny(kind, bytes, baseline); // the whole frame is fine
    for (let n = 0; n < bytes.length; n++) {
      assertCoded(() => decodeAny(kind, bytes.subarray(0, n), baseline), null, `${kind} prefix ${n}/${bytes.length}`);
      prefixes++;
    }
  }
  assert.ok(prefixes > 1000);
});

test('random mutations never throw anything but GameCodecError, and never hang', () => {
  const r = rng(6);
  const frames = validFrames();
  let rejected = 0;
  let accepted = 0;
  for (let i = 0; i < 20000; i++) {
    const { kind, bytes, baseline } = frames[r.int(frames.length)];
    const m = Array.from(bytes);
    const edits = 1 + r.int(4);
    for (let e = 0; e < edits; e++) {
      const at = r.int(m.length + 1);
      switch (r.int(4)) {
        case 0:
          m[at] = r.int(256);
          break;
        case 1:
          m[at] = (m[at] ?? 0) ^ (1 << r.int(8));
          break;
        case 2:
          m.splice(at, 0, r.int(256));
          break;
        default:
          m.splice(at, 1 + r.int(3));
      }
    }
    // Any frame through any decoder, with or without a baseline.
    const decodeAs = r() < 0.8 ? kind : kind === 'input' ? 'snapshot' : 'input';
    try {
      decodeAny(decodeAs, Uint8Array.from(m.filter((x) => x !== undefined)), r() < 0.8 ? baseline : null);
      accepted++;
    } catch (e) {
      assert.ok(e instanceof GameCodecError, `mutation ${i}: ${e?.stack ?? e}`);
      assert.ok(CODES.has(e.code), e.code);
      rejected++;
    }
  }
  assert.ok(rejected > 1000 && accepted > 100, `rejected ${rejected}, accepted ${accepted}`);
});

test('random bytes after a snapshot or input type byte: coded errors only', () => {
  const r = rng(7);
  for (let i = 0; i < 20000; i++) {
    const bytes = Uint8Array.from({ length: r.int(80) }, () => r.int(256));
    if (bytes.length > 0 && r() < 0.9) bytes[0] = r() < 0.5 ? 2 : 3;
    if (bytes.length > 1 && r() < 0.7) bytes[1] &= 1;
    for (const kind of ['input', 'snapshot']) {
      try {
        decodeAny(kind, bytes, new Map());
      } catch (e) {
        assert.ok(e instanceof GameCodecError, `${kind} ${toHex(bytes)}: ${e?.stack ?? e}`);
      }
    }
  }
});

// ---------------------------------------------------------------- shared vectors

// The current states the Rust generator cut its partial vectors from
// (protocol/tests/vectors.rs: crowd_moved, and one small entity).
const CROWD_MOVED = stateFromEntities([
  ...Array.from({ length: 40 }, (_, i) => i)
    .filter((i) => i % 7 !== 3)
    .map((i) => ({ id: i * 3, kind: 2, fields: [i * 1000 + 13, -i, 6] })),
  ...Array.from({ length: 10 }, (_, i) => ({ id: 500 + i, kind: 3, fields: [i, 1, 2, 3] })),
]);
const PARTIAL_CURRENT = {
  'partial delta cut to 120 bytes': CROWD_MOVED,
  'partial full snapshot cut to 100 bytes': CROWD_MOVED,
  'partial delta cut inside the removals': stateFromEntities([{ id: 1, kind: 1, fields: [1] }]),
};

function loadVectors() {
  return JSON.parse(readFileSync(VECTORS_URL, 'utf8'));
}

function vectorState(baseline) {
  return baseline ? stateFromEntities(baseline.entities) : null;
}

test('shared vectors: input datagrams decode to the same values as in Rust, and re-encode to the same bytes', () => {
  const { inputs } = loadVectors();
  assert.ok(inputs.length > 0);
  for (const v of inputs) {
    const d = decodeInput(fromHex(v.hex));
    assert.equal(d.seq, v.seq, v.name);
    assert.deepEqual(d.ack, v.ack === null ? null : { tick: v.ack.tick, delayMs: v.ack.delay_ms }, v.name);
    assert.equal(d.firstTick, v.first_tick, v.name);
    assert.equal(d.inputSize, v.input_size, v.name);
    assert.equal(toHex(d.inputs), v.inputs_hex, v.name);
    assert.equal(toHex(encodeInput(d)), v.hex, `${v.name}: re-encoded`);
  }
});

test('shared vectors: snapshots decode and apply to the same header and state as in Rust', () => {
  const { snapshots } = loadVectors();
  assert.ok(snapshots.length > 0);
  let encoded = 0;
  for (const v of snapshots) {
    const baseline = vectorState(v.baseline);
    const { view, state } = decodeApply(fromHex(v.hex), baseline);
    assert.deepEqual(
      { tick: view.header.tick, baseline: view.header.baseline, partial: view.header.partial, input_ack: view.header.inputAck },
      v.header,
      v.name,
    );
    assert.deepEqual(stateToEntities(state), v.result.entities, v.name);
    if (v.encoder) {
      // Frames made by the Rust encoder: ours writes the same bytes. The
      // file holds the client's view; a partial frame was cut from a full
      // current state, which the generator builds (mirrored here).
      const current = v.header.partial ? PARTIAL_CURRENT[v.name] : stateFromEntities(v.result.entities);
      assert.ok(current, `${v.name}: no current state for this partial vector`);
      const enc = encodeSnapshot({
        tick: v.header.tick,
        inputAck: v.header.input_ack,
        baseline: v.baseline ? { tick: v.baseline.tick, state: baseline } : null,
        current,
        maxLen: v.encoder.max_len,
      });
      assert.equal(toHex(enc.bytes), v.hex, `${v.name}: re-encoded`);
      assert.equal(enc.partial, v.header.partial, v.name);
      assert.deepEqual(stateToEntities(enc.view), v.result.entities, `${v.name}: encoder view`);
      encoded++;
    }
  }
  assert.ok(encoded > 0);
});

test('shared vectors: every invalid frame is rejected with the same code as in Rust', () => {
  const { invalid } = loadVectors();
  assert.ok(invalid.length > 0);
  for (const v of invalid) {
    const bytes = fromHex(v.hex);
    if (v.kind === 'input') {
      assertCoded(() => decodeInput(bytes), v.error, v.name);
    } else {
      assert.equal(v.kind, 'snapshot', v.name);
      assertCoded(() => decodeSnapshot(bytes), v.error, v.name);
    }
  }
});

test('shared vectors: frames that decode but do not apply to their baseline fail with the same code', () => {
  const { invalid_apply: invalidApply } = loadVectors();
  assert.ok(invalidApply.length > 0);
  for (const v of invalidApply) {
    const view = decodeSnapshot(fromHex(v.hex));
    assertCoded(() => applySnapshot(view, vectorState(v.baseline)), v.error, v.name);
  }
});

test('shared vectors: every prefix of every valid vector frame is rejected', () => {
  const { inputs, snapshots } = loadVectors();
  for (const v of inputs) {
    const bytes = fromHex(v.hex);
    for (let n = 0; n < bytes.length; n++) assertCoded(() => decodeInput(bytes.subarray(0, n)), null, `${v.name} [..${n}]`);
  }
  for (const v of snapshots) {
    const bytes = fromHex(v.hex);
    const baseline = vectorState(v.baseline);
    for (let n = 0; n < bytes.length; n++) {
      assertCoded(() => decodeApply(bytes.subarray(0, n), baseline), null, `${v.name} [..${n}]`);
    }
  }
});
