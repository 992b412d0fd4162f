// Type definitions for the rtcrelay browser client (rtcrelay.js).
//
// Usage:
//   import { RtcRelay } from '/client/rtcrelay.js';
//   const client = await RtcRelay.connect({ room: 'lobby', name: 'ada' });
//   client.on('message', ({ from, channel, data }) => console.log(from, channel, data));
//   client.send('realtime', new Float32Array([x, y]));
//   client.send('control', 'hello');
//
// Peer-to-peer rooms (kind "p2p") use the same API: the members connect to
// each other directly (one RTCPeerConnection per other member, a full mesh)
// and the server only forwards their WebRTC signaling:
//   const client = await RtcRelay.connect({ room: 'mesh', name: 'ada', kind: 'p2p' });
//   client.on('peerstatechange', ({ peerId, state }) => state === 'open' && client.sendTo(peerId, 'control', 'hi'));
//
// Reconnection (relay and authoritative rooms, on by default): a lost
// connection is re-established with the welcome's resume token, keeping the
// seat and peer id, within the room's grace period:
//   client.on('reconnecting', ({ attempt, delayMs }) => show(`reconnecting (attempt ${attempt})…`));
//   client.on('resumed', () => show('reconnected'));
//   client.on('resumefailed', ({ code }) => show(`could not reconnect: ${code}`)); // "close" follows
//   client.on('peeraway', ({ peerId }) => markAway(peerId));
//   client.on('peerback', ({ peerId }) => markBack(peerId));

/** Signaling protocol version spoken by this client. */
export declare const PROTOCOL_VERSION: 1;

/**
 * Largest payload (bytes) per channel. The server drops bigger messages, so
 * {@link RtcRelay.send} throws instead of sending them.
 */
export declare const LIMITS: Readonly<{ realtime: 1194; control: 16378 }>;

/** `from` of every message in an authoritative room: the server peer (peer ids start at 1). */
export declare const SERVER_PEER: 0;

/** The two DataChannels every member has. */
export type ChannelLabel = 'realtime' | 'control';

/**
 * Room kinds of protocol v1. In "relay" rooms the server peer forwards each
 * message to the other members. In "authoritative" rooms the server runs a
 * game: use rtcrelay-game.js (GameSession) rather than this class directly.
 * In "p2p" rooms the members connect to each other directly (full mesh) and
 * the server only forwards their offers, answers and candidates.
 */
export type RoomKind = 'relay' | 'authoritative' | 'p2p';

/**
 * Lifecycle of a client: "open" once connect() has resolved, "reconnecting"
 * while a lost connection is being re-established (back to "open" on
 * "resumed"), "closed" at the end.
 */
export type ClientState = 'new' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/**
 * Server error codes (stable, from the protocol crate) plus the client's own:
 * bad_options, bad_channel, not_open, message_too_large (client-side check),
 * timeout, signaling_failed, signaling_closed, ice_failed, channel_closed,
 * bad_frame, bad_candidate, closed, internal, and in p2p rooms bad_signal
 * (another member's offer, answer or candidate was refused by the browser),
 * channel_rejected (a member opened a channel with a wrong label or wrong
 * parameters) and wrong_room_kind (sendTo() outside a p2p room); while
 * reconnecting: resume_refused (the server answered the resume join with a
 * fresh seat) and resumed_elsewhere (close reason: another connection took
 * the seat over with the same token).
 */
export type ErrorCode =
  | 'bad_json'
  | 'unknown_type'
  | 'invalid_message'
  | 'message_too_large'
  | 'binary_not_supported'
  | 'unsupported_version'
  | 'unsupported_room_kind'
  | 'not_joined'
  | 'already_joined'
  | 'room_full'
  | 'room_kind_mismatch'
  | 'too_many_rooms'
  | 'session_exists'
  | 'no_session'
  | 'bad_sdp'
  | 'bad_candidate'
  | 'channel_rejected'
  | 'unavailable'
  | 'internal'
  | 'peer_not_found'
  | 'wrong_room_kind'
  | 'rate_limited'
  | 'auth_required'
  | 'token_invalid'
  | 'token_expired'
  | 'token_wrong_room'
  | 'draining'
  | 'server_full'
  | 'resume_invalid'
  | 'resume_expired'
  | 'resume_wrong_room'
  | 'resume_refused'
  | 'resumed_elsewhere'
  | 'bad_options'
  | 'bad_channel'
  | 'not_open'
  | 'timeout'
  | 'signaling_failed'
  | 'signaling_closed'
  | 'ice_failed'
  | 'channel_closed'
  | 'bad_frame'
  | 'bad_signal'
  | 'closed'
  | (string & {});

/** Error thrown or rejected by this library; switch on `code`. */
export declare class RtcRelayError extends Error {
  constructor(code: ErrorCode, message: string, options?: { fatal?: boolean; cause?: unknown });
  readonly name: 'RtcRelayError';
  /** Stable code: a server ErrorCode such as "room_full", or a client one such as "timeout". */
  readonly code: ErrorCode;
  /** True when the server closed the signaling WebSocket after this error. */
  readonly fatal: boolean;
}

/** Transport of a TURN URL, as selected by `ConnectOptions.turnTransports`. */
export type TurnTransport = 'udp' | 'tcp' | 'tls';

export interface ConnectOptions {
  /** Signaling URL, e.g. "wss://example.com/ws". Default: `/ws` on the page's own host (ws: or wss: to match the page). */
  url?: string;
  /** Room name: 1 to 64 characters of A-Z a-z 0-9 _ - . ; created on first join. */
  room: string;
  /** Room kind; default "relay". "p2p": connect to the other members directly. */
  kind?: RoomKind;
  /** Display name shown to the other members: 1 to 32 characters, no control characters. */
  name: string;
  /**
   * Capacity of the room if this join creates it (1 to the server's maximum,
   * at most 64); ignored when the room exists. Default: the server's default (4).
   */
  capacity?: number;
  /**
   * Join token (a JWT your backend mints for this player and room), for a
   * server with `auth.mode = "token"`. Sent in the join; without it such a
   * server refuses with "auth_required". Alternatively put it in the URL:
   * `url: "wss://example.com/ws?token=..."`.
   */
  token?: string;
  /**
   * Extra ICE servers, appended to the ones the server sends in its welcome
   * (in p2p rooms, used for every member connection).
   */
  iceServers?: RTCIceServer[];
  /** Passed to RTCPeerConnection (every one, in p2p rooms); "relay" forces TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * Use only the TURN URLs of these transports (from the welcome and from
   * `iceServers`): "udp" (`turn:` URLs without `?transport=tcp`), "tcp"
   * (`turn:…?transport=tcp`), "tls" (`turns:`). Other URLs (stun:) are kept;
   * an ICE server left without URLs is dropped. Default: all. E.g.
   * `{ iceTransportPolicy: 'relay', turnTransports: ['tls'] }` behaves like a
   * client behind a firewall that only lets TLS out.
   */
  turnTransports?: TurnTransport[];
  /**
   * How long connect() may take before it rejects with code "timeout" (ms,
   * default 15000); also the limit for each step of a reconnection attempt.
   */
  timeoutMs?: number;
  /**
   * Reconnect automatically after a lost connection and resume the seat
   * (same peer id) with the welcome's resume token, until the room's grace
   * period (`welcome.resume_grace_ms`) runs out. Default true. Only in relay
   * and authoritative rooms of a server that hands out resume tokens;
   * otherwise (or with false) a lost connection closes the client.
   */
  reconnect?: boolean;
  /**
   * The connection counts as lost when nothing (not even the server's
   * 1-byte heartbeat, sent at least every second) arrived on either
   * DataChannel for this long (ms, default 5000; 0 turns this check off).
   * Also how long the RTCPeerConnection may stay "disconnected". Other
   * signs of a lost connection are immediate: the WebSocket closing without
   * our asking, the RTCPeerConnection "failed", a DataChannel closing, or
   * the server's `peer_away` naming this client.
   */
  deadAfterMs?: number;
  /**
   * Backoff between reconnection attempts: attempt n waits a random time in
   * [0, min(reconnectMaxDelayMs, reconnectMinDelayMs × 2^(n−1))] ("full
   * jitter"). Defaults 250 and 5000 ms.
   */
  reconnectMinDelayMs?: number;
  reconnectMaxDelayMs?: number;
}

/** Another member of the room. */
export interface Peer {
  peerId: number;
  /** Null only if the server reported a departure of a peer this client never saw join. */
  name: string | null;
  /** True between its "peeraway" and "peerback" (its connection is lost, its seat kept). */
  away?: boolean;
}

/** DataChannel parameters as the server peer sees them (wire format, snake_case). */
export interface ChannelParams {
  ordered: boolean;
  /** Present for partially reliable channels: 0 for "realtime". */
  max_retransmits?: number;
  max_packet_lifetime_ms?: number;
}

export interface ServerChannels {
  realtime: ChannelParams;
  control: ChannelParams;
}

/** detail of a "message" event: one message another member sent. */
export interface MessageDetail {
  /**
   * Peer id of the sender; {@link SERVER_PEER} (0) in authoritative rooms;
   * in p2p rooms the member on whose connection it arrived.
   */
  from: number;
  /** The channel it was sent (and relayed) on. */
  channel: ChannelLabel;
  /**
   * A string if the sender sent text, else the bytes. In authoritative rooms
   * the server's messages exactly as received (no relay header).
   */
  data: string | ArrayBuffer;
}

/** detail of "peerleft". */
export interface PeerLeftDetail extends Peer {
  /**
   * "left": sent leave or closed its socket; "disconnected": its connection
   * was lost and it did not come back within the grace period (at once with
   * a server without resume); "unknown": it went while this client was
   * reconnecting (missing from the resumed welcome's roster).
   */
  reason: 'left' | 'disconnected' | 'unknown';
}

/** detail of "reconnecting": an attempt to get the lost connection back is about to start. */
export interface ReconnectingDetail {
  /** 1 for the first attempt after the loss. */
  attempt: number;
  /** How long this attempt waits before it starts (backoff with jitter), ms. */
  delayMs: number;
  /**
   * What the loss looked like: "silence" (nothing for deadAfterMs),
   * "peer_away" (the server says our WebRTC session died),
   * "signaling_closed", "ice_failed", "ice_disconnected", "channel_closed".
   */
  reason: string;
}

/** detail of "resumed": the seat is back on a new session. */
export interface ResumedDetail {
  /** The same peer id as before. */
  peerId: number;
  /** Attempts it took. */
  attempts: number;
}

/**
 * detail of "resumefailed": reconnection gave up; "close" follows (reason:
 * the code, or "disconnected" when the server released the seat).
 */
export interface ResumeFailedDetail {
  /**
   * "resume_expired" (the grace period is over or the seat was released),
   * "resume_invalid", "resume_wrong_room", "resume_refused", "draining",
   * or another server error code that makes a retry pointless.
   */
  code: ErrorCode;
  message: string;
}

/** detail of "peeraway": another member lost its connection; its seat is kept for graceMs. */
export interface PeerAwayDetail {
  peerId: number;
  name: string | null;
  graceMs: number;
}

/** detail of "peerback": a member that was away resumed its seat. */
export interface PeerBackDetail {
  peerId: number;
  name: string | null;
}

/** detail of "error": a non-fatal problem after connect() resolved. */
export interface ErrorDetail {
  code: ErrorCode;
  message: string;
  fatal: boolean;
}

/**
 * P2p rooms: the connection to one member. "connecting" from its creation
 * (the newcomer offers, the others answer), "open" once both channels are
 * open (messages flow both ways), "closed" once torn down: the member left,
 * or the connection failed (an "error" event follows if the member is still
 * in the room). A closed connection is not re-established; the member (or
 * this client) has to join again.
 */
export type PeerConnectionState = 'connecting' | 'open' | 'closed';

/** detail of "peerstatechange" (p2p rooms): fired when a member's connection changes. */
export interface PeerStateChangeDetail {
  peerId: number;
  state: PeerConnectionState;
  /** That member's RTCPeerConnection connectionState ("closed" once torn down). */
  connectionState: RTCPeerConnectionState;
}

/**
 * detail of "statechange": fired when `state` or the RTCPeerConnection's
 * connectionState changes (in p2p rooms, the summary {@link RtcRelay.connectionState}).
 */
export interface StateChangeDetail {
  state: ClientState;
  connectionState: RTCPeerConnectionState;
}

/** detail of "draining": the server is shutting down. */
export interface DrainingDetail {
  /**
   * Milliseconds (from when the message arrived) until the server closes
   * every connection. It takes no new joins; running matches may finish.
   */
  deadlineMs: number;
}

/** detail of "close". */
export interface CloseDetail {
  /**
   * "left", "closed", "signaling_closed", "channel_closed", "disconnected",
   * "channel_rejected", after a failed reconnection its code
   * ("resume_expired", ...), "resumed_elsewhere", ...
   */
  reason: string;
  error: RtcRelayError | null;
}

export interface RtcRelayEventMap {
  message: CustomEvent<MessageDetail>;
  peerjoined: CustomEvent<Peer>;
  peerleft: CustomEvent<PeerLeftDetail>;
  error: CustomEvent<ErrorDetail>;
  statechange: CustomEvent<StateChangeDetail>;
  close: CustomEvent<CloseDetail>;
  /** The server is draining (shutting down); move to another server by the deadline. */
  draining: CustomEvent<DrainingDetail>;
  /** P2p rooms only. */
  peerstatechange: CustomEvent<PeerStateChangeDetail>;
  /** The connection was lost; an attempt to get it back starts after `delayMs`. */
  reconnecting: CustomEvent<ReconnectingDetail>;
  /** Back in the room on a new session, same seat and peer id. */
  resumed: CustomEvent<ResumedDetail>;
  /** Reconnection gave up; "close" follows. */
  resumefailed: CustomEvent<ResumeFailedDetail>;
  /** Another member lost its connection; its seat waits for it. */
  peeraway: CustomEvent<PeerAwayDetail>;
  /** A member that was away is back. */
  peerback: CustomEvent<PeerBackDetail>;
}

/**
 * A member of one rtcrelay room, connected to the server peer by WebRTC.
 *
 * Every message sent with {@link send} goes to every other member of the room
 * on the same channel; the sender does not get it back. "realtime" is
 * unordered with no retransmissions (may lose messages: use it for state that
 * is resent anyway), "control" is reliable and ordered.
 *
 * Events raised while connect() is pending (messages, joins) are held and
 * dispatched right after it resolves, so listeners added straight after the
 * `await` see them.
 *
 * In p2p rooms ("kind": "p2p") there is no server peer: the client opens one
 * RTCPeerConnection per other member, with the same two channels, and
 * messages go straight to the members (no relay header, no server limits,
 * though {@link LIMITS} are still checked so code works in every room kind).
 * {@link send} broadcasts to every member whose connection is open,
 * {@link sendTo} addresses one; `peerstatechange` tells when a member's
 * connection opens or closes.
 *
 * Reconnection (relay and authoritative rooms, `reconnect` option): when
 * the connection is lost (see `deadAfterMs`) the state becomes
 * "reconnecting" and attempts follow with backoff, each announced by
 * "reconnecting". If the server said `peer_away` for this client on a
 * WebSocket that still works, the attempt offers a new session on it;
 * otherwise it opens a new WebSocket and joins with the newest resume token
 * (the old socket is left open rather than closed, since a Close frame
 * would give the seat up; the server closes it), then offers. Success:
 * "resumed", state "open", the same peer id. The grace period over, or a
 * refusal such as "resume_expired": "resumefailed", then "close". While
 * reconnecting {@link send} throws "not_open" (messages are not queued).
 */
export declare class RtcRelay extends EventTarget {
  /**
   * Joins a room: signaling join → welcome → RTCPeerConnection with both
   * DataChannels → offer/answer and trickle ICE. Resolves once both channels
   * are open and the server has sent "ready"; rejects with an
   * {@link RtcRelayError} (e.g. code "room_full", "invalid_message", "timeout").
   *
   * P2p rooms: join → welcome → one connection per member of the welcome
   * roster, this client offering. Resolves once every one of them is open
   * (or that member left meanwhile): at once when alone in the room. Rejects
   * with "ice_failed" or "channel_closed" if one of them fails while its
   * member stays in the room. Members who join later connect afterwards
   * (they offer, this client answers): watch `peerstatechange`.
   */
  static connect(options: ConnectOptions): Promise<RtcRelay>;

  /** Use {@link RtcRelay.connect}; a bare instance is not connected. */
  constructor(options: ConnectOptions);

  /** The signaling URL in use. */
  readonly url: string;
  readonly room: string;
  readonly name: string;
  readonly kind: RoomKind;
  /** This client's peer id, assigned by the server (null until the welcome). */
  readonly peerId: number | null;
  /** Room capacity from the welcome. */
  readonly capacity: number | null;
  /** The other members, by peer id, kept current by peerjoined/peerleft. */
  readonly roster: Map<number, Peer>;
  /** Channel parameters from the server's "ready" message. */
  readonly serverChannels: ServerChannels | null;
  /** ICE servers used: the welcome's, then `options.iceServers`, filtered by `options.turnTransports`. */
  readonly iceServers: RTCIceServer[];
  /** Last signaling round trip measured by {@link ping}, in ms. */
  readonly signalingRtt: number | null;
  /** Client lifecycle state. */
  readonly state: ClientState;
  /** The newest resume token (each welcome brings a new one); null without resume (p2p rooms, a server with resume off). */
  readonly resumeToken: string | null;
  /** The room's grace period for a lost connection, from the welcome (ms); 0 without resume. */
  readonly resumeGraceMs: number;
  /**
   * The RTCPeerConnection's connectionState ("new" before it exists). In p2p
   * rooms the least advanced state among the connections to the members
   * ("failed" < "disconnected" < "new" < "connecting" < "connected"), and
   * "connected" when the client is open with nobody else in the room.
   */
  readonly connectionState: RTCPeerConnectionState;
  /** The underlying RTCPeerConnection, for stats and debugging; null in p2p rooms. */
  readonly peerConnection: RTCPeerConnection | null;
  /** P2p rooms: peer ids of the members whose connection is open (both channels). */
  readonly connectedPeers: number[];

  /**
   * The RTCDataChannel with this label. Send with {@link send}, which adds the
   * checks. In p2p rooms give the member's peer id (null without one).
   */
  channel(label: ChannelLabel, peerId?: number): RTCDataChannel | null;

  /** P2p rooms: the RTCPeerConnection to a member, or null (none, or torn down). */
  peerConnectionTo(peerId: number): RTCPeerConnection | null;

  /** P2p rooms: "connecting" or "open" for a member's connection, null when there is none. */
  peerState(peerId: number): Exclude<PeerConnectionState, 'closed'> | null;

  /**
   * Sends to every other member. Strings arrive as strings, binary data as an
   * ArrayBuffer (a view sends only its own bytes). In p2p rooms: to every
   * member whose connection is open (members still connecting miss it).
   * @returns false if a realtime message was dropped because the browser's
   *   send buffer is backed up (control messages are always queued); in p2p
   *   rooms, if it was dropped for at least one member.
   * @throws RtcRelayError "not_open", "bad_channel" or "message_too_large"
   *   (see {@link LIMITS}); TypeError for other data types.
   */
  send(channel: ChannelLabel, data: string | ArrayBuffer | ArrayBufferView): boolean;

  /**
   * P2p rooms only: sends to one member, as {@link send} does.
   * @returns false if a realtime message was dropped because the send buffer
   *   to that member is backed up.
   * @throws RtcRelayError "wrong_room_kind" outside p2p rooms, "not_open" if
   *   the connection to that member is not open, "bad_channel",
   *   "message_too_large"; TypeError for other data types.
   */
  sendTo(peerId: number, channel: ChannelLabel, data: string | ArrayBuffer | ArrayBufferView): boolean;

  /** Signaling (WebSocket) round trip in ms; rejects with code "timeout" or "not_open". */
  ping(timeoutMs?: number): Promise<number>;

  /**
   * WebRTC round trip in ms: currentRoundTripTime of the selected ICE
   * candidate pair from getStats(); null when not (yet) available. In p2p
   * rooms pass a member's peer id: the round trip to that member (null
   * without one).
   */
  rtt(peerId?: number): Promise<number | null>;

  /** Sends "leave" (others see reason "left") and closes. Idempotent. */
  leave(): void;

  /** Closes the WebRTC session(s) and the WebSocket without a "leave". Idempotent. */
  close(): void;

  /** Subscribes with the event's detail; returns an unsubscribe function. */
  on<K extends keyof RtcRelayEventMap>(type: K, handler: (detail: RtcRelayEventMap[K]['detail']) => void): () => void;

  addEventListener<K extends keyof RtcRelayEventMap>(
    type: K,
    listener: (this: RtcRelay, event: RtcRelayEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RtcRelayEventMap>(
    type: K,
    listener: (this: RtcRelay, event: RtcRelayEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** A decoded relayed frame: [0x01][flags bit0=text][sender u32 BE][payload]. */
export interface RelayedFrame {
  from: number;
  text: boolean;
  payload: Uint8Array;
}

/** Decodes one relayed frame; throws RtcRelayError "bad_frame" on malformed input. */
export declare function decodeRelayed(buffer: ArrayBuffer | ArrayBufferView): RelayedFrame;

/**
 * The transport of an ICE server URL: "tls" (`turns:`), "tcp"
 * (`turn:…?transport=tcp`), "udp" (other `turn:` URLs), null if not TURN.
 */
export declare function turnTransportOf(url: string): TurnTransport | null;

export default RtcRelay;
