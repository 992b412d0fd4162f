//! Signaling: the HTTP and WebSocket face of rtcrelay.
//!
//! - [`config`]: what the operator can set.
//! - [`rooms`]: the room registry (who is in which room), behind a trait so
//!   that a shared store can replace the in-memory one.
//! - [`session`]: one WebSocket connection, from `join` to goodbye.
//! - [`metrics`]: signaling counters and gauges.
//! - [`auth`]: join tokens (JWT HS256) and allowed origins.
//! - [`limits`]: connection limits and per-connection message rate.
//! - `assets`: the browser library and demo page, embedded at build time.
//! - [`admin`]: the admin API (`/admin/netlab/...`): the network lab per
//!   scope at runtime, behind a bearer token.
//! - `http`: health, metrics and the router that ties it together.

pub mod admin;
pub mod auth;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod resume;
pub mod rooms;
pub mod session;

mod assets;
mod http;

pub use admin::{AdminConfig, AdminToken};
pub use auth::{AuthConfig, AuthMode};
pub use config::{IceServerMinter, SignalingConfig};
pub use http::{router, AppState};
pub use limits::LimitsConfig;
pub use metrics::SignalingMetrics;
pub use resume::{ResumeConfig, ResumeKey};
