//! Connection and round-trip latency against a real `rtcrelay serve` (the
//! release binary), with real WebRTC clients on loopback. Run with
//! `scripts/bench-connect` (`cargo bench --bench connect`); prints a markdown
//! table for docs/benchmarks.md.
//!
//! Client and server share the machine: on a busy one (parallel builds) the
//! tails grow. Set `BENCH_LOG` (a tracing filter) to trace the client.
//!
//! Measured:
//! - join: `Client::connect`, from the WebSocket dial to both DataChannels
//!   open and the server's `ready`; 100 one after the other, then 50 at once.
//! - echo RTT through a relay room: A sends, the relay forwards to B, B sends
//!   it back, the relay forwards to A. 1000 paced round trips per channel.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestServer;
use rtcrelay_client::{Channel, Client, ClientConfig, ClientEvent};

const SEQUENTIAL_JOINS: usize = 100;
const CONCURRENT_JOINS: usize = 50;
const ECHOES: u32 = 1000;
/// Time between echo requests: well below the channel's capacity, so the
/// figures are latency, not queueing.
const ECHO_INTERVAL: Duration = Duration::from_millis(5);
/// An echo not back by then counts as lost.
const ECHO_GRACE: Duration = Duration::from_secs(2);

struct Row {
    what: String,
    samples: Vec<Duration>,
    note: String,
}

fn main() {
    // e.g. BENCH_LOG=rtcrelay_client=debug,rtc=info to see where a join's
    // time goes (client side; the server logs per RTCRELAY_LOG).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run());
    print_table(&rows);
}

async fn run() -> Vec<Row> {
    let server = TestServer::start();
    let mut rows = Vec::new();
    // The first join on a fresh server pays any one-time setup (and the
    // client's own); it is reported on its own row and kept out of the
    // steady-state figures.
    let start = Instant::now();
    let first = connect(&server, "first", "f").await;
    rows.push(Row {
        what: "first join after server start".into(),
        samples: vec![start.elapsed()],
        note: "one sample".into(),
    });
    first.close().await;

    let mut samples = Vec::with_capacity(SEQUENTIAL_JOINS);
    for i in 0..SEQUENTIAL_JOINS {
        let start = Instant::now();
        let client = connect(&server, &format!("seq-{i}"), "s").await;
        samples.push(start.elapsed());
        client.close().await;
    }
    rows.push(Row {
        what: format!("join → both channels open, {SEQUENTIAL_JOINS} sequential"),
        samples,
        note: String::new(),
    });

    let wall = Instant::now();
    let joins: Vec<_> = (0..CONCURRENT_JOINS)
        .map(|i| {
            let url = server.ws_url.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                // Two per room, so the rooms are not all singletons.
                let config = ClientConfig::new(url, format!("conc-{}", i / 2), format!("c{i}"));
                let client = Client::connect(config).await;
                (start.elapsed(), client)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(CONCURRENT_JOINS);
    let mut clients = Vec::with_capacity(CONCURRENT_JOINS);
    let mut failed = 0;
    for j in joins {
        match j.await.expect("join task") {
            (took, Ok(client)) => {
                samples.push(took);
                clients.push(client);
            }
            (_, Err(e)) => {
                eprintln!("concurrent join failed: {e}");
                failed += 1;
            }
        }
    }
    let wall = wall.elapsed();
    for c in clients {
        c.close().await;
    }
    rows.push(Row {
        what: format!("join → both channels open, {CONCURRENT_JOINS} concurrent"),
        samples,
        note: format!("all done in {}; {failed} failed", ms(wall)),
    });

    let mut a = connect(&server, "echo", "a").await;
    let mut b = connect(&server, "echo", "b").await;
    // Drain `peer_joined` so only echoes remain.
    while let Some(ClientEvent::PeerJoined { .. }) = a.try_next_event() {}
    let echoer = tokio::spawn(async move {
        while let Some(event) = b.next_event().await {
            if let ClientEvent::Message {
                channel, payload, ..
            } = event
            {
                if b.send(channel, &payload).await.is_err() {
                    break;
                }
            }
        }
    });
    for channel in [Channel::Realtime, Channel::Control] {
        let (samples, lost) = echo(&mut a, channel).await;
        rows.push(Row {
            what: format!("echo RTT A→relay→B→relay→A, `{}`", channel.label()),
            samples,
            note: format!("{lost}/{ECHOES} lost, one every {}", ms(ECHO_INTERVAL)),
        });
    }
    echoer.abort();
    a.close().await;
    rows
}

async fn connect(server: &TestServer, room: &str, name: &str) -> Client {
    Client::connect(ClientConfig::new(&server.ws_url, room, name))
        .await
        .unwrap_or_else(|e| panic!("connect {room}/{name}: {e}"))
}

/// Sends `ECHOES` numbered messages on `channel`, paced, and times each one's
/// return. Returns the round-trip times and how many never came back.
async fn echo(a: &mut Client, channel: Channel) -> (Vec<Duration>, u32) {
    let mut sent_at: HashMap<u32, Instant> = HashMap::new();
    let mut samples = Vec::with_capacity(ECHOES as usize);
    let mut tick = tokio::time::interval(ECHO_INTERVAL);
    let mut next = 0u32;
    let mut last_send = Instant::now();
    loop {
        if next == ECHOES && (sent_at.is_empty() || last_send.elapsed() > ECHO_GRACE) {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if next < ECHOES => {
                sent_at.insert(next, Instant::now());
                a.send(channel, &next.to_be_bytes()).await.expect("send");
                next += 1;
                last_send = Instant::now();
            }
            event = tokio::time::timeout(ECHO_GRACE, a.next_event()) => {
                let Ok(Some(event)) = event else { continue };
                if let ClientEvent::Message { channel: c, payload, .. } = event {
                    let seq = <[u8; 4]>::try_from(&payload[..]).map(u32::from_be_bytes);
                    if let (true, Ok(seq)) = (c == channel, seq) {
                        if let Some(at) = sent_at.remove(&seq) {
                            samples.push(at.elapsed());
                        }
                    }
                }
            }
        }
    }
    (samples, sent_at.len() as u32)
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| measurement | n | p50 | p99 | max | note |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in rows {
        let mut s = row.samples.clone();
        s.sort();
        let pick = |q: f64| -> String {
            if s.is_empty() {
                return "-".into();
            }
            let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
            ms(s[i])
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            row.what,
            s.len(),
            pick(0.50),
            pick(0.99),
            pick(1.0),
            row.note
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
