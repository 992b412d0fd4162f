//! The room registry: membership only, no I/O. Message delivery lives in
//! [`crate::session`]; the data plane lives in the relay.

use std::collections::HashMap;
use std::sync::Mutex;

use rtcrelay_protocol::signaling::RosterEntry;
use rtcrelay_protocol::{ErrorCode, PeerId, RoomId, RoomKind};

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("room {room} is full ({capacity}/{capacity})")]
    Full { room: RoomId, capacity: usize },
    #[error("room {room} is a {existing} room, not {requested}")]
    KindMismatch {
        room: RoomId,
        existing: &'static str,
        requested: &'static str,
    },
    #[error("the server has reached its limit of {0} rooms")]
    TooManyRooms(usize),
}

impl JoinError {
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::Full { .. } => ErrorCode::RoomFull,
            JoinError::KindMismatch { .. } => ErrorCode::RoomKindMismatch,
            JoinError::TooManyRooms(_) => ErrorCode::TooManyRooms,
        }
    }
}

/// A successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub capacity: usize,
    /// The members before this one, in join order.
    pub roster: Vec<RosterEntry>,
    /// True when this join created the room.
    pub created: bool,
}

/// A leave: who is still there to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub remaining: Vec<PeerId>,
    /// True when the room was removed because it became empty.
    pub removed: bool,
}

/// Who is in which room. The in-memory [`MemoryRooms`] is the embedded
/// default; a shared store (Redis) can implement this for several nodes.
pub trait RoomRegistry: Send + Sync + 'static {
    /// Adds `peer` to `room`, creating the room with `capacity` if absent.
    fn join(
        &self,
        room: &RoomId,
        kind: RoomKind,
        capacity: usize,
        peer: PeerId,
        name: &str,
    ) -> Result<Joined, JoinError>;

    /// Removes `peer` from `room`; `None` if it was not there.
    fn leave(&self, room: &RoomId, peer: PeerId) -> Option<Left>;

    /// The members of `room`, in join order.
    fn members(&self, room: &RoomId) -> Vec<PeerId>;

    /// `room`'s capacity and members (names too), for a member that comes
    /// back; `None` if the room is gone.
    fn roster(&self, room: &RoomId) -> Option<(usize, Vec<RosterEntry>)>;

    fn room_count(&self) -> usize;
}

#[derive(Debug)]
struct Room {
    kind: RoomKind,
    capacity: usize,
    members: Vec<RosterEntry>,
}

/// In-memory registry. One mutex: every operation is a few vector ops on a
/// room of at most `MAX_ROOM_CAPACITY` members.
#[derive(Debug)]
pub struct MemoryRooms {
    max_rooms: usize,
    rooms: Mutex<HashMap<RoomId, Room>>,
}

impl MemoryRooms {
    pub fn new(max_rooms: usize) -> Self {
        MemoryRooms {
            max_rooms,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Room>> {
        // A panic while holding this lock cannot leave a room half-updated
        // (each method mutates one Vec at the end), so poison is safe to clear.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RoomRegistry for MemoryRooms {
    fn join(
        &self,
        room_id: &RoomId,
        kind: RoomKind,
        capacity: usize,
        peer: PeerId,
        name: &str,
    ) -> Result<Joined, JoinError> {
        let mut rooms = self.lock();
        let room_count = rooms.len();
        let created = !rooms.contains_key(room_id);
        if created && room_count >= self.max_rooms {
            return Err(JoinError::TooManyRooms(self.max_rooms));
        }
        let room = rooms.entry(room_id.clone()).or_insert_with(|| Room {
            kind,
            capacity,
            members: Vec::new(),
        });
        if room.kind != kind {
            return Err(JoinError::KindMismatch {
                room: room_id.clone(),
                existing: room.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        if room.members.len() >= room.capacity {
            return Err(JoinError::Full {
                room: room_id.clone(),
                capacity: room.capacity,
            });
        }
        let roster = room.members.clone();
        room.members.push(RosterEntry {
            peer_id: peer,
            name: name.to_owned(),
        });
        Ok(Joined {
            capacity: room.capacity,
            roster,
            created,
        })
    }

    fn leave(&self, room_id: &RoomId, peer: PeerId) -> Option<Left> {
        let mut rooms = self.lock();
        let room = rooms.get_mut(room_id)?;
        let index = room.members.iter().position(|m| m.peer_id == peer)?;
        room.members.remove(index);
        let remaining: Vec<PeerId> = room.members.iter().map(|m| m.peer_id).collect();
        let removed = remaining.is_empty();
        if removed {
            rooms.remove(room_id);
        }
        Some(Left { remaining, removed })
    }

    fn members(&self, room_id: &RoomId) -> Vec<PeerId> {
        self.lock()
            .get(room_id)
            .map(|r| r.members.iter().map(|m| m.peer_id).collect())
            .unwrap_or_default()
    }

    fn roster(&self, room_id: &RoomId) -> Option<(usize, Vec<RosterEntry>)> {
        self.lock()
            .get(room_id)
            .map(|r| (r.capacity, r.members.clone()))
    }

    fn room_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::try_from(s).unwrap()
    }

    #[test]
    fn join_returns_earlier_members_in_order() {
        let rooms = MemoryRooms::new(10);
        let r = room("r");
        let a = rooms.join(&r, RoomKind::Relay, 4, PeerId(1), "a").unwrap();
        assert!(a.created && a.roster.is_empty());
        rooms.join(&r, RoomKind::Relay, 4, PeerId(2), "b").unwrap();
        let c = rooms.join(&r, RoomKind::Relay, 9, PeerId(3), "c").unwrap();
        assert!(!c.created);
        assert_eq!(c.capacity, 4, "the creator's capacity holds");
        let ids: Vec<_> = c.roster.iter().map(|m| m.peer_id).collect();
        assert_eq!(ids, [PeerId(1), PeerId(2)]);
    }

    #[test]
    fn full_room_and_kind_mismatch_are_refused() {
        let rooms = MemoryRooms::new(10);
        let r = room("r");
        rooms.join(&r, RoomKind::Relay, 1, PeerId(1), "a").unwrap();
        let full = rooms
            .join(&r, RoomKind::Relay, 1, PeerId(2), "b")
            .unwrap_err();
        assert_eq!(full.code(), ErrorCode::RoomFull);
        let kind = rooms
            .join(&r, RoomKind::Authoritative, 1, PeerId(3), "c")
            .unwrap_err();
        assert_eq!(kind.code(), ErrorCode::RoomKindMismatch);
        assert_eq!(rooms.members(&r), [PeerId(1)]);
    }

    #[test]
    fn room_limit_counts_rooms_not_members() {
        let rooms = MemoryRooms::new(1);
        rooms
            .join(&room("a"), RoomKind::Relay, 4, PeerId(1), "a")
            .unwrap();
        rooms
            .join(&room("a"), RoomKind::Relay, 4, PeerId(2), "b")
            .unwrap();
        let err = rooms
            .join(&room("b"), RoomKind::Relay, 4, PeerId(3), "c")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooManyRooms);
    }

    #[test]
    fn last_leave_removes_the_room() {
        let rooms = MemoryRooms::new(10);
        let r = room("r");
        rooms.join(&r, RoomKind::Relay, 4, PeerId(1), "a").unwrap();
        rooms.join(&r, RoomKind::Relay, 4, PeerId(2), "b").unwrap();
        assert_eq!(
            rooms.leave(&r, PeerId(1)),
            Some(Left {
                remaining: vec![PeerId(2)],
                removed: false
            })
        );
        assert_eq!(rooms.leave(&r, PeerId(1)), None, "leaving twice is a no-op");
        assert!(rooms.leave(&r, PeerId(2)).unwrap().removed);
        assert_eq!(rooms.room_count(), 0);
        // The room id is free again, with a new kind if wanted.
        rooms
            .join(&r, RoomKind::Authoritative, 2, PeerId(3), "c")
            .unwrap();
    }
}
