//! The configuration file (`rtcrelay serve --config FILE`): TOML through
//! figment's layering, serde's shapes and the cross-key validation, then
//! the conversions the server makes from an accepted configuration.
//!
//! Checks: no panic; a refusal names at least one problem.
//!
//! `Config::load` reads a path, so each input is written to a file on tmpfs
//! first (a `Config::from_toml_str` would spare the write).

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rtcrelay::config::Config;

fuzz_target!(|data: &[u8]| {
    // TOML is UTF-8; figment refuses anything else before parsing.
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let path = scratch_file();
    std::fs::write(path, data).expect("the scratch file is writable");
    match Config::load(Some(path), &[]) {
        Ok(config) => {
            let _ = config.relay();
            let _ = config.signaling();
            let _ = config.game_seats();
            let lab = config.netlab_lab().expect("load validated the lab");
            let _ = config.admin(Arc::new(lab));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});

/// One file per fuzzing process, in memory when /dev/shm exists.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rtcrelay-fuzz-config-{}.toml", std::process::id()))
    })
}
