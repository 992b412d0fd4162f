//! Exact behaviour of the model: corruption, reproducibility, ordering,
//! blackouts, queues, counters, robustness of the clock.

mod support;

use std::time::Duration;

use bytes::Bytes;
use rtcrelay_netlab::{
    BlackoutWindow, Decision, DelayConfig, Direction, Distribution, DropCause, GilbertElliott,
    Impairment, ImpairmentConfig, Link, LinkConfig, LossConfig, PacketLen, RandomLoss, RateConfig,
    ReorderConfig,
};
use support::{origin, run};

fn delay(latency_ms: u64, jitter_ms: u64) -> DelayConfig {
    DelayConfig {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        ..DelayConfig::default()
    }
}

/// A config with every knob on, for reproducibility checks.
fn everything() -> ImpairmentConfig {
    ImpairmentConfig {
        loss: LossConfig::GilbertElliott(GilbertElliott::bursts(0.05, 3.0)),
        delay: DelayConfig {
            distribution: Distribution::ParetoNormal,
            correlation: 0.3,
            preserve_order: false,
            ..delay(40, 15)
        },
        reorder: ReorderConfig { p: 0.05, gap: 2 },
        duplicate: 0.05,
        corrupt: 0.05,
        rate: Some(RateConfig {
            overhead_bytes: 28,
            queue_limit_packets: 20,
            ..RateConfig::kbit_per_s(800)
        }),
        ..ImpairmentConfig::default()
    }
}

fn ones(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[test]
fn corruption_flips_exactly_one_bit_and_spares_the_duplicate() {
    let config = ImpairmentConfig {
        corrupt: 1.0,
        duplicate: 1.0,
        ..ImpairmentConfig::default()
    };
    let start = origin();
    let mut model: Impairment<Vec<u8>> = Impairment::new(config, 3, start).unwrap();
    for i in 0..2_000u32 {
        let original: Vec<u8> = (0..(1 + i % 300)).map(|b| (b * 7 + i) as u8).collect();
        let decision = model.push(start, original.clone());
        let Decision::Accepted(accepted) = decision else {
            panic!("{decision:?}")
        };
        assert!(accepted.corrupted);
        let first = model.poll(start).unwrap();
        let second = model.poll(start).unwrap();
        assert!(!first.duplicate && second.duplicate);
        assert_eq!(first.payload.len(), original.len());
        assert_eq!(ones(&first.payload, &original), 1, "packet {i}");
        assert_eq!(second.payload, original);
    }
    assert_eq!(model.counters().corrupted, 2_000);

    // Shared bytes: the sender's copy stays intact.
    let mut shared: Impairment<Bytes> = Impairment::new(
        ImpairmentConfig {
            corrupt: 1.0,
            ..ImpairmentConfig::default()
        },
        4,
        start,
    )
    .unwrap();
    let sent = Bytes::from_static(b"hello, relay");
    shared.push(start, sent.clone());
    let got = shared.poll(start).unwrap().payload;
    assert_eq!(ones(&got, &sent), 1);
    assert_eq!(&sent[..], b"hello, relay");

    // Nothing to flip in an empty packet.
    let mut empty: Impairment<Vec<u8>> = Impairment::new(
        ImpairmentConfig {
            corrupt: 1.0,
            ..ImpairmentConfig::default()
        },
        5,
        start,
    )
    .unwrap();
    assert!(matches!(
        empty.push(start, Vec::new()),
        Decision::Accepted(a) if !a.corrupted
    ));
}

/// Decisions for a fixed, irregular packet sequence, with delays and
/// payloads as offsets so that runs from different origins compare.
fn trace(config: &ImpairmentConfig, seed: u64) -> Vec<String> {
    let start = origin();
    let mut model: Impairment<Vec<u8>> = Impairment::new(config.clone(), seed, start).unwrap();
    let mut out = Vec::new();
    for i in 0..3_000u32 {
        let now = start + Duration::from_micros(u64::from(i * 1_700 + (i * i) % 900));
        let payload: Vec<u8> = (0..(40 + i % 200)).map(|b| b as u8).collect();
        let decision = model.push(now, payload);
        out.push(match decision {
            Decision::Dropped(cause) => format!("{i} drop {cause:?}"),
            Decision::Accepted(a) => format!(
                "{i} at {:?} r{} c{} dup {:?}",
                a.original.release_at - start,
                a.original.reordered,
                a.corrupted,
                a.duplicate.map(|d| (d.release_at - start, d.reordered))
            ),
        });
        while let Some(r) = model.poll(now) {
            out.push(format!("out {:?} {:?}", r.release_at - start, r.payload));
        }
    }
    out
}

#[test]
fn same_seed_same_decisions_different_seed_different() {
    let config = everything();
    let a = trace(&config, 42);
    let b = trace(&config, 42);
    assert_eq!(a, b);
    let c = trace(&config, 43);
    assert_ne!(a, c);
    // Not just different somewhere: they diverge early.
    let first_difference = a.iter().zip(&c).position(|(x, y)| x != y).unwrap();
    assert!(first_difference < 50, "{first_difference}");
}

#[test]
fn link_directions_are_independent_streams_of_one_seed() {
    let start = origin();
    let config = LinkConfig::symmetric(ImpairmentConfig {
        loss: LossConfig::Random(RandomLoss {
            p: 0.5,
            correlation: 0.0,
        }),
        ..ImpairmentConfig::default()
    });
    let outcomes = |seed| {
        let mut link: Link<PacketLen> = Link::new(&config, seed, start).unwrap();
        let up: Vec<bool> = (0..200)
            .map(|_| link.push(Direction::Up, start, PacketLen(10)).is_accepted())
            .collect();
        let down: Vec<bool> = (0..200)
            .map(|_| {
                link.push(Direction::Down, start, PacketLen(10))
                    .is_accepted()
            })
            .collect();
        (up, down)
    };
    let (up, down) = outcomes(9);
    assert_ne!(up, down);
    assert_eq!(outcomes(9), (up, down));
}

#[test]
fn order_is_preserved_unless_disabled() {
    let preserving = ImpairmentConfig {
        delay: DelayConfig {
            distribution: Distribution::Uniform,
            ..delay(50, 40)
        },
        ..ImpairmentConfig::default()
    };
    let ordered = run(preserving.clone(), 1, 20_000, 100, Duration::from_millis(1));
    let indices: Vec<usize> = ordered.released.iter().map(|(i, _)| *i).collect();
    assert!(indices.windows(2).all(|w| w[0] < w[1]));

    let mut free = preserving;
    free.delay.preserve_order = false;
    let unordered = run(free, 1, 20_000, 100, Duration::from_millis(1));
    let inversions = unordered
        .released
        .windows(2)
        .filter(|w| w[0].0 > w[1].0)
        .count();
    assert!(inversions > 1_000, "{inversions}");
}

#[test]
fn jitter_is_never_negative_delay() {
    // jitter far above latency: the delay clamps at zero.
    let config = ImpairmentConfig {
        delay: DelayConfig {
            distribution: Distribution::Normal,
            preserve_order: false,
            ..delay(1, 50)
        },
        ..ImpairmentConfig::default()
    };
    let run = run(config, 2, 5_000, 100, Duration::from_millis(1));
    assert!(run
        .released
        .iter()
        .all(|(_, r)| r.release_at >= r.pushed_at));
    assert!(run
        .released
        .iter()
        .any(|(_, r)| r.release_at == r.pushed_at));
}

#[test]
fn blackout_windows_and_toggle_drop_everything_pushed_inside() {
    let config = ImpairmentConfig {
        blackouts: vec![BlackoutWindow {
            start: Duration::from_secs(1),
            duration: Duration::from_millis(500),
        }],
        ..ImpairmentConfig::default()
    };
    let start = origin();
    let mut model: Impairment<PacketLen> = Impairment::new(config, 1, start).unwrap();
    let at = |ms| start + Duration::from_millis(ms);
    assert!(model.push(at(999), PacketLen(1)).is_accepted());
    assert_eq!(
        model.push(at(1000), PacketLen(1)),
        Decision::Dropped(DropCause::Blackout)
    );
    assert_eq!(
        model.push(at(1499), PacketLen(1)),
        Decision::Dropped(DropCause::Blackout)
    );
    assert!(model.push(at(1500), PacketLen(1)).is_accepted());

    model.set_blackout(true);
    assert_eq!(
        model.push(at(2000), PacketLen(1)),
        Decision::Dropped(DropCause::Blackout)
    );
    model.set_blackout(false);
    assert!(model.push(at(2001), PacketLen(1)).is_accepted());
    let c = model.counters();
    assert_eq!((c.pushed, c.passed, c.dropped_blackout), (6, 3, 3));
}

#[test]
fn a_full_queue_tail_drops() {
    // 10 000-byte queue, 1000 + 28 bytes per packet: 9 fit.
    let config = ImpairmentConfig {
        rate: Some(RateConfig {
            overhead_bytes: 28,
            queue_limit_bytes: Some(10_000),
            ..RateConfig::kbit_per_s(1_000)
        }),
        ..ImpairmentConfig::default()
    };
    let start = origin();
    let mut model: Impairment<PacketLen> = Impairment::new(config, 1, start).unwrap();
    let decisions: Vec<Decision> = (0..20)
        .map(|_| model.push(start, PacketLen(1000)))
        .collect();
    assert!(decisions[..9].iter().all(Decision::is_accepted));
    assert!(decisions[9..]
        .iter()
        .all(|d| *d == Decision::Dropped(DropCause::Queue)));
    // Back to back at 1 Mbit/s: 1028 * 8 bits = 8.224 ms each.
    let Decision::Accepted(last) = decisions[8] else {
        unreachable!()
    };
    assert_eq!(
        last.original.release_at - start,
        Duration::from_micros(8_224) * 9
    );
    // Once the first has left, one more fits.
    let later = start + Duration::from_micros(8_224);
    assert!(model.push(later, PacketLen(1000)).is_accepted());
    assert!(!model.push(later, PacketLen(1000)).is_accepted());

    // The packet limit works alike, and max_held_packets bounds the rest.
    let config = ImpairmentConfig {
        delay: delay(1000, 0),
        max_held_packets: 10,
        ..ImpairmentConfig::default()
    };
    let mut model: Impairment<PacketLen> = Impairment::new(config, 1, start).unwrap();
    let accepted = (0..20)
        .filter(|_| model.push(start, PacketLen(10)).is_accepted())
        .count();
    assert_eq!(accepted, 10);
    assert_eq!(model.counters().dropped_queue, 10);
}

#[test]
fn counters_add_up() {
    let run = run(everything(), 77, 20_000, 120, Duration::from_millis(1));
    let c = run.model.counters();
    assert_eq!(c.pushed, 20_000);
    assert_eq!(c.passed + c.dropped(), c.pushed);
    assert!(c.dropped_loss > 0 && c.dropped_queue > 0);
    assert!(c.duplicated > 0 && c.reordered > 0 && c.corrupted > 0);
    assert_eq!(c.released, c.passed + c.duplicated);
    assert_eq!(run.released.len() as u64, c.released);
    let total: Duration = run
        .released
        .iter()
        .map(|(_, r)| r.release_at - r.pushed_at)
        .sum();
    assert_eq!(total, c.added_delay);
    assert_eq!(run.model.held_len(), 0);
    assert_eq!(run.model.poll_timeout(), None);
}

#[test]
fn time_never_goes_backwards() {
    let start = origin() + Duration::from_secs(10);
    let mut model: Impairment<PacketLen> = Impairment::new(
        ImpairmentConfig {
            delay: delay(100, 0),
            ..ImpairmentConfig::default()
        },
        1,
        start,
    )
    .unwrap();
    model.push(start + Duration::from_secs(1), PacketLen(1));
    // An earlier `now` counts as the latest one seen.
    let Decision::Accepted(a) = model.push(start, PacketLen(1)) else {
        unreachable!()
    };
    assert_eq!(
        a.original.release_at,
        start + Duration::from_secs(1) + Duration::from_millis(100)
    );
    assert!(model.poll(start).is_none());
    assert_eq!(
        model.poll_timeout(),
        Some(start + Duration::from_millis(1100))
    );
}

#[test]
fn set_config_keeps_held_packets() {
    let start = origin();
    let mut model: Impairment<PacketLen> = Impairment::new(
        ImpairmentConfig {
            delay: delay(500, 0),
            ..ImpairmentConfig::default()
        },
        1,
        start,
    )
    .unwrap();
    model.push(start, PacketLen(1));
    model.set_config(ImpairmentConfig::default()).unwrap();
    // Order is still preserved against the held packet.
    let Decision::Accepted(a) = model.push(start, PacketLen(2)) else {
        unreachable!()
    };
    assert_eq!(a.original.release_at, start + Duration::from_millis(500));
    assert_eq!(
        model
            .poll(start + Duration::from_millis(500))
            .unwrap()
            .payload,
        PacketLen(1)
    );
    assert_eq!(
        model
            .poll(start + Duration::from_millis(500))
            .unwrap()
            .payload,
        PacketLen(2)
    );

    // An invalid config is refused and changes nothing.
    let bad = ImpairmentConfig {
        duplicate: 2.0,
        ..ImpairmentConfig::default()
    };
    assert!(model.set_config(bad).is_err());
    assert_eq!(model.config(), &ImpairmentConfig::default());
}

#[test]
fn extreme_valid_configs_do_not_panic() {
    let start = origin();
    let config = ImpairmentConfig {
        loss: LossConfig::GilbertElliott(GilbertElliott::transitions(1.0, 1.0, 1.0, 1.0)),
        delay: DelayConfig {
            latency: Duration::from_secs(60),
            jitter: Duration::from_secs(60),
            distribution: Distribution::Pareto,
            correlation: 1.0,
            preserve_order: true,
        },
        reorder: ReorderConfig {
            p: 1.0,
            gap: u32::MAX,
        },
        duplicate: 1.0,
        corrupt: 1.0,
        rate: Some(RateConfig {
            kbit_per_s: 1,
            overhead_bytes: 65_535,
            queue_limit_packets: 1_000_000,
            queue_limit_bytes: Some(u64::MAX),
        }),
        ..ImpairmentConfig::default()
    };
    for loss in [
        config.loss,
        LossConfig::Random(RandomLoss {
            p: 0.0,
            correlation: 1.0,
        }),
    ] {
        let mut model: Impairment<Vec<u8>> = Impairment::new(
            ImpairmentConfig {
                loss,
                ..config.clone()
            },
            u64::MAX,
            start,
        )
        .unwrap();
        for i in 0..200u64 {
            model.push(start + Duration::from_secs(i), vec![0xff; 65_535]);
            model.poll(start + Duration::from_secs(i));
        }
        let far = start + Duration::from_secs(3600 * 24 * 365 * 20);
        while model.poll(far).is_some() {}
    }
}
