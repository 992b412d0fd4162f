//! Server CPU per peer under relay-room load. Run with `scripts/bench-load`
//! (it builds the release binary first, then runs
//! `cargo bench -p rtcrelay-relay --bench load`); prints a markdown table for
//! docs/benchmarks.md.
//!
//! For each peer count N it starts the release `rtcrelay serve` (a separate
//! process, so that its CPU time can be read from `/proc/<pid>/stat`),
//! connects N lightweight str0m clients (full ICE, not lite; one UDP socket
//! each on 127.0.0.1) through signaling (WebSocket `join`, `offer`, `answer`)
//! into relay rooms of 4, and waits for every client's `ready`. Then every
//! client sends a 24-byte message on `realtime` at 60 Hz; the relay forwards
//! each to the 3 other members, so each client receives 180 messages/s.
//! After a warm-up the benchmark measures, over a fixed window:
//!
//! - the server's CPU seconds (utime + stime) per wall second = cores used;
//! - messages relayed per second, from the server's `/metrics`;
//! - CPU µs per relayed message;
//! - the delivery ratio: messages the clients received / 3 × messages sent;
//! - the clients' own CPU (this process), which shares the machine.
//!
//! The server binary: `$RTCRELAY_BIN`, else `$CARGO_TARGET_DIR/release/rtcrelay`,
//! else `target/release/rtcrelay` of this workspace. `cargo build --release
//! --bin rtcrelay` must have run (`scripts/bench-load` does it).
//!
//! Peer counts: the numbers given as arguments (`scripts/bench-load -- 100
//! 400`), else `LOAD_PEERS` (`100,200,300`), else 100, 200, 300. Each must be
//! a multiple of 4. `LOAD_WINDOW_SECS` (default 10) sets the window,
//! `LOAD_CLIENT_THREADS` (default 1) the client runtime's worker threads.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

const ROOM_SIZE: usize = 4;
const SEND_HZ: u32 = 60;
const PAYLOAD_BYTES: usize = 24;
/// The relayed frame: 6-byte header + payload.
const RELAYED_FRAME_BYTES: usize = 6 + PAYLOAD_BYTES;
const DEFAULT_PEERS: &[usize] = &[100, 200, 300];
const WARMUP: Duration = Duration::from_secs(3);
const DEFAULT_WINDOW_SECS: u64 = 10;
/// Joins in flight at once during setup.
const CONCURRENT_JOINS: usize = 16;
/// One client's join (WebSocket, welcome, offer, answer).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// All N clients ready.
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    bin: PathBuf,
    peers: Vec<usize>,
    window: Duration,
    client_threads: usize,
    clk_tck: f64,
    clk_tck_assumed: bool,
}

fn settings() -> Result<Settings, String> {
    // cargo bench passes `--bench`; anything else starting with `-` is ignored too.
    let mut peers = Vec::new();
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        peers.push(
            arg.parse::<usize>()
                .map_err(|_| format!("peer count {arg:?} is not a number"))?,
        );
    }
    if peers.is_empty() {
        if let Ok(list) = std::env::var("LOAD_PEERS") {
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                peers.push(
                    p.parse()
                        .map_err(|_| format!("LOAD_PEERS: {p:?} is not a number"))?,
                );
            }
        }
    }
    if peers.is_empty() {
        peers = DEFAULT_PEERS.to_vec();
    }
    if let Some(bad) = peers.iter().find(|&&n| n == 0 || n % ROOM_SIZE != 0) {
        return Err(format!(
            "peer count {bad} must be a positive multiple of {ROOM_SIZE}"
        ));
    }
    let window = Duration::from_secs(env_number("LOAD_WINDOW_SECS", DEFAULT_WINDOW_SECS)?.max(1));
    let client_threads = env_number("LOAD_CLIENT_THREADS", 1)?.max(1) as usize;
    let bin = match std::env::var_os("RTCRELAY_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
                });
            target.join("release").join("rtcrelay")
        }
    };
    if !bin.is_file() {
        return Err(format!(
            "no server binary at {}: run `cargo build --release --bin rtcrelay` first \
             (scripts/bench-load does), or set RTCRELAY_BIN",
            bin.display()
        ));
    }
    let (clk_tck, clk_tck_assumed) = clock_ticks();
    Ok(Settings {
        bin,
        peers,
        window,
        client_threads,
        clk_tck,
        clk_tck_assumed,
    })
}

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Clock ticks per second for /proc's utime and stime: `getconf CLK_TCK`,
/// else 100 (Linux's USER_HZ on every common architecture).
fn clock_ticks() -> (f64, bool) {
    let got = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0);
    match got {
        Some(t) => (t, false),
        None => (100.0, true),
    }
}

/// (utime, stime) of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields after the last ')' start with field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state.
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: no field {}", i + 3))
    };
    Ok((field(11)?, field(12)?))
}

/// A running `rtcrelay serve`, killed on drop.
struct Server {
    child: Child,
    pid: String,
    http: SocketAddr,
    ws_url: String,
}

impl Server {
    fn start(bin: &PathBuf) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
                "--no-turn",
            ])
            .env(
                "RTCRELAY_LOG",
                std::env::var("RTCRELAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().to_string();
        let stdout = child.stdout.take();
        // From here on, a failure drops `server`, which kills the child.
        let mut server = Server {
            child,
            pid,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_url: String::new(),
        };
        let Some(stdout) = stdout else {
            return Err("no stdout pipe from the server".into());
        };
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the addresses, so the server never
                // blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let mut ws_url = None;
        let mut relay = None;
        while ws_url.is_none() || relay.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the server did not print its addresses within {SERVER_START_TIMEOUT:?}"
                    ))
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().map(|s| s.to_string());
                    return Err(format!(
                        "the server exited before printing its addresses ({})",
                        status.unwrap_or_else(|e| e.to_string())
                    ));
                }
            };
            if let Some(url) = line.strip_prefix("signaling: ") {
                ws_url = Some(url.trim().to_owned());
            } else if let Some(addr) = line.strip_prefix("relay: udp://") {
                relay = Some(addr.trim().to_owned());
            }
        }
        let ws_url = ws_url.unwrap_or_default();
        let http = ws_url
            .strip_prefix("ws://")
            .and_then(|r| r.strip_suffix("/ws"))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("cannot read the HTTP address from {ws_url:?}"))?;
        server.http = http;
        server.ws_url = ws_url;
        eprintln!(
            "server pid {} signaling {} relay udp://{}",
            server.pid,
            server.ws_url,
            relay.unwrap_or_default()
        );
        Ok(server)
    }

    fn cpu_ticks(&self) -> Result<(u64, u64), String> {
        cpu_ticks(&self.pid)
    }

    fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the server exited: {status}")),
            Err(e) => Err(format!("cannot check the server process: {e}")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` over a fresh connection.
async fn fetch_metrics(http: SocketAddr) -> Result<String, String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(http).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, fetch)
        .await
        .map_err(|_| "GET /metrics timed out".to_string())?
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("GET /metrics: malformed response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET /metrics: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_owned())
}

/// One sample's value (absent = 0), e.g.
/// `rtcrelay_relay_messages_relayed_total{channel="realtime"}`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sum of every sample of a family, whatever its labels.
fn family_sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const RELAYED_REALTIME: &str = "rtcrelay_relay_messages_relayed_total{channel=\"realtime\"}";
const MESSAGES_DROPPED: &str = "rtcrelay_relay_messages_dropped_total";
const DATAGRAMS_DROPPED: &str = "rtcrelay_relay_datagrams_dropped_total";
const DATAGRAMS_IN: &str = "rtcrelay_relay_datagrams_in_total";
const DATAGRAMS_OUT: &str = "rtcrelay_relay_datagrams_out_total";

/// Counters all clients share.
#[derive(Default)]
struct Counters {
    /// Clients that got the server's `ready`.
    ready: AtomicU64,
    /// Clients that failed (join error, session closed, ...).
    failed: AtomicU64,
    /// Realtime messages written (accepted by the client's SCTP stack).
    sent: AtomicU64,
    /// Realtime writes refused by the client (buffer full).
    send_refused: AtomicU64,
    /// Relayed realtime frames received.
    received: AtomicU64,
    /// Frames that were not what the benchmark sent.
    unexpected: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Setup,
    Send,
    Stop,
}

/// A joined client with its session answered, before ICE.
struct Joined {
    ws: Ws,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

fn realtime_config() -> ChannelConfig {
    ChannelConfig {
        label: "realtime".into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..Default::default()
    }
}

fn control_config() -> ChannelConfig {
    ChannelConfig {
        label: "control".into(),
        ..Default::default()
    }
}

/// The next signaling message as JSON, skipping pings and non-text frames.
async fn next_json(ws: &mut Ws) -> Result<serde_json::Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| format!("the server sent invalid JSON: {e}"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("the server closed the WebSocket: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
            None => return Err("the WebSocket ended".into()),
        }
    }
}

fn type_of(v: &serde_json::Value) -> &str {
    v.get("type").and_then(|t| t.as_str()).unwrap_or("")
}

/// Waits for a message of type `want`, skipping the ones a relay room
/// sends meanwhile; an `error` fails.
async fn expect(ws: &mut Ws, want: &str) -> Result<serde_json::Value, String> {
    loop {
        let v = next_json(ws).await?;
        match type_of(&v) {
            t if t == want => return Ok(v),
            "error" => return Err(format!("waiting for {want:?}, got error {v}")),
            "peer_joined" | "peer_left" | "candidate" | "pong" => continue,
            other => return Err(format!("waiting for {want:?}, got {other:?}: {v}")),
        }
    }
}

async fn send_json(ws: &mut Ws, v: serde_json::Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// join → welcome → offer → answer, and the answer applied.
async fn join(ws_url: &str, room: &str, name: &str) -> Result<Joined, String> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind UDP: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| format!("WebSocket connect {ws_url}: {e}"))?;
    send_json(
        &mut ws,
        serde_json::json!({"type":"join","version":1,"room":room,"kind":"relay","name":name}),
    )
    .await?;
    expect(&mut ws, "welcome").await?;

    let mut rtc = RtcConfig::new().build(Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    api.add_channel_with_config(realtime_config());
    api.add_channel_with_config(control_config());
    let (offer, pending) = api
        .apply()
        .ok_or("str0m produced no offer for two channels")?;
    send_json(
        &mut ws,
        serde_json::json!({"type":"offer","sdp":offer.to_sdp_string()}),
    )
    .await?;
    let answer = expect(&mut ws, "answer").await?;
    let sdp = answer
        .get("sdp")
        .and_then(|s| s.as_str())
        .ok_or("answer without sdp")?;
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("accept answer: {e}"))?;
    Ok(Joined {
        ws,
        rtc,
        socket,
        local,
    })
}

/// Runs one client until `Phase::Stop` or a failure: feeds its `Rtc`,
/// follows signaling, and sends at `SEND_HZ` during `Phase::Send`.
async fn drive(
    joined: Joined,
    counters: Arc<Counters>,
    mut phase: watch::Receiver<Phase>,
    offset: Duration,
) -> Result<(), String> {
    let Joined {
        mut ws,
        mut rtc,
        socket,
        local,
    } = joined;
    let period = Duration::from_secs(1) / SEND_HZ;
    let mut buf = vec![0u8; 4096];
    let mut channels: HashMap<ChannelId, String> = HashMap::new();
    let mut realtime: Option<ChannelId> = None;
    let mut next_send: Option<Instant> = None;
    let mut payload = [0u8; PAYLOAD_BYTES];
    let mut seq: u64 = 0;
    loop {
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses the datagram, like a network would.
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Event(e)) => match e {
                    Event::ChannelOpen(id, label) => {
                        if label == "realtime" {
                            realtime = Some(id);
                        }
                        channels.insert(id, label);
                    }
                    Event::ChannelData(d) => {
                        if Some(d.id) == realtime {
                            if d.data.len() == RELAYED_FRAME_BYTES && d.data[0] == 0x01 {
                                counters.received.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counters.unexpected.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            counters.unexpected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Event::Closed => return Err("the WebRTC session closed".into()),
                    _ => {}
                },
                Err(e) => return Err(format!("str0m: {e}")),
            }
        };
        if !rtc.is_alive() {
            return Err("the WebRTC session died".into());
        }
        let wake = next_send.map_or(deadline, |s| s.min(deadline));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    if let Ok(r) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let Some(at) = next_send.filter(|at| now >= *at) {
                    if let Some(id) = realtime {
                        seq += 1;
                        payload[..8].copy_from_slice(&seq.to_be_bytes());
                        match rtc.channel(id).map(|mut c| c.write(true, &payload)) {
                            Some(Ok(true)) => counters.sent.fetch_add(1, Ordering::Relaxed),
                            _ => counters.send_refused.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    // Keep the schedule, but never burst to catch up after
                    // the client fell behind.
                    let mut next = at + period;
                    if next < now {
                        next = now + period;
                    }
                    next_send = Some(next);
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str())
                        .map_err(|e| format!("the server sent invalid JSON: {e}"))?;
                    match type_of(&v) {
                        "ready" => {
                            counters.ready.fetch_add(1, Ordering::Relaxed);
                        }
                        "error" => return Err(format!("signaling error: {v}")),
                        "peer_left" | "peer_joined" | "candidate" | "pong" => {}
                        other => return Err(format!("unexpected signaling message {other:?}: {v}")),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("the server closed the WebSocket: {frame:?}"))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
                None => return Err("the WebSocket ended".into()),
            },
            changed = phase.changed() => {
                let now_phase = match changed {
                    Ok(()) => *phase.borrow_and_update(),
                    Err(_) => Phase::Stop,
                };
                match now_phase {
                    Phase::Setup => {}
                    Phase::Send => {
                        // Should the client's own ChannelOpen lag the
                        // server's `ready`, sends wait for it.
                        next_send = Some(Instant::now() + offset);
                    }
                    Phase::Stop => {
                        let _ = rtc.close();
                        // Best effort: the close_notify.
                        while let Ok(Output::Transmit(t)) = rtc.poll_output() {
                            let _ = socket.send_to(&t.contents, t.destination).await;
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

struct Row {
    peers: usize,
    window: Duration,
    server_cpu: f64,
    /// Of `server_cpu`, the kernel's share (stime).
    server_sys: f64,
    client_cpu: f64,
    relayed: f64,
    sent: u64,
    received: u64,
    send_refused: u64,
    unexpected: u64,
    messages_dropped: f64,
    datagrams_dropped: f64,
    datagrams_in: f64,
    datagrams_out: f64,
}

impl Row {
    fn secs(&self) -> f64 {
        self.window.as_secs_f64()
    }
}

async fn measure(settings: &Settings, peers: usize) -> Result<Row, String> {
    let mut server = Server::start(&settings.bin)?;
    let counters = Arc::new(Counters::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let joins = Arc::new(Semaphore::new(CONCURRENT_JOINS));
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let period = Duration::from_secs(1) / SEND_HZ;
    let mut tasks = Vec::with_capacity(peers);
    for i in 0..peers {
        let ws_url = server.ws_url.clone();
        let counters = counters.clone();
        let phase = phase_rx.clone();
        let joins = joins.clone();
        let fail = fail_tx.clone();
        // Spread the clients' send times over one period.
        let offset = period * (i as u32) / (peers as u32);
        tasks.push(tokio::spawn(async move {
            let room = format!("load-{}", i / ROOM_SIZE);
            let name = format!("c{i}");
            let joined = {
                let Ok(_permit) = joins.acquire().await else {
                    return;
                };
                tokio::time::timeout(JOIN_TIMEOUT, join(&ws_url, &room, &name))
                    .await
                    .unwrap_or_else(|_| Err(format!("join timed out after {JOIN_TIMEOUT:?}")))
            };
            let result = match joined {
                Ok(j) => drive(j, counters.clone(), phase, offset).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = fail.send(format!("client {name} in {room}: {e}"));
            }
        }));
    }
    drop(fail_tx);

    let result = run_phases(
        settings,
        peers,
        &mut server,
        &counters,
        &phase_tx,
        &mut fail_rx,
    )
    .await;
    let _ = phase_tx.send(Phase::Stop);
    for t in &tasks {
        if tokio::time::timeout(Duration::from_secs(5), async {
            while !t.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_err()
        {
            t.abort();
        }
    }
    drop(server);
    result
}

async fn run_phases(
    settings: &Settings,
    peers: usize,
    server: &mut Server,
    counters: &Counters,
    phase: &watch::Sender<Phase>,
    failures: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<Row, String> {
    let fail_check = |failures: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        if let Ok(first) = failures.try_recv() {
            let more = counters.failed.load(Ordering::Relaxed).saturating_sub(1);
            return Err(format!("{first} (and {more} more client failures)"));
        }
        Ok(())
    };

    // Setup: every client ready.
    let setup = Instant::now();
    let mut last_report = Instant::now();
    loop {
        fail_check(failures)?;
        server.check_running()?;
        let ready = counters.ready.load(Ordering::Relaxed) as usize;
        if ready == peers {
            break;
        }
        if setup.elapsed() > SETUP_TIMEOUT {
            return Err(format!(
                "only {ready} of {peers} clients ready after {SETUP_TIMEOUT:?}"
            ));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {ready}/{peers} ready");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "N={peers}: all ready in {:.1} s; sending, warm-up {WARMUP:?}",
        setup.elapsed().as_secs_f64()
    );

    let _ = phase.send(Phase::Send);
    tokio::time::sleep(WARMUP).await;
    fail_check(failures)?;

    let m0 = fetch_metrics(server.http).await?;
    let start = Instant::now();
    let s0 = server.cpu_ticks()?;
    let c0 = cpu_ticks("self")?;
    let sent0 = counters.sent.load(Ordering::Relaxed);
    let recv0 = counters.received.load(Ordering::Relaxed);
    let refused0 = counters.send_refused.load(Ordering::Relaxed);
    let unexpected0 = counters.unexpected.load(Ordering::Relaxed);

    tokio::time::sleep(settings.window).await;

    let s1 = server.cpu_ticks()?;
    let c1 = cpu_ticks("self")?;
    let wall = start.elapsed();
    let sent1 = counters.sent.load(Ordering::Relaxed);
    let recv1 = counters.received.load(Ordering::Relaxed);
    let refused1 = counters.send_refused.load(Ordering::Relaxed);
    let unexpected1 = counters.unexpected.load(Ordering::Relaxed);
    let m1 = fetch_metrics(server.http).await?;
    fail_check(failures)?;
    server.check_running()?;

    let ticks = settings.clk_tck;
    Ok(Row {
        peers,
        window: wall,
        server_cpu: (s1.0 + s1.1).saturating_sub(s0.0 + s0.1) as f64 / ticks,
        server_sys: s1.1.saturating_sub(s0.1) as f64 / ticks,
        client_cpu: (c1.0 + c1.1).saturating_sub(c0.0 + c0.1) as f64 / ticks,
        relayed: sample(&m1, RELAYED_REALTIME) - sample(&m0, RELAYED_REALTIME),
        sent: sent1 - sent0,
        received: recv1 - recv0,
        send_refused: refused1 - refused0,
        unexpected: unexpected1 - unexpected0,
        messages_dropped: family_sum(&m1, MESSAGES_DROPPED) - family_sum(&m0, MESSAGES_DROPPED),
        datagrams_dropped: family_sum(&m1, DATAGRAMS_DROPPED) - family_sum(&m0, DATAGRAMS_DROPPED),
        datagrams_in: sample(&m1, DATAGRAMS_IN) - sample(&m0, DATAGRAMS_IN),
        datagrams_out: sample(&m1, DATAGRAMS_OUT) - sample(&m0, DATAGRAMS_OUT),
    })
}

fn run() -> Result<(), String> {
    let settings = settings()?;
    eprintln!(
        "server {}; N = {:?}; rooms of {ROOM_SIZE}; {PAYLOAD_BYTES}-byte realtime messages at \
         {SEND_HZ} Hz per client; window {:?}; {} client thread(s); CLK_TCK {}{}",
        settings.bin.display(),
        settings.peers,
        settings.window,
        settings.client_threads,
        settings.clk_tck,
        if settings.clk_tck_assumed {
            " (assumed: getconf CLK_TCK failed)"
        } else {
            ""
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rows = Vec::new();
    for &n in &settings.peers {
        match runtime.block_on(measure(&settings, n)) {
            Ok(row) => {
                eprintln!(
                    "N={n}: server {:.2} cores, {:.0} relayed msg/s",
                    row.server_cpu / row.secs(),
                    row.relayed / row.secs()
                );
                rows.push(row);
            }
            Err(e) => {
                eprintln!("N={n}: FAILED: {e}");
                print_table(&rows);
                return Err(format!("N={n} failed: {e}"));
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| N | server cores (of which kernel) | µs CPU per relayed message | delivery ratio | relayed msg/s | \
         sent msg/s (target) | server UDP datagrams/s in / out | client cores | \
         server drops (msgs / datagrams) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let secs = r.secs();
        let per_msg = if r.relayed > 0.0 {
            format!("{:.1}", r.server_cpu * 1e6 / r.relayed)
        } else {
            "-".into()
        };
        let expected = r.sent * (ROOM_SIZE as u64 - 1);
        let ratio = if expected > 0 {
            format!("{:.4}", r.received as f64 / expected as f64)
        } else {
            "-".into()
        };
        let target = r.peers as u64 * u64::from(SEND_HZ);
        let mut drops = format!("{:.0} / {:.0}", r.messages_dropped, r.datagrams_dropped);
        if r.send_refused > 0 || r.unexpected > 0 {
            drops.push_str(&format!(
                "; client: {} refused, {} unexpected",
                r.send_refused, r.unexpected
            ));
        }
        println!(
            "| {} | {:.2} ({:.2}) | {} | {} | {:.0} | {:.0} ({target}) | {:.0} / {:.0} | {:.2} | {} |",
            r.peers,
            r.server_cpu / secs,
            r.server_sys / secs,
            per_msg,
            ratio,
            r.relayed / secs,
            r.sent as f64 / secs,
            r.datagrams_in / secs,
            r.datagrams_out / secs,
            r.client_cpu / secs,
            drops
        );
    }
}
