//! The loss processes' state between packets.

use crate::config::{LossConfig, ResolvedGilbertElliott};
use crate::dice::Dice;

#[derive(Debug, Clone)]
pub(crate) enum LossState {
    None,
    /// A two-state chain on "was the previous packet lost" that keeps the
    /// long-run rate at `p` (see [`RandomLoss`](crate::RandomLoss)).
    Random {
        p: f64,
        after_loss: f64,
        after_pass: f64,
        previous_lost: Option<bool>,
    },
    GilbertElliott {
        chain: ResolvedGilbertElliott,
        bad: bool,
    },
}

impl LossState {
    /// `config` must be valid (the GE convenience fields resolve).
    pub(crate) fn new(config: &LossConfig) -> Self {
        match config {
            LossConfig::None => LossState::None,
            LossConfig::Random(random) => {
                let (p, rho) = (random.p, random.correlation);
                LossState::Random {
                    p,
                    after_loss: p + rho * (1.0 - p),
                    after_pass: p * (1.0 - rho),
                    previous_lost: None,
                }
            }
            LossConfig::GilbertElliott(ge) => match ge.resolve() {
                Ok(chain) => LossState::GilbertElliott { chain, bad: false },
                // Unreachable after validation; losing nothing is the safe side.
                Err(_) => LossState::None,
            },
        }
    }

    pub(crate) fn lose(&mut self, dice: &mut Dice) -> bool {
        match self {
            LossState::None => false,
            LossState::Random {
                p,
                after_loss,
                after_pass,
                previous_lost,
            } => {
                let chance = match previous_lost {
                    None => *p,
                    Some(true) => *after_loss,
                    Some(false) => *after_pass,
                };
                let lost = dice.chance(chance);
                *previous_lost = Some(lost);
                lost
            }
            LossState::GilbertElliott { chain, bad } => {
                let lost = if *bad {
                    dice.chance(chain.loss_in_bad)
                } else {
                    dice.chance(chain.loss_in_good)
                };
                let switch = if *bad { chain.r } else { chain.p };
                if dice.chance(switch) {
                    *bad = !*bad;
                }
                lost
            }
        }
    }
}
