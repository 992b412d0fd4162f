//! TURN credentials: the TURN REST API scheme of coturn's `use-auth-secret`,
//! static long-term users, and the `turn` crate's [`AuthHandler`] built on
//! them.
//!
//! # REST credentials (coturn `use-auth-secret`)
//!
//! Whoever holds a shared secret mints credentials without asking the TURN
//! server:
//!
//! - username: `"<expiry unix time>[:<user id>]"`, e.g. `"1700000000:alice"`;
//! - password: `base64(HMAC-SHA1(secret, username))` (standard alphabet,
//!   padded: 28 characters).
//!
//! The server recomputes the password from the username. A username whose
//! expiry is in the past (`expiry < now`) is refused; `expiry == now` is still
//! accepted, as in coturn. Like coturn we also accept the reversed form
//! `"<user id>:<expiry>"` (a non-numeric part before the first colon); unlike
//! coturn's `atol` we insist on the expiry being all ASCII digits and fitting
//! a `u64`, so `"123abc"` or `"alice:1700000000x"` are not REST usernames.
//!
//! # Long-term key
//!
//! Both kinds end in the RFC 5389 §15.4 long-term key
//! `MD5(username ":" realm ":" password)` ([`long_term_key`]), which is what
//! the `turn` crate's [`AuthHandler`] must return.
//!
//! # Secret rotation and the `turn` crate
//!
//! Several secrets may be configured; the first one mints, every one is
//! accepted (coturn's behaviour: it tries each secret against the request's
//! MESSAGE-INTEGRITY). The `turn` crate (0.17.2) cannot do that by itself:
//! `AuthHandler::auth_handle(username, realm, src_addr)` returns *one* key and
//! never sees the message; the server then checks MESSAGE-INTEGRITY against
//! that key alone and signs its response with it (`server/request.rs`,
//! `authenticate_request`). A REST username does not say which secret signed
//! it, and its format must stay coturn's, so the choice cannot be encoded in
//! it.
//!
//! What makes a correct choice possible: the crate's server reads each
//! listener `Conn` in a loop that handles one datagram completely
//! (`recv_from`, then `handle_request(..).await`) before reading the next, and
//! passes the `recv_from` source address to `auth_handle`. So the listener
//! `Conn` adapters (which we write anyway, for TCP/TLS framing, metrics and
//! rate limits) call [`TurnAuthHandler::observe`] with each datagram before
//! returning it from `recv_from`. `observe` checks the datagram's
//! MESSAGE-INTEGRITY against each secret's key (only when there are two or
//! more secrets, only for requests carrying USERNAME, REALM and
//! MESSAGE-INTEGRITY, and stopping at the first match) and, when an *older*
//! secret matched, leaves a hint `(source address, username) → key` that the
//! following `auth_handle` call takes. Without a hint `auth_handle` returns
//! the first secret's key. Hints are only stored for messages that really
//! verified with an old secret, so unauthenticated floods cannot grow the
//! map; it is also capped at [`MAX_HINTS`]. Without `observe` (a listener not
//! wrapped), rotation degrades to "only the first secret is accepted".
//!
//! # Secrets in memory only
//!
//! Nothing here logs, and no `Debug` or error message contains a secret, a
//! password or a key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::Message;
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler;

use crate::config::{TurnConfig, MAX_USERNAME_BYTES};

/// A long-term credential key, `MD5(username:realm:password)`.
pub type AuthKey = [u8; 16];

/// Most rotation hints kept at once (see the module docs); the map is
/// cleared when full.
pub const MAX_HINTS: usize = 4096;

/// The REST username for `expiry_unix`, with an optional user id
/// (`"1700000000"` or `"1700000000:alice"`). An empty user id counts as none.
pub fn rest_username(expiry_unix: u64, user_id: Option<&str>) -> String {
    match user_id {
        Some(id) if !id.is_empty() => format!("{expiry_unix}:{id}"),
        _ => expiry_unix.to_string(),
    }
}

/// The REST password of `username`: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// RFC 5389 §15.4 long-term key: `MD5(username ":" realm ":" password)`.
/// (No SASLprep: like coturn and the `turn` crate, strings are used as
/// given.)
pub fn long_term_key(username: &str, realm: &str, password: &str) -> AuthKey {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// The expiry of a REST username, or `None` when `username` is not one.
/// Accepts `"<expiry>"`, `"<expiry>:<anything>"` and `"<id>:<expiry>"` (where
/// `<id>` is not all digits), as coturn does; `<expiry>` must be ASCII digits
/// that fit a `u64`.
pub fn parse_rest_expiry(username: &str) -> Option<u64> {
    fn number(text: &str) -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }
    match username.split_once(':') {
        None => number(username),
        Some(("", _)) => None,
        Some((prefix, rest)) => {
            if prefix.bytes().all(|b| b.is_ascii_digit()) {
                number(prefix)
            } else {
                number(rest)
            }
        }
    }
}

/// A fresh random secret (256 bits, URL-safe base64 without padding): what
/// the server uses when `turn.auth.secrets` is empty.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch by the system clock (0 if it is before 1970).
pub fn system_unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a username gets no key. Carries no data, so it can be logged and used
/// as a metrics label (see [`AuthError::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// Neither a static user nor a REST username.
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry has passed.
    #[error("expired REST username")]
    Expired,
    /// A REST username, but no secret is configured.
    #[error("REST username but no shared secret configured")]
    NoSecret,
    /// The request's REALM is not ours.
    #[error("wrong realm")]
    WrongRealm,
}

impl AuthError {
    pub const ALL: [AuthError; 4] = [
        AuthError::UnknownUser,
        AuthError::Expired,
        AuthError::NoSecret,
        AuthError::WrongRealm,
    ];

    /// A short label (`unknown_user`, `expired`, `no_secret`, `wrong_realm`).
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::UnknownUser => "unknown_user",
            AuthError::Expired => "expired",
            AuthError::NoSecret => "no_secret",
            AuthError::WrongRealm => "wrong_realm",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why [`Credentials::mint`] could not mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("no TURN shared secret to mint credentials with")]
    NoSecret,
    #[error("the TURN username would be longer than {MAX_USERNAME_BYTES} bytes")]
    UsernameTooLong,
}

/// Who may use the TURN server: REST secrets (first one mints, all are
/// accepted), static users, and the realm. Immutable; swap a whole new value
/// in to reload ([`TurnAuthHandler::replace`]).
///
/// `Debug` shows the realm, the number of secrets and the user names only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    realm: String,
    secrets: Vec<String>,
    users: BTreeMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Empty secrets are dropped (they would let anyone mint).
    pub fn new(
        realm: impl Into<String>,
        secrets: impl IntoIterator<Item = String>,
        users: BTreeMap<String, String>,
    ) -> Credentials {
        Credentials {
            realm: realm.into(),
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            users,
        }
    }

    /// From a validated `[turn]` section. `startup_secret` is used only when
    /// `turn.auth.secrets` is empty: generate it once per process with
    /// [`generate_secret`] and pass the same one on every reload, so
    /// credentials minted before a reload stay valid.
    pub fn from_config(config: &TurnConfig, startup_secret: &str) -> Credentials {
        let secrets = if config.auth.secrets.is_empty() {
            vec![startup_secret.to_owned()]
        } else {
            config.auth.secrets.clone()
        };
        Credentials::new(config.realm.clone(), secrets, config.auth.users.clone())
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// How many REST secrets are accepted.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Whether `username` is a configured static user.
    pub fn is_static_user(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Mints REST credentials valid until `now_unix + lifetime` (whole
    /// seconds) with the first secret: `(username, password)` as handed to a
    /// browser's `RTCIceServer`.
    pub fn mint(
        &self,
        user_id: Option<&str>,
        now_unix: u64,
        lifetime: Duration,
    ) -> Result<(String, String), MintError> {
        let secret = self.secrets.first().ok_or(MintError::NoSecret)?;
        let username = rest_username(now_unix.saturating_add(lifetime.as_secs()), user_id);
        if username.len() > MAX_USERNAME_BYTES {
            return Err(MintError::UsernameTooLong);
        }
        let password = rest_password(secret, &username);
        Ok((username, password))
    }

    /// Every password `username` may be using at `now_unix`, the preferred
    /// one first: a static user's password, or one REST password per secret
    /// (newest first). Static users win over the REST scheme.
    pub fn passwords_for(&self, username: &str, now_unix: u64) -> Result<Vec<String>, AuthError> {
        if let Some(password) = self.users.get(username) {
            return Ok(vec![password.clone()]);
        }
        let expiry = parse_rest_expiry(username).ok_or(AuthError::UnknownUser)?;
        if expiry < now_unix {
            return Err(AuthError::Expired);
        }
        if self.secrets.is_empty() {
            return Err(AuthError::NoSecret);
        }
        Ok(self
            .secrets
            .iter()
            .map(|secret| rest_password(secret, username))
            .collect())
    }

    /// The preferred password of `username` at `now_unix` (the static
    /// password, or the REST password under the first secret); `None` when
    /// the username is unknown, expired or unusable.
    pub fn password_for(&self, username: &str, now_unix: u64) -> Option<String> {
        self.passwords_for(username, now_unix)
            .ok()
            .and_then(|p| p.into_iter().next())
    }

    /// The long-term keys `username` may be using in `realm` at `now_unix`,
    /// in the order of [`Credentials::passwords_for`].
    pub fn keys_for(
        &self,
        username: &str,
        realm: &str,
        now_unix: u64,
    ) -> Result<Vec<AuthKey>, AuthError> {
        if realm != self.realm {
            return Err(AuthError::WrongRealm);
        }
        Ok(self
            .passwords_for(username, now_unix)?
            .iter()
            .map(|password| long_term_key(username, realm, password))
            .collect())
    }

    /// Which of `username`'s keys signed the STUN message `packet`
    /// (MESSAGE-INTEGRITY checked with the `stun` crate, as the `turn`
    /// server checks it): `Some((username, index into keys_for, key))`, or
    /// `None` when `packet` is not a request with USERNAME, REALM and
    /// MESSAGE-INTEGRITY, the username has no keys, or no key verifies.
    pub fn verify_message(&self, packet: &[u8], now_unix: u64) -> Option<(String, usize, AuthKey)> {
        let mut m = decode_authenticated_request(packet)?;
        let username = TextAttribute::get_from_as(&m, ATTR_USERNAME).ok()?.text;
        let realm = TextAttribute::get_from_as(&m, ATTR_REALM).ok()?.text;
        let keys = self.keys_for(&username, &realm, now_unix).ok()?;
        let index = keys
            .iter()
            .position(|key| MessageIntegrity(key.to_vec()).check(&mut m).is_ok())?;
        Some((username, index, keys[index]))
    }
}

/// Whether `packet` starts like a STUN request: a STUN header with the magic
/// cookie, and class request (the C1 and C0 bits of the message type,
/// 0x0100 and 0x0010, both clear). Looks at the first 8 bytes only.
fn looks_like_request(packet: &[u8]) -> bool {
    stun::message::is_message(packet)
        && packet[0] & 0xC0 == 0
        && u16::from_be_bytes([packet[0], packet[1]]) & 0x0110 == 0
}

/// Decodes `packet` if it is a STUN request carrying MESSAGE-INTEGRITY.
fn decode_authenticated_request(packet: &[u8]) -> Option<Message> {
    if !looks_like_request(packet) {
        return None;
    }
    let mut m = Message::new();
    m.raw = packet.to_vec();
    m.decode().ok()?;
    m.contains(ATTR_MESSAGE_INTEGRITY).then_some(m)
}

/// [`TurnAuthHandler::replace`] was given another realm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key `turn.realm`: cannot change from {running:?} to {requested:?} while the TURN \
     server runs; restart to apply it"
)]
pub struct RealmChanged {
    pub running: String,
    pub requested: String,
}

/// Seconds since the Unix epoch, injectable for tests.
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Refusals counted by [`TurnAuthHandler`], one counter per [`AuthError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthRefusals {
    pub unknown_user: u64,
    pub expired: u64,
    pub no_secret: u64,
    pub wrong_realm: u64,
}

impl AuthRefusals {
    pub fn get(&self, error: AuthError) -> u64 {
        match error {
            AuthError::UnknownUser => self.unknown_user,
            AuthError::Expired => self.expired,
            AuthError::NoSecret => self.no_secret,
            AuthError::WrongRealm => self.wrong_realm,
        }
    }

    pub fn total(&self) -> u64 {
        AuthError::ALL.iter().map(|e| self.get(*e)).sum()
    }
}

/// The `turn` crate's [`AuthHandler`] for [`Credentials`]: static users and
/// REST usernames, expiry by an injectable clock, several secrets through
/// [`TurnAuthHandler::observe`] (see the module docs), hot reload through
/// [`TurnAuthHandler::replace`]. Hand it to `turn::server::config::ServerConfig`
/// as an `Arc`.
pub struct TurnAuthHandler {
    credentials: RwLock<Arc<Credentials>>,
    clock: UnixClock,
    hints: Mutex<HashMap<(SocketAddr, String), AuthKey>>,
    refusals: [AtomicU64; 4],
}

impl fmt::Debug for TurnAuthHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnAuthHandler")
            .field("credentials", &self.credentials())
            .field("hints", &lock(&self.hints).len())
            .field("refusals", &self.refusals())
            .finish()
    }
}

impl TurnAuthHandler {
    /// With the system clock.
    pub fn new(credentials: Credentials) -> TurnAuthHandler {
        TurnAuthHandler {
            credentials: RwLock::new(Arc::new(credentials)),
            clock: Arc::new(system_unix_time),
            hints: Mutex::new(HashMap::new()),
            refusals: Default::default(),
        }
    }

    /// Replaces the clock (seconds since the Unix epoch), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The credentials in force.
    pub fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts new credentials in force (hot reload). Allocations already made
    /// keep relaying; their next Refresh/CreatePermission/ChannelBind is
    /// checked against the new credentials, so keep a rotated-out secret
    /// listed (second) until the credentials it minted have expired.
    ///
    /// The realm cannot change: the `turn` server fixes the REALM it sends
    /// at startup and clients echo it, so new credentials with another realm
    /// would refuse everyone. They are refused instead (the old ones stay);
    /// a new `turn.realm` needs a restart.
    pub fn replace(&self, credentials: Credentials) -> Result<(), RealmChanged> {
        let mut current = self.credentials.write().unwrap_or_else(|e| e.into_inner());
        if current.realm != credentials.realm {
            return Err(RealmChanged {
                running: current.realm.clone(),
                requested: credentials.realm,
            });
        }
        *current = Arc::new(credentials);
        drop(current);
        lock(&self.hints).clear();
        Ok(())
    }

    /// Refusals so far, by reason (for metrics). Wrong passwords are not
    /// among them: the `turn` crate checks MESSAGE-INTEGRITY after
    /// `auth_handle` returns.
    pub fn refusals(&self) -> AuthRefusals {
        let get = |e: AuthError| self.refusals[e.index()].load(Ordering::Relaxed);
        AuthRefusals {
            unknown_user: get(AuthError::UnknownUser),
            expired: get(AuthError::Expired),
            no_secret: get(AuthError::NoSecret),
            wrong_realm: get(AuthError::WrongRealm),
        }
    }

    /// Number of rotation hints held (for tests and debugging).
    pub fn hint_count(&self) -> usize {
        lock(&self.hints).len()
    }

    /// Shows the handler a datagram that a listener `Conn` is about to return
    /// from `recv_from` (with the same source address), before the `turn`
    /// server handles it. When several secrets are configured and the
    /// datagram is a request whose MESSAGE-INTEGRITY verifies with a secret
    /// other than the first, the next `auth_handle` for this source address
    /// and username returns that secret's key. Cheap for everything else:
    /// ChannelData, indications and responses are rejected on the first
    /// bytes, and nothing is decoded with fewer than two secrets.
    pub fn observe(&self, src: SocketAddr, packet: &[u8]) {
        let credentials = self.credentials();
        if credentials.secret_count() < 2 || !looks_like_request(packet) {
            return;
        }
        let now = (self.clock)();
        let verdict = credentials.verify_message(packet, now);
        let mut hints = lock(&self.hints);
        match verdict {
            Some((username, index, key)) if index > 0 && !credentials.is_static_user(&username) => {
                if hints.len() >= MAX_HINTS {
                    hints.clear();
                }
                hints.insert((src, username), key);
            }
            Some((username, _, _)) => {
                hints.remove(&(src, username));
            }
            None => {
                // Unverified or unauthenticated: nothing to remember. A stale
                // hint for this source would only be consulted if its key
                // is still valid, and is replaced by the next verified one.
            }
        }
    }

    /// The key for `username` in `realm` as the `turn` server needs it, or
    /// why there is none. Takes the rotation hint left by `observe`.
    pub fn key(&self, username: &str, realm: &str, src: SocketAddr) -> Result<AuthKey, AuthError> {
        let hint = {
            let mut hints = lock(&self.hints);
            if hints.is_empty() {
                None
            } else {
                hints.remove(&(src, username.to_owned()))
            }
        };
        let now = (self.clock)();
        let result = self
            .credentials()
            .keys_for(username, realm, now)
            .map(|keys| match hint {
                Some(hint) if keys.contains(&hint) => hint,
                _ => keys[0],
            });
        if let Err(error) = result {
            self.refusals[error.index()].fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl AuthHandler for TurnAuthHandler {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.key(username, realm, src_addr)
            .map(|key| key.to_vec())
            .map_err(|e| turn::Error::Other(format!("TURN authentication refused: {e}")))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use stun::agent::TransactionId;
    use stun::attributes::ATTR_NONCE;
    use stun::message::{Getter, Setter, BINDING_REQUEST};
    use stun::textattrs::TextAttribute;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn creds(secrets: &[&str], users: &[(&str, &str)]) -> Credentials {
        Credentials::new(
            "rtcrelay",
            secrets.iter().map(|s| s.to_string()),
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        )
    }

    fn src(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| (b as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// An Allocate-like request (method Allocate = 0x003) signed with `key`.
    fn signed_request(username: &str, realm: &str, key: &AuthKey) -> Vec<u8> {
        let mut m = Message::new();
        m.typ = stun::message::MessageType::new(
            stun::message::METHOD_ALLOCATE,
            stun::message::CLASS_REQUEST,
        );
        m.transaction_id = TransactionId::new();
        m.write_header();
        TextAttribute::new(ATTR_USERNAME, username.into())
            .add_to(&mut m)
            .unwrap();
        TextAttribute::new(ATTR_REALM, realm.into())
            .add_to(&mut m)
            .unwrap();
        TextAttribute::new(ATTR_NONCE, "nonce-123".into())
            .add_to(&mut m)
            .unwrap();
        MessageIntegrity(key.to_vec()).add_to(&mut m).unwrap();
        m.raw
    }

    // ---- known answers -------------------------------------------------

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 §3 test cases 1 and 2, as base64 of the digest.
        let b64 = |hex_digest: &str| STANDARD.encode(hex(hex_digest));
        assert_eq!(
            rest_password(&"\u{0b}".repeat(20), "Hi There"),
            b64("b617318655057264e28bc0b6fb378c8ef146be00")
        );
        assert_eq!(
            rest_password("Jefe", "what do ya want for nothing?"),
            b64("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
        assert_eq!(
            rest_password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        // A key longer than the hash block size (what RFC 2202 case 6
        // checks; its 0xaa key is not UTF-8, so an ASCII one), expected value
        // from: printf %s 'Test Using Larger Than Block-Size Key - Hash Key First' |
        //   openssl dgst -sha1 -hmac "$(printf 'k%.0s' $(seq 80))" -binary | base64
        assert_eq!(
            rest_password(
                &"k".repeat(80),
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "oIu+9Wc/LCqLxvr5H7X7m1732jU="
        );
    }

    #[test]
    fn rest_password_known_answers() {
        // The pion / `turn` crate vector (auth_test.rs, test_lt_cred).
        assert_eq!(
            rest_password("foobar", "1599491771"),
            "Tpz/nKkyvX/vMSLKvL4sbtBt8Vs="
        );
        // coturn-style `expiry:user`, computed independently with
        // printf %s '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            rest_password("north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
        // The crate's own generator agrees on a bare timestamp.
        let c = creds(&["north"], &[]);
        let (user, pass) = c
            .mint(Some("alice"), NOW - 3600, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn long_term_key_known_answers() {
        // python3 -c "import hashlib; print(hashlib.md5(b'alice:rtcrelay:password').hexdigest())"
        assert_eq!(
            long_term_key("alice", "rtcrelay", "password").to_vec(),
            hex("af9f133d2b775266d1ff50d65d393c13")
        );
        // The `turn` crate's vector (auth_test.rs, test_generate_auth_key).
        assert_eq!(
            long_term_key("60", "webrtc.rs", "HWbnm25GwSj6jiHTEDMTO5D7aBw="),
            [56, 22, 47, 139, 198, 127, 13, 188, 171, 80, 23, 29, 195, 148, 216, 224]
        );
        for (u, r, p) in [("", "", ""), ("1:x", "realm", "p:w"), ("ü", "é", "😀")] {
            assert_eq!(
                long_term_key(u, r, p).to_vec(),
                turn::auth::generate_auth_key(u, r, p)
            );
        }
    }

    #[test]
    fn rfc_5769_long_term_sample_verifies() {
        // RFC 5769 §2.4, Sample Request with Long-Term Authentication
        // (password "TheM\u{aa}tr\u{2168}" after SASLprep: "TheMatrIX").
        let packet = hex("00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
             00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
             00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                         53 54 76 79 36 34 73 41
             00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
             00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66");
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let c = Credentials::new(
            "example.org",
            Vec::new(),
            [(user.to_string(), "TheMatrIX".to_string())].into(),
        );
        let (username, index, key) = c.verify_message(&packet, NOW).unwrap();
        assert_eq!((username.as_str(), index), (user, 0));
        assert_eq!(key, long_term_key(user, "example.org", "TheMatrIX"));
        let wrong = Credentials::new(
            "example.org",
            Vec::new(),
            [(user.to_string(), "TheMatrix".to_string())].into(),
        );
        assert_eq!(wrong.verify_message(&packet, NOW), None);
    }

    // ---- REST usernames ------------------------------------------------

    #[test]
    fn rest_username_forms() {
        assert_eq!(rest_username(5, None), "5");
        assert_eq!(rest_username(5, Some("")), "5");
        assert_eq!(rest_username(5, Some("a:b")), "5:a:b");
        for (name, expiry) in [
            ("1700000000", Some(1_700_000_000)),
            ("1700000000:alice", Some(1_700_000_000)),
            ("1700000000:", Some(1_700_000_000)),
            ("1700000000:a:b", Some(1_700_000_000)),
            ("alice:1700000000", Some(1_700_000_000)),
            ("0", Some(0)),
            ("007", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("99999999999999999999999999999999", None),
            ("", None),
            (":", None),
            (":1700000000", None),
            ("alice", None),
            ("alice:", None),
            ("alice:1700000000x", None),
            ("alice:1700000000:x", None),
            ("123abc", None),
            ("+123", None),
            ("-1", None),
            (" 123", None),
            ("\u{0661}\u{0662}\u{0663}", None), // Arabic-Indic digits
            ("１２３", None),                   // full-width digits
            ("😀:123", Some(123)),
            ("123:😀", Some(123)),
        ] {
            assert_eq!(parse_rest_expiry(name), expiry, "{name:?}");
        }
    }

    #[test]
    fn mint_then_accept_until_expiry_inclusive() {
        let c = creds(&["s1"], &[]);
        let (user, pass) = c.mint(Some("p7"), NOW, Duration::from_secs(60)).unwrap();
        assert_eq!(user, format!("{}:p7", NOW + 60));
        assert_eq!(pass, rest_password("s1", &user));
        assert_eq!(c.password_for(&user, NOW).as_deref(), Some(pass.as_str()));
        assert_eq!(
            c.password_for(&user, NOW + 60).as_deref(),
            Some(pass.as_str())
        );
        assert_eq!(c.password_for(&user, NOW + 61), None);
        assert_eq!(c.passwords_for(&user, NOW + 61), Err(AuthError::Expired));
        assert_eq!(
            c.keys_for(&user, "rtcrelay", NOW + 60).unwrap(),
            vec![long_term_key(&user, "rtcrelay", &pass)]
        );
        assert_eq!(c.keys_for(&user, "other", NOW), Err(AuthError::WrongRealm));
        // Without a user id; and a lifetime that would overflow saturates.
        let (user, _) = c.mint(None, NOW, Duration::ZERO).unwrap();
        assert_eq!(user, NOW.to_string());
        assert!(c.password_for(&user, NOW).is_some());
        let (user, _) = c.mint(None, u64::MAX - 1, Duration::from_secs(10)).unwrap();
        assert_eq!(user, u64::MAX.to_string());
    }

    #[test]
    fn mint_errors() {
        let none = creds(&[], &[("alice", "pw")]);
        assert_eq!(
            none.mint(None, NOW, Duration::from_secs(60)),
            Err(MintError::NoSecret)
        );
        let c = creds(&["s"], &[]);
        assert_eq!(
            c.mint(Some(&"x".repeat(600)), NOW, Duration::from_secs(60)),
            Err(MintError::UsernameTooLong)
        );
        assert!(c
            .mint(Some(&"x".repeat(501)), NOW, Duration::from_secs(60))
            .is_ok());
        // Empty secrets are dropped rather than used.
        assert_eq!(creds(&[""], &[]).secret_count(), 0);
    }

    #[test]
    fn static_users_and_unknown_users() {
        let c = creds(
            &["s"],
            &[("alice", "password"), ("1700000000", "static-wins")],
        );
        assert_eq!(c.password_for("alice", NOW).as_deref(), Some("password"));
        // A static user never expires.
        assert_eq!(
            c.password_for("alice", u64::MAX).as_deref(),
            Some("password")
        );
        assert_eq!(
            c.keys_for("alice", "rtcrelay", NOW).unwrap(),
            vec![long_term_key("alice", "rtcrelay", "password")]
        );
        assert_eq!(c.passwords_for("bob", NOW), Err(AuthError::UnknownUser));
        assert_eq!(c.passwords_for("Alice", NOW), Err(AuthError::UnknownUser));
        assert_eq!(c.password_for("bob", NOW), None);
        // A static name that looks like a REST username (refused by config
        // validation) wins over the REST scheme.
        assert_eq!(
            c.password_for("1700000000", NOW + 100).as_deref(),
            Some("static-wins")
        );
        // REST usernames without any secret.
        let no_secret = creds(&[], &[("alice", "password")]);
        assert_eq!(
            no_secret.passwords_for("1800000000", NOW),
            Err(AuthError::NoSecret)
        );
    }

    #[test]
    fn rotation_first_mints_all_accepted() {
        let old = creds(&["old"], &[]);
        let rotated = creds(&["new", "old"], &[]);
        let (user, old_pass) = old.mint(Some("u"), NOW, Duration::from_secs(600)).unwrap();
        let (new_user, new_pass) = rotated
            .mint(Some("u"), NOW, Duration::from_secs(600))
            .unwrap();
        assert_eq!(user, new_user);
        assert_eq!(new_pass, rest_password("new", &user));
        assert_eq!(
            rotated.passwords_for(&user, NOW).unwrap(),
            vec![new_pass.clone(), old_pass.clone()]
        );
        assert_eq!(rotated.password_for(&user, NOW), Some(new_pass));
    }

    #[test]
    fn from_config_uses_startup_secret_only_when_none_configured() {
        let mut config = TurnConfig::default();
        let c = Credentials::from_config(&config, "generated");
        assert_eq!(c.secret_count(), 1);
        assert_eq!(
            c.mint(None, NOW, Duration::ZERO).unwrap().1,
            rest_password("generated", &NOW.to_string())
        );
        config.auth.secrets = vec!["a".into(), "b".into()];
        config.auth.users.insert("alice".into(), "pw".into());
        config.realm = "example.org".into();
        let c = Credentials::from_config(&config, "generated");
        assert_eq!(c.secret_count(), 2);
        assert_eq!(c.realm(), "example.org");
        assert!(c.is_static_user("alice"));
        assert_eq!(
            c.mint(None, NOW, Duration::ZERO).unwrap().1,
            rest_password("a", &NOW.to_string())
        );
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    // ---- the AuthHandler -----------------------------------------------

    fn handler(c: Credentials) -> TurnAuthHandler {
        TurnAuthHandler::new(c).with_clock(|| NOW)
    }

    #[test]
    fn handler_static_rest_expired_unknown_wrong_realm() {
        let c = creds(&["s"], &[("alice", "password")]);
        let (user, pass) = c.mint(Some("x"), NOW, Duration::from_secs(10)).unwrap();
        let h = handler(c);
        let a = src(1);
        assert_eq!(
            h.auth_handle("alice", "rtcrelay", a).unwrap(),
            long_term_key("alice", "rtcrelay", "password").to_vec()
        );
        assert_eq!(
            h.auth_handle(&user, "rtcrelay", a).unwrap(),
            long_term_key(&user, "rtcrelay", &pass).to_vec()
        );
        assert!(h
            .auth_handle(&format!("{}:x", NOW - 1), "rtcrelay", a)
            .is_err());
        assert!(h.auth_handle("bob", "rtcrelay", a).is_err());
        assert!(h.auth_handle("alice", "evil", a).is_err());
        assert_eq!(
            h.refusals(),
            AuthRefusals {
                unknown_user: 1,
                expired: 1,
                no_secret: 0,
                wrong_realm: 1
            }
        );
        assert_eq!(h.refusals().total(), 3);
    }

    #[test]
    fn handler_clock_decides_expiry() {
        let c = creds(&["s"], &[]);
        let (user, _) = c.mint(None, NOW, Duration::from_secs(30)).unwrap();
        let time = Arc::new(AtomicU64::new(NOW));
        let clock = Arc::clone(&time);
        let h = TurnAuthHandler::new(c).with_clock(move || clock.load(Ordering::Relaxed));
        time.store(NOW + 30, Ordering::Relaxed);
        assert!(h.key(&user, "rtcrelay", src(1)).is_ok());
        time.store(NOW + 31, Ordering::Relaxed);
        assert_eq!(h.key(&user, "rtcrelay", src(1)), Err(AuthError::Expired));
        // The system clock is the default and is after this test was written.
        assert!(system_unix_time() > NOW);
    }

    #[test]
    fn handler_errors_never_contain_secrets_or_passwords() {
        let c = creds(
            &["top-secret-1", "top-secret-2"],
            &[("alice", "hunter2-pw")],
        );
        let (user, pass) = c.mint(None, NOW - 100, Duration::ZERO).unwrap();
        let h = handler(c);
        let mut texts = vec![format!("{h:?}"), format!("{:?}", h.credentials())];
        for (u, r) in [
            (user.as_str(), "rtcrelay"),
            ("alice", "x"),
            ("bob", "rtcrelay"),
        ] {
            texts.push(h.auth_handle(u, r, src(1)).unwrap_err().to_string());
        }
        for text in texts {
            for secret in ["top-secret-1", "top-secret-2", "hunter2-pw", pass.as_str()] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn rotation_through_observe() {
        let old = creds(&["old"], &[]);
        let (user, old_pass) = old.mint(Some("u"), NOW, Duration::from_secs(600)).unwrap();
        let old_key = long_term_key(&user, "rtcrelay", &old_pass);
        let new_key = long_term_key(&user, "rtcrelay", &rest_password("new", &user));
        let h = handler(creds(&["new", "old"], &[]));
        let a = src(1);

        // Without observe the first (newest) secret's key is returned.
        assert_eq!(h.key(&user, "rtcrelay", a), Ok(new_key));

        // A request signed with the old secret leaves a hint for the next
        // auth_handle from the same source and username, and only that one.
        let packet = signed_request(&user, "rtcrelay", &old_key);
        h.observe(a, &packet);
        assert_eq!(h.hint_count(), 1);
        assert_eq!(h.key(&user, "rtcrelay", src(2)), Ok(new_key));
        assert_eq!(h.key(&user, "rtcrelay", a), Ok(old_key));
        assert_eq!(h.hint_count(), 0);
        assert_eq!(h.key(&user, "rtcrelay", a), Ok(new_key));

        // Signed with the new secret: no hint, and an older hint is dropped.
        h.observe(a, &packet);
        h.observe(a, &signed_request(&user, "rtcrelay", &new_key));
        assert_eq!(h.hint_count(), 0);
        assert_eq!(h.key(&user, "rtcrelay", a), Ok(new_key));

        // Signed with an unknown secret, or unsigned garbage: no hint.
        let wrong = long_term_key(&user, "rtcrelay", &rest_password("wrong", &user));
        h.observe(a, &signed_request(&user, "rtcrelay", &wrong));
        h.observe(a, &signed_request(&user, "other-realm", &old_key));
        assert_eq!(h.hint_count(), 0);

        // A hint whose secret was removed by a reload is not used.
        h.observe(a, &packet);
        assert_eq!(h.hint_count(), 1);
        h.replace(creds(&["new", "old"], &[])).unwrap();
        assert_eq!(h.hint_count(), 0, "replace clears hints");
        h.observe(a, &packet);
        *h.credentials.write().unwrap() = Arc::new(creds(&["new", "newer"], &[]));
        assert_eq!(h.key(&user, "rtcrelay", a), Ok(new_key));

        // Expired usernames get no hint either.
        let h = handler(creds(&["new", "old"], &[]));
        let (expired, pass) = old.mint(None, NOW - 10, Duration::ZERO).unwrap();
        let key = long_term_key(&expired, "rtcrelay", &pass);
        h.observe(a, &signed_request(&expired, "rtcrelay", &key));
        assert_eq!(h.hint_count(), 0);
        assert_eq!(h.key(&expired, "rtcrelay", a), Err(AuthError::Expired));
    }

    #[test]
    fn replace_refuses_a_realm_change() {
        let h = handler(creds(&["a"], &[]));
        let other = Credentials::new("other", ["b".to_string()], BTreeMap::new());
        let err = h.replace(other).unwrap_err();
        assert!(err.to_string().starts_with("key `turn.realm`: "), "{err}");
        assert_eq!(h.credentials().realm(), "rtcrelay");
        assert_eq!(
            h.credentials().mint(None, NOW, Duration::ZERO).unwrap().1,
            rest_password("a", &NOW.to_string())
        );
        h.replace(creds(&["b"], &[])).unwrap();
        assert_eq!(
            h.credentials().mint(None, NOW, Duration::ZERO).unwrap().1,
            rest_password("b", &NOW.to_string())
        );
    }

    #[test]
    fn observe_ignores_everything_but_signed_requests() {
        let h = handler(creds(&["new", "old"], &[("alice", "pw")]));
        let (user, pass) = creds(&["old"], &[])
            .mint(None, NOW, Duration::from_secs(60))
            .unwrap();
        let key = long_term_key(&user, "rtcrelay", &pass);
        let good = signed_request(&user, "rtcrelay", &key);

        // A success response (class bits set) with the same attributes.
        let mut response = good.clone();
        response[1] |= 0x10;
        response[0] |= 0x01;
        h.observe(src(1), &response);
        // ChannelData.
        h.observe(src(1), &[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
        // A plain binding request.
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .unwrap();
        h.observe(src(1), &m.raw);
        // A static user's request.
        h.observe(
            src(1),
            &signed_request(
                "alice",
                "rtcrelay",
                &long_term_key("alice", "rtcrelay", "pw"),
            ),
        );
        assert_eq!(h.hint_count(), 0);

        // With one secret nothing is even decoded (and nothing is needed).
        let single = handler(creds(&["old"], &[]));
        single.observe(src(1), &good);
        assert_eq!(single.hint_count(), 0);
        assert_eq!(single.key(&user, "rtcrelay", src(1)), Ok(key));
    }

    #[test]
    fn hints_are_bounded() {
        let h = handler(creds(&["new", "old"], &[]));
        let (user, pass) = creds(&["old"], &[])
            .mint(None, NOW, Duration::from_secs(60))
            .unwrap();
        let packet = signed_request(&user, "rtcrelay", &long_term_key(&user, "rtcrelay", &pass));
        for port in 0..(MAX_HINTS as u16 + 10) {
            h.observe(src(port), &packet);
        }
        assert!(h.hint_count() <= MAX_HINTS);
        assert!(h.hint_count() > 0);
    }

    #[test]
    fn garbage_usernames_never_panic() {
        let h = handler(creds(&["a", "b"], &[("alice", "pw")]));
        let long = "9".repeat(100_000);
        let long_user = format!("{}:{}", NOW + 5, "x".repeat(100_000));
        let names = [
            "",
            ":",
            "::",
            ":::",
            "0",
            "00000000000000000000000000000000000000000",
            "18446744073709551615",
            "18446744073709551616",
            long.as_str(),
            long_user.as_str(),
            "not a number",
            "\0",
            "\u{0}\u{1}\u{7f}",
            "1700000000\0",
            "😀",
            "😀:😀",
            "\u{202e}1700000000",
            "1e10",
            "0x10",
            "-0",
            "NaN",
        ];
        for name in names {
            for realm in ["rtcrelay", "", "😀"] {
                let _ = h.auth_handle(name, realm, src(1));
                let _ = h.credentials().passwords_for(name, NOW);
                let _ = h.credentials().passwords_for(name, 0);
                let _ = h.credentials().passwords_for(name, u64::MAX);
                let _ = parse_rest_expiry(name);
                if name.len() <= 500 {
                    let packet = signed_request(name, realm, &[0; 16]);
                    h.observe(src(1), &packet);
                }
            }
        }
        // Far-future expiry is accepted, like coturn (whoever holds the
        // secret decides the lifetime).
        assert!(h.key("18446744073709551615", "rtcrelay", src(1)).is_ok());
        assert_eq!(h.key("0", "rtcrelay", src(1)), Err(AuthError::Expired));
    }

    #[test]
    fn garbage_packets_never_panic() {
        let h = handler(creds(&["new", "old"], &[]));
        let (user, pass) = creds(&["old"], &[])
            .mint(None, NOW, Duration::from_secs(60))
            .unwrap();
        let good = signed_request(&user, "rtcrelay", &long_term_key(&user, "rtcrelay", &pass));
        // Every truncation, every single-byte corruption of the header and
        // attribute headers, and pseudo-random bytes with a STUN header.
        for len in 0..=good.len() {
            h.observe(src(1), &good[..len]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x7f, 0x80, 0x01] {
                let mut p = good.clone();
                p[i] = v;
                h.observe(src(1), &p);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut p = good[..20].to_vec();
            let n = (seed % 200) as usize;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push(seed as u8);
            }
            let len = (p.len() - 20) as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            h.observe(src(1), &p);
        }
        // The genuine packet still works afterwards.
        h.observe(src(1), &good);
        assert_eq!(h.hint_count(), 1);
    }

    #[test]
    fn stun_attribute_roundtrip_helper_is_sound() {
        // The test helper builds what a real client sends.
        let key = long_term_key("u", "rtcrelay", "p");
        let packet = signed_request("u", "rtcrelay", &key);
        let mut m = Message::new();
        m.raw = packet;
        m.decode().unwrap();
        let mut u = TextAttribute::new(ATTR_USERNAME, String::new());
        u.get_from(&m).unwrap();
        assert_eq!(u.text, "u");
        MessageIntegrity(key.to_vec()).check(&mut m).unwrap();
    }
}
