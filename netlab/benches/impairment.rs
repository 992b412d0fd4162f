//! Cost of the impairment model per packet (criterion), so it can stay on in
//! production. Run with `cargo bench -p rtcrelay-netlab --bench impairment`.
//!
//! Each iteration is one packet through one direction: `push` at a
//! synthetic `now` that advances 1 ms per packet, then `poll(now)` until
//! nothing is due. Payloads are 1200-byte `Vec<u8>`s recycled through a
//! pool, so the numbers are the model's work, not the allocator's.
//!
//! - `disabled`: the pass-through config (`ImpairmentConfig::default()`):
//!   what a peer pays with the lab compiled in but switched off.
//! - `active`: 1 % random loss, 50 ± 10 ms normal delay (order preserved),
//!   10 Mbit/s with 28 bytes overhead (9.8 Mbit/s offered: a steady queue),
//!   about 50 packets held.
//! - `active_all`: `active` plus Gilbert-Elliott loss instead of random,
//!   correlated paretonormal delay, 1 % reorder, 1 % duplicate and 1 %
//!   corrupt.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rtcrelay_netlab::{
    DelayConfig, Distribution, GilbertElliott, Impairment, ImpairmentConfig, LossConfig,
    RandomLoss, RateConfig, ReorderConfig,
};

const PACKET_LEN: usize = 1200;

fn active() -> ImpairmentConfig {
    ImpairmentConfig {
        loss: LossConfig::Random(RandomLoss {
            p: 0.01,
            correlation: 0.0,
        }),
        delay: DelayConfig {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            distribution: Distribution::Normal,
            ..DelayConfig::default()
        },
        rate: Some(RateConfig {
            overhead_bytes: 28,
            ..RateConfig::kbit_per_s(10_000)
        }),
        ..ImpairmentConfig::default()
    }
}

fn active_all() -> ImpairmentConfig {
    let mut config = active();
    config.loss = LossConfig::GilbertElliott(GilbertElliott::bursts(0.01, 3.0));
    config.delay.distribution = Distribution::ParetoNormal;
    config.delay.correlation = 0.25;
    config.reorder = ReorderConfig { p: 0.01, gap: 1 };
    config.duplicate = 0.01;
    config.corrupt = 0.01;
    config
}

fn bench_config(c: &mut Criterion, name: &str, config: ImpairmentConfig) {
    let start = Instant::now();
    let mut model: Impairment<Vec<u8>> = Impairment::new(config, 1, start).expect("valid config");
    let mut now = start;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    c.bench_function(name, |b| {
        b.iter(|| {
            now += Duration::from_millis(1);
            let packet = pool.pop().unwrap_or_else(|| vec![0u8; PACKET_LEN]);
            black_box(model.push(now, packet));
            while let Some(released) = model.poll(now) {
                pool.push(black_box(released).payload);
            }
        })
    });
    let counters = model.counters();
    eprintln!(
        "{name}: pushed {} passed {} held now {} mean added delay {:?}",
        counters.pushed,
        counters.passed,
        model.held_len(),
        counters
            .added_delay
            .checked_div(
                u32::try_from((counters.passed + counters.duplicated).max(1)).unwrap_or(u32::MAX)
            )
            .unwrap_or_default()
    );
}

fn impairment(c: &mut Criterion) {
    bench_config(c, "impairment/disabled", ImpairmentConfig::default());
    bench_config(c, "impairment/active", active());
    bench_config(c, "impairment/active_all", active_all());
}

criterion_group!(benches, impairment);
criterion_main!(benches);
