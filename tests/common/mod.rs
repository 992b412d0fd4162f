//! Shared by the end-to-end tests: starts the real `rtcrelay` binary on free
//! ports and reads what it prints.
#![allow(dead_code)] // each test file uses a different part of this

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `rtcrelay serve` on free loopback ports (tests parse the printed ones),
/// the bundled TURN server's UDP and TCP listeners included.
pub const SERVE_ON_FREE_PORTS: [&str; 9] = [
    "serve",
    "--http-listen",
    "127.0.0.1:0",
    "--relay-listen",
    "127.0.0.1:0",
    "--turn-listen-udp",
    "127.0.0.1:0",
    "--turn-listen-tcp",
    "127.0.0.1:0",
];

/// A running `rtcrelay serve`, killed on drop.
pub struct TestServer {
    child: Child,
    /// `127.0.0.1:PORT` of the HTTP listener.
    pub http: SocketAddr,
    /// `ws://127.0.0.1:PORT/ws`.
    pub ws_url: String,
    /// The relay's UDP socket.
    pub relay: SocketAddr,
    /// The bundled TURN server's URLs as printed
    /// (`turn:127.0.0.1:PORT?transport=udp`); empty with `--no-turn`.
    pub turn: Vec<String>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts `rtcrelay serve` on free ports with `extra` arguments appended.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let args: Vec<&str> = SERVE_ON_FREE_PORTS.iter().chain(extra).copied().collect();
        Self::start_command(&args, &[])
    }

    /// Starts `rtcrelay` with exactly `args` (which must make it print its
    /// `demo:` and `relay:` lines, like `serve`) and `env` added to its
    /// environment.
    pub fn start_command(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        // RTCRELAY_BIN runs another build, e.g. to compare two versions
        // with the same benchmark.
        let bin = std::env::var_os("RTCRELAY_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_rtcrelay").into());
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RTCRELAY_LOG",
                std::env::var("RTCRELAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rtcrelay");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let mut http = None;
        let mut relay = None;
        let mut turn = Vec::new();
        // `turn:` lines come before the `relay:` line.
        while http.is_none() || relay.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("rtcrelay did not print its addresses");
            if let Some(rest) = line.strip_prefix("demo: http://") {
                http = Some(rest.trim_end_matches('/').parse().expect("http addr"));
            } else if let Some(rest) = line.strip_prefix("relay: udp://") {
                relay = Some(rest.parse().expect("relay addr"));
            } else if let Some(rest) = line.strip_prefix("turn: ") {
                turn.push(rest.to_owned());
            }
        }
        let http: SocketAddr = http.unwrap();
        TestServer {
            child,
            http,
            ws_url: format!("ws://{http}/ws"),
            relay: relay.unwrap(),
            turn,
        }
    }

    /// The address of the first `turn:` URL (`turn:HOST:PORT?...`).
    pub fn turn_addr(&self) -> SocketAddr {
        let url = self.turn.first().expect("the server printed no turn: URL");
        turn_url_addr(url)
    }

    /// The address of the first TURN URL ending in `?transport=TRANSPORT`
    /// with scheme `scheme` (`turn` or `turns`).
    pub fn turn_addr_of(&self, scheme: &str, transport: &str) -> SocketAddr {
        let prefix = format!("{scheme}:");
        let suffix = format!("?transport={transport}");
        let url = self
            .turn
            .iter()
            .find(|u| u.starts_with(&prefix) && u.ends_with(&suffix))
            .unwrap_or_else(|| panic!("no {prefix}...{suffix} URL in {:?}", self.turn));
        turn_url_addr(url)
    }

    /// `GET path` over a fresh connection; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read http response");
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `METHOD path` with `headers` and a `body` over a fresh connection,
    /// with `Host` naming the server's address (`127.0.0.1:PORT`) unless
    /// `headers` has one; returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.http));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        // A server may answer (413, 401) before reading all of a big body.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw);
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {raw:?}"));
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `PUT path` with a JSON body (and `Authorization: Bearer TOKEN` when
    /// given); returns (status, parsed body).
    pub fn put_json(
        &self,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let (status, body) = self.request("PUT", path, &headers, body.as_bytes());
        (status, json_body(&body))
    }

    /// `METHOD path` without a body (and `Authorization: Bearer TOKEN` when
    /// given); returns (status, parsed body).
    pub fn call_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let (status, body) = self.request(method, path, &headers, b"");
        (status, json_body(&body))
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `rtcrelay_relay_datagrams_dropped_total{reason="unknown_source"}`.
    /// Absent samples read as 0.
    pub fn metric(&self, sample: &str) -> f64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics status");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit (after a signal sent some other way).
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait rtcrelay")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait rtcrelay")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    /// Sum of every sample of a metric family, whatever its labels, e.g.
    /// `rtcrelay_relay_datagrams_dropped_total`.
    pub fn metric_sum(&self, family: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A raw signaling WebSocket, for sending what a well-behaved client never would.
pub struct RawWs(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl RawWs {
    pub async fn connect(server: &TestServer) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(&server.ws_url)
            .await
            .expect("websocket connect");
        RawWs(ws)
    }

    /// Connects with a request of the caller's (a URL with a query string,
    /// extra headers such as `Origin`); the handshake's error otherwise.
    pub async fn connect_with<R>(request: R) -> Result<RawWs, tokio_tungstenite::tungstenite::Error>
    where
        R: tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    {
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(RawWs(ws))
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.0
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        use futures_util::SinkExt;
        self.0
            .send(tokio_tungstenite::tungstenite::Message::binary(
                bytes.to_vec(),
            ))
            .await
            .expect("send");
    }

    /// The next frame: `Ok(json)` for a text message, `Err(close code)` when
    /// the server closes.
    pub async fn next(&mut self) -> Result<serde_json::Value, Option<u16>> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.0.next())
                .await
                .expect("timed out waiting for a signaling message");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// The next message, which must be of `type`.
    pub async fn expect(&mut self, ty: &str) -> serde_json::Value {
        let msg = self.next().await.expect("connection closed");
        assert_eq!(msg["type"], ty, "expected {ty}, got {msg}");
        msg
    }

    /// The next message, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> serde_json::Value {
        let msg = self.expect("error").await;
        assert_eq!(msg["code"], code, "wrong error: {msg}");
        msg
    }

    /// Sends a Close frame (1000) and returns the server's reply: `Some(code)`
    /// for a completed closing handshake, `None` for a dropped connection.
    pub async fn close_handshake(&mut self) -> Option<u16> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
        self.0
            .send(tokio_tungstenite::tungstenite::Message::Close(Some(
                CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                },
            )))
            .await
            .expect("send close");
        self.next().await.expect_err("no message after Close")
    }

    pub async fn join(&mut self, room: &str, capacity: Option<usize>) -> serde_json::Value {
        let mut join = serde_json::json!({
            "type": "join", "version": 1, "room": room, "kind": "relay", "name": "raw",
        });
        if let Some(c) = capacity {
            join["capacity"] = c.into();
        }
        self.send_text(&join.to_string()).await;
        self.expect("welcome").await
    }
}

/// A response body as JSON (`Null` when it is not JSON).
fn json_body(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// `HOST:PORT` of a `turn:` / `turns:` URL.
fn turn_url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once(':').expect("a TURN URL").1;
    let hostport = rest.split('?').next().unwrap();
    hostport.parse().expect("TURN URL host:port")
}

/// Runs `rtcrelay replay` on a match log and checks that it re-ran every
/// tick to the recorded state hash.
pub fn assert_replays(log: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .arg("replay")
        .arg(log)
        .output()
        .expect("run rtcrelay replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every tick matches"), "{stdout}");
}
