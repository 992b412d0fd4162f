//! [`AuthoritativeRoom`]: one running game and its players' pipelines.
//!
//! The shard drives it: `join`/`ready`/`leave` as sessions come and go,
//! `on_realtime`/`on_control` with what players send, `handle_timeout` at
//! `next_timeout`, and `poll_output` for what to send. Everything runs on
//! the `now` it is given; players are visited in ascending `PeerId` order,
//! so a room is deterministic given its calls.
//!
//! Per tick `n` (see [`super::clock`] for when): each player gets its input
//! for `n` (stored, or its last one repeated), the game steps, its events
//! go out reliably, the state hash is logged. After a snapshot tick every
//! ready player gets a snapshot against the newest one it acknowledged.
//! While catching up after a stall (several ticks in one call), only the
//! newest snapshot tick of the batch is sent: older states are stale before
//! they leave, and a burst would only fill the channel.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rtcrelay_protocol::game::control::{
    decode_client_control, ClientControl, Hello, InjectedNetStats, PlayerNetStats, ServerControl,
};
use rtcrelay_protocol::game::snapshot::SNAPSHOT_HEADER_LEN;
use rtcrelay_protocol::game::{FrameSpec, SnapshotEncoder, WorldState};
use rtcrelay_protocol::PeerId;

use super::clock::TickClock;
use super::events::ReliableEvents;
use super::inputs::{check_datagram, InputBuffer, InputOutcome, HISTORY_TICKS};
use super::log::{InputBytes, LogEntry, MatchLog};
use super::netstats::NetStats;
use super::resume::{AfterGrace, AwayPolicy};
use super::simulation::Simulation;
use super::snapshots::{ClientSnapshots, SnapshotKind};
use crate::metrics::{OutcomeLabel, RelayMetrics, SnapshotKindLabel};

/// How an authoritative room runs. Filled from the `[game]` config section.
#[derive(Debug, Clone)]
pub struct GameConfig {
    /// Simulation ticks per second (default 60).
    pub tick_rate: u32,
    /// Snapshots per second to each client (default 30; at most `tick_rate`).
    pub snapshot_rate: u32,
    /// Inputs for ticks more than this many ticks ahead of the server are
    /// rejected (default: one second of ticks).
    pub max_input_lead: u32,
    /// How often each client gets a `stats` message (default 1 s).
    pub stats_interval: Duration,
    /// Largest snapshot frame (default and maximum 1,200 bytes).
    pub max_snapshot_bytes: usize,
    /// While a player is away (connection lost, seat kept).
    pub away: AwayPolicy,
    /// When an away player's grace period ends ([`AuthoritativeRoom::release`]).
    pub after_grace: AfterGrace,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            tick_rate: 60,
            snapshot_rate: 30,
            max_input_lead: 60,
            stats_interval: Duration::from_secs(1),
            max_snapshot_bytes: rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES,
            away: AwayPolicy::default(),
            after_grace: AfterGrace::default(),
        }
    }
}

/// Bounds [`AuthoritativeRoom::new`] applies to a [`GameConfig`].
const MAX_TICK_RATE: u32 = 1000;
/// The buffer holds at most this many future inputs per player.
const MAX_INPUT_LEAD: u32 = 4096;
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);

impl GameConfig {
    /// The config with every value in range: rates 1..=1000 with snapshots
    /// at most one per tick, an input lead of 2..=4096 ticks (clients lead
    /// by up to `max_input_lead - 1`), a frame of at least a header and at
    /// most `MAX_REALTIME_MESSAGE_BYTES`, stats at most every 10 ms.
    pub fn sanitized(&self) -> GameConfig {
        let tick_rate = self.tick_rate.clamp(1, MAX_TICK_RATE);
        GameConfig {
            tick_rate,
            snapshot_rate: self.snapshot_rate.clamp(1, tick_rate),
            max_input_lead: self.max_input_lead.clamp(2, MAX_INPUT_LEAD),
            stats_interval: self.stats_interval.max(MIN_STATS_INTERVAL),
            max_snapshot_bytes: self.max_snapshot_bytes.clamp(
                SNAPSHOT_HEADER_LEN + 2,
                rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES,
            ),
            away: self.away,
            after_grace: self.after_grace,
        }
    }
}

/// A message the room wants sent. The shard writes it; a realtime message
/// that does not fit the channel's buffer is dropped, never queued.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomOutput {
    /// A binary frame on `realtime` (a snapshot).
    Realtime { peer: PeerId, data: Vec<u8> },
    /// A JSON text message on `control`.
    Control { peer: PeerId, text: String },
}

struct Player {
    /// Channels open: it gets outputs.
    ready: bool,
    /// Its session ended on its own; the seat is kept until it comes back
    /// (`rejoin`) or signaling releases it (`release`, `leave`).
    away: bool,
    inputs: InputBuffer,
    snapshots: ClientSnapshots,
    net: NetStats,
    /// The input it got for the previous tick, as logged.
    logged_input: InputBytes,
    /// Inputs that came after their tick was simulated (applied or not).
    inputs_late: u64,
    /// Ticks simulated without its input.
    inputs_missing: u64,
    /// What the network lab injected on its path, as the shard last said.
    injected: Option<InjectedNetStats>,
}

/// Counter handles, resolved once (a family lookup takes a lock).
struct Counters {
    inputs: [Counter; InputOutcome::ALL.len()],
    snapshots: [Counter; 3],
}

impl Counters {
    fn new(metrics: &RelayMetrics) -> Counters {
        let game = &metrics.game;
        Counters {
            inputs: InputOutcome::ALL.map(|o| {
                game.inputs
                    .get_or_create(&OutcomeLabel { outcome: o.label() })
                    .clone()
            }),
            snapshots: [
                SnapshotKind::Full,
                SnapshotKind::Delta,
                SnapshotKind::Partial,
            ]
            .map(|k| {
                game.snapshots
                    .get_or_create(&SnapshotKindLabel { kind: k.label() })
                    .clone()
            }),
        }
    }

    fn input(&self, outcome: InputOutcome) -> &Counter {
        let i = InputOutcome::ALL
            .iter()
            .position(|&o| o == outcome)
            .unwrap_or(0);
        &self.inputs[i]
    }

    fn snapshot(&self, kind: SnapshotKind) -> &Counter {
        &self.snapshots[match kind {
            SnapshotKind::Full => 0,
            SnapshotKind::Delta => 1,
            SnapshotKind::Partial => 2,
        }]
    }
}

pub struct AuthoritativeRoom {
    sim: Box<dyn Simulation>,
    config: GameConfig,
    metrics: RelayMetrics,
    counters: Counters,
    clock: TickClock,
    input_size: u8,
    max_rewind: u32,
    players: BTreeMap<PeerId, Player>,
    events: ReliableEvents,
    log: MatchLog,
    encoder: SnapshotEncoder,
    /// The newest snapshot tick not sent yet; its state is in `world`.
    snapshot_due: Option<u32>,
    world: WorldState,
    next_stats_at: Instant,
    outputs: VecDeque<RoomOutput>,
    // Scratch space, kept between calls.
    view: WorldState,
    frame: Vec<u8>,
    step_events: Vec<serde_json::Value>,
    retransmits: Vec<(PeerId, Arc<str>)>,
    /// `Simulation::set_paused(true)` is in force (the `pause` away policy).
    paused: bool,
}

impl AuthoritativeRoom {
    /// A room running `sim` (created with `seed`), its tick 0 at `now`.
    /// `config` is brought into range ([`GameConfig::sanitized`]).
    pub fn new(
        sim: Box<dyn Simulation>,
        seed: u64,
        config: GameConfig,
        metrics: crate::metrics::RelayMetrics,
        now: Instant,
    ) -> AuthoritativeRoom {
        let config = config.sanitized();
        metrics.game.rooms.inc();
        let counters = Counters::new(&metrics);
        let log = MatchLog::new(sim.game(), seed, config.tick_rate);
        AuthoritativeRoom {
            input_size: sim.input_size(),
            max_rewind: sim.max_rewind().min(HISTORY_TICKS),
            clock: TickClock::new(now, config.tick_rate, config.snapshot_rate),
            next_stats_at: now + config.stats_interval,
            sim,
            config,
            metrics,
            counters,
            players: BTreeMap::new(),
            events: ReliableEvents::new(),
            log,
            encoder: SnapshotEncoder::new(),
            snapshot_due: None,
            world: WorldState::new(),
            outputs: VecDeque::new(),
            view: WorldState::new(),
            frame: Vec::new(),
            step_events: Vec::new(),
            retransmits: Vec::new(),
            paused: false,
        }
    }

    /// A player entered (its session was opened). Err: the game refused, or
    /// the player is already in the room.
    pub fn join(&mut self, peer: PeerId, name: &str, now: Instant) -> Result<(), String> {
        if self.players.contains_key(&peer) {
            return Err(format!("{peer} is already in the room"));
        }
        self.sim.add_player(peer, name)?;
        self.log.push(LogEntry::Join {
            tick: self.next_tick(),
            peer,
            name: name.to_owned(),
        });
        let inputs = InputBuffer::new(
            self.input_size,
            self.config.tick_rate,
            self.config.max_input_lead,
            self.max_rewind,
            self.clock.last_tick(),
            now,
        );
        self.players.insert(
            peer,
            Player {
                ready: false,
                away: false,
                inputs,
                snapshots: ClientSnapshots::new(),
                net: NetStats::new(now),
                logged_input: InputBytes::new(&vec![0; usize::from(self.input_size)]),
                inputs_late: 0,
                inputs_missing: 0,
                injected: None,
            },
        );
        Ok(())
    }

    /// The player's channels are open: it gets `hello`, then snapshots.
    pub fn ready(&mut self, peer: PeerId, now: Instant) {
        let Some(player) = self.players.get_mut(&peer) else {
            return;
        };
        if player.ready {
            return;
        }
        player.ready = true;
        let back = std::mem::take(&mut player.away);
        let hello = ServerControl::Hello(Hello {
            game: self.sim.game().to_owned(),
            tick_rate: self.config.tick_rate,
            snapshot_rate: self.config.snapshot_rate,
            input_size: self.input_size,
            max_input_lead: self.config.max_input_lead,
            max_rewind: self.max_rewind,
            tick: self.clock.last_tick(),
            server_time_ms: self.clock.server_time_ms(now),
            entity: self.sim.player_entity(peer),
        });
        self.send_control(peer, &hello);
        // A player back from a lost connection gets every event it has not
        // acknowledged, in order, right after `hello`.
        let mut resend = std::mem::take(&mut self.retransmits);
        let n = self.events.resend_all(peer, now, &mut resend);
        self.metrics.game.events_retransmitted.inc_by(n as u64);
        for (peer, text) in resend.drain(..) {
            self.outputs.push_back(RoomOutput::Control {
                peer,
                text: text.to_string(),
            });
        }
        self.retransmits = resend;
        if back {
            self.update_pause();
        }
    }

    /// The player's session ended on its own (connection lost): its seat,
    /// game state, input history and unacknowledged events are kept, and
    /// the match goes on by the room's [`AwayPolicy`]. Ends with `rejoin`
    /// (a new session), `release` (grace period over) or `leave`.
    pub fn away(&mut self, peer: PeerId, _now: Instant) {
        let Some(player) = self.players.get_mut(&peer) else {
            return;
        };
        player.ready = false;
        player.away = true;
        self.update_pause();
    }

    /// A new session of `peer` takes its seat back: its next snapshot is a
    /// full one (a new baseline), and once `ready` it gets `hello` and its
    /// pending events. Its input buffer is kept, so an input it sends again
    /// is never applied twice. False when `peer` has no seat here.
    ///
    /// It stays away until `ready`: events of the ticks before its channels
    /// open are kept for it (it could not receive them yet), and a `pause`
    /// lasts until it can see the match again.
    pub fn rejoin(&mut self, peer: PeerId, now: Instant) -> bool {
        let Some(player) = self.players.get_mut(&peer) else {
            return false;
        };
        player.ready = false;
        player.away = true;
        player.snapshots = ClientSnapshots::new();
        player.net = NetStats::new(now);
        self.update_pause();
        true
    }

    /// The player left (or was disconnected without a kept seat): the game
    /// removes it.
    pub fn leave(&mut self, peer: PeerId, _now: Instant) {
        if self.players.remove(&peer).is_none() {
            return;
        }
        self.sim.remove_player(peer);
        self.events.remove_peer(peer);
        self.log.push(LogEntry::Leave {
            tick: self.next_tick(),
            peer,
        });
        self.update_pause();
    }

    /// An away player's grace period ended: by the room's [`AfterGrace`]
    /// rule a bot takes its seat (if the game has bots) or it forfeits.
    pub fn release(&mut self, peer: PeerId, now: Instant) {
        if !self.players.contains_key(&peer) {
            return;
        }
        if self.config.after_grace == AfterGrace::Bot && self.sim.replace_with_bot(peer) {
            self.players.remove(&peer);
            self.events.remove_peer(peer);
            self.log.push(LogEntry::BotTakeover {
                tick: self.next_tick(),
                peer,
            });
            self.update_pause();
            return;
        }
        self.leave(peer, now);
    }

    /// Players whose seat is kept while their connection is lost (or whose
    /// new session is not ready yet).
    pub fn away_count(&self) -> usize {
        self.players.values().filter(|p| p.away).count()
    }

    /// Pauses the game while the `pause` policy applies (a match is running
    /// and someone is away), resumes it when no longer. Logged, so a replay
    /// pauses at the same ticks.
    fn update_pause(&mut self) {
        let want = self.config.away == AwayPolicy::Pause
            && self.sim.in_match()
            && self.players.values().any(|p| p.away);
        if want == self.paused {
            return;
        }
        self.paused = want;
        self.sim.set_paused(want);
        self.log.push(LogEntry::Paused {
            tick: self.next_tick(),
            paused: want,
        });
    }

    /// A binary message on `realtime` (an input datagram). Bad ones are
    /// dropped and counted.
    pub fn on_realtime(&mut self, peer: PeerId, data: &[u8], now: Instant) {
        let Some(player) = self.players.get_mut(&peer) else {
            return;
        };
        if !player.inputs.admit(now) {
            self.counters.input(InputOutcome::RateLimited).inc();
            return;
        }
        let sim = &mut self.sim;
        let datagram = match check_datagram(data, self.input_size, |i| sim.validate_input(i)) {
            Ok(d) => d,
            Err(e) => {
                tracing::trace!(%peer, error = %e, "input datagram dropped");
                self.counters.input(InputOutcome::Invalid).inc();
                return;
            }
        };
        player.net.on_datagram(datagram.seq);
        if let Some(ack) = datagram.ack {
            let delay = Duration::from_millis(u64::from(ack.delay_ms));
            if let Some(rtt) = player.snapshots.on_ack(ack.tick, delay, now) {
                player.net.on_rtt_sample(rtt);
                self.metrics.game.player_rtt.observe(rtt.as_secs_f64());
            }
        }
        let next = self.clock.last_tick().saturating_add(1);
        for (tick, input) in datagram.iter() {
            let outcome = player.inputs.offer(tick, input);
            self.counters.input(outcome).inc();
            match outcome {
                InputOutcome::LateApplied => {
                    player.inputs_late += 1;
                    sim.apply_input(peer, tick, input);
                    self.log.push(LogEntry::Input {
                        tick: next,
                        peer,
                        input_tick: tick,
                        input: InputBytes::new(input),
                    });
                }
                InputOutcome::Late => player.inputs_late += 1,
                _ => {}
            }
        }
    }

    /// A text message on `control`. Bad ones get an `error` reply. Messages
    /// of a player that is not ready are ignored (it cannot have sent them).
    pub fn on_control(&mut self, peer: PeerId, text: &str, now: Instant) {
        if !self.players.get(&peer).is_some_and(|p| p.ready) {
            return;
        }
        match decode_client_control(text) {
            Err(e) => self.send_error(peer, "bad_control_message", e),
            Ok(ClientControl::Clock { id, t0 }) => {
                let t = self.clock.server_time_ms(now);
                let reply = ServerControl::Clock {
                    id,
                    t0,
                    t1: t,
                    t2: t,
                    tick: self.clock.last_tick(),
                };
                self.send_control(peer, &reply);
            }
            Ok(ClientControl::EventAck { id }) => {
                self.events.ack(peer, id);
            }
            Ok(ClientControl::Command { command }) => {
                let result = self.sim.command(peer, &command);
                self.log.push(LogEntry::Command {
                    tick: self.next_tick(),
                    peer,
                    command,
                });
                if let Err(e) = result {
                    self.send_error(peer, "command_refused", e);
                }
            }
        }
    }

    /// When `handle_timeout` must next be called (next tick, snapshot,
    /// retransmission or stats message). In the past while catching up.
    pub fn next_timeout(&self) -> Instant {
        let mut at = self.clock.next_tick_at().min(self.next_stats_at);
        if let Some(t) = self.events.next_timeout() {
            at = at.min(t);
        }
        at
    }

    /// Runs every tick due by `now` (bounded catch-up), sends the snapshots,
    /// retransmissions and stats that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..self.clock.due(now) {
            self.run_tick(now);
        }
        if let Some(tick) = self.snapshot_due.take() {
            self.send_snapshots(tick, now);
        }
        let mut retransmits = std::mem::take(&mut self.retransmits);
        self.events.poll_retransmits(now, &mut retransmits);
        for (peer, text) in retransmits.drain(..) {
            // An away player gets them all when it is back (`ready`); only
            // what is sent counts as retransmitted.
            if !self.players.get(&peer).is_some_and(|p| p.ready) {
                continue;
            }
            self.metrics.game.events_retransmitted.inc();
            self.outputs.push_back(RoomOutput::Control {
                peer,
                text: text.to_string(),
            });
        }
        self.retransmits = retransmits;
        if now >= self.next_stats_at {
            self.send_stats(now);
            self.next_stats_at += self.config.stats_interval;
            if self.next_stats_at <= now {
                self.next_stats_at = now + self.config.stats_interval;
            }
        }
    }

    /// The next message to send, if any.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    /// No players left: the shard drops the room.
    pub fn is_empty(&self) -> bool {
        self.players.is_empty()
    }

    /// Stops recording the match log (it stays empty and `truncated`): for
    /// a relay that writes no logs, so that a long-lived room's memory does
    /// not grow with every tick.
    pub fn record_nothing(&mut self) {
        let log = MatchLog::new(&self.log.game, self.log.seed, self.log.tick_rate);
        self.log = log.with_limit(0);
    }

    /// Everything needed to replay the match so far.
    pub fn match_log(&self) -> &MatchLog {
        &self.log
    }

    /// The game (read-only: tests, diagnostics).
    pub fn simulation(&self) -> &dyn Simulation {
        self.sim.as_ref()
    }

    /// The last simulated tick.
    pub fn tick(&self) -> u32 {
        self.clock.last_tick()
    }

    /// The config in effect (sanitized).
    pub fn config(&self) -> &GameConfig {
        &self.config
    }

    /// The game says a match is in progress ([`Simulation::in_match`]).
    pub fn in_match(&self) -> bool {
        self.sim.in_match()
    }

    /// Players in the room (joined, ready or not).
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// What the server measured for `peer` so far (loss and bytes/s: the
    /// last finished stats interval).
    pub fn player_net_stats(&self, peer: PeerId) -> Option<PlayerNetStats> {
        self.players.get(&peer).map(|p| net_stats(peer, p))
    }

    /// What the network lab injected on `peer`'s path (None: no lab
    /// setting applies to it); reported in its `stats` from then on. The
    /// shard calls it about once a second per impaired peer. Not part of
    /// the match: nothing is logged.
    pub fn set_injected(&mut self, peer: PeerId, injected: Option<InjectedNetStats>) {
        if let Some(player) = self.players.get_mut(&peer) {
            player.injected = injected;
        }
    }

    fn next_tick(&self) -> u32 {
        self.clock.last_tick().saturating_add(1)
    }

    fn run_tick(&mut self, now: Instant) {
        let tick = self.next_tick();
        for (&peer, player) in &mut self.players {
            let (input, missing) = player.inputs.take_next();
            if missing {
                player.inputs_missing += 1;
                self.counters.input(InputOutcome::Missing).inc();
            }
            self.sim.apply_input(peer, tick, input);
            if input != player.logged_input.as_slice() {
                player.logged_input = InputBytes::new(input);
                self.log.push(LogEntry::Input {
                    tick,
                    peer,
                    input_tick: tick,
                    input: player.logged_input,
                });
            }
        }
        self.step_events.clear();
        self.sim.step(&mut self.step_events);
        self.clock.advance();
        debug_assert_eq!(self.sim.tick(), tick, "the game's tick() disagrees");
        self.metrics.game.ticks.inc();
        self.log.push_hash(self.sim.state_hash());

        let mut step_events = std::mem::take(&mut self.step_events);
        for event in step_events.drain(..) {
            // Away players keep theirs pending for when they are back.
            let away = self
                .players
                .iter()
                .filter(|(_, p)| p.away)
                .map(|(&peer, _)| peer);
            let ready = self.ready_peers();
            let recipients = ready.iter().copied().chain(away);
            let (_, text) = self.events.push(tick, event, recipients, now);
            for peer in ready {
                self.outputs.push_back(RoomOutput::Control {
                    peer,
                    text: text.to_string(),
                });
            }
        }
        self.step_events = step_events;

        // A match that ended (or started) while someone is away.
        self.update_pause();
        if self.clock.is_snapshot_tick(tick) && self.players.values().any(|p| p.ready) {
            self.sim.snapshot(&mut self.world);
            self.snapshot_due = Some(tick);
        }
    }

    fn ready_peers(&self) -> Vec<PeerId> {
        self.players
            .iter()
            .filter(|(_, p)| p.ready)
            .map(|(&peer, _)| peer)
            .collect()
    }

    fn send_snapshots(&mut self, tick: u32, now: Instant) {
        for (&peer, player) in &mut self.players {
            if !player.ready {
                continue;
            }
            let frame = FrameSpec {
                tick,
                input_ack: player.inputs.input_ack(),
                max_len: self.config.max_snapshot_bytes,
            };
            let kind = player.snapshots.encode(
                &mut self.encoder,
                frame,
                &self.world,
                now,
                &mut self.frame,
                &mut self.view,
            );
            self.counters.snapshot(kind).inc();
            self.metrics
                .game
                .snapshot_bytes
                .inc_by(self.frame.len() as u64);
            player.net.on_snapshot_sent(self.frame.len());
            self.outputs.push_back(RoomOutput::Realtime {
                peer,
                data: self.frame.clone(),
            });
        }
    }

    fn send_stats(&mut self, now: Instant) {
        let mut players = Vec::with_capacity(self.players.len());
        for (&peer, player) in &mut self.players {
            player.net.end_interval(now);
            let stats = net_stats(peer, player);
            if player.ready {
                let game = &self.metrics.game;
                game.player_jitter.observe(stats.jitter_ms / 1000.0);
                game.player_loss.observe(stats.loss);
            }
            players.push(stats);
        }
        let stats = ServerControl::Stats {
            tick: self.clock.last_tick(),
            players,
        };
        let Some(text) = to_json(&stats) else {
            return;
        };
        for peer in self.ready_peers() {
            self.outputs.push_back(RoomOutput::Control {
                peer,
                text: text.clone(),
            });
        }
    }

    fn send_control(&mut self, peer: PeerId, message: &ServerControl) {
        if let Some(text) = to_json(message) {
            self.outputs.push_back(RoomOutput::Control { peer, text });
        }
    }

    fn send_error(&mut self, peer: PeerId, code: &str, message: String) {
        self.metrics.game.control_errors.inc();
        let error = ServerControl::Error {
            code: code.to_owned(),
            message,
        };
        self.send_control(peer, &error);
    }
}

impl Drop for AuthoritativeRoom {
    fn drop(&mut self) {
        self.metrics.game.rooms.dec();
    }
}

fn net_stats(peer: PeerId, player: &Player) -> PlayerNetStats {
    PlayerNetStats {
        peer,
        rtt_ms: player.net.srtt_ms(),
        jitter_ms: player.net.rttvar_ms(),
        loss: player.net.loss(),
        inputs_late: player.inputs_late,
        inputs_missing: player.inputs_missing,
        snapshot_bytes_per_s: player.net.bytes_per_s(),
        injected: player.injected.clone(),
    }
}

fn to_json(message: &ServerControl) -> Option<String> {
    match serde_json::to_string(message) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::warn!(error = %e, "control message not serializable");
            None
        }
    }
}

/// A small deterministic game for the room's and the log's tests: each
/// player's entity sums its inputs; the state hash folds every call. A
/// `{"match":bool}` command starts or ends its "match" (`in_match`); while
/// paused only the tick moves; bots take the seats of even peer ids and add
/// 1 per tick.
#[cfg(test)]
pub(crate) mod test_game {
    use std::collections::BTreeMap;

    use rtcrelay_protocol::game::{Entity, WorldState};
    use rtcrelay_protocol::PeerId;
    use serde_json::json;

    use crate::authoritative::{GameFactory, Simulation, StateHasher};

    pub(crate) const COUNTER_GAME: &str = "counter";
    /// Every this many ticks the game emits an event.
    pub(crate) const EVENT_EVERY: u32 = 50;

    #[derive(Debug, Default)]
    struct Counter {
        last_input: u8,
        sum: i32,
        applied: i32,
        late: i32,
        bot: bool,
    }

    pub(crate) struct CounterGame {
        tick: u32,
        extra: i32,
        players: BTreeMap<PeerId, Counter>,
        hash: StateHasher,
        in_match: bool,
        paused: bool,
    }

    impl CounterGame {
        pub(crate) fn new(seed: u64) -> CounterGame {
            let mut hash = StateHasher::new();
            hash.u64(seed);
            CounterGame {
                tick: 0,
                extra: 0,
                players: BTreeMap::new(),
                hash,
                in_match: false,
                paused: false,
            }
        }
    }

    /// The entity of `peer` in snapshots.
    pub(crate) fn entity_of(peer: PeerId) -> u32 {
        10 + peer.0
    }

    impl Simulation for CounterGame {
        fn game(&self) -> &'static str {
            COUNTER_GAME
        }
        fn input_size(&self) -> u8 {
            1
        }
        fn max_players(&self) -> usize {
            4
        }
        fn max_rewind(&self) -> u32 {
            8
        }
        fn validate_input(&self, input: &[u8]) -> Result<(), String> {
            match input {
                [0xff] => Err("0xff is reserved".into()),
                [_] => Ok(()),
                _ => Err("one byte".into()),
            }
        }
        fn add_player(&mut self, player: PeerId, _name: &str) -> Result<(), String> {
            if self.players.len() >= 4 {
                return Err("full".into());
            }
            self.hash.bytes(b"join").u32(player.0);
            self.players.insert(player, Counter::default());
            Ok(())
        }
        fn remove_player(&mut self, player: PeerId) {
            self.hash.bytes(b"leave").u32(player.0);
            self.players.remove(&player);
        }
        fn command(&mut self, player: PeerId, command: &serde_json::Value) -> Result<(), String> {
            if let Some(on) = command.get("match").and_then(serde_json::Value::as_bool) {
                self.in_match = on;
                self.hash.bytes(b"match").u32(u32::from(on));
                return Ok(());
            }
            let add = command
                .get("add")
                .and_then(serde_json::Value::as_i64)
                .ok_or("unknown command")?;
            self.extra = self.extra.wrapping_add(add as i32);
            self.hash.bytes(b"cmd").u32(player.0).i32(add as i32);
            Ok(())
        }
        fn apply_input(&mut self, player: PeerId, tick: u32, input: &[u8]) {
            self.hash.bytes(b"in").u32(player.0).u32(tick).bytes(input);
            if self.paused {
                return;
            }
            if let Some(c) = self.players.get_mut(&player).filter(|c| !c.bot) {
                let v = input.first().copied().unwrap_or(0);
                c.sum = c.sum.wrapping_add(i32::from(v));
                c.applied += 1;
                if tick <= self.tick {
                    c.late += 1;
                } else {
                    c.last_input = v;
                }
            }
        }
        fn step(&mut self, events: &mut Vec<serde_json::Value>) {
            self.tick += 1;
            self.hash.bytes(b"step").u32(self.tick);
            if self.paused {
                return;
            }
            for c in self.players.values_mut().filter(|c| c.bot) {
                c.sum += 1;
                c.applied += 1;
            }
            if self.tick.is_multiple_of(EVENT_EVERY) {
                events.push(json!({ "mark": self.tick }));
            }
        }
        fn tick(&self) -> u32 {
            self.tick
        }
        fn snapshot(&self, out: &mut WorldState) {
            out.clear();
            out.insert(Entity {
                id: 0,
                kind: 0,
                fields: vec![self.tick as i32, self.extra],
            });
            for (peer, c) in &self.players {
                out.insert(Entity {
                    id: entity_of(*peer),
                    kind: 1,
                    fields: vec![
                        peer.0 as i32,
                        i32::from(c.last_input),
                        c.sum,
                        c.applied,
                        c.late,
                    ],
                });
            }
        }
        fn state_hash(&self) -> u64 {
            let mut h = self.hash;
            h.u32(self.tick).i32(self.extra);
            for (peer, c) in &self.players {
                h.u32(peer.0).i32(c.sum).i32(c.applied).i32(c.late);
            }
            h.finish()
        }
        fn player_entity(&self, player: PeerId) -> Option<u32> {
            self.players
                .contains_key(&player)
                .then(|| entity_of(player))
        }
        fn in_match(&self) -> bool {
            self.in_match
        }
        fn set_paused(&mut self, paused: bool) {
            self.paused = paused;
            self.hash.bytes(b"pause").u32(u32::from(paused));
        }
        fn replace_with_bot(&mut self, player: PeerId) -> bool {
            match self.players.get_mut(&player) {
                Some(c) if player.0.is_multiple_of(2) && !c.bot => {
                    c.bot = true;
                    self.hash.bytes(b"bot").u32(player.0);
                    true
                }
                _ => false,
            }
        }
    }

    pub(crate) struct CounterFactory;

    impl GameFactory for CounterFactory {
        fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
            (game == COUNTER_GAME).then(|| Box::new(CounterGame::new(seed)) as Box<dyn Simulation>)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_game::{entity_of, CounterGame, COUNTER_GAME, EVENT_EVERY};
    use super::*;
    use rtcrelay_protocol::game::input::SnapshotAck;
    use rtcrelay_protocol::game::{InputDatagram, SnapshotView};
    use serde_json::{json, Value};

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn room(t0: Instant) -> (AuthoritativeRoom, RelayMetrics) {
        let metrics = RelayMetrics::default();
        let room = AuthoritativeRoom::new(
            Box::new(CounterGame::new(5)),
            5,
            GameConfig::default(),
            metrics.clone(),
            t0,
        );
        (room, metrics)
    }

    fn drain(room: &mut AuthoritativeRoom) -> Vec<RoomOutput> {
        std::iter::from_fn(|| room.poll_output()).collect()
    }

    fn controls(outputs: &[RoomOutput], to: PeerId) -> Vec<Value> {
        outputs
            .iter()
            .filter_map(|o| match o {
                RoomOutput::Control { peer, text } if *peer == to => {
                    Some(serde_json::from_str(text).expect("json"))
                }
                _ => None,
            })
            .collect()
    }

    fn of_type(values: &[Value], ty: &str) -> Vec<Value> {
        values.iter().filter(|v| v["type"] == ty).cloned().collect()
    }

    fn snapshots(outputs: &[RoomOutput], to: PeerId) -> Vec<Vec<u8>> {
        outputs
            .iter()
            .filter_map(|o| match o {
                RoomOutput::Realtime { peer, data } if *peer == to => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs the room until `until`, calling it at each of its timeouts.
    fn run_until(room: &mut AuthoritativeRoom, until: Instant) -> Vec<RoomOutput> {
        let mut out = Vec::new();
        while room.next_timeout() <= until {
            let at = room.next_timeout();
            room.handle_timeout(at);
            out.extend(drain(room));
        }
        out
    }

    fn outcome(metrics: &RelayMetrics, outcome: &'static str) -> u64 {
        metrics
            .game
            .inputs
            .get_or_create(&OutcomeLabel { outcome })
            .get()
    }

    fn player_fields(room: &AuthoritativeRoom, peer: PeerId) -> Vec<i32> {
        let mut w = WorldState::new();
        room.simulation().snapshot(&mut w);
        w.get(entity_of(peer))
            .expect("player entity")
            .fields
            .clone()
    }

    fn datagram(seq: u32, first_tick: u32, inputs: &[u8], ack: Option<u32>) -> Vec<u8> {
        InputDatagram {
            seq,
            ack: ack.map(|tick| SnapshotAck { tick, delay_ms: 0 }),
            first_tick,
            input_size: 1,
            inputs: inputs.to_vec(),
        }
        .encode()
    }

    #[test]
    fn hello_is_sent_once_when_ready_not_on_join() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "ann", t0).expect("join");
        assert!(drain(&mut room).is_empty());
        run_until(&mut room, t0 + ms(100));
        room.ready(A, t0 + ms(100));
        room.ready(A, t0 + ms(100));
        let out = drain(&mut room);
        assert_eq!(out.len(), 1);
        let hello = &controls(&out, A)[0];
        assert_eq!(
            *hello,
            json!({
                "type": "hello", "game": COUNTER_GAME, "tick_rate": 60, "snapshot_rate": 30,
                "input_size": 1, "max_input_lead": 60, "max_rewind": 8, "tick": 6,
                "server_time_ms": 100.0, "entity": entity_of(A),
            })
        );
        // Joining twice is refused; the game's refusal is passed on.
        assert!(room.join(A, "ann", t0).is_err());
        for p in 2..=4 {
            room.join(PeerId(p), "x", t0).expect("join");
        }
        assert_eq!(room.join(PeerId(5), "x", t0), Err("full".into()));
        assert_eq!(room.player_count(), 4);
    }

    #[test]
    fn players_not_ready_get_nothing() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(B, t0);
        let out = run_until(&mut room, t0 + Duration::from_secs(3));
        assert!(out.iter().all(|o| match o {
            RoomOutput::Control { peer, .. } | RoomOutput::Realtime { peer, .. } => *peer == B,
        }));
        // Its control messages are ignored too.
        room.on_control(A, r#"{"type":"clock","id":1,"t0":0}"#, t0);
        room.on_control(A, "garbage", t0);
        assert!(drain(&mut room).is_empty());
        // B got everything: hello, snapshots, events, stats.
        let b = controls(&out, B);
        assert_eq!(of_type(&b, "hello").len(), 1);
        assert_eq!(of_type(&b, "stats").len(), 3);
        let mut ids: Vec<u64> = of_type(&b, "event")
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), (180 / EVENT_EVERY) as usize);
        assert_eq!(snapshots(&out, B).len(), 90);
    }

    #[test]
    fn clock_requests_get_server_time_and_tick() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.ready(A, t0);
        drain(&mut room);
        run_until(&mut room, t0 + ms(250));
        room.on_control(A, r#"{"type":"clock","id":7,"t0":1234.5}"#, t0 + ms(255));
        let reply = &controls(&drain(&mut room), A)[0];
        assert_eq!(
            *reply,
            json!({"type": "clock", "id": 7, "t0": 1234.5, "t1": 255.0, "t2": 255.0, "tick": 15})
        );
    }

    #[test]
    fn bad_messages_and_refused_commands_get_errors() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.ready(A, t0);
        drain(&mut room);
        for text in [
            "not json",
            r#"{"type":"nope"}"#,
            r#"{"type":"clock","id":-1,"t0":0}"#,
        ] {
            room.on_control(A, text, t0);
            let out = controls(&drain(&mut room), A);
            assert_eq!(out.len(), 1, "{text}");
            assert_eq!(out[0]["type"], "error");
            assert_eq!(out[0]["code"], "bad_control_message", "{text}");
        }
        let huge = format!(r#"{{"type":"command","command":"{}"}}"#, "x".repeat(5000));
        room.on_control(A, &huge, t0);
        assert_eq!(
            controls(&drain(&mut room), A)[0]["code"],
            "bad_control_message"
        );
        room.on_control(A, r#"{"type":"command","command":{"jump":1}}"#, t0);
        let out = controls(&drain(&mut room), A);
        assert_eq!(out[0]["code"], "command_refused");
        assert_eq!(out[0]["message"], "unknown command");
        room.on_control(A, r#"{"type":"command","command":{"add":3}}"#, t0);
        assert!(drain(&mut room).is_empty());
        assert_eq!(metrics.game.control_errors.get(), 5);
        // Both commands were calls on the game: both logged.
        let commands = room
            .match_log()
            .entries
            .iter()
            .filter(|e| matches!(e, LogEntry::Command { .. }))
            .count();
        assert_eq!(commands, 2);
        // Unknown event acks are harmless.
        room.on_control(A, r#"{"type":"event_ack","id":99}"#, t0);
        assert!(drain(&mut room).is_empty());
    }

    #[test]
    fn events_are_numbered_and_resent_until_acked() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(A, t0);
        room.ready(B, t0);
        // Tick 50 at 833 ms, tick 100 at 1667 ms, event 1 resent at 1833 ms.
        let out = run_until(&mut room, t0 + ms(1900));
        let a = of_type(&controls(&out, A), "event");
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(
            a[0],
            json!({"type": "event", "id": 1, "tick": 50, "event": {"mark": 50}})
        );
        assert_eq!(a[1]["id"], 2);
        assert_eq!(a[2]["id"], 1, "resent after 1 s");
        room.on_control(A, r#"{"type":"event_ack","id":1}"#, t0 + ms(1900));
        room.on_control(A, r#"{"type":"event_ack","id":2}"#, t0 + ms(1900));
        let out = run_until(&mut room, t0 + ms(2900));
        let a: Vec<Value> = of_type(&controls(&out, A), "event");
        let b: Vec<Value> = of_type(&controls(&out, B), "event");
        // A acked both: only the new event 3 (tick 150 at 2.5 s).
        assert_eq!(a.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(), [3]);
        // B did not: 2 resent at 2.667 s, 3 new; 1 is next due at 3.833 s.
        assert_eq!(
            b.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
            [3, 2]
        );
        assert_eq!(metrics.game.events_retransmitted.get(), 3);
        room.leave(B, t0 + ms(2900));
        let out = run_until(&mut room, t0 + ms(10_000));
        assert!(of_type(&controls(&out, B), "event").is_empty());
    }

    #[test]
    fn stats_every_second_list_every_player() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(A, t0);
        let out = run_until(&mut room, t0 + ms(2500));
        let stats = of_type(&controls(&out, A), "stats");
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0]["tick"], 60);
        let players = stats[1]["players"].as_array().expect("players");
        assert_eq!(players.len(), 2);
        assert_eq!(players[0]["peer"], 1);
        assert_eq!(players[1]["peer"], 2);
        // B never sent anything: 120 missing inputs by tick 120.
        assert_eq!(players[1]["inputs_missing"], 120);
        // A got 30 snapshots a second.
        assert!(players[0]["snapshot_bytes_per_s"].as_f64().expect("f64") > 0.0);
        assert_eq!(players[1]["snapshot_bytes_per_s"], 0.0);
        // No lab setting: no `injected`.
        assert!(players.iter().all(|p| p.get("injected").is_none()));
    }

    #[test]
    fn stats_carry_what_the_lab_injected_until_it_is_cleared() {
        use rtcrelay_protocol::game::control::InjectedDirection;
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(A, t0);
        let injected = InjectedNetStats {
            scope: "peer:2".into(),
            up: InjectedDirection {
                datagrams: 50,
                dropped: 5,
                loss: 0.1,
                delay_ms: 20.0,
                ..InjectedDirection::default()
            },
            down: InjectedDirection::default(),
        };
        room.set_injected(B, Some(injected.clone()));
        room.set_injected(PeerId(99), Some(injected)); // not a player: ignored
        let out = run_until(&mut room, t0 + ms(1500));
        let stats = of_type(&controls(&out, A), "stats");
        let players = stats[0]["players"].as_array().expect("players");
        assert!(players[0].get("injected").is_none());
        assert_eq!(players[1]["injected"]["scope"], "peer:2");
        assert_eq!(players[1]["injected"]["up"]["dropped"], 5);
        assert_eq!(players[1]["injected"]["up"]["loss"], 0.1);
        assert_eq!(
            room.player_net_stats(B)
                .and_then(|s| s.injected)
                .map(|i| i.up.datagrams),
            Some(50)
        );
        room.set_injected(B, None);
        let out = run_until(&mut room, t0 + ms(2500));
        let stats = of_type(&controls(&out, A), "stats");
        let players = stats[0]["players"].as_array().expect("players");
        assert!(players[1].get("injected").is_none());
    }

    #[test]
    fn inputs_are_applied_at_their_tick_and_missing_ones_repeat() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.ready(A, t0);
        // Inputs for ticks 1..=4 and (out of order) 6, then a duplicate.
        room.on_realtime(A, &datagram(1, 6, &[6], None), t0);
        room.on_realtime(A, &datagram(2, 1, &[1, 2, 3, 4], None), t0);
        room.on_realtime(A, &datagram(3, 3, &[30, 40], None), t0);
        assert_eq!(outcome(&metrics, "accepted"), 5);
        assert_eq!(outcome(&metrics, "duplicate"), 2);
        let tick6 = room.clock.tick_at(6);
        run_until(&mut room, tick6);
        // sum = 1+2+3+4 + 4 (tick 5 repeats 4) + 6.
        assert_eq!(player_fields(&room, A), [1, 6, 20, 6, 0]);
        assert_eq!(outcome(&metrics, "missing"), 1);
        // The log has a changed input per tick but tick 5.
        let inputs: Vec<(u32, u32)> = room
            .match_log()
            .entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Input {
                    tick, input_tick, ..
                } => Some((*tick, *input_tick)),
                _ => None,
            })
            .collect();
        assert_eq!(inputs, [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6)]);
        // Late within the rewind: applied now and logged; older: dropped.
        room.on_realtime(A, &datagram(4, 2, &[0; 5], None), t0 + ms(100));
        // Ticks 2, 3, 4, 6 were received (duplicates); 5 is late-applied.
        assert_eq!(outcome(&metrics, "late_applied"), 1);
        assert_eq!(outcome(&metrics, "duplicate"), 6);
        assert_eq!(player_fields(&room, A), [1, 6, 20, 7, 1]);
        // Too early.
        room.on_realtime(A, &datagram(5, 6 + 61, &[1], None), t0 + ms(100));
        assert_eq!(outcome(&metrics, "too_early"), 1);
        // Invalid: reserved value, wrong size, garbage.
        room.on_realtime(A, &datagram(6, 8, &[1, 0xff], None), t0 + ms(100));
        room.on_realtime(A, b"\x02garbage", t0 + ms(100));
        let mut two = InputDatagram {
            seq: 7,
            ack: None,
            first_tick: 8,
            input_size: 2,
            inputs: vec![1, 2],
        }
        .encode();
        room.on_realtime(A, &two, t0 + ms(100));
        two.truncate(5);
        room.on_realtime(A, &two, t0 + ms(100));
        assert_eq!(outcome(&metrics, "invalid"), 4);
        assert_eq!(room.player_net_stats(A).expect("stats").inputs_late, 1);
        // Unknown peers are ignored.
        room.on_realtime(PeerId(9), &datagram(1, 8, &[1], None), t0);
        assert_eq!(outcome(&metrics, "accepted"), 5);
    }

    #[test]
    fn inputs_above_the_rate_are_dropped() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        for seq in 0..100 {
            room.on_realtime(A, &datagram(seq, 1, &[1], None), t0);
        }
        assert_eq!(outcome(&metrics, "rate_limited"), 40);
        assert_eq!(
            outcome(&metrics, "accepted") + outcome(&metrics, "duplicate"),
            60
        );
    }

    #[test]
    fn snapshots_at_the_snapshot_rate_full_then_deltas_after_an_ack() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.ready(A, t0);
        let out = run_until(&mut room, t0 + Duration::from_secs(1));
        let frames = snapshots(&out, A);
        assert_eq!(frames.len(), 30);
        let views: Vec<SnapshotView> = frames
            .iter()
            .map(|f| SnapshotView::decode(f).expect("decode"))
            .collect();
        let ticks: Vec<u32> = views.iter().map(|v| v.header.tick).collect();
        assert_eq!(ticks, (1..=30).map(|k| 2 * k).collect::<Vec<u32>>());
        assert!(views.iter().all(|v| v.header.baseline.is_none()));
        // Ack tick 40 (sent at 666 ms) at 1 s with a 4 ms delay.
        room.on_realtime(
            A,
            &InputDatagram {
                seq: 1,
                ack: Some(SnapshotAck {
                    tick: 40,
                    delay_ms: 4,
                }),
                first_tick: 61,
                input_size: 1,
                inputs: vec![0],
            }
            .encode(),
            t0 + Duration::from_secs(1),
        );
        let rtt = room.player_net_stats(A).expect("stats").rtt_ms;
        assert!((rtt - (1000.0 - 666.666_666 - 4.0)).abs() < 0.01, "{rtt}");
        let mut registry = prometheus_client::registry::Registry::with_prefix("rtcrelay");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("rtcrelay_game_player_rtt_seconds_count 1"),
            "{text}"
        );
        let out = run_until(&mut room, t0 + ms(1100));
        let views: Vec<SnapshotView> = snapshots(&out, A)
            .iter()
            .map(|f| SnapshotView::decode(f).expect("decode"))
            .collect();
        assert_eq!(views.len(), 3);
        assert!(views.iter().all(|v| v.header.baseline == Some(40)));
        // Only tick 61 was ever sent: the ticks before it that the game
        // could still take late (max_rewind 8) are not acked.
        assert_eq!(views[0].header.input_ack, views[0].header.tick - 8);
        let kinds = |k| {
            metrics
                .game
                .snapshots
                .get_or_create(&SnapshotKindLabel { kind: k })
                .get()
        };
        assert_eq!(kinds("full"), 30);
        assert_eq!(kinds("delta"), 3);
        assert!(metrics.game.snapshot_bytes.get() > 0);
        assert_eq!(metrics.game.ticks.get(), 66);
    }

    #[test]
    fn a_stall_catches_up_eight_ticks_per_call_with_one_snapshot() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.ready(A, t0);
        drain(&mut room);
        let now = t0 + Duration::from_secs(1);
        room.handle_timeout(now);
        assert_eq!(room.tick(), 8);
        let frames = snapshots(&drain(&mut room), A);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            SnapshotView::decode(&frames[0])
                .expect("decode")
                .header
                .tick,
            8
        );
        assert!(room.next_timeout() <= now);
        let mut calls = 1;
        while room.next_timeout() <= now {
            room.handle_timeout(now);
            calls += 1;
        }
        assert_eq!(room.tick(), 60);
        assert_eq!(calls, 8);
        assert_eq!(room.match_log().ticks(), 60);
    }

    #[test]
    fn the_room_gauge_counts_live_rooms() {
        let t0 = Instant::now();
        let (room1, metrics) = room(t0);
        let room2 = AuthoritativeRoom::new(
            Box::new(CounterGame::new(1)),
            1,
            GameConfig::default(),
            metrics.clone(),
            t0,
        );
        assert_eq!(metrics.game.rooms.get(), 2);
        drop(room1);
        assert_eq!(metrics.game.rooms.get(), 1);
        assert!(room2.is_empty());
    }

    #[test]
    fn leaving_empties_the_room_and_is_logged() {
        let t0 = Instant::now();
        let (mut room, _) = room(t0);
        room.join(A, "a", t0).expect("join");
        run_until(&mut room, t0 + ms(50));
        room.leave(A, t0 + ms(50));
        room.leave(A, t0 + ms(50));
        assert!(room.is_empty());
        assert_eq!(
            room.match_log().entries,
            [
                LogEntry::Join {
                    tick: 1,
                    peer: A,
                    name: "a".into()
                },
                LogEntry::Leave { tick: 4, peer: A },
            ]
        );
    }

    /// Event ids sent to `to`, in order (resent ones again).
    fn event_ids(outputs: &[RoomOutput], to: PeerId) -> Vec<u64> {
        of_type(&controls(outputs, to), "event")
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect()
    }

    fn with_policy(t0: Instant, away: AwayPolicy, after_grace: AfterGrace) -> AuthoritativeRoom {
        AuthoritativeRoom::new(
            Box::new(CounterGame::new(5)),
            5,
            GameConfig {
                away,
                after_grace,
                ..GameConfig::default()
            },
            RelayMetrics::default(),
            t0,
        )
    }

    fn replays(room: &AuthoritativeRoom) {
        let log = MatchLog::from_json(&room.match_log().to_json()).expect("json");
        let hashes = super::super::replay(&log, &super::test_game::CounterFactory).expect("replay");
        assert_eq!(hashes, log.hashes);
    }

    #[test]
    fn an_away_player_keeps_its_seat_and_gets_what_it_missed_once_back() {
        let t0 = Instant::now();
        let (mut room, metrics) = room(t0);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(A, t0);
        room.ready(B, t0);
        // Event 1 (tick 50) reaches A, which acks it and snapshot 50.
        run_until(&mut room, t0 + ms(900));
        room.on_control(A, r#"{"type":"event_ack","id":1}"#, t0 + ms(900));
        room.on_realtime(A, &datagram(1, 56, &[2], Some(50)), t0 + ms(900));
        let out = run_until(&mut room, t0 + ms(1000));
        let a = snapshots(&out, A);
        assert!(!a.is_empty());
        assert!(a
            .iter()
            .all(|f| SnapshotView::decode(f).expect("decode").header.baseline == Some(50)));
        // Its connection is lost: the seat, the entity and its input stay.
        let retransmitted = metrics.game.events_retransmitted.get();
        room.away(A, t0 + ms(1000));
        assert_eq!((room.away_count(), room.player_count()), (1, 2));
        let out = run_until(&mut room, t0 + ms(2600));
        assert!(
            !out.iter().any(|o| matches!(o,
                RoomOutput::Control { peer, .. } | RoomOutput::Realtime { peer, .. } if *peer == A)),
            "nothing goes to an away player"
        );
        // B got events 2 and 3 (ticks 100, 150) and a resend of 1; only
        // what was sent counts as retransmitted (A's are held back).
        assert_eq!(event_ids(&out, B), [2, 1, 3]);
        assert_eq!(metrics.game.events_retransmitted.get(), retransmitted + 1);
        let fields = player_fields(&room, A);
        assert_eq!(fields[1], 2, "its last input repeats");
        // Inputs of the old session still in flight for ticks to come, then
        // a new session takes the seat back.
        let next = room.tick() + 1;
        room.on_realtime(A, &datagram(2, next, &[3; 20], None), t0 + ms(2600));
        assert!(!room.rejoin(PeerId(9), t0 + ms(2600)), "no seat");
        assert!(room.rejoin(A, t0 + ms(2600)));
        assert_eq!(room.away_count(), 1, "away until its channels open");
        assert!(drain(&mut room).is_empty());
        // Event 4 (tick 200) comes before A is ready: kept for it too.
        let out = run_until(&mut room, t0 + ms(3400));
        assert_eq!(event_ids(&out, A), Vec::<u64>::new());
        let duplicates = outcome(&metrics, "duplicate");
        let before_ready = metrics.game.events_retransmitted.get();
        room.ready(A, t0 + ms(3400));
        assert_eq!(room.away_count(), 0);
        let a = controls(&drain(&mut room), A);
        assert_eq!(a[0]["type"], "hello");
        assert_eq!(a[0]["tick"], room.tick());
        assert_eq!(a[0]["entity"], entity_of(A));
        let resent: Vec<u64> = a[1..]
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(
            resent,
            [2, 3, 4],
            "every unacked event, in order, after hello"
        );
        assert_eq!(metrics.game.events_retransmitted.get(), before_ready + 3);
        // Its first snapshot is a full one, though it had acked a baseline.
        let out = run_until(&mut room, t0 + ms(3450));
        let first = &snapshots(&out, A)[0];
        assert_eq!(
            SnapshotView::decode(first).expect("decode").header.baseline,
            None
        );
        // The new session resends the old one's inputs: duplicates, never
        // applied twice (the input history was kept).
        let applied = player_fields(&room, A)[3];
        room.on_realtime(A, &datagram(1, next + 4, &[3; 16], None), t0 + ms(3450));
        assert_eq!(outcome(&metrics, "duplicate"), duplicates + 16);
        assert_eq!(player_fields(&room, A)[3], applied);
        // Resent events are retransmitted on the usual schedule (1 s after
        // the resend) until acked; event 5 (tick 250) is new.
        let out = run_until(&mut room, t0 + ms(4450));
        assert_eq!(event_ids(&out, A), [5, 2, 3, 4]);
        for id in 2..=4 {
            room.on_control(
                A,
                &format!(r#"{{"type":"event_ack","id":{id}}}"#),
                t0 + ms(4450),
            );
        }
        let out = run_until(&mut room, t0 + ms(9000));
        assert!(!event_ids(&out, A).iter().any(|&id| id < 5));
        replays(&room);
    }

    #[test]
    fn the_pause_policy_freezes_a_match_until_every_away_player_is_back_or_released() {
        let t0 = Instant::now();
        let mut room = with_policy(t0, AwayPolicy::Pause, AfterGrace::Forfeit);
        let c = PeerId(3);
        for p in [A, B, c] {
            room.join(p, "p", t0).expect("join");
            room.ready(p, t0);
        }
        let paused = |room: &AuthoritativeRoom| -> Vec<(u32, bool)> {
            room.match_log()
                .entries
                .iter()
                .filter_map(|e| match e {
                    LogEntry::Paused { tick, paused } => Some((*tick, *paused)),
                    _ => None,
                })
                .collect()
        };
        // Away in the lobby (no match): nothing to pause.
        room.on_realtime(B, &datagram(1, 1, &[1], None), t0);
        room.away(A, t0);
        run_until(&mut room, t0 + ms(100));
        assert!(paused(&room).is_empty());
        // A match starts while A is away: paused from the next tick.
        room.on_control(
            B,
            r#"{"type":"command","command":{"match":true}}"#,
            t0 + ms(100),
        );
        run_until(&mut room, t0 + ms(200));
        let start = paused(&room);
        assert_eq!(start.len(), 1, "{start:?}");
        assert!(start[0].1);
        // Paused: the tick goes on, B's input is not counted.
        let sum = player_fields(&room, B)[2];
        let tick = room.tick();
        room.away(c, t0 + ms(200));
        run_until(&mut room, t0 + ms(1000));
        assert!(room.tick() >= tick + 40);
        assert_eq!(player_fields(&room, B)[2], sum, "frozen");
        // A back (rejoin, then ready): C is still away, still paused.
        assert!(room.rejoin(A, t0 + ms(1000)));
        run_until(&mut room, t0 + ms(1100));
        room.ready(A, t0 + ms(1100));
        run_until(&mut room, t0 + ms(1200));
        assert_eq!(paused(&room).len(), 1);
        assert_eq!(player_fields(&room, B)[2], sum);
        // C's grace period ends (forfeit): nobody is away, it runs again.
        room.release(c, t0 + ms(1200));
        assert_eq!(room.player_count(), 2);
        run_until(&mut room, t0 + ms(1500));
        let all = paused(&room);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(!all[1].1);
        assert!(player_fields(&room, B)[2] > sum, "B's inputs count again");
        replays(&room);
    }

    #[test]
    fn after_the_grace_period_a_bot_takes_the_seat_or_the_player_forfeits() {
        let t0 = Instant::now();
        // CounterGame's bots take even peer ids only: B yes, A not.
        let mut room = with_policy(t0, AwayPolicy::Repeat, AfterGrace::Bot);
        room.join(A, "a", t0).expect("join");
        room.join(B, "b", t0).expect("join");
        room.ready(A, t0);
        room.ready(B, t0);
        room.away(B, t0);
        room.away(A, t0);
        run_until(&mut room, t0 + ms(900));
        assert_eq!(room.events.unacked(B), 1, "event 1 kept for B");
        room.release(B, t0 + ms(900));
        room.release(B, t0 + ms(900)); // twice is harmless
        room.release(PeerId(9), t0 + ms(900));
        assert_eq!(room.player_count(), 1);
        assert_eq!(room.events.unacked(B), 0);
        let before = player_fields(&room, B);
        run_until(&mut room, t0 + ms(1000));
        assert!(
            player_fields(&room, B)[2] > before[2],
            "the bot plays B's seat"
        );
        // The game has no bot for A: it forfeits.
        room.release(A, t0 + ms(1000));
        assert!(room.is_empty());
        let ends: Vec<&LogEntry> = room
            .match_log()
            .entries
            .iter()
            .filter(|e| matches!(e, LogEntry::BotTakeover { .. } | LogEntry::Leave { .. }))
            .collect();
        assert_eq!(
            ends,
            [
                &LogEntry::BotTakeover { tick: 55, peer: B },
                &LogEntry::Leave { tick: 61, peer: A },
            ]
        );
        replays(&room);

        // With `forfeit` even a seat a bot could take is given up.
        let mut room = with_policy(t0, AwayPolicy::Repeat, AfterGrace::Forfeit);
        room.join(B, "b", t0).expect("join");
        room.away(B, t0);
        room.release(B, t0);
        assert!(room.is_empty());
        assert_eq!(
            room.match_log().entries.last(),
            Some(&LogEntry::Leave { tick: 1, peer: B })
        );
    }

    #[test]
    fn config_is_brought_into_range() {
        let c = GameConfig {
            tick_rate: 0,
            snapshot_rate: 500,
            max_input_lead: 0,
            stats_interval: Duration::ZERO,
            max_snapshot_bytes: 1,
            ..GameConfig::default()
        }
        .sanitized();
        assert_eq!(c.tick_rate, 1);
        assert_eq!(c.snapshot_rate, 1);
        assert_eq!(c.max_input_lead, 2);
        assert_eq!(c.stats_interval, MIN_STATS_INTERVAL);
        assert_eq!(c.max_snapshot_bytes, SNAPSHOT_HEADER_LEN + 2);
        let c = GameConfig {
            max_snapshot_bytes: 100_000,
            ..GameConfig::default()
        }
        .sanitized();
        assert_eq!(
            c.max_snapshot_bytes,
            rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES
        );
    }
}
