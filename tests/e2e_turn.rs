//! The bundled TURN server against an independent implementation: coturn's
//! own client (`turnutils_uclient`) relays through the real binary to
//! coturn's echo peer (`turnutils_peer`), with static and REST (`-W`)
//! credentials; wrong and expired credentials fail; the peer policy refuses
//! loopback by default and the server's own listener always. Plus the
//! credentials signaling hands out in `welcome`, `rtcrelay turn` on its own,
//! and a SIGHUP secret rotation.
//!
//! Needs Debian's `coturn` package (`scripts/test` installs it through
//! `scripts/test-deps`). Without it these tests fail, saying so: they never
//! skip silently.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawWs, TestServer};
use rtcrelay_turn::credentials::{rest_password, rest_username, system_unix_time};

const SECRET: &str = "e2e-secret-0123456789abcdef";
/// Static user and REST secret, loopback peers allowed (turnutils_peer runs
/// on 127.0.0.1); the TURN listener itself stays denied whatever this says.
const CONFIG: &str = r#"
[turn.auth]
secrets = ["e2e-secret-0123456789abcdef"]
users = { alice = "password" }
[turn.peers]
allow_loopback = true
"#;

/// A coturn tool from PATH, or a failure telling how to get it.
fn coturn_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} not found in PATH: these tests run coturn's TURN client against ours. \
             Run scripts/test (it installs Debian's coturn package through scripts/test-deps), \
             or `apt-get install coturn`."
        )
    })
}

/// A config file in a fresh temporary directory (removed on drop).
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rtcrelay-e2e-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("c{n}.toml"));
        std::fs::write(&path, text).unwrap();
        ConfigFile { path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// coturn's UDP echo peer on a free loopback port; killed on drop.
struct EchoPeer {
    child: Child,
    port: u16,
}

impl EchoPeer {
    fn start() -> EchoPeer {
        let bin = coturn_tool("turnutils_peer");
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(&bin)
                .args(["-p", &port.to_string(), "-L", "127.0.0.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn turnutils_peer");
            let mut peer = EchoPeer { child, port };
            if peer.echoes() {
                return peer;
            }
            // The port was taken in between, or the peer died: try another.
            let _ = peer.child.kill();
        }
        panic!("turnutils_peer did not start echoing");
    }

    fn echoes(&mut self) -> bool {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let _ = probe.send_to(b"ping", ("127.0.0.1", self.port));
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                if &buf[..n] == b"ping" {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `turnutils_uclient` run did.
#[derive(Debug)]
struct Run {
    success: bool,
    output: String,
    sent: u64,
    received: u64,
    lost_percent: f64,
}

impl Run {
    fn assert_echoed(&self, what: &str) {
        assert!(
            self.success,
            "{what}: turnutils_uclient failed:\n{}",
            self.output
        );
        assert!(
            self.sent > 0 && self.received > 0,
            "{what}: nothing echoed through the relay:\n{}",
            self.output
        );
        assert!(
            self.lost_percent <= 10.0,
            "{what}: {}% lost on loopback:\n{}",
            self.lost_percent,
            self.output
        );
    }

    fn assert_refused(&self, what: &str, expect: &str) {
        assert!(
            !self.success,
            "{what}: turnutils_uclient succeeded:\n{}",
            self.output
        );
        assert!(
            self.received == 0,
            "{what}: messages were echoed:\n{}",
            self.output
        );
        assert!(
            self.output.contains(expect),
            "{what}: expected {expect:?} in:\n{}",
            self.output
        );
    }
}

/// Runs `turnutils_uclient` (UDP, no RTCP allocation, 20 messages) against
/// `turn` relaying to `127.0.0.1:peer_port`, with `auth` arguments.
fn uclient(turn: SocketAddr, peer_port: u16, auth: &[&str]) -> Run {
    uclient_with(turn, peer_port, &[], auth)
}

/// [`uclient`] with more arguments (`-t`: TURN over TCP).
fn uclient_with(turn: SocketAddr, peer_port: u16, extra: &[&str], auth: &[&str]) -> Run {
    let bin = coturn_tool("turnutils_uclient");
    let mut child = Command::new(bin)
        .args(["-c", "-n", "20", "-l", "100", "-z", "5"])
        .args(extra)
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-p", &turn.port().to_string()])
        .args(auth)
        .arg(turn.ip().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnutils_uclient");
    // Read both pipes on threads so a chatty client never blocks.
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            BufReader::new(r)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!("{}\n{}", out.join().unwrap(), err.join().unwrap());
    let field = |name: &str| -> u64 {
        output
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(name)? + name.len()..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .next_back()
            .unwrap_or(0)
    };
    let lost_percent = output
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("Total lost packets")?..];
            let open = rest.find('(')?;
            rest[open + 1..].split('%').next()?.trim().parse().ok()
        })
        .next_back()
        .unwrap_or(100.0);
    Run {
        success: status.is_some_and(|s| s.success()),
        sent: field("tot_send_msgs="),
        received: field("tot_recv_msgs="),
        lost_percent,
        output: match status {
            None => format!("(killed after 60 s)\n{output}"),
            Some(_) => output,
        },
    }
}

fn serve(config: &ConfigFile) -> TestServer {
    TestServer::start_with(&["--config", config.arg()])
}

#[test]
fn coturn_client_relays_with_static_and_rest_credentials() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let peer = EchoPeer::start();
    let turn = server.turn_addr();

    uclient(turn, peer.port, &["-u", "alice", "-w", "password"]).assert_echoed("static user alice");
    // coturn mints `expiry:bob` with base64(HMAC-SHA1(secret, username)).
    uclient(turn, peer.port, &["-W", SECRET, "-u", "bob"]).assert_echoed("REST secret (-W)");
    uclient(turn, peer.port, &["-W", SECRET]).assert_echoed("REST secret, no user id");

    let to_peer = server
        .metric("rtcrelay_turn_relayed_packets_total{protocol=\"udp\",direction=\"to_peer\"}");
    let from_peer = server
        .metric("rtcrelay_turn_relayed_packets_total{protocol=\"udp\",direction=\"from_peer\"}");
    assert!(
        to_peer >= 30.0 && from_peer >= 30.0,
        "{to_peer} {from_peer}"
    );
    assert!(
        server.metric("rtcrelay_turn_relayed_bytes_total{protocol=\"udp\",direction=\"to_peer\"}")
            >= 3000.0
    );
    assert!(server.metric("rtcrelay_turn_allocations_created_total{protocol=\"udp\"}") >= 3.0);
    assert!(server.metric("rtcrelay_turn_allocations{protocol=\"udp\"}") >= 1.0);
    let (_, body) = server.get("/metrics");
    assert!(!body.contains("alice") && !body.contains("bob"), "{body}");
}

/// The same client over TURN-over-TCP (`-t`), against the TCP listener
/// `rtcrelay serve` runs next to the UDP one.
#[test]
fn coturn_client_relays_over_tcp_and_is_refused_with_a_wrong_secret() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let peer = EchoPeer::start();
    let tcp = server.turn_addr_of("turn", "tcp");

    uclient_with(tcp, peer.port, &["-t"], &["-u", "alice", "-w", "password"])
        .assert_echoed("TCP, static user alice");
    uclient_with(tcp, peer.port, &["-t"], &["-W", SECRET, "-u", "bob"])
        .assert_echoed("TCP, REST secret (-W)");
    uclient_with(
        tcp,
        peer.port,
        &["-t"],
        &["-W", "not-the-secret", "-u", "bob"],
    )
    .assert_refused("TCP, wrong secret", "error 400");

    let to_peer = server
        .metric("rtcrelay_turn_relayed_packets_total{protocol=\"tcp\",direction=\"to_peer\"}");
    let from_peer = server
        .metric("rtcrelay_turn_relayed_packets_total{protocol=\"tcp\",direction=\"from_peer\"}");
    assert!(
        to_peer >= 30.0 && from_peer >= 30.0,
        "{to_peer} {from_peer}"
    );
    assert!(server.metric("rtcrelay_turn_allocations_created_total{protocol=\"tcp\"}") >= 2.0);
    assert_eq!(
        server
            .metric("rtcrelay_turn_relayed_packets_total{protocol=\"udp\",direction=\"to_peer\"}"),
        0.0,
        "nothing went over UDP"
    );
    assert!(
        server.metric("rtcrelay_turn_connections_closed_total{protocol=\"tcp\",reason=\"client\"}")
            >= 3.0
    );
}

#[test]
fn coturn_client_is_refused_with_a_wrong_secret_an_expired_username_or_a_wrong_password() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let peer = EchoPeer::start();
    let turn = server.turn_addr();

    uclient(turn, peer.port, &["-W", "not-the-secret", "-u", "bob"])
        .assert_refused("wrong secret", "error 400");

    // Minted correctly, but its expiry has passed.
    let expired = rest_username(system_unix_time() - 60, Some("bob"));
    let password = rest_password(SECRET, &expired);
    uclient(turn, peer.port, &["-u", &expired, "-w", &password])
        .assert_refused("expired REST username", "error 400");
    // The same with an expiry ahead works (the helpers match coturn's).
    let fresh = rest_username(system_unix_time() + 600, Some("bob"));
    let password = rest_password(SECRET, &fresh);
    uclient(turn, peer.port, &["-u", &fresh, "-w", &password]).assert_echoed("fresh REST username");

    uclient(turn, peer.port, &["-u", "alice", "-w", "wrong"])
        .assert_refused("wrong static password", "error 400");
    uclient(turn, peer.port, &["-u", "mallory", "-w", "password"])
        .assert_refused("unknown user", "error 400");

    assert!(server.metric("rtcrelay_turn_auth_failures_total{reason=\"bad_password\"}") >= 2.0);
    assert!(server.metric("rtcrelay_turn_auth_failures_total{reason=\"expired\"}") >= 1.0);
    assert!(server.metric("rtcrelay_turn_auth_failures_total{reason=\"unknown_user\"}") >= 1.0);
}

#[test]
fn relaying_to_loopback_is_refused_by_default_and_to_the_listener_always() {
    // Defaults: loopback peers denied.
    let strict = ConfigFile::new("[turn.auth]\nusers = { alice = \"password\" }\n");
    let server = serve(&strict);
    let peer = EchoPeer::start();
    uclient(
        server.turn_addr(),
        peer.port,
        &["-u", "alice", "-w", "password"],
    )
    .assert_refused("loopback peer with the default policy", "403");
    assert!(
        server.metric(
            "rtcrelay_turn_peers_denied_total{protocol=\"udp\",direction=\"request\",reason=\"loopback\"}"
        ) >= 1.0
    );
    drop(server);

    // Loopback allowed, but the TURN listener itself is never a peer.
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let turn = server.turn_addr();
    uclient(turn, turn.port(), &["-u", "alice", "-w", "password"])
        .assert_refused("the TURN listener as peer", "403");
    assert!(
        server.metric(
            "rtcrelay_turn_peers_denied_total{protocol=\"udp\",direction=\"request\",reason=\"own_address\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn welcome_carries_short_lived_turn_credentials_for_each_peer() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let mut ws = RawWs::connect(&server).await;
    let welcome = ws.join("turn-creds", None).await;
    let peer_id = welcome["peer_id"].as_u64().unwrap();
    let servers = welcome["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{welcome}");
    let ice = &servers[0];
    assert_eq!(ice["urls"], serde_json::json!(server.turn), "{welcome}");
    assert!(
        server.turn[0].starts_with("turn:127.0.0.1:") && server.turn[0].ends_with("?transport=udp")
    );
    let username = ice["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').expect("expiry:peer");
    assert_eq!(user, peer_id.to_string());
    let expiry: u64 = expiry.parse().unwrap();
    let now = system_unix_time();
    // turn.auth.credential_lifetime defaults to 1 h.
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(ice["credential"], rest_password(SECRET, username));

    // A second client gets its own username.
    let mut ws2 = RawWs::connect(&server).await;
    let welcome2 = ws2.join("turn-creds", None).await;
    let user2 = welcome2["ice_servers"][0]["username"].as_str().unwrap();
    assert!(
        user2.ends_with(&format!(":{}", welcome2["peer_id"])),
        "{welcome2}"
    );
    assert_ne!(user2, username);

    // And those credentials work with coturn's client.
    let peer = EchoPeer::start();
    let password = ice["credential"].as_str().unwrap().to_owned();
    uclient(
        server.turn_addr(),
        peer.port,
        &["-u", username, "-w", &password],
    )
    .assert_echoed("credentials from welcome");
}

#[tokio::test]
async fn without_turn_welcome_hands_out_only_the_configured_servers() {
    let config = ConfigFile::new(
        "[signaling]\nice_servers = [{ urls = [\"stun:stun.example.org:3478\"] }]\n",
    );
    let server = TestServer::start_with(&["--config", config.arg(), "--no-turn"]);
    assert!(server.turn.is_empty());
    let mut ws = RawWs::connect(&server).await;
    let welcome = ws.join("no-turn", None).await;
    assert_eq!(
        welcome["ice_servers"],
        serde_json::json!([{ "urls": ["stun:stun.example.org:3478"] }])
    );
    let (_, body) = server.get("/metrics");
    assert!(!body.contains("rtcrelay_turn_"), "{body}");

    // With TURN on (generated secret), ours come first, then the configured.
    let server = TestServer::start_with(&["--config", config.arg()]);
    let mut ws = RawWs::connect(&server).await;
    let welcome = ws.join("with-turn", None).await;
    let servers = welcome["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{welcome}");
    assert_eq!(servers[0]["urls"], serde_json::json!(server.turn));
    assert_eq!(servers[1]["urls"][0], "stun:stun.example.org:3478");
}

/// `rtcrelay turn` on its own: the line it prints, a relay through it, and
/// its refusal to start when nobody could authenticate.
#[test]
fn turn_subcommand_runs_the_turn_server_alone() {
    let bin = env!("CARGO_BIN_EXE_rtcrelay");
    let empty = ConfigFile::new("[turn]\n");
    let out = Command::new(bin)
        .args([
            "turn",
            "--config",
            empty.arg(),
            "--turn-listen-udp",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`turn.auth.secrets`"), "{stderr}");

    let config = ConfigFile::new(CONFIG);
    let mut child = Command::new(bin)
        .args([
            "turn",
            "--config",
            config.arg(),
            "--turn-listen-udp",
            "127.0.0.1:0",
            "--turn-listen-tcp",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("RTCRELAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut turn = None;
    let mut metrics = None;
    while turn.is_none() || metrics.is_none() {
        let line = lines
            .next()
            .expect("rtcrelay turn printed its addresses")
            .unwrap();
        if let Some(url) = line
            .strip_prefix("turn: turn:")
            .filter(|u| u.ends_with("?transport=udp"))
        {
            turn = Some(
                url.split('?')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        } else if let Some(url) = line.strip_prefix("metrics: http://") {
            metrics = Some(
                url.trim_end_matches("/metrics")
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        }
    }
    let peer = EchoPeer::start();
    let run = uclient(turn.unwrap(), peer.port, &["-W", SECRET]);
    let body = http_get(metrics.unwrap(), "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    run.assert_echoed("rtcrelay turn");
    assert!(
        body.contains("rtcrelay_turn_allocations_created_total{protocol=\"udp\"}"),
        "{body}"
    );
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

/// SIGHUP applies a rotated secret without a restart; a broken file is
/// refused and the running secrets stay.
#[test]
fn sighup_reloads_rotated_secrets() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let peer = EchoPeer::start();
    let turn = server.turn_addr();
    uclient(turn, peer.port, &["-W", SECRET]).assert_echoed("before the reload");

    let new_secret = "rotated-secret-0123456789abcdef";
    config.rewrite(&CONFIG.replace(
        &format!("secrets = [\"{SECRET}\"]"),
        &format!("secrets = [\"{new_secret}\"]"),
    ));
    hangup(&server);
    wait_for(|| server.metric("rtcrelay_turn_reloads_total{result=\"ok\"}") >= 1.0);
    uclient(turn, peer.port, &["-W", new_secret]).assert_echoed("the new secret");
    uclient(turn, peer.port, &["-W", SECRET]).assert_refused("the removed secret", "error 400");

    // A broken file: counted, logged, and the running config stays.
    config.rewrite("[turn]\nuser_quota = 0\n");
    hangup(&server);
    wait_for(|| server.metric("rtcrelay_turn_reloads_total{result=\"error\"}") >= 1.0);
    uclient(turn, peer.port, &["-W", new_secret]).assert_echoed("after a refused reload");
}

fn hangup(server: &TestServer) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An Allocate request with no credentials (REQUESTED-TRANSPORT UDP): what
/// a client sends first, and what costs the `turn` crate a nonce.
fn unauthenticated_allocate(n: u32) -> [u8; 28] {
    let mut m = [0u8; 28];
    m[0..2].copy_from_slice(&0x0003u16.to_be_bytes());
    m[2..4].copy_from_slice(&8u16.to_be_bytes());
    m[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    m[8..12].copy_from_slice(&n.to_be_bytes());
    m[16..20].copy_from_slice(&std::process::id().to_be_bytes());
    m[20..22].copy_from_slice(&0x0019u16.to_be_bytes());
    m[22..24].copy_from_slice(&4u16.to_be_bytes());
    m[24] = 17;
    m
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Sends `count` unauthenticated Allocates to `turn` from one socket, paced
/// so the server (not the socket buffer) decides what happens to most of
/// them; returns how many were answered (each answer carries a nonce the
/// server keeps).
fn flood(turn: SocketAddr, first: u32, count: u32) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let reader = socket.try_clone().unwrap();
    let answers = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut n = 0u64;
        while reader.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    for n in first..first + count {
        let _ = socket.send_to(&unauthenticated_allocate(n), turn);
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    answers.join().unwrap()
}

/// The `turn` crate keeps a nonce for an hour for every unauthenticated
/// request it answers; the server's budgets must keep that flat: one source
/// flooding gets its budget of answers (10/s after a burst of 100), the rest
/// is dropped and counted, and the process does not grow.
#[test]
fn an_unauthenticated_flood_leaves_memory_flat_and_is_counted() {
    let config = ConfigFile::new(CONFIG);
    let server = serve(&config);
    let turn = server.turn_addr();
    // Warm up: let allocator arenas and the source table reach their size.
    flood(turn, 0, 2_000);
    let before = rss_kib(server.pid());
    const FLOOD: u32 = 100_000;
    let started = Instant::now();
    let answered = flood(turn, 2_000, FLOOD);
    let elapsed = started.elapsed().as_secs_f64();
    let after = rss_kib(server.pid());
    let dropped = server.metric(
        "rtcrelay_turn_requests_dropped_total{protocol=\"udp\",reason=\"unauthenticated_per_ip\"}",
    );
    assert!(
        answered as f64 <= 10.0 * elapsed + 1.0,
        "{answered} nonces issued to one flooding source in {elapsed:.1} s (10/s after the \
         warm-up spent the burst)"
    );
    assert!(
        dropped >= f64::from(FLOOD) * 0.5,
        "{dropped} of {FLOOD} flood requests counted as dropped"
    );
    let growth = after.saturating_sub(before);
    assert!(
        growth < 1024,
        "RSS grew by {growth} KiB during a flood of {FLOOD} unauthenticated requests \
         ({before} -> {after} KiB)"
    );
}
