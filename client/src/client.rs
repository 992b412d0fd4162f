//! [`Client`]: the join handshake, the session API, and the supervisor task
//! that hands server messages on as events, notices a lost connection and
//! takes the seat back (the decisions are [`crate::reconnect`]'s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use rtcrelay_protocol::ids::validate_display_name;
use rtcrelay_protocol::signaling::{ChannelParams, IceServer, RosterEntry};
use rtcrelay_protocol::{
    ClientMessage, ErrorCode, PeerId, RoomId, RoomKind, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use crate::config::{ClientConfig, ConnectOptions};
use crate::error::ClientError;
use crate::event::{Channel, ClientEvent};
use crate::liveness::{silent_for, Heard};
use crate::peer::{self, LocalCandidate};
use crate::reconnect::{fresh_seed, Loss, Reconnector, Step, Strategy};
use crate::signaling::{Incoming, Signaling, SignalingSender};

/// Events waiting for the application. When full, channel tasks wait, which
/// pushes back on the senders through SCTP flow control (realtime messages
/// are then lost, as on any congested unreliable channel).
const EVENT_QUEUE: usize = 4096;

/// How long `ping` waits for its `pong`, and `close` for the server to
/// acknowledge the WebSocket close.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A member of one room, connected to the server peer.
pub struct Client {
    peer_id: PeerId,
    room: RoomId,
    kind: RoomKind,
    capacity: usize,
    roster: Vec<RosterEntry>,
    reconnect: bool,
    shared: Arc<Shared>,
    events: mpsc::Receiver<ClientEvent>,
    supervisor: JoinHandle<()>,
}

/// What the application's calls and the supervisor task share.
struct Shared {
    /// The session sends go to; replaced when the client resumes.
    link: Mutex<Link>,
    /// Set once this client is out of the room (it sent `leave`, or the
    /// server reported its own `peer_left`), so `close` does not send a
    /// `leave` the server would answer with `not_joined`, and a lost
    /// connection is not resumed.
    left: AtomicBool,
    /// `close` was called: the end of the connection is this client's doing.
    closing: AtomicBool,
    /// Between losing the connection and resuming (or giving up).
    reconnecting: AtomicBool,
}

#[derive(Clone)]
struct Link {
    signaling: Arc<Signaling>,
    pc: Arc<dyn PeerConnection>,
    realtime: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    ready: (ChannelParams, ChannelParams),
}

impl Shared {
    fn link(&self) -> Link {
        lock(&self.link).clone()
    }
}

impl Client {
    /// Joins `config.room` and connects to the server peer. Steps: WebSocket
    /// dial → `join` → `welcome` → peer connection with `realtime`
    /// (unordered, no retransmits) and `control` (reliable) → `offer` →
    /// `answer` and server candidates (local candidates are trickled) → done
    /// when both channels are open locally *and* the server's `ready` has
    /// arrived. Any server `error` on the way fails the call with
    /// [`ClientError::Signaling`]; the whole call is bounded by
    /// `config.connect_timeout`. Once connected, a lost connection is
    /// resumed automatically (see [`ClientConfig::reconnect`]).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        Client::connect_with(config, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with lower-level options, e.g. wrong channel
    /// parameters to check that the server rejects them.
    pub async fn connect_with(
        config: ClientConfig,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        // `connect_inner` gives up at the limit itself, leaving its room
        // cleanly; this outer bound only catches a stuck close.
        let limit = config.connect_timeout + CLOSE_TIMEOUT;
        match tokio::time::timeout(limit, connect_inner(config, options)).await {
            Ok(result) => result,
            // Dropping the future drops the half-built client: its tasks are
            // aborted and the peer connection is closed by its own Drop.
            Err(_) => Err(ClientError::Timeout("connect")),
        }
    }

    /// This client's id, assigned by the server (kept across resumes).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn room(&self) -> &RoomId {
        &self.room
    }

    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// Room capacity announced in `welcome`.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The other members, in join order: the `welcome` roster, updated as
    /// [`Client::next_event`] hands out `PeerJoined`, `PeerLeft` and
    /// `Resumed`.
    pub fn roster(&self) -> &[RosterEntry] {
        &self.roster
    }

    /// Whether this client reconnects by itself after a loss: the config
    /// asks for it and the server issued a resume token.
    pub fn reconnects(&self) -> bool {
        self.reconnect
    }

    /// Between a lost connection and [`ClientEvent::Resumed`] or
    /// [`ClientEvent::ResumeFailed`].
    pub fn is_reconnecting(&self) -> bool {
        self.shared.reconnecting.load(Ordering::Relaxed)
    }

    /// The (realtime, control) parameters the server peer reported in the
    /// current session's `ready`.
    pub fn server_channel_params(&self) -> (ChannelParams, ChannelParams) {
        lock(&self.shared.link).ready
    }

    /// Sends a binary message. The server forwards it to the other members
    /// (relay rooms). Payloads over the protocol limits are sent anyway; the
    /// server drops them. While reconnecting: [`ClientError::Reconnecting`].
    pub async fn send(&self, channel: Channel, payload: &[u8]) -> Result<(), ClientError> {
        let dc = self.channel(channel)?;
        dc.send(BytesMut::from(payload))
            .await
            .map_err(|e| self.send_error(e))
    }

    /// Sends a text message.
    pub async fn send_text(&self, channel: Channel, text: &str) -> Result<(), ClientError> {
        let dc = self.channel(channel)?;
        dc.send_text(text).await.map_err(|e| self.send_error(e))
    }

    /// The next event; `None` once the connection is fully gone and every
    /// event has been handed out.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        let event = self.events.recv().await;
        if let Some(e) = &event {
            self.track_roster(e);
        }
        event
    }

    /// The next event if one is already queued.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        let event = self.events.try_recv().ok();
        if let Some(e) = &event {
            self.track_roster(e);
        }
        event
    }

    /// Round-trip time of a signaling `ping` (WebSocket, not DataChannel).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        self.shared.link().signaling.ping(PING_TIMEOUT).await
    }

    /// Sends `leave` (once): the server takes this client out of the room
    /// and ends its WebRTC session; the WebSocket stays open (so `ping`
    /// still works). A client that left does not reconnect.
    pub async fn leave(&self) {
        if self.shared.left.swap(true, Ordering::Relaxed) {
            return;
        }
        if self
            .shared
            .link()
            .signaling
            .send(ClientMessage::Leave)
            .is_err()
        {
            debug!("leave: signaling already closed");
        }
    }

    /// Leaves the room and tears everything down: `leave`, then the
    /// WebSocket close (waiting briefly for the server to acknowledge it, so
    /// the server sees an orderly `left` rather than a transport failure),
    /// then the peer connection. A reconnection under way is abandoned.
    pub async fn close(self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        // No reconnection may replace the link from here on.
        self.supervisor.abort();
        self.leave().await;
        let link = self.shared.link();
        link.signaling.close(CLOSE_TIMEOUT).await;
        if let Err(e) = link.pc.close().await {
            debug!(error = %e, "peer connection close");
        }
    }

    fn channel(&self, channel: Channel) -> Result<Arc<dyn DataChannel>, ClientError> {
        if self.is_reconnecting() {
            return Err(ClientError::Reconnecting);
        }
        let link = lock(&self.shared.link);
        Ok(match channel {
            Channel::Realtime => link.realtime.clone(),
            Channel::Control => link.control.clone(),
        })
    }

    fn send_error(&self, e: webrtc::error::Error) -> ClientError {
        // The channel closed under the send: the loss is being noticed.
        if self.is_reconnecting() {
            return ClientError::Reconnecting;
        }
        webrtc_error(e)
    }

    fn track_roster(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::PeerJoined { peer_id, name }
                if !self.roster.iter().any(|r| r.peer_id == *peer_id) =>
            {
                self.roster.push(RosterEntry {
                    peer_id: *peer_id,
                    name: name.clone(),
                });
            }
            ClientEvent::PeerLeft { peer_id, .. } if *peer_id == self.peer_id => {
                self.shared.left.store(true, Ordering::Relaxed);
            }
            ClientEvent::PeerLeft { peer_id, .. } => {
                self.roster.retain(|r| r.peer_id != *peer_id);
            }
            ClientEvent::Resumed {
                roster: Some(roster),
                ..
            } => {
                self.roster = roster
                    .iter()
                    .filter(|r| r.peer_id != self.peer_id)
                    .cloned()
                    .collect();
            }
            _ => {}
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_id", &self.peer_id)
            .field("room", &self.room)
            .field("kind", &self.kind)
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

/// What `welcome` said.
struct Welcomed {
    peer_id: PeerId,
    kind: RoomKind,
    capacity: usize,
    roster: Vec<RosterEntry>,
    ice_servers: Vec<IceServer>,
    resume: Option<Resume>,
    resumed: bool,
}

/// The latest resume token and the room's grace period.
#[derive(Clone)]
struct Resume {
    token: String,
    grace: Duration,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential for the seat: never logged.
        f.debug_struct("Resume")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// The handshake. Everything it starts is owned by values that clean up on
/// drop, so an error or a timeout leaves nothing running.
async fn connect_inner(
    config: ClientConfig,
    options: ConnectOptions,
) -> Result<Client, ClientError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let room = RoomId::try_from(config.room.as_str()).map_err(ClientError::Config)?;
    validate_display_name(&config.name).map_err(ClientError::Config)?;

    let (signaling, mut incoming) = Signaling::open(&config.signaling_url).await?;
    let signaling = Arc::new(signaling);
    signaling.send(join_message(&config, &room, config.token.clone(), None))?;
    let welcome = tokio::time::timeout_at(deadline, await_welcome(&mut incoming))
        .await
        .map_err(|_| ClientError::Timeout("connect"))??;
    let peer_id = welcome.peer_id;
    debug!(%peer_id, %room, resumable = welcome.resume.is_some(), "joined");

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let established = tokio::time::timeout_at(
        deadline,
        establish(
            &config,
            &options,
            &signaling,
            &mut incoming,
            &welcome.ice_servers,
            welcome.kind,
            peer_id,
            &events_tx,
        ),
    )
    .await
    .map_err(|_| ClientError::Timeout("connect"))
    .and_then(|r| r);
    let session = match established {
        Ok(session) => session,
        Err(e) => {
            // Leave on purpose: a socket that just dropped would keep the
            // seat for the room's grace period, and the room looks full.
            let _ = signaling.send(ClientMessage::Leave);
            signaling.close(CLOSE_TIMEOUT).await;
            return Err(e);
        }
    };
    debug!(%peer_id, "connected");

    let shared = Arc::new(Shared {
        link: Mutex::new(Link {
            signaling: signaling.clone(),
            pc: session.pc.clone(),
            realtime: session.realtime.clone(),
            control: session.control.clone(),
            ready: session.ready,
        }),
        left: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        reconnecting: AtomicBool::new(false),
    });
    let reconnect = config.reconnect && welcome.resume.is_some();
    let supervisor = Supervisor {
        options,
        room: room.clone(),
        peer_id,
        kind: welcome.kind,
        shared: shared.clone(),
        events: events_tx,
        signaling,
        incoming: Some(incoming),
        session,
        ice_servers: welcome.ice_servers,
        resume: welcome.resume,
        config,
    };
    Ok(Client {
        peer_id,
        room,
        kind: welcome.kind,
        capacity: welcome.capacity,
        roster: welcome.roster,
        reconnect,
        shared,
        events,
        supervisor: tokio::spawn(supervisor.run()),
    })
}

fn join_message(
    config: &ClientConfig,
    room: &RoomId,
    token: Option<String>,
    resume: Option<String>,
) -> ClientMessage {
    ClientMessage::Join {
        version: PROTOCOL_VERSION,
        room: room.clone(),
        kind: config.kind,
        name: config.name.clone(),
        capacity: config.capacity,
        token,
        resume,
    }
}

async fn await_welcome(
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
) -> Result<Welcomed, ClientError> {
    loop {
        match next_message(incoming).await? {
            ServerMessage::Welcome {
                peer_id,
                kind,
                capacity,
                roster,
                ice_servers,
                resume_token,
                resume_grace_ms,
                resumed,
                ..
            } => {
                let resume = match (resume_token, resume_grace_ms) {
                    (Some(token), Some(ms)) if ms > 0 => Some(Resume {
                        token,
                        grace: Duration::from_millis(ms),
                    }),
                    _ => None,
                };
                return Ok(Welcomed {
                    peer_id,
                    kind,
                    capacity,
                    roster,
                    ice_servers,
                    resume,
                    resumed,
                });
            }
            ServerMessage::Error { code, message, .. } => {
                return Err(ClientError::Signaling(code, message))
            }
            other => unexpected("welcome", &other),
        }
    }
}

/// One WebRTC session with the server peer, up and running.
struct Session {
    pc: Arc<dyn PeerConnection>,
    realtime: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    state: watch::Receiver<RTCPeerConnectionState>,
    ready: (ChannelParams, ChannelParams),
    heard: Arc<Heard>,
    tasks: Tasks,
}

impl Session {
    /// Stops the session's tasks and closes its peer connection in the
    /// background (a dead path may make the close slow).
    fn shut(&mut self) {
        self.tasks.abort_all();
        let pc = self.pc.clone();
        tokio::spawn(async move {
            if let Err(e) = pc.close().await {
                debug!(error = %e, "old peer connection close");
            }
        });
    }
}

/// The offer/answer part of the handshake on an open signaling connection
/// (after `welcome`): peer connection, channels, `offer`, `answer`,
/// candidates, until both channels are open and `ready` has arrived. Room
/// events that arrive meanwhile are passed on.
#[allow(clippy::too_many_arguments)]
async fn establish(
    config: &ClientConfig,
    options: &ConnectOptions,
    signaling: &Signaling,
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
    ice_servers: &[IceServer],
    kind: RoomKind,
    own: PeerId,
    events_tx: &mpsc::Sender<ClientEvent>,
) -> Result<Session, ClientError> {
    let mut tasks = Tasks::default();
    let heard = Arc::new(Heard::new(std::time::Instant::now()));
    let peer = peer::create(
        config,
        options,
        ice_servers,
        kind,
        events_tx.clone(),
        heard.clone(),
    )
    .await?;
    tasks.0.extend(peer.tasks);
    let pc = peer.pc;
    let (mut open, mut state) = (peer.open, peer.state);

    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| ClientError::Protocol("no local description after offer".into()))?
        .sdp;
    signaling.send(ClientMessage::Offer { sdp })?;
    tasks.0.push(spawn_candidate_forwarder(
        peer.candidates,
        signaling.sender(),
    ));

    // Until answered, server candidates wait here: they can only be applied
    // after the remote description.
    let mut early_candidates = Vec::new();
    let mut answered = false;
    let mut ready = None;
    let mut both_open = false;
    // When the WebRTC side fails first (the server closed the channels), the
    // server's `error` saying why is usually already on its way: wait a
    // little for it, since it is the better answer.
    let mut local_failure: Option<(ClientError, tokio::time::Instant)> = None;
    let mut nudge = tokio::time::interval(DRIVER_NUDGE);
    nudge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !(answered && both_open && ready.is_some()) {
        let failure_deadline = local_failure.as_ref().map(|(_, at)| *at);
        tokio::select! {
            msg = next_message(incoming) => match msg? {
                ServerMessage::Answer { sdp } => {
                    if answered {
                        unexpected("no second answer", &ServerMessage::Answer { sdp });
                        continue;
                    }
                    pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                    answered = true;
                    for c in early_candidates.drain(..) {
                        add_remote_candidate(&*pc, c).await;
                    }
                }
                ServerMessage::Candidate { candidate, .. } => {
                    if answered {
                        add_remote_candidate(&*pc, candidate).await;
                    } else {
                        early_candidates.push(candidate);
                    }
                }
                ServerMessage::Ready { realtime, control } => ready = Some((realtime, control)),
                ServerMessage::Error { code, message, .. } => {
                    return Err(ClientError::Signaling(code, message))
                }
                ServerMessage::PeerAway { peer_id, .. } if peer_id == own => {
                    // About the session this one replaces.
                    debug!("own peer_away during the handshake ignored");
                }
                ServerMessage::PeerLeft { peer_id, reason } if peer_id == own => {
                    let _ = events_tx.send(ClientEvent::PeerLeft { peer_id, reason }).await;
                    return Err(ClientError::NotInRoom);
                }
                other => {
                    if let Some(event) = room_event(other) {
                        let _ = events_tx.send(event).await;
                    }
                }
            },
            changed = open.changed(), if !both_open && local_failure.is_none() => {
                if changed.is_err() {
                    local_failure = Some(failed(ClientError::Closed));
                } else {
                    both_open = open.borrow_and_update().both();
                }
            }
            changed = state.changed(), if local_failure.is_none() => {
                let s = *state.borrow_and_update();
                if changed.is_err()
                    || matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)
                {
                    let e = ClientError::Protocol(format!("peer connection {s} before ready"));
                    local_failure = Some(failed(e));
                }
            }
            _ = nudge.tick() => {
                // Setting the low threshold to its current value changes
                // nothing but wakes the driver; see DRIVER_NUDGE.
                let _ = peer.realtime.set_buffered_amount_low_threshold(0).await;
            }
            _ = sleep_until_opt(failure_deadline), if failure_deadline.is_some() => {
                if let Some((e, _)) = local_failure.take() {
                    return Err(e);
                }
            }
        }
    }
    let ready = ready.unwrap_or((ChannelParams::REALTIME, ChannelParams::CONTROL));
    // The server may have said nothing during the handshake: its silence
    // counts from now.
    heard.stamp(std::time::Instant::now());
    Ok(Session {
        pc,
        realtime: peer.realtime,
        control: peer.control,
        state,
        ready,
        heard,
        tasks,
    })
}

/// Why the supervisor stopped watching a session.
enum Watched {
    /// The connection is lost and may be resumed.
    Lost(Loss),
    /// The signaling connection ended and nothing follows.
    Over,
}

/// Why a reconnection ended without the seat.
struct GaveUp {
    code: Option<ErrorCode>,
    reason: String,
}

/// The background task of a connected client: hands server messages on as
/// events, applies late server candidates, reports a silent server, and
/// reconnects when the connection is lost.
struct Supervisor {
    config: ClientConfig,
    options: ConnectOptions,
    room: RoomId,
    peer_id: PeerId,
    kind: RoomKind,
    shared: Arc<Shared>,
    events: mpsc::Sender<ClientEvent>,
    signaling: Arc<Signaling>,
    /// None once the signaling connection has ended.
    incoming: Option<mpsc::UnboundedReceiver<Incoming>>,
    session: Session,
    ice_servers: Vec<IceServer>,
    resume: Option<Resume>,
}

impl Supervisor {
    async fn run(mut self) {
        loop {
            let loss = match self.watch().await {
                Watched::Over => break,
                Watched::Lost(loss) => loss,
            };
            debug!(peer_id = %self.peer_id, ?loss, "connection lost; reconnecting");
            match self.reconnect(loss).await {
                Ok(()) => continue,
                Err(gave_up) => {
                    debug!(peer_id = %self.peer_id, reason = %gave_up.reason, "resume failed");
                    self.emit(ClientEvent::ResumeFailed {
                        code: gave_up.code,
                        reason: gave_up.reason,
                    })
                    .await;
                    self.signaling.abort();
                    break;
                }
            }
        }
        // Sends now fail with `Closed`: nothing is coming back.
        self.shared.reconnecting.store(false, Ordering::Relaxed);
        self.emit(ClientEvent::Closed).await;
    }

    fn may_reconnect(&self) -> bool {
        self.config.reconnect
            && self.resume.is_some()
            && !self.shared.left.load(Ordering::Relaxed)
            && !self.shared.closing.load(Ordering::Relaxed)
    }

    async fn emit(&self, event: ClientEvent) {
        // An application that dropped its receiver hears nothing more.
        let _ = self.events.send(event).await;
    }

    /// Watches the current session until it is lost or over.
    async fn watch(&mut self) -> Watched {
        // `Disconnected` is reported once per session.
        let mut silence_reported = false;
        let mut state_open = true;
        loop {
            let due = match self.config.dead_after {
                Some(d) if !silence_reported => Some(self.session.heard.last() + d),
                _ => None,
            };
            tokio::select! {
                msg = recv_opt(&mut self.incoming) => match msg {
                    Some(msg) => {
                        if let Some(loss) = self.on_message(msg).await {
                            return Watched::Lost(loss);
                        }
                    }
                    None => {
                        self.incoming = None;
                        let close_code = self.signaling.close_code();
                        debug!(?close_code, "signaling connection closed");
                        if self.may_reconnect() && resumable_close(close_code) {
                            return Watched::Lost(Loss::SignalingClosed);
                        }
                        return Watched::Over;
                    }
                },
                changed = self.session.state.changed(), if state_open => {
                    if changed.is_err() {
                        state_open = false;
                        continue;
                    }
                    let s = *self.session.state.borrow_and_update();
                    let dead = matches!(
                        s,
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                    );
                    if dead && self.may_reconnect() {
                        debug!(state = %s, "peer connection lost");
                        return Watched::Lost(self.lost_session());
                    }
                }
                _ = sleep_until_std(due), if due.is_some() => {
                    let Some(dead_after) = self.config.dead_after else { continue };
                    let now = std::time::Instant::now();
                    if let Some(silent_for) = silent_for(self.session.heard.last(), now, dead_after) {
                        debug!(?silent_for, "nothing from the server: disconnected");
                        silence_reported = true;
                        self.emit(ClientEvent::Disconnected { silent_for }).await;
                        if self.may_reconnect() {
                            return Watched::Lost(self.lost_session());
                        }
                    }
                }
            }
        }
    }

    /// The session died while the signaling connection may still be open.
    fn lost_session(&self) -> Loss {
        if self.incoming.is_some() {
            Loss::SessionDead
        } else {
            Loss::SignalingClosed
        }
    }

    /// A server message while a session is up; `Some` when it says the
    /// connection is lost.
    async fn on_message(&mut self, msg: ServerMessage) -> Option<Loss> {
        match msg {
            ServerMessage::Candidate { candidate, .. } => {
                add_remote_candidate(&*self.session.pc, candidate).await;
            }
            ServerMessage::PeerAway { peer_id, grace_ms } if peer_id == self.peer_id => {
                let grace = Duration::from_millis(grace_ms);
                if self.may_reconnect() {
                    return Some(Loss::ServerAway { grace });
                }
                self.emit(ClientEvent::PeerAway { peer_id, grace }).await;
            }
            ServerMessage::PeerLeft { peer_id, reason } if peer_id == self.peer_id => {
                self.shared.left.store(true, Ordering::Relaxed);
                self.emit(ClientEvent::PeerLeft { peer_id, reason }).await;
            }
            other => {
                if let Some(event) = room_event(other) {
                    self.emit(event).await;
                }
            }
        }
        None
    }

    /// Takes the seat back, or says why it cannot.
    async fn reconnect(&mut self, loss: Loss) -> Result<(), GaveUp> {
        let Some(grace) = self.resume.as_ref().map(|r| r.grace) else {
            return Err(gave_up("no resume token"));
        };
        self.shared.reconnecting.store(true, Ordering::Relaxed);
        self.session.shut();
        let now = std::time::Instant::now();
        let seed = fresh_seed(u64::from(self.peer_id.0));
        let mut plan = Reconnector::new(loss, now, grace, seed);
        loop {
            if self.shared.closing.load(Ordering::Relaxed)
                || self.shared.left.load(Ordering::Relaxed)
            {
                return Err(gave_up("the application left or closed"));
            }
            match plan.next(std::time::Instant::now()) {
                Step::GiveUp => {
                    return Err(gave_up(
                        "the grace period ended before the seat could be resumed",
                    ))
                }
                Step::WaitForServer(until) => self.pump_until(until, &mut plan, true).await?,
                Step::Attempt {
                    attempt,
                    strategy,
                    after,
                } => {
                    self.emit(ClientEvent::Reconnecting { attempt, after })
                        .await;
                    let start = std::time::Instant::now() + after;
                    self.pump_until(start, &mut plan, false).await?;
                    let remaining = plan
                        .deadline()
                        .saturating_duration_since(std::time::Instant::now());
                    let limit = self.config.connect_timeout.min(remaining);
                    let new_offer = strategy == Strategy::NewOffer && self.incoming.is_some();
                    debug!(attempt, new_offer, ?limit, "reconnection attempt");
                    let result = if new_offer {
                        tokio::time::timeout(limit, self.new_offer()).await
                    } else {
                        tokio::time::timeout(limit, self.rejoin()).await
                    };
                    match result {
                        Ok(Ok(roster)) => {
                            self.shared.reconnecting.store(false, Ordering::Relaxed);
                            debug!(peer_id = %self.peer_id, attempt, "resumed");
                            let peer_id = self.peer_id;
                            self.emit(ClientEvent::Resumed { peer_id, roster }).await;
                            return Ok(());
                        }
                        Ok(Err(e)) => {
                            if let Some(gave_up) = self.final_failure(&e) {
                                return Err(gave_up);
                            }
                            debug!(attempt, error = %e, "reconnection attempt failed");
                            plan.on_attempt_failed();
                        }
                        Err(_) => {
                            debug!(attempt, "reconnection attempt timed out");
                            plan.on_attempt_failed();
                        }
                    }
                }
            }
        }
    }

    /// Failures no later attempt can fix.
    fn final_failure(&self, e: &ClientError) -> Option<GaveUp> {
        match e {
            ClientError::Signaling(
                code @ (ErrorCode::ResumeInvalid
                | ErrorCode::ResumeExpired
                | ErrorCode::ResumeWrongRoom),
                message,
            ) => Some(GaveUp {
                code: Some(*code),
                reason: message.clone(),
            }),
            ClientError::NotInRoom => {
                self.shared.left.store(true, Ordering::Relaxed);
                Some(gave_up("the server released the seat"))
            }
            _ => None,
        }
    }

    /// Reads the signaling connection (if open) until `until`: room events
    /// are passed on, the server's word about this client goes to `plan`.
    /// With `stop_on_news`, returns as soon as the server said this
    /// client's session is gone or the connection ended.
    async fn pump_until(
        &mut self,
        until: std::time::Instant,
        plan: &mut Reconnector,
        stop_on_news: bool,
    ) -> Result<(), GaveUp> {
        let sleep = tokio::time::sleep_until(until.into());
        tokio::pin!(sleep);
        loop {
            let Some(incoming) = self.incoming.as_mut() else {
                sleep.as_mut().await;
                return Ok(());
            };
            let msg = tokio::select! {
                _ = sleep.as_mut() => return Ok(()),
                msg = next_message(incoming) => msg,
            };
            match msg {
                Err(_) => {
                    self.incoming = None;
                    let close_code = self.signaling.close_code();
                    if !resumable_close(close_code) {
                        return Err(gave_up(&format!(
                            "the server closed the connection (code {})",
                            close_code.unwrap_or_default()
                        )));
                    }
                    plan.on_signaling_closed();
                    if stop_on_news {
                        return Ok(());
                    }
                }
                Ok(ServerMessage::PeerAway { peer_id, grace_ms }) if peer_id == self.peer_id => {
                    plan.on_server_away(std::time::Instant::now(), Duration::from_millis(grace_ms));
                    if stop_on_news {
                        return Ok(());
                    }
                }
                Ok(ServerMessage::PeerLeft { peer_id, reason }) if peer_id == self.peer_id => {
                    self.shared.left.store(true, Ordering::Relaxed);
                    self.emit(ClientEvent::PeerLeft { peer_id, reason }).await;
                    return Err(gave_up("the server released the seat"));
                }
                // Candidates of the dead session.
                Ok(ServerMessage::Candidate { .. }) => {}
                Ok(other) => {
                    if let Some(event) = room_event(other) {
                        self.emit(event).await;
                    }
                }
            }
        }
    }

    /// A new WebRTC session on the signaling connection that is still open.
    async fn new_offer(&mut self) -> Result<Option<Vec<RosterEntry>>, ClientError> {
        self.new_session().await?;
        Ok(None)
    }

    /// A new signaling connection, `join` with the resume token, then a new
    /// WebRTC session.
    async fn rejoin(&mut self) -> Result<Option<Vec<RosterEntry>>, ClientError> {
        let token = match &self.resume {
            Some(r) => r.token.clone(),
            None => return Err(ClientError::Closed),
        };
        // No Close frame: that would release the seat.
        self.signaling.abort();
        self.incoming = None;
        let (signaling, incoming) = Signaling::open(&self.config.signaling_url).await?;
        let signaling = Arc::new(signaling);
        signaling.send(join_message(&self.config, &self.room, None, Some(token)))?;
        self.signaling = signaling;
        let incoming = self.incoming.insert(incoming);
        let welcome = await_welcome(incoming).await?;
        if let Some(resume) = welcome.resume {
            // Each welcome's token replaces the previous one, even if this
            // attempt fails later.
            self.resume = Some(resume);
        }
        if !welcome.resumed || welcome.peer_id != self.peer_id {
            // A fresh seat is not this client's seat: leave it at once.
            let _ = self.signaling.send(ClientMessage::Leave);
            return Err(ClientError::Signaling(
                ErrorCode::ResumeExpired,
                format!(
                    "the server gave a new seat ({}, resumed: {}) instead of {}",
                    welcome.peer_id, welcome.resumed, self.peer_id
                ),
            ));
        }
        self.ice_servers = welcome.ice_servers;
        self.new_session().await?;
        Ok(Some(welcome.roster))
    }

    /// Negotiates a WebRTC session on the current signaling connection and
    /// makes it the one sends go to.
    async fn new_session(&mut self) -> Result<(), ClientError> {
        let incoming = self.incoming.as_mut().ok_or(ClientError::Closed)?;
        let session = establish(
            &self.config,
            &self.options,
            &self.signaling,
            incoming,
            &self.ice_servers,
            self.kind,
            self.peer_id,
            &self.events,
        )
        .await?;
        self.install(session);
        Ok(())
    }

    /// Makes `session` the one sends go to.
    fn install(&mut self, session: Session) {
        *lock(&self.shared.link) = Link {
            signaling: self.signaling.clone(),
            pc: session.pc.clone(),
            realtime: session.realtime.clone(),
            control: session.control.clone(),
            ready: session.ready,
        };
        self.session = session;
    }
}

/// Close code the server uses when it gives up on a connection it thinks
/// is dead or too slow (RFC 6455 "policy violation"); it keeps the seat.
const CLOSE_LOST: u16 = 1008;

/// Whether a signaling connection that ended with `close_code` (the
/// server's Close frame, None when the connection broke) leaves a seat to
/// resume. Any other Close frame is the server's decision (shutting down,
/// a fatal error, the seat resumed on another connection): no reconnection.
fn resumable_close(close_code: Option<u16>) -> bool {
    matches!(close_code, None | Some(CLOSE_LOST))
}

fn gave_up(reason: &str) -> GaveUp {
    GaveUp {
        code: None,
        reason: reason.to_owned(),
    }
}

/// How often `connect` wakes the webrtc driver during the handshake.
///
/// The webrtc 0.21.1 driver flushes outgoing packets only at the top of its
/// loop, but packets queued while it handles events (the DTLS ClientHello on
/// ICE connected, the SCTP INIT on DTLS done, the DCEP opens on SCTP up) wait
/// for its next wake-up, which is the ICE check timer (200 ms) when the
/// server has nothing to send. Traced on loopback: three such 200 ms stalls
/// made every join take about 800 ms. Any API call that wakes the driver
/// flushes them, so during the handshake the client wakes it every 2 ms.
const DRIVER_NUDGE: Duration = Duration::from_millis(2);

/// How long `connect` waits for the server's explanation of a local failure.
const FAILURE_GRACE: Duration = Duration::from_secs(1);

fn failed(e: ClientError) -> (ClientError, tokio::time::Instant) {
    debug!(error = %e, "local failure during connect; waiting for the server's reason");
    (e, tokio::time::Instant::now() + FAILURE_GRACE)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_std(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next server message, or None once the connection has ended (and
/// forever after).
async fn recv_opt(
    incoming: &mut Option<mpsc::UnboundedReceiver<Incoming>>,
) -> Option<ServerMessage> {
    match incoming {
        Some(rx) => next_message(rx).await.ok(),
        None => std::future::pending().await,
    }
}

/// The next server message, skipping (and logging) ones this client does not
/// understand.
async fn next_message(
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
) -> Result<ServerMessage, ClientError> {
    loop {
        match incoming.recv().await {
            Some(Incoming::Msg(m)) => return Ok(m),
            Some(Incoming::Unknown(what)) => warn!(%what, "ignoring unknown server message"),
            None => return Err(ClientError::Closed),
        }
    }
}

fn unexpected(expected: &str, got: &ServerMessage) {
    // Ignored rather than fatal: a newer server may interleave messages this
    // client does not need.
    warn!(expected, got = ?got, "unexpected server message ignored");
}

/// The event for a server message that is about the room, not the session.
fn room_event(msg: ServerMessage) -> Option<ClientEvent> {
    match msg {
        ServerMessage::PeerJoined { peer_id, name } => {
            Some(ClientEvent::PeerJoined { peer_id, name })
        }
        ServerMessage::PeerLeft { peer_id, reason } => {
            Some(ClientEvent::PeerLeft { peer_id, reason })
        }
        ServerMessage::PeerAway { peer_id, grace_ms } => Some(ClientEvent::PeerAway {
            peer_id,
            grace: Duration::from_millis(grace_ms),
        }),
        ServerMessage::PeerBack { peer_id } => Some(ClientEvent::PeerBack { peer_id }),
        ServerMessage::Error {
            code,
            message,
            fatal,
        } => Some(ClientEvent::Error {
            code,
            message,
            fatal,
        }),
        other => {
            unexpected("a room event", &other);
            None
        }
    }
}

async fn add_remote_candidate(pc: &dyn PeerConnection, candidate: String) {
    // "" is the end-of-candidates marker; the ICE agent needs nothing for it.
    if candidate.is_empty() {
        return;
    }
    let init = RTCIceCandidateInit {
        candidate,
        ..Default::default()
    };
    // The server's candidates are also in its answer, so a failure here
    // (duplicate, unparsable) costs nothing: log it.
    if let Err(e) = pc.add_ice_candidate(init).await {
        debug!(error = %e, "remote candidate not added");
    }
}

/// Trickles local candidates, started once the offer is queued.
fn spawn_candidate_forwarder(
    mut candidates: mpsc::UnboundedReceiver<LocalCandidate>,
    signaling: SignalingSender,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(c) = candidates.recv().await {
            let candidate = match c {
                LocalCandidate::Candidate(c) => c,
                LocalCandidate::End => String::new(),
            };
            let msg = ClientMessage::Candidate {
                candidate,
                mid: None,
            };
            if signaling.send(msg).is_err() {
                break;
            }
        }
    })
}

fn webrtc_error(e: webrtc::error::Error) -> ClientError {
    match e {
        webrtc::error::Error::ErrDataChannelClosed => ClientError::Closed,
        other => ClientError::WebRtc(other),
    }
}

/// The link is only touched briefly and never across an await, so a
/// poisoned lock (a panic elsewhere) is recovered rather than propagated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Background tasks of one session, aborted when the session goes away.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn abort_all(&mut self) {
        for t in self.0.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_connection_or_the_servers_lost_close_is_resumed() {
        assert!(resumable_close(None), "broken: no Close frame");
        assert!(
            resumable_close(Some(1008)),
            "the server's dead-connection close"
        );
        for code in [1000, 1001, 1005, 1009, 4001] {
            assert!(!resumable_close(Some(code)), "{code}");
        }
    }

    #[test]
    fn resume_tokens_are_never_logged() {
        let resume = Resume {
            token: "secret-token-value".into(),
            grace: Duration::from_secs(30),
        };
        let shown = format!("{resume:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(shown.contains("30s"), "{shown}");
    }
}
