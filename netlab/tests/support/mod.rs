//! Helpers shared by the integration tests: a synthetic clock and runs of
//! evenly spaced packets. Nothing here reads the wall clock after the
//! origin; every `now` is `origin + offset`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use rtcrelay_netlab::{Decision, Impairment, ImpairmentConfig, PacketLen, Released};

/// One fixed origin per test; only offsets from it matter.
pub fn origin() -> Instant {
    Instant::now()
}

/// The outcome of pushing `count` packets of `len` bytes, one every
/// `spacing`, and draining everything that comes due.
pub struct Run {
    pub decisions: Vec<Decision>,
    /// In release order: (index of the packet, release record).
    pub released: Vec<(usize, Released<Indexed>)>,
    pub model: Impairment<Indexed>,
    pub start: Instant,
}

/// A packet that remembers its index, for order checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub index: usize,
    pub len: usize,
}

impl rtcrelay_netlab::Payload for Indexed {
    fn byte_len(&self) -> usize {
        self.len
    }

    fn flip_bit(&mut self, _bit: usize) {}
}

pub fn run(
    config: ImpairmentConfig,
    seed: u64,
    count: usize,
    len: usize,
    spacing: Duration,
) -> Run {
    let start = origin();
    let mut model = Impairment::new(config, seed, start).expect("valid config");
    let mut decisions = Vec::with_capacity(count);
    let mut released = Vec::with_capacity(count);
    for i in 0..count {
        let now = start + spacing * i as u32;
        decisions.push(model.push(now, Indexed { index: i, len }));
        while let Some(r) = model.poll(now) {
            released.push((r.payload.index, r));
        }
    }
    while let Some(due) = model.poll_timeout() {
        while let Some(r) = model.poll(due) {
            released.push((r.payload.index, r));
        }
    }
    Run {
        decisions,
        released,
        model,
        start,
    }
}

/// Push `count` length-only packets and return the decisions (the model
/// keeps what it holds; for loss-only statistics nothing needs draining).
pub fn decisions_only(config: ImpairmentConfig, seed: u64, count: usize) -> Vec<Decision> {
    let start = origin();
    let mut model: Impairment<PacketLen> = Impairment::new(config, seed, start).unwrap();
    (0..count)
        .map(|i| {
            let now = start + Duration::from_micros(100) * i as u32;
            let decision = model.push(now, PacketLen(100));
            while model.poll(now).is_some() {}
            decision
        })
        .collect()
}

/// The empirical `q`-quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
