// Type definitions for rtcrelay-game.js: the game client of authoritative
// rooms.
//
// Usage:
//   import { GameSession } from '/client/rtcrelay-game.js';
//   const game = await GameSession.connect({ room: 'race', name: 'ada', predictor });
//   game.addEventListener('event', (e) => console.log(e.detail.event));
//   addEventListener('keydown', () => game.setInput(1));
//   requestAnimationFrame(function draw() {
//     const me = game.predicted();              // own entity, predicted now
//     const others = game.interpolatedAll();    // everything else, interpolated
//     requestAnimationFrame(draw);
//   });

import type { ConnectOptions, ErrorCode, RtcRelay, RtcRelayError } from './rtcrelay.js';
import type { WorldState } from './rtcrelay-codec.js';

/** Applied snapshot states kept by tick (delta baselines): 64. */
export declare const SNAPSHOT_RING: 64;
/** Clock samples kept; the offset is that of the sample with the smallest RTT: 8. */
export declare const CLOCK_SAMPLES: 8;

/** The server's hello (control.rs ServerControl::Hello), camelCase. */
export interface GameHello {
  /** Which game runs, e.g. "dizolaur". */
  game: string;
  tickRate: number;
  snapshotRate: number;
  /** Bytes per input. */
  inputSize: number;
  /** Inputs for ticks beyond the server's tick + maxInputLead are rejected. */
  maxInputLead: number;
  /** Inputs at most this many ticks late are still given to the game. */
  maxRewind: number;
  /** Server tick and time (ms since the room's epoch) when the hello was sent. */
  tick: number;
  serverTimeMs: number;
  /** This client's own entity in snapshots (predicted), or null. */
  entity: number | null;
}

/**
 * Client-side prediction of the own entity: the game's step for one player,
 * the same rules the server applies. Must not modify `world`; may modify
 * and return `fields`.
 */
export interface Predictor {
  /**
   * The own entity's fields after one tick with `input` (a number for
   * one-byte inputs, else the input's bytes). `world` is the newest
   * snapshot's state.
   */
  step(fields: Int32Array, input: number | Uint8Array, world: WorldState): Int32Array | ArrayLike<number>;
}

export interface GameCoreOptions {
  predictor?: Predictor | null;
  /** This client's peer id: finds its own line in the server's stats. */
  peerId?: number | null;
}

/** A message GameCore wants sent. */
export type GameOutput = { channel: 'realtime'; data: Uint8Array } | { channel: 'control'; data: string };

/** What onSnapshot did with a frame. */
export type SnapshotOutcome = 'applied' | 'stale' | 'duplicate' | 'unknown_baseline' | 'bad';

/** detail of "snapshot": a new newest state. */
export interface SnapshotDetail {
  tick: number;
  state: WorldState;
  partial: boolean;
}

/** detail of "event": a critical event, dispatched once per id. */
export interface GameEventDetail {
  id: number;
  tick: number;
  /** Game-defined JSON, e.g. {type: "match_end", …}. */
  event: unknown;
}

/** One player's line of the server's stats (control.rs PlayerNetStats, wire names). */
export interface PlayerNetStats {
  peer: number;
  rtt_ms: number;
  jitter_ms: number;
  /** Upstream (client → server) input datagram loss, 0..1. */
  loss: number;
  inputs_late: number;
  inputs_missing: number;
  snapshot_bytes_per_s: number;
  /** What the server's network lab injected on this player's path over the
   * last second; absent when no lab setting applies to it. */
  injected?: InjectedNetStats;
}

/** control.rs InjectedNetStats: the lab's doing on one player's path. */
export interface InjectedNetStats {
  /** The lab scope whose setting applies: `global`, `room:NAME`, `peer:ID`. */
  scope: string;
  /** Client → server. */
  up: InjectedDirection;
  /** Server → client. */
  down: InjectedDirection;
}

/** One direction of InjectedNetStats, in UDP datagrams. */
export interface InjectedDirection {
  datagrams: number;
  dropped: number;
  /** dropped / datagrams, 0..1. */
  loss: number;
  duplicated: number;
  reordered: number;
  corrupted: number;
  /** Mean delay added per delivered copy, ms. */
  delay_ms: number;
}

/** detail of "stats": the server's stats message as sent. */
export interface ServerStats {
  type: 'stats';
  tick: number;
  players: PlayerNetStats[];
}

/** detail of "error": a server `error` message, a bad frame, or a send failure. */
export interface GameErrorDetail {
  /** e.g. "command_refused", "bad_control_message", "bad_snapshot", "bad_input", or an RtcRelay code. */
  code: ErrorCode | 'command_refused' | 'bad_control_message' | 'bad_snapshot' | 'bad_input';
  message: string;
  /** bad_snapshot: the GameCodecError code. */
  cause?: string;
  fatal?: boolean;
}

/** detail of "close" (GameSession). */
export interface GameCloseDetail {
  reason: string;
  error: RtcRelayError | null;
}

/** Net stats for an overlay. Times in ms. */
export interface NetStats {
  /** Smoothed RTT of the clock exchanges (RFC 6298 srtt), null before the first. */
  rttMs: number | null;
  /** Their mean deviation (rttvar), null before the first. */
  jitterMs: number | null;
  /** Server clock − local clock estimate, null before the hello. */
  clockOffsetMs: number | null;
  /** Snapshots missing over the last second of snapshot slots, 0..1. */
  lossDown: number;
  /** Upstream loss as the server measures it (its stats), null until known. */
  lossUp: number | null;
  /** The server's RTT and jitter for this client (realtime path), null until known. */
  serverRttMs: number | null;
  serverJitterMs: number | null;
  /** Snapshot datagrams received in the last second, bytes and count. */
  snapshotBytesPerSec: number;
  snapshotsPerSec: number;
  /** Reconciliations that changed an already-predicted tick. */
  corrections: number;
  /** Current interpolation delay. */
  interpDelayMs: number;
  /** Ticks the input target runs ahead of the estimated server tick. */
  inputLead: number;
  /** Snapshots older than the newest applied (kept as baselines only). */
  staleSnapshots: number;
  /** Deltas against a baseline this client lacked (ignored). */
  unknownBaselines: number;
  duplicateSnapshots: number;
  /** Frames that failed to decode or apply. */
  badSnapshots: number;
  /** Tick of the newest applied snapshot. */
  snapshotTick: number | null;
  /** The server's input_ack (max seen). */
  inputAck: number | null;
  /** Last tick an input was sampled for. */
  targetTick: number | null;
}

/** An entity at the render tick. */
export interface InterpolatedEntity {
  id: number;
  kind: number;
  /** The render tick (fractional). */
  tick: number;
  /** Position between the two snapshots, 0..1. */
  alpha: number;
  /** Fields lerped between the two snapshots (fractional; wrapping differences). */
  fields: Float64Array;
  /** The two snapshots' fields: use these for discrete fields (flags, states). */
  from: Int32Array;
  to: Int32Array;
  fromTick: number;
  toTick: number;
}

export interface GameCounters {
  snapshotsApplied: number;
  staleSnapshots: number;
  duplicateSnapshots: number;
  unknownBaselines: number;
  badSnapshots: number;
  corrections: number;
  eventsReceived: number;
  duplicateEvents: number;
  inputsSent: number;
  inputDatagramsSent: number;
  badControl: number;
  /** restartSession() calls: one per reconnection attempt of the connection. */
  sessionRestarts: number;
}

export interface GameCoreEventMap {
  hello: CustomEvent<GameHello>;
  snapshot: CustomEvent<SnapshotDetail>;
  event: CustomEvent<GameEventDetail>;
  stats: CustomEvent<ServerStats>;
  error: CustomEvent<GameErrorDetail>;
}

export interface GameSessionEventMap extends GameCoreEventMap {
  close: CustomEvent<GameCloseDetail>;
}

/**
 * The sans-IO game client: driven by `now` (ms on any monotonic clock) and
 * the server's messages; queues what to send. `now` arguments are optional
 * on queries: GameCore then uses the last `now` it was given, GameSession
 * performance.now().
 */
export declare class GameCore extends EventTarget {
  constructor(options?: GameCoreOptions);

  readonly predictor: Predictor | null;
  peerId: number | null;
  /** The server's hello; null until it arrives. */
  readonly hello: GameHello | null;
  readonly counters: Readonly<GameCounters>;

  /** Ms per tick (1000 / tick rate; 1000/60 before the hello). */
  readonly tickMs: number;
  /** The own entity id (predicted): setOwnEntity()'s, else hello.entity, or null. */
  readonly entity: number | null;
  /** Newest applied state, or null. */
  readonly state: WorldState | null;
  /** Last tick an input was sampled for, or null. */
  readonly targetTick: number | null;
  /** The tick predicted() is for, or null. */
  readonly predictedTick: number | null;
  /** Current interpolation delay (ms): snapshot interval + 2 × arrival jitter, within [interval, 250]. */
  readonly interpDelayMs: number;
  /** The server's last stats message, or null. */
  readonly serverStats: ServerStats | null;

  /** Handles a text message from `control` (a binary one is read as UTF-8). */
  onControl(text: string | ArrayBuffer | ArrayBufferView, now: number): void;
  /**
   * A new WebRTC session replaces the old one (a resumed seat): forgets the
   * snapshot baselines (the server's history of them went with the old
   * session: input datagrams ack nothing until a new snapshot), clock
   * samples and queued output; the newest state stays readable. The server
   * follows with hello (clock sampling restarts) and a full snapshot.
   * Delivered event ids stay remembered, so events the server resends are
   * acked again but delivered once. GameSession calls it on the relay's
   * "reconnecting".
   */
  restartSession(now: number): void;
  /** Handles a binary message from `realtime`. */
  onSnapshot(bytes: ArrayBuffer | ArrayBufferView, now: number): SnapshotOutcome;
  /**
   * The local tick: due clock requests and, at most once per half tick
   * period, one input sample (for the target tick) and one input datagram.
   */
  tick(now: number): void;
  /** The next message to send, or null. */
  pollOutput(): GameOutput | null;

  /** The player's input from now on: one byte (0..255) or the input's bytes. */
  setInput(value: number | ArrayBuffer | ArrayBufferView | ArrayLike<number>): void;
  /** Sends a game command on `control`, e.g. {start: {bots: true}}. */
  command(command: unknown): void;
  /**
   * Names the own (predicted) entity when the game assigns it after the
   * hello; null goes back to hello.entity. Prediction restarts from the
   * newest snapshot.
   */
  setOwnEntity(id: number | null): void;

  /** Estimated server time (ms since the room's epoch); null before the hello. */
  serverTimeNow(now?: number): number | null;
  /** Estimated server tick (fractional); null before the hello. */
  serverTickNow(now?: number): number | null;
  /**
   * The tick remote entities are drawn at: the server tick as the snapshot
   * stream shows it ((now − mean snapshot transit) × tick rate; before any
   * snapshot, serverTickNow) minus the interpolation delay.
   */
  renderTick(now?: number): number | null;
  /** Newest applied snapshot. */
  latest(): { tick: number; state: WorldState } | null;
  /** The state of snapshot `tick` if still in the ring. */
  stateAt(tick: number): WorldState | null;
  /**
   * The own entity's fields predicted for targetTick (the newest snapshot
   * advanced by the predictor through the inputs after it; the snapshot's
   * fields without a predictor); null without an own entity.
   */
  predicted(): Int32Array | null;
  /** Entity `id` at the render tick, between the two snapshots around it; null if absent. */
  interpolated(id: number, now?: number): InterpolatedEntity | null;
  /** Every entity at the render tick, ascending ids. */
  interpolatedAll(now?: number): Map<number, InterpolatedEntity>;
  netStats(now?: number): NetStats;

  addEventListener<K extends keyof GameCoreEventMap>(
    type: K,
    listener: (this: GameCore, event: GameCoreEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof GameCoreEventMap>(
    type: K,
    listener: (this: GameCore, event: GameCoreEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export interface GameConnectOptions extends Omit<ConnectOptions, 'kind'> {
  predictor?: Predictor | null;
  /** How long connect() waits for the hello after the channels opened (ms, default 10000). */
  helloTimeoutMs?: number;
}

export interface GameAttachOptions {
  predictor?: Predictor | null;
  helloTimeoutMs?: number;
}

/**
 * GameCore on a live connection: an RtcRelay of kind "authoritative" and a
 * timer at the tick rate (sampling inputs, sending datagrams and clock
 * requests). Drawing is the application's business (requestAnimationFrame).
 *
 * Across a reconnection of the relay (its "reconnecting" … "resumed"
 * events; listen on `session.relay`) the session stays open: the timer
 * keeps sampling inputs, what cannot be sent is dropped, the snapshot
 * baselines restart (restartSession) and the server's new hello and full
 * snapshot pick the game up. "close" comes only when the relay closes (for
 * good: after "resumefailed", leave() or close()).
 */
export declare class GameSession extends GameCore {
  /**
   * Joins an authoritative room and resolves once the server's hello has
   * arrived; rejects with an RtcRelayError (e.g. "room_full", "timeout").
   */
  static connect(options: GameConnectOptions): Promise<GameSession>;
  /** Wraps a connected authoritative RtcRelay; resolves once the hello has arrived. */
  static attach(relay: RtcRelay, options?: GameAttachOptions): Promise<GameSession>;

  /** Use connect() or attach(); throws "bad_options" for a relay room. */
  constructor(relay: RtcRelay, options?: GameAttachOptions);

  readonly relay: RtcRelay;
  readonly closed: boolean;

  /** Stops the timer and closes the connection. Idempotent; dispatches "close". */
  close(): void;

  addEventListener<K extends keyof GameSessionEventMap>(
    type: K,
    listener: (this: GameSession, event: GameSessionEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof GameSessionEventMap>(
    type: K,
    listener: (this: GameSession, event: GameSessionEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export default GameSession;
