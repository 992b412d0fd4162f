//! Authoritative rooms over real sockets: str0m clients (see `common`) join
//! a Dizolaur room on a real relay and speak the game protocol by hand:
//! `hello` and clock sync on `control`, input datagrams up and delta
//! snapshots down on `realtime`, reliable events and their acks, and bad
//! input of every kind. The time limits only stop a hung test.

mod common;

use common::*;
use rtcrelay_protocol::game::control::{Hello, ServerControl};
use rtcrelay_protocol::game::input::SnapshotAck;
use rtcrelay_protocol::game::{InputDatagram, SnapshotView, WorldState};
use rtcrelay_relay::metrics::OutcomeLabel;

/// What a hand-made game client knows: the control messages it got and the
/// states its snapshots produced, by tick.
#[derive(Default)]
struct GameView {
    control_seen: usize,
    realtime_seen: usize,
    controls: Vec<ServerControl>,
    states: Vec<(u32, WorldState)>,
    full: usize,
    deltas: usize,
    undecodable: usize,
}

impl GameView {
    /// Takes in what `client` received since the last call.
    fn update(&mut self, client: &Client) {
        let control: Vec<_> = client
            .received
            .iter()
            .filter(|(l, _, _)| l == "control")
            .collect();
        for (_, binary, data) in &control[self.control_seen..] {
            assert!(!binary, "control messages of a game room are text");
            let msg: ServerControl =
                serde_json::from_slice(data).expect("control messages are ServerControl JSON");
            self.controls.push(msg);
        }
        self.control_seen = control.len();
        let realtime: Vec<_> = client
            .received
            .iter()
            .filter(|(l, _, _)| l == "realtime")
            .collect();
        for (_, binary, data) in &realtime[self.realtime_seen..] {
            assert!(binary, "snapshots are binary");
            let Ok(view) = SnapshotView::decode(data) else {
                self.undecodable += 1;
                continue;
            };
            let baseline = match view.header.baseline {
                None => None,
                Some(tick) => match self.states.iter().find(|(t, _)| *t == tick) {
                    Some((_, s)) => Some(s),
                    // A baseline we never got: the server only uses acked ones.
                    None => panic!("delta against tick {tick}, which this client never acked"),
                },
            };
            let mut out = WorldState::new();
            view.apply(baseline, &mut out).expect("snapshot applies");
            if view.header.baseline.is_some() {
                self.deltas += 1;
            } else {
                self.full += 1;
            }
            self.states.push((view.header.tick, out));
        }
        self.realtime_seen = realtime.len();
    }

    fn hello(&self) -> Option<&ServerControl> {
        self.controls
            .iter()
            .find(|c| matches!(c, ServerControl::Hello(_)))
    }

    fn newest(&self) -> Option<(u32, &WorldState)> {
        self.states
            .iter()
            .max_by_key(|(t, _)| *t)
            .map(|(t, s)| (*t, s))
    }

    fn events(&self) -> Vec<(u64, serde_json::Value)> {
        self.controls
            .iter()
            .filter_map(|c| match c {
                ServerControl::Event { id, event, .. } => Some((*id, event.clone())),
                _ => None,
            })
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.controls
            .iter()
            .filter_map(|c| match c {
                ServerControl::Error { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }
}

fn inputs(m: &RelayMetrics, outcome: &'static str) -> u64 {
    m.game.inputs.get_or_create(&OutcomeLabel { outcome }).get()
}

/// An input datagram acking the newest snapshot, for `ticks` ticks ending
/// at `target`.
fn input_datagram(seq: u32, view: &GameView, target: u32, ticks: u32, buttons: u8) -> Vec<u8> {
    InputDatagram {
        seq,
        ack: view
            .newest()
            .map(|(tick, _)| SnapshotAck { tick, delay_ms: 0 }),
        first_tick: target + 1 - ticks,
        input_size: 1,
        inputs: vec![buttons; ticks as usize],
    }
    .encode()
}

async fn game_room() -> (Relay, RelayMetrics, Client, Client) {
    let (relay, m) = start_relay(1).await;
    let host = relay.host();
    let both = [realtime_config(), control_config()];
    let a = connect_to(&*host, "ada", 1, "g1", RoomKind::Authoritative, &both).await;
    let b = connect_to(&*host, "bob", 2, "g1", RoomKind::Authoritative, &both).await;
    (relay, m, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_get_hello_snapshots_clock_and_events() {
    let (relay, m, mut a, mut b) = game_room().await;
    let (mut va, mut vb) = (GameView::default(), GameView::default());

    // Both get hello, then snapshots: a full one first, then deltas once
    // they ack.
    let mut seq = 0;
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        vb.update(cs[1]);
        if let Some((tick, _)) = va.newest() {
            seq += 1;
            let d = input_datagram(seq, &va, tick + 3, 1, 0);
            cs[0].send("realtime", true, &d);
        }
        va.deltas >= 5 && vb.states.len() >= 5
    })
    .await;
    assert!(
        got,
        "hello and snapshots: a has {} deltas, b {} states",
        va.deltas,
        vb.states.len()
    );
    assert_eq!(va.undecodable + vb.undecodable, 0);
    let Some(ServerControl::Hello(Hello {
        game,
        tick_rate,
        snapshot_rate,
        input_size,
        entity,
        ..
    })) = va.hello().cloned()
    else {
        panic!("a got no hello: {:?}", va.controls);
    };
    assert_eq!(
        (game.as_str(), tick_rate, snapshot_rate, input_size),
        ("dizolaur", 60, 30, 1)
    );
    assert!(va.full >= 1, "the first snapshot is full");
    let (_, state) = va.newest().unwrap();
    let own = entity.expect("a seated player has an entity");
    assert!(
        state.get(own).is_some(),
        "a's entity {own} is in the snapshot"
    );
    assert!(
        state.get(0).is_some(),
        "the match entity is in the snapshot"
    );
    assert!(inputs(&m, "accepted") > 0, "a's inputs were accepted");

    // Clock sync: the reply echoes t0, and the server's clock moves forward.
    assert!(a.send("control", false, br#"{"type":"clock","id":7,"t0":123.5}"#));
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        va.controls
            .iter()
            .any(|c| matches!(c, ServerControl::Clock { id: 7, .. }))
    })
    .await;
    assert!(got, "a clock reply");
    let clock = va
        .controls
        .iter()
        .find_map(|c| match c {
            ServerControl::Clock {
                id: 7,
                t0,
                t1,
                t2,
                tick,
            } => Some((*t0, *t1, *t2, *tick)),
            _ => None,
        })
        .unwrap();
    assert_eq!(clock.0, 123.5);
    assert!(clock.1 <= clock.2 && clock.1 > 0.0, "{clock:?}");

    // Start a match with bots: every player gets match_start as an event;
    // acked events are not sent again.
    assert!(b.send(
        "control",
        false,
        br#"{"type":"command","command":{"start":{"bots":true,"max_seconds":10}}}"#
    ));
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        vb.update(cs[1]);
        let started = |v: &GameView| v.events().iter().any(|(_, e)| e["kind"] == "match_start");
        started(&va) && started(&vb)
    })
    .await;
    assert!(
        got,
        "match_start reaches both: {:?} / {:?}",
        va.events(),
        vb.events()
    );
    let (id, start) = va
        .events()
        .into_iter()
        .find(|(_, e)| e["kind"] == "match_start")
        .unwrap();
    assert_eq!(
        start["players"].as_array().map(Vec::len),
        Some(4),
        "{start}"
    );
    assert_eq!(
        vb.events()
            .iter()
            .find(|(_, e)| e["kind"] == "match_start")
            .map(|(i, _)| *i),
        Some(id),
        "one event id per room"
    );
    let ack = format!(r#"{{"type":"event_ack","id":{id}}}"#);
    assert!(a.send("control", false, ack.as_bytes()));
    assert!(b.send("control", false, ack.as_bytes()));
    assert_eq!(va.errors(), Vec::<String>::new());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dropped_and_counted_and_harms_no_one() {
    let (relay, m, mut a, mut b) = game_room().await;
    let (mut va, mut vb) = (GameView::default(), GameView::default());
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        vb.update(cs[1]);
        va.hello().is_some() && vb.states.len() >= 3
    })
    .await;
    assert!(got, "both running");
    let tick = va.newest().map_or(0, |(t, _)| t);

    // Garbage, truncated, wrong input size, reserved button bits, a frame
    // type the server never accepts, an empty message: all dropped, counted.
    let invalid_before = inputs(&m, "invalid");
    let good = input_datagram(1, &va, tick + 5, 2, 1);
    let mut wrong_size = good.clone();
    wrong_size[16] = 2;
    let reserved_bits = input_datagram(2, &va, tick + 5, 1, 0x80);
    let bad: Vec<Vec<u8>> = vec![
        vec![0xFF; 40],
        good[..good.len() - 1].to_vec(),
        wrong_size,
        reserved_bits,
        vec![0x03, 0, 0, 0],
        vec![0x01, 0, 0, 0, 0, 1, 9],
    ];
    for d in &bad {
        assert!(a.send("realtime", true, d));
        settle(&mut [&mut a, &mut b], 3).await;
    }
    // Text on realtime is not an input either.
    assert!(a.send("realtime", false, b"jump!"));
    let got = pump(&mut [&mut a, &mut b], |_| {
        inputs(&m, "invalid") > invalid_before + bad.len() as u64
    })
    .await;
    assert!(
        got,
        "every bad datagram counted: {} of {}",
        inputs(&m, "invalid") - invalid_before,
        bad.len() + 1
    );

    // Bad control messages get an error reply naming the problem.
    for text in [
        &b"{not json"[..],
        br#"{"type":"teleport","x":1}"#,
        br#"{"type":"command","command":{"fly":true}}"#,
        br#"{"type":"command","command":{"start":{"max_seconds":-5}}}"#,
    ] {
        assert!(a.send("control", false, text));
    }
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        va.errors().len() >= 4
    })
    .await;
    assert!(got, "four error replies: {:?}", va.errors());
    assert_eq!(
        va.errors(),
        [
            "bad_control_message",
            "bad_control_message",
            "command_refused",
            "command_refused"
        ]
    );

    // Nobody was harmed: b keeps getting snapshots, a is still in the game,
    // and a's good inputs still count.
    let (b_states, a_states) = (vb.states.len(), va.states.len());
    let accepted = inputs(&m, "accepted");
    let mut seq = 10;
    let got = pump(&mut [&mut a, &mut b], |cs| {
        va.update(cs[0]);
        vb.update(cs[1]);
        if let Some((t, _)) = va.newest() {
            seq += 1;
            let d = input_datagram(seq, &va, t + 3, 1, 0);
            cs[0].send("realtime", true, &d);
        }
        vb.states.len() >= b_states + 10 && va.states.len() >= a_states + 10
    })
    .await;
    assert!(got, "snapshots keep flowing to both");
    assert!(inputs(&m, "accepted") > accepted);
    assert!(!a.closed && !b.closed);
    assert_eq!(
        vb.errors(),
        Vec::<String>::new(),
        "b saw none of a's errors"
    );
    relay.shutdown().await;
}
