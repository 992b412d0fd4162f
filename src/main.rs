//! `rtcrelay`: one binary for signaling, the server WebRTC peer and the
//! bundled TURN server. `rtcrelay serve` runs everything with embedded
//! defaults; `rtcrelay turn` runs the TURN server alone.

mod impair;
mod turn_probe;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use figment::value::Value;
use prometheus_client::registry::Registry;
use rtcrelay_protocol::signaling::IceServer;
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::{Relay, RelayMetrics};
use rtcrelay_signaling::{AppState, IceServerMinter};
use rtcrelay_turn::{TurnMetrics, TurnMinter, TurnServer};
use tracing_subscriber::EnvFilter;

use rtcrelay::config::{self, Config, LogFormat};

/// How long in-flight HTTP requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "rtcrelay",
    version,
    about = "WebRTC DataChannel server for real-time browser games"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run signaling (HTTP + WebSocket), the server peer (UDP) and the
    /// bundled TURN server.
    Serve(ServeArgs),
    /// Run the bundled TURN server alone (needs turn.auth.secrets or
    /// turn.auth.users in the configuration). SIGHUP reloads `[turn]`.
    /// `rtcrelay turn probe URL` checks a TURN server from the outside
    /// instead.
    Turn(TurnArgs),
    /// Re-run a recorded match from its log (seed + accepted inputs) and
    /// check that every tick reaches the recorded state hash.
    Replay(ReplayArgs),
    /// A standalone UDP impairment proxy: forwards each client's datagrams
    /// to --forward and back through the network lab's model (loss, delay,
    /// jitter, reorder, rate, ...); prints a summary on SIGINT/SIGTERM.
    Impair(impair::ImpairArgs),
    /// Headless Dizolaur players for load and soak tests: join
    /// authoritative rooms, play, churn, optionally under the network lab;
    /// report setup time, RTT, snapshot rate, loss and errors.
    Bot(rtcrelay::bot::BotArgs),
    /// Print a join token (JWT HS256) for one player and one room, for
    /// testing a server with auth.mode = "token".
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// One of the server's auth.secrets. Prefer the environment variable,
    /// which stays out of shell history and `ps`.
    #[arg(long, env = "RTCRELAY_AUTH_SECRET", hide_env_values = true)]
    secret: String,
    /// The room the token admits to.
    #[arg(long)]
    room: String,
    /// Your player id (the token's `sub`).
    #[arg(long)]
    player: String,
    /// How long the token is valid, e.g. 10m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Display name the server uses instead of the join's `name`.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
struct ReplayArgs {
    /// A match log (JSON), as written to `game.record_dir`.
    log: PathBuf,
    /// Print the state hash of every tick (`tick hash`, one per line).
    #[arg(long)]
    hashes: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; every key has a default.
    #[arg(long, env = "RTCRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP + WebSocket listen address [config: http.listen].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Relay UDP listen address [config: relay.listen].
    #[arg(long, value_name = "ADDR")]
    relay_listen: Option<SocketAddr>,
    /// Address advertised to clients for a 1:1 NAT [config: relay.public_addr].
    #[arg(long, value_name = "ADDR")]
    relay_public_addr: Option<SocketAddr>,
    /// Capacity of new rooms [config: rooms.default_capacity].
    #[arg(long, value_name = "N")]
    room_capacity: Option<usize>,
    /// Simulation ticks per second of authoritative rooms [config: game.tick_rate].
    #[arg(long, value_name = "HZ")]
    tick_rate: Option<u32>,
    /// Snapshots per second to each player [config: game.snapshot_rate].
    #[arg(long, value_name = "HZ")]
    snapshot_rate: Option<u32>,
    /// Write each authoritative room's match log here [config: game.record_dir].
    #[arg(long, value_name = "DIR")]
    game_record_dir: Option<PathBuf>,
    /// Do not run the bundled TURN server [config: turn.enabled = false].
    #[arg(long)]
    no_turn: bool,
    /// Network lab profile in force for everyone at startup: a preset
    /// (good, wifi, wifi-lossy, 4g, 3g, satellite, congested) or one of
    /// [netlab.profiles] [config: netlab.profile].
    #[arg(long, value_name = "NAME")]
    netlab_profile: Option<String>,
    /// Seed of the startup network lab setting [config: netlab.seed].
    #[arg(long, value_name = "N")]
    netlab_seed: Option<u64>,
    /// Bearer token of the admin API (/admin/netlab). Visible in `ps`:
    /// prefer RTCRELAY_ADMIN__TOKEN or the config file [config: admin.token].
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    #[command(flatten)]
    turn: TurnFlags,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct TurnArgs {
    /// `rtcrelay turn probe URL ...` checks a TURN server instead of
    /// running one.
    #[command(subcommand)]
    command: Option<turn_probe::TurnCommand>,
    /// TOML configuration file (its `[turn]` section; other sections are
    /// checked but unused).
    #[arg(long, env = "RTCRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Serve `/metrics` and `/healthz` over HTTP on this address (off by
    /// default).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    turn: TurnFlags,
}

/// Flags of the `[turn]` section, shared by `serve` and `turn`.
#[derive(Args)]
struct TurnFlags {
    /// TURN UDP listen address; repeat for several, `none` for none
    /// [config: turn.listen_udp].
    #[arg(long, value_name = "ADDR")]
    turn_listen_udp: Vec<ListenFlag>,
    /// TURN-over-TCP listen address; repeat for several, `none` for none
    /// [config: turn.listen_tcp].
    #[arg(long, value_name = "ADDR")]
    turn_listen_tcp: Vec<ListenFlag>,
    /// TURN-over-TLS listen address (`turns:`); repeat for several, `none`
    /// for none; needs --turn-tls-cert and --turn-tls-key [config: turn.listen_tls].
    #[arg(long, value_name = "ADDR")]
    turn_listen_tls: Vec<ListenFlag>,
    /// PEM certificate chain for the TLS listeners [config: turn.tls_cert].
    #[arg(long, value_name = "FILE")]
    turn_tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listeners [config: turn.tls_key].
    #[arg(long, value_name = "FILE")]
    turn_tls_key: Option<PathBuf>,
    /// Address TURN relay sockets bind to [config: turn.relay_ip].
    #[arg(long, value_name = "IP")]
    turn_relay_ip: Option<IpAddr>,
    /// Address advertised for relay sockets, for a 1:1 NAT [config: turn.external_ip].
    #[arg(long, value_name = "IP")]
    turn_external_ip: Option<IpAddr>,
    /// Relay port range, e.g. 49152-65535 [config: turn.relay_ports].
    #[arg(long, value_name = "LOW-HIGH")]
    turn_relay_ports: Option<String>,
}

/// A listen address flag: an address, or `none`.
#[derive(Debug, Clone, Copy)]
struct ListenFlag(Option<SocketAddr>);

impl std::str::FromStr for ListenFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(ListenFlag(None));
        }
        s.parse()
            .map(|a| ListenFlag(Some(a)))
            .map_err(|e| format!("{e} (an address like 127.0.0.1:3478, or `none`)"))
    }
}

impl TurnFlags {
    fn overrides(&self, o: &mut Vec<(&'static str, Value)>) {
        for (key, flags) in [
            ("turn.listen_udp", &self.turn_listen_udp),
            ("turn.listen_tcp", &self.turn_listen_tcp),
            ("turn.listen_tls", &self.turn_listen_tls),
        ] {
            if !flags.is_empty() {
                let list: Vec<String> = flags
                    .iter()
                    .filter_map(|f| f.0.map(|a| a.to_string()))
                    .collect();
                o.push((key, list.into()));
            }
        }
        for (key, path) in [
            ("turn.tls_cert", &self.turn_tls_cert),
            ("turn.tls_key", &self.turn_tls_key),
        ] {
            if let Some(path) = path {
                o.push((key, path.display().to_string().into()));
            }
        }
        if let Some(ip) = self.turn_relay_ip {
            o.push(("turn.relay_ip", ip.to_string().into()));
        }
        if let Some(ip) = self.turn_external_ip {
            o.push(("turn.external_ip", ip.to_string().into()));
        }
        if let Some(ports) = &self.turn_relay_ports {
            o.push(("turn.relay_ports", ports.clone().into()));
        }
    }
}

impl ServeArgs {
    fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut o = Vec::new();
        let mut add = |key, value: Option<String>| {
            if let Some(v) = value {
                o.push((key, Value::from(v)));
            }
        };
        add("http.listen", self.http_listen.map(|a| a.to_string()));
        add("relay.listen", self.relay_listen.map(|a| a.to_string()));
        add(
            "relay.public_addr",
            self.relay_public_addr.map(|a| a.to_string()),
        );
        add(
            "rooms.default_capacity",
            self.room_capacity.map(|n| n.to_string()),
        );
        add("game.tick_rate", self.tick_rate.map(|n| n.to_string()));
        add(
            "game.snapshot_rate",
            self.snapshot_rate.map(|n| n.to_string()),
        );
        add(
            "game.record_dir",
            self.game_record_dir
                .as_ref()
                .map(|d| d.display().to_string()),
        );
        if self.no_turn {
            o.push(("turn.enabled", false.into()));
        }
        if let Some(name) = &self.netlab_profile {
            o.push(("netlab.profile", name.clone().into()));
        }
        if let Some(seed) = self.netlab_seed {
            o.push(("netlab.seed", seed.into()));
        }
        if let Some(token) = &self.admin_token {
            o.push(("admin.token", token.clone().into()));
        }
        self.turn.overrides(&mut o);
        o
    }
}

impl TurnArgs {
    fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut o = Vec::new();
        self.turn.overrides(&mut o);
        o
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => replay(&args),
        Command::Impair(args) => impair::main(&args),
        Command::Bot(args) => rtcrelay::bot::run(&args),
        Command::Token(args) => token(&args),
        Command::Serve(args) => {
            let source = ConfigSource {
                file: args.config.clone(),
                overrides: args.overrides(),
            };
            let config = match source.load() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            run(&config, serve(config.clone(), source))
        }
        Command::Turn(args) => {
            if let Some(turn_probe::TurnCommand::Probe(probe)) = &args.command {
                return turn_probe::main(probe);
            }
            let source = ConfigSource {
                file: args.config.clone(),
                overrides: args.overrides(),
            };
            let config = match source.load() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if !config.turn.enabled {
                eprintln!("config error: key `turn.enabled`: is false; `rtcrelay turn` has nothing to run");
                return ExitCode::from(2);
            }
            if !config.turn.has_configured_credentials() {
                eprintln!(
                    "config error: key `turn.auth.secrets`: `rtcrelay turn` needs turn.auth.secrets \
                     (TURN REST API shared secrets) or turn.auth.users (static users); \
                     without them nobody could authenticate"
                );
                return ExitCode::from(2);
            }
            run(
                &config,
                turn_alone(config.clone(), source, args.metrics_listen),
            )
        }
    }
}

/// Where the configuration came from, to read it again on SIGHUP.
struct ConfigSource {
    file: Option<PathBuf>,
    overrides: Vec<(&'static str, Value)>,
}

impl ConfigSource {
    fn load(&self) -> Result<Config, config::ConfigError> {
        Config::load(self.file.as_deref(), &self.overrides)
    }
}

fn run(config: &Config, main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_tracing(config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcrelay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtcrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rtcrelay token`: prints a join token. Exit code 2 for bad arguments.
fn token(args: &TokenArgs) -> ExitCode {
    use rtcrelay_signaling::auth::{mint, JoinClaims, MAX_PLAYER_ID_BYTES, MIN_SECRET_BYTES};

    let problem = if args.secret.len() < MIN_SECRET_BYTES {
        Some(format!(
            "--secret: must be at least {MIN_SECRET_BYTES} bytes, like the server's auth.secrets"
        ))
    } else if rtcrelay_protocol::RoomId::try_from(args.room.as_str()).is_err() {
        Some(format!("--room: {:?} is not a valid room id", args.room))
    } else if args.player.is_empty() || args.player.len() > MAX_PLAYER_ID_BYTES {
        Some(format!(
            "--player: must be 1 to {MAX_PLAYER_ID_BYTES} bytes"
        ))
    } else {
        args.name.as_deref().and_then(|name| {
            rtcrelay_protocol::ids::validate_display_name(name)
                .err()
                .map(|e| format!("--name: {e}"))
        })
    };
    if let Some(problem) = problem {
        eprintln!("rtcrelay token: {problem}");
        return ExitCode::from(2);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = JoinClaims {
        room: args.room.clone(),
        sub: args.player.clone(),
        exp: now.saturating_add(args.ttl.as_secs()),
        name: args.name.clone(),
    };
    match mint(args.secret.as_bytes(), &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rtcrelay token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit codes: 0 the replay matches the log, 1 it diverges, 2 the log
/// cannot be read or replayed.
fn replay(args: &ReplayArgs) -> ExitCode {
    use rtcrelay_relay::authoritative::{replay, MatchLog};

    let log = match std::fs::read_to_string(&args.log)
        .map_err(|e| e.to_string())
        .and_then(|text| MatchLog::from_json(&text))
    {
        Ok(log) => log,
        Err(e) => {
            eprintln!("rtcrelay replay: {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    let hashes = match replay(&log, &rtcrelay_relay::BuiltinGames) {
        Ok(hashes) => hashes,
        Err(e) => {
            eprintln!("rtcrelay replay: {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    if args.hashes {
        let mut out = std::io::stdout().lock();
        for (i, h) in hashes.iter().enumerate() {
            let _ = writeln!(out, "{} {h:016x}", i + 1);
        }
    }
    let diverged = hashes
        .iter()
        .zip(&log.hashes)
        .position(|(replayed, recorded)| replayed != recorded);
    if let Some(i) = diverged {
        eprintln!(
            "rtcrelay replay: diverges at tick {}: recorded {:016x}, replayed {:016x}",
            i + 1,
            log.hashes[i],
            hashes[i]
        );
        return ExitCode::FAILURE;
    }
    let last = hashes.last().map_or("none".into(), |h| format!("{h:016x}"));
    println!(
        "replayed {} ticks of {} (seed {}){}: final state hash {last}; every tick matches the log",
        hashes.len(),
        log.game,
        log.seed,
        if log.truncated {
            " (log truncated)"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

fn init_tracing(config: &Config) {
    let (text, filter) = match std::env::var("RTCRELAY_LOG") {
        Ok(text) if EnvFilter::try_new(&text).is_ok() => {
            let filter = EnvFilter::new(&text);
            (text, filter)
        }
        _ => match EnvFilter::try_new(&config.log.filter) {
            Ok(filter) => (config.log.filter.clone(), filter),
            Err(_) => ("info".to_owned(), EnvFilter::new("info")),
        },
    };
    // The `turn` crate logs at error level for every malformed or
    // unauthenticated request it refuses: a log flood any client could
    // cause. Off unless the filter names the crate (`turn=debug`).
    let names_turn = text.split(',').any(|directive| {
        let target = directive.trim().split(['=', '[']).next().unwrap_or("");
        target == "turn" || target.starts_with("turn::")
    });
    let filter = if names_turn {
        filter
    } else {
        filter.add_directive("turn=off".parse().expect("a valid directive"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Starts the bundled TURN server, logging configuration warnings.
/// Allocations follow `netlab` (`turn_user` and `global` scopes).
async fn start_turn(
    config: &Config,
    metrics: TurnMetrics,
    netlab: Arc<rtcrelay_netlab::Lab>,
) -> anyhow::Result<Arc<TurnServer>> {
    for warning in TurnServer::start_warnings(&config.turn) {
        tracing::warn!("config: {warning}");
    }
    let turn = TurnServer::start_with_lab(&config.turn, metrics, netlab).await?;
    tracing::info!(
        urls = ?turn.urls(),
        secrets = turn.auth().credentials().secret_count(),
        generated_secret = config.turn.auth.secrets.is_empty(),
        "TURN server listening"
    );
    Ok(Arc::new(turn))
}

/// Signaling's view of the TURN server: REST credentials for each client,
/// with its peer id as the user id (`expiry:peer`).
#[derive(Debug)]
struct TurnIce(TurnMinter);

impl IceServerMinter for TurnIce {
    fn ice_servers(&self, peer: PeerId) -> Vec<IceServer> {
        match self.0.mint(&peer.to_string()) {
            Ok(minted) if !minted.urls.is_empty() => vec![IceServer {
                urls: minted.urls,
                username: Some(minted.username),
                credential: Some(minted.credential),
            }],
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(%peer, "cannot mint TURN credentials: {e}");
                Vec::new()
            }
        }
    }
}

/// On each SIGHUP, reads the configuration again and applies its `[turn]`
/// section to `turn` (when TURN runs). A configuration that does not load,
/// or that the TURN server refuses, is logged and the running one stays.
/// `standalone` (`rtcrelay turn`) also refuses a configuration without
/// secrets or users, as at startup.
fn reload_on_sighup(
    source: ConfigSource,
    turn: Option<Arc<TurnServer>>,
    metrics: TurnMetrics,
    standalone: bool,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, no config reload: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(turn) = &turn else {
                    tracing::info!("SIGHUP: TURN is not running; nothing to reload");
                    continue;
                };
                let config = match source.load() {
                    Ok(config) if standalone && !config.turn.has_configured_credentials() => {
                        metrics.reloaded(false);
                        tracing::error!(
                            "SIGHUP: configuration not reloaded, keeping the running one: \
                             key `turn.auth.secrets`: `rtcrelay turn` needs turn.auth.secrets \
                             or turn.auth.users"
                        );
                        continue;
                    }
                    Ok(config) => config,
                    Err(e) => {
                        metrics.reloaded(false);
                        tracing::error!(
                            "SIGHUP: configuration not reloaded, keeping the running one:\n{e}"
                        );
                        continue;
                    }
                };
                match turn.reload(&config.turn) {
                    Ok(warnings) => {
                        metrics.reloaded(true);
                        for warning in warnings {
                            tracing::warn!("SIGHUP: {warning}");
                        }
                        tracing::info!(
                            secrets = turn.auth().credentials().secret_count(),
                            "SIGHUP: [turn] reloaded (credentials, peer policy, quotas, limits, TLS certificate); \
                             other sections need a restart"
                        );
                    }
                    Err(e) => {
                        metrics.reloaded(false);
                        tracing::error!(
                            "SIGHUP: [turn] not reloaded, keeping the running one: {e}"
                        );
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (source, turn, metrics, standalone);
}

async fn serve(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut registry = Registry::with_prefix("rtcrelay");
    let relay_metrics = RelayMetrics::default();
    relay_metrics.register(&mut registry);
    let turn_metrics = TurnMetrics::default();

    // The network lab, shared by the relay's peer paths and the admin API;
    // `[netlab]` (validated at load) gives its profiles and startup setting.
    let netlab = Arc::new(config.netlab_lab()?);
    for (scope, setting, seed) in netlab.settings() {
        let what = match setting.profile {
            Some(profile) => format!("profile {profile}"),
            None => format!("scenario {}", config.netlab.scenario),
        };
        tracing::info!(%scope, seed, "netlab: {what} in force at startup");
    }
    let relay_config = rtcrelay_relay::RelayConfig {
        netlab: Arc::clone(&netlab),
        ..config.relay()
    };
    let relay = Relay::start(relay_config, relay_metrics)
        .await
        .with_context(|| format!("cannot bind relay UDP {}", config.relay.listen))?;
    let turn = if config.turn.enabled {
        turn_metrics.register(&mut registry);
        Some(start_turn(&config, turn_metrics.clone(), Arc::clone(&netlab)).await?)
    } else {
        None
    };
    let mut signaling = config.signaling();
    match config.auth.mode {
        rtcrelay_signaling::AuthMode::None => tracing::warn!(
            "auth.mode = \"none\": ANYONE WHO CAN REACH THIS SERVER CAN JOIN ANY ROOM. \
             This is for local development only; set auth.mode = \"token\" and \
             auth.secrets for anything else"
        ),
        rtcrelay_signaling::AuthMode::Token => tracing::info!(
            secrets = config.auth.secrets.len(),
            "joins need a join token"
        ),
    }
    signaling.admin = config.admin(Arc::clone(&netlab));
    if let Some(turn) = &turn {
        signaling.ice_minter = Some(Arc::new(TurnIce(turn.minter())));
    }
    let state = AppState::new(signaling, relay.host(), registry);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on HTTP {}", config.http.listen))?;
    let http = listener.local_addr()?;
    reload_on_sighup(source, turn.clone(), turn_metrics, false);

    // Tests and scripts parse these lines; keep their shape.
    let mut out = std::io::stdout().lock();
    writeln!(out, "rtcrelay {} ready", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "demo: http://{http}/")?;
    writeln!(out, "signaling: ws://{http}/ws")?;
    for url in turn.iter().flat_map(|t| t.urls()) {
        writeln!(out, "turn: {url}")?;
    }
    writeln!(out, "relay: udp://{}", relay.local_addr())?;
    out.flush()?;
    drop(out);
    if !http.ip().is_loopback() {
        tracing::warn!(%http, "HTTP listens beyond loopback: anyone who can reach it can join rooms");
        if config.admin.token.is_empty() {
            tracing::warn!(
                "the admin API (/admin/netlab) is refused on this listener: no admin token \
                 (set RTCRELAY_ADMIN__TOKEN or [admin] token)"
            );
        }
    }

    // The peer address feeds the per-IP connection limit.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        rtcrelay_signaling::router(state.clone())
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = http_stopped.await;
    });
    let mut server = tokio::spawn(std::future::IntoFuture::into_future(server));
    tokio::select! {
        result = &mut server => result??,
        _ = shutdown_signal() => {
            drain(&state, &relay, config.server.drain_timeout).await;
            tracing::info!("closing every connection");
            state.shutdown();
            let _ = stop_http.send(());
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them");
                server.abort();
            }
        }
    }
    if let Some(turn) = &turn {
        turn.shutdown().await;
    }
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// How often draining looks whether the last match ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// After the last match ended, before closing.
const DRAIN_FLUSH: Duration = Duration::from_secs(1);

/// The first SIGTERM/SIGINT: stop taking joins, tell everyone, let running
/// matches finish within `timeout`. A second signal exits at once (status
/// 1), abandoning the matches.
async fn drain(state: &AppState, relay: &Relay, timeout: Duration) {
    let matches = relay.active_matches();
    tracing::info!(
        matches,
        "draining: no new joins; running matches may finish within {}",
        humantime::format_duration(timeout)
    );
    state.start_draining(timeout);
    let mut had_matches = matches > 0;
    let deadline = tokio::time::Instant::now() + timeout;
    let wait_for_matches = async {
        loop {
            let matches = relay.active_matches();
            had_matches |= matches > 0;
            if matches == 0 {
                tracing::info!("draining: no match running");
                if had_matches {
                    // The last match's final events (`match_end`) are
                    // resent until acknowledged: give them a moment.
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + DRAIN_FLUSH),
                    )
                    .await;
                }
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    matches,
                    "draining: drain timeout reached with matches still running; closing them"
                );
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    };
    tokio::select! {
        _ = wait_for_matches => {}
        _ = shutdown_signal() => {
            tracing::warn!("second signal during draining: exiting now");
            std::process::exit(1);
        }
    }
}

/// `rtcrelay turn`: the TURN server alone, optionally with `/metrics`.
async fn turn_alone(
    config: Config,
    source: ConfigSource,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut registry = Registry::with_prefix("rtcrelay");
    let metrics = TurnMetrics::default();
    metrics.register(&mut registry);
    // Only `[netlab]`'s startup setting: no admin API here.
    let turn = start_turn(&config, metrics.clone(), Arc::new(config.netlab_lab()?)).await?;
    let http = match metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on HTTP {addr} (--metrics-listen)"))?;
            let local = listener.local_addr()?;
            let router = metrics_router(Arc::new(registry));
            tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
                listener, router,
            )));
            Some(local)
        }
        None => None,
    };
    reload_on_sighup(source, Some(Arc::clone(&turn)), metrics, true);

    // Tests and scripts parse these lines; keep their shape.
    let mut out = std::io::stdout().lock();
    writeln!(out, "rtcrelay {} TURN ready", env!("CARGO_PKG_VERSION"))?;
    for url in turn.urls() {
        writeln!(out, "turn: {url}")?;
    }
    if let Some(http) = http {
        writeln!(out, "metrics: http://{http}/metrics")?;
    }
    out.flush()?;
    drop(out);

    shutdown_signal().await;
    tracing::info!("shutting down");
    turn.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `/metrics` (Prometheus text) and `/healthz` for `rtcrelay turn`.
fn metrics_router(registry: Arc<Registry>) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    let mut body = String::new();
                    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed")
                            .into_response();
                    }
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "{\"status\":\"ok\"}" }))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
