//! rtcrelay's bundled TURN server, built around the `turn` crate (0.17.2).
//! That crate has no peer filter, no quotas and no TCP/TLS listeners; we add
//! them through its extension points (`AuthHandler`,
//! `RelayAddressGenerator`, `Conn`) instead of copying it.
//!
//! - [`config`]: the `[turn]` configuration model and its validation; every
//!   error names its key.
//! - [`credentials`]: TURN REST API credentials (coturn's
//!   `use-auth-secret`: `expiry[:user]` + base64(HMAC-SHA1)) and static
//!   users; minting for signaling, checking for the server (`AuthHandler`).
//! - [`policy`]: [`PeerPolicy`], which peer addresses a client may relay to
//!   (loopback, private ranges and the server's own addresses denied by
//!   default; IPv4-mapped IPv6 normalised).
//! - [`relay_conn`]: the policy on the crate's packet paths: a policed relay
//!   socket `Conn` (drops and counts denied datagrams, counts traffic), a
//!   `RelayAddressGenerator` for the relay IP and port range, and a listener
//!   `Conn` guard that answers CreatePermission/ChannelBind for denied peers
//!   with 403.
//! - [`limit`]: rate limits, sans-IO: the token bucket, and the budget of
//!   unauthenticated requests that keeps the crate's nonce map bounded.
//! - [`stream`]: TURN over TCP and TLS (rustls): [`StreamListener`] accepts
//!   connections on one address and presents them all to the crate as one
//!   packet `Conn` (STUN / padded ChannelData framing as Chromium and coturn
//!   speak it), with connection limits, timeouts and bounded buffers;
//!   [`stream::StreamConn`] is the client side for the crate's `Client`.
//! - [`server`]: [`TurnServer`], the `turn` crate's server with all of the
//!   above plugged in: UDP, TCP and TLS listeners, quotas (486), the
//!   lifetime cap, allocation tracking, per-allocation bandwidth cap, hot
//!   reload, and the [`server::TurnMinter`] signaling mints client
//!   credentials with.
//! - [`metrics`]: the `rtcrelay_turn_*` Prometheus families.
//! - [`netlab`]: the network lab (issue 5) on each allocation's relayed
//!   traffic: loss, delay, rate... as the shared `rtcrelay_netlab::Lab`
//!   says for the allocation's username (`turn_user` scope, or `global`).
//! - [`probe`]: `rtcrelay turn probe`: allocate, permission, channel bind,
//!   echo through the relay to a local peer, refresh and close against a TURN
//!   server from the outside, each step timed; RTT, loss and rate.

pub mod config;
pub mod credentials;
pub mod limit;
pub mod metrics;
pub mod netlab;
pub mod policy;
pub mod probe;
pub mod relay_conn;
pub mod server;
pub mod stream;

pub use config::TurnConfig;
pub use credentials::Credentials;
pub use metrics::TurnMetrics;
pub use policy::PeerPolicy;
pub use server::{TurnMinter, TurnServer};
pub use stream::StreamListener;
