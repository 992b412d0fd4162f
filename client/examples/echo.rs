//! Joins a relay room and echoes every message back on the channel it came
//! on: text as `echo:<text>`, binary with a 0xEE byte in front. Used by the
//! browser interop test (tests/browser/interop.test.js) and handy by hand:
//!
//! ```text
//! cargo run -p rtcrelay-client --example echo -- ws://127.0.0.1:8080/ws lobby echo-bot
//! ```
//!
//! Prints `peer_id: N` once connected, then one line per event, to stdout.
//! SIGTERM or Ctrl-C leaves the room (at once, not after a grace period).

use rtcrelay_client::{Channel, Client, ClientConfig, ClientEvent};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(room)) = (args.next(), args.next()) else {
        eprintln!("usage: echo <ws://host:port/ws> <room> [name]");
        std::process::exit(2);
    };
    let name = args.next().unwrap_or_else(|| "echo".to_owned());

    let mut client = match Client::connect(ClientConfig::new(url, room, name)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect failed: {e}");
            std::process::exit(1);
        }
    };
    println!("peer_id: {}", client.peer_id());

    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            event = client.next_event() => event,
            () = &mut stop => {
                println!("leaving");
                client.close().await;
                return;
            }
        };
        let Some(event) = event else { break };
        match event {
            ClientEvent::Message {
                from,
                channel,
                text,
                payload,
            } => {
                let label = channel.label();
                let result = if text {
                    let s = String::from_utf8_lossy(&payload);
                    println!("message {from} {label} text {s}");
                    client.send_text(channel, &format!("echo:{s}")).await
                } else {
                    println!("message {from} {label} binary {}", payload.len());
                    let mut reply = Vec::with_capacity(payload.len() + 1);
                    reply.push(0xEE);
                    reply.extend_from_slice(&payload);
                    client.send(channel, &reply).await
                };
                if let Err(e) = result {
                    // Realtime sends may fail under load; keep echoing.
                    if channel == Channel::Control {
                        eprintln!("send failed: {e}");
                    }
                }
            }
            ClientEvent::PeerJoined { peer_id, name } => println!("peer_joined {peer_id} {name}"),
            ClientEvent::PeerLeft { peer_id, reason } => {
                println!("peer_left {peer_id} {reason:?}");
                if peer_id == client.peer_id() {
                    break;
                }
            }
            ClientEvent::Error { code, message, .. } => println!("error {code} {message}"),
            ClientEvent::InvalidFrame { channel, error } => {
                println!("invalid_frame {} {error}", channel.label())
            }
            ClientEvent::Disconnected { silent_for } => {
                println!("disconnected: nothing from the server for {silent_for:?}");
                break;
            }
            ClientEvent::Closed => break,
            // Away/back and the automatic reconnection's progress.
            other => println!("{other:?}"),
        }
    }
    println!("closed");
}

/// Resolves on SIGTERM (Unix) or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
