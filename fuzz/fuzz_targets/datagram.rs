//! The binary frames of the `realtime` channel, one datagram at a time:
//! relayed frames (`0x01`), input datagrams (`0x02`) and snapshots
//! (`0x03`). Every decoder sees every input, as a peer can send any bytes
//! whatever its first one.
//!
//! Checks: no panic; relayed frames and input datagrams that decode are
//! canonical (they re-encode to the very same bytes); a decoded snapshot
//! keeps the documented rules (ids ascending, none both removed and
//! updated, fields in range), and applying it to an empty or a busy
//! baseline gives a well-formed state or an error. Then the other way: an
//! input datagram or relayed frame built from the fuzz bytes within the
//! limits decodes to itself.

#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbitraryResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use rtcrelay_protocol::frame::Relayed;
use rtcrelay_protocol::game::input::{SnapshotAck, MAX_INPUTS_PER_DATAGRAM, MAX_INPUT_BYTES};
use rtcrelay_protocol::game::world::{MAX_ENTITIES, MAX_FIELDS};
use rtcrelay_protocol::game::{Entity, InputDatagram, SnapshotView, WorldState};
use rtcrelay_protocol::PeerId;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    check_relayed(data);
    check_input(data);
    check_snapshot(data);
    let mut u = Unstructured::new(data);
    let _ = built_input_round_trips(&mut u);
    let _ = built_relayed_round_trips(&mut u);
});

fn check_relayed(data: &[u8]) {
    let Ok(frame) = Relayed::decode(data) else {
        return;
    };
    assert_eq!(frame.encode(), data, "{frame:?} is not canonical");
    assert!(!frame.text || std::str::from_utf8(frame.payload).is_ok());
}

fn check_input(data: &[u8]) {
    let datagram = match InputDatagram::decode(data) {
        Ok(datagram) => datagram,
        Err(e) => {
            let _ = (e.to_string(), e.code());
            return;
        }
    };
    assert_eq!(datagram.encode(), data, "{datagram:?} is not canonical");
    let size = usize::from(datagram.input_size);
    assert!((1..=MAX_INPUT_BYTES).contains(&size));
    assert!((1..=MAX_INPUTS_PER_DATAGRAM).contains(&datagram.count()));
    assert_eq!(datagram.inputs.len(), datagram.count() * size);
    let ticks: Vec<u32> = datagram.iter().map(|(tick, _)| tick).collect();
    assert_eq!(ticks.len(), datagram.count());
    for (i, tick) in ticks.iter().enumerate() {
        assert_eq!(*tick, datagram.first_tick.wrapping_add(i as u32));
    }
}

fn check_snapshot(data: &[u8]) {
    let view = match SnapshotView::decode(data) {
        Ok(view) => view,
        Err(e) => {
            let _ = (e.to_string(), e.code());
            return;
        }
    };
    let full = view.header.baseline.is_none();
    assert!(view.removed.windows(2).all(|w| w[0] < w[1]));
    assert!(view.updates.windows(2).all(|w| w[0].id < w[1].id));
    assert!(view.removed.len() <= MAX_ENTITIES && view.updates.len() <= MAX_ENTITIES);
    assert!(!full || view.removed.is_empty());
    for update in &view.updates {
        assert!(!view.removed.contains(&update.id));
        assert!(!full || update.new.is_some());
        let fields = match update.new {
            Some((_, count)) => usize::from(count),
            None => MAX_FIELDS,
        };
        assert!(fields <= MAX_FIELDS);
        assert!(update.changes.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(update.changes.iter().all(|&(i, _)| usize::from(i) < fields));
    }
    for baseline in [None, Some(&WorldState::new()), Some(busy_baseline())] {
        let mut out = WorldState::from_entities([Entity {
            id: 9,
            kind: 9,
            fields: vec![9],
        }]);
        if view.apply(baseline, &mut out).is_ok() {
            assert_well_formed(&out);
        }
    }
}

/// Ids 0..600 in steps of 3, field counts 0..=32 in turn: deltas and
/// removals of small ids find something to act on, near the entity limit.
fn busy_baseline() -> &'static WorldState {
    static STATE: OnceLock<WorldState> = OnceLock::new();
    STATE.get_or_init(|| {
        WorldState::from_entities((0..200u32).map(|i| Entity {
            id: i * 3,
            kind: (i % 4) as u8,
            fields: (0..i % 33).map(|f| f as i32 * 100 - 50).collect(),
        }))
    })
}

fn assert_well_formed(state: &WorldState) {
    assert!(state.len() <= MAX_ENTITIES);
    assert!(state.entities().windows(2).all(|w| w[0].id < w[1].id));
    assert!(state
        .entities()
        .iter()
        .all(|e| e.fields.len() <= MAX_FIELDS));
}

fn built_input_round_trips(u: &mut Unstructured) -> ArbitraryResult<()> {
    let input_size = u.int_in_range(1..=MAX_INPUT_BYTES as u8)?;
    let count = u.int_in_range(1..=MAX_INPUTS_PER_DATAGRAM)?;
    let datagram = InputDatagram {
        seq: u.arbitrary()?,
        ack: if u.arbitrary()? {
            Some(SnapshotAck {
                tick: u.arbitrary()?,
                delay_ms: u.arbitrary()?,
            })
        } else {
            None
        },
        first_tick: u.arbitrary()?,
        input_size,
        inputs: u.bytes(count * usize::from(input_size))?.to_vec(),
    };
    assert_eq!(InputDatagram::decode(&datagram.encode()), Ok(datagram));
    Ok(())
}

fn built_relayed_round_trips(u: &mut Unstructured) -> ArbitraryResult<()> {
    let sender = PeerId(u.arbitrary()?);
    let text: bool = u.arbitrary()?;
    let payload: Vec<u8> = if text {
        u.arbitrary::<&str>()?.as_bytes().to_vec()
    } else {
        u.arbitrary::<&[u8]>()?.to_vec()
    };
    let frame = Relayed {
        sender,
        text,
        payload: &payload,
    };
    assert_eq!(Relayed::decode(&frame.encode()), Ok(frame));
    Ok(())
}
