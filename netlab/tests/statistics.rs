//! Statistical accuracy over 100k+ packets with fixed seeds: each knob does
//! what its setting says, within the tolerances.

mod support;

use std::time::Duration;

use rtcrelay_netlab::{
    Decision, DelayConfig, Distribution, DropCause, GilbertElliott, Impairment, ImpairmentConfig,
    LossConfig, PacketLen, RandomLoss, RateConfig, ReorderConfig,
};
use support::{decisions_only, quantile, run};

fn loss_rate(decisions: &[Decision]) -> f64 {
    let lost = decisions
        .iter()
        .filter(|d| **d == Decision::Dropped(DropCause::Loss))
        .count();
    lost as f64 / decisions.len() as f64
}

/// Lengths of the runs of consecutive losses.
fn loss_bursts(decisions: &[Decision]) -> Vec<usize> {
    let mut bursts = Vec::new();
    let mut current = 0;
    for d in decisions {
        if *d == Decision::Dropped(DropCause::Loss) {
            current += 1;
        } else if current > 0 {
            bursts.push(current);
            current = 0;
        }
    }
    bursts
}

fn random_loss(p: f64, correlation: f64) -> ImpairmentConfig {
    ImpairmentConfig {
        loss: LossConfig::Random(RandomLoss { p, correlation }),
        ..ImpairmentConfig::default()
    }
}

#[test]
fn random_loss_is_within_half_a_point() {
    for (p, seed) in [(0.01, 1), (0.1, 2), (0.3, 3)] {
        let rate = loss_rate(&decisions_only(random_loss(p, 0.0), seed, 120_000));
        assert!((rate - p).abs() < 0.005, "p={p}: measured {rate}");
    }
}

#[test]
fn correlated_random_loss_keeps_its_rate_and_correlates() {
    for (p, rho) in [(0.01, 0.5), (0.1, 0.5)] {
        let decisions = decisions_only(random_loss(p, rho), 11, 150_000);
        let rate = loss_rate(&decisions);
        assert!((rate - p).abs() < 0.005, "p={p} rho={rho}: measured {rate}");

        // P(lost | previous lost) = p + rho (1 - p)
        let lost: Vec<bool> = decisions
            .iter()
            .map(|d| *d == Decision::Dropped(DropCause::Loss))
            .collect();
        let after_loss = lost.windows(2).filter(|w| w[0]).count();
        let loss_after_loss = lost.windows(2).filter(|w| w[0] && w[1]).count();
        let conditional = loss_after_loss as f64 / after_loss as f64;
        let expected = p + rho * (1.0 - p);
        assert!(
            (conditional - expected).abs() < 0.05,
            "p={p} rho={rho}: P(loss|loss) {conditional} vs {expected}"
        );
    }
}

#[test]
fn gilbert_elliott_burst_length_and_rate_match_the_setting() {
    for (mean_loss, mean_burst, seed) in [(0.05, 4.0, 5), (0.1, 8.0, 7)] {
        let config = ImpairmentConfig {
            loss: LossConfig::GilbertElliott(GilbertElliott::bursts(mean_loss, mean_burst)),
            ..ImpairmentConfig::default()
        };
        let decisions = decisions_only(config, seed, 150_000);
        let bursts = loss_bursts(&decisions);
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!(
            (mean - mean_burst).abs() / mean_burst < 0.10,
            "burst {mean_burst}: measured {mean} over {} bursts",
            bursts.len()
        );
        let rate = loss_rate(&decisions);
        assert!(
            (rate - mean_loss).abs() < 0.005 + mean_loss * 0.1,
            "loss {mean_loss}: measured {rate}"
        );
    }
}

#[test]
fn gilbert_elliott_with_netem_parameters_matches_its_stationary_loss() {
    let ge = GilbertElliott::transitions(0.02, 0.25, 0.8, 0.01);
    let expected = ge.resolve().unwrap().mean_loss();
    let config = ImpairmentConfig {
        loss: LossConfig::GilbertElliott(ge),
        ..ImpairmentConfig::default()
    };
    let rate = loss_rate(&decisions_only(config, 9, 150_000));
    assert!((rate - expected).abs() < 0.005, "{rate} vs {expected}");
}

/// Delays of a run with no rate limit and no order preservation: the raw
/// distribution.
fn delays_ms(delay: DelayConfig, seed: u64, count: usize) -> Vec<f64> {
    let config = ImpairmentConfig {
        delay: DelayConfig {
            preserve_order: false,
            ..delay
        },
        ..ImpairmentConfig::default()
    };
    let mut delays = delays_in_push_order(config, seed, count);
    delays.sort_unstable_by(f64::total_cmp);
    delays
}

/// Each packet's delay in ms (from its decision), one packet per 10 ms
/// (few held at once: the debug build's heap stays cheap).
fn delays_in_push_order(config: ImpairmentConfig, seed: u64, count: usize) -> Vec<f64> {
    let start = support::origin();
    let mut model: Impairment<PacketLen> = Impairment::new(config, seed, start).unwrap();
    (0..count)
        .map(|i| {
            let now = start + Duration::from_millis(10) * i as u32;
            let Decision::Accepted(accepted) = model.push(now, PacketLen(100)) else {
                panic!("nothing is dropped here")
            };
            while model.poll(now).is_some() {}
            (accepted.original.release_at - now).as_secs_f64() * 1e3
        })
        .collect()
}

/// netem's Pareto table value, clamped like its `i16` entries (±32767/8192).
fn pareto_t(q: f64) -> f64 {
    (((1.0 - q).powf(-1.0 / 3.0) - 1.5) * 4.0 / 3.0).min(32767.0 / 8192.0)
}

/// Standard normal quantiles at 0.01, 0.1, 0.5, 0.9, 0.99.
const QS: [f64; 5] = [0.01, 0.1, 0.5, 0.9, 0.99];
const Z: [f64; 5] = [-2.326_348, -1.281_552, 0.0, 1.281_552, 2.326_348];

#[test]
fn delay_percentiles_follow_each_distribution() {
    let (latency, jitter) = (100.0, 20.0);
    let expected_t: [(Distribution, [f64; 5]); 4] = [
        (Distribution::Uniform, QS.map(|q| 2.0 * q - 1.0)),
        (Distribution::Normal, Z),
        (Distribution::Pareto, QS.map(pareto_t)),
        (
            Distribution::ParetoNormal,
            [0, 1, 2, 3, 4].map(|i| (Z[i] + 3.0 * pareto_t(QS[i])) / 4.0),
        ),
    ];
    for (distribution, ts) in expected_t {
        let delays = delays_ms(
            DelayConfig {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
                distribution,
                ..DelayConfig::default()
            },
            21,
            100_000,
        );
        for (q, t) in QS.into_iter().zip(ts) {
            let expected = latency + jitter * t;
            let measured = quantile(&delays, q);
            // 5 standard errors of the empirical quantile: sqrt(q(1-q)/n)
            // times the slope of the quantile function there.
            let slope = jitter
                * (quantile_t(distribution, q + 1e-4) - quantile_t(distribution, q - 1e-4))
                / 2e-4;
            let tolerance = (5.0 * (q * (1.0 - q) / delays.len() as f64).sqrt() * slope).max(0.05);
            assert!(
                (measured - expected).abs() <= tolerance,
                "{distribution:?} q={q}: {measured:.3} ms vs {expected:.3} ms (± {tolerance:.3})"
            );
        }
    }
}

/// The closed forms again, for the slope in the tolerance.
fn quantile_t(distribution: Distribution, q: f64) -> f64 {
    distribution.quantile(q)
}

#[test]
fn correlated_delay_keeps_its_distribution_and_correlates() {
    let delay = DelayConfig {
        latency: Duration::from_millis(100),
        jitter: Duration::from_millis(20),
        distribution: Distribution::Normal,
        correlation: 0.5,
        ..DelayConfig::default()
    };
    let config = ImpairmentConfig {
        delay: DelayConfig {
            preserve_order: false,
            ..delay
        },
        ..ImpairmentConfig::default()
    };
    let delays = delays_in_push_order(config, 23, 100_000);
    let n = delays.len() as f64;
    let mean = delays.iter().sum::<f64>() / n;
    let var = delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n;
    let lag1 = delays
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum::<f64>()
        / (n - 1.0)
        / var;
    assert!((mean - 100.0).abs() < 0.5, "mean {mean}");
    assert!((var.sqrt() - 20.0).abs() < 0.5, "sd {}", var.sqrt());
    assert!((lag1 - 0.5).abs() < 0.03, "lag-1 correlation {lag1}");

    // a non-normal shape keeps its quantiles under correlation too
    let sorted = delays_ms(
        DelayConfig {
            distribution: Distribution::Uniform,
            ..delay
        },
        24,
        100_000,
    );
    for q in [0.1, 0.5, 0.9] {
        let expected = 100.0 + 20.0 * (2.0 * q - 1.0);
        let measured = quantile(&sorted, q);
        assert!(
            (measured - expected).abs() < 0.6,
            "uniform q={q}: {measured} vs {expected}"
        );
    }
}

#[test]
fn rate_limit_throughput_is_within_five_percent() {
    // 2 Mbit/s link, 1000-byte payloads + 28 bytes overhead every 2 ms:
    // 4.1 Mbit/s offered, about twice the link.
    let rate = RateConfig {
        overhead_bytes: 28,
        queue_limit_packets: 100,
        ..RateConfig::kbit_per_s(2_000)
    };
    let config = ImpairmentConfig {
        rate: Some(rate),
        delay: DelayConfig {
            latency: Duration::from_millis(20),
            ..DelayConfig::default()
        },
        ..ImpairmentConfig::default()
    };
    let spacing = Duration::from_millis(2);
    let count = 100_000; // 200 s of simulated time
    let run = run(config, 31, count, 1000, spacing);
    let window = spacing * count as u32;
    let delivered_bits: f64 = run
        .released
        .iter()
        .filter(|(_, r)| r.release_at <= run.start + window)
        .map(|_| 1028.0 * 8.0)
        .sum();
    let throughput_kbit = delivered_bits / window.as_secs_f64() / 1000.0;
    assert!(
        (throughput_kbit - 2000.0).abs() / 2000.0 < 0.05,
        "throughput {throughput_kbit} kbit/s"
    );
    let counters = run.model.counters();
    assert!(counters.dropped_queue > count as u64 / 3, "{counters:?}");

    // Below the rate nothing is dropped and everything gets through.
    let under = ImpairmentConfig {
        rate: Some(rate),
        ..ImpairmentConfig::default()
    };
    let run = support::run(under, 32, 10_000, 1000, Duration::from_millis(5));
    assert_eq!(run.released.len(), 10_000);
    assert_eq!(run.model.counters().dropped_queue, 0);
}

fn reorder_share(p: f64, gap: u32, seed: u64) -> f64 {
    let config = ImpairmentConfig {
        delay: DelayConfig {
            latency: Duration::from_millis(50),
            ..DelayConfig::default()
        },
        reorder: ReorderConfig { p, gap },
        ..ImpairmentConfig::default()
    };
    let run = run(config, seed, 100_000, 100, Duration::from_millis(1));
    let counters = run.model.counters();
    // A reordered packet really overtakes: it comes out before its
    // predecessor, unless that one was reordered too.
    let mut position = vec![0; run.released.len()];
    for (pos, (i, _)) in run.released.iter().enumerate() {
        position[*i] = pos;
    }
    let reordered: Vec<bool> = run
        .decisions
        .iter()
        .map(|d| matches!(d, Decision::Accepted(a) if a.original.reordered))
        .collect();
    for i in 1..reordered.len() {
        let overtook = position[i] < position[i - 1];
        assert_eq!(overtook, reordered[i] && !reordered[i - 1], "packet {i}");
    }
    assert_eq!(
        reordered.iter().filter(|r| **r).count() as u64,
        counters.reordered
    );
    counters.reordered as f64 / counters.pushed as f64
}

#[test]
fn reorder_rate_follows_netem_probability_and_gap() {
    let share = reorder_share(0.1, 1, 41);
    assert!((share - 0.1).abs() < 0.005, "p=0.1 gap=1: {share}");
    // every 5th packet exactly
    let share = reorder_share(1.0, 5, 42);
    assert!((share - 0.2).abs() < 1e-4, "p=1 gap=5: {share}");
    // p / (1 + (gap - 1) p)
    let share = reorder_share(0.5, 3, 43);
    assert!((share - 0.25).abs() < 0.005, "p=0.5 gap=3: {share}");
}

#[test]
fn duplicate_and_corrupt_rates_are_within_half_a_point() {
    let config = ImpairmentConfig {
        duplicate: 0.05,
        corrupt: 0.02,
        ..ImpairmentConfig::default()
    };
    let run = run(config, 51, 100_000, 100, Duration::from_millis(1));
    let c = run.model.counters();
    let duplicated = c.duplicated as f64 / c.passed as f64;
    let corrupted = c.corrupted as f64 / c.passed as f64;
    assert!((duplicated - 0.05).abs() < 0.005, "duplicate {duplicated}");
    assert!((corrupted - 0.02).abs() < 0.005, "corrupt {corrupted}");
    assert_eq!(run.released.len() as u64, c.passed + c.duplicated);
    assert_eq!(
        run.released.iter().filter(|(_, r)| r.duplicate).count() as u64,
        c.duplicated
    );
}
