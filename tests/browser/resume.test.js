// Reconnection with session resume, in headless Chromium against the real
// server: the Dizolaur page (/) on the browser library (rtcrelay.js,
// GameSession) in an authoritative room, its packets cut at the network lab
// with no close of any kind (100 % loss both ways on `peer:<id>`, the
// signaling WebSocket untouched).
//
// 1. Room with the default grace (30 s): a second page in the room sees
//    `peer_away` for the cut player and marks it in its player list; the
//    cut page says "Connection lost — reconnecting (attempt n)…"; the cut is
//    lifted; the page emits `reconnecting` then `resumed` with the SAME peer
//    id, shows "Reconnected", gets snapshots of new ticks again, and the
//    other page sees `peer_back` (no `peer_left`).
// 2. The signaling connection goes half-open (a TCP proxy between page and
//    server stops forwarding, closing nothing): the server notices the
//    silent WebSocket, ends the WebRTC session and keeps the seat; the page
//    finds its WebSocket dead (no pong), leaves it open (a Close frame would
//    give the seat up), joins on a new one with its resume token and offers:
//    `resumed`, same peer id, snapshots again; the new token differs.
// 3. Room whose prefix has a 2 s grace (`[[resume.rooms]]`): the cut stays;
//    the page emits `resumefailed` (resume_expired), shows "Could not
//    reconnect", and the other page sees `peer_left` with reason
//    "disconnected".
//
// Nothing here asserts speed; the timeouts only turn a hang into a failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, waitFor, openPage, adminApi, startTcpProxy, NETLAB_CUT, TEST_TIMEOUT_MS } from './helpers.js';

// The server notices a silent peer after relay.dead_after (5 s), the page
// after its deadAfterMs (5 s); these bound the waits generously.
const NOTICE_TIMEOUT_MS = 30_000;
const RESUME_TIMEOUT_MS = 45_000;
const SHORT_PREFIX = 'resume-short-';

let server;
let browser;
let configDir;

before(async () => {
  configDir = await mkdtemp(join(tmpdir(), 'rtcrelay-resume-'));
  const config = join(configDir, 'rtcrelay.toml');
  await writeFile(config, `[resume]\ngrace = "30s"\n\n[[resume.rooms]]\nprefix = "${SHORT_PREFIX}"\ngrace = "2s"\n`);
  server = await startServer(['--no-turn', '--config', config]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (configDir) await rm(configDir, { recursive: true, force: true });
});

/** What a page's library and UI say about its connection. */
function connection(page) {
  return page.evaluate(() => {
    const d = window.dizolaur;
    const s = d.session;
    return {
      peerId: s?.relay.peerId ?? null,
      relayState: s?.relay.state ?? null,
      sessionClosed: s ? s.closed : null,
      snapshots: s?.counters.snapshotsApplied ?? 0,
      sessionRestarts: s?.counters.sessionRestarts ?? 0,
      tick: s?.latest()?.tick ?? null,
      state: d.connection.state,
      log: d.connection.log,
      status: document.getElementById('status').textContent,
      statusState: document.getElementById('status').dataset.state,
      awaySeats: [...document.querySelectorAll('#seats li[data-away="true"]')].map((li) => li.textContent),
      seats: d.seats,
    };
  });
}

/** In the page: the match and lane entities (ids below the obstacles') of snapshot `tick`, or null. */
function worldAt(tick) {
  const state = tick === null ? null : window.dizolaur.session?.stateAt(tick);
  if (!state) return null;
  return [...state.values()].filter((e) => e.id < 100).map((e) => [e.id, e.kind, Array.from(e.fields)]);
}

/** Records the relay's peerleft events on a page (the page's log keeps the others). */
async function recordPeerLeft(page) {
  await page.evaluate(() => {
    window.__peerLeft = [];
    window.dizolaur.session.relay.on('peerleft', (p) => window.__peerLeft.push(p));
  });
}

async function joined(page, what) {
  return waitFor(async () => {
    const c = await connection(page);
    return c.peerId !== null && c.snapshots > 0 ? c.peerId : null;
  }, { timeoutMs: 30_000, message: `${what} joined with snapshots` });
}

function diagnostics(pages) {
  return async () => {
    const views = [];
    for (const [name, page] of Object.entries(pages)) {
      views.push(`--- ${name} ---\n${JSON.stringify(await connection(page).catch((e) => String(e)))}`);
    }
    return `\n${views.join('\n')}\n--- browser console ---\n${browser.consoleLines.slice(-40).join('\n')}\n--- server stderr (tail) ---\n${server.logs().slice(-6000)}`;
  };
}

test('a page whose packets are cut comes back in its seat (same peer id) once the cut is lifted', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'resume-e2e';
  const cut = await openPage(browser, server, { name: 'cut', room, autojoin: '1' });
  const watcher = await openPage(browser, server, { name: 'watcher', room, autojoin: '1' });
  const logs = diagnostics({ cut, watcher });
  let lifted = false;
  let peer = null;
  try {
    peer = await joined(cut, 'the cut page');
    await joined(watcher, 'the watching page');
    await waitFor(() => watcher.evaluate((id) => window.dizolaur.session.relay.roster.has(id), peer), { message: 'the watcher knows the cut page' });
    await recordPeerLeft(watcher);
    const before = await connection(cut);
    const lane = before.seats.find((seat) => seat.me)?.lane;
    assert.ok(lane !== undefined, 'the cut page sits in a lane');

    const put = await adminApi(server, 'PUT', `/admin/netlab/peer/${peer}`, { body: NETLAB_CUT });
    assert.equal(put.status, 200, JSON.stringify(put.json));

    // The room hears it: peer_away for the cut player, marked in the list.
    const away = await waitFor(async () => (await connection(watcher)).log.find((e) => e.type === 'peeraway' && e.peerId === peer), { timeoutMs: NOTICE_TIMEOUT_MS, message: 'peer_away at the watcher' });
    assert.ok(away.graceMs > 0 && away.graceMs <= 30_000, `grace ${away.graceMs} ms`);
    if ((await connection(watcher)).seats.some((s) => s.peer === peer)) {
      await waitFor(async () => (await connection(watcher)).awaySeats.some((t) => /connection lost/.test(t)), { message: 'the away player marked in the list' });
    }
    // The cut page knows too, and says so.
    const lost = await waitFor(async () => {
      const c = await connection(cut);
      return c.state === 'reconnecting' ? c : null;
    }, { timeoutMs: NOTICE_TIMEOUT_MS, message: 'the cut page reconnecting' });
    assert.match(lost.status, /^Connection lost — reconnecting \(attempt \d+\)…$/);
    assert.equal(lost.statusState, 'reconnecting');
    assert.equal(lost.sessionClosed, false, 'the game session stays open while reconnecting');

    assert.equal((await adminApi(server, 'DELETE', `/admin/netlab/peer/${peer}`)).status, 200);
    lifted = true;

    const back = await waitFor(async () => {
      const c = await connection(cut);
      return c.log.some((e) => e.type === 'resumed') ? c : null;
    }, { timeoutMs: RESUME_TIMEOUT_MS, message: 'resumed' });
    const types = back.log.map((e) => e.type);
    assert.equal(types[0], 'reconnecting', types.join());
    assert.ok(types.indexOf('reconnecting') < types.indexOf('resumed'), types.join());
    const resumed = back.log.find((e) => e.type === 'resumed');
    assert.equal(resumed.peerId, peer, 'the same peer id');
    assert.equal(back.peerId, peer);
    assert.equal(back.relayState, 'open');
    assert.equal(back.state, 'open');
    assert.match(back.status, /^Reconnected/);
    assert.ok(back.sessionRestarts >= 1, 'the game layer restarted its baselines');
    const attempts = back.log.filter((e) => e.type === 'reconnecting');
    attempts.forEach((a, i) => assert.equal(a.attempt, i + 1));
    assert.equal(back.log.filter((e) => e.type === 'resumefailed').length, 0);

    // Snapshots again, of ticks after the cut (a new full baseline, then deltas).
    const resumedAt = back.snapshots;
    const flowing = await waitFor(async () => {
      const c = await connection(cut);
      return c.snapshots >= resumedAt + 10 && c.tick > before.tick ? c : null;
    }, { timeoutMs: 20_000, message: 'snapshots after the resume' });
    assert.equal(flowing.sessionClosed, false);
    await waitFor(async () => (await connection(cut)).seats.find((seat) => seat.me)?.lane === lane, { message: 'the same lane after the resume' });

    // The resumed page holds the server's world: for one tick, the match and
    // lane entities it applied equal those the other page got.
    const common = await waitFor(async () => {
      const tick = await cut.evaluate(() => window.dizolaur.session.latest()?.tick ?? null);
      const mine = await cut.evaluate(worldAt, tick);
      const theirs = await watcher.evaluate(worldAt, tick);
      return mine && theirs ? { tick, mine, theirs } : null;
    }, { message: 'a tick both pages hold' });
    assert.ok(common.mine.length >= 3, JSON.stringify(common.mine));
    assert.deepEqual(common.mine, common.theirs, `tick ${common.tick}`);

    // The room saw it come back, and never saw it leave.
    await waitFor(async () => (await connection(watcher)).log.some((e) => e.type === 'peerback' && e.peerId === peer), { message: 'peer_back at the watcher' });
    assert.deepEqual(await watcher.evaluate(() => window.__peerLeft), []);
    await waitFor(async () => (await connection(watcher)).awaySeats.length === 0, { message: 'no one marked away any more' });
  } catch (e) {
    e.message += await logs();
    throw e;
  } finally {
    if (!lifted && peer !== null) await adminApi(server, 'DELETE', `/admin/netlab/peer/${peer}`).catch(() => {});
    await cut.close();
    await watcher.close();
  }
});

test('a half-open signaling connection: the page resumes on a new WebSocket with its token', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'resume-half-open';
  const proxy = await startTcpProxy(server);
  const page = await openPage(browser, { demoUrl: proxy.url }, { name: 'behind-proxy', room, autojoin: '1' });
  const watcher = await openPage(browser, server, { name: 'watcher', room, autojoin: '1' });
  const logs = diagnostics({ page, watcher });
  try {
    const peer = await joined(page, 'the page behind the proxy');
    await joined(watcher, 'the watching page');
    await recordPeerLeft(watcher);
    const firstToken = await page.evaluate(() => window.dizolaur.session.relay.resumeToken);
    assert.ok(firstToken, 'an authoritative room hands out a resume token');

    proxy.freeze();

    await waitFor(async () => (await connection(watcher)).log.some((e) => e.type === 'peeraway' && e.peerId === peer), { timeoutMs: NOTICE_TIMEOUT_MS, message: 'peer_away at the watcher' });
    const back = await waitFor(async () => {
      const c = await connection(page);
      return c.log.some((e) => e.type === 'resumed') ? c : null;
    }, { timeoutMs: RESUME_TIMEOUT_MS, message: 'resumed' });
    assert.equal(back.log[0].type, 'reconnecting');
    assert.equal(back.log.find((e) => e.type === 'resumed').peerId, peer);
    assert.equal(back.peerId, peer);
    const token = await page.evaluate(() => window.dizolaur.session.relay.resumeToken);
    assert.ok(token && token !== firstToken, 'the resumed welcome brought a new token');
    const resumedAt = back.snapshots;
    await waitFor(async () => (await connection(page)).snapshots >= resumedAt + 10, { timeoutMs: 20_000, message: 'snapshots after the resume' });
    await waitFor(async () => (await connection(watcher)).log.some((e) => e.type === 'peerback' && e.peerId === peer), { message: 'peer_back at the watcher' });
    assert.deepEqual(await watcher.evaluate(() => window.__peerLeft), []);
  } catch (e) {
    e.message += await logs();
    throw e;
  } finally {
    await page.close();
    await watcher.close();
    await proxy.close();
  }
});

test('a page cut for longer than the grace period gives up: resumefailed, the room hears it left', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = `${SHORT_PREFIX}e2e`;
  const cut = await openPage(browser, server, { name: 'cut', room, autojoin: '1' });
  const watcher = await openPage(browser, server, { name: 'watcher', room, autojoin: '1' });
  const logs = diagnostics({ cut, watcher });
  let peer = null;
  try {
    peer = await joined(cut, 'the cut page');
    await joined(watcher, 'the watching page');
    await waitFor(() => watcher.evaluate((id) => window.dizolaur.session.relay.roster.has(id), peer), { message: 'the watcher knows the cut page' });
    await recordPeerLeft(watcher);
    assert.equal(await cut.evaluate(() => window.dizolaur.session.relay.resumeGraceMs), 2000, 'the room rule\'s grace reaches the client');

    assert.equal((await adminApi(server, 'PUT', `/admin/netlab/peer/${peer}`, { body: NETLAB_CUT })).status, 200);

    const failed = await waitFor(async () => {
      const c = await connection(cut);
      return c.state === 'failed' ? c : null;
    }, { timeoutMs: NOTICE_TIMEOUT_MS, message: 'resumefailed' });
    const failure = failed.log.find((e) => e.type === 'resumefailed');
    assert.equal(failure.code, 'resume_expired', JSON.stringify(failure));
    assert.ok(failed.log.findIndex((e) => e.type === 'reconnecting') < failed.log.indexOf(failure));
    assert.equal(failed.log.filter((e) => e.type === 'resumed').length, 0);
    assert.match(failed.status, /^Could not reconnect/);
    assert.equal(failed.statusState, 'error');
    assert.equal(failed.peerId, null, 'the page left the game');

    const left = await waitFor(() => watcher.evaluate((id) => window.__peerLeft.find((p) => p.peerId === id), peer), { timeoutMs: NOTICE_TIMEOUT_MS, message: 'peer_left at the watcher' });
    assert.equal(left.reason, 'disconnected');
    assert.ok((await connection(watcher)).log.some((e) => e.type === 'peeraway' && e.peerId === peer), 'peer_away came first');
  } catch (e) {
    e.message += await logs();
    throw e;
  } finally {
    if (peer !== null) await adminApi(server, 'DELETE', `/admin/netlab/peer/${peer}`).catch(() => {});
    await cut.close();
    await watcher.close();
  }
});
