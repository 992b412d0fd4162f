//! `rtcrelay impair --listen ADDR --forward ADDR [--profile NAME | --config
//! FILE] [--loss PCT --delay MS --jitter MS --rate KBIT]`: a standalone UDP
//! impairment proxy, to test any UDP service (a game server, a TURN server)
//! under the network lab's model.
//!
//! This is only the driver: sockets and timers around
//! [`rtcrelay_netlab`], which decides every packet's fate. Each client
//! (distinct source address) gets its own upstream socket (an ephemeral
//! port connected to `--forward`), its own [`Link`] (`up` = client → server,
//! `down` = server → client) seeded from `--seed` and the client's order of
//! arrival, and one task that owns both and drives `push` / `poll` /
//! `poll_timeout` (no task per packet). The main task only reads the
//! listening socket and routes each datagram to its client by a map.
//!
//! Exit codes: 0 after a clean stop (SIGINT, SIGTERM or `--duration`), with a
//! summary; 1 when the proxy cannot run (e.g. the listen address is taken);
//! 2 on usage errors (bad flags or configuration, naming the flag or field).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rtcrelay_netlab::config::{MAX_DELAY, MAX_RATE_KBIT_PER_S};
use rtcrelay_netlab::{
    Counters, Direction, ImpairmentConfig, Link, LinkConfig, LossConfig, Preset, Profiles,
    RandomLoss, RateConfig, Scenario, ScenarioConfig,
};
use rtcrelay_turn::probe::parse_duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Receive buffers hold the largest UDP payload (65 507 bytes over IPv4,
/// 65 527 over IPv6) with room to spare.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams waiting between the listening socket and a client's task;
/// beyond this the client's task is not keeping up and datagrams are
/// dropped as `overload` (counted apart from the model's drops).
const CLIENT_QUEUE: usize = 4096;
/// Kernel socket buffers asked for (the kernel may cap them, e.g. at
/// `net.core.rmem_max`): a proxy should absorb bursts rather than add loss
/// of its own.
const SOCKET_BUFFER: usize = 4 << 20;
/// Overhead added to `--rate` when the profile had no rate: IPv4 + UDP
/// headers, as the presets use (the model sees UDP payloads).
const RATE_OVERHEAD_BYTES: u32 = 28;

#[derive(Args)]
pub struct ImpairArgs {
    /// UDP address to receive clients on, e.g. 127.0.0.1:4000 (port 0: any
    /// free port; the one chosen is printed).
    #[arg(long, value_name = "UDP_ADDR")]
    listen: SocketAddr,
    /// The UDP service to forward to, HOST:PORT (resolved once at start).
    #[arg(long, value_name = "UDP_ADDR")]
    forward: String,
    /// A netlab preset, both directions: good, wifi, wifi-lossy, 4g, 3g,
    /// satellite, congested (see docs/netlab.md). Default: no impairment
    /// besides the quick flags.
    #[arg(long, value_name = "NAME", value_parser = parse_profile, conflicts_with = "config")]
    profile: Option<Preset>,
    /// TOML file: one direction's impairment (applied both ways), `[up]` and
    /// `[down]` tables, or a scenario (`steps = [...]`, optional `repeat`
    /// and `[profiles.NAME]` tables). See docs/netlab.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Quick flag: random loss in percent (0-100), replacing the profile's
    /// loss model.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    loss: Option<f64>,
    /// Quick flag: one-way delay, in ms (or a duration such as 1.5s),
    /// replacing the profile's latency.
    #[arg(long, value_name = "MS", value_parser = parse_delay)]
    delay: Option<Duration>,
    /// Quick flag: jitter around the delay, in ms (the profile's
    /// distribution; uniform by default), replacing the profile's jitter.
    #[arg(long, value_name = "MS", value_parser = parse_delay)]
    jitter: Option<Duration>,
    /// Quick flag: rate limit in kbit/s, replacing the profile's rate (a
    /// new limit counts 28 bytes of IPv4 + UDP headers per packet and queues
    /// up to 1000 packets).
    #[arg(long, value_name = "KBIT", value_parser = parse_rate)]
    rate: Option<u64>,
    /// Apply the quick flags to the client → server direction only.
    #[arg(long, conflicts_with = "down_only")]
    up_only: bool,
    /// Apply the quick flags to the server → client direction only.
    #[arg(long)]
    down_only: bool,
    /// Seed of every decision; client N (in order of arrival, from 1) gets
    /// the N-th output of SplitMix64 seeded with it [default: random,
    /// printed].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Forget a client after this long without traffic either way (a
    /// bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_secs)]
    idle_timeout: Duration,
    /// At most this many clients at once; datagrams of further clients are
    /// refused and counted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_clients: u32,
    /// Stop after this long (a bare number is seconds) [default: run until
    /// SIGINT or SIGTERM].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_secs)]
    duration: Option<Duration>,
    /// Print the final report as one line of JSON on stdout (the table goes
    /// to stderr).
    #[arg(long)]
    json: bool,
}

fn parse_profile(name: &str) -> Result<Preset, String> {
    name.parse::<Preset>().map_err(|_| {
        let known: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        format!("{name:?} is not a preset (known: {})", known.join(", "))
    })
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(pct) if (0.0..=100.0).contains(&pct) => Ok(pct / 100.0),
        _ => Err(format!("{text:?}: must be a percentage within 0..=100")),
    }
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let delay = parse_duration(text, Duration::from_millis(1))?;
    if delay > MAX_DELAY {
        return Err(format!(
            "{text:?}: must be at most {} ms",
            MAX_DELAY.as_millis()
        ));
    }
    Ok(delay)
}

fn parse_rate(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(kbit) if (1..=MAX_RATE_KBIT_PER_S).contains(&kbit) => Ok(kbit),
        _ => Err(format!(
            "{text:?}: must be a whole number of kbit/s within 1..={MAX_RATE_KBIT_PER_S}"
        )),
    }
}

fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text, Duration::from_secs(1))?;
    if duration.is_zero() || duration > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!(
            "{text:?}: must be longer than 0 and at most a year"
        ));
    }
    Ok(duration)
}

/// The quick flags, as overrides on whatever the profile or config gives.
#[derive(Debug, Clone, Copy, Default)]
struct Quick {
    loss: Option<f64>,
    delay: Option<Duration>,
    jitter: Option<Duration>,
    rate: Option<u64>,
    up: bool,
    down: bool,
}

impl Quick {
    fn is_empty(&self) -> bool {
        self.loss.is_none() && self.delay.is_none() && self.jitter.is_none() && self.rate.is_none()
    }

    fn apply(&self, link: &LinkConfig) -> LinkConfig {
        let mut link = link.clone();
        if self.up {
            self.apply_one(&mut link.up);
        }
        if self.down {
            self.apply_one(&mut link.down);
        }
        link
    }

    fn apply_one(&self, config: &mut ImpairmentConfig) {
        if let Some(p) = self.loss {
            config.loss = if p == 0.0 {
                LossConfig::None
            } else {
                LossConfig::Random(RandomLoss {
                    p,
                    correlation: 0.0,
                })
            };
        }
        if let Some(latency) = self.delay {
            config.delay.latency = latency;
        }
        if let Some(jitter) = self.jitter {
            config.delay.jitter = jitter;
        }
        if let Some(kbit_per_s) = self.rate {
            config.rate = Some(match config.rate {
                Some(rate) => RateConfig { kbit_per_s, ..rate },
                None => RateConfig {
                    overhead_bytes: RATE_OVERHEAD_BYTES,
                    ..RateConfig::kbit_per_s(kbit_per_s)
                },
            });
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.loss {
            // Rounded: 0.07 * 100 is 7.000000000000001 in binary.
            parts.push(format!("loss {}%", (p * 100.0 * 1e6).round() / 1e6));
        }
        if let Some(d) = self.delay {
            parts.push(format!("delay {}", ms(d)));
        }
        if let Some(j) = self.jitter {
            parts.push(format!("jitter {}", ms(j)));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r} kbit/s"));
        }
        let way = match (self.up, self.down) {
            (true, false) => "up only",
            (false, true) => "down only",
            _ => "both directions",
        };
        format!("{} ({way})", parts.join(", "))
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_micros() as f64 / 1000.0)
}

/// What impairs every client's link.
#[derive(Debug)]
enum Plan {
    /// The same link configuration all along.
    Fixed(LinkConfig),
    /// A time-scripted scenario, started for each client at its first
    /// datagram.
    Scenario {
        scenario: Scenario,
        /// Each step's link with the quick flags applied; `None`: blackout.
        steps: Vec<Option<LinkConfig>>,
        /// In force once a non-repeating scenario has run out.
        after: LinkConfig,
    },
}

/// Everything decided before any socket opens.
struct Setup {
    plan: Plan,
    description: String,
    seed: u64,
}

impl Setup {
    fn from_args(args: &ImpairArgs) -> Result<Self, String> {
        let quick = Quick {
            loss: args.loss,
            delay: args.delay,
            jitter: args.jitter,
            rate: args.rate,
            up: !args.down_only,
            down: !args.up_only,
        };
        if quick.is_empty() && (args.up_only || args.down_only) {
            let flag = if args.up_only {
                "--up-only"
            } else {
                "--down-only"
            };
            return Err(format!(
                "{flag}: applies to the quick flags --loss, --delay, --jitter and --rate; give at least one"
            ));
        }
        let overrides = if quick.is_empty() {
            String::new()
        } else {
            format!(" + {}", quick.describe())
        };

        let (plan, base) = match (&args.profile, &args.config) {
            (Some(preset), _) => (Plan::Fixed(preset.link_config()), preset.name().to_string()),
            (None, Some(path)) => load_config(path)?,
            (None, None) => (
                Plan::Fixed(LinkConfig::default()),
                if quick.is_empty() {
                    "none (pass-through)".to_string()
                } else {
                    "none".to_string()
                },
            ),
        };
        let plan = match plan {
            Plan::Fixed(link) => {
                let link = quick.apply(&link);
                link.validate()
                    .map_err(|e| format!("with the quick flags applied: {e}"))?;
                Plan::Fixed(link)
            }
            Plan::Scenario {
                scenario, steps, ..
            } => {
                let mut applied = Vec::with_capacity(steps.len());
                for (i, step) in steps.iter().enumerate() {
                    applied.push(match step {
                        Some(link) => {
                            let link = quick.apply(link);
                            link.validate_at(&format!("steps[{i}]"))
                                .map_err(|e| format!("with the quick flags applied: {e}"))?;
                            Some(link)
                        }
                        None => None,
                    });
                }
                let after = quick.apply(&LinkConfig::default());
                after
                    .validate()
                    .map_err(|e| format!("with the quick flags applied: {e}"))?;
                Plan::Scenario {
                    scenario,
                    steps: applied,
                    after,
                }
            }
        };
        Ok(Setup {
            plan,
            description: format!("{base}{overrides}"),
            seed: args.seed.unwrap_or_else(random_seed),
        })
    }
}

/// Reads `--config`: a scenario (`steps`), a link (`[up]`/`[down]`) or one
/// direction (anything else, applied both ways). Returns the plan before the
/// quick flags and its description.
fn load_config(path: &Path) -> Result<(Plan, String), String> {
    let name = path.display();
    let fail = |e: &dyn std::fmt::Display| format!("--config {name}: {e}");
    let text = std::fs::read_to_string(path).map_err(|e| fail(&e))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| fail(&e))?;
    let is_scenario = ["steps", "repeat", "profiles"]
        .iter()
        .any(|key| table.contains_key(*key));
    if !is_scenario {
        if table.contains_key("up") || table.contains_key("down") {
            let link = LinkConfig::from_toml_str(&text).map_err(|e| fail(&e))?;
            return Ok((Plan::Fixed(link), format!("{name} ([up]/[down])")));
        }
        let one = ImpairmentConfig::from_toml_str(&text).map_err(|e| fail(&e))?;
        return Ok((
            Plan::Fixed(LinkConfig::symmetric(one)),
            format!("{name} (same both ways)"),
        ));
    }

    let mut profiles = Profiles::builtin();
    if let Some(value) = table.remove("profiles") {
        let toml::Value::Table(custom) = value else {
            return Err(fail(&"profiles: must be a table of [profiles.NAME] links"));
        };
        for (profile, link) in custom {
            let link: LinkConfig = link
                .try_into()
                .map_err(|e| fail(&format!("profiles.{profile}: {e}")))?;
            profiles.insert(profile, link).map_err(|e| fail(&e))?;
        }
    }
    let config: ScenarioConfig = toml::Value::Table(table).try_into().map_err(|e| fail(&e))?;
    let scenario = Scenario::new(&config, &profiles, Instant::now()).map_err(|e| fail(&e))?;
    // Scenario::new resolved every step, so these lookups succeed.
    let mut steps = Vec::with_capacity(config.steps.len());
    for (i, step) in config.steps.iter().enumerate() {
        steps.push(match (&step.profile, &step.link) {
            _ if step.blackout => None,
            (Some(profile), _) => Some(
                profiles
                    .get(profile)
                    .ok_or_else(|| fail(&format!("steps[{i}].profile: {profile:?} is unknown")))?,
            ),
            (None, Some(link)) => Some(link.clone()),
            (None, None) => None,
        });
    }
    let description = format!(
        "scenario {name} ({} steps, {})",
        steps.len(),
        if config.repeat {
            "repeating"
        } else {
            "then none"
        }
    );
    Ok((
        Plan::Scenario {
            scenario,
            steps,
            after: LinkConfig::default(),
        },
        description,
    ))
}

/// A seed from the process's random hash keys and the clock.
fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Client `n`'s seed (n = 1, 2, ... in order of arrival): the n-th output of
/// SplitMix64 seeded with `seed`.
fn client_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `rtcrelay impair`.
pub fn main(args: &ImpairArgs) -> ExitCode {
    let setup = match Setup::from_args(args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("rtcrelay impair: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcrelay impair: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, setup)) {
        Ok(report) => {
            let table = report.table();
            let mut out = std::io::stdout().lock();
            if args.json {
                eprint!("{table}");
                let _ = writeln!(out, "{}", report.json());
            } else {
                let _ = out.write_all(table.as_bytes());
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(e)) => {
            eprintln!("rtcrelay impair: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("rtcrelay impair: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Run(String),
}

/// A UDP socket with large kernel buffers, bound to `addr`.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these, and a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// A client's message to the main task.
enum Event {
    /// Nothing either way for `--idle-timeout` and nothing held: forget me.
    Idle { addr: SocketAddr, id: u64 },
}

struct ClientEntry {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

/// Why the main task woke up.
enum MainWake {
    Stop,
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Event(Event),
    Joined(Result<Box<ClientReport>, tokio::task::JoinError>),
}

async fn run(args: &ImpairArgs, setup: Setup) -> Result<Report, Failure> {
    let forward = tokio::net::lookup_host(args.forward.as_str())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--forward {}: not a UDP address (HOST:PORT) that resolves",
                args.forward
            ))
        })?;
    let listen = udp_socket(args.listen)
        .map_err(|e| Failure::Run(format!("cannot bind --listen {}: {e}", args.listen)))?;
    let local = listen
        .local_addr()
        .map_err(|e| Failure::Run(format!("--listen {}: {e}", args.listen)))?;
    let listen = Arc::new(listen);
    // Listening before the first line is printed: whoever reads it may
    // signal at once.
    let mut signals = Signals::new()
        .map_err(|e| Failure::Run(format!("cannot listen for SIGINT/SIGTERM: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "impair: listening on {local}, forwarding to {forward}, profile {}, seed {}",
            setup.description, setup.seed
        );
        let _ = out.flush();
    }
    let started = Instant::now();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut proxy = Proxy {
        listen: Arc::clone(&listen),
        forward,
        seed: setup.seed,
        plan: Arc::new(setup.plan),
        idle: args.idle_timeout,
        max_clients: args.max_clients as usize,
        next_id: 0,
        clients: HashMap::new(),
        tasks: JoinSet::new(),
        events: events_tx,
        report: Report {
            listen: local,
            forward,
            profile: setup.description,
            seed: setup.seed,
            elapsed: Duration::ZERO,
            clients: ClientTotals::default(),
            up: DirTotals::default(),
            down: DirTotals::default(),
        },
    };

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let time_up = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(time_up);
    let mut recv_error_logged = false;
    loop {
        let wake = tokio::select! {
            _ = signals.recv() => MainWake::Stop,
            _ = &mut time_up => MainWake::Stop,
            received = listen.recv_from(&mut buf) => MainWake::Datagram(received),
            Some(event) = events_rx.recv() => MainWake::Event(event),
            Some(joined) = proxy.tasks.join_next(), if !proxy.tasks.is_empty() => MainWake::Joined(joined.map(Box::new)),
        };
        match wake {
            MainWake::Stop => break,
            MainWake::Datagram(Ok((len, from))) => proxy.on_datagram(from, &buf[..len]).await,
            MainWake::Datagram(Err(e)) => {
                // E.g. an ICMP error reported on some platforms; the socket
                // still works.
                proxy.report.up.recv_errors += 1;
                if !recv_error_logged {
                    eprintln!(
                        "impair: receive error on {local} (counted, further ones not logged): {e}"
                    );
                    recv_error_logged = true;
                }
                tokio::task::yield_now().await;
            }
            MainWake::Event(Event::Idle { addr, id }) => proxy.forget(addr, id),
            MainWake::Joined(joined) => proxy.report.add_client(joined.map(|b| *b)),
        }
    }

    // Closing every client's queue ends its task, which returns its totals.
    proxy.clients.clear();
    while let Some(joined) = proxy.tasks.join_next().await {
        proxy.report.add_client(joined);
    }
    proxy.report.elapsed = started.elapsed();
    Ok(proxy.report)
}

/// The main task's state: the clients by source address.
struct Proxy {
    listen: Arc<UdpSocket>,
    forward: SocketAddr,
    seed: u64,
    plan: Arc<Plan>,
    idle: Duration,
    max_clients: usize,
    /// Clients started so far (the last one's number).
    next_id: u64,
    clients: HashMap<SocketAddr, ClientEntry>,
    tasks: JoinSet<ClientReport>,
    events: mpsc::UnboundedSender<Event>,
    report: Report,
}

impl Proxy {
    /// A datagram from a client: to its task, or to a new client.
    async fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        if let Some(entry) = self.clients.get(&from) {
            match entry.tx.try_send(datagram.to_vec()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.report.up.overload += 1;
                    return;
                }
                // The client's task is gone (it does not panic, but should
                // it): start over with a new client.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.clients.remove(&from);
                }
            }
        }
        self.new_client(from, datagram).await;
    }

    /// The first datagram of a source address: start its client, or refuse
    /// it when `--max-clients` are connected.
    async fn new_client(&mut self, from: SocketAddr, datagram: &[u8]) {
        if self.clients.len() >= self.max_clients {
            self.report.clients.refused_datagrams += 1;
            if self.report.clients.refused_datagrams == 1 {
                eprintln!(
                    "impair: refusing {from} (and further new clients, counted): --max-clients {} reached",
                    self.max_clients
                );
            }
            return;
        }
        let unspecified: SocketAddr = if self.forward.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let upstream = match udp_socket(unspecified) {
            Ok(socket) => socket,
            Err(e) => {
                self.report.clients.setup_errors += 1;
                eprintln!("impair: cannot open an upstream socket for {from}: {e}");
                return;
            }
        };
        if let Err(e) = upstream.connect(self.forward).await {
            self.report.clients.setup_errors += 1;
            eprintln!(
                "impair: cannot connect an upstream socket to {}: {e}",
                self.forward
            );
            return;
        }
        let id = self.next_id + 1;
        let seed = client_seed(self.seed, id);
        let now = Instant::now();
        let initial = match self.plan.as_ref() {
            Plan::Fixed(link) => link,
            Plan::Scenario { after, .. } => after,
        };
        let link = match Link::new(initial, seed, now) {
            Ok(link) => link,
            Err(e) => {
                // Validated at start: cannot happen.
                self.report.clients.setup_errors += 1;
                eprintln!("impair: {e}");
                return;
            }
        };
        self.next_id = id;
        let via = upstream
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        eprintln!("impair: client #{id} {from} via {via} (seed {seed})");
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        // A fresh queue has room.
        let _ = tx.try_send(datagram.to_vec());
        let mut client = Client {
            id,
            addr: from,
            upstream,
            listen: Arc::clone(&self.listen),
            link,
            plan: Arc::clone(&self.plan),
            created: now,
            applied: None,
            stage_ends: None,
            last_activity: now,
            idle: self.idle,
            idle_reported: false,
            events: self.events.clone(),
            up: Driven::default(),
            down: Driven::default(),
        };
        client.update_stage(now);
        self.tasks.spawn(client.run(rx));
        self.clients.insert(from, ClientEntry { id, tx });
        let clients = &mut self.report.clients;
        clients.total += 1;
        clients.max_concurrent = clients.max_concurrent.max(self.clients.len() as u64);
    }

    /// A client reported itself idle: drop its queue, which ends its task
    /// (a datagram that raced in is still forwarded by it; the next one
    /// starts a new client).
    fn forget(&mut self, addr: SocketAddr, id: u64) {
        if let Entry::Occupied(entry) = self.clients.entry(addr) {
            if entry.get().id == id {
                entry.remove();
                eprintln!(
                    "impair: client #{id} {addr} expired after {} without traffic",
                    humanize(self.idle)
                );
            }
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What the driver (not the model) did in one direction of one client.
#[derive(Debug, Default, Clone, Copy)]
struct Driven {
    /// Sent on (to the server, or back to the client).
    forwarded: u64,
    /// Released by the model but refused by the socket.
    send_errors: u64,
    /// Receive errors on the upstream socket (down only), e.g. the server's
    /// port is closed (ICMP port unreachable).
    recv_errors: u64,
    /// Sum and max of how late packets left after their release time.
    lateness: Duration,
    max_lateness: Duration,
}

/// One client: its upstream socket, its link and the scenario's clock.
struct Client {
    id: u64,
    addr: SocketAddr,
    upstream: UdpSocket,
    listen: Arc<UdpSocket>,
    link: Link<Vec<u8>>,
    plan: Arc<Plan>,
    created: Instant,
    /// The scenario stage last put in force: `Some(Some((step, cycle)))`,
    /// `Some(None)` once the scenario has run out, `None` before the first.
    applied: Option<Option<(usize, u64)>>,
    /// When the stage in force ends (scenario only).
    stage_ends: Option<Instant>,
    last_activity: Instant,
    idle: Duration,
    idle_reported: bool,
    events: mpsc::UnboundedSender<Event>,
    up: Driven,
    down: Driven,
}

/// Why a client's task woke up.
enum Wake {
    FromClient(Option<Vec<u8>>),
    FromServer(std::io::Result<usize>),
    Timer,
}

impl Client {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<u8>>) -> ClientReport {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let wake_at = self.next_wake();
            let wake = tokio::select! {
                message = rx.recv() => Wake::FromClient(message),
                received = self.upstream.recv(&mut buf) => Wake::FromServer(received),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => Wake::Timer,
            };
            let now = Instant::now();
            self.update_stage(now);
            match wake {
                Wake::FromClient(Some(packet)) => {
                    self.last_activity = now;
                    self.link.push(Direction::Up, now, packet);
                }
                // The main task forgot this client (idle) or is stopping.
                Wake::FromClient(None) => break,
                Wake::FromServer(Ok(len)) => {
                    self.last_activity = now;
                    self.link.push(Direction::Down, now, buf[..len].to_vec());
                }
                Wake::FromServer(Err(_)) => self.down.recv_errors += 1,
                Wake::Timer => {}
            }
            self.flush(now).await;
            if !self.idle_reported
                && self.link.poll_timeout().is_none()
                && now.saturating_duration_since(self.last_activity) >= self.idle
            {
                self.idle_reported = true;
                let _ = self.events.send(Event::Idle {
                    addr: self.addr,
                    id: self.id,
                });
            }
        }
        ClientReport {
            expired: self.idle_reported,
            up: (*self.link.direction(Direction::Up).counters(), self.up),
            down: (*self.link.direction(Direction::Down).counters(), self.down),
        }
    }

    /// The earliest of: a held packet due, the scenario's next stage, the
    /// idle deadline.
    fn next_wake(&self) -> Instant {
        let mut at = self.link.poll_timeout();
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        earliest(self.stage_ends);
        if !self.idle_reported {
            earliest(self.last_activity.checked_add(self.idle));
        }
        at.unwrap_or_else(|| {
            let now = Instant::now();
            now.checked_add(Duration::from_secs(3600)).unwrap_or(now)
        })
    }

    /// Put the scenario stage in force at `now` (its clock starts at the
    /// client's first datagram).
    fn update_stage(&mut self, now: Instant) {
        let Plan::Scenario {
            scenario,
            steps,
            after,
        } = self.plan.as_ref()
        else {
            return;
        };
        let since = now.saturating_duration_since(self.created);
        let stage = scenario
            .started_at()
            .checked_add(since)
            .and_then(|at| scenario.stage(at).map(|stage| (at, stage)));
        self.stage_ends = stage.map(|(at, s)| {
            let left = s.ends_at.saturating_duration_since(at);
            now.checked_add(left).unwrap_or(now)
        });
        let key = stage.map(|(_, s)| (s.step, s.cycle));
        if self.applied == Some(key) {
            return;
        }
        self.applied = Some(key);
        // Every link here was validated at start: set_config cannot fail.
        match key.and_then(|(step, _)| steps.get(step)) {
            Some(Some(link)) => {
                let _ = self.link.set_config(link);
                self.link.set_blackout(false);
            }
            Some(None) => self.link.set_blackout(true),
            None => {
                let _ = self.link.set_config(after);
                self.link.set_blackout(false);
            }
        }
    }

    /// Send everything due at `now`.
    async fn flush(&mut self, now: Instant) {
        while let Some(released) = self.link.poll(Direction::Up, now) {
            note_lateness(&mut self.up, now, released.release_at);
            match self.upstream.send(&released.payload).await {
                Ok(_) => self.up.forwarded += 1,
                Err(_) => self.up.send_errors += 1,
            }
        }
        while let Some(released) = self.link.poll(Direction::Down, now) {
            note_lateness(&mut self.down, now, released.release_at);
            match self.listen.send_to(&released.payload, self.addr).await {
                Ok(_) => self.down.forwarded += 1,
                Err(_) => self.down.send_errors += 1,
            }
        }
    }
}

fn note_lateness(driven: &mut Driven, now: Instant, due: Instant) {
    let late = now.saturating_duration_since(due);
    driven.lateness = driven.lateness.saturating_add(late);
    driven.max_lateness = driven.max_lateness.max(late);
}

/// A client's totals when its task ends.
struct ClientReport {
    expired: bool,
    up: (Counters, Driven),
    down: (Counters, Driven),
}

#[derive(Debug, Default)]
struct ClientTotals {
    /// Clients started.
    total: u64,
    /// Clients forgotten after `--idle-timeout`.
    expired: u64,
    /// Most clients at once.
    max_concurrent: u64,
    /// Datagrams of new clients refused by `--max-clients`.
    refused_datagrams: u64,
    /// Clients that could not get an upstream socket.
    setup_errors: u64,
}

/// One direction over every client.
#[derive(Debug, Default)]
struct DirTotals {
    model: Counters,
    driven: Driven,
    /// Dropped before the model: the client's queue was full (up only).
    overload: u64,
    /// Receive errors on the listening socket (up) or upstream sockets
    /// (down, in `driven`).
    recv_errors: u64,
}

impl DirTotals {
    fn add(&mut self, (c, d): (Counters, Driven)) {
        let m = &mut self.model;
        m.pushed += c.pushed;
        m.passed += c.passed;
        m.dropped_loss += c.dropped_loss;
        m.dropped_blackout += c.dropped_blackout;
        m.dropped_queue += c.dropped_queue;
        m.duplicated += c.duplicated;
        m.reordered += c.reordered;
        m.corrupted += c.corrupted;
        m.released += c.released;
        m.added_delay = m.added_delay.saturating_add(c.added_delay);
        let t = &mut self.driven;
        t.forwarded += d.forwarded;
        t.send_errors += d.send_errors;
        t.recv_errors += d.recv_errors;
        t.lateness = t.lateness.saturating_add(d.lateness);
        t.max_lateness = t.max_lateness.max(d.max_lateness);
    }

    fn packets_in(&self) -> u64 {
        self.model.pushed + self.overload
    }

    fn dropped_total(&self) -> u64 {
        self.model.dropped() + self.overload
    }

    /// Accepted copies still held when their client ended (stop or expiry).
    fn discarded(&self) -> u64 {
        (self.model.passed + self.model.duplicated).saturating_sub(self.model.released)
    }

    fn mean_added_delay_ms(&self) -> f64 {
        let copies = self.model.passed + self.model.duplicated;
        if copies == 0 {
            0.0
        } else {
            self.model.added_delay.as_secs_f64() * 1000.0 / copies as f64
        }
    }

    fn mean_lateness_ms(&self) -> f64 {
        if self.model.released == 0 {
            0.0
        } else {
            self.driven.lateness.as_secs_f64() * 1000.0 / self.model.released as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        let m = &self.model;
        serde_json::json!({
            "packets_in": self.packets_in(),
            "passed": m.passed,
            "dropped": {
                "loss": m.dropped_loss,
                "blackout": m.dropped_blackout,
                "queue": m.dropped_queue,
                "overload": self.overload,
            },
            "dropped_total": self.dropped_total(),
            "duplicated": m.duplicated,
            "reordered": m.reordered,
            "corrupted": m.corrupted,
            "forwarded": self.driven.forwarded,
            "send_errors": self.driven.send_errors,
            "recv_errors": self.recv_errors + self.driven.recv_errors,
            "discarded": self.discarded(),
            "mean_added_delay_ms": round3(self.mean_added_delay_ms()),
            "mean_lateness_ms": round3(self.mean_lateness_ms()),
            "max_lateness_ms": round3(self.driven.max_lateness.as_secs_f64() * 1000.0),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The final report.
struct Report {
    listen: SocketAddr,
    forward: SocketAddr,
    profile: String,
    seed: u64,
    elapsed: Duration,
    clients: ClientTotals,
    up: DirTotals,
    down: DirTotals,
}

impl Report {
    fn add_client(&mut self, joined: Result<ClientReport, tokio::task::JoinError>) {
        match joined {
            Ok(client) => {
                if client.expired {
                    self.clients.expired += 1;
                }
                self.up.add(client.up);
                self.down.add(client.down);
            }
            Err(e) => eprintln!("impair: a client's task failed, its counters are lost: {e}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": self.listen.to_string(),
            "forward": self.forward.to_string(),
            "profile": self.profile,
            "seed": self.seed,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "clients": {
                "total": self.clients.total,
                "expired": self.clients.expired,
                "max_concurrent": self.clients.max_concurrent,
                "refused_datagrams": self.clients.refused_datagrams,
                "setup_errors": self.clients.setup_errors,
            },
            "up": self.up.json(),
            "down": self.down.json(),
        })
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.clients;
        let _ = writeln!(
            t,
            "impair: stopped after {:.1} s: {} client(s) ({} expired, at most {} at once), {} datagram(s) of new clients refused",
            self.elapsed.as_secs_f64(),
            c.total,
            c.expired,
            c.max_concurrent,
            c.refused_datagrams
        );
        let (u, d) = (&self.up, &self.down);
        let _ = writeln!(
            t,
            "{:<24}{:>22}{:>22}",
            "", "up (client->server)", "down (server->client)"
        );
        let rows: [(&str, u64, u64); 14] = [
            ("packets in", u.packets_in(), d.packets_in()),
            ("passed", u.model.passed, d.model.passed),
            ("dropped: loss", u.model.dropped_loss, d.model.dropped_loss),
            (
                "dropped: blackout",
                u.model.dropped_blackout,
                d.model.dropped_blackout,
            ),
            (
                "dropped: queue",
                u.model.dropped_queue,
                d.model.dropped_queue,
            ),
            ("dropped: overload", u.overload, d.overload),
            ("duplicated", u.model.duplicated, d.model.duplicated),
            ("reordered", u.model.reordered, d.model.reordered),
            ("corrupted", u.model.corrupted, d.model.corrupted),
            ("forwarded", u.driven.forwarded, d.driven.forwarded),
            ("send errors", u.driven.send_errors, d.driven.send_errors),
            (
                "receive errors",
                u.recv_errors + u.driven.recv_errors,
                d.recv_errors + d.driven.recv_errors,
            ),
            ("held at stop/expiry", u.discarded(), d.discarded()),
            ("dropped, all causes", u.dropped_total(), d.dropped_total()),
        ];
        for (name, up, down) in rows {
            let _ = writeln!(t, "{name:<24}{up:>22}{down:>22}");
        }
        let _ = writeln!(
            t,
            "{:<24}{:>19.1} ms{:>19.1} ms",
            "mean added delay",
            u.mean_added_delay_ms(),
            d.mean_added_delay_ms()
        );
        t
    }
}

/// SIGINT and SIGTERM, caught from the moment this is created.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves at the next SIGINT or SIGTERM (Ctrl-C elsewhere).
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_seeds_are_splitmix64_outputs() {
        // SplitMix64 seeded with 1234567: its first output.
        assert_eq!(client_seed(1_234_567, 1), 6_457_827_717_110_365_317);
        assert_ne!(client_seed(7, 1), client_seed(7, 2));
        assert_ne!(client_seed(7, 1), client_seed(8, 1));
    }

    #[test]
    fn quick_flags_override_one_or_both_directions() {
        let base = Preset::ThreeG.link_config();
        let quick = Quick {
            loss: Some(0.1),
            delay: Some(Duration::from_millis(5)),
            rate: Some(100),
            up: true,
            down: false,
            ..Quick::default()
        };
        let link = quick.apply(&base);
        assert_eq!(
            link.up.loss,
            LossConfig::Random(RandomLoss {
                p: 0.1,
                correlation: 0.0
            })
        );
        assert_eq!(link.up.delay.latency, Duration::from_millis(5));
        let rate = link.up.rate.expect("a rate");
        assert_eq!(rate.kbit_per_s, 100);
        assert_eq!(
            rate.queue_limit_bytes,
            Some(64_000),
            "the preset's queue stays"
        );
        assert_eq!(link.down, base.down);
    }
}
