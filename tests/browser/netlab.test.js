// The Dizolaur page's network lab panel (web/dizolaur/netlab.js) on the
// admin API (/admin/netlab, docs/netlab.md), in headless Chromium.
//
// 1. A loopback server without an admin token: the panel lists the presets;
//    "3g" on "my connection" puts profile 3g in force for the page's peer
//    (the API says so too); custom values (30 % loss, 20 ms) replace it;
//    once the relay applies the lab to its paths the panel's injected
//    counters move (packets, drops) and the net-stats overlay shows them;
//    Clear takes the setting out of force.
// 2. A server with an admin token: without it the panel shows 401; with the
//    token typed into the panel, applying to "everyone" works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, TEST_TIMEOUT_MS } from './helpers.js';

const TOKEN = 'browser-test-token-0123456789';
const PRESETS = ['good', 'wifi', 'wifi-lossy', '4g', '3g', 'satellite', 'congested'];

let browser;
const servers = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

async function api(server, method, path, { body, token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(new URL(path, server.demoUrl), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: await r.json().catch(() => null) };
}

/** What the panel shows, and its hook's state. */
function panel(page) {
  return page.evaluate(() => {
    const n = window.dizolaur.netlab;
    return {
      presets: [...document.querySelectorAll('#nl-preset option')].map((o) => o.value).filter(Boolean),
      status: document.getElementById('nl-status').textContent,
      statusState: document.getElementById('nl-status').dataset.state,
      summary: document.getElementById('nl-summary').textContent,
      countersShown: !document.getElementById('nl-counters').hidden,
      counters: Object.fromEntries([...document.querySelectorAll('#nl-counters tbody tr')].map((tr) => [
        tr.dataset.dir,
        Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.counter, td.textContent])),
      ])),
      overlayUp: document.getElementById('ns-lab-row-up').hidden ? null : document.getElementById('ns-lab-up').textContent,
      overlayShown: !document.getElementById('netstats').hidden,
      state: { scope: n.state.scope, path: n.state.path, inForce: n.state.inForce, totals: n.state.totals, error: n.state.error },
    };
  });
}

async function openGame(server, params) {
  const page = await browser.newPage();
  const url = new URL(server.demoUrl);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  await page.goto(url.href);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

test('the panel impairs my connection with a preset and custom values, and shows what it injected', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(['--no-turn']);
  servers.push(server);
  const page = await openGame(server, { name: 'lab-rat', room: 'netlab-e2e', autojoin: '1' });
  const logs = async () => `\n--- panel ---\n${JSON.stringify(await panel(page).catch((e) => String(e)), null, 1)}\n--- browser console ---\n${browser.consoleLines.slice(-30).join('\n')}\n--- server stderr (tail) ---\n${server.logs().slice(-4000)}`;
  try {
    const peer = await waitFor(() => page.evaluate(() => window.dizolaur.session?.relay.peerId ?? null), { timeoutMs: 30_000, message: 'page joined' });

    // Opening the panel lists the presets (from GET /admin/netlab).
    await page.click('#netlab summary');
    const shown = await waitFor(async () => {
      const p = await panel(page);
      return p.presets.length >= PRESETS.length && /nothing set/.test(p.status) ? p : null;
    }, { message: 'presets listed, my connection read' });
    for (const name of PRESETS) assert.ok(shown.presets.includes(name), `${name} missing: ${shown.presets}`);
    assert.equal(shown.state.path, `/admin/netlab/peer/${peer}`);
    assert.match(shown.status, /my connection: nothing set/);

    // A preset on my connection.
    await page.selectOption('#nl-scope', 'peer');
    await page.selectOption('#nl-preset', '3g');
    await page.click('#nl-apply');
    await waitFor(async () => (await panel(page)).statusState === 'on', { message: 'the 3g setting in force' });
    let p = await panel(page);
    assert.match(p.status, /3g/);
    assert.match(p.summary, /my connection: 3g/);
    assert.ok(p.countersShown, 'the counters table shows');
    assert.ok(p.overlayShown, 'applying shows the net-stats overlay');
    let { status, json } = await api(server, 'GET', `/admin/netlab/peer/${peer}`);
    assert.equal(status, 200);
    assert.equal(json.setting.profile, '3g');

    // Custom values replace it: 30 % loss and 20 ms each way.
    await page.selectOption('#nl-preset', '');
    await page.fill('#nl-loss', '30');
    await page.fill('#nl-delay', '20');
    await page.fill('#nl-jitter', '0');
    await page.click('#nl-apply');
    await waitFor(async () => (await panel(page)).state.inForce?.setting?.link, { message: 'the custom link in force' });
    ({ status, json } = await api(server, 'GET', '/admin/netlab'));
    assert.equal(status, 200);
    assert.equal(json.settings.length, 1, JSON.stringify(json.settings));
    assert.equal(json.settings[0].scope, `peer:${peer}`);
    assert.equal(json.settings[0].setting.link.up.loss.p, 0.3);
    assert.equal(json.settings[0].setting.link.down.delay.latency, '20ms');

    // The injected counters move once the relay applies the lab to its
    // paths (the page sends inputs and gets snapshots all the time). Where
    // the relay exports netlab counters on /metrics it must; before that
    // part exists the wait is a diagnostic only.
    const metrics = await (await fetch(new URL('/metrics', server.demoUrl))).text();
    const relayApplies = /netlab/i.test(metrics);
    const moved = await waitFor(async () => {
      const q = await panel(page);
      const up = q.state.totals?.up;
      const down = q.state.totals?.down;
      return up && down && up.pushed + down.pushed >= 300 && up.pushed > 0 && down.pushed > 0 ? q : null;
    }, { timeoutMs: 15_000, message: 'injected counters in the panel' }).catch((e) => {
      if (relayApplies) throw e;
      return null;
    });
    if (moved) {
      const { up, down } = moved.state.totals;
      // The totals restart with each setting: only the 30 % one counts here.
      const ratio = (up.dropped + down.dropped) / (up.pushed + down.pushed);
      assert.ok(ratio > 0.15 && ratio < 0.45, `injected loss ${ratio} for a 30 % setting`);
      assert.equal(up.dropped_queue + down.dropped_queue, 0, 'no rate limit, no queue drops');
      assert.ok(Number(moved.counters.up.pushed) > 0, JSON.stringify(moved.counters));
      assert.match(moved.overlayUp ?? '', /dropped/);
    } else {
      t.diagnostic('the relay does not apply the network lab yet (no netlab metrics): counters not checked');
    }

    // Clear takes it out of force.
    await page.click('#nl-clear');
    await waitFor(async () => (await panel(page)).state.inForce === null, { message: 'cleared' });
    p = await panel(page);
    assert.match(p.status, /nothing set/);
    assert.equal(p.overlayUp, null, 'the overlay rows hide');
    ({ status } = await api(server, 'GET', `/admin/netlab/peer/${peer}`));
    assert.equal(status, 404);
  } catch (e) {
    e.message += await logs();
    throw e;
  } finally {
    await page.close();
  }
});

test('with an admin token the panel shows 401 until the token is given', { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startServer(['--no-turn', '--admin-token', TOKEN]);
  servers.push(server);
  const page = await openGame(server, { name: 'op' });
  try {
    await page.click('#netlab summary');
    await waitFor(async () => (await panel(page)).statusState === 'error', { message: 'an error shown' });
    let p = await panel(page);
    assert.match(p.status, /^401 unauthorized/);
    assert.equal(p.state.error.status, 401);

    // "everyone" needs no session; the token typed into the panel is used.
    await page.selectOption('#nl-scope', 'global');
    await page.fill('#nl-token', TOKEN);
    await page.dispatchEvent('#nl-token', 'change');
    await waitFor(async () => (await panel(page)).presets.includes('wifi'), { message: 'presets with the token' });
    await page.selectOption('#nl-preset', 'wifi');
    await page.click('#nl-apply');
    await waitFor(async () => (await panel(page)).statusState === 'on', { message: 'wifi in force for everyone' });
    p = await panel(page);
    assert.match(p.status, /everyone: wifi/);
    const { status, json } = await api(server, 'GET', '/admin/netlab/global', { token: TOKEN });
    assert.equal(status, 200);
    assert.equal(json.setting.profile, 'wifi');
    assert.equal((await api(server, 'GET', '/admin/netlab/global')).status, 401);

    // A token given as ?admin_token= is kept for the tab, not in the URL.
    const second = await openGame(server, { admin_token: TOKEN });
    try {
      assert.ok(!second.url().includes('admin_token'), second.url());
      await second.click('#netlab summary');
      await second.selectOption('#nl-scope', 'global');
      await waitFor(async () => (await panel(second)).statusState === 'on', { message: 'second page sees the setting' });
    } finally {
      await second.close();
    }
  } finally {
    await page.close();
  }
});
