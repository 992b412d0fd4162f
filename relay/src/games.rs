//! The games this build of the relay can run in authoritative rooms.

use crate::authoritative::{GameFactory, Simulation};
use crate::dizolaur::DizolaurFactory;

/// The built-in games: `dizolaur`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinGames;

impl GameFactory for BuiltinGames {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
        DizolaurFactory.create(game, seed)
    }
}
