//! `rtcrelay turn probe` against the real binary's TURN server (`rtcrelay
//! turn` on free loopback ports, UDP, TCP and TLS): a probe that passes with
//! REST and static credentials (JSON and human output), and probes that fail
//! at the step they should, with the exit code, the step's name and a hint:
//! a wrong secret (`allocate`), the default peer policy (`permission`), a
//! closed port (`allocate`, within `--timeout`), an untrusted certificate
//! (`connect`). Usage errors exit 2.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "probe-secret-0123456789abcdef";
/// The probe's echo peer is on loopback: allow it.
const CONFIG: &str = r#"
[turn.auth]
secrets = ["probe-secret-0123456789abcdef"]
users = { alice = "password" }
[turn.peers]
allow_loopback = true
"#;
/// The default peer policy (loopback denied).
const STRICT: &str = r#"
[turn.auth]
secrets = ["probe-secret-0123456789abcdef"]
"#;

/// A self-signed test certificate for `turn.test` and 127.0.0.1 (EC P-256,
/// valid until 2126, CA:FALSE), and its key. Test use only.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBwDCCAWWgAwIBAgIUXr65nilcVEkWT2PiGStevYL+aLMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdHVybi50ZXN0MCAXDTI2MTEyMjA1NDM1NVoYDzIxMjYxMDI5
MDU0MzU1WjAUMRIwEAYDVQQDDAl0dXJuLnRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQYj6nm4gLxkYmVzpfnASz5tAtwfeh/ENg65XNGCFsw7q3oauWa3J6z
PELyvihUzdxqmxBRIwBI0WTebFi4U6M8o4GSMIGPMB0GA1UdDgQWBBREMPn5cP+j
yI3wC2pxd3ab91IkuzAfBgNVHSMEGDAWgBREMPn5cP+jyI3wC2pxd3ab91IkuzAa
BgNVHREEEzARggl0dXJuLnRlc3SHBH8AAAEwDAYDVR0TAQH/BAIwADAOBgNVHQ8B
Af8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSQAwRgIh
AKZ7cvM41b3eEx8g21ZLF3I8VadqSQoHlV0sh998YGVVAiEAw/xcpWm8YtK2ucP2
FIPpyNmMbgYzng33vU/xP82SC/c=
-----END CERTIFICATE-----
";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgx49/dZf/MDok5cB9
q8eoOIokWMRFk7T96YtyCRkrT3KhRANCAAQYj6nm4gLxkYmVzpfnASz5tAtwfeh/
ENg65XNGCFsw7q3oauWa3J6zPELyvihUzdxqmxBRIwBI0WTebFi4U6M8
-----END PRIVATE KEY-----
";

const BIN: &str = env!("CARGO_BIN_EXE_rtcrelay");

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rtcrelay-e2e-probe-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rtcrelay turn` on free loopback ports; killed on drop.
struct Turn {
    child: Child,
    dir: TempDir,
    /// `HOST:PORT` of each listener.
    udp: String,
    tcp: String,
    tls: String,
}

impl Turn {
    fn start(config: &str) -> Turn {
        let dir = TempDir::new();
        let config = dir.file("config.toml", config);
        let cert = dir.file("cert.pem", CERT_PEM);
        let key = dir.file("key.pem", KEY_PEM);
        let mut child = Command::new(BIN)
            .args(["turn", "--config", &config])
            .args(["--turn-listen-udp", "127.0.0.1:0"])
            .args(["--turn-listen-tcp", "127.0.0.1:0"])
            .args(["--turn-listen-tls", "127.0.0.1:0"])
            .args(["--turn-tls-cert", &cert, "--turn-tls-key", &key])
            .env("RTCRELAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rtcrelay turn");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut udp, mut tcp, mut tls) = (None, None, None);
        while udp.is_none() || tcp.is_none() || tls.is_none() {
            let line = lines
                .next()
                .expect("rtcrelay turn printed its URLs")
                .unwrap();
            let Some(url) = line.strip_prefix("turn: ") else {
                continue;
            };
            let host_port = |rest: &str| rest.split('?').next().unwrap().to_owned();
            if let Some(rest) = url.strip_prefix("turns:") {
                tls = Some(host_port(rest));
            } else if let Some(rest) = url.strip_prefix("turn:") {
                if url.ends_with("?transport=udp") {
                    udp = Some(host_port(rest));
                } else {
                    tcp = Some(host_port(rest));
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Turn {
            child,
            dir,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
            tls: tls.unwrap(),
        }
    }

    fn udp_url(&self) -> String {
        format!("turn:{}", self.udp)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `rtcrelay turn probe` run did.
#[derive(Debug)]
struct Probe {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Probe {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    fn assert_ok(&self) -> &Probe {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// Exit 1, the failure line naming `step`, and a hint.
    fn assert_failed_at(&self, step: &str) -> &Probe {
        assert_eq!(self.code, Some(1), "{self:#?}");
        let prefix = format!("probe failed at step {step}: ");
        assert!(self.stderr.starts_with(&prefix), "{self:#?}");
        assert!(self.stderr.contains("\nhint: "), "{self:#?}");
        self
    }
}

/// Runs `rtcrelay turn probe ARGS` (killed after 60 s).
fn probe(args: &[&str]) -> Probe {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["turn", "probe"])
        .args(args)
        .env_remove("RTCRELAY_PROBE_SECRET")
        .env_remove("RTCRELAY_PROBE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rtcrelay turn probe");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = started + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Probe {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    }
}

/// The names of the completed steps in a JSON report or failure.
fn step_names(json: &Value) -> Vec<String> {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks a passing JSON report of `count` packets of `size` bytes.
fn assert_echoed(json: &Value, count: u64, size: u64) {
    assert_eq!(json["ok"], true, "{json:#}");
    let echo = &json["echo"];
    assert_eq!(echo["sent"], count, "{json:#}");
    assert_eq!(echo["received"], count, "loopback loses nothing: {json:#}");
    assert_eq!(echo["loss_percent"], 0.0, "{json:#}");
    assert_eq!(echo["duplicates"], 0, "{json:#}");
    assert_eq!(echo["size"], size, "{json:#}");
    let rtt = &echo["rtt_ms"];
    let (p50, p99) = (rtt["p50"].as_f64().unwrap(), rtt["p99"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{json:#}");
    assert!(rtt["max"].as_f64().unwrap() >= p99, "{json:#}");
    let relay: SocketAddr = json["relay"].as_str().unwrap().parse().unwrap();
    assert!(relay.ip().is_loopback() && relay.port() != 0, "{json:#}");
    let mapped: SocketAddr = json["mapped"].as_str().unwrap().parse().unwrap();
    assert_eq!(json["local"].as_str().unwrap(), mapped.to_string());
    assert_eq!(json["realm"], "rtcrelay");
    assert!(json["allocation_ms"].as_f64().unwrap() > 0.0);
    assert!(
        json["refreshed_lifetime_s"].as_u64().unwrap() > 0,
        "{json:#}"
    );
    // The crate relays through the bound channel once it is ready.
    assert!(json["channel_data_sent"].as_u64().unwrap() > 0, "{json:#}");
    assert_eq!(json["ignored_from_server"], 0, "{json:#}");
}

#[test]
fn probe_passes_over_udp_with_a_secret_and_with_a_static_user() {
    let turn = Turn::start(CONFIG);
    let url = turn.udp_url();
    let common = ["--count", "40", "--rate", "200/s", "--json"];

    let run = probe(&[&[url.as_str(), "--secret", SECRET][..], &common].concat());
    let json = run.assert_ok().json();
    assert_echoed(&json, 40, 100);
    assert_eq!(
        step_names(&json),
        [
            "resolve",
            "allocate",
            "peer",
            "permission",
            "channel bind",
            "echo",
            "refresh",
            "close"
        ]
    );
    assert!(
        json["username"].as_str().unwrap().ends_with(":probe"),
        "{json:#}"
    );
    assert_eq!(json["transport"], "udp");
    assert_eq!(json["server"].as_str().unwrap(), turn.udp);
    assert_eq!(json["throughput"], Value::Null);

    // A REST user id, another size, and the throughput phase.
    let run = probe(
        &[
            &[url.as_str(), "--secret", SECRET, "--user", "noc"][..],
            &["--size", "1200", "--throughput", "300ms"],
            &common,
        ]
        .concat(),
    );
    let json = run.assert_ok().json();
    assert_echoed(&json, 40, 1200);
    assert!(json["username"].as_str().unwrap().ends_with(":noc"));
    let throughput = &json["throughput"];
    assert!(throughput["received"].as_u64().unwrap() > 0, "{json:#}");
    assert!(throughput["received_kbit_per_s"].as_f64().unwrap() > 0.0);
    assert!(step_names(&json).contains(&"throughput".to_owned()));

    // A static user.
    let run = probe(
        &[
            &[url.as_str(), "--user", "alice", "--password", "password"][..],
            &common,
        ]
        .concat(),
    );
    let json = run.assert_ok().json();
    assert_echoed(&json, 40, 100);
    assert_eq!(json["username"], "alice");

    // The human report.
    let run = probe(&[&url, "--secret", SECRET, "--count", "10", "--rate", "200"]);
    run.assert_ok();
    for expect in [
        format!("TURN probe of turn:{}?transport=udp: OK", turn.udp),
        "  relay         127.0.0.1:".into(),
        "  channel bind".into(),
        "sent 10, received 10, loss 0.0 %".into(),
        "rtt min ".into(),
    ] {
        assert!(
            run.stdout.contains(&expect),
            "{expect:?} in\n{}",
            run.stdout
        );
    }
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(!run.stdout.contains(SECRET));
}

#[test]
fn probe_passes_over_tcp_and_tls() {
    let turn = Turn::start(CONFIG);
    let common = [
        "--secret", SECRET, "--count", "30", "--rate", "200", "--json",
    ];

    let tcp = format!("turn:{}?transport=tcp", turn.tcp);
    let json = probe(&[&[tcp.as_str()][..], &common].concat())
        .assert_ok()
        .json();
    assert_echoed(&json, 30, 100);
    assert_eq!(json["transport"], "tcp");
    assert_eq!(step_names(&json)[..3], ["resolve", "connect", "allocate"]);

    // The certificate is valid for 127.0.0.1 and turn.test.
    let tls = format!("turns:{}", turn.tls);
    let ca = turn.dir.file("ca.pem", CERT_PEM);
    let json = probe(&[&[tls.as_str(), "--ca", &ca][..], &common].concat())
        .assert_ok()
        .json();
    assert_echoed(&json, 30, 100);
    assert_eq!(json["transport"], "tls");
    let with_name = [tls.as_str(), "--ca", &ca, "--tls-name", "turn.test"];
    probe(&[&with_name[..], &common].concat()).assert_ok();
    probe(&[&[tls.as_str(), "--insecure"][..], &common].concat()).assert_ok();

    // Not trusted (system roots), or the wrong name: refused at connect.
    let run = probe(&[&[tls.as_str()][..], &common].concat());
    run.assert_failed_at("connect");
    assert!(run.stderr.contains("--ca FILE"), "{run:#?}");
    assert_eq!(run.json()["step"], "connect");
    let wrong_name = [tls.as_str(), "--ca", &ca, "--tls-name", "other.test"];
    probe(&[&wrong_name[..], &common].concat()).assert_failed_at("connect");
    // Plain TCP to the TLS port, TLS to the TCP port.
    let tls_as_tcp = format!("turn:{}?transport=tcp", turn.tls);
    probe(&[&[tls_as_tcp.as_str(), "--timeout", "2s"][..], &common].concat())
        .assert_failed_at("allocate");
    let tcp_as_tls = format!("turns:{}", turn.tcp);
    probe(&[&[tcp_as_tls.as_str(), "--insecure"][..], &common].concat())
        .assert_failed_at("connect");
}

#[test]
fn a_wrong_secret_or_password_fails_at_allocate() {
    let turn = Turn::start(CONFIG);
    let url = turn.udp_url();
    let run = probe(&[&url, "--secret", "not-the-secret", "--count", "5"]);
    run.assert_failed_at("allocate");
    assert!(run.stderr.contains("turn.auth.secrets"), "{run:#?}");
    assert!(run.stdout.is_empty());

    let run = probe(&[
        &url,
        "--user",
        "alice",
        "--password",
        "wrong",
        "--count",
        "5",
        "--json",
    ]);
    run.assert_failed_at("allocate");
    let json = run.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["step"], "allocate");
    assert!(json["hint"].as_str().unwrap().contains("credentials"));
    assert_eq!(step_names(&json), ["resolve"]);
}

#[test]
fn the_default_peer_policy_fails_at_permission_with_the_hint() {
    let turn = Turn::start(STRICT);
    let run = probe(&[&turn.udp_url(), "--secret", SECRET, "--count", "5"]);
    run.assert_failed_at("permission");
    for expect in [
        "403",
        "hint: the server's peer policy denies 127.0.0.1",
        "[turn.peers]",
        "completed: resolve ",
    ] {
        assert!(run.stderr.contains(expect), "{expect:?} in {run:#?}");
    }
    let run = probe(&[&turn.udp_url(), "--secret", SECRET, "--json"]);
    let json = run.json();
    assert_eq!(json["step"], "permission");
    assert_eq!(step_names(&json), ["resolve", "allocate", "peer"]);
}

#[test]
fn a_closed_port_fails_at_allocate_within_the_timeout() {
    let port = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let url = format!("turn:127.0.0.1:{port}");
    let run = probe(&[&url, "--secret", SECRET, "--timeout", "1s"]);
    run.assert_failed_at("allocate");
    assert!(run.stderr.contains("timed out"), "{run:#?}");
    assert!(run.took < Duration::from_secs(5), "{run:#?}");

    // TCP: refused at connect.
    let url = format!("turn:127.0.0.1:{port}?transport=tcp");
    probe(&[&url, "--secret", SECRET, "--timeout", "1s"]).assert_failed_at("connect");
}

#[test]
fn usage_errors_exit_2() {
    let cases: [(&[&str], &str); 8] = [
        (&["turn://127.0.0.1", "--secret", "s"], "no \"//\""),
        (&["turn:127.0.0.1:99999", "--secret", "s"], "65535"),
        (&["turn:127.0.0.1"], "--secret"),
        (
            &[
                "turn:127.0.0.1",
                "--secret",
                "s",
                "--user",
                "u",
                "--password",
                "p",
            ],
            "cannot be used with",
        ),
        (&["turn:127.0.0.1", "--password", "p"], "--user"),
        (
            &["turn:127.0.0.1", "--secret", "s", "--size", "5"],
            "--size",
        ),
        (
            &["turn:127.0.0.1", "--secret", "s", "--rate", "fast"],
            "--rate",
        ),
        (
            &[
                "turns:127.0.0.1",
                "--secret",
                "s",
                "--ca",
                "/nonexistent/ca.pem",
            ],
            "--ca",
        ),
    ];
    for (args, expect) in cases {
        let run = probe(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(expect),
            "{args:?}: {expect:?} in {run:#?}"
        );
    }
    // `rtcrelay turn` flags do not mix with the probe.
    let out = Command::new(BIN)
        .args(["turn", "--turn-listen-udp", "127.0.0.1:0", "probe"])
        .args(["turn:127.0.0.1", "--secret", "s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
