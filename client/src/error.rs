//! Errors of the client API.

use rtcrelay_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config cannot be used (bad room id, bad name, bad URL).
    #[error("invalid config: {0}")]
    Config(String),
    /// The server answered with an `error` message.
    #[error("server error {0}: {1}")]
    Signaling(ErrorCode, String),
    /// The signaling WebSocket failed. Boxed: tungstenite's error is large.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The WebRTC stack failed (SDP, ICE, DTLS, SCTP).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// The server sent something the protocol does not allow at that point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// An operation did not finish in time; names the operation.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The signaling connection or the WebRTC session is gone.
    #[error("connection closed")]
    Closed,
    /// The connection was lost and the client is reconnecting (see
    /// [`ClientEvent::Reconnecting`](crate::ClientEvent::Reconnecting)):
    /// nothing can be sent until it has resumed.
    #[error("reconnecting")]
    Reconnecting,
    /// The server took this client out of the room (its own `peer_left`),
    /// e.g. after the grace period of a lost connection.
    #[error("not in the room any more")]
    NotInRoom,
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}
