//! [`GameCore`]: the client side of an authoritative room as a sans-IO
//! state machine.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use rtcrelay_protocol::game::control::{ClientControl, PlayerNetStats, ServerControl};
use rtcrelay_protocol::game::input::{SnapshotAck, MAX_INPUT_BYTES};
use rtcrelay_protocol::game::WorldState;
use rtcrelay_protocol::PeerId;
use tracing::debug;

use super::clock::ClockSync;
use super::inputs::InputPipeline;
use super::snapshots::{Received, SnapshotRing};
use super::{GameEvent, GameOutput, Hello, NetStats, Predictor};

/// Longest interpolation delay (ms): beyond this, remote entities would lag
/// too far behind to be playable; a worse network shows as stutter instead.
const MAX_INTERP_DELAY_MS: f64 = 250.0;
/// Event ids remembered individually; ids older than those are all taken
/// as seen (the server resends only what this client has not acked, and it
/// acks at once, so an id that old cannot be new).
const EVENT_IDS: usize = 1024;
/// Largest control message accepted from the server.
const MAX_SERVER_CONTROL_BYTES: usize = 256 * 1024;

/// The own entity as predicted: its fields after every input sent up to
/// `tick`.
#[derive(Debug, Clone, PartialEq)]
struct Prediction {
    tick: u32,
    fields: Vec<i32>,
}

/// The client side of one authoritative-room session, without I/O.
///
/// Feed it what arrives ([`GameCore::handle_realtime`],
/// [`GameCore::handle_control`]) and time: call [`GameCore::local_tick`]
/// at the room's tick rate (it samples the input and sends a datagram), and
/// [`GameCore::handle_timeout`] when [`GameCore::poll_timeout`] says (clock
/// sync). Then send what [`GameCore::poll_output`] returns and handle what
/// [`GameCore::poll_event`] returns.
pub struct GameCore {
    /// Local clock zero: client times on the wire are ms since this.
    origin: Instant,
    peer: PeerId,
    hello: Option<Hello>,
    own_entity: Option<u32>,
    /// An own entity set by the application wins over `hello`'s.
    own_entity_overridden: bool,
    clock: ClockSync,
    /// Created by `hello` (it gives the input size).
    inputs: Option<InputPipeline>,
    /// The input set before `hello`.
    early_input: Vec<u8>,
    snapshots: SnapshotRing,
    predictor: Option<Box<dyn Predictor>>,
    prediction: Option<Prediction>,
    events_seen: BTreeSet<u64>,
    /// Every id up to this one counts as seen.
    events_floor: u64,
    last_stats: Option<(u32, Vec<PlayerNetStats>)>,
    outputs: VecDeque<GameOutput>,
    events: VecDeque<GameEvent>,
    corrections: u64,
    stale: u64,
    unknown_baseline: u64,
    duplicate: u64,
    invalid: u64,
    input_lead: f64,
    /// Sessions after the first (a `hello` after the first one: the client
    /// resumed its seat on a new WebRTC session).
    resumes: u64,
    /// Since a resume, until the new session's first snapshot: no snapshot
    /// acks, so the server takes neither an old session's tick as a
    /// baseline nor the time away as a delay sample.
    acks_paused: bool,
}

impl std::fmt::Debug for GameCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameCore")
            .field("peer", &self.peer)
            .field("hello", &self.hello)
            .field("own_entity", &self.own_entity)
            .field("state_tick", &self.state_tick())
            .field("prediction", &self.prediction)
            .finish_non_exhaustive()
    }
}

impl GameCore {
    /// A session of client `peer` (its id in the room, to find its own line
    /// in the server's stats), starting at `now`.
    pub fn new(peer: PeerId, now: Instant) -> GameCore {
        GameCore {
            origin: now,
            peer,
            hello: None,
            own_entity: None,
            own_entity_overridden: false,
            clock: ClockSync::new(),
            inputs: None,
            early_input: Vec::new(),
            snapshots: SnapshotRing::default(),
            predictor: None,
            prediction: None,
            events_seen: BTreeSet::new(),
            events_floor: 0,
            last_stats: None,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            corrections: 0,
            stale: 0,
            unknown_baseline: 0,
            duplicate: 0,
            invalid: 0,
            input_lead: 0.0,
            resumes: 0,
            acks_paused: false,
        }
    }

    /// Predicts the own entity with `predictor` from the next snapshot on.
    /// Without one, [`GameCore::predicted`] is the own entity of the newest
    /// snapshot.
    pub fn set_predictor(&mut self, predictor: Box<dyn Predictor>) {
        self.predictor = Some(predictor);
        self.reconcile();
    }

    /// Overrides the own entity (`hello`'s otherwise), e.g. when the game
    /// seats the player later and says so in its state.
    pub fn set_own_entity(&mut self, entity: Option<u32>) {
        self.own_entity = entity;
        self.own_entity_overridden = true;
        self.prediction = None;
        self.reconcile();
    }

    /// Sets the buttons: the next local ticks sample them. Padded with
    /// zeros or cut to the room's input size.
    pub fn set_input(&mut self, input: &[u8]) {
        match &mut self.inputs {
            Some(p) => p.set_input(input),
            None => self.early_input = input[..input.len().min(MAX_INPUT_BYTES)].to_vec(),
        }
    }

    /// The buttons the next local tick samples.
    pub fn input(&self) -> &[u8] {
        match &self.inputs {
            Some(p) => p.current(),
            None => &self.early_input,
        }
    }

    /// Sends a game command (e.g. Dizolaur's `{"start":{"bots":true}}`).
    pub fn command(&mut self, command: serde_json::Value) {
        self.send_control(&ClientControl::Command { command });
    }

    /// A message from the server on `realtime` (a snapshot frame).
    pub fn handle_realtime(&mut self, frame: &[u8], now: Instant) {
        self.roll_window(now);
        let local_ms = self.local_ms(now);
        let tick_ms = self.hello.as_ref().map(Hello::tick_ms);
        match self.snapshots.receive(frame, now, local_ms, tick_ms) {
            Received::Newest { tick, input_ack } => {
                self.acks_paused = false;
                if let Some(p) = &mut self.inputs {
                    p.on_input_ack(input_ack);
                }
                self.reconcile();
                if let Some(p) = &mut self.inputs {
                    p.forget_through(tick);
                }
                self.events.push_back(GameEvent::Snapshot { tick });
            }
            Received::Stale { input_ack, .. } => {
                self.stale += 1;
                if let Some(p) = &mut self.inputs {
                    p.on_input_ack(input_ack);
                }
            }
            Received::Duplicate => self.duplicate += 1,
            Received::UnknownBaseline(baseline) => {
                debug!(baseline, "snapshot against an unknown baseline ignored");
                self.unknown_baseline += 1;
            }
            Received::Invalid(error) => {
                debug!(%error, "bad snapshot frame ignored");
                self.invalid += 1;
            }
        }
    }

    /// A text message from the server on `control`.
    pub fn handle_control(&mut self, text: &str, now: Instant) {
        if text.len() > MAX_SERVER_CONTROL_BYTES {
            self.invalid += 1;
            return;
        }
        let msg: ServerControl = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(error) => {
                debug!(%error, "bad control message ignored");
                self.invalid += 1;
                return;
            }
        };
        match msg {
            ServerControl::Hello(hello) => {
                let usable = (1..=10_000).contains(&hello.tick_rate)
                    && (1..=hello.tick_rate).contains(&hello.snapshot_rate)
                    && (1..=MAX_INPUT_BYTES).contains(&usize::from(hello.input_size))
                    && hello.server_time_ms.is_finite();
                if !usable {
                    debug!(
                        hello.tick_rate,
                        hello.snapshot_rate, hello.input_size, "unusable hello ignored"
                    );
                    self.invalid += 1;
                    return;
                }
                self.on_hello(hello.clone(), now);
                self.events.push_back(GameEvent::Hello(hello));
            }
            ServerControl::Clock { id, t0, t1, t2, .. } => {
                let t3 = self.local_ms(now);
                self.clock.on_reply(id, t0, t1, t2, t3);
            }
            ServerControl::Event { id, tick, event } => {
                // Every copy is acked: the previous ack may be what was lost
                // (or still in flight), and the server resends until it
                // hears one.
                self.send_control(&ClientControl::EventAck { id });
                if self.first_time(id) {
                    self.events.push_back(GameEvent::Event { id, tick, event });
                }
            }
            ServerControl::Stats { tick, players } => {
                self.last_stats = Some((tick, players.clone()));
                self.events.push_back(GameEvent::Stats { tick, players });
            }
            ServerControl::Error { code, message } => {
                self.events.push_back(GameEvent::Error { code, message });
            }
        }
    }

    /// One local tick (call it at the room's tick rate, from `hello` on):
    /// samples the input for the next target tick, advances the prediction
    /// and queues an input datagram.
    pub fn local_tick(&mut self, now: Instant) {
        self.roll_window(now);
        let (Some(hello), Some(est)) = (&self.hello, self.estimated_server_tick(now)) else {
            return;
        };
        let lead = self.lead(hello);
        let Some(inputs) = &mut self.inputs else {
            return;
        };
        let max_ahead = hello.max_input_lead.saturating_sub(1).max(1);
        if let Some((_, target)) = inputs.sample(est, lead, max_ahead) {
            self.input_lead = f64::from(target) - est;
            self.advance_prediction(target);
        }
        let ack = self
            .snapshots
            .newest_arrival()
            .filter(|_| !self.acks_paused)
            .map(|(tick, at)| SnapshotAck {
                tick,
                delay_ms: u16::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u16::MAX),
            });
        if let Some(datagram) = self.inputs.as_mut().and_then(|p| p.datagram(ack)) {
            self.outputs
                .push_back(GameOutput::Realtime(datagram.encode()));
        }
    }

    /// When [`GameCore::handle_timeout`] must next be called (the next clock
    /// request), if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next_at()
    }

    /// Sends the clock request that is due, if any.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.roll_window(now);
        let local_ms = self.local_ms(now);
        if let Some((id, t0)) = self.clock.poll_request(now, local_ms) {
            self.send_control(&ClientControl::Clock { id, t0 });
        }
    }

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<GameOutput> {
        self.outputs.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<GameEvent> {
        self.events.pop_front()
    }

    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    pub fn own_entity(&self) -> Option<u32> {
        self.own_entity
    }

    /// The newest server state (that of [`GameCore::state_tick`]).
    pub fn state(&self) -> Option<&WorldState> {
        self.snapshots.newest().map(|(_, s)| s)
    }

    pub fn state_tick(&self) -> Option<u32> {
        self.snapshots.newest().map(|(t, _)| t)
    }

    /// The applied state of `tick`, if still kept (the last 64 snapshots).
    pub fn state_at(&self, tick: u32) -> Option<&WorldState> {
        self.snapshots.states().get(&tick)
    }

    /// The own entity's fields as predicted through the last input sent
    /// (or as in the newest snapshot without a predictor).
    pub fn predicted(&self) -> Option<&[i32]> {
        self.prediction.as_ref().map(|p| p.fields.as_slice())
    }

    /// The tick [`GameCore::predicted`] is for.
    pub fn predicted_tick(&self) -> Option<u32> {
        self.prediction.as_ref().map(|p| p.tick)
    }

    /// The tick of the last input sampled.
    pub fn input_target(&self) -> Option<u32> {
        self.inputs.as_ref().and_then(InputPipeline::last_target)
    }

    /// Estimated server clock minus local clock, ms.
    pub fn clock_offset_ms(&self) -> Option<f64> {
        self.clock.offset_ms()
    }

    /// The server's tick now (fractional), as estimated from clock sync:
    /// `(local + offset) * tick_rate / 1000`.
    pub fn estimated_server_tick(&self, now: Instant) -> Option<f64> {
        let hello = self.hello.as_ref()?;
        let offset = self.clock.offset_ms()?;
        Some(((self.local_ms(now) + offset) / hello.tick_ms()).max(0.0))
    }

    /// Interpolation delay (ms): snapshot interval + 2 × snapshot arrival
    /// jitter, within [interval, 250 ms].
    pub fn interp_delay_ms(&self) -> f64 {
        let Some(hello) = &self.hello else {
            return 0.0;
        };
        let interval = hello.snapshot_interval_ms();
        (interval + 2.0 * self.snapshots.jitter_ms())
            .clamp(interval, MAX_INTERP_DELAY_MS.max(interval))
    }

    /// The (fractional) server tick remote entities are drawn at: the
    /// estimated server tick minus the one-way delay (the newest state this
    /// client can have is that old) minus the interpolation delay.
    pub fn render_tick(&self, now: Instant) -> Option<f64> {
        let hello = self.hello.as_ref()?;
        let est = self.estimated_server_tick(now)?;
        let behind_ms = self.clock.one_way_ms() + self.interp_delay_ms();
        Some((est - behind_ms / hello.tick_ms()).max(0.0))
    }

    /// Entity `id` at the render tick: its i32 fields linearly interpolated
    /// between the two kept states around it (rounded), or the nearest one
    /// when the render tick is outside them. None when the entity is not
    /// in the state at the render tick. Fields that are not quantities
    /// (flags, enums) should be read from [`GameCore::state`] instead.
    pub fn interpolated(&self, id: u32, now: Instant) -> Option<Vec<i32>> {
        let render = self.render_tick(now)?;
        let states = self.snapshots.states();
        let floor = render.floor() as u32;
        let before = states.range(..=floor).next_back();
        let after = states.range(floor.saturating_add(1)..).next();
        match (before, after) {
            (Some((&ta, a)), Some((&tb, b))) => {
                let a = a.get(id)?;
                match b.get(id) {
                    Some(b) if b.kind == a.kind && b.fields.len() == a.fields.len() => {
                        let t = (render - f64::from(ta)) / f64::from(tb - ta);
                        Some(lerp(&a.fields, &b.fields, t))
                    }
                    _ => Some(a.fields.clone()),
                }
            }
            (Some((_, a)), None) => Some(a.get(id)?.fields.clone()),
            (None, Some((_, b))) => Some(b.get(id)?.fields.clone()),
            (None, None) => None,
        }
    }

    /// The server's last `stats`: (tick, every player's numbers).
    pub fn server_stats(&self) -> Option<&(u32, Vec<PlayerNetStats>)> {
        self.last_stats.as_ref()
    }

    pub fn net_stats(&self) -> NetStats {
        let own = self
            .last_stats
            .as_ref()
            .and_then(|(_, players)| players.iter().find(|p| p.peer == self.peer));
        NetStats {
            rtt_ms: self.clock.srtt_ms(),
            jitter_ms: self.clock.rttvar_ms(),
            loss_down: self.snapshots.loss(),
            loss_up: own.map_or(0.0, |p| p.loss),
            snapshot_bytes_per_s: self.snapshots.bytes_per_s(),
            corrections: self.corrections,
            interp_delay_ms: self.interp_delay_ms(),
            input_lead: self.input_lead,
            stale: self.stale,
            unknown_baseline: self.unknown_baseline,
            duplicate: self.duplicate,
            invalid: self.invalid,
            clock_offset_ms: self.clock.offset_ms().unwrap_or(0.0),
            server_rtt_ms: own.map_or(0.0, |p| p.rtt_ms),
            resumes: self.resumes,
        }
    }

    fn local_ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }

    fn on_hello(&mut self, hello: Hello, now: Instant) {
        if self.hello.is_some() {
            self.on_new_session();
        }
        let local_ms = self.local_ms(now);
        self.clock.on_hello(hello.server_time_ms, local_ms, now);
        let same_size = self
            .hello
            .as_ref()
            .is_some_and(|h| h.input_size == hello.input_size);
        if !same_size {
            let mut pipeline = InputPipeline::new(hello.input_size);
            let current = match &self.inputs {
                Some(p) => p.current().to_vec(),
                None => std::mem::take(&mut self.early_input),
            };
            pipeline.set_input(&current);
            self.inputs = Some(pipeline);
        }
        if !self.own_entity_overridden {
            self.own_entity = hello.entity;
        }
        self.hello = Some(hello);
        self.reconcile();
    }

    /// A `hello` after the first: the seat was resumed on a new session
    /// after time away. The server's first snapshot of it is a full one
    /// (a new baseline); states already applied stay in the ring (they
    /// were the server's). The input history stays too: the server kept
    /// its own, and drops inputs it already has, so none applies twice.
    /// Events the server resends are acked again and surfaced once by id.
    fn on_new_session(&mut self) {
        self.resumes += 1;
        self.acks_paused = true;
        // Arrival jitter across the time away says nothing about the path.
        self.snapshots.restart_arrivals();
    }

    /// `lead = ceil((rtt/2 + 2*jitter) / tick_ms) + 1`, within
    /// [1, max_input_lead - 1]: enough ticks ahead that the input arrives
    /// before its tick is simulated, even a little late.
    fn lead(&self, hello: &Hello) -> u32 {
        let ahead_ms = self.clock.srtt_ms() / 2.0 + 2.0 * self.clock.rttvar_ms();
        let lead = (ahead_ms / hello.tick_ms()).ceil() as u32 + 1;
        lead.clamp(1, hello.max_input_lead.saturating_sub(1).max(1))
    }

    /// Restarts the prediction from the newest snapshot and replays every
    /// input sent for a later tick. A different result for the tick already
    /// predicted is a correction.
    fn reconcile(&mut self) {
        let Some(entity) = self.own_entity else {
            self.prediction = None;
            return;
        };
        let Some((tick, world)) = self.snapshots.newest() else {
            return;
        };
        let Some(own) = world.get(entity) else {
            self.prediction = None;
            return;
        };
        let mut fields = own.fields.clone();
        let mut at = tick;
        if let (Some(predictor), Some(inputs)) = (&self.predictor, &self.inputs) {
            let through = inputs.last_target().unwrap_or(tick);
            at = replay(&**predictor, &mut fields, tick, through, inputs, world);
        }
        if let Some(old) = &self.prediction {
            if old.tick == at && old.fields != fields && self.predictor.is_some() {
                self.corrections += 1;
            }
        }
        self.prediction = Some(Prediction { tick: at, fields });
    }

    /// Steps the prediction through the inputs just sampled.
    fn advance_prediction(&mut self, target: u32) {
        let (Some(prediction), Some(predictor), Some(inputs), Some((_, world))) = (
            &mut self.prediction,
            &self.predictor,
            &self.inputs,
            self.snapshots.newest(),
        ) else {
            return;
        };
        if target > prediction.tick {
            let from = prediction.tick;
            prediction.tick = replay(
                &**predictor,
                &mut prediction.fields,
                from,
                target,
                inputs,
                world,
            );
        }
    }

    /// Whether event `id` is new (and from now on, seen).
    fn first_time(&mut self, id: u64) -> bool {
        if id <= self.events_floor || !self.events_seen.insert(id) {
            return false;
        }
        while self.events_seen.len() > EVENT_IDS {
            if let Some(oldest) = self.events_seen.pop_first() {
                self.events_floor = oldest;
            }
        }
        true
    }

    fn send_control(&mut self, msg: &ClientControl) {
        match serde_json::to_string(msg) {
            Ok(text) => self.outputs.push_back(GameOutput::Control(text)),
            Err(error) => debug!(%error, "control message not encodable"),
        }
    }

    fn roll_window(&mut self, now: Instant) {
        let rates = self.hello.as_ref().map(|h| (h.tick_rate, h.snapshot_rate));
        self.snapshots.roll_window(now, rates);
    }
}

/// Steps `fields` through ticks `after + 1 ..= through` and returns the last
/// tick stepped. A tick without a kept input repeats the previous input
/// (what the server does with a missing input), all zeros before any.
fn replay(
    predictor: &dyn Predictor,
    fields: &mut Vec<i32>,
    after: u32,
    through: u32,
    inputs: &InputPipeline,
    world: &WorldState,
) -> u32 {
    let mut last: Vec<u8> = vec![0; inputs.current().len()];
    let mut kept = inputs.inputs_between(after, through).peekable();
    // Bounded: a prediction never runs further ahead than the kept inputs.
    let through = through.min(after.saturating_add(super::inputs::HISTORY as u32));
    let mut at = after;
    for tick in after.saturating_add(1)..=through {
        if let Some((t, input)) = kept.peek() {
            if *t == tick {
                last.clear();
                last.extend_from_slice(input);
                kept.next();
            }
        }
        predictor.step(fields, &last, world);
        at = tick;
    }
    at
}

fn lerp(a: &[i32], b: &[i32], t: f64) -> Vec<i32> {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| {
            let v = f64::from(a) + (f64::from(b) - f64::from(a)) * t;
            v.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rtcrelay_protocol::game::{Entity, FrameSpec, InputDatagram, SnapshotEncoder};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn hello(tick: u32, server_time_ms: f64) -> String {
        serde_json::to_string(&ServerControl::Hello(Hello {
            game: "toy".into(),
            tick_rate: 50,
            snapshot_rate: 25,
            input_size: 1,
            max_input_lead: 50,
            max_rewind: 0,
            tick,
            server_time_ms,
            entity: Some(1),
        }))
        .unwrap()
    }

    fn event(id: u64) -> String {
        serde_json::to_string(&ServerControl::Event {
            id,
            tick: id as u32,
            event: serde_json::json!({ "kind": "score", "n": id }),
        })
        .unwrap()
    }

    fn world(x: i32) -> WorldState {
        WorldState::from_entities([Entity {
            id: 1,
            kind: 0,
            fields: vec![x, 7],
        }])
    }

    /// A snapshot of `state` at `tick`, full or against `baseline`.
    fn snapshot(tick: u32, baseline: Option<(u32, &WorldState)>, state: &WorldState) -> Vec<u8> {
        let mut frame = Vec::new();
        let mut view = WorldState::new();
        let spec = FrameSpec {
            tick,
            input_ack: tick,
            max_len: 1200,
        };
        SnapshotEncoder::new().encode(spec, baseline, state, &mut frame, &mut view);
        frame
    }

    /// Runs a local tick and returns the datagram it sent.
    fn datagram(core: &mut GameCore, now: Instant) -> InputDatagram {
        core.local_tick(now);
        let mut sent = None;
        while let Some(out) = core.poll_output() {
            if let GameOutput::Realtime(bytes) = out {
                sent = Some(InputDatagram::decode(&bytes).unwrap());
            }
        }
        sent.expect("an input datagram")
    }

    fn drain_acks(core: &mut GameCore) -> Vec<u64> {
        let mut acks = Vec::new();
        while let Some(out) = core.poll_output() {
            if let GameOutput::Control(text) = out {
                if let Ok(ClientControl::EventAck { id }) = serde_json::from_str(&text) {
                    acks.push(id);
                }
            }
        }
        acks
    }

    fn surfaced(core: &mut GameCore) -> Vec<u64> {
        std::iter::from_fn(|| core.poll_event())
            .filter_map(|e| match e {
                GameEvent::Event { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_resumed_session_starts_from_its_full_snapshot_and_surfaces_each_event_once() {
        let t0 = Instant::now();
        let mut core = GameCore::new(PeerId(3), t0);
        core.handle_control(&hello(0, 0.0), t0);
        let s10 = world(100);
        core.handle_realtime(&snapshot(10, None, &s10), t0 + 200 * MS);
        let s12 = world(140);
        core.handle_realtime(&snapshot(12, Some((10, &s10)), &s12), t0 + 240 * MS);
        assert_eq!(core.state(), Some(&s12));
        let d = datagram(&mut core, t0 + 250 * MS);
        assert_eq!(d.ack.map(|a| a.tick), Some(12));
        for id in [1, 2] {
            core.handle_control(&event(id), t0 + 250 * MS);
        }
        assert_eq!(surfaced(&mut core), [1, 2]);
        // The ack of event 2 was lost with the connection.
        let _ = drain_acks(&mut core);

        // Ten seconds away, then the resumed session: hello again, the
        // unacked events resent (2 again, and 3 that came meanwhile).
        let back = t0 + Duration::from_secs(10);
        core.handle_control(&hello(512, 10_240.0), back);
        assert_eq!(core.net_stats().resumes, 1);
        for id in [2, 3] {
            core.handle_control(&event(id), back);
        }
        assert_eq!(surfaced(&mut core), [3], "event 2 surfaced once only");
        assert_eq!(drain_acks(&mut core), [2, 3], "every copy acked");

        // Until the new session's first snapshot, no snapshot ack: the old
        // session's tick 12 is no baseline for the new one, and ten seconds
        // are no delay sample.
        let d = datagram(&mut core, back + 20 * MS);
        assert_eq!(d.ack, None);
        let s514 = world(9_000);
        core.handle_realtime(&snapshot(514, None, &s514), back + 40 * MS);
        assert_eq!(core.state_tick(), Some(514));
        assert_eq!(core.state(), Some(&s514), "the full snapshot is the state");
        assert_eq!(core.predicted(), Some(&[9_000, 7][..]));
        let d = datagram(&mut core, back + 60 * MS);
        assert_eq!(d.ack.map(|a| a.tick), Some(514));
        // Deltas against it apply as usual.
        let s516 = world(9_040);
        core.handle_realtime(&snapshot(516, Some((514, &s514)), &s516), back + 80 * MS);
        assert_eq!(core.state(), Some(&s516));
        assert_eq!(core.net_stats().unknown_baseline, 0);
        assert_eq!(core.net_stats().invalid, 0);
    }
}
