//! `rtcrelay impair`, end to end: the real binary between a UDP echo server
//! and a client, on real loopback sockets. Loss through the proxy matches
//! the configured rate within a binomial tolerance, the delay shows in the
//! round trip, the JSON report's counters match what the client saw, a
//! scenario's blackout lands where scheduled, any datagram size passes, the
//! client cap refuses and idle clients expire, and bad flags or configs exit
//! 2 naming the flag or field.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A UDP echo server on a thread: sends every datagram back to its sender.
struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let socket = udp_bind();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = socket.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&buf[..len], from);
                    }
                }
            })
        };
        EchoServer {
            addr,
            stop,
            received,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running `rtcrelay impair`, killed on drop.
struct Proxy {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The address it listens on, from its first line.
    addr: SocketAddr,
    /// Its first line.
    banner: String,
}

fn start_proxy(forward: SocketAddr, extra: &[&str]) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args(["impair", "--listen", "127.0.0.1:0", "--forward"])
        .arg(forward.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rtcrelay impair");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    if stdout.read_line(&mut banner).unwrap_or(0) == 0 {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("rtcrelay impair did not start: {err}");
    }
    // impair: listening on ADDR, forwarding to ADDR, profile ..., seed N
    let addr = banner
        .strip_prefix("impair: listening on ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {banner:?}"));
    assert!(
        banner.contains(&format!("forwarding to {forward}")) && banner.contains(", seed "),
        "{banner}"
    );
    Proxy {
        child,
        stdout,
        addr,
        banner,
    }
}

impl Proxy {
    /// SIGTERM, then the exit status must be 0; returns stdout after the
    /// first line and stderr.
    fn stop(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "exit {status:?}; stderr: {err}");
        (out, err)
    }

    /// Stops the proxy (it ran with `--json`) and parses its report.
    fn stop_json(self) -> Value {
        let (out, err) = self.stop();
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {out:?}; stderr: {err}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client saw: round-trip times by sequence number.
struct Exchange {
    sent: u32,
    sent_at: Vec<Duration>,
    rtt: HashMap<u32, Duration>,
    duplicates: u32,
}

/// Sends `n` numbered 32-byte datagrams to `to`, one per `interval`, and
/// collects the echoes until none came for `quiet` after the last send.
fn exchange(to: SocketAddr, n: u32, interval: Duration, quiet: Duration) -> Exchange {
    let socket = udp_bind();
    socket.connect(to).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let t0 = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().unwrap();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut rtt = HashMap::new();
            let mut duplicates = 0;
            let mut buf = [0u8; 64];
            let mut last = Instant::now();
            loop {
                match socket.recv(&mut buf) {
                    Ok(12..) => {
                        let now = Instant::now();
                        last = now;
                        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                        let nanos = u64::from_be_bytes(buf[4..12].try_into().unwrap());
                        let rtt_now = now - t0 - Duration::from_nanos(nanos);
                        if rtt.insert(seq, rtt_now).is_some() {
                            duplicates += 1;
                        }
                    }
                    _ => {
                        if done.load(Ordering::Acquire) && last.elapsed() >= quiet {
                            return (rtt, duplicates);
                        }
                    }
                }
            }
        })
    };
    let mut sent_at = Vec::with_capacity(n as usize);
    for seq in 0..n {
        let due = interval * seq;
        let elapsed = t0.elapsed();
        if elapsed < due {
            thread::sleep(due - elapsed);
        }
        let at = t0.elapsed();
        let mut packet = [0u8; 32];
        packet[..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..12].copy_from_slice(&(at.as_nanos() as u64).to_be_bytes());
        socket.send(&packet).expect("send to the proxy");
        sent_at.push(at);
    }
    // The receiver waits `quiet` from its last echo, and at least from now.
    thread::sleep(quiet);
    done.store(true, Ordering::Release);
    let (rtt, duplicates) = receiver.join().unwrap();
    Exchange {
        sent: n,
        sent_at,
        rtt,
        duplicates,
    }
}

fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report lacks {pointer}: {report}"))
}

/// The proxy's counters agree with the echo server's and the client's:
/// nothing was lost outside the model, and every missing echo is a drop
/// the report counts.
fn assert_report_matches(report: &Value, ex: &Exchange, echo: &EchoServer) {
    let n = u64::from(ex.sent);
    let received = ex.rtt.len() as u64;
    let echoed = echo.received();
    assert_eq!(
        count(report, "/up/packets_in"),
        n,
        "the proxy saw every datagram sent: {report}"
    );
    assert_eq!(
        count(report, "/up/forwarded"),
        echoed,
        "the echo server got what the proxy forwarded: {report}"
    );
    assert_eq!(
        count(report, "/down/packets_in"),
        echoed,
        "the proxy got every echo: {report}"
    );
    assert_eq!(
        count(report, "/down/forwarded"),
        received,
        "the client got what the proxy sent back: {report}"
    );
    assert_eq!(
        n - received,
        count(report, "/up/dropped_total") + count(report, "/down/dropped_total"),
        "missing echoes = drops counted: {report}"
    );
    for dir in ["up", "down"] {
        assert_eq!(count(report, &format!("/{dir}/send_errors")), 0);
        assert_eq!(count(report, &format!("/{dir}/discarded")), 0);
        assert_eq!(count(report, &format!("/{dir}/dropped/overload")), 0);
    }
    assert_eq!(ex.duplicates, 0);
}

/// |observed - expected| within 4 binomial standard errors.
fn assert_loss_near(missing: u64, n: u64, expected: f64) {
    let observed = missing as f64 / n as f64;
    let sigma = (expected * (1.0 - expected) / n as f64).sqrt();
    assert!(
        (observed - expected).abs() <= 4.0 * sigma,
        "loss {:.2} % vs {:.2} % expected (4 sigma = {:.2} points)",
        observed * 100.0,
        expected * 100.0,
        400.0 * sigma
    );
}

#[test]
fn random_loss_both_ways_within_tolerance_and_counted() {
    let echo = EchoServer::start();
    let proxy = start_proxy(echo.addr, &["--loss", "10", "--seed", "7", "--json"]);
    assert!(
        proxy.banner.contains("loss 10% (both directions), seed 7"),
        "{}",
        proxy.banner
    );
    let ex = exchange(
        proxy.addr,
        5000,
        Duration::from_micros(300),
        Duration::from_millis(300),
    );
    let report = proxy.stop_json();
    assert_eq!(report["seed"], 7);
    assert_eq!(count(&report, "/clients/total"), 1);
    assert_report_matches(&report, &ex, &echo);
    // Lost one way or the other: 1 - 0.9^2.
    let missing = u64::from(ex.sent) - ex.rtt.len() as u64;
    assert_loss_near(missing, u64::from(ex.sent), 1.0 - 0.9 * 0.9);
    for dir in ["up", "down"] {
        assert_eq!(
            count(&report, &format!("/{dir}/dropped/loss")),
            count(&report, &format!("/{dir}/dropped_total")),
            "every drop is the loss model's"
        );
    }
}

#[test]
fn one_way_loss_from_a_config_file() {
    let config = temp_file(
        "up-loss.toml",
        "[up]\nloss = { model = \"random\", p = 0.1 }\n",
    );
    let echo = EchoServer::start();
    let proxy = start_proxy(
        echo.addr,
        &[
            "--config",
            config.to_str().unwrap(),
            "--seed",
            "11",
            "--json",
        ],
    );
    let ex = exchange(
        proxy.addr,
        3000,
        Duration::from_micros(300),
        Duration::from_millis(300),
    );
    let report = proxy.stop_json();
    assert_report_matches(&report, &ex, &echo);
    assert_eq!(count(&report, "/down/dropped_total"), 0, "{report}");
    let missing = u64::from(ex.sent) - ex.rtt.len() as u64;
    assert_loss_near(missing, u64::from(ex.sent), 0.1);
}

#[test]
fn delay_shows_in_the_round_trip_and_nothing_is_lost() {
    let echo = EchoServer::start();
    let proxy = start_proxy(echo.addr, &["--delay", "50", "--seed", "1", "--json"]);
    let ex = exchange(
        proxy.addr,
        500,
        Duration::from_millis(1),
        Duration::from_millis(400),
    );
    let report = proxy.stop_json();
    assert_eq!(ex.rtt.len(), 500, "every datagram came back: {report}");
    assert_report_matches(&report, &ex, &echo);
    // 50 ms each way: a lower bound (the proxy may be late, never early).
    let min = ex.rtt.values().min().unwrap();
    assert!(*min >= Duration::from_millis(100), "min RTT {min:?}");
    for dir in ["up", "down"] {
        let mean = report[dir]["mean_added_delay_ms"].as_f64().unwrap();
        assert!((mean - 50.0).abs() < 0.01, "{dir}: {mean} ms");
    }
}

#[test]
fn a_scenario_blackout_lands_where_scheduled() {
    // The scenario's clock starts at the client's first datagram.
    let config = temp_file(
        "scenario.toml",
        "steps = [\n  { duration = \"500ms\", profile = \"good\" },\n  \
         { duration = \"500ms\", blackout = true },\n]\n",
    );
    let echo = EchoServer::start();
    let proxy = start_proxy(echo.addr, &["--config", config.to_str().unwrap(), "--json"]);
    assert!(
        proxy.banner.contains("(2 steps, then none)"),
        "{}",
        proxy.banner
    );
    let ex = exchange(
        proxy.addr,
        300,
        Duration::from_millis(5),
        Duration::from_millis(300),
    );
    let report = proxy.stop_json();
    assert_report_matches(&report, &ex, &echo);
    let lost = |from_ms: u64, to_ms: u64| {
        let window = Duration::from_millis(from_ms)..Duration::from_millis(to_ms);
        let (mut lost, mut total) = (0, 0);
        for (seq, at) in ex.sent_at.iter().enumerate() {
            if window.contains(at) {
                total += 1;
                if !ex.rtt.contains_key(&(seq as u32)) {
                    lost += 1;
                }
            }
        }
        (lost, total)
    };
    let (early, _) = lost(0, 350);
    let (dark, dark_total) = lost(650, 850);
    let (late, _) = lost(1150, 1500);
    assert_eq!(early, 0, "good profile: nothing lost before the blackout");
    assert_eq!(dark, dark_total, "everything lost in the blackout");
    assert!(dark_total > 0);
    assert_eq!(late, 0, "pass-through after the scenario");
    assert!(count(&report, "/up/dropped/blackout") > 0, "{report}");
    assert_eq!(
        count(&report, "/up/dropped/loss") + count(&report, "/down/dropped/loss"),
        0
    );
}

#[test]
fn any_datagram_size_passes_untouched() {
    let echo = EchoServer::start();
    let proxy = start_proxy(echo.addr, &["--json"]);
    assert!(
        proxy.banner.contains("profile none (pass-through)"),
        "{}",
        proxy.banner
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(proxy.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    for len in [0usize, 1, 1400, 9000, 65_507] {
        let packet: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        socket.send(&packet).unwrap();
        let got = socket.recv(&mut buf).expect("an echo");
        assert_eq!(&buf[..got], &packet[..], "{len} bytes");
    }
    let report = proxy.stop_json();
    assert_eq!(count(&report, "/down/forwarded"), 5);
}

#[test]
fn client_cap_refuses_and_idle_clients_expire() {
    let echo = EchoServer::start();
    let proxy = start_proxy(
        echo.addr,
        &["--max-clients", "1", "--idle-timeout", "300ms", "--json"],
    );
    let client = |name: &str| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(proxy.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        socket.send(name.as_bytes()).unwrap();
        socket
    };
    let mut buf = [0u8; 16];
    let a = client("a");
    assert_eq!(a.recv(&mut buf).ok(), Some(1), "first client forwarded");
    let b = client("b");
    assert!(b.recv(&mut buf).is_err(), "second client refused");
    // a expires after 300 ms of silence; then b gets in.
    thread::sleep(Duration::from_millis(700));
    b.send(b"b").unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(b.recv(&mut buf).ok(), Some(1), "second client forwarded");
    let report = proxy.stop_json();
    assert_eq!(count(&report, "/clients/total"), 2, "{report}");
    assert_eq!(count(&report, "/clients/refused_datagrams"), 1, "{report}");
    assert!(count(&report, "/clients/expired") >= 1, "{report}");
    assert_eq!(count(&report, "/clients/max_concurrent"), 1, "{report}");
}

#[test]
fn prints_a_summary_table_without_json() {
    let echo = EchoServer::start();
    let proxy = start_proxy(echo.addr, &["--profile", "3g", "--seed", "3"]);
    assert!(
        proxy.banner.contains("profile 3g, seed 3"),
        "{}",
        proxy.banner
    );
    let (out, _) = proxy.stop();
    for row in [
        "packets in",
        "dropped: loss",
        "dropped: queue",
        "mean added delay",
    ] {
        assert!(out.contains(row), "{out}");
    }
}

#[test]
fn bad_flags_and_configs_exit_2_naming_the_flag_or_field() {
    let bad_value = temp_file(
        "bad-value.toml",
        "[up]\nloss = { model = \"random\", p = 1.5 }\n",
    );
    let bad_key = temp_file("bad-key.toml", "[down]\nlos = 0.1\n");
    let bad_step = temp_file(
        "bad-step.toml",
        "steps = [{ duration = \"1s\", profile = \"5g\" }]\n",
    );
    let bad_mix = temp_file(
        "bad-mix.toml",
        "delay = { latency = \"10ms\" }\nreorder = { p = 0.5 }\n",
    );
    let cases: [(&[&str], &[&str]); 10] = [
        (&["--loss", "150"], &["--loss"]),
        (&["--rate", "0"], &["--rate"]),
        (&["--delay", "soon"], &["--delay"]),
        (&["--profile", "nosuch"], &["--profile", "nosuch"]),
        (&["--up-only"], &["--up-only"]),
        (&["--config", bad_value.to_str().unwrap()], &["up.loss.p"]),
        (&["--config", bad_key.to_str().unwrap()], &["los"]),
        (
            &["--config", bad_step.to_str().unwrap()],
            &["steps[0].profile"],
        ),
        (
            &["--config", bad_mix.to_str().unwrap(), "--delay", "0"],
            &["reorder.p"],
        ),
        (&["--config", "/nonexistent/impair.toml"], &["--config"]),
    ];
    for (args, names) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
            .args([
                "impair",
                "--listen",
                "127.0.0.1:0",
                "--forward",
                "127.0.0.1:9",
            ])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for name in names {
            assert!(err.contains(name), "{args:?} should name {name}: {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}: nothing started");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args([
            "impair",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "no-port-here",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--forward"));
}

/// A loopback UDP socket with a large receive buffer (as far as
/// `net.core.rmem_max` allows), so that a test thread descheduled for a
/// moment on a busy machine does not lose datagrams outside the model.
fn udp_bind() -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(1 << 20);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket
        .bind(&addr.into())
        .expect("bind a loopback UDP socket");
    socket.into()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rtcrelay-impair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
