//! Join tokens and allowed origins against the real binary with
//! `auth.mode = "token"`: each refusal has its error code and is counted,
//! the connection stays open for a retry, a good token (in `join.token` or
//! `/ws?token=`, or printed by `rtcrelay token`) joins, and the WebSocket
//! upgrade checks `Origin`.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{RawWs, TestServer};
use rtcrelay_signaling::auth::{mint, JoinClaims};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "e2e-auth-secret-0123456789abcdef-0123456789";
const OLD_SECRET: &str = "e2e-auth-old-secret-0123456789abcdef-01234";
const LISTED_ORIGIN: &str = "https://game.example.com";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, room: &str, player: &str, exp: u64, name: Option<&str>) -> String {
    let claims = JoinClaims {
        room: room.into(),
        sub: player.into(),
        exp,
        name: name.map(str::to_owned),
    };
    mint(secret.as_bytes(), &claims).unwrap()
}

/// A server requiring tokens, verified with either secret (rotation).
fn start() -> TestServer {
    let dir = std::env::temp_dir().join(format!("rtcrelay-e2e-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\nmode = \"token\"\nsecrets = [\"{SECRET}\", \"{OLD_SECRET}\"]\n\
             allowed_origins = [\"{LISTED_ORIGIN}\"]\n"
        ),
    )
    .unwrap();
    TestServer::start_with(&["--no-turn", "--config", path.to_str().unwrap()])
}

fn join(room: &str, token: Option<&str>) -> String {
    let mut msg =
        json!({"type": "join", "version": 1, "room": room, "kind": "relay", "name": "raw"});
    if let Some(t) = token {
        msg["token"] = t.into();
    }
    msg.to_string()
}

fn auth_failures(server: &TestServer, reason: &str) -> f64 {
    server.metric(&format!(
        "rtcrelay_signaling_auth_failures_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_code_and_a_good_one_joins() {
    let server = start();
    let mut ws = RawWs::connect(&server).await;

    let forged = token(
        "forged-secret-0123456789abcdef-0123456789",
        "lobby",
        "p1",
        now() + 600,
        None,
    );
    let expired = token(SECRET, "lobby", "p1", now() - 3600, None);
    let other_room = token(SECRET, "arena", "p1", now() + 600, None);
    for (token, code) in [
        (None, "auth_required"),
        (Some("not-a-jwt"), "token_invalid"),
        (Some(forged.as_str()), "token_invalid"),
        (Some(expired.as_str()), "token_expired"),
        (Some(other_room.as_str()), "token_wrong_room"),
    ] {
        ws.send_text(&join("lobby", token)).await;
        let err = ws.expect_error(code).await;
        assert_eq!(err["fatal"], false, "{err}");
    }
    // The same connection, still open, joins with a good token; the token's
    // name replaces the join's.
    let good = token(SECRET, "lobby", "player-1", now() + 600, Some("Ada"));
    ws.send_text(&join("lobby", Some(&good))).await;
    ws.expect("welcome").await;

    // A token minted with the older secret still verifies.
    let mut bob = RawWs::connect(&server).await;
    let old = token(OLD_SECRET, "lobby", "player-2", now() + 600, None);
    bob.send_text(&join("lobby", Some(&old))).await;
    let welcome = bob.expect("welcome").await;
    assert_eq!(welcome["roster"][0]["name"], "Ada", "{welcome}");
    let joined = ws.expect("peer_joined").await;
    assert_eq!(joined["name"], "raw");

    assert_eq!(auth_failures(&server, "auth_required"), 1.0);
    assert_eq!(auth_failures(&server, "token_invalid"), 2.0);
    assert_eq!(auth_failures(&server, "token_expired"), 1.0);
    assert_eq!(auth_failures(&server, "token_wrong_room"), 1.0);
    assert_eq!(
        server.metric("rtcrelay_signaling_joins_total{kind=\"relay\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_joins() {
    let server = start();
    let good = token(SECRET, "lobby", "player-q", now() + 600, None);
    let mut ws = RawWs::connect_with(format!("{}?token={good}", server.ws_url))
        .await
        .expect("connect");
    ws.send_text(&join("lobby", None)).await;
    ws.expect("welcome").await;
    // A join's own token wins over the query string's.
    let mut other = RawWs::connect_with(format!("{}?token={good}", server.ws_url))
        .await
        .expect("connect");
    other.send_text(&join("lobby", Some("bad"))).await;
    other.expect_error("token_invalid").await;
    // A query-string token for another room does not open this one.
    let mut third = RawWs::connect_with(format!("{}?token={good}", server.ws_url))
        .await
        .expect("connect");
    third.send_text(&join("arena", None)).await;
    third.expect_error("token_wrong_room").await;
}

#[tokio::test]
async fn the_token_command_prints_a_token_the_server_accepts() {
    let server = start();
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args([
            "token",
            "--room",
            "lobby",
            "--player",
            "cli-player",
            "--ttl",
            "10m",
        ])
        .env("RTCRELAY_AUTH_SECRET", SECRET)
        .output()
        .expect("run rtcrelay token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed = printed.trim();
    assert_eq!(printed.split('.').count(), 3, "a JWT: {printed}");
    let mut ws = RawWs::connect(&server).await;
    ws.send_text(&join("lobby", Some(printed))).await;
    ws.expect("welcome").await;

    // Bad arguments are refused before anything is printed.
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args([
            "token", "--secret", "short", "--room", "lobby", "--player", "p",
        ])
        .output()
        .expect("run rtcrelay token");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

/// `Ok(())` when the upgrade succeeded, else the HTTP status and body.
async fn upgrade_with_origin(
    server: &TestServer,
    origin: Option<&str>,
) -> Result<(), (u16, String)> {
    let mut request = server.ws_url.as_str().into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match RawWs::connect_with(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

#[tokio::test]
async fn the_upgrade_checks_the_origin() {
    let server = start();
    let own = format!("http://{}", server.http);
    upgrade_with_origin(&server, None)
        .await
        .expect("no Origin: a non-browser client");
    upgrade_with_origin(&server, Some(&own))
        .await
        .expect("the server's own origin");
    upgrade_with_origin(&server, Some(LISTED_ORIGIN))
        .await
        .expect("a listed origin");
    let (status, body) = upgrade_with_origin(&server, Some("https://evil.example"))
        .await
        .expect_err("an unlisted origin");
    assert_eq!(status, 403);
    assert!(
        body.contains("evil.example") && body.contains("allowed_origins"),
        "{body}"
    );
    assert_eq!(
        server.metric("rtcrelay_signaling_origin_refused_total"),
        1.0
    );
}
