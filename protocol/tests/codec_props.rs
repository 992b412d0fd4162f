//! Property tests of the authoritative-room codecs: round trips for every
//! valid value, and no panic (only `Ok` or `Err`) for any byte string.

use proptest::prelude::*;
use rtcrelay_protocol::game::input::{SnapshotAck, MAX_INPUTS_PER_DATAGRAM, MAX_INPUT_BYTES};
use rtcrelay_protocol::game::snapshot::SNAPSHOT_HEADER_LEN;
use rtcrelay_protocol::game::varint::{get_u32, len_u32, put_u32, unzigzag, zigzag};
use rtcrelay_protocol::game::world::{MAX_ENTITIES, MAX_FIELDS};
use rtcrelay_protocol::game::{
    Entity, FrameSpec, InputDatagram, SnapshotEncoder, SnapshotView, WorldState,
};

// ------------------------------------------------------------------ inputs

fn input_datagram() -> impl Strategy<Value = InputDatagram> {
    (
        any::<u32>(),
        proptest::option::of((any::<u32>(), any::<u16>())),
        any::<u32>(),
        1..=MAX_INPUT_BYTES,
        1..=MAX_INPUTS_PER_DATAGRAM,
    )
        .prop_flat_map(|(seq, ack, first_tick, size, count)| {
            proptest::collection::vec(any::<u8>(), size * count).prop_map(move |inputs| {
                InputDatagram {
                    seq,
                    ack: ack.map(|(tick, delay_ms)| SnapshotAck { tick, delay_ms }),
                    first_tick,
                    input_size: size as u8,
                    inputs,
                }
            })
        })
}

/// Byte strings near valid frames: a valid frame with a few edits.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 0..8u8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Set(i, b) if len > 0 => bytes[i % len] = b,
            Edit::Flip(i, bit) if len > 0 => bytes[i % len] ^= 1 << bit,
            Edit::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Edit::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #[test]
    fn input_round_trip(d in input_datagram()) {
        let bytes = d.encode();
        prop_assert_eq!(bytes.len(), 18 + d.inputs.len());
        prop_assert_eq!(InputDatagram::decode(&bytes), Ok(d.clone()));
        let ticks: Vec<u32> = d.iter().map(|(t, _)| t).collect();
        prop_assert_eq!(ticks.len(), d.count());
        for (i, t) in ticks.iter().enumerate() {
            prop_assert_eq!(*t, d.first_tick.wrapping_add(i as u32));
        }
    }

    #[test]
    fn mutated_inputs_decode_canonically_or_fail(d in input_datagram(), e in edits()) {
        let bytes = mutate(d.encode(), &e);
        if let Ok(decoded) = InputDatagram::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_input_decoder(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..700),
        typed in any::<bool>(),
    ) {
        if typed && !bytes.is_empty() {
            bytes[0] = 0x02;
        }
        if let Ok(decoded) = InputDatagram::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn varint_round_trip(v in any::<u32>()) {
        let mut out = vec![0xAA];
        put_u32(&mut out, v);
        prop_assert_eq!(out.len(), 1 + len_u32(v));
        let mut at = 1;
        prop_assert_eq!(get_u32(&out, &mut at), Ok(v));
        prop_assert_eq!(at, out.len());
    }

    #[test]
    fn zigzag_round_trip(v in any::<i32>()) {
        prop_assert_eq!(unzigzag(zigzag(v)), v);
        prop_assert!(zigzag(v) <= v.unsigned_abs().saturating_mul(2));
    }

    #[test]
    fn varint_decoder_reads_at_most_five_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut at = 0;
        if let Ok(v) = get_u32(&bytes, &mut at) {
            prop_assert!(at <= 5 && at >= len_u32(v));
            // Decoding the shortest form of v gives v again.
            let mut short = Vec::new();
            put_u32(&mut short, v);
            let mut at2 = 0;
            prop_assert_eq!(get_u32(&short, &mut at2), Ok(v));
        } else {
            prop_assert_eq!(at, 0);
        }
    }
}

// ---------------------------------------------------------------- snapshots

fn field_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -3..=3i32,
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        1 => Just(i32::MIN + 1),
        1 => Just(i32::MAX - 1),
        2 => any::<i32>(),
        1 => -100_000..100_000i32,
    ]
}

fn entity_shape() -> impl Strategy<Value = (u8, Vec<i32>)> {
    let fields = prop_oneof![
        4 => proptest::collection::vec(field_value(), 0..=4),
        1 => proptest::collection::vec(field_value(), 0..=MAX_FIELDS),
    ];
    (0..3u8, fields)
}

/// Ids from a small range (so baseline and current overlap a lot) plus a
/// few far apart ones (multi-byte gaps, up to `u32::MAX`).
fn entity_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0..48u32,
        1 => 100..20_000u32,
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

fn world() -> impl Strategy<Value = WorldState> {
    proptest::collection::vec((entity_id(), entity_shape()), 0..40).prop_map(|entities| {
        WorldState::from_entities(entities.into_iter().map(|(id, (kind, fields))| Entity {
            id,
            kind,
            fields,
        }))
    })
}

/// A baseline and a current state derived from it: most entities kept, some
/// changed in a field or two, some re-shaped, removed or added.
fn baseline_and_current() -> impl Strategy<Value = (WorldState, WorldState)> {
    (world(), world(), any::<u64>()).prop_map(|(baseline, extra, seed)| {
        let mut current = WorldState::new();
        let mut bits = seed;
        let mut next = |n: u64| {
            let v = bits % n;
            bits = bits.rotate_left(7) ^ 0x9E37_79B9_7F4A_7C15;
            v
        };
        for e in baseline.entities() {
            let mut e = e.clone();
            match next(6) {
                0 => continue, // removed
                1 if !e.fields.is_empty() => {
                    let i = next(e.fields.len() as u64) as usize;
                    e.fields[i] = e.fields[i].wrapping_add(next(5) as i32 - 2);
                }
                2 => e.kind = e.kind.wrapping_add(1),
                3 if !e.fields.is_empty() => {
                    e.fields.pop();
                }
                _ => {}
            }
            current.insert(e);
        }
        for e in extra.entities() {
            if next(3) == 0 {
                current.insert(e.clone());
            }
        }
        (baseline, current)
    })
}

struct Checked {
    frame: Vec<u8>,
    view: WorldState,
    partial: bool,
}

/// Encodes, decodes and applies; checks everything that must hold for any
/// frame the encoder writes.
fn encode_and_check(
    encoder: &mut SnapshotEncoder,
    baseline: Option<(u32, &WorldState)>,
    current: &WorldState,
    max_len: usize,
) -> Result<Checked, TestCaseError> {
    let spec = FrameSpec {
        tick: 77,
        input_ack: 75,
        max_len,
    };
    let mut frame = vec![1, 2, 3];
    let mut view = WorldState::from_entities([Entity {
        id: 5,
        kind: 9,
        fields: vec![1, 2, 3],
    }]);
    let encoded = encoder.encode(spec, baseline, current, &mut frame, &mut view);
    prop_assert_eq!(encoded.len, frame.len());
    prop_assert!(frame.len() <= max_len, "{} > {}", frame.len(), max_len);
    if !encoded.partial {
        prop_assert_eq!(&view, current);
    }
    let decoded =
        SnapshotView::decode(&frame).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(decoded.header.tick, 77);
    prop_assert_eq!(decoded.header.input_ack, 75);
    prop_assert_eq!(decoded.header.baseline, baseline.map(|(t, _)| t));
    prop_assert_eq!(decoded.header.partial, encoded.partial);
    let mut applied = WorldState::from_entities([Entity {
        id: 6,
        kind: 1,
        fields: vec![],
    }]);
    decoded
        .apply(baseline.map(|(_, s)| s), &mut applied)
        .map_err(|e| TestCaseError::fail(format!("apply: {e}")))?;
    prop_assert_eq!(&applied, &view);
    Ok(Checked {
        frame,
        view,
        partial: encoded.partial,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn snapshot_round_trip((baseline, current) in baseline_and_current()) {
        let mut encoder = SnapshotEncoder::new();
        let delta = encode_and_check(&mut encoder, Some((70, &baseline)), &current, 1200)?;
        let full = encode_and_check(&mut encoder, None, &current, 1200)?;
        // A delta is never longer than the full snapshot... unless it must
        // remove entities; it always lists at most as many updates.
        if !delta.partial && !full.partial && baseline.is_empty() {
            prop_assert_eq!(delta.frame.len(), full.frame.len());
        }
        // Unchanged state: a delta with nothing in it.
        let same = encode_and_check(&mut encoder, Some((77, &current)), &current, 1200)?;
        prop_assert_eq!(same.frame.len(), SNAPSHOT_HEADER_LEN + 2);
        prop_assert!(!same.partial);
    }

    #[test]
    fn small_frames_fit_and_converge(
        (baseline, current) in baseline_and_current(),
        max_len in (SNAPSHOT_HEADER_LEN + 2)..400,
    ) {
        let mut encoder = SnapshotEncoder::new();
        encode_and_check(&mut encoder, Some((70, &baseline)), &current, max_len)?;
        encode_and_check(&mut encoder, None, &current, max_len)?;

        // The server keeps each view as the next baseline: what was cut
        // goes out later. With room for the largest item (an id, head,
        // kind, count, mask and 32 five-byte fields), every frame makes
        // progress, so the client reaches `current`.
        let roomy = max_len.max(SNAPSHOT_HEADER_LEN + 4 + 5 + 3 + 5 + MAX_FIELDS * 5);
        let mut held = baseline.clone();
        let bound = baseline.len() + current.len() + 1;
        let mut converged = false;
        for _ in 0..bound {
            let step = encode_and_check(&mut encoder, Some((70, &held)), &current, roomy)?;
            held = step.view;
            if !step.partial {
                converged = true;
                break;
            }
        }
        prop_assert!(converged);
        prop_assert_eq!(&held, &current);
    }

    #[test]
    fn mutated_snapshots_never_panic(
        (baseline, current) in baseline_and_current(),
        e in edits(),
        full in any::<bool>(),
    ) {
        let mut encoder = SnapshotEncoder::new();
        let base = (!full).then_some((70, &baseline));
        let valid = encode_and_check(&mut encoder, base, &current, 1200)?;
        let bytes = mutate(valid.frame, &e);
        if let Ok(view) = SnapshotView::decode(&bytes) {
            prop_assert!(view.removed.len() <= MAX_ENTITIES);
            prop_assert!(view.updates.len() <= MAX_ENTITIES);
            prop_assert!(view.removed.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(view.updates.windows(2).all(|w| w[0].id < w[1].id));
            let mut out = WorldState::new();
            if view.apply(Some(&baseline), &mut out).is_ok() {
                prop_assert!(out.len() <= MAX_ENTITIES);
                prop_assert!(out.entities().iter().all(|e| e.fields.len() <= MAX_FIELDS));
            }
            // Against another state: still Ok or Err.
            let _ = view.apply(Some(&current), &mut out);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_snapshot_decoder(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
        typed in any::<bool>(),
        baseline in world(),
    ) {
        if typed && bytes.len() > 1 {
            bytes[0] = 0x03;
            bytes[1] &= 0x03;
        }
        if let Ok(view) = SnapshotView::decode(&bytes) {
            let mut out = WorldState::new();
            let _ = view.apply(Some(&baseline), &mut out);
            let _ = view.apply(None, &mut out);
        }
    }
}
