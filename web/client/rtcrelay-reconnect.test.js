// Reconnection with session resume in rtcrelay.js (and its effect on
// GameSession), in Node with scripted fakes for WebSocket,
// RTCPeerConnection and the DataChannels: which way back is taken (a new
// offer on the same WebSocket after our own peer_away, or a new WebSocket
// joining with the resume token), the events, backoff bounds, the refusals
// and the grace period. Timings are small and only bound "eventually".
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static all = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.all.push(this);
  }

  static get last() {
    return FakeWebSocket.all[FakeWebSocket.all.length - 1];
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSING;
    setTimeout(() => {
      this.readyState = FakeWebSocket.CLOSED;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? '' });
    }, 1);
  }

  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }

  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  /** The network drops the connection (no Close frame from us). */
  drop(code = 1006, reason = '') {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }

  sentOf(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

class FakeDataChannel {
  constructor(label, init) {
    this.label = label;
    this.init = init;
    this.readyState = 'connecting';
    this.bufferedAmount = 0;
    this.sent = [];
  }

  send(data) {
    this.sent.push(typeof data === 'string' ? data : Uint8Array.from(data));
  }

  open() {
    this.readyState = 'open';
    this.onopen?.();
  }

  deliver(data) {
    this.onmessage?.({ data: typeof data === 'string' ? data : Uint8Array.from(data).buffer });
  }
}

class FakePeerConnection {
  static all = [];

  constructor(config) {
    this.config = config;
    this.channels = [];
    this.connectionState = 'new';
    this.closed = false;
    FakePeerConnection.all.push(this);
  }

  static get last() {
    return FakePeerConnection.all[FakePeerConnection.all.length - 1];
  }

  createDataChannel(label, init = {}) {
    const dc = new FakeDataChannel(label, init);
    this.channels.push(dc);
    return dc;
  }

  async createOffer() {
    return { type: 'offer', sdp: `v=0 fake offer ${FakePeerConnection.all.length}` };
  }

  async setLocalDescription(desc) {
    this.localDescription = desc;
  }

  async setRemoteDescription(desc) {
    this.remoteDescription = desc;
  }

  async addIceCandidate() {}

  close() {
    this.closed = true;
    this.connectionState = 'closed';
  }

  channel(label) {
    return this.channels.find((c) => c.label === label);
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.RTCPeerConnection = FakePeerConnection;

const { RtcRelay } = await import('./rtcrelay.js');
const { GameCore, GameSession } = await import('./rtcrelay-game.js');
const { decodeInput, encodeSnapshot, stateFromEntities } = await import('./rtcrelay-codec.js');

const turn = () => new Promise((r) => setTimeout(r, 0));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until cond() is truthy and returns its value. Bounded by the test
// runner's timeout, not by a clock here.
async function until(cond) {
  for (;;) {
    const value = cond();
    if (value) return value;
    await sleep(2);
  }
}

// Silence detection is slow unless a test is about it: a loaded machine
// must not turn a pause into a lost connection.
const FAST = { deadAfterMs: 5000, reconnectMinDelayMs: 1, reconnectMaxDelayMs: 8, timeoutMs: 2000 };
const WELCOME = {
  type: 'welcome', version: 1, peer_id: 7, room: 'r1', kind: 'relay', capacity: 4,
  roster: [{ peer_id: 3, name: 'bob' }], ice_servers: [], resume_token: 'tok-1', resume_grace_ms: 30_000,
};

/** Brings a session on `pc` (already offered) to ready over `ws`. */
async function finishSession(ws, pc) {
  ws.push({ type: 'answer', sdp: 'v=0 fake answer' });
  await turn();
  ws.push({ type: 'ready', realtime: { ordered: false, max_retransmits: 0 }, control: { ordered: true } });
  pc.channel('realtime').open();
  pc.channel('control').open();
}

/** An open client: welcome with a resume token, one session, ready. */
async function connected({ options = {}, welcome = {} } = {}) {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada', token: 'join-jwt', capacity: 4, ...FAST, ...options });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ ...WELCOME, ...welcome });
  await until(() => ws.sentOf('offer').length === 1);
  const pc = FakePeerConnection.last;
  await finishSession(ws, pc);
  const client = await promise;
  const events = [];
  for (const type of ['reconnecting', 'resumed', 'resumefailed', 'peeraway', 'peerback', 'peerjoined', 'peerleft', 'close']) {
    client.on(type, (detail) => events.push({ type, ...detail }));
  }
  const states = [];
  client.on('statechange', ({ state }) => {
    if (states[states.length - 1] !== state) states.push(state);
  });
  await turn();
  return { client, ws, pc, events, states };
}

const ofType = (events, type) => events.filter((e) => e.type === type);

beforeEach(() => {
  FakeWebSocket.all = [];
  FakePeerConnection.all = [];
});

test('our own peer_away on a live WebSocket: a new session is offered on it, same seat', async () => {
  const { client, ws, pc, events, states } = await connected();
  ws.push({ type: 'peer_away', peer_id: 7, grace_ms: 30_000 });
  await until(() => ws.sentOf('offer').length === 2);
  assert.equal(client.state, 'reconnecting');
  assert.ok(pc.closed, 'the dead session is closed');
  assert.throws(() => client.send('control', 'x'), { code: 'not_open' });
  const pc2 = FakePeerConnection.last;
  assert.notEqual(pc2, pc);
  await finishSession(ws, pc2);
  await until(() => ofType(events, 'resumed').length === 1);
  assert.equal(FakeWebSocket.all.length, 1, 'no new WebSocket');
  assert.equal(ws.sentOf('join').length, 1, 'no new join');
  assert.equal(client.state, 'open');
  assert.equal(client.peerId, 7);
  assert.deepEqual(ofType(events, 'resumed')[0], { type: 'resumed', peerId: 7, attempts: 1 });
  const reconnecting = ofType(events, 'reconnecting');
  assert.equal(reconnecting.length, 1);
  assert.equal(reconnecting[0].attempt, 1);
  assert.equal(reconnecting[0].reason, 'peer_away');
  assert.ok(reconnecting[0].delayMs >= 0 && reconnecting[0].delayMs <= FAST.reconnectMinDelayMs);
  assert.deepEqual(states.slice(-2), ['reconnecting', 'open']);
  // The new channels carry messages; the old ones are no longer listened to.
  const got = [];
  client.on('message', (m) => got.push(m.from));
  pc.channel('control').deliver([1, 0, 0, 0, 0, 3, 0x61]);
  pc2.channel('control').deliver([1, 0, 0, 0, 0, 3, 0x62]);
  assert.deepEqual(got, [3]);
  client.close();
});

test('a dropped WebSocket: a new one joins with the newest resume token, then offers', async () => {
  const { client, ws, events } = await connected();
  ws.drop(1006);
  await until(() => FakeWebSocket.all.length === 2);
  const ws2 = FakeWebSocket.last;
  ws2.open();
  const join = ws2.sentOf('join')[0];
  assert.deepEqual(join, { type: 'join', version: 1, room: 'r1', kind: 'relay', name: 'ada', resume: 'tok-1' });
  ws2.push({ ...WELCOME, resumed: true, resume_token: 'tok-2', roster: [{ peer_id: 3, name: 'bob' }, { peer_id: 9, name: 'cy' }] });
  await until(() => ws2.sentOf('offer').length === 1);
  await finishSession(ws2, FakePeerConnection.last);
  await until(() => ofType(events, 'resumed').length === 1);
  assert.equal(client.resumeToken, 'tok-2', 'each welcome replaces the token');
  assert.equal(ofType(events, 'reconnecting')[0].reason, 'signaling_closed');
  // Who arrived meanwhile comes from the welcome's roster.
  assert.deepEqual(ofType(events, 'peerjoined').map((e) => e.peerId), [9]);
  assert.ok(client.roster.has(9));

  // The next loss uses tok-2.
  ws2.drop(1006);
  await until(() => FakeWebSocket.all.length === 3);
  FakeWebSocket.last.open();
  assert.equal(FakeWebSocket.last.sentOf('join')[0].resume, 'tok-2');
  client.close();
});

test('silence on the channels with a half-open WebSocket: resume on a new one, the old one is not closed by us first', async () => {
  const { client, ws, events } = await connected({ options: { deadAfterMs: 60 } });
  // Nothing arrives: no heartbeat, no pong.
  await until(() => ofType(events, 'reconnecting').length === 1);
  assert.equal(ofType(events, 'reconnecting')[0].reason, 'silence');
  await until(() => ws.sentOf('ping').length === 1);
  // The probe times out (SIGNALING_PROBE_MS), then a new socket.
  await until(() => FakeWebSocket.all.length === 2);
  assert.equal(ws.closedWith, null, 'a Close frame would release the seat');
  const ws2 = FakeWebSocket.last;
  ws2.open();
  assert.equal(ws2.sentOf('join')[0].resume, 'tok-1');
  ws2.push({ ...WELCOME, resumed: true, resume_token: 'tok-2' });
  await until(() => ws2.sentOf('offer').length === 1);
  await finishSession(ws2, FakePeerConnection.last);
  await until(() => ofType(events, 'resumed').length === 1);
  // Once resumed, the abandoned socket (which the server has replaced) is closed.
  assert.ok(ws.closedWith);
  client.close();
});

test('heartbeats keep the client open; silence after them is detected', async () => {
  const { client, pc, events } = await connected({ options: { deadAfterMs: 400 } });
  for (let i = 0; i < 32; i++) {
    pc.channel('control').deliver([0x04]);
    await sleep(25);
  }
  assert.equal(ofType(events, 'reconnecting').length, 0, '800 ms of heartbeats every 25 ms are life');
  await until(() => ofType(events, 'reconnecting').length === 1);
  client.close();
});

test('silence, then the server says peer_away on the live socket: the offer goes there', async () => {
  const { client, ws, events } = await connected({ options: { deadAfterMs: 60 } });
  await until(() => ws.sentOf('ping').length === 1);
  ws.push({ type: 'pong', id: ws.sentOf('ping')[0].id });
  await sleep(10);
  ws.push({ type: 'peer_away', peer_id: 7, grace_ms: 30_000 });
  await until(() => ws.sentOf('offer').length === 2);
  await finishSession(ws, FakePeerConnection.last);
  await until(() => ofType(events, 'resumed').length === 1);
  assert.equal(FakeWebSocket.all.length, 1);
  client.close();
});

test('a refused resume ends it: resumefailed with the server code, then close', async () => {
  for (const code of ['resume_expired', 'resume_invalid', 'resume_wrong_room']) {
    FakeWebSocket.all = [];
    const { client, ws, events } = await connected();
    ws.drop(1006);
    await until(() => FakeWebSocket.all.length === 2);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    ws2.push({ type: 'error', code, message: 'no', fatal: false });
    await until(() => ofType(events, 'close').length === 1);
    assert.deepEqual(ofType(events, 'resumefailed'), [{ type: 'resumefailed', code, message: 'no' }]);
    assert.equal(ofType(events, 'close')[0].reason, code);
    assert.equal(client.state, 'closed');
    await sleep(20);
    assert.equal(FakeWebSocket.all.length, 2, 'no further attempt');
  }
});

test('retryable failures back off with full jitter, capped; the grace period ends it', async () => {
  const { client, ws, events } = await connected({ welcome: { resume_grace_ms: 400 }, options: { reconnectMinDelayMs: 2, reconnectMaxDelayMs: 16 } });
  ws.drop(1006);
  // Every new socket fails to connect at all.
  let dropped = 1;
  while (ofType(events, 'close').length === 0) {
    if (FakeWebSocket.all.length > dropped) {
      FakeWebSocket.last.drop(1006);
      dropped = FakeWebSocket.all.length;
    }
    await sleep(1);
  }
  const attempts = ofType(events, 'reconnecting');
  assert.ok(attempts.length >= 5, `${attempts.length} attempts`);
  attempts.forEach((a, i) => {
    assert.equal(a.attempt, i + 1);
    const cap = Math.min(16, 2 * 2 ** i);
    assert.ok(a.delayMs >= 0 && a.delayMs <= cap, `attempt ${a.attempt}: ${a.delayMs} ms > ${cap}`);
  });
  assert.equal(ofType(events, 'resumefailed')[0].code, 'resume_expired');
  assert.equal(ofType(events, 'close')[0].reason, 'resume_expired');
  assert.equal(client.state, 'closed');
});

test('the server releases the seat while we try (peer_left for us): resumefailed, closed', async () => {
  const { client, ws, events } = await connected();
  ws.push({ type: 'peer_away', peer_id: 7, grace_ms: 30_000 });
  await until(() => ws.sentOf('offer').length === 2);
  ws.push({ type: 'peer_left', peer_id: 7, reason: 'disconnected' });
  await until(() => ofType(events, 'close').length === 1);
  assert.equal(ofType(events, 'resumefailed')[0].code, 'resume_expired');
  assert.equal(ofType(events, 'close')[0].reason, 'disconnected');
  assert.equal(client.state, 'closed');
});

test('reconnect: false closes on a lost connection, as without resume', async () => {
  const { client, ws, events } = await connected({ options: { reconnect: false } });
  ws.push({ type: 'peer_away', peer_id: 7, grace_ms: 30_000 });
  await until(() => ofType(events, 'close').length === 1);
  assert.equal(ofType(events, 'reconnecting').length, 0);
  assert.equal(ofType(events, 'close')[0].reason, 'disconnected');
  assert.equal(client.state, 'closed');
  assert.equal(FakeWebSocket.all.length, 1);
});

test('a server without resume (no token in the welcome): a dropped socket closes the client', async () => {
  const { client, ws, events } = await connected({ welcome: { resume_token: undefined, resume_grace_ms: undefined } });
  assert.equal(client.resumeToken, null);
  ws.drop(1006);
  await until(() => ofType(events, 'close').length === 1);
  assert.equal(ofType(events, 'close')[0].reason, 'signaling_closed');
  assert.equal(ofType(events, 'reconnecting').length, 0);
});

test('the seat taken over by another connection (close 4001): closed, no tug of war', async () => {
  const { client, ws, events } = await connected();
  ws.drop(4001, 'resumed on another connection');
  await until(() => ofType(events, 'close').length === 1);
  assert.equal(ofType(events, 'close')[0].reason, 'resumed_elsewhere');
  assert.equal(ofType(events, 'reconnecting').length, 0);
  assert.equal(client.state, 'closed');
});

test('peer_away and peer_back of another member: events and roster flags', async () => {
  const { client, ws, events } = await connected();
  ws.push({ type: 'peer_away', peer_id: 3, grace_ms: 30_000 });
  await until(() => ofType(events, 'peeraway').length === 1);
  assert.deepEqual(ofType(events, 'peeraway')[0], { type: 'peeraway', peerId: 3, name: 'bob', graceMs: 30_000 });
  assert.equal(client.roster.get(3).away, true);
  assert.equal(client.state, 'open', 'someone else being away changes nothing here');
  ws.push({ type: 'peer_back', peer_id: 3 });
  await until(() => ofType(events, 'peerback').length === 1);
  assert.deepEqual(ofType(events, 'peerback')[0], { type: 'peerback', peerId: 3, name: 'bob' });
  assert.equal(client.roster.get(3).away, false);
  client.close();
});

test('close() during the backoff stops reconnecting', async () => {
  const { client, ws, events } = await connected({ options: { reconnectMinDelayMs: 10_000, reconnectMaxDelayMs: 10_000 } });
  ws.drop(1006);
  await until(() => ofType(events, 'reconnecting').length === 1);
  client.close();
  await sleep(20);
  assert.equal(client.state, 'closed');
  assert.equal(FakeWebSocket.all.length, 1);
});

// ---- GameSession across a resume ----

const HELLO = { type: 'hello', game: 'dizolaur', tick_rate: 60, snapshot_rate: 30, input_size: 1, max_input_lead: 30, max_rewind: 0, tick: 100, server_time_ms: 1666, entity: 5 };

function snapshot(tick, x) {
  return encodeSnapshot({ tick, inputAck: tick, current: stateFromEntities([{ id: 5, kind: 1, fields: [x, 0] }]) }).bytes;
}

test('GameSession: after a resume the baselines restart and resent events are acked, not delivered twice', async () => {
  const promise = GameSession.connect({ url: 'ws://server/ws', room: 'g1', name: 'ada', ...FAST, deadAfterMs: 5000 });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ ...WELCOME, kind: 'authoritative', room: 'g1', roster: [] });
  await until(() => ws.sentOf('offer').length === 1);
  let pc = FakePeerConnection.last;
  await finishSession(ws, pc);
  await until(() => pc.channel('control').onmessage);
  await turn();
  pc.channel('control').deliver(JSON.stringify(HELLO));
  const session = await promise;
  const delivered = [];
  session.addEventListener('event', (e) => delivered.push(e.detail.id));

  pc.channel('realtime').deliver(snapshot(102, 10));
  pc.channel('control').deliver(JSON.stringify({ type: 'event', id: 1, tick: 102, event: { kind: 'a' } }));
  assert.ok(session.stateAt(102));
  assert.deepEqual(delivered, [1]);

  ws.push({ type: 'peer_away', peer_id: 7, grace_ms: 30_000 });
  await until(() => ws.sentOf('offer').length === 2);
  assert.equal(session.stateAt(102), null, 'old baselines are gone');
  assert.equal(session.state.get(5).fields[0], 10, 'the newest state stays readable');
  assert.equal(session.counters.sessionRestarts >= 1, true);
  pc = FakePeerConnection.last;
  await finishSession(ws, pc);
  pc.channel('control').deliver(JSON.stringify({ ...HELLO, tick: 400 }));
  // The server resends unacked events, then a full snapshot.
  pc.channel('control').deliver(JSON.stringify({ type: 'event', id: 1, tick: 102, event: { kind: 'a' } }));
  pc.channel('control').deliver(JSON.stringify({ type: 'event', id: 2, tick: 390, event: { kind: 'b' } }));
  assert.equal(pc.channel('realtime').onmessage !== null, true);
  pc.channel('realtime').deliver(snapshot(402, 40));
  assert.deepEqual(delivered, [1, 2], 'each event id once');
  assert.equal(session.latest().tick, 402);
  assert.equal(session.closed, false);
  // Both copies of event 1 and event 2 get acks on the new session.
  await until(() => pc.channel('control').sent.filter((m) => typeof m === 'string' && m.includes('event_ack')).length >= 2);
  const acks = pc.channel('control').sent.filter((m) => typeof m === 'string' && m.includes('event_ack')).map((m) => JSON.parse(m).id);
  assert.deepEqual(acks.sort(), [1, 2]);
  session.close();
});

test('GameCore.restartSession: no old baseline is acked or used; the next hello restarts clock sampling', () => {
  const core = new GameCore();
  const drain = () => {
    const out = [];
    for (let o = core.pollOutput(); o; o = core.pollOutput()) out.push(o);
    return out;
  };
  const lastInput = () => {
    const inputs = drain().filter((o) => o.channel === 'realtime');
    return decodeInput(inputs[inputs.length - 1].data);
  };
  core.onControl(JSON.stringify(HELLO), 0);
  core.onSnapshot(snapshot(102, 10), 10);
  core.tick(20);
  assert.equal(lastInput().ack.tick, 102);

  core.restartSession(5000);
  assert.equal(core.stateAt(102), null);
  assert.equal(core.latest().tick, 102, 'the newest state stays readable');
  assert.equal(drain().length, 0, 'queued output dropped');
  core.tick(5020);
  assert.equal(lastInput().ack, null, 'nothing acked before the new session\'s first snapshot');
  core.tick(5040);
  assert.equal(drain().filter((o) => o.channel === 'control').length, 0, 'no clock requests before the new hello');

  core.onControl(JSON.stringify({ ...HELLO, tick: 400 }), 5050);
  const clock = drain().filter((o) => o.channel === 'control').map((o) => JSON.parse(o.data));
  assert.equal(clock.length, 1);
  assert.equal(clock[0].type, 'clock');
  assert.equal(core.onSnapshot(snapshot(402, 40), 5060), 'applied');
  core.tick(5080);
  assert.equal(lastInput().ack.tick, 402);
  assert.equal(core.counters.sessionRestarts, 1);
});
