//! The relay process side: the one UDP socket, the receive loop that routes
//! each datagram to its peer's shard in O(1), and the [`SessionHost`] that
//! signaling uses to open and close sessions.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtcrelay_protocol::limits::MAX_CONTROL_MESSAGE_BYTES;
use rtcrelay_protocol::signaling::is_mdns_candidate;
use rtcrelay_protocol::{PeerId, RoomId};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::authoritative::GameFactory;
use crate::config::RelayConfig;
use crate::liveness::LivenessConfig;
use crate::metrics::{ReasonLabel, RelayMetrics};
use crate::routes::{Refused, Routes};
use crate::session::{SeatEnd, SessionAnswer, SessionError, SessionHost, SessionRequest};
use crate::shard::{lock, Datagram, NewSession, Shard, ShardContext, ShardMsg};

/// Datagrams (and commands) waiting per shard. A full inbox drops datagrams
/// (counted as `shard_busy`) rather than stalling every other shard.
const SHARD_INBOX: usize = 4096;

/// Receive buffer: larger than any datagram a WebRTC peer sends (they keep
/// under the path MTU), so nothing is silently truncated.
const RECV_BUF: usize = 4096;

/// SCTP send buffer per peer, shared by its channels. `realtime` is capped
/// at `realtime_buffer_limit` by the forwarder, so `control` always keeps
/// str0m's default 128 KiB for itself.
fn sctp_buffer(config: &RelayConfig) -> usize {
    128 * 1024 + config.realtime_buffer_limit
}

/// The server peer: one UDP socket, the receive loop and the shards.
pub struct Relay {
    local_addr: SocketAddr,
    host: Arc<Host>,
    router: Option<JoinHandle<()>>,
    shards: Vec<JoinHandle<()>>,
    active_matches: Arc<AtomicUsize>,
}

impl Relay {
    /// Binds the UDP socket and starts the receive loop and the shards.
    /// Starts the relay; authoritative rooms run the built-in games
    /// ([`crate::dizolaur`]).
    pub async fn start(config: RelayConfig, metrics: RelayMetrics) -> io::Result<Relay> {
        Relay::start_with_games(config, metrics, Arc::new(crate::games::BuiltinGames)).await
    }

    /// Starts the relay with the games of `games` (see docs/simulation.md).
    pub async fn start_with_games(
        config: RelayConfig,
        metrics: RelayMetrics,
        games: Arc<dyn GameFactory>,
    ) -> io::Result<Relay> {
        let socket = Arc::new(bind_udp(config.listen)?);
        let dtls_cert = tokio::task::spawn_blocking(generate_dtls_cert)
            .await
            .map_err(io::Error::other)??;
        let local_addr = socket.local_addr()?;
        let (candidate_addrs, destination) = advertised(local_addr, config.public_addr)?;
        let candidates = candidate_addrs
            .iter()
            .map(|a| {
                Candidate::host(*a, "udp").map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cannot use {a} as an ICE candidate: {e}"),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;

        let shard_count = match config.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let routes = Arc::new(Mutex::new(Routes::with_limits(
            config.max_peers,
            config.peer_datagram_rate,
        )));
        let liveness = LivenessConfig::new(config.dead_after, config.heartbeat_interval);
        if liveness.heartbeat_interval >= liveness.dead_after {
            warn!(
                dead_after = ?liveness.dead_after,
                heartbeat_interval = ?liveness.heartbeat_interval,
                "the heartbeat interval is not shorter than dead_after: idle clients will be \
                 closed as dead"
            );
        }
        let active_matches = Arc::new(AtomicUsize::new(0));
        // `/metrics` shows what this relay's lab injects.
        metrics.netlab.attach(config.netlab.clone());
        let mut senders = Vec::with_capacity(shard_count);
        let mut shards = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let (tx, rx) = mpsc::channel(SHARD_INBOX);
            let ctx = ShardContext {
                socket: socket.clone(),
                local: destination,
                routes: routes.clone(),
                metrics: metrics.clone(),
                realtime_buffer_limit: config.realtime_buffer_limit,
                games: games.clone(),
                game: config.game.clone(),
                resume: config.resume.clone(),
                game_name: config.game_name.clone(),
                record_dir: config.record_dir.clone(),
                netlab: config.netlab.clone(),
                liveness,
                active_matches: active_matches.clone(),
            };
            shards.push(tokio::spawn(Shard::new(index, ctx).run(rx)));
            senders.push(tx);
        }
        let router = tokio::spawn(receive_loop(
            socket,
            routes.clone(),
            senders.clone(),
            metrics.clone(),
        ));
        info!(
            %local_addr,
            candidates = ?candidate_addrs,
            shards = shard_count,
            "relay listening"
        );
        let host = Arc::new(Host {
            shards: senders,
            routes,
            candidates,
            dtls_cert,
            sctp_buffer: sctp_buffer(&config),
            max_peers: config.max_peers,
            metrics,
            shutting_down: AtomicBool::new(false),
        });
        Ok(Relay {
            local_addr,
            host,
            router: Some(router),
            shards,
            active_matches,
        })
    }

    /// The bound UDP address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Authoritative rooms whose match is in progress
    /// ([`crate::Simulation::in_match`]), over all shards. One atomic load:
    /// the shards keep it up to date as matches start and end.
    pub fn active_matches(&self) -> usize {
        self.active_matches.load(Ordering::Relaxed)
    }

    /// The hand-off signaling uses to open, feed and close sessions.
    pub fn host(&self) -> Arc<dyn SessionHost> {
        self.host.clone()
    }

    /// Closes every session (each gets `Closed`, the client a DTLS close),
    /// then stops the shards and the receive loop. Later `open` calls fail
    /// with `Unavailable`.
    pub async fn shutdown(mut self) {
        self.host.shutting_down.store(true, Ordering::SeqCst);
        for tx in &self.host.shards {
            let _ = tx.send(ShardMsg::Shutdown).await;
        }
        for shard in self.shards.drain(..) {
            let _ = shard.await;
        }
        if let Some(router) = self.router.take() {
            router.abort();
            let _ = router.await;
        }
        info!(local_addr = %self.local_addr, "relay stopped");
    }
}

impl Drop for Relay {
    /// Dropped without `shutdown`: stop the tasks anyway, so the socket is
    /// released.
    fn drop(&mut self) {
        self.host.shutting_down.store(true, Ordering::SeqCst);
        if let Some(router) = self.router.take() {
            router.abort();
        }
        for shard in &self.shards {
            shard.abort();
        }
    }
}

/// The host candidates to advertise, and the address str0m should see as
/// the destination of received datagrams.
fn advertised(
    local: SocketAddr,
    public: Option<SocketAddr>,
) -> io::Result<(Vec<SocketAddr>, SocketAddr)> {
    let mut addrs = Vec::new();
    if !local.ip().is_unspecified() {
        addrs.push(local);
    }
    if let Some(public) = public {
        if !addrs.contains(&public) {
            addrs.push(public);
        }
    }
    // Bound to a wildcard address, the socket cannot tell which of its
    // addresses a datagram came to; the public address is the only one
    // advertised, so it is the one str0m must see.
    match addrs.first() {
        Some(first) => Ok((addrs.clone(), *first)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "relay listens on {local}, which clients cannot reach: listen on a specific IP \
                 or set the relay public address"
            ),
        )),
    }
}

/// All members of a room share a shard.
/// The server's DTLS certificate, one for the whole process; its fingerprint
/// goes in every answer, which signaling delivers. Generating one per session
/// cost about 2 ms of CPU per join, and the first generation also pays the
/// crypto library's one-time setup (about 50 ms), which belongs at startup,
/// not in the first player's join. Every handshake still uses fresh ECDHE
/// keys, so sessions keep forward secrecy.
fn generate_dtls_cert() -> io::Result<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| io::Error::other("cannot generate the DTLS certificate"))
}

/// Socket buffer asked of the kernel for the one UDP socket (it grants at
/// most `net.core.rmem_max` / `wmem_max`). Every peer shares this socket, so a
/// burst from many peers must not overflow Linux's default of about 200 KiB.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    info!(
        recv_buffer = socket.recv_buffer_size().unwrap_or(0),
        send_buffer = socket.send_buffer_size().unwrap_or(0),
        "relay UDP socket buffers (bytes)"
    );
    UdpSocket::from_std(socket.into())
}

fn shard_for(room: &RoomId, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    room.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// Reads the socket and hands each datagram to its peer's shard.
async fn receive_loop(
    socket: Arc<UdpSocket>,
    routes: Arc<Mutex<Routes>>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    metrics: RelayMetrics,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let dropped = |reason: &'static str| {
        metrics
            .datagrams_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // E.g. ICMP errors surfacing on the socket; they concern one
                // remote, never the loop.
                debug!(error = %e, "UDP receive error");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let received = Instant::now();
        metrics.datagrams_in.inc();
        metrics.bytes_in.inc_by(len as u64);
        let data = &buf[..len];
        let route = lock(&routes).route(source, data, received);
        match route {
            Ok(route) => {
                let Some(shard) = shards.get(route.shard) else {
                    dropped("no_shard");
                    continue;
                };
                let msg = ShardMsg::Datagram(Datagram {
                    route,
                    source,
                    received,
                    data: data.to_vec(),
                });
                match shard.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => dropped("shard_busy"),
                    Err(mpsc::error::TrySendError::Closed(_)) => dropped("shutting_down"),
                }
            }
            Err(no_route) => {
                debug!(%source, len, reason = no_route.label(), "datagram dropped");
                dropped(no_route.label());
            }
        }
    }
}

/// The [`SessionHost`] behind [`Relay::host`].
struct Host {
    shards: Vec<mpsc::Sender<ShardMsg>>,
    routes: Arc<Mutex<Routes>>,
    candidates: Vec<Candidate>,
    dtls_cert: DtlsCert,
    sctp_buffer: usize,
    max_peers: usize,
    metrics: RelayMetrics,
    shutting_down: AtomicBool,
}

impl Host {
    fn rejected(&self, reason: &'static str) {
        self.metrics
            .sessions_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    fn unavailable_if_stopping(&self) -> Result<(), SessionError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(SessionError::Unavailable(
                "the relay is shutting down".into(),
            ));
        }
        Ok(())
    }
}

/// An ICE-lite `Rtc` that has accepted `offer_sdp`, its ICE ufrag and the answer.
fn accept_offer(
    offer_sdp: &str,
    candidates: &[Candidate],
    dtls_cert: &DtlsCert,
    sctp_buffer: usize,
) -> Result<(Rtc, String, SessionAnswer), SessionError> {
    let offer = SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|e| SessionError::BadSdp(format!("cannot parse the offer: {e}")))?;
    if !offer_sdp
        .lines()
        .any(|l| l.trim_start().starts_with("m=application"))
    {
        return Err(SessionError::BadSdp(
            "the offer has no DataChannel section (m=application): create the \"realtime\" and \
             \"control\" channels before createOffer"
                .into(),
        ));
    }
    let creds = IceCreds::new();
    let ufrag = creds.ufrag.clone();
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .set_dtls_cert(dtls_cert.clone())
        .set_sctp_max_buffered_amount(sctp_buffer)
        // Announced in the answer (a=max-message-size): clients refuse to send
        // bigger messages, and the relay never buffers one.
        .set_sctp_max_message_size(MAX_CONTROL_MESSAGE_BYTES as u32)
        .build(Instant::now());
    let mut lines = Vec::with_capacity(candidates.len());
    for c in candidates {
        if let Some(added) = rtc.add_local_candidate(c.clone()) {
            lines.push(added.to_sdp_string());
        }
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| SessionError::BadSdp(format!("cannot accept the offer: {e}")))?;
    Ok((
        rtc,
        ufrag,
        SessionAnswer {
            sdp: answer.to_sdp_string(),
            candidates: lines,
        },
    ))
}

#[async_trait::async_trait]
impl SessionHost for Host {
    async fn open(&self, request: SessionRequest) -> Result<SessionAnswer, SessionError> {
        self.unavailable_if_stopping()?;
        let SessionRequest {
            peer,
            room,
            kind,
            name,
            offer_sdp,
            events,
        } = request;
        let shard = shard_for(&room, self.shards.len());
        let reserved = lock(&self.routes).reserve(peer, shard, Instant::now());
        let session = match reserved {
            Ok(session) => session,
            Err(Refused::SessionExists) => return Err(SessionError::SessionExists(peer)),
            Err(Refused::Full) => {
                self.rejected("server_full");
                debug!(%peer, max_peers = self.max_peers, "offer refused: server full");
                return Err(SessionError::ServerFull(self.max_peers));
            }
        };
        let forget = || {
            lock(&self.routes).remove(peer, Some(session));
        };

        // SDP parsing and answer building: keep them off the async workers.
        let candidates = self.candidates.clone();
        let dtls_cert = self.dtls_cert.clone();
        let sctp_buffer = self.sctp_buffer;
        let accepted = tokio::task::spawn_blocking(move || {
            accept_offer(&offer_sdp, &candidates, &dtls_cert, sctp_buffer)
        })
        .await;
        let (rtc, ufrag, answer) = match accepted {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                forget();
                self.rejected("bad_sdp");
                debug!(%peer, error = %e, "offer refused");
                return Err(e);
            }
            Err(e) => {
                forget();
                warn!(%peer, error = %e, "accepting an offer failed");
                return Err(SessionError::Unavailable(
                    "the relay could not process the offer".into(),
                ));
            }
        };

        // The shard gets the session before any datagram can route to it:
        // both travel through the same ordered inbox.
        let new = NewSession {
            peer,
            session,
            room: room.clone(),
            kind,
            name,
            rtc,
            events,
        };
        if self.shards[shard]
            .send(ShardMsg::Open(Box::new(new)))
            .await
            .is_err()
        {
            forget();
            return Err(SessionError::Unavailable(
                "the relay is shutting down".into(),
            ));
        }
        // Counted here, when the shard is bound to get it, so the gauge is
        // up to date when `open` returns; the shard counts it down.
        self.metrics.sessions.inc();
        if !lock(&self.routes).set_ufrag(peer, session, &ufrag) {
            // `close` ran while the offer was being accepted.
            let msg = ShardMsg::Close {
                peer,
                session: Some(session),
                room: room.clone(),
                seat: SeatEnd::Keep,
            };
            let _ = self.shards[shard].send(msg).await;
            return Err(SessionError::Unavailable(
                "the session was closed while it was being opened".into(),
            ));
        }
        debug!(%peer, %room, shard, "answer ready");
        Ok(answer)
    }

    async fn add_remote_candidate(
        &self,
        peer: PeerId,
        candidate: String,
    ) -> Result<(), SessionError> {
        let (shard, session) = lock(&self.routes)
            .session_of(peer)
            .ok_or(SessionError::NoSession(peer))?;
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() || is_mdns_candidate(line) {
            return Ok(());
        }
        let line = if line.starts_with("candidate:") {
            line.to_owned()
        } else {
            format!("candidate:{line}")
        };
        let candidate = Candidate::from_sdp_string(&line)
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        self.shards[shard]
            .send(ShardMsg::Candidate {
                peer,
                session,
                candidate,
            })
            .await
            .map_err(|_| SessionError::Unavailable("the relay is shutting down".into()))
    }

    async fn close(&self, peer: PeerId, room: &RoomId, seat: SeatEnd) {
        let removed = lock(&self.routes).remove(peer, None);
        let (shard, session) = match removed {
            Some((shard, session)) => (shard, Some(session)),
            // No session: only a kept seat can be left to end.
            None if seat == SeatEnd::Keep => return,
            None => (shard_for(room, self.shards.len()), None),
        };
        let msg = ShardMsg::Close {
            peer,
            session,
            room: room.clone(),
            seat,
        };
        let _ = self.shards[shard].send(msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_map_to_a_stable_shard() {
        let a = RoomId::try_from("lobby").unwrap();
        assert_eq!(shard_for(&a, 4), shard_for(&a, 4));
        assert_eq!(shard_for(&a, 1), 0);
        assert_eq!(shard_for(&a, 0), 0);
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| shard_for(&RoomId::try_from(format!("r{i}")).unwrap(), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 rooms should use all 4 shards");
    }

    #[test]
    fn advertises_a_reachable_address() {
        let local: SocketAddr = "127.0.0.1:3480".parse().unwrap();
        let public: SocketAddr = "203.0.113.7:3480".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:3480".parse().unwrap();
        assert_eq!(advertised(local, None).unwrap(), (vec![local], local));
        assert_eq!(
            advertised(local, Some(public)).unwrap(),
            (vec![local, public], local)
        );
        assert_eq!(
            advertised(any, Some(public)).unwrap(),
            (vec![public], public)
        );
        assert!(advertised(any, None).is_err());
    }

    #[test]
    fn bad_offers_are_bad_sdp() {
        let cert = generate_dtls_cert().unwrap();
        let err = accept_offer("not sdp", &[], &cert, 1024).unwrap_err();
        assert!(
            matches!(err, SessionError::BadSdp(ref m) if m.starts_with("cannot parse")),
            "{err}"
        );
    }
}
