//! The lab: scopes, precedence, validation, scenarios on a path, totals.

use std::time::{Duration, Instant};

use rtcrelay_netlab::{
    ConfigError, Decision, Direction, Lab, PacketLen, PathImpairment, Scope, Setting,
};

fn setting(json: &str) -> Setting {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_most_specific_scope_wins_and_changes_bump_the_version() {
    let lab = Lab::default();
    let now = Instant::now();
    assert!(lab.resolve(Some("p1"), Some("r1"), None).is_none());
    let v0 = lab.version();
    lab.set(Scope::Global, Setting::profile("good"), now)
        .unwrap();
    lab.set(Scope::Room("r1".into()), Setting::profile("3g"), now)
        .unwrap();
    lab.set(Scope::Peer("p1".into()), Setting::profile("satellite"), now)
        .unwrap();
    lab.set(Scope::TurnUser("u".into()), Setting::profile("wifi"), now)
        .unwrap();
    assert_eq!(lab.version(), v0 + 4);
    let scope = |peer, room, user| lab.resolve(peer, room, user).map(|r| r.scope);
    assert_eq!(
        scope(Some("p1"), Some("r1"), Some("u")),
        Some(Scope::Peer("p1".into()))
    );
    assert_eq!(
        scope(Some("p2"), Some("r1"), Some("u")),
        Some(Scope::TurnUser("u".into()))
    );
    assert_eq!(
        scope(Some("p2"), Some("r1"), None),
        Some(Scope::Room("r1".into()))
    );
    assert_eq!(scope(Some("p2"), Some("r2"), None), Some(Scope::Global));
    assert!(lab.clear(&Scope::Global));
    assert!(!lab.clear(&Scope::Global));
    assert_eq!(scope(Some("p2"), Some("r2"), None), None);
    assert_eq!(lab.version(), v0 + 5);
    assert_eq!(lab.settings().len(), 3);
}

#[test]
fn bad_settings_are_refused_naming_the_field_and_change_nothing() {
    let lab = Lab::default();
    let now = Instant::now();
    let v0 = lab.version();
    let cases = [
        (r#"{"profile":"5g"}"#, "profile"),
        (
            r#"{"link":{"up":{"loss":{"model":"random","p":1.5}}}}"#,
            "link.up.loss.p",
        ),
        (r#"{"profile":"3g","link":{}}"#, "setting"),
        (r#"{}"#, "setting"),
        (
            r#"{"scenario":{"steps":[{"duration":"1s","profile":"nope"}]}}"#,
            "scenario.steps[0].profile",
        ),
    ];
    for (json, field) in cases {
        let err = lab.set(Scope::Global, setting(json), now).unwrap_err();
        assert_eq!(err.field(), Some(field), "{json}: {err}");
    }
    let err = Scope::parse("planet", "x").unwrap_err();
    assert_eq!(err.field(), Some("scope"));
    assert!(matches!(
        Scope::parse("room", ""),
        Err(ConfigError::Invalid { .. })
    ));
    assert_eq!(Scope::parse("global", "").unwrap(), Scope::Global);
    assert_eq!(Scope::parse("peer", "abc").unwrap().to_string(), "peer:abc");
    assert_eq!(lab.version(), v0);
    assert!(lab.settings().is_empty());
}

#[test]
fn a_scenario_drives_every_path_through_its_stages_then_lets_packets_pass() {
    let lab = Lab::default();
    let t0 = Instant::now();
    let s = setting(
        r#"{"seed":1,"scenario":{"steps":[
            {"duration":"1s","link":{}},
            {"duration":"1s","blackout":true},
            {"duration":"1s","link":{"up":{"loss":{"model":"random","p":1.0}}}}
        ]}}"#,
    );
    lab.set(Scope::Room("r".into()), s, t0).unwrap();
    let resolved = lab.resolve(Some("p"), Some("r"), None).unwrap();
    let mut path = PathImpairment::<PacketLen>::new(&resolved, 7, t0);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let push = |path: &mut PathImpairment<PacketLen>, ms| {
        path.push(Direction::Up, at(ms), PacketLen(100))
            .is_accepted()
    };
    assert!(push(&mut path, 500), "first second: clean");
    while path.poll(Direction::Up, at(500)).is_some() {}
    assert_eq!(
        path.poll_timeout(at(500)),
        Some(at(1000)),
        "wakes for the next stage"
    );
    assert!(!push(&mut path, 1500), "second second: blackout");
    assert!(!push(&mut path, 2500), "third second: all lost");
    assert!(push(&mut path, 3500), "ran out: untouched");
    let up = path.counters(Direction::Up);
    assert_eq!((up.dropped_blackout, up.dropped_loss, up.passed), (1, 1, 2));

    path.report(&lab);
    path.report(&lab); // nothing new: no double counting
    let totals = lab.totals();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].0, Scope::Room("r".into()));
    assert_eq!(totals[0].1.up.dropped(), 2);
    assert_eq!(totals[0].1.down.pushed, 0);
    lab.clear(&Scope::Room("r".into()));
    assert!(lab.totals().is_empty());
}

#[test]
fn paths_are_reproducible_per_seed_and_salt() {
    let lab = Lab::default();
    let t0 = Instant::now();
    let lossy = r#"{"seed":42,"link":{"up":{"loss":{"model":"random","p":0.5}}}}"#;
    lab.set(Scope::Global, setting(lossy), t0).unwrap();
    let resolved = lab.resolve(None, None, None).unwrap();
    let trace = |salt| {
        let mut path = PathImpairment::<PacketLen>::new(&resolved, salt, t0);
        (0..200)
            .map(|i| {
                let now = t0 + Duration::from_millis(i);
                matches!(
                    path.push(Direction::Up, now, PacketLen(50)),
                    Decision::Dropped { .. }
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(trace(1), trace(1));
    assert_ne!(
        trace(1),
        trace(2),
        "two peers of one scope lose different packets"
    );
    // A fixed link applies from the start, with no scenario clock.
    let mut path = PathImpairment::<PacketLen>::new(&resolved, 1, t0);
    assert_eq!(path.poll_timeout(t0), None);
    let _ = path.push(Direction::Down, t0, PacketLen(1));
    assert_eq!(path.counters(Direction::Down).passed, 1, "down is clean");
}
