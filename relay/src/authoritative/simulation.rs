//! The contract between a game and the authoritative room that runs it.
//!
//! A `Simulation` is sans-IO and deterministic: it never reads the wall
//! clock, uses only RNGs seeded from the seed it was created with, and never
//! iterates over an unordered map. Given the same seed and the same calls
//! (joins, leaves, commands, inputs, steps, in the same order), it reaches
//! the same [`Simulation::state_hash`] at every tick, on every machine. The
//! room records those calls in a [`super::MatchLog`], so a match can be
//! replayed and audited.
//!
//! Tick numbering: `tick()` is the last simulated tick (0 = the initial
//! state). Before each `step()` the room calls `apply_input(player, t, ..)`
//! for every player with `t = tick() + 1`, then `step()` simulates tick `t`.
//! A late input (its tick already simulated, at most `max_rewind()` ticks
//! ago) is also passed to `apply_input`, with its own older tick, before the
//! next step; the game decides what lag compensation it allows.

use rtcrelay_protocol::game::WorldState;
use rtcrelay_protocol::PeerId;

pub trait Simulation: Send + 'static {
    /// The game's name, sent to clients in `hello` (e.g. `"dizolaur"`).
    fn game(&self) -> &'static str;

    /// Bytes per input on the wire (1..=16).
    fn input_size(&self) -> u8;

    /// Most players (people and bots) the game seats.
    fn max_players(&self) -> usize;

    /// How many ticks late an input may be and still be given to the game
    /// (bounded rewind). 0: late inputs are dropped.
    fn max_rewind(&self) -> u32 {
        0
    }

    /// Checks one input from the wire (reserved bits, ranges). Inputs that
    /// fail are dropped and counted; the game never sees them.
    fn validate_input(&self, input: &[u8]) -> Result<(), String>;

    /// A player joined the room. Err: the game refuses (full, match running…).
    fn add_player(&mut self, player: PeerId, name: &str) -> Result<(), String>;

    /// A player left (or was disconnected).
    fn remove_player(&mut self, player: PeerId);

    /// A game command from a player on `control` (e.g. start the match).
    fn command(&mut self, player: PeerId, command: &serde_json::Value) -> Result<(), String>;

    /// The input of `player` for `tick`: the next tick, or a late one.
    fn apply_input(&mut self, player: PeerId, tick: u32, input: &[u8]);

    /// Simulates tick `tick() + 1`. Critical events of this tick (match
    /// start, score changes, match end) are pushed to `events`; the room
    /// delivers them reliably.
    fn step(&mut self, events: &mut Vec<serde_json::Value>);

    /// The last simulated tick.
    fn tick(&self) -> u32;

    /// The state clients see, quantized, into `out` (cleared first).
    fn snapshot(&self, out: &mut WorldState);

    /// A hash of the whole state (not only what clients see), stable across
    /// runs, machines and compiler versions: use [`StateHasher`].
    fn state_hash(&self) -> u64;

    /// The entity that is `player`'s own in snapshots, if any (clients
    /// predict it).
    fn player_entity(&self, player: PeerId) -> Option<u32>;

    /// A match is in progress (e.g. counting down or running, not in the
    /// lobby or over). The relay counts such rooms
    /// ([`crate::Relay::active_matches`]) so that a draining server waits
    /// for them. Games without matches keep the default.
    fn in_match(&self) -> bool {
        false
    }

    /// Freeze (true) or unfreeze (false) the match. The room calls it when
    /// its away policy is `pause` and a player of a running match lost its
    /// connection, and again when every such player is back or replaced.
    /// While paused, `step()` still advances `tick()` by one, but nothing in
    /// the match moves (timers included), so the clients' tick clocks stay
    /// in step with the server. Games without a pause ignore it (the match
    /// goes on with the away player's last input repeated).
    fn set_paused(&mut self, _paused: bool) {}

    /// The room's rule after the grace period is `bot`: `player` did not
    /// come back, so a bot takes over its seat for the rest of the match
    /// (the room stops calling `apply_input` for it). False: the game has no
    /// bots, or none can take this seat; the game must then be unchanged
    /// (the room logs only the `remove_player` it calls next, so a replay
    /// never repeats the refused call) and the player forfeits.
    fn replace_with_bot(&mut self, _player: PeerId) -> bool {
        false
    }
}

/// Creates games by name, seeded.
pub trait GameFactory: Send + Sync + 'static {
    fn create(&self, game: &str, seed: u64) -> Option<Box<dyn Simulation>>;
}

/// FNV-1a, 64-bit, over explicitly little-endian bytes: the same value on
/// every platform and Rust version (unlike `std`'s `DefaultHasher`, whose
/// algorithm is unspecified).
#[derive(Debug, Clone, Copy)]
pub struct StateHasher(u64);

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl StateHasher {
    pub fn new() -> StateHasher {
        StateHasher::default()
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::StateHasher;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(StateHasher::new().finish(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            StateHasher::new().bytes(b"a").finish(),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            StateHasher::new().bytes(b"foobar").finish(),
            0x8594_4171_f739_67e8
        );
    }
}
