//! [`Client`]: the join handshake and the session API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rtcrelay_protocol::ids::validate_display_name;
use rtcrelay_protocol::signaling::{ChannelParams, RosterEntry};
use rtcrelay_protocol::{ClientMessage, PeerId, RoomId, RoomKind, ServerMessage, PROTOCOL_VERSION};
use tokio::sync::mpsc;
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
    ready: (ChannelParams, ChannelParams),
    signaling: Signaling,
    /// Set once this client is out of the room (it sent `leave`, or the
    /// server reported its own `peer_left`), so `close` does not send a
    /// `leave` the server would answer with `not_joined`.
    left: AtomicBool,
    pc: Arc<dyn PeerConnection>,
    realtime: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    events: mpsc::Receiver<ClientEvent>,
    tasks: Tasks,
}

impl Client {
    /// Joins `config.room` and connects to the server peer. Steps: WebSocket
    /// dial → `join` → `welcome` → peer connection with `realtime`
    /// (unordered, no retransmits) and `control` (reliable) → `offer` →
    /// `answer` and server candidates (local candidates are trickled) → done
    /// when both channels are open locally *and* the server's `ready` has
    /// arrived. Any server `error` on the way fails the call with
    /// [`ClientError::Signaling`]; the whole call is bounded by
    /// `config.connect_timeout`.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        Client::connect_with(config, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with lower-level options, e.g. wrong channel
    /// parameters to check that the server rejects them.
    pub async fn connect_with(
        config: ClientConfig,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let limit = config.connect_timeout;
        match tokio::time::timeout(limit, connect_inner(config, options)).await {
            Ok(result) => result,
            // Dropping the future drops the half-built client: its tasks are
            // aborted and the peer connection is closed by its own Drop.
            Err(_) => Err(ClientError::Timeout("connect")),
        }
    }

    /// This client's id, assigned by the server.
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
    /// [`Client::next_event`] hands out `PeerJoined` and `PeerLeft`.
    pub fn roster(&self) -> &[RosterEntry] {
        &self.roster
    }

    /// The (realtime, control) parameters the server peer reported in `ready`.
    pub fn server_channel_params(&self) -> (ChannelParams, ChannelParams) {
        self.ready
    }

    /// Sends a binary message. The server forwards it to the other members
    /// (relay rooms). Payloads over the protocol limits are sent anyway; the
    /// server drops them.
    pub async fn send(&self, channel: Channel, payload: &[u8]) -> Result<(), ClientError> {
        self.channel(channel)
            .send(BytesMut::from(payload))
            .await
            .map_err(webrtc_error)
    }

    /// Sends a text message.
    pub async fn send_text(&self, channel: Channel, text: &str) -> Result<(), ClientError> {
        self.channel(channel)
            .send_text(text)
            .await
            .map_err(webrtc_error)
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
        self.signaling.ping(PING_TIMEOUT).await
    }

    /// Sends `leave` (once): the server takes this client out of the room
    /// and ends its WebRTC session; the WebSocket stays open (so `ping`
    /// still works).
    pub async fn leave(&self) {
        if self.left.swap(true, Ordering::Relaxed) {
            return;
        }
        if self.signaling.send(ClientMessage::Leave).is_err() {
            debug!("leave: signaling already closed");
        }
    }

    /// Leaves the room and tears everything down: `leave`, then the
    /// WebSocket close (waiting briefly for the server to acknowledge it, so
    /// the server sees an orderly `left` rather than a transport failure),
    /// then the peer connection.
    pub async fn close(mut self) {
        self.leave().await;
        self.signaling.close(CLOSE_TIMEOUT).await;
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "peer connection close");
        }
        self.tasks.abort_all();
    }

    fn channel(&self, channel: Channel) -> &Arc<dyn DataChannel> {
        match channel {
            Channel::Realtime => &self.realtime,
            Channel::Control => &self.control,
        }
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
                self.left.store(true, Ordering::Relaxed);
            }
            ClientEvent::PeerLeft { peer_id, .. } => {
                self.roster.retain(|r| r.peer_id != *peer_id);
            }
            _ => {}
        }
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

/// The handshake. Everything it starts is owned by values that clean up on
/// drop, so an error or a timeout leaves nothing running.
async fn connect_inner(
    config: ClientConfig,
    options: ConnectOptions,
) -> Result<Client, ClientError> {
    let room = RoomId::try_from(config.room.as_str()).map_err(ClientError::Config)?;
    validate_display_name(&config.name).map_err(ClientError::Config)?;

    let (signaling, mut incoming) = Signaling::open(&config.signaling_url).await?;
    signaling.send(ClientMessage::Join {
        version: PROTOCOL_VERSION,
        room: room.clone(),
        kind: config.kind,
        name: config.name.clone(),
        capacity: config.capacity,
        token: config.token.clone(),
        resume: None,
    })?;

    let (peer_id, kind, capacity, roster, ice_servers) = loop {
        match next_message(&mut incoming).await? {
            ServerMessage::Welcome {
                peer_id,
                kind,
                capacity,
                roster,
                ice_servers,
                ..
            } => break (peer_id, kind, capacity, roster, ice_servers),
            ServerMessage::Error { code, message, .. } => {
                return Err(ClientError::Signaling(code, message))
            }
            other => unexpected("welcome", &other),
        }
    };
    debug!(%peer_id, %room, "joined");

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let mut tasks = Tasks::default();
    let heard = Arc::new(Heard::new(std::time::Instant::now()));
    let peer = peer::create(
        &config,
        &options,
        &ice_servers,
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
            msg = next_message(&mut incoming) => match msg? {
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
    debug!(%peer_id, "connected");

    if let Some(dead_after) = config.dead_after {
        // The server may have said nothing during the handshake: its
        // silence counts from now.
        heard.stamp(std::time::Instant::now());
        tasks
            .0
            .push(spawn_watchdog(heard, dead_after, events_tx.clone()));
    }
    tasks
        .0
        .push(spawn_dispatcher(incoming, pc.clone(), events_tx));
    Ok(Client {
        peer_id,
        room,
        kind,
        capacity,
        roster,
        ready,
        signaling,
        left: AtomicBool::new(false),
        pc,
        realtime: peer.realtime,
        control: peer.control,
        events,
        tasks,
    })
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

/// After `connect`: server messages become events; late server candidates
/// are applied. Emits `Closed` when the WebSocket ends.
fn spawn_dispatcher(
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Sender<ClientEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let msg = match next_message(&mut incoming).await {
                Ok(m) => m,
                Err(_) => break,
            };
            let event = match msg {
                ServerMessage::Candidate { candidate, .. } => {
                    add_remote_candidate(&*pc, candidate).await;
                    continue;
                }
                other => room_event(other),
            };
            if let Some(event) = event {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
        let _ = events.send(ClientEvent::Closed).await;
    })
}

/// Reports `Disconnected` once the server has been silent for
/// `dead_after`, then stops.
fn spawn_watchdog(
    heard: Arc<Heard>,
    dead_after: Duration,
    events: mpsc::Sender<ClientEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = std::time::Instant::now();
            if let Some(silent_for) = silent_for(heard.last(), now, dead_after) {
                debug!(?silent_for, "nothing from the server: disconnected");
                let _ = events.send(ClientEvent::Disconnected { silent_for }).await;
                return;
            }
            let due = heard.last() + dead_after;
            tokio::time::sleep_until(due.into()).await;
        }
    })
}

fn webrtc_error(e: webrtc::error::Error) -> ClientError {
    match e {
        webrtc::error::Error::ErrDataChannelClosed => ClientError::Closed,
        other => ClientError::WebRtc(other),
    }
}

/// Background tasks of one client, aborted when the client goes away.
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
