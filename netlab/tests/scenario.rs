//! Time-scripted scenarios: step timing, repetition, validation, and a link
//! driven through a flap.

use std::time::{Duration, Instant};

use rtcrelay_netlab::{
    Condition, ConfigError, Decision, Direction, DropCause, Link, LinkConfig, PacketLen, Preset,
    Profiles, Scenario, ScenarioConfig,
};

const SCRIPT: &str = r#"
steps = [
    { duration = "10s", profile = "good" },
    { duration = "5s", blackout = true },
    { duration = "20s", profile = "3g" },
    { duration = "1s", link = { up = { loss = { model = "random", p = 0.1 } } } },
]
"#;

fn secs(start: Instant, s: f64) -> Instant {
    start + Duration::from_secs_f64(s)
}

fn profile_name(condition: &Condition) -> Option<&str> {
    match condition {
        Condition::Profile { name, .. } => Some(name.as_deref().unwrap_or("inline")),
        Condition::Blackout => None,
    }
}

#[test]
fn steps_follow_each_other_at_their_boundaries() {
    let start = Instant::now();
    let config = ScenarioConfig::from_toml_str(SCRIPT).unwrap();
    let scenario = Scenario::new(&config, &Profiles::builtin(), start).unwrap();
    assert_eq!(scenario.cycle_length(), Duration::from_secs(36));

    let expect = [
        (0.0, 0, Some("good"), 10.0),
        (9.999, 0, Some("good"), 10.0),
        (10.0, 1, None, 15.0),
        (14.999, 1, None, 15.0),
        (15.0, 2, Some("3g"), 35.0),
        (34.5, 2, Some("3g"), 35.0),
        (35.0, 3, Some("inline"), 36.0),
    ];
    for (at, step, name, ends) in expect {
        let stage = scenario.stage(secs(start, at)).unwrap();
        assert_eq!(stage.step, step, "at {at}s");
        assert_eq!(stage.cycle, 0);
        assert_eq!(profile_name(stage.condition), name, "at {at}s");
        assert_eq!(stage.ends_at, secs(start, ends), "at {at}s");
        assert_eq!(
            scenario.poll_timeout(secs(start, at)),
            Some(secs(start, ends))
        );
    }
    if let Condition::Profile { link, .. } = scenario.stage(secs(start, 16.0)).unwrap().condition {
        assert_eq!(**link, Preset::ThreeG.link_config());
    } else {
        panic!("3g expected");
    }
    // Not repeating: it ends, and says so.
    assert!(scenario.stage(secs(start, 36.0)).is_none());
    assert_eq!(scenario.poll_timeout(secs(start, 100.0)), None);
    // Before the start counts as the start.
    assert_eq!(
        scenario.stage(start - Duration::from_secs(1)).unwrap().step,
        0
    );
}

#[test]
fn a_repeating_scenario_wraps_and_counts_cycles() {
    let start = Instant::now();
    let config =
        ScenarioConfig::link_flap("wifi", Duration::from_secs(2), Duration::from_millis(500));
    let scenario = Scenario::new(&config, &Profiles::builtin(), start).unwrap();
    let at = |s| scenario.stage(secs(start, s)).unwrap();
    assert_eq!((at(0.0).step, at(0.0).cycle), (0, 0));
    assert_eq!((at(2.0).step, at(2.0).cycle), (1, 0));
    assert_eq!((at(2.5).step, at(2.5).cycle), (0, 1));
    assert_eq!(at(2.5).ends_at, secs(start, 4.5));
    let late = at(2.5 * 1000.0 + 2.1);
    assert_eq!((late.step, late.cycle), (1, 1000));
    assert_eq!(*late.condition, Condition::Blackout);
}

#[test]
fn a_link_driven_by_a_flap_drops_only_while_down() {
    let start = Instant::now();
    let config = ScenarioConfig::link_flap("good", Duration::from_secs(2), Duration::from_secs(1));
    let scenario = Scenario::new(&config, &Profiles::builtin(), start).unwrap();
    let mut link: Link<PacketLen> = Link::new(&LinkConfig::default(), 1, start).unwrap();
    let mut applied = None;
    let mut blackout_drops = 0;
    let mut sent_while_down = 0;
    // 9 s at 100 packets per second, applying the stage whenever it changes.
    for i in 0..900u32 {
        let now = start + Duration::from_millis(10) * i;
        let stage = scenario.stage(now).unwrap();
        if applied != Some((stage.cycle, stage.step)) {
            link.apply(stage.condition).unwrap();
            applied = Some((stage.cycle, stage.step));
        }
        if *stage.condition == Condition::Blackout {
            sent_while_down += 1;
        }
        if link.push(Direction::Up, now, PacketLen(50)) == Decision::Dropped(DropCause::Blackout) {
            blackout_drops += 1;
        }
    }
    // 3 cycles of 1 s down.
    assert_eq!(sent_while_down, 300);
    assert_eq!(blackout_drops, 300);
    assert_eq!(
        link.direction(Direction::Up).counters().dropped_blackout,
        300
    );
}

#[test]
fn scenario_errors_name_the_step() {
    let start = Instant::now();
    let profiles = Profiles::builtin();
    let field = |toml: &str| -> String {
        let config = ScenarioConfig::from_toml_str(toml).unwrap();
        let error = Scenario::new(&config, &profiles, start).unwrap_err();
        match error {
            ConfigError::Invalid { field, reason } => format!("{field} {reason}"),
            ConfigError::Parse(message) => panic!("{message}"),
        }
    };
    let message = field(
        r#"steps = [{ duration = "1s", profile = "good" }, { duration = "1s", profile = "5g" }]"#,
    );
    assert!(
        message.starts_with("steps[1].profile \"5g\" is not a known profile (known: good"),
        "{message}"
    );
    assert_eq!(
        field(r#"steps = [{ duration = "0s", profile = "good" }]"#),
        "steps[0].duration must be longer than 0"
    );
    assert!(
        field(r#"steps = [{ duration = "1s", profile = "good", blackout = true }]"#)
            .starts_with("steps[0] needs exactly one of profile, link or blackout")
    );
    assert!(field(r#"steps = [{ duration = "1s" }]"#).starts_with("steps[0] needs exactly one"));
    assert!(field(
        r#"steps = [{ duration = "1s", link = { down = { loss = { model = "random", p = 2 } } } }]"#
    )
    .starts_with("steps[0].link.down.loss.p must be within 0..=1"));
    assert_eq!(field("steps = []"), "steps must hold at least one step");

    // Custom profiles resolve by name.
    let mut mine = Profiles::builtin();
    mine.insert("lan", LinkConfig::default()).unwrap();
    let config =
        ScenarioConfig::from_toml_str(r#"steps = [{ duration = "1s", profile = "lan" }]"#).unwrap();
    assert!(Scenario::new(&config, &mine, start).is_ok());

    // Unknown keys are parse errors.
    assert!(matches!(
        ScenarioConfig::from_toml_str(r#"steps = [{ duration = "1s", profil = "good" }]"#),
        Err(ConfigError::Parse(m)) if m.contains("profil")
    ));
}
