//! The `rtcrelay` binary's library half: what the binary and its fuzz
//! targets share.
//!
//! - [`config`]: the configuration file model, its layers and validation;
//! - [`bot`]: `rtcrelay bot`, headless game clients for load and soak tests.

pub mod bot;
pub mod config;
