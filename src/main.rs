//! `rtcrelay`: one binary for signaling, the server WebRTC peer and (later)
//! TURN. `rtcrelay serve` runs everything with embedded defaults.

mod config;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use prometheus_client::registry::Registry;
use rtcrelay_relay::{Relay, RelayMetrics};
use rtcrelay_signaling::AppState;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

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
    /// Run signaling (HTTP + WebSocket) and the server peer (UDP).
    Serve(ServeArgs),
    /// Re-run a recorded match from its log (seed + accepted inputs) and
    /// check that every tick reaches the recorded state hash.
    Replay(ReplayArgs),
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
}

impl ServeArgs {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        let mut add = |key, value: Option<String>| {
            if let Some(v) = value {
                o.push((key, v));
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
        o
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => replay(&args),
        Command::Serve(args) => {
            let config = match Config::load(args.config.as_deref(), &args.overrides()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&config);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rtcrelay: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rtcrelay: {e:#}");
                    ExitCode::FAILURE
                }
            }
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
    let filter = EnvFilter::try_from_env("RTCRELAY_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut registry = Registry::with_prefix("rtcrelay");
    let relay_metrics = RelayMetrics::default();
    relay_metrics.register(&mut registry);

    let relay = Relay::start(config.relay(), relay_metrics)
        .await
        .with_context(|| format!("cannot bind relay UDP {}", config.relay.listen))?;
    let state = AppState::new(config.signaling(), relay.host(), registry);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on HTTP {}", config.http.listen))?;
    let http = listener.local_addr()?;

    // Tests and scripts parse these lines; keep their shape.
    let mut out = std::io::stdout().lock();
    writeln!(out, "rtcrelay {} ready", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "demo: http://{http}/")?;
    writeln!(out, "signaling: ws://{http}/ws")?;
    writeln!(out, "relay: udp://{}", relay.local_addr())?;
    out.flush()?;
    drop(out);
    if !http.ip().is_loopback() {
        tracing::warn!(%http, "HTTP listens beyond loopback: anyone who can reach it can join rooms");
    }

    let server = axum::serve(listener, rtcrelay_signaling::router(state.clone()))
        .with_graceful_shutdown(shutdown_signal());
    let mut server = tokio::spawn(std::future::IntoFuture::into_future(server));
    tokio::select! {
        result = &mut server => result??,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            state.shutdown();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them");
                server.abort();
            }
        }
    }
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(())
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
