//! Rust client for rtcrelay: joins a room over the signaling WebSocket, opens
//! the two DataChannels to the server peer and exchanges messages with the
//! other members. Used by the end-to-end tests, the benchmarks and bots.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rtcrelay_client::ClientError> {
//! use rtcrelay_client::{Channel, Client, ClientConfig, ClientEvent};
//!
//! let mut client = Client::connect(ClientConfig::new("ws://127.0.0.1:8080/ws", "r1", "ada")).await?;
//! client.send_text(Channel::Control, "hello").await?;
//! while let Some(event) = client.next_event().await {
//!     if let ClientEvent::Message { from, payload, .. } = event {
//!         println!("{from}: {payload:?}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Reading order:
//! - [`config`] holds what to connect to ([`ClientConfig`]) and the test-only
//!   knobs ([`ConnectOptions`]);
//! - [`client`] has [`Client::connect`] (the whole join handshake) and the
//!   session API (send, events, ping, leave, close);
//! - [`event`] defines what [`Client::next_event`] yields, and how the
//!   server's messages become [`ClientEvent::Message`] (relayed frames in
//!   relay rooms, the server's own messages in authoritative rooms);
//! - [`game`] is the client side of authoritative rooms: [`GameCore`] (the
//!   sans-IO protocol: clock sync, inputs, snapshots, prediction,
//!   interpolation, events) and [`GameClient`], its driver over [`Client`];
//! - [`error`] defines [`ClientError`];
//! - `signaling` and `peer` (private) run the WebSocket tasks and the WebRTC
//!   peer connection with its channel tasks; `liveness` (private) notices
//!   a server gone silent ([`ClientEvent::Disconnected`]);
//! - `reconnect` (private) decides, without I/O, when and how a lost
//!   connection is resumed (backoff with jitter, grace period); the
//!   client's supervisor task in [`client`] carries it out and reports it
//!   as [`ClientEvent::Reconnecting`], [`ClientEvent::Resumed`] and
//!   [`ClientEvent::ResumeFailed`] (docs/client.md).

pub mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod game;
mod liveness;
mod peer;
mod reconnect;
mod signaling;

pub use client::Client;
pub use config::{ClientConfig, ConnectOptions};
pub use error::ClientError;
pub use event::{Channel, ClientEvent, SERVER};
pub use game::{
    GameClient, GameCore, GameEvent, GameOutput, Hello, InputSource, NetStats, Predictor,
};

// The protocol types that appear in this crate's API, so users need not
// depend on rtcrelay-protocol themselves.
pub use rtcrelay_protocol::game::{Entity, WorldState};
pub use rtcrelay_protocol::signaling::{ChannelParams, IceServer, LeaveReason, RosterEntry};
pub use rtcrelay_protocol::{ErrorCode, PeerId, RoomKind};
