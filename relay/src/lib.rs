//! The server-side WebRTC peer: str0m in ICE-lite mode, many peers on one UDP
//! socket, and the rooms that run on it.
//!
//! - [`session`]: the hand-off from signaling (offer in, answer out, events
//!   back). Signaling sees only the [`SessionHost`] trait.
//! - [`metrics`]: counters and gauges of the packet path.
//! - [`config`]: what the relay needs to start.
//! - `host` (private): the UDP I/O loop, datagram routing and the peer shards.
//! - `room` (private): relay rooms, forwarding each message to the other members.

pub mod config;
pub mod metrics;
pub mod session;

pub use config::RelayConfig;
pub use metrics::RelayMetrics;
pub use session::{SessionAnswer, SessionError, SessionEvent, SessionHost, SessionRequest};
