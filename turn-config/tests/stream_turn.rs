//! `TurnServer` with a TCP or a TLS listener (the `turn` crate's server
//! with all our layers), driven by the crate's own `Client` over a
//! `StreamConn`: allocation, permission, ChannelData both ways and a 403
//! over TCP; the allocation released when the connection closes; the same
//! over TLS with a self-signed certificate; certificate renewal by reload;
//! TLS setup errors.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rtcrelay_turn::credentials::{system_unix_time, TurnAuthHandler};
use rtcrelay_turn::metrics::Transport;
use rtcrelay_turn::stream::{
    tls_acceptor_from_pem_files, tls_client_config, tls_server_config, StreamConn, StreamListener,
    StreamOptions, TlsAcceptor,
};
use rtcrelay_turn::{TurnConfig, TurnMetrics, TurnServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const REALM: &str = "rtcrelay";
const SECRET: &str = "stream-test-secret";
const WAIT: Duration = Duration::from_secs(5);

struct Turn {
    server: TurnServer,
    listener: Arc<StreamListener>,
    addr: SocketAddr,
    auth: Arc<TurnAuthHandler>,
}

/// A [`TurnServer`] with one TCP listener, or one TLS listener serving the
/// certificate files `tls` names; loopback peers allowed but 127.0.0.2.
fn config(tls: Option<(&Path, &Path)>) -> TurnConfig {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = TurnConfig {
        listen_udp: Vec::new(),
        listen_tcp: Vec::new(),
        relay_ports: "40000-49999".parse().unwrap(),
        ..TurnConfig::default()
    };
    match tls {
        None => c.listen_tcp = vec![bind],
        Some((cert, key)) => {
            c.listen_tls = vec![bind];
            c.tls_cert = Some(cert.to_owned());
            c.tls_key = Some(key.to_owned());
        }
    }
    c.realm = REALM.into();
    c.auth.secrets = vec![SECRET.into()];
    c.peers.allow_loopback = true;
    c.peers.deny = vec!["127.0.0.2/32".parse().unwrap()];
    c
}

async fn start(tls: Option<(&Path, &Path)>) -> Turn {
    let server = TurnServer::start(&config(tls), TurnMetrics::default())
        .await
        .unwrap();
    let listener = Arc::clone(&server.stream_listeners()[0]);
    let addr = server.listeners()[0].addr;
    let auth = Arc::clone(server.auth());
    Turn {
        server,
        listener,
        addr,
        auth,
    }
}

/// Counts ChannelData messages through a client's conn, both ways.
struct Spy {
    inner: Arc<StreamConn>,
    channel_data_sent: AtomicU64,
    channel_data_received: AtomicU64,
}

fn is_channel_data(m: &[u8]) -> bool {
    m.first().is_some_and(|b| b >> 6 == 0b01)
}

#[async_trait]
impl Conn for Spy {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        if is_channel_data(&buf[..n]) {
            self.channel_data_received.fetch_add(1, Ordering::Relaxed);
        }
        Ok((n, from))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if is_channel_data(buf) {
            self.channel_data_sent.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.send_to(buf, target).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

async fn client_over(turn: &Turn, stream: StreamConn) -> (Client, Arc<Spy>) {
    let (username, password) = turn
        .auth
        .credentials()
        .mint(Some("player"), system_unix_time(), Duration::from_secs(600))
        .unwrap();
    let spy = Arc::new(Spy {
        inner: Arc::new(stream),
        channel_data_sent: AtomicU64::new(0),
        channel_data_received: AtomicU64::new(0),
    });
    let client = Client::new(ClientConfig {
        stun_serv_addr: turn.addr.to_string(),
        turn_serv_addr: turn.addr.to_string(),
        username,
        password,
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: spy.clone(),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    (client, spy)
}

async fn allocation_count(turn: &Turn) -> usize {
    turn.server.active_allocations() as usize
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Allocates through `client`, relays to and from a UDP peer until the
/// channel is bound and ChannelData flows both ways, and checks the 403.
async fn allocate_and_relay(turn: &Turn, client: &Client, spy: &Spy) {
    let relay = timeout(WAIT, client.allocate())
        .await
        .expect("allocate in time")
        .expect("allocate");
    let relay_addr = relay.local_addr().unwrap();
    assert!((40000..=49999).contains(&relay_addr.port()));
    assert_eq!(allocation_count(turn).await, 1);

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = vec![0u8; 1500];
    // The first send makes the permission and starts a ChannelBind; later
    // ones go as ChannelData. Odd sizes exercise the padding.
    for i in 0..40u8 {
        let payload = vec![i; 1 + usize::from(i) * 7];
        timeout(WAIT, relay.send_to(&payload, peer_addr))
            .await
            .unwrap()
            .unwrap();
        let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
            .await
            .expect("relayed to the peer")
            .unwrap();
        assert_eq!((&buf[..n], from), (&payload[..], relay_addr));

        let back = vec![i ^ 0xFF; 3 + usize::from(i) * 5];
        peer.send_to(&back, relay_addr).await.unwrap();
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .expect("relayed to the client")
            .unwrap();
        assert_eq!((&buf[..n], from), (&back[..], peer_addr));
        if i > 5 && spy.channel_data_received.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(spy.channel_data_sent.load(Ordering::Relaxed) > 0);
    assert!(spy.channel_data_received.load(Ordering::Relaxed) > 0);

    // The guard under the crate answers 403 over the stream too.
    let denied = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let err = timeout(WAIT, relay.send_to(b"x", denied.local_addr().unwrap()))
        .await
        .unwrap()
        .expect_err("permission refused");
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn turn_over_tcp_allocates_relays_and_releases_on_close() {
    let turn = start(None).await;
    assert_eq!(turn.server.listeners()[0].transport, Transport::Tcp);
    assert_eq!(
        turn.server.urls(),
        [format!("turn:127.0.0.1:{}?transport=tcp", turn.addr.port())]
    );
    let stream = StreamConn::connect_tcp(turn.addr).await.unwrap();
    let (client, spy) = client_over(&turn, stream).await;
    allocate_and_relay(&turn, &client, &spy).await;

    // A second client on another connection of the same listener.
    let stream2 = StreamConn::connect_tcp(turn.addr).await.unwrap();
    let (client2, _spy2) = client_over(&turn, stream2).await;
    let relay2 = timeout(WAIT, client2.allocate()).await.unwrap().unwrap();
    assert_eq!(allocation_count(&turn).await, 2);
    assert_eq!(turn.listener.connection_count(), 2);

    // Closing the first connection releases its allocation only.
    client.close().await.unwrap();
    spy.close().await.unwrap();
    wait_until("allocation released", || async {
        allocation_count(&turn).await == 1
    })
    .await;
    let stats = turn.listener.stats();
    assert_eq!(stats.released_allocations, 1, "{stats:?}");
    assert_eq!(stats.closed_by_client, 1, "{stats:?}");
    assert_eq!(stats.active, 1, "{stats:?}");
    assert_eq!(stats.closed_garbage, 0);

    // The crate closes the listener conn with every allocation it closes;
    // the other client's connection and allocation must not notice.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    timeout(
        WAIT,
        relay2.send_to(b"still here", peer.local_addr().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"still here");

    client2.close().await.unwrap();
    turn.server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_deallocated_itself_gets_no_second_release() {
    let turn = start(None).await;
    let stream = StreamConn::connect_tcp(turn.addr).await.unwrap();
    let (client, spy) = client_over(&turn, stream).await;
    let relay = timeout(WAIT, client.allocate()).await.unwrap().unwrap();
    assert_eq!(allocation_count(&turn).await, 1);
    // The crate's relay conn sends Refresh with LIFETIME 0 on close.
    relay.close().await.unwrap();
    wait_until("deallocated by the client", || async {
        allocation_count(&turn).await == 0
    })
    .await;
    client.close().await.unwrap();
    spy.close().await.unwrap();
    wait_until("connection closed", || async {
        turn.listener.connection_count() == 0
    })
    .await;
    assert_eq!(turn.listener.stats().released_allocations, 0);
    turn.server.shutdown().await;
}

struct TestCert {
    cert_pem: String,
    key_pem: String,
    roots: RootCertStore,
}

fn self_signed() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["turn.test".to_string()]).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    TestCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        roots,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rtcrelay-stream-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn turn_over_tls_with_a_self_signed_certificate() {
    let cert = self_signed();
    let dir = temp_dir("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let turn = start(Some((&cert_path, &key_path))).await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        turn.server.urls(),
        [format!(
            "turns:127.0.0.1:{}?transport=tcp",
            turn.addr.port()
        )]
    );
    let name = ServerName::try_from("turn.test").unwrap();
    let config = tls_client_config(cert.roots.clone());

    // Plain TURN on the TLS port: handshake fails, counted, nothing else.
    let mut plain = TcpStream::connect(turn.addr).await.unwrap();
    let mut m = stun::message::Message::new();
    m.build(&[
        Box::new(stun::agent::TransactionId::new()),
        Box::new(stun::message::BINDING_REQUEST),
    ])
    .unwrap();
    plain.write_all(&m.raw).await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(WAIT, plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    // rustls may answer with an alert record (0x15), then closes.
    assert!(n == 0 || buf[0] == 0x15, "{:?}", &buf[..n]);

    // A client that does not trust the certificate fails its handshake.
    let untrusting = tls_client_config(self_signed().roots);
    assert!(StreamConn::connect_tls(turn.addr, name.clone(), untrusting)
        .await
        .is_err());

    let stream = StreamConn::connect_tls(turn.addr, name, config)
        .await
        .unwrap();
    let (client, spy) = client_over(&turn, stream).await;
    allocate_and_relay(&turn, &client, &spy).await;
    let stats = turn.listener.stats();
    assert_eq!(stats.tls_handshake_failed, 2, "{stats:?}");

    client.close().await.unwrap();
    spy.close().await.unwrap();
    wait_until("allocation released", || async {
        allocation_count(&turn).await == 0
    })
    .await;
    turn.server.shutdown().await;
}

/// A renewed certificate written over the files and a reload: new
/// connections get it, open ones keep working.
#[tokio::test]
async fn a_reload_serves_the_renewed_certificate_to_new_connections() {
    let (first, second) = (self_signed(), self_signed());
    let dir = temp_dir("renew");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &first.cert_pem).unwrap();
    std::fs::write(&key_path, &first.key_pem).unwrap();
    let turn = start(Some((&cert_path, &key_path))).await;
    let addr = turn.addr;
    let name = || ServerName::try_from("turn.test").unwrap();
    let connect =
        |c: &TestCert| StreamConn::connect_tls(addr, name(), tls_client_config(c.roots.clone()));
    let old = connect(&first).await.unwrap();
    assert!(connect(&second).await.is_err());

    // Unreadable files: refused whole, the running certificate stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let err = turn
        .server
        .reload(&config(Some((&cert_path, &key_path))))
        .unwrap_err();
    assert!(err.to_string().starts_with("key `turn.tls_cert`"), "{err}");
    connect(&first).await.unwrap();

    std::fs::write(&cert_path, &second.cert_pem).unwrap();
    std::fs::write(&key_path, &second.key_pem).unwrap();
    let warnings = turn
        .server
        .reload(&config(Some((&cert_path, &key_path))))
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    connect(&second).await.unwrap();
    assert!(connect(&first).await.is_err());
    // The connection made with the old certificate still works: the server
    // answers its Binding request.
    let (client, _spy) = client_over(&turn, old).await;
    timeout(WAIT, client.send_binding_request())
        .await
        .unwrap()
        .unwrap();
    client.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let plain = StreamListener::bind_tcp("127.0.0.1:0".parse().unwrap(), StreamOptions::default())
        .await
        .unwrap();
    let acceptor = TlsAcceptor::from(
        tls_server_config(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).unwrap(),
    );
    assert!(!plain.replace_tls(acceptor));
    turn.server.shutdown().await;
}

#[test]
fn tls_setup_errors_name_the_key() {
    let cert = self_signed();
    let other = self_signed();
    let missing = std::path::Path::new("/nonexistent/rtcrelay/cert.pem");
    let dir = temp_dir("errors");
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, &cert.key_pem).unwrap();

    let err = tls_acceptor_from_pem_files(missing, &key_path)
        .err()
        .unwrap();
    assert_eq!(err.key, "tls_cert");
    assert!(
        err.to_string()
            .starts_with("key `turn.tls_cert`: cannot read /nonexistent"),
        "{err}"
    );
    let err = tls_acceptor_from_pem_files(&key_path, missing)
        .err()
        .unwrap();
    assert_eq!(err.key, "tls_key", "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    let cases: [(&[u8], &[u8], &str); 4] = [
        (b"", cert.key_pem.as_bytes(), "tls_cert"),
        (cert.key_pem.as_bytes(), cert.key_pem.as_bytes(), "tls_cert"),
        (
            cert.cert_pem.as_bytes(),
            cert.cert_pem.as_bytes(),
            "tls_key",
        ),
        (
            cert.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
            "tls_key",
        ),
    ];
    for (i, (cert_pem, key_pem, key)) in cases.into_iter().enumerate() {
        let err = tls_server_config(cert_pem, key_pem).unwrap_err();
        assert_eq!(err.key, key, "case {i}: {err}");
    }
    tls_server_config(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
}
