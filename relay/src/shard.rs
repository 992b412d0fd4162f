//! A shard: one task that owns the str0m `Rtc` of some peers and the rooms
//! those peers are in (all members of a room share a shard, so forwarding
//! and snapshots never leave it). It wakes for a datagram, a command, the
//! earliest peer deadline or the earliest game-room deadline (tick,
//! snapshot, retransmission), and touches only the peers concerned: those
//! that got input, whose deadline passed, or that were written to.
//!
//! Peers under a network-lab setting have their datagrams impaired both
//! ways on the shard itself ([`netlab`]); the others take the plain path.
//!
//! A ready peer's deadline also covers its liveness ([`crate::liveness`]):
//! it is woken to get a heartbeat frame when nothing was written to it for
//! `heartbeat_interval`, and closed when nothing was heard from it for
//! `dead_after`. Both are two timestamps per peer, so a datagram costs no
//! more than before.

mod netlab;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rtcrelay_protocol::frame::{Relayed, HEARTBEAT};
use rtcrelay_protocol::signaling::ChannelParams;
use rtcrelay_protocol::{PeerId, RoomId, RoomKind};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::authoritative::{AuthoritativeRoom, GameConfig, GameFactory, ResumeRules, RoomOutput};
use crate::deadlines::Deadlines;
use crate::liveness::{Due, Liveness, LivenessConfig};
use crate::metrics::{ChannelLabel, ReasonLabel, RelayMetrics};
use crate::room::{check_channel, realtime_has_room, Lane, Rooms};
use crate::routes::{Route, Routes};
use crate::session::{SeatEnd, SessionEvent};
use netlab::{PeerPath, ShardLab};

/// A session that is not Ready this long after its answer is closed. An
/// ICE-lite agent with no remote candidates never times out by itself.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages handled per wake-up before the peers are polled, so that a busy
/// inbox cannot starve deadlines.
const INBOX_BATCH: usize = 256;

/// Addresses a shard remembers per peer to skip the integrity check for STUN
/// from an address it already verified (mirrors the routes' cap).
const MAX_VERIFIED_ADDRS: usize = crate::routes::MAX_ADDRS_PER_PEER;

pub(crate) enum ShardMsg {
    Datagram(Datagram),
    Open(Box<NewSession>),
    Candidate {
        peer: PeerId,
        session: u64,
        candidate: Candidate,
    },
    /// Ends `peer`'s session `session` (if it is the current one) and does
    /// `seat` with its seat in `room` (also when it has no session).
    Close {
        peer: PeerId,
        session: Option<u64>,
        room: RoomId,
        seat: SeatEnd,
    },
    Shutdown,
}

pub(crate) struct Datagram {
    pub route: Route,
    pub source: SocketAddr,
    pub received: Instant,
    pub data: Vec<u8>,
}

pub(crate) struct NewSession {
    pub peer: PeerId,
    pub session: u64,
    pub room: RoomId,
    pub kind: RoomKind,
    pub name: String,
    pub rtc: Rtc,
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

/// What a shard shares with the rest of the relay.
pub(crate) struct ShardContext {
    pub socket: Arc<UdpSocket>,
    /// The address str0m sees as the destination of received datagrams: the
    /// host candidate it answered with.
    pub local: SocketAddr,
    pub routes: Arc<Mutex<Routes>>,
    pub metrics: RelayMetrics,
    pub realtime_buffer_limit: usize,
    pub games: Arc<dyn GameFactory>,
    pub game: GameConfig,
    /// Per room: the away policy and after-grace rule its game follows.
    pub resume: ResumeRules,
    /// The game authoritative rooms run.
    pub game_name: String,
    pub record_dir: Option<std::path::PathBuf>,
    /// The network lab (impairment per scope), shared with the admin API.
    pub netlab: Arc<rtcrelay_netlab::Lab>,
    /// When a ready peer is dead, and when it needs a heartbeat.
    pub liveness: LivenessConfig,
    /// Authoritative rooms of every shard whose match is in progress
    /// ([`crate::Relay::active_matches`]); each shard adds and removes its own.
    pub active_matches: Arc<AtomicUsize>,
}

pub(crate) fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // Routes stay consistent across a panic elsewhere: every update is a
    // handful of map operations that cannot panic halfway.
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a session ends.
enum End {
    /// Closed by signaling (no event), or already reported.
    Quiet,
    Report(SessionEvent),
}

struct Peer {
    session: u64,
    room: RoomId,
    /// The authoritative room (key into `Shard::games`), if in one.
    game: Option<u64>,
    rtc: Rtc,
    events: mpsc::UnboundedSender<SessionEvent>,
    /// Channel ids and parameters, indexed by [`lane_index`].
    lanes: [Option<(ChannelId, ChannelParams)>; 2],
    ready: bool,
    connect_by: Instant,
    /// Queued in `Shard::dirty`.
    queued: bool,
    /// Source addresses whose STUN str0m accepted.
    verified: Vec<SocketAddr>,
    end: Option<End>,
    /// Its network-lab path, while a lab setting applies to it.
    impaired: Option<Box<PeerPath>>,
    /// Last datagram heard, last channel write; enforced once ready.
    liveness: Liveness,
    /// What its end does with its seat: `Keep` unless signaling said
    /// otherwise (a session that ends on its own keeps it).
    seat_end: SeatEnd,
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Realtime => 0,
        Lane::Control => 1,
    }
}

impl Peer {
    fn channel_id(&self, lane: Lane) -> Option<ChannelId> {
        self.lanes[lane_index(lane)].map(|(id, _)| id)
    }

    fn lane_of(&self, id: ChannelId) -> Option<Lane> {
        [Lane::Realtime, Lane::Control]
            .into_iter()
            .find(|l| self.channel_id(*l) == Some(id))
    }
}

/// What a peer's str0m events ask of the room it is in.
enum PeerAction {
    /// A message on one of its channels.
    Message(Lane, bool, Vec<u8>),
    /// Both channels are open.
    Ready,
}

pub(crate) struct Shard {
    index: usize,
    ctx: ShardContext,
    peers: HashMap<PeerId, Peer>,
    rooms: Rooms,
    deadlines: Deadlines<PeerId>,
    /// Authoritative rooms by key, their keys by room id, their deadlines.
    games: HashMap<u64, AuthoritativeRoom>,
    game_keys: HashMap<RoomId, u64>,
    game_deadlines: Deadlines<u64>,
    next_game_key: u64,
    /// Game rooms (keys) whose match is in progress, as counted in
    /// `ctx.active_matches`.
    running_matches: HashSet<u64>,
    /// Peers to poll: they got input or were written to.
    dirty: Vec<PeerId>,
    /// Peers whose session ends; cleaned up after polling.
    ending: Vec<PeerId>,
    outbox: Vec<Transmit>,
    // Scratch buffers, kept to avoid an allocation per wake-up.
    expired: Vec<PeerId>,
    expired_games: Vec<u64>,
    targets: Vec<PeerId>,
    actions: Vec<PeerAction>,
    /// Network-lab paths: version seen, wake-ups, reports.
    lab: ShardLab,
}

fn drop_datagram(metrics: &RelayMetrics, reason: &'static str) {
    metrics
        .datagrams_dropped
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

fn drop_message(metrics: &RelayMetrics, reason: &'static str) {
    metrics
        .messages_dropped
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// Marks `peer` for polling (once).
fn mark(dirty: &mut Vec<PeerId>, id: PeerId, peer: &mut Peer) {
    if !peer.queued {
        peer.queued = true;
        dirty.push(id);
    }
}

/// Ends `peer`'s session (the first reason wins).
fn end(ending: &mut Vec<PeerId>, id: PeerId, peer: &mut Peer, how: End) {
    if peer.end.is_none() {
        peer.end = Some(how);
        ending.push(id);
    }
}

/// Hands one input to `peer`; false when it refused it. A refusal is
/// harmless unless it killed the `Rtc`, which ends the session.
fn feed(ending: &mut Vec<PeerId>, id: PeerId, peer: &mut Peer, input: Input) -> bool {
    let Err(e) = peer.rtc.handle_input(input) else {
        return true;
    };
    debug!(peer = %id, error = %e, "input refused by the peer");
    if !peer.rtc.is_alive() {
        end(ending, id, peer, closed(format!("WebRTC error: {e}")));
    }
    false
}

fn closed(reason: impl Into<String>) -> End {
    End::Report(SessionEvent::Closed {
        reason: reason.into(),
    })
}

/// A datagram as it reaches a peer's `Rtc`: on arrival, or when the lab
/// releases it.
struct Incoming<'a> {
    source: SocketAddr,
    /// Routed by its STUN USERNAME (its source address is not learned yet).
    by_ufrag: bool,
    received: Instant,
    data: &'a [u8],
}

/// Hands a datagram to `peer`'s `Rtc`, learning its source address once
/// str0m has verified a STUN request from it.
fn receive(
    ctx: &ShardContext,
    ending: &mut Vec<PeerId>,
    dirty: &mut Vec<PeerId>,
    id: PeerId,
    peer: &mut Peer,
    d: Incoming<'_>,
) {
    let metrics = &ctx.metrics;
    let Ok(recv) = Receive::new(Protocol::Udp, d.source, ctx.local, d.data) else {
        debug!(peer = %id, source = %d.source, len = d.data.len(), "datagram not STUN/DTLS/RTP");
        drop_datagram(metrics, "unparseable");
        return;
    };
    let input = Input::Receive(d.received, recv);
    if d.by_ufrag && !peer.verified.contains(&d.source) {
        // Remember the address only once str0m has checked the message
        // integrity, so that nobody can claim a session by its ufrag alone.
        if !peer.rtc.accepts(&input) {
            debug!(peer = %id, source = %d.source, "STUN request not accepted");
            drop_datagram(metrics, "not_accepted");
            return;
        }
        if lock(&ctx.routes).learn_addr(id, peer.session, d.source) {
            debug!(peer = %id, source = %d.source, "learned peer address");
            if peer.verified.len() >= MAX_VERIFIED_ADDRS {
                peer.verified.remove(0);
            }
            peer.verified.push(d.source);
        }
    }
    if feed(ending, id, peer, input) {
        peer.liveness.heard(d.received);
    } else {
        drop_datagram(metrics, "peer_error");
    }
    if peer.end.is_none() {
        mark(dirty, id, peer);
    }
}

impl Shard {
    pub(crate) fn new(index: usize, ctx: ShardContext) -> Shard {
        Shard {
            index,
            lab: ShardLab::new(ctx.netlab.clone()),
            ctx,
            peers: HashMap::new(),
            rooms: Rooms::default(),
            deadlines: Deadlines::default(),
            games: HashMap::new(),
            game_keys: HashMap::new(),
            game_deadlines: Deadlines::default(),
            next_game_key: 0,
            running_matches: HashSet::new(),
            dirty: Vec::new(),
            ending: Vec::new(),
            outbox: Vec::new(),
            expired: Vec::new(),
            expired_games: Vec::new(),
            targets: Vec::new(),
            actions: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<ShardMsg>) {
        debug!(shard = self.index, "shard started");
        let mut stop = false;
        while !stop {
            let next = [
                self.deadlines.next(),
                self.game_deadlines.next(),
                self.lab.next_wake(),
            ]
            .into_iter()
            .flatten()
            .min();
            let msg = match next {
                Some(at) => {
                    tokio::select! {
                        m = inbox.recv() => Some(m),
                        () = tokio::time::sleep_until(at.into()) => None,
                    }
                }
                None => Some(inbox.recv().await),
            };
            match msg {
                Some(Some(m)) => stop = self.handle(m),
                Some(None) => stop = true,
                None => {}
            }
            // str0m wants its output drained after every input: its DTLS
            // layer keeps at most 30 unprocessed records per peer, so feeding
            // a burst of datagrams before polling would drop records. Only
            // the sending to the socket is batched.
            self.process();
            for _ in 0..INBOX_BATCH {
                if stop {
                    break;
                }
                match inbox.try_recv() {
                    Ok(m) => {
                        stop = self.handle(m);
                        self.process();
                    }
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            // One atomic load when the lab did not change.
            self.refresh_lab(now);
            self.expire(now);
            self.process();
            self.flush().await;
        }
        self.shutdown().await;
        debug!(shard = self.index, "shard stopped");
    }

    /// Handles one message; true means stop.
    fn handle(&mut self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Datagram(d) => self.on_datagram(d),
            ShardMsg::Open(s) => self.on_open(*s),
            ShardMsg::Candidate {
                peer: id,
                session,
                candidate,
            } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if peer.session == session && peer.end.is_none() {
                        peer.rtc.add_remote_candidate(candidate);
                        mark(&mut self.dirty, id, peer);
                    }
                }
            }
            ShardMsg::Close {
                peer: id,
                session,
                room,
                seat,
            } => {
                let live = self
                    .peers
                    .get_mut(&id)
                    .filter(|p| session.is_none_or(|s| p.session == s));
                match live {
                    Some(peer) => {
                        peer.seat_end = seat;
                        end(&mut self.ending, id, peer, End::Quiet);
                    }
                    // No session: the seat of an away player.
                    None => self.end_seat(id, &room, seat, Instant::now()),
                }
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    fn on_open(&mut self, s: NewSession) {
        if self.peers.contains_key(&s.peer) {
            // An older session of the same peer that signaling replaced.
            if let Some(old) = self.peers.get_mut(&s.peer) {
                end(&mut self.ending, s.peer, old, End::Quiet);
            }
            self.finish(s.peer);
        }
        self.rooms.join(&s.room, s.peer);
        info!(
            peer = %s.peer,
            room = %s.room,
            kind = s.kind.as_str(),
            shard = self.index,
            rooms = self.rooms.len(),
            "session opened"
        );
        let now = Instant::now();
        let mut refused = None;
        let game = match s.kind {
            // Signaling opens no server sessions for p2p rooms (their members
            // connect to each other); were one opened, it would just relay.
            RoomKind::Relay | RoomKind::P2p => None,
            // A peer whose seat was kept takes it back.
            RoomKind::Authoritative => match self.reseat(&s.room, s.peer, now) {
                Some(key) => Some(key),
                None => match self.seat(&s.room, s.peer, &s.name, now) {
                    Ok(key) => Some(key),
                    Err(reason) => {
                        refused = Some(reason);
                        None
                    }
                },
            },
        };
        let impaired = self.lab.path_for(s.peer, &s.room, now);
        let mut peer = Peer {
            session: s.session,
            room: s.room,
            game,
            rtc: s.rtc,
            events: s.events,
            lanes: [None, None],
            ready: false,
            connect_by: Instant::now() + CONNECT_TIMEOUT,
            queued: false,
            verified: Vec::new(),
            end: None,
            impaired,
            liveness: Liveness::new(now),
            seat_end: SeatEnd::Keep,
        };
        if let Some(reason) = refused {
            end(&mut self.ending, s.peer, &mut peer, closed(reason));
        }
        mark(&mut self.dirty, s.peer, &mut peer);
        self.peers.insert(s.peer, peer);
        if let Some(key) = game {
            self.drain_game(key, now);
        }
    }

    /// Seats `peer` in the authoritative room `room`, creating the room (and
    /// its game, with a fresh random seed) for its first player.
    fn seat(
        &mut self,
        room: &RoomId,
        peer: PeerId,
        name: &str,
        now: Instant,
    ) -> Result<u64, String> {
        let key = match self.game_keys.get(room) {
            Some(key) => *key,
            None => {
                let seed = rand::random::<u64>();
                let sim = self
                    .ctx
                    .games
                    .create(&self.ctx.game_name, seed)
                    .ok_or_else(|| {
                        format!("this relay cannot run the game {:?}", self.ctx.game_name)
                    })?;
                let key = self.next_game_key;
                self.next_game_key += 1;
                let policy = self.ctx.resume.for_room(room);
                let config = GameConfig {
                    away: policy.away,
                    after_grace: policy.after_grace,
                    ..self.ctx.game.clone()
                };
                let mut game =
                    AuthoritativeRoom::new(sim, seed, config, self.ctx.metrics.clone(), now);
                if self.ctx.record_dir.is_none() {
                    // Nobody will read it: no memory growing with each tick.
                    game.record_nothing();
                }
                info!(%room, game = %self.ctx.game_name, seed, "authoritative room created");
                self.games.insert(key, game);
                self.game_keys.insert(room.clone(), key);
                key
            }
        };
        let joined = match self.games.get_mut(&key) {
            Some(game) => game.join(peer, name, now),
            None => Err("the room is gone".to_string()),
        };
        if let Err(reason) = joined {
            self.drop_game_if_empty(room, key);
            return Err(format!("the game refused to seat you: {reason}"));
        }
        Ok(key)
    }

    /// The key of `room`'s game if `peer` has a kept seat there, which it
    /// now takes back.
    fn reseat(&mut self, room: &RoomId, peer: PeerId, now: Instant) -> Option<u64> {
        let key = *self.game_keys.get(room)?;
        let game = self.games.get_mut(&key)?;
        if !game.rejoin(peer, now) {
            return None;
        }
        info!(%peer, %room, "seat taken back");
        Some(key)
    }

    /// Does `seat` with `peer`'s seat in `room`'s game, if it has one.
    fn end_seat(&mut self, peer: PeerId, room: &RoomId, seat: SeatEnd, now: Instant) {
        let Some(&key) = self.game_keys.get(room) else {
            return;
        };
        let Some(game) = self.games.get_mut(&key) else {
            return;
        };
        match seat {
            SeatEnd::Keep => game.away(peer, now),
            SeatEnd::Leave => game.leave(peer, now),
            SeatEnd::GraceOver => game.release(peer, now),
        }
        self.drain_game(key, now);
        self.drop_game_if_empty(room, key);
    }

    fn drop_game_if_empty(&mut self, room: &RoomId, key: u64) {
        if !self
            .games
            .get(&key)
            .is_some_and(AuthoritativeRoom::is_empty)
        {
            return;
        }
        let Some(game) = self.games.remove(&key) else {
            return;
        };
        self.game_keys.remove(room);
        self.game_deadlines.remove(key);
        if self.running_matches.remove(&key) {
            self.ctx.active_matches.fetch_sub(1, Ordering::Relaxed);
        }
        let log = game.match_log();
        info!(%room, ticks = game.tick(), "authoritative room closed");
        if let Some(dir) = &self.ctx.record_dir {
            let path = dir.join(format!("{room}-{:016x}.json", log.seed));
            let json = log.to_json();
            // Off the shard's task: the file may be megabytes.
            tokio::task::spawn_blocking(move || match std::fs::write(&path, json) {
                Ok(()) => info!(path = %path.display(), "match log written"),
                Err(e) => warn!(path = %path.display(), error = %e, "cannot write the match log"),
            });
        }
    }

    /// Sends what the game room wants sent and re-arms its deadline. A
    /// snapshot that does not fit the realtime lane is dropped, never queued;
    /// control messages that do not fit are dropped too (the room resends
    /// critical events until they are acknowledged).
    fn drain_game(&mut self, key: u64, now: Instant) {
        let Some(game) = self.games.get_mut(&key) else {
            return;
        };
        let metrics = &self.ctx.metrics;
        while let Some(output) = game.poll_output() {
            let (target, lane, data, binary) = match output {
                RoomOutput::Realtime { peer, data } => (peer, Lane::Realtime, data, true),
                RoomOutput::Control { peer, text } => {
                    (peer, Lane::Control, text.into_bytes(), false)
                }
            };
            let Some(peer) = self.peers.get_mut(&target).filter(|p| p.end.is_none()) else {
                continue;
            };
            let Some(mut channel) = peer.channel_id(lane).and_then(|c| peer.rtc.channel(c)) else {
                drop_message(metrics, "not_open");
                continue;
            };
            let fits = lane == Lane::Control
                || realtime_has_room(
                    channel.buffered_amount(),
                    data.len(),
                    self.ctx.realtime_buffer_limit,
                );
            let written = fits && matches!(channel.write(binary, &data), Ok(true));
            if written {
                peer.liveness.sent(now);
                mark(&mut self.dirty, target, peer);
            } else if lane == Lane::Realtime {
                metrics.game.snapshots_dropped.inc();
            } else {
                drop_message(metrics, "buffer_full");
            }
        }
        self.game_deadlines.set(key, game.next_timeout().max(now));
        // One flag per room, so the shared count moves only on a change.
        if game.in_match() {
            if self.running_matches.insert(key) {
                self.ctx.active_matches.fetch_add(1, Ordering::Relaxed);
            }
        } else if self.running_matches.remove(&key) {
            self.ctx.active_matches.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        let id = d.route.peer;
        let Some(peer) = self
            .peers
            .get_mut(&id)
            .filter(|p| p.session == d.route.session && p.end.is_none())
        else {
            // The session ended between routing and now.
            drop_datagram(&self.ctx.metrics, "stale_route");
            return;
        };
        if let Some(path) = peer.impaired.as_deref_mut() {
            // Into the lab; str0m gets it when the lab releases it.
            self.lab.push_up(id, path, d);
            return;
        }
        let incoming = Incoming {
            source: d.source,
            by_ufrag: d.route.by_ufrag,
            received: d.received,
            data: &d.data,
        };
        receive(
            &self.ctx,
            &mut self.ending,
            &mut self.dirty,
            id,
            peer,
            incoming,
        );
    }

    /// Feeds a timeout to the peers whose deadline passed, and releases
    /// what the lab holds for peers whose path is due.
    fn expire(&mut self, now: Instant) {
        self.expire_lab(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.deadlines.expire(now, &mut expired);
        for id in expired.drain(..) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.end.is_some() {
                continue;
            }
            if !peer.ready && now >= peer.connect_by {
                self.ctx
                    .metrics
                    .sessions_rejected
                    .get_or_create(&ReasonLabel {
                        reason: "connect_timeout",
                    })
                    .inc();
                let reason = format!(
                    "no working DataChannels {} s after the answer (ICE, DTLS or channel setup \
                     did not complete)",
                    CONNECT_TIMEOUT.as_secs()
                );
                end(&mut self.ending, id, peer, closed(reason));
                continue;
            }
            if peer.ready {
                match peer.liveness.due(now, &self.ctx.liveness) {
                    Due::Dead => {
                        self.ctx.metrics.dead_peers.inc();
                        let reason = self.ctx.liveness.dead_reason();
                        info!(peer = %id, room = %peer.room, %reason, "peer is dead");
                        end(&mut self.ending, id, peer, closed(reason));
                        continue;
                    }
                    Due::Heartbeat => heartbeat(id, peer, now, &self.ctx.metrics),
                    Due::Nothing => {}
                }
            }
            feed(&mut self.ending, id, peer, Input::Timeout(now));
            if peer.end.is_none() {
                mark(&mut self.dirty, id, peer);
            }
        }
        self.expired = expired;

        let mut expired = std::mem::take(&mut self.expired_games);
        self.game_deadlines.expire(now, &mut expired);
        for key in expired.drain(..) {
            if let Some(game) = self.games.get_mut(&key) {
                game.handle_timeout(now);
                self.drain_game(key, now);
            }
        }
        self.expired_games = expired;
    }

    /// Polls the dirty peers (forwarding may dirty more), then cleans up the
    /// sessions that ended.
    fn process(&mut self) {
        while let Some(id) = self.dirty.pop() {
            self.poll_peer(id);
        }
        while let Some(id) = self.ending.pop() {
            self.finish(id);
        }
    }

    fn poll_peer(&mut self, id: PeerId) {
        let metrics = &self.ctx.metrics;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.queued = false;
        if peer.end.is_some() {
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(t)) => match peer.impaired.as_deref_mut() {
                    // Into the lab; sent when the lab releases it.
                    Some(path) => self.lab.push_down(id, path, t),
                    None => self.outbox.push(t),
                },
                Ok(Output::Timeout(t)) => {
                    let t = if peer.ready {
                        t.min(peer.liveness.next_deadline(&self.ctx.liveness))
                    } else {
                        t.min(peer.connect_by)
                    };
                    self.deadlines.set(id, t);
                    break;
                }
                Ok(Output::Event(e)) => {
                    if let Some(how) = on_event(id, peer, e, &mut actions, metrics) {
                        end(&mut self.ending, id, peer, how);
                        break;
                    }
                }
                Err(e) => {
                    end(
                        &mut self.ending,
                        id,
                        peer,
                        closed(format!("WebRTC error: {e}")),
                    );
                    break;
                }
            }
        }
        if !peer.rtc.is_alive() {
            end(
                &mut self.ending,
                id,
                peer,
                closed("the WebRTC session ended"),
            );
        }
        let game = peer.game;
        match game {
            None => {
                for action in actions.drain(..) {
                    if let PeerAction::Message(lane, binary, data) = action {
                        self.forward(id, lane, binary, &data);
                    }
                }
            }
            Some(key) if !actions.is_empty() => {
                let now = Instant::now();
                if let Some(room) = self.games.get_mut(&key) {
                    for action in actions.drain(..) {
                        play(room, id, action, now, metrics);
                    }
                }
                actions.clear();
                self.drain_game(key, now);
            }
            Some(_) => {}
        }
        self.actions = actions;
    }

    /// Sends a member's message to the other members of its room.
    fn forward(&mut self, sender: PeerId, lane: Lane, binary: bool, payload: &[u8]) {
        let metrics = &self.ctx.metrics;
        if payload.len() > lane.max_payload() {
            debug!(peer = %sender, channel = lane.label(), len = payload.len(), "message too large");
            drop_message(metrics, "too_large");
            return;
        }
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        if let Some(p) = self.peers.get(&sender) {
            let members = self.rooms.members(&p.room);
            targets.extend(members.iter().copied().filter(|m| *m != sender));
        }
        let frame = Relayed {
            sender,
            text: !binary,
            payload,
        }
        .encode();
        let relayed = metrics
            .messages_relayed
            .get_or_create(&ChannelLabel {
                channel: lane.label(),
            })
            .clone();
        let now = Instant::now();
        for &target in &targets {
            let Some(peer) = self.peers.get_mut(&target) else {
                continue;
            };
            if peer.end.is_some() {
                continue;
            }
            let Some(mut channel) = peer.channel_id(lane).and_then(|c| peer.rtc.channel(c)) else {
                // The target has not opened this channel (yet).
                drop_message(metrics, "not_open");
                continue;
            };
            if lane == Lane::Realtime
                && !realtime_has_room(
                    channel.buffered_amount(),
                    frame.len(),
                    self.ctx.realtime_buffer_limit,
                )
            {
                drop_message(metrics, "buffer_full");
                continue;
            }
            match channel.write(true, &frame) {
                Ok(true) => {
                    relayed.inc();
                    peer.liveness.sent(now);
                    mark(&mut self.dirty, target, peer);
                }
                Ok(false) => drop_message(metrics, "buffer_full"),
                Err(e) => {
                    debug!(peer = %target, error = %e, "channel write failed");
                    drop_message(metrics, "write_error");
                }
            }
        }
        self.targets = targets;
    }

    /// Removes an ended session from every map, closes its `Rtc` (sending
    /// the DTLS close_notify) and reports the end.
    fn finish(&mut self, id: PeerId) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        self.rooms.leave(&peer.room, id);
        if peer.game.is_some() {
            self.end_seat(id, &peer.room, peer.seat_end, Instant::now());
        }
        self.deadlines.remove(id);
        if let Some(path) = peer.impaired.take() {
            // What the lab still holds for the client goes out now; the
            // close below is not impaired.
            let (outbox, local) = (&mut self.outbox, self.ctx.local);
            self.lab.close(id, path, Instant::now(), |direction, p| {
                if direction == rtcrelay_netlab::Direction::Down {
                    outbox.push(p.transmit(local));
                }
            });
        }
        lock(&self.ctx.routes).remove(id, Some(peer.session));
        if peer.rtc.is_alive() {
            let _ = peer.rtc.close();
            // Bounded: closing produces a few packets, then a timeout.
            for _ in 0..64 {
                match peer.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.outbox.push(t),
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(_)) | Err(_) => break,
                }
            }
        }
        let metrics = &self.ctx.metrics;
        metrics.sessions.dec();
        if peer.ready {
            metrics.peers_connected.dec();
        }
        match peer.end.take().unwrap_or(End::Quiet) {
            End::Quiet => info!(peer = %id, room = %peer.room, "session closed"),
            End::Report(event) => {
                info!(peer = %id, room = %peer.room, ?event, "session ended");
                // The receiver may be gone; that is fine.
                let _ = peer.events.send(event);
            }
        }
    }

    async fn flush(&mut self) {
        for t in self.outbox.drain(..) {
            match self.ctx.socket.send_to(&t.contents, t.destination).await {
                Ok(n) => {
                    self.ctx.metrics.datagrams_out.inc();
                    self.ctx.metrics.bytes_out.inc_by(n as u64);
                }
                Err(e) => {
                    debug!(destination = %t.destination, error = %e, "send failed");
                    drop_datagram(&self.ctx.metrics, "send_failed");
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(peer) = self.peers.get_mut(&id) {
                end(
                    &mut self.ending,
                    id,
                    peer,
                    closed("the relay is shutting down"),
                );
            }
        }
        while let Some(id) = self.ending.pop() {
            self.finish(id);
        }
        self.flush().await;
    }
}

/// Writes a heartbeat frame on `peer`'s `control` channel; the caller
/// marks the peer for polling. A full or failed channel counts as sent too:
/// data already waiting there gets acknowledged (or the session is ending),
/// and retrying on every wake-up would only spin.
fn heartbeat(id: PeerId, peer: &mut Peer, now: Instant, metrics: &RelayMetrics) {
    peer.liveness.sent(now);
    let Some(mut channel) = peer
        .channel_id(Lane::Control)
        .and_then(|c| peer.rtc.channel(c))
    else {
        return;
    };
    match channel.write(true, &HEARTBEAT) {
        Ok(true) => {
            metrics.heartbeats.inc();
        }
        Ok(false) => debug!(peer = %id, "control buffer full; heartbeat skipped"),
        Err(e) => debug!(peer = %id, error = %e, "heartbeat write failed"),
    }
}

/// Hands a game-room member's message or readiness to its room.
fn play(
    room: &mut AuthoritativeRoom,
    id: PeerId,
    action: PeerAction,
    now: Instant,
    metrics: &RelayMetrics,
) {
    match action {
        PeerAction::Ready => room.ready(id, now),
        PeerAction::Message(Lane::Realtime, _, data) => room.on_realtime(id, &data, now),
        PeerAction::Message(Lane::Control, _, data) => match std::str::from_utf8(&data) {
            Ok(text) => room.on_control(id, text, now),
            // The room answers bad control messages; bytes that are not
            // even text are only counted.
            Err(_) => drop_message(metrics, "not_utf8"),
        },
    }
}

/// Handles one str0m event of `peer`; `Some` ends the session.
fn on_event(
    id: PeerId,
    peer: &mut Peer,
    event: Event,
    actions: &mut Vec<PeerAction>,
    metrics: &RelayMetrics,
) -> Option<End> {
    match event {
        Event::Connected => {
            debug!(peer = %id, "ICE and DTLS connected");
            None
        }
        Event::IceConnectionStateChange(state) => {
            debug!(peer = %id, ?state, "ICE state");
            (state == IceConnectionState::Disconnected).then(|| {
                closed("ICE disconnected: no connectivity checks from the client (consent timeout)")
            })
        }
        Event::ChannelOpen(cid, label) => {
            let config = peer.rtc.channel(cid).and_then(|c| c.config().cloned());
            let (lane, params) = match check_channel(&label, config.as_ref()) {
                Ok(ok) => ok,
                Err(reason) => return Some(reject(id, reason, metrics)),
            };
            let slot = &mut peer.lanes[lane_index(lane)];
            if slot.is_some() {
                return Some(reject(
                    id,
                    format!("channel {:?} opened twice", lane.label()),
                    metrics,
                ));
            }
            *slot = Some((cid, params));
            debug!(peer = %id, channel = lane.label(), %params, "channel open");
            if let [Some((_, realtime)), Some((_, control))] = peer.lanes {
                if !peer.ready {
                    peer.ready = true;
                    // The datagram that opened this channel was just heard.
                    peer.liveness = Liveness::new(Instant::now());
                    metrics.peers_connected.inc();
                    info!(peer = %id, room = %peer.room, "session ready");
                    let _ = peer.events.send(SessionEvent::Ready { realtime, control });
                    actions.push(PeerAction::Ready);
                }
            }
            None
        }
        Event::ChannelData(data) => {
            match peer.lane_of(data.id) {
                Some(lane) => actions.push(PeerAction::Message(lane, data.binary, data.data)),
                None => drop_message(metrics, "unknown_channel"),
            }
            None
        }
        Event::ChannelClose(cid) => peer
            .lane_of(cid)
            .map(|lane| closed(format!("the client closed channel {:?}", lane.label()))),
        Event::Closed => Some(closed("the client closed the session (DTLS/SCTP close)")),
        _ => None,
    }
}

fn reject(id: PeerId, reason: String, metrics: &RelayMetrics) -> End {
    info!(peer = %id, %reason, "channel rejected");
    metrics
        .sessions_rejected
        .get_or_create(&ReasonLabel {
            reason: "channel_rejected",
        })
        .inc();
    End::Report(SessionEvent::ChannelRejected { reason })
}
