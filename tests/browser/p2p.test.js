// Peer-to-peer rooms: Chromium pages join a `p2p` room on the real server,
// connect to each other directly (one RTCPeerConnection per member, offers,
// answers and candidates forwarded by signaling) and talk on both channels.
// The server peer never takes part. "realtime" delivery is checked as a ratio
// over paced sends (it is unreliable by design).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, TEST_TIMEOUT_MS } from './helpers.js';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Runs a test body; on failure appends the server's and the pages' logs. */
function withLogs(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      e.message += `\n--- server stderr (tail) ---\n${server?.logs().slice(-8000)}\n--- browser console ---\n${browser?.consoleLines.slice(-80).join('\n')}`;
      throw e;
    }
  };
}

/** A page with the library loaded, on the server's origin. */
async function libraryPage() {
  const page = await browser.newPage();
  await page.goto(server.chatUrl);
  await page.waitForSelector('body[data-ready="true"]');
  await page.evaluate(async () => {
    window.p2p = { module: await import('/client/rtcrelay.js'), client: null, received: [], events: [], errors: [] };
  });
  return page;
}

/**
 * Connects the page's client to a p2p room and records what it hears in
 * window.p2p (messages with binary data as arrays of bytes). Returns its peer id.
 */
async function join(page, room, name, options = {}) {
  return page.evaluate(async ({ room, name, options }) => {
    const p = window.p2p;
    const client = await p.module.RtcRelay.connect({ room, name, kind: 'p2p', ...options });
    p.client = client;
    client.on('message', ({ from, channel, data }) => {
      p.received.push({ from, channel, data: typeof data === 'string' ? data : Array.from(new Uint8Array(data)) });
    });
    for (const type of ['peerjoined', 'peerleft', 'peerstatechange', 'statechange', 'close']) {
      client.on(type, ({ error, ...detail }) => p.events.push({ type, ...detail, ...(error ? { error: error.code } : {}) }));
    }
    client.on('error', (e) => p.errors.push(e));
    return client.peerId;
  }, { room, name, options });
}

const received = (page, filter = {}) =>
  page.evaluate((f) => window.p2p.received.filter((m) => (!f.channel || m.channel === f.channel) && (f.from === undefined || m.from === f.from)
    && (!f.prefix || (typeof m.data === 'string' && m.data.startsWith(f.prefix)))), filter);

const connectedPeers = (page) => page.evaluate(() => window.p2p.client.connectedPeers.slice().sort((a, b) => a - b));

/** Sends `count` messages `${prefix}${i}` from a page, `gapMs` apart; returns how many were queued everywhere. */
const sendPaced = (page, channel, prefix, count, gapMs, to) =>
  page.evaluate(
    async ({ channel, prefix, count, gapMs, to }) => {
      const c = window.p2p.client;
      let queued = 0;
      for (let i = 0; i < count; i++) {
        const ok = to === undefined ? c.send(channel, `${prefix}${i}`) : c.sendTo(to, channel, `${prefix}${i}`);
        if (ok) queued++;
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      return queued;
    },
    { channel, prefix, count, gapMs, to },
  );

/** Waits until `count` control messages with `prefix` from `from` arrived, and checks their order. */
async function expectControl(page, from, prefix, count) {
  const got = await waitFor(async () => {
    const msgs = await received(page, { channel: 'control', from, prefix });
    return msgs.length >= count ? msgs : null;
  }, { message: `${count} control messages ${prefix} from ${from}` });
  assert.deepEqual(got.map((m) => m.data), Array.from({ length: count }, (_, i) => `${prefix}${i}`));
}

/** Waits until realtime arrivals with `prefix` stop growing; returns the count (no duplicates allowed). */
async function settledRealtime(page, from, prefix, sent) {
  let count = -1;
  await waitFor(async () => {
    const now = (await received(page, { channel: 'realtime', from, prefix })).length;
    const settled = now === count || now === sent;
    count = now;
    return settled && now > 0;
  }, { intervalMs: 500, message: `realtime ${prefix} settles` });
  const msgs = await received(page, { channel: 'realtime', from, prefix });
  assert.equal(new Set(msgs.map((m) => m.data)).size, msgs.length, 'no duplicates');
  return count;
}

/** The remote address of the selected ICE candidate pair of the page's connection to `peerId`. */
const selectedRemote = (page, peerId) =>
  page.evaluate(async (id) => {
    const pc = window.p2p.client.peerConnectionTo(id);
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    const remote = pair && stats.get(pair.remoteCandidateId);
    return remote ? { address: remote.address ?? remote.ip, port: remote.port, type: remote.candidateType } : null;
  }, peerId);

async function metric(name) {
  const text = await (await fetch(new URL('/metrics', server.demoUrl))).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

test('two pages in a p2p room talk directly on both channels', { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
  const room = 'p2p-two';
  const alice = await libraryPage();
  const bob = await libraryPage();
  const signalsBefore = await metric('rtcrelay_signaling_signals_forwarded_total');

  // Alone in the room, alice is open at once.
  const aliceId = await join(alice, room, 'alice');
  assert.deepEqual(await alice.evaluate(() => ({
    state: window.p2p.client.state, kind: window.p2p.client.kind, roster: window.p2p.client.roster.size,
    peers: window.p2p.client.connectedPeers, pc: window.p2p.client.peerConnection,
  })), { state: 'open', kind: 'p2p', roster: 0, peers: [], pc: null });

  // Bob's connect() resolves once his connection to alice is open.
  const bobId = await join(bob, room, 'bob');
  assert.notEqual(aliceId, bobId);
  assert.deepEqual(await bob.evaluate(() => [...window.p2p.client.roster.values()]), [{ peerId: aliceId, name: 'alice' }]);
  assert.deepEqual(await connectedPeers(bob), [aliceId]);
  assert.equal(await bob.evaluate((id) => window.p2p.client.peerState(id), aliceId), 'open');
  // Alice hears bob join, then her answering side opens too.
  await waitFor(async () => (await connectedPeers(alice)).includes(bobId), { message: 'alice connected to bob' });
  const aliceEvents = await alice.evaluate(() => window.p2p.events.filter((e) => e.type !== 'statechange'));
  assert.deepEqual(aliceEvents[0], { type: 'peerjoined', peerId: bobId, name: 'bob' });
  assert.ok(aliceEvents.some((e) => e.type === 'peerstatechange' && e.peerId === bobId && e.state === 'open'), JSON.stringify(aliceEvents));

  // Both ends have the protocol's two channels with their parameters.
  for (const [page, other] of [[alice, bobId], [bob, aliceId]]) {
    const params = await page.evaluate((id) => {
      const c = window.p2p.client;
      const p = (dc) => ({ label: dc.label, ordered: dc.ordered, maxRetransmits: dc.maxRetransmits, state: dc.readyState });
      return { realtime: p(c.channel('realtime', id)), control: p(c.channel('control', id)), noPeer: c.channel('control') };
    }, other);
    assert.deepEqual(params.realtime, { label: 'realtime', ordered: false, maxRetransmits: 0, state: 'open' });
    assert.deepEqual(params.control, { label: 'control', ordered: true, maxRetransmits: null, state: 'open' });
    assert.equal(params.noPeer, null);
  }

  // The connection is direct: the selected pair's remote is the other
  // browser, not the relay's UDP socket; the server peer has no session.
  const remote = await selectedRemote(bob, aliceId);
  t.diagnostic(`bob → alice selected remote candidate: ${JSON.stringify(remote)}`);
  assert.ok(remote, 'a selected candidate pair');
  assert.notEqual(`${remote.address}:${remote.port}`, server.relayAddr);
  assert.equal(await metric('rtcrelay_relay_sessions'), 0);
  const forwarded = (await metric('rtcrelay_signaling_signals_forwarded_total')) - signalsBefore;
  t.diagnostic(`signals forwarded for one pair: ${forwarded}`);
  assert.ok(forwarded >= 2, `offer and answer at least: ${forwarded}`);

  // Control: reliable and ordered, both ways.
  const N = 50;
  await Promise.all([sendPaced(alice, 'control', 'a-c-', N, 0), sendPaced(bob, 'control', 'b-c-', N, 0)]);
  await expectControl(bob, aliceId, 'a-c-', N);
  await expectControl(alice, bobId, 'b-c-', N);

  // Binary arrives as the same bytes; the largest payloads fit.
  await bob.evaluate(() => {
    const c = window.p2p.client;
    c.send('control', new Uint8Array([0, 1, 2, 254, 255]));
    c.send('control', new Uint8Array(window.p2p.module.LIMITS.control).fill(7));
  });
  const bins = await waitFor(async () => {
    const msgs = (await received(alice, { channel: 'control', from: bobId })).filter((m) => Array.isArray(m.data));
    return msgs.length >= 2 ? msgs : null;
  }, { message: 'binary control' });
  assert.deepEqual(bins[0].data, [0, 1, 2, 254, 255]);
  assert.equal(bins[1].data.length, 16378);
  const tooBig = await bob.evaluate(() => {
    try {
      window.p2p.client.send('realtime', new Uint8Array(window.p2p.module.LIMITS.realtime + 1));
      return 'sent';
    } catch (e) {
      return e.code;
    }
  });
  assert.equal(tooBig, 'message_too_large');

  // Realtime, paced, both ways: most messages arrive (loss is allowed).
  const R = 100;
  const [qa, qb] = await Promise.all([sendPaced(alice, 'realtime', 'a-r-', R, 10), sendPaced(bob, 'realtime', 'b-r-', R, 10)]);
  assert.ok(qa > R / 2 && qb > R / 2, `realtime sends queued: ${qa}, ${qb}`);
  for (const [page, from, prefix] of [[bob, aliceId, 'a-r-'], [alice, bobId, 'b-r-']]) {
    const count = await settledRealtime(page, from, prefix, R);
    t.diagnostic(`realtime ${prefix}: ${count}/${R} arrived`);
    assert.ok(count >= R * 0.5, `${prefix}: ${count}/${R} realtime messages arrived`);
  }

  // Binary on realtime (retry: unreliable).
  let gotBinary = null;
  for (let attempt = 0; attempt < 10 && !gotBinary; attempt++) {
    await alice.evaluate(() => window.p2p.client.send('realtime', new Float32Array([1.5, -2.25])));
    gotBinary = await waitFor(
      async () => (await received(bob, { channel: 'realtime', from: aliceId })).find((m) => Array.isArray(m.data)),
      { timeoutMs: 1000, message: 'binary realtime' },
    ).catch(() => null);
  }
  assert.ok(gotBinary, 'bob received a binary realtime message');
  assert.deepEqual(await bob.evaluate((bytes) => Array.from(new Float32Array(new Uint8Array(bytes).buffer)), gotBinary.data), [1.5, -2.25]);

  // The WebRTC RTT to a member comes from that connection's stats.
  const rtt = await bob.evaluate(async (id) => ({ peer: await window.p2p.client.rtt(id), none: await window.p2p.client.rtt() }), aliceId);
  assert.ok(rtt.peer === null || rtt.peer >= 0, `rtt ${rtt.peer}`);
  assert.equal(rtt.none, null);

  // Nobody gets their own messages back; nothing went wrong.
  assert.equal((await received(alice, { from: aliceId })).length, 0);
  assert.equal((await received(bob, { from: bobId })).length, 0);
  for (const page of [alice, bob]) {
    assert.deepEqual(await page.evaluate(() => window.p2p.errors), []);
  }
  await alice.close();
  await bob.close();
}));

test('three pages form a full mesh; a member who leaves is torn down', { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
  const room = 'p2p-three';
  const pages = [await libraryPage(), await libraryPage(), await libraryPage()];
  const [a, b, c] = pages;
  const aId = await join(a, room, 'ann');
  const bId = await join(b, room, 'ben');
  const cId = await join(c, room, 'cat');
  const ids = [aId, bId, cId];
  // The newcomer is open with everyone from its roster; the others answer.
  assert.deepEqual(await connectedPeers(c), [aId, bId].sort((x, y) => x - y));
  for (const [i, page] of pages.entries()) {
    const others = ids.filter((_, j) => j !== i).sort((x, y) => x - y);
    await waitFor(async () => JSON.stringify(await connectedPeers(page)) === JSON.stringify(others), { message: `page ${i} connected to ${others}` });
  }

  // Everyone broadcasts on both channels; everyone else gets it all.
  const N = 20;
  const R = 60;
  await Promise.all(pages.map((page, i) => sendPaced(page, 'control', `c${i}-`, N, 0)));
  await Promise.all(pages.map((page, i) => sendPaced(page, 'realtime', `r${i}-`, R, 10)));
  for (const [i, page] of pages.entries()) {
    for (const [j, from] of ids.entries()) {
      if (i === j) continue;
      await expectControl(page, from, `c${j}-`, N);
      const count = await settledRealtime(page, from, `r${j}-`, R);
      t.diagnostic(`realtime ${j} → ${i}: ${count}/${R}`);
      assert.ok(count >= R * 0.5, `${j} → ${i}: ${count}/${R} realtime messages arrived`);
    }
    assert.equal((await received(page, { from: ids[i] })).length, 0, 'no echo');
  }

  // sendTo reaches one member only, on either channel.
  await sendPaced(a, 'control', 'only-b-', 3, 0, bId);
  await expectControl(b, aId, 'only-b-', 3);
  await a.evaluate(() => window.p2p.client.ping());
  assert.equal((await received(c, { prefix: 'only-b-' })).length, 0);

  // Cat leaves. Ann and Ben hear it, and tear their connection to her down.
  const catPcs = await Promise.all([a, b].map((page) => page.evaluate((id) => {
    window.__catPc = window.p2p.client.peerConnectionTo(id);
    return window.__catPc.connectionState;
  }, cId)));
  assert.deepEqual(catPcs, ['connected', 'connected']);
  await c.evaluate(() => window.p2p.client.leave());
  for (const page of [a, b]) {
    const left = await waitFor(() => page.evaluate((id) => window.p2p.events.find((e) => e.type === 'peerleft' && e.peerId === id), cId), { message: 'peerleft for cat' });
    assert.deepEqual(left, { type: 'peerleft', peerId: cId, name: 'cat', reason: 'left' });
    const after = await page.evaluate((id) => {
      const client = window.p2p.client;
      const sendTo = (() => {
        try {
          client.sendTo(id, 'control', 'ghost');
          return 'sent';
        } catch (e) {
          return e.code;
        }
      })();
      return {
        closedEvent: window.p2p.events.some((e) => e.type === 'peerstatechange' && e.peerId === id && e.state === 'closed'),
        oldPc: window.__catPc.connectionState,
        pc: client.peerConnectionTo(id),
        state: client.peerState(id),
        roster: client.roster.has(id),
        sendTo,
      };
    }, cId);
    assert.deepEqual(after, { closedEvent: true, oldPc: 'closed', pc: null, state: null, roster: false, sendTo: 'not_open' });
  }
  assert.equal(await c.evaluate(() => window.p2p.client.state), 'closed');
  assert.deepEqual(await connectedPeers(a), [bId]);
  assert.deepEqual(await connectedPeers(b), [aId]);

  // Further broadcasts go to Ben only; Cat's page hears nothing more.
  const catBefore = (await received(c)).length;
  assert.equal(await a.evaluate(() => window.p2p.client.send('control', 'after-cat')), true);
  await waitFor(async () => (await received(b, { from: aId, prefix: 'after-cat' })).length === 1, { message: 'ben gets after-cat' });
  assert.equal((await received(c)).length, catBefore);

  // Cat comes back (a new peer id) and the mesh closes again.
  await c.evaluate(() => {
    window.p2p.received = [];
    window.p2p.events = [];
  });
  const cId2 = await join(c, room, 'cat');
  assert.notEqual(cId2, cId);
  assert.deepEqual(await connectedPeers(c), [aId, bId].sort((x, y) => x - y));
  await waitFor(async () => (await connectedPeers(a)).includes(cId2) && (await connectedPeers(b)).includes(cId2), { message: 'mesh with the new cat' });
  await b.evaluate(() => window.p2p.client.send('control', 'welcome back'));
  await waitFor(async () => (await received(c, { from: bId, prefix: 'welcome back' })).length === 1, { message: 'cat hears ben' });

  for (const page of pages) {
    assert.deepEqual(await page.evaluate(() => window.p2p.errors), []);
    await page.close();
  }
}));

test('p2p rooms: capacity, kind checks and misuse', { timeout: TEST_TIMEOUT_MS }, withLogs(async () => {
  const page = await libraryPage();
  const result = await page.evaluate(async () => {
    const { RtcRelay } = window.p2p.module;
    const codeOf = (options) => RtcRelay.connect(options).then((c) => { c.close(); return 'connected'; }, (e) => e.code);
    const first = await RtcRelay.connect({ room: 'p2p-small', name: 'm0', kind: 'p2p', capacity: 2 });
    const second = await RtcRelay.connect({ room: 'p2p-small', name: 'm1', kind: 'p2p' });
    const full = await codeOf({ room: 'p2p-small', name: 'late', kind: 'p2p' });
    const mismatch = await codeOf({ room: 'p2p-small', name: 'late', kind: 'relay' });
    const relay = await RtcRelay.connect({ room: 'p2p-relay-room', name: 'r', kind: 'relay' });
    const sendToInRelay = (() => {
      try {
        relay.sendTo(1, 'control', 'x');
        return 'sent';
      } catch (e) {
        return e.code;
      }
    })();
    const badChannel = (() => {
      try {
        second.send('voice', 'x');
        return 'sent';
      } catch (e) {
        return e.code;
      }
    })();
    const capacity = first.capacity;
    [first, second, relay].forEach((c) => c.close());
    return { capacity, full, mismatch, sendToInRelay, badChannel, relayPc: relay.peerConnection !== null };
  });
  assert.deepEqual(result, {
    capacity: 2,
    full: 'room_full',
    mismatch: 'room_kind_mismatch',
    sendToInRelay: 'wrong_room_kind',
    badChannel: 'bad_channel',
    relayPc: true,
  });
  await page.close();
}));
