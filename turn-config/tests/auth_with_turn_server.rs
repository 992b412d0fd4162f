//! `TurnAuthHandler` inside the real `turn` 0.17.2 server, driven by the
//! crate's own client over loopback UDP: static users, REST credentials,
//! expiry, a wrong secret, and secret rotation through
//! `TurnAuthHandler::observe` called from a listener `Conn` wrapper (the
//! design the module docs of `credentials` describe), including a hot
//! reload while an allocation made with the old secret keeps relaying.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rtcrelay_turn::credentials::{rest_password, Credentials, TurnAuthHandler};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;
use webrtc_util::Conn;

const REALM: &str = "rtcrelay";
const STEP: Duration = Duration::from_secs(5);

/// A listener `Conn` that shows each received datagram to the auth handler
/// before the server handles it.
struct ObservingConn {
    inner: Arc<UdpSocket>,
    auth: Arc<TurnAuthHandler>,
}

#[async_trait]
impl Conn for ObservingConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Conn::connect(&*self.inner, addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Conn::recv(&*self.inner, buf).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, src) = Conn::recv_from(&*self.inner, buf).await?;
        self.auth.observe(src, &buf[..n]);
        Ok((n, src))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Conn::send(&*self.inner, buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Conn::send_to(&*self.inner, buf, target).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Conn::local_addr(&*self.inner)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        Conn::remote_addr(&*self.inner)
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Conn::close(&*self.inner).await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

struct Turn {
    server: Server,
    addr: SocketAddr,
    auth: Arc<TurnAuthHandler>,
}

async fn start(auth: TurnAuthHandler, observe: bool) -> Turn {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    let auth = Arc::new(auth);
    let conn: Arc<dyn Conn + Send + Sync> = if observe {
        Arc::new(ObservingConn {
            inner: socket,
            auth: Arc::clone(&auth),
        })
    } else {
        socket
    };
    let server = Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn,
            relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                relay_address: "127.0.0.1".parse().unwrap(),
                address: "127.0.0.1".into(),
                net: Arc::new(Net::new(None)),
            }),
        }],
        realm: REALM.into(),
        auth_handler: auth.clone(),
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: None,
    })
    .await
    .unwrap();
    Turn { server, addr, auth }
}

async fn client(turn: &Turn, username: &str, password: &str) -> Client {
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = Client::new(ClientConfig {
        stun_serv_addr: turn.addr.to_string(),
        turn_serv_addr: turn.addr.to_string(),
        username: username.into(),
        password: password.into(),
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

/// Allocates, then relays one datagram to a local peer socket (which needs
/// an authenticated CreatePermission); the error text on failure.
async fn allocate_and_relay(turn: &Turn, username: &str, password: &str) -> Result<(), String> {
    let client = client(turn, username, password).await;
    let result = async {
        let relay = timeout(STEP, client.allocate())
            .await
            .map_err(|_| "allocate timed out".to_string())?
            .map_err(|e| format!("allocate: {e}"))?;
        relay_once(&relay, "127.0.0.1").await
    }
    .await;
    let _ = client.close().await;
    result
}

/// Relays one datagram to a fresh peer socket on `peer_ip`. Permissions are
/// per peer IP, so a new IP forces an authenticated CreatePermission.
async fn relay_once(relay: &impl Conn, peer_ip: &str) -> Result<(), String> {
    let peer = UdpSocket::bind((peer_ip, 0)).await.unwrap();
    timeout(STEP, relay.send_to(b"hello", peer.local_addr().unwrap()))
        .await
        .map_err(|_| "send timed out".to_string())?
        .map_err(|e| format!("send (CreatePermission): {e}"))?;
    let mut buf = [0u8; 64];
    let (n, from) = timeout(STEP, peer.recv_from(&mut buf))
        .await
        .map_err(|_| "peer received nothing".to_string())?
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        from,
        relay.local_addr().unwrap(),
        "relayed from the relay address"
    );
    Ok(())
}

fn now() -> u64 {
    rtcrelay_turn::credentials::system_unix_time()
}

fn credentials(secrets: &[&str]) -> Credentials {
    Credentials::new(
        REALM,
        secrets.iter().map(|s| s.to_string()),
        [("alice".to_string(), "alice-password".to_string())].into(),
    )
}

#[tokio::test]
async fn static_user_and_rest_credentials_allocate() {
    let turn = start(TurnAuthHandler::new(credentials(&["s1"])), true).await;

    allocate_and_relay(&turn, "alice", "alice-password")
        .await
        .unwrap();
    let (user, pass) = turn
        .auth
        .credentials()
        .mint(Some("player-1"), now(), Duration::from_secs(600))
        .unwrap();
    allocate_and_relay(&turn, &user, &pass).await.unwrap();

    turn.server.close().await.unwrap();
}

#[tokio::test]
async fn wrong_password_wrong_secret_expired_and_unknown_are_refused() {
    let turn = start(TurnAuthHandler::new(credentials(&["s1"])), true).await;
    let expiry = now() + 600;
    let user = format!("{expiry}:p");

    for (username, password) in [
        ("alice", "not-alice-password".to_string()),
        (user.as_str(), rest_password("wrong-secret", &user)),
        ("bob", "whatever".to_string()),
    ] {
        let err = allocate_and_relay(&turn, username, &password)
            .await
            .unwrap_err();
        assert!(err.starts_with("allocate"), "{username}: {err}");
    }
    let expired = format!("{}:p", now() - 1);
    let err = allocate_and_relay(&turn, &expired, &rest_password("s1", &expired))
        .await
        .unwrap_err();
    assert!(err.starts_with("allocate"), "{err}");
    assert!(turn.auth.refusals().expired >= 1);
    assert!(turn.auth.refusals().unknown_user >= 1);

    turn.server.close().await.unwrap();
}

#[tokio::test]
async fn old_secret_is_accepted_only_with_observe() {
    let old = credentials(&["old-secret"]);
    let (user, pass) = old
        .mint(Some("p"), now(), Duration::from_secs(600))
        .unwrap();

    // The listener wrapped: both secrets work.
    let turn = start(
        TurnAuthHandler::new(credentials(&["new-secret", "old-secret"])),
        true,
    )
    .await;
    allocate_and_relay(&turn, &user, &pass).await.unwrap();
    let (new_user, new_pass) = turn
        .auth
        .credentials()
        .mint(Some("q"), now(), Duration::from_secs(600))
        .unwrap();
    allocate_and_relay(&turn, &new_user, &new_pass)
        .await
        .unwrap();
    turn.server.close().await.unwrap();

    // Not wrapped: the crate can only check the first secret's key.
    let turn = start(
        TurnAuthHandler::new(credentials(&["new-secret", "old-secret"])),
        false,
    )
    .await;
    let err = allocate_and_relay(&turn, &user, &pass).await.unwrap_err();
    assert!(err.starts_with("allocate"), "{err}");
    allocate_and_relay(&turn, &new_user, &new_pass)
        .await
        .unwrap();
    turn.server.close().await.unwrap();
}

#[tokio::test]
async fn rotation_by_reload_keeps_old_allocations_relaying() {
    let turn = start(TurnAuthHandler::new(credentials(&["first"])), true).await;
    let (user, pass) = turn
        .auth
        .credentials()
        .mint(Some("early"), now(), Duration::from_secs(600))
        .unwrap();
    let early = client(&turn, &user, &pass).await;
    let relay = timeout(STEP, early.allocate()).await.unwrap().unwrap();
    relay_once(&relay, "127.0.0.2").await.unwrap();

    // Rotate: the new secret mints, the old one is still accepted. The early
    // client's next CreatePermission (a new peer) is signed with the old
    // secret's key and must pass.
    turn.auth
        .replace(credentials(&["second", "first"]))
        .unwrap();
    relay_once(&relay, "127.0.0.3").await.unwrap();
    let (late_user, late_pass) = turn
        .auth
        .credentials()
        .mint(Some("late"), now(), Duration::from_secs(600))
        .unwrap();
    assert_eq!(late_pass, rest_password("second", &late_user));
    allocate_and_relay(&turn, &late_user, &late_pass)
        .await
        .unwrap();

    // Retire the old secret: the early client's new permissions fail now.
    turn.auth.replace(credentials(&["second"])).unwrap();
    let err = relay_once(&relay, "127.0.0.4").await.unwrap_err();
    assert!(err.starts_with("send"), "{err}");

    let _ = early.close().await;
    turn.server.close().await.unwrap();
}
