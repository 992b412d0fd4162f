//! `StreamListener` on real loopback sockets, without the `turn` crate's
//! server: the framing on the wire in both directions (messages split across
//! reads, several in one read, ChannelData padding), garbage, oversized
//! messages, connection limits, timeouts, slow readers and closing.

use std::net::SocketAddr;
use std::time::Duration;

use rtcrelay_turn::stream::{StreamListener, StreamOptions, StreamStats};
use stun::agent::TransactionId;
use stun::message::{Message, BINDING_REQUEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use webrtc_util::Conn;

const WAIT: Duration = Duration::from_secs(5);

fn binding_request() -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .unwrap();
    m.raw
}

/// A STUN message with `body` bytes of attributes (a multiple of 4).
fn stun_with_body(body: usize) -> Vec<u8> {
    let mut m = binding_request();
    m[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    m.resize(20 + body, 0x5A);
    m
}

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut m = channel.to_be_bytes().to_vec();
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m
}

async fn listener(options: StreamOptions) -> (StreamListener, SocketAddr) {
    let l = StreamListener::bind_tcp("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

async fn connect(server: SocketAddr) -> TcpStream {
    TcpStream::connect(server).await.unwrap()
}

async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

async fn recv(l: &StreamListener) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 1500];
    let (n, from) = timeout(WAIT, l.recv_from(&mut buf))
        .await
        .expect("a message")
        .unwrap();
    (buf[..n].to_vec(), from)
}

/// True when the server closed the connection (EOF or reset) within `WAIT`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn read_exact_within(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("bytes from the server")
        .unwrap();
    buf
}

async fn wait_for_stats(l: &StreamListener, done: impl Fn(&StreamStats) -> bool) -> StreamStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = l.stats();
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn messages_split_across_reads_and_packed_in_one_read_are_reassembled() {
    let (l, addr) = listener(StreamOptions::default()).await;
    let mut client = connect(addr).await;
    let me = client.local_addr().unwrap();

    // One STUN message dribbled in three writes with pauses: three reads.
    let first = binding_request();
    for part in [&first[..3], &first[3..11], &first[11..]] {
        client.write_all(part).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recv(&l).await, (first, me));

    // Four messages in one write: STUN, ChannelData padded (5 + 3 bytes),
    // ChannelData needing no padding, empty ChannelData.
    let stun = stun_with_body(8);
    let odd = channel_data(0x4001, b"hello");
    let even = channel_data(0x7FFF, b"12345678"); // RFC 5766 range
    let empty = channel_data(0x4002, b"");
    let mut wire = stun.clone();
    wire.extend_from_slice(&odd);
    wire.extend_from_slice(&[0, 0, 0]);
    wire.extend_from_slice(&even);
    wire.extend_from_slice(&empty);
    client.write_all(&wire).await.unwrap();
    assert_eq!(recv(&l).await, (stun, me));
    assert_eq!(recv(&l).await, (odd, me), "padding stripped");
    assert_eq!(recv(&l).await, (even, me));
    assert_eq!(recv(&l).await, (empty, me));

    // A padded ChannelData split inside its padding.
    let split = channel_data(0x4003, b"abcdef");
    let mut wire = split.clone();
    wire.extend_from_slice(&[0, 0]);
    client.write_all(&wire[..9]).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(&wire[9..]).await.unwrap();
    client.write_all(&binding_request()).await.unwrap();
    assert_eq!(recv(&l).await, (split, me));
    assert_eq!(recv(&l).await.0.len(), 20);

    let stats = l.stats();
    assert_eq!(stats.messages_in, 7);
    assert_eq!(stats.active, 1);
}

#[tokio::test]
async fn send_to_pads_channel_data_and_writes_stun_as_is() {
    let (l, addr) = listener(StreamOptions::default()).await;
    let mut client = connect(addr).await;
    client.write_all(&binding_request()).await.unwrap();
    let (_, me) = recv(&l).await;

    let stun = stun_with_body(4);
    let odd = channel_data(0x4001, b"hello");
    let mut padded = channel_data(0x4002, b"x");
    padded.extend_from_slice(&[0, 0, 0]); // the `turn` crate pads itself
    for m in [&stun, &odd, &padded] {
        assert_eq!(l.send_to(m, me).await.unwrap(), m.len());
    }
    let mut expected = stun.clone();
    expected.extend_from_slice(&odd);
    expected.extend_from_slice(&[0, 0, 0]);
    expected.extend_from_slice(&padded);
    assert_eq!(
        read_exact_within(&mut client, expected.len()).await,
        expected
    );

    // Not exactly one message: refused, connection unaffected.
    assert!(l.send_to(&stun[..22], me).await.is_err());
    assert!(l.send_to(b"\xff\xff\xff\xff", me).await.is_err());
    l.send_to(&odd, me).await.unwrap();
    assert_eq!(read_exact_within(&mut client, 12).await[..9], odd[..]);

    let stats = l.stats();
    assert_eq!(stats.messages_out, 4);
    assert_eq!(stats.bytes_out, (expected.len() + 12) as u64);
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let (l, addr) = listener(StreamOptions::default()).await;
    let mut good = connect(addr).await;
    let good_addr = good.local_addr().unwrap();

    let garbage: [&[u8]; 4] = [
        b"\xff\x00\x00\x00",                         // 0b11: neither kind
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03", // TLS ClientHello on the TCP port
        b"\x00\x01\x00\x05\x21\x12\xa4\x42",         // STUN length not a multiple of 4
        b"\x00\x01\x00\x00\x21\x12\xa4\x43",         // wrong magic cookie
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let mut bad = connect(addr).await;
        // A valid message first: garbage mid-stream closes as well.
        bad.write_all(&binding_request()).await.unwrap();
        assert_eq!(recv(&l).await.1, bad.local_addr().unwrap());
        bad.write_all(bytes).await.unwrap();
        assert!(closed_by_server(&mut bad).await, "garbage {i}");
        wait_for_stats(&l, |s| s.closed_garbage == i as u64 + 1).await;

        good.write_all(&binding_request()).await.unwrap();
        assert_eq!(recv(&l).await.1, good_addr);
        let answer = stun_with_body(0);
        l.send_to(&answer, good_addr).await.unwrap();
        assert_eq!(read_exact_within(&mut good, 20).await, answer);
    }
    let stats = wait_for_stats(&l, |s| s.active == 1).await;
    assert_eq!(stats.closed_garbage, 4);
}

#[tokio::test]
async fn messages_larger_than_the_receive_buffer_are_dropped_not_truncated() {
    let (l, addr) = listener(StreamOptions::default()).await;
    let mut client = connect(addr).await;
    let big = stun_with_body(3000);
    let big_channel = channel_data(0x4000, &[7u8; 60_000]);
    let small = binding_request();
    let mut wire = big.clone();
    wire.extend_from_slice(&big_channel);
    wire.extend_from_slice(&small);
    client.write_all(&wire).await.unwrap();

    // The crate reads with a 1500-byte buffer.
    assert_eq!(recv(&l).await.0, small);
    assert_eq!(l.stats().dropped_oversize, 2);

    // With a buffer large enough, the same frames come through whole.
    client.write_all(&big_channel).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = timeout(WAIT, l.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &big_channel[..]);
}

#[tokio::test]
async fn connection_limits_per_ip_and_per_listener() {
    let (l, addr) = listener(StreamOptions {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..StreamOptions::default()
    })
    .await;
    let mut a1 = connect_from("127.0.0.1", addr).await;
    let mut a2 = connect_from("127.0.0.1", addr).await;
    // Make sure both are served before the third one arrives.
    for c in [&mut a1, &mut a2] {
        c.write_all(&binding_request()).await.unwrap();
        recv(&l).await;
    }
    let mut a3 = connect_from("127.0.0.1", addr).await;
    assert!(closed_by_server(&mut a3).await, "third from one IP");
    let mut b1 = connect_from("127.0.0.2", addr).await;
    b1.write_all(&binding_request()).await.unwrap();
    assert_eq!(recv(&l).await.1, b1.local_addr().unwrap());
    let mut c1 = connect_from("127.0.0.3", addr).await;
    assert!(closed_by_server(&mut c1).await, "fourth on the listener");
    let stats = l.stats();
    assert_eq!(
        (stats.refused_ip_limit, stats.refused_listener_limit),
        (1, 1)
    );
    assert_eq!(l.connection_count(), 3);

    // A slot frees when a connection closes.
    drop(a1);
    wait_for_stats(&l, |s| s.active == 2).await;
    let mut a4 = connect_from("127.0.0.1", addr).await;
    a4.write_all(&binding_request()).await.unwrap();
    assert_eq!(recv(&l).await.1, a4.local_addr().unwrap());
    let stats = wait_for_stats(&l, |s| s.closed_by_client == 1).await;
    assert_eq!(stats.accepted, 4);
}

#[tokio::test]
async fn silent_and_idle_connections_time_out_active_ones_stay() {
    let (l, addr) = listener(StreamOptions {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..StreamOptions::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = connect(addr).await;
    // Half a message does not count as the first message.
    let mut partial = connect(addr).await;
    partial.write_all(&binding_request()[..10]).await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    assert!(closed_by_server(&mut partial).await);
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut idle = connect(addr).await;
    idle.write_all(&binding_request()).await.unwrap();
    let mut active = connect(addr).await;
    let active_addr = active.local_addr().unwrap();
    let started = tokio::time::Instant::now();
    // `active` sends every 200 ms for 1.5 s: well past both timeouts.
    while started.elapsed() < Duration::from_millis(1500) {
        active.write_all(&binding_request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closed_by_server(&mut idle).await);
    let stats = wait_for_stats(&l, |s| s.closed_timeout == 3).await;
    assert_eq!(stats.active, 1);
    l.send_to(&stun_with_body(0), active_addr).await.unwrap();
    assert_eq!(read_exact_within(&mut active, 20).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_drops_messages_and_a_stalled_reader_is_disconnected() {
    let (l, addr) = listener(StreamOptions {
        max_write_queue_bytes: 16 * 1024,
        write_stall_timeout: Duration::from_millis(500),
        ..StreamOptions::default()
    })
    .await;
    let mut slow = connect(addr).await;
    slow.write_all(&binding_request()).await.unwrap();
    let (_, slow_addr) = recv(&l).await;
    let mut fast = connect(addr).await;
    fast.write_all(&binding_request()).await.unwrap();
    let (_, fast_addr) = recv(&l).await;
    let reader = tokio::spawn(async move {
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        // Until everything sent to it arrived (the slow phase before may
        // take seconds on a busy machine).
        while total < 256 * 1024 {
            let Ok(Ok(n)) = timeout(WAIT * 2, fast.read(&mut buf)).await else {
                break;
            };
            if n == 0 {
                break;
            }
            total += n;
        }
        (total, fast)
    });

    // 1 KiB messages to `slow`, which never reads, a queue-full (16 KiB)
    // at a time: the kernel buffers fill (a few MiB on loopback), then its
    // queue, and later messages are dropped; `send_to` never blocks or
    // fails. Once a write has stalled for 500 ms the connection is closed.
    let message = channel_data(0x4000, &[1u8; 1020]);
    let started = tokio::time::Instant::now();
    while l.stats().closed_slow_reader == 0 {
        assert!(started.elapsed() < WAIT * 4, "{:?}", l.stats());
        for _ in 0..16 {
            assert_eq!(l.send_to(&message, slow_addr).await.unwrap(), 1024);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = l.stats();
    assert!(stats.dropped_queue_full > 0, "{stats:?}");
    assert_eq!(stats.active, 1, "{stats:?}");
    // Meanwhile a client that reads gets everything, paced like a stream.
    for _ in 0..256 {
        l.send_to(&message, fast_addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(closed_by_server(&mut slow).await);
    let dropped_before = l.stats().dropped_no_connection;
    assert_eq!(l.send_to(&message, slow_addr).await.unwrap(), 1024);
    assert_eq!(l.stats().dropped_no_connection, dropped_before + 1);

    let (received, mut fast) = reader.await.unwrap();
    assert_eq!(received, 256 * 1024);
    fast.write_all(&binding_request()).await.unwrap();
    assert_eq!(recv(&l).await.1, fast_addr);
}

#[tokio::test]
async fn shutdown_ends_recv_from_and_every_connection_close_does_not() {
    let (l, addr) = listener(StreamOptions::default()).await;
    let mut client = connect(addr).await;
    client.write_all(&binding_request()).await.unwrap();
    let (_, me) = recv(&l).await;
    // Unknown address: quiet, counted.
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(l.send_to(&stun_with_body(0), nobody).await.unwrap(), 20);
    assert_eq!(l.stats().dropped_no_connection, 1);

    // The `turn` crate calls `close` on the listener conn whenever an
    // allocation closes: it must not stop the listener.
    l.close().await.unwrap();
    client.write_all(&binding_request()).await.unwrap();
    assert_eq!(recv(&l).await.1, me);
    assert!(!l.is_shut_down());

    l.shutdown();
    let mut buf = [0u8; 1500];
    assert!(timeout(WAIT, l.recv_from(&mut buf)).await.unwrap().is_err());
    assert!(closed_by_server(&mut client).await);
    assert_eq!(l.send_to(&stun_with_body(0), me).await.unwrap(), 20);
    // No longer accepting.
    let refused = timeout(WAIT, async {
        match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut s) => closed_by_server(&mut s).await,
        }
    })
    .await
    .unwrap();
    assert!(refused);
}
