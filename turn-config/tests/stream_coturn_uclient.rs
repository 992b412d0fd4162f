//! coturn's `turnutils_uclient` (an independent TURN client) against the
//! `turn` crate's server on a `StreamListener`: over TCP (`-t`) and over
//! TLS (`-t -S`), with a static user and with a REST secret (`-W`), relaying
//! ChannelData (padded, `-t`) to a local UDP echo peer and back. Skipped,
//! with a note, when `turnutils_uclient` is not installed (Debian package
//! `coturn`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rtcrelay_turn::credentials::{Credentials, TurnAuthHandler};
use rtcrelay_turn::policy::{PeerPolicy, PeerRules, SharedPeerPolicy};
use rtcrelay_turn::relay_conn::{PeerRequestGuard, PolicedRelayGenerator, RelayCounters};
use rtcrelay_turn::stream::{tls_server_config, StreamListener, StreamOptions, TlsAcceptor};
use tokio::net::UdpSocket;
use turn::auth::AuthHandler;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::Conn;

const REALM: &str = "rtcrelay";
const SECRET: &str = "uclient-secret";
const MESSAGES: usize = 20;

fn uclient_installed() -> bool {
    match std::process::Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(_) => {
            eprintln!("turnutils_uclient not installed (apt-get install coturn): skipped");
            false
        }
    }
}

/// A UDP peer that echoes every datagram back to its sender.
async fn echo_peer() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn start(tls: Option<TlsAcceptor>) -> (Server, Arc<StreamListener>) {
    let auth: Arc<dyn AuthHandler + Send + Sync> =
        Arc::new(TurnAuthHandler::new(Credentials::new(
            REALM,
            [SECRET.to_string()],
            [("user".to_string(), "pass".to_string())].into(),
        )));
    let options = StreamOptions {
        release_allocations: Some(auth.clone()),
        ..StreamOptions::default()
    };
    let bind = "127.0.0.1:0".parse().unwrap();
    let listener = Arc::new(match tls {
        None => StreamListener::bind_tcp(bind, options).await.unwrap(),
        Some(tls) => StreamListener::bind_tls(bind, tls, options).await.unwrap(),
    });
    let policy = SharedPeerPolicy::new(PeerPolicy::new(
        &PeerRules {
            allow_loopback: true,
            ..PeerRules::default()
        },
        &Default::default(),
    ));
    let counters = RelayCounters::new();
    let server = Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(PeerRequestGuard::new(
                listener.clone(),
                policy.clone(),
                auth.clone(),
                counters.clone(),
            )),
            relay_addr_generator: Box::new(PolicedRelayGenerator::new(
                "127.0.0.1".parse().unwrap(),
                40000..=49999,
                policy,
                counters,
            )),
        }],
        realm: REALM.into(),
        auth_handler: auth,
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: None,
    })
    .await
    .unwrap();
    (server, listener)
}

/// Runs uclient with `args` + the common ones; its output and the number of
/// messages it reports as received back.
async fn uclient(server: SocketAddr, peer: SocketAddr, args: &[&str]) -> (String, usize) {
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    cmd.args(args)
        .args(["-c", "-z", "5", "-l", "171"])
        .args(["-n", &MESSAGES.to_string()])
        .args(["-e", &peer.ip().to_string(), "-r", &peer.port().to_string()])
        .args(["-p", &server.port().to_string(), &server.ip().to_string()])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("uclient finished")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "Total transmit time is 1\nTotal lost packets 0 (0.000000%), total send
    // dropped 0 (0.000000%)\nAverage round trip delay ..." and, per second,
    // "tot_send_msgs=20, tot_recv_msgs=20".
    let received = text
        .lines()
        .filter_map(|l| l.split("tot_recv_msgs=").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
        .unwrap_or(0);
    (text, received)
}

#[tokio::test]
async fn coturn_uclient_over_tcp_static_user_and_rest_secret() {
    if !uclient_installed() {
        return;
    }
    let (server, listener) = start(None).await;
    let addr = listener.local_addr().unwrap();
    let peer = echo_peer().await;

    let (out, received) = uclient(addr, peer, &["-t", "-u", "user", "-w", "pass"]).await;
    assert_eq!(received, MESSAGES, "{out}\n{:?}", listener.stats());
    let (out, received) = uclient(addr, peer, &["-t", "-u", "rest-user", "-W", SECRET]).await;
    assert_eq!(received, MESSAGES, "{out}");
    let (out, received) = uclient(addr, peer, &["-t", "-u", "user", "-w", "wrong"]).await;
    assert_eq!(received, 0, "{out}");

    let stats = listener.stats();
    assert_eq!(stats.closed_garbage, 0, "{stats:?}");
    assert!(stats.messages_in >= 2 * MESSAGES as u64, "{stats:?}");
    // uclient deallocates (Refresh 0) before it exits.
    assert_eq!(server.get_allocations_info(None).await.unwrap().len(), 0);
    server.close().await.unwrap();
}

#[tokio::test]
async fn coturn_uclient_over_tls() {
    if !uclient_installed() {
        return;
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = tls_server_config(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let (server, listener) = start(Some(TlsAcceptor::from(config))).await;
    let addr = listener.local_addr().unwrap();
    let peer = echo_peer().await;

    let (out, received) = uclient(addr, peer, &["-t", "-S", "-u", "user", "-w", "pass"]).await;
    assert_eq!(received, MESSAGES, "{out}");
    // (uclient also opens probe connections it drops mid-handshake, so
    // `tls_handshake_failed` varies from run to run.)
    let stats = listener.stats();
    assert_eq!(stats.closed_garbage, 0, "{stats:?}");
    server.close().await.unwrap();
}
