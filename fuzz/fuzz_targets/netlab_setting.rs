//! The network lab's settings as operators write them: JSON bodies of the
//! admin API (`PUT /admin/netlab/...`: a profile, an inline link or a
//! scenario) and TOML (one direction, a link with `[up]`/`[down]`, a
//! scenario), then a path run under whatever was accepted.
//!
//! Checks: no panic while parsing, validating or running; every pushed
//! packet is passed or dropped, and once time has run far enough every
//! passed packet and duplicate comes out (the model never loses a packet
//! it accepted).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtcrelay_netlab::{
    Direction, ImpairmentConfig, Lab, LinkConfig, PathImpairment, Profiles, ScenarioConfig, Scope,
    Setting,
};

/// Packets pushed per direction: enough to fill small queues and to cross
/// a few scenario steps.
const PACKETS: u64 = 48;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut settings = Vec::new();
    if let Ok(setting) = serde_json::from_str::<Setting>(text) {
        settings.push(setting);
    }
    if let Ok(config) = ImpairmentConfig::from_toml_str(text) {
        settings.push(Setting {
            link: Some(LinkConfig::symmetric(config)),
            ..Setting::default()
        });
    }
    if let Ok(link) = LinkConfig::from_toml_str(text) {
        settings.push(Setting {
            link: Some(link),
            ..Setting::default()
        });
    }
    if let Ok(scenario) = ScenarioConfig::from_toml_str(text) {
        settings.push(Setting {
            scenario: Some(scenario),
            ..Setting::default()
        });
    }
    for mut setting in settings {
        // A fixed seed when none is given, so a crash reproduces.
        setting.seed.get_or_insert(7);
        run(setting);
    }
});

fn run(setting: Setting) {
    let lab = Lab::new(Profiles::builtin());
    let start = Instant::now();
    if lab.set(Scope::Global, setting, start).is_err() {
        return;
    }
    let resolved = lab
        .resolve(Some("peer"), Some("room"), None)
        .expect("a global setting applies to every path");
    let mut path = PathImpairment::<Vec<u8>>::new(&resolved, 1, start);
    let mut now = start;
    for i in 0..PACKETS {
        // 20 ms apart, with a long gap now and then to cross blackouts and
        // scenario steps.
        now += if i % 16 == 15 {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(20)
        };
        for direction in [Direction::Up, Direction::Down] {
            let _ = path.push(direction, now, vec![i as u8; (i as usize * 37) % 1300]);
            while path.poll(direction, now).is_some() {}
        }
    }
    // Follow the wake-ups for a while (a scenario of nanosecond steps has
    // more than this), then jump past every delay and queue: whatever was
    // accepted has come out by then.
    for _ in 0..(4 * PACKETS) {
        let Some(wake) = path.poll_timeout(now) else {
            break;
        };
        now = now.max(wake);
        for direction in [Direction::Up, Direction::Down] {
            while path.poll(direction, now).is_some() {}
        }
    }
    now += Duration::from_secs(24 * 3600);
    for direction in [Direction::Up, Direction::Down] {
        while path.poll(direction, now).is_some() {}
    }
    for direction in [Direction::Up, Direction::Down] {
        let c = *path.counters(direction);
        assert_eq!(c.pushed, PACKETS, "{direction:?}: {c:?}");
        assert_eq!(c.passed + c.dropped(), c.pushed, "{direction:?}: {c:?}");
        assert_eq!(c.released, c.passed + c.duplicated, "{direction:?}: {c:?}");
    }
    path.report(&lab);
}
