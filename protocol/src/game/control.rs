//! JSON text messages on the `control` channel of an authoritative room
//! (reliable, ordered). Tagged by `type`, snake_case, like signaling.
//!
//! Server time is milliseconds since the room's epoch; tick `k` is simulated
//! at `k * 1000 / tick_rate` ms. A client estimates the server's clock with
//! `clock` exchanges (NTP-style: `offset = ((t1 - t0) + (t2 - t3)) / 2`,
//! `rtt = (t3 - t0) - (t2 - t1)`, `t3` = client time the reply arrived).

use serde::{Deserialize, Serialize};

use crate::ids::PeerId;

/// Largest control message a client may send (bytes).
pub const MAX_CLIENT_CONTROL_BYTES: usize = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerControl {
    /// Sent once when the session is ready: how to talk to this room.
    Hello(Hello),
    /// Reply to a client's `clock`.
    Clock {
        id: u32,
        /// Echoed client send time.
        t0: f64,
        /// Server time the request was received.
        t1: f64,
        /// Server time this reply was sent.
        t2: f64,
        /// Server tick at `t2`.
        tick: u32,
    },
    /// A critical event (match start, score change, match end…): resent
    /// until the client acks its `id`; ids increase by one per room.
    Event {
        id: u64,
        tick: u32,
        event: serde_json::Value,
    },
    /// Net stats of every player of the room, about once a second.
    Stats {
        tick: u32,
        players: Vec<PlayerNetStats>,
    },
    /// A command or control message was refused.
    Error { code: String, message: String },
}

/// What the server says about a room in `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Which game runs (`dizolaur`).
    pub game: String,
    pub tick_rate: u32,
    pub snapshot_rate: u32,
    /// Bytes per input.
    pub input_size: u8,
    /// Inputs for ticks beyond `tick + max_input_lead` are rejected.
    pub max_input_lead: u32,
    /// Inputs that arrive this many ticks late or less are still given to
    /// the game (lag compensation); older ones are dropped.
    pub max_rewind: u32,
    /// The server tick and time (ms since the room's epoch) when this was
    /// sent.
    pub tick: u32,
    pub server_time_ms: f64,
    /// This client's own entity in snapshots, if it has one yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<u32>,
}

impl Hello {
    /// Milliseconds per tick.
    pub fn tick_ms(&self) -> f64 {
        1000.0 / f64::from(self.tick_rate)
    }

    /// Milliseconds between two snapshots.
    pub fn snapshot_interval_ms(&self) -> f64 {
        1000.0 / f64::from(self.snapshot_rate)
    }
}

/// What the server measures per player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerNetStats {
    pub peer: PeerId,
    /// Round-trip time on the realtime path (snapshot → ack), smoothed.
    pub rtt_ms: f64,
    /// Mean deviation of the RTT samples, smoothed.
    pub jitter_ms: f64,
    /// Fraction of input datagrams lost client → server (by sequence gaps).
    pub loss: f64,
    pub inputs_late: u64,
    pub inputs_missing: u64,
    /// Snapshot bytes sent to this player per second.
    pub snapshot_bytes_per_s: f64,
    /// What the server's network lab injected on this player's path, while
    /// a lab setting applies to it (absent otherwise): tells injected loss
    /// and delay apart from the real network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<InjectedNetStats>,
}

/// The network lab's doing on one player's path over the last report
/// interval (about a second), per direction. Counted in UDP datagrams
/// (DTLS records carrying SCTP, STUN), not in messages.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InjectedNetStats {
    /// The lab scope whose setting applies: `global`, `room:NAME` or
    /// `peer:ID`.
    pub scope: String,
    /// Client → server.
    pub up: InjectedDirection,
    /// Server → client.
    pub down: InjectedDirection,
}

/// One direction of [`InjectedNetStats`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InjectedDirection {
    /// Datagrams that entered the lab.
    pub datagrams: u64,
    /// Datagrams the lab dropped (random loss, blackout or a full queue).
    pub dropped: u64,
    /// `dropped / datagrams` (0 when no datagrams).
    pub loss: f64,
    /// Extra copies the lab delivered.
    pub duplicated: u64,
    /// Copies that overtook earlier ones by the reorder rule.
    pub reordered: u64,
    /// Datagrams with a bit flipped.
    pub corrupted: u64,
    /// Mean delay the lab added per delivered copy (queueing plus delay),
    /// in milliseconds.
    pub delay_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientControl {
    /// Clock sync request; `t0` is the client's own clock (ms).
    Clock { id: u32, t0: f64 },
    /// The event with this id was applied.
    EventAck { id: u64 },
    /// A game command (e.g. Dizolaur's `{"start":{"bots":true}}`).
    Command { command: serde_json::Value },
}

/// Decodes a client control message: size-bounded, then JSON.
pub fn decode_client_control(text: &str) -> Result<ClientControl, String> {
    if text.len() > MAX_CLIENT_CONTROL_BYTES {
        return Err(format!(
            "control message is {} bytes, limit {MAX_CLIENT_CONTROL_BYTES}",
            text.len()
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("bad control message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_clock() {
        assert_eq!(
            decode_client_control(r#"{"type":"clock","id":3,"t0":1234.5}"#),
            Ok(ClientControl::Clock { id: 3, t0: 1234.5 })
        );
        // Integers are valid f64 times.
        assert_eq!(
            decode_client_control(r#"{"t0":7,"id":0,"type":"clock"}"#),
            Ok(ClientControl::Clock { id: 0, t0: 7.0 })
        );
    }

    #[test]
    fn decodes_event_ack() {
        assert_eq!(
            decode_client_control(r#"{"type":"event_ack","id":18446744073709551615}"#),
            Ok(ClientControl::EventAck { id: u64::MAX })
        );
    }

    #[test]
    fn decodes_command() {
        assert_eq!(
            decode_client_control(r#"{"type":"command","command":{"start":{"bots":true}}}"#),
            Ok(ClientControl::Command {
                command: json!({"start": {"bots": true}})
            })
        );
    }

    #[test]
    fn ignores_unknown_fields() {
        assert_eq!(
            decode_client_control(r#"{"type":"event_ack","id":1,"later":true}"#),
            Ok(ClientControl::EventAck { id: 1 })
        );
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "null",
            "[]",
            "{}",
            "not json",
            r#"{"type":"clock""#,
            r#"{"type":"teleport","id":1}"#,
            r#"{"type":"clock","id":-1,"t0":0}"#,
            r#"{"type":"clock","id":4294967296,"t0":0}"#,
            r#"{"type":"clock","id":1}"#,
            r#"{"type":"clock","id":1,"t0":"now"}"#,
            r#"{"type":"event_ack","id":1.5}"#,
            r#"{"type":"event_ack"}"#,
            r#"{"type":"command"}"#,
            r#"{"type":"hello","game":"x"}"#,
            r#"{"type":7}"#,
            "\u{0}",
        ] {
            assert!(decode_client_control(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn bounds_the_size() {
        let pad = |n: usize| {
            let text = format!(r#"{{"type":"command","command":"{}"}}"#, "x".repeat(n));
            let over = text.len() - MAX_CLIENT_CONTROL_BYTES;
            (text, over)
        };
        let (at_limit, _) = pad(MAX_CLIENT_CONTROL_BYTES - 31);
        assert_eq!(at_limit.len(), MAX_CLIENT_CONTROL_BYTES);
        assert!(decode_client_control(&at_limit).is_ok());
        let (over, by) = pad(MAX_CLIENT_CONTROL_BYTES - 30);
        assert_eq!(by, 1);
        let err = decode_client_control(&over).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        // Huge input is refused before parsing.
        assert!(decode_client_control(&"[".repeat(1 << 20)).is_err());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let hello = ServerControl::Hello(Hello {
            game: "dizolaur".into(),
            tick_rate: 60,
            snapshot_rate: 30,
            input_size: 1,
            max_input_lead: 60,
            max_rewind: 8,
            tick: 120,
            server_time_ms: 2000.0,
            entity: Some(1),
        });
        assert_eq!(
            serde_json::to_value(&hello).unwrap(),
            json!({"type":"hello","game":"dizolaur","tick_rate":60,"snapshot_rate":30,
                   "input_size":1,"max_input_lead":60,"max_rewind":8,"tick":120,
                   "server_time_ms":2000.0,"entity":1})
        );
        let clock = ServerControl::Clock {
            id: 3,
            t0: 1.5,
            t1: 100.0,
            t2: 100.25,
            tick: 6,
        };
        assert_eq!(
            serde_json::to_value(&clock).unwrap(),
            json!({"type":"clock","id":3,"t0":1.5,"t1":100.0,"t2":100.25,"tick":6})
        );
        let event = ServerControl::Event {
            id: 1,
            tick: 200,
            event: json!({"match_start": {}}),
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"type":"event","id":1,"tick":200,"event":{"match_start":{}}}"#
        );
        assert_eq!(serde_json::from_str::<ServerControl>(&text).unwrap(), event);
        let stats = ServerControl::Stats {
            tick: 60,
            players: vec![PlayerNetStats {
                peer: PeerId(7),
                rtt_ms: 40.0,
                jitter_ms: 3.5,
                loss: 0.0,
                inputs_late: 1,
                inputs_missing: 2,
                snapshot_bytes_per_s: 1500.0,
                injected: None,
            }],
        };
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({"type":"stats","tick":60,"players":[{"peer":7,"rtt_ms":40.0,
                   "jitter_ms":3.5,"loss":0.0,"inputs_late":1,"inputs_missing":2,
                   "snapshot_bytes_per_s":1500.0}]})
        );
        // With a lab setting in force, `injected` appears; older messages
        // (without it) still decode.
        let injected = ServerControl::Stats {
            tick: 60,
            players: vec![PlayerNetStats {
                peer: PeerId(7),
                rtt_ms: 140.0,
                jitter_ms: 3.5,
                loss: 0.1,
                inputs_late: 1,
                inputs_missing: 2,
                snapshot_bytes_per_s: 1500.0,
                injected: Some(InjectedNetStats {
                    scope: "global".into(),
                    up: InjectedDirection {
                        datagrams: 60,
                        dropped: 6,
                        loss: 0.1,
                        delay_ms: 50.0,
                        ..InjectedDirection::default()
                    },
                    down: InjectedDirection {
                        datagrams: 40,
                        duplicated: 1,
                        reordered: 2,
                        corrupted: 3,
                        ..InjectedDirection::default()
                    },
                }),
            }],
        };
        assert_eq!(
            serde_json::to_value(&injected).unwrap()["players"][0]["injected"],
            json!({"scope":"global",
                   "up":{"datagrams":60,"dropped":6,"loss":0.1,"duplicated":0,
                         "reordered":0,"corrupted":0,"delay_ms":50.0},
                   "down":{"datagrams":40,"dropped":0,"loss":0.0,"duplicated":1,
                           "reordered":2,"corrupted":3,"delay_ms":0.0}})
        );
        let text = serde_json::to_string(&injected).unwrap();
        assert_eq!(
            serde_json::from_str::<ServerControl>(&text).unwrap(),
            injected
        );
        let old = r#"{"type":"stats","tick":1,"players":[{"peer":7,"rtt_ms":1.0,
            "jitter_ms":0.0,"loss":0.0,"inputs_late":0,"inputs_missing":0,
            "snapshot_bytes_per_s":0.0}]}"#;
        let ServerControl::Stats { players, .. } = serde_json::from_str(old).unwrap() else {
            panic!("stats");
        };
        assert_eq!(players[0].injected, None);
        let error = ServerControl::Error {
            code: "command_refused".into(),
            message: "the match is running".into(),
        };
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type":"error","code":"command_refused","message":"the match is running"})
        );
    }
}
