// Interop: a Chromium page (library + relay chat page) and the Rust client
// (client/examples/echo.rs) in one relay room. The Rust side echoes every
// message back on the channel it came on: text as "echo:<text>", binary with
// a 0xEE byte in front.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { startServer, launchBrowser, waitFor, joinViaUi, TEST_TIMEOUT_MS } from './helpers.js';

const ECHO_BIN = process.env.RTCRELAY_ECHO_BIN
  ?? fileURLToPath(new URL('../../target/debug/examples/echo', import.meta.url));

let server;
let browser;
let echo;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  echo?.proc.kill('SIGKILL');
  await browser?.close();
  await server?.stop();
});

/** Spawns the Rust echo client; resolves with { peerId, lines, proc } once connected. */
async function startEcho(wsUrl, room, name) {
  const proc = spawn(ECHO_BIN, [wsUrl, room, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-16 * 1024);
  });
  createInterface({ input: proc.stdout }).on('line', (l) => lines.push(l));
  const exited = new Promise((r) => proc.once('exit', (code) => r(code)));
  const peerId = await Promise.race([
    waitFor(() => lines.map((l) => /^peer_id: (\d+)$/.exec(l)).find(Boolean), { timeoutMs: 30_000, message: 'echo client connected' })
      .then((m) => Number(m[1])),
    exited.then((code) => {
      throw new Error(`echo client exited with ${code}: ${stderr}`);
    }),
  ]);
  return { peerId, lines, proc, stderr: () => stderr };
}

const received = (page, from, channel) =>
  page.evaluate(({ from, channel }) => window.rtcrelayDemo.received.filter((m) => m.from === from && m.channel === channel), { from, channel });

test('a browser and the Rust client exchange messages on both channels', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // A missing echo client is a failure, not a skip: interop must be tested.
  assert.ok(existsSync(ECHO_BIN), `Rust echo client not built (${ECHO_BIN}): cargo build -p rtcrelay-client --example echo`);
  const room = 'interop';
  const page = await browser.newPage();
  const browserId = await joinViaUi(page, server.chatUrl, { name: 'chromium', room });

  echo = await startEcho(server.wsUrl, room, 'rusty');
  const logs = () => `\n--- echo stdout ---\n${echo.lines.slice(-40).join('\n')}\n--- echo stderr ---\n${echo.stderr()}\n--- server stderr (tail) ---\n${server.logs().slice(-6000)}`;
  try {
    // The browser hears the Rust client join.
    await waitFor(() => page.evaluate((id) => window.rtcrelayDemo.client.roster.get(id)?.name, echo.peerId), { message: 'rusty in roster' });

    // Control, browser → Rust → browser: all, in order.
    const N = 20;
    await page.evaluate((n) => {
      for (let i = 0; i < n; i++) window.rtcrelayDemo.send('control', `hi-${i}`);
    }, N);
    const echoed = await waitFor(async () => {
      const msgs = await received(page, echo.peerId, 'control');
      return msgs.length >= N ? msgs : null;
    }, { message: 'control echoes' });
    assert.deepEqual(echoed.map((m) => m.data), Array.from({ length: N }, (_, i) => `echo:hi-${i}`));
    assert.ok(echo.lines.includes(`message ${browserId} control text hi-0`), `Rust saw the browser's message${logs()}`);

    // Binary, control.
    await page.evaluate(() => window.rtcrelayDemo.send('control', new Uint8Array([1, 2, 3])));
    const bin = await waitFor(async () => (await received(page, echo.peerId, 'control')).find((m) => Array.isArray(m.data)), { message: 'binary echo' });
    assert.deepEqual(bin.data, [0xee, 1, 2, 3]);

    // Realtime, paced: a round trip through two unreliable hops; most return.
    const R = 60;
    await page.evaluate(async (n) => {
      for (let i = 0; i < n; i++) {
        window.rtcrelayDemo.send('realtime', `rt-${i}`);
        await new Promise((r) => setTimeout(r, 15));
      }
    }, R);
    let count = -1;
    await waitFor(async () => {
      const now = (await received(page, echo.peerId, 'realtime')).length;
      const settled = now === count || now === R;
      count = now;
      return settled && now > 0;
    }, { intervalMs: 500, message: 'realtime echoes settle' });
    t.diagnostic(`realtime round trips: ${count}/${R}`);
    assert.ok(count >= R * 0.5, `${count}/${R} realtime echoes${logs()}`);
    const rt = await received(page, echo.peerId, 'realtime');
    assert.ok(rt.every((m) => /^echo:rt-\d+$/.test(m.data)));

    // The Rust client goes away: the browser sees it leave.
    echo.proc.kill('SIGTERM');
    await waitFor(() => page.evaluate((id) => !window.rtcrelayDemo.client.roster.has(id), echo.peerId), { message: 'rusty left' });
  } catch (e) {
    e.message += logs();
    throw e;
  }
  await page.close();
});
