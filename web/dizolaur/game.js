// The Dizolaur page (/): lobby, the four lanes on a canvas, input, autopilot,
// results and a net-stats overlay, on a GameSession (authoritative room).
//
// What is drawn where:
//   - own runner: GameSession.predicted() (the server's newest state advanced
//     through this client's own unacknowledged inputs, reconciled on every
//     snapshot), with the obstacles placed at the scroll of that same
//     predicted tick: what you see is what you collide with.
//   - other runners: GameSession.interpolated() (between two snapshots, at
//     the estimated server tick minus the adaptive interpolation delay),
//     their obstacles at the interpolated scroll.
//
// Query parameters: name, room, autojoin=1, autoplay=1, admin_token (the
// network lab panel's, see netlab.js).
// Test hook: window.dizolaur (see `hook` below).
import { GameSession } from '/client/rtcrelay-game.js';
import * as F from './fields.js';
import { predictPlayer, raceClock, scrollAt, scrollAtRunTick } from './physics.js';
import { drawFrame } from './render.js';
import { autopilotInput } from './autopilot.js';
import { initNetlab } from './netlab.js';

const $ = (id) => document.getElementById(id);
const els = {
  joinForm: $('join-form'), name: $('name'), room: $('room'), create: $('create'), join: $('join'), leave: $('leave'),
  shareLink: $('share-link'), status: $('status'), error: $('error'),
  match: $('match'), roomName: $('room-name'), phase: $('phase'), seats: $('seats'),
  startForm: $('start-form'), fillBots: $('fill-bots'), maxSeconds: $('max-seconds'), start: $('start'),
  canvas: $('canvas'), banner: $('banner'), results: $('results'), resultsTitle: $('results-title'), ranking: $('ranking'),
  netstats: $('netstats'), netstatsToggle: $('netstats-toggle'), autoplay: $('autoplay'),
  distance: $('distance'), speed: $('speed'), youState: $('you-state'), feed: $('feed'),
  ns: {
    tick: $('ns-tick'), rtt: $('ns-rtt'), jitter: $('ns-jitter'), lossUp: $('ns-loss-up'), lossDown: $('ns-loss-down'),
    bytes: $('ns-bytes'), corrections: $('ns-corrections'), interp: $('ns-interp'), lead: $('ns-lead'),
  },
};

const PHASES = {
  [F.PHASE_LOBBY]: 'lobby',
  [F.PHASE_COUNTDOWN]: 'countdown',
  [F.PHASE_RUNNING]: 'running',
  [F.PHASE_ENDED]: 'ended',
};
const STATE_NAMES = {
  [F.STATE_EMPTY]: 'empty',
  [F.STATE_IDLE]: 'ready',
  [F.STATE_RUNNING]: 'running',
  [F.STATE_JUMPING]: 'jumping',
  [F.STATE_DUCKING]: 'ducking',
  [F.STATE_CRASHED]: 'crashed',
  [F.STATE_OUT]: 'left',
  [F.STATE_FINISHED]: 'finished',
};
const NETSTATS_INTERVAL_MS = 250;
const LOBBY_INTERVAL_MS = 200;
// Visible track per lane (px of world): the runner near the left, most of the
// 1200 px the server sends ahead.
const VIEW_SPAN_PX = 900;
const MAX_EVENTS_KEPT = 10_000;

/** Everything a test (or a curious console user) may look at. */
const hook = {
  /** @type {GameSession | null} */
  session: null,
  /** 'lobby' | 'countdown' | 'running' | 'ended' | null (not connected). */
  phase: null,
  /** Lanes from the newest snapshot: [{lane, entity, peer, bot, name, state, distance, me, away}]; empty seats omitted. */
  seats: [],
  /** Every event object received, in order (each id once). */
  events: [],
  /** Number of match_end events received. */
  matchEnds: 0,
  /** The last match_end event object. */
  result: null,
  /** Canvas frames drawn. */
  frames: 0,
  /** The input byte last given to setInput. */
  input: 0,
  /** Text of the net-stats overlay fields, refreshed ~4 Hz. */
  netstats: {},
  join,
  create,
  leave,
  /** Sends the start command: opts {bots, maxSeconds}; defaults from the lobby form. */
  start,
  /** Turns the autopilot on or off. */
  setAutoplay,
  /** The network lab panel: {state, refresh(), apply(setting?), clear()} (netlab.js). */
  netlab: null,
  /**
   * The connection as the status line shows it: state "open" |
   * "reconnecting" | "failed" | null (not joined); attempt (of the current
   * reconnection); log: the relay's reconnecting / resumed / resumefailed /
   * peeraway / peerback events in order, each {type, ...detail}.
   */
  connection: { state: null, attempt: 0, log: [] },
};
window.dizolaur = hook;

const params = new URLSearchParams(location.search);
els.name.value = params.get('name') ?? sessionStorage.getItem('dizolaur.name') ?? `dino-${Math.floor(Math.random() * 9000 + 1000)}`;
els.room.value = params.get('room') ?? 'dizolaur';
els.autoplay.checked = params.get('autoplay') === '1';
els.maxSeconds.min = String(F.MIN_MAX_SECONDS);
els.maxSeconds.max = String(F.MAX_MAX_SECONDS);
els.maxSeconds.value = String(F.DEFAULT_MAX_SECONDS);
updateShareLink();

const ctx = els.canvas.getContext('2d');
els.canvas.width = VIEW_SPAN_PX;
els.canvas.height = F.LANE_HEIGHT_PX * F.LANE_COUNT;

let lobbyTimer = null;
let netstatsTimer = null;
const held = { jump: false, duck: false };

// ---- connection -------------------------------------------------------------

function setStatus(state, text) {
  els.status.dataset.state = state;
  els.status.textContent = text;
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = !message;
}

function updateShareLink() {
  const room = els.room.value.trim();
  const url = new URL(location.pathname, location.origin);
  if (room) url.searchParams.set('room', room);
  els.shareLink.href = url.href;
  els.shareLink.textContent = url.href;
}

function setJoined(joined) {
  els.name.disabled = joined;
  els.room.disabled = joined;
  els.create.disabled = joined;
  els.join.disabled = joined;
  els.leave.disabled = !joined;
  els.match.hidden = !joined;
}

function create() {
  const suffix = Math.random().toString(36).slice(2, 7);
  els.room.value = `dizolaur-${suffix}`;
  return join();
}

async function join(name = els.name.value.trim(), room = els.room.value.trim()) {
  if (hook.session) return hook.session;
  showError('');
  els.name.value = name;
  els.room.value = room;
  updateShareLink();
  sessionStorage.setItem('dizolaur.name', name);
  setJoined(true);
  setStatus('connecting', 'connecting…');
  let session;
  try {
    session = await GameSession.connect({ room, name, predictor: { step: predictPlayer } });
  } catch (e) {
    setJoined(false);
    setStatus('error', `failed: ${e.code ?? 'error'}`);
    showError(e.code ? `${e.code}: ${e.message}` : String(e));
    throw e;
  }
  hook.session = session;
  hook.events = [];
  hook.matchEnds = 0;
  hook.result = null;
  hook.connection = { state: 'open', attempt: 0, log: [] };
  history.replaceState(null, '', `?room=${encodeURIComponent(room)}`);
  setStatus('open', `connected as #${session.relay.peerId} (${session.hello.game}, ${session.hello.tickRate} Hz)`);
  watchConnection(session);
  els.roomName.textContent = room;

  session.addEventListener('snapshot', () => adoptOwnLane(session));
  session.addEventListener('event', (e) => onGameEvent(e.detail));
  session.addEventListener('error', (e) => showError(`${e.detail.code}: ${e.detail.message}`));
  session.addEventListener('close', (e) => {
    const reason = e.detail?.reason;
    if (hook.session !== session) return;
    if (hook.connection.state === 'failed') teardown('error', reason, `Could not reconnect (${hook.connection.failure}).`);
    else teardown(reason === 'closed' || reason === 'left' ? 'idle' : 'closed', reason);
  });

  clearInterval(lobbyTimer);
  lobbyTimer = setInterval(updateLobby, LOBBY_INTERVAL_MS);
  clearInterval(netstatsTimer);
  netstatsTimer = setInterval(updateNetstats, NETSTATS_INTERVAL_MS);
  // The input is decided right before the session samples it for the next
  // tick: the autopilot then acts on the newest prediction (the tick timer
  // keeps running in a hidden tab, unlike animation frames).
  const sessionTick = session.tick.bind(session);
  session.tick = (now) => {
    applyInput();
    sessionTick(now);
  };
  updateLobby();
  els.canvas.focus();
  return session;
}

/**
 * The library reconnects by itself (same seat, same peer id) within the
 * room's grace period; the page only tells the player, and marks the other
 * players whose connection is lost.
 */
function watchConnection(session) {
  const relay = session.relay;
  const current = () => hook.session === session;
  const log = (type, detail) => {
    if (hook.connection.log.length < MAX_EVENTS_KEPT) hook.connection.log.push({ type, ...detail });
  };
  relay.on('reconnecting', (d) => {
    if (!current()) return;
    log('reconnecting', d);
    hook.connection.state = 'reconnecting';
    hook.connection.attempt = d.attempt;
    setStatus('reconnecting', `Connection lost — reconnecting (attempt ${d.attempt})…`);
  });
  relay.on('resumed', (d) => {
    if (!current()) return;
    log('resumed', d);
    hook.connection.state = 'open';
    hook.connection.attempt = 0;
    setStatus('open', `Reconnected as #${d.peerId}.`);
  });
  relay.on('resumefailed', (d) => {
    if (!current()) return;
    log('resumefailed', d);
    hook.connection.state = 'failed';
    hook.connection.failure = d.code;
    setStatus('error', `Could not reconnect (${d.code}).`);
    showError(`${d.code}: ${d.message}`);
  });
  for (const type of ['peeraway', 'peerback']) {
    relay.on(type, (d) => {
      if (!current()) return;
      log(type, d);
      updateLobby();
    });
  }
}

function teardown(state, reason, text) {
  clearInterval(lobbyTimer);
  clearInterval(netstatsTimer);
  lobbyTimer = netstatsTimer = null;
  obstacleCache.clear();
  hook.session = null;
  hook.phase = null;
  hook.seats = [];
  hook.connection = { ...hook.connection, state: hook.connection.state === 'failed' ? 'failed' : null };
  setJoined(false);
  setStatus(state, text ?? (state === 'idle' ? 'Not connected.' : `disconnected (${reason ?? 'closed'})`));
  renderSeats();
  els.phase.textContent = '–';
  els.phase.dataset.phase = '';
}

function leave() {
  const s = hook.session;
  if (!s) return;
  s.relay.leave();
  s.close();
  if (hook.session === s) teardown('idle');
}

function start({ bots = els.fillBots.checked, maxSeconds = Number(els.maxSeconds.value) } = {}) {
  const s = hook.session;
  if (!s) throw new Error('not joined');
  const command = { start: { bots: Boolean(bots) } };
  if (Number.isFinite(maxSeconds) && maxSeconds > 0) command.start.max_seconds = Math.round(maxSeconds);
  s.command(command);
  return command;
}

// ---- state → lobby ----------------------------------------------------------

function nameOf(peer) {
  const s = hook.session;
  if (!s || !peer) return null;
  if (peer === s.relay.peerId) return s.relay.name;
  return s.relay.roster.get(peer)?.name ?? `#${peer}`;
}

/** The seated lanes of a state (Map id → entity). */
function seatsOf(state) {
  const seats = [];
  const me = hook.session?.relay.peerId ?? null;
  for (let lane = 0; lane < F.LANE_COUNT; lane++) {
    const e = state?.get(F.LANE_ID_BASE + lane);
    if (!e || e.fields[F.P_STATE] === F.STATE_EMPTY) continue;
    const peer = e.fields[F.P_PEER] >>> 0;
    const bot = e.fields[F.P_BOT] === 1;
    // Own seat: while this page reconnects; others: between peer_away and peer_back.
    const away = !bot && (peer === me ? hook.connection.state === 'reconnecting' : hook.session?.relay.roster.get(peer)?.away === true);
    seats.push({
      lane,
      entity: e.id,
      peer: bot ? null : peer,
      bot,
      name: bot ? `bot ${lane + 1}` : nameOf(peer),
      state: STATE_NAMES[e.fields[F.P_STATE]] ?? String(e.fields[F.P_STATE]),
      distance: e.fields[F.P_DISTANCE],
      place: e.fields[F.P_PLACE],
      me: !bot && peer === me,
      away,
    });
  }
  return seats;
}

/**
 * Predicts the lane this peer sits in. The hello names it when the seat is
 * given at join; a seat taken later (one freed by a bot, or a new match)
 * shows up only in snapshots.
 */
function adoptOwnLane(s) {
  const me = s.relay.peerId;
  let id = null;
  for (let lane = 0; lane < F.LANE_COUNT && id === null; lane++) {
    const e = s.state?.get(F.LANE_ID_BASE + lane);
    if (e && e.fields[F.P_BOT] !== 1 && e.fields[F.P_STATE] !== F.STATE_EMPTY && (e.fields[F.P_PEER] >>> 0) === me) id = e.id;
  }
  if (id === null || s.entity === id) return;
  if (typeof s.setOwnEntity === 'function') s.setOwnEntity(id);
  else if (s.hello) s.hello.entity = id;
}

/** The own lane entity id: the hello's, else the lane this peer sits in. */
function ownEntity() {
  const s = hook.session;
  if (!s) return null;
  if (s.entity !== null) return s.entity;
  return hook.seats.find((seat) => seat.me)?.entity ?? null;
}

function matchFields(state) {
  return state?.get(F.MATCH_ID)?.fields ?? null;
}

function updateLobby() {
  const s = hook.session;
  if (!s) return;
  const state = s.state;
  const match = matchFields(state);
  hook.phase = match ? PHASES[match[F.M_PHASE]] ?? null : null;
  hook.seats = seatsOf(state);
  els.phase.textContent = hook.phase ?? 'waiting for the first snapshot';
  els.phase.dataset.phase = hook.phase ?? '';
  renderSeats();
  const seated = hook.seats.some((seat) => seat.me);
  els.start.disabled = !(seated && (hook.phase === 'lobby' || hook.phase === 'ended'));
  els.start.title = seated ? '' : 'Only seated players can start a match';
}

function renderSeats() {
  const items = [];
  for (let lane = 0; lane < F.LANE_COUNT; lane++) {
    const seat = hook.seats.find((x) => x.lane === lane);
    const li = document.createElement('li');
    li.dataset.lane = String(lane);
    if (!seat) {
      li.className = 'empty';
      li.textContent = `${lane + 1}. empty`;
    } else {
      if (seat.me) li.className = 'me';
      if (seat.away) li.classList.add('away');
      li.dataset.bot = String(seat.bot);
      li.dataset.away = String(seat.away);
      li.append(`${lane + 1}. ${seat.name}${seat.me ? ' (you)' : ''}`);
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = seat.bot ? 'bot' : seat.away ? `${seat.state} · connection lost` : seat.state;
      li.append(tag);
    }
    items.push(li);
  }
  els.seats.replaceChildren(...items);
}

// ---- events -------------------------------------------------------------------

// Dizolaur's events are {kind: "match_start" | "score" | "player_out" |
// "match_end", ...} (relay/src/dizolaur/mod.rs); the session delivers each
// event id once, in the order received.
function onGameEvent({ event }) {
  if (hook.events.length < MAX_EVENTS_KEPT) hook.events.push(event);
  switch (event?.kind) {
    case 'match_start':
      els.results.hidden = true;
      showFeed(`Match ${event.match} starts: ${event.max_seconds} s at most.`);
      break;
    case 'score':
      showFeed(`${laneLabel(event)} passed ${event.distance} m.`);
      break;
    case 'player_out':
      showFeed(`${laneLabel(event)} ${event.reason === 'left' ? 'left' : 'crashed'} at ${event.distance} m.`);
      break;
    case 'match_end':
      hook.matchEnds++;
      hook.result = event;
      showFeed('Match over.');
      showResults(event);
      break;
    default:
      break;
  }
}

function showFeed(text) {
  els.feed.textContent = text;
}

/** Who an event or ranking entry {lane, peer, bot} is about. */
function laneLabel(entry) {
  const lane = Number.isInteger(entry.lane) ? entry.lane : null;
  if (entry.bot) return lane === null ? 'a bot' : `bot ${lane + 1}`;
  return nameOf(entry.peer) ?? (lane === null ? '?' : `lane ${lane + 1}`);
}

function showResults(body) {
  const ranking = Array.isArray(body.ranking) ? body.ranking : [];
  const winners = new Set(Array.isArray(body.winners) ? body.winners : []);
  const me = hook.session?.relay.peerId;
  const items = ranking.map((entry) => {
    const li = document.createElement('li');
    const won = winners.has(entry.lane);
    if (won) li.className = 'winner';
    if (!entry.bot && entry.peer === me) li.classList.add('me');
    li.textContent = `${laneLabel(entry)} · ${entry.distance} m${won ? ' · winner' : ''}`;
    li.dataset.lane = String(entry.lane);
    return li;
  });
  els.ranking.replaceChildren(...items);
  const iWon = ranking.some((entry) => !entry.bot && entry.peer === me && winners.has(entry.lane));
  els.resultsTitle.textContent = iWon ? 'You win!' : 'Results';
  els.results.hidden = false;
}

// ---- input ------------------------------------------------------------------------

function setAutoplay(on) {
  els.autoplay.checked = Boolean(on);
  applyInput();
}

/** Computes this tick's input byte and hands it to the session. */
function applyInput() {
  const s = hook.session;
  if (!s) return;
  let input = (held.jump ? F.INPUT_JUMP : 0) | (held.duck ? F.INPUT_DUCK : 0);
  // The autopilot says 0 outside the race (countdown, crashed, ended).
  if (els.autoplay.checked) {
    const fields = s.predicted();
    if (fields && s.state) input = autopilotInput(fields, s.state);
  }
  if (input !== hook.input) {
    hook.input = input;
    s.setInput(input);
  }
}

const JUMP_KEYS = new Set([' ', 'Spacebar', 'ArrowUp', 'w', 'W']);
const DUCK_KEYS = new Set(['ArrowDown', 's', 'S']);

function typing(event) {
  const t = event.target;
  return (t instanceof HTMLInputElement && t.type !== 'checkbox') || t instanceof HTMLSelectElement;
}

window.addEventListener('keydown', (event) => {
  if (typing(event)) return;
  if (JUMP_KEYS.has(event.key)) held.jump = true;
  else if (DUCK_KEYS.has(event.key)) held.duck = true;
  else if (event.key === 'n' || event.key === 'N') toggleNetstats();
  else return;
  event.preventDefault();
  applyInput();
});
window.addEventListener('keyup', (event) => {
  if (JUMP_KEYS.has(event.key)) held.jump = false;
  else if (DUCK_KEYS.has(event.key)) held.duck = false;
  else return;
  applyInput();
});
window.addEventListener('blur', () => {
  held.jump = held.duck = false;
  applyInput();
});
els.canvas.addEventListener('pointerdown', (event) => {
  event.preventDefault();
  els.canvas.focus();
  held.jump = true;
  applyInput();
});
for (const type of ['pointerup', 'pointercancel', 'pointerleave']) {
  els.canvas.addEventListener(type, () => {
    held.jump = false;
    applyInput();
  });
}
els.autoplay.addEventListener('change', () => applyInput());

// ---- drawing ------------------------------------------------------------------------

// Obstacles seen this match, by id. Snapshots carry only those near the
// newest scroll; a lane drawn at an older scroll (a crashed runner stays
// where it hit) still shows the ones it passed. Obstacles never move.
const obstacleCache = new Map();
const OBSTACLE_CACHE_MAX = 256;
let obstacleCacheMatch = null;

function obstaclesOf(state, match) {
  const matchNumber = match ? match[F.M_MATCH] : null;
  if (matchNumber !== obstacleCacheMatch) {
    obstacleCache.clear();
    obstacleCacheMatch = matchNumber;
  }
  if (state) {
    for (const e of state.values()) {
      if (e.id >= F.OBSTACLE_ID_BASE && F.isObstacleKind(e.kind) && e.fields.length >= F.OBSTACLE_FIELDS) obstacleCache.set(e.id, e);
    }
  }
  // Ids grow along the track: drop the oldest first.
  if (obstacleCache.size > OBSTACLE_CACHE_MAX) {
    const ids = [...obstacleCache.keys()].sort((a, b) => a - b);
    for (const id of ids.slice(0, obstacleCache.size - OBSTACLE_CACHE_MAX)) obstacleCache.delete(id);
  }
  return [...obstacleCache.values()];
}

/** A crashed (or departed) runner's lane stays at the scroll of its out tick. */
function laneScroll(fields, match, scroll) {
  if (!fields || !match) return scroll;
  const state = Math.round(fields[F.P_STATE]);
  const outTick = Math.round(fields[F.P_OUT_TICK]);
  if ((state === F.STATE_CRASHED || state === F.STATE_OUT) && outTick > 0) {
    // By the race clock, whatever the phase (the scene stays put after the end too).
    const { startTick, maxTicks } = raceClock(match);
    return scrollAtRunTick(Math.min(outTick - startTick, maxTicks));
  }
  return scroll;
}

const OBSTACLE_KIND = {
  [F.KIND_CACTUS_SMALL]: 'cactus',
  [F.KIND_CACTUS_LARGE]: 'cactus',
  [F.KIND_BIRD_LOW]: 'bird',
  [F.KIND_BIRD_MID]: 'bird',
  [F.KIND_BIRD_HIGH]: 'bird',
};

function laneView(lane, fields, scroll, obstacles, seat) {
  const state = fields ? Math.round(fields[F.P_STATE]) : F.STATE_EMPTY;
  const empty = !fields || state === F.STATE_EMPTY;
  const ducking = state === F.STATE_DUCKING;
  const box = ducking ? F.DUCK_HITBOX : F.STAND_HITBOX;
  const crashed = state === F.STATE_CRASHED || state === F.STATE_OUT;
  return {
    seat: lane + 1,
    name: seat?.name ?? null,
    me: seat?.me ?? false,
    bot: seat?.bot ?? false,
    empty,
    crashed: crashed && !(fields?.[F.P_PENDING] >= 1),
    pending: crashed && fields?.[F.P_PENDING] >= 1,
    y: fields ? Math.max(0, fields[F.P_Y]) : 0,
    x0: box.x0,
    w: box.x1 - box.x0,
    h: box.h,
    distance: fields ? fields[F.P_DISTANCE] : 0,
    obstacles: obstacles.filter((o) => o.fields[F.O_X] + o.fields[F.O_W] > scroll && o.fields[F.O_X] < scroll + VIEW_SPAN_PX * F.UNITS_PER_PX).map((o) => ({
      x: o.fields[F.O_X] - scroll,
      y: o.fields[F.O_Y],
      w: o.fields[F.O_W],
      h: o.fields[F.O_H],
      kind: OBSTACLE_KIND[o.kind] ?? 'obstacle',
    })),
  };
}

/** Picks the discrete value of an interpolated entity (the nearer snapshot's). */
function discrete(e, index) {
  return (e.alpha >= 0.5 ? e.to : e.from)[index];
}

function buildView(now) {
  const s = hook.session;
  const view = {
    span: VIEW_SPAN_PX * F.UNITS_PER_PX,
    runnerX: F.RUNNER_X,
    laneHeight: F.GROUND_FROM_TOP_PX * F.UNITS_PER_PX,
    lanes: [],
  };
  const state = s?.state ?? null;
  const match = matchFields(state);
  const newestTick = s?.latest()?.tick ?? 0;
  const obstacles = obstaclesOf(state, match);
  const own = ownEntity();
  const ownFields = s?.predicted() ?? null;
  const remoteMatch = s ? s.interpolated(F.MATCH_ID, now) : null;
  const remoteScroll = remoteMatch ? remoteMatch.fields[F.M_SCROLL] : match?.[F.M_SCROLL] ?? 0;
  for (let lane = 0; lane < F.LANE_COUNT; lane++) {
    const id = F.LANE_ID_BASE + lane;
    const seat = hook.seats.find((x) => x.lane === lane) ?? null;
    if (id === own && ownFields && match) {
      // The scroll of the predicted tick: obstacles are where the runner
      // will meet them.
      const scroll = laneScroll(ownFields, match, scrollAt(s.predictedTick ?? newestTick, match));
      view.lanes.push(laneView(lane, ownFields, scroll, obstacles, seat));
      continue;
    }
    const e = s ? s.interpolated(id, now) : null;
    let fields = null;
    if (e) {
      fields = Array.from(e.fields);
      fields[F.P_STATE] = discrete(e, F.P_STATE);
      fields[F.P_PENDING] = discrete(e, F.P_PENDING);
      fields[F.P_DISTANCE] = discrete(e, F.P_DISTANCE);
      fields[F.P_OUT_TICK] = discrete(e, F.P_OUT_TICK);
    }
    view.lanes.push(laneView(lane, fields, laneScroll(fields, match, remoteScroll), obstacles, seat));
  }
  return { view, match, ownFields };
}

function updateHud(match, ownFields) {
  els.distance.textContent = ownFields ? String(ownFields[F.P_DISTANCE]) : '0';
  els.speed.textContent = match && match[F.M_SPEED] ? `${(match[F.M_SPEED] / F.UNITS_PER_PX).toFixed(1)} px/tick` : '–';
  const state = ownFields ? STATE_NAMES[ownFields[F.P_STATE]] : null;
  const pending = ownFields?.[F.P_PENDING] >= 1 ? ' (pending)' : '';
  els.youState.textContent = state ? `you: ${state}${pending}` : hook.session ? 'spectating' : '–';

  let banner = '';
  if (hook.phase === 'countdown' && match) {
    const left = Math.max(0, match[F.M_COUNTDOWN]) / (hook.session?.hello.tickRate ?? F.TICK_RATE);
    banner = String(Math.max(1, Math.ceil(left)));
  } else if (hook.phase === 'running' && match) {
    const tick = hook.session?.latest()?.tick ?? 0;
    if (tick - match[F.M_START_TICK] < F.TICK_RATE / 2) banner = 'GO!';
  } else if (hook.phase === 'lobby') {
    banner = hook.session ? 'Waiting for start' : '';
  }
  els.banner.textContent = banner;
  els.banner.hidden = !banner;
}

function frame() {
  const now = performance.now();
  const { view, match, ownFields } = buildView(now);
  drawFrame(ctx, view);
  updateHud(match, ownFields);
  hook.frames++;
  requestAnimationFrame(frame);
}

// ---- net stats ------------------------------------------------------------------------

function toggleNetstats(show = els.netstats.hidden) {
  els.netstats.hidden = !show;
  updateNetstats();
}

function fmt(v, digits = 0, unit = '') {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : `${v.toFixed(digits)}${unit}`;
}

function updateNetstats() {
  const s = hook.session;
  if (!s) return;
  const n = s.netStats(performance.now());
  const est = s.serverTickNow(performance.now());
  const text = {
    tick: `${n.snapshotTick ?? '–'} / ${est === null ? '–' : Math.floor(est)}`,
    rtt: fmt(n.rttMs, 1, ' ms'),
    jitter: fmt(n.jitterMs, 1, ' ms'),
    lossUp: n.lossUp === null ? '–' : fmt(n.lossUp * 100, 1, ' %'),
    lossDown: fmt(n.lossDown * 100, 1, ' %'),
    bytes: `${fmt(n.snapshotBytesPerSec / 1000, 2, ' kB/s')} (${fmt(n.snapshotsPerSec, 0, '/s')})`,
    corrections: String(n.corrections),
    interp: fmt(n.interpDelayMs, 0, ' ms'),
    lead: `${n.inputLead} ticks`,
  };
  hook.netstats = { ...text, snapshotBytesPerSec: n.snapshotBytesPerSec };
  for (const [key, value] of Object.entries(text)) els.ns[key].textContent = value;
}

// ---- wiring ----------------------------------------------------------------------------

els.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  join().catch(() => {});
});
els.create.addEventListener('click', () => create().catch(() => {}));
els.leave.addEventListener('click', () => leave());
els.room.addEventListener('input', updateShareLink);
els.startForm.addEventListener('submit', (event) => {
  event.preventDefault();
  try {
    start();
  } catch (e) {
    showError(e.message);
  }
});
els.netstatsToggle.addEventListener('click', () => toggleNetstats());

hook.netlab = initNetlab({ session: () => hook.session, onApplied: () => hook.session && toggleNetstats(true) });

renderSeats();
requestAnimationFrame(frame);
document.body.dataset.ready = 'true';
if (params.get('autojoin') === '1') join().catch(() => {});
