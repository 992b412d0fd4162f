//! The input pipeline: which tick each sampled input is for, and what each
//! input datagram carries.
//!
//! Rules (shared with the server and the browser library):
//! - each local tick samples the buttons for
//!   `target = max(previous_target + 1, floor(est_server_tick) + lead)`;
//!   ticks skipped by a jump get the same input (inputs stay contiguous);
//! - a datagram carries every input from `input_ack + 1` (from the newest
//!   snapshot) to `target`, at most [`MAX_INPUTS_PER_DATAGRAM`] (the oldest
//!   are dropped beyond), a `seq` that grows by one per datagram, and the
//!   newest applied snapshot tick with how long ago it arrived.

use std::collections::VecDeque;

use rtcrelay_protocol::game::input::{SnapshotAck, MAX_INPUTS_PER_DATAGRAM};
use rtcrelay_protocol::game::InputDatagram;

/// Inputs kept for prediction (ticks after the newest snapshot). More than
/// the largest lead a server allows plus a few snapshot intervals.
pub(crate) const HISTORY: usize = 256;

#[derive(Debug)]
pub(crate) struct InputPipeline {
    input_size: usize,
    /// The buttons now: what the next local tick samples.
    current: Vec<u8>,
    /// Sampled inputs by tick, contiguous and ascending.
    history: VecDeque<(u32, Vec<u8>)>,
    last_target: Option<u32>,
    /// Newest `input_ack` heard from the server.
    input_ack: Option<u32>,
    next_seq: u32,
}

impl InputPipeline {
    pub(crate) fn new(input_size: u8) -> InputPipeline {
        let input_size = usize::from(input_size);
        InputPipeline {
            input_size,
            current: vec![0; input_size],
            history: VecDeque::new(),
            last_target: None,
            input_ack: None,
            next_seq: 0,
        }
    }

    /// Sets the buttons; shorter inputs are padded with zeros, longer ones
    /// cut (the server would drop the whole datagram otherwise).
    pub(crate) fn set_input(&mut self, input: &[u8]) {
        let n = input.len().min(self.input_size);
        self.current[..n].copy_from_slice(&input[..n]);
        self.current[n..].fill(0);
    }

    pub(crate) fn current(&self) -> &[u8] {
        &self.current
    }

    pub(crate) fn last_target(&self) -> Option<u32> {
        self.last_target
    }

    /// Samples the current input for the next target tick (see the module
    /// rule) and returns the ticks that got a new input: `first..=target`.
    /// None when the next tick would be more than `max_ahead` ticks ahead
    /// of the estimate (the server rejects inputs beyond its
    /// `max_input_lead`): the estimate stepped back, wait for it.
    pub(crate) fn sample(
        &mut self,
        est_server_tick: f64,
        lead: u32,
        max_ahead: u32,
    ) -> Option<(u32, u32)> {
        // `as` saturates: a negative or NaN estimate is tick 0.
        let est = est_server_tick.floor() as u32;
        let wanted = est.saturating_add(lead);
        let target = match self.last_target {
            Some(prev) if prev.saturating_add(1) > est.saturating_add(max_ahead) => return None,
            Some(prev) => wanted.max(prev.saturating_add(1)),
            None => wanted,
        };
        let mut first = self.last_target.map_or(target, |p| p.saturating_add(1));
        // A long stall may skip thousands of ticks; only the last HISTORY
        // can matter.
        first = first.max(target.saturating_sub(HISTORY as u32 - 1));
        if self
            .history
            .back()
            .is_some_and(|&(t, _)| t.checked_add(1) != Some(first))
        {
            // Not contiguous with what is kept: what is kept is obsolete.
            self.history.clear();
        }
        for tick in first..=target {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((tick, self.current.clone()));
        }
        self.last_target = Some(target);
        Some((first, target))
    }

    /// The server has every input up to `input_ack` (from a snapshot).
    pub(crate) fn on_input_ack(&mut self, input_ack: u32) {
        if self.input_ack.is_none_or(|a| input_ack > a) {
            self.input_ack = Some(input_ack);
        }
    }

    /// Forgets inputs no longer needed for prediction: a snapshot of `tick`
    /// already includes them (as long as the server still needs them, i.e.
    /// beyond `input_ack`, they are kept for resending).
    pub(crate) fn forget_through(&mut self, tick: u32) {
        let keep_after = tick.min(self.input_ack.unwrap_or(0));
        while self.history.front().is_some_and(|&(t, _)| t <= keep_after) {
            self.history.pop_front();
        }
    }

    /// Inputs for ticks in `(after, through]`, oldest first.
    pub(crate) fn inputs_between(
        &self,
        after: u32,
        through: u32,
    ) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.history
            .iter()
            .filter(move |(t, _)| *t > after && *t <= through)
            .map(|(t, i)| (*t, i.as_slice()))
    }

    /// The datagram for the current target: inputs from `input_ack + 1` to
    /// the target, the newest [`MAX_INPUTS_PER_DATAGRAM`] of them, and at
    /// least the target's own (a datagram must carry one, and it carries
    /// the snapshot ack the server needs even when every input is known).
    /// None before the first sample.
    pub(crate) fn datagram(&mut self, ack: Option<SnapshotAck>) -> Option<InputDatagram> {
        let target = self.last_target?;
        let after = self.input_ack.unwrap_or(0);
        let unacked = self
            .history
            .iter()
            .filter(|(t, _)| *t > after && *t <= target)
            .count();
        let count = unacked.clamp(1, MAX_INPUTS_PER_DATAGRAM);
        let chosen = self
            .history
            .iter()
            .skip(self.history.len().saturating_sub(count));
        let mut inputs = Vec::with_capacity(count * self.input_size);
        let mut first_tick = target;
        for (i, (tick, input)) in chosen.enumerate() {
            if i == 0 {
                first_tick = *tick;
            }
            inputs.extend_from_slice(input);
        }
        if inputs.is_empty() {
            // History empty (cannot happen after a sample, but never send
            // a datagram without inputs).
            inputs = self.current.clone();
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(InputDatagram {
            seq,
            ack,
            first_tick,
            input_size: self.input_size as u8,
            inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_advance_by_at_least_one_and_fill_jumps() {
        let mut p = InputPipeline::new(1);
        p.set_input(&[1]);
        assert_eq!(p.sample(10.4, 3, 59), Some((13, 13)));
        // The clock estimate stepped back: still the next tick.
        assert_eq!(p.sample(9.0, 3, 59), Some((14, 14)));
        // ... unless that is beyond what the server accepts.
        assert_eq!(p.sample(9.0, 3, 4), None);
        p.set_input(&[2]);
        // A jump: 15..=20 all get the current input.
        assert_eq!(p.sample(17.9, 3, 59), Some((15, 20)));
        let got: Vec<(u32, u8)> = p.inputs_between(0, 99).map(|(t, i)| (t, i[0])).collect();
        let mut want = vec![(13, 1), (14, 1)];
        want.extend((15..=20).map(|t| (t, 2)));
        assert_eq!(got, want);
    }

    #[test]
    fn datagrams_carry_unacked_inputs_up_to_32() {
        let mut p = InputPipeline::new(2);
        for i in 0..40u32 {
            p.set_input(&[i as u8, 0xff]);
            p.sample(f64::from(i), 1, 59);
        }
        let d = p.datagram(None).unwrap();
        assert_eq!(d.count(), MAX_INPUTS_PER_DATAGRAM);
        assert_eq!(d.first_tick, 40 - 31);
        assert_eq!(&d.inputs[..2], &[8, 0xff]);
        p.on_input_ack(38);
        let d = p.datagram(None).unwrap();
        assert_eq!((d.first_tick, d.count(), d.seq), (39, 2, 1));
        // Everything acked: the target alone, for the ack it carries.
        p.on_input_ack(45);
        let d = p.datagram(None).unwrap();
        assert_eq!((d.first_tick, d.count()), (40, 1));
    }
}
