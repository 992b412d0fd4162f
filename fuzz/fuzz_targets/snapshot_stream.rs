//! Snapshots as a client receives them: a stream of frames, each a delta
//! against a state the client decoded earlier (looked up by tick) or a
//! full state, and the encoder asked to say each decoded state again.
//!
//! Input: a u16 (big-endian) frame size limit for the encoder, then frames,
//! each prefixed by its u16 length (see `rtcrelay_fuzz::frames`).
//!
//! Checks: no panic; a delta whose baseline the client lacks is refused as
//! `unknown_baseline`; an applied snapshot is a well-formed state; encoding
//! that state against the same baseline (and as a full snapshot) within the
//! size limit gives a frame that decodes and applies to exactly the state
//! the encoder says the client will hold: the state itself unless the frame
//! was cut, and a cut frame still makes progress when one entity fits.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rtcrelay_fuzz::frames;
use rtcrelay_protocol::game::snapshot::SNAPSHOT_HEADER_LEN;
use rtcrelay_protocol::game::world::{MAX_ENTITIES, MAX_FIELDS};
use rtcrelay_protocol::game::{
    FrameSpec, GameFrameError, SnapshotEncoder, SnapshotView, WorldState,
};

/// States a client keeps to decode deltas against (it acks the newest).
const HISTORY: usize = 32;
/// The longest entity update: id gap, head, kind, field count, mask, 32
/// fields, each varint at most 5 bytes.
const MAX_UPDATE_LEN: usize = 5 + 3 + 5 + MAX_FIELDS * 5;
/// A frame limit that always fits the header, both counts and one item.
const ROOM_FOR_ONE: usize = SNAPSHOT_HEADER_LEN + 2 * 5 + MAX_UPDATE_LEN;

fuzz_target!(|data: &[u8]| {
    let Some((limit, data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_len = usize::from(u16::from_be_bytes(*limit)).max(SNAPSHOT_HEADER_LEN + 2);
    let mut history: BTreeMap<u32, WorldState> = BTreeMap::new();
    let mut encoder = SnapshotEncoder::new();
    for frame in frames(data) {
        let Ok(view) = SnapshotView::decode(frame) else {
            continue;
        };
        let tick = view.header.tick;
        let baseline = match view.header.baseline {
            None => None,
            Some(at) => match history.get(&at) {
                Some(state) => Some((at, state)),
                None => {
                    let mut out = WorldState::new();
                    assert_eq!(
                        view.apply(None, &mut out),
                        Err(GameFrameError::UnknownBaseline(at))
                    );
                    continue;
                }
            },
        };
        let mut state = WorldState::new();
        if view.apply(baseline.map(|(_, s)| s), &mut state).is_err() {
            continue;
        }
        assert!(state.len() <= MAX_ENTITIES);
        assert!(state.entities().windows(2).all(|w| w[0].id < w[1].id));
        assert!(state
            .entities()
            .iter()
            .all(|e| e.fields.len() <= MAX_FIELDS));

        let spec = FrameSpec {
            tick,
            input_ack: view.header.input_ack,
            max_len,
        };
        says_again(&mut encoder, spec, baseline, &state);
        says_again(&mut encoder, spec, None, &state);

        history.insert(tick, state);
        if history.len() > HISTORY {
            history.pop_first();
        }
    }
});

/// Encodes `state` against `baseline` and checks what the client would get.
fn says_again(
    encoder: &mut SnapshotEncoder,
    spec: FrameSpec,
    baseline: Option<(u32, &WorldState)>,
    state: &WorldState,
) {
    let (mut out, mut view) = (Vec::new(), WorldState::new());
    let encoded = encoder.encode(spec, baseline, state, &mut out, &mut view);
    assert_eq!(encoded.len, out.len());
    assert!(
        out.len() <= spec.max_len,
        "{} > {}",
        out.len(),
        spec.max_len
    );
    let decoded = SnapshotView::decode(&out).expect("the encoder's frame decodes");
    assert_eq!(decoded.header.tick, spec.tick);
    assert_eq!(decoded.header.baseline, baseline.map(|(tick, _)| tick));
    assert_eq!(decoded.header.partial, encoded.partial);
    let mut applied = WorldState::new();
    decoded
        .apply(baseline.map(|(_, s)| s), &mut applied)
        .expect("the encoder's frame applies to its baseline");
    assert_eq!(
        applied, view,
        "the client would not hold the encoder's view"
    );
    let empty = WorldState::new();
    let before = baseline.map_or(&empty, |(_, s)| s);
    if !encoded.partial {
        assert_eq!(&view, state);
    } else if spec.max_len >= ROOM_FOR_ONE {
        assert_ne!(
            &view, before,
            "a cut frame sent nothing though one item fits"
        );
    }
}
