// Shared fixtures of the browser tests: the rtcrelay server (spawned per test
// file, on ephemeral ports) and a headless system Chromium.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { basename } from 'node:path';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const RTCRELAY_BIN = process.env.RTCRELAY_BIN
  ?? fileURLToPath(new URL('../../target/debug/rtcrelay', import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

// Flags checked on this machine (ARCHITECTURE.md, "Browser facts"): without
// --allow-loopback-in-peer-connection and the microphone permission headless
// Chromium gathers no candidates on a loopback-only network.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
];

const STARTUP_TIMEOUT_MS = 60_000;

/**
 * Starts `rtcrelay serve` on ephemeral ports and waits for the URLs it
 * prints. Returns { demoUrl, chatUrl, wsUrl, relayAddr, turnUrls, logs(), stop() }:
 * `demoUrl` is `/` (the Dizolaur game), `chatUrl` the relay chat page.
 */
export async function startServer(extraArgs = []) {
  if (!existsSync(RTCRELAY_BIN)) {
    throw new Error(`rtcrelay binary not found at ${RTCRELAY_BIN}: run \`cargo build -p rtcrelay\` or set RTCRELAY_BIN`);
  }
  // The bundled TURN server on a free port too (its `turn:` URL reaches each
  // client in `welcome.ice_servers`, with credentials).
  const args = ['serve', '--http-listen', '127.0.0.1:0', '--relay-listen', '127.0.0.1:0', '--turn-listen-udp', '127.0.0.1:0', '--turn-listen-tcp', '127.0.0.1:0', ...extraArgs];
  const proc = spawn(RTCRELAY_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RTCRELAY_LOG: process.env.RTCRELAY_LOG ?? 'info' },
  });
  let stderr = '';
  // RTCRELAY_TEST_LOG_DIR=dir keeps each server's whole stderr, for digging.
  if (process.env.RTCRELAY_TEST_LOG_DIR) {
    const file = join(process.env.RTCRELAY_TEST_LOG_DIR, `server-${basename(process.argv[1] ?? 'test')}-${proc.pid}.log`);
    proc.stderr.pipe(createWriteStream(file));
  }
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => {
    // Keep the tail only: it is printed when a test fails.
    stderr = (stderr + chunk).slice(-64 * 1024);
  });
  const urls = await new Promise((resolve, reject) => {
    const found = {};
    const timer = setTimeout(() => fail(new Error(`server printed no URLs within ${STARTUP_TIMEOUT_MS} ms`)), STARTUP_TIMEOUT_MS);
    const lines = createInterface({ input: proc.stdout });
    function fail(err) {
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`${err.message}\n--- server stderr ---\n${stderr}`));
    }
    const onExit = (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`));
    proc.once('exit', onExit);
    proc.once('error', fail);
    const turn = [];
    lines.on('line', (line) => {
      const m = /^(demo|signaling|relay|turn): (\S+)$/.exec(line.trim());
      if (m && m[1] === 'turn') turn.push(m[2]);
      else if (m) found[m[1]] = m[2];
      // `relay:` is printed last, after any `turn:` lines.
      if (found.demo && found.signaling && found.relay) {
        found.turn = turn;
        clearTimeout(timer);
        proc.removeListener('exit', onExit);
        proc.removeListener('error', fail);
        resolve(found);
      }
    });
  });
  let exited = false;
  proc.once('exit', () => {
    exited = true;
  });
  return {
    demoUrl: urls.demo,
    chatUrl: new URL('/chat.html', urls.demo).href,
    wsUrl: urls.signaling,
    relayAddr: urls.relay,
    // The bundled TURN server's URLs (`turn:127.0.0.1:PORT?transport=udp`).
    turnUrls: urls.turn,
    logs: () => stderr,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/**
 * Launches headless Chromium with a fresh profile. Returns { context, newPage(), close() }.
 * `extraArgs`: more command-line flags, after CHROMIUM_ARGS (turn.test.js
 * adds --ignore-certificate-errors-spki-list for its self-signed TURN/TLS cert).
 */
export async function launchBrowser({ extraArgs = [] } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), 'rtcrelay-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    permissions: ['microphone'],
  });
  const consoleLines = [];
  context.on('console', (msg) => {
    consoleLines.push(`[${msg.type()}] ${msg.text()}`);
  });
  context.on('weberror', (err) => consoleLines.push(`[pageerror] ${err.error().message}`));
  return {
    context,
    consoleLines,
    /** A page; the persistent context opens with one blank page, reused first. */
    async newPage() {
      const blank = context.pages().find((p) => p.url() === 'about:blank' && !p.__rtcrelayUsed);
      const page = blank ?? (await context.newPage());
      page.__rtcrelayUsed = true;
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Polls `fn` until it returns a truthy value; throws `message` after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 15_000, intervalMs = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message} (last value: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Joins a relay room through the chat page's UI and waits until the client is open. */
export async function joinViaUi(page, chatUrl, { name, room }) {
  await page.goto(chatUrl);
  await page.waitForSelector('body[data-ready="true"]');
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.waitForFunction(
    () => ['open', 'error'].includes(document.getElementById('state').dataset.state),
    null,
    { timeout: 20_000 },
  );
  const state = await page.$eval('#state', (el) => `${el.dataset.state}: ${el.textContent} ${document.getElementById('error').textContent}`);
  if (!state.startsWith('open')) throw new Error(`${name} could not join ${room}: ${state}`);
  return page.evaluate(() => window.rtcrelayDemo.client.peerId);
}

/** Upper bound for one browser test, so a hang fails instead of stalling CI. */
export const TEST_TIMEOUT_MS = 120_000;

/**
 * Opens a page of the server (default `/`, the Dizolaur game) with query
 * parameters; resolves once its module ran (`body[data-ready="true"]`).
 */
export async function openPage(browser, server, params = {}, path = '/') {
  const page = await browser.newPage();
  const url = new URL(path, server.demoUrl);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  await page.goto(url.href);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

/** Calls the server's admin API (e.g. `/admin/netlab/peer/7`): {status, json}. */
export async function adminApi(server, method, path, { body, token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(new URL(path, server.demoUrl), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: await r.json().catch(() => null) };
}

/** A network lab setting that drops every packet both ways (a pulled cable: no FIN, no DTLS close). */
export const NETLAB_CUT = Object.freeze({
  link: { up: { loss: { model: 'random', p: 1 } }, down: { loss: { model: 'random', p: 1 } } },
});

/**
 * A TCP proxy in front of the server's HTTP listener (page, /client, /ws):
 * `url` is the demo URL through it. `freeze()` stops forwarding on every
 * connection open now, both ways, without closing any (a half-open link:
 * no FIN, no RST); connections made afterwards are forwarded normally.
 */
export async function startTcpProxy(server) {
  const { createServer, connect } = await import('node:net');
  const target = new URL(server.demoUrl);
  const pairs = new Set();
  const sockets = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      if (pair.frozen) return;
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const url = new URL(server.demoUrl);
  url.port = String(proxy.address().port);
  return {
    url: url.href,
    freeze() {
      for (const pair of pairs) {
        pair.frozen = true;
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.client.pause();
        pair.upstream.pause();
      }
      pairs.clear();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
