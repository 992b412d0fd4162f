// Relay-only Chromium (`iceTransportPolicy: 'relay'`) through the bundled TURN
// server, over each of its transports: UDP, TCP (RFC 6544 framing) and TLS
// (`turns:`, with a self-signed certificate made here with the openssl CLI).
// Pages keep only one transport's TURN URL from their welcome with the
// library's `turnTransports` option, reach the server peer in a relay room,
// then each other in a p2p room, and the selected ICE candidate pair (from
// getStats) and the server's rtcrelay_turn_* metrics show which way the
// packets went. Last, with the TURN peer policy's default (loopback peers
// denied), a relay-only client cannot reach the server peer on 127.0.0.1.
//
// TLS and the self-signed certificate: Chromium verifies the TURN server's
// certificate with the same verifier as for HTTPS. Playwright's
// `ignoreHTTPSErrors` does not reach these sockets (the TLS handshake still
// fails: icecandidateerror 701 "Failed to establish connection" for the
// turns: URL, and rtcrelay_turn_connections_closed_total{protocol="tls",
// reason="tls_handshake"} counts it). `--ignore-certificate-errors` does, but
// for every certificate; this file launches Chromium with
// `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the test
// certificate's SubjectPublicKeyInfo>` instead, which accepts that one key
// only (Chromium honours it only together with --user-data-dir, which
// launchPersistentContext passes). "realtime" delivery is checked with
// retries (it is unreliable by design).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startServer, launchBrowser, waitFor, TEST_TIMEOUT_MS } from './helpers.js';

const TRANSPORTS = ['udp', 'tcp', 'tls'];
// Generous: a relay-only connect on a busy 2-core machine, TLS included.
const CONNECT_TIMEOUT_MS = 30_000;

let dir;
let server;
let deniedServer;
let browser;

/**
 * A self-signed P-256 certificate for 127.0.0.1 (IP SAN) and localhost.
 * Returns { cert, key, spki } (file paths; spki = base64 SHA-256 of the
 * SubjectPublicKeyInfo, as --ignore-certificate-errors-spki-list wants it).
 */
async function selfSignedCert(dir) {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  try {
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', key, '-out', cert,
    ]);
  } catch (e) {
    throw new Error(`openssl could not make the test certificate (scripts/browser-deps installs openssl): ${e.message}`);
  }
  const der = new X509Certificate(await readFile(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: createHash('sha256').update(der).digest('base64') };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rtcrelay-turn-test-'));
  const { cert, key, spki } = await selfSignedCert(dir);
  // The server peer's UDP socket and the browsers' relay addresses are all on
  // 127.0.0.1, which the TURN peer policy refuses by default.
  const config = join(dir, 'rtcrelay.toml');
  await writeFile(config, '[turn.peers]\nallow_loopback = true\n');
  // startServer adds UDP and TCP TURN listeners; TLS on top.
  server = await startServer(['--config', config, '--turn-listen-tls', '127.0.0.1:0', '--turn-tls-cert', cert, '--turn-tls-key', key]);
  browser = await launchBrowser({ extraArgs: [`--ignore-certificate-errors-spki-list=${spki}`] });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await deniedServer?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs a test body; on failure appends the servers' and the pages' logs. */
function withLogs(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      e.message += `\n--- server stderr (tail) ---\n${server?.logs().slice(-8000)}`;
      if (deniedServer) e.message += `\n--- default-policy server stderr (tail) ---\n${deniedServer.logs().slice(-4000)}`;
      e.message += `\n--- browser console ---\n${browser?.consoleLines.slice(-80).join('\n')}`;
      throw e;
    }
  };
}

/** Prometheus text → [{ name, labels, value }]. */
async function scrape(srv) {
  const text = await (await fetch(new URL('/metrics', srv.demoUrl))).text();
  const samples = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sum of the samples of `name` whose labels include `labels`. */
const metric = (samples, name, labels = {}) => samples
  .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  .reduce((sum, s) => sum + s.value, 0);

/**
 * A page with the library loaded on `srv`'s origin. Every RTCPeerConnection
 * the library makes records its icecandidateerror events in window.t.iceErrors
 * (what chrome://webrtc-internals would show for a TURN server that fails).
 */
async function libraryPage(srv = server) {
  const page = await browser.newPage();
  await page.goto(srv.chatUrl);
  await page.waitForSelector('body[data-ready="true"]');
  await page.evaluate(async () => {
    window.t = { module: await import('/client/rtcrelay.js'), client: null, received: [], errors: [], iceErrors: [] };
    const Base = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Base {
      constructor(config) {
        super(config);
        this.addEventListener('icecandidateerror', (e) => {
          window.t.iceErrors.push({ url: e.url, code: e.errorCode, text: e.errorText });
        });
      }
    };
  });
  return page;
}

/**
 * Connects the page's client relay-only with only `transport`'s TURN URLs and
 * records what it hears. Returns { peerId } or { error: code, message }.
 */
function joinRoom(page, { room, name, kind = 'relay', transport, timeoutMs = CONNECT_TIMEOUT_MS }) {
  return page.evaluate(async ({ room, name, kind, transport, timeoutMs }) => {
    const t = window.t;
    try {
      const client = await t.module.RtcRelay.connect({
        room, name, kind, timeoutMs, iceTransportPolicy: 'relay', turnTransports: [transport],
      });
      t.client = client;
      client.on('message', ({ from, channel, data }) => {
        t.received.push({ from, channel, data: typeof data === 'string' ? data : Array.from(new Uint8Array(data)) });
      });
      client.on('error', (e) => t.errors.push(e));
      return { peerId: client.peerId };
    } catch (e) {
      return { error: e.code, message: e.message };
    }
  }, { room, name, kind, transport, timeoutMs });
}

async function mustJoin(page, options) {
  const r = await joinRoom(page, options);
  if (r.error) {
    const iceErrors = await page.evaluate(() => window.t.iceErrors);
    throw new Error(`${options.name} could not join ${options.room} over TURN/${options.transport}: ${r.error}: ${r.message}; icecandidateerror: ${JSON.stringify(iceErrors)}`);
  }
  return r.peerId;
}

const received = (page, { from, channel, prefix }) =>
  page.evaluate((f) => window.t.received.filter((m) => m.from === f.from && m.channel === f.channel
    && typeof m.data === 'string' && m.data.startsWith(f.prefix)).map((m) => m.data), { from, channel, prefix });

/** `count` control messages from → to, all of them in order. */
async function expectControl(fromPage, fromId, toPage, prefix, count = 10) {
  await fromPage.evaluate(({ prefix, count }) => {
    for (let i = 0; i < count; i++) window.t.client.send('control', `${prefix}${i}`);
  }, { prefix, count });
  const got = await waitFor(async () => {
    const msgs = await received(toPage, { from: fromId, channel: 'control', prefix });
    return msgs.length >= count ? msgs : null;
  }, { timeoutMs: 20_000, message: `${count} control messages ${prefix}` });
  assert.deepEqual(got, Array.from({ length: count }, (_, i) => `${prefix}${i}`));
}

/** A realtime message from → to (unreliable: retried). */
async function expectRealtime(fromPage, fromId, toPage, prefix) {
  for (let attempt = 0; attempt < 20; attempt++) {
    await fromPage.evaluate((data) => window.t.client.send('realtime', data), `${prefix}${attempt}`);
    const got = await waitFor(async () => (await received(toPage, { from: fromId, channel: 'realtime', prefix })).length > 0, {
      timeoutMs: 1000, message: `realtime ${prefix}`,
    }).catch(() => false);
    if (got) return;
  }
  assert.fail(`no realtime message ${prefix}* arrived in 20 tries`);
}

/**
 * The selected ICE candidate pair of the page's connection (to the server
 * peer, or in p2p rooms to `peerId`): its local and remote candidates.
 */
const selectedPair = (page, peerId) =>
  page.evaluate(async (id) => {
    const c = window.t.client;
    const pc = id === undefined ? c.peerConnection : c.peerConnectionTo(id);
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const pick = (s) => s && {
      candidateType: s.candidateType, relayProtocol: s.relayProtocol, url: s.url, address: s.address ?? s.ip, port: s.port,
    };
    return { state: pair.state, local: pick(stats.get(pair.localCandidateId)), remote: pick(stats.get(pair.remoteCandidateId)) };
  }, peerId);

/** The TURN URLs the page's client uses (urls of every ICE server). */
const usedUrls = (page) => page.evaluate(() => window.t.client.iceServers.flatMap((s) => [s.urls].flat()));

test('the server serves TURN over UDP, TCP and TLS', withLogs(async () => {
  const kinds = server.turnUrls.map((url) => {
    const m = /^(turns?):127\.0\.0\.1:\d+\?transport=(udp|tcp)$/.exec(url);
    assert.ok(m, `unexpected TURN URL ${url}`);
    return m[1] === 'turns' ? 'tls' : m[2];
  });
  assert.deepEqual(kinds.sort(), ['tcp', 'tls', 'udp']);
}));

for (const transport of TRANSPORTS) {
  test(`relay-only pages reach the server peer through TURN over ${transport}`, { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
    const room = `turn-relay-${transport}`;
    const before = await scrape(server);
    const alice = await libraryPage();
    const bob = await libraryPage();
    const aliceId = await mustJoin(alice, { room, name: 'alice', transport });
    const bobId = await mustJoin(bob, { room, name: 'bob', transport });

    // Both DataChannels are open; only this transport's TURN URL was given
    // to RTCPeerConnection.
    for (const page of [alice, bob]) {
      const channels = await page.evaluate(() => ['realtime', 'control'].map((l) => window.t.client.channel(l).readyState));
      assert.deepEqual(channels, ['open', 'open']);
      const urls = await usedUrls(page);
      const kinds = await page.evaluate((list) => list.map((u) => window.t.module.turnTransportOf(u)), urls);
      assert.deepEqual(kinds, [transport], `ICE server URLs ${JSON.stringify(urls)}`);
      assert.ok(server.turnUrls.includes(urls[0]), urls[0]);
    }

    // Messages flow both ways, through the server peer, on both channels.
    await waitFor(() => alice.evaluate((id) => window.t.client.roster.has(id), bobId), { message: 'alice sees bob' });
    await expectControl(alice, aliceId, bob, `a-${transport}-`);
    await expectControl(bob, bobId, alice, `b-${transport}-`);
    await expectRealtime(alice, aliceId, bob, `ar-${transport}-`);
    await expectRealtime(bob, bobId, alice, `br-${transport}-`);

    // The selected pair: our relay candidate over this transport, to the
    // server peer's host candidate.
    const relayAddr = server.relayAddr.replace(/^udp:\/\//, '');
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const pair = await selectedPair(page);
      t.diagnostic(`${name} over ${transport}: ${JSON.stringify(pair)}`);
      assert.ok(pair, `${name}: a selected candidate pair`);
      assert.equal(pair.local.candidateType, 'relay', `${name} local candidate`);
      assert.equal(pair.local.relayProtocol, transport, `${name} relayProtocol`);
      assert.equal(`${pair.remote.address}:${pair.remote.port}`, relayAddr, `${name} remote candidate`);
    }
    assert.deepEqual(await alice.evaluate(() => window.t.errors), []);
    assert.deepEqual(await bob.evaluate(() => window.t.errors), []);

    // The TURN server relayed this transport's packets, and only its.
    const after = await scrape(server);
    const delta = (name, labels) => metric(after, name, labels) - metric(before, name, labels);
    for (const direction of ['to_peer', 'from_peer']) {
      const packets = delta('rtcrelay_turn_relayed_packets_total', { protocol: transport, direction });
      t.diagnostic(`relayed packets over ${transport} ${direction}: ${packets}`);
      assert.ok(packets > 0, `rtcrelay_turn_relayed_packets_total{protocol="${transport}",direction="${direction}"} grew by ${packets}`);
    }
    assert.ok(delta('rtcrelay_turn_allocations_created_total', { protocol: transport }) >= 2, 'an allocation per page');
    for (const other of TRANSPORTS.filter((x) => x !== transport)) {
      assert.equal(delta('rtcrelay_turn_allocations_created_total', { protocol: other }), 0, `no allocation over ${other}`);
    }
    await alice.close();
    await bob.close();
  }));
}

test('two relay-only pages in a p2p room connect through TURN (UDP, then TCP)', { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
  for (const transport of ['udp', 'tcp']) {
    const room = `turn-p2p-${transport}`;
    const before = await scrape(server);
    const alice = await libraryPage();
    const bob = await libraryPage();
    const aliceId = await mustJoin(alice, { room, name: 'alice', kind: 'p2p', transport });
    // Bob's connect() resolves once his connection to alice is open.
    const bobId = await mustJoin(bob, { room, name: 'bob', kind: 'p2p', transport });
    await waitFor(() => alice.evaluate((id) => window.t.client.connectedPeers.includes(id), bobId), { timeoutMs: 20_000, message: 'alice connected to bob' });

    await expectControl(alice, aliceId, bob, `pa-${transport}-`);
    await expectControl(bob, bobId, alice, `pb-${transport}-`);
    await expectRealtime(alice, aliceId, bob, `par-${transport}-`);
    await expectRealtime(bob, bobId, alice, `pbr-${transport}-`);

    // Each side sends from its own relay candidate over this transport; the
    // server peer takes no part.
    for (const [name, page, other] of [['alice', alice, bobId], ['bob', bob, aliceId]]) {
      const pair = await selectedPair(page, other);
      t.diagnostic(`p2p ${name} over ${transport}: ${JSON.stringify(pair)}`);
      assert.ok(pair, `${name}: a selected candidate pair`);
      assert.equal(pair.local.candidateType, 'relay', `${name} local candidate`);
      assert.equal(pair.local.relayProtocol, transport, `${name} relayProtocol`);
      assert.notEqual(pair.remote.candidateType, 'host', `${name} remote candidate is the other's relay address`);
      assert.notEqual(`${pair.remote.address}:${pair.remote.port}`, server.relayAddr.replace(/^udp:\/\//, ''));
    }
    const after = await scrape(server);
    const packets = metric(after, 'rtcrelay_turn_relayed_packets_total', { protocol: transport, direction: 'to_peer' })
      - metric(before, 'rtcrelay_turn_relayed_packets_total', { protocol: transport, direction: 'to_peer' });
    assert.ok(packets > 0, `relayed packets over ${transport}: ${packets}`);
    for (const page of [alice, bob]) {
      assert.deepEqual(await page.evaluate(() => window.t.errors), []);
      await page.close();
    }
  }
}));

test('with the default peer policy (no loopback peers), relay-only cannot reach the server peer', { timeout: TEST_TIMEOUT_MS }, withLogs(async (t) => {
  deniedServer = await startServer();
  const page = await libraryPage(deniedServer);
  const result = await joinRoom(page, { room: 'turn-denied', name: 'carol', transport: 'udp', timeoutMs: 8000 });
  t.diagnostic(`connect over TURN/udp with loopback peers denied: ${JSON.stringify(result)}; icecandidateerror: ${JSON.stringify(await page.evaluate(() => window.t.iceErrors))}`);
  assert.ok(['timeout', 'ice_failed'].includes(result.error), JSON.stringify(result));
  // The relay candidate was there: the TURN server refused the permission to
  // the server peer's 127.0.0.1 address (403), not the allocation.
  const samples = await scrape(deniedServer);
  assert.ok(metric(samples, 'rtcrelay_turn_allocations_created_total', { protocol: 'udp' }) >= 1, 'an allocation');
  const denied = metric(samples, 'rtcrelay_turn_peers_denied_total', { protocol: 'udp', direction: 'request' });
  assert.ok(denied > 0, `rtcrelay_turn_peers_denied_total{protocol="udp",direction="request"} = ${denied}`);
  assert.equal(metric(samples, 'rtcrelay_turn_relayed_packets_total', { protocol: 'udp', direction: 'to_peer' }), 0);
  await page.close();
  await deniedServer.stop();
}));
