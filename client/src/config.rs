//! Connection settings.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rtcrelay_protocol::signaling::{ChannelParams, IceServer};
use rtcrelay_protocol::RoomKind;

/// What to join and how to reach the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The signaling WebSocket, e.g. `ws://127.0.0.1:8080/ws` (`wss://` is not
    /// supported: the client is built without TLS).
    pub signaling_url: String,
    pub room: String,
    pub kind: RoomKind,
    /// Display name shown to the other members (1 to 32 characters).
    pub name: String,
    /// Capacity asked for when this client creates the room (ignored when
    /// the room exists); `None` takes the server default.
    pub capacity: Option<usize>,
    /// Join token, when the server requires one (`[auth]`).
    pub token: Option<String>,
    /// Local address the WebRTC UDP socket binds to (port chosen by the OS).
    /// Must be a concrete address: the webrtc crate expands `0.0.0.0` to every
    /// interface *except* loopback, so a server on 127.0.0.1 would be
    /// unreachable.
    pub bind_ip: IpAddr,
    /// Upper bound for [`Client::connect`](crate::Client::connect), from the
    /// WebSocket dial to both channels open and `ready` received.
    pub connect_timeout: Duration,
    /// After this long with no message at all from the server on either
    /// channel, the client reports
    /// [`ClientEvent::Disconnected`](crate::ClientEvent::Disconnected),
    /// once. The server heartbeats
    /// every `relay.heartbeat_interval` (1 s) when it has nothing else to
    /// send, so only a dead server or path stays silent this long. `None`:
    /// never. Default 5 s.
    pub dead_after: Option<Duration>,
    /// Reconnect automatically when the connection is lost (default on):
    /// the client's own `dead_after` fires, the peer connection fails, the
    /// signaling WebSocket ends without this client closing it, or the
    /// server reports this client `peer_away`. The client then takes its
    /// seat back with the `welcome`'s resume token, retrying with backoff
    /// until the room's grace period ends; see docs/client.md. Off: the
    /// first loss ends the session, as [`ClientEvent::Disconnected`] and
    /// [`ClientEvent::Closed`](crate::ClientEvent::Closed) report.
    /// Rooms without resume (p2p rooms, servers with `[resume] grace = "0s"`)
    /// never reconnect.
    ///
    /// [`ClientEvent::Disconnected`]: crate::ClientEvent::Disconnected
    pub reconnect: bool,
}

impl ClientConfig {
    /// A relay-room config binding 127.0.0.1 with a 10 s connect timeout.
    pub fn new(
        signaling_url: impl Into<String>,
        room: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ClientConfig {
            signaling_url: signaling_url.into(),
            room: room.into(),
            kind: RoomKind::Relay,
            name: name.into(),
            capacity: None,
            token: None,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_timeout: Duration::from_secs(10),
            dead_after: Some(Duration::from_secs(5)),
            reconnect: true,
        }
    }
}

/// Lower-level knobs, mostly for tests that check how the server reacts to a
/// misbehaving client. [`ConnectOptions::default`] is what
/// [`Client::connect`](crate::Client::connect) uses.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Parameters of the `realtime` channel the client opens. The server
    /// requires [`ChannelParams::REALTIME`]; anything else should get
    /// `channel_rejected`.
    pub realtime: ChannelParams,
    /// Parameters of the `control` channel; the server requires
    /// [`ChannelParams::CONTROL`].
    pub control: ChannelParams,
    /// More channels to open before the offer, as (label, parameters). The
    /// server should reject unknown labels. Messages on them are discarded.
    pub extra_channels: Vec<(String, ChannelParams)>,
    /// Use these ICE servers instead of the ones in the server's `welcome`.
    pub ice_servers: Option<Vec<IceServer>>,
    /// Only use TURN relay candidates (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// How long ICE waits before accepting a relay candidate pair. `None`
    /// keeps the webrtc crate's default (which delays relay pairs by seconds);
    /// `Some(Duration::ZERO)` makes relay-only connections come up at once.
    pub relay_acceptance_min_wait: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            realtime: ChannelParams::REALTIME,
            control: ChannelParams::CONTROL,
            extra_channels: Vec::new(),
            ice_servers: None,
            relay_only: false,
            relay_acceptance_min_wait: None,
        }
    }
}
