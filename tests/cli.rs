//! The command line: config errors name the key; the process stops cleanly.

mod common;

use std::process::Command;

fn serve_with_config(toml: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("rtcrelay-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("c{}.toml", toml.len()));
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run rtcrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_config_exits_nonzero_naming_the_key() {
    let (code, err) = serve_with_config("[http]\nlisten = \"not an address\"\n");
    assert_ne!(code, 0);
    assert!(err.contains("`http.listen`"), "stderr: {err}");

    let (code, err) = serve_with_config("[relay]\nlisten = \"127.0.0.1:0\"\nshardz = 2\n");
    assert_ne!(code, 0);
    assert!(err.contains("shardz"), "unknown keys are named: {err}");

    let (code, err) = serve_with_config("[rooms]\ndefault_capacity = 100\n");
    assert_ne!(code, 0);
    assert!(err.contains("`rooms.default_capacity`"), "stderr: {err}");
}

#[test]
fn environment_variables_are_a_config_layer() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args(common::SERVE_ON_FREE_PORTS)
        .env("RTCRELAY_ROOMS__DEFAULT_CAPACITY", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rtcrelay");
    // Were the variable ignored, the server would start and keep running.
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("rtcrelay started: RTCRELAY_ROOMS__DEFAULT_CAPACITY was ignored");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("`rooms.default_capacity`"), "stderr: {err}");
}

#[test]
fn serves_health_metrics_and_the_demo_then_stops_on_sigterm() {
    let mut server = common::TestServer::start();
    let (status, body) = server.get("/healthz");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "rtcrelay_relay_peers_connected",
        "rtcrelay_relay_datagrams_in_total",
        "rtcrelay_relay_bytes_out_total",
        "rtcrelay_signaling_rooms",
        "rtcrelay_signaling_errors_total{code=\"room_full\"}",
    ] {
        assert!(body.contains(family), "/metrics lacks {family}");
    }
    let (status, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(
        body.contains("/client/rtcrelay.js"),
        "demo page loads the library"
    );
    let (status, body) = server.get("/client/rtcrelay.js");
    assert_eq!(status, 200);
    assert!(body.contains("export"), "the library is an ES module");
    assert_eq!(server.get("/client/missing.js").0, 404);
    assert!(server.is_running());
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}
