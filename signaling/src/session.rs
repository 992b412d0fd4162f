//! One signaling WebSocket: a client joins a room, negotiates a WebRTC
//! session with the server peer, hears about other members, and leaves.
//!
//! Each connection is one task. It owns its membership; other sessions reach
//! it only through its bounded outbox, so a client that stops reading is
//! disconnected instead of growing the server's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rtcrelay_protocol::signaling::{
    decode_client_message, is_mdns_candidate, LeaveReason, SignalData,
};
use rtcrelay_protocol::{
    ClientMessage, ErrorCode, PeerId, RoomId, RoomKind, ServerMessage, PROTOCOL_VERSION,
};
use rtcrelay_relay::{SeatEnd, SessionError, SessionEvent, SessionRequest};
use tokio::sync::{mpsc, Notify};

use crate::auth::{AuthMode, VerifiedPlayer};
use crate::limits::{AtMostEvery, ConnectionPermit, ConnectionRefused, TokenBucket};
use crate::metrics::{self as m, KindLabel};
use crate::resume::{Holder, Seat};
use crate::AppState;

/// WebSocket close codes we use (RFC 6455; 4000-4999 are the application's).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Another connection resumed this one's seat.
const CLOSE_SUPERSEDED: u16 = 4001;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_POLICY: u16 = 1008;

/// A client told it is rate limited is told again at most this often.
const RATE_LIMIT_NOTICE_EVERY: Duration = Duration::from_secs(1);

/// Messages far above the limit are cut off by the WebSocket layer itself;
/// between the limit and this multiple the client gets a clean
/// `message_too_large` error first.
const TRANSPORT_LIMIT_FACTOR: usize = 4;

/// How long the closing handshake may take. A client that stopped reading
/// never lets it finish; the connection is dropped after this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Each member may send another member this many bytes of `signal`
/// messages at once (a WebRTC offer or answer plus its candidates is a few
/// KiB)...
const SIGNAL_BURST_BYTES: f64 = 64.0 * 1024.0;
/// ...and this many more per second, so that one member cannot flood
/// another's signaling connection (and get it disconnected as too slow).
const SIGNAL_BYTES_PER_SEC: f64 = 16.0 * 1024.0;
/// Budgets kept before the full (idle) ones are forgotten.
const SIGNAL_BUDGETS_KEPT: usize = 128;

/// A token bucket of `signal` bytes towards one member.
struct SignalBudget {
    bytes: f64,
    at: Instant,
}

impl SignalBudget {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * SIGNAL_BYTES_PER_SEC;
        self.bytes = (self.bytes + earned).min(SIGNAL_BURST_BYTES);
        self.at = now;
    }
}

/// A session's outbox, as other sessions see it.
struct Outbox {
    /// The connection it belongs to (a resumed seat moves to a new one).
    conn: u64,
    tx: mpsc::Sender<ServerMessage>,
    /// Wakes the session when its outbox overflowed, even while it is stuck
    /// writing to a socket its client does not read.
    evicted: Arc<Notify>,
    /// Set when another connection resumed this one's seat.
    superseded: Arc<AtomicBool>,
}

/// Outboxes of all connected sessions, by peer id.
#[derive(Default)]
pub(crate) struct Outboxes(Mutex<HashMap<PeerId, Outbox>>);

impl Outboxes {
    fn insert(&self, peer: PeerId, outbox: Outbox) {
        self.lock().insert(peer, outbox);
    }

    /// Removes `peer`'s outbox if connection `conn` owns it.
    fn remove(&self, peer: PeerId, conn: u64) {
        let mut map = self.lock();
        if map.get(&peer).is_some_and(|o| o.conn == conn) {
            map.remove(&peer);
        }
    }

    /// Moves connection `conn`'s outbox from peer id `from` to `to` (a
    /// resumed seat's).
    fn rekey(&self, from: PeerId, to: PeerId, conn: u64) {
        let mut map = self.lock();
        if map.get(&from).is_some_and(|o| o.conn == conn) {
            if let Some(outbox) = map.remove(&from) {
                map.insert(to, outbox);
            }
        }
    }

    /// Ends connection `conn`, whose seat (`peer`) another connection
    /// resumed: it closes without touching the room.
    fn supersede(&self, peer: PeerId, conn: u64) {
        let mut map = self.lock();
        if map.get(&peer).is_some_and(|o| o.conn == conn) {
            if let Some(outbox) = map.remove(&peer) {
                outbox.superseded.store(true, AtomicOrdering::SeqCst);
                outbox.evicted.notify_one();
            }
        }
    }

    /// Queues `msg` for `peer`. A full outbox means the client is not reading:
    /// dropping its outbox ends its session rather than losing messages
    /// silently. Returns false when the peer was dropped.
    fn send(&self, peer: PeerId, msg: ServerMessage) -> bool {
        let mut map = self.lock();
        let Some(outbox) = map.get(&peer) else {
            return true;
        };
        match outbox.tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                if let Some(outbox) = map.remove(&peer) {
                    outbox.evicted.notify_one();
                }
                false
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Outbox>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The query string of `/ws`.
#[derive(serde::Deserialize)]
pub(crate) struct WsQuery {
    /// A join token, for browsers (they cannot set WebSocket headers).
    token: Option<String>,
}

/// Checks the `Origin` and the connection limits before upgrading: a
/// refused client costs no WebSocket session.
pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    // Absent when served without connection info (in-process tests): only
    // the total limit applies then.
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>"))
    };
    let origin = text(header::ORIGIN);
    if !state.config.auth.origin_allowed(origin, text(header::HOST)) {
        let origin = origin.unwrap_or_default();
        state.metrics.origin_refused.inc();
        tracing::info!(origin, "WebSocket refused: Origin not allowed");
        let body = format!(
            "origin {origin:?} may not open a signaling WebSocket on this server \
             (the operator can list it in auth.allowed_origins)\n"
        );
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let ip = client.map(|Extension(ConnectInfo(addr))| addr.ip());
    let limits = &state.config.limits;
    let permit = match state.connections.try_acquire(ip) {
        Ok(permit) => permit,
        Err(ConnectionRefused::PerIp) => {
            state.metrics.limit_hit(m::LIMIT_CONNECTIONS_PER_IP);
            tracing::debug!(
                ?ip,
                "WebSocket refused: too many connections from this address"
            );
            let body = format!(
                "rate_limited: more than {} signaling connections from your address\n",
                limits.max_connections_per_ip
            );
            return (StatusCode::TOO_MANY_REQUESTS, body).into_response();
        }
        Err(ConnectionRefused::Total) => {
            state.metrics.limit_hit(m::LIMIT_CONNECTIONS);
            tracing::warn!(
                limit = limits.max_connections,
                "WebSocket refused: the server holds its most signaling connections"
            );
            let body = format!(
                "server_full: this server holds its limit of {} signaling connections\n",
                limits.max_connections
            );
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
    };
    let transport_limit = state.config.max_message_bytes * TRANSPORT_LIMIT_FACTOR;
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| async move {
            Session::new(state, socket, permit, query.token).run().await;
        })
}

/// A client's place in a room.
struct Membership {
    room: RoomId,
    kind: RoomKind,
    name: String,
    /// The operator's player id, from a verified join token.
    player: Option<String>,
    /// Events of the current WebRTC session, if one was negotiated.
    webrtc: Option<mpsc::UnboundedReceiver<SessionEvent>>,
    /// P2p rooms: what this member may still `signal` to each other one.
    signal_budgets: HashMap<PeerId, SignalBudget>,
    /// The room's grace period when the seat is kept for resume.
    grace: Option<Duration>,
    /// The WebRTC session was lost (the WebSocket is fine): the seat is away
    /// until this deadline, for this absence (epoch).
    away: Option<(Instant, u64)>,
}

/// What the loop should do after handling something.
enum Flow {
    Continue,
    Close(u16, &'static str),
    /// The client sent a Close frame; the WebSocket layer has queued the
    /// reply, which only needs flushing.
    ClosedByClient,
    /// Nothing arrived for `dead_after`.
    Dead,
    /// The connection is unusable (a client too slow to read, a failed
    /// write): closed with this code; the seat is kept for resume.
    Lost(u16, &'static str),
    /// Another connection resumed this one's seat.
    Superseded,
}

/// How a connection ended, for what happens to its seat.
enum Exit {
    /// The client closed it (Close frame) or the server did on purpose
    /// (shutdown, a fatal protocol error): the member leaves.
    Left(Option<(u16, &'static str)>),
    /// The network or the client failed: the seat is kept for resume.
    Lost(Option<(u16, &'static str)>),
    /// Another connection took the seat.
    Superseded,
}

struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    peer: PeerId,
    /// This connection's number (a peer id moves to another connection when
    /// its seat is resumed there).
    conn: u64,
    /// Set when another connection resumed our seat.
    superseded: Arc<AtomicBool>,
    outbox: mpsc::Receiver<ServerMessage>,
    /// Notified when other sessions found the outbox full.
    evicted: Arc<Notify>,
    membership: Option<Membership>,
    /// This connection's slot under the connection limits.
    _permit: ConnectionPermit,
    /// The `/ws?token=` join token, used by joins without their own.
    query_token: Option<String>,
    /// Messages this client may still send.
    messages: TokenBucket,
    rate_limit_notice: AtMostEvery,
    /// When anything (a message, a Pong) last arrived.
    last_heard: Instant,
}

impl Session {
    fn new(
        state: Arc<AppState>,
        socket: WebSocket,
        permit: ConnectionPermit,
        query_token: Option<String>,
    ) -> Session {
        let peer = state.allocate_peer_id();
        let conn = state.allocate_connection_id();
        let (tx, outbox) = mpsc::channel(state.config.outbound_queue);
        let evicted = Arc::new(Notify::new());
        let superseded = Arc::new(AtomicBool::new(false));
        state.outboxes.insert(
            peer,
            Outbox {
                conn,
                tx,
                evicted: evicted.clone(),
                superseded: superseded.clone(),
            },
        );
        state.metrics.connections.inc();
        let now = Instant::now();
        let limits = &state.config.limits;
        let messages = TokenBucket::new(limits.messages_per_sec, limits.message_burst, now);
        Session {
            state,
            socket,
            peer,
            conn,
            superseded,
            outbox,
            evicted,
            membership: None,
            _permit: permit,
            query_token,
            messages,
            rate_limit_notice: AtMostEvery::new(RATE_LIMIT_NOTICE_EVERY),
            last_heard: now,
        }
    }

    async fn run(mut self) {
        tracing::debug!(peer = %self.peer, "signaling connection open");
        let mut shutdown = self.state.shutdown_signal();
        let mut draining = self.state.draining_signal();
        let mut heartbeat = tokio::time::interval(self.state.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connected after draining began: told at once. A failed send shows
        // at the next read.
        let already_draining = *draining.borrow_and_update();
        if let Some(deadline) = already_draining {
            let _ = self.draining(deadline).await;
        }
        let exit = loop {
            let grace_over = grace_deadline(self.membership.as_ref().and_then(|m| m.away));
            let flow = tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.on_ws_message(msg).await
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "signaling socket error");
                        break Exit::Lost(None);
                    }
                    None => break Exit::Lost(None),
                },
                () = grace_over => self.grace_over().await,
                out = self.outbox.recv() => match out {
                    Some(msg) => self.send(&msg).await,
                    None => self.too_slow(),
                },
                Some(event) = next_event(&mut self.membership) => self.on_session_event(event).await,
                _ = heartbeat.tick() => self.heartbeat().await,
                Ok(()) = draining.changed() => {
                    let deadline = *draining.borrow_and_update();
                    match deadline {
                        Some(deadline) => self.draining(deadline).await,
                        None => Flow::Continue,
                    }
                }
                _ = shutdown.changed() => Flow::Close(CLOSE_GOING_AWAY, "server shutting down"),
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => break Exit::Left(Some((code, reason))),
                Flow::ClosedByClient => break Exit::Left(None),
                Flow::Dead => break Exit::Lost(Some((CLOSE_POLICY, "no heartbeat"))),
                Flow::Lost(code, reason) => break Exit::Lost(Some((code, reason))),
                Flow::Superseded => break Exit::Superseded,
            }
        };
        let close = match exit {
            Exit::Left(close) | Exit::Lost(close) => close,
            Exit::Superseded => Some((CLOSE_SUPERSEDED, "resumed on another connection")),
        };
        let closing = async {
            if let Some((code, reason)) = close {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = self.socket.send(Message::Close(Some(frame))).await;
                // Wait for the client's Close in reply (what it still sends
                // is discarded): dropping the socket first would answer its
                // reply with a TCP reset, which can destroy our Close frame
                // before the client has read it.
                while let Some(Ok(msg)) = self.socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            }
            // Completes the closing handshake (flushes the reply to a client's
            // Close) instead of resetting the connection.
            let _ = futures_util::SinkExt::close(&mut self.socket).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::debug!(peer = %self.peer, "closing handshake timed out; dropping the connection");
        }
        match exit {
            Exit::Left(_) => self.leave_room(LeaveReason::Left).await,
            Exit::Lost(_) => self.suspend().await,
            Exit::Superseded => {}
        }
        self.state.outboxes.remove(self.peer, self.conn);
        self.state.metrics.connections.dec();
        tracing::debug!(peer = %self.peer, "signaling connection closed");
    }

    async fn on_ws_message(&mut self, msg: Message) -> Flow {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                if let Some(flow) = self.over_rate_limit().await {
                    return flow;
                }
                return self
                    .error(
                        ErrorCode::BinaryNotSupported,
                        "binary WebSocket messages are not part of the protocol; send JSON text",
                    )
                    .await;
            }
            Message::Close(_) => return Flow::ClosedByClient,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        self.state.metrics.messages_in.inc();
        if let Some(flow) = self.over_rate_limit().await {
            return flow;
        }
        match decode_client_message(&text, self.state.config.max_message_bytes) {
            Ok(msg) => self.on_client_message(msg, text.len()).await,
            Err(e) if e.code == ErrorCode::MessageTooLarge => {
                self.state.metrics.limit_hit(m::LIMIT_MESSAGE_SIZE);
                self.fatal(e.code, &e.message).await;
                Flow::Close(CLOSE_TOO_BIG, "message too large")
            }
            Err(e) => self.error(e.code, e.message).await,
        }
    }

    /// `len`: the message's size on the wire.
    async fn on_client_message(&mut self, msg: ClientMessage, len: usize) -> Flow {
        match msg {
            ClientMessage::Join {
                version,
                room,
                kind,
                name,
                capacity,
                token,
                resume,
            } => match resume {
                Some(resume) => self.resume(version, room, kind, resume).await,
                None => self.join(version, room, kind, name, capacity, token).await,
            },
            ClientMessage::Offer { sdp } => self.offer(sdp).await,
            ClientMessage::Candidate { candidate, .. } => self.candidate(candidate).await,
            ClientMessage::Leave => {
                if self.membership.is_none() {
                    return self
                        .error(ErrorCode::NotJoined, "leave: not in a room")
                        .await;
                }
                self.leave_room(LeaveReason::Left).await;
                Flow::Continue
            }
            ClientMessage::Ping { id } => self.send(&ServerMessage::Pong { id }).await,
            ClientMessage::Signal { to, data } => self.signal(to, data, len).await,
        }
    }

    async fn join(
        &mut self,
        version: u32,
        room: RoomId,
        kind: RoomKind,
        name: String,
        capacity: Option<usize>,
        token: Option<String>,
    ) -> Flow {
        if let Some((code, msg)) = self.cannot_join(version) {
            return self.error(code, msg).await;
        }
        if self.state.is_draining() {
            return self
                .error(
                    ErrorCode::Draining,
                    "join: this server is shutting down and takes no new joins; \
                     join on another server",
                )
                .await;
        }
        let player = match self.authenticate(&room, token) {
            Ok(player) => player,
            Err((code, msg)) => return self.error(code, msg).await,
        };
        let name = match &player {
            Some(VerifiedPlayer {
                name: Some(name), ..
            }) => name.clone(),
            _ => name,
        };
        let player = player.map(|p| p.player_id);
        let config = &self.state.config;
        // An authoritative room seats as many people as its game does.
        let (default_capacity, max_capacity) = match kind {
            RoomKind::Relay | RoomKind::P2p => {
                (config.default_room_capacity, config.max_room_capacity)
            }
            RoomKind::Authoritative => (config.game_seats, config.game_seats),
        };
        if max_capacity == 0 {
            let msg = format!("{} rooms are not served by this server", kind.as_str());
            return self.error(ErrorCode::UnsupportedRoomKind, msg).await;
        }
        let capacity = capacity.unwrap_or(default_capacity);
        if capacity > max_capacity {
            let msg = format!(
                "join: capacity {capacity} is above this server's maximum of {max_capacity} \
                 for {} rooms",
                kind.as_str()
            );
            return self.error(ErrorCode::InvalidMessage, msg).await;
        }
        let joined = match self
            .state
            .rooms
            .join(&room, kind, capacity, self.peer, &name)
        {
            Ok(joined) => joined,
            Err(e) => {
                if e.code() == ErrorCode::TooManyRooms {
                    self.state.metrics.limit_hit(m::LIMIT_ROOMS);
                }
                return self.error(e.code(), e.to_string()).await;
            }
        };
        let metrics = &self.state.metrics;
        metrics
            .joins
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        metrics.room_members.inc();
        metrics.rooms.set(self.state.rooms.room_count() as i64);
        tracing::info!(
            peer = %self.peer,
            %room,
            kind = kind.as_str(),
            player = player.as_deref(),
            "joined"
        );

        let others: Vec<PeerId> = joined.roster.iter().map(|m| m.peer_id).collect();
        // Seats in rooms with a server peer are kept for resume; p2p
        // members hold nothing on the server worth keeping.
        let grace = self.state.config.resume.rules.for_room(&room).grace;
        let grace = (kind != RoomKind::P2p && !grace.is_zero()).then_some(grace);
        let resume_token = grace.map(|grace| {
            let jti = rand::random::<u64>();
            self.state.seats.insert(
                self.peer,
                Seat {
                    room: room.clone(),
                    kind,
                    name: name.clone(),
                    player: player.clone(),
                    grace,
                    jti,
                    holder: Holder::Connection(self.conn),
                },
            );
            self.resume_token(&room, jti)
        });
        self.membership = Some(Membership {
            room: room.clone(),
            kind,
            name: name.clone(),
            player,
            webrtc: None,
            signal_budgets: HashMap::new(),
            grace,
            away: None,
        });
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: self.peer,
            room,
            kind,
            capacity: joined.capacity,
            roster: joined.roster,
            ice_servers: self.state.config.ice_servers_for(self.peer),
            resume_token,
            resume_grace_ms: grace.map(millis),
            resumed: false,
        };
        let flow = self.send(&welcome).await;
        self.broadcast(
            &others,
            ServerMessage::PeerJoined {
                peer_id: self.peer,
                name,
            },
        );
        flow
    }

    async fn offer(&mut self, sdp: String) -> Flow {
        let Some(membership) = &self.membership else {
            return self
                .error(ErrorCode::NotJoined, "offer: join a room first")
                .await;
        };
        if membership.kind == RoomKind::P2p {
            return self
                .error(
                    ErrorCode::WrongRoomKind,
                    "offer: a p2p room has no server peer; send your offer to a member \
                     in a signal message",
                )
                .await;
        }
        if membership.webrtc.is_some() {
            return self
                .error(
                    ErrorCode::SessionExists,
                    "offer: a WebRTC session exists; renegotiation is not supported",
                )
                .await;
        }
        let (events, rx) = mpsc::unbounded_channel();
        let request = SessionRequest {
            peer: self.peer,
            room: membership.room.clone(),
            kind: membership.kind,
            name: membership.name.clone(),
            offer_sdp: sdp,
            events,
        };
        let answer = match self.state.relay.open(request).await {
            Ok(answer) => answer,
            Err(e) => {
                let code = session_error_code(&e);
                if code == ErrorCode::ServerFull {
                    self.state.metrics.limit_hit(m::LIMIT_PEERS);
                }
                return self.error(code, e.to_string()).await;
            }
        };
        if let Some(m) = self.membership.as_mut() {
            m.webrtc = Some(rx);
        }
        let mid = first_mid(&answer.sdp);
        let flow = self.send(&ServerMessage::Answer { sdp: answer.sdp }).await;
        if !matches!(flow, Flow::Continue) {
            return flow;
        }
        // Also trickled, for clients that add candidates only this way.
        for candidate in answer.candidates.into_iter().chain([String::new()]) {
            let msg = ServerMessage::Candidate {
                candidate,
                mid: mid.clone(),
            };
            let flow = self.send(&msg).await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        Flow::Continue
    }

    async fn candidate(&mut self, candidate: String) -> Flow {
        let Some(membership) = &self.membership else {
            return self
                .error(ErrorCode::NotJoined, "candidate: join a room first")
                .await;
        };
        if membership.kind == RoomKind::P2p {
            return self
                .error(
                    ErrorCode::WrongRoomKind,
                    "candidate: a p2p room has no server peer; send your candidates to a \
                     member in signal messages",
                )
                .await;
        }
        if membership.webrtc.is_none() {
            return self
                .error(ErrorCode::NoSession, "candidate: send an offer first")
                .await;
        }
        // End of candidates, or an mDNS name the ICE-lite server would never
        // use: it learns the client's address from the client's STUN checks.
        if candidate.is_empty() || is_mdns_candidate(&candidate) {
            return Flow::Continue;
        }
        match self
            .state
            .relay
            .add_remote_candidate(self.peer, candidate)
            .await
        {
            Ok(()) => Flow::Continue,
            Err(e) => self.error(session_error_code(&e), e.to_string()).await,
        }
    }

    /// P2p rooms: forwards `data` to another member of the room, as
    /// `signal` with our peer id as `from`. `len`: the message's size.
    async fn signal(&mut self, to: PeerId, data: SignalData, len: usize) -> Flow {
        let Some(membership) = &mut self.membership else {
            return self
                .error(ErrorCode::NotJoined, "signal: join a p2p room first")
                .await;
        };
        if membership.kind != RoomKind::P2p {
            let msg = format!(
                "signal: only p2p rooms take signal messages; room {} is a {} room",
                membership.room,
                membership.kind.as_str()
            );
            return self.error(ErrorCode::WrongRoomKind, msg).await;
        }
        if to == self.peer {
            return self
                .error(ErrorCode::PeerNotFound, "signal: to is your own peer id")
                .await;
        }
        if !self.state.rooms.members(&membership.room).contains(&to) {
            let msg = format!("signal: peer {to} is not in room {}", membership.room);
            return self.error(ErrorCode::PeerNotFound, msg).await;
        }
        let now = Instant::now();
        let budgets = &mut membership.signal_budgets;
        if budgets.len() >= SIGNAL_BUDGETS_KEPT {
            budgets.retain(|_, b| {
                b.refill(now);
                b.bytes < SIGNAL_BURST_BYTES
            });
        }
        let budget = budgets.entry(to).or_insert(SignalBudget {
            bytes: SIGNAL_BURST_BYTES,
            at: now,
        });
        budget.refill(now);
        let cost = len as f64;
        if budget.bytes < cost {
            let msg = format!(
                "signal: more than {} KiB of signal messages to peer {to} at once \
                 ({} KiB/s after that); this one was dropped",
                SIGNAL_BURST_BYTES as usize / 1024,
                SIGNAL_BYTES_PER_SEC as usize / 1024
            );
            return self.error(ErrorCode::RateLimited, msg).await;
        }
        budget.bytes -= cost;
        // Queued behind the `peer_joined` that announced us to `to` (sent
        // when we joined, before this session read anything else), so the
        // target always knows the sender. A target that left meanwhile
        // simply has no outbox any more.
        if self.state.outboxes.send(
            to,
            ServerMessage::Signal {
                from: self.peer,
                data,
            },
        ) {
            self.state.metrics.signals_forwarded.inc();
        } else {
            tracing::debug!(peer = %to, "outbox full; that client will be disconnected");
        }
        Flow::Continue
    }

    async fn on_session_event(&mut self, event: SessionEvent) -> Flow {
        match event {
            SessionEvent::Ready { realtime, control } => {
                let flow = self.send(&ServerMessage::Ready { realtime, control }).await;
                self.back_from_away();
                flow
            }
            SessionEvent::ChannelRejected { reason } => {
                if let Some(m) = self.membership.as_mut() {
                    m.webrtc = None;
                }
                self.error(ErrorCode::ChannelRejected, reason).await
            }
            SessionEvent::Closed { reason } => {
                tracing::info!(peer = %self.peer, %reason, "WebRTC session closed");
                // The session is gone on the relay side already; its seat
                // was kept there.
                if let Some(m) = self.membership.as_mut() {
                    m.webrtc = None;
                }
                if let Some(grace_ms) = self.webrtc_lost() {
                    // The client may come back with a new offer on this
                    // socket, or a resume join on another.
                    return self
                        .send(&ServerMessage::PeerAway {
                            peer_id: self.peer,
                            grace_ms,
                        })
                        .await;
                }
                self.leave_room(LeaveReason::Disconnected).await;
                self.send(&ServerMessage::PeerLeft {
                    peer_id: self.peer,
                    reason: LeaveReason::Disconnected,
                })
                .await
            }
        }
    }

    /// Leaves the current room, if any, and tells the members who remain.
    async fn leave_room(&mut self, reason: LeaveReason) {
        let Some(membership) = self.membership.take() else {
            return;
        };
        self.state.seats.remove_held(self.peer, self.conn);
        // Also when no session is open: the relay may keep a seat for it.
        if membership.kind != RoomKind::P2p {
            self.state
                .relay
                .close(self.peer, &membership.room, SeatEnd::Leave)
                .await;
        }
        let Some(left) = self.state.rooms.leave(&membership.room, self.peer) else {
            return;
        };
        let metrics = &self.state.metrics;
        metrics.room_members.dec();
        metrics.rooms.set(self.state.rooms.room_count() as i64);
        tracing::info!(
            peer = %self.peer,
            room = %membership.room,
            player = membership.player.as_deref(),
            ?reason,
            "left"
        );
        self.broadcast(
            &left.remaining,
            ServerMessage::PeerLeft {
                peer_id: self.peer,
                reason,
            },
        );
    }

    fn broadcast(&self, peers: &[PeerId], msg: ServerMessage) {
        for &peer in peers {
            if !self.state.outboxes.send(peer, msg.clone()) {
                tracing::debug!(%peer, "outbox full; that client will be disconnected");
            }
        }
    }

    /// Writes `msg` to the socket. A client that does not read blocks this
    /// once the kernel buffers are full; its outbox then overflows and the
    /// eviction ends the wait.
    async fn send(&mut self, msg: &ServerMessage) -> Flow {
        let text = Message::Text(msg.to_json().into());
        tokio::select! {
            biased;
            _ = self.evicted.notified() => self.too_slow(),
            sent = self.socket.send(text) => match sent {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Lost(1000, "send failed"),
            },
        }
    }

    /// Checks a join's token (`join.token`, else the `/ws?token=` one) when
    /// the server requires tokens; `Ok(None)` when it does not. A refusal
    /// (the error to send) leaves the connection open: the client may try
    /// again with another token, within the message rate limit.
    fn authenticate(
        &self,
        room: &RoomId,
        token: Option<String>,
    ) -> Result<Option<VerifiedPlayer>, (ErrorCode, String)> {
        let auth = &self.state.config.auth;
        if auth.mode == AuthMode::None {
            return Ok(None);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = token.as_deref().or(self.query_token.as_deref());
        match auth.verify(token, room, now) {
            Ok(player) => Ok(Some(player)),
            Err(e) => {
                self.state.metrics.auth_failure(e.code());
                tracing::info!(peer = %self.peer, %room, code = %e.code(), "join refused: {e}");
                Err((e.code(), format!("join: {e}")))
            }
        }
    }

    /// Drops a message over the connection's rate; `None` when within it.
    /// The client hears `rate_limited` at most once per second.
    async fn over_rate_limit(&mut self) -> Option<Flow> {
        let now = Instant::now();
        if self.messages.take(now) {
            return None;
        }
        self.state.metrics.limit_hit(m::LIMIT_MESSAGE_RATE);
        if !self.rate_limit_notice.ready(now) {
            return Some(Flow::Continue);
        }
        let limits = &self.state.config.limits;
        let msg = format!(
            "more than {} messages per second (bursts of {}); messages are being dropped",
            limits.messages_per_sec, limits.message_burst
        );
        Some(self.error(ErrorCode::RateLimited, msg).await)
    }

    /// Each heartbeat: a connection silent for `dead_after` is dead; others
    /// get a Ping, which browsers and WebSocket libraries answer unasked.
    async fn heartbeat(&mut self) -> Flow {
        let dead_after = self.state.config.dead_after;
        if self.last_heard.elapsed() >= dead_after {
            return self.dead().await;
        }
        // A client that stopped reading may block the write once the kernel
        // buffers are full: that too ends at `dead_after`.
        let ping = self.socket.send(Message::Ping(Vec::new().into()));
        match tokio::time::timeout(dead_after, ping).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Lost(1000, "send failed"),
            Err(_) => self.dead().await,
        }
    }

    async fn dead(&mut self) -> Flow {
        self.state.metrics.dead_connections.inc();
        tracing::info!(
            peer = %self.peer,
            "nothing from the client for {:?}; closing its connection",
            self.state.config.dead_after
        );
        Flow::Dead
    }

    /// Tells the client the server is draining and by when it closes.
    async fn draining(&mut self, deadline: Instant) -> Flow {
        let left = deadline.saturating_duration_since(Instant::now());
        let deadline_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        self.send(&ServerMessage::Draining { deadline_ms }).await
    }

    /// The outbox overflowed (other sessions dropped it), or another
    /// connection resumed our seat.
    fn too_slow(&self) -> Flow {
        if self.superseded.load(AtomicOrdering::SeqCst) {
            tracing::info!(peer = %self.peer, "seat resumed on another connection; closing this one");
            return Flow::Superseded;
        }
        self.state.metrics.slow_clients.inc();
        tracing::info!(peer = %self.peer, "client too slow to read its messages; disconnecting");
        Flow::Lost(CLOSE_POLICY, "too slow reading messages")
    }

    /// Why a `join` (fresh or resume) cannot be taken at all, if it cannot.
    fn cannot_join(&self, version: u32) -> Option<(ErrorCode, String)> {
        if let Some(m) = &self.membership {
            let msg = format!("already in room {}; send leave first", m.room);
            return Some((ErrorCode::AlreadyJoined, msg));
        }
        (version != PROTOCOL_VERSION).then(|| {
            let msg =
                format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}");
            (ErrorCode::UnsupportedVersion, msg)
        })
    }

    /// A new resume token for our seat in `room`, whose id is `jti`.
    fn resume_token(&self, room: &RoomId, jti: u64) -> String {
        let resume = &self.state.config.resume;
        let exp = unix_now().saturating_add(resume.token_ttl.as_secs());
        resume.key.mint(room, self.peer, jti, exp)
    }

    /// A `join` with a resume token: takes back the seat it names (and its
    /// peer id) on this connection. A connection still holding it is
    /// superseded. Allowed while draining: the match the seat is in may
    /// still be running.
    async fn resume(&mut self, version: u32, room: RoomId, kind: RoomKind, token: String) -> Flow {
        if let Some((code, msg)) = self.cannot_join(version) {
            return self.error(code, msg).await;
        }
        let new_jti = rand::random::<u64>();
        let claimed = self
            .state
            .config
            .resume
            .key
            .verify(&token, &room, unix_now())
            .and_then(|(peer, jti)| {
                self.state
                    .seats
                    .claim(peer, kind, jti, self.conn, new_jti)
                    .map(|c| (peer, c))
            });
        let (peer, claimed) = match claimed {
            Ok(ok) => ok,
            Err(e) => {
                self.state.metrics.resume(e.label());
                tracing::info!(conn = self.conn, %room, code = %e.code(), "resume refused: {e}");
                return self.error(e.code(), format!("join: {e}")).await;
            }
        };
        let seat = claimed.seat;
        if let Holder::Connection(old) = claimed.previous {
            // A half-open connection the client gave up on: it goes, and so
            // does its WebRTC session (the seat stays).
            self.state.outboxes.supersede(peer, old);
            self.state.relay.close(peer, &room, SeatEnd::Keep).await;
        }
        // This connection now speaks for the seat's peer id. (Its outbox
        // is gone only if it was evicted: then it ends at the next read.)
        self.state.outboxes.rekey(self.peer, peer, self.conn);
        self.peer = peer;
        let (capacity, mut roster) = self.state.rooms.roster(&room).unwrap_or_default();
        roster.retain(|m| m.peer_id != peer);
        let others: Vec<PeerId> = roster.iter().map(|m| m.peer_id).collect();
        self.state.metrics.resume("resumed");
        tracing::info!(
            %peer,
            %room,
            player = seat.player.as_deref(),
            away_for = ?match claimed.previous {
                Holder::Away { since, .. } => Some(since.elapsed()),
                Holder::Connection(_) => None,
            },
            "resumed"
        );
        let token = self.resume_token(&room, new_jti);
        self.membership = Some(Membership {
            room: room.clone(),
            kind,
            name: seat.name,
            player: seat.player,
            webrtc: None,
            signal_budgets: HashMap::new(),
            grace: Some(seat.grace),
            away: None,
        });
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: peer,
            room,
            kind,
            capacity,
            roster,
            ice_servers: self.state.config.ice_servers_for(peer),
            resume_token: Some(token),
            resume_grace_ms: Some(millis(seat.grace)),
            resumed: true,
        };
        let flow = self.send(&welcome).await;
        self.broadcast(&others, ServerMessage::PeerBack { peer_id: peer });
        flow
    }

    /// Our WebRTC session ended on its own while this socket is fine: when
    /// the seat is kept, it is away until the grace period ends (the room is
    /// told) and the grace in ms is returned; `None`: not resumable.
    fn webrtc_lost(&mut self) -> Option<u64> {
        let (peer, conn) = (self.peer, self.conn);
        let m = self.membership.as_mut()?;
        let grace = m.grace?;
        let (epoch, since) = self.state.seats.set_away(peer, conn, Instant::now())?;
        let deadline = since + grace;
        if m.away.is_some() {
            return Some(millis(deadline.saturating_duration_since(Instant::now())));
        }
        m.away = Some((deadline, epoch));
        Some(self.announce_away(deadline))
    }

    /// Tells the other members that we are away until `deadline` (counted
    /// once per absence); returns the grace left, in ms.
    fn announce_away(&self, deadline: Instant) -> u64 {
        self.state.metrics.players_away.inc();
        let grace_ms = millis(deadline.saturating_duration_since(Instant::now()));
        let away = ServerMessage::PeerAway {
            peer_id: self.peer,
            grace_ms,
        };
        self.broadcast(&self.others(), away);
        grace_ms
    }

    /// A new WebRTC session is ready: an away seat is ours again.
    fn back_from_away(&mut self) {
        let (peer, conn) = (self.peer, self.conn);
        let Some(m) = self.membership.as_mut() else {
            return;
        };
        if m.away.take().is_none() || !self.state.seats.set_back(peer, conn) {
            return;
        }
        tracing::info!(%peer, room = %m.room, "back with a new WebRTC session");
        let others = self.others();
        self.broadcast(&others, ServerMessage::PeerBack { peer_id: peer });
    }

    /// The grace period of our away seat ended (this socket is open but no
    /// new WebRTC session came): the seat is released, and we are told.
    async fn grace_over(&mut self) -> Flow {
        let Some(m) = self.membership.take() else {
            return Flow::Continue;
        };
        let Some((_, epoch)) = m.away else {
            self.membership = Some(m);
            return Flow::Continue;
        };
        if self.state.seats.release_if_away(self.peer, epoch).is_some() {
            release_seat(&self.state, self.peer, &m.room).await;
        }
        self.send(&ServerMessage::PeerLeft {
            peer_id: self.peer,
            reason: LeaveReason::Disconnected,
        })
        .await
    }

    /// The connection was lost: a resumable seat is kept (away) for its
    /// grace period, its WebRTC session closed; others leave as before.
    async fn suspend(&mut self) {
        let Some(grace) = self.membership.as_ref().and_then(|m| m.grace) else {
            self.leave_room(LeaveReason::Disconnected).await;
            return;
        };
        let Some((epoch, since)) = self
            .state
            .seats
            .set_away(self.peer, self.conn, Instant::now())
        else {
            // Not ours any more (resumed elsewhere meanwhile).
            self.membership = None;
            return;
        };
        let deadline = since + grace;
        // Not yet told when the WebRTC session was lost first.
        if self.membership.as_ref().is_some_and(|m| m.away.is_none()) {
            self.announce_away(deadline);
        }
        let Some(m) = self.membership.take() else {
            return;
        };
        self.state
            .relay
            .close(self.peer, &m.room, SeatEnd::Keep)
            .await;
        tracing::info!(peer = %self.peer, room = %m.room, ?grace, "connection lost; seat kept");
        let state = self.state.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            if let Some(seat) = state.seats.release_if_away(peer, epoch) {
                release_seat(&state, peer, &seat.room).await;
            }
        });
    }

    /// The other members of our room.
    fn others(&self) -> Vec<PeerId> {
        match &self.membership {
            Some(m) => self
                .state
                .rooms
                .members(&m.room)
                .into_iter()
                .filter(|p| *p != self.peer)
                .collect(),
            None => Vec::new(),
        }
    }

    async fn error(&mut self, code: ErrorCode, message: impl Into<String>) -> Flow {
        let message = message.into();
        tracing::debug!(peer = %self.peer, %code, %message, "client error");
        self.state.metrics.error(code);
        self.send(&ServerMessage::error(code, message)).await
    }

    async fn fatal(&mut self, code: ErrorCode, message: &str) {
        tracing::info!(peer = %self.peer, %code, %message, "closing signaling connection");
        self.state.metrics.error(code);
        let msg = ServerMessage::Error {
            code,
            message: message.to_owned(),
            fatal: true,
        };
        let _ = self.send(&msg).await;
    }
}

/// An away seat's grace period is over: the game applies its after-grace
/// rule, the member leaves the room and the others are told.
async fn release_seat(state: &AppState, peer: PeerId, room: &RoomId) {
    state.relay.close(peer, room, SeatEnd::GraceOver).await;
    state.metrics.seats_released.inc();
    let Some(left) = state.rooms.leave(room, peer) else {
        return;
    };
    state.metrics.room_members.dec();
    state.metrics.rooms.set(state.rooms.room_count() as i64);
    tracing::info!(%peer, %room, "grace period over; seat released");
    let msg = ServerMessage::PeerLeft {
        peer_id: peer,
        reason: LeaveReason::Disconnected,
    };
    for other in left.remaining {
        if !state.outboxes.send(other, msg.clone()) {
            tracing::debug!(peer = %other, "outbox full; that client will be disconnected");
        }
    }
}

/// Fires when the grace period of our away seat ends; never without one.
async fn grace_deadline(away: Option<(Instant, u64)>) {
    match away {
        Some((deadline, _)) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The next event of the current WebRTC session; pending forever without one.
async fn next_event(membership: &mut Option<Membership>) -> Option<SessionEvent> {
    match membership.as_mut().and_then(|m| m.webrtc.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn session_error_code(e: &SessionError) -> ErrorCode {
    match e {
        SessionError::BadSdp(_) => ErrorCode::BadSdp,
        SessionError::BadCandidate(_) => ErrorCode::BadCandidate,
        SessionError::SessionExists(_) => ErrorCode::SessionExists,
        SessionError::NoSession(_) => ErrorCode::NoSession,
        SessionError::Unavailable(_) => ErrorCode::Unavailable,
        SessionError::ServerFull(_) => ErrorCode::ServerFull,
    }
}

/// The `a=mid:` of the first media section, so trickled candidates can name it.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}
