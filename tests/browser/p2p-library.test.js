// Unit tests of the p2p-room side of web/client/rtcrelay.js in Node, without a
// browser or server: WebSocket and RTCPeerConnection are scripted fakes, so
// who offers, what is signalled to whom and when connect() settles are
// checked exactly. (tests/browser/p2p.test.js runs the real thing.)
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
    setTimeout(() => {
      this.readyState = FakeWebSocket.CLOSED;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? '' });
    }, 5);
  }

  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }

  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  /** The signals sent so far, as [to, data]. */
  signals() {
    return this.sent.filter((m) => m.type === 'signal').map((m) => [m.to, m.data]);
  }
}

class FakeDataChannel {
  constructor(label, init = {}) {
    this.label = label;
    this.ordered = init.ordered ?? true;
    this.maxRetransmits = init.maxRetransmits ?? null;
    this.maxPacketLifeTime = init.maxPacketLifeTime ?? null;
    this.readyState = 'connecting';
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

  close() {
    this.readyState = 'closed';
    this.onclose?.();
  }
}

class FakePeerConnection {
  static all = [];

  constructor(config) {
    this.config = config;
    this.channels = [];
    this.added = [];
    this.remoteDescription = null;
    this.localDescription = null;
    this.connectionState = 'new';
    FakePeerConnection.all.push(this);
  }

  createDataChannel(label, init = {}) {
    const dc = new FakeDataChannel(label, init);
    this.channels.push(dc);
    return dc;
  }

  async createOffer() {
    return { type: 'offer', sdp: `offer with ${this.channels.length} channels` };
  }

  async createAnswer() {
    return { type: 'answer', sdp: `answer to ${this.remoteDescription.sdp}` };
  }

  async setLocalDescription(desc) {
    this.localDescription = desc;
  }

  async setRemoteDescription(desc) {
    if (desc.sdp === 'bad') throw new Error('SyntaxError: bad sdp');
    this.remoteDescription = desc;
  }

  async addIceCandidate(init) {
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.added.push(init);
  }

  close() {
    this.connectionState = 'closed';
  }

  // Script helpers.
  announce(label, init) {
    const dc = new FakeDataChannel(label, init);
    this.channels.push(dc);
    this.ondatachannel?.({ channel: dc });
    return dc;
  }

  setState(state) {
    this.connectionState = state;
    this.onconnectionstatechange?.();
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.RTCPeerConnection = FakePeerConnection;

const { RtcRelay } = await import('../../web/client/rtcrelay.js');

const tick = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 0));
};

const CANDIDATE = { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };

/** Starts a p2p connect() through welcome. Returns { promise, ws }. */
async function welcomed({ roster = [], iceServers = [], options = {} } = {}) {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'm', name: 'ada', kind: 'p2p', ...options });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ type: 'welcome', version: 1, peer_id: 7, room: 'm', kind: 'p2p', capacity: 4, roster, ice_servers: iceServers });
  await tick();
  return { promise, ws };
}

beforeEach(() => {
  FakeWebSocket.last = null;
  FakePeerConnection.all = [];
});

test('alone in a p2p room: open at once, no peer connection, sends go nowhere', async () => {
  const { promise, ws } = await welcomed();
  const client = await promise;
  assert.deepEqual(ws.sent, [{ type: 'join', version: 1, room: 'm', kind: 'p2p', name: 'ada' }]);
  assert.equal(client.state, 'open');
  assert.equal(client.connectionState, 'connected');
  assert.equal(client.peerConnection, null);
  assert.equal(FakePeerConnection.all.length, 0);
  assert.equal(client.send('control', 'hello?'), true);
  assert.throws(() => client.sendTo(3, 'control', 'x'), { code: 'not_open' });
  assert.throws(() => client.send('voice', 'x'), { code: 'bad_channel' });
  client.close();
});

test('the newcomer offers to each roster member and opens once all are connected', async () => {
  const { promise, ws } = await welcomed({
    roster: [{ peer_id: 3, name: 'bob' }, { peer_id: 5, name: 'cy' }],
    iceServers: [{ urls: ['stun:x'] }],
    options: { iceServers: [{ urls: ['turn:extra'], username: 'u', credential: 'c' }], iceTransportPolicy: 'relay' },
  });
  let settled = false;
  promise.then(() => (settled = true), () => (settled = true));
  const [pc3, pc5] = FakePeerConnection.all;
  for (const pc of [pc3, pc5]) {
    assert.deepEqual(pc.config, { iceServers: [{ urls: ['stun:x'] }, { urls: ['turn:extra'], username: 'u', credential: 'c' }], iceTransportPolicy: 'relay' });
    assert.deepEqual(pc.channels.map((c) => [c.label, c.ordered, c.maxRetransmits]), [['realtime', false, 0], ['control', true, null]]);
  }
  // Both channels existed before the offers; one offer per member, in roster order.
  assert.deepEqual(ws.signals(), [
    [3, { description: { type: 'offer', sdp: 'offer with 2 channels' } }],
    [5, { description: { type: 'offer', sdp: 'offer with 2 channels' } }],
  ]);

  // Local candidates are trickled to the right member.
  pc5.onicecandidate({ candidate: { candidate: CANDIDATE.candidate, toJSON: () => CANDIDATE } });
  pc5.onicecandidate({ candidate: null });
  assert.deepEqual(ws.signals().slice(2), [[5, { candidate: CANDIDATE }]]);

  // A candidate before the answer waits for it; the answer is applied first.
  ws.push({ type: 'signal', from: 3, data: { candidate: CANDIDATE } });
  ws.push({ type: 'signal', from: 3, data: { description: { type: 'answer', sdp: 'answer-3' } } });
  ws.push({ type: 'signal', from: 5, data: { description: { type: 'answer', sdp: 'answer-5' } } });
  await tick();
  assert.deepEqual(pc3.remoteDescription, { type: 'answer', sdp: 'answer-3' });
  assert.deepEqual(pc3.added, [CANDIDATE]);

  for (const dc of pc3.channels) dc.open();
  pc3.setState('connected');
  await tick();
  assert.equal(settled, false, 'still waiting for cy');
  assert.equal(pc5.connectionState, 'new');
  for (const dc of pc5.channels) dc.open();
  pc5.setState('connected');
  const client = await promise;
  assert.equal(client.state, 'open');
  assert.equal(client.connectionState, 'connected');
  assert.deepEqual(client.connectedPeers, [3, 5]);
  assert.equal(client.peerState(3), 'open');
  assert.equal(client.peerConnectionTo(5), pc5);
  assert.equal(client.channel('control', 3), pc3.channels[1]);

  // Broadcast and addressed sends; messages carry the member's id.
  const got = [];
  client.on('message', (m) => got.push(m));
  assert.equal(client.send('control', 'all'), true);
  assert.equal(client.sendTo(5, 'realtime', 'only cy'), true);
  assert.deepEqual(pc3.channels.map((c) => c.sent), [[], ['all']]);
  assert.deepEqual(pc5.channels.map((c) => c.sent), [['only cy'], ['all']]);
  await tick(); // events go live just after connect() resolves
  pc3.channels[1].onmessage({ data: 'hi from bob' });
  pc5.channels[0].onmessage({ data: new Uint8Array([1, 2]).buffer });
  assert.deepEqual(got.map((m) => [m.from, m.channel, typeof m.data]), [[3, 'control', 'string'], [5, 'realtime', 'object']]);

  // A backed-up realtime buffer to one member: dropped there, sent elsewhere.
  pc3.channels[0].bufferedAmount = 1 << 20;
  assert.equal(client.send('realtime', 'x'), false);
  assert.deepEqual(pc5.channels[0].sent, ['only cy', 'x']);
  client.close();
});

test('an existing member answers a newcomer, which it heard of first', async () => {
  const { promise, ws } = await welcomed();
  const client = await promise;
  const events = [];
  for (const type of ['peerjoined', 'peerstatechange', 'peerleft']) client.on(type, (d) => events.push({ type, ...d }));

  ws.push({ type: 'peer_joined', peer_id: 9, name: 'newbie' });
  ws.push({ type: 'signal', from: 9, data: { description: { type: 'offer', sdp: 'offer-9' } } });
  ws.push({ type: 'signal', from: 9, data: { candidate: CANDIDATE } });
  await tick();
  const [pc] = FakePeerConnection.all;
  assert.equal(pc.channels.length, 0, 'the answerer opens no channels itself');
  assert.deepEqual(pc.remoteDescription, { type: 'offer', sdp: 'offer-9' });
  assert.deepEqual(pc.added, [CANDIDATE]);
  assert.deepEqual(ws.signals(), [[9, { description: { type: 'answer', sdp: 'answer to offer-9' } }]]);

  const rt = pc.announce('realtime', { ordered: false, maxRetransmits: 0 });
  const ctl = pc.announce('control');
  rt.open();
  assert.equal(client.peerState(9), 'connecting');
  ctl.open();
  assert.equal(client.peerState(9), 'open');
  assert.deepEqual(client.connectedPeers, [9]);

  // The member leaves: its connection is torn down before peerleft.
  ws.push({ type: 'peer_left', peer_id: 9, reason: 'left' });
  await tick();
  assert.equal(pc.connectionState, 'closed');
  assert.equal(client.peerConnectionTo(9), null);
  assert.throws(() => client.sendTo(9, 'control', 'x'), { code: 'not_open' });
  assert.deepEqual(events.map((e) => [e.type, e.state ?? e.reason ?? e.name]), [
    ['peerjoined', 'newbie'],
    ['peerstatechange', 'connecting'],
    ['peerstatechange', 'open'],
    ['peerstatechange', 'closed'],
    ['peerleft', 'left'],
  ]);
  // Signals from someone not in the room are ignored.
  ws.push({ type: 'signal', from: 9, data: { description: { type: 'offer', sdp: 'late' } } });
  await tick();
  assert.equal(FakePeerConnection.all.length, 1);
  client.close();
});

test('a member opening channels with wrong parameters is refused', async () => {
  const { promise, ws } = await welcomed();
  const client = await promise;
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  ws.push({ type: 'peer_joined', peer_id: 9, name: 'odd' });
  ws.push({ type: 'signal', from: 9, data: { description: { type: 'offer', sdp: 'offer-9' } } });
  await tick();
  const [pc] = FakePeerConnection.all;
  pc.announce('realtime', { ordered: true });
  assert.deepEqual(errors, ['channel_rejected']);
  assert.equal(pc.connectionState, 'closed');
  assert.equal(client.peerState(9), null);
  // A broken signal is an error event, not a failure of the client.
  ws.push({ type: 'peer_joined', peer_id: 11, name: 'bad' });
  ws.push({ type: 'signal', from: 11, data: { description: { type: 'offer', sdp: 'bad' } } });
  await tick();
  assert.deepEqual(errors, ['channel_rejected', 'bad_signal']);
  assert.equal(client.state, 'open');
  client.close();
});

test('a roster member leaving while we connect does not block connect()', async () => {
  const { promise, ws } = await welcomed({ roster: [{ peer_id: 3, name: 'bob' }, { peer_id: 5, name: 'cy' }] });
  const [pc3] = FakePeerConnection.all;
  ws.push({ type: 'signal', from: 3, data: { description: { type: 'answer', sdp: 'answer-3' } } });
  await tick();
  for (const dc of pc3.channels) dc.open();
  // Cy leaves: our candidates to her may still be refused as peer_not_found.
  ws.push({ type: 'error', code: 'peer_not_found', message: 'signal: peer 5 is not in room m', fatal: false });
  ws.push({ type: 'peer_left', peer_id: 5, reason: 'left' });
  const client = await promise;
  assert.deepEqual(client.connectedPeers, [3]);
  assert.equal(FakePeerConnection.all[1].connectionState, 'closed');
  client.close();
});

test('a failed connection to a member who stays rejects connect() with ice_failed', async () => {
  const { promise, ws } = await welcomed({ roster: [{ peer_id: 3, name: 'bob' }] });
  const [pc] = FakePeerConnection.all;
  pc.setState('failed');
  await assert.rejects(promise, { code: 'ice_failed' });
  assert.equal(pc.connectionState, 'closed');
  assert.equal(ws.closedWith.code, 1000);
});

test('after connect, a broken member connection is an error event only if the member stays', async () => {
  const { promise, ws } = await welcomed({ roster: [{ peer_id: 3, name: 'bob' }, { peer_id: 5, name: 'cy' }] });
  for (const [i, pc] of FakePeerConnection.all.entries()) {
    ws.push({ type: 'signal', from: [3, 5][i], data: { description: { type: 'answer', sdp: 'a' } } });
    await tick();
    for (const dc of pc.channels) dc.open();
  }
  const client = await promise;
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const [pc3, pc5] = FakePeerConnection.all;
  pc3.channels[1].close(); // bob's side went away, and he is leaving
  pc5.channels[1].close(); // cy's broke, and she stays
  ws.push({ type: 'peer_left', peer_id: 3, reason: 'left' });
  await new Promise((r) => setTimeout(r, 2200));
  assert.deepEqual(errors.map((e) => [e.code, e.message]), [['channel_closed', 'DataChannel control to peer 5 closed']]);
  assert.equal(client.state, 'open');
  assert.deepEqual(client.connectedPeers, []);
  client.close();
});

test('relay rooms are unchanged: sendTo is refused', async () => {
  const promise = RtcRelay.connect({ url: 'ws://server/ws', room: 'r', name: 'ada' });
  const ws = FakeWebSocket.last;
  ws.open();
  ws.push({ type: 'welcome', version: 1, peer_id: 7, room: 'r', kind: 'relay', capacity: 4, roster: [], ice_servers: [] });
  await tick();
  const [pc] = FakePeerConnection.all;
  assert.equal(ws.sent[1].type, 'offer');
  ws.push({ type: 'answer', sdp: 'a' });
  for (const dc of pc.channels) dc.open();
  ws.push({ type: 'ready', realtime: { ordered: false, max_retransmits: 0 }, control: { ordered: true } });
  const client = await promise;
  assert.equal(client.peerConnection, pc);
  assert.throws(() => client.sendTo(3, 'control', 'x'), { code: 'wrong_room_kind' });
  client.close();
});
