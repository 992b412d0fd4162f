//! Session resume: the resume tokens `welcome` hands out, and the seats kept
//! for players who lost their connection.
//!
//! A resume token is a JWT (HS256) the server mints for itself: audience
//! [`RESUME_AUDIENCE`] (so a join token can never pass for one), the room,
//! the peer id, a random `jti` and an expiry. The seat remembers the `jti`
//! of the one token that may take it back: each `welcome` issues a new one,
//! so a token works once and an older one is refused. The key is random per
//! process unless configured (several nodes sharing seats will need a
//! shared key and a shared [`Seats`] store).
//!
//! Verification and the seat transitions are sans-IO: callers pass unix
//! time and `Instant`s, so expiry and grace periods test deterministically.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rtcrelay_protocol::limits::MAX_JOIN_TOKEN_BYTES;
use rtcrelay_protocol::{ErrorCode, PeerId, RoomId, RoomKind};
use rtcrelay_relay::ResumeRules;
use serde::{Deserialize, Serialize};

/// The `aud` claim of every resume token.
pub const RESUME_AUDIENCE: &str = "rtcrelay-resume";

/// How the server resumes sessions.
#[derive(Clone)]
pub struct ResumeConfig {
    /// Per room: grace period, away policy, after-grace rule.
    pub rules: ResumeRules,
    /// HMAC key of resume tokens. Never shown in `Debug`.
    pub key: ResumeKey,
    /// A token's lifetime: it must outlive the longest session in which it
    /// may be needed.
    pub token_ttl: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig {
            rules: ResumeRules::default(),
            key: ResumeKey::random(),
            token_ttl: Duration::from_secs(6 * 3600),
        }
    }
}

impl fmt::Debug for ResumeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeConfig")
            .field("rules", &self.rules)
            .field("key", &self.key)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// The HMAC key resume tokens are signed with.
#[derive(Clone)]
pub struct ResumeKey(Vec<u8>);

impl ResumeKey {
    /// A fresh random key: tokens then work on this process only, which is
    /// where the seats are.
    pub fn random() -> ResumeKey {
        ResumeKey(rand::random::<[u8; 32]>().to_vec())
    }

    pub fn new(secret: impl AsRef<[u8]>) -> ResumeKey {
        ResumeKey(secret.as_ref().to_vec())
    }
}

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeKey(<redacted>)")
    }
}

/// The claims of a resume token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeClaims {
    pub aud: String,
    pub room: String,
    pub peer: u32,
    /// Which token of the seat this is (hex): only the latest works.
    pub jti: String,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Why a resume was refused; each maps to a stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("resume token invalid: {0}")]
    Invalid(String),
    #[error("resume token expired at {exp} (unix seconds); join afresh")]
    Expired { exp: u64 },
    #[error("the seat was released (the grace period ended or the player left); join afresh")]
    Released,
    #[error("resume token is for room {token_room:?}, not {room}")]
    WrongRoom { token_room: String, room: RoomId },
    #[error("room {room} is a {existing} room, not {requested}")]
    KindMismatch {
        room: RoomId,
        existing: &'static str,
        requested: &'static str,
    },
}

impl ResumeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ResumeError::Invalid(_) => ErrorCode::ResumeInvalid,
            ResumeError::Expired { .. } | ResumeError::Released => ErrorCode::ResumeExpired,
            ResumeError::WrongRoom { .. } => ErrorCode::ResumeWrongRoom,
            ResumeError::KindMismatch { .. } => ErrorCode::RoomKindMismatch,
        }
    }

    /// The `outcome` label of the resume counter.
    pub fn label(&self) -> &'static str {
        match self {
            ResumeError::Invalid(_) => "invalid",
            ResumeError::Expired { .. } | ResumeError::Released => "expired",
            ResumeError::WrongRoom { .. } => "wrong_room",
            ResumeError::KindMismatch { .. } => "kind_mismatch",
        }
    }
}

impl ResumeKey {
    /// A token for `peer`'s seat in `room`, valid until `now + ttl`.
    pub fn mint(&self, room: &RoomId, peer: PeerId, jti: u64, exp: u64) -> String {
        crate::auth::install_crypto();
        let claims = ResumeClaims {
            aud: RESUME_AUDIENCE.to_owned(),
            room: room.as_str().to_owned(),
            peer: peer.0,
            jti: format!("{jti:016x}"),
            exp,
        };
        // HS256 over a serializable struct cannot fail.
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.0),
        )
        .unwrap_or_default()
    }

    /// Checks `token` for `room` at unix time `now`: the peer and `jti` it
    /// names. Whether that seat is still kept is [`Seats::claim`]'s call.
    pub fn verify(
        &self,
        token: &str,
        room: &RoomId,
        now: u64,
    ) -> Result<(PeerId, u64), ResumeError> {
        if token.is_empty() || token.len() > MAX_JOIN_TOKEN_BYTES {
            return Err(ResumeError::Invalid(format!(
                "a token is 1 to {MAX_JOIN_TOKEN_BYTES} bytes"
            )));
        }
        crate::auth::install_crypto();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[RESUME_AUDIENCE]);
        let claims = jsonwebtoken::decode::<ResumeClaims>(
            token,
            &DecodingKey::from_secret(&self.0),
            &validation,
        )
        .map_err(|e| ResumeError::Invalid(crate::auth::describe(&e)))?
        .claims;
        let jti = u64::from_str_radix(&claims.jti, 16)
            .map_err(|_| ResumeError::Invalid("claim jti is not a token id".into()))?;
        if now > claims.exp {
            return Err(ResumeError::Expired { exp: claims.exp });
        }
        if claims.room != room.as_str() {
            return Err(ResumeError::WrongRoom {
                token_room: claims.room,
                room: room.clone(),
            });
        }
        Ok((PeerId(claims.peer), jti))
    }
}

/// Who holds a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A signaling connection (by its connection number).
    Connection(u64),
    /// Nobody: the player lost its connection at `since`. `epoch` tells
    /// this absence from a later one (a grace timer acts on its own only).
    Away { since: Instant, epoch: u64 },
}

/// A seat kept for one peer of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub room: RoomId,
    pub kind: RoomKind,
    pub name: String,
    /// The operator's player id, from the join token.
    pub player: Option<String>,
    /// The grace period of its room.
    pub grace: Duration,
    /// The id of the one token that may take it back.
    pub jti: u64,
    pub holder: Holder,
}

/// The seat was taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub seat: Seat,
    /// Who held it before: a connection that is now superseded, or nobody.
    pub previous: Holder,
}

/// Seats by peer id. In memory: one mutex, a few map operations each.
#[derive(Debug, Default)]
pub struct Seats {
    seats: Mutex<HashMap<PeerId, Seat>>,
    next_epoch: AtomicU64,
}

impl Seats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Seat>> {
        self.seats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a seat for `peer`, held by a connection.
    pub fn insert(&self, peer: PeerId, seat: Seat) {
        self.lock().insert(peer, seat);
    }

    /// Forgets `peer`'s seat if `conn` holds it (the player left).
    pub fn remove_held(&self, peer: PeerId, conn: u64) -> Option<Seat> {
        let mut seats = self.lock();
        if seats.get(&peer)?.holder != Holder::Connection(conn) {
            return None;
        }
        seats.remove(&peer)
    }

    /// `conn` lost its connection (or its WebRTC session): the seat is now
    /// away. Returns the absence's epoch; `None` when `conn` does not hold
    /// the seat (someone resumed it elsewhere). An absence already under way
    /// keeps its epoch (and its deadline).
    pub fn set_away(&self, peer: PeerId, conn: u64, now: Instant) -> Option<(u64, Instant)> {
        let mut seats = self.lock();
        let seat = seats.get_mut(&peer)?;
        match seat.holder {
            Holder::Connection(c) if c == conn => {
                let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
                seat.holder = Holder::Away { since: now, epoch };
                Some((epoch, now))
            }
            Holder::Connection(_) => None,
            Holder::Away { since, epoch } => Some((epoch, since)),
        }
    }

    /// `conn`, which lost its WebRTC session but kept its WebSocket, is back
    /// with a new session. False when the seat is no longer its own.
    pub fn set_back(&self, peer: PeerId, conn: u64) -> bool {
        let mut seats = self.lock();
        let Some(seat) = seats.get_mut(&peer) else {
            return false;
        };
        match seat.holder {
            Holder::Connection(c) => c == conn,
            Holder::Away { .. } => {
                seat.holder = Holder::Connection(conn);
                true
            }
        }
    }

    /// A resume join on connection `conn` with a verified token (`jti`):
    /// takes the seat, now expecting the token `new_jti`.
    pub fn claim(
        &self,
        peer: PeerId,
        kind: RoomKind,
        jti: u64,
        conn: u64,
        new_jti: u64,
    ) -> Result<Claimed, ResumeError> {
        let mut seats = self.lock();
        let seat = seats.get_mut(&peer).ok_or(ResumeError::Released)?;
        if seat.kind != kind {
            return Err(ResumeError::KindMismatch {
                room: seat.room.clone(),
                existing: seat.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        if seat.jti != jti {
            return Err(ResumeError::Invalid(
                "this token was replaced by a newer one (each welcome carries a new token)".into(),
            ));
        }
        let previous = seat.holder;
        seat.holder = Holder::Connection(conn);
        seat.jti = new_jti;
        Ok(Claimed {
            seat: seat.clone(),
            previous,
        })
    }

    /// The grace period of absence `epoch` is over: the seat is released,
    /// unless its player came back meanwhile.
    pub fn release_if_away(&self, peer: PeerId, epoch: u64) -> Option<Seat> {
        let mut seats = self.lock();
        match seats.get(&peer)?.holder {
            Holder::Away { epoch: e, .. } if e == epoch => seats.remove(&peer),
            _ => None,
        }
    }

    /// Seats whose player is away.
    pub fn away_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| matches!(s.holder, Holder::Away { .. }))
            .count()
    }

    /// Whether `conn` holds `peer`'s seat.
    pub fn is_held_by(&self, peer: PeerId, conn: u64) -> bool {
        self.lock()
            .get(&peer)
            .is_some_and(|s| s.holder == Holder::Connection(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn room(s: &str) -> RoomId {
        RoomId::try_from(s).unwrap()
    }

    fn seat(jti: u64, conn: u64) -> Seat {
        Seat {
            room: room("r1"),
            kind: RoomKind::Authoritative,
            name: "ada".into(),
            player: None,
            grace: Duration::from_secs(30),
            jti,
            holder: Holder::Connection(conn),
        }
    }

    #[test]
    fn tokens_verify_for_their_room_until_they_expire() {
        let key = ResumeKey::new([7u8; 32]);
        let token = key.mint(&room("r1"), PeerId(9), 0xabc, NOW + 60);
        assert_eq!(key.verify(&token, &room("r1"), NOW), Ok((PeerId(9), 0xabc)));
        let err = |t: &str, r: &str, now| key.verify(t, &room(r), now).unwrap_err().code();
        assert_eq!(err(&token, "r2", NOW), ErrorCode::ResumeWrongRoom);
        assert_eq!(err(&token, "r1", NOW + 61), ErrorCode::ResumeExpired);
        assert_eq!(err("not.a.jwt", "r1", NOW), ErrorCode::ResumeInvalid);
        assert_eq!(err("", "r1", NOW), ErrorCode::ResumeInvalid);
        // Another key (a forgery, or a token of another server).
        let forged = ResumeKey::new([8u8; 32]).mint(&room("r1"), PeerId(9), 0xabc, NOW + 60);
        assert_eq!(err(&forged, "r1", NOW), ErrorCode::ResumeInvalid);
        // One flipped character of the signature.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(err(&flipped, "r1", NOW), ErrorCode::ResumeInvalid);
    }

    #[test]
    fn a_join_token_is_not_a_resume_token() {
        let secret = [7u8; 32];
        let join = crate::auth::mint(
            &secret,
            &crate::auth::JoinClaims {
                room: "r1".into(),
                sub: "p".into(),
                exp: NOW + 60,
                name: None,
            },
        )
        .unwrap();
        let key = ResumeKey::new(secret);
        assert_eq!(
            key.verify(&join, &room("r1"), NOW).unwrap_err().code(),
            ErrorCode::ResumeInvalid
        );
    }

    #[test]
    fn a_seat_is_claimed_once_per_token_and_released_after_its_absence() {
        let seats = Seats::default();
        let t0 = Instant::now();
        seats.insert(PeerId(1), seat(10, 100));
        // Lost: away, with an epoch; a second report keeps it.
        let (epoch, since) = seats.set_away(PeerId(1), 100, t0).unwrap();
        assert_eq!(
            seats.set_away(PeerId(1), 100, t0 + Duration::from_secs(1)),
            Some((epoch, since))
        );
        assert_eq!(seats.away_count(), 1);
        // The wrong token id, then the right one.
        assert!(matches!(
            seats.claim(PeerId(1), RoomKind::Authoritative, 11, 200, 12),
            Err(ResumeError::Invalid(_))
        ));
        let claimed = seats
            .claim(PeerId(1), RoomKind::Authoritative, 10, 200, 12)
            .unwrap();
        assert!(matches!(claimed.previous, Holder::Away { .. }));
        assert!(seats.is_held_by(PeerId(1), 200));
        // The old token no longer works; the grace timer of that absence
        // does nothing.
        assert!(matches!(
            seats.claim(PeerId(1), RoomKind::Authoritative, 10, 300, 13),
            Err(ResumeError::Invalid(_))
        ));
        assert_eq!(seats.release_if_away(PeerId(1), epoch), None);
        // A takeover of a live connection reports the connection it replaces.
        let claimed = seats
            .claim(PeerId(1), RoomKind::Authoritative, 12, 300, 13)
            .unwrap();
        assert_eq!(claimed.previous, Holder::Connection(200));
        // The superseded connection cannot mark the seat away any more.
        assert_eq!(seats.set_away(PeerId(1), 200, t0), None);
        // A new absence, not resumed: released.
        let (epoch2, _) = seats.set_away(PeerId(1), 300, t0).unwrap();
        assert_ne!(epoch2, epoch);
        assert!(seats.release_if_away(PeerId(1), epoch2).is_some());
        assert!(matches!(
            seats.claim(PeerId(1), RoomKind::Authoritative, 13, 400, 14),
            Err(ResumeError::Released)
        ));
    }

    #[test]
    fn only_the_holder_removes_a_seat() {
        let seats = Seats::default();
        seats.insert(PeerId(1), seat(10, 100));
        assert_eq!(seats.remove_held(PeerId(1), 999), None);
        assert!(seats.remove_held(PeerId(1), 100).is_some());
        assert_eq!(seats.away_count(), 0);
    }
}
