//! Signaling sessions against the real axum router, served in-process, with a
//! mock relay (`SessionHost`) that records calls and lets each test drive the
//! WebRTC session events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtcrelay_protocol::signaling::ChannelParams;
use rtcrelay_protocol::{PeerId, RoomId, RoomKind};
use rtcrelay_relay::{
    SeatEnd, SessionAnswer, SessionError, SessionEvent, SessionHost, SessionRequest,
};
use rtcrelay_signaling::{AppState, SignalingConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Only guards against hangs; no test asserts on elapsed time.
const TIMEOUT: Duration = Duration::from_secs(20);

const ANSWER_SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=application 3480 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n\
    a=mid:0\r\na=sctp-port:5000\r\n";
const SERVER_CANDIDATE: &str = "candidate:1 1 udp 2130706431 127.0.0.1 3480 typ host";
/// An offer containing this is refused with `BadSdp`.
const BAD_OFFER: &str = "this is not sdp";
/// An offer containing this makes `open` wait for `MockRelay::release`.
const HOLD_OFFER: &str = "v=0\r\nx-hold\r\n";
const OFFER: &str = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";

// ---------------------------------------------------------------------------
// The mock relay

#[derive(Debug, Clone)]
struct OpenCall {
    peer: PeerId,
    room: RoomId,
    kind: RoomKind,
    offer_sdp: String,
}

#[derive(Default)]
struct Calls {
    opens: Vec<OpenCall>,
    /// The `events` sender of each peer's latest session.
    events: HashMap<PeerId, mpsc::UnboundedSender<SessionEvent>>,
    candidates: Vec<(PeerId, String)>,
    closes: Vec<PeerId>,
    /// What each close did with the seat.
    seat_ends: Vec<(PeerId, SeatEnd)>,
}

#[derive(Default)]
struct MockRelay {
    calls: Mutex<Calls>,
    /// Lets a held `open` (offer containing `HOLD_OFFER`) return.
    release: Notify,
}

impl MockRelay {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap()
    }

    fn opens_of(&self, peer: PeerId) -> usize {
        self.calls().opens.iter().filter(|o| o.peer == peer).count()
    }

    fn closes(&self) -> Vec<PeerId> {
        self.calls().closes.clone()
    }

    fn seat_ends(&self) -> Vec<(PeerId, SeatEnd)> {
        self.calls().seat_ends.clone()
    }

    fn candidates(&self) -> Vec<(PeerId, String)> {
        self.calls().candidates.clone()
    }

    /// Sends `event` on the events channel of `peer`'s latest session.
    fn emit(&self, peer: PeerId, event: SessionEvent) {
        let tx = self.calls().events.get(&peer).cloned();
        tx.expect("no session opened for this peer")
            .send(event)
            .expect("signaling dropped the session's event receiver");
    }
}

#[async_trait::async_trait]
impl SessionHost for MockRelay {
    async fn open(&self, request: SessionRequest) -> Result<SessionAnswer, SessionError> {
        {
            let mut calls = self.calls();
            calls.opens.push(OpenCall {
                peer: request.peer,
                room: request.room.clone(),
                kind: request.kind,
                offer_sdp: request.offer_sdp.clone(),
            });
            if request.offer_sdp.contains(BAD_OFFER) {
                return Err(SessionError::BadSdp("no application section".into()));
            }
            calls.events.insert(request.peer, request.events);
        }
        if request.offer_sdp.contains(HOLD_OFFER) {
            self.release.notified().await;
        }
        Ok(SessionAnswer {
            sdp: ANSWER_SDP.into(),
            candidates: vec![SERVER_CANDIDATE.into()],
        })
    }

    async fn add_remote_candidate(
        &self,
        peer: PeerId,
        candidate: String,
    ) -> Result<(), SessionError> {
        self.calls().candidates.push((peer, candidate));
        Ok(())
    }

    async fn close(&self, peer: PeerId, _room: &RoomId, seat: SeatEnd) {
        let mut calls = self.calls();
        calls.closes.push(peer);
        calls.seat_ends.push((peer, seat));
    }
}

// ---------------------------------------------------------------------------
// The server and clients

/// The default config, with seats released at once (no resume).
fn base_config() -> SignalingConfig {
    let mut config = SignalingConfig::default();
    config.resume.rules.default.grace = Duration::ZERO;
    config
}

struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    relay: Arc<MockRelay>,
}

impl Server {
    /// Without resume (grace 0): these flows test what happens to a member
    /// whose connection ends for good; tests/e2e_resume.rs covers resume.
    async fn start() -> Server {
        Self::start_with(base_config()).await
    }

    async fn start_with(config: SignalingConfig) -> Server {
        let relay = Arc::new(MockRelay::default());
        let registry = prometheus_client::registry::Registry::with_prefix("rtcrelay");
        let state = AppState::new(config, relay.clone(), registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = rtcrelay_signaling::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { addr, state, relay }
    }

    async fn connect(&self) -> Ws {
        Ws::connect(self.addr, None).await
    }

    /// `GET /metrics`, one sample by its full name (labels included); an
    /// absent sample reads as `None`.
    async fn metric(&self, sample: &str) -> Option<f64> {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        tokio::time::timeout(TIMEOUT, s.read_to_string(&mut raw))
            .await
            .expect("timed out reading /metrics")
            .unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "/metrics: {raw}");
        raw.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    async fn room_gauges(&self) -> (f64, f64) {
        let rooms = self.metric("rtcrelay_signaling_rooms").await;
        let members = self.metric("rtcrelay_signaling_room_members").await;
        (
            rooms.expect("rooms gauge missing"),
            members.expect("room_members gauge missing"),
        )
    }
}

/// Polls `cond` until it holds; panics after `TIMEOUT`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// A Close frame with this code.
    Close(Option<u16>),
    /// The connection ended without a Close frame.
    Dropped,
}

struct Ws {
    ws: WebSocketStream<TcpStream>,
    peer: Option<PeerId>,
    /// `peer_left` messages about this peer are skipped (and counted), for
    /// a departure whose moment the test does not control.
    skip_left_of: Option<PeerId>,
    skipped: usize,
}

impl Ws {
    /// `recv_buffer`: a small kernel receive buffer for a client that is not
    /// going to read, so that the server's writes block sooner.
    async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> Ws {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        // No size limits: the slow-client test sends itself a huge message.
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/ws"),
            stream,
            Some(config),
        )
        .await
        .expect("websocket handshake");
        Ws {
            ws,
            peer: None,
            skip_left_of: None,
            skipped: 0,
        }
    }

    fn peer(&self) -> PeerId {
        self.peer.expect("not joined")
    }

    fn id(&self) -> u32 {
        self.peer().0
    }

    async fn send(&mut self, msg: Value) {
        tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(msg.to_string())))
            .await
            .expect("timed out sending")
            .expect("send");
    }

    /// The next text message, or how the connection ended.
    async fn next(&mut self) -> Result<Value, End> {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a signaling message");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let msg: Value = serde_json::from_str(&t).expect("server sent JSON");
                    if let Some(skip) = self.skip_left_of {
                        if msg["type"] == "peer_left" && msg["peer_id"] == skip.0 {
                            assert_eq!(msg["reason"], "left", "{msg}");
                            self.skipped += 1;
                            continue;
                        }
                    }
                    return Ok(msg);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(End::Close(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(End::Dropped),
            }
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        let msg = self.next().await.expect("connection closed");
        assert_eq!(msg["type"], ty, "expected {ty}, got {msg}");
        msg
    }

    async fn expect_error(&mut self, code: &str) -> Value {
        let msg = self.expect("error").await;
        assert_eq!(msg["code"], code, "wrong error: {msg}");
        assert_eq!(msg["fatal"], false, "{msg}");
        msg
    }

    /// Reads until the end of the connection, skipping messages.
    async fn end(&mut self) -> End {
        loop {
            if let Err(end) = self.next().await {
                return end;
            }
        }
    }

    async fn join(&mut self, room: &str, name: &str) -> Value {
        self.join_kind(room, "relay", name).await
    }

    async fn join_kind(&mut self, room: &str, kind: &str, name: &str) -> Value {
        self.send(json!({"type": "join", "version": 1, "room": room, "kind": kind, "name": name}))
            .await;
        let welcome = self.expect("welcome").await;
        let peer = PeerId(welcome["peer_id"].as_u64().unwrap() as u32);
        if let Some(before) = self.peer {
            assert_eq!(before, peer, "one connection, one peer id");
        }
        self.peer = Some(peer);
        welcome
    }

    async fn leave(&mut self) {
        self.send(json!({"type": "leave"})).await;
    }

    /// Sends `ping` and returns what arrived before the `pong`. The session
    /// handles its client's messages in order, so everything the server did
    /// for earlier messages is done once the pong arrives.
    async fn ping(&mut self, id: u32) -> Vec<Value> {
        self.send(json!({"type": "ping", "id": id})).await;
        let mut before = Vec::new();
        loop {
            let msg = self.next().await.expect("connection closed");
            if msg["type"] == "pong" {
                assert_eq!(msg["id"], id);
                return before;
            }
            before.push(msg);
        }
    }

    /// Sends an offer and reads the answer and the trickled candidates.
    async fn offer(&mut self) -> Value {
        self.send(json!({"type": "offer", "sdp": OFFER})).await;
        let answer = self.expect("answer").await;
        assert_eq!(
            self.expect("candidate").await["candidate"],
            SERVER_CANDIDATE
        );
        assert_eq!(self.expect("candidate").await["candidate"], "");
        answer
    }

    async fn expect_peer_left(&mut self, peer: PeerId, reason: &str) {
        let msg = self.expect("peer_left").await;
        assert_eq!(
            msg,
            json!({"type": "peer_left", "peer_id": peer.0, "reason": reason})
        );
    }

    async fn expect_peer_joined(&mut self, peer: PeerId) {
        let msg = self.expect("peer_joined").await;
        assert_eq!(msg["peer_id"], peer.0, "{msg}");
    }

    async fn close(mut self) {
        self.ws.close(None).await.expect("send close");
        assert!(matches!(self.end().await, End::Close(_) | End::Dropped));
    }
}

fn roster_ids(welcome: &Value) -> Vec<u32> {
    welcome["roster"]
        .as_array()
        .expect("roster")
        .iter()
        .map(|m| m["peer_id"].as_u64().unwrap() as u32)
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Offer, answer and candidates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_answer_and_trickled_candidates() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    a.join("r1", "ada").await;

    // Before an offer there is no session to add a candidate to.
    a.send(json!({"type": "candidate", "candidate": "candidate:9 1 udp 1 10.0.0.1 9 typ host"}))
        .await;
    a.expect_error("no_session").await;

    a.send(json!({"type": "offer", "sdp": OFFER})).await;
    let answer = a.expect("answer").await;
    assert_eq!(answer["sdp"], ANSWER_SDP);
    // The server candidate, trickled with the answer's mid, then the end marker.
    assert_eq!(
        a.expect("candidate").await,
        json!({"type": "candidate", "candidate": SERVER_CANDIDATE, "mid": "0"})
    );
    let end = a.expect("candidate").await;
    assert_eq!(end["candidate"], "", "{end}");
    assert!(end.get("mid").is_none() || end["mid"] == "0", "{end}");

    {
        let calls = server.relay.calls();
        assert_eq!(calls.opens.len(), 1);
        let open = &calls.opens[0];
        assert_eq!(open.peer, a.peer());
        assert_eq!(open.room.as_str(), "r1");
        assert_eq!(open.kind, RoomKind::Relay);
        assert_eq!(open.offer_sdp, OFFER);
    }

    let client = "candidate:2 1 udp 2122260223 192.168.1.4 54321 typ host";
    let mdns =
        "candidate:3 1 udp 2122260223 3f2a1c9e-1111-2222-3333-444455556666.local 54321 typ host";
    for candidate in [client, mdns, ""] {
        a.send(json!({"type": "candidate", "candidate": candidate, "mid": "0"}))
            .await;
    }
    let before = a.ping(1).await;
    assert!(before.is_empty(), "candidates are not answered: {before:?}");
    assert_eq!(server.relay.candidates(), [(a.peer(), client.to_owned())]);

    // A second offer for the same membership is refused, and not passed on.
    a.send(json!({"type": "offer", "sdp": OFFER})).await;
    a.expect_error("session_exists").await;
    assert_eq!(server.relay.opens_of(a.peer()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sdp_leaves_no_session() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    a.join("r1", "ada").await;

    a.send(json!({"type": "offer", "sdp": BAD_OFFER})).await;
    let err = a.expect_error("bad_sdp").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no application section"),
        "{err}"
    );
    // No session came of it: a candidate is refused, a new offer is taken.
    a.send(json!({"type": "candidate", "candidate": "candidate:9 1 udp 1 10.0.0.1 9 typ host"}))
        .await;
    a.expect_error("no_session").await;
    a.offer().await;
    assert_eq!(server.relay.opens_of(a.peer()), 2);
    assert!(server.relay.candidates().is_empty());
}

// ---------------------------------------------------------------------------
// 2. Ready

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_event_reaches_the_client_with_its_params() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    a.join("r2", "ada").await;
    a.offer().await;

    // Not the required parameters: signaling passes on what the relay saw.
    let realtime = ChannelParams {
        ordered: false,
        max_retransmits: None,
        max_packet_lifetime_ms: Some(250),
    };
    server.relay.emit(
        a.peer(),
        SessionEvent::Ready {
            realtime,
            control: ChannelParams::CONTROL,
        },
    );
    assert_eq!(
        a.expect("ready").await,
        json!({
            "type": "ready",
            "realtime": {"ordered": false, "max_packet_lifetime_ms": 250},
            "control": {"ordered": true},
        })
    );
}

// ---------------------------------------------------------------------------
// 3. Channel rejected

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_rejected_keeps_the_membership() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.join("r3", "ada").await;
    b.join("r3", "bob").await;
    a.expect_peer_joined(b.peer()).await;
    a.offer().await;

    server.relay.emit(
        a.peer(),
        SessionEvent::ChannelRejected {
            reason: "channel \"chat\" is not a known label".into(),
        },
    );
    let err = a.expect_error("channel_rejected").await;
    assert!(
        err["message"].as_str().unwrap().contains("\"chat\""),
        "{err}"
    );

    // Still in the room: nobody heard of a leave, and a newcomer sees both.
    let room = RoomId::try_from("r3").unwrap();
    assert_eq!(server.state.rooms.members(&room), [a.peer(), b.peer()]);
    let before = b.ping(1).await;
    assert!(before.is_empty(), "b got {before:?}");
    let mut c = server.connect().await;
    let welcome = c.join("r3", "cy").await;
    assert_eq!(roster_ids(&welcome), [a.id(), b.id()]);
    a.expect_peer_joined(c.peer()).await;
    b.expect_peer_joined(c.peer()).await;
    // The relay closed the session itself; signaling must not close it again.
    assert!(server.relay.closes().is_empty());

    // A new offer opens a new session, whose events arrive.
    a.offer().await;
    assert_eq!(server.relay.opens_of(a.peer()), 2);
    server.relay.emit(
        a.peer(),
        SessionEvent::Ready {
            realtime: ChannelParams::REALTIME,
            control: ChannelParams::CONTROL,
        },
    );
    a.expect("ready").await;
    let before = b.ping(2).await;
    assert!(before.is_empty(), "b got {before:?}");
}

// ---------------------------------------------------------------------------
// 4. Session closed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_session_removes_the_peer_from_the_room() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.join("r4", "ada").await;
    b.join("r4", "bob").await;
    a.expect_peer_joined(b.peer()).await;
    a.offer().await;

    server.relay.emit(
        a.peer(),
        SessionEvent::Closed {
            reason: "ICE consent lost".into(),
        },
    );
    a.expect_peer_left(a.peer(), "disconnected").await;
    b.expect_peer_left(a.peer(), "disconnected").await;
    // The session is already gone on the relay side, which kept its seat
    // (for a resume); without resume the seat is given up.
    assert_eq!(server.relay.seat_ends(), [(a.peer(), SeatEnd::Leave)]);

    // The roster shrank.
    let mut c = server.connect().await;
    let welcome = c.join("r4", "cy").await;
    assert_eq!(roster_ids(&welcome), [b.id()]);
    b.expect_peer_joined(c.peer()).await;

    // The WebSocket is still open; the peer is not in a room and may rejoin.
    let before = a.ping(7).await;
    assert!(before.is_empty(), "a got {before:?}");
    a.send(json!({"type": "offer", "sdp": OFFER})).await;
    a.expect_error("not_joined").await;
    let welcome = a.join("r4", "ada").await;
    assert_eq!(roster_ids(&welcome), [b.id(), c.id()]);
    b.expect_peer_joined(a.peer()).await;
    c.expect_peer_joined(a.peer()).await;
    a.offer().await;
    assert_eq!(server.relay.opens_of(a.peer()), 2);
}

// ---------------------------------------------------------------------------
// 5. Leave and WebSocket close

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_closes_the_session_and_tells_the_room() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.leave().await;
    a.expect_error("not_joined").await;

    a.join("r5", "ada").await;
    b.join("r5", "bob").await;
    a.expect_peer_joined(b.peer()).await;
    a.offer().await;

    a.leave().await;
    // The relay is told before the room hears about it.
    b.expect_peer_left(a.peer(), "left").await;
    assert_eq!(server.relay.closes(), [a.peer()]);
    let before = a.ping(1).await;
    assert!(
        before.iter().all(|m| m["type"] == "peer_left"),
        "a got {before:?}"
    );
    let room = RoomId::try_from("r5").unwrap();
    assert_eq!(server.state.rooms.members(&room), [b.peer()]);

    // Without a session, leaving still tells the relay: it may keep a seat
    // for the peer (an authoritative room's player whose session was lost).
    let mut c = server.connect().await;
    c.join("r5", "cy").await;
    b.expect_peer_joined(c.peer()).await;
    c.leave().await;
    b.expect_peer_left(c.peer(), "left").await;
    assert_eq!(server.relay.closes(), [a.peer(), c.peer()]);

    // Closing the WebSocket is a leave.
    let mut d = server.connect().await;
    d.join("r5", "dee").await;
    b.expect_peer_joined(d.peer()).await;
    d.offer().await;
    let d_peer = d.peer();
    d.close().await;
    b.expect_peer_left(d_peer, "left").await;
    assert_eq!(server.relay.closes(), [a.peer(), c.peer(), d_peer]);

    // A connection that just drops, without a closing handshake, was lost
    // (with resume its seat would be kept).
    let mut e = server.connect().await;
    e.join("r5", "eve").await;
    b.expect_peer_joined(e.peer()).await;
    e.offer().await;
    let e_peer = e.peer();
    drop(e);
    b.expect_peer_left(e_peer, "disconnected").await;
    assert_eq!(server.relay.closes(), [a.peer(), c.peer(), d_peer, e_peer]);
    assert_eq!(server.state.rooms.members(&room), [b.peer()]);
}

// ---------------------------------------------------------------------------
// 6. Slow clients

/// One join/leave cycle of `cycler` in `room`, observed by `watcher`, who
/// reads every message so that its own outbox never holds more than one.
async fn cycle(cycler: &mut Ws, watcher: &mut Ws, room: &str) {
    cycler.join(room, "cycler").await;
    watcher.expect_peer_joined(cycler.peer()).await;
    cycler.leave().await;
    watcher.expect_peer_left(cycler.peer(), "left").await;
}

/// The largest send buffer the kernel may give a TCP socket.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// A client that never reads: once the kernel buffers are full the server's
/// write to it blocks, its outbox fills up while others join and leave, and
/// it is disconnected. The others are not affected.
///
/// Before the eviction could wake a session blocked in a socket write, this
/// hung: the session only noticed its dropped outbox once the write
/// completed, i.e. never for a client that stops reading for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_disconnected() {
    let config = SignalingConfig {
        outbound_queue: 4,
        ..base_config()
    };
    let server = Server::start_with(config).await;
    let mut slow = Ws::connect(server.addr, Some(4096)).await;
    let mut watcher = server.connect().await;
    let mut cycler = server.connect().await;
    slow.join("r6", "slow").await;
    watcher.join("r6", "watch").await;
    slow.expect_peer_joined(watcher.peer()).await;
    slow.offer().await;
    // From here on `slow` reads nothing.

    // One message bigger than every kernel buffer on the way: once its first
    // bytes arrive, the session is inside a socket write that cannot complete
    // while the client does not read.
    let reason = "x".repeat(2 * max_send_buffer() + (4 << 20));
    server
        .relay
        .emit(slow.peer(), SessionEvent::ChannelRejected { reason });
    let mut byte = [0u8; 1];
    tokio::time::timeout(TIMEOUT, slow.ws.get_ref().peek(&mut byte))
        .await
        .expect("the big message never started arriving")
        .unwrap();

    // Two messages per cycle: two cycles fill the outbox of four, the third
    // overflows it.
    watcher.skip_left_of = Some(slow.peer());
    cycle(&mut cycler, &mut watcher, "r6").await;
    cycle(&mut cycler, &mut watcher, "r6").await;
    assert_eq!(server.state.metrics.slow_clients.get(), 0);
    cycle(&mut cycler, &mut watcher, "r6").await;
    wait_until("the slow client's eviction", || {
        server.state.metrics.slow_clients.get() > 0
    })
    .await;
    assert_eq!(server.state.metrics.slow_clients.get(), 1);
    assert_eq!(
        server.metric("rtcrelay_signaling_slow_clients_total").await,
        Some(1.0)
    );

    // The others keep working, and hear that the slow client is gone.
    let before = watcher.ping(1).await;
    assert!(before.is_empty(), "watcher got {before:?}");
    watcher.skip_left_of = None;
    if watcher.skipped == 0 {
        watcher.expect_peer_left(slow.peer(), "disconnected").await;
    } else {
        assert_eq!(watcher.skipped, 1);
    }
    cycle(&mut cycler, &mut watcher, "r6").await;
    let room = RoomId::try_from("r6").unwrap();
    assert_eq!(server.state.rooms.members(&room), [watcher.peer()]);
    // The rejection ended the WebRTC session already; its seat (kept by the
    // relay) is given up.
    assert!(server
        .relay
        .seat_ends()
        .contains(&(slow.peer(), SeatEnd::Leave)));

    // The slow client finds its connection closed: a 1008 Close frame if it
    // made it out, else the end of the stream.
    match slow.end().await {
        End::Close(code) => assert_eq!(code, Some(1008)),
        End::Dropped => {}
    }
    assert_eq!(server.state.metrics.slow_clients.get(), 1);
}

/// The outbox also overflows while the session is busy elsewhere (here, in a
/// slow `open`); once free, the session closes the connection with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_overflow_while_busy_closes_with_1008() {
    let config = SignalingConfig {
        outbound_queue: 4,
        ..base_config()
    };
    let server = Server::start_with(config).await;
    let mut busy = server.connect().await;
    let mut watcher = server.connect().await;
    let mut cycler = server.connect().await;
    busy.join("r6b", "busy").await;
    watcher.join("r6b", "watch").await;
    busy.expect_peer_joined(watcher.peer()).await;
    busy.send(json!({"type": "offer", "sdp": HOLD_OFFER})).await;
    wait_until("the held offer", || server.relay.opens_of(busy.peer()) == 1).await;

    // Two events per cycle: the fifth overflows an outbox of four.
    for _ in 0..3 {
        cycle(&mut cycler, &mut watcher, "r6b").await;
    }
    assert_eq!(
        server.state.metrics.slow_clients.get(),
        0,
        "noticed only by the session itself"
    );
    server.relay.release.notify_one();
    assert_eq!(busy.end().await, End::Close(Some(1008)));
    assert_eq!(server.state.metrics.slow_clients.get(), 1);

    // A client too slow to read lost its connection (it did not leave).
    watcher.expect_peer_left(busy.peer(), "disconnected").await;
    assert!(watcher.ping(1).await.is_empty());
    cycle(&mut cycler, &mut watcher, "r6b").await;
    assert!(server.relay.closes().contains(&busy.peer()));
}

// ---------------------------------------------------------------------------
// 7. Room metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_gauges_follow_joins_and_leaves() {
    let server = Server::start().await;
    assert_eq!(server.room_gauges().await, (0.0, 0.0));

    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    a.join("m1", "ada").await;
    assert_eq!(server.room_gauges().await, (1.0, 1.0));
    b.join("m1", "bob").await;
    c.join("m2", "cy").await;
    assert_eq!(server.room_gauges().await, (2.0, 3.0));
    assert_eq!(
        server
            .metric("rtcrelay_signaling_joins_total{kind=\"relay\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        server.metric("rtcrelay_signaling_connections").await,
        Some(3.0)
    );

    // Each way out: leave, session closed, WebSocket closed.
    a.leave().await;
    a.ping(1).await;
    assert_eq!(server.room_gauges().await, (2.0, 2.0));
    c.offer().await;
    server.relay.emit(
        c.peer(),
        SessionEvent::Closed {
            reason: "DTLS closed".into(),
        },
    );
    c.expect_peer_left(c.peer(), "disconnected").await;
    assert_eq!(server.room_gauges().await, (1.0, 1.0));
    // Nothing tells the others when b's session has finished: poll.
    b.close().await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while server.room_gauges().await != (0.0, 0.0) {
        assert!(tokio::time::Instant::now() < deadline, "gauges stuck");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.state.rooms.room_count(), 0);

    // A room can be made again after it went away.
    c.join("m1", "cy").await;
    assert_eq!(server.room_gauges().await, (1.0, 1.0));
    c.leave().await;
    c.ping(2).await;
    assert_eq!(server.room_gauges().await, (0.0, 0.0));
}

// ---------------------------------------------------------------------------
// 8. Peer-to-peer rooms: signal forwarding

/// An SDP-ish payload with the JSON a browser sends: nested objects, numbers,
/// escapes and non-ASCII text must all arrive unchanged.
fn offer_data(n: u32) -> Value {
    json!({
        "description": {"type": "offer", "sdp": format!("v=0\r\no=- {n} 2 IN IP4 127.0.0.1\r\n")},
        "n": n,
        "nested": {"list": [1, 2.5, -3, null, true, "ü\"\\"]},
    })
}

fn signal_from(msg: &Value) -> u32 {
    assert_eq!(msg["type"], "signal", "{msg}");
    msg["from"].as_u64().expect("from") as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_signals_reach_the_named_member_only() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    let welcome = a.join_kind("p1", "p2p", "ada").await;
    assert_eq!(welcome["kind"], "p2p");
    assert_eq!(welcome["capacity"], 4, "relay rooms' default capacity");
    assert_eq!(welcome["ice_servers"], json!([]));

    // The newcomer offers to each member of its roster...
    let welcome = b.join_kind("p1", "p2p", "bob").await;
    assert_eq!(roster_ids(&welcome), [a.id()]);
    b.send(json!({"type": "signal", "to": a.id(), "data": offer_data(1)}))
        .await;
    // ...who heard of it first, then gets the signal with `from` added.
    a.expect_peer_joined(b.peer()).await;
    let got = a.expect("signal").await;
    assert_eq!(
        got,
        json!({"type": "signal", "from": b.id(), "data": offer_data(1)})
    );
    // The answer goes back the same way.
    let answer = json!({"description": {"type": "answer", "sdp": "v=0\r\n"}});
    a.send(json!({"type": "signal", "to": b.id(), "data": answer}))
        .await;
    let got = b.expect("signal").await;
    assert_eq!(signal_from(&got), a.id());
    assert_eq!(got["data"], answer);
    // Candidates, including the end-of-candidates marker, are just data.
    let candidate = json!({"candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}});
    let end = json!({"candidate": null});
    for data in [&candidate, &end] {
        b.send(json!({"type": "signal", "to": a.id(), "data": data}))
            .await;
    }
    for data in [&candidate, &end] {
        let got = a.expect("signal").await;
        assert_eq!(signal_from(&got), b.id());
        assert_eq!(&got["data"], data);
    }

    // A third member offers to both; each gets only its own.
    let welcome = c.join_kind("p1", "p2p", "cy").await;
    assert_eq!(roster_ids(&welcome), [a.id(), b.id()]);
    for (to, n) in [(a.id(), 10), (b.id(), 11)] {
        c.send(json!({"type": "signal", "to": to, "data": offer_data(n)}))
            .await;
    }
    for (ws, n) in [(&mut a, 10), (&mut b, 11)] {
        ws.expect_peer_joined(c.peer()).await;
        let got = ws.expect("signal").await;
        assert_eq!(signal_from(&got), c.id());
        assert_eq!(got["data"], offer_data(n));
    }
    for ws in [&mut a, &mut b, &mut c] {
        let before = ws.ping(1).await;
        assert!(before.is_empty(), "{:?} got {before:?}", ws.peer);
    }

    // Nothing reached the server peer; signals were counted.
    assert!(server.relay.calls().opens.is_empty());
    assert_eq!(server.state.metrics.signals_forwarded.get(), 6);
    assert_eq!(
        server
            .metric("rtcrelay_signaling_signals_forwarded_total")
            .await,
        Some(6.0)
    );
    assert_eq!(
        server
            .metric("rtcrelay_signaling_joins_total{kind=\"p2p\"}")
            .await,
        Some(3.0)
    );

    // Leaving is as in relay rooms, with no WebRTC session to close.
    b.leave().await;
    a.expect_peer_left(b.peer(), "left").await;
    c.expect_peer_left(b.peer(), "left").await;
    let gone = b.id();
    drop(b);
    a.send(json!({"type": "signal", "to": gone, "data": {}}))
        .await;
    a.expect_error("peer_not_found").await;
    assert!(server.relay.closes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_signal_errors_have_their_codes() {
    let server = Server::start().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut other = server.connect().await;

    // Before join.
    a.send(json!({"type": "signal", "to": 1, "data": {}})).await;
    a.expect_error("not_joined").await;

    // In relay and authoritative rooms there is nobody to signal to.
    a.join_kind("pr", "relay", "ada").await;
    b.join_kind("pr", "relay", "bob").await;
    a.expect_peer_joined(b.peer()).await;
    a.send(json!({"type": "signal", "to": b.id(), "data": {}}))
        .await;
    let err = a.expect_error("wrong_room_kind").await;
    assert!(err["message"].as_str().unwrap().contains("p2p"), "{err}");
    b.leave().await;
    a.expect_peer_left(b.peer(), "left").await;
    a.leave().await;
    a.join_kind("pa", "authoritative", "ada").await;
    a.send(json!({"type": "signal", "to": 1, "data": {}})).await;
    a.expect_error("wrong_room_kind").await;
    a.leave().await;
    assert!(b.ping(1).await.is_empty());

    a.join_kind("pp", "p2p", "ada").await;
    b.join_kind("pp", "p2p", "bob").await;
    a.expect_peer_joined(b.peer()).await;
    other.join_kind("pq", "p2p", "eve").await;

    // To yourself, to a member of another room, to nobody.
    for to in [a.id(), other.id(), 4_000_000_000] {
        a.send(json!({"type": "signal", "to": to, "data": {}}))
            .await;
        let err = a.expect_error("peer_not_found").await;
        assert!(err["message"].as_str().unwrap().contains("signal"), "{err}");
    }
    // `data` must be an object; `to` a peer id.
    for bad in [
        json!({"type": "signal", "to": b.id(), "data": "sdp"}),
        json!({"type": "signal", "to": b.id(), "data": [1]}),
        json!({"type": "signal", "to": b.id()}),
        json!({"type": "signal", "to": -1, "data": {}}),
        json!({"type": "signal", "to": b.id().to_string(), "data": {}}),
    ] {
        a.send(bad.clone()).await;
        let err = a.expect_error("invalid_message").await;
        assert!(
            err["message"].as_str().unwrap().starts_with("signal"),
            "{bad}: {err}"
        );
    }
    // A p2p room has no server peer: no offer, no candidate.
    a.send(json!({"type": "offer", "sdp": OFFER})).await;
    let err = a.expect_error("wrong_room_kind").await;
    assert!(err["message"].as_str().unwrap().contains("signal"), "{err}");
    a.send(json!({"type": "candidate", "candidate": "candidate:9 1 udp 1 10.0.0.1 9 typ host"}))
        .await;
    a.expect_error("wrong_room_kind").await;
    assert!(server.relay.calls().opens.is_empty());
    assert!(server.relay.candidates().is_empty());

    // Nothing was forwarded; the room is intact and still works.
    for ws in [&mut b, &mut other] {
        let before = ws.ping(2).await;
        assert!(before.is_empty(), "{:?} got {before:?}", ws.peer);
    }
    assert_eq!(server.state.metrics.signals_forwarded.get(), 0);
    a.send(json!({"type": "signal", "to": b.id(), "data": {"ok": true}}))
        .await;
    assert_eq!(signal_from(&b.expect("signal").await), a.id());
    for (code, n) in [
        ("peer_not_found", 3.0),
        ("wrong_room_kind", 4.0),
        ("not_joined", 1.0),
        ("rate_limited", 0.0),
    ] {
        let sample = format!("rtcrelay_signaling_errors_total{{code=\"{code}\"}}");
        assert_eq!(server.metric(&sample).await, Some(n), "{sample}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_rooms_follow_relay_capacity_rules() {
    let config = SignalingConfig {
        max_room_capacity: 8,
        ..base_config()
    };
    let server = Server::start_with(config).await;
    let mut a = server.connect().await;
    a.send(json!({"type": "join", "version": 1, "room": "pc", "kind": "p2p", "name": "ada", "capacity": 9}))
        .await;
    a.expect_error("invalid_message").await;
    a.send(json!({"type": "join", "version": 1, "room": "pc", "kind": "p2p", "name": "ada", "capacity": 2}))
        .await;
    assert_eq!(a.expect("welcome").await["capacity"], 2);
    let mut b = server.connect().await;
    b.join_kind("pc", "p2p", "bob").await;
    let mut c = server.connect().await;
    c.send(json!({"type": "join", "version": 1, "room": "pc", "kind": "p2p", "name": "cy"}))
        .await;
    c.expect_error("room_full").await;
    c.send(json!({"type": "join", "version": 1, "room": "pc", "kind": "relay", "name": "cy"}))
        .await;
    c.expect_error("room_kind_mismatch").await;
}

/// A signal above `max_message_bytes` is like any other message that big:
/// fatal, close code 1009, and nothing reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_signal_is_fatal_and_not_forwarded() {
    let config = SignalingConfig {
        max_message_bytes: 4096,
        ..base_config()
    };
    let server = Server::start_with(config).await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.join_kind("po", "p2p", "ada").await;
    b.join_kind("po", "p2p", "bob").await;
    a.expect_peer_joined(b.peer()).await;

    // Just under the limit goes through.
    let a_id = a.id();
    let fits = |size: usize| {
        let probe = json!({"type": "signal", "to": a_id, "data": {"sdp": ""}}).to_string();
        json!({"type": "signal", "to": a_id, "data": {"sdp": "x".repeat(size - probe.len())}})
    };
    let msg = fits(4096);
    assert_eq!(msg.to_string().len(), 4096);
    b.send(msg.clone()).await;
    assert_eq!(a.expect("signal").await["data"], msg["data"]);

    let msg = fits(4097);
    b.send(msg).await;
    let err = b.expect("error").await;
    assert_eq!(err["code"], "message_too_large", "{err}");
    assert_eq!(err["fatal"], true);
    assert_eq!(b.end().await, End::Close(Some(1009)));
    a.expect_peer_left(b.peer(), "left").await;
    assert!(a.ping(1).await.is_empty());
    assert_eq!(server.state.metrics.signals_forwarded.get(), 1);
}

/// One member cannot flood another: each pair has a budget of signal bytes
/// (64 KiB at once, 16 KiB/s after), beyond which signals are refused with
/// `rate_limited`. The budget towards one member does not limit the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_signal_flood_is_rate_limited_per_target() {
    // The per-connection message rate is not what this test is about: set
    // above the flood so that only the signal byte budget refuses.
    let server = Server::start_with(SignalingConfig {
        limits: rtcrelay_signaling::LimitsConfig {
            messages_per_sec: 1000.0,
            message_burst: 1000.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    a.join_kind("pf", "p2p", "ada").await;
    b.join_kind("pf", "p2p", "bob").await;
    c.join_kind("pf", "p2p", "cy").await;
    a.expect_peer_joined(b.peer()).await;
    a.expect_peer_joined(c.peer()).await;
    b.expect_peer_joined(c.peer()).await;

    // 100 signals of 2 KiB (200 KiB) as fast as they go: far more than the
    // burst plus what even a slow machine refills while sending them.
    const N: usize = 100;
    let blob = "x".repeat(2048);
    for i in 0..N {
        a.send(json!({"type": "signal", "to": b.id(), "data": {"i": i, "blob": blob}}))
            .await;
    }
    let before = a.ping(1).await;
    let refused = before.len();
    assert!(
        before
            .iter()
            .all(|m| m["type"] == "error" && m["code"] == "rate_limited"),
        "{before:?}"
    );
    assert!(refused > 0 && refused < N, "{refused} of {N} refused");
    let forwarded = N - refused;
    assert!(forwarded >= 30, "the burst lets 30 through: {forwarded}");
    let mut got = Vec::new();
    for _ in 0..forwarded {
        let msg = b.expect("signal").await;
        got.push(msg["data"]["i"].as_u64().unwrap());
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    // The burst went through first; later ones only as the budget refilled.
    assert_eq!(got[..30], (0..30).collect::<Vec<u64>>(), "{got:?}");
    assert!(b.ping(1).await.is_empty());
    assert_eq!(
        server.state.metrics.signals_forwarded.get(),
        forwarded as u64
    );

    // Another target has its own budget.
    a.send(json!({"type": "signal", "to": c.id(), "data": {"blob": blob}}))
        .await;
    assert_eq!(signal_from(&c.expect("signal").await), a.id());
}
