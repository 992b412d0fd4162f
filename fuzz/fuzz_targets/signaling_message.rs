//! The signaling decoder: every text a client can send on `GET /ws`.
//!
//! Checks: no panic; a refusal carries one of the decoder's own error codes
//! and a message; an accepted message encodes to text that decodes to the
//! same message. The Rust client reads server messages with serde alone,
//! so the same holds for `ServerMessage`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcrelay_fuzz::assert_json_round_trip;
use rtcrelay_protocol::limits::DEFAULT_MAX_SIGNALING_MESSAGE_BYTES;
use rtcrelay_protocol::signaling::{decode_client_message, ErrorCode, ServerMessage};

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 before the decoder sees it (binary
    // frames are refused earlier, with `binary_not_supported`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client_message(text, DEFAULT_MAX_SIGNALING_MESSAGE_BYTES) {
        // The re-encoded text may be longer than the original (`1e2` becomes
        // `100.0` in a signal's data): the size limit is not what is tested.
        Ok(message) => assert_json_round_trip(&message, |t| decode_client_message(t, usize::MAX)),
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::BadJson
                        | ErrorCode::UnknownType
                        | ErrorCode::InvalidMessage
                        | ErrorCode::MessageTooLarge
                ),
                "the decoder answered {:?}",
                e.code
            );
            assert!(!e.message.is_empty());
        }
    }
    if let Ok(message) = serde_json::from_str::<ServerMessage>(text) {
        assert_json_round_trip(&message, |t| serde_json::from_str::<ServerMessage>(t));
    }
});
