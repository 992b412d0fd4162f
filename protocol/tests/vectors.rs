//! Shared test vectors: `protocol/testdata/game-vectors.json`, read by these
//! tests and by the browser library's tests, so that both decoders agree
//! byte for byte.
//!
//! The normal run only reads the file and checks every vector against the
//! codec (and that the file is what the generator below produces, so it
//! cannot go stale). Regenerate it with
//! `RTCRELAY_WRITE_VECTORS=1 cargo test -p rtcrelay-protocol --test vectors`.

use std::path::PathBuf;

use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::snapshot::SNAPSHOT_HEADER_LEN;
use rtcrelay_protocol::game::{
    Entity, FrameSpec, InputDatagram, SnapshotEncoder, SnapshotHeader, SnapshotView, WorldState,
};
use serde_json::{json, Value};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/game-vectors.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits = text.as_bytes().chunks_exact(2);
    assert!(digits.remainder().is_empty(), "odd hex length: {text}");
    digits
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII hex");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

fn entity(id: u32, kind: u8, fields: &[i32]) -> Entity {
    Entity {
        id,
        kind,
        fields: fields.to_vec(),
    }
}

fn state(entities: &[Entity]) -> WorldState {
    WorldState::from_entities(entities.iter().cloned())
}

fn entities_json(state: &WorldState) -> Value {
    state
        .entities()
        .iter()
        .map(|e| json!({"id": e.id, "kind": e.kind, "fields": e.fields}))
        .collect()
}

fn state_from_json(value: &Value) -> WorldState {
    let entities = value.as_array().expect("entities array");
    WorldState::from_entities(entities.iter().map(|e| {
        Entity {
            id: e["id"].as_u64().expect("id") as u32,
            kind: e["kind"].as_u64().expect("kind") as u8,
            fields: e["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|f| i32::try_from(f.as_i64().expect("field")).expect("i32 field"))
                .collect(),
        }
    }))
}

fn header_json(header: &SnapshotHeader) -> Value {
    json!({
        "tick": header.tick,
        "baseline": header.baseline,
        "partial": header.partial,
        "input_ack": header.input_ack,
    })
}

// ---------------------------------------------------------------- generator

fn input_vector(name: &str, datagram: InputDatagram) -> Value {
    json!({
        "name": name,
        "hex": hex(&datagram.encode()),
        "seq": datagram.seq,
        "ack": datagram.ack.map(|a| json!({"tick": a.tick, "delay_ms": a.delay_ms})),
        "first_tick": datagram.first_tick,
        "input_size": datagram.input_size,
        "inputs_hex": hex(&datagram.inputs),
    })
}

/// A snapshot made by the encoder. `encoder` tells the Rust check that
/// encoding `result` against `baseline` with `max_len` gives `hex` again.
fn encoded_snapshot(
    name: &str,
    tick: u32,
    input_ack: u32,
    baseline: Option<(u32, &WorldState)>,
    current: &WorldState,
    max_len: usize,
) -> Value {
    let mut out = Vec::new();
    let mut view = WorldState::new();
    let encoded = SnapshotEncoder::new().encode(
        FrameSpec {
            tick,
            input_ack,
            max_len,
        },
        baseline,
        current,
        &mut out,
        &mut view,
    );
    assert!(encoded.len <= max_len, "{name}");
    let decoded = SnapshotView::decode(&out).expect(name);
    json!({
        "name": name,
        "baseline": baseline.map(|(tick, s)| json!({"tick": tick, "entities": entities_json(s)})),
        "hex": hex(&out),
        "header": header_json(&decoded.header),
        "result": {"entities": entities_json(&view)},
        "encoder": {"max_len": max_len},
    })
}

/// A hand-written snapshot frame (not what the encoder would write, but
/// valid): the check only decodes and applies it.
fn crafted_snapshot(name: &str, baseline: Option<(u32, &WorldState)>, frame: &[u8]) -> Value {
    let view = SnapshotView::decode(frame).expect(name);
    let mut result = WorldState::new();
    view.apply(baseline.map(|(_, s)| s), &mut result)
        .expect(name);
    json!({
        "name": name,
        "baseline": baseline.map(|(tick, s)| json!({"tick": tick, "entities": entities_json(s)})),
        "hex": hex(frame),
        "header": header_json(&view.header),
        "result": {"entities": entities_json(&result)},
    })
}

fn invalid(name: &str, kind: &str, frame: &[u8]) -> Value {
    let error = match kind {
        "input" => InputDatagram::decode(frame).expect_err(name),
        "snapshot" => SnapshotView::decode(frame).expect_err(name),
        _ => unreachable!("{kind}"),
    };
    json!({"name": name, "kind": kind, "hex": hex(frame), "error": error.code()})
}

/// A snapshot that decodes but cannot be applied to `baseline`.
fn invalid_apply(name: &str, baseline: Option<(u32, &WorldState)>, frame: &[u8]) -> Value {
    let view = SnapshotView::decode(frame).expect(name);
    let error = view
        .apply(baseline.map(|(_, s)| s), &mut WorldState::new())
        .expect_err(name);
    json!({
        "name": name,
        "baseline": baseline.map(|(tick, s)| json!({"tick": tick, "entities": entities_json(s)})),
        "hex": hex(frame),
        "error": error.code(),
    })
}

/// Snapshot header bytes: type, flags, tick, baseline, input_ack.
fn snapshot_header(flags: u8, tick: u32, baseline: u32, input_ack: u32) -> Vec<u8> {
    let mut out = vec![0x03, flags];
    out.extend_from_slice(&tick.to_be_bytes());
    out.extend_from_slice(&baseline.to_be_bytes());
    out.extend_from_slice(&input_ack.to_be_bytes());
    assert_eq!(out.len(), SNAPSHOT_HEADER_LEN);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn generate() -> Value {
    let inputs = vec![
        input_vector(
            "one input, no ack",
            InputDatagram {
                seq: 1,
                ack: None,
                first_tick: 5,
                input_size: 1,
                inputs: vec![0x01],
            },
        ),
        input_vector(
            "ack and three redundant inputs",
            InputDatagram {
                seq: 42,
                ack: Some(SnapshotAck {
                    tick: 10,
                    delay_ms: 3,
                }),
                first_tick: 8,
                input_size: 1,
                inputs: vec![0x00, 0x01, 0x03],
            },
        ),
        input_vector(
            "32 two-byte inputs, ticks wrap past u32::MAX, extreme header values",
            InputDatagram {
                seq: u32::MAX,
                ack: Some(SnapshotAck {
                    tick: u32::MAX,
                    delay_ms: u16::MAX,
                }),
                first_tick: u32::MAX - 15,
                input_size: 2,
                inputs: (0..64u8).map(|i| i.wrapping_mul(37)).collect(),
            },
        ),
        input_vector(
            "one 16-byte input, ack of tick 0",
            InputDatagram {
                seq: 0x0102_0304,
                ack: Some(SnapshotAck {
                    tick: 0,
                    delay_ms: 0,
                }),
                first_tick: 0,
                input_size: 16,
                inputs: (0..16u8).map(|i| 0xF0 | i).collect(),
            },
        ),
    ];

    // The states of a small game: a match entity, players, obstacles.
    let s4 = state(&[
        entity(0, 1, &[1, 180, 0, -5]),
        entity(1, 2, &[7, 0, 400, 0, 1]),
        entity(2, 2, &[9, 1, 400, 0, 1]),
        entity(100, 3, &[1200, 0]),
    ]);
    let s6 = state(&[
        entity(0, 1, &[1, 178, 0, -5]),   // one field changed
        entity(1, 2, &[7, 0, 400, 0, 1]), // unchanged
        // 2 removed
        entity(100, 3, &[1188, 0]),        // changed
        entity(150, 3, &[1300, 2]),        // new
        entity(300, 4, &[0, 0, 0, 65536]), // new, id gap above 127
    ]);
    let s_kind = state(&[
        entity(0, 1, &[1, 180, 0, -5]),
        entity(1, 5, &[7, 0, 400, 0, 1]), // kind 2 → 5, same fields
        entity(2, 2, &[9, 1, 400, 0]),    // field count 5 → 4
        entity(100, 3, &[1200, 0]),
    ]);
    let extremes_base = state(&[
        entity(0, 1, &[i32::MIN, i32::MAX, 0, -1, i32::MAX, 1]),
        entity(1, 1, &[i32::MIN, i32::MAX]),
    ]);
    let extremes = state(&[
        entity(0, 1, &[i32::MAX, i32::MIN, i32::MIN, i32::MAX, -1, -1]),
        entity(1, 1, &[i32::MIN + 1, i32::MAX - 1]),
        entity(2, 1, &[i32::MIN, i32::MAX, -1]),
    ]);
    let wide: Vec<i32> = (0..32).map(|i| (i - 16) * 1_000_003).collect();
    let mut wide_changed = wide.clone();
    wide_changed[31] = 1 << 30;
    wide_changed[0] = -(1 << 27);
    let big_base = state(&[
        entity(1_000_000, 7, &wide),
        entity(4_000_000_000, 7, &[300, -300]),
    ]);
    let big = state(&[
        entity(1_000_000, 7, &wide_changed),
        entity(4_000_000_000, 7, &[300 + 16_384, -300 - 2_097_152]),
        entity(u32::MAX, 0, &[]),
    ]);
    let crowd = state(
        &(0..40)
            .map(|i| entity(i * 3, 2, &[i as i32 * 1000, -(i as i32), 5]))
            .collect::<Vec<_>>(),
    );
    let crowd_moved = state(
        &(0..40)
            .filter(|i| i % 7 != 3)
            .map(|i| entity(i * 3, 2, &[i as i32 * 1000 + 13, -(i as i32), 6]))
            .chain((0..10).map(|i| entity(500 + i, 3, &[i as i32, 1, 2, 3])))
            .collect::<Vec<_>>(),
    );

    let mut snapshots = vec![
        encoded_snapshot("full snapshot", 4, 3, None, &s4, 1200),
        encoded_snapshot(
            "full snapshot of the empty state",
            0,
            0,
            None,
            &WorldState::new(),
            1200,
        ),
        encoded_snapshot(
            "delta: changed, unchanged, removed and new entities",
            6,
            5,
            Some((4, &s4)),
            &s6,
            1200,
        ),
        encoded_snapshot("delta with no change", 8, 7, Some((6, &s6)), &s6, 1200),
        encoded_snapshot(
            "delta: everything removed",
            10,
            9,
            Some((6, &s6)),
            &WorldState::new(),
            1200,
        ),
        encoded_snapshot(
            "delta: kind change and field count change are sent as new",
            6,
            6,
            Some((4, &s4)),
            &s_kind,
            1200,
        ),
        encoded_snapshot(
            "delta: i32::MIN/MAX and wrapping deltas",
            12,
            12,
            Some((10, &extremes_base)),
            &extremes,
            1200,
        ),
        encoded_snapshot("full: i32::MIN/MAX", 12, 12, None, &extremes, 1200),
        encoded_snapshot(
            "delta: multi-byte varints (ids, gaps, deltas, 32-field mask)",
            0x0100_0000,
            0x00FF_FFFF,
            Some((0x00FF_FFFE, &big_base)),
            &big,
            1200,
        ),
        encoded_snapshot("full: multi-byte varints", 70_000, 69_999, None, &big, 1200),
        encoded_snapshot(
            "partial delta cut to 120 bytes",
            20,
            19,
            Some((18, &crowd)),
            &crowd_moved,
            120,
        ),
        encoded_snapshot(
            "partial full snapshot cut to 100 bytes",
            20,
            19,
            None,
            &crowd_moved,
            100,
        ),
        encoded_snapshot(
            "partial delta cut inside the removals",
            22,
            21,
            Some((20, &crowd_moved)),
            &state(&[entity(1, 1, &[1])]),
            24,
        ),
    ];
    // Valid but not minimal: counts and a field written with extra bytes.
    snapshots.push(crafted_snapshot(
        "non-minimal varints are accepted",
        Some((4, &s4)),
        &cat(&[
            &snapshot_header(0, 5, 4, 4),
            &[0x80, 0x00],                   // 0 removals, 2 bytes
            &[0x81, 0x80, 0x00],             // 1 update, 3 bytes
            &[0x00, 0x00, 0x82, 0x00],       // id 0, head 0, mask 0b10
            &[0x83, 0x80, 0x80, 0x80, 0x00], // zigzag 3 = -2, 5 bytes
        ]),
    ));
    snapshots.push(crafted_snapshot(
        "delta that sends a field with a zero change",
        Some((4, &s4)),
        &cat(&[
            &snapshot_header(0, 5, 4, 4),
            &[0x00, 0x01, 0x01, 0x00, 0x01, 0x00],
        ]),
    ));

    let header = snapshot_header(0, 6, 4, 5);
    let full = snapshot_header(0x01, 6, 0, 5);
    let invalid_frames = vec![
        invalid("input: empty", "input", &[]),
        invalid("input: snapshot type byte", "input", &unhex("0300")),
        invalid(
            "input: header cut at 10 bytes",
            "input",
            &unhex("02000000000100000000"),
        ),
        invalid(
            "input: reserved flag bit 1",
            "input",
            &unhex("02020000000100000000000000000005010101"),
        ),
        invalid(
            "input: input_size 0",
            "input",
            &unhex("02000000000100000000000000000005000101"),
        ),
        invalid(
            "input: input_size 17",
            "input",
            &unhex("0200000000010000000000000000000511010000000000000000000000000000000000"),
        ),
        invalid(
            "input: count 0",
            "input",
            &unhex("020000000001000000000000000000050100"),
        ),
        invalid(
            "input: count 33",
            "input",
            &cat(&[&unhex("020000000001000000000000000000050121"), &[0; 33]]),
        ),
        invalid(
            "input: one input byte missing",
            "input",
            &unhex("02000000000100000000000000000005010201"),
        ),
        invalid(
            "input: trailing byte",
            "input",
            &unhex("0200000000010000000000000000000501010101"),
        ),
        invalid(
            "input: ack tick without the ack flag",
            "input",
            &unhex("0200000000010000000a000000000005010101"),
        ),
        invalid("snapshot: empty", "snapshot", &[]),
        invalid(
            "snapshot: relayed type byte",
            "snapshot",
            &unhex("01000000000700"),
        ),
        invalid(
            "snapshot: header cut at 13 bytes",
            "snapshot",
            &header[..13],
        ),
        invalid(
            "snapshot: no update count",
            "snapshot",
            &cat(&[&header, &[0x00]]),
        ),
        invalid(
            "snapshot: reserved flag bit 2",
            "snapshot",
            &cat(&[&snapshot_header(0x04, 6, 4, 5), &[0x00, 0x00]]),
        ),
        invalid(
            "snapshot: full with a baseline tick",
            "snapshot",
            &cat(&[&snapshot_header(0x01, 6, 4, 5), &[0x00, 0x00]]),
        ),
        invalid(
            "snapshot: full with a removal",
            "snapshot",
            &cat(&[&full, &[0x01, 0x02, 0x00]]),
        ),
        invalid(
            "snapshot: full with an update not flagged new",
            "snapshot",
            &cat(&[&full, &[0x00, 0x01, 0x02, 0x00, 0x00]]),
        ),
        invalid(
            "snapshot: varint above u32::MAX (5th byte 0x10)",
            "snapshot",
            &cat(&[&header, &[0x80, 0x80, 0x80, 0x80, 0x10, 0x00]]),
        ),
        invalid(
            "snapshot: 6-byte varint",
            "snapshot",
            &cat(&[&header, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00]]),
        ),
        invalid(
            "snapshot: varint cut at the end",
            "snapshot",
            &cat(&[&header, &[0x00, 0x01, 0x81]]),
        ),
        invalid(
            "snapshot: 1025 removals",
            "snapshot",
            &cat(&[&header, &[0x81, 0x08]]),
        ),
        invalid(
            "snapshot: removal id gap 0 (ids not ascending)",
            "snapshot",
            &cat(&[&header, &[0x02, 0x05, 0x00, 0x00]]),
        ),
        invalid(
            "snapshot: update id beyond u32::MAX",
            "snapshot",
            &cat(&[
                &header,
                &[0x00, 0x02],
                &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x00],
                &[0x01, 0x00, 0x00],
            ]),
        ),
        invalid(
            "snapshot: entity head reserved bit",
            "snapshot",
            &cat(&[&header, &[0x00, 0x01, 0x00, 0x02, 0x00]]),
        ),
        invalid(
            "snapshot: field_count 33",
            "snapshot",
            &cat(&[&header, &[0x00, 0x01, 0x00, 0x01, 0x01, 0x21, 0x00]]),
        ),
        invalid(
            "snapshot: mask bit beyond a new entity's field count",
            "snapshot",
            &cat(&[&header, &[0x00, 0x01, 0x00, 0x01, 0x01, 0x02, 0x04, 0x02]]),
        ),
        invalid(
            "snapshot: field value missing",
            "snapshot",
            &cat(&[&header, &[0x00, 0x01, 0x00, 0x00, 0x03, 0x02]]),
        ),
        invalid(
            "snapshot: id both removed and updated",
            "snapshot",
            &cat(&[&header, &[0x01, 0x02, 0x01, 0x02, 0x00, 0x01, 0x02]]),
        ),
        invalid(
            "snapshot: trailing byte",
            "snapshot",
            &cat(&[&header, &[0x00, 0x00, 0x00]]),
        ),
    ];

    let invalid_applies = vec![
        invalid_apply(
            "delta without its baseline",
            None,
            &cat(&[&header, &[0x00, 0x00]]),
        ),
        invalid_apply(
            "removal of an id the baseline lacks",
            Some((4, &s4)),
            &cat(&[&header, &[0x01, 0x03, 0x00]]),
        ),
        invalid_apply(
            "update (not new) of an id the baseline lacks",
            Some((4, &s4)),
            &cat(&[&header, &[0x00, 0x01, 0x05, 0x00, 0x01, 0x02]]),
        ),
        invalid_apply(
            "mask bit beyond the baseline entity's field count",
            Some((4, &s4)),
            &cat(&[&header, &[0x00, 0x01, 0x64, 0x00, 0x04, 0x02]]),
        ),
    ];

    json!({
        "about": "rtcrelay authoritative-room wire vectors (docs/protocol.md, \
                  'Authoritative rooms'). Generated by protocol/tests/vectors.rs: \
                  RTCRELAY_WRITE_VECTORS=1 cargo test -p rtcrelay-protocol --test vectors. \
                  Hex is lowercase. Entities are sorted by id. 'error' is the error code \
                  (GameFrameError::code). 'invalid' frames fail to decode; 'invalid_apply' \
                  frames decode but fail to apply to 'baseline'. 'encoder.max_len': the \
                  reference encoder given baseline and result writes exactly 'hex' \
                  (partial ones: given the full current state, not in the file).",
        "inputs": inputs,
        "snapshots": snapshots,
        "invalid": invalid_frames,
        "invalid_apply": invalid_applies,
    })
}

fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("serialize");
    text.push('\n');
    text
}

fn read_vectors() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors JSON")
}

// ---------------------------------------------------------------- checks

#[test]
fn file_is_up_to_date() {
    let generated = render(&generate());
    let path = vectors_path();
    if std::env::var_os("RTCRELAY_WRITE_VECTORS").is_some() {
        // Write then rename: the other tests may be reading it right now.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &generated).expect("write vectors");
        std::fs::rename(&tmp, &path).expect("rename vectors");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).expect("read vectors");
    assert!(
        on_disk == generated,
        "{} is stale: regenerate it with RTCRELAY_WRITE_VECTORS=1 \
         cargo test -p rtcrelay-protocol --test vectors",
        path.display()
    );
}

fn name(v: &Value) -> &str {
    v["name"].as_str().expect("name")
}

fn baseline_of(v: &Value) -> Option<(u32, WorldState)> {
    match &v["baseline"] {
        Value::Null => None,
        b => Some((
            b["tick"].as_u64().expect("baseline tick") as u32,
            state_from_json(&b["entities"]),
        )),
    }
}

#[test]
fn input_vectors_decode_and_reencode() {
    let vectors = read_vectors();
    let inputs = vectors["inputs"].as_array().expect("inputs");
    assert!(inputs.len() >= 4);
    for v in inputs {
        let bytes = unhex(v["hex"].as_str().expect("hex"));
        let d = InputDatagram::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        assert_eq!(u64::from(d.seq), v["seq"].as_u64().unwrap(), "{}", name(v));
        let ack = match &v["ack"] {
            Value::Null => None,
            a => Some(SnapshotAck {
                tick: a["tick"].as_u64().unwrap() as u32,
                delay_ms: a["delay_ms"].as_u64().unwrap() as u16,
            }),
        };
        assert_eq!(d.ack, ack, "{}", name(v));
        assert_eq!(
            u64::from(d.first_tick),
            v["first_tick"].as_u64().unwrap(),
            "{}",
            name(v)
        );
        assert_eq!(
            u64::from(d.input_size),
            v["input_size"].as_u64().unwrap(),
            "{}",
            name(v)
        );
        assert_eq!(
            d.inputs,
            unhex(v["inputs_hex"].as_str().unwrap()),
            "{}",
            name(v)
        );
        assert_eq!(d.encode(), bytes, "{}: re-encoding", name(v));
    }
}

#[test]
fn snapshot_vectors_decode_and_apply() {
    let vectors = read_vectors();
    let snapshots = vectors["snapshots"].as_array().expect("snapshots");
    assert!(snapshots.len() >= 10);
    let mut partial_seen = false;
    for v in snapshots {
        let bytes = unhex(v["hex"].as_str().expect("hex"));
        let view = SnapshotView::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        let h = &v["header"];
        let want = SnapshotHeader {
            tick: h["tick"].as_u64().unwrap() as u32,
            baseline: h["baseline"].as_u64().map(|t| t as u32),
            partial: h["partial"].as_bool().unwrap(),
            input_ack: h["input_ack"].as_u64().unwrap() as u32,
        };
        assert_eq!(view.header, want, "{}", name(v));
        partial_seen |= want.partial;
        let baseline = baseline_of(v);
        assert_eq!(
            baseline.as_ref().map(|(t, _)| *t),
            want.baseline,
            "{}: the baseline given is the one the frame names",
            name(v)
        );
        let mut result = WorldState::new();
        view.apply(baseline.as_ref().map(|(_, s)| s), &mut result)
            .unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        assert_eq!(
            result,
            state_from_json(&v["result"]["entities"]),
            "{}",
            name(v)
        );

        if let Some(max_len) = v["encoder"]["max_len"].as_u64() {
            if !want.partial {
                let mut out = Vec::new();
                let mut encoded_view = WorldState::new();
                SnapshotEncoder::new().encode(
                    FrameSpec {
                        tick: want.tick,
                        input_ack: want.input_ack,
                        max_len: max_len as usize,
                    },
                    baseline.as_ref().map(|(t, s)| (*t, s)),
                    &result,
                    &mut out,
                    &mut encoded_view,
                );
                assert_eq!(hex(&out), hex(&bytes), "{}: re-encoding", name(v));
                assert_eq!(encoded_view, result, "{}", name(v));
            }
        }
    }
    assert!(partial_seen, "the vectors include a partial snapshot");
}

#[test]
fn invalid_vectors_fail_with_their_error() {
    let vectors = read_vectors();
    let invalid = vectors["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 10);
    for v in invalid {
        let bytes = unhex(v["hex"].as_str().expect("hex"));
        let result = match v["kind"].as_str().expect("kind") {
            "input" => InputDatagram::decode(&bytes).map(drop),
            "snapshot" => SnapshotView::decode(&bytes).map(drop),
            other => panic!("{}: unknown kind {other}", name(v)),
        };
        let error = result.expect_err(name(v));
        assert_eq!(
            error.code(),
            v["error"].as_str().unwrap(),
            "{}: {error}",
            name(v)
        );
    }
}

#[test]
fn invalid_apply_vectors_decode_then_fail_to_apply() {
    let vectors = read_vectors();
    let invalid = vectors["invalid_apply"].as_array().expect("invalid_apply");
    assert!(!invalid.is_empty());
    for v in invalid {
        let bytes = unhex(v["hex"].as_str().expect("hex"));
        let view = SnapshotView::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        let baseline = baseline_of(v);
        let error = view
            .apply(baseline.as_ref().map(|(_, s)| s), &mut WorldState::new())
            .expect_err(name(v));
        assert_eq!(
            error.code(),
            v["error"].as_str().unwrap(),
            "{}: {error}",
            name(v)
        );
    }
}
