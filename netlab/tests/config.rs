//! Configuration: TOML and JSON shapes, validation errors that name the
//! field, presets.

use std::time::Duration;

use rtcrelay_netlab::{
    ConfigError, Distribution, GilbertElliott, Impairment, ImpairmentConfig, LinkConfig,
    LossConfig, PacketLen, Preset, Profiles, RandomLoss,
};

fn field_of(toml: &str) -> (String, String) {
    match ImpairmentConfig::from_toml_str(toml) {
        Err(ConfigError::Invalid { field, reason }) => (field, reason),
        other => panic!("expected a validation error for {toml:?}, got {other:?}"),
    }
}

#[test]
fn a_full_config_parses_from_toml() {
    let config = ImpairmentConfig::from_toml_str(
        r#"
        duplicate = 0.001
        corrupt = 0.0001
        loss = { model = "gilbert-elliott", mean_loss = 0.02, mean_burst = 3 }
        delay = { latency = "40ms", jitter = "10ms", distribution = "paretonormal", correlation = 0.25 }
        reorder = { p = 0.01, gap = 2 }
        rate = { kbit_per_s = 2000, overhead_bytes = 28, queue_limit_bytes = 64000 }
        blackouts = [{ start = "10s", duration = "2s" }]
        "#,
    )
    .unwrap();
    assert_eq!(
        config.loss,
        LossConfig::GilbertElliott(GilbertElliott::bursts(0.02, 3.0))
    );
    assert_eq!(config.delay.latency, Duration::from_millis(40));
    assert_eq!(config.delay.distribution, Distribution::ParetoNormal);
    assert!(config.delay.preserve_order);
    let rate = config.rate.unwrap();
    assert_eq!(
        (
            rate.kbit_per_s,
            rate.overhead_bytes,
            rate.queue_limit_packets,
            rate.queue_limit_bytes
        ),
        (2000, 28, 1000, Some(64_000))
    );
    assert_eq!(config.blackouts[0].start, Duration::from_secs(10));

    // netem's names for the Gilbert-Elliott state losses are accepted too.
    let netem = ImpairmentConfig::from_toml_str(
        r#"loss = { model = "gilbert-elliott", p = 0.01, r = 0.3, 1-h = 0.9, 1-k = 0.001 }"#,
    )
    .unwrap();
    assert_eq!(
        netem.loss,
        LossConfig::GilbertElliott(GilbertElliott::transitions(0.01, 0.3, 0.9, 0.001))
    );

    assert!(ImpairmentConfig::from_toml_str("")
        .unwrap()
        .is_passthrough());
}

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        (
            r#"loss = { model = "random", p = 1.5 }"#,
            "loss.p",
            "must be within 0..=1",
        ),
        (
            r#"loss = { model = "random", p = nan }"#,
            "loss.p",
            "must be within 0..=1",
        ),
        (
            r#"loss = { model = "random", p = 0.1, correlation = -0.1 }"#,
            "loss.correlation",
            "must be within 0..=1",
        ),
        (
            r#"loss = { model = "gilbert-elliott", r = 0.5 }"#,
            "loss.p",
            "is required",
        ),
        (
            r#"loss = { model = "gilbert-elliott", p = 0.1, mean_loss = 0.1, r = 0.5 }"#,
            "loss.mean_loss",
            "cannot be set together with p",
        ),
        (
            r#"loss = { model = "gilbert-elliott", p = 0.1, mean_burst = 0.5 }"#,
            "loss.mean_burst",
            "must be a number of packets >= 1",
        ),
        (
            r#"loss = { model = "gilbert-elliott", mean_loss = 0.9, mean_burst = 1 }"#,
            "loss.mean_loss",
            "is not reachable",
        ),
        (
            r#"loss = { model = "gilbert-elliott", p = 0.1, r = 0 }"#,
            "loss.r",
            "must be within (0, 1]",
        ),
        (
            r#"delay = { latency = "2m" }"#,
            "delay.latency",
            "must be at most 1m",
        ),
        (
            r#"delay = { jitter = "61s" }"#,
            "delay.jitter",
            "must be at most 1m",
        ),
        (
            r#"delay = { correlation = 2 }"#,
            "delay.correlation",
            "must be within 0..=1",
        ),
        (
            r#"delay = { latency = "5ms" }
            reorder = { p = 0.1, gap = 0 }"#,
            "reorder.gap",
            "must be at least 1",
        ),
        (r#"reorder = { p = 0.1 }"#, "reorder.p", "needs a delay"),
        ("duplicate = 1.01", "duplicate", "must be within 0..=1"),
        ("corrupt = -1", "corrupt", "must be within 0..=1"),
        (
            "rate = { kbit_per_s = 0 }",
            "rate.kbit_per_s",
            "must be within 1..=",
        ),
        (
            "rate = { kbit_per_s = 10, queue_limit_packets = 0 }",
            "rate.queue_limit_packets",
            "must be within 1..=",
        ),
        (
            "rate = { kbit_per_s = 10, queue_limit_bytes = 0 }",
            "rate.queue_limit_bytes",
            "must be at least 1",
        ),
        (
            "rate = { kbit_per_s = 10, overhead_bytes = 70000 }",
            "rate.overhead_bytes",
            "must be at most 65535",
        ),
        (
            r#"blackouts = [{ start = "1s", duration = "1s" }, { start = "1000d", duration = "1s" }]"#,
            "blackouts[1].start",
            "must be at most",
        ),
        (
            "max_held_packets = 0",
            "max_held_packets",
            "must be within 1..=",
        ),
    ];
    for (toml, field, reason) in cases {
        let (got_field, got_reason) = field_of(toml);
        assert_eq!(got_field, field, "{toml}");
        assert!(got_reason.starts_with(reason), "{toml}: {got_reason}");
    }
    // The message reads as one sentence.
    let error =
        ImpairmentConfig::from_toml_str(r#"loss = { model = "random", p = 1.5 }"#).unwrap_err();
    assert_eq!(error.to_string(), "loss.p must be within 0..=1 (got 1.5)");
    assert_eq!(error.field(), Some("loss.p"));
}

#[test]
fn parse_errors_name_the_key() {
    for (toml, needle) in [
        ("dupliate = 0.1", "dupliate"),
        (r#"loss = { model = "random", q = 0.1 }"#, "q"),
        (r#"loss = { model = "bursty" }"#, "bursty"),
        (
            r#"delay = { latency = "fast" }"#,
            "invalid duration \"fast\"",
        ),
        (r#"delay = { distribution = "gamma" }"#, "gamma"),
        ("rate = { overhead_bytes = 28 }", "kbit_per_s"),
    ] {
        match ImpairmentConfig::from_toml_str(toml) {
            Err(ConfigError::Parse(message)) => {
                assert!(message.contains(needle), "{toml}: {message}")
            }
            other => panic!("{toml}: {other:?}"),
        }
    }
}

#[test]
fn constructors_refuse_invalid_configs_instead_of_panicking() {
    let start = std::time::Instant::now();
    let bad = ImpairmentConfig {
        loss: LossConfig::Random(RandomLoss {
            p: f64::INFINITY,
            correlation: 0.0,
        }),
        ..ImpairmentConfig::default()
    };
    let error = Impairment::<PacketLen>::new(bad.clone(), 1, start).unwrap_err();
    assert_eq!(error.field(), Some("loss.p"));

    let link = LinkConfig {
        up: ImpairmentConfig::default(),
        down: bad,
    };
    assert_eq!(link.validate().unwrap_err().field(), Some("down.loss.p"));
    assert!(rtcrelay_netlab::Link::<PacketLen>::new(&link, 1, start).is_err());
}

#[test]
fn link_config_parses_both_directions() {
    let link = LinkConfig::from_toml_str(
        r#"
        [up]
        loss = { model = "random", p = 0.05 }
        [down]
        delay = { latency = "30ms" }
        "#,
    )
    .unwrap();
    assert!(matches!(link.up.loss, LossConfig::Random(RandomLoss { p, .. }) if p == 0.05));
    assert_eq!(link.down.delay.latency, Duration::from_millis(30));
    let error = LinkConfig::from_toml_str("[up]\nduplicate = 3").unwrap_err();
    assert_eq!(error.field(), Some("up.duplicate"));
}

#[test]
fn presets_are_valid_named_and_round_trip() {
    let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "good",
            "wifi",
            "wifi-lossy",
            "4g",
            "3g",
            "satellite",
            "congested"
        ]
    );
    for preset in Preset::ALL {
        let link = preset.link_config();
        link.validate().unwrap_or_else(|e| panic!("{preset}: {e}"));
        assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
        assert_eq!(Profiles::builtin().get(preset.name()), Some(link.clone()));

        // JSON (the admin API) and TOML (config files) both round-trip.
        let json = serde_json::to_string(&link).unwrap();
        let back: LinkConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, link, "{preset} via {json}");
        let text = toml::to_string(&link).unwrap();
        assert_eq!(
            LinkConfig::from_toml_str(&text).unwrap(),
            link,
            "{preset} via {text}"
        );
    }
    let error = "5g".parse::<Preset>().unwrap_err();
    assert!(error.to_string().contains("known: good, wifi"), "{error}");
}

#[test]
fn custom_profiles_are_validated_and_can_shadow_presets() {
    let mut profiles = Profiles::builtin();
    let mine = LinkConfig::symmetric(ImpairmentConfig {
        duplicate: 0.5,
        ..ImpairmentConfig::default()
    });
    profiles.insert("good", mine.clone()).unwrap();
    profiles.insert("lan-party", mine.clone()).unwrap();
    assert_eq!(profiles.get("good"), Some(mine.clone()));
    assert_eq!(profiles.get("lan-party"), Some(mine));
    assert!(profiles.names().contains(&"lan-party".to_string()));

    let bad = LinkConfig::symmetric(ImpairmentConfig {
        corrupt: 7.0,
        ..ImpairmentConfig::default()
    });
    let error = profiles.insert("broken", bad).unwrap_err();
    assert_eq!(error.field(), Some("profiles.broken.up.corrupt"));
    assert_eq!(profiles.get("broken"), None);
}
