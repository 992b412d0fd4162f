// Type definitions for rtcrelay-codec.js: the binary frames of authoritative
// rooms (protocol/src/game/*.rs). Pure functions, no DOM.
//
//   import { decodeSnapshot, applySnapshot } from '/client/rtcrelay-codec.js';
//   const view = decodeSnapshot(bytes);
//   const state = applySnapshot(view, baselineStateOrNull);

export declare const FRAME_INPUT: 0x02;
export declare const FRAME_SNAPSHOT: 0x03;
/** Most entities a state may hold. */
export declare const MAX_ENTITIES: 1024;
/** Most fields an entity may have (the delta mask is one u32). */
export declare const MAX_FIELDS: 32;
/** Most inputs one input datagram carries. */
export declare const MAX_INPUTS_PER_DATAGRAM: 32;
/** Largest input of any game, in bytes. */
export declare const MAX_INPUT_BYTES: 16;
export declare const INPUT_HEADER_LEN: 18;
export declare const SNAPSHOT_HEADER_LEN: 14;
export declare const MAX_VARINT_BYTES: 5;

/** The Rust GameFrameError variants, snake_case (GameFrameError::code). */
export type GameCodecErrorCode =
  | 'empty'
  | 'unknown_type'
  | 'truncated'
  | 'trailing'
  | 'reserved_flags'
  | 'bad_varint'
  | 'too_many'
  | 'invalid'
  | 'unknown_baseline';

/** Every decoding, encoding or applying failure; switch on `code`. */
export declare class GameCodecError extends Error {
  constructor(code: GameCodecErrorCode, message: string, details?: Record<string, unknown>);
  readonly name: 'GameCodecError';
  readonly code: GameCodecErrorCode;
  /** truncated: offset where bytes ran out; bad_varint: where the varint starts. */
  readonly at?: number;
  /** truncated: bytes missing. */
  readonly need?: number;
}

/** Binary data the codec accepts (a view is read over exactly its own bytes). */
export type BytesLike = ArrayBuffer | ArrayBufferView | ArrayLike<number>;

/** One entity of a world state; treat as read-only (states share entities). */
export interface Entity {
  id: number;
  /** Game-defined, 0..=255. */
  kind: number;
  /** Game-defined quantized values, at most MAX_FIELDS. */
  fields: Int32Array;
}

/** A world state: entities by id, iterated in ascending id order. */
export type WorldState = Map<number, Entity>;

/** Plain-object form of an entity (JSON, test vectors). */
export interface EntityJson {
  id: number;
  kind: number;
  fields: number[];
}

export interface SnapshotAck {
  /** Newest snapshot tick applied. */
  tick: number;
  /** Ms between receiving that snapshot and sending this datagram (0..=65535). */
  delayMs: number;
}

/** An input datagram (frame 0x02). */
export interface InputDatagram {
  seq: number;
  ack: SnapshotAck | null;
  /** Tick of the first input; later inputs are for the following ticks. */
  firstTick: number;
  /** Bytes per input, 1..=16. */
  inputSize: number;
  /** count * inputSize bytes, oldest first (count 1..=32). */
  inputs: Uint8Array;
}

export interface InputDatagramInit {
  seq: number;
  ack?: SnapshotAck | null;
  firstTick: number;
  inputSize: number;
  inputs: BytesLike;
}

export interface SnapshotHeader {
  tick: number;
  /** The snapshot tick this is a delta against; null for a full snapshot. */
  baseline: number | null;
  /** Cut to fit one datagram. */
  partial: boolean;
  /** Every input of this client for ticks <= inputAck is received or no longer needed. */
  inputAck: number;
}

export interface EntityUpdate {
  id: number;
  /** Set for a new entity (replaces any entity with this id; deltas against zeros). */
  new: { kind: number; fieldCount: number } | null;
  /** [field index, wrapping i32 delta], ascending field index. */
  changes: Array<[number, number]>;
}

/** A decoded snapshot (frame 0x03), not yet applied. */
export interface SnapshotView {
  header: SnapshotHeader;
  /** Ascending ids. */
  removed: number[];
  /** Ascending ids. */
  updates: EntityUpdate[];
}

export interface EncodeSnapshotInit {
  tick: number;
  /** Default 0. */
  inputAck?: number;
  /** The state to delta against, or null for a full snapshot. */
  baseline?: { tick: number; state: WorldState } | null;
  current: WorldState;
  /** Largest frame (default 1200, at least 16). */
  maxLen?: number;
}

export interface EncodedSnapshot {
  bytes: Uint8Array;
  partial: boolean;
  /** The state the client holds after applying `bytes`: `current` unless partial. */
  view: WorldState;
}

/** Views binary data as a Uint8Array over exactly its bytes. */
export declare function asBytes(data: BytesLike): Uint8Array;

/** Appends `v` (a u32) as LEB128 to `out`; returns `out`. */
export declare function putVarint(out: number[], v: number): number[];
/** Bytes putVarint writes for `v`. */
export declare function varintLen(v: number): number;
/**
 * Reads a LEB128 varint at `at`: [value, next offset]. Throws "bad_varint"
 * (more than 5 bytes or above u32::MAX) or "truncated".
 */
export declare function getVarint(bytes: Uint8Array, at: number): [number, number];
/** i32 → u32: 0, -1, 1, -2 … → 0, 1, 2, 3 … */
export declare function zigzag(v: number): number;
/** u32 → i32. */
export declare function unzigzag(u: number): number;

/** Encodes an input datagram; throws GameCodecError when a limit is broken. */
export declare function encodeInput(datagram: InputDatagramInit): Uint8Array;
/** Decodes an input datagram; every limit is checked. */
export declare function decodeInput(frame: BytesLike): InputDatagram;

/** Parses a snapshot frame with the Rust decoder's rules; throws GameCodecError. */
export declare function decodeSnapshot(frame: BytesLike): SnapshotView;
/**
 * Applies a decoded snapshot to its baseline's state (null for a full
 * snapshot; null for a delta throws "unknown_baseline") and returns the new
 * state. The baseline is not modified.
 */
export declare function applySnapshot(view: SnapshotView, baselineState: WorldState | null): WorldState;
/** Encodes a snapshot byte for byte like the Rust SnapshotEncoder (for tests and tools). */
export declare function encodeSnapshot(init: EncodeSnapshotInit): EncodedSnapshot;

/** A state from entities in any order (ids unique). */
export declare function stateFromEntities(entities: Iterable<{ id: number; kind: number; fields: ArrayLike<number> }>): WorldState;
/** The entities as plain objects, ascending ids. */
export declare function stateToEntities(state: WorldState): EntityJson[];
/** Same entities, kinds and fields. */
export declare function statesEqual(a: WorldState, b: WorldState): boolean;

/** Lowercase hex. */
export declare function toHex(data: BytesLike): string;
/** Bytes of a hex string; throws GameCodecError "invalid". */
export declare function fromHex(hex: string): Uint8Array;
