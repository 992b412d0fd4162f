// rtcrelay browser client: joins a room over the signaling WebSocket, opens a
// WebRTC session with the server peer and exchanges messages with the other
// members over two DataChannels. Plain ES module, no dependencies, no build.
// Typings and API docs: rtcrelay.d.ts next to this file.
//
// Wire contract (protocol crate, v1):
//   signaling: JSON text over GET /ws (join, welcome, offer, answer, candidate,
//              ready, peer_joined, peer_left, peer_away, peer_back, error,
//              ping/pong, leave, draining; join.token carries a join token
//              when the server requires one, join.resume a resume token)
//   channels:  "realtime" {ordered:false, maxRetransmits:0} and "control"
//              (reliable, ordered), both opened by the client before the offer
//   frames:    the server relays [0x01][flags bit0=text][sender u32 BE][payload];
//              heartbeat [0x04] on control (ignored)
//   authoritative rooms: the server peer itself sends and receives, unframed
//              (game frames on realtime, JSON text on control; from = 0);
//              rtcrelay-game.js speaks that protocol
//   p2p rooms: no session with the server peer; one RTCPeerConnection per
//              other member (full mesh), negotiated through signaling
//              {type:"signal", to|from, data}: the newcomer offers to every
//              member of its welcome roster, the others answer. data is
//              {description:{type,sdp}} or {candidate:RTCIceCandidateInit}.
//              Messages travel unframed, straight between members.
//   reconnection (relay and authoritative rooms; docs/browser-library.md):
//              the welcome's resume_token gets the seat back after a lost
//              connection: a new offer on the same WebSocket after our own
//              peer_away, or a new WebSocket whose join carries
//              resume: <token> (welcome.resumed), then a new offer.

export const PROTOCOL_VERSION = 1;

/** Payload limits (bytes) the server enforces; bigger messages are dropped by it. */
export const LIMITS = Object.freeze({
  realtime: 1200 - 6,
  control: 16 * 1024 - 6,
});

/** `from` of messages in authoritative rooms: the server peer itself. */
export const SERVER_PEER = 0;

const CHANNELS = ['realtime', 'control'];
const FRAME_RELAYED = 0x01;
const RELAYED_HEADER_LEN = 6;
const FLAG_TEXT = 0x01;
// The server's heartbeat: one binary byte on `control`, in every room kind.
// It only makes the browser's SCTP stack acknowledge something, which tells
// the server the client is alive (protocol.md 2.3).
const FRAME_HEARTBEAT = 0x04;
// An unreliable lane is for fresh data: once this much is queued in the
// browser, newer messages are worth more than the backlog, so send() drops.
const REALTIME_MAX_BUFFERED = 64 * 1024;
// How long a closed DataChannel waits for the server to explain, and how
// long close() keeps the peer connection while the WebSocket closes.
const CHANNEL_CLOSE_GRACE_MS = 2000;
const PC_CLOSE_LINGER_MS = 1000;
// Events raised before connect() resolves are held this many at most, so a
// chatty room cannot grow memory while the caller is still awaiting.
const MAX_EARLY_EVENTS = 1024;
// Reconnection defaults: the server heartbeats `control` every second, so
// 5 s of silence is several missed heartbeats (the server's own dead_after
// is 5 s too); backoff starts small because most losses are brief.
const DEFAULT_DEAD_AFTER_MS = 5000;
const DEFAULT_RECONNECT_MIN_DELAY_MS = 250;
const DEFAULT_RECONNECT_MAX_DELAY_MS = 5000;
// A signaling ping that tells whether the WebSocket still works when the
// WebRTC session went quiet.
const SIGNALING_PROBE_MS = 2000;
// After our own silence detection, how much longer than dead_after the
// server may take to notice too and send peer_away on a live WebSocket.
const PEER_AWAY_SLACK_MS = 1000;
// Our grace deadline starts from when we noticed, the server's from when it
// did: give up this much after ours, so a seat still held is not given up.
const GRACE_SLACK_MS = 1000;
// Errors after which another resume attempt may succeed; any other ends
// reconnection (resume_expired, resume_invalid, draining, ...).
const RETRYABLE_RESUME_ERRORS = new Set([
  'timeout', 'signaling_failed', 'signaling_closed', 'ice_failed', 'channel_closed',
  'rate_limited', 'server_full', 'unavailable', 'internal', 'session_exists', 'no_session',
  'bad_candidate', 'bad_sdp',
]);
// Close code the server uses for a connection whose seat a resume on
// another connection took over.
const CLOSE_RESUMED_ELSEWHERE = 4001;

/** An error with a stable `code`: a server ErrorCode (e.g. "room_full") or a client one. */
export class RtcRelayError extends Error {
  constructor(code, message, { fatal = false, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'RtcRelayError';
    this.code = code;
    this.fatal = fatal;
  }
}

/**
 * Decodes a relayed frame. Returns {from, text, payload} or throws RtcRelayError
 * with code "bad_frame".
 */
export function decodeRelayed(buffer) {
  const bytes = ArrayBuffer.isView(buffer)
    ? new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    : new Uint8Array(buffer);
  if (bytes.length === 0) throw new RtcRelayError('bad_frame', 'frame is empty');
  if (bytes[0] !== FRAME_RELAYED) {
    throw new RtcRelayError('bad_frame', `unknown frame type 0x${bytes[0].toString(16).padStart(2, '0')}`);
  }
  if (bytes.length < RELAYED_HEADER_LEN) {
    throw new RtcRelayError('bad_frame', `frame is ${bytes.length} bytes, shorter than its header`);
  }
  const flags = bytes[1];
  if ((flags & ~FLAG_TEXT) !== 0) {
    throw new RtcRelayError('bad_frame', `reserved flag bits set: 0x${flags.toString(16)}`);
  }
  const from = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(2, false);
  const payload = bytes.slice(RELAYED_HEADER_LEN);
  const text = (flags & FLAG_TEXT) !== 0;
  return { from, text, payload };
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

function defaultUrl() {
  if (typeof location === 'undefined') {
    throw new RtcRelayError('bad_options', 'no url given and no page location to derive it from');
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

const TURN_TRANSPORTS = ['udp', 'tcp', 'tls'];

/**
 * The transport of an ICE server URL: "tls" for turns:, "tcp" for
 * turn:…?transport=tcp, "udp" for other turn: URLs (RFC 7065's default), null
 * for anything that is not TURN (stun: and the like).
 */
export function turnTransportOf(url) {
  const m = /^(turns?):([^?]*)(?:\?(.*))?$/i.exec(String(url).trim());
  if (!m) return null;
  if (m[1].toLowerCase() === 'turns') return 'tls';
  return /(?:^|&)transport=tcp(?:&|$)/i.test(m[3] ?? '') ? 'tcp' : 'udp';
}

/**
 * `servers` with only the TURN URLs whose transport is in `transports` (other
 * URLs kept); servers left without URLs are dropped. `transports` undefined:
 * `servers` unchanged.
 */
function filterTurnTransports(servers, transports) {
  if (transports === undefined) return servers;
  const out = [];
  for (const server of servers) {
    const urls = (Array.isArray(server.urls) ? server.urls : [server.urls]).filter((url) => {
      const t = turnTransportOf(url);
      return t === null || transports.includes(t);
    });
    if (urls.length > 0) out.push({ ...server, urls });
  }
  return out;
}

function byteLengthOf(data) {
  if (typeof data === 'string') return utf8Encoder.encode(data).byteLength;
  return data.byteLength;
}

/**
 * A member of one rtcrelay room. Create with `await RtcRelay.connect(...)`.
 * Events (all CustomEvent, payload in `event.detail`): message, peerjoined,
 * peerleft, error, statechange, close.
 */
export class RtcRelay extends EventTarget {
  /**
   * Joins a room and resolves once both DataChannels are open and the server
   * has confirmed them ("ready").
   */
  static async connect(options) {
    const client = new RtcRelay(options);
    await client._connect();
    return client;
  }

  constructor(options = {}) {
    super();
    if (!options || typeof options.room !== 'string' || typeof options.name !== 'string') {
      throw new RtcRelayError('bad_options', 'connect() needs { room, name } strings');
    }
    this._options = {
      kind: 'relay',
      timeoutMs: 15000,
      iceServers: [],
      reconnect: true,
      deadAfterMs: DEFAULT_DEAD_AFTER_MS,
      reconnectMinDelayMs: DEFAULT_RECONNECT_MIN_DELAY_MS,
      reconnectMaxDelayMs: DEFAULT_RECONNECT_MAX_DELAY_MS,
      ...options,
    };
    for (const key of ['deadAfterMs', 'reconnectMinDelayMs', 'reconnectMaxDelayMs']) {
      const v = this._options[key];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new RtcRelayError('bad_options', `${key} must be a number of milliseconds >= 0`);
      }
    }
    const transports = this._options.turnTransports;
    if (transports !== undefined
      && (!Array.isArray(transports) || !transports.every((t) => TURN_TRANSPORTS.includes(t)))) {
      throw new RtcRelayError('bad_options', `turnTransports must be an array of ${TURN_TRANSPORTS.map((t) => `"${t}"`).join(', ')}`);
    }
    this.url = this._options.url ?? defaultUrl();
    this.room = this._options.room;
    this.name = this._options.name;
    this.kind = this._options.kind;
    /** @type {number | null} */
    this.peerId = null;
    this.capacity = null;
    /** Other members: peerId -> { peerId, name }. */
    this.roster = new Map();
    this.serverChannels = null;
    this.iceServers = [];
    this.signalingRtt = null;
    this._state = 'new';
    this._ws = null;
    this._pc = null;
    this._channels = { realtime: null, control: null };
    this._pings = new Map();
    this._nextPingId = 1;
    this._early = [];
    this._live = false;
    this._closed = false;
    this._pendingRemoteCandidates = [];
    this._remoteDescriptionSet = false;
    // P2p rooms: the connection to each other member, by peer id, and the
    // members of the welcome roster whose channels are not open yet.
    this._mesh = new Map();
    this._awaiting = new Set();
    this._welcomed = false;
    this._lastMeshState = null;
    // Signaling messages are handled one at a time, in order: the answer must
    // be applied before the server's candidates that follow it.
    this._signalQueue = Promise.resolve();
    // Reconnection: the newest resume token (each welcome replaces it), the
    // room's grace period, when something last arrived on a DataChannel.
    this._resumeToken = null;
    this._resumeGraceMs = 0;
    this._lastHeardAt = 0;
    this._livenessTimer = null;
    this._disconnectedTimer = null;
    // The server said our own WebRTC session is gone while the WebSocket
    // lives: the next attempt offers on that WebSocket.
    this._selfAway = false;
    this._graceDeadline = 0;
    this._triedSameSocket = false;
    // The resume attempt in progress: {phase: "welcome" | "session", resolve, reject}.
    this._attempt = null;
    // WebSockets given up for a new one, left open: a Close frame would
    // release the seat; the server closes them once the resume arrives.
    this._abandoned = new Set();
    this._wakers = new Set();
    this._drainingSeen = false;
  }

  /** "new" | "connecting" | "open" | "reconnecting" | "closed". */
  get state() {
    return this._state;
  }

  /** The newest resume token from the server's welcome, or null (p2p rooms, resume disabled). */
  get resumeToken() {
    return this._resumeToken;
  }

  /** The room's grace period for a lost connection (ms, from the welcome); 0 without resume. */
  get resumeGraceMs() {
    return this._resumeGraceMs;
  }

  /**
   * The RTCPeerConnection's connectionState, or "new" before it exists. In
   * p2p rooms: the least advanced state among the connections to the other
   * members ("connected" when there are none and the client is open).
   */
  get connectionState() {
    if (this.kind === 'p2p') return this._meshConnectionState();
    return this._pc ? this._pc.connectionState : 'new';
  }

  /** The underlying RTCPeerConnection (for stats and debugging); null in p2p rooms. */
  get peerConnection() {
    return this._pc;
  }

  /**
   * The RTCDataChannel of the given label. In p2p rooms pass the member's
   * peer id: the channel to that member, null if there is none.
   */
  channel(label, peerId) {
    if (this.kind === 'p2p') return this._mesh.get(peerId)?.channels[label] ?? null;
    return this._channels[label] ?? null;
  }

  /** P2p rooms: the RTCPeerConnection to another member, or null. */
  peerConnectionTo(peerId) {
    return this._mesh.get(peerId)?.pc ?? null;
  }

  /**
   * P2p rooms: the state of the connection to another member: "connecting",
   * "open" (both channels open) or null (none, or closed).
   */
  peerState(peerId) {
    const m = this._mesh.get(peerId);
    if (!m) return null;
    return m.open ? 'open' : 'connecting';
  }

  /** P2p rooms: the peer ids of the members whose channels are open. */
  get connectedPeers() {
    return [...this._mesh.values()].filter((m) => m.open).map((m) => m.peerId);
  }

  /**
   * Subscribes to an event; `handler` gets the event's detail. Returns a
   * function that unsubscribes.
   */
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Sends a message to every other member on `channel`. Strings arrive as
   * strings, binary as ArrayBuffer. Returns false if a realtime message was
   * dropped because the browser's send buffer is backed up.
   */
  send(channel, data) {
    if (this.kind === 'p2p') return this._sendMesh(channel, data);
    const dc = this._channels[channel];
    if (!CHANNELS.includes(channel)) {
      throw new RtcRelayError('bad_channel', `channel must be "realtime" or "control", not ${String(channel)}`);
    }
    // While reconnecting there is no channel until the new session's open
    // (the server may speak on it before its "ready" arrives).
    if (!dc || dc.readyState !== 'open' || this._state === 'closed') {
      throw new RtcRelayError('not_open', `channel ${channel} is not open`);
    }
    return this._sendOn(dc, channel, this._payloadOf(channel, data));
  }

  /**
   * P2p rooms only: sends to one member. Returns false if a realtime
   * message was dropped because the send buffer to that member is backed up.
   */
  sendTo(peerId, channel, data) {
    if (this.kind !== 'p2p') {
      throw new RtcRelayError('wrong_room_kind', `sendTo() is for p2p rooms; this is a ${this.kind} room`);
    }
    if (!CHANNELS.includes(channel)) {
      throw new RtcRelayError('bad_channel', `channel must be "realtime" or "control", not ${String(channel)}`);
    }
    const dc = this._mesh.get(peerId)?.channels[channel];
    if (!dc || dc.readyState !== 'open' || this._state !== 'open') {
      throw new RtcRelayError('not_open', `channel ${channel} to peer ${peerId} is not open`);
    }
    return this._sendOn(dc, channel, this._payloadOf(channel, data));
  }

  _sendMesh(channel, data) {
    if (!CHANNELS.includes(channel)) {
      throw new RtcRelayError('bad_channel', `channel must be "realtime" or "control", not ${String(channel)}`);
    }
    if (this._state !== 'open') {
      throw new RtcRelayError('not_open', `channel ${channel} is not open`);
    }
    const payload = this._payloadOf(channel, data);
    let all = true;
    for (const m of this._mesh.values()) {
      const dc = m.channels[channel];
      // Members still connecting (or going away) are skipped.
      if (!m.open || !dc || dc.readyState !== 'open') continue;
      if (!this._sendOn(dc, channel, payload)) all = false;
    }
    return all;
  }

  /** Checks and converts what send() was given. */
  _payloadOf(channel, data) {
    let payload = data;
    if (typeof data !== 'string') {
      if (data instanceof ArrayBuffer) {
        payload = data;
      } else if (ArrayBuffer.isView(data)) {
        // Send exactly the view's bytes, not its whole backing buffer.
        payload = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      } else {
        throw new TypeError('send() takes a string, an ArrayBuffer or an ArrayBufferView');
      }
    }
    const size = byteLengthOf(payload);
    if (size > LIMITS[channel]) {
      throw new RtcRelayError('message_too_large', `${channel} messages are at most ${LIMITS[channel]} bytes, this one is ${size}`);
    }
    return payload;
  }

  _sendOn(dc, channel, payload) {
    if (channel === 'realtime' && dc.bufferedAmount > REALTIME_MAX_BUFFERED) {
      return false;
    }
    dc.send(payload);
    return true;
  }

  /** Measures the signaling (WebSocket) round trip, in milliseconds. */
  ping(timeoutMs = 5000) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RtcRelayError('not_open', 'signaling is not connected'));
    }
    const id = this._nextPingId;
    this._nextPingId = (this._nextPingId % 0xffffffff) + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pings.delete(id);
        reject(new RtcRelayError('timeout', `no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pings.set(id, { sent: performance.now(), resolve, reject, timer });
      this._sendSignal({ type: 'ping', id });
    });
  }

  /**
   * The WebRTC round trip (ms) of the selected ICE candidate pair, from
   * getStats() currentRoundTripTime; null when the browser has no value yet.
   */
  async rtt(peerId) {
    const pc = this.kind === 'p2p' ? this._mesh.get(peerId)?.pc : this._pc;
    if (!pc || pc.connectionState === 'closed') return null;
    let stats;
    try {
      stats = await pc.getStats();
    } catch {
      return null;
    }
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId) ?? pair;
      }
    });
    if (!pair) {
      // Browsers without transport stats: the nominated, working pair.
      stats.forEach((s) => {
        if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair || typeof pair.currentRoundTripTime !== 'number') return null;
    return pair.currentRoundTripTime * 1000;
  }

  /** Leaves the room (others see reason "left") and closes the client. */
  leave() {
    if (this._closed) return;
    this._sendSignal({ type: 'leave' });
    this._shutdown('left', null);
  }

  /** Closes the session and the WebSocket; the server treats it as leaving. */
  close() {
    this._shutdown('closed', null);
  }

  // ---- internals ----

  _emit(type, detail) {
    if (!this._live) {
      if (this._early.length < MAX_EARLY_EVENTS) this._early.push([type, detail]);
      return;
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit('statechange', { state, connectionState: this.connectionState });
  }

  _sendSignal(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(msg));
    }
  }

  _connect() {
    return new Promise((resolve, reject) => {
      this._connectDone = { resolve, reject };
      this._setState('connecting');
      this._timer = setTimeout(() => {
        this._fail(new RtcRelayError('timeout', `not ready within ${this._options.timeoutMs} ms`));
      }, this._options.timeoutMs);
      try {
        this._openSocket(null);
      } catch (e) {
        this._fail(new RtcRelayError('signaling_failed', `cannot open ${this.url}: ${e.message}`, { cause: e }));
      }
    });
  }

  /**
   * Opens a signaling WebSocket and joins on it: a fresh join, or with
   * `resume` the seat of a resume token. Handlers ignore a socket that is
   * no longer `this._ws` (given up for a newer one).
   */
  _openSocket(resume) {
    const ws = new WebSocket(this.url);
    this._ws = ws;
    this._wsOpened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._wsOpened = true;
      const join = { type: 'join', version: PROTOCOL_VERSION, room: this.room, kind: this.kind, name: this.name };
      if (resume !== null) {
        // The resume token replaces the join token (protocol.md, "Reconnection").
        join.resume = resume;
      } else {
        if (this._options.capacity !== undefined) join.capacity = this._options.capacity;
        if (this._options.token !== undefined) join.token = this._options.token;
      }
      this._sendSignal(join);
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws || typeof event.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        this._emit('error', { code: 'bad_json', message: 'server sent a message that is not JSON', fatal: false });
        return;
      }
      this._signalQueue = this._signalQueue
        .then(() => (this._ws === ws ? this._onSignal(msg) : undefined))
        .catch((e) => this._onInternalError(e));
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      // Behind the messages already received: a fatal server error that
      // preceded the close is the better explanation.
      this._signalQueue = this._signalQueue.then(() => this._onSocketClosed(ws, event));
    };
    ws.onerror = () => {
      // onclose follows with the details.
    };
  }

  _onSocketClosed(ws, event) {
    if (this._ws !== ws || this._closed) return;
    const reason = `signaling closed (code ${event.code}${event.reason ? `: ${event.reason}` : ''})`;
    if (this._connectDone && !this._wsOpened) {
      this._fail(new RtcRelayError('signaling_failed', `cannot connect to ${this.url} (code ${event.code})`));
    } else if (this._connectDone) {
      this._fail(new RtcRelayError('signaling_closed', reason));
    } else if (event.code === CLOSE_RESUMED_ELSEWHERE) {
      // Another connection (another tab with our token) took the seat:
      // taking it back would only start a tug of war.
      this._shutdown('resumed_elsewhere', new RtcRelayError('resumed_elsewhere', reason));
    } else if (this._state === 'reconnecting') {
      this._attempt?.reject(new RtcRelayError(this._wsOpened ? 'signaling_closed' : 'signaling_failed', reason));
      this._wake();
    } else if (this._drainingSeen) {
      // The server told us it is going away: its seats go with it.
      this._shutdown('signaling_closed', null);
    } else {
      this._connectionLost('signaling_closed');
    }
  }

  async _onSignal(msg) {
    if (this._closed || !msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'welcome':
        if (this.kind === 'p2p') await this._onP2pWelcome(msg);
        else await this._onWelcome(msg);
        break;
      case 'signal':
        if (this.kind === 'p2p') await this._onPeerSignal(msg.from, msg.data);
        break;
      case 'answer':
        if (!this._pc) return;
        await this._pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        this._remoteDescriptionSet = true;
        for (const c of this._pendingRemoteCandidates.splice(0)) await this._addRemoteCandidate(c);
        break;
      case 'candidate':
        if (!this._remoteDescriptionSet) {
          this._pendingRemoteCandidates.push(msg);
        } else {
          await this._addRemoteCandidate(msg);
        }
        break;
      case 'ready':
        this.serverChannels = { realtime: msg.realtime, control: msg.control };
        this._serverReady = true;
        this._maybeReady();
        break;
      case 'peer_joined': {
        const peer = { peerId: msg.peer_id, name: msg.name };
        this.roster.set(msg.peer_id, peer);
        this._emit('peerjoined', peer);
        // The newcomer offers; we answer. Its offer follows this message.
        if (this.kind === 'p2p' && this._welcomed) await this._openMember(msg.peer_id, false);
        break;
      }
      case 'peer_left': {
        if (msg.peer_id === this.peerId) {
          // The server has taken us out: our WebRTC session died (a server
          // without resume), or the grace period ran out while we were away.
          if (this._state === 'reconnecting') {
            this._resumeFailed('resume_expired', 'the server released the seat: the grace period is over', msg.reason ?? 'disconnected');
          } else {
            this._shutdown(msg.reason ?? 'disconnected', null);
          }
          return;
        }
        const peer = this.roster.get(msg.peer_id) ?? { peerId: msg.peer_id, name: null };
        this.roster.delete(msg.peer_id);
        if (this.kind === 'p2p') {
          this._closeMember(msg.peer_id);
          this._awaiting.delete(msg.peer_id);
        }
        this._emit('peerleft', { ...peer, reason: msg.reason });
        // A member we were still connecting to is gone: maybe that was the last.
        if (this.kind === 'p2p') this._maybeReady();
        break;
      }
      case 'peer_away': {
        const graceMs = Number.isFinite(msg.grace_ms) ? msg.grace_ms : 0;
        if (msg.peer_id === this.peerId) {
          // Our WebRTC session is gone but this WebSocket works: the seat
          // waits graceMs for a new offer on it.
          this._selfAway = true;
          this._graceDeadline = performance.now() + (graceMs > 0 ? graceMs : this._resumeGraceMs);
          if (this._state === 'open') this._connectionLost('peer_away');
          else this._attempt?.reject(new RtcRelayError('channel_closed', 'the server lost the new WebRTC session'));
          this._wake();
          return;
        }
        const peer = this.roster.get(msg.peer_id);
        if (peer) peer.away = true;
        this._emit('peeraway', { peerId: msg.peer_id, name: peer?.name ?? null, graceMs });
        break;
      }
      case 'peer_back': {
        if (msg.peer_id === this.peerId) return;
        const peer = this.roster.get(msg.peer_id);
        if (peer) peer.away = false;
        this._emit('peerback', { peerId: msg.peer_id, name: peer?.name ?? null });
        break;
      }
      case 'draining': {
        // The server is shutting down: the app should move its players to
        // another server by the deadline.
        const deadlineMs = Number.isFinite(msg.deadline_ms) ? msg.deadline_ms : 0;
        this._drainingSeen = true;
        this._emit('draining', { deadlineMs });
        break;
      }
      case 'pong': {
        const p = this._pings.get(msg.id);
        if (!p) return;
        this._pings.delete(msg.id);
        clearTimeout(p.timer);
        this.signalingRtt = performance.now() - p.sent;
        p.resolve(this.signalingRtt);
        break;
      }
      case 'error': {
        const err = new RtcRelayError(msg.code ?? 'unknown', msg.message ?? 'server error', { fatal: !!msg.fatal });
        // A signal to a member who has just left: peer_left is on its way.
        const stray = this.kind === 'p2p' && err.code === 'peer_not_found' && !err.fatal;
        if (this._connectDone && !stray) {
          // Before ready every server error means this connect attempt failed.
          this._fail(err);
        } else if (this._attempt && !err.fatal) {
          // Likewise for a resume attempt; the loop decides whether to retry.
          this._attempt.reject(err);
        } else {
          this._emit('error', { code: err.code, message: err.message, fatal: err.fatal });
          if (this._state === 'reconnecting' && err.fatal) this._resumeFailed(err.code, err.message, err.code);
          else if (err.code === 'channel_rejected' || err.fatal) this._shutdown(err.code, err);
        }
        break;
      }
      default:
        // Newer servers may add message types; ignoring them keeps us compatible.
        break;
    }
  }

  async _onWelcome(msg) {
    if (this._attempt?.phase === 'welcome') {
      this._onResumeWelcome(msg);
      return;
    }
    if (this._state !== 'connecting') return;
    this.peerId = msg.peer_id;
    this.capacity = msg.capacity;
    this.room = msg.room ?? this.room;
    for (const entry of msg.roster ?? []) {
      const peer = { peerId: entry.peer_id, name: entry.name };
      if (typeof entry.away === 'boolean') peer.away = entry.away;
      this.roster.set(entry.peer_id, peer);
    }
    this._keepResume(msg);
    this.iceServers = this._iceServersFor(msg);
    await this._startSession();
  }

  _keepResume(msg) {
    this._resumeToken = typeof msg.resume_token === 'string' && msg.resume_token !== '' ? msg.resume_token : null;
    this._resumeGraceMs = Number.isFinite(msg.resume_grace_ms) && msg.resume_grace_ms > 0 ? msg.resume_grace_ms : 0;
  }

  /** The welcome that answers a join with `resume`: same seat, new token. */
  _onResumeWelcome(msg) {
    const attempt = this._attempt;
    if (msg.resumed !== true || msg.peer_id !== this.peerId) {
      // A server that ignored `resume` seated us afresh: that is someone
      // else's game state, so give the new seat back at once.
      this._sendSignal({ type: 'leave' });
      attempt.reject(new RtcRelayError('resume_refused', `the server did not resume peer ${this.peerId} (welcome for peer ${msg.peer_id}, resumed=${msg.resumed === true})`));
      return;
    }
    this._keepResume(msg);
    this.iceServers = this._iceServersFor(msg);
    // Members who came and went while we were away: the welcome's roster
    // is the truth now.
    const now = new Map((msg.roster ?? []).map((e) => [e.peer_id, e]));
    for (const [peerId, peer] of [...this.roster]) {
      if (now.has(peerId)) continue;
      this.roster.delete(peerId);
      this._emit('peerleft', { peerId, name: peer.name, reason: 'unknown' });
    }
    for (const entry of now.values()) {
      const known = this.roster.get(entry.peer_id);
      if (known) {
        // Who is away now, if the server says; else as last heard.
        if (typeof entry.away === 'boolean') known.away = entry.away;
        continue;
      }
      const peer = { peerId: entry.peer_id, name: entry.name };
      if (typeof entry.away === 'boolean') peer.away = entry.away;
      this.roster.set(entry.peer_id, peer);
      this._emit('peerjoined', peer);
    }
    attempt.resolve();
  }

  /** A new RTCPeerConnection with both channels, and its offer (the first, or one after a lost session). */
  async _startSession() {
    const pc = new RTCPeerConnection(this._rtcConfig());
    this._pc = pc;
    this._remoteDescriptionSet = false;
    this._pendingRemoteCandidates = [];
    this._serverReady = false;
    const current = () => this._pc === pc && !this._closed;

    // Both channels exist before the offer so one negotiation carries them.
    this._channels.realtime = pc.createDataChannel('realtime', { ordered: false, maxRetransmits: 0 });
    this._channels.control = pc.createDataChannel('control');
    for (const label of CHANNELS) {
      const dc = this._channels[label];
      dc.binaryType = 'arraybuffer';
      dc.onopen = () => {
        if (current()) this._maybeReady();
      };
      dc.onmessage = (event) => {
        if (current()) this._onChannelMessage(label, event.data);
      };
      dc.onclose = () => {
        if (!current()) return;
        const why = `DataChannel ${label} closed`;
        // The server's account (channel_rejected, peer_away or peer_left
        // for this client) is usually on its way over the WebSocket: give
        // it a moment to arrive first, so the reason reported is the real
        // one and the room hears "disconnected".
        if (this._connectDone) {
          setTimeout(() => this._fail(new RtcRelayError('channel_closed', why)), CHANNEL_CLOSE_GRACE_MS);
        } else if (this._attempt) {
          this._attempt.reject(new RtcRelayError('channel_closed', why));
        } else {
          this._channelCloseTimer ??= setTimeout(() => {
            if (current()) this._connectionLost('channel_closed');
          }, CHANNEL_CLOSE_GRACE_MS);
        }
      };
    }

    pc.onicecandidate = (event) => {
      if (!current()) return;
      if (event.candidate && event.candidate.candidate) {
        this._sendSignal({ type: 'candidate', candidate: event.candidate.candidate, mid: event.candidate.sdpMid ?? undefined });
      } else if (!event.candidate) {
        this._sendSignal({ type: 'candidate', candidate: '' });
      }
    };
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      this._emit('statechange', { state: this._state, connectionState: pc.connectionState });
      const st = pc.connectionState;
      if (st === 'failed' && this._connectDone) {
        setTimeout(() => this._fail(new RtcRelayError('ice_failed', 'the WebRTC connection to the server failed')), 1000);
      } else if (st === 'failed' && this._attempt) {
        this._attempt.reject(new RtcRelayError('ice_failed', 'the WebRTC connection to the server failed'));
      } else if (st === 'failed' && this._state === 'open') {
        this._connectionLost('ice_failed');
      } else if (st === 'disconnected' && this._state === 'open') {
        // Often a blip that ICE repairs by itself; lost only if it lasts.
        clearTimeout(this._disconnectedTimer);
        this._disconnectedTimer = setTimeout(() => {
          if (current() && this._state === 'open' && ['disconnected', 'failed'].includes(pc.connectionState)) {
            this._connectionLost('ice_disconnected');
          }
        }, this._options.deadAfterMs);
      }
    };

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (current()) this._sendSignal({ type: 'offer', sdp: pc.localDescription.sdp });
  }

  async _addRemoteCandidate(msg) {
    if (!this._pc || typeof msg.candidate !== 'string') return;
    const init = { candidate: msg.candidate };
    if (typeof msg.mid === 'string') init.sdpMid = msg.mid;
    else init.sdpMLineIndex = 0;
    try {
      // An empty candidate is the end-of-candidates marker.
      await this._pc.addIceCandidate(init);
    } catch (e) {
      if (msg.candidate !== '') {
        this._emit('error', { code: 'bad_candidate', message: `server candidate rejected: ${e.message}`, fatal: false });
      }
    }
  }

  _onChannelMessage(channel, data) {
    // Anything counts as a sign of life, the heartbeat frame included.
    this._lastHeardAt = performance.now();
    if (channel === 'control' && typeof data !== 'string' && data.byteLength === 1 &&
        new Uint8Array(data)[0] === FRAME_HEARTBEAT) return;
    if (this.kind === 'authoritative') {
      // The server peer itself talks to us (game frames on realtime, JSON
      // text on control): nothing is relayed, so there is no relay header.
      this._emit('message', { from: SERVER_PEER, channel, data });
      return;
    }
    if (typeof data === 'string') {
      this._emit('error', { code: 'bad_frame', message: `unexpected text message on ${channel}`, fatal: false });
      return;
    }
    let frame;
    try {
      frame = decodeRelayed(data);
    } catch (e) {
      this._emit('error', { code: 'bad_frame', message: e.message, fatal: false });
      return;
    }
    let value;
    if (frame.text) {
      try {
        value = utf8Decoder.decode(frame.payload);
      } catch {
        this._emit('error', { code: 'bad_frame', message: 'text payload is not UTF-8', fatal: false });
        return;
      }
    } else {
      value = frame.payload.buffer;
    }
    this._emit('message', { from: frame.from, channel, data: value });
  }

  _maybeReady() {
    if ((!this._connectDone && this._attempt?.phase !== 'session') || this._closed) return;
    if (this.kind === 'p2p') {
      // Open once every member of the welcome roster is connected (or gone).
      if (!this._welcomed || this._awaiting.size > 0) return;
    } else {
      if (!this._serverReady) return;
      if (!CHANNELS.every((l) => this._channels[l] && this._channels[l].readyState === 'open')) return;
      if (this._attempt?.phase === 'session') {
        // Open again before anything else runs: the app may send at once.
        this._setState('open');
        this._attempt.resolve();
        return;
      }
    }
    clearTimeout(this._timer);
    this._setState('open');
    this._startLiveness();
    const done = this._connectDone;
    this._connectDone = null;
    done?.resolve();
    // Flush what happened while connecting after the caller's `await`
    // continuation has had a chance to add listeners.
    setTimeout(() => {
      this._live = true;
      for (const [type, detail] of this._early.splice(0)) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
      }
      if (this._closed) {
        this.dispatchEvent(new CustomEvent('close', { detail: { reason: this._closeReason, error: this._closeError } }));
      }
    }, 0);
  }

  // ---- reconnection (relay and authoritative rooms) ----

  _canReconnect() {
    return this._options.reconnect !== false && this.kind !== 'p2p' && this._resumeToken !== null && this._resumeGraceMs > 0;
  }

  /** Watches for a server gone quiet: nothing on either channel for deadAfterMs. */
  _startLiveness() {
    if (this.kind === 'p2p') return;
    clearInterval(this._livenessTimer);
    this._lastHeardAt = performance.now();
    const deadAfter = this._options.deadAfterMs;
    if (!(deadAfter > 0)) return;
    this._livenessTimer = setInterval(() => {
      if (this._state === 'open' && performance.now() - this._lastHeardAt > deadAfter) {
        this._connectionLost('silence');
      }
    }, Math.max(50, Math.min(1000, deadAfter / 4)));
    // Node (the library's unit tests) must not stay alive for this timer.
    this._livenessTimer?.unref?.();
  }

  /**
   * The open connection is gone (cause: "silence", "peer_away",
   * "ice_failed", "ice_disconnected", "channel_closed", "signaling_closed"):
   * reconnect and resume the seat, or close when that is not possible.
   */
  _connectionLost(cause) {
    if (this._closed || this._state !== 'open') return;
    clearInterval(this._livenessTimer);
    this._livenessTimer = null;
    if (!this._canReconnect()) {
      this._shutdown(cause === 'channel_closed' || cause === 'signaling_closed' ? cause : 'disconnected', null);
      return;
    }
    // The server counts the grace from when it noticed; a peer_away (now or
    // later) carries its figure.
    if (cause !== 'peer_away') this._graceDeadline = performance.now() + this._resumeGraceMs;
    this._triedSameSocket = false;
    this._detachSession();
    this._setState('reconnecting');
    this._reconnectLoop(cause).catch((e) => this._onInternalError(e));
  }

  async _reconnectLoop(reason) {
    const { reconnectMinDelayMs: min, reconnectMaxDelayMs: max } = this._options;
    for (let attempt = 1; ; attempt++) {
      if (this._closed) return;
      // Exponential backoff with full jitter: clients cut off together
      // (a server restart, a flapping link) do not come back together.
      const backoff = Math.min(max, min * 2 ** Math.min(attempt - 1, 30));
      // The server's word on the seat (resume_expired, peer_left) is the
      // one that counts; our own clock only ends it when the server cannot
      // be reached to say so.
      const left = this._graceDeadline + GRACE_SLACK_MS - performance.now();
      if (left <= 0) {
        this._resumeFailed('resume_expired', `not reconnected within the grace period (${this._resumeGraceMs} ms)`);
        return;
      }
      const delayMs = Math.min(Math.round(Math.random() * backoff), Math.floor(left));
      this._emit('reconnecting', { attempt, delayMs, reason });
      await this._sleep(delayMs);
      if (this._closed) return;
      try {
        await this._resumeAttempt();
      } catch (e) {
        if (this._closed) return;
        const err = e instanceof RtcRelayError ? e : new RtcRelayError('internal', e?.message ?? String(e), { cause: e });
        this._detachSession();
        if (!RETRYABLE_RESUME_ERRORS.has(err.code)) {
          this._resumeFailed(err.code, err.message);
          return;
        }
        continue;
      }
      if (this._closed) return;
      for (const ws of this._abandoned) ws.close(1000, 'resumed');
      this._abandoned.clear();
      this._selfAway = false;
      this._startLiveness();
      this._emit('resumed', { peerId: this.peerId, attempts: attempt });
      return;
    }
  }

  async _resumeAttempt() {
    const wsOpen = () => this._ws !== null && this._ws.readyState === WebSocket.OPEN;
    if (wsOpen() && !this._selfAway && !this._triedSameSocket) {
      // We noticed first. If signaling still works, the server notices the
      // dead session within its own dead_after and says peer_away here:
      // offering on this socket then is the cheapest way back.
      this._triedSameSocket = true;
      const alive = await this.ping(SIGNALING_PROBE_MS).then(() => true, () => false);
      if (alive) {
        await this._until(() => this._selfAway || !wsOpen(), this._options.deadAfterMs + PEER_AWAY_SLACK_MS);
      }
      if (this._closed) return;
    }
    // One offer per peer_away on a socket; anything else starts afresh on a
    // new one (which also makes the server drop whatever the old one had).
    this._triedSameSocket = true;
    if (!(wsOpen() && this._selfAway)) {
      this._abandonSocket();
      await this._attemptStep('welcome', () => this._openSocket(this._resumeToken));
    }
    this._selfAway = false;
    await this._attemptStep('session', () => this._startSession());
  }

  /**
   * Runs one step of a resume attempt: "welcome" (a new WebSocket joined
   * with the resume token) or "session" (a new offer, until ready). Server
   * errors, a closed socket or channel reject it; so does the connect
   * timeout, cut short by the end of the grace period.
   */
  _attemptStep(phase, start) {
    return new Promise((resolve, reject) => {
      const left = Math.max(0, this._graceDeadline + GRACE_SLACK_MS - performance.now());
      const timeoutMs = Math.min(this._options.timeoutMs, left);
      let timer = null;
      const attempt = {
        phase,
        resolve: () => {
          clearTimeout(timer);
          if (this._attempt === attempt) this._attempt = null;
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          if (this._attempt === attempt) this._attempt = null;
          reject(err);
        },
      };
      this._attempt = attempt;
      timer = setTimeout(() => attempt.reject(new RtcRelayError('timeout', `resume step "${phase}" not done within ${Math.round(timeoutMs)} ms`)), timeoutMs);
      try {
        Promise.resolve(start()).catch((e) => attempt.reject(e));
      } catch (e) {
        attempt.reject(new RtcRelayError('signaling_failed', `cannot open ${this.url}: ${e.message}`, { cause: e }));
      }
    });
  }

  _resumeFailed(code, message, reason = code) {
    if (this._closed) return;
    const err = new RtcRelayError(code, message);
    this._emit('resumefailed', { code, message });
    this._shutdown(reason, err);
  }

  /** Drops the current RTCPeerConnection and its channels (a new session replaces them). */
  _detachSession() {
    const pc = this._pc;
    this._pc = null;
    clearTimeout(this._channelCloseTimer);
    this._channelCloseTimer = null;
    clearTimeout(this._disconnectedTimer);
    for (const label of CHANNELS) {
      const dc = this._channels[label];
      if (dc) {
        dc.onopen = null;
        dc.onclose = null;
        dc.onmessage = null;
      }
      this._channels[label] = null;
    }
    this._serverReady = false;
    this._remoteDescriptionSet = false;
    this._pendingRemoteCandidates = [];
    if (pc) {
      pc.onicecandidate = null;
      pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        // Already closed.
      }
    }
  }

  /**
   * Stops listening to the current WebSocket without closing it: a Close
   * frame would release the seat, and the server closes a half-open
   * connection itself once the resume arrives on the new one.
   */
  _abandonSocket() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    // Not joined yet (an earlier attempt's): nothing to keep.
    if (ws.readyState === WebSocket.CONNECTING) ws.close();
    else if (ws.readyState === WebSocket.OPEN) this._abandoned.add(ws);
    for (const p of this._pings.values()) {
      clearTimeout(p.timer);
      p.reject(new RtcRelayError('closed', 'signaling replaced'));
    }
    this._pings.clear();
  }

  /** Wakes whatever waits in _sleep or _until (a peer_away came, a socket closed, close()). */
  _wake() {
    for (const wake of [...this._wakers]) wake();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self._wakers.delete(onWake);
        resolve();
      }
      // Only close() cuts a backoff short.
      const onWake = () => {
        if (self._closed) done();
      };
      this._wakers.add(onWake);
    });
  }

  /** Resolves once `cond()` holds (checked on each wake) or after `ms`. */
  _until(cond, ms) {
    return new Promise((resolve) => {
      if (cond() || this._closed) {
        resolve();
        return;
      }
      const done = () => {
        clearTimeout(timer);
        this._wakers.delete(onWake);
        resolve();
      };
      const onWake = () => {
        if (cond() || this._closed) done();
      };
      const timer = setTimeout(done, ms);
      this._wakers.add(onWake);
    });
  }

  /** The welcome's ICE servers, then options.iceServers, TURN URLs filtered by options.turnTransports. */
  _iceServersFor(welcome) {
    const all = [...(welcome.ice_servers ?? []), ...(this._options.iceServers ?? [])];
    return filterTurnTransports(all, this._options.turnTransports);
  }

  // ---- p2p rooms: one RTCPeerConnection per other member ----

  _rtcConfig() {
    const config = { iceServers: this.iceServers };
    if (this._options.iceTransportPolicy) config.iceTransportPolicy = this._options.iceTransportPolicy;
    return config;
  }

  async _onP2pWelcome(msg) {
    this.peerId = msg.peer_id;
    this.capacity = msg.capacity;
    this.room = msg.room ?? this.room;
    for (const entry of msg.roster ?? []) {
      this.roster.set(entry.peer_id, { peerId: entry.peer_id, name: entry.name });
      this._awaiting.add(entry.peer_id);
    }
    this.iceServers = this._iceServersFor(msg);
    this._welcomed = true;
    // The newcomer offers to everyone already there: no glare.
    for (const peerId of this._awaiting) await this._openMember(peerId, true);
    this._maybeReady();
  }

  /** Creates the connection to a member; the initiator opens the channels and offers. */
  async _openMember(peerId, initiator) {
    if (this._closed || this._mesh.has(peerId)) return;
    const pc = new RTCPeerConnection(this._rtcConfig());
    const m = { peerId, pc, initiator, channels: { realtime: null, control: null }, pending: [], remoteSet: false, open: false };
    this._mesh.set(peerId, m);
    const current = () => this._mesh.get(peerId) === m && !this._closed;
    pc.onicecandidate = (event) => {
      if (!current() || !event.candidate || !event.candidate.candidate) return;
      const c = event.candidate;
      const candidate = typeof c.toJSON === 'function'
        ? c.toJSON()
        : { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
      this._sendSignal({ type: 'signal', to: peerId, data: { candidate } });
    };
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      this._emitMemberState(m);
      if (pc.connectionState === 'failed') {
        this._memberLost(m, 'ice_failed', `the WebRTC connection to peer ${peerId} failed`);
      }
    };
    if (initiator) {
      // Both channels exist before the offer so one negotiation carries them.
      this._attachChannel(m, pc.createDataChannel('realtime', { ordered: false, maxRetransmits: 0 }));
      this._attachChannel(m, pc.createDataChannel('control'));
    } else {
      pc.ondatachannel = (event) => {
        if (current()) this._attachChannel(m, event.channel);
      };
    }
    this._emitMemberState(m);
    if (initiator) {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (current()) {
        this._sendSignal({ type: 'signal', to: peerId, data: { description: { type: 'offer', sdp: pc.localDescription.sdp } } });
      }
    }
  }

  _attachChannel(m, dc) {
    const label = dc.label;
    const required = label === 'realtime'
      ? dc.ordered === false && dc.maxRetransmits === 0 && dc.maxPacketLifeTime == null
      : label === 'control' && dc.ordered === true && dc.maxRetransmits == null && dc.maxPacketLifeTime == null;
    if (!required || m.channels[label]) {
      const message = `peer ${m.peerId} opened DataChannel "${label}" (ordered=${dc.ordered}, maxRetransmits=${dc.maxRetransmits}); ` +
        'expected realtime {ordered:false, maxRetransmits:0} and control (reliable), once each';
      this._emit('error', { code: 'channel_rejected', message, fatal: false });
      this._closeMember(m.peerId);
      return;
    }
    m.channels[label] = dc;
    dc.binaryType = 'arraybuffer';
    const current = () => this._mesh.get(m.peerId) === m && !this._closed;
    const checkOpen = () => {
      if (!current() || m.open) return;
      if (!CHANNELS.every((l) => m.channels[l] && m.channels[l].readyState === 'open')) return;
      m.open = true;
      this._awaiting.delete(m.peerId);
      this._emitMemberState(m);
      this._maybeReady();
    };
    dc.onopen = checkOpen;
    dc.onmessage = (event) => {
      if (current()) this._emit('message', { from: m.peerId, channel: label, data: event.data });
    };
    dc.onclose = () => {
      if (current()) this._memberLost(m, 'channel_closed', `DataChannel ${label} to peer ${m.peerId} closed`);
    };
    // A channel announced by the other side may already be open.
    if (dc.readyState === 'open') checkOpen();
  }

  async _onPeerSignal(from, data) {
    if (typeof from !== 'number' || !data || typeof data !== 'object') return;
    let m = this._mesh.get(from);
    if (!m) {
      // Only members we know (peer_joined always comes first) may offer.
      if (!this._welcomed || !this.roster.has(from) || data.description?.type !== 'offer') return;
      await this._openMember(from, false);
      m = this._mesh.get(from);
      if (!m) return;
    }
    try {
      const desc = data.description;
      if (desc && typeof desc === 'object') {
        if (desc.type === 'offer' && !m.initiator && !m.remoteSet) {
          await m.pc.setRemoteDescription({ type: 'offer', sdp: String(desc.sdp) });
          m.remoteSet = true;
          for (const c of m.pending.splice(0)) await this._addMemberCandidate(m, c);
          const answer = await m.pc.createAnswer();
          await m.pc.setLocalDescription(answer);
          if (this._mesh.get(from) === m && !this._closed) {
            this._sendSignal({ type: 'signal', to: from, data: { description: { type: 'answer', sdp: m.pc.localDescription.sdp } } });
          }
        } else if (desc.type === 'answer' && m.initiator && !m.remoteSet) {
          await m.pc.setRemoteDescription({ type: 'answer', sdp: String(desc.sdp) });
          m.remoteSet = true;
          for (const c of m.pending.splice(0)) await this._addMemberCandidate(m, c);
        } else {
          this._emit('error', { code: 'bad_signal', message: `unexpected ${String(desc.type)} from peer ${from}`, fatal: false });
        }
      } else if (data.candidate && typeof data.candidate === 'object') {
        if (m.remoteSet) await this._addMemberCandidate(m, data.candidate);
        else m.pending.push(data.candidate);
      }
    } catch (e) {
      if (this._mesh.get(from) !== m || this._closed) return;
      this._emit('error', { code: 'bad_signal', message: `signal from peer ${from} rejected: ${e?.message ?? e}`, fatal: false });
    }
  }

  async _addMemberCandidate(m, candidate) {
    if (typeof candidate.candidate !== 'string' || candidate.candidate === '') return;
    try {
      await m.pc.addIceCandidate(candidate);
    } catch (e) {
      if (this._mesh.get(m.peerId) === m && !this._closed) {
        this._emit('error', { code: 'bad_candidate', message: `candidate of peer ${m.peerId} rejected: ${e.message}`, fatal: false });
      }
    }
  }

  _emitMemberState(m) {
    const state = this._mesh.get(m.peerId) !== m ? 'closed' : (m.open ? 'open' : 'connecting');
    const connectionState = state === 'closed' ? 'closed' : m.pc.connectionState;
    this._emit('peerstatechange', { peerId: m.peerId, state, connectionState });
    const overall = this._meshConnectionState();
    if (overall !== this._lastMeshState) {
      this._lastMeshState = overall;
      this._emit('statechange', { state: this._state, connectionState: overall });
    }
  }

  _meshConnectionState() {
    if (this._closed) return 'closed';
    const states = new Set([...this._mesh.values()].map((m) => m.pc.connectionState));
    for (const s of ['failed', 'disconnected', 'new', 'connecting']) if (states.has(s)) return s;
    return this._state === 'open' || this._mesh.size > 0 ? 'connected' : 'new';
  }

  _detachMember(m) {
    m.pc.onicecandidate = null;
    m.pc.onconnectionstatechange = null;
    m.pc.ondatachannel = null;
    for (const label of CHANNELS) {
      const dc = m.channels[label];
      if (dc) {
        dc.onopen = null;
        dc.onclose = null;
        dc.onmessage = null;
      }
    }
    return m.pc;
  }

  /** Tears down the connection to a member (it left, or the connection broke). */
  _closeMember(peerId) {
    const m = this._mesh.get(peerId);
    if (!m) return;
    this._mesh.delete(peerId);
    try {
      this._detachMember(m).close();
    } catch {
      // Already closed.
    }
    if (!this._closed) this._emitMemberState(m);
  }

  /**
   * The connection to a member broke. Usually the member is leaving and
   * peer_left is on its way: only if it is still in the room after a grace
   * period is this an error (and, before connect() resolved, a failure).
   */
  _memberLost(m, code, message) {
    this._closeMember(m.peerId);
    setTimeout(() => {
      if (this._closed || !this.roster.has(m.peerId) || this._mesh.has(m.peerId)) return;
      if (this._connectDone && this._awaiting.has(m.peerId)) {
        this._fail(new RtcRelayError(code, message));
      } else {
        this._awaiting.delete(m.peerId);
        this._emit('error', { code, message, fatal: false });
      }
    }, CHANNEL_CLOSE_GRACE_MS);
  }

  _fail(err) {
    if (!this._connectDone) return;
    const done = this._connectDone;
    this._connectDone = null;
    this._shutdown(err.code, err);
    done.reject(err);
  }

  _onInternalError(e) {
    // Operations cut short by close() fail; that is not news.
    if (this._closed) return;
    const err = e instanceof RtcRelayError ? e : new RtcRelayError('internal', e?.message ?? String(e), { cause: e });
    if (this._connectDone) this._fail(err);
    else this._emit('error', { code: err.code, message: err.message, fatal: false });
  }

  _shutdown(reason, error) {
    if (this._closed) return;
    this._closed = true;
    this._closeReason = reason;
    this._closeError = error;
    clearTimeout(this._timer);
    clearInterval(this._livenessTimer);
    clearTimeout(this._disconnectedTimer);
    this._attempt?.reject(new RtcRelayError('closed', 'client closed'));
    this._wake();
    // Giving up the seat: now a Close frame on them is what we want.
    for (const ws of this._abandoned) ws.close(1000, reason.slice(0, 100));
    this._abandoned.clear();
    for (const p of this._pings.values()) {
      clearTimeout(p.timer);
      p.reject(new RtcRelayError('closed', 'client closed'));
    }
    this._pings.clear();
    for (const label of CHANNELS) {
      const dc = this._channels[label];
      if (dc) {
        dc.onclose = null;
        dc.onmessage = null;
      }
    }
    clearTimeout(this._channelCloseTimer);
    const pcs = [this._pc, ...[...this._mesh.values()].map((m) => this._detachMember(m))].filter(Boolean);
    this._mesh.clear();
    const closePc = () => {
      for (const pc of pcs) {
        try {
          pc.close();
        } catch {
          // Already closed.
        }
      }
    };
    for (const pc of pcs) {
      pc.onicecandidate = null;
      pc.onconnectionstatechange = null;
    }
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.onmessage = null;
      // Close the WebRTC session only once the server has the WebSocket
      // close, which comes after anything queued (e.g. "leave"): a DTLS close
      // overtaking them would make the server report "disconnected" to the
      // room instead of "left". The server ends the session itself anyway.
      const timer = setTimeout(closePc, PC_CLOSE_LINGER_MS);
      ws.onclose = () => {
        clearTimeout(timer);
        closePc();
      };
      ws.close(1000, reason.slice(0, 100));
    } else {
      if (ws) {
        ws.onclose = null;
        ws.onmessage = null;
        if (ws.readyState === WebSocket.CONNECTING) ws.close();
      }
      closePc();
    }
    this._setState('closed');
    // Before the early-event flush, the flush reports the close instead.
    if (this._live) this.dispatchEvent(new CustomEvent('close', { detail: { reason, error } }));
  }
}

export default RtcRelay;
