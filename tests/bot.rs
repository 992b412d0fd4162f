//! `rtcrelay bot` end to end: the real binary's bots against the real
//! `rtcrelay serve`, over real WebRTC on loopback. Eight bots in two
//! 4-player rooms play with churn and matches, and report by JSON that
//! every one of them connected, got snapshots and rejoined, with no error;
//! bots pointed at a closed port report their errors and exit non-zero.
//! The time limits only stop a hung run.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;

const PATIENCE: Duration = Duration::from_secs(120);

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `rtcrelay bot ARGS`, killing it if it outlives `PATIENCE`.
fn bot(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .arg("bot")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rtcrelay bot");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait rtcrelay bot") {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("rtcrelay bot still running after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn bots_play_churn_and_report_without_errors() {
    let server = TestServer::start();
    let run = bot(&[
        "--url",
        &server.ws_url,
        "--clients",
        "8",
        "--room-size",
        "4",
        "--duration",
        "10s",
        "--ramp",
        "8/s",
        "--churn-every",
        "4s",
        "--seed",
        "7",
        "--match-seconds",
        "10",
        "--json",
    ]);
    assert!(
        run.status.success(),
        "rtcrelay bot failed: {}\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON report ({e}): {}", run.stdout));
    let context = format!("report: {report:#}\nstderr: {}", run.stderr);
    assert_eq!(report["clients"], 8, "{context}");
    assert_eq!(report["rooms"], 2, "{context}");
    assert_eq!(report["clients_connected"], 8, "{context}");
    assert_eq!(report["clients_without_snapshots"], 0, "{context}");
    assert_eq!(report["errors"]["total"], 0, "{context}");
    assert_eq!(report["passed"], true, "{context}");
    assert_eq!(report["events"]["lost"], 0, "{context}");
    // Churn leaves in order: nobody lost a connection to resume.
    assert_eq!(report["resumes"]["ok"], 0, "{context}");
    assert_eq!(report["resumes"]["failed"], 0, "{context}");
    // Churn every 2 to 6 s in 10 s: every bot rejoins at least once unless
    // its first session was long and its dial late; most do.
    let rejoins = report["rejoins"].as_u64().unwrap();
    assert!(rejoins >= 4, "{rejoins} rejoins\n{context}");
    assert_eq!(
        report["sessions"].as_u64().unwrap(),
        8 + rejoins,
        "{context}"
    );
    assert!(report["inputs_sent"].as_u64().unwrap() > 0, "{context}");
    assert!(
        report["setup_ms"]["count"].as_u64().unwrap() >= 8,
        "{context}"
    );
    assert!(report["rtt_ms"]["count"].as_u64().unwrap() > 0, "{context}");
    // One bot per room starts a match once the room is full (or after a
    // wait), and everyone seated hears of it.
    assert!(
        report["events"]["start_commands_sent"].as_u64().unwrap() >= 2,
        "{context}"
    );
    assert!(
        report["events"]["match_start"].as_u64().unwrap() >= 2,
        "{context}"
    );
    // Progress went to stderr, once a second.
    assert!(run.stderr.contains("t=1s connected "), "{}", run.stderr);

    // The server's side: the bots' inputs arrived and were used, and no
    // control message or command of theirs was refused.
    assert!(server.metric("rtcrelay_game_inputs_total{outcome=\"accepted\"}") > 100.0);
    assert_eq!(server.metric_sum("rtcrelay_game_control_errors_total"), 0.0);
    server.terminate();
}

#[test]
fn bots_that_cannot_connect_report_errors_and_fail() {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let run = bot(&[
        "--url",
        "ws://127.0.0.1:1/ws",
        "--clients",
        "2",
        "--duration",
        "2s",
        "--ramp",
        "max",
    ]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stdout.contains("connect_websocket"), "{}", run.stdout);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(
        run.stderr.contains("errors (at most 0 allowed)"),
        "{}",
        run.stderr
    );

    // Bad flags are refused before anything runs, with status 2.
    let run = bot(&["--clients", "0"]);
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("--clients"), "{}", run.stderr);
}

#[test]
fn bots_mint_join_tokens_when_the_server_requires_them() {
    const SECRET: &str = "bot-e2e-secret-0123456789abcdef-0123456789";
    let dir = std::env::temp_dir().join(format!("rtcrelay-bot-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("auth.toml");
    std::fs::write(
        &config,
        format!("[auth]\nmode = \"token\"\nsecrets = [\"{SECRET}\"]\n"),
    )
    .unwrap();
    let server = TestServer::start_with(&["--no-turn", "--config", config.to_str().unwrap()]);
    let common = [
        "--url",
        server.ws_url.as_str(),
        "--clients",
        "2",
        "--duration",
        "3s",
        "--ramp",
        "max",
        "--matches",
        "off",
        "--json",
    ];

    let with_secret: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--token-secret", SECRET])
        .collect();
    let run = bot(&with_secret);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["clients_connected"], 2, "{report:#}");
    assert_eq!(report["clients_without_snapshots"], 0, "{report:#}");
    // The secret never shows in what the bot prints.
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));

    let run = bot(&common);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["clients_connected"], 0, "{report:#}");
    assert!(
        report["errors"]["by_kind"]["join_refused:auth_required"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report:#}"
    );
    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
