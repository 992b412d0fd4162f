// The relay chat page (/chat.html): join a relay room, see who is there, chat
// on either channel.
// Test hook: window.rtcrelayDemo (client, received messages, join/leave/send).
import { RtcRelay, RtcRelayError } from '/client/rtcrelay.js';

const $ = (id) => document.getElementById(id);
const els = {
  joinForm: $('join-form'), name: $('name'), room: $('room'), join: $('join'), leave: $('leave'),
  state: $('state'), connectionState: $('connection-state'), peerId: $('peer-id'),
  sigRtt: $('sig-rtt'), rtcRtt: $('rtc-rtt'), serverChannels: $('server-channels'), error: $('error'),
  roomName: $('room-name'), memberCount: $('member-count'), roster: $('roster'),
  log: $('log'), sendForm: $('send-form'), channel: $('channel'), text: $('text'), send: $('send'),
};

const MAX_LOG_ITEMS = 500;
const MAX_RECEIVED = 10000;

/** State the page exposes for tests and for poking at from the console. */
const demo = {
  RtcRelay,
  /** @type {RtcRelay | null} */
  client: null,
  /** Every message received: { from, channel, data } (binary as number[]). */
  received: [],
  /** Every message this page sent: { channel, data }. */
  sent: [],
  join,
  leave,
  send,
};
window.rtcrelayDemo = demo;

let statsTimer = null;

const params = new URLSearchParams(location.search);
els.name.value = params.get('name') ?? sessionStorage.getItem('rtcrelay.name') ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
els.room.value = params.get('room') ?? 'lobby';

function setState(state, text = state) {
  els.state.dataset.state = state;
  els.state.textContent = text;
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = !message;
}

function logLine(kind, parts) {
  const li = document.createElement('li');
  li.className = kind;
  const time = document.createElement('span');
  time.className = 'meta';
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, ...parts);
  const stick = els.log.scrollTop + els.log.clientHeight >= els.log.scrollHeight - 4;
  els.log.append(li);
  while (els.log.children.length > MAX_LOG_ITEMS) els.log.firstElementChild.remove();
  if (stick) els.log.scrollTop = els.log.scrollHeight;
}

function span(className, text) {
  const s = document.createElement('span');
  s.className = className;
  s.textContent = text;
  return s;
}

function system(text) {
  logLine('system', [document.createTextNode(text)]);
}

function nameOf(peerId) {
  const c = demo.client;
  if (c && peerId === c.peerId) return c.name;
  return c?.roster.get(peerId)?.name ?? `#${peerId}`;
}

function renderRoster() {
  const c = demo.client;
  els.roster.replaceChildren();
  if (!c) {
    els.roomName.textContent = '';
    els.memberCount.textContent = '';
    return;
  }
  els.roomName.textContent = c.room;
  const members = [{ peerId: c.peerId, name: c.name, me: true }, ...c.roster.values()];
  els.memberCount.textContent = c.capacity ? `(${members.length}/${c.capacity})` : `(${members.length})`;
  for (const m of members) {
    const li = document.createElement('li');
    li.dataset.peerId = String(m.peerId);
    if (m.me) li.className = 'me';
    li.append(document.createTextNode(m.me ? `${m.name} (you)` : m.name ?? '?'), span('id', `#${m.peerId}`));
    els.roster.append(li);
  }
}

function setJoined(joined) {
  els.join.disabled = joined;
  els.name.disabled = joined;
  els.room.disabled = joined;
  els.leave.disabled = !joined;
  els.text.disabled = !joined;
  els.send.disabled = !joined;
}

function describe(data) {
  if (typeof data === 'string') return data;
  const bytes = new Uint8Array(data);
  const hex = Array.from(bytes.slice(0, 32), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return `[${bytes.length} bytes] ${hex}${bytes.length > 32 ? ' …' : ''}`;
}

async function updateStats() {
  const c = demo.client;
  if (!c || c.state !== 'open') return;
  els.connectionState.textContent = c.connectionState;
  try {
    const ms = await c.ping();
    els.sigRtt.textContent = `${ms.toFixed(1)} ms`;
  } catch {
    els.sigRtt.textContent = '–';
  }
  const rtt = await c.rtt();
  els.rtcRtt.textContent = rtt === null ? 'n/a' : `${rtt.toFixed(1)} ms`;
}

async function join(name = els.name.value.trim(), room = els.room.value.trim()) {
  if (demo.client) return demo.client;
  showError('');
  els.name.value = name;
  els.room.value = room;
  sessionStorage.setItem('rtcrelay.name', name);
  setJoined(true);
  els.join.disabled = true;
  setState('connecting', 'connecting…');
  let client;
  try {
    client = await RtcRelay.connect({ name, room, kind: 'relay' });
  } catch (e) {
    setJoined(false);
    setState('error', `failed: ${e.code ?? 'error'}`);
    showError(e instanceof RtcRelayError ? `${e.code}: ${e.message}` : String(e));
    system(`join failed: ${e.message}`);
    throw e;
  }
  demo.client = client;
  setState('open');
  els.peerId.textContent = String(client.peerId);
  els.connectionState.textContent = client.connectionState;
  const rt = client.serverChannels?.realtime;
  els.serverChannels.textContent = rt
    ? `realtime ordered=${rt.ordered} maxRetransmits=${rt.max_retransmits ?? '–'}`
    : '–';
  els.serverChannels.title = JSON.stringify(client.serverChannels);
  renderRoster();
  system(`joined room ${client.room} as #${client.peerId}`);

  client.on('message', ({ from, channel, data }) => {
    if (demo.received.length < MAX_RECEIVED) {
      demo.received.push({ from, channel, data: typeof data === 'string' ? data : Array.from(new Uint8Array(data)) });
    }
    logLine('msg', [span(`chan ${channel}`, channel), span('who', `${nameOf(from)}: `), document.createTextNode(describe(data))]);
  });
  client.on('peerjoined', (p) => {
    renderRoster();
    system(`${p.name} (#${p.peerId}) joined`);
  });
  client.on('peerleft', (p) => {
    renderRoster();
    system(`${p.name ?? `#${p.peerId}`} left (${p.reason})`);
  });
  client.on('error', (e) => {
    showError(`${e.code}: ${e.message}`);
    system(`error ${e.code}: ${e.message}`);
  });
  client.on('statechange', ({ connectionState }) => {
    els.connectionState.textContent = connectionState;
  });
  client.on('close', ({ reason }) => {
    system(`disconnected (${reason})`);
    if (demo.client === client) teardown(reason === 'left' ? 'idle' : 'closed');
  });

  clearInterval(statsTimer);
  statsTimer = setInterval(updateStats, 1000);
  updateStats();
  els.text.focus();
  return client;
}

function teardown(state) {
  clearInterval(statsTimer);
  statsTimer = null;
  demo.client = null;
  setJoined(false);
  setState(state);
  els.peerId.textContent = '–';
  els.sigRtt.textContent = '–';
  els.rtcRtt.textContent = '–';
  els.connectionState.textContent = '–';
  els.serverChannels.textContent = '–';
  els.serverChannels.title = '';
  renderRoster();
}

function leave() {
  const c = demo.client;
  if (!c) return;
  c.leave();
  // leave() emits "close" (reason "left"), which tears the UI down; this
  // covers the early-close window where that event is still queued.
  if (demo.client === c) teardown('idle');
}

function send(channel = els.channel.value, data = els.text.value) {
  const c = demo.client;
  if (!c) throw new Error('not joined');
  const ok = c.send(channel, data);
  const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
  demo.sent.push({ channel, data: typeof data === 'string' ? data : Array.from(bytes ?? new Uint8Array(data)) });
  logLine('mine', [span(`chan ${channel}`, channel), span('who', `${c.name}: `), document.createTextNode(describe(data) + (ok ? '' : ' (dropped)'))]);
  return ok;
}

els.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  join().catch(() => {});
});
els.leave.addEventListener('click', () => leave());
els.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = els.text.value;
  if (!text) return;
  try {
    send(els.channel.value, text);
    els.text.value = '';
  } catch (e) {
    showError(e.code ? `${e.code}: ${e.message}` : e.message);
  }
});

document.body.dataset.ready = 'true';
if (params.get('autojoin') === '1') join().catch(() => {});
