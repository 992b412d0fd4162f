//! Signaling protocol v1: JSON text messages over the `GET /ws` WebSocket.
//! See docs/protocol.md for the prose version; this module is the truth.
//!
//! Decoding happens in three steps so that each failure gets its own stable
//! error code: JSON syntax ([`ErrorCode::BadJson`]), a known `type`
//! ([`ErrorCode::UnknownType`]), then shape and field rules
//! ([`ErrorCode::InvalidMessage`]).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::{validate_display_name, PeerId, RoomId};
use crate::limits::{MAX_CANDIDATE_BYTES, MAX_JOIN_TOKEN_BYTES, MAX_ROOM_CAPACITY, MAX_SDP_BYTES};

/// What a room does with its members' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Every message is forwarded to all other members (a data SFU).
    Relay,
    /// The server runs the game.
    Authoritative,
    /// Peer-to-peer: members connect to each other (a full mesh) and the
    /// server only forwards their `signal` messages; it has no WebRTC
    /// session with them.
    P2p,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Relay => "relay",
            RoomKind::Authoritative => "authoritative",
            RoomKind::P2p => "p2p",
        }
    }
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a room, creating it if needed. Must be the first message
    /// (besides `ping`).
    Join {
        version: u32,
        room: RoomId,
        kind: RoomKind,
        name: String,
        /// Capacity for a new room (the creator's choice, up to the server's
        /// maximum); ignored when the room exists. Absent: server default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capacity: Option<usize>,
        /// Join token (see docs/protocol.md, "Authentication"), when the
        /// server requires one. Browsers cannot set WebSocket headers, so it
        /// travels here or in the `/ws?token=` query string.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Resume token from an earlier `welcome` (see docs/protocol.md,
        /// "Reconnection"): take back your seat in `room` (same peer id)
        /// after a lost connection, within the room's grace period. Replaces
        /// `token`; `kind` must be the room's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// SDP offer for a session with the server peer.
    Offer { sdp: String },
    /// A trickled ICE candidate (`a=candidate` value, with or without the
    /// `candidate:` prefix). An empty string means end of candidates.
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mid: Option<String>,
    },
    /// Leave the room; the WebSocket stays open and may join again.
    Leave,
    /// Liveness and RTT probe; answered by `pong` with the same id.
    Ping { id: u32 },
    /// P2p rooms only: a WebRTC signaling payload (SDP offer or answer, ICE
    /// candidate, ...) for another member, forwarded to it as
    /// [`ServerMessage::Signal`]. `data` is opaque to the server but must be
    /// a JSON object.
    Signal { to: PeerId, data: SignalData },
}

/// The payload of a `signal`: any JSON object, forwarded unchanged.
pub type SignalData = serde_json::Map<String, serde_json::Value>;

/// The `type` values of [`ClientMessage`], for telling an unknown type from a
/// malformed known one.
pub const CLIENT_MESSAGE_TYPES: &[&str] =
    &["join", "offer", "candidate", "leave", "ping", "signal"];

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`.
    Welcome {
        version: u32,
        peer_id: PeerId,
        room: RoomId,
        kind: RoomKind,
        capacity: usize,
        /// The other members, in join order.
        roster: Vec<RosterEntry>,
        /// Pass these to `RTCPeerConnection({ iceServers })`.
        ice_servers: Vec<IceServer>,
        /// Keep it: after a lost connection, `join` again with
        /// `resume: resume_token` within `resume_grace_ms` to get this seat
        /// (and peer id) back. Absent when the room kind has no seats to
        /// keep (p2p) or the server disabled resume. Each welcome carries a
        /// new token; an older one no longer works.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_grace_ms: Option<u64>,
        /// True when this welcome answers a `join` with `resume`: the seat,
        /// peer id and game state were kept; send a new `offer`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// The server peer's SDP answer to `offer`.
    Answer {
        sdp: String,
    },
    /// A server candidate; an empty string means end of candidates.
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mid: Option<String>,
    },
    /// Both DataChannels are open on the server peer with the right
    /// parameters, as the server peer sees them.
    Ready {
        realtime: ChannelParams,
        control: ChannelParams,
    },
    PeerJoined {
        peer_id: PeerId,
        name: String,
    },
    PeerLeft {
        peer_id: PeerId,
        reason: LeaveReason,
    },
    /// A member lost its connection; its seat is kept for `grace_ms`
    /// (then `peer_left` with reason `disconnected`, unless it comes back:
    /// `peer_back`). Sent to the member itself too when its signaling
    /// socket is still open but its WebRTC session died: send a new `offer`.
    PeerAway {
        peer_id: PeerId,
        grace_ms: u64,
    },
    /// A member that was away resumed its seat.
    PeerBack {
        peer_id: PeerId,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// True when the server closes the WebSocket right after this.
        fatal: bool,
    },
    Pong {
        id: u32,
    },
    /// P2p rooms: another member's `signal` for you; `from` is its peer id.
    Signal {
        from: PeerId,
        data: SignalData,
    },
    /// The server is shutting down: it takes no new joins, running matches
    /// may finish, and the server closes every connection within
    /// `deadline_ms` milliseconds. Clients should reconnect elsewhere after.
    Draining {
        deadline_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub peer_id: PeerId,
    pub name: String,
}

/// An entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// DataChannel parameters as the server peer sees them. Both `max_*` absent
/// means reliable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelParams {
    pub ordered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_lifetime_ms: Option<u32>,
}

impl ChannelParams {
    /// What `realtime` must be: unordered, no retransmissions.
    pub const REALTIME: ChannelParams = ChannelParams {
        ordered: false,
        max_retransmits: Some(0),
        max_packet_lifetime_ms: None,
    };
    /// What `control` must be: ordered and reliable.
    pub const CONTROL: ChannelParams = ChannelParams {
        ordered: true,
        max_retransmits: None,
        max_packet_lifetime_ms: None,
    };

    /// The parameters a channel with this label must have, if the label is
    /// one the server knows.
    pub fn required_for(label: &str) -> Option<ChannelParams> {
        match label {
            crate::channels::REALTIME => Some(Self::REALTIME),
            crate::channels::CONTROL => Some(Self::CONTROL),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ordered={}", self.ordered)?;
        match (self.max_retransmits, self.max_packet_lifetime_ms) {
            (Some(n), _) => write!(f, " maxRetransmits={n}"),
            (None, Some(ms)) => write!(f, " maxPacketLifeTime={ms}ms"),
            (None, None) => write!(f, " reliable"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The peer sent `leave` or closed its WebSocket.
    Left,
    /// The peer's WebRTC session failed or timed out.
    Disconnected,
}

/// Stable error codes. Clients switch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text is not JSON.
    BadJson,
    /// JSON with a `type` this server does not know.
    UnknownType,
    /// A known type with missing, extra-typed or out-of-range fields.
    InvalidMessage,
    /// The WebSocket message exceeds the size limit (fatal).
    MessageTooLarge,
    /// A binary WebSocket message; the protocol is text only.
    BinaryNotSupported,
    /// `join.version` is not one this server speaks.
    UnsupportedVersion,
    /// `join.kind` is a kind this server does not run.
    UnsupportedRoomKind,
    /// A message that needs a room, sent before `join`.
    NotJoined,
    /// `join` while already in a room (send `leave` first).
    AlreadyJoined,
    /// The room has reached its capacity.
    RoomFull,
    /// The room exists with another kind.
    RoomKindMismatch,
    /// The server has reached its room limit.
    TooManyRooms,
    /// A second `offer` while a session exists (renegotiation is not supported).
    SessionExists,
    /// A `candidate` before an `offer`.
    NoSession,
    /// The SDP offer could not be parsed or accepted.
    BadSdp,
    /// The candidate could not be parsed.
    BadCandidate,
    /// A DataChannel was opened with a wrong label or wrong parameters (fatal
    /// for the WebRTC session; the WebSocket stays open).
    ChannelRejected,
    /// The server peer is not available (shutting down, overloaded).
    Unavailable,
    Internal,
    /// A `signal` whose `to` is not another member of your room.
    PeerNotFound,
    /// A message your room's kind does not take: `signal` outside a p2p
    /// room, `offer` or `candidate` (for the server peer) in a p2p room.
    WrongRoomKind,
    /// Too many messages (or `signal` bytes to one member) in too short a
    /// time; the message was dropped.
    RateLimited,
    /// The server requires a join token and none was given.
    AuthRequired,
    /// The join token is malformed or its signature does not verify.
    TokenInvalid,
    /// The join token has expired.
    TokenExpired,
    /// The join token is for another room.
    TokenWrongRoom,
    /// The server is draining (shutting down): no new joins.
    Draining,
    /// The server has reached its limit of connections or WebRTC peers.
    ServerFull,
    /// The resume token is malformed, forged, or was replaced by a newer
    /// one (each `welcome` issues a new token).
    ResumeInvalid,
    /// The resume token expired, or the seat it names was released (the
    /// grace period ended or the player left): join afresh.
    ResumeExpired,
    /// The resume token is for another room.
    ResumeWrongRoom,
}

impl ErrorCode {
    /// All codes, for metrics pre-registration and docs.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::BinaryNotSupported,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnsupportedRoomKind,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::RoomFull,
        ErrorCode::RoomKindMismatch,
        ErrorCode::TooManyRooms,
        ErrorCode::SessionExists,
        ErrorCode::NoSession,
        ErrorCode::BadSdp,
        ErrorCode::BadCandidate,
        ErrorCode::ChannelRejected,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::PeerNotFound,
        ErrorCode::WrongRoomKind,
        ErrorCode::RateLimited,
        ErrorCode::AuthRequired,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::TokenWrongRoom,
        ErrorCode::Draining,
        ErrorCode::ServerFull,
        ErrorCode::ResumeInvalid,
        ErrorCode::ResumeExpired,
        ErrorCode::ResumeWrongRoom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnsupportedRoomKind => "unsupported_room_kind",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomKindMismatch => "room_kind_mismatch",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::SessionExists => "session_exists",
            ErrorCode::NoSession => "no_session",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::ChannelRejected => "channel_rejected",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::WrongRoomKind => "wrong_room_kind",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenWrongRoom => "token_wrong_room",
            ErrorCode::Draining => "draining",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::ResumeInvalid => "resume_invalid",
            ErrorCode::ResumeExpired => "resume_expired",
            ErrorCode::ResumeWrongRoom => "resume_wrong_room",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client message was refused: a code for the client to switch on and a
/// sentence for the human reading the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
        }
    }
}

/// Decodes and validates one client message of at most `max_bytes`.
pub fn decode_client_message(text: &str, max_bytes: usize) -> Result<ClientMessage, DecodeError> {
    if text.len() > max_bytes {
        return Err(DecodeError::new(
            ErrorCode::MessageTooLarge,
            format!("message is {} bytes, limit is {max_bytes}", text.len()),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(ErrorCode::BadJson, format!("not JSON: {e}")))?;
    let Some(ty) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(DecodeError::new(
            ErrorCode::InvalidMessage,
            "message must be a JSON object with a string \"type\"",
        ));
    };
    if !CLIENT_MESSAGE_TYPES.contains(&ty.as_str()) {
        let shown: String = ty.chars().take(32).collect();
        return Err(DecodeError::new(
            ErrorCode::UnknownType,
            format!("unknown message type {shown:?}"),
        ));
    }
    let msg: ClientMessage = serde_json::from_value(value)
        .map_err(|e| DecodeError::new(ErrorCode::InvalidMessage, format!("{ty}: {e}")))?;
    validate(&msg)?;
    Ok(msg)
}

/// Field rules serde cannot express.
fn validate(msg: &ClientMessage) -> Result<(), DecodeError> {
    let invalid = |m: String| Err(DecodeError::new(ErrorCode::InvalidMessage, m));
    match msg {
        ClientMessage::Join {
            name,
            capacity,
            token,
            resume,
            ..
        } => {
            if let Err(e) = validate_display_name(name) {
                return invalid(format!("join: {e}"));
            }
            if token
                .as_ref()
                .is_some_and(|t| t.is_empty() || t.len() > MAX_JOIN_TOKEN_BYTES)
            {
                return invalid(format!(
                    "join: token must be 1 to {MAX_JOIN_TOKEN_BYTES} bytes"
                ));
            }
            if resume
                .as_ref()
                .is_some_and(|t| t.is_empty() || t.len() > MAX_JOIN_TOKEN_BYTES)
            {
                return invalid(format!(
                    "join: resume must be 1 to {MAX_JOIN_TOKEN_BYTES} bytes"
                ));
            }
            if capacity.is_some_and(|c| c == 0 || c > MAX_ROOM_CAPACITY) {
                return invalid(format!("join: capacity must be 1 to {MAX_ROOM_CAPACITY}"));
            }
        }
        ClientMessage::Offer { sdp } => {
            if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
                return invalid(format!("offer: sdp must be 1 to {MAX_SDP_BYTES} bytes"));
            }
        }
        ClientMessage::Candidate { candidate, mid } => {
            if candidate.len() > MAX_CANDIDATE_BYTES {
                return invalid(format!(
                    "candidate: longer than {MAX_CANDIDATE_BYTES} bytes"
                ));
            }
            if mid.as_ref().is_some_and(|m| m.len() > 32) {
                return invalid("candidate: mid longer than 32 bytes".into());
            }
        }
        ClientMessage::Leave | ClientMessage::Ping { .. } | ClientMessage::Signal { .. } => {}
    }
    Ok(())
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys,
        // no floats.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Is this candidate an mDNS (`.local`) host candidate? The server ignores
/// those: being ICE-lite it learns the browser's address from STUN checks.
pub fn is_mdns_candidate(candidate: &str) -> bool {
    // candidate:<foundation> <component> <transport> <priority> <address> ...
    let body = candidate.strip_prefix("candidate:").unwrap_or(candidate);
    body.split_ascii_whitespace()
        .nth(4)
        .is_some_and(|addr| addr.to_ascii_lowercase().ends_with(".local"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DEFAULT_MAX_SIGNALING_MESSAGE_BYTES as MAX;

    fn code_of(text: &str) -> ErrorCode {
        decode_client_message(text, MAX).unwrap_err().code
    }

    #[test]
    fn decodes_join() {
        let m = decode_client_message(
            r#"{"type":"join","version":1,"room":"r1","kind":"relay","name":"ada"}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Join {
                version: 1,
                room: RoomId::try_from("r1").unwrap(),
                kind: RoomKind::Relay,
                name: "ada".into(),
                capacity: None,
                token: None,
                resume: None,
            }
        );
    }

    #[test]
    fn each_failure_has_its_code() {
        assert_eq!(code_of("{not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code_of(r#"{"type":7}"#), ErrorCode::InvalidMessage);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":"join"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code_of(r#"{"type":"join","version":1,"room":"bad room","kind":"relay","name":"a"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"type":"join","version":1,"room":"r","kind":"mesh","name":"a"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"type":"join","version":1,"room":"r","kind":"relay","name":""}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(
                r#"{"type":"join","version":1,"room":"r","kind":"relay","name":"a","capacity":0}"#
            ),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"type":"offer","sdp":""}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"type":"ping","id":-1}"#),
            ErrorCode::InvalidMessage
        );
        let long = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(MAX));
        assert_eq!(code_of(&long), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn server_messages_have_stable_json() {
        let e = ServerMessage::error(ErrorCode::RoomFull, "room r1 is full (4/4)");
        assert_eq!(
            e.to_json(),
            r#"{"type":"error","code":"room_full","message":"room r1 is full (4/4)","fatal":false}"#
        );
        let left = ServerMessage::PeerLeft {
            peer_id: PeerId(3),
            reason: LeaveReason::Disconnected,
        };
        assert_eq!(
            left.to_json(),
            r#"{"type":"peer_left","peer_id":3,"reason":"disconnected"}"#
        );
        let away = ServerMessage::PeerAway {
            peer_id: PeerId(3),
            grace_ms: 30_000,
        };
        assert_eq!(
            away.to_json(),
            r#"{"type":"peer_away","peer_id":3,"grace_ms":30000}"#
        );
        let back = ServerMessage::PeerBack { peer_id: PeerId(3) };
        assert_eq!(back.to_json(), r#"{"type":"peer_back","peer_id":3}"#);
    }

    #[test]
    fn decodes_p2p_join_and_signal() {
        let m = decode_client_message(
            r#"{"type":"join","version":1,"room":"r1","kind":"p2p","name":"ada"}"#,
            MAX,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Join {
                kind: RoomKind::P2p,
                ..
            }
        ));
        assert_eq!(RoomKind::P2p.as_str(), "p2p");
        assert_eq!(serde_json::to_string(&RoomKind::P2p).unwrap(), r#""p2p""#);

        let m = decode_client_message(
            r#"{"type":"signal","to":7,"data":{"type":"offer","sdp":"v=0\r\n"}}"#,
            MAX,
        )
        .unwrap();
        let ClientMessage::Signal { to, data } = m else {
            panic!("not a signal: {m:?}");
        };
        assert_eq!(to, PeerId(7));
        assert_eq!(data["type"], "offer");
        assert_eq!(data["sdp"], "v=0\r\n");

        // `data` must be an object; `to` a peer id.
        for bad in [
            r#"{"type":"signal","to":7}"#,
            r#"{"type":"signal","to":7,"data":"offer"}"#,
            r#"{"type":"signal","to":7,"data":[1]}"#,
            r#"{"type":"signal","to":7,"data":null}"#,
            r#"{"type":"signal","to":-1,"data":{}}"#,
            r#"{"type":"signal","to":"7","data":{}}"#,
            r#"{"type":"signal","data":{}}"#,
        ] {
            assert_eq!(code_of(bad), ErrorCode::InvalidMessage, "{bad}");
        }
        let long = format!(
            r#"{{"type":"signal","to":7,"data":{{"sdp":"{}"}}}}"#,
            "x".repeat(MAX)
        );
        assert_eq!(code_of(&long), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn server_signal_has_stable_json() {
        let mut data = SignalData::new();
        data.insert(
            "candidate".into(),
            "candidate:1 1 udp 1 10.0.0.1 9 typ host".into(),
        );
        data.insert("sdpMid".into(), "0".into());
        let msg = ServerMessage::Signal {
            from: PeerId(3),
            data,
        };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"signal","from":3,"data":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0"}}"#
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::PeerNotFound, "x").to_json(),
            r#"{"type":"error","code":"peer_not_found","message":"x","fatal":false}"#
        );
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn mdns_candidates_are_recognised() {
        assert!(is_mdns_candidate(
            "candidate:1 1 udp 2122260223 3f2a1c9e-1111-2222-3333-444455556666.local 54321 typ host"
        ));
        assert!(!is_mdns_candidate(
            "candidate:1 1 udp 2122260223 192.168.1.4 54321 typ host"
        ));
        assert!(!is_mdns_candidate("garbage"));
    }
}
