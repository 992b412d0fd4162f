//! Join tokens and allowed origins.
//!
//! A join token is a JWT (HS256) that the operator's own backend mints for
//! one player and one room: claims `room`, `sub` (the operator's player id),
//! `exp` (unix seconds) and an optional `name`. The server checks it with
//! any of its configured secrets (several at once, so that a secret can be
//! rotated without refusing tokens minted just before).
//!
//! Verification is sans-IO: the caller passes the current unix time, so
//! expiry is tested deterministically.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rtcrelay_protocol::ids::validate_display_name;
use rtcrelay_protocol::limits::MAX_JOIN_TOKEN_BYTES;
use rtcrelay_protocol::{ErrorCode, RoomId};
use serde::{Deserialize, Serialize};

/// A token this many seconds past its `exp` is still accepted: clocks of the
/// minting backend and this server are never exactly in step.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;

/// Shortest secret accepted: HS256 keys shorter than the hash (32 bytes)
/// weaken it.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest `sub` (player id) accepted; it is kept per member.
pub const MAX_PLAYER_ID_BYTES: usize = 128;

/// Whether joins need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone can join any room: for local development only.
    #[default]
    None,
    /// Every join needs a valid join token.
    Token,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Token => "token",
        }
    }
}

/// The claims of a join token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The room the token admits to.
    pub room: String,
    /// The operator's id of the player.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Display name the operator vouches for; it replaces the join's `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Debug for JoinClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinClaims")
            .field("room", &self.room)
            .field("sub", &self.sub)
            .field("exp", &self.exp)
            .field("name", &self.name)
            .finish()
    }
}

/// Who a valid token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPlayer {
    /// The operator's player id (`sub`).
    pub player_id: String,
    /// The token's display name, if it has one.
    pub name: Option<String>,
}

/// Why a token was refused; each maps to a stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this server requires a join token (in join.token or the /ws?token= query string)")]
    Required,
    #[error("join token invalid: {0}")]
    Invalid(String),
    #[error("join token expired at {exp} (unix seconds); ask for a new one")]
    Expired { exp: u64 },
    #[error("join token is for room {token_room:?}, not {room}")]
    WrongRoom { token_room: String, room: RoomId },
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Required => ErrorCode::AuthRequired,
            AuthError::Invalid(_) => ErrorCode::TokenInvalid,
            AuthError::Expired { .. } => ErrorCode::TokenExpired,
            AuthError::WrongRoom { .. } => ErrorCode::TokenWrongRoom,
        }
    }
}

/// HMAC keys. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Secrets {
        Secrets(secrets.into_iter().map(|s| s.as_ref().to_vec()).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets(<{} redacted>)", self.0.len())
    }
}

/// `[auth]`: join tokens and allowed origins.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Any of these verifies a token (rotation: add the new one, later
    /// remove the old one).
    pub secrets: Secrets,
    /// Origins (`https://game.example.com`) allowed to open the WebSocket
    /// besides the server's own; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

/// Selects the pure-Rust backend for the process: jsonwebtoken panics at
/// first use if it cannot tell which backend to use (e.g. both enabled).
pub(crate) fn install_crypto() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

impl AuthConfig {
    /// Checks `token` for a join of `room` at unix time `now`. Order:
    /// signature (and shape), then expiry, then room, so that a forged
    /// token never learns whether its claims would have passed.
    pub fn verify(
        &self,
        token: Option<&str>,
        room: &RoomId,
        now: u64,
    ) -> Result<VerifiedPlayer, AuthError> {
        let token = token.ok_or(AuthError::Required)?;
        if token.is_empty() || token.len() > MAX_JOIN_TOKEN_BYTES {
            return Err(AuthError::Invalid(format!(
                "a token is 1 to {MAX_JOIN_TOKEN_BYTES} bytes"
            )));
        }
        install_crypto();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's `now`, not the
        // library's own clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let mut last_error = String::from("no secret configured");
        let mut claims = None;
        for secret in &self.secrets.0 {
            match jsonwebtoken::decode::<JoinClaims>(
                token,
                &DecodingKey::from_secret(secret),
                &validation,
            ) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last_error = describe(&e),
            }
        }
        let claims = claims.ok_or(AuthError::Invalid(last_error))?;
        if claims.sub.is_empty() || claims.sub.len() > MAX_PLAYER_ID_BYTES {
            return Err(AuthError::Invalid(format!(
                "claim sub must be 1 to {MAX_PLAYER_ID_BYTES} bytes"
            )));
        }
        if let Some(name) = &claims.name {
            validate_display_name(name).map_err(|e| AuthError::Invalid(format!("claim {e}")))?;
        }
        if now > claims.exp.saturating_add(EXPIRY_LEEWAY_SECS) {
            return Err(AuthError::Expired { exp: claims.exp });
        }
        if claims.room != room.as_str() {
            return Err(AuthError::WrongRoom {
                token_room: claims.room,
                room: room.clone(),
            });
        }
        Ok(VerifiedPlayer {
            player_id: claims.sub,
            name: claims.name,
        })
    }

    /// Is a WebSocket upgrade with this `Origin` header allowed? `host` is
    /// the request's `Host` header. No `Origin` (a non-browser client) is
    /// allowed: the check protects browsers' users from other sites.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/');
        if self
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // Same origin: the page was served by this server. The scheme is not
        // compared, since TLS may end at a proxy in front.
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        match (authority, host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host.trim()),
            _ => false,
        }
    }
}

/// Short reasons, never the token or the secret.
pub(crate) fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "algorithm must be HS256".into(),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "not a JWT".into(),
        ErrorKind::Json(_) => {
            "claims must be room, sub (strings) and exp (unix seconds), name optional".into()
        }
        _ => "cannot be verified".into(),
    }
}

/// Mints a join token (for operators testing, and for tests).
pub fn mint(secret: &[u8], claims: &JoinClaims) -> Result<String, String> {
    install_crypto();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot mint a token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NOW: u64 = 1_800_000_000;

    fn room(s: &str) -> RoomId {
        RoomId::try_from(s).unwrap()
    }

    fn claims(room: &str, exp: u64) -> JoinClaims {
        JoinClaims {
            room: room.into(),
            sub: "player-42".into(),
            exp,
            name: None,
        }
    }

    fn config(secrets: &[&[u8]]) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Token,
            secrets: Secrets::new(secrets.iter().copied()),
            allowed_origins: Vec::new(),
        }
    }

    #[test]
    fn a_good_token_names_the_player() {
        let mut c = claims("lobby", NOW + 60);
        c.name = Some("Ada".into());
        let token = mint(SECRET, &c).unwrap();
        let player = config(&[SECRET])
            .verify(Some(&token), &room("lobby"), NOW)
            .unwrap();
        assert_eq!(player.player_id, "player-42");
        assert_eq!(player.name.as_deref(), Some("Ada"));
    }

    #[test]
    fn each_refusal_has_its_code() {
        let auth = config(&[SECRET]);
        let lobby = room("lobby");
        let err = |token: Option<&str>, now| auth.verify(token, &lobby, now).unwrap_err().code();
        assert_eq!(err(None, NOW), ErrorCode::AuthRequired);
        assert_eq!(err(Some("not.a.jwt"), NOW), ErrorCode::TokenInvalid);
        assert_eq!(err(Some(""), NOW), ErrorCode::TokenInvalid);
        let forged = mint(OTHER, &claims("lobby", NOW + 60)).unwrap();
        assert_eq!(err(Some(&forged), NOW), ErrorCode::TokenInvalid);
        let good = mint(SECRET, &claims("lobby", NOW)).unwrap();
        assert_eq!(
            err(Some(&good), NOW + EXPIRY_LEEWAY_SECS + 1),
            ErrorCode::TokenExpired
        );
        let other_room = mint(SECRET, &claims("arena", NOW + 60)).unwrap();
        assert_eq!(err(Some(&other_room), NOW), ErrorCode::TokenWrongRoom);
        // A forged token for another room, expired, is still just invalid.
        let forged_old = mint(OTHER, &claims("arena", NOW - 600)).unwrap();
        assert_eq!(err(Some(&forged_old), NOW), ErrorCode::TokenInvalid);
        let huge = "a".repeat(MAX_JOIN_TOKEN_BYTES + 1);
        assert_eq!(err(Some(&huge), NOW), ErrorCode::TokenInvalid);
    }

    #[test]
    fn expiry_has_a_small_leeway() {
        let auth = config(&[SECRET]);
        let token = mint(SECRET, &claims("lobby", NOW)).unwrap();
        for now in [NOW - 100, NOW, NOW + EXPIRY_LEEWAY_SECS] {
            assert!(auth.verify(Some(&token), &room("lobby"), now).is_ok());
        }
        assert!(matches!(
            auth.verify(Some(&token), &room("lobby"), NOW + EXPIRY_LEEWAY_SECS + 1),
            Err(AuthError::Expired { exp: NOW })
        ));
    }

    #[test]
    fn any_configured_secret_verifies_during_rotation() {
        let auth = config(&[OTHER, SECRET]);
        for secret in [SECRET, OTHER] {
            let token = mint(secret, &claims("lobby", NOW + 60)).unwrap();
            assert!(auth.verify(Some(&token), &room("lobby"), NOW).is_ok());
        }
        let no_secrets = config(&[]);
        let token = mint(SECRET, &claims("lobby", NOW + 60)).unwrap();
        assert_eq!(
            no_secrets
                .verify(Some(&token), &room("lobby"), NOW)
                .unwrap_err()
                .code(),
            ErrorCode::TokenInvalid
        );
    }

    #[test]
    fn other_algorithms_and_bad_claims_are_invalid() {
        let auth = config(&[SECRET]);
        // HS512 with the right secret: only HS256 is accepted.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims("lobby", NOW + 60),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            auth.verify(Some(&hs512), &room("lobby"), NOW)
                .unwrap_err()
                .code(),
            ErrorCode::TokenInvalid
        );
        let mut bad_name = claims("lobby", NOW + 60);
        bad_name.name = Some("x".repeat(100));
        let mut empty_sub = claims("lobby", NOW + 60);
        empty_sub.sub.clear();
        for c in [bad_name, empty_sub] {
            let token = mint(SECRET, &c).unwrap();
            assert_eq!(
                auth.verify(Some(&token), &room("lobby"), NOW)
                    .unwrap_err()
                    .code(),
                ErrorCode::TokenInvalid,
                "{c:?}"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let auth = config(&[SECRET]);
        let text = format!("{auth:?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }

    #[test]
    fn origins() {
        let mut auth = AuthConfig::default();
        let host = Some("127.0.0.1:8080");
        assert!(auth.origin_allowed(None, host), "no Origin: not a browser");
        assert!(auth.origin_allowed(Some("http://127.0.0.1:8080"), host));
        assert!(auth.origin_allowed(Some("https://127.0.0.1:8080/"), host));
        assert!(!auth.origin_allowed(Some("http://evil.example"), host));
        assert!(!auth.origin_allowed(Some("http://127.0.0.1:9999"), host));
        assert!(!auth.origin_allowed(Some("null"), host));
        assert!(!auth.origin_allowed(Some("http://127.0.0.1:8080"), None));
        auth.allowed_origins = vec!["https://Game.example.com".into()];
        assert!(auth.origin_allowed(Some("https://game.example.com"), host));
        assert!(!auth.origin_allowed(Some("http://game.example.com"), host));
        auth.allowed_origins.push("*".into());
        assert!(auth.origin_allowed(Some("http://evil.example"), host));
    }
}
