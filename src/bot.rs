//! `rtcrelay bot`: headless Dizolaur players for load and soak tests.
//!
//! Each bot is a [`GameClient`] (the Rust client's game layer: clock sync,
//! redundant inputs, delta snapshots, prediction with the game's own
//! physics) in an authoritative room of `--room-size` bots. Bots press
//! seeded random buttons, a looped script, or the game's own bot policy;
//! one bot per room starts matches; with `--churn-every` each bot leaves
//! and joins again now and then; with `--netlab` every bot room gets a
//! network lab setting through the admin API first. Progress goes to
//! stderr once a second; the report (a table, or JSON with `--json`) to
//! stdout at the end. docs/benchmarks.md ("`rtcrelay bot`") documents the
//! flags, the report and the exit status.
//!
//! - `inputs`: the button sequences (random, script files);
//! - `report`: each bot's tally and the merged report;
//! - `admin`: the admin API calls (`/admin/netlab/room/{room}`).

mod admin;
pub mod inputs;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtcrelay_client::{
    ClientConfig, ClientError, ClientEvent, Entity, GameClient, GameCore, GameEvent, Predictor,
    WorldState,
};
use rtcrelay_relay::dizolaur::{
    bot_input, predict_player, LANE_COUNT, LANE_ID_BASE, MATCH_ID, MAX_MAX_SECONDS,
    MIN_MAX_SECONDS, M_PHASE, PHASE_ENDED, PHASE_LOBBY, P_PEER, P_STATE, STATE_EMPTY,
};
use rtcrelay_signaling::auth::{mint, JoinClaims, MIN_SECRET_BYTES};
use serde_json::json;
use tokio::time::Instant;

use self::admin::AdminUrl;
use self::inputs::{InputMode, InputPlayer, InputScript};
use self::report::{BotTally, Report};

/// Upper bound of one connection attempt (dial to `ready`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a bot waits for its leave and close to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed attempt, wait 1 s, 2 s, 4 s… up to this (± 50 %).
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(8);
/// A starter resends `start` if no match began this long after the last.
const START_RETRY: Duration = Duration::from_secs(2);
/// With seats still empty (bots away, churning), start anyway after this.
const START_WAIT: Duration = Duration::from_secs(3);
/// Bots still running this long after `--duration` are given up on.
const FINISH_GRACE: Duration = Duration::from_secs(30);
/// Lifetime of the join tokens the bots mint: a token is only checked at
/// the join, each session mints its own.
const TOKEN_TTL: Duration = Duration::from_secs(600);

/// Headless Dizolaur players (`rtcrelay bot`).
#[derive(Debug, Clone, Args)]
pub struct BotArgs {
    /// The signaling WebSocket of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws", value_name = "URL")]
    pub url: String,
    /// How many bots.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub clients: usize,
    /// Bots per authoritative room (Dizolaur seats 4).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub room_size: usize,
    /// How long to run, e.g. `60s`, `10m`.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Connection rate at the start: `N/s` (or `max`: all at once).
    #[arg(long, default_value = "10/s", value_parser = parse_ramp, value_name = "RATE")]
    pub ramp: Ramp,
    /// `random` (seeded buttons), `autoplay` (the game's own bot policy)
    /// or a script FILE of `TICK BUTTONS` lines, looped.
    #[arg(long, default_value = "random", value_name = "random|autoplay|FILE")]
    pub inputs: String,
    /// Seed of the random inputs, churn times and netlab settings.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Each bot leaves and joins again after a random time of 0.5 to 1.5
    /// times this (off by default).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub churn_every: Option<Duration>,
    /// Whether bots start matches: `off`, `once` per room, or `repeat`
    /// (start the next one when a match ends).
    #[arg(long, value_enum, default_value_t = MatchMode::Repeat)]
    pub matches: MatchMode,
    /// Length of the matches the bots start (10 to 600).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub match_seconds: u32,
    /// Network lab setting for every bot room: a profile name (preset or
    /// `[netlab.profiles]`), or a JSON `PUT` body such as
    /// `{"link":{"up":{"loss":{"model":"random","p":0.05}}}}`.
    #[arg(long, value_name = "PROFILE|JSON")]
    pub netlab: Option<String>,
    /// The server's HTTP listener for the admin API (default: derived from
    /// --url).
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,
    /// Bearer token of the admin API.
    #[arg(
        long,
        env = "RTCRELAY_ADMIN__TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// A secret of the server's `auth.secrets`: each session joins with a
    /// join token minted with it (room, `sub` = `bot-<index>`, valid 10
    /// minutes). Visible in `ps`: prefer the environment variable.
    #[arg(
        long,
        env = "RTCRELAY_BOT_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token_secret: Option<String>,
    /// Room names are `PREFIX-0`, `PREFIX-1`… (default `bot-<pid>`).
    #[arg(long, value_name = "PREFIX")]
    pub room_prefix: Option<String>,
    /// Local address of the bots' UDP sockets (must be a concrete address).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_name = "IP")]
    pub bind_ip: IpAddr,
    /// Print the report as one line of JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when more errors than this happened.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatchMode {
    Off,
    Once,
    Repeat,
}

/// Connections per second at the start; `None`: all at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp(Option<f64>);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 30s, 10m)"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

fn parse_ramp(s: &str) -> Result<Ramp, String> {
    if s == "max" {
        return Ok(Ramp(None));
    }
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Ramp(Some(rate))),
        _ => Err(format!(
            "{s:?}: expected connections per second, e.g. 10/s (or max)"
        )),
    }
}

/// Everything the bots share, checked before any connects.
#[derive(Debug)]
struct Plan {
    url: String,
    clients: usize,
    room_size: usize,
    rooms: Vec<String>,
    duration: Duration,
    ramp: Ramp,
    inputs: Inputs,
    seed: u64,
    churn: Option<Duration>,
    matches: MatchMode,
    match_seconds: u32,
    bind_ip: IpAddr,
    token_secret: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Inputs {
    Play(InputMode),
    Autoplay,
}

impl Plan {
    fn new(args: &BotArgs) -> Result<Plan, String> {
        if args.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if args.room_size == 0 {
            return Err("--room-size must be at least 1".into());
        }
        if !(MIN_MAX_SECONDS..=MAX_MAX_SECONDS).contains(&args.match_seconds) {
            return Err(format!(
                "--match-seconds must be within {MIN_MAX_SECONDS}..={MAX_MAX_SECONDS}"
            ));
        }
        if !args.url.starts_with("ws://") {
            return Err(format!(
                "--url {:?}: expected ws://HOST:PORT/ws (the client has no TLS)",
                args.url
            ));
        }
        let inputs = match args.inputs.as_str() {
            "random" => Inputs::Play(InputMode::Random),
            "autoplay" => Inputs::Autoplay,
            file => {
                let text = std::fs::read_to_string(PathBuf::from(file))
                    .map_err(|e| format!("--inputs {file}: {e}"))?;
                let script =
                    InputScript::parse(&text).map_err(|e| format!("--inputs {file}: {e}"))?;
                Inputs::Play(InputMode::Script(Arc::new(script)))
            }
        };
        let prefix = args
            .room_prefix
            .clone()
            .unwrap_or_else(|| format!("bot-{}", std::process::id()));
        let room_count = args.clients.div_ceil(args.room_size);
        let rooms: Vec<String> = (0..room_count).map(|r| format!("{prefix}-{r}")).collect();
        let longest = rooms.last().map_or(0, String::len);
        let valid = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if !prefix.chars().all(valid) || longest > 64 {
            return Err(format!(
                "--room-prefix {prefix:?}: room ids are 1 to 64 of [A-Za-z0-9_.-]"
            ));
        }
        let token_secret = match &args.token_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(format!(
                    "--token-secret: must be at least {MIN_SECRET_BYTES} bytes, as the server's \
                     auth.secrets"
                ))
            }
            Some(secret) => Some(secret.as_bytes().to_vec()),
            None => None,
        };
        Ok(Plan {
            url: args.url.clone(),
            clients: args.clients,
            room_size: args.room_size,
            rooms,
            duration: args.duration,
            ramp: args.ramp,
            inputs,
            seed: args.seed,
            churn: args.churn_every,
            matches: args.matches,
            match_seconds: args.match_seconds,
            bind_ip: args.bind_ip,
            token_secret,
        })
    }

    fn room_of(&self, bot: usize) -> usize {
        bot / self.room_size
    }

    fn first_dial(&self, bot: usize) -> Duration {
        match self.ramp.0 {
            Some(rate) => Duration::from_secs_f64(bot as f64 / rate),
            None => Duration::ZERO,
        }
    }

    /// A bot's own seed: independent streams, reproducible from `--seed`.
    fn bot_seed(&self, bot: usize, salt: u64) -> u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(bot as u64);
        rng.set_word_pos(u128::from(salt) * 16);
        rng.random()
    }
}

/// Counters the progress line reads while the bots run.
#[derive(Debug, Default)]
struct Live {
    connected: AtomicUsize,
    snapshots: AtomicU64,
    errors: AtomicU64,
    rejoins: AtomicU64,
    resumes: AtomicU64,
}

/// Per room: a match has started there (for `--matches once`).
type RoomFlags = Arc<Vec<AtomicBool>>;

/// Runs `rtcrelay bot`. Exit status: 0 when the errors stayed within
/// `--max-errors`, 1 otherwise, 2 when the run could not start (bad
/// flags, unreadable script, netlab setting refused).
pub fn run(args: &BotArgs) -> ExitCode {
    let plan = match Plan::new(args) {
        Ok(plan) => Arc::new(plan),
        Err(e) => {
            eprintln!("rtcrelay bot: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcrelay bot: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run_bots(plan, args));
    // The webrtc crate leaves background tasks behind closed connections;
    // do not wait for them.
    runtime.shutdown_background();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("rtcrelay bot: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "rtcrelay bot: {} errors (at most {} allowed)",
            report.errors.total, report.max_errors
        );
        ExitCode::FAILURE
    }
}

fn init_tracing() {
    // The webrtc stack warns about every churned connection; bots only
    // show errors unless RTCRELAY_LOG asks for more.
    let filter = std::env::var("RTCRELAY_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run_bots(plan: Arc<Plan>, args: &BotArgs) -> Result<Report, String> {
    let netlab = match &args.netlab {
        Some(setting) => {
            let url = match &args.admin_url {
                Some(url) => AdminUrl::parse(url)?,
                None => AdminUrl::from_signaling(&plan.url)?,
            };
            let token = args.admin_token.as_deref();
            set_netlab(&url, token, &plan, setting).await?;
            Some((url, token))
        }
        None => None,
    };

    let start = Instant::now();
    let live = Arc::new(Live::default());
    let started: RoomFlags = Arc::new(plan.rooms.iter().map(|_| AtomicBool::new(false)).collect());
    let bots: Vec<_> = (0..plan.clients)
        .map(|i| {
            tokio::spawn(bot(
                i,
                Arc::clone(&plan),
                Arc::clone(&live),
                Arc::clone(&started),
                start,
            ))
        })
        .collect();
    let progress = tokio::spawn(progress(Arc::clone(&live), plan.clients, start));

    let mut run_errors = BTreeMap::new();
    let give_up = start + plan.duration + FINISH_GRACE;
    let mut tallies = Vec::with_capacity(bots.len());
    for handle in bots {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(give_up, handle).await {
            Ok(Ok(tally)) => tallies.push(tally),
            Ok(Err(_)) | Err(_) => {
                abort.abort();
                *run_errors.entry("bot_hung".to_owned()).or_default() += 1;
                tallies.push(BotTally::default());
            }
        }
    }
    progress.abort();
    let elapsed = start.elapsed();

    if let Some((url, token)) = netlab {
        for room in &plan.rooms {
            let path = format!("/admin/netlab/room/{room}");
            if let Err(e) = url.request("DELETE", &path, token, None).await {
                eprintln!("rtcrelay bot: clearing the netlab setting of {room}: {e}");
            }
        }
    }
    Ok(Report::new(
        &tallies,
        &run_errors,
        plan.room_size,
        elapsed,
        args.max_errors,
    ))
}

/// Puts the `--netlab` setting in force for every bot room (before anyone
/// joins, so the first packets are impaired too).
async fn set_netlab(
    url: &AdminUrl,
    token: Option<&str>,
    plan: &Plan,
    setting: &str,
) -> Result<(), String> {
    for (r, room) in plan.rooms.iter().enumerate() {
        let body = if setting.trim_start().starts_with('{') {
            setting.to_owned()
        } else {
            json!({"profile": setting, "seed": plan.bot_seed(r, u64::MAX)}).to_string()
        };
        let path = format!("/admin/netlab/room/{room}");
        let (status, answer) = url.request("PUT", &path, token, Some(&body)).await?;
        if status != 200 {
            return Err(format!(
                "--netlab: PUT {path} answered {status}: {}",
                answer.trim()
            ));
        }
    }
    eprintln!("netlab: {setting} in force for {} rooms", plan.rooms.len());
    Ok(())
}

/// One line a second on stderr.
async fn progress(live: Arc<Live>, clients: usize, start: Instant) {
    let mut every =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_snapshots = 0;
    loop {
        every.tick().await;
        let snapshots = live.snapshots.load(Ordering::Relaxed);
        let rate = (snapshots - last_snapshots) as f64;
        last_snapshots = snapshots;
        let rate = if rate >= 1000.0 {
            format!("{:.1}k", rate / 1000.0)
        } else {
            format!("{rate:.0}")
        };
        eprintln!(
            "t={}s connected {}/{clients} snapshots {rate}/s rejoins {} resumes {} errors {}",
            start.elapsed().as_secs(),
            live.connected.load(Ordering::Relaxed),
            live.rejoins.load(Ordering::Relaxed),
            live.resumes.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        );
    }
}

/// The game's own physics, so predictions are exact.
struct Physics;

impl Predictor for Physics {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Its time was up (churn or the end of the run).
    Done,
    /// The server or the network ended it.
    Closed,
}

fn connect_error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Config(_) => "connect_config".into(),
        ClientError::Signaling(code, _) => format!("join_refused:{}", code.as_str()),
        ClientError::WebSocket(_) => "connect_websocket".into(),
        ClientError::WebRtc(_) => "connect_webrtc".into(),
        ClientError::Protocol(_) => "connect_protocol".into(),
        ClientError::Timeout(_) => "connect_timeout".into(),
        ClientError::Closed => "connect_closed".into(),
        ClientError::Reconnecting => "connect_reconnecting".into(),
        ClientError::NotInRoom => "connect_not_in_room".into(),
    }
}

/// A join token for bot `index` in `room`, valid for [`TOKEN_TTL`].
fn join_token(secret: &[u8], room: &str, index: usize) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_owned())?;
    let claims = JoinClaims {
        room: room.to_owned(),
        sub: format!("bot-{index}"),
        exp: (now + TOKEN_TTL).as_secs(),
        name: None,
    };
    mint(secret, &claims)
}

/// `[0.5, 1.5)` × `d`: spreads reconnections so bots do not move in step.
fn jittered(d: Duration, rng: &mut ChaCha8Rng) -> Duration {
    d.mul_f64(rng.random_range(0.5..1.5))
}

/// One bot: join, play until its churn time or the end, leave, again.
async fn bot(
    index: usize,
    plan: Arc<Plan>,
    live: Arc<Live>,
    started: RoomFlags,
    start: Instant,
) -> BotTally {
    let mut tally = BotTally::default();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.bot_seed(index, 0));
    let deadline = start + plan.duration;
    let room = plan.room_of(index);
    tokio::time::sleep_until(start + plan.first_dial(index)).await;
    let mut failures = 0u32;
    while Instant::now() < deadline {
        let mut config = ClientConfig::new(&plan.url, &plan.rooms[room], format!("bot-{index}"));
        config.capacity = Some(plan.room_size);
        config.bind_ip = plan.bind_ip;
        config.connect_timeout = CONNECT_TIMEOUT;
        if let Some(secret) = &plan.token_secret {
            match join_token(secret, &plan.rooms[room], index) {
                Ok(token) => config.token = Some(token),
                Err(e) => {
                    tracing::error!("bot {index}: {e}");
                    tally.error("token_mint");
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let dial = Instant::now();
        let connected = tokio::select! {
            c = GameClient::connect(config) => c,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let mut game = match connected {
            Ok(game) => game,
            Err(e) => {
                tally.error(connect_error_kind(&e));
                live.errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                let backoff =
                    Duration::from_secs(1 << (failures - 1).min(3)).min(MAX_RETRY_BACKOFF);
                tokio::time::sleep_until(
                    deadline.min(Instant::now() + jittered(backoff, &mut rng)),
                )
                .await;
                continue;
            }
        };
        failures = 0;
        tally.setup.push(dial.elapsed());
        if tally.sessions > 0 {
            tally.rejoins += 1;
            live.rejoins.fetch_add(1, Ordering::Relaxed);
        }
        tally.sessions += 1;
        live.connected.fetch_add(1, Ordering::Relaxed);
        let until = match plan.churn {
            Some(every) => deadline.min(Instant::now() + jittered(every, &mut rng)),
            None => deadline,
        };
        let session_seed = plan.bot_seed(index, tally.sessions);
        let session = Session {
            plan: &plan,
            live: &live,
            started: &started,
            room,
        };
        let ended = session
            .play(&mut game, until, session_seed, &mut tally)
            .await;
        live.connected.fetch_sub(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, game.close()).await;
        if ended == Ended::Closed {
            tally.error("session_closed");
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if plan.churn.is_some() || ended == Ended::Closed {
            let pause = jittered(Duration::from_millis(500), &mut rng);
            tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
        }
    }
    tally
}

struct Session<'a> {
    plan: &'a Plan,
    live: &'a Live,
    started: &'a RoomFlags,
    room: usize,
}

/// What a snapshot says about starting a match.
#[derive(Debug, Default)]
struct StartView {
    /// Lobby or ended, and this bot is the seated person with the lowest
    /// peer id (so exactly one bot per room sends `start`).
    starter: bool,
    seated: usize,
}

impl Session<'_> {
    async fn play(
        &self,
        game: &mut GameClient,
        until: Instant,
        seed: u64,
        tally: &mut BotTally,
    ) -> Ended {
        game.set_predictor(Box::new(Physics));
        let inputs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&inputs);
        let mut player = match &self.plan.inputs {
            Inputs::Play(mode) => Some(InputPlayer::new(mode.clone(), seed)),
            Inputs::Autoplay => None,
        };
        game.set_input_source(Box::new(move |core: &GameCore| {
            // The core sends an input datagram on each local tick once the
            // clock is synchronized.
            if core.clock_offset_ms().is_some() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            match &mut player {
                Some(p) => Some(vec![p.next_buttons()]),
                None => Some(vec![bot_input(core.predicted()?, core.state()?)]),
            }
        }));

        let mut sample = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let mut first_snapshot = None;
        let mut event_ids = BTreeSet::new();
        let mut start_sent: Option<Instant> = None;
        let mut startable_since: Option<Instant> = None;
        let ended = loop {
            tokio::select! {
                event = game.next_game_event() => match event {
                    Some(GameEvent::Snapshot { .. }) => {
                        tally.snapshots += 1;
                        self.live.snapshots.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        first_snapshot.get_or_insert(now);
                        let view = game.with_core(start_view);
                        if !view.starter {
                            startable_since = None;
                            continue;
                        }
                        let since = *startable_since.get_or_insert(now);
                        let full = view.seated >= self.plan.room_size.min(LANE_COUNT);
                        let due = start_sent.is_none_or(|at| now - at >= START_RETRY);
                        if due && (full || now - since >= START_WAIT) && self.may_start() {
                            game.command(json!({"start": {
                                "bots": false,
                                "max_seconds": self.plan.match_seconds,
                            }}));
                            tally.starts_sent += 1;
                            start_sent = Some(now);
                        }
                    }
                    Some(GameEvent::Event { id, event, .. }) => {
                        event_ids.insert(id);
                        tally.events_received += 1;
                        match event.get("kind").and_then(|k| k.as_str()) {
                            Some("match_start") => {
                                tally.match_starts += 1;
                                self.started[self.room].store(true, Ordering::Relaxed);
                            }
                            Some("match_end") => tally.match_ends += 1,
                            _ => {}
                        }
                    }
                    Some(GameEvent::Error { code, .. }) => {
                        tally.error(format!("server_error:{code}"));
                        self.live.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(GameEvent::Connection(ClientEvent::Resumed { .. })) => {
                        tally.resumes += 1;
                        self.live.resumes.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(GameEvent::Connection(ClientEvent::ResumeFailed { code, .. })) => {
                        tally.resume_failures += 1;
                        let why = code.map_or("grace_over", |c| c.as_str());
                        tally.error(format!("resume_failed:{why}"));
                        self.live.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(GameEvent::Closed) | None => break Ended::Closed,
                    Some(GameEvent::Hello(_) | GameEvent::Stats { .. } | GameEvent::Connection(_)) => {}
                },
                _ = sample.tick() => {
                    let net = game.net_stats();
                    if net.rtt_ms > 0.0 {
                        tally.rtt_ms.push(net.rtt_ms);
                    }
                    if net.server_rtt_ms > 0.0 {
                        tally.server_rtt_ms.push(net.server_rtt_ms);
                    }
                    if first_snapshot.is_some() {
                        tally.loss_down.push(net.loss_down);
                        tally.loss_up.push(net.loss_up);
                    }
                }
                _ = tokio::time::sleep_until(until) => break Ended::Done,
            }
        };
        if let Some(first) = first_snapshot {
            tally.in_game += first.elapsed();
        }
        tally.inputs_sent += inputs.load(Ordering::Relaxed);
        let lost = lost_ids(&event_ids);
        if lost > 0 {
            tally.events_lost += lost;
            *tally
                .errors
                .entry("critical_event_lost".into())
                .or_default() += lost;
            self.live.errors.fetch_add(lost, Ordering::Relaxed);
        }
        ended
    }

    fn may_start(&self) -> bool {
        match self.plan.matches {
            MatchMode::Off => false,
            MatchMode::Once => !self.started[self.room].load(Ordering::Relaxed),
            MatchMode::Repeat => true,
        }
    }
}

/// Ids missing between the lowest and the highest of `ids`.
fn lost_ids(ids: &BTreeSet<u64>) -> u64 {
    match (ids.first(), ids.last()) {
        (Some(lo), Some(hi)) => (hi - lo + 1) - ids.len() as u64,
        _ => 0,
    }
}

fn lanes(world: &WorldState) -> impl Iterator<Item = &Entity> {
    (LANE_ID_BASE..LANE_ID_BASE + LANE_COUNT as u32).filter_map(|id| world.get(id))
}

/// Reads the newest state: finds the own lane when the game seated this
/// bot after `hello`, and whether this bot should start the next match.
fn start_view(core: &mut GameCore) -> StartView {
    let peer = core.peer_id().0;
    let Some(world) = core.state() else {
        return StartView::default();
    };
    let seated: Vec<(u32, i32)> = lanes(world)
        .filter(|lane| lane.fields.get(P_STATE).is_some_and(|&s| s != STATE_EMPTY))
        .map(|lane| (lane.id, lane.fields.get(P_PEER).copied().unwrap_or(0)))
        .collect();
    let startable = world
        .get(MATCH_ID)
        .and_then(|m| m.fields.get(M_PHASE))
        .is_some_and(|&p| p == PHASE_LOBBY || p == PHASE_ENDED);
    // Bots' seats carry peer 0: only people count.
    let lowest = seated
        .iter()
        .filter(|&&(_, p)| p > 0)
        .map(|&(_, p)| p as u32)
        .min();
    let own_lane = seated
        .iter()
        .find(|&&(_, p)| p > 0 && p as u32 == peer)
        .map(|&(id, _)| id);
    let view = StartView {
        starter: startable && lowest == Some(peer),
        seated: seated.len(),
    };
    if core.own_entity().is_none() {
        if let Some(id) = own_lane {
            core.set_own_entity(Some(id));
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(parse_ramp("10/s"), Ok(Ramp(Some(10.0))));
        assert_eq!(parse_ramp("2.5"), Ok(Ramp(Some(2.5))));
        assert_eq!(parse_ramp("max"), Ok(Ramp(None)));
        assert!(parse_ramp("0/s").is_err());
        assert!(parse_ramp("fast").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    fn args(extra: &[&str]) -> BotArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bot: BotArgs,
        }
        let argv = std::iter::once("bot").chain(extra.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").bot
    }

    #[test]
    fn a_plan_puts_bots_in_rooms_and_ramps_them() {
        let plan = Plan::new(&args(&[
            "--clients",
            "10",
            "--room-size",
            "4",
            "--ramp",
            "5/s",
            "--room-prefix",
            "soak",
        ]))
        .unwrap();
        assert_eq!(plan.rooms, ["soak-0", "soak-1", "soak-2"]);
        assert_eq!(
            (plan.room_of(3), plan.room_of(4), plan.room_of(9)),
            (0, 1, 2)
        );
        assert_eq!(plan.first_dial(5), Duration::from_secs(1));
        assert_ne!(plan.bot_seed(0, 1), plan.bot_seed(1, 1));
        assert_ne!(plan.bot_seed(0, 1), plan.bot_seed(0, 2));
        assert_eq!(plan.bot_seed(3, 7), plan.bot_seed(3, 7));
    }

    #[test]
    fn bad_plans_are_refused() {
        for (flags, needle) in [
            (&["--clients", "0"][..], "--clients"),
            (&["--room-size", "0"][..], "--room-size"),
            (&["--match-seconds", "5"][..], "--match-seconds"),
            (&["--url", "wss://x/ws"][..], "--url"),
            (&["--room-prefix", "a b"][..], "--room-prefix"),
            (&["--inputs", "/nonexistent/script"][..], "--inputs"),
            (&["--token-secret", "short"][..], "--token-secret"),
        ] {
            let e = Plan::new(&args(flags)).unwrap_err();
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
    }

    #[test]
    fn holes_in_event_ids_are_lost_events() {
        assert_eq!(lost_ids(&BTreeSet::new()), 0);
        assert_eq!(lost_ids(&BTreeSet::from([4, 5, 6])), 0);
        assert_eq!(lost_ids(&BTreeSet::from([4, 7, 8])), 2);
    }
}
