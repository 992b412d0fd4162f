//! What a room does for a player whose connection was lost: how long its
//! seat is kept ([`ResumePolicy::grace`]), how the match treats it while it
//! is away ([`AwayPolicy`]), and what happens to the seat when the grace
//! period ends ([`AfterGrace`]). Operators set these per room (by room-id
//! prefix, [`ResumeRules`]), never the clients: in a money match the
//! rules must be the same for everyone and known in advance.

use std::time::Duration;

use rtcrelay_protocol::RoomId;
use serde::{Deserialize, Serialize};

/// How a match treats a player that is away (lost its connection, seat kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwayPolicy {
    /// The match goes on; the player's last input is repeated every tick.
    #[default]
    Repeat,
    /// The game freezes the match (`Simulation::set_paused`) until every
    /// away player is back or its seat is released. Games without a pause
    /// keep running, as with `Repeat`.
    Pause,
}

/// What happens to a seat whose player did not come back in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterGrace {
    /// The player leaves the match, as if it had left (it is out).
    #[default]
    Forfeit,
    /// A server bot plays the seat for the rest of the match
    /// (`Simulation::replace_with_bot`); games without bots forfeit.
    Bot,
}

/// One room's rules for lost connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePolicy {
    /// How long a seat is kept for a player that lost its connection.
    /// Zero: no resume (the seat is released at once, as before).
    pub grace: Duration,
    pub away: AwayPolicy,
    pub after_grace: AfterGrace,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        ResumePolicy {
            grace: Duration::from_secs(30),
            away: AwayPolicy::Repeat,
            after_grace: AfterGrace::Forfeit,
        }
    }
}

/// The server's rules: a default and per-room overrides by room-id prefix
/// (the first matching prefix wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeRules {
    pub default: ResumePolicy,
    pub rooms: Vec<(String, ResumePolicy)>,
}

impl ResumeRules {
    /// The policy of `room`.
    pub fn for_room(&self, room: &RoomId) -> ResumePolicy {
        self.rooms
            .iter()
            .find(|(prefix, _)| room.as_str().starts_with(prefix.as_str()))
            .map_or(self.default, |(_, policy)| *policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_prefix_wins() {
        let ranked = ResumePolicy {
            grace: Duration::from_secs(60),
            away: AwayPolicy::Pause,
            after_grace: AfterGrace::Bot,
        };
        let rules = ResumeRules {
            default: ResumePolicy::default(),
            rooms: vec![
                ("ranked-".into(), ranked),
                ("ranked-x".into(), ResumePolicy::default()),
            ],
        };
        let room = |s: &str| RoomId::try_from(s).unwrap();
        assert_eq!(rules.for_room(&room("ranked-xyz")), ranked);
        assert_eq!(rules.for_room(&room("casual-1")), ResumePolicy::default());
    }
}
