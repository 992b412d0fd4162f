//! The `rtcrelay` binary's library half: what the binary and its fuzz
//! targets share.
//!
//! - [`config`]: the configuration file model, its layers and validation.

pub mod config;
