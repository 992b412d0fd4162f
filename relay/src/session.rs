//! The signaling → relay hand-off. Kept behind a small trait so that the
//! relay can later live on another node (the Redis scale-out) without
//! signaling changing.

use rtcrelay_protocol::signaling::ChannelParams;
use rtcrelay_protocol::{PeerId, RoomId, RoomKind};
use tokio::sync::mpsc;

/// A new WebRTC session between one client and the server peer.
#[derive(Debug)]
pub struct SessionRequest {
    pub peer: PeerId,
    pub room: RoomId,
    pub kind: RoomKind,
    /// The player's display name (games show it).
    pub name: String,
    pub offer_sdp: String,
    /// Where the relay reports what happens to this session. Dropping the
    /// receiver is harmless; events are then discarded.
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

/// The server peer's answer. The peer is registered with the UDP loop before
/// this is returned, so the client's first STUN check is never lost.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    pub sdp: String,
    /// The server's candidates (`candidate:...` lines), also in `sdp`; sent
    /// to the client as trickle candidates too.
    pub candidates: Vec<String>,
}

/// What happens to a session after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Both `realtime` and `control` are open with the required parameters.
    Ready {
        realtime: ChannelParams,
        control: ChannelParams,
    },
    /// The client opened a channel with an unknown label or wrong parameters;
    /// the session has been closed.
    ChannelRejected { reason: String },
    /// The session ended (ICE timeout, DTLS close, or `close` was called).
    Closed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    #[error("bad candidate: {0}")]
    BadCandidate(String),
    #[error("peer {0} has a session already")]
    SessionExists(PeerId),
    #[error("peer {0} has no session")]
    NoSession(PeerId),
    #[error("relay unavailable: {0}")]
    Unavailable(String),
    /// `max_peers` sessions are open (the number is the limit).
    #[error("the relay is full ({0} sessions): try again later")]
    ServerFull(usize),
}

#[async_trait::async_trait]
pub trait SessionHost: Send + Sync + 'static {
    /// Accepts an SDP offer and returns the answer.
    async fn open(&self, request: SessionRequest) -> Result<SessionAnswer, SessionError>;

    /// A trickled remote candidate. An ICE-lite server learns the client's
    /// address from its STUN checks, so this only validates and records it.
    async fn add_remote_candidate(
        &self,
        peer: PeerId,
        candidate: String,
    ) -> Result<(), SessionError>;

    /// Ends `peer`'s session in `room`, if it has one (no `Closed` event is
    /// sent for a session closed this way), and does `seat` with its seat.
    /// A session that ends on its own (dead peer, ICE or DTLS failure, a
    /// rejected channel) reports `Closed` and keeps its seat, as `Keep`:
    /// signaling decides later, with another `close`.
    async fn close(&self, peer: PeerId, room: &RoomId, seat: SeatEnd);
}

/// What [`SessionHost::close`] does with the player's seat in an
/// authoritative room (relay rooms keep nothing between sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatEnd {
    /// Kept for a later session of the same peer, which takes it back (its
    /// game state, pending events, input history). The player is away.
    Keep,
    /// The player left: the game removes it.
    Leave,
    /// The player's grace period ended: the room's after-grace rule applies
    /// (forfeit or a bot takes over).
    GraceOver,
}
