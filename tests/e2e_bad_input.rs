//! Bad input of every kind gets its documented error code or a counted drop,
//! and the server keeps serving the clients that behave, in the same run.

mod common;

use common::{RawWs, TestServer};
use rtcrelay_client::{Channel, Client, ClientConfig, ClientEvent};
use std::time::Duration;

async fn next_message(client: &mut Client) -> (u32, Channel, Vec<u8>) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), client.next_event())
            .await
            .expect("timed out waiting for a message")
            .expect("client closed");
        if let ClientEvent::Message {
            from,
            channel,
            payload,
            ..
        } = event
        {
            return (from.0, channel, payload.to_vec());
        }
    }
}

/// Two well-behaved clients still talk on the reliable channel.
async fn assert_still_served(a: &Client, b: &mut Client, tag: &str) {
    a.send_text(Channel::Control, tag).await.expect("send");
    let (from, channel, payload) = next_message(b).await;
    assert_eq!(from, a.peer_id().0);
    assert_eq!(channel, Channel::Control);
    assert_eq!(payload, tag.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_others_are_unharmed() {
    let server = TestServer::start();
    let mut a = Client::connect(ClientConfig::new(&server.ws_url, "main", "alice"))
        .await
        .expect("alice connects");
    let mut b = Client::connect(ClientConfig::new(&server.ws_url, "main", "bob"))
        .await
        .expect("bob connects");
    assert_still_served(&a, &mut b, "before").await;

    let mut ws = RawWs::connect(&server).await;
    ws.send_text("{nope").await;
    ws.expect_error("bad_json").await;
    ws.send_text(r#"{"type":"dance"}"#).await;
    ws.expect_error("unknown_type").await;
    ws.send_text(r#"{"type":"join","room":"x"}"#).await;
    ws.expect_error("invalid_message").await;
    ws.send_text(r#"{"type":"offer","sdp":"v=0"}"#).await;
    ws.expect_error("not_joined").await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.expect_error("binary_not_supported").await;
    ws.send_text(r#"{"type":"join","version":2,"room":"g","kind":"relay","name":"z"}"#)
        .await;
    ws.expect_error("unsupported_version").await;

    ws.join("garbage", None).await;
    ws.send_text(r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host"}"#)
        .await;
    ws.expect_error("no_session").await;
    ws.send_text(r#"{"type":"offer","sdp":"this is not SDP"}"#)
        .await;
    ws.expect_error("bad_sdp").await;
    ws.send_text(r#"{"type":"join","version":1,"room":"g2","kind":"relay","name":"z"}"#)
        .await;
    ws.expect_error("already_joined").await;
    // Non-fatal errors leave the connection usable.
    ws.send_text(r#"{"type":"ping","id":42}"#).await;
    assert_eq!(ws.expect("pong").await["id"], 42);
    // ... and it ends with a proper closing handshake, not a reset.
    assert_eq!(ws.close_handshake().await, Some(1000));

    // A full room.
    let mut first = RawWs::connect(&server).await;
    assert_eq!(first.join("tiny", Some(1)).await["capacity"], 1);
    let mut second = RawWs::connect(&server).await;
    second
        .send_text(r#"{"type":"join","version":1,"room":"tiny","kind":"relay","name":"late"}"#)
        .await;
    second.expect_error("room_full").await;
    // ... and the main room is not full for anyone: its capacity is 4.
    assert_still_served(&a, &mut b, "after full room").await;

    // An oversized frame is fatal for its sender only.
    let mut big = RawWs::connect(&server).await;
    let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(100 * 1024));
    big.send_text(&huge).await;
    let err = big.expect_error("message_too_large").await;
    assert_eq!(err["fatal"], true);
    assert_eq!(big.next().await.unwrap_err(), Some(1009));

    // Garbage datagrams on the relay's UDP port are dropped and counted.
    let dropped_before = server.metric_sum("rtcrelay_relay_datagrams_dropped_total");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stun_unknown_user = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun_unknown_user.extend_from_slice(&[7; 12]); // transaction id
    stun_unknown_user.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]); // USERNAME, 8 bytes
    stun_unknown_user.extend_from_slice(b"nobody:x");
    stun_unknown_user[3] = 12; // attribute block length
    let mut sent = 0;
    for i in 0..200u32 {
        let garbage: Vec<u8> = (0..(i % 300) + 1)
            .map(|j| (i.wrapping_mul(2654435761).wrapping_add(j * 40503) >> 7) as u8)
            .collect();
        udp.send_to(&garbage, server.relay).await.unwrap();
        sent += 1;
        if i % 20 == 0 {
            udp.send_to(&stun_unknown_user, server.relay).await.unwrap();
            sent += 1;
            // Paced, so that the kernel never drops any for a full socket
            // queue on a slow machine: the count below must be exact.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = server.metric_sum("rtcrelay_relay_datagrams_dropped_total") - dropped_before;
        if dropped >= f64::from(sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dropped,
        f64::from(sent),
        "every garbage datagram is counted as dropped"
    );

    // Every refusal was counted under its code.
    for code in [
        "bad_json",
        "unknown_type",
        "invalid_message",
        "not_joined",
        "binary_not_supported",
        "unsupported_version",
        "no_session",
        "bad_sdp",
        "already_joined",
        "room_full",
        "message_too_large",
    ] {
        let n = server.metric(&format!(
            "rtcrelay_signaling_errors_total{{code=\"{code}\"}}"
        ));
        assert_eq!(n, 1.0, "errors counted for {code}");
    }

    // The good clients never noticed, on either channel.
    assert_still_served(&a, &mut b, "after everything").await;
    // Realtime is unreliable: send a few, paced, and require one through.
    let mut got_realtime = false;
    for _ in 0..10 {
        b.send(Channel::Realtime, b"rt").await.unwrap();
        if let Ok((from, channel, payload)) =
            tokio::time::timeout(Duration::from_millis(500), next_message(&mut a)).await
        {
            assert_eq!(
                (from, channel, payload.as_slice()),
                (b.peer_id().0, Channel::Realtime, &b"rt"[..])
            );
            got_realtime = true;
            break;
        }
    }
    assert!(got_realtime, "realtime still relayed after the bad input");
}
