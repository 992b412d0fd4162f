// Dizolaur end to end: the game page (/) in headless Chromium and the Rust
// bot client (client/examples/dizolaur_bot.rs) in one authoritative room.
//
// 1. Two pages (autopilot on) and two Rust bots take the four seats; a page
//    starts a 20 s match without server bots; everyone plays to the end.
//    All four views get exactly one match_end event and agree on it; the
//    pages drew frames and their net-stats overlay shows snapshot traffic.
// 2. One page starts a match from the lobby UI with "fill empty seats with
//    bots": three bots take the other seats and the match runs.
//
// Nothing here asserts speed; the timeouts only turn a hang into a failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { startServer, launchBrowser, waitFor, TEST_TIMEOUT_MS } from './helpers.js';

const BOT_BIN = process.env.RTCRELAY_BOT_BIN
  ?? fileURLToPath(new URL('../../target/debug/examples/dizolaur_bot', import.meta.url));

// A match: 3 s countdown + at most max_seconds of racing + the crash
// confirmation window; generous, it only bounds a hang.
const MATCH_SECONDS = 20;
const MATCH_DONE_TIMEOUT_MS = (3 + MATCH_SECONDS + 30) * 1000;

let server;
let browser;
const bots = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  for (const bot of bots) bot.proc.kill('SIGKILL');
  await browser?.close();
  await server?.stop();
});

/** Opens the game page with query parameters; resolves once the page module ran. */
async function openGame(params) {
  const page = await browser.newPage();
  const url = new URL(server.demoUrl);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  await page.goto(url.href);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

/** Waits until the page's session is open and it sits in a lane; returns its peer id. */
async function waitSeated(page, what) {
  return waitFor(
    () => page.evaluate(() => {
      const d = window.dizolaur;
      return d.session && d.seats.some((s) => s.me) ? d.session.relay.peerId : null;
    }),
    { timeoutMs: 30_000, message: `${what} seated` },
  );
}

/** Spawns the Rust bot; its stdout JSON lines are parsed into `lines`. */
function startBot(room, name) {
  const args = ['--url', server.wsUrl, '--room', room, '--name', name, '--autoplay', '--exit-after-match', '--timeout-secs', '110'];
  const proc = spawn(BOT_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const bot = { name, proc, lines: [], bad: [], stderr: '', code: undefined, peerId: null };
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    bot.stderr = (bot.stderr + d).slice(-16 * 1024);
    const m = /joined \S+ as peer (\d+)/.exec(bot.stderr);
    if (m) bot.peerId = Number(m[1]);
  });
  createInterface({ input: proc.stdout }).on('line', (l) => {
    try {
      bot.lines.push(JSON.parse(l));
    } catch {
      bot.bad.push(l);
    }
  });
  bot.exited = new Promise((r) => proc.once('exit', (code) => {
    bot.code = code;
    r(code);
  }));
  bots.push(bot);
  return bot;
}

const botEvents = (bot) => bot.lines.filter((l) => l.type === 'event');
const kindOf = (event) => event?.kind ?? event?.type;

function describeBots(list) {
  return list.map((b) => `--- ${b.name} (exit ${b.code}) stdout ---\n${b.lines.slice(-30).map((l) => JSON.stringify(l)).join('\n')}${b.bad.length ? `\n(unparsed: ${b.bad.slice(-5).join(' | ')})` : ''}\n--- ${b.name} stderr ---\n${b.stderr.slice(-3000)}`).join('\n');
}

/** What a page shows and knows, for assertions and failure messages. */
function pageReport(page) {
  return page.evaluate(() => {
    const d = window.dizolaur;
    const canvas = document.getElementById('canvas');
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const colors = new Set();
    for (let i = 0; i < pixels.length; i += 4 * 97) colors.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    return {
      phase: d.phase,
      seats: d.seats,
      frames: d.frames,
      matchEnds: d.matchEnds,
      matchEndEvents: d.events.filter((e) => (e.kind ?? e.type) === 'match_end'),
      result: d.result,
      kinds: d.events.map((e) => e.kind ?? e.type),
      tick: d.session?.latest()?.tick ?? null,
      distinctColors: colors.size,
      netstats: d.netstats,
      resultsShown: !document.getElementById('results').hidden,
      ranking: [...document.querySelectorAll('#ranking li')].map((li) => li.textContent),
    };
  });
}

test('2 browser players and 2 Rust bots play a match to the end and agree on the result', { timeout: TEST_TIMEOUT_MS + 60_000 }, async (t) => {
  // A missing bot is a failure, not a skip: the mixed match must be tested.
  assert.ok(existsSync(BOT_BIN), `Rust bot not built (${BOT_BIN}): cargo build -p rtcrelay-client --example dizolaur_bot, or set RTCRELAY_BOT_BIN`);
  const room = 'dizolaur-e2e';
  const pages = [];
  const logs = async () => {
    const reports = await Promise.all(pages.map((p) => pageReport(p).catch((e) => String(e))));
    return `\n--- pages ---\n${JSON.stringify(reports, null, 1).slice(0, 8000)}\n${describeBots(bots)}\n--- browser console ---\n${browser.consoleLines.slice(-40).join('\n')}\n--- server stderr (tail) ---\n${server.logs().slice(-6000)}`;
  };
  try {
    for (const name of ['ann', 'bob']) {
      pages.push(await openGame({ name, room, autojoin: '1', autoplay: '1' }));
    }
    const pagePeers = [];
    for (const [i, page] of pages.entries()) pagePeers.push(await waitSeated(page, `page ${i}`));

    const rustBots = [startBot(room, 'rusty-1'), startBot(room, 'rusty-2')];
    await waitFor(
      () => pages[0].evaluate(() => window.dizolaur.seats.length === 4 && window.dizolaur.seats.every((s) => !s.bot)),
      { timeoutMs: 60_000, message: 'four people seated' },
    ).catch(async (e) => assert.fail(`${e.message}${await logs()}`));

    // Start through the test hook: {"start":{"bots":false,"max_seconds":20}}.
    const command = await pages[0].evaluate((s) => window.dizolaur.start({ bots: false, maxSeconds: s }), MATCH_SECONDS);
    assert.deepEqual(command, { start: { bots: false, max_seconds: MATCH_SECONDS } });

    // While racing: the overlay (opened with its key) shows snapshot traffic.
    for (const page of pages) {
      await waitFor(() => page.evaluate(() => window.dizolaur.phase === 'running' || window.dizolaur.matchEnds > 0), { timeoutMs: 30_000, message: 'the race runs' })
        .catch(async (e) => assert.fail(`${e.message}${await logs()}`));
      await page.keyboard.press('n');
      assert.equal(await page.$eval('#netstats', (el) => el.hidden), false, 'N opens the net-stats overlay');
      const bytesText = await waitFor(async () => {
        const text = await page.$eval('#ns-bytes', (el) => el.textContent);
        return Number.parseFloat(text) > 0 ? text : null;
      }, { timeoutMs: 10_000, message: 'non-zero snapshot bytes/s in the overlay' });
      assert.match(bytesText, /kB\/s/);
    }

    // Play to the end.
    const ended = await Promise.race([
      Promise.all([
        ...pages.map((page, i) => waitFor(() => page.evaluate(() => window.dizolaur.matchEnds > 0), { timeoutMs: MATCH_DONE_TIMEOUT_MS, intervalMs: 200, message: `page ${i} match_end` })),
        ...rustBots.map((b) => b.exited),
      ]).then(() => true),
      new Promise((r) => setTimeout(() => r(false), MATCH_DONE_TIMEOUT_MS + 5000)),
    ]).catch((e) => e);
    if (ended !== true) assert.fail(`the match did not end everywhere: ${ended}${await logs()}`);
    // Linger so that a duplicate delivery (a retransmission) would show.
    await new Promise((r) => setTimeout(r, 2000));

    const reports = await Promise.all(pages.map(pageReport));
    const log = await logs();
    for (const b of rustBots) {
      assert.equal(b.code, 0, `${b.name} exits 0 after the match${log}`);
      const ends = botEvents(b).filter((l) => kindOf(l.event) === 'match_end');
      assert.equal(ends.length, 1, `${b.name} got exactly one match_end${log}`);
      const summary = b.lines.find((l) => l.type === 'summary');
      assert.equal(summary?.match_end_events, 1, `${b.name} summary counts one match_end${log}`);
      const ids = botEvents(b).map((l) => l.id);
      assert.equal(new Set(ids).size, ids.length, `${b.name}: each event id once${log}`);
    }
    for (const [i, r] of reports.entries()) {
      assert.equal(r.matchEnds, 1, `page ${i} got exactly one match_end${log}`);
      assert.equal(r.matchEndEvents.length, 1, `page ${i} recorded one match_end${log}`);
      assert.ok(r.kinds.includes('match_start'), `page ${i} saw match_start${log}`);
      assert.ok(r.frames > 10, `page ${i} drew frames (${r.frames})`);
      assert.ok(r.distinctColors > 3, `page ${i}'s canvas is drawn (${r.distinctColors} colors sampled)`);
      assert.ok(r.resultsShown && r.ranking.length === 4, `page ${i} shows the results with 4 places: ${JSON.stringify(r.ranking)}`);
    }

    // All four views agree: the very same match_end (ranking, winners, tick).
    const views = [
      ...reports.map((r) => r.result),
      ...rustBots.map((b) => botEvents(b).find((l) => kindOf(l.event) === 'match_end').event),
    ];
    for (const v of views.slice(1)) assert.deepEqual(v, views[0], `views agree on the result${log}`);
    const result = views[0];
    t.diagnostic(`match_end: ${JSON.stringify(result)}`);
    const outs = await pages[0].evaluate(() => window.dizolaur.events.filter((e) => e.kind === 'player_out'));
    t.diagnostic(`player_out: ${JSON.stringify(outs)}`);
    assert.equal(result.ranking.length, 4, `four ranked${log}`);
    assert.ok(Array.isArray(result.winners) && result.winners.length >= 1, `at least one winner${log}`);
    assert.ok(result.ranking.every((e) => e.bot === false), `no server bots${log}`);
    // The bots print their peer id on stderr ("joined R as peer N").
    for (const b of rustBots) assert.ok(Number.isInteger(b.peerId), `${b.name}'s peer id is known${log}`);
    const rankedPeers = result.ranking.map((e) => e.peer).sort((a, b) => a - b);
    const peers = [...pagePeers, ...rustBots.map((b) => b.peerId)].sort((a, b) => a - b);
    assert.deepEqual(rankedPeers, peers, `the four players are ranked${log}`);
  } finally {
    for (const page of pages) await page.close().catch(() => {});
  }
});

test('the lobby starts a match with bots filling the empty seats', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'dizolaur-bots';
  const page = await openGame({ name: 'solo', room, autojoin: '1', autoplay: '1' });
  const logs = async () => `\n--- page ---\n${JSON.stringify(await pageReport(page).catch((e) => String(e)), null, 1).slice(0, 6000)}\n--- browser console ---\n${browser.consoleLines.slice(-40).join('\n')}\n--- server stderr (tail) ---\n${server.logs().slice(-6000)}`;
  try {
    await waitSeated(page, 'solo');
    await waitFor(() => page.evaluate(() => window.dizolaur.phase === 'lobby'), { message: 'lobby phase' });
    assert.equal(await page.$eval('#start', (el) => el.disabled), false, 'a seated player may start');

    // Through the UI: bots checkbox on, 10 s, Start.
    await page.check('#fill-bots');
    await page.fill('#max-seconds', '10');
    await page.click('#start');

    await waitFor(() => page.evaluate(() => window.dizolaur.seats.filter((s) => s.bot).length === 3), { timeoutMs: 10_000, message: 'three bots seated' })
      .catch(async (e) => assert.fail(`${e.message}${await logs()}`));
    const seats = await page.$$eval('#seats li', (lis) => lis.map((li) => li.dataset.bot));
    assert.deepEqual(seats.filter((b) => b === 'true').length, 3, 'the lobby lists three bots');

    await waitFor(() => page.evaluate(() => window.dizolaur.phase === 'running'), { timeoutMs: 15_000, message: 'running' })
      .catch(async (e) => assert.fail(`${e.message}${await logs()}`));
    const first = await pageReport(page);
    // Ticks advance and the snapshot carries the match, the four lanes and obstacles.
    await waitFor(async () => (await pageReport(page)).tick > first.tick + 30, { message: 'ticks advance' });
    const entities = await waitFor(() => page.evaluate(() => {
      const ids = [...window.dizolaur.session.state.keys()];
      return ids.some((id) => id >= 100) ? ids : null;
    }), { timeoutMs: 15_000, message: 'obstacles in the snapshot' });
    for (const id of [0, 1, 2, 3, 4]) assert.ok(entities.includes(id), `entity ${id} in ${entities}`);
    const own = await page.evaluate(() => Array.from(window.dizolaur.session.predicted() ?? []));
    assert.ok(own.length > 0, 'the own runner is predicted');

    // The match ends by itself (10 s at most) and the results show.
    await waitFor(() => page.evaluate(() => window.dizolaur.matchEnds === 1), { timeoutMs: 60_000, intervalMs: 200, message: 'match_end' })
      .catch(async (e) => assert.fail(`${e.message}${await logs()}`));
    const r = await pageReport(page);
    assert.equal(r.result.ranking.length, 4, `four ranked${await logs()}`);
    assert.equal(r.result.ranking.filter((e) => e.bot).length, 3);
    assert.ok(r.resultsShown, 'results shown');
    assert.ok(r.frames > 10 && r.distinctColors > 3, 'the canvas was drawn');
  } finally {
    await page.close().catch(() => {});
  }
});
