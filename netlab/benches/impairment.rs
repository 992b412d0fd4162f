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
//!
//! And what a driver (the relay's shard) pays around the model:
//!
//! - `lab/version_unchanged`: the per-loop check while the lab is empty or
//!   unchanged (one atomic load and a compare); peers with no setting take
//!   no other step per datagram than testing their path slot for `None`.
//! - `lab/resolve_empty`: resolving a peer on an empty lab (once per
//!   session open, and per peer when the lab changes).
//! - `path/3g`: one packet up and one down through a [`PathImpairment`]
//!   under the `3g` preset, as an impaired relay peer's datagrams go.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rtcrelay_netlab::{
    DelayConfig, Direction, Distribution, GilbertElliott, Impairment, ImpairmentConfig, Lab,
    LossConfig, PathImpairment, RandomLoss, RateConfig, ReorderConfig, Scope, Setting,
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

fn driver(c: &mut Criterion) {
    let lab = Lab::default();
    let seen = lab.version();
    c.bench_function("lab/version_unchanged", |b| {
        b.iter(|| black_box(black_box(&lab).version() != seen))
    });
    c.bench_function("lab/resolve_empty", |b| {
        b.iter(|| black_box(lab.resolve(Some(black_box("1234")), Some("lobby"), None)))
    });

    let start = Instant::now();
    let mut setting = Setting::profile("3g");
    setting.seed = Some(1);
    lab.set(Scope::Global, setting, start).expect("3g");
    let resolved = lab
        .resolve(Some("1234"), Some("lobby"), None)
        .expect("global");
    let mut path: PathImpairment<Vec<u8>> = PathImpairment::new(&resolved, 7, start);
    let mut now = start;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    c.bench_function("path/3g", |b| {
        b.iter(|| {
            // 200-byte packets, one each way per 2 ms (0.8 Mbit/s each way:
            // under the 3g rates, so the queues stay short).
            now += Duration::from_millis(2);
            for direction in [Direction::Up, Direction::Down] {
                let packet = pool.pop().unwrap_or_else(|| vec![0u8; 200]);
                black_box(path.push(direction, now, packet));
                while let Some(released) = path.poll(direction, now) {
                    pool.push(black_box(released).payload);
                }
            }
            black_box(path.poll_timeout(now));
        })
    });
}

criterion_group!(benches, impairment, driver);
criterion_main!(benches);
