//! The network lab's admin API (`/admin/netlab/...`) on the real binary:
//! access rules (no token on loopback, a token, a public listener), errors
//! that name the field, nothing changed by a refused request, set/clear
//! round trips, and the startup setting from flags and the config file.

mod common;

use std::process::Command;

use common::{TestServer, SERVE_ON_FREE_PORTS};
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";

/// What is in force, as `GET /admin/netlab` says (settings only).
fn settings(server: &TestServer, token: Option<&str>) -> Value {
    let (status, body) = server.call_json("GET", "/admin/netlab", token);
    assert_eq!(status, 200, "GET /admin/netlab: {body}");
    body["settings"].clone()
}

/// Asserts a 400 naming `field`, and that nothing changed.
fn assert_refused(
    server: &TestServer,
    path: &str,
    body: &str,
    field: Option<&str>,
    before: &Value,
) -> Value {
    let (status, error) = server.put_json(path, body, None);
    assert_eq!(status, 400, "PUT {path} {body}: {error}");
    assert_eq!(error["field"].as_str(), field, "PUT {path} {body}: {error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        &settings(server, None),
        before,
        "PUT {path} {body} changed the lab"
    );
    error
}

#[test]
fn loopback_without_a_token_sets_clears_and_names_bad_fields() {
    let server = TestServer::start_with(&["--no-turn"]);

    let (status, overview) = server.call_json("GET", "/admin/netlab", None);
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["settings"], json!([]));
    let names: Vec<&str> = overview["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for preset in [
        "good",
        "wifi",
        "wifi-lossy",
        "4g",
        "3g",
        "satellite",
        "congested",
    ] {
        assert!(names.contains(&preset), "{preset} missing from {names:?}");
    }

    // Set: the answer is what is now in force.
    let (status, body) = server.put_json(
        "/admin/netlab/peer/7",
        r#"{"profile": "3g", "seed": 42}"#,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "peer:7");
    assert_eq!(body["kind"], "peer");
    assert_eq!(body["id"], "7");
    assert_eq!(body["setting"]["profile"], "3g");
    assert_eq!(body["seed"], 42);
    assert_eq!(body["totals"]["up"]["dropped"], 0);
    let (status, body) = server.put_json(
        "/admin/netlab/global",
        r#"{"link": {"up": {"loss": {"model": "random", "p": 0.1}},
                     "down": {"delay": {"latency": "40ms", "jitter": "10ms", "distribution": "normal"}}}}"#,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "global");
    assert_eq!(body["setting"]["link"]["up"]["loss"]["p"], 0.1);
    let (status, one) = server.call_json("GET", "/admin/netlab/peer/7", None);
    assert_eq!((status, &one["setting"]["profile"]), (200, &json!("3g")));
    let before = settings(&server, None);
    assert_eq!(before.as_array().unwrap().len(), 2, "{before}");

    // Refused requests name the field and change nothing.
    let room = "/admin/netlab/room/arena";
    let error = assert_refused(
        &server,
        room,
        r#"{"link": {"up": {"loss": {"model": "random", "p": 1.5}}}}"#,
        Some("link.up.loss.p"),
        &before,
    );
    assert_eq!(error["error"], "invalid");
    let error = assert_refused(
        &server,
        room,
        r#"{"link": {"down": {"delay": {"latency": 40}}}}"#,
        Some("link.down.delay.latency"),
        &before,
    );
    assert_eq!(error["error"], "invalid_json");
    assert_refused(
        &server,
        room,
        r#"{"link": {"down": {"delay": {"latency": "2h"}}}}"#,
        Some("link.down.delay.latency"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"profile": "3g", "seed": "abc"}"#,
        Some("seed"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"profile": "3g", "sed": 1}"#,
        Some("sed"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"profile": "5g"}"#,
        Some("profile"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"profile": "3g", "link": {}}"#,
        Some("setting"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"scenario": {"steps": [{"duration": "1s", "profile": "3g"}, {"duration": "1s", "profile": "6g"}]}}"#,
        Some("scenario.steps[1].profile"),
        &before,
    );
    assert_refused(
        &server,
        room,
        r#"{"scenario_name": "nope"}"#,
        Some("scenario_name"),
        &before,
    );
    let error = assert_refused(&server, room, r#"{"profile": "3g""#, None, &before);
    assert_eq!(error["error"], "invalid_json");
    assert_refused(&server, room, "", None, &before);
    // Bad scopes: an unknown kind, ids that are not ids.
    for path in [
        "/admin/netlab/planet/mars",
        "/admin/netlab/peer/abc",
        "/admin/netlab/room/a%20b",
        "/admin/netlab/global/x",
        "/admin/netlab/room",
    ] {
        assert_refused(
            &server,
            path,
            r#"{"profile": "3g"}"#,
            Some("scope"),
            &before,
        );
    }
    // Not JSON, too big: refused too.
    let (status, error) = server.request(
        "PUT",
        room,
        &[("Content-Type", "text/plain")],
        br#"{"profile": "3g"}"#,
    );
    assert_eq!(status, 415, "{error}");
    let big = format!(r#"{{"profile": "3g", "pad": "{}"}}"#, "x".repeat(70_000));
    let (status, error) = server.put_json(room, &big, None);
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"], "payload_too_large");
    // Without a token, only loopback Host names are served (DNS rebinding).
    let (status, error) = server.request(
        "PUT",
        room,
        &[
            ("Content-Type", "application/json"),
            ("Host", "rebound.example:8080"),
        ],
        br#"{"profile": "3g"}"#,
    );
    assert_eq!(status, 403, "{error}");
    assert_eq!(settings(&server, None), before);

    // Clear one, then a second time (nothing set), then all.
    let (status, body) = server.call_json("DELETE", "/admin/netlab/peer/7", None);
    assert_eq!((status, &body["cleared"]), (200, &json!(["peer:7"])));
    let (status, body) = server.call_json("DELETE", "/admin/netlab/peer/7", None);
    assert_eq!((status, &body["error"]), (404, &json!("not_set")), "{body}");
    let (status, body) = server.call_json("GET", "/admin/netlab/peer/7", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.call_json("DELETE", "/admin/netlab", None);
    assert_eq!((status, &body["cleared"]), (200, &json!(["global"])));
    assert_eq!(settings(&server, None), json!([]));
}

#[test]
fn a_configured_token_is_required() {
    for server in [
        TestServer::start_with(&["--no-turn", "--admin-token", TOKEN]),
        TestServer::start_command(
            &[SERVE_ON_FREE_PORTS.as_slice(), &["--no-turn"]].concat(),
            &[("RTCRELAY_ADMIN__TOKEN", TOKEN)],
        ),
    ] {
        let put = r#"{"profile": "wifi"}"#;
        for token in [None, Some("wrong-token-0123456789abc"), Some("")] {
            let (status, body) = server.put_json("/admin/netlab/global", put, token);
            assert_eq!(status, 401, "token {token:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
            let (status, _) = server.call_json("GET", "/admin/netlab", token);
            assert_eq!(status, 401);
            let (status, _) = server.call_json("DELETE", "/admin/netlab", token);
            assert_eq!(status, 401);
        }
        // Unauthenticated bad requests are 401, not 400: nothing is parsed.
        let (status, _) = server.put_json("/admin/netlab/global", "{", None);
        assert_eq!(status, 401);
        assert_eq!(settings(&server, Some(TOKEN)), json!([]));

        let (status, body) = server.put_json("/admin/netlab/global", put, Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["setting"]["profile"], "wifi");
        // With a token the Host name does not matter.
        let (status, body) = server.request(
            "GET",
            "/admin/netlab/global",
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Host", "game.example.org"),
            ],
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let (status, _) = server.call_json("DELETE", "/admin/netlab/global", Some(TOKEN));
        assert_eq!(status, 200);
    }
}

#[test]
fn a_public_listener_needs_a_token() {
    let public = [
        "serve",
        "--http-listen",
        "0.0.0.0:0",
        "--relay-listen",
        "127.0.0.1:0",
        "--no-turn",
    ];
    let server = TestServer::start_command(&public, &[]);
    let (status, body) = server.call_json("GET", "/admin/netlab", None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("admin token"),
        "{body}"
    );
    let (status, _) = server.put_json("/admin/netlab/global", r#"{"profile": "3g"}"#, None);
    assert_eq!(status, 403);
    // The rest of the server works.
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    drop(server);

    let server = TestServer::start_command(&public, &[("RTCRELAY_ADMIN__TOKEN", TOKEN)]);
    let (status, _) = server.call_json("GET", "/admin/netlab", None);
    assert_eq!(status, 401);
    let (status, body) =
        server.put_json("/admin/netlab/global", r#"{"profile": "3g"}"#, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn startup_setting_profiles_and_named_scenarios_from_the_configuration() {
    let dir = std::env::temp_dir().join(format!("rtcrelay-netlab-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("netlab.toml");
    std::fs::write(
        &file,
        r#"
[netlab]
profile = "lossy"
seed = 9

[netlab.profiles.lossy.up]
loss = { model = "random", p = 0.05 }
[netlab.profiles.lossy.down]
delay = { latency = "30ms", jitter = "5ms", distribution = "normal" }

[netlab.scenarios.flap]
repeat = true
steps = [{ duration = "5s", profile = "lossy" }, { duration = "1s", blackout = true }]
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let server = TestServer::start_with(&["--no-turn", "--config", path]);
    let (status, overview) = server.call_json("GET", "/admin/netlab", None);
    assert_eq!(status, 200);
    let global = &overview["settings"][0];
    assert_eq!(global["scope"], "global", "{overview}");
    assert_eq!(global["setting"]["profile"], "lossy");
    assert_eq!(global["seed"], 9);
    let lossy = overview["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lossy")
        .expect("the configured profile is listed");
    assert_eq!(lossy["preset"], false);
    assert_eq!(lossy["link"]["up"]["loss"]["p"], 0.05);
    assert_eq!(overview["scenarios"][0]["name"], "flap");

    let (status, body) = server.put_json(
        "/admin/netlab/room/arena",
        r#"{"scenario_name": "flap", "seed": 3}"#,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scenario_name"], "flap");
    assert_eq!(body["setting"]["scenario"]["repeat"], true);
    let (status, body) = server.put_json(
        "/admin/netlab/room/arena",
        r#"{"scenario_name": "flap", "profile": "3g"}"#,
        None,
    );
    assert_eq!((status, &body["field"]), (400, &json!("scenario_name")));
    drop(server);

    // Flags win over the file.
    let server = TestServer::start_with(&[
        "--no-turn",
        "--config",
        path,
        "--netlab-profile",
        "satellite",
        "--netlab-seed",
        "77",
    ]);
    let global = &settings(&server, None)[0];
    assert_eq!(global["setting"]["profile"], "satellite");
    assert_eq!(global["seed"], 77);
    drop(server);

    // A bad startup setting stops the server, naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_rtcrelay"))
        .args(SERVE_ON_FREE_PORTS)
        .args(["--no-turn", "--netlab-profile", "5g"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config error: key `netlab.profile`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
