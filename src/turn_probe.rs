//! `rtcrelay turn probe URL ...`: the command line of
//! [`rtcrelay_turn::probe`]. Exit codes: 0 the probe passed, 1 a step failed
//! (`probe failed at step <name>: <error>`), 2 usage errors.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rtcrelay_turn::probe::{
    self, parse_duration, parse_rate, ProbeAuth, ProbeOptions, TlsTrust, TurnUrl,
};

/// Subcommands of `rtcrelay turn`; without one it runs the TURN server.
#[derive(Subcommand)]
pub enum TurnCommand {
    /// Check a TURN deployment from the outside: allocate, create a
    /// permission, bind a channel, echo packets through the relay to a local
    /// peer socket, refresh and close; print each step's time, the relay
    /// address, RTT p50/p99, loss and rate. Starts no server. Exit code 0
    /// when every step passes, 1 naming the step that failed, 2 on usage
    /// errors.
    Probe(ProbeArgs),
}

#[derive(Args)]
pub struct ProbeArgs {
    /// TURN URL: turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]
    /// (TLS); default ports 3478 and 5349.
    #[arg(value_name = "URL")]
    url: TurnUrl,
    /// TURN REST API shared secret (one of the server's turn.auth.secrets):
    /// the probe mints `EXPIRY:USER` and its password.
    #[arg(
        long,
        env = "RTCRELAY_PROBE_SECRET",
        hide_env_values = true,
        conflicts_with = "password",
        required_unless_present = "password"
    )]
    secret: Option<String>,
    /// With --password: a static user (turn.auth.users). With --secret: the
    /// user id in the REST username [default: probe].
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The static user's password.
    #[arg(
        long,
        env = "RTCRELAY_PROBE_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    password: Option<String>,
    /// Echo packets to send.
    #[arg(long, default_value_t = 200, value_name = "N")]
    count: u32,
    /// Bytes per packet (12 to 1400).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    size: usize,
    /// Packets per second, e.g. 50 or 50/s [default: 50/s].
    #[arg(long, value_parser = parse_rate, conflicts_with = "interval", value_name = "N/s")]
    rate: Option<Duration>,
    /// Time between packets, e.g. 20ms (a bare number is milliseconds).
    #[arg(long, value_parser = parse_interval, value_name = "DURATION")]
    interval: Option<Duration>,
    /// The longest any step waits for an answer, e.g. 5s (a bare number is
    /// seconds).
    #[arg(long, value_parser = parse_timeout, default_value = "5s", value_name = "DURATION")]
    timeout: Duration,
    /// Local address of the echo peer the relay sends to [default: the
    /// address this host routes toward the relay address from]. The server's
    /// peer policy must allow it.
    #[arg(long, value_name = "IP")]
    peer_ip: Option<IpAddr>,
    /// turns: trust the CA certificates in this PEM file (or the server's
    /// self-signed certificate) instead of the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// turns: accept any certificate (self-signed test servers only).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// turns: the name the certificate must be valid for [default: the
    /// URL's host].
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
    /// After the echo, send as fast as possible for this long (e.g. 2s) and
    /// report what the relay delivers. Off by default: it floods the relay.
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    throughput: Option<Duration>,
    /// Fail when more than this percentage of echo packets is lost (100:
    /// only when nothing comes back).
    #[arg(long, default_value_t = 100.0, value_name = "PERCENT")]
    max_loss: f64,
    /// Print the report (or the failure) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text, Duration::from_millis(1))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(text, Duration::from_secs(1))
}

impl ProbeArgs {
    fn options(&self) -> Result<ProbeOptions, String> {
        let auth = match (&self.secret, &self.password) {
            (Some(secret), None) => ProbeAuth::Secret {
                secret: secret.clone(),
                user_id: self
                    .user
                    .clone()
                    .unwrap_or_else(|| probe::DEFAULT_USER_ID.into()),
            },
            (None, Some(password)) => ProbeAuth::Static {
                username: self.user.clone().ok_or("--password needs --user")?,
                password: password.clone(),
            },
            _ => return Err("give either --secret, or --user and --password".into()),
        };
        if self.secret.as_deref() == Some("") {
            return Err("--secret is empty".into());
        }
        let mut opts = ProbeOptions::new(self.url.clone(), auth);
        opts.count = self.count;
        opts.size = self.size;
        if let Some(interval) = self.rate.or(self.interval) {
            opts.interval = interval;
        }
        opts.timeout = self.timeout;
        opts.peer_ip = self.peer_ip;
        opts.tls_trust = match (&self.ca, self.insecure) {
            (Some(path), _) => TlsTrust::CaFile(path.clone()),
            (None, true) => TlsTrust::Insecure,
            (None, false) => TlsTrust::System,
        };
        opts.tls_name = self.tls_name.clone();
        opts.throughput = self.throughput;
        opts.max_loss_percent = self.max_loss;
        opts.validate()?;
        Ok(opts)
    }
}

/// Runs `rtcrelay turn probe`.
pub fn main(args: &ProbeArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("rtcrelay turn probe: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcrelay turn probe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(probe::run(opts));
    // Tasks of the `turn` crate's client may still sleep on timers.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let mut out = std::io::stdout().lock();
    match result {
        Ok(report) => {
            let text = if args.json {
                probe::report_json(&report) + "\n"
            } else {
                probe::format_report(&report)
            };
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if args.json {
                let _ = writeln!(out, "{}", probe::failure_json(&failure));
                let _ = out.flush();
            }
            eprint!("{}", probe::format_failure(&failure));
            ExitCode::FAILURE
        }
    }
}
