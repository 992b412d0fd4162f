//! The relay's public address (1:1 NAT) is advertised next to its local one.

mod common;

use common::{RawWs, TestServer};

/// A minimal browser-like data-channel offer, for tests that only need an
/// answer (no ICE will follow).
const DATA_CHANNEL_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx9q\r\n\
a=ice-pwd:Wm3R1oCq0M2TqfFvH6mA9Xk7\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_address_is_advertised_for_one_to_one_nat() {
    let server = TestServer::start_with(&["--relay-public-addr", "203.0.113.7:3480"]);
    let mut ws = RawWs::connect(&server).await;
    ws.join("nat", None).await;
    let offer = serde_json::json!({ "type": "offer", "sdp": DATA_CHANNEL_OFFER });
    ws.send_text(&offer.to_string()).await;
    let answer = ws.expect("answer").await;
    let sdp = answer["sdp"].as_str().unwrap();
    let mut trickled = Vec::new();
    loop {
        let c = ws.expect("candidate").await;
        let line = c["candidate"].as_str().unwrap().to_owned();
        if line.is_empty() {
            break;
        }
        assert_eq!(c["mid"], "0", "trickled candidates name the answer's mid");
        trickled.push(line);
    }
    let local = format!("{} {} typ host", server.relay.ip(), server.relay.port());
    for wanted in [local.as_str(), "203.0.113.7 3480 typ host"] {
        assert!(sdp.contains(wanted), "answer SDP lacks {wanted:?}:\n{sdp}");
        assert!(
            trickled.iter().any(|c| c.contains(wanted)),
            "trickled candidates lack {wanted:?}: {trickled:?}"
        );
    }
    assert!(sdp.contains("a=ice-lite"), "the server peer is ICE-lite");
}
