// Unit tests of GameCore (rtcrelay-game.js) in Node, without WebRTC: a fake
// authoritative server written with the codec runs the room's rules (tick
// clock, input acceptance, input_ack, per-client baselines, events with
// retransmission, clock replies) and talks to the core through seeded lossy,
// reordering, duplicating links. Time is simulated: nothing waits.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { GameCore, SNAPSHOT_RING } from './rtcrelay-game.js';
import { decodeInput, encodeSnapshot, stateFromEntities, stateToEntities, statesEqual } from './rtcrelay-codec.js';

// Seeded PRNG (mulberry32).
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

// A hello as the server sends it (60 Hz ticks, 30 Hz snapshots, 1-byte
// inputs, server time 0 at tick 0), with `fields` changed.
function helloText(fields = {}) {
  return JSON.stringify({
    type: 'hello',
    game: 'g',
    tick_rate: 60,
    snapshot_rate: 30,
    input_size: 1,
    max_input_lead: 60,
    max_rewind: 0,
    tick: 0,
    server_time_ms: 0,
    ...fields,
  });
}

/**
 * One direction of a network path. Unreliable links lose, duplicate and
 * reorder (each packet gets its own random delay); reliable ones keep order.
 */
class Link {
  constructor(r, { delayMs = 20, jitterMs = 0, loss = 0, duplicate = 0, reliable = false, noise = null } = {}) {
    Object.assign(this, { r, delayMs, jitterMs, loss, duplicate, reliable, noise });
    this.queue = [];
    this.lastAt = 0;
    this.sent = 0;
    this.lost = 0;
  }

  send(now, payload) {
    this.sent++;
    if (!this.reliable && this.r() < this.loss) {
      this.lost++;
      return;
    }
    const copies = !this.reliable && this.r() < this.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let at = now + this.delayMs + this.r() * this.jitterMs + (this.noise ? this.noise(this.r) : 0);
      if (this.reliable) at = Math.max(at, this.lastAt);
      this.lastAt = Math.max(this.lastAt, at);
      this.queue.push({ at, payload });
    }
  }

  due(now) {
    const out = [];
    const keep = [];
    for (const p of this.queue) (p.at <= now ? out : keep).push(p);
    this.queue = keep;
    out.sort((a, b) => a.at - b.at);
    return out.map((p) => p.payload);
  }
}

/**
 * The authoritative room's rules for one client, in miniature. Server time
 * is the client's time plus `offset`; tick k is simulated at k * tickMs.
 * The world: entity 0 (a counter), the player's entity 1 (x += input each
 * tick), a few moving entities and obstacles that come and go.
 */
class FakeServer {
  constructor(r, opts = {}) {
    this.r = r;
    this.tickRate = opts.tickRate ?? 60;
    this.snapshotRate = opts.snapshotRate ?? 30;
    this.tickMs = 1000 / this.tickRate;
    this.maxInputLead = opts.maxInputLead ?? 60;
    this.maxRewind = opts.maxRewind ?? 8;
    this.entity = 1;
    this.eventEvery = opts.eventEvery ?? 0;
    // Overrides the input the game uses for a tick (to make the server
    // disagree with the client's prediction).
    this.overrideInput = opts.overrideInput ?? (() => null);
    this.last = 0;
    this.received = new Map(); // tick -> input byte, ticks > last
    this.applied = new Map(); // tick -> input used by the game
    this.lastApplied = 0;
    this.outcomes = { accepted: 0, duplicate: 0, late_applied: 0, late: 0, too_early: 0, missing: 0 };
    this.lateApplied = new Map(); // tick -> input, given to the game late
    this.fromWire = new Set(); // ticks whose input came from the client (in time or late)
    this.x = 0;
    this.world = this._world();
    this.history = new Map([[0, this.world]]);
    this.sent = []; // ring: {tick, view}
    this.views = new Map(); // tick -> view sent
    this.acked = null;
    this.nextEventId = 1;
    this.events = new Map(); // id -> {tick, event, nextAt, backoff}
    this.eventsAcked = new Set();
    this.maxSeq = -1;
  }

  _world() {
    const t = this.last;
    const entities = [
      { id: 0, kind: 1, fields: [t, Math.floor(t / 60)] },
      { id: this.entity, kind: 2, fields: [this.x, this.lastApplied] },
    ];
    for (let i = 0; i < 3; i++) entities.push({ id: 2 + i, kind: 2, fields: [Math.round(1000 * Math.sin((t + i * 20) / 30)), i] });
    for (let k = Math.floor(t / 25); k < Math.floor(t / 25) + 4; k++) {
      entities.push({ id: 100 + (k % 50), kind: 3, fields: [k * 500 - t * 20, k % 3] });
    }
    return stateFromEntities(entities);
  }

  hello(serverNow) {
    return JSON.stringify({
      type: 'hello',
      game: 'fake',
      tick_rate: this.tickRate,
      snapshot_rate: this.snapshotRate,
      input_size: 1,
      max_input_lead: this.maxInputLead,
      max_rewind: this.maxRewind,
      tick: this.last,
      server_time_ms: serverNow,
      entity: this.entity,
    });
  }

  onRealtime(bytes) {
    const d = decodeInput(bytes);
    this.maxSeq = Math.max(this.maxSeq, d.seq);
    if (d.ack && (this.acked === null || d.ack.tick > this.acked)) this.acked = d.ack.tick;
    for (let i = 0; i < d.inputs.length; i++) {
      const t = d.firstTick + i;
      const x = d.inputs[i];
      if (t > this.last + this.maxInputLead) this.outcomes.too_early++;
      else if (this.received.has(t) || this.fromWire.has(t)) this.outcomes.duplicate++;
      else if (t > this.last) {
        this.outcomes.accepted++;
        this.received.set(t, x);
      } else if (t > this.last - this.maxRewind) {
        // Simulated with a repeated input; the game gets the real one late.
        this.outcomes.late_applied++;
        this.lateApplied.set(t, x);
        this.fromWire.add(t);
      } else this.outcomes.late++;
    }
  }

  onControl(text, serverNow) {
    const msg = JSON.parse(text);
    if (msg.type === 'clock') {
      return [JSON.stringify({ type: 'clock', id: msg.id, t0: msg.t0, t1: serverNow, t2: serverNow, tick: this.last })];
    }
    if (msg.type === 'event_ack') {
      this.eventsAcked.add(msg.id);
      this.events.delete(msg.id);
    }
    return [];
  }

  _inputAck() {
    let t = this.last;
    while (this.received.has(t + 1)) t++;
    return t;
  }

  /** Runs the ticks due by serverNow; returns {realtime: [...], control: [...]}. */
  advance(serverNow) {
    const realtime = [];
    const control = [];
    while ((this.last + 1) * this.tickMs <= serverNow) {
      const n = this.last + 1;
      let x = this.lastApplied;
      if (this.received.has(n)) {
        x = this.received.get(n);
        this.fromWire.add(n);
        this.received.delete(n);
      } else this.outcomes.missing++;
      const o = this.overrideInput(n);
      if (o !== null) x = o;
      this.applied.set(n, x);
      this.lastApplied = x;
      this.x = (this.x + x) | 0;
      this.last = n;
      this.world = this._world();
      this.history.set(n, this.world);
      if (this.eventEvery && n % this.eventEvery === 0) {
        const id = this.nextEventId++;
        this.events.set(id, { tick: n, event: { kind: 'score', n }, nextAt: serverNow, backoff: 1000 });
      }
      if (Math.floor((n * this.snapshotRate) / this.tickRate) > Math.floor(((n - 1) * this.snapshotRate) / this.tickRate)) {
        realtime.push(this._snapshot(n));
      }
    }
    for (const [id, e] of this.events) {
      if (serverNow >= e.nextAt) {
        control.push(JSON.stringify({ type: 'event', id, tick: e.tick, event: e.event }));
        e.nextAt = serverNow + e.backoff;
        e.backoff = Math.min(8000, e.backoff * 2);
      }
    }
    return { realtime, control };
  }

  _snapshot(tick) {
    // Baseline: the newest acked snapshot still in the ring.
    const base = this.acked === null ? null : this.sent.find((s) => s.tick === this.acked) ?? null;
    const enc = encodeSnapshot({
      tick,
      inputAck: this._inputAck(),
      baseline: base ? { tick: base.tick, state: base.view } : null,
      current: this.world,
      maxLen: 1200,
    });
    this.sent.push({ tick, view: enc.view });
    if (this.sent.length > 64) this.sent.shift();
    this.views.set(tick, enc.view);
    return enc.bytes;
  }
}

/**
 * Runs a core against a fake server for `durationMs` of simulated time in
 * 1 ms steps. `setup(client, server)` runs first; `each(now, client, server, rng)`
 * runs every step before the core's tick.
 */
function run(options) {
  const { seed, durationMs, up = {}, down = {}, controlUp = {}, controlDown = {} } = options;
  const { offset = 5000.25, server = {}, core = {}, setup, each } = options;
  const r = rng(seed);
  const srv = new FakeServer(rng(seed + 1), server);
  const client = new GameCore(core);
  setup?.(client, srv);
  const links = {
    up: new Link(rng(seed + 2), up),
    down: new Link(rng(seed + 3), down),
    controlUp: new Link(rng(seed + 4), { ...controlUp, reliable: true }),
    controlDown: new Link(rng(seed + 5), { ...controlDown, reliable: true }),
  };
  const results = [];
  const start = 1000; // the client's clock starts anywhere
  links.controlDown.send(start, srv.hello(start + offset));
  let nextTickAt = start;
  for (let now = start; now <= start + durationMs; now++) {
    const serverNow = now + offset;
    for (const bytes of links.up.due(now)) srv.onRealtime(bytes);
    for (const text of links.controlUp.due(now)) for (const reply of srv.onControl(text, serverNow)) links.controlDown.send(now, reply);
    const out = srv.advance(serverNow);
    for (const s of out.realtime) links.down.send(now, s);
    for (const c of out.control) links.controlDown.send(now, c);
    for (const text of links.controlDown.due(now)) client.onControl(text, now);
    for (const bytes of links.down.due(now)) {
      const tick = new DataView(bytes.buffer, bytes.byteOffset).getUint32(2);
      results.push({ tick, outcome: client.onSnapshot(bytes, now) });
    }
    each?.(now, client, srv, r);
    if (now >= nextTickAt) {
      client.tick(now);
      // Timers are late by up to 4 ms, as in browsers.
      nextTickAt += client.tickMs;
      nextTickAt = Math.max(nextTickAt, now + 1 + r.int(4));
    }
    for (let o = client.pollOutput(); o; o = client.pollOutput()) {
      (o.channel === 'realtime' ? links.up : links.controlUp).send(now, o.data);
    }
  }
  return { client, srv, links, results };
}

test('delta correctness under loss: every applied snapshot equals the server state of its tick', () => {
  let applied = 0;
  let stale = 0;
  let checkedRing = 0;
  const { client, srv, results } = run({
    seed: 11,
    durationMs: 20000,
    up: { delayMs: 25, jitterMs: 30, loss: 0.2, duplicate: 0.05 },
    down: { delayMs: 25, jitterMs: 40, loss: 0.2, duplicate: 0.1 },
  });
  for (const { outcome } of results) {
    if (outcome === 'applied') applied++;
    if (outcome === 'stale') stale++;
  }
  // Every state still in the ring is exactly what the server sent for that
  // tick (the world, as no frame was partial).
  for (let t = 0; t <= srv.last; t++) {
    const s = client.stateAt(t);
    if (!s) continue;
    assert.ok(statesEqual(s, srv.views.get(t)), `tick ${t}: client state differs from the server's view`);
    assert.ok(statesEqual(s, srv.history.get(t)), `tick ${t}: client state differs from the server's world`);
    checkedRing++;
  }
  assert.ok(applied > 300, `applied ${applied}`);
  assert.ok(stale > 0, 'the reordering link produced no stale snapshot');
  assert.ok(checkedRing > 30, `ring ${checkedRing}`);
  assert.ok(checkedRing <= SNAPSHOT_RING);
  const stats = client.netStats();
  assert.equal(stats.staleSnapshots, stale);
  assert.equal(stats.badSnapshots, 0);
  assert.ok(stats.lossDown > 0.05 && stats.lossDown < 0.5, `lossDown ${stats.lossDown}`);
});

test('delta correctness: the state after each applied snapshot equals the server state at that tick', () => {
  let checked = 0;
  const seen = new Map();
  const r = rng(12);
  const srv = new FakeServer(rng(13));
  const client = new GameCore();
  const down = new Link(rng(14), { delayMs: 10, jitterMs: 60, loss: 0.25, duplicate: 0.2 });
  const up = new Link(rng(15), { delayMs: 10, jitterMs: 30, loss: 0.25 });
  client.onControl(srv.hello(0), 0);
  for (let now = 0; now < 15000; now++) {
    for (const b of up.due(now)) srv.onRealtime(b);
    for (const s of srv.advance(now).realtime) down.send(now, s);
    for (const b of down.due(now)) {
      const before = client.latest()?.tick ?? -1;
      const outcome = client.onSnapshot(b, now);
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      const latest = client.latest();
      if (outcome === 'applied') {
        assert.ok(latest.tick > before);
        assert.ok(statesEqual(latest.state, srv.history.get(latest.tick)), `tick ${latest.tick}`);
        checked++;
      } else {
        // Nothing else changes what is displayed.
        assert.equal(latest?.tick ?? -1, before);
      }
    }
    if (now % 17 === 0 || r() < 0.01) client.tick(now);
    for (let o = client.pollOutput(); o; o = client.pollOutput()) if (o.channel === 'realtime') up.send(now, o.data);
  }
  assert.ok(checked > 250, `checked ${checked}`);
  assert.ok((seen.get('duplicate') ?? 0) > 10, 'no duplicate exercised');
  assert.ok((seen.get('stale') ?? 0) > 10, 'no stale exercised');
  assert.equal(seen.get('bad') ?? 0, 0);
});

test('a delta whose baseline the client lacks is ignored and counted; a full snapshot recovers', () => {
  const core = new GameCore();
  core.onControl(helloText(), 0);
  const s1 = stateFromEntities([{ id: 1, kind: 0, fields: [1] }]);
  const s2 = stateFromEntities([{ id: 1, kind: 0, fields: [2] }]);
  const delta = encodeSnapshot({ tick: 4, baseline: { tick: 2, state: s1 }, current: s2 }).bytes;
  assert.equal(core.onSnapshot(delta, 10), 'unknown_baseline');
  assert.equal(core.latest(), null);
  assert.equal(core.onSnapshot(encodeSnapshot({ tick: 2, current: s1 }).bytes, 11), 'applied');
  assert.equal(core.onSnapshot(delta, 12), 'applied');
  assert.deepEqual(stateToEntities(core.state), stateToEntities(s2));
  assert.equal(core.onSnapshot(delta, 13), 'duplicate');
  assert.equal(core.onSnapshot(Uint8Array.of(3, 0, 1), 14), 'bad');
  const n = core.netStats();
  assert.equal(n.unknownBaselines, 1);
  assert.equal(n.duplicateSnapshots, 1);
  assert.equal(n.badSnapshots, 1);
});

test('input redundancy: with 20% upstream loss, every target tick reaches the server with the input sampled for it (60 s)', () => {
  const sampled = new Map();
  let value = 0;
  const r = rng(31);
  const srv = new FakeServer(rng(32), { maxRewind: 8 });
  const client = new GameCore();
  const up = new Link(rng(33), { delayMs: 40, jitterMs: 25, loss: 0.2 });
  const down = new Link(rng(34), { delayMs: 40, jitterMs: 25, loss: 0.2 });
  const cup = new Link(rng(35), { delayMs: 40, jitterMs: 10, reliable: true });
  const cdown = new Link(rng(36), { delayMs: 40, jitterMs: 10, reliable: true });
  const offset = -777.5;
  cdown.send(0, srv.hello(offset));
  let nextTick = 0;
  for (let now = 0; now < 60000; now++) {
    for (const b of up.due(now)) srv.onRealtime(b);
    for (const t of cup.due(now)) for (const reply of srv.onControl(t, now + offset)) cdown.send(now, reply);
    for (const s of srv.advance(now + offset).realtime) down.send(now, s);
    for (const t of cdown.due(now)) client.onControl(t, now);
    for (const b of down.due(now)) client.onSnapshot(b, now);
    if (now >= nextTick) {
      if (r() < 0.1) {
        value = r.int(4);
        client.setInput(value);
      }
      const before = client.targetTick;
      client.tick(now);
      const after = client.targetTick;
      if (after !== null) for (let t = (before ?? after - 1) + 1; t <= after; t++) sampled.set(t, value);
      nextTick = now + Math.round(client.tickMs) + r.int(3) - 1;
    }
    for (let o = client.pollOutput(); o; o = client.pollOutput()) (o.channel === 'realtime' ? up : cup).send(now, o.data);
  }
  let checked = 0;
  for (const [t, v] of sampled) {
    if (t > srv.last) continue;
    const got = srv.lateApplied.has(t) ? srv.lateApplied.get(t) : srv.fromWire.has(t) ? srv.applied.get(t) : undefined;
    assert.equal(got, v, `tick ${t}: server has ${got}, client sampled ${v} (outcomes ${JSON.stringify(srv.outcomes)})`);
    checked++;
  }
  assert.ok(checked > 3500, `checked ${checked}`);
  assert.equal(srv.outcomes.late, 0);
  assert.equal(srv.outcomes.too_early, 0);
  assert.ok(up.lost > 500, `only ${up.lost} datagrams lost`);
  // Most inputs arrive before their tick; the rest within the rewind window.
  assert.ok(srv.lateApplied.size < checked / 20, `late_applied ${srv.lateApplied.size}: the lead is too short`);
  const ns = client.netStats();
  assert.ok(ns.inputLead >= 2 && ns.inputLead <= 10, `lead ${ns.inputLead}`);
});

test('events: acked on every copy, dispatched once per id, in any order', () => {
  const core = new GameCore();
  const got = [];
  core.addEventListener('event', (e) => got.push(e.detail));
  const ev = (id) => JSON.stringify({ type: 'event', id, tick: id * 10, event: { n: id } });
  for (const id of [1, 2, 2, 4, 3, 1, 4, 5, 3]) core.onControl(ev(id), id);
  assert.deepEqual(
    got.map((d) => d.id),
    [1, 2, 4, 3, 5],
  );
  assert.deepEqual(got[0], { id: 1, tick: 10, event: { n: 1 } });
  const acks = [];
  for (let o = core.pollOutput(); o; o = core.pollOutput()) acks.push(JSON.parse(o.data));
  assert.deepEqual(
    acks.map((a) => [a.type, a.id]),
    [1, 2, 2, 4, 3, 1, 4, 5, 3].map((id) => ['event_ack', id]),
  );
  assert.equal(core.counters.duplicateEvents, 4);

  // A client that joined late starts at a high id; memory stays bounded.
  const late = new GameCore();
  let n = 0;
  late.addEventListener('event', () => n++);
  for (let id = 5000; id < 25000; id++) late.onControl(ev(id), id);
  late.onControl(ev(24999), 0);
  assert.equal(n, 20000);
  assert.ok(late._eventsAbove.size <= 8192);
  while (late.pollOutput());
});

test('events: retransmitted until acked through a slow control path, each applied exactly once', () => {
  const got = new Map();
  const { client, srv } = run({
    seed: 41,
    durationMs: 20000,
    server: { eventEvery: 37 },
    // A slow, jittery reliable path: acks take longer than the 1 s resend.
    controlUp: { delayMs: 900, jitterMs: 600 },
    controlDown: { delayMs: 300, jitterMs: 300 },
    down: { delayMs: 20, loss: 0.1 },
    up: { delayMs: 20, loss: 0.1 },
    setup: (c) => c.addEventListener('event', (e) => got.set(e.detail.id, (got.get(e.detail.id) ?? 0) + 1)),
  });
  assert.ok(client.counters.duplicateEvents > 5, `duplicates ${client.counters.duplicateEvents}`);
  assert.ok(got.size > 20);
  for (const [id, n] of got) assert.equal(n, 1, `event ${id}`);
  // Every event old enough has been acked.
  for (let id = 1; id < srv.nextEventId; id++) {
    if (srv.events.has(id) && srv.events.get(id).tick < srv.last - 600) assert.fail(`event ${id} never acked`);
  }
});

test('clock: the estimate converges to the true offset despite asymmetric delay noise', () => {
  const offset = 123456.75;
  const errors = [];
  let helloError = null;
  const { client } = run({
    seed: 51,
    durationMs: 12000,
    offset,
    each: (now, c) => {
      const est = c.serverTimeNow(now);
      if (est === null) return;
      helloError ??= est - (now + offset);
      if (now % 100 === 0 && now > 3000) errors.push(est - (now + offset));
    },
    // 20 ms each way, plus one-sided noise: queueing delay up to 80 ms on
    // the way up, exponential on the way down.
    controlUp: { delayMs: 20, noise: (r) => r() * r() * 80 },
    controlDown: { delayMs: 20, noise: (r) => -Math.log(1 - r()) * 15 },
    up: { delayMs: 20 },
    down: { delayMs: 20 },
  });
  // The hello alone is off by the one-way delay; the samples fix that.
  assert.ok(helloError < -20, `hello guess error ${helloError}`);
  const worst = Math.max(...errors.map(Math.abs));
  const mean = errors.reduce((a, e) => a + Math.abs(e), 0) / errors.length;
  assert.ok(worst < 10, `worst offset error ${worst} ms`);
  assert.ok(mean < 5, `mean offset error ${mean} ms`);
  const now = client._now;
  const tickErr = client.serverTickNow(now) - ((now + offset) * 60) / 1000;
  assert.ok(Math.abs(tickErr) < 0.6, `tick error ${tickErr}`);
  const ns = client.netStats();
  assert.ok(ns.rttMs > 40 && ns.rttMs < 150, `rtt ${ns.rttMs}`);
  assert.ok(ns.jitterMs > 0, 'no jitter measured');
});

test('clock: 5 requests 100 ms apart after the hello, then one per second; the min-RTT sample of the last 8 wins', () => {
  const core = new GameCore();
  const sent = [];
  core.onControl(helloText({ tick_rate: 50, snapshot_rate: 25, max_input_lead: 50, tick: 7, server_time_ms: 150 }), 1000);
  // The hello's own guess: one-way delay counted as zero.
  assert.equal(core.serverTimeNow(1000), 150);
  assert.equal(core.serverTickNow(1000), 7.5);
  for (let now = 1000; now <= 4000; now++) {
    core.tick(now);
    for (let o = core.pollOutput(); o; o = core.pollOutput()) {
      if (o.channel === 'control') sent.push({ now, msg: JSON.parse(o.data) });
    }
  }
  const clocks = sent.filter((s) => s.msg.type === 'clock');
  assert.deepEqual(
    clocks.map((s) => s.now),
    [1000, 1100, 1200, 1300, 1400, 2400, 3400],
  );
  assert.deepEqual(
    clocks.map((s) => s.msg.id),
    [1, 2, 3, 4, 5, 6, 7],
  );
  // Replies: RTT 50 with offset +10, then RTT 20 with offset −3 (wins), then worse ones.
  const reply = (id, t0, t1, t3) => core.onControl(JSON.stringify({ type: 'clock', id, t0, t1, t2: t1, tick: 0 }), t3);
  reply(1, 1000, 1000 + 10 + 25, 1050);
  assert.equal(core.serverTimeNow(2000), 2010);
  reply(2, 1100, 1100 - 3 + 10, 1120);
  assert.equal(core.serverTimeNow(2000), 1997);
  reply(3, 1200, 1200 + 50 + 40, 1280);
  reply(3, 1200, 1200, 1200); // a duplicate id is ignored
  reply(99, 1200, 1200, 1200); // an unknown id is ignored
  assert.equal(core.serverTimeNow(2000), 1997);
  // Eight newer samples push the best one out.
  for (let i = 0; i < 8; i++) {
    core.tick(5000 + i * 1000);
    for (let o = core.pollOutput(); o; o = core.pollOutput()) {
      if (o.channel !== 'control') continue;
      const msg = JSON.parse(o.data);
      reply(msg.id, msg.t0, msg.t0 + 7 + 15, msg.t0 + 30);
    }
  }
  assert.equal(core.serverTimeNow(20000), 20007);
});

test('interpolation: fields between the two snapshots around the render tick; adaptive delay bounds', () => {
  const core = new GameCore();
  // 60 Hz ticks, 30 Hz snapshots: interval 33.3 ms = 2 ticks. Server time = now.
  core.onControl(helloText(), 0);
  const snap = (tick, x, base) =>
    encodeSnapshot({
      tick,
      baseline: base,
      current: stateFromEntities([
        { id: 7, kind: 2, fields: [x, 2147483647 - 10 + x / 50, 3] },
        ...(tick >= 12 ? [{ id: 9, kind: 1, fields: [1] }] : []),
      ]),
    }).bytes;
  const tickMs = 1000 / 60;
  // Arrivals with a constant transit: no jitter, so the delay is one interval.
  core.onSnapshot(snap(10, 100), 10 * tickMs + 5);
  core.onSnapshot(snap(12, 200), 12 * tickMs + 5);
  assert.ok(Math.abs(core.interpDelayMs - 1000 / 30) < 1e-9, `delay ${core.interpDelayMs}`);
  // Transit 5 ms: at 13 ticks + 5 ms the stream shows tick 13, the render
  // tick is 11: halfway.
  const mid = core.interpolated(7, 13 * tickMs + 5);
  assert.ok(Math.abs(mid.alpha - 0.5) < 1e-9);
  assert.ok(Math.abs(mid.fields[0] - 150) < 1e-9, `x ${mid.fields[0]}`);
  // A field that wraps past i32::MAX moves forward.
  assert.ok(Math.abs(mid.fields[1] - (2147483647 - 10 + 3)) < 1e-6, `wrapped ${mid.fields[1]}`);
  assert.equal(mid.fields[2], 3);
  assert.deepEqual(Array.from(mid.from), [100, 2147483647 - 10 + 2, 3]);
  assert.deepEqual([mid.fromTick, mid.toTick, mid.kind], [10, 12, 2]);
  // Quarter way.
  const q = core.interpolated(7, 12.5 * tickMs + 5);
  assert.ok(Math.abs(q.fields[0] - 125) < 1e-9);
  // Past the newest: held at the newest, no extrapolation.
  assert.equal(core.interpolated(7, 30 * tickMs).fields[0], 200);
  // Before the oldest: the oldest.
  assert.equal(core.interpolated(7, 0).fields[0], 100);
  // An entity only in the later snapshot appears there.
  assert.equal(core.interpolated(9, 13 * tickMs + 5).fields[0], 1);
  assert.equal(core.interpolated(8, 13 * tickMs + 5), null);
  assert.deepEqual([...core.interpolatedAll(13 * tickMs + 5).keys()], [7, 9]);
  assert.ok(Math.abs(core.renderTick(13 * tickMs + 5) - 11) < 1e-9);

  // Jittery arrivals raise the delay; it stays within [interval, 250 ms].
  const r = rng(61);
  let base = 12;
  for (let t = 14; t < 2000; t += 2) {
    core.onSnapshot(snap(t, t * 10), t * tickMs + 5 + r() * 120);
    base = t;
    const d = core.interpDelayMs;
    assert.ok(d >= 1000 / 30 - 1e-9 && d <= 250, `delay ${d}`);
  }
  void base;
  assert.ok(core.interpDelayMs > 60, `delay ${core.interpDelayMs} did not adapt to 120 ms of jitter`);
  // Smooth arrivals bring it back down.
  for (let t = 2000; t < 3000; t += 2) core.onSnapshot(snap(t, t), t * tickMs + 5);
  assert.ok(core.interpDelayMs < 40, `delay ${core.interpDelayMs} did not come back`);
});

test('interpolation in a run: with jittery delivery the render tick stays between two snapshots', () => {
  let frames = 0;
  let between = 0;
  let backwards = 0;
  let prev = null;
  const { client } = run({
    seed: 81,
    durationMs: 20000,
    down: { delayMs: 60, jitterMs: 40 },
    up: { delayMs: 60, jitterMs: 10 },
    controlUp: { delayMs: 60 },
    controlDown: { delayMs: 60 },
    each: (now, c) => {
      if (now < 3000 || now % 4 !== 0) return;
      const e = c.interpolated(2, now);
      assert.ok(e, 'entity 2 missing');
      frames++;
      if (e.fromTick !== e.toTick && e.alpha >= 0 && e.alpha <= 1) between++;
      const rt = c.renderTick(now);
      if (prev !== null && rt < prev) backwards++;
      prev = rt;
    },
  });
  const delay = client.interpDelayMs;
  assert.ok(delay > 1000 / 30 + 10 && delay < 250, `delay ${delay}`);
  assert.ok(between / frames > 0.97, `interpolated ${between} of ${frames} frames`);
  // The render clock runs forward (the mean transit moves it only slowly).
  assert.ok(backwards / frames < 0.01, `render tick went back ${backwards} times in ${frames}`);
});

// Toy game for prediction: fields [x, lastInput]; x += input.
const toyPredictor = {
  steps: 0,
  step(fields, input) {
    this.steps++;
    return Int32Array.of((fields[0] + input) | 0, input);
  },
};

test('prediction: the own entity advances through the inputs after the snapshot; reconcile counts corrections only when the server disagrees', () => {
  const agree = run({
    seed: 71,
    durationMs: 10000,
    up: { delayMs: 25, jitterMs: 10 },
    down: { delayMs: 25, jitterMs: 10 },
    controlUp: { delayMs: 25 },
    controlDown: { delayMs: 25 },
    core: { predictor: toyPredictor },
    each: (now, c, s, r) => {
      if (r() < 0.01) c.setInput(r.int(3));
    },
  });
  const c = agree.client;
  assert.equal(c.entity, 1);
  assert.equal(c.netStats().corrections, 0, 'a lossless run with a matching predictor needs no correction');
  // predicted() is the newest snapshot's x plus the inputs of the ticks after it.
  const latest = c.latest();
  let x = latest.state.get(1).fields[0];
  for (let t = latest.tick + 1; t <= c.targetTick; t++) x += c._inputs.get(t)[0];
  assert.equal(c.predictedTick, c.targetTick);
  assert.equal(c.predicted()[0], x);
  assert.ok(c.targetTick > latest.tick, 'the target runs ahead of the snapshots');

  // The server applies another input on some ticks: corrections.
  const disagree = run({
    seed: 71,
    durationMs: 10000,
    up: { delayMs: 25, jitterMs: 10 },
    down: { delayMs: 25, jitterMs: 10 },
    controlUp: { delayMs: 25 },
    controlDown: { delayMs: 25 },
    core: { predictor: toyPredictor },
    // The client only sends 0..2: every overridden tick is a disagreement.
    server: { overrideInput: (t) => (t % 12 === 0 ? 5 : null) },
    each: (now, cl, s, r) => {
      if (r() < 0.01) cl.setInput(r.int(3));
    },
  });
  const n = disagree.client.netStats().corrections;
  // Overridden ticks the client predicted (after its first snapshot) and
  // has seen a snapshot of since: each is one correction.
  const dc = disagree.client;
  const firstSnapshot = disagree.results.find((x) => x.outcome === 'applied').tick;
  let overridden = 0;
  for (let t = firstSnapshot + 1; t <= dc.latest().tick; t++) if (t % 12 === 0) overridden++;
  assert.ok(overridden > 40);
  assert.ok(Math.abs(n - overridden) <= 2, `corrections ${n}, overridden ticks ${overridden}`);
  // After reconciling, prediction starts from the server's state again.
  const l2 = disagree.client.latest();
  let x2 = l2.state.get(1).fields[0];
  for (let t = l2.tick + 1; t <= disagree.client.targetTick; t++) x2 += disagree.client._inputs.get(t)[0];
  assert.equal(disagree.client.predicted()[0], x2);
});

test('prediction: a correction is counted when a re-predicted tick differs from what was predicted', () => {
  const core = new GameCore({ predictor: toyPredictor });
  core.onControl(helloText({ entity: 1 }), 0);
  // Fields [x, last input], as the toy predictor computes them.
  const world = (x, last = 1) => stateFromEntities([{ id: 1, kind: 2, fields: [x, last] }]);
  core.onSnapshot(encodeSnapshot({ tick: 0, current: world(0, 0) }).bytes, 0);
  core.setInput(1);
  // Local ticks sample targets ahead of the server (lead 1 with no RTT yet).
  for (let i = 1; i <= 5; i++) core.tick((i * 1000) / 60 + 1);
  const target = core.targetTick;
  assert.equal(target, 5 + 1);
  // Tick 1 precedes the first target (2): no input yet, zeros; then +1 per tick.
  assert.equal(core.predicted()[0], target - 1);
  // The server agrees at tick 2 (x = 1): no correction.
  core.onSnapshot(encodeSnapshot({ tick: 2, baseline: { tick: 0, state: world(0, 0) }, current: world(1) }).bytes, 40);
  assert.equal(core.netStats().corrections, 0);
  assert.equal(core.predicted()[0], target - 1);
  // The server says x = 10 at tick 4: the prediction moves, one correction.
  core.onSnapshot(encodeSnapshot({ tick: 4, baseline: { tick: 2, state: world(1) }, current: world(10) }).bytes, 70);
  assert.equal(core.netStats().corrections, 1);
  assert.equal(core.predicted()[0], 10 + (target - 4));
  assert.equal(core.predictedTick, target);
  // Stale snapshots do not reconcile.
  core.onSnapshot(encodeSnapshot({ tick: 3, current: world(99) }).bytes, 80);
  assert.equal(core.netStats().corrections, 1);
  assert.equal(core.predicted()[0], 10 + (target - 4));
});

test('prediction: without a predictor, predicted() is the newest snapshot; without an own entity, null', () => {
  const core = new GameCore();
  core.onControl(helloText({ entity: 3 }), 0);
  assert.equal(core.predicted(), null);
  core.onSnapshot(encodeSnapshot({ tick: 2, current: stateFromEntities([{ id: 3, kind: 0, fields: [4, 5] }]) }).bytes, 1);
  assert.deepEqual(Array.from(core.predicted()), [4, 5]);
  assert.equal(core.predictedTick, 2);
  // An entity assigned later (a seat taken after the hello).
  core.setOwnEntity(4);
  assert.equal(core.entity, 4);
  assert.equal(core.predicted(), null);
  core.setOwnEntity(null);
  assert.equal(core.entity, 3);
  assert.deepEqual(Array.from(core.predicted()), [4, 5]);
  assert.throws(() => core.setOwnEntity(-1), RangeError);
  const other = new GameCore({ predictor: toyPredictor });
  other.onControl(helloText(), 0);
  other.onSnapshot(encodeSnapshot({ tick: 2, current: stateFromEntities([{ id: 3, kind: 0, fields: [4, 5] }]) }).bytes, 1);
  assert.equal(other.predicted(), null);
  other.setOwnEntity(3);
  assert.deepEqual(Array.from(other.predicted()), [4, 5]);
});

test('inputs: datagram layout — redundancy from input_ack + 1, at most 32, seq +1, snapshot ack with delay', () => {
  const core = new GameCore();
  core.onControl(helloText({ tick: 100, server_time_ms: 100 * (1000 / 60) }), 0);
  const datagrams = [];
  const step = (now) => {
    core.tick(now);
    for (let o = core.pollOutput(); o; o = core.pollOutput()) if (o.channel === 'realtime') datagrams.push(decodeInput(o.data));
  };
  core.setInput(2);
  step(0);
  assert.equal(datagrams.length, 1);
  assert.deepEqual({ ...datagrams[0], inputs: Array.from(datagrams[0].inputs) }, { seq: 0, ack: null, firstTick: 101, inputSize: 1, inputs: [2] });
  // Nothing acked: every datagram repeats all inputs from the first target.
  for (let i = 1; i < 40; i++) step((i * 1000) / 60);
  const last = datagrams[datagrams.length - 1];
  assert.equal(last.seq, 39);
  assert.equal(last.inputs.length, 32);
  assert.equal(last.firstTick + 31, core.targetTick);
  // A snapshot acks inputs up to 130: the next datagram starts at 131 and acks the snapshot.
  core.onSnapshot(encodeSnapshot({ tick: 128, inputAck: 130, current: new Map() }).bytes, 660);
  step(670);
  const d = datagrams[datagrams.length - 1];
  assert.equal(d.firstTick, 131);
  assert.deepEqual(d.ack, { tick: 128, delayMs: 10 });
  assert.equal(d.firstTick + d.inputs.length - 1, core.targetTick);
  // Calls closer than half a tick do not sample again.
  const n = datagrams.length;
  step(672);
  assert.equal(datagrams.length, n);
  // A timer that stalled: the target jumps and the skipped ticks repeat the input.
  core.setInput(3);
  const before = core.targetTick;
  step(670 + 200);
  const j = datagrams[datagrams.length - 1];
  assert.ok(core.targetTick >= before + 11, `target ${before} → ${core.targetTick}`);
  assert.deepEqual(Array.from(j.inputs.slice(-(core.targetTick - before))), new Array(core.targetTick - before).fill(3));
});

test('stats, errors and commands', () => {
  const core = new GameCore({ peerId: 7 });
  const stats = [];
  const errors = [];
  core.addEventListener('stats', (e) => stats.push(e.detail));
  core.addEventListener('error', (e) => errors.push(e.detail));
  const line = (peer, rtt, loss) => ({
    peer,
    rtt_ms: rtt,
    jitter_ms: 1,
    loss,
    inputs_late: 0,
    inputs_missing: 0,
    snapshot_bytes_per_s: 900,
  });
  core.onControl(JSON.stringify({ type: 'stats', tick: 5, players: [line(3, 1, 0.5), line(7, 42, 0.125)] }), 0);
  assert.equal(stats.length, 1);
  const ns = core.netStats();
  assert.equal(ns.lossUp, 0.125);
  assert.equal(ns.serverRttMs, 42);
  core.onControl(JSON.stringify({ type: 'error', code: 'command_refused', message: 'no' }), 1);
  core.onControl('not json', 2);
  core.onControl(JSON.stringify({ type: 'something_new' }), 3);
  assert.deepEqual(
    errors.map((e) => e.code),
    ['command_refused', 'bad_control_message'],
  );
  core.command({ start: { bots: true } });
  assert.deepEqual(JSON.parse(core.pollOutput().data), { type: 'command', command: { start: { bots: true } } });
  // Before the hello nothing is sampled or sent.
  core.tick(10);
  assert.equal(core.pollOutput(), null);
  assert.equal(core.serverTickNow(10), null);
  assert.throws(() => core.setInput(256), RangeError);
});

test('net stats: snapshot rates over the last second', () => {
  const core = new GameCore();
  core.onControl(helloText(), 0);
  let len = 0;
  for (let i = 1; i <= 60; i++) {
    const bytes = encodeSnapshot({ tick: 2 * i, current: stateFromEntities([{ id: 1, kind: 0, fields: [i] }]) }).bytes;
    len = bytes.length;
    // Every 4th snapshot lost.
    if (i % 4 !== 0) core.onSnapshot(bytes, (i * 1000) / 30);
  }
  const ns = core.netStats(2000);
  // Snapshots 31..60 fell in the last second, but not 32, 36, … 60.
  assert.equal(ns.snapshotsPerSec, 22);
  assert.equal(ns.snapshotBytesPerSec, 22 * len);
  // Loss over the 30 slots up to the newest received (59): 32, 36, … 56 missing.
  assert.ok(Math.abs(ns.lossDown - 7 / 30) < 1e-9, `lossDown ${ns.lossDown}`);
});
