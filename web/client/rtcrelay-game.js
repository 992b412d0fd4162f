// rtcrelay game client: the browser side of an authoritative room.
//
// GameCore is sans-IO: it is driven by a clock value `now` (ms, any
// monotonic origin) and by bytes/text from the server, and it queues what to
// send (pollOutput). Node tests drive it without WebRTC. GameSession binds it
// to an RtcRelay (kind "authoritative") and a timer at the tick rate; drawing
// (requestAnimationFrame) is the application's business.
//
// The rules (tick numbering, clock sync, input targets and redundancy,
// snapshot ring, events) are those of the room on the server; see
// docs/protocol.md and protocol/src/game/*.rs. Typings: rtcrelay-game.d.ts.

import { RtcRelay, RtcRelayError } from './rtcrelay.js';
import {
  applySnapshot,
  asBytes,
  decodeSnapshot,
  encodeInput,
  GameCodecError,
  MAX_INPUTS_PER_DATAGRAM,
} from './rtcrelay-codec.js';

/** Applied snapshot states kept by tick (possible delta baselines). */
export const SNAPSHOT_RING = 64;
/** Clock samples kept; the offset is that of the one with the smallest RTT. */
export const CLOCK_SAMPLES = 8;
const CLOCK_QUICK_COUNT = 5;
const CLOCK_QUICK_INTERVAL_MS = 100;
const CLOCK_INTERVAL_MS = 1000;
// Unanswered clock requests remembered (older replies are ignored).
const CLOCK_PENDING_MAX = 16;
const MAX_INTERP_DELAY_MS = 250;
// Interpolation delay moves toward its target by this fraction per snapshot,
// so the render clock never jumps.
const INTERP_DELAY_SMOOTHING = 0.1;
// RFC 3550 jitter gain, and the gain of the mean snapshot transit time.
const JITTER_GAIN = 1 / 16;
const TRANSIT_GAIN = 1 / 16;
// Snapshots kept for interpolation (about a second at 30 Hz).
const INTERP_BUFFER = 32;
// Inputs remembered for prediction and resends, in ticks.
const INPUT_HISTORY_TICKS = 256;
// A prediction never runs more than this many steps per snapshot.
const MAX_PREDICT_TICKS = 128;
// Event ids remembered above the contiguous watermark (duplicate filter).
const MAX_EVENT_IDS = 8192;
// Rate window for snapshot bytes/s and snapshots/s.
const RATE_WINDOW_MS = 1000;

function controlText(value) {
  return JSON.stringify(value);
}

function sameInt32(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isFiniteNumber(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/**
 * The sans-IO game client. Feed it with onControl(text, now) and
 * onSnapshot(bytes, now), call tick(now) at least at the tick rate, and send
 * what pollOutput() returns. Events (CustomEvent, payload in `detail`):
 * hello, snapshot, event, stats, error.
 */
export class GameCore extends EventTarget {
  constructor(options = {}) {
    super();
    const { predictor = null, peerId = null } = options ?? {};
    if (predictor !== null && (typeof predictor !== 'object' || typeof predictor.step !== 'function')) {
      throw new TypeError('predictor must be an object with a step(fields, input, world) method');
    }
    this.predictor = predictor;
    /** This client's peer id (finds its own line in server stats). */
    this.peerId = peerId;
    /** The server's hello, in camelCase; null until it arrives. */
    this.hello = null;
    this._now = 0;
    this._out = [];

    // Clock sync.
    this._clockNextId = 1;
    this._clockSent = 0;
    this._clockNextAt = null;
    this._clockPending = new Map();
    this._clockSamples = [];
    this._offset = null;
    this._srtt = null;
    this._rttvar = null;

    // Inputs.
    this._inputValue = 0;
    this._input = null;
    this._inputs = new Map();
    this._firstTarget = null;
    this._target = null;
    this._seq = 0;
    this._inputAck = null;
    this._lastLocalTickAt = null;
    this._lead = 1;

    // Snapshots.
    this._ring = new Map();
    this._newest = null;
    this._interp = [];
    this._arrivals = [];
    this._snapIndices = new Set();
    this._firstSnapIndex = null;
    this._newestSnapIndex = null;
    this._prevTransit = null;
    this._transit = null;
    this._arrivalJitter = 0;
    this._interpDelay = null;

    // Prediction.
    this._ownEntity = null;
    this._predTick = null;
    this._predFields = null;
    this._predicted = new Map();

    // Events.
    this._eventsBelow = 0;
    this._eventsAbove = new Set();

    this._serverStats = null;
    this.counters = {
      snapshotsApplied: 0,
      staleSnapshots: 0,
      duplicateSnapshots: 0,
      unknownBaselines: 0,
      badSnapshots: 0,
      corrections: 0,
      eventsReceived: 0,
      duplicateEvents: 0,
      inputsSent: 0,
      inputDatagramsSent: 0,
      badControl: 0,
      sessionRestarts: 0,
    };
    // The newest state applied in this WebRTC session: what input datagrams
    // acknowledge (see restartSession).
    this._ackable = null;
    this._interpRestart = false;
    this._clockRestart = false;
  }

  // ---- driving ----

  /** The next message to send, or null: {channel: "realtime", data: Uint8Array} or {channel: "control", data: string}. */
  pollOutput() {
    return this._out.shift() ?? null;
  }

  /** Handles one text message from `control`. */
  onControl(text, now) {
    this._setNow(now);
    let msg;
    try {
      msg = JSON.parse(typeof text === 'string' ? text : new TextDecoder().decode(asBytes(text)));
    } catch {
      this.counters.badControl++;
      this._emit('error', { code: 'bad_control_message', message: 'server control message is not JSON' });
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') {
      this.counters.badControl++;
      this._emit('error', { code: 'bad_control_message', message: 'server control message has no type' });
      return;
    }
    switch (msg.type) {
      case 'hello':
        this._onHello(msg, this._now);
        break;
      case 'clock':
        this._onClock(msg, this._now);
        break;
      case 'event':
        this._onEvent(msg);
        break;
      case 'stats':
        this._onStats(msg);
        break;
      case 'error':
        this._emit('error', { code: String(msg.code ?? 'unknown'), message: String(msg.message ?? 'server error') });
        break;
      default:
        // Newer servers may add message types.
        break;
    }
  }

  /**
   * Handles one binary message from `realtime` (a snapshot). Returns what
   * became of it: "applied" (the new newest state), "stale" (older than
   * the newest: kept as a possible baseline only), "duplicate",
   * "unknown_baseline" (a delta against a state this client lacks) or "bad".
   */
  onSnapshot(bytes, now) {
    this._setNow(now);
    const frame = asBytes(bytes);
    this._arrivals.push([this._now, frame.length]);
    this._pruneArrivals();
    let view;
    try {
      view = decodeSnapshot(frame);
    } catch (e) {
      return this._badSnapshot(e);
    }
    const { tick, baseline, inputAck } = view.header;
    if (this._ring.has(tick)) {
      this.counters.duplicateSnapshots++;
      return 'duplicate';
    }
    let baseState = null;
    if (baseline !== null) {
      const base = this._ring.get(baseline);
      if (!base) {
        this.counters.unknownBaselines++;
        return 'unknown_baseline';
      }
      baseState = base.state;
    }
    let state;
    try {
      state = applySnapshot(view, baseState);
    } catch (e) {
      return this._badSnapshot(e);
    }
    const entry = { tick, state, arrivedAt: this._now, bytes: frame.length, partial: view.header.partial };
    this._ring.set(tick, entry);
    if (this._ring.size > SNAPSHOT_RING) {
      let oldest = Infinity;
      for (const t of this._ring.keys()) oldest = Math.min(oldest, t);
      this._ring.delete(oldest);
    }
    if (this._inputAck === null || inputAck > this._inputAck) this._inputAck = inputAck;
    this._countSnapshotTick(tick);
    if (this._interpRestart) {
      this._interp = [];
      this._interpRestart = false;
    }
    // A server that sends no new hello: the first snapshot restarts the clock.
    if (this._clockRestart && this.hello) this._restartClock(this._now);
    this._insertInterp(entry);
    this.counters.snapshotsApplied++;
    if (this._newest && tick < this._newest.tick) {
      this.counters.staleSnapshots++;
      return 'stale';
    }
    this._newest = entry;
    this._ackable = entry;
    this._measureArrival(entry);
    this._reconcile();
    this._emit('snapshot', { tick, state, partial: entry.partial });
    return 'applied';
  }

  /**
   * Runs the client's local tick: clock requests that are due and, once
   * per tick period, one input sample and one input datagram. Call it at
   * the tick rate or faster; calls closer than half a tick apart only send
   * clock requests.
   */
  tick(now) {
    this._setNow(now);
    if (!this.hello) return;
    this._maybeSendClock(this._now);
    const tickMs = this.tickMs;
    if (this._lastLocalTickAt !== null && this._now - this._lastLocalTickAt < tickMs / 2) return;
    this._lastLocalTickAt = this._now;
    this._sampleInput(this._now);
    this._sendInputs(this._now);
  }

  /**
   * The player's current input, sampled every local tick: a number (one
   * byte, 0..255: the first byte, others zero) or the input's bytes.
   */
  setInput(value) {
    if (typeof value === 'number') {
      if (!Number.isInteger(value) || value < 0 || value > 255) throw new RangeError('a numeric input is one byte, 0..255');
    } else {
      value = Uint8Array.from(asBytes(value));
    }
    this._inputValue = value;
    if (this.hello) this._input = this._inputBytes(value);
  }

  /**
   * The connection is being re-established (a resumed seat gets a new
   * WebRTC session): the server's snapshot history of the old session is
   * gone, so no old state may serve as a delta baseline or be acked, and the
   * clock is sampled afresh (the path may have changed). The newest state
   * stays readable; the server follows up with hello and a full snapshot.
   * Events already delivered stay remembered: the ones the server resends
   * are acked again but not delivered twice.
   */
  restartSession(now) {
    this._setNow(now);
    this._ring.clear();
    this._ackable = null;
    // Remote entities stay where they were until the new session's first
    // snapshot, which then starts the interpolation buffer afresh (no blend
    // across the gap).
    this._interp = this._newest ? [this._newest] : [];
    this._interpRestart = true;
    this._prevTransit = null;
    this._snapIndices.clear();
    this._firstSnapIndex = null;
    this._newestSnapIndex = null;
    this._arrivals.length = 0;
    this._clockSamples.length = 0;
    // Quick clock sampling starts again with the new session's hello.
    this._clockNextAt = null;
    this._clockRestart = true;
    this._out.length = 0;
    this.counters.sessionRestarts++;
  }

  /** Sends a game command, e.g. {start: {bots: true}}. */
  command(command) {
    this._queueControl({ type: 'command', command });
  }

  // ---- queries ----

  /** Ms per server tick (1000 / tick_rate); 1000/60 before the hello. */
  get tickMs() {
    return 1000 / (this.hello ? this.hello.tickRate : 60);
  }

  /** The own entity id (predicted): setOwnEntity()'s, else hello.entity, or null. */
  get entity() {
    return this._ownEntity ?? this.hello?.entity ?? null;
  }

  /**
   * Names the own entity when the game assigns it after the hello (e.g. a
   * seat taken later, seen in snapshots); null goes back to hello.entity.
   * Prediction restarts from the newest snapshot.
   */
  setOwnEntity(id) {
    if (id !== null && !(Number.isInteger(id) && id >= 0 && id <= 0xffffffff)) throw new RangeError('an entity id is a u32');
    if (id === this._ownEntity) return;
    this._ownEntity = id;
    this._predicted.clear();
    this._reconcile();
  }

  /** Estimated server clock (ms since the room's epoch), or null before the hello. */
  serverTimeNow(now = this._defaultNow()) {
    if (this._offset === null) return null;
    return now + this._offset;
  }

  /** Estimated server tick (fractional), or null before the hello. */
  serverTickNow(now = this._defaultNow()) {
    const t = this.serverTimeNow(now);
    if (t === null) return null;
    return (t * this.hello.tickRate) / 1000;
  }

  /** Newest applied snapshot: {tick, state} or null. */
  latest() {
    return this._newest ? { tick: this._newest.tick, state: this._newest.state } : null;
  }

  /** Newest applied state (Map id → entity), or null. */
  get state() {
    return this._newest ? this._newest.state : null;
  }

  /** The applied state of snapshot `tick` if still in the ring. */
  stateAt(tick) {
    return this._ring.get(tick)?.state ?? null;
  }

  /** The last tick an input was sampled for (the target), or null. */
  get targetTick() {
    return this._target;
  }

  /**
   * The own entity's fields now: the newest snapshot's, advanced with the
   * predictor through the inputs of the ticks after it (up to the target
   * tick). Null without an own entity in the newest state.
   */
  predicted() {
    return this._predFields;
  }

  /** The tick `predicted()` is for, or null. */
  get predictedTick() {
    return this._predFields ? this._predTick : null;
  }

  /** The current interpolation delay (ms). */
  get interpDelayMs() {
    if (!this.hello) return 0;
    return this._interpDelay ?? this._snapshotIntervalMs();
  }

  /**
   * The tick drawn for remote entities: the server tick as the snapshot
   * stream shows it now, minus the interpolation delay. The stream runs
   * behind the server's clock by the snapshots' transit time (one-way delay
   * plus the server's send time), so the estimated server tick is taken
   * through the mean transit, (now − transit) × tick_rate, once snapshots
   * arrive; before that, the clock estimate.
   */
  renderTick(now = this._defaultNow()) {
    if (!this.hello) return null;
    const streamTick = this._transit !== null ? ((now - this._transit) * this.hello.tickRate) / 1000 : this.serverTickNow(now);
    return streamTick - (this.interpDelayMs * this.hello.tickRate) / 1000;
  }

  /**
   * Entity `id` at the render tick, between the two buffered snapshots
   * around it: {id, kind, tick, alpha, fields (lerped, fractional), from,
   * to (the two snapshots' fields)}. Before the oldest or after the newest
   * buffered snapshot, that snapshot's fields (no extrapolation). Null if
   * the entity is in neither.
   */
  interpolated(id, now = this._defaultNow()) {
    const rt = this.renderTick(now);
    if (rt === null || this._interp.length === 0) return null;
    const [a, b, alpha] = this._interpBracket(rt);
    return interpolateEntity(a, b, alpha, id, rt);
  }

  /** Every entity at the render tick (Map id → as interpolated()). */
  interpolatedAll(now = this._defaultNow()) {
    const out = new Map();
    const rt = this.renderTick(now);
    if (rt === null || this._interp.length === 0) return out;
    const [a, b, alpha] = this._interpBracket(rt);
    const ids = new Set([...a.state.keys(), ...b.state.keys()]);
    for (const id of [...ids].sort((x, y) => x - y)) {
      const e = interpolateEntity(a, b, alpha, id, rt);
      if (e) out.set(id, e);
    }
    return out;
  }

  /** The server's last stats message, or null. */
  get serverStats() {
    return this._serverStats;
  }

  /** Net stats for an overlay. */
  netStats(now = this._defaultNow()) {
    const own = this._ownServerStats();
    const windowStart = now - RATE_WINDOW_MS;
    let bytes = 0;
    let count = 0;
    for (const [at, len] of this._arrivals) {
      if (at > windowStart && at <= now) {
        bytes += len;
        count++;
      }
    }
    return {
      rttMs: this._srtt,
      jitterMs: this._rttvar,
      clockOffsetMs: this._offset,
      lossDown: this._lossDown(),
      lossUp: own ? own.loss : null,
      serverRttMs: own ? own.rtt_ms : null,
      serverJitterMs: own ? own.jitter_ms : null,
      snapshotBytesPerSec: (bytes * 1000) / RATE_WINDOW_MS,
      snapshotsPerSec: (count * 1000) / RATE_WINDOW_MS,
      corrections: this.counters.corrections,
      interpDelayMs: this.interpDelayMs,
      inputLead: this._lead,
      staleSnapshots: this.counters.staleSnapshots,
      unknownBaselines: this.counters.unknownBaselines,
      duplicateSnapshots: this.counters.duplicateSnapshots,
      badSnapshots: this.counters.badSnapshots,
      snapshotTick: this._newest ? this._newest.tick : null,
      inputAck: this._inputAck,
      targetTick: this._target,
    };
  }

  // ---- internals ----

  _defaultNow() {
    return this._now;
  }

  _setNow(now) {
    if (!isFiniteNumber(now)) throw new TypeError('now must be a finite number of milliseconds');
    this._now = now;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _queueControl(msg) {
    this._out.push({ channel: 'control', data: controlText(msg) });
  }

  _inputBytes(value) {
    const size = this.hello.inputSize;
    const bytes = new Uint8Array(size);
    if (typeof value === 'number') {
      bytes[0] = value;
    } else {
      if (value.length !== size) {
        this._emit('error', { code: 'bad_input', message: `input is ${value.length} bytes, the game's are ${size}` });
      }
      bytes.set(value.subarray(0, size));
    }
    return bytes;
  }

  _onHello(msg, now) {
    const num = (v, fallback) => (isFiniteNumber(v) ? v : fallback);
    const tickRate = num(msg.tick_rate, 0);
    const inputSize = num(msg.input_size, 0);
    if (tickRate <= 0 || inputSize < 1) {
      this._emit('error', { code: 'bad_control_message', message: 'hello without a tick rate or input size' });
      return;
    }
    const first = this.hello === null;
    this.hello = {
      game: String(msg.game ?? ''),
      tickRate,
      snapshotRate: Math.max(1, Math.min(num(msg.snapshot_rate, tickRate), tickRate)),
      inputSize,
      maxInputLead: Math.max(1, num(msg.max_input_lead, tickRate)),
      maxRewind: num(msg.max_rewind, 0),
      tick: num(msg.tick, 0),
      serverTimeMs: num(msg.server_time_ms, 0),
      entity: isFiniteNumber(msg.entity) ? msg.entity : null,
    };
    this._input = this._inputBytes(this._inputValue);
    if (first) {
      // A first guess (one-way delay counted as zero) until clock samples come.
      this._offset = this.hello.serverTimeMs - now;
      this._clockNextAt = now;
      this._maybeSendClock(now);
    } else if (this._clockRestart) {
      this._restartClock(now);
    }
    this._reconcile();
    this._emit('hello', this.hello);
  }

  _restartClock(now) {
    this._clockRestart = false;
    this._clockPending.clear();
    this._clockSent = 0;
    this._clockNextAt = now;
    this._maybeSendClock(now);
  }

  _maybeSendClock(now) {
    if (this._clockNextAt === null || now < this._clockNextAt) return;
    const id = this._clockNextId;
    this._clockNextId = (this._clockNextId % 0xffffffff) + 1;
    this._clockPending.set(id, now);
    if (this._clockPending.size > CLOCK_PENDING_MAX) {
      this._clockPending.delete(this._clockPending.keys().next().value);
    }
    this._clockSent++;
    this._clockNextAt = now + (this._clockSent < CLOCK_QUICK_COUNT ? CLOCK_QUICK_INTERVAL_MS : CLOCK_INTERVAL_MS);
    this._queueControl({ type: 'clock', id, t0: now });
  }

  _onClock(msg, now) {
    const t0 = this._clockPending.get(msg.id);
    if (t0 === undefined || !isFiniteNumber(msg.t1) || !isFiniteNumber(msg.t2)) return;
    this._clockPending.delete(msg.id);
    // NTP: the server held the request t2 - t1 ms.
    const rtt = Math.max(0, now - t0 - (msg.t2 - msg.t1));
    const offset = (msg.t1 - t0 + (msg.t2 - now)) / 2;
    this._clockSamples.push({ rtt, offset });
    if (this._clockSamples.length > CLOCK_SAMPLES) this._clockSamples.shift();
    let best = this._clockSamples[0];
    for (const s of this._clockSamples) if (s.rtt < best.rtt) best = s;
    this._offset = best.offset;
    // RFC 6298 smoothing: srtt and rttvar (the jitter).
    if (this._srtt === null) {
      this._srtt = rtt;
      this._rttvar = rtt / 2;
    } else {
      this._rttvar = 0.75 * this._rttvar + 0.25 * Math.abs(this._srtt - rtt);
      this._srtt = 0.875 * this._srtt + 0.125 * rtt;
    }
  }

  _onEvent(msg) {
    if (!Number.isInteger(msg.id) || msg.id < 0) {
      this._emit('error', { code: 'bad_control_message', message: 'event without an id' });
      return;
    }
    // Ack every copy: a lost ack is repaired by the next retransmission.
    this._queueControl({ type: 'event_ack', id: msg.id });
    this.counters.eventsReceived++;
    if (msg.id <= this._eventsBelow || this._eventsAbove.has(msg.id)) {
      this.counters.duplicateEvents++;
      return;
    }
    this._eventsAbove.add(msg.id);
    while (this._eventsAbove.has(this._eventsBelow + 1)) {
      this._eventsBelow++;
      this._eventsAbove.delete(this._eventsBelow);
    }
    // A client that joined mid-match never sees the ids before its first
    // one, so the watermark may never move: keep the set bounded by
    // treating the oldest half as seen (thousands of events ago).
    if (this._eventsAbove.size > MAX_EVENT_IDS) {
      const ids = [...this._eventsAbove].sort((a, b) => a - b);
      this._eventsBelow = ids[ids.length >> 1];
      for (const id of ids) if (id <= this._eventsBelow) this._eventsAbove.delete(id);
    }
    this._emit('event', { id: msg.id, tick: msg.tick, event: msg.event });
  }

  _onStats(msg) {
    this._serverStats = msg;
    this._emit('stats', msg);
  }

  _ownServerStats() {
    const players = this._serverStats?.players;
    if (!Array.isArray(players) || this.peerId === null) return null;
    return players.find((p) => p && p.peer === this.peerId) ?? null;
  }

  _badSnapshot(e) {
    if (!(e instanceof GameCodecError)) throw e;
    this.counters.badSnapshots++;
    this._emit('error', { code: 'bad_snapshot', message: e.message, cause: e.code });
    return 'bad';
  }

  _snapshotIntervalMs() {
    return 1000 / this.hello.snapshotRate;
  }

  // -- inputs --

  _computeLead() {
    const h = this.hello;
    const rtt = this._srtt ?? 0;
    const jitter = this._rttvar ?? 0;
    const lead = Math.ceil((rtt / 2 + 2 * jitter) / this.tickMs) + 1;
    return Math.max(1, Math.min(lead, h.maxInputLead - 1));
  }

  _sampleInput(now) {
    const est = Math.floor(this.serverTickNow(now));
    this._lead = this._computeLead();
    const want = est + this._lead;
    // Never past what the server accepts (tick + max_input_lead).
    const ceiling = est + Math.max(1, this.hello.maxInputLead - 1);
    let target;
    if (this._target === null) {
      target = Math.max(0, want);
      this._firstTarget = target;
    } else {
      if (this._target + 1 > ceiling) return;
      target = Math.max(this._target + 1, want);
    }
    // Skipped ticks get the same input (contiguous ticks). Only the last
    // MAX_INPUTS_PER_DATAGRAM could ever be sent.
    const from = this._target === null ? target : Math.max(this._target + 1, target - MAX_INPUTS_PER_DATAGRAM + 1);
    for (let t = from; t <= target; t++) this._inputs.set(t, this._input);
    this._target = target;
    for (const t of this._inputs.keys()) {
      if (t <= target - INPUT_HISTORY_TICKS) this._inputs.delete(t);
      else break;
    }
    this._extendPrediction();
  }

  _sendInputs(now) {
    if (this._target === null) return;
    const target = this._target;
    let first = Math.max(this._firstTarget, target - MAX_INPUTS_PER_DATAGRAM + 1);
    if (this._inputAck !== null) first = Math.max(first, this._inputAck + 1);
    if (first > target) first = target; // everything acked: resend the newest, keeps acks flowing
    const size = this.hello.inputSize;
    const inputs = new Uint8Array((target - first + 1) * size);
    for (let t = first; t <= target; t++) inputs.set(this._inputAt(t), (t - first) * size);
    const newest = this._ackable;
    const datagram = encodeInput({
      seq: this._seq,
      ack: newest ? { tick: newest.tick, delayMs: now - newest.arrivedAt } : null,
      firstTick: first >>> 0,
      inputSize: size,
      inputs,
    });
    this._seq = (this._seq + 1) >>> 0;
    this.counters.inputDatagramsSent++;
    this.counters.inputsSent += target - first + 1;
    this._out.push({ channel: 'realtime', data: datagram });
  }

  // The input used for tick t: the one sampled for it, else the last one
  // before it (what the server repeats), else zeros.
  _inputAt(t) {
    const x = this._inputs.get(t);
    if (x) return x;
    let best = null;
    let bestTick = -Infinity;
    for (const [k, v] of this._inputs) {
      if (k < t && k > bestTick) {
        best = v;
        bestTick = k;
      }
    }
    return best ?? new Uint8Array(this.hello.inputSize);
  }

  _predictorInput(t) {
    const bytes = this._inputAt(t);
    return this.hello.inputSize === 1 ? bytes[0] : bytes;
  }

  // -- snapshots --

  _pruneArrivals() {
    const cutoff = this._now - RATE_WINDOW_MS;
    while (this._arrivals.length > 0 && this._arrivals[0][0] <= cutoff) this._arrivals.shift();
  }

  _snapshotIndex(tick) {
    return Math.floor((tick * this.hello.snapshotRate) / this.hello.tickRate);
  }

  _countSnapshotTick(tick) {
    if (!this.hello) return;
    const idx = this._snapshotIndex(tick);
    this._snapIndices.add(idx);
    if (this._firstSnapIndex === null || idx < this._firstSnapIndex) this._firstSnapIndex = idx;
    if (this._newestSnapIndex === null || idx > this._newestSnapIndex) this._newestSnapIndex = idx;
    const keepFrom = this._newestSnapIndex - 4 * this.hello.snapshotRate;
    if (this._snapIndices.size > 8 * this.hello.snapshotRate) {
      for (const i of this._snapIndices) if (i < keepFrom) this._snapIndices.delete(i);
    }
  }

  // Downstream loss over the last second of snapshot slots: slots are the
  // ticks where floor(tick * snapshot_rate / tick_rate) increases.
  _lossDown() {
    if (this._newestSnapIndex === null || !this.hello) return 0;
    const hi = this._newestSnapIndex;
    const lo = Math.max(this._firstSnapIndex, hi - this.hello.snapshotRate + 1);
    const expected = hi - lo + 1;
    if (expected < 2) return 0;
    let received = 0;
    for (let i = lo; i <= hi; i++) if (this._snapIndices.has(i)) received++;
    return 1 - received / expected;
  }

  _insertInterp(entry) {
    const buf = this._interp;
    let i = buf.length;
    while (i > 0 && buf[i - 1].tick > entry.tick) i--;
    if (buf.length >= INTERP_BUFFER && i === 0) return; // older than everything kept
    buf.splice(i, 0, entry);
    if (buf.length > INTERP_BUFFER) buf.shift();
  }

  _measureArrival(entry) {
    if (!this.hello) return;
    // RFC 3550 interarrival jitter on transit = arrival - server send time.
    const transit = entry.arrivedAt - entry.tick * this.tickMs;
    if (this._prevTransit !== null) {
      const d = Math.abs(transit - this._prevTransit);
      this._arrivalJitter += (d - this._arrivalJitter) * JITTER_GAIN;
    }
    this._prevTransit = transit;
    this._transit = this._transit === null ? transit : this._transit + (transit - this._transit) * TRANSIT_GAIN;
    const interval = this._snapshotIntervalMs();
    const target = Math.min(MAX_INTERP_DELAY_MS, Math.max(interval, interval + 2 * this._arrivalJitter));
    if (this._interpDelay === null) this._interpDelay = Math.min(MAX_INTERP_DELAY_MS, Math.max(interval, target));
    else this._interpDelay += (target - this._interpDelay) * INTERP_DELAY_SMOOTHING;
  }

  _interpBracket(rt) {
    const buf = this._interp;
    const last = buf[buf.length - 1];
    if (rt >= last.tick) return [last, last, 1];
    if (rt <= buf[0].tick) return [buf[0], buf[0], 0];
    let i = buf.length - 1;
    while (buf[i - 1].tick > rt) i--;
    const a = buf[i - 1];
    const b = buf[i];
    return [a, b, (rt - a.tick) / (b.tick - a.tick)];
  }

  // -- prediction --

  _reconcile() {
    const newest = this._newest;
    const id = this.entity;
    const own = newest && id !== null ? newest.state.get(id) : undefined;
    if (!own) {
      this._predFields = null;
      this._predTick = null;
      this._predicted.clear();
      return;
    }
    const s = newest.tick;
    let fields = Int32Array.from(own.fields);
    if (!this.predictor || !this.hello) {
      this._predTick = s;
      this._predFields = fields;
      return;
    }
    let changed = false;
    const before = this._predicted.get(s);
    if (before && !sameInt32(before, fields)) changed = true;
    const end = Math.max(s, this._target ?? s);
    const start = Math.max(s, end - MAX_PREDICT_TICKS);
    const predicted = new Map([[s, fields]]);
    for (let t = start + 1; t <= end; t++) {
      fields = this._step(fields, t, newest.state);
      const old = this._predicted.get(t);
      if (old && !sameInt32(old, fields)) changed = true;
      predicted.set(t, fields);
    }
    if (changed) this.counters.corrections++;
    this._predicted = predicted;
    this._predTick = end;
    this._predFields = fields;
  }

  _extendPrediction() {
    if (!this.predictor || this._predFields === null || this._target === null || !this._newest) return;
    let fields = this._predFields;
    const end = this._target;
    for (let t = Math.max(this._predTick + 1, end - MAX_PREDICT_TICKS + 1); t <= end; t++) {
      fields = this._step(fields, t, this._newest.state);
      this._predicted.set(t, fields);
    }
    if (end > this._predTick) {
      this._predTick = end;
      this._predFields = fields;
    }
  }

  _step(fields, tick, world) {
    const out = this.predictor.step(Int32Array.from(fields), this._predictorInput(tick), world);
    return Int32Array.from(out);
  }
}

function interpolateEntity(a, b, alpha, id, renderTick) {
  const ea = a.state.get(id);
  const eb = b.state.get(id);
  if (!ea && !eb) return null;
  if (!ea || !eb || ea.kind !== eb.kind || ea.fields.length !== eb.fields.length) {
    // Appeared, vanished or replaced between the two: no blending.
    const e = eb && (alpha >= 0.5 || !ea) ? eb : ea;
    const tick = e === eb ? b.tick : a.tick;
    return {
      id,
      kind: e.kind,
      tick: renderTick,
      alpha: e === eb ? 1 : 0,
      fields: Float64Array.from(e.fields),
      from: e.fields,
      to: e.fields,
      fromTick: tick,
      toTick: tick,
    };
  }
  const fields = new Float64Array(ea.fields.length);
  for (let i = 0; i < fields.length; i++) {
    // Wrapping difference: a counter that wrapped moves forward, not back.
    fields[i] = ea.fields[i] + ((eb.fields[i] - ea.fields[i]) | 0) * alpha;
  }
  return { id, kind: eb.kind, tick: renderTick, alpha, fields, from: ea.fields, to: eb.fields, fromTick: a.tick, toTick: b.tick };
}

const utf8 = new TextDecoder('utf-8');

/**
 * A game client on a live connection: GameCore bound to an RtcRelay of kind
 * "authoritative" and a timer at the tick rate. Also dispatches "close"
 * ({reason, error}) when the connection ends.
 */
export class GameSession extends GameCore {
  /**
   * Joins an authoritative room and resolves once the server's hello has
   * arrived. Options: those of RtcRelay.connect (kind is forced to
   * "authoritative") plus predictor and helloTimeoutMs (default 10000).
   */
  static async connect(options = {}) {
    const { predictor, helloTimeoutMs, ...relayOptions } = options;
    const relay = await RtcRelay.connect({ ...relayOptions, kind: 'authoritative' });
    try {
      return await GameSession.attach(relay, { predictor, helloTimeoutMs });
    } catch (e) {
      relay.close();
      throw e;
    }
  }

  /** Wraps a connected RtcRelay; resolves once the hello has arrived. */
  static attach(relay, options = {}) {
    const session = new GameSession(relay, options);
    return session._waitHello(options.helloTimeoutMs ?? 10000);
  }

  constructor(relay, options = {}) {
    if (!(relay instanceof RtcRelay) && (typeof relay?.send !== 'function' || typeof relay?.addEventListener !== 'function')) {
      throw new RtcRelayError('bad_options', 'GameSession needs a connected RtcRelay');
    }
    if (relay.kind !== 'authoritative') {
      throw new RtcRelayError('bad_options', `GameSession needs an authoritative room, this one is "${relay.kind}"`);
    }
    super({ predictor: options.predictor ?? null, peerId: relay.peerId ?? null });
    this.relay = relay;
    this._closed = false;
    this._timer = null;
    this._timerMs = null;
    this._onMessage = (event) => this._handleMessage(event.detail);
    this._onRelayClose = (event) => this._finish(event.detail?.reason ?? 'closed', event.detail?.error ?? null);
    this._onRelayError = (event) => this._emit('error', event.detail);
    // Before the new session exists, so nothing of it meets old state.
    this._onRelayReconnecting = () => this.restartSession(performance.now());
    relay.addEventListener('message', this._onMessage);
    relay.addEventListener('close', this._onRelayClose);
    relay.addEventListener('error', this._onRelayError);
    relay.addEventListener('reconnecting', this._onRelayReconnecting);
    this.addEventListener('hello', () => this._startTimer());
    this._startTimer();
    if (relay.state === 'closed') this._finish('closed', null);
  }

  /** Stops the timer and closes the connection. Idempotent. */
  close() {
    if (this._closed) return;
    this.relay.close();
    this._finish('closed', null);
  }

  get closed() {
    return this._closed;
  }

  _defaultNow() {
    return performance.now();
  }

  _waitHello(timeoutMs) {
    if (this.hello) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      const done = (err) => {
        clearTimeout(timer);
        this.removeEventListener('hello', onHello);
        this.removeEventListener('close', onClose);
        if (err) {
          this.close();
          reject(err);
        } else {
          resolve(this);
        }
      };
      const onHello = () => done(null);
      const onClose = (event) => done(event.detail?.error ?? new RtcRelayError('closed', `connection closed before the hello (${event.detail?.reason})`));
      const timer = setTimeout(() => done(new RtcRelayError('timeout', `no hello within ${timeoutMs} ms`)), timeoutMs);
      this.addEventListener('hello', onHello);
      this.addEventListener('close', onClose);
    });
  }

  _startTimer() {
    if (this._closed) return;
    const ms = this.tickMs;
    if (this._timer !== null && this._timerMs === ms) return;
    clearInterval(this._timer);
    this._timerMs = ms;
    this._timer = setInterval(() => {
      this.tick(performance.now());
      this._flush();
    }, ms);
  }

  _handleMessage(detail) {
    if (this._closed || !detail) return;
    const now = performance.now();
    if (detail.channel === 'realtime') {
      if (typeof detail.data !== 'string') this.onSnapshot(new Uint8Array(detail.data), now);
    } else if (detail.channel === 'control') {
      this.onControl(typeof detail.data === 'string' ? detail.data : utf8.decode(detail.data), now);
    }
    this._flush();
  }

  _flush() {
    for (let out = this.pollOutput(); out && !this._closed; out = this.pollOutput()) {
      try {
        this.relay.send(out.channel, out.data);
      } catch (e) {
        if (e?.code === 'not_open' && this.relay.state === 'reconnecting') {
          // Nothing queued now is worth keeping: inputs go out again from
          // the history with the next datagram, resent events are acked again.
          this._out.length = 0;
          return;
        }
        this._emit('error', { code: e?.code ?? 'internal', message: e?.message ?? String(e) });
        if (e?.code === 'not_open') {
          this._out.length = 0;
          return;
        }
      }
    }
  }

  _finish(reason, error) {
    if (this._closed) return;
    this._closed = true;
    clearInterval(this._timer);
    this._timer = null;
    this._out.length = 0;
    this.relay.removeEventListener('message', this._onMessage);
    this.relay.removeEventListener('close', this._onRelayClose);
    this.relay.removeEventListener('error', this._onRelayError);
    this.relay.removeEventListener('reconnecting', this._onRelayReconnecting);
    this._emit('close', { reason, error });
  }
}

export default GameSession;
