//! Both directions of one path, paired: what a relay peer or a TURN
//! allocation gets.

use std::time::Instant;

use crate::config::{ConfigError, LinkConfig};
use crate::impairment::{Decision, Impairment, Released};
use crate::payload::Payload;
use crate::scenario::Condition;

/// Which way a packet travels, seen from the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// An impaired path: an [`Impairment`] per direction, on two streams of one
/// seed (stream 1 up, stream 2 down), so the two directions are independent
/// and the pair is reproducible from one number.
#[derive(Debug)]
pub struct Link<P> {
    up: Impairment<P>,
    down: Impairment<P>,
}

impl<P: Payload> Link<P> {
    /// A path started at `now`.
    pub fn new(config: &LinkConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            up: Impairment::with_stream(config.up.clone(), seed, 1, now)?,
            down: Impairment::with_stream(config.down.clone(), seed, 2, now)?,
        })
    }

    /// Push a packet travelling `direction`.
    pub fn push(&mut self, direction: Direction, now: Instant, packet: P) -> Decision {
        self.direction_mut(direction).push(now, packet)
    }

    /// The next packet due at `now` in `direction`.
    pub fn poll(&mut self, direction: Direction, now: Instant) -> Option<Released<P>> {
        self.direction_mut(direction).poll(now)
    }

    /// The earliest packet due in either direction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.up.poll_timeout(), self.down.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One direction's model (its counters, config, held packets).
    pub fn direction(&self, direction: Direction) -> &Impairment<P> {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// One direction's model, mutable.
    pub fn direction_mut(&mut self, direction: Direction) -> &mut Impairment<P> {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    /// Switch both directions; nothing changes if either is invalid.
    pub fn set_config(&mut self, config: &LinkConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.up.set_config(config.up.clone())?;
        self.down.set_config(config.down.clone())
    }

    /// Blackout both directions (see [`Impairment::set_blackout`]).
    pub fn set_blackout(&mut self, on: bool) {
        self.up.set_blackout(on);
        self.down.set_blackout(on);
    }

    /// Put a scenario stage in force: a profile (and no blackout), or a
    /// blackout (keeping the profile for the packets already held).
    pub fn apply(&mut self, condition: &Condition) -> Result<(), ConfigError> {
        match condition {
            Condition::Profile { link, .. } => {
                self.set_config(link)?;
                self.set_blackout(false);
            }
            Condition::Blackout => self.set_blackout(true),
        }
        Ok(())
    }
}
