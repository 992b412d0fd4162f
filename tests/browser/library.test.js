// Unit tests of web/client/rtcrelay.js in Node, without a browser or server:
// WebSocket and RTCPeerConnection are replaced by scripted fakes, so the
// signaling order, frame decoding and error paths are checked exactly.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static last = null;

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    FakeWebSocket.last = this;
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSING;
    // The close handshake completes later, as with a real server.
    setTimeout(() => {
      this.readyState = FakeWebSocket.CLOSED;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? '' });
    }, 5);
  }

  // Server side of the script.
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }

  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  drop(code = 1006) {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason: '' });
  }
}

class FakeDataChannel {
  constructor(label, init) {
    this.label = label;
    this.init = init;
    this.readyState = 'connecting';
    this.binaryType = 'blob';
    this.bufferedAmount = 0;
    this.sent = [];
  }

  send(data) {
    this.sent.push(data);
  }

  open() {
    this.readyState = 'open';
    this.onopen?.();
  }

  deliver(bytes) {
    this.onmessage?.({ data: new Uint8Array(bytes).buffer });
  }
}

class FakePeerConnection {
  static last = null;

  constructor(config) {
    this.config = config;
    this.channels = [];
    this.added = [];
    this.remoteDescription = null;
    this.connectionState = 'new';
    FakePeerConnection.last = this;
  }

  createDataChannel(label, init = {}) {
    const dc = new FakeDataChannel(label, init);
    this.channels.push(dc);
    return dc;
  }

  async createOffer() {
    return { type: 'offer', sdp: `v=0 fake offer with ${this.channels.length} channels` };
  }

  async setLocalDescription(desc) {
    this.localDescription = desc;
  }

  async setRemoteDescription(desc) {
    this.remoteDescription = desc;
  }

  async addIceCandidate(init) {
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.added.push(init);
  }

  async getStats() {
    return new Map([
      ['T1', { type: 'transport', selectedCandidatePairId: 'CP1' }],
      ['CP1', { type: 'candidate-pair', currentRoundTripTime: 0.0125 }],
    ]);
  }

  close() {
    this.connectionState = 'closed';
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.RTCPeerConnection = FakePeerConnection;

const { RtcRelay, RtcRelayError, decodeRelayed, turnTransportOf, LIMITS } = await import('../../web/client/rtcrelay.js');

const tick = () => new Promise((r) => setTimeout(r, 0));
const frame = (sender, text, payload) => {
  const bytes = typeof payload === 'string' ? [...new TextEncoder().encode(payload)] : payload;
  return [0x01, text ? 1 : 0, (sender >>> 24) & 255, (sender >>> 16) & 255, (sender >>> 8) & 255, sender & 255, ...bytes];
};

/** Drives a connect() through welcome and answer (the channels are not open
 *  yet). Returns { promise, ws, pc }. */
async function answered({ options = {}, roster = [], iceServers = [], candidates = [] } = {}) {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada', ...options });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ type: 'welcome', version: 1, peer_id: 7, room: 'r1', kind: 'relay', capacity: 4, roster, ice_servers: iceServers });
  await tick();
  const pc = FakePeerConnection.last;
  ws.push({ type: 'answer', sdp: 'v=0 answer' });
  for (const candidate of candidates) ws.push({ type: 'candidate', candidate, mid: '0' });
  await tick();
  return { promise, ws, pc };
}

/** Drives a connect() to "open". Returns { client, ws, pc }. */
async function connected(options = {}) {
  const { promise, ws, pc } = await answered({
    options,
    roster: [{ peer_id: 3, name: 'bob' }],
    iceServers: [{ urls: ['stun:x'] }],
    candidates: ['candidate:1 1 udp 1 127.0.0.1 3480 typ host', ''],
  });
  for (const dc of pc.channels) dc.open();
  ws.push({ type: 'ready', realtime: { ordered: false, max_retransmits: 0 }, control: { ordered: true } });
  const client = await promise;
  return { client, ws, pc };
}

beforeEach(() => {
  FakeWebSocket.last = null;
  FakePeerConnection.last = null;
});

test('connect: join, both channels before the offer, answer before candidates, ready', async () => {
  const { client, ws, pc } = await connected({ iceServers: [{ urls: ['turn:extra'], username: 'u', credential: 'c' }], capacity: 6 });
  assert.deepEqual(ws.sent[0], { type: 'join', version: 1, room: 'r1', kind: 'relay', name: 'ada', capacity: 6 });
  assert.equal(ws.sent[1].type, 'offer');
  assert.match(ws.sent[1].sdp, /2 channels/, 'both channels existed when the offer was made');
  assert.deepEqual(pc.config.iceServers, [{ urls: ['stun:x'] }, { urls: ['turn:extra'], username: 'u', credential: 'c' }]);
  const [rt, ctl] = pc.channels;
  assert.equal(rt.label, 'realtime');
  assert.deepEqual(rt.init, { ordered: false, maxRetransmits: 0 });
  assert.equal(ctl.label, 'control');
  assert.equal(ctl.init.ordered ?? true, true);
  assert.equal(ctl.init.maxRetransmits, undefined);
  assert.equal(rt.binaryType, 'arraybuffer');
  assert.equal(ctl.binaryType, 'arraybuffer');
  assert.deepEqual(pc.added[0], { candidate: 'candidate:1 1 udp 1 127.0.0.1 3480 typ host', sdpMid: '0' });
  assert.equal(client.state, 'open');
  assert.equal(client.peerId, 7);
  assert.equal(client.capacity, 4);
  assert.deepEqual([...client.roster.values()], [{ peerId: 3, name: 'bob' }]);
  assert.deepEqual(client.serverChannels.realtime, { ordered: false, max_retransmits: 0 });
  assert.equal(await client.rtt(), 12.5);
  client.close();
});

test('turnTransports keeps only the TURN URLs of those transports', async () => {
  assert.deepEqual(
    ['turn:h:1?transport=udp', 'turn:h:1', 'TURN:h:1?transport=TCP', 'turns:h:2?transport=tcp', 'turns:h:2', 'stun:h:3', 'turn:h:1?foo=1&transport=tcp'].map(turnTransportOf),
    ['udp', 'udp', 'tcp', 'tls', 'tls', null, 'tcp'],
  );
  const welcomeServers = [
    { urls: ['turn:h:1?transport=udp', 'turn:h:1?transport=tcp', 'turns:h:2?transport=tcp'], username: 'u', credential: 'c' },
    { urls: 'stun:h:3' },
  ];
  const only = async (turnTransports) => {
    const { promise, ws, pc } = await answered({ options: { turnTransports, iceServers: [{ urls: 'turn:extra?transport=udp' }] }, iceServers: welcomeServers });
    ws.push({ type: 'error', code: 'internal', message: 'done', fatal: false });
    await assert.rejects(promise, { code: 'internal' });
    return pc.config.iceServers;
  };
  assert.deepEqual(await only(['tcp']), [
    { urls: ['turn:h:1?transport=tcp'], username: 'u', credential: 'c' },
    { urls: ['stun:h:3'] },
  ]);
  assert.deepEqual(await only(['udp', 'tls']), [
    { urls: ['turn:h:1?transport=udp', 'turns:h:2?transport=tcp'], username: 'u', credential: 'c' },
    { urls: ['stun:h:3'] },
    { urls: ['turn:extra?transport=udp'] },
  ]);
  // Unset: everything, as given.
  assert.deepEqual(await only(undefined), [...welcomeServers, { urls: 'turn:extra?transport=udp' }]);
  for (const bad of ['tcp', ['dtls'], [1]]) {
    assert.throws(() => new RtcRelay({ url: 'ws://server/ws', room: 'r', name: 'n', turnTransports: bad }), { code: 'bad_options' });
  }
});

test('local candidates are trickled, end marker as ""', async () => {
  const { client, ws, pc } = await connected();
  pc.onicecandidate({ candidate: { candidate: 'candidate:9 1 udp 5 10.0.0.1 5000 typ host', sdpMid: '0' } });
  pc.onicecandidate({ candidate: null });
  assert.deepEqual(ws.sent.slice(-2), [
    { type: 'candidate', candidate: 'candidate:9 1 udp 5 10.0.0.1 5000 typ host', mid: '0' },
    { type: 'candidate', candidate: '' },
  ]);
  client.close();
});

test('messages decode from relayed frames; events raised while connecting are delivered after', async () => {
  const promise = connected();
  const { client, ws, pc } = await promise;
  const got = [];
  client.on('message', (m) => got.push(m));
  const joined = [];
  client.on('peerjoined', (p) => joined.push(p));
  pc.channels[1].deliver(frame(3, true, 'héllo'));
  pc.channels[0].deliver(frame(0xfffffffe, false, [1, 2, 3]));
  ws.push({ type: 'peer_joined', peer_id: 9, name: 'cy' });
  await tick();
  assert.equal(got.length, 2);
  assert.deepEqual(got[0], { from: 3, channel: 'control', data: 'héllo' });
  assert.equal(got[1].from, 0xfffffffe);
  assert.equal(got[1].channel, 'realtime');
  assert.ok(got[1].data instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(got[1].data)], [1, 2, 3]);
  assert.deepEqual(joined, [{ peerId: 9, name: 'cy' }]);
  assert.equal(client.roster.get(9).name, 'cy');
  client.close();
});

test('an early message (before connect resolved) reaches a listener added after await', async () => {
  const { promise, ws, pc } = await answered();
  for (const dc of pc.channels) dc.open();
  pc.channels[1].deliver(frame(3, true, 'early bird'));
  ws.push({ type: 'ready', realtime: { ordered: false, max_retransmits: 0 }, control: { ordered: true } });
  const client = await promise;
  const got = [];
  client.on('message', (m) => got.push(m.data));
  await tick();
  assert.deepEqual(got, ['early bird']);
  client.close();
});

test('bad frames become error events, not messages', async () => {
  const { client, pc } = await connected();
  await tick();
  const errors = [];
  const messages = [];
  client.on('error', (e) => errors.push(e.code));
  client.on('message', (m) => messages.push(m));
  pc.channels[1].deliver([]);
  pc.channels[1].deliver([0x09, 0, 0, 0, 0, 1]);
  pc.channels[1].deliver([0x01, 0, 0]);
  pc.channels[1].deliver([0x01, 0x02, 0, 0, 0, 1]);
  pc.channels[1].deliver([0x01, 0x01, 0, 0, 0, 1, 0xff]);
  pc.channels[1].onmessage({ data: 'plain text' });
  assert.deepEqual(errors, Array(6).fill('bad_frame'));
  assert.equal(messages.length, 0);
  client.close();
});

test('decodeRelayed matches the protocol vectors', () => {
  const f = decodeRelayed(new Uint8Array([0x01, 0x01, 0xa1, 0xb2, 0xc3, 0xd4, ...new TextEncoder().encode('héllo')]));
  assert.equal(f.from, 0xa1b2c3d4);
  assert.equal(f.text, true);
  assert.equal(new TextDecoder().decode(f.payload), 'héllo');
  // A view into a bigger buffer decodes only its own bytes.
  const big = new Uint8Array([9, 9, 0x01, 0x00, 0, 0, 0, 5, 42, 9]);
  const g = decodeRelayed(big.subarray(2, 9));
  assert.equal(g.from, 5);
  assert.deepEqual([...g.payload], [42]);
  assert.deepEqual([...decodeRelayed(new Uint8Array([1, 0, 0, 0, 0, 1])).payload], []);
  for (const bad of [[], [9, 0, 0, 0, 0, 0], [1, 0, 0], [1, 2, 0, 0, 0, 1]]) {
    assert.throws(() => decodeRelayed(new Uint8Array(bad)), (e) => e instanceof RtcRelayError && e.code === 'bad_frame');
  }
});

test('send: checks channel, size and type; views send only their bytes', async () => {
  const { client, pc } = await connected();
  const [rt, ctl] = pc.channels;
  assert.equal(client.send('control', 'hi'), true);
  assert.equal(ctl.sent[0], 'hi');
  const backing = new Uint8Array([0, 1, 2, 3, 4]);
  client.send('realtime', backing.subarray(1, 3));
  assert.deepEqual([...rt.sent[0]], [1, 2]);
  assert.throws(() => client.send('realtime', new Uint8Array(LIMITS.realtime + 1)), { code: 'message_too_large' });
  assert.throws(() => client.send('control', 'x'.repeat(LIMITS.control + 1)), { code: 'message_too_large' });
  assert.throws(() => client.send('bogus', 'x'), { code: 'bad_channel' });
  assert.throws(() => client.send('control', 42), TypeError);
  rt.bufferedAmount = 1 << 20;
  assert.equal(client.send('realtime', 'late'), false, 'backed-up realtime drops');
  client.close();
  assert.throws(() => client.send('control', 'x'), { code: 'not_open' });
});

test('a server error while connecting rejects with its code', async () => {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada' });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ type: 'error', code: 'room_full', message: 'room r1 is full (4/4)', fatal: false });
  await assert.rejects(promise, (e) => e instanceof RtcRelayError && e.code === 'room_full' && /full/.test(e.message));
  assert.notEqual(ws.readyState, FakeWebSocket.OPEN);
});

test('channel_rejected while connecting beats the channel close', async () => {
  const { promise, ws, pc } = await answered();
  pc.channels[0].onclose();
  ws.push({ type: 'error', code: 'channel_rejected', message: 'realtime must be unordered', fatal: false });
  await assert.rejects(promise, { code: 'channel_rejected' });
});

test('signaling closing while connecting rejects; after, emits close', async () => {
  const p1 = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada' });
  FakeWebSocket.last.drop(1006);
  await assert.rejects(p1, { code: 'signaling_failed' }, 'never opened: cannot connect');
  const p2 = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada' });
  FakeWebSocket.last.open();
  FakeWebSocket.last.drop(1006);
  await assert.rejects(p2, { code: 'signaling_closed' });

  const { client, ws } = await connected();
  await tick();
  const closes = [];
  client.on('close', (c) => closes.push(c.reason));
  ws.drop(1001);
  await tick();
  assert.deepEqual(closes, ['signaling_closed']);
  assert.equal(client.state, 'closed');
});

test('ping measures the signaling round trip; peer_left of self closes', async () => {
  const { client, ws } = await connected();
  await tick();
  const rtt = client.ping();
  const ping = ws.sent.at(-1);
  assert.equal(ping.type, 'ping');
  ws.push({ type: 'pong', id: ping.id });
  assert.ok((await rtt) >= 0);
  assert.equal(client.signalingRtt, await rtt);

  const left = [];
  client.on('peerleft', (p) => left.push(p));
  ws.push({ type: 'peer_left', peer_id: 3, reason: 'disconnected' });
  await tick();
  assert.deepEqual(left, [{ peerId: 3, name: 'bob', reason: 'disconnected' }]);
  assert.equal(client.roster.size, 0);

  const closes = [];
  client.on('close', (c) => closes.push(c.reason));
  ws.push({ type: 'peer_left', peer_id: 7, reason: 'disconnected' });
  await tick();
  assert.deepEqual(closes, ['disconnected']);
});

test('leave sends leave, then closes', async () => {
  const { client, ws, pc } = await connected();
  await tick();
  client.leave();
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  assert.equal(client.state, 'closed');
  // The peer connection outlives the WebSocket close handshake, so the
  // server sees "leave" and the close before any DTLS close.
  assert.equal(ws.readyState, FakeWebSocket.CLOSING);
  assert.notEqual(pc.connectionState, 'closed');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(ws.readyState, FakeWebSocket.CLOSED);
  assert.equal(pc.connectionState, 'closed');
  client.leave();
  client.close();
});

test('connect times out', async () => {
  const p = RtcRelay.connect({ url: 'ws://server/ws', room: 'r1', name: 'ada', timeoutMs: 20 });
  await assert.rejects(p, { code: 'timeout' });
});

test('a closed channel waits for the server\'s peer_left before closing', async () => {
  const { client, ws, pc } = await connected();
  await tick();
  const closes = [];
  client.on('close', (c) => closes.push(c.reason));
  pc.channels[0].onclose();
  pc.channels[1].onclose();
  await tick();
  assert.equal(client.state, 'open', 'still open during the grace period');
  ws.push({ type: 'peer_left', peer_id: 7, reason: 'disconnected' });
  await tick();
  assert.deepEqual(closes, ['disconnected']);
});
