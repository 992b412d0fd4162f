//! The games this build of the relay can run in authoritative rooms.

use crate::authoritative::{GameFactory, Simulation};

/// The built-in games: `dizolaur`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinGames;

impl GameFactory for BuiltinGames {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>> {
        match game {
            // TODO(lead): wire Dizolaur once it lands.
            "dizolaur" => {
                let _ = seed;
                None
            }
            _ => None,
        }
    }
}
