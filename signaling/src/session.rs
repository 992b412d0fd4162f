//! One signaling WebSocket: a client joins a room, negotiates a WebRTC
//! session with the server peer, hears about other members, and leaves.
//!
//! Each connection is one task. It owns its membership; other sessions reach
//! it only through its bounded outbox, so a client that stops reading is
//! disconnected instead of growing the server's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use rtcrelay_protocol::signaling::{
    decode_client_message, is_mdns_candidate, LeaveReason, SignalData,
};
use rtcrelay_protocol::{
    ClientMessage, ErrorCode, PeerId, RoomId, RoomKind, ServerMessage, PROTOCOL_VERSION,
};
use rtcrelay_relay::{SessionError, SessionEvent, SessionRequest};
use tokio::sync::{mpsc, Notify};

use crate::metrics::KindLabel;
use crate::AppState;

/// WebSocket close codes we use (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_POLICY: u16 = 1008;

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

pub(crate) async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    let transport_limit = state.config.max_message_bytes * TRANSPORT_LIMIT_FACTOR;
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| async move {
            Session::new(state, socket).run().await;
        })
}

/// A client's place in a room.
struct Membership {
    room: RoomId,
    kind: RoomKind,
    name: String,
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
}

struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    peer: PeerId,
    outbox: mpsc::Receiver<ServerMessage>,
    /// Notified when other sessions found the outbox full.
    evicted: Arc<Notify>,
    membership: Option<Membership>,
}

impl Session {
    fn new(state: Arc<AppState>, socket: WebSocket) -> Session {
        let peer = state.allocate_peer_id();
        let (tx, outbox) = mpsc::channel(state.config.outbound_queue);
        let evicted = Arc::new(Notify::new());
        state.outboxes.insert(peer, tx, evicted.clone());
        state.metrics.connections.inc();
        Session {
            state,
            socket,
            peer,
            outbox,
            evicted,
            membership: None,
        }
    }

    async fn run(mut self) {
        tracing::debug!(peer = %self.peer, "signaling connection open");
        let mut shutdown = self.state.shutdown_signal();
        let flow = loop {
            let flow = tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(msg)) => self.on_ws_message(msg).await,
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
                _ = shutdown.changed() => Flow::Close(CLOSE_GOING_AWAY, "server shutting down"),
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => break Some((code, reason)),
                Flow::ClosedByClient => break None,
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
        let text =
            match msg {
                Message::Text(text) => text,
                Message::Binary(_) => return self
                    .error(
                        ErrorCode::BinaryNotSupported,
                        "binary WebSocket messages are not part of the protocol; send JSON text",
                    )
                    .await,
                Message::Close(_) => return Flow::ClosedByClient,
                Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            };
        self.state.metrics.messages_in.inc();
        match decode_client_message(&text, self.state.config.max_message_bytes) {
            Ok(msg) => self.on_client_message(msg, text.len()).await,
            Err(e) if e.code == ErrorCode::MessageTooLarge => {
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
                token: _,
            } => self.join(version, room, kind, name, capacity).await,
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
            Err(e) => return self.error(e.code(), e.to_string()).await,
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
        tracing::info!(peer = %self.peer, %room, kind = kind.as_str(), "joined");

        let others: Vec<PeerId> = joined.roster.iter().map(|m| m.peer_id).collect();
        self.membership = Some(Membership {
            room: room.clone(),
            kind,
            name: name.clone(),
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
            Err(e) => return self.error(session_error_code(&e), e.to_string()).await,
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
            self.state.relay.close(self.peer).await;
        }
        let Some(left) = self.state.rooms.leave(&membership.room, self.peer) else {
            return;
        };
        let metrics = &self.state.metrics;
        metrics.room_members.dec();
        metrics.rooms.set(self.state.rooms.room_count() as i64);
        tracing::info!(peer = %self.peer, room = %membership.room, ?reason, "left");
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
    }
}

/// The `a=mid:` of the first media section, so trickled candidates can name it.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}
