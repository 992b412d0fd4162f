//! The `control` channel's JSON: what a client sends an authoritative room
//! (clock sync requests, event acks, commands) through
//! `decode_client_control`, and what the Rust client reads from the server
//! (hello, clock replies, events, stats, errors) with serde.
//!
//! Checks: no panic; a refusal says why; an accepted message encodes to
//! text that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcrelay_fuzz::assert_json_round_trip;
use rtcrelay_protocol::game::control::{decode_client_control, ClientControl, ServerControl};

fuzz_target!(|data: &[u8]| {
    // DataChannel string messages are UTF-8; the relay refuses others first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client_control(text) {
        // Without the size limit: re-encoding may lengthen a command's
        // numbers (`1e2` becomes `100.0`).
        Ok(message) => {
            assert_json_round_trip(&message, |t| serde_json::from_str::<ClientControl>(t))
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    if let Ok(message) = serde_json::from_str::<ServerControl>(text) {
        assert_json_round_trip(&message, |t| serde_json::from_str::<ServerControl>(t));
    }
});
