//! [`Dizolaur`], the [`Simulation`]: seats, phases, the race, lag
//! compensation, events and snapshots. The rules are documented in
//! [`super`].

use std::collections::VecDeque;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_protocol::game::{Entity, WorldState};
use rtcrelay_protocol::PeerId;
use serde_json::{json, Value};

use super::bot::{bot_input, BotReflexes};
use super::layout::*;
use super::obstacles::{Obstacle, ObstacleGenerator};
use super::physics::{
    advance, distance_at, hits, is_alive, runner_x_at, scroll_at, speed_at, Body,
};
use crate::authoritative::{Simulation, StateHasher};

pub const GAME_NAME: &str = "dizolaur";

/// Generate the track this far beyond the lane's left edge.
const GENERATE_AHEAD: i32 = VIEW_AHEAD + LANE_WIDTH_PX * UNITS_PER_PX;
/// Forget obstacles this far behind the lane's left edge (a rewind of
/// `MAX_REWIND` ticks moves the runner back at most ~104 px).
const PRUNE_BEHIND: i32 = 200 * UNITS_PER_PX;
/// Per-tick history kept per racer for rewinds (at least `MAX_REWIND`).
const HISTORY_TICKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Lobby,
    Countdown,
    Running,
    Ended,
}

impl Phase {
    fn code(self) -> i32 {
        match self {
            Phase::Lobby => PHASE_LOBBY,
            Phase::Countdown => PHASE_COUNTDOWN,
            Phase::Running => PHASE_RUNNING,
            Phase::Ended => PHASE_ENDED,
        }
    }

    fn racing(self) -> bool {
        matches!(self, Phase::Countdown | Phase::Running)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seat {
    Empty,
    Person(PeerId),
    Bot,
}

impl Seat {
    fn code(self) -> (u32, u32) {
        match self {
            Seat::Empty => (0, 0),
            Seat::Person(p) => (1, p.0),
            Seat::Bot => (2, 0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    seat: Seat,
    /// The input for the next tick, if it came.
    next_input: Option<u8>,
    /// The last input applied (repeated when the next one is missing).
    last_input: u8,
}

/// What a racer's lane is at one tick: everything a rewind restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Runner {
    body: Body,
    crash_tick: Option<u32>,
}

/// One simulated tick of a racer: its state before and the input applied.
#[derive(Debug, Clone, Copy)]
struct Past {
    tick: u32,
    before: Runner,
    input: u8,
}

/// Someone in the current (or last) match.
#[derive(Debug, Clone)]
struct Racer {
    peer: Option<PeerId>,
    bot: bool,
    runner: Runner,
    history: VecDeque<Past>,
    /// A late input changed the tick; resimulate from it before the next step.
    rewind_from: Option<u32>,
    left_tick: Option<u32>,
    /// The crash is final and `player_out` was sent.
    confirmed: bool,
    /// Still running when the time ran out (set at the match end).
    finished: bool,
    next_milestone: i32,
    place: u32,
    reflexes: BotReflexes,
}

impl Racer {
    /// Still in the race: alive or crashed but not yet confirmed.
    fn in_race(&self) -> bool {
        self.left_tick.is_none() && !self.confirmed && !self.finished
    }

    /// The seat holds this racer (not someone who took the lane after it left).
    fn seated_in(&self, seat: Seat) -> bool {
        match seat {
            Seat::Person(p) => self.peer == Some(p),
            Seat::Bot => self.bot,
            Seat::Empty => false,
        }
    }

    fn peer_json(&self) -> Value {
        self.peer.map_or(Value::Null, |p| json!(p.0))
    }
}

/// The Dizolaur game. See the [module docs](super) for the rules.
#[derive(Debug, Clone)]
pub struct Dizolaur {
    seed: u64,
    /// Draws each match's seed.
    rng: ChaCha8Rng,
    tick: u32,
    phase: Phase,
    phase_tick: u32,
    /// Race clock zero: run tick = tick - start_tick.
    start_tick: u32,
    max_ticks: u32,
    match_number: u32,
    match_seed: u64,
    bots: bool,
    winners: u8,
    lanes: [Lane; LANE_COUNT],
    racers: [Option<Racer>; LANE_COUNT],
    /// In track order.
    obstacles: VecDeque<Obstacle>,
    generator: ObstacleGenerator,
    bot_rng: ChaCha8Rng,
    announce_start: bool,
    /// Lanes whose racer left, to announce at the next step.
    left_events: Vec<usize>,
    /// Lanes a bot took over from a person, to announce at the next step.
    takeover_events: Vec<usize>,
    /// The match is frozen (`set_paused`): only the tick advances.
    paused: bool,
}

impl Dizolaur {
    pub fn new(seed: u64) -> Dizolaur {
        Dizolaur {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tick: 0,
            phase: Phase::Lobby,
            phase_tick: 0,
            start_tick: 0,
            max_ticks: 0,
            match_number: 0,
            match_seed: 0,
            bots: false,
            winners: 0,
            lanes: [Lane {
                seat: Seat::Empty,
                next_input: None,
                last_input: 0,
            }; LANE_COUNT],
            racers: Default::default(),
            obstacles: VecDeque::new(),
            generator: ObstacleGenerator::new(0, 0),
            bot_rng: ChaCha8Rng::seed_from_u64(0),
            announce_start: false,
            left_events: Vec::new(),
            takeover_events: Vec::new(),
            paused: false,
        }
    }

    fn lane_of(&self, player: PeerId) -> Option<usize> {
        self.lanes
            .iter()
            .position(|l| l.seat == Seat::Person(player))
    }

    /// Run tick of `tick`.
    fn run_tick(&self, tick: u32) -> i64 {
        i64::from(tick) - i64::from(self.start_tick)
    }

    /// The run tick the scene shows: the race stops at the limit, and at the
    /// match end.
    fn scene_run_tick(&self) -> i64 {
        let tick = match self.phase {
            Phase::Lobby => return 0,
            Phase::Countdown | Phase::Running => self.tick,
            Phase::Ended => self.phase_tick,
        };
        self.run_tick(tick).clamp(0, i64::from(self.max_ticks))
    }

    fn start_match(&mut self, bots: bool, max_seconds: u32) {
        self.match_number += 1;
        // 53 bits: exact as a JSON number in browsers.
        self.match_seed = self.rng.next_u64() >> 11;
        self.bots = bots;
        for lane in &mut self.lanes {
            match lane.seat {
                Seat::Empty if bots => lane.seat = Seat::Bot,
                Seat::Bot if !bots => lane.seat = Seat::Empty,
                _ => {}
            }
        }
        self.phase = Phase::Countdown;
        self.phase_tick = self.tick;
        self.start_tick = self.tick + COUNTDOWN_TICKS;
        self.max_ticks = max_seconds * TICK_RATE;
        self.winners = 0;
        self.generator = ObstacleGenerator::new(self.match_seed, i64::from(self.max_ticks));
        self.obstacles.clear();
        self.bot_rng = ChaCha8Rng::seed_from_u64(self.match_seed);
        self.bot_rng.set_stream(1);
        for (lane, racer) in self.lanes.iter().zip(self.racers.iter_mut()) {
            *racer = match lane.seat {
                Seat::Empty => None,
                seat => Some(Racer {
                    peer: match seat {
                        Seat::Person(p) => Some(p),
                        _ => None,
                    },
                    bot: seat == Seat::Bot,
                    runner: Runner {
                        body: Body::ready(lane.last_input),
                        crash_tick: None,
                    },
                    history: VecDeque::with_capacity(HISTORY_TICKS + 1),
                    rewind_from: None,
                    left_tick: None,
                    confirmed: false,
                    finished: false,
                    next_milestone: SCORE_MILESTONE,
                    place: 0,
                    reflexes: BotReflexes::default(),
                }),
            };
        }
        self.announce_start = true;
        self.left_events.clear();
        self.takeover_events.clear();
    }

    /// The events of what happened between steps (a match started, racers
    /// left, bots took over), at the step of `tick`.
    fn announce(&mut self, tick: u32, events: &mut Vec<Value>) {
        if std::mem::take(&mut self.announce_start) {
            let players: Vec<Value> = self
                .racers
                .iter()
                .enumerate()
                .filter_map(|(lane, r)| {
                    r.as_ref()
                        .map(|r| json!({"lane": lane, "peer": r.peer_json(), "bot": r.bot}))
                })
                .collect();
            events.push(json!({
                "kind": "match_start",
                "match": self.match_number,
                "tick": self.start_tick,
                "seed": self.match_seed,
                "max_seconds": self.max_ticks / TICK_RATE,
                "players": players,
            }));
        }
        for lane in std::mem::take(&mut self.left_events) {
            if let Some(racer) = &self.racers[lane] {
                let left = racer.left_tick.unwrap_or(tick);
                events.push(json!({
                    "kind": "player_out",
                    "lane": lane,
                    "peer": racer.peer_json(),
                    "bot": racer.bot,
                    "distance": distance_at(
                        self.run_tick(left),
                        i64::from(self.max_ticks),
                    ),
                    "tick": left,
                    "reason": "left",
                }));
            }
        }
        for lane in std::mem::take(&mut self.takeover_events) {
            if let Some(racer) = &self.racers[lane] {
                events.push(json!({
                    "kind": "bot_takeover",
                    "lane": lane,
                    "peer": racer.peer_json(),
                    "tick": tick,
                }));
            }
        }
    }

    /// One tick of a paused match: the tick advances and the inputs are
    /// taken (so that a held button is still known when the race goes on),
    /// but nothing in the match moves. Every tick stamp of the match moves
    /// on with the clock, so that run tick = tick - start_tick, the
    /// countdown, the time limit, pending crashes and the ranking all
    /// resume exactly where they stopped, as if the paused ticks had not
    /// been; ticks in later events and snapshots are on this shifted clock.
    fn step_paused(&mut self, events: &mut Vec<Value>) {
        self.tick += 1;
        self.start_tick += 1;
        self.phase_tick += 1;
        for racer in self.racers.iter_mut().flatten() {
            racer.runner.crash_tick = racer.runner.crash_tick.map(|t| t + 1);
            racer.left_tick = racer.left_tick.map(|t| t + 1);
        }
        self.announce(self.tick, events);
        for lane in &mut self.lanes {
            lane.last_input = lane.next_input.take().unwrap_or(lane.last_input);
        }
    }

    /// Re-simulates the lanes that got late inputs, from the oldest changed
    /// tick to the last simulated one. Lanes don't interact and the track
    /// does not depend on the runners, so only that racer's lane changes.
    fn resimulate(&mut self) {
        for racer in self.racers.iter_mut().flatten() {
            let Some(from) = racer.rewind_from.take() else {
                continue;
            };
            let Some(first) = racer.history.iter().position(|p| p.tick == from) else {
                continue;
            };
            let mut runner = racer.history[first].before;
            for past in racer.history.iter_mut().skip(first) {
                past.before = runner;
                runner = lane_tick(
                    runner,
                    past.input,
                    past.tick,
                    self.start_tick,
                    self.max_ticks,
                    &self.obstacles,
                );
            }
            racer.runner = runner;
        }
    }

    /// The bots' inputs for the next tick, from the state clients see.
    fn bot_inputs(&mut self) {
        if self.phase != Phase::Running
            || !self
                .racers
                .iter()
                .flatten()
                .any(|r| r.bot && r.in_race() && r.runner.crash_tick.is_none())
        {
            return;
        }
        let mut world = WorldState::new();
        self.snapshot(&mut world);
        let run_tick = self.run_tick(self.tick + 1);
        for i in 0..LANE_COUNT {
            let Some(racer) = self.racers[i].as_mut() else {
                continue;
            };
            if !racer.bot || !racer.in_race() || !racer.seated_in(self.lanes[i].seat) {
                continue;
            }
            let Some(entity) = world.get(LANE_ID_BASE + i as u32) else {
                continue;
            };
            let ideal = bot_input(&entity.fields, &world);
            let input = racer
                .reflexes
                .act(&mut self.bot_rng, ideal, &entity.fields, run_tick);
            self.lanes[i].next_input = Some(input);
        }
    }

    fn generate_track(&mut self) {
        let scroll = scroll_at(self.scene_run_tick());
        while self.generator.frontier() < scroll.saturating_add(GENERATE_AHEAD) {
            let before = self.generator.frontier();
            self.obstacles.push_back(self.generator.next_obstacle());
            if self.generator.frontier() <= before {
                break;
            }
        }
    }

    fn prune_track(&mut self) {
        let scroll = scroll_at(self.scene_run_tick());
        while self
            .obstacles
            .front()
            .is_some_and(|o| o.body.end() < scroll.saturating_sub(PRUNE_BEHIND))
        {
            self.obstacles.pop_front();
        }
    }

    /// Confirms what no late input can change any more (ticks up to
    /// `tick - MAX_REWIND`): score milestones and crashes.
    fn confirm(&mut self, events: &mut Vec<Value>) {
        let settled = i64::from(self.tick) - i64::from(MAX_REWIND);
        let (start, max) = (i64::from(self.start_tick), i64::from(self.max_ticks));
        for (lane, racer) in self.racers.iter_mut().enumerate() {
            let Some(racer) = racer.as_mut().filter(|r| r.in_race()) else {
                continue;
            };
            let (distance, crash) = match racer.runner.crash_tick {
                Some(crash) if i64::from(crash) <= settled => {
                    (distance_at(i64::from(crash) - start, max), Some(crash))
                }
                _ if settled >= start => (distance_at(settled - start, max), None),
                _ => continue,
            };
            while racer.next_milestone <= distance {
                events.push(json!({
                    "kind": "score",
                    "lane": lane,
                    "peer": racer.peer_json(),
                    "bot": racer.bot,
                    "distance": racer.next_milestone,
                }));
                racer.next_milestone += SCORE_MILESTONE;
            }
            if let Some(crash) = crash {
                racer.confirmed = true;
                racer.history.clear();
                events.push(json!({
                    "kind": "player_out",
                    "lane": lane,
                    "peer": racer.peer_json(),
                    "bot": racer.bot,
                    "distance": distance,
                    "tick": crash,
                    "reason": "crash",
                }));
            }
        }
    }

    /// Ends the match when every racer's outcome is final: left, crash
    /// confirmed, or survived to the time limit (and `MAX_REWIND` ticks
    /// passed since, so no late input can still crash them).
    fn check_end(&mut self, events: &mut Vec<Value>) {
        let settled = i64::from(self.tick) - i64::from(MAX_REWIND);
        let time_up = settled >= i64::from(self.start_tick) + i64::from(self.max_ticks);
        if self.racers.iter().flatten().any(|r| r.in_race()) && !time_up {
            return;
        }
        let end_tick = self.start_tick + self.max_ticks;
        // (lane, left, tick the race ended for them)
        let mut order: Vec<(usize, bool, u32)> = Vec::new();
        for (lane, racer) in self.racers.iter_mut().enumerate() {
            let Some(racer) = racer.as_mut() else {
                continue;
            };
            let end = if let Some(left) = racer.left_tick {
                left
            } else if let Some(crash) = racer.runner.crash_tick {
                crash
            } else {
                racer.finished = true;
                end_tick
            };
            racer.history.clear();
            order.push((lane, racer.left_tick.is_some(), end));
        }
        // Those who stayed first, the last one standing first; equal ticks
        // share a place (and a win).
        order.sort_by_key(|&(lane, left, end)| (left, std::cmp::Reverse(end), lane));
        let best = order.iter().find(|o| !o.1).map(|o| o.2);
        let mut ranking = Vec::new();
        let mut winners = Vec::new();
        for (index, &(lane, left, end)) in order.iter().enumerate() {
            let place = 1 + order[..index]
                .iter()
                .filter(|o| (o.1, std::cmp::Reverse(o.2)) < (left, std::cmp::Reverse(end)))
                .count();
            let Some(racer) = self.racers[lane].as_mut() else {
                continue;
            };
            racer.place = place as u32;
            if !left && Some(end) == best {
                winners.push(lane);
                self.winners |= 1 << lane;
            }
            ranking.push(json!({
                "lane": lane,
                "peer": racer.peer_json(),
                "bot": racer.bot,
                "distance": distance_at(
                    i64::from(end) - i64::from(self.start_tick),
                    i64::from(self.max_ticks),
                ),
            }));
        }
        events.push(json!({
            "kind": "match_end",
            "tick": self.tick,
            "ranking": ranking,
            "winners": winners,
        }));
        self.phase = Phase::Ended;
        self.phase_tick = self.tick;
    }

    fn match_fields(&self) -> Vec<i32> {
        let mut f = vec![0; MATCH_FIELDS];
        let run_tick = self.scene_run_tick();
        f[M_PHASE] = self.phase.code();
        f[M_PHASE_TICK] = self.phase_tick as i32;
        if self.phase == Phase::Countdown {
            f[M_COUNTDOWN] = self.start_tick.saturating_sub(self.tick) as i32;
        }
        f[M_START_TICK] = self.start_tick as i32;
        f[M_MAX_TICKS] = self.max_ticks as i32;
        if self.phase == Phase::Running
            && !self.paused
            && self.run_tick(self.tick) <= i64::from(self.max_ticks)
        {
            f[M_SPEED] = speed_at(run_tick);
        }
        f[M_SCROLL] = scroll_at(run_tick);
        f[M_MATCH] = self.match_number as i32;
        f[M_BOTS] = i32::from(self.bots);
        f[M_WINNERS] = i32::from(self.winners);
        f[M_RUNNING] = self.racers.iter().flatten().filter(|r| r.in_race()).count() as i32;
        f
    }

    fn lane_fields(&self, lane: usize) -> Vec<i32> {
        let mut f = vec![0; LANE_FIELDS];
        let seat = self.lanes[lane].seat;
        match seat {
            Seat::Person(p) => f[P_PEER] = p.0 as i32,
            Seat::Bot => f[P_BOT] = 1,
            Seat::Empty => {}
        }
        f[P_TICK] = self.tick as i32;
        let racer = self.racers[lane]
            .as_ref()
            .filter(|r| seat == Seat::Empty || r.seated_in(seat));
        let Some(racer) = racer else {
            f[P_STATE] = if seat == Seat::Empty {
                STATE_EMPTY
            } else {
                STATE_IDLE
            };
            f[P_INPUT] = i32::from(self.lanes[lane].last_input);
            return f;
        };
        if seat == Seat::Bot {
            // A bot that took over a person's seat still names them.
            f[P_PEER] = racer.peer.map_or(0, |p| p.0 as i32);
        }
        let body = racer.runner.body;
        let (start, max) = (i64::from(self.start_tick), i64::from(self.max_ticks));
        f[P_STATE] = if racer.left_tick.is_some() {
            STATE_OUT
        } else if racer.finished {
            STATE_FINISHED
        } else {
            body.state
        };
        f[P_Y] = body.y;
        f[P_VY] = body.vy;
        // Out of the race the lane only tracks the inputs (as prediction does).
        f[P_INPUT] = i32::from(if racer.in_race() {
            body.last_input
        } else {
            self.lanes[lane].last_input
        });
        let out_tick = racer.left_tick.or(racer.runner.crash_tick);
        let end = match out_tick {
            Some(t) => i64::from(t),
            None if racer.finished => start + max,
            None => i64::from(self.tick),
        };
        f[P_DISTANCE] = distance_at(end - start, max);
        f[P_PENDING] = i32::from(racer.runner.crash_tick.is_some() && !racer.confirmed);
        f[P_OUT_TICK] = out_tick.map_or(0, |t| t as i32);
        f[P_PLACE] = racer.place as i32;
        f
    }
}

/// One tick of a racer's lane: its motion, then the collision test against
/// the track at that tick. A hit makes it CRASHED at that tick.
fn lane_tick(
    mut runner: Runner,
    input: u8,
    tick: u32,
    start_tick: u32,
    max_ticks: u32,
    obstacles: &VecDeque<Obstacle>,
) -> Runner {
    let run_tick = i64::from(tick) - i64::from(start_tick);
    let max = i64::from(max_ticks);
    advance(&mut runner.body, input, run_tick, max);
    if is_alive(runner.body.state) && run_tick >= 1 && run_tick <= max {
        let x = runner_x_at(run_tick, max);
        if obstacles.iter().any(|o| hits(x, &runner.body, &o.body)) {
            runner.body.state = STATE_CRASHED;
            runner.crash_tick = Some(tick);
        }
    }
    runner
}

/// Parses the options of `{"start": {...}}`: (bots, max_seconds).
fn parse_start(options: &Value) -> Result<(bool, u32), String> {
    let mut bots = false;
    let mut max_seconds = DEFAULT_MAX_SECONDS;
    let options = match options {
        Value::Null => return Ok((bots, max_seconds)),
        Value::Object(options) => options,
        _ => return Err("\"start\" takes an object: {\"bots\":bool,\"max_seconds\":n}".into()),
    };
    for (key, value) in options {
        match key.as_str() {
            "bots" => {
                bots = value.as_bool().ok_or("\"bots\" must be true or false")?;
            }
            "max_seconds" => {
                max_seconds = value
                    .as_u64()
                    .filter(|s| (u64::from(MIN_MAX_SECONDS)..=u64::from(MAX_MAX_SECONDS)).contains(s))
                    .ok_or_else(|| {
                        format!(
                            "\"max_seconds\" must be a whole number from {MIN_MAX_SECONDS} to {MAX_MAX_SECONDS}"
                        )
                    })? as u32;
            }
            other => {
                return Err(format!(
                    "unknown start option \"{other}\" (expected \"bots\", \"max_seconds\")"
                ))
            }
        }
    }
    Ok((bots, max_seconds))
}

impl Simulation for Dizolaur {
    fn game(&self) -> &'static str {
        GAME_NAME
    }

    fn input_size(&self) -> u8 {
        INPUT_SIZE
    }

    fn max_players(&self) -> usize {
        LANE_COUNT
    }

    fn max_rewind(&self) -> u32 {
        MAX_REWIND
    }

    fn validate_input(&self, input: &[u8]) -> Result<(), String> {
        match input {
            [byte] if byte & !INPUT_MASK == 0 => Ok(()),
            [byte] => Err(format!(
                "input {byte:#04x} sets bits other than jump (0x01) and duck (0x02)"
            )),
            _ => Err(format!("input must be 1 byte, got {}", input.len())),
        }
    }

    fn add_player(&mut self, player: PeerId, _name: &str) -> Result<(), String> {
        if self.lane_of(player).is_some() {
            return Err("already seated".into());
        }
        let people = self
            .lanes
            .iter()
            .filter(|l| matches!(l.seat, Seat::Person(_)))
            .count();
        if people >= LANE_COUNT {
            return Err("the match is full".into());
        }
        let lane = self
            .lanes
            .iter()
            .position(|l| l.seat == Seat::Empty)
            .or_else(|| {
                // A bot gives up its seat, but not in the middle of a race.
                (!self.phase.racing())
                    .then(|| self.lanes.iter().position(|l| l.seat == Seat::Bot))
                    .flatten()
            })
            .ok_or("every lane is taken until the match ends")?;
        self.lanes[lane] = Lane {
            seat: Seat::Person(player),
            next_input: None,
            last_input: 0,
        };
        Ok(())
    }

    fn remove_player(&mut self, player: PeerId) {
        let Some(lane) = self.lane_of(player) else {
            return;
        };
        self.lanes[lane] = Lane {
            seat: Seat::Empty,
            next_input: None,
            last_input: 0,
        };
        if !self.phase.racing() {
            return;
        }
        if let Some(racer) = self.racers[lane].as_mut() {
            // A pending crash stands (nobody can undo it any more).
            if racer.in_race() && racer.runner.crash_tick.is_none() {
                racer.left_tick = Some(self.tick);
                racer.history.clear();
                self.left_events.push(lane);
            }
        }
    }

    fn command(&mut self, player: PeerId, command: &Value) -> Result<(), String> {
        const USAGE: &str = "expected {\"start\":{\"bots\":bool,\"max_seconds\":n}}";
        let Some(object) = command.as_object() else {
            return Err(format!("a command is a JSON object: {USAGE}"));
        };
        let mut keys = object.keys();
        let (Some(name), None) = (keys.next(), keys.next()) else {
            return Err(format!("a command has exactly one key: {USAGE}"));
        };
        if name != "start" {
            return Err(format!("unknown command \"{name}\": {USAGE}"));
        }
        let (bots, max_seconds) = parse_start(&object[name])?;
        if self.lane_of(player).is_none() {
            return Err("only a seated player can start a match".into());
        }
        if self.phase.racing() {
            return Err("a match is already running".into());
        }
        self.start_match(bots, max_seconds);
        Ok(())
    }

    fn apply_input(&mut self, player: PeerId, tick: u32, input: &[u8]) {
        let Some(lane) = self.lane_of(player) else {
            return;
        };
        let byte = match input {
            [byte] if byte & !INPUT_MASK == 0 => *byte,
            _ => return,
        };
        if tick == self.tick.wrapping_add(1) {
            self.lanes[lane].next_input = Some(byte);
            return;
        }
        // Late: within the rewind window, for a racer still in the race.
        if tick > self.tick || self.tick - tick >= MAX_REWIND {
            return;
        }
        let seat = self.lanes[lane].seat;
        let Some(racer) = self.racers[lane]
            .as_mut()
            .filter(|r| r.in_race() && r.seated_in(seat))
        else {
            return;
        };
        if let Some(past) = racer.history.iter_mut().find(|p| p.tick == tick) {
            if past.input != byte {
                past.input = byte;
                racer.rewind_from = Some(racer.rewind_from.map_or(tick, |t| t.min(tick)));
            }
        }
    }

    fn step(&mut self, events: &mut Vec<Value>) {
        if self.paused && self.phase.racing() {
            self.step_paused(events);
            return;
        }
        self.resimulate();
        self.bot_inputs();
        self.tick += 1;
        let tick = self.tick;
        self.announce(tick, events);
        if self.phase == Phase::Countdown && tick >= self.start_tick {
            self.phase = Phase::Running;
            self.phase_tick = tick;
        }
        let racing = self.phase.racing();
        if racing {
            self.generate_track();
        }
        for lane in 0..LANE_COUNT {
            let seat = self.lanes[lane].seat;
            let l = &mut self.lanes[lane];
            let input = l.next_input.take().unwrap_or(l.last_input);
            l.last_input = input;
            if !racing {
                continue;
            }
            let Some(racer) = self.racers[lane].as_mut().filter(|r| r.in_race()) else {
                continue;
            };
            // Someone who took the lane after its racer left does not steer it.
            let input = if racer.seated_in(seat) {
                input
            } else {
                racer.runner.body.last_input
            };
            racer.history.push_back(Past {
                tick,
                before: racer.runner,
                input,
            });
            if racer.history.len() > HISTORY_TICKS {
                racer.history.pop_front();
            }
            racer.runner = lane_tick(
                racer.runner,
                input,
                tick,
                self.start_tick,
                self.max_ticks,
                &self.obstacles,
            );
        }
        if racing {
            self.confirm(events);
            self.check_end(events);
            self.prune_track();
        }
    }

    fn tick(&self) -> u32 {
        self.tick
    }

    fn snapshot(&self, out: &mut WorldState) {
        out.clear();
        out.insert(Entity {
            id: MATCH_ID,
            kind: KIND_MATCH,
            fields: self.match_fields(),
        });
        for lane in 0..LANE_COUNT {
            out.insert(Entity {
                id: LANE_ID_BASE + lane as u32,
                kind: KIND_RUNNER,
                fields: self.lane_fields(lane),
            });
        }
        let scroll = scroll_at(self.scene_run_tick());
        for o in &self.obstacles {
            let b = o.body;
            if b.end() > scroll.saturating_sub(VIEW_BEHIND)
                && b.x < scroll.saturating_add(VIEW_AHEAD)
            {
                out.insert(Entity {
                    id: o.id,
                    kind: b.kind,
                    fields: vec![b.x, b.y, b.w, b.h],
                });
            }
        }
    }

    fn state_hash(&self) -> u64 {
        let mut h = StateHasher::new();
        h.u64(self.seed)
            .bytes(&self.rng.get_word_pos().to_le_bytes())
            .u32(self.tick)
            .i32(self.phase.code())
            .u32(self.phase_tick)
            .u32(self.start_tick)
            .u32(self.max_ticks)
            .u32(self.match_number)
            .u64(self.match_seed)
            .u32(u32::from(self.bots))
            .u32(u32::from(self.winners))
            .u32(u32::from(self.announce_start));
        for lane in &self.lanes {
            let (seat, peer) = lane.seat.code();
            h.u32(seat)
                .u32(peer)
                .u32(lane.next_input.map_or(u32::MAX, u32::from))
                .u32(u32::from(lane.last_input));
        }
        for racer in &self.racers {
            let Some(r) = racer else {
                h.u32(0);
                continue;
            };
            h.u32(1)
                .u32(r.peer.map_or(u32::MAX, |p| p.0))
                .u32(u32::from(r.bot));
            hash_runner(&mut h, &r.runner);
            h.u32(r.history.len() as u32);
            for past in &r.history {
                h.u32(past.tick).u32(u32::from(past.input));
                hash_runner(&mut h, &past.before);
            }
            h.u32(r.rewind_from.map_or(u32::MAX, |t| t))
                .u32(r.left_tick.map_or(u32::MAX, |t| t))
                .u32(u32::from(r.confirmed))
                .u32(u32::from(r.finished))
                .i32(r.next_milestone)
                .u32(r.place);
            r.reflexes.hash_into(&mut h);
        }
        h.u32(self.obstacles.len() as u32);
        for o in &self.obstacles {
            h.u32(o.id)
                .u32(u32::from(o.body.kind))
                .i32(o.body.x)
                .i32(o.body.y)
                .i32(o.body.w)
                .i32(o.body.h);
        }
        self.generator.hash_into(&mut h);
        h.bytes(&self.bot_rng.get_word_pos().to_le_bytes())
            .u64(self.bot_rng.get_stream())
            .bytes(&self.bot_rng.get_seed());
        h.u32(self.left_events.len() as u32);
        for &lane in &self.left_events {
            h.u32(lane as u32);
        }
        h.u32(self.takeover_events.len() as u32);
        for &lane in &self.takeover_events {
            h.u32(lane as u32);
        }
        h.u32(u32::from(self.paused));
        h.finish()
    }

    fn player_entity(&self, player: PeerId) -> Option<u32> {
        self.lane_of(player).map(|lane| LANE_ID_BASE + lane as u32)
    }

    fn in_match(&self) -> bool {
        self.phase.racing()
    }

    /// Only a racing match pauses: in the lobby or after the end there is
    /// nothing to freeze, and a later match must not start frozen.
    fn set_paused(&mut self, paused: bool) {
        let paused = paused && self.phase.racing();
        if paused == self.paused {
            return;
        }
        if paused {
            // The race clock shifts while paused (`step_paused`), so a late
            // input for a tick before the pause must not rewind across it:
            // the history would be re-simulated on the wrong clock. Apply
            // the rewinds already asked for, then forget the history; the
            // lanes are final up to here.
            self.resimulate();
            for racer in self.racers.iter_mut().flatten() {
                racer.history.clear();
            }
        }
        self.paused = paused;
    }

    /// A bot takes over `player`'s lane if its runner is still running (in
    /// the countdown or the race); its racer keeps the peer id, marked as a
    /// bot. A player already out, crashed (pending or confirmed), waiting
    /// for the next match or in the lobby or after the end has nothing for
    /// a bot to play: false, and the room removes them.
    fn replace_with_bot(&mut self, player: PeerId) -> bool {
        let Some(lane) = self.lane_of(player) else {
            return false;
        };
        if !self.phase.racing() {
            return false;
        }
        let seat = self.lanes[lane].seat;
        let Some(racer) = self.racers[lane]
            .as_mut()
            .filter(|r| r.seated_in(seat) && r.in_race() && r.runner.crash_tick.is_none())
        else {
            return false;
        };
        racer.bot = true;
        // The bot steers from the next step on (`bot_inputs`); until the
        // race runs the person's last input carries on, as for any bot.
        self.lanes[lane].seat = Seat::Bot;
        self.lanes[lane].next_input = None;
        self.takeover_events.push(lane);
        true
    }
}

fn hash_runner(h: &mut StateHasher, r: &Runner) {
    h.i32(r.body.state)
        .i32(r.body.y)
        .i32(r.body.vy)
        .u32(u32::from(r.body.last_input))
        .u32(r.crash_tick.map_or(u32::MAX, |t| t));
}
