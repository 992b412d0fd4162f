//! A Dizolaur player over the Rust client: joins an authoritative room,
//! optionally plays by itself and starts the match, and prints what happens
//! as JSON lines. Used by the browser end-to-end test (next to headless
//! Chromium players) and handy by hand:
//!
//! ```text
//! cargo run -p rtcrelay-client --example dizolaur_bot -- \
//!     --url ws://127.0.0.1:8080/ws --room dino --name bot-1 --autoplay \
//!     --start-when 2 --max-seconds 30 --exit-after-match
//! ```
//!
//! Options:
//! - `--url URL` (required): the signaling WebSocket;
//! - `--room R` (required), `--name N` (default `dizolaur-bot`);
//! - `--autoplay`: every tick, the input comes from the game's own bot
//!   policy (`rtcrelay_relay::dizolaur::bot_input`) on the predicted own
//!   runner and the newest snapshot;
//! - `--start-when N`: once N lanes are seated (and the match is in the
//!   lobby or ended), sends `{"start":{"bots":false,"max_seconds":S}}`;
//! - `--max-seconds S`: the match length asked for by `--start-when`;
//! - `--exit-after-match`: exit 0 right after the `match_end` event (it is
//!   acked first);
//! - `--timeout-secs T` (default 120): give up (exit 1) after T seconds.
//!
//! Stdout: one line per game event received,
//! `{"type":"event","id":..,"tick":..,"event":{...}}`, and at exit
//! `{"type":"summary","match_end_events":n,"net":{...}}`. Diagnostics go to
//! stderr. Exit status: 0 when done (`--exit-after-match`) or stopped,
//! 1 on timeout, connection failure or a closed session, 2 on bad usage.

use std::io::Write;
use std::time::Duration;

use rtcrelay_client::{ClientConfig, GameClient, GameEvent, Predictor, WorldState};
use rtcrelay_relay::dizolaur::{
    bot_input, predict_player, LANE_COUNT, LANE_ID_BASE, MATCH_ID, M_PHASE, PHASE_ENDED,
    PHASE_LOBBY, P_PEER, P_STATE, STATE_EMPTY,
};
use serde_json::json;

/// Retry a refused or unanswered `start` after this long.
const START_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Args {
    url: String,
    room: String,
    name: String,
    autoplay: bool,
    start_when: Option<usize>,
    max_seconds: Option<u32>,
    exit_after_match: bool,
    timeout: Duration,
}

const USAGE: &str = "usage: dizolaur_bot --url ws://HOST:PORT/ws --room R [--name N] [--autoplay] \
[--start-when N] [--max-seconds S] [--exit-after-match] [--timeout-secs T]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut url, mut room) = (None, None);
    let mut a = Args {
        url: String::new(),
        room: String::new(),
        name: "dizolaur-bot".into(),
        autoplay: false,
        start_when: None,
        max_seconds: None,
        exit_after_match: false,
        timeout: Duration::from_secs(120),
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value("--url")?),
            "--room" => room = Some(value("--room")?),
            "--name" => a.name = value("--name")?,
            "--autoplay" => a.autoplay = true,
            "--start-when" => a.start_when = Some(number(&value("--start-when")?)?),
            "--max-seconds" => a.max_seconds = Some(number(&value("--max-seconds")?)?),
            "--exit-after-match" => a.exit_after_match = true,
            "--timeout-secs" => {
                a.timeout = Duration::from_secs(number(&value("--timeout-secs")?)?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.url = url.ok_or("--url is required")?;
    a.room = room.ok_or("--room is required")?;
    Ok(a)
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// The game's own physics, so predictions are exact.
struct Dizolaur;

impl Predictor for Dizolaur {
    fn step(&self, own: &mut Vec<i32>, input: &[u8], world: &WorldState) {
        predict_player(own, input.first().copied().unwrap_or(0), world);
    }
}

/// An event's type: Dizolaur's `{"kind":"x",…}`, or `{"type":"x",…}`, or
/// `{"x":{…}}`.
fn event_type(event: &serde_json::Value) -> Option<&str> {
    let obj = event.as_object()?;
    let named = ["kind", "type"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(|t| t.as_str()));
    match named {
        Some(t) => Some(t),
        None if obj.len() == 1 => obj.keys().next().map(String::as_str),
        None => None,
    }
}

fn lanes(world: &WorldState) -> impl Iterator<Item = &rtcrelay_client::Entity> {
    (LANE_ID_BASE..LANE_ID_BASE + LANE_COUNT as u32).filter_map(|id| world.get(id))
}

fn seated_lanes(world: &WorldState) -> usize {
    lanes(world)
        .filter(|lane| lane.fields.get(P_STATE).is_some_and(|&s| s != STATE_EMPTY))
        .count()
}

/// The lane entity whose `P_PEER` is `peer`.
fn own_lane(world: &WorldState, peer: u32) -> Option<u32> {
    lanes(world)
        .find(|lane| {
            lane.fields
                .get(P_PEER)
                .is_some_and(|&p| p as u32 == peer && p != 0)
        })
        .map(|lane| lane.id)
}

fn can_start(world: &WorldState) -> bool {
    world
        .get(MATCH_ID)
        .and_then(|m| m.fields.get(M_PHASE))
        .is_some_and(|&p| p == PHASE_LOBBY || p == PHASE_ENDED)
}

fn print_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let code = run(args).await;
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut config = ClientConfig::new(&args.url, &args.room, &args.name);
    config.connect_timeout = args.timeout.min(Duration::from_secs(30));
    let mut game = match GameClient::connect(config).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("connect failed: {e}");
            print_line(&json!({"type": "summary", "match_end_events": 0, "net": null}));
            return 1;
        }
    };
    eprintln!("joined {} as peer {}", args.room, game.peer_id());
    game.set_predictor(Box::new(Dizolaur));
    if args.autoplay {
        game.set_input_source(Box::new(|core| {
            let own = core.predicted()?;
            let world = core.state()?;
            Some(vec![bot_input(own, world)])
        }));
    }

    let mut match_ends = 0u64;
    // When the last `start` was sent (None: not yet), and whether a match
    // started (by anyone): then no more start commands.
    let mut start_sent: Option<tokio::time::Instant> = None;
    let mut started = false;
    let code = loop {
        let event = tokio::select! {
            e = game.next_game_event() => e,
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("timed out after {:?}", args.timeout);
                break 1;
            }
        };
        match event {
            Some(GameEvent::Hello(hello)) => {
                eprintln!(
                    "hello: {} at {} Hz, own entity {:?}",
                    hello.game, hello.tick_rate, hello.entity
                );
            }
            Some(GameEvent::Snapshot { .. }) => {
                // Seated after hello (a seat freed by a bot): find the lane.
                let peer = game.peer_id().0;
                game.with_core(|core| {
                    if core.own_entity().is_none() {
                        if let Some(id) = core.state().and_then(|w| own_lane(w, peer)) {
                            core.set_own_entity(Some(id));
                        }
                    }
                });
                let Some(n) = args.start_when else { continue };
                let due = start_sent.is_none_or(|at| at.elapsed() >= START_RETRY);
                if started || !due {
                    continue;
                }
                let ready = game
                    .state()
                    .is_some_and(|(_, w)| can_start(&w) && seated_lanes(&w) >= n);
                if ready {
                    let mut start = json!({"bots": false});
                    if let Some(s) = args.max_seconds {
                        start["max_seconds"] = json!(s);
                    }
                    eprintln!("starting: {start}");
                    game.command(json!({ "start": start }));
                    start_sent = Some(tokio::time::Instant::now());
                }
            }
            Some(GameEvent::Event { id, tick, event }) => {
                let kind = event_type(&event).map(str::to_owned);
                print_line(&json!({"type": "event", "id": id, "tick": tick, "event": event}));
                match kind.as_deref() {
                    Some("match_start") => started = true,
                    Some("match_end") => {
                        match_ends += 1;
                        if args.exit_after_match {
                            break 0;
                        }
                    }
                    _ => {}
                }
            }
            Some(GameEvent::Stats { .. }) => {}
            // Away/back and the automatic reconnection's progress.
            Some(GameEvent::Connection(event)) => eprintln!("{event:?}"),
            Some(GameEvent::Error { code, message }) => {
                eprintln!("server error {code}: {message}");
            }
            Some(GameEvent::Closed) | None => {
                eprintln!("session closed");
                break 1;
            }
        }
    };
    let net = game.net_stats();
    print_line(&json!({
        "type": "summary",
        "match_end_events": match_ends,
        "net": net,
    }));
    game.close().await;
    code
}
