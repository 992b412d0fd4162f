// Dizolaur client physics against the Rust simulation: the shared vectors
// in relay/testdata/dizolaur-prediction.json (written by
// relay/src/dizolaur/tests.rs) must be reproduced exactly, and fields.js
// must mirror every layout constant. Run: node --test web/dizolaur/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as F from './fields.js';
import {
  advance,
  distanceAtRunTick,
  predictPlayer,
  scrollAt,
  scrollAtRunTick,
  speedAt,
  speedAtRunTick,
} from './physics.js';

const vectors = JSON.parse(
  readFileSync(new URL('../../relay/testdata/dizolaur-prediction.json', import.meta.url), 'utf8'),
);

function worldOf(entities) {
  return new Map(entities.map((e) => [e.id, { id: e.id, kind: e.kind, fields: Int32Array.from(e.fields) }]));
}

test('fields.js mirrors every Rust layout constant', () => {
  const names = Object.keys(vectors.constants);
  assert.ok(names.length > 80, `${names.length} constants`);
  for (const name of names) {
    assert.equal(F[name], vectors.constants[name], name);
  }
});

test('predictPlayer reproduces every prediction vector', () => {
  const world = worldOf(vectors.world);
  assert.ok(vectors.cases.length >= 8);
  let steps = 0;
  for (const c of vectors.cases) {
    let fields = Int32Array.from(c.initial);
    c.inputs.forEach((input, i) => {
      const before = fields;
      fields = predictPlayer(fields, input, world);
      assert.notEqual(fields, before, 'a new array');
      assert.deepEqual(Array.from(fields), c.expected[i], `${c.name}: step ${i}`);
      steps += 1;
    });
  }
  assert.ok(steps > 100);
});

test('the scroll clock matches Rust', () => {
  for (const s of vectors.scroll) {
    assert.equal(speedAtRunTick(s.run_tick), s.speed, `speed ${s.run_tick}`);
    assert.equal(scrollAtRunTick(s.run_tick), s.scroll, `scroll ${s.run_tick}`);
  }
  // The closed form is the running sum of speeds.
  let sum = 0;
  for (let r = 1; r <= 8000; r++) {
    sum += speedAtRunTick(r);
    assert.equal(scrollAtRunTick(r), sum, `run tick ${r}`);
  }
  assert.equal(distanceAtRunTick(10_000, 600), Math.floor(scrollAtRunTick(600) / F.METER));
});

test('scrollAt and speedAt follow the match entity', () => {
  const m = new Int32Array(F.MATCH_FIELDS);
  m[F.M_PHASE] = F.PHASE_RUNNING;
  m[F.M_START_TICK] = 100;
  m[F.M_MAX_TICKS] = 50;
  m[F.M_SCROLL] = 12345;
  assert.equal(scrollAt(90, m), 0, 'before the race clock zero');
  assert.equal(scrollAt(110, m), scrollAtRunTick(10));
  assert.equal(scrollAt(400, m), scrollAtRunTick(50), 'stops at the limit');
  assert.equal(speedAt(110, m), speedAtRunTick(10));
  assert.equal(speedAt(151, m), 0);
  m[F.M_PHASE] = F.PHASE_ENDED;
  assert.equal(scrollAt(110, m), 12345, 'the scene is still');
  assert.equal(speedAt(110, m), 0);
});

test('input edges and non-alive runners', () => {
  const body = { state: F.STATE_RUNNING, y: 0, vy: 0, lastInput: F.INPUT_JUMP };
  advance(body, F.INPUT_JUMP, 1, 100);
  assert.equal(body.y, 0, 'a held jump is not a press');
  advance(body, 0, 2, 100);
  advance(body, F.INPUT_JUMP, 3, 100);
  assert.equal(body.state, F.STATE_JUMPING);
  const crashed = new Int32Array(F.LANE_FIELDS);
  crashed[F.P_STATE] = F.STATE_CRASHED;
  crashed[F.P_Y] = 500;
  const next = predictPlayer(crashed, F.INPUT_DUCK, new Map());
  assert.deepEqual([next[F.P_Y], next[F.P_INPUT], next[F.P_TICK]], [500, F.INPUT_DUCK, 1]);
  assert.equal(predictPlayer(new Int32Array(3), 1, new Map()).length, 3, 'short arrays untouched');
});
