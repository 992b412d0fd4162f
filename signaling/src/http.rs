//! The router: demo page and library, the signaling WebSocket, health and
//! metrics, and the admin API when a network lab is configured. State lives
//! in one `Arc<AppState>`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use rtcrelay_protocol::PeerId;
use rtcrelay_relay::SessionHost;
use tokio::sync::watch;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::limits::ConnectionLimits;
use crate::resume::Seats;
use crate::rooms::{MemoryRooms, RoomRegistry};
use crate::session::{self, Outboxes};
use crate::{admin, assets, SignalingConfig, SignalingMetrics};

/// Everything a request handler needs.
pub struct AppState {
    pub config: SignalingConfig,
    pub rooms: Arc<dyn RoomRegistry>,
    pub relay: Arc<dyn SessionHost>,
    pub metrics: SignalingMetrics,
    registry: Registry,
    pub(crate) outboxes: Outboxes,
    next_peer: AtomicU32,
    shutdown: watch::Sender<bool>,
    /// The drain deadline once draining started.
    draining: watch::Sender<Option<Instant>>,
    pub(crate) connections: ConnectionLimits,
    /// Seats kept for resume, by peer id.
    pub(crate) seats: Seats,
    next_connection: AtomicU64,
}

impl AppState {
    /// `registry` is the process's Prometheus registry, with every other
    /// component's metrics already registered; the signaling metrics are
    /// added here and `/metrics` serves all of it.
    pub fn new(
        config: SignalingConfig,
        relay: Arc<dyn SessionHost>,
        mut registry: Registry,
    ) -> Arc<AppState> {
        let metrics = SignalingMetrics::default();
        metrics.register(&mut registry);
        let rooms = Arc::new(MemoryRooms::new(config.max_rooms));
        let connections = ConnectionLimits::new(&config.limits);
        Arc::new(AppState {
            config,
            rooms,
            relay,
            metrics,
            registry,
            outboxes: Outboxes::default(),
            next_peer: AtomicU32::new(1),
            shutdown: watch::channel(false).0,
            draining: watch::channel(None).0,
            connections,
            seats: Seats::default(),
            next_connection: AtomicU64::new(1),
        })
    }

    /// A number for a new signaling connection, never reused.
    pub(crate) fn allocate_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn allocate_peer_id(&self) -> PeerId {
        PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed))
    }

    /// Tells every WebSocket session to close (1001 going away).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts draining: new joins are refused with `draining`, every client
    /// is told the deadline, `/healthz` answers 503. Closing the connections
    /// at the deadline is the caller's ([`AppState::shutdown`]).
    pub fn start_draining(&self, within: Duration) {
        let deadline = Instant::now() + within;
        self.draining.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            *d = Some(deadline);
            true
        });
    }

    pub fn is_draining(&self) -> bool {
        self.draining.borrow().is_some()
    }

    pub(crate) fn draining_signal(&self) -> watch::Receiver<Option<Instant>> {
        self.draining.subscribe()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let admin = if state.config.admin.netlab.is_some() {
        admin::router(Arc::clone(&state))
    } else {
        Router::new()
    };
    Router::new()
        .merge(admin)
        .route("/", get(assets::index))
        .route("/ws", get(session::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/{*path}", get(assets::file))
        .with_state(state)
        // The path only: a `/ws?token=` query string carries a join token,
        // which must never reach the logs.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                // Deliberate 503s (draining /healthz, a full server) are no
                // failure worth an ERROR line each; handlers log their own.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
}

/// 503 while draining, so that load balancers stop sending new clients.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let draining = state.is_draining();
    let body = Json(serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "rooms": state.rooms.room_count(),
        "connections": state.metrics.connections.get(),
    }));
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
