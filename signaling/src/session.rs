//! One signaling WebSocket: a client joins a room, negotiates a WebRTC
//! session with the server peer, hears about other members, and leaves.
//!
//! Each connection is one task. It owns its membership; other sessions reach
//! it only through its bounded outbox, so a client that stops reading is
//! disconnected instead of growing the server's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
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
use crate::AppState;

/// WebSocket close codes we use (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
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
    tx: mpsc::Sender<ServerMessage>,
    /// Wakes the session when its outbox overflowed, even while it is stuck
    /// writing to a socket its client does not read.
    evicted: Arc<Notify>,
}

/// Outboxes of all connected sessions, by peer id.
#[derive(Default)]
pub(crate) struct Outboxes(Mutex<HashMap<PeerId, Outbox>>);

impl Outboxes {
    fn insert(&self, peer: PeerId, tx: mpsc::Sender<ServerMessage>, evicted: Arc<Notify>) {
        self.lock().insert(peer, Outbox { tx, evicted });
    }

    fn remove(&self, peer: PeerId) {
        self.lock().remove(&peer);
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
}

/// What the loop should do after handling something.
enum Flow {
    Continue,
    Close(u16, &'static str),
    /// The client sent a Close frame; the WebSocket layer has queued the
    /// reply, which only needs flushing.
    ClosedByClient,
    /// Nothing arrived for `dead_after`; the room was told `disconnected`.
    Dead,
}

struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    peer: PeerId,
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
        let (tx, outbox) = mpsc::channel(state.config.outbound_queue);
        let evicted = Arc::new(Notify::new());
        state.outboxes.insert(peer, tx, evicted.clone());
        state.metrics.connections.inc();
        let now = Instant::now();
        let limits = &state.config.limits;
        let messages = TokenBucket::new(limits.messages_per_sec, limits.message_burst, now);
        Session {
            state,
            socket,
            peer,
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
        let flow = loop {
            let flow = tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.on_ws_message(msg).await
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "signaling socket error");
                        break None;
                    }
                    None => break None,
                },
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
                Flow::Close(code, reason) => break Some((code, reason)),
                Flow::ClosedByClient => break None,
                Flow::Dead => break Some((CLOSE_POLICY, "no heartbeat")),
            }
        };
        let closing = async {
            if let Some((code, reason)) = flow {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = self.socket.send(Message::Close(Some(frame))).await;
            }
            // Completes the closing handshake (flushes the reply to a client's
            // Close) instead of resetting the connection.
            let _ = futures_util::SinkExt::close(&mut self.socket).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::debug!(peer = %self.peer, "closing handshake timed out; dropping the connection");
        }
        self.leave_room(LeaveReason::Left).await;
        self.state.outboxes.remove(self.peer);
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
                resume: _,
            } => self.join(version, room, kind, name, capacity, token).await,
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
        if let Some(m) = &self.membership {
            let msg = format!("already in room {}; send leave first", m.room);
            return self.error(ErrorCode::AlreadyJoined, msg).await;
        }
        if version != PROTOCOL_VERSION {
            let msg =
                format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}");
            return self.error(ErrorCode::UnsupportedVersion, msg).await;
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
        self.membership = Some(Membership {
            room: room.clone(),
            kind,
            name: name.clone(),
            player,
            webrtc: None,
            signal_budgets: HashMap::new(),
        });
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: self.peer,
            room,
            kind,
            capacity: joined.capacity,
            roster: joined.roster,
            ice_servers: self.state.config.ice_servers_for(self.peer),
            resume_token: None,
            resume_grace_ms: None,
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
        if let flow @ Flow::Close(..) = self.send(&ServerMessage::Answer { sdp: answer.sdp }).await
        {
            return flow;
        }
        // Also trickled, for clients that add candidates only this way.
        for candidate in answer.candidates.into_iter().chain([String::new()]) {
            let msg = ServerMessage::Candidate {
                candidate,
                mid: mid.clone(),
            };
            if let flow @ Flow::Close(..) = self.send(&msg).await {
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
                self.send(&ServerMessage::Ready { realtime, control }).await
            }
            SessionEvent::ChannelRejected { reason } => {
                if let Some(m) = self.membership.as_mut() {
                    m.webrtc = None;
                }
                self.error(ErrorCode::ChannelRejected, reason).await
            }
            SessionEvent::Closed { reason } => {
                tracing::info!(peer = %self.peer, %reason, "WebRTC session closed");
                // The session is gone on the relay side already.
                if let Some(m) = self.membership.as_mut() {
                    m.webrtc = None;
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
        if membership.webrtc.is_some() {
            self.state.relay.close(self.peer, &membership.room, SeatEnd::Leave).await;
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
                Err(_) => Flow::Close(1000, "send failed"),
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
            Ok(Err(_)) => Flow::Close(1000, "send failed"),
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
        self.leave_room(LeaveReason::Disconnected).await;
        Flow::Dead
    }

    /// Tells the client the server is draining and by when it closes.
    async fn draining(&mut self, deadline: Instant) -> Flow {
        let left = deadline.saturating_duration_since(Instant::now());
        let deadline_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        self.send(&ServerMessage::Draining { deadline_ms }).await
    }

    /// The outbox overflowed (other sessions dropped it).
    fn too_slow(&self) -> Flow {
        self.state.metrics.slow_clients.inc();
        tracing::info!(peer = %self.peer, "client too slow to read its messages; disconnecting");
        Flow::Close(CLOSE_POLICY, "too slow reading messages")
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
