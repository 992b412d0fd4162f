// GameSession (the driver of rtcrelay-game.js) over RtcRelay in Node, with
// scripted fakes for WebSocket, RTCPeerConnection and the DataChannels: the
// join kind, the hello wait, unframed server messages, inputs and clock
// requests on the timer, event acks, close.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

class FakeWebSocket {
  static OPEN = 1;
  static CONNECTING = 0;
  static last = null;

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.last = this;
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? '' }), 1);
  }

  open() {
    this.readyState = 1;
    this.onopen?.();
  }

  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
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
  static last = null;

  constructor(config) {
    this.config = config;
    this.channels = [];
    this.connectionState = 'new';
    FakePeerConnection.last = this;
  }

  createDataChannel(label, init = {}) {
    const dc = new FakeDataChannel(label, init);
    this.channels.push(dc);
    return dc;
  }

  async createOffer() {
    return { type: 'offer', sdp: 'v=0 fake' };
  }

  async setLocalDescription(desc) {
    this.localDescription = desc;
  }

  async setRemoteDescription(desc) {
    this.remoteDescription = desc;
  }

  async addIceCandidate() {}

  close() {
    this.connectionState = 'closed';
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.RTCPeerConnection = FakePeerConnection;

const { RtcRelay, RtcRelayError, SERVER_PEER } = await import('./rtcrelay.js');
const { GameSession } = await import('./rtcrelay-game.js');
const { decodeInput, encodeSnapshot, stateFromEntities } = await import('./rtcrelay-codec.js');

const turn = () => new Promise((r) => setTimeout(r, 0));

// Waits until cond() is truthy and returns its value; `what` names the wait.
// Bounded by the test runner's own timeout, not by a clock here.
async function until(what, cond) {
  for (;;) {
    const value = cond();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 2));
  }
}

const HELLO = {
  type: 'hello',
  game: 'dizolaur',
  tick_rate: 60,
  snapshot_rate: 30,
  input_size: 1,
  max_input_lead: 60,
  max_rewind: 8,
  tick: 600,
  server_time_ms: 10000,
  entity: 2,
};

/** Drives the signaling to "ready"; returns {ws, pc, realtime, control}. */
async function handshake(kind = 'authoritative') {
  const ws = await until('websocket', () => FakeWebSocket.last);
  ws.open();
  ws.push({ type: 'welcome', version: 1, peer_id: 9, room: 'g1', kind, capacity: 4, roster: [], ice_servers: [] });
  const pc = await until('peer connection', () => FakePeerConnection.last);
  await turn();
  ws.push({ type: 'answer', sdp: 'v=0 answer' });
  await turn();
  for (const dc of pc.channels) dc.open();
  ws.push({ type: 'ready', realtime: { ordered: false, max_retransmits: 0 }, control: { ordered: true } });
  const [realtime, control] = pc.channels;
  return { ws, pc, realtime, control };
}

beforeEach(() => {
  FakeWebSocket.last = null;
  FakePeerConnection.last = null;
});

test('GameSession.connect joins an authoritative room and resolves on the hello; the session runs', async () => {
  const promise = GameSession.connect({ url: 'ws://server/ws', room: 'g1', name: 'ada', predictor: { step: (f, x) => Int32Array.of(f[0] + x) } });
  const { ws, realtime, control } = await handshake();
  assert.deepEqual(ws.sent[0], { type: 'join', version: 1, room: 'g1', kind: 'authoritative', name: 'ada' });
  // The server's messages come unframed: JSON text on control.
  control.deliver(JSON.stringify(HELLO));
  const session = await promise;
  assert.equal(session.hello.game, 'dizolaur');
  assert.equal(session.entity, 2);
  assert.equal(session.peerId, 9);
  assert.equal(session.relay.kind, 'authoritative');

  // Clock requests and input datagrams go out on the timer.
  session.setInput(1);
  await until('inputs', () => realtime.sent.length >= 3);
  const clock = JSON.parse(control.sent[0]);
  assert.equal(clock.type, 'clock');
  assert.equal(clock.id, 1);
  const d = decodeInput(realtime.sent[realtime.sent.length - 1]);
  assert.equal(d.inputSize, 1);
  assert.ok(d.firstTick > 600, `first tick ${d.firstTick}`);
  assert.equal(d.inputs[d.inputs.length - 1], 1);

  // A snapshot (raw 0x03 frame on realtime) is applied and predicted from.
  const snaps = [];
  session.addEventListener('snapshot', (e) => snaps.push(e.detail.tick));
  realtime.deliver(encodeSnapshot({ tick: 602, current: stateFromEntities([{ id: 2, kind: 1, fields: [40] }]) }).bytes);
  assert.deepEqual(snaps, [602]);
  assert.equal(session.latest().tick, 602);
  assert.ok(session.predicted()[0] >= 40);
  await until('acked', () => decodeInput(realtime.sent[realtime.sent.length - 1]).ack?.tick === 602);

  // Events: dispatched once, acked every time.
  const events = [];
  session.addEventListener('event', (e) => events.push(e.detail));
  const ev = JSON.stringify({ type: 'event', id: 1, tick: 610, event: { type: 'match_start' } });
  control.deliver(ev);
  control.deliver(ev);
  assert.deepEqual(events, [{ id: 1, tick: 610, event: { type: 'match_start' } }]);
  const acks = control.sent.map((t) => JSON.parse(t)).filter((m) => m.type === 'event_ack');
  assert.deepEqual(acks, [
    { type: 'event_ack', id: 1 },
    { type: 'event_ack', id: 1 },
  ]);

  session.command({ start: { bots: true } });
  await until('command', () => control.sent.some((t) => JSON.parse(t).type === 'command'));

  const closes = [];
  session.addEventListener('close', (e) => closes.push(e.detail.reason));
  session.close();
  session.close();
  assert.deepEqual(closes, ['closed']);
  assert.equal(session.relay.state, 'closed');
  const sent = realtime.sent.length;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(realtime.sent.length, sent, 'the timer kept sending after close()');
});

test('authoritative RtcRelay: messages arrive unframed from the server (from 0), text and binary', async () => {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'g1', name: 'ada', kind: 'authoritative' });
  const { realtime, control } = await handshake();
  const relay = await promise;
  const got = [];
  relay.on('message', (m) => got.push(m));
  control.deliver('{"type":"stats","tick":1,"players":[]}');
  realtime.deliver([3, 1, 0, 0, 0, 1]);
  await turn();
  assert.equal(SERVER_PEER, 0);
  assert.deepEqual(got[0], { from: 0, channel: 'control', data: '{"type":"stats","tick":1,"players":[]}' });
  assert.equal(got[1].from, 0);
  assert.deepEqual([...new Uint8Array(got[1].data)], [3, 1, 0, 0, 0, 1]);
  relay.close();
});

test('GameSession refuses a relay room; a connection that closes before the hello rejects', async () => {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'r', name: 'ada' });
  await handshake('relay');
  const relay = await promise;
  assert.throws(() => new GameSession(relay), (e) => e instanceof RtcRelayError && e.code === 'bad_options');
  relay.close();

  FakeWebSocket.last = null;
  FakePeerConnection.last = null;
  const p2 = GameSession.connect({ url: 'ws://server/ws', room: 'g2', name: 'ada' });
  const { ws } = await handshake();
  await turn();
  ws.push({ type: 'peer_left', peer_id: 9, reason: 'disconnected' });
  await assert.rejects(p2, (e) => e instanceof RtcRelayError);
});

test('GameSession.connect rejects with "timeout" when no hello comes', async () => {
  const p = GameSession.connect({ url: 'ws://server/ws', room: 'g3', name: 'ada', helloTimeoutMs: 30 });
  await handshake();
  await assert.rejects(p, (e) => e.code === 'timeout');
});
