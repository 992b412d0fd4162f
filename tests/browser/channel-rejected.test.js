// A browser that opens the DataChannels wrongly (raw RTCPeerConnection and
// WebSocket, not the library) gets {"type":"error","code":"channel_rejected"}
// and never "ready"; the WebSocket stays usable (the error is not fatal).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, TEST_TIMEOUT_MS } from './helpers.js';

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

/**
 * In the page: join `room`, open `channels` ([label, init] pairs), offer,
 * trickle, and collect server messages until an error (or ready + 1 s, or
 * the timeout). Then ping to check the WebSocket still works.
 */
async function rawSession(page, wsUrl, room, channels) {
  return page.evaluate(
    async ({ wsUrl, room, channels }) => {
      const messages = [];
      const ws = new WebSocket(wsUrl);
      const waiters = [];
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        messages.push(msg);
        for (const w of waiters.splice(0)) w();
      };
      const next = (pred, ms) =>
        new Promise((resolve) => {
          const deadline = setTimeout(() => resolve(null), ms);
          const check = () => {
            const m = messages.find(pred);
            if (m) {
              clearTimeout(deadline);
              resolve(m);
            } else {
              waiters.push(check);
            }
          };
          check();
        });
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('websocket failed'));
      });
      ws.send(JSON.stringify({ type: 'join', version: 1, room, kind: 'relay', name: 'raw' }));
      const welcome = await next((m) => m.type === 'welcome' || m.type === 'error', 10000);
      if (!welcome || welcome.type !== 'welcome') return { messages, stage: 'join' };

      const pc = new RTCPeerConnection({ iceServers: welcome.ice_servers });
      for (const [label, init] of channels) pc.createDataChannel(label, init);
      pc.onicecandidate = (e) => {
        ws.send(JSON.stringify(e.candidate
          ? { type: 'candidate', candidate: e.candidate.candidate, mid: e.candidate.sdpMid }
          : { type: 'candidate', candidate: '' }));
      };
      await pc.setLocalDescription(await pc.createOffer());
      ws.send(JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }));
      const answer = await next((m) => m.type === 'answer' || m.type === 'error', 10000);
      if (answer?.type === 'answer') await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });

      const error = await next((m) => m.type === 'error', 15000);
      // The error is not fatal: the signaling socket still answers pings.
      ws.send(JSON.stringify({ type: 'ping', id: 42 }));
      const pong = await next((m) => m.type === 'pong' && m.id === 42, 5000);
      const result = { messages, error, pong: !!pong, wsOpen: ws.readyState === WebSocket.OPEN, connectionState: pc.connectionState };
      pc.close();
      ws.close();
      return result;
    },
    { wsUrl, room, channels },
  );
}

const cases = [
  {
    what: 'realtime opened reliable',
    channels: [['realtime', {}], ['control', {}]],
  },
  {
    what: 'realtime ordered with maxRetransmits 0',
    channels: [['realtime', { ordered: true, maxRetransmits: 0 }], ['control', {}]],
  },
  {
    what: 'control opened unreliable',
    channels: [['realtime', { ordered: false, maxRetransmits: 0 }], ['control', { ordered: false, maxRetransmits: 0 }]],
  },
];

for (const [i, c] of cases.entries()) {
  test(`channel_rejected: ${c.what}`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const page = await browser.newPage();
    // Same origin as the signaling endpoint, as a real page would be.
    await page.goto(server.chatUrl);
    const result = await rawSession(page, server.wsUrl, `rejected-${i}`, c.channels);
    const log = `messages: ${JSON.stringify(result.messages.map((m) => m.type === 'answer' ? { type: 'answer' } : m))}\n--- server stderr (tail) ---\n${server.logs().slice(-6000)}`;
    assert.ok(result.error, `an error arrived\n${log}`);
    assert.equal(result.error.code, 'channel_rejected', log);
    assert.equal(result.error.fatal, false, log);
    assert.equal(typeof result.error.message, 'string');
    assert.ok(!result.messages.some((m) => m.type === 'ready'), `no ready for a rejected session\n${log}`);
    assert.ok(result.pong && result.wsOpen, `signaling still works after a non-fatal error\n${log}`);
    await page.close();
  });
}

test('channel_rejected: an unknown label next to the right ones', { timeout: TEST_TIMEOUT_MS }, async () => {
  const page = await browser.newPage();
  await page.goto(server.chatUrl);
  const result = await rawSession(page, server.wsUrl, 'rejected-extra', [
    ['realtime', { ordered: false, maxRetransmits: 0 }],
    ['control', {}],
    ['chat', {}],
  ]);
  const log = `messages: ${JSON.stringify(result.messages.map((m) => m.type === 'answer' ? { type: 'answer' } : m))}\n${server.logs().slice(-6000)}`;
  assert.equal(result.error?.code, 'channel_rejected', log);
  await page.close();
});
