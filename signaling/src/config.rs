use crate::resume::ResumeConfig;
use rtcrelay_protocol::limits::{
    DEFAULT_MAX_SIGNALING_MESSAGE_BYTES, DEFAULT_ROOM_CAPACITY, MAX_ROOM_CAPACITY,
};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rtcrelay_protocol::signaling::IceServer;
use rtcrelay_protocol::PeerId;

use crate::admin::AdminConfig;
use crate::auth::AuthConfig;
use crate::limits::LimitsConfig;

/// Mints ICE servers for one client, e.g. short-lived TURN credentials of
/// the bundled TURN server. Implementations must never log credentials.
pub trait IceServerMinter: Send + Sync + fmt::Debug {
    /// The ICE servers for `peer`; empty when none can be minted.
    fn ice_servers(&self, peer: PeerId) -> Vec<IceServer>;
}

/// Signaling settings; the binary fills this from its config file.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// Largest WebSocket message accepted; bigger ones close the connection
    /// with `message_too_large`.
    pub max_message_bytes: usize,
    /// Capacity of a room whose creator did not ask for one.
    pub default_room_capacity: usize,
    /// Largest capacity a creator may ask for.
    pub max_room_capacity: usize,
    /// Seats of the game authoritative rooms run (their capacity); 0 turns
    /// authoritative rooms off.
    pub game_seats: usize,
    /// Most rooms open at once.
    pub max_rooms: usize,
    /// Handed to every client in `welcome`.
    pub ice_servers: Vec<IceServer>,
    /// Mints per-client ICE servers (the bundled TURN server's credentials),
    /// put in `welcome` before `ice_servers`. `None`: only `ice_servers`.
    pub ice_minter: Option<Arc<dyn IceServerMinter>>,
    /// Messages queued for one slow client before it is disconnected.
    pub outbound_queue: usize,
    /// The admin API (`/admin/netlab/...`): its token, and the network lab
    /// it controls. The default serves no admin routes.
    pub admin: AdminConfig,
    /// Join tokens and allowed origins.
    pub auth: AuthConfig,
    /// Connection and message limits.
    pub limits: LimitsConfig,
    /// A WebSocket Ping goes to each client this often...
    pub heartbeat_interval: Duration,
    /// ...and a connection from which nothing arrived (no message, no Pong)
    /// for this long is dead: closed, and its room told `disconnected`.
    pub dead_after: Duration,
    /// Resume tokens and, per room, how long a lost player's seat is kept.
    pub resume: ResumeConfig,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            max_message_bytes: DEFAULT_MAX_SIGNALING_MESSAGE_BYTES,
            default_room_capacity: DEFAULT_ROOM_CAPACITY,
            max_room_capacity: MAX_ROOM_CAPACITY,
            game_seats: 4,
            max_rooms: 10_000,
            ice_servers: Vec::new(),
            ice_minter: None,
            outbound_queue: 256,
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            resume: ResumeConfig::default(),
        }
    }
}

impl SignalingConfig {
    /// The `welcome.ice_servers` of `peer`: minted ones first, then the
    /// configured ones.
    pub fn ice_servers_for(&self, peer: PeerId) -> Vec<IceServer> {
        let mut servers = self
            .ice_minter
            .as_ref()
            .map(|m| m.ice_servers(peer))
            .unwrap_or_default();
        servers.extend(self.ice_servers.iter().cloned());
        servers
    }
}
