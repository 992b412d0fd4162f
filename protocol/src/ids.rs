//! Identifiers: a peer is a number the server assigns, a room is a name the
//! client picks. Names are restricted so that they are safe in logs, URLs and
//! metrics labels.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::{MAX_DISPLAY_NAME_CHARS, MAX_ROOM_ID_BYTES};

/// A peer id, unique within one server process for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub u32);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A room id: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > MAX_ROOM_ID_BYTES {
            return Err(format!("room must be 1 to {MAX_ROOM_ID_BYTES} bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err("room may contain only A-Z, a-z, 0-9, '_', '-' and '.'".into());
        }
        Ok(RoomId(s))
    }
}

impl TryFrom<&str> for RoomId {
    type Error = String;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        RoomId::try_from(s.to_owned())
    }
}

impl From<RoomId> for String {
    fn from(r: RoomId) -> String {
        r.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a display name: 1 to 32 characters, no control characters.
pub fn validate_display_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(format!(
            "name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("name may not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_bounded_and_restricted() {
        assert!(RoomId::try_from("lobby-1.a_b").is_ok());
        assert!(RoomId::try_from("").is_err());
        assert!(RoomId::try_from("a".repeat(65)).is_err());
        assert!(RoomId::try_from("a".repeat(64)).is_ok());
        assert!(RoomId::try_from("has space").is_err());
        assert!(RoomId::try_from("ünï").is_err());
    }

    #[test]
    fn display_names_are_bounded() {
        assert!(validate_display_name("Ada Lovelace").is_ok());
        assert!(validate_display_name("").is_err());
        assert!(validate_display_name(&"é".repeat(32)).is_ok());
        assert!(validate_display_name(&"é".repeat(33)).is_err());
        assert!(validate_display_name("bell\u{7}").is_err());
    }
}
