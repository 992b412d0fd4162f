// Two Chromium pages join one relay room through the relay chat page (/chat.html) and the
// library, and talk on both channels. Delivery on "realtime" is checked as a
// ratio over paced sends, never as "all arrived" (it is unreliable by design).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, joinViaUi, TEST_TIMEOUT_MS } from './helpers.js';

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

const received = (page, filter) =>
  page.evaluate((f) => window.rtcrelayDemo.received.filter((m) => (!f.channel || m.channel === f.channel) && (f.from === undefined || m.from === f.from)), filter);

/** Sends `count` messages `${prefix}${i}` from a page, `gapMs` apart, inside the page. */
const sendPaced = (page, channel, prefix, count, gapMs) =>
  page.evaluate(
    async ({ channel, prefix, count, gapMs }) => {
      const c = window.rtcrelayDemo.client;
      let queued = 0;
      for (let i = 0; i < count; i++) {
        if (c.send(channel, `${prefix}${i}`)) queued++;
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      return queued;
    },
    { channel, prefix, count, gapMs },
  );

test('two pages in one relay room talk on both channels', { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
  const room = 'relay-two-pages';
  const alice = await browser.newPage();
  const bob = await browser.newPage();

  const aliceId = await joinViaUi(alice, server.chatUrl, { name: 'alice', room });
  const bobId = await joinViaUi(bob, server.chatUrl, { name: 'bob', room });
  assert.notEqual(aliceId, bobId);

  // The server confirmed the channel parameters it sees.
  for (const page of [alice, bob]) {
    const channels = await page.evaluate(() => window.rtcrelayDemo.client.serverChannels);
    assert.equal(channels.realtime.ordered, false);
    assert.equal(channels.realtime.max_retransmits, 0);
    assert.equal(channels.control.ordered, true);
    assert.equal(channels.control.max_retransmits, undefined);
    assert.match(await page.textContent('#server-channels'), /ordered=false maxRetransmits=0/);
    assert.equal(await page.evaluate(() => window.rtcrelayDemo.client.state), 'open');
  }

  // Bob got alice in his welcome roster; alice hears bob join.
  const bobRoster = await bob.evaluate(() => [...window.rtcrelayDemo.client.roster.values()]);
  assert.deepEqual(bobRoster, [{ peerId: aliceId, name: 'alice' }]);
  await waitFor(() => alice.evaluate((id) => window.rtcrelayDemo.client.roster.has(id), bobId), { message: 'alice sees bob' });
  await waitFor(async () => (await alice.textContent('#roster')).includes('bob'), { message: 'bob in alice\'s roster UI' });
  assert.equal(await alice.textContent('#peer-id'), String(aliceId));

  // The stats line fills in: signaling RTT always, WebRTC RTT from getStats.
  await waitFor(async () => /ms$/.test(await alice.textContent('#sig-rtt')), { message: 'signaling RTT shown' });
  const rtt = await alice.evaluate(async () => ({ sig: await window.rtcrelayDemo.client.ping(), rtc: await window.rtcrelayDemo.client.rtt() }));
  t.diagnostic(`signaling RTT ${rtt.sig.toFixed(2)} ms, WebRTC RTT ${rtt.rtc === null ? 'n/a' : `${rtt.rtc.toFixed(2)} ms`}`);
  assert.ok(rtt.sig >= 0, `signaling rtt ${rtt.sig}`);
  assert.ok(rtt.rtc === null || rtt.rtc >= 0, `webrtc rtt ${rtt.rtc}`);

  // Through the UI, control: alice → bob.
  await alice.selectOption('#channel', 'control');
  await alice.fill('#text', 'hello bob');
  await alice.click('#send');
  await waitFor(async () => (await received(bob, { channel: 'control', from: aliceId })).some((m) => m.data === 'hello bob'), { message: 'bob gets hello' });
  await waitFor(async () => (await bob.textContent('#log')).includes('alice: hello bob'), { message: 'hello in bob\'s log' });

  // Through the UI, realtime: bob → alice. Unreliable, so retry a few times.
  await bob.selectOption('#channel', 'realtime');
  let gotRealtime = false;
  for (let attempt = 0; attempt < 10 && !gotRealtime; attempt++) {
    await bob.fill('#text', `hi alice ${attempt}`);
    await bob.click('#send');
    gotRealtime = await waitFor(
      async () => (await received(alice, { channel: 'realtime', from: bobId })).some((m) => m.data.startsWith('hi alice')),
      { timeoutMs: 1000, message: 'realtime via UI' },
    ).catch(() => false);
  }
  assert.ok(gotRealtime, 'alice received bob\'s realtime message sent via the UI');

  // Control is reliable and ordered: every message, in order, both ways.
  const N = 50;
  await Promise.all([sendPaced(alice, 'control', 'a-c-', N, 0), sendPaced(bob, 'control', 'b-c-', N, 0)]);
  for (const [page, from, prefix] of [[bob, aliceId, 'a-c-'], [alice, bobId, 'b-c-']]) {
    const got = await waitFor(async () => {
      const msgs = (await received(page, { channel: 'control', from })).filter((m) => m.data.startsWith(prefix));
      return msgs.length >= N ? msgs : null;
    }, { message: `${N} control messages ${prefix}` });
    assert.deepEqual(got.map((m) => m.data), Array.from({ length: N }, (_, i) => `${prefix}${i}`));
  }

  // Binary on control arrives as the same bytes, from the right sender.
  await bob.evaluate(() => window.rtcrelayDemo.send('control', new Uint8Array([0, 1, 2, 254, 255])));
  const bin = await waitFor(async () => (await received(alice, { channel: 'control', from: bobId })).find((m) => Array.isArray(m.data)), { message: 'binary control' });
  assert.deepEqual(bin.data, [0, 1, 2, 254, 255]);

  // Size limits: the largest control payload arrives whole; one byte more,
  // sent past the library's check on the raw channel, is dropped by the
  // server and the session goes on.
  const sizes = await bob.evaluate(() => {
    const { client } = window.rtcrelayDemo;
    const max = new Uint8Array(16384 - 6).fill(7);
    max[0] = 1;
    client.send('control', max);
    const over = new Uint8Array(16384 - 6 + 1).fill(8);
    over[0] = 2;
    client.channel('control').send(over);
    client.send('control', 'after-oversize');
    return { max: max.length, over: over.length };
  });
  await waitFor(async () => (await received(alice, { channel: 'control', from: bobId })).some((m) => m.data === 'after-oversize'), { message: 'message after the oversized one' });
  const big = (await received(alice, { channel: 'control', from: bobId })).filter((m) => Array.isArray(m.data) && m.data.length > 1000);
  assert.deepEqual(big.map((m) => [m.data[0], m.data.length]), [[1, sizes.max]], 'max-size arrives, oversize is dropped');

  // Realtime, paced, both ways: most messages arrive (loss is allowed).
  const R = 100;
  const [qa, qb] = await Promise.all([sendPaced(alice, 'realtime', 'a-r-', R, 10), sendPaced(bob, 'realtime', 'b-r-', R, 10)]);
  assert.ok(qa > R / 2 && qb > R / 2, `realtime sends queued: ${qa}, ${qb}`);
  for (const [page, from, prefix] of [[bob, aliceId, 'a-r-'], [alice, bobId, 'b-r-']]) {
    // Wait until the count stops growing (or all arrived).
    let count = -1;
    await waitFor(async () => {
      const now = (await received(page, { channel: 'realtime', from })).filter((m) => m.data.startsWith?.(prefix)).length;
      const settled = now === count || now === R;
      count = now;
      return settled && now > 0;
    }, { intervalMs: 500, message: `realtime ${prefix} settles` });
    t.diagnostic(`realtime ${prefix}: ${count}/${R} arrived`);
    assert.ok(count >= R * 0.5, `${prefix}: ${count}/${R} realtime messages arrived`);
    const msgs = (await received(page, { channel: 'realtime', from })).filter((m) => m.data.startsWith?.(prefix));
    assert.equal(new Set(msgs.map((m) => m.data)).size, msgs.length, 'no duplicates');
  }

  // Binary on realtime (retry: unreliable).
  let gotBinary = null;
  for (let attempt = 0; attempt < 10 && !gotBinary; attempt++) {
    await alice.evaluate(() => window.rtcrelayDemo.send('realtime', new Float32Array([1.5, -2.25])));
    gotBinary = await waitFor(
      async () => (await received(bob, { channel: 'realtime', from: aliceId })).find((m) => Array.isArray(m.data)),
      { timeoutMs: 1000, message: 'binary realtime' },
    ).catch(() => null);
  }
  assert.ok(gotBinary, 'bob received a binary realtime message');
  const floats = await bob.evaluate((bytes) => Array.from(new Float32Array(new Uint8Array(bytes).buffer)), gotBinary.data);
  assert.deepEqual(floats, [1.5, -2.25]);

  // The largest realtime payload (1200 bytes with the relay header) arrives.
  let gotMaxRealtime = null;
  for (let attempt = 0; attempt < 10 && !gotMaxRealtime; attempt++) {
    await alice.evaluate(() => window.rtcrelayDemo.send('realtime', new Uint8Array(1200 - 6).fill(9)));
    gotMaxRealtime = await waitFor(
      async () => (await received(bob, { channel: 'realtime', from: aliceId })).find((m) => Array.isArray(m.data) && m.data.length === 1194),
      { timeoutMs: 1000, message: 'max-size realtime' },
    ).catch(() => null);
  }
  assert.ok(gotMaxRealtime, 'bob received a 1194-byte realtime message');

  // Nobody gets their own messages back.
  assert.equal((await received(alice, { from: aliceId })).length, 0);
  assert.equal((await received(bob, { from: bobId })).length, 0);

  // Bob leaves through the UI: alice sees him go, with reason "left".
  await alice.evaluate(() => {
    window.__left = [];
    window.rtcrelayDemo.client.on('peerleft', (p) => window.__left.push(p));
  });
  await bob.click('#leave');
  await waitFor(async () => (await bob.$eval('#state', (el) => el.dataset.state)) === 'idle', { message: 'bob idle' });
  const left = await waitFor(() => alice.evaluate(() => window.__left[0]), { message: 'alice sees bob leave' });
  assert.deepEqual(left, { peerId: bobId, name: 'bob', reason: 'left' });
  assert.equal(await alice.evaluate((id) => window.rtcrelayDemo.client.roster.has(id), bobId), false);

  // And joins again from the same page: a new peer id, and alice hears it.
  await bob.click('#join');
  await bob.waitForFunction(() => document.getElementById('state').dataset.state === 'open');
  const bobId2 = await bob.evaluate(() => window.rtcrelayDemo.client.peerId);
  assert.notEqual(bobId2, bobId);
  await waitFor(() => alice.evaluate((id) => window.rtcrelayDemo.client.roster.get(id)?.name === 'bob', bobId2), { message: 'alice sees bob again' });

  await alice.close();
  await bob.close();
}));

test('connect() rejects with the server\'s error code', { timeout: TEST_TIMEOUT_MS }, withLogs(async () => {
  const page = await browser.newPage();
  await page.goto(server.chatUrl);
  await page.waitForSelector('body[data-ready="true"]');
  const codes = await page.evaluate(async () => {
    const { RtcRelay } = window.rtcrelayDemo;
    const codeOf = (options) => RtcRelay.connect(options).then((c) => { c.close(); return 'connected'; }, (e) => e.code);
    return {
      badRoom: await codeOf({ room: 'no spaces allowed', name: 'x' }),
      badName: await codeOf({ room: 'ok-room', name: '' }),
      // Authoritative rooms seat as many as their game (4 for Dizolaur).
      authoritative: await codeOf({ room: 'auth-room', name: 'x', kind: 'authoritative', capacity: 9 }),
    };
  });
  assert.equal(codes.badRoom, 'invalid_message');
  assert.equal(codes.badName, 'invalid_message');
  assert.equal(codes.authoritative, 'invalid_message');
  await page.close();
}));

test('a full room refuses the next member; sizes are checked client-side', { timeout: TEST_TIMEOUT_MS }, withLogs(async () => {
  const page = await browser.newPage();
  await page.goto(server.chatUrl);
  await page.waitForSelector('body[data-ready="true"]');
  const result = await page.evaluate(async () => {
    const { RtcRelay } = window.rtcrelayDemo;
    // The creator picks the capacity; later joins cannot change it.
    const first = await RtcRelay.connect({ room: 'full-room', name: 'm0', capacity: 3 });
    const clients = [first];
    for (let i = 1; i < first.capacity; i++) clients.push(await RtcRelay.connect({ room: 'full-room', name: `m${i}`, capacity: 10 }));
    const extra = await RtcRelay.connect({ room: 'full-room', name: 'late' }).then(
      (c) => { c.close(); return 'connected'; },
      (e) => e.code,
    );
    const tooBig = (() => {
      try {
        first.send('realtime', new Uint8Array(1195));
        return 'sent';
      } catch (e) {
        return e.code;
      }
    })();
    const fits = first.send('realtime', new Uint8Array(1194));
    // The earlier members learn of the later ones by peer_joined.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && !clients.every((c) => c.roster.size === clients.length - 1)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const rosterSizes = clients.map((c) => c.roster.size);
    clients.forEach((c) => c.close());
    return { capacity: first.capacity, extra, tooBig, fits, rosterSizes, states: clients.map((c) => c.state) };
  });
  assert.equal(result.capacity, 3);
  assert.equal(result.extra, 'room_full');
  assert.equal(result.tooBig, 'message_too_large');
  assert.equal(result.fits, true);
  // Each member knows all the others (welcome roster + peer_joined).
  assert.deepEqual(result.rosterSizes, Array(result.capacity).fill(result.capacity - 1));
  assert.ok(result.states.every((s) => s === 'closed'));
  await page.close();
}));

test('a member whose WebRTC session dies is away, then back with a new session', { timeout: TEST_TIMEOUT_MS }, withLogs(async () => {
  const room = 'relay-disconnect';
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await joinViaUi(alice, server.chatUrl, { name: 'alice', room });
  const bobId = await joinViaUi(bob, server.chatUrl, { name: 'bob', room });
  await waitFor(() => alice.evaluate((id) => window.rtcrelayDemo.client.roster.has(id), bobId), { message: 'alice sees bob' });
  await alice.evaluate(() => {
    window.__seen = [];
    const { client } = window.rtcrelayDemo;
    for (const type of ['peerleft', 'peeraway', 'peerback']) client.on(type, (p) => window.__seen.push({ type, peerId: p.peerId }));
  });
  // Kill only bob's WebRTC session; his signaling socket stays open, so the
  // server keeps his seat (peer_away) and his library makes a new session
  // on the same socket: same peer id, nobody hears that he left.
  await bob.evaluate(() => {
    window.__bob = [];
    const { client } = window.rtcrelayDemo;
    for (const type of ['reconnecting', 'resumed', 'close']) client.on(type, (e) => window.__bob.push({ type, ...e }));
    client.peerConnection.close();
  });
  const resumed = await waitFor(() => bob.evaluate(() => window.__bob.find((e) => e.type === 'resumed')), { message: 'bob resumes' });
  assert.equal(resumed.peerId, bobId);
  const bobEvents = await bob.evaluate(() => window.__bob.map((e) => e.type));
  assert.equal(bobEvents[0], 'reconnecting', bobEvents.join(','));
  assert.ok(!bobEvents.includes('close'), bobEvents.join(','));
  const seen = await waitFor(async () => {
    const s = await alice.evaluate(() => window.__seen);
    return s.some((e) => e.type === 'peerback') ? s : null;
  }, { message: 'alice sees bob away, then back' });
  assert.deepEqual(seen, [{ type: 'peeraway', peerId: bobId }, { type: 'peerback', peerId: bobId }]);
  // And the room works again: bob's message reaches alice.
  await bob.evaluate(() => window.rtcrelayDemo.send('control', 'after the resume'));
  await waitFor(async () => (await received(alice, { channel: 'control', from: bobId })).some((m) => m.data === 'after the resume'), { message: 'bob is heard after resuming' });
  await alice.close();
  await bob.close();
}));
