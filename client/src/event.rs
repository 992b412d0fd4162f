//! Events a [`Client`](crate::Client) delivers, and the decoding of the
//! server's DataChannel messages into them: in relay rooms every message is
//! a relayed frame (header naming the sender, then the payload); in
//! authoritative rooms the server peer speaks for itself, unwrapped
//! (snapshot frames on `realtime`, JSON text on `control`). In both, the
//! server's heartbeat frame on `control` (one binary byte, `0x04`) is
//! dropped here: it only exists to make this client's SCTP stack answer.

use bytes::{Bytes, BytesMut};
use rtcrelay_protocol::channels;
use rtcrelay_protocol::frame::{is_heartbeat, FrameError, Relayed, RELAYED_HEADER_LEN};
use rtcrelay_protocol::signaling::LeaveReason;
use rtcrelay_protocol::{ErrorCode, PeerId, RoomKind};

/// The sender of messages from the server peer itself (authoritative rooms).
/// Members' ids start at 1, so this is never a member.
pub const SERVER: PeerId = PeerId(0);

/// The two DataChannels every client opens to the server peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Unordered, no retransmissions: may lose or reorder messages.
    Realtime,
    /// Ordered and reliable.
    Control,
}

impl Channel {
    /// The DataChannel label.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Realtime => channels::REALTIME,
            Channel::Control => channels::CONTROL,
        }
    }
}

/// Something that happened in the room or to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Another member sent a message; the relay forwarded it on the same
    /// channel. `text` is true when the sender sent a text message, and then
    /// `payload` is valid UTF-8. In authoritative rooms `from` is
    /// [`SERVER`] and `payload` is the server's whole message.
    Message {
        from: PeerId,
        channel: Channel,
        text: bool,
        payload: Bytes,
    },
    PeerJoined {
        peer_id: PeerId,
        name: String,
    },
    /// A member left. When `peer_id` is this client's own id, the server has
    /// dropped this client's WebRTC session and it is out of the room.
    PeerLeft {
        peer_id: PeerId,
        reason: LeaveReason,
    },
    /// The server reported an error after the client had connected.
    Error {
        code: ErrorCode,
        message: String,
        fatal: bool,
    },
    /// A DataChannel frame from the server that does not decode. The frame is
    /// dropped; the session goes on.
    InvalidFrame {
        channel: Channel,
        error: FrameError,
    },
    /// Nothing at all came from the server on either DataChannel for
    /// `silent_for` (at least
    /// [`ClientConfig::dead_after`](crate::ClientConfig::dead_after)): the
    /// server or the network path to it is gone, though nothing closed.
    /// Reported once per session. The server notices the same silence from
    /// its side and tells the room this client is away. With
    /// [`ClientConfig::reconnect`](crate::ClientConfig::reconnect) on (the
    /// default) the client then reconnects ([`ClientEvent::Reconnecting`]).
    Disconnected {
        silent_for: std::time::Duration,
    },
    /// Another member lost its connection; the server keeps its seat for
    /// `grace` (then [`ClientEvent::PeerLeft`] with reason `disconnected`,
    /// unless [`ClientEvent::PeerBack`] comes first). This client's own
    /// `peer_away` is handled by the automatic reconnection (it shows as
    /// [`ClientEvent::Reconnecting`]); it is only passed on as a `PeerAway`
    /// event when [`ClientConfig::reconnect`](crate::ClientConfig::reconnect)
    /// is off.
    PeerAway {
        peer_id: PeerId,
        grace: std::time::Duration,
    },
    /// A member that was away resumed its seat (same peer id).
    PeerBack {
        peer_id: PeerId,
    },
    /// This client lost its connection and tries to take its seat back
    /// (see [`ClientConfig::reconnect`](crate::ClientConfig::reconnect)):
    /// attempt number `attempt` (from 1) starts after `after`. Sends fail
    /// with [`ClientError::Reconnecting`](crate::ClientError::Reconnecting)
    /// until [`ClientEvent::Resumed`] or [`ClientEvent::ResumeFailed`].
    Reconnecting {
        attempt: u32,
        after: std::time::Duration,
    },
    /// This client has its seat back: same `peer_id`, a new WebRTC
    /// session (both channels open). `roster` is the room's membership now
    /// when the client had to open a new signaling connection (roster
    /// events of the time away were lost with the old one); `None` when the
    /// signaling connection survived.
    Resumed {
        peer_id: PeerId,
        roster: Option<Vec<rtcrelay_protocol::signaling::RosterEntry>>,
    },
    /// The seat could not be taken back: `code` is the server's refusal
    /// (`resume_invalid`, `resume_expired`, `resume_wrong_room`), or `None`
    /// when the grace period ran out first or the server released the seat.
    /// [`ClientEvent::Closed`] follows; join afresh to play again.
    ResumeFailed {
        code: Option<ErrorCode>,
        reason: String,
    },
    /// The connection is over for good (the signaling WebSocket closed, and
    /// no reconnection follows): no more events.
    Closed,
}

impl ClientEvent {
    /// The payload as text, for `Message` events that carry text.
    pub fn text(&self) -> Option<&str> {
        match self {
            ClientEvent::Message {
                text: true,
                payload,
                ..
            } => std::str::from_utf8(payload).ok(),
            _ => None,
        }
    }
}

/// Turns one DataChannel message from the server into an event, the way
/// rooms of `kind` frame them. `text` is the message's own type (SCTP PPID).
/// None for a heartbeat, which is not news to the application.
pub(crate) fn decode_message(
    kind: RoomKind,
    channel: Channel,
    text: bool,
    data: BytesMut,
) -> Option<ClientEvent> {
    if channel == Channel::Control && is_heartbeat(!text, &data) {
        return None;
    }
    Some(match kind {
        // P2p rooms have no server session (signaling refuses the offer),
        // so nothing arrives here for them; frame as relay rooms do.
        RoomKind::Relay | RoomKind::P2p => decode_frame(channel, data),
        RoomKind::Authoritative => decode_server_message(channel, text, data),
    })
}

/// Authoritative rooms: the message is the server's own, passed on whole
/// (the game layer decodes it); only a text message must be UTF-8.
fn decode_server_message(channel: Channel, text: bool, data: BytesMut) -> ClientEvent {
    if text && std::str::from_utf8(&data).is_err() {
        return ClientEvent::InvalidFrame {
            channel,
            error: FrameError::NotUtf8,
        };
    }
    ClientEvent::Message {
        from: SERVER,
        channel,
        text,
        payload: data.freeze(),
    }
}

/// Relay rooms: turns one relayed frame into an event. The payload is a
/// slice of the received buffer, not a copy.
pub(crate) fn decode_frame(channel: Channel, data: BytesMut) -> ClientEvent {
    match Relayed::decode(&data) {
        Ok(relayed) => {
            let (from, text) = (relayed.sender, relayed.text);
            ClientEvent::Message {
                from,
                channel,
                text,
                payload: data.freeze().slice(RELAYED_HEADER_LEN..),
            }
        }
        Err(error) => ClientEvent::InvalidFrame { channel, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sender: u32, text: bool, payload: &[u8]) -> BytesMut {
        let r = Relayed {
            sender: PeerId(sender),
            text,
            payload,
        };
        BytesMut::from(&r.encode()[..])
    }

    #[test]
    fn relayed_frames_become_messages() {
        let ev = decode_frame(Channel::Control, frame(7, true, "héllo".as_bytes()));
        assert_eq!(
            ev,
            ClientEvent::Message {
                from: PeerId(7),
                channel: Channel::Control,
                text: true,
                payload: Bytes::from_static("héllo".as_bytes()),
            }
        );
        assert_eq!(ev.text(), Some("héllo"));

        let ev = decode_frame(Channel::Realtime, frame(u32::MAX, false, &[0, 1, 2]));
        assert_eq!(
            ev,
            ClientEvent::Message {
                from: PeerId(u32::MAX),
                channel: Channel::Realtime,
                text: false,
                payload: Bytes::from_static(&[0, 1, 2]),
            }
        );
        assert_eq!(ev.text(), None);

        // A header with an empty payload is a valid, empty message.
        let ev = decode_frame(Channel::Realtime, frame(1, false, &[]));
        assert!(matches!(ev, ClientEvent::Message { payload, .. } if payload.is_empty()));
    }

    #[test]
    fn bad_frames_become_invalid_frame_events() {
        let cases: [(&[u8], FrameError); 4] = [
            (&[], FrameError::Empty),
            (&[9, 0, 0, 0, 0, 1], FrameError::UnknownType(9)),
            (&[1, 0, 0], FrameError::Truncated { len: 3, need: 6 }),
            (&[1, 1, 0, 0, 0, 1, 0xff], FrameError::NotUtf8),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                decode_frame(Channel::Control, BytesMut::from(bytes)),
                ClientEvent::InvalidFrame {
                    channel: Channel::Control,
                    error
                }
            );
        }
    }

    #[test]
    fn authoritative_rooms_pass_server_messages_whole() {
        // A snapshot frame (type 0x03) would be an unknown relayed frame.
        let snapshot = [3u8, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let ev = decode_message(
            RoomKind::Authoritative,
            Channel::Realtime,
            false,
            BytesMut::from(&snapshot[..]),
        )
        .unwrap();
        assert_eq!(
            ev,
            ClientEvent::Message {
                from: SERVER,
                channel: Channel::Realtime,
                text: false,
                payload: Bytes::copy_from_slice(&snapshot),
            }
        );
        let hello = r#"{"type":"hello"}"#;
        let ev = decode_message(
            RoomKind::Authoritative,
            Channel::Control,
            true,
            BytesMut::from(hello.as_bytes()),
        )
        .unwrap();
        assert_eq!(ev.text(), Some(hello));
        let ev = decode_message(
            RoomKind::Authoritative,
            Channel::Control,
            true,
            BytesMut::from(&[0xffu8][..]),
        )
        .unwrap();
        assert_eq!(
            ev,
            ClientEvent::InvalidFrame {
                channel: Channel::Control,
                error: FrameError::NotUtf8
            }
        );
        // Relay rooms still decode relayed frames.
        let ev = decode_message(
            RoomKind::Relay,
            Channel::Realtime,
            false,
            frame(5, false, &[9]),
        )
        .unwrap();
        assert!(matches!(
            ev,
            ClientEvent::Message {
                from: PeerId(5),
                ..
            }
        ));
    }

    #[test]
    fn heartbeats_on_control_are_dropped_in_every_room_kind() {
        for kind in [RoomKind::Relay, RoomKind::Authoritative, RoomKind::P2p] {
            assert_eq!(
                decode_message(kind, Channel::Control, false, BytesMut::from(&[4u8][..])),
                None,
                "{kind:?}"
            );
        }
        // Only the exact binary frame on control is one.
        let text = decode_message(
            RoomKind::Authoritative,
            Channel::Control,
            true,
            BytesMut::from(&[4u8][..]),
        );
        assert!(matches!(
            text,
            Some(ClientEvent::Message { text: true, .. })
        ));
        let realtime = decode_message(
            RoomKind::Relay,
            Channel::Realtime,
            false,
            BytesMut::from(&[4u8][..]),
        );
        assert_eq!(
            realtime,
            Some(ClientEvent::InvalidFrame {
                channel: Channel::Realtime,
                error: FrameError::UnknownType(4)
            })
        );
        let longer = decode_message(
            RoomKind::Relay,
            Channel::Control,
            false,
            BytesMut::from(&[4u8, 0][..]),
        );
        assert!(matches!(longer, Some(ClientEvent::InvalidFrame { .. })));
    }

    #[test]
    fn labels_match_the_protocol() {
        assert_eq!(Channel::Realtime.label(), "realtime");
        assert_eq!(Channel::Control.label(), "control");
    }
}
