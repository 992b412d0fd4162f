//! The admin API: `/admin/netlab/...`, JSON over HTTP, to put network lab
//! settings in force per scope at runtime (docs/netlab.md, "Admin API").
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/netlab` | settings in force (with injected totals), profiles, named scenarios |
//! | `DELETE /admin/netlab` | clears every scope |
//! | `GET /admin/netlab/global`, `/admin/netlab/{kind}/{id}` | one scope's setting and totals (404 when none) |
//! | `PUT` the same path | puts a setting in force there (body: a setting, or a named scenario) |
//! | `DELETE` the same path | clears that scope (404 when nothing was set) |
//!
//! Access: with a token configured, every request needs
//! `Authorization: Bearer TOKEN` (401 otherwise). Without one, the API
//! answers only on a loopback HTTP listener (development), to requests that
//! name a loopback host and did not come through a proxy; anything else is
//! refused with 403. Bodies are capped at [`MAX_BODY_BYTES`] (413).
//!
//! Errors are `{"error": CODE, "field": FIELD or null, "message": TEXT}`;
//! a refused request changes nothing (the lab checks a whole setting before
//! it puts it in force).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rtcrelay_netlab::{Counters, Lab, LinkConfig, Preset, ScenarioConfig, Scope, Setting};
use rtcrelay_protocol::RoomId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::AppState;

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the admin API is reached and what it controls; part of
/// [`SignalingConfig`](crate::SignalingConfig). The default (no lab) serves
/// no admin routes at all.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Bearer token every admin request must carry. `None`: no token, and
    /// the API then answers only on a loopback listener.
    pub token: Option<AdminToken>,
    /// Whether the HTTP listener is reachable beyond loopback (a wildcard
    /// or a routable address). Without a token the API is refused there.
    pub public_listener: bool,
    /// The network lab `/admin/netlab` controls; `None`: no admin routes.
    pub netlab: Option<Arc<Lab>>,
    /// Scenarios a `PUT` can start by name (`{"scenario_name": "..."}`).
    pub scenarios: BTreeMap<String, ScenarioConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            // Refuse without a token unless told the listener is loopback.
            public_listener: true,
            netlab: None,
            scenarios: BTreeMap::new(),
        }
    }
}

/// The admin token; never printed (`Debug` shows `AdminToken(..)`).
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl AdminToken {
    /// `None` for an empty token (no token).
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| AdminToken(token.as_bytes().into()))
    }

    /// Constant-time comparison (for equal lengths; the length may leak).
    fn matches(&self, given: &[u8]) -> bool {
        self.0.len() == given.len() && bool::from(self.0.ct_eq(given))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The admin routes, guarded by [`authorize`]; merged into the main router
/// when a lab is configured.
pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/netlab", get(overview).delete(clear_all))
        .route(
            "/admin/netlab/{kind}",
            get(get_kind).put(put_kind).delete(delete_kind),
        )
        .route(
            "/admin/netlab/{kind}/{id}",
            get(get_scope).put(put_scope).delete(delete_scope),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

// ---- errors -------------------------------------------------------------------

/// An admin API error: a status and `{"error", "field", "message"}`.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    field: Option<&'a str>,
    message: &'a str,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message).field(field)
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn not_set(scope: &Scope) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_set",
            format!("nothing is set for {scope}"),
        )
        .field("scope")
    }
}

impl From<rtcrelay_netlab::ConfigError> for AdminError {
    fn from(e: rtcrelay_netlab::ConfigError) -> Self {
        let error = Self::new(StatusCode::BAD_REQUEST, "invalid", e.to_string());
        match e.field() {
            Some(field) => error.field(field),
            None => error,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            field: self.field.as_deref(),
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtcrelay admin\""),
            );
        }
        response
    }
}

// ---- access -------------------------------------------------------------------

/// Lets a request through to the admin handlers, or refuses it (see the
/// module docs). Runs before the body is read.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Err(e) = check_access(&state.config.admin, request.headers()) {
        return e.into_response();
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn check_access(admin: &AdminConfig, headers: &HeaderMap) -> Result<(), AdminError> {
    if let Some(token) = &admin.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .ok_or_else(|| {
                AdminError::unauthorized(
                    "this request needs the admin token: Authorization: Bearer TOKEN",
                )
            })?;
        let given = given
            .strip_prefix(b"Bearer ")
            .or_else(|| given.strip_prefix(b"bearer "))
            .ok_or_else(|| {
                AdminError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            })?;
        if !token.matches(given) {
            return Err(AdminError::unauthorized("wrong admin token"));
        }
        return Ok(());
    }
    const HOW: &str = "set an admin token (RTCRELAY_ADMIN__TOKEN, [admin] token or --admin-token) \
                       and send it as Authorization: Bearer TOKEN";
    if admin.public_listener {
        return Err(AdminError::forbidden(format!(
            "the admin API is off: HTTP listens beyond loopback and no admin token is set; {HOW}"
        )));
    }
    // A loopback listener without a token is for development on this
    // machine. A reverse proxy would make it reachable from elsewhere, and a
    // DNS-rebinding page would reach it from a browser under another name.
    for proxied in ["forwarded", "x-forwarded-for", "x-real-ip"] {
        if headers.contains_key(proxied) {
            return Err(AdminError::forbidden(format!(
                "this request came through a proxy ({proxied} header), and the admin API \
                 without a token only serves this machine; {HOW}"
            )));
        }
    }
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !is_loopback_host(host) {
            return Err(AdminError::forbidden(format!(
                "Host {host:?} is not a loopback name; without a token the admin API answers \
                 only to http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT; {HOW}"
            )));
        }
    }
    Ok(())
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, _)) => return ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// ---- bodies -------------------------------------------------------------------------

/// What in force for a scope, as `GET` and `PUT` answer.
#[derive(Debug, Serialize)]
struct InForce {
    /// `global`, `room:NAME`, `peer:ID`, `turn_user:NAME`.
    scope: String,
    kind: &'static str,
    id: Option<String>,
    setting: Setting,
    seed: u64,
    /// The named scenario this setting runs, when it is one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    scenario_name: Option<String>,
    /// What the lab injected on paths under this scope since the setting
    /// was put in force.
    totals: Totals,
}

#[derive(Debug, Default, Serialize)]
struct Totals {
    /// Client → server.
    up: CountersBody,
    /// Server → client.
    down: CountersBody,
}

/// [`Counters`] with the delay in milliseconds.
#[derive(Debug, Default, Serialize)]
struct CountersBody {
    pushed: u64,
    passed: u64,
    dropped: u64,
    dropped_loss: u64,
    dropped_blackout: u64,
    dropped_queue: u64,
    duplicated: u64,
    reordered: u64,
    corrupted: u64,
    /// Sum of the delay added to every delivered copy.
    added_delay_ms: f64,
    /// `added_delay_ms` per delivered copy.
    mean_added_delay_ms: f64,
}

impl From<&Counters> for CountersBody {
    fn from(c: &Counters) -> Self {
        let added_delay_ms = c.added_delay.as_secs_f64() * 1000.0;
        let copies = c.passed + c.duplicated;
        CountersBody {
            pushed: c.pushed,
            passed: c.passed,
            dropped: c.dropped(),
            dropped_loss: c.dropped_loss,
            dropped_blackout: c.dropped_blackout,
            dropped_queue: c.dropped_queue,
            duplicated: c.duplicated,
            reordered: c.reordered,
            corrupted: c.corrupted,
            added_delay_ms,
            mean_added_delay_ms: if copies > 0 {
                added_delay_ms / copies as f64
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Serialize)]
struct Overview {
    /// Every scope with a setting, most general first.
    settings: Vec<InForce>,
    /// Every profile a setting may name: the presets, then the
    /// configuration's own.
    profiles: Vec<ProfileBody>,
    /// The configuration's named scenarios.
    scenarios: Vec<ScenarioBody>,
}

#[derive(Debug, Serialize)]
struct ProfileBody {
    name: String,
    /// A built-in preset (not shadowed by a configured profile).
    preset: bool,
    link: LinkConfig,
}

#[derive(Debug, Serialize)]
struct ScenarioBody {
    name: String,
    scenario: ScenarioConfig,
}

/// A `PUT` body: a [`Setting`] (exactly one of `profile`, `link`,
/// `scenario`; `seed` optional), or `scenario_name` to start one of the
/// configuration's scenarios.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    link: Option<LinkConfig>,
    #[serde(default)]
    scenario: Option<ScenarioConfig>,
    #[serde(default)]
    scenario_name: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Cleared {
    /// The scopes whose settings were taken out of force.
    cleared: Vec<String>,
}

// ---- handlers -------------------------------------------------------------------

async fn overview(State(state): State<Arc<AppState>>) -> Result<Json<Overview>, AdminError> {
    let lab = lab(&state)?;
    let admin = &state.config.admin;
    let profiles = lab.profiles();
    Ok(Json(Overview {
        settings: in_force(lab, admin, None),
        profiles: profiles
            .names()
            .into_iter()
            .filter_map(|name| {
                let link = profiles.get(&name)?;
                let preset = Preset::from_name(&name).is_some_and(|p| p.link_config() == link);
                Some(ProfileBody { name, preset, link })
            })
            .collect(),
        scenarios: admin
            .scenarios
            .iter()
            .map(|(name, scenario)| ScenarioBody {
                name: name.clone(),
                scenario: scenario.clone(),
            })
            .collect(),
    }))
}

async fn clear_all(State(state): State<Arc<AppState>>) -> Result<Json<Cleared>, AdminError> {
    let lab = lab(&state)?;
    let cleared = lab.settings().into_iter().map(|(s, ..)| s.to_string());
    let cleared = cleared.collect();
    lab.clear_all();
    tracing::info!("netlab: every scope cleared (admin API)");
    Ok(Json(Cleared { cleared }))
}

type OneSegment = Result<Path<String>, PathRejection>;
type TwoSegments = Result<Path<(String, String)>, PathRejection>;

async fn get_kind(State(state): State<Arc<AppState>>, path: OneSegment) -> Response {
    result(scope_of_kind(path).and_then(|scope| show(&state, &scope)))
}

async fn get_scope(State(state): State<Arc<AppState>>, path: TwoSegments) -> Response {
    result(scope_of_path(path).and_then(|scope| show(&state, &scope)))
}

async fn put_kind(
    State(state): State<Arc<AppState>>,
    path: OneSegment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    result(scope_of_kind(path).and_then(|scope| set(&state, scope, &headers, body)))
}

async fn put_scope(
    State(state): State<Arc<AppState>>,
    path: TwoSegments,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    result(scope_of_path(path).and_then(|scope| set(&state, scope, &headers, body)))
}

async fn delete_kind(State(state): State<Arc<AppState>>, path: OneSegment) -> Response {
    result(scope_of_kind(path).and_then(|scope| clear(&state, &scope)))
}

async fn delete_scope(State(state): State<Arc<AppState>>, path: TwoSegments) -> Response {
    result(scope_of_path(path).and_then(|scope| clear(&state, &scope)))
}

fn result<T: Serialize>(r: Result<T, AdminError>) -> Response {
    match r {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn show(state: &AppState, scope: &Scope) -> Result<InForce, AdminError> {
    let lab = lab(state)?;
    in_force(lab, &state.config.admin, Some(scope))
        .pop()
        .ok_or_else(|| AdminError::not_set(scope))
}

fn set(
    state: &AppState,
    scope: Scope,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<InForce, AdminError> {
    let lab = lab(state)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body must be at most {MAX_BODY_BYTES} bytes"),
            )
        } else {
            AdminError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(AdminError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the setting as JSON with Content-Type: application/json",
        ));
    }
    let put: PutBody = parse_json(&body)?;
    let setting = setting_of(put, &state.config.admin.scenarios)?;
    let what = describe(&setting);
    lab.set(scope.clone(), setting, Instant::now())?;
    // The totals count what this setting injects, not the one it replaced.
    lab.reset_totals(&scope);
    tracing::info!(%scope, setting = %what, "netlab: setting in force (admin API)");
    show(state, &scope)
}

fn clear(state: &AppState, scope: &Scope) -> Result<Cleared, AdminError> {
    let lab = lab(state)?;
    if !lab.clear(scope) {
        return Err(AdminError::not_set(scope));
    }
    tracing::info!(%scope, "netlab: scope cleared (admin API)");
    Ok(Cleared {
        cleared: vec![scope.to_string()],
    })
}

fn lab(state: &AppState) -> Result<&Arc<Lab>, AdminError> {
    state.config.admin.netlab.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server runs no network lab",
        )
    })
}

/// The settings in force (of `only`, when given), with their totals.
fn in_force(lab: &Lab, admin: &AdminConfig, only: Option<&Scope>) -> Vec<InForce> {
    let totals: BTreeMap<Scope, _> = lab.totals().into_iter().collect();
    lab.settings()
        .into_iter()
        .filter(|(scope, ..)| only.is_none_or(|only| only == scope))
        .map(|(scope, setting, seed)| {
            let scenario_name = setting.scenario.as_ref().and_then(|s| {
                admin
                    .scenarios
                    .iter()
                    .find(|(_, named)| *named == s)
                    .map(|(name, _)| name.clone())
            });
            let totals = totals.get(&scope).map_or_else(Totals::default, |t| Totals {
                up: (&t.up).into(),
                down: (&t.down).into(),
            });
            let id = match &scope {
                Scope::Global => None,
                Scope::Room(id) | Scope::Peer(id) | Scope::TurnUser(id) => Some(id.clone()),
            };
            InForce {
                scope: scope.to_string(),
                kind: scope.kind(),
                id,
                setting,
                seed,
                scenario_name,
                totals,
            }
        })
        .collect()
}

fn setting_of(
    put: PutBody,
    scenarios: &BTreeMap<String, ScenarioConfig>,
) -> Result<Setting, AdminError> {
    let Some(name) = put.scenario_name else {
        return Ok(Setting {
            profile: put.profile,
            link: put.link,
            scenario: put.scenario,
            seed: put.seed,
        });
    };
    if put.profile.is_some() || put.link.is_some() || put.scenario.is_some() {
        return Err(AdminError::invalid(
            "scenario_name",
            "scenario_name cannot be combined with profile, link or scenario",
        ));
    }
    let scenario = scenarios.get(&name).cloned().ok_or_else(|| {
        let known: Vec<&str> = scenarios.keys().map(String::as_str).collect();
        AdminError::invalid(
            "scenario_name",
            format!(
                "scenario_name {name:?} is not a configured scenario (known: {})",
                if known.is_empty() {
                    "none; add [netlab.scenarios.NAME] to the configuration".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    })?;
    Ok(Setting {
        scenario: Some(scenario),
        seed: put.seed,
        ..Setting::default()
    })
}

fn describe(setting: &Setting) -> String {
    match (&setting.profile, &setting.link, &setting.scenario) {
        (Some(name), ..) => format!("profile {name}"),
        (_, Some(_), _) => "inline link".into(),
        (.., Some(s)) => format!("scenario of {} steps", s.steps.len()),
        _ => "nothing".into(),
    }
}

/// Parses a JSON body; a type or shape error names the field by its path
/// (`link.up.delay.latency`, `scenario.steps[1].duration`).
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let bad = |field: Option<String>, e: serde_json::Error| {
        let error = AdminError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            match &field {
                Some(field) => format!("{field}: {e}"),
                None => e.to_string(),
            },
        );
        match field {
            Some(field) => error.field(field),
            None => error,
        }
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // `.` is the root; `?` a segment serde could not name (e.g. where a
        // syntax error cut the document short).
        let path = e.path().to_string();
        let path = path.trim_end_matches('?').trim_end_matches('.');
        let field = (!path.is_empty()).then(|| path.to_owned());
        bad(field, e.into_inner())
    })?;
    de.end().map_err(|e| bad(None, e))?;
    Ok(value)
}

fn scope_of_kind(path: OneSegment) -> Result<Scope, AdminError> {
    let Path(kind) = path.map_err(path_error)?;
    match kind.as_str() {
        "global" => Ok(Scope::Global),
        "room" | "peer" | "turn_user" => Err(AdminError::invalid(
            "scope",
            format!("scope {kind} needs an id: /admin/netlab/{kind}/ID"),
        )),
        other => Err(unknown_kind(other)),
    }
}

fn scope_of_path(path: TwoSegments) -> Result<Scope, AdminError> {
    let Path((kind, id)) = path.map_err(path_error)?;
    match kind.as_str() {
        "global" => Err(AdminError::invalid(
            "scope",
            "scope global takes no id: /admin/netlab/global",
        )),
        // Peer ids as signaling hands them out (welcome.peer_id), in their
        // canonical spelling, so `peer/007` is peer 7.
        "peer" => id
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| Scope::Peer(n.to_string()))
            .ok_or_else(|| {
                AdminError::invalid(
                    "scope",
                    format!("{id:?} is not a peer id (a positive number, as in welcome.peer_id)"),
                )
            }),
        "room" => RoomId::try_from(id.as_str())
            .map(|room| Scope::Room(room.to_string()))
            .map_err(|reason| AdminError::invalid("scope", reason)),
        "turn_user" => Scope::parse(&kind, &id).map_err(AdminError::from),
        other => Err(unknown_kind(other)),
    }
}

fn unknown_kind(kind: &str) -> AdminError {
    AdminError::invalid(
        "scope",
        format!("{kind:?} is not a scope kind (global, room, peer, turn_user)"),
    )
}

fn path_error(e: PathRejection) -> AdminError {
    AdminError::invalid("scope", e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn loopback() -> AdminConfig {
        AdminConfig {
            public_listener: false,
            ..AdminConfig::default()
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "game.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:80",
            "[::2]:80",
            "localhost.example.com",
            "[::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn access_without_a_token() {
        let ok = headers(&[("host", "127.0.0.1:8080")]);
        assert!(check_access(&loopback(), &ok).is_ok());
        assert!(check_access(&loopback(), &HeaderMap::new()).is_ok());
        let public = AdminConfig::default();
        assert_eq!(
            check_access(&public, &ok).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let rebinding = headers(&[("host", "evil.example:8080")]);
        assert_eq!(
            check_access(&loopback(), &rebinding).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let proxied = headers(&[("host", "localhost"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            check_access(&loopback(), &proxied).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn access_with_a_token() {
        let admin = AdminConfig {
            token: AdminToken::new("0123456789abcdef"),
            ..AdminConfig::default()
        };
        let status = |h: &HeaderMap| check_access(&admin, h).err().map(|e| e.status);
        assert_eq!(status(&HeaderMap::new()), Some(StatusCode::UNAUTHORIZED));
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdeX")]);
        assert_eq!(status(&wrong), Some(StatusCode::UNAUTHORIZED));
        let short = headers(&[("authorization", "Bearer 0123")]);
        assert_eq!(status(&short), Some(StatusCode::UNAUTHORIZED));
        let basic = headers(&[("authorization", "Basic 0123456789abcdef")]);
        assert_eq!(status(&basic), Some(StatusCode::UNAUTHORIZED));
        // Right token: any host, even through a proxy.
        let right = headers(&[
            ("authorization", "Bearer 0123456789abcdef"),
            ("host", "game.example.org"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(status(&right), None);
        assert_eq!(format!("{:?}", admin.token.unwrap()), "AdminToken(..)");
        assert!(AdminToken::new("").is_none());
    }

    #[test]
    fn json_errors_name_the_field() {
        let e =
            parse_json::<PutBody>(br#"{"link": {"up": {"delay": {"latency": 5}}}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("link.up.delay.latency"), "{e:?}");
        let e = parse_json::<PutBody>(br#"{"seed": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("seed"), "{e:?}");
        let e = parse_json::<PutBody>(
            br#"{"scenario": {"steps": [{"duration": "1s"}, {"duration": 1}]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("scenario.steps[1].duration"),
            "{e:?}"
        );
        let e = parse_json::<PutBody>(br#"{"profile": "3g",}"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse_json::<PutBody>(br#"{"profile": "3g"} x"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        parse_json::<PutBody>(br#"{"profile": "3g", "seed": 7}"#).unwrap();
    }

    #[test]
    fn scopes_from_paths() {
        let two = |k: &str, id: &str| scope_of_path(Ok(Path((k.to_owned(), id.to_owned()))));
        assert_eq!(two("peer", "007").unwrap(), Scope::Peer("7".into()));
        assert_eq!(
            two("room", "lobby-1").unwrap(),
            Scope::Room("lobby-1".into())
        );
        assert_eq!(
            two("turn_user", "1700000000:7").unwrap(),
            Scope::TurnUser("1700000000:7".into())
        );
        for (k, id) in [
            ("peer", "x"),
            ("peer", "0"),
            ("room", "a b"),
            ("global", "x"),
            ("planet", "x"),
        ] {
            let e = two(k, id).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (StatusCode::BAD_REQUEST, Some("scope")),
                "{k}/{id}"
            );
        }
        let one = |k: &str| scope_of_kind(Ok(Path(k.to_owned())));
        assert_eq!(one("global").unwrap(), Scope::Global);
        assert!(one("peer").is_err());
        assert!(one("planet").is_err());
    }
}
