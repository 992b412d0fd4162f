//! The network lab on TURN allocations (issue 5), end to end: a
//! `TurnServer` started with a `Lab`, the `turn` crate's own `Client` over
//! real UDP sockets, a UDP peer on loopback.
//!
//! - 20% random loss up for one TURN user (fixed seed): what the peer gets
//!   is within binomial tolerance of 80%, and the lab's totals for that
//!   scope account for what is missing; another user's allocation is
//!   untouched; clearing the setting restores clean delivery on the live
//!   allocation.
//! - 100 ms delay down: every peer → client echo takes at least 100 ms (a
//!   lower bound from the model, not a speed limit); datagrams held when the
//!   setting is cleared are still delivered.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcrelay_netlab::{Lab, LinkConfig, Scope, ScopeTotals, Setting};
use rtcrelay_turn::{TurnConfig, TurnMetrics, TurnServer};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const REALM: &str = "rtcrelay";
const WAIT: Duration = Duration::from_secs(5);

type Relay = Arc<dyn Conn + Send + Sync>;

fn config() -> TurnConfig {
    let mut c = TurnConfig {
        listen_udp: vec!["127.0.0.1:0".parse().unwrap()],
        listen_tcp: Vec::new(),
        ..TurnConfig::default()
    };
    c.realm = REALM.into();
    c.auth.secrets = vec!["netlab-test-secret".into()];
    c.peers.allow_loopback = true;
    c
}

async fn start(lab: &Arc<Lab>) -> TurnServer {
    TurnServer::start_with_lab(&config(), TurnMetrics::default(), Arc::clone(lab))
        .await
        .unwrap()
}

/// A client of `server` with REST credentials for `user_id` (username
/// `expiry:user_id`, as signaling mints them), and its allocation.
async fn allocate(server: &TurnServer, user_id: &str) -> (Client, Relay) {
    let minted = server.minter().mint(user_id).unwrap();
    let addr = server.listeners()[0].addr;
    let client = Client::new(ClientConfig {
        stun_serv_addr: addr.to_string(),
        turn_serv_addr: addr.to_string(),
        username: minted.username,
        password: minted.credential,
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relay = timeout(WAIT, client.allocate())
        .await
        .expect("allocate in time")
        .expect("allocate");
    (client, Arc::new(relay))
}

fn setting(toml: &str, seed: u64) -> Setting {
    Setting {
        link: Some(LinkConfig::from_toml_str(toml).unwrap()),
        seed: Some(seed),
        ..Setting::default()
    }
}

fn totals(lab: &Lab, scope: &Scope) -> ScopeTotals {
    lab.totals()
        .into_iter()
        .find(|(s, _)| s == scope)
        .map(|(_, t)| t)
        .unwrap_or_default()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `count` numbered datagrams (from `first`) through `relay` to a
/// fresh peer, paced so that no socket buffer overflows, while the peer
/// collects them; returns the numbers the peer got.
async fn send_numbered(relay: &Relay, first: u32, count: u32) -> HashSet<u32> {
    let peer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let peer_addr = peer.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let collector = tokio::spawn({
        let peer = Arc::clone(&peer);
        let done = Arc::clone(&done);
        async move {
            let mut got = HashSet::new();
            let mut buf = [0u8; 1500];
            loop {
                match timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await {
                    Ok(Ok((n, _))) if n >= 4 => {
                        got.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    }
                    Ok(_) => {}
                    Err(_) if done.load(Ordering::Acquire) => return got,
                    Err(_) => {}
                }
            }
        }
    });
    for i in first..first + count {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(64, 0xAB);
        timeout(WAIT, relay.send_to(&payload, peer_addr))
            .await
            .expect("send in time")
            .expect("send");
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done.store(true, Ordering::Release);
    collector.await.unwrap()
}

#[tokio::test]
async fn random_loss_up_follows_the_turn_user_and_clearing_restores_clean_delivery() {
    let lab = Arc::new(Lab::default());
    let server = start(&lab).await;
    // The REST username is `expiry:lossy`; the setting names the user id.
    let lossy = Scope::TurnUser("lossy".into());
    lab.set(
        lossy.clone(),
        setting("[up]\nloss = { model = \"random\", p = 0.2 }", 42),
        Instant::now(),
    )
    .unwrap();
    let (client, relay) = allocate(&server, "lossy").await;

    const N: u32 = 2000;
    let got = send_numbered(&relay, 0, N).await;
    let received = got.len() as f64;
    // Binomial: sd = sqrt(2000 * 0.2 * 0.8) ≈ 18 datagrams; allow 4.5 sd.
    let expected = f64::from(N) * 0.8;
    assert!(
        (received - expected).abs() <= 80.0,
        "{received} of {N} received through 20% loss (expected about {expected})"
    );
    // The lab accounts for the loss: what it dropped is what is missing (up
    // to a few datagrams the loopback itself may lose).
    eventually("the allocation to report its counters", || {
        let t = totals(&lab, &lossy);
        t.up.pushed >= u64::from(N) - 10 && t.up.passed >= got.len() as u64
    })
    .await;
    let t = totals(&lab, &lossy);
    let missing = u64::from(N) - got.len() as u64;
    assert!(
        t.up.dropped_loss.abs_diff(missing) <= 10,
        "lab dropped {} up, peer missed {missing}: {t:?}",
        t.up.dropped_loss
    );
    assert_eq!(t.up.pushed, t.up.passed + t.up.dropped_loss, "{t:?}");
    assert_eq!(t.down.dropped(), 0, "{t:?}");

    // Another user's allocation is untouched (and not counted).
    let (other_client, other_relay) = allocate(&server, "clean").await;
    let got = send_numbered(&other_relay, 0, 300).await;
    assert!(got.len() >= 297, "{} of 300 for another user", got.len());
    let scopes: Vec<Scope> = lab.totals().into_iter().map(|(s, _)| s).collect();
    assert_eq!(scopes, std::slice::from_ref(&lossy));

    // Clearing the setting: the live allocation is clean again.
    assert!(lab.clear(&lossy));
    let got = send_numbered(&relay, N, 300).await;
    assert!(got.len() >= 297, "{} of 300 after clearing", got.len());
    assert!(lab.totals().is_empty());

    for c in [client, other_client] {
        c.close().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn delay_down_bounds_the_echo_rtt_and_held_datagrams_survive_a_clear() {
    let lab = Arc::new(Lab::default());
    let server = start(&lab).await;
    let slow = Scope::TurnUser("slow".into());
    lab.set(
        slow.clone(),
        setting("[down]\ndelay = { latency = \"100ms\" }", 7),
        Instant::now(),
    )
    .unwrap();
    let (client, relay) = allocate(&server, "slow").await;

    // A peer that echoes everything back.
    let peer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let peer_addr = peer.local_addr().unwrap();
    let echo = tokio::spawn({
        let peer = Arc::clone(&peer);
        async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = peer.recv_from(&mut buf).await {
                if buf[..n].starts_with(b"ping") {
                    let _ = peer.send_to(&buf[..n], from).await;
                }
            }
        }
    });

    let mut buf = vec![0u8; 1500];
    let mut rtts = Vec::new();
    for i in 0..8u8 {
        let ping = [b'p', b'i', b'n', b'g', i];
        let sent = Instant::now();
        relay.send_to(&ping, peer_addr).await.unwrap();
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .expect("the echo in time")
            .unwrap();
        let rtt = sent.elapsed();
        assert_eq!((&buf[..n], from), (&ping[..], peer_addr));
        rtts.push(rtt);
    }
    let fastest = rtts.iter().min().unwrap();
    assert!(
        *fastest >= Duration::from_millis(100),
        "an echo took {fastest:?} through 100 ms of down delay: {rtts:?}"
    );
    eventually("the delay to be reported", || {
        totals(&lab, &slow).down.passed >= 8
    })
    .await;
    let t = totals(&lab, &slow);
    assert!(
        t.down.added_delay >= Duration::from_millis(100) * t.down.passed as u32,
        "{t:?}"
    );
    assert_eq!(t.up.added_delay, Duration::ZERO, "up is not delayed: {t:?}");

    // Datagrams in flight when the setting is cleared still arrive.
    let relay_addr = relay.local_addr().unwrap();
    for i in 0..5u8 {
        peer.send_to(&[b'h', i], relay_addr).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(lab.clear(&slow));
    let mut held = Vec::new();
    for _ in 0..5 {
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .expect("held datagrams delivered after the clear")
            .unwrap();
        assert_eq!(from, peer_addr);
        held.push(buf[..n].to_vec());
    }
    let expected: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'h', i]).collect();
    assert_eq!(held, expected, "in order");

    echo.abort();
    client.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn start_without_a_lab_relays_untouched() {
    let server = TurnServer::start(&config(), TurnMetrics::default())
        .await
        .unwrap();
    assert!(server.netlab().settings().is_empty());
    let (client, relay) = allocate(&server, "plain").await;
    let got = send_numbered(&relay, 0, 200).await;
    assert!(got.len() >= 198, "{} of 200", got.len());
    let _: SocketAddr = relay.local_addr().unwrap();
    client.close().await.unwrap();
    server.shutdown().await;
}
