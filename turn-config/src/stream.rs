//! TURN over TCP and TLS: [`StreamListener`] accepts TCP connections (TLS on
//! top when given a certificate) on one address and presents all of them to
//! the `turn` crate as **one packet [`Conn`]**, the shape of its UDP
//! listeners: [`recv_from`](Conn::recv_from) yields each complete message
//! with its connection's remote address, [`send_to`](Conn::send_to) writes a
//! message to the connection with that address. The crate's `Server`, our
//! [`PeerRequestGuard`](crate::relay_conn::PeerRequestGuard) and any other
//! listener wrapper sit on top unchanged; a TCP remote address is unique per
//! connection, so it is a sound key for the crate's five-tuples.
//!
//! [`StreamConn`] is the client side: one TCP/TLS connection to a TURN server
//! as a packet `Conn`, for the crate's `Client` (tests, a probe).
//!
//! # Framing
//!
//! TURN over TCP/TLS as TURN clients speak it, RFC 8656 §3.1 and §12.5
//! (RFC 5766 §2.1, §11.5): no extra framing, messages are self-delimiting.
//!
//! - First two bits `00`: a STUN message. Its length field counts the
//!   attributes after the 20-byte header and is a multiple of 4; we also
//!   require the magic cookie (`0x2112A442`; RFC 3489 STUN is not TURN).
//! - First two bits `01`: a ChannelData message: channel number, length,
//!   data, **padded to a multiple of 4 over TCP** (the padding is not in the
//!   length field). Any channel number `0x4000..=0x7FFF`: RFC 8656 narrowed
//!   the valid range to `0x4FFF`, but RFC 5766 clients still pick above it
//!   (`turnutils_uclient` binds e.g. `0x6d82`) and the crate accepts them.
//! - First two bits `10`/`11`: garbage.
//!
//! This is exactly what Chromium sends and expects (WebRTC's
//! `AsyncStunTCPSocket`: STUN by its length field, ChannelData with
//! `pad_bytes`, padding stripped on receive) and what coturn and its
//! `turnutils_uclient -t` use (`stun_get_message_len_str(.., padding = 1)`).
//! Architecture notes and issue 4 mention "RFC 6544 framing": RFC 6544 is
//! ICE-TCP, whose RFC 4571 two-byte length prefix frames ICE connectivity
//! checks and media on *peer* TCP candidates; no TURN client puts it on a
//! TURN TCP/TLS connection, and a server expecting it would read the type
//! of Chromium's first Allocate (`0x0003`) as a 3-byte frame length.
//!
//! Both directions: received ChannelData is handed to the crate without its
//! padding (what it sees over UDP); ChannelData the crate sends is padded if
//! it is not already (the crate pads; other wrappers may not). Messages on
//! TLS connections are written one per TLS record (naive clients such as
//! `turnutils_uclient -S` treat one `SSL_read` as one message); on plain TCP
//! queued messages are coalesced into one write.
//!
//! # Robustness
//!
//! - Per-connection read buffer starts at 4 KiB and grows only to the frame
//!   being read, at most [`MAX_FRAME_BYTES`] (the largest STUN message);
//!   it shrinks back once drained.
//! - Garbage (not STUN, not ChannelData, bad STUN length, no cookie) closes
//!   that connection only.
//! - Each connection has a write queue bounded in bytes
//!   ([`StreamOptions::max_write_queue_bytes`]) and `send_to` never blocks
//!   the crate's loops: when the queue is full the message is dropped (and
//!   counted), which is what the same congestion would do to UDP and what
//!   WebRTC above TURN copes with (SCTP retransmits, congestion control).
//!   A client that stops reading altogether is disconnected: each write to
//!   the socket must complete within [`StreamOptions::write_stall_timeout`].
//!   So a slow reader costs at most the queue, never more server memory,
//!   and a momentary burst (or a busy runtime that wakes the writer late)
//!   costs a few packets, not the player's connection.
//! - Connection limits per listener and per source IP (IPv4-mapped IPv6
//!   counted as IPv4); connections over a limit are accepted and closed at
//!   once.
//! - Timeouts: the TLS handshake *and* the first complete TURN message must
//!   arrive within [`StreamOptions::handshake_timeout`]; afterwards a
//!   connection that sends no complete message for
//!   [`StreamOptions::idle_timeout`] is closed.
//! - Messages larger than the crate's receive buffer (1500 bytes in `turn`
//!   0.17.2) are dropped and counted rather than truncated.
//! - Closing ends quietly: `send_to` a connection that is gone reports
//!   success (the crate would log every such packet at error level) and is
//!   counted.
//! - All of it is counted in [`StreamStats`].
//!
//! # Lifecycle
//!
//! [`Conn::close`] on the listener does nothing: the `turn` crate calls it
//! on the listener conn whenever an allocation closes. Stop a listener with
//! [`StreamListener::shutdown`] or by dropping it (the crate's read loop
//! drops its `Arc` when the server closes). The crate reads each listener
//! `Conn` in one loop that handles a message completely before reading the
//! next; that holds here too, all connections feeding one queue.
//!
//! # Allocations of closed connections
//!
//! An allocation is bound to its five-tuple; once the TCP connection is gone
//! nobody can refresh or use it, but the `turn` crate has no hook to delete
//! it (it waits for the lifetime, up to an hour, still counting toward
//! quotas). With [`StreamOptions::release_allocations`] set to the server's
//! `AuthHandler`, the listener remembers the USERNAME, REALM and NONCE of the
//! last authenticated-looking request on each connection and, when the
//! connection closes, hands the crate a `Refresh` with `LIFETIME 0` from that
//! connection's address, signed with the key the `AuthHandler` gives for
//! that username — the request the client would have sent to deallocate.
//! The crate's answer goes nowhere (the connection is gone). Best effort: an
//! expired nonce (over an hour old) or expired REST credentials leave the
//! allocation to its lifetime, and such a closing counts one refusal in the
//! auth handler's statistics.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Getter, Message, MessageType, Setter, CLASS_REQUEST, METHOD_REFRESH};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};
use turn::auth::AuthHandler;
use turn::proto::lifetime::Lifetime;
use webrtc_util::Conn;

// ---------------------------------------------------------------------------
// Framing (sans-IO)
// ---------------------------------------------------------------------------

/// STUN header: type, length, magic cookie, transaction id.
pub const STUN_HEADER_BYTES: usize = 20;
/// ChannelData header: channel number, length.
pub const CHANNEL_DATA_HEADER_BYTES: usize = 4;
/// The largest frame either kind can have on the wire: a STUN message with
/// the largest length that is a multiple of 4 (ChannelData tops out at
/// 4 + 65535 + 1 byte of padding = 65540).
pub const MAX_FRAME_BYTES: usize = STUN_HEADER_BYTES + 65532;

const MAGIC_COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();

/// Which kind of TURN message a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Stun,
    ChannelData,
}

/// The size of the frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    /// The message as the crate sees it (no padding).
    pub message_len: usize,
    /// The frame on the stream (ChannelData padded to a multiple of 4).
    pub wire_len: usize,
}

/// Why bytes on a TURN TCP/TLS stream are not a TURN message. The connection
/// they came on is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("first byte {0:#04x} starts neither a STUN message (0b00) nor ChannelData (0b01)")]
    NotTurn(u8),
    #[error("STUN message length {0} is not a multiple of 4")]
    StunLength(u16),
    #[error("STUN message without the magic cookie")]
    NoMagicCookie,
    #[error("message is {got} bytes, its header says {expected}")]
    Length { expected: usize, got: usize },
}

/// The frame at the start of `buf`: `Ok(None)` while too few bytes are there
/// to tell (at most 8 are needed), an error as soon as they show garbage.
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0b00 => {
            // Check the cookie bytes we already have, so garbage fails fast.
            let have = buf.len().min(8);
            if have > 4 && buf[4..have] != MAGIC_COOKIE[..have - 4] {
                return Err(FrameError::NoMagicCookie);
            }
            if buf.len() < 4 {
                return Ok(None);
            }
            let length = u16::from_be_bytes([buf[2], buf[3]]);
            if !length.is_multiple_of(4) {
                return Err(FrameError::StunLength(length));
            }
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = STUN_HEADER_BYTES + usize::from(length);
            Ok(Some(FrameHeader {
                kind: FrameKind::Stun,
                message_len: len,
                wire_len: len,
            }))
        }
        0b01 => {
            if buf.len() < CHANNEL_DATA_HEADER_BYTES {
                return Ok(None);
            }
            let len = CHANNEL_DATA_HEADER_BYTES + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            Ok(Some(FrameHeader {
                kind: FrameKind::ChannelData,
                message_len: len,
                wire_len: len.next_multiple_of(4),
            }))
        }
        _ => Err(FrameError::NotTurn(first)),
    }
}

/// Appends `message` to `out` as it goes on a TURN TCP/TLS stream: a STUN
/// message as is, ChannelData padded to a multiple of 4 (unless it already
/// is). `message` must be exactly one complete message.
pub fn encode_frame(message: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = parse_frame_header(message)?.ok_or(FrameError::Length {
        expected: STUN_HEADER_BYTES,
        got: message.len(),
    })?;
    if message.len() == header.message_len || message.len() == header.wire_len {
        out.extend_from_slice(message);
        out.resize(out.len() + (header.wire_len - message.len()), 0);
        Ok(())
    } else {
        Err(FrameError::Length {
            expected: header.message_len,
            got: message.len(),
        })
    }
}

const INITIAL_READ_BUFFER: usize = 4096;
/// Free space below which consumed bytes are moved out of the way first.
const MIN_READ_SPACE: usize = 512;

/// Splits a TURN TCP/TLS byte stream into messages (padding stripped).
/// Holds at most one incomplete frame plus one read; its buffer grows only
/// to the frame being read ([`MAX_FRAME_BYTES`] at most) and shrinks back
/// once drained. Sans-IO: read into [`space`](Self::space), then
/// [`filled`](Self::filled), then take [`next_message`](Self::next_message)
/// until `None`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder {
            buf: vec![0; INITIAL_READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The buffer's current size (for tests of the memory bound).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Free space to read into; never empty. Call
    /// [`next_message`](Self::next_message) until it returns `Ok(None)`
    /// first, so that the buffer holds at most one incomplete frame.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > INITIAL_READ_BUFFER {
                self.buf = vec![0; INITIAL_READ_BUFFER];
            }
        }
        // Room the frame being read needs: all of it once its header is
        // known, one more byte otherwise.
        let pending = parse_frame_header(&self.buf[self.start..self.end])
            .ok()
            .flatten()
            .map_or(0, |h| h.wire_len);
        let want = pending.max(self.end - self.start + 1);
        if self.start > 0
            && (self.start + want > self.buf.len() || self.buf.len() - self.end < MIN_READ_SPACE)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if want > self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_FRAME_BYTES).max(want);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`space`](Self::space).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends received bytes (`space` + `filled` in a loop). Unlike reads
    /// into [`space`](Self::space), this may grow the buffer past the
    /// bound when `bytes` holds more than the frame being read; for tests.
    pub fn extend(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let space = self.space();
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// The next complete message without its padding, `Ok(None)` when more
    /// bytes are needed, or why the stream is not TURN (then drop it).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..self.end];
        let Some(header) = parse_frame_header(pending)? else {
            return Ok(None);
        };
        if pending.len() < header.wire_len {
            return Ok(None);
        }
        let message = pending[..header.message_len].to_vec();
        self.start += header.wire_len;
        Ok(Some(message))
    }
}

// ---------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------

/// Default [`StreamOptions::max_connections`]. Worst-case memory per
/// connection: read buffer ([`MAX_FRAME_BYTES`]) + write queue
/// ([`DEFAULT_MAX_WRITE_QUEUE_BYTES`]) + one coalesced write (16 KiB), plus
/// rustls' own buffers (64 KiB) on TLS: about 150 KiB on TCP, 220 KiB on
/// TLS, so under 1 GiB per listener even if every client misbehaves.
/// Raise it together with the process's open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default [`StreamOptions::max_connections_per_ip`]: room for a few hundred
/// players behind one NAT (one TURN connection per peer connection), which is
/// where TURN over TLS on 443 is needed most.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default [`StreamOptions::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`StreamOptions::idle_timeout`]. A client holding a permission
/// refreshes it before 5 minutes (RFC 8656 §9), Chromium refreshes its
/// allocation a minute before the 10-minute default lifetime ends, and ICE
/// consent checks run every few seconds on a used relay path.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default [`StreamOptions::max_write_queue_bytes`]: on top of the kernel's
/// socket buffer, which absorbs ordinary bursts.
pub const DEFAULT_MAX_WRITE_QUEUE_BYTES: usize = 64 * 1024;
/// Default [`StreamOptions::write_stall_timeout`].
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages from all connections waiting for the crate's read loop; readers
/// wait (TCP backpressure) when it is full.
const INBOUND_QUEUE: usize = 256;
/// Pause after a failed `accept` (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Largest coalesced write on plain TCP.
const WRITE_BATCH_BYTES: usize = 16 * 1024;
/// RFC 8489 §14.3 / §14.9 / §14.10 bounds on USERNAME, REALM and NONCE.
const MAX_USERNAME_BYTES: usize = 513;
const MAX_REALM_OR_NONCE_BYTES: usize = 763;

/// Limits and timeouts of a [`StreamListener`].
#[derive(Clone)]
pub struct StreamOptions {
    /// Connections open at once on this listener (handshakes included).
    pub max_connections: usize,
    /// Connections open at once from one source IP.
    pub max_connections_per_ip: usize,
    /// Time from accept to the end of the TLS handshake *and* the first
    /// complete TURN message.
    pub handshake_timeout: Duration,
    /// Longest gap between complete messages from a client.
    pub idle_timeout: Duration,
    /// Bytes queued for one connection beyond which messages for it are
    /// dropped.
    pub max_write_queue_bytes: usize,
    /// Longest time one write to a connection's socket may take (the client
    /// reads nothing); then the connection is closed.
    pub write_stall_timeout: Duration,
    /// The server's `AuthHandler`, to release the allocation of a closed
    /// connection (see the module docs); `None` leaves it to its lifetime.
    pub release_allocations: Option<Arc<dyn AuthHandler + Send + Sync>>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_write_queue_bytes: DEFAULT_MAX_WRITE_QUEUE_BYTES,
            write_stall_timeout: DEFAULT_WRITE_STALL_TIMEOUT,
            release_allocations: None,
        }
    }
}

impl fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamOptions")
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_write_queue_bytes", &self.max_write_queue_bytes)
            .field("write_stall_timeout", &self.write_stall_timeout)
            .field("release_allocations", &self.release_allocations.is_some())
            .finish()
    }
}

/// The listener protocol, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamTransport {
    Tcp,
    Tls,
}

impl StreamTransport {
    /// `"tcp"` or `"tls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamTransport::Tcp => "tcp",
            StreamTransport::Tls => "tls",
        }
    }
}

impl fmt::Display for StreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point-in-time copy of a listener's counters (all since it started,
/// except `active`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Connections open now (handshakes included).
    pub active: u64,
    /// Connections accepted within the limits.
    pub accepted: u64,
    /// Connections closed at once: listener full / source IP full.
    pub refused_listener_limit: u64,
    pub refused_ip_limit: u64,
    /// `accept` failures (e.g. out of file descriptors).
    pub accept_errors: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failed: u64,
    /// How connections ended.
    pub closed_by_client: u64,
    pub closed_garbage: u64,
    /// No first message within the handshake timeout, or idle too long.
    pub closed_timeout: u64,
    /// A write stalled longer than the write stall timeout.
    pub closed_slow_reader: u64,
    /// Messages received and handed to the crate, and their bytes.
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Received messages dropped: larger than the crate's receive buffer.
    pub dropped_oversize: u64,
    /// Messages queued to clients, and their bytes (with padding).
    pub messages_out: u64,
    pub bytes_out: u64,
    /// Messages for connections that were already gone.
    pub dropped_no_connection: u64,
    /// Messages dropped because their connection's write queue was full.
    pub dropped_queue_full: u64,
    /// Deallocation requests made for closed connections.
    pub released_allocations: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_listener_limit: AtomicU64,
    refused_ip_limit: AtomicU64,
    accept_errors: AtomicU64,
    tls_handshake_failed: AtomicU64,
    closed_by_client: AtomicU64,
    closed_garbage: AtomicU64,
    closed_timeout: AtomicU64,
    closed_slow_reader: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    dropped_oversize: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped_no_connection: AtomicU64,
    dropped_queue_full: AtomicU64,
    released_allocations: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[derive(Default)]
struct Slots {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection as `send_to` sees it.
struct ConnEntry {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: AtomicUsize,
    closed: AtomicBool,
}

struct Shared {
    local_addr: SocketAddr,
    transport: StreamTransport,
    options: StreamOptions,
    tls: Option<RwLock<TlsAcceptor>>,
    conns: RwLock<HashMap<SocketAddr, Arc<ConnEntry>>>,
    slots: Mutex<Slots>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// IPv4-mapped IPv6 (a dual-stack `[::]` listener) as plain IPv4, so limits
/// and the crate's XOR-MAPPED-ADDRESS see the client's real family.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A connection's place under the listener limits; freed on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
        let mut slots = lock(&shared.slots);
        if slots.total >= shared.options.max_connections {
            bump(&shared.counters.refused_listener_limit, 1);
            return None;
        }
        let per_ip = slots.per_ip.entry(ip).or_insert(0);
        if *per_ip >= shared.options.max_connections_per_ip {
            bump(&shared.counters.refused_ip_limit, 1);
            return None;
        }
        *per_ip += 1;
        slots.total += 1;
        bump(&shared.counters.accepted, 1);
        Some(Slot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.shared.slots);
        slots.total = slots.total.saturating_sub(1);
        if let Entry::Occupied(mut e) = slots.per_ip.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// TURN over TCP or TLS on one address, as one packet [`Conn`] for the
/// `turn` crate (see the module docs). [`shutdown`](Self::shutdown) or
/// dropping the last `Arc` stops accepting and closes every connection;
/// [`Conn::close`] does not (see there).
pub struct StreamListener {
    shared: Arc<Shared>,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
}

impl fmt::Debug for StreamListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamListener")
            .field("local_addr", &self.shared.local_addr)
            .field("transport", &self.shared.transport)
            .field("options", &self.shared.options)
            .finish()
    }
}

impl StreamListener {
    /// TURN over plain TCP on `addr` (`turn:host:port?transport=tcp`).
    pub async fn bind_tcp(addr: SocketAddr, options: StreamOptions) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr).await?, None, options)
    }

    /// TURN over TLS on `addr` (`turns:host:port`); see
    /// [`tls_acceptor_from_pem_files`].
    pub async fn bind_tls(
        addr: SocketAddr,
        tls: TlsAcceptor,
        options: StreamOptions,
    ) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr).await?, Some(tls), options)
    }

    /// Serves on an already bound listener (TLS when `tls` is given). Must be
    /// called within a tokio runtime.
    pub fn from_listener(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        options: StreamOptions,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            local_addr,
            transport: if tls.is_some() {
                StreamTransport::Tls
            } else {
                StreamTransport::Tcp
            },
            options,
            tls: tls.map(RwLock::new),
            conns: RwLock::default(),
            slots: Mutex::default(),
            counters: Counters::default(),
            shutdown: watch::channel(false).0,
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), listener, inbound_tx));
        Ok(StreamListener {
            shared,
            inbound: tokio::sync::Mutex::new(inbound_rx),
        })
    }

    pub fn transport(&self) -> StreamTransport {
        self.shared.transport
    }

    pub fn options(&self) -> &StreamOptions {
        &self.shared.options
    }

    /// Connections open now (handshakes included).
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.slots).total
    }

    pub fn stats(&self) -> StreamStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StreamStats {
            active: self.connection_count() as u64,
            accepted: load(&c.accepted),
            refused_listener_limit: load(&c.refused_listener_limit),
            refused_ip_limit: load(&c.refused_ip_limit),
            accept_errors: load(&c.accept_errors),
            tls_handshake_failed: load(&c.tls_handshake_failed),
            closed_by_client: load(&c.closed_by_client),
            closed_garbage: load(&c.closed_garbage),
            closed_timeout: load(&c.closed_timeout),
            closed_slow_reader: load(&c.closed_slow_reader),
            messages_in: load(&c.messages_in),
            bytes_in: load(&c.bytes_in),
            dropped_oversize: load(&c.dropped_oversize),
            messages_out: load(&c.messages_out),
            bytes_out: load(&c.bytes_out),
            dropped_no_connection: load(&c.dropped_no_connection),
            dropped_queue_full: load(&c.dropped_queue_full),
            released_allocations: load(&c.released_allocations),
        }
    }

    /// Replaces the certificate for new TLS connections (e.g. a renewed
    /// one, on reload); open connections keep theirs. `false` on a plain TCP
    /// listener.
    pub fn replace_tls(&self, tls: TlsAcceptor) -> bool {
        match &self.shared.tls {
            Some(current) => {
                *write(current) = tls;
                true
            }
            None => false,
        }
    }

    /// Stops accepting, closes every connection, and makes `recv_from`
    /// fail, which ends the crate's read loop for this listener. Also done
    /// when the listener is dropped.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn closed_error() -> webrtc_util::Error {
    webrtc_util::Error::ErrClosedListener
}

#[async_trait]
impl Conn for StreamListener {
    /// Not supported: a listener has many remotes.
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "connect is not supported on a TURN stream listener".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    /// The next complete message from any connection, padding stripped,
    /// with that connection's remote address. Messages larger than `buf` are
    /// dropped (counted). An error once the listener is closed.
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            let (message, from) = tokio::select! {
                m = inbound.recv() => m.ok_or_else(closed_error)?,
                _ = shutdown.wait_for(|closed| *closed) => return Err(closed_error()),
            };
            if message.len() > buf.len() {
                bump(&self.shared.counters.dropped_oversize, 1);
                continue;
            }
            buf[..message.len()].copy_from_slice(&message);
            return Ok((message.len(), from));
        }
    }

    /// Not supported: a listener has many remotes.
    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "send is not supported on a TURN stream listener; use send_to".into(),
        ))
    }

    /// Queues one complete STUN or ChannelData message (padded if needed)
    /// for the connection with remote address `target`; never blocks. A
    /// message for a connection that is gone or whose write queue is full is
    /// dropped, counted and still reported as sent (see the module docs). An
    /// error only for a `buf` that is not exactly one message.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let counters = &self.shared.counters;
        let entry = read(&self.shared.conns).get(&canonical(target)).cloned();
        let Some(entry) = entry.filter(|e| !e.closed.load(Ordering::Relaxed)) else {
            bump(&counters.dropped_no_connection, 1);
            return Ok(buf.len());
        };
        let mut frame = Vec::with_capacity(buf.len() + 3);
        encode_frame(buf, &mut frame)
            .map_err(|e| webrtc_util::Error::Other(format!("TURN stream send_to: {e}")))?;
        let size = frame.len();
        let queued = entry.queued.fetch_add(size, Ordering::Relaxed) + size;
        if queued > self.shared.options.max_write_queue_bytes {
            entry.queued.fetch_sub(size, Ordering::Relaxed);
            bump(&counters.dropped_queue_full, 1);
            return Ok(buf.len());
        }
        if entry.tx.send(frame).is_err() {
            bump(&counters.dropped_no_connection, 1);
            return Ok(buf.len());
        }
        bump(&counters.messages_out, 1);
        bump(&counters.bytes_out, size as u64);
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.shared.local_addr)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Does nothing, like `Conn::close` of a tokio `UdpSocket`: the `turn`
    /// crate (0.17.2) calls `close` on the *listener* conn every time an
    /// allocation closes (`Allocation::close`: `turn_socket.close()`), so
    /// closing here would take every client of this listener down with one
    /// expired allocation. Use [`StreamListener::shutdown`] or drop it; the
    /// crate's read loop drops its `Arc` when the server closes.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

type Inbound = mpsc::Sender<(Vec<u8>, SocketAddr)>;

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, inbound: Inbound) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|closed| *closed) => return,
        };
        let (stream, peer) = match accepted {
            Ok(v) => v,
            Err(_) => {
                bump(&shared.counters.accept_errors, 1);
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    _ = shutdown.wait_for(|closed| *closed) => return,
                }
            }
        };
        let peer = canonical(peer);
        let Some(slot) = Slot::take(&shared, peer.ip()) else {
            continue; // dropping `stream` closes it
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            Arc::clone(&shared),
            stream,
            peer,
            slot,
            inbound.clone(),
        ));
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    inbound: Inbound,
) {
    let first_deadline = Instant::now() + shared.options.handshake_timeout;
    match &shared.tls {
        None => run_connection(&shared, tcp, peer, first_deadline, &inbound).await,
        Some(tls) => {
            let acceptor = read(tls).clone();
            let mut shutdown = shared.shutdown.subscribe();
            let handshake = tokio::select! {
                r = tokio::time::timeout_at(first_deadline, acceptor.accept(tcp)) => r,
                _ = shutdown.wait_for(|closed| *closed) => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    run_connection(&shared, stream, peer, first_deadline, &inbound).await
                }
                _ => bump(&shared.counters.tls_handshake_failed, 1),
            }
        }
    }
    drop(slot);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ByClient,
    Garbage,
    Timeout,
    SlowReader,
    Shutdown,
}

/// USERNAME / REALM / NONCE of the last request on a connection that may
/// have authenticated; what a deallocation on close needs.
#[derive(Debug, Clone)]
struct SeenCredentials {
    username: String,
    realm: String,
    nonce: String,
}

async fn run_connection<S>(
    shared: &Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    first_deadline: Instant,
    inbound: &Inbound,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let entry = Arc::new(ConnEntry {
        tx,
        queued: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    });
    match write(&shared.conns).entry(peer) {
        // A TCP remote address cannot be open twice; if a closing
        // connection's entry is still there, refuse the newcomer.
        Entry::Occupied(_) => return,
        Entry::Vacant(v) => {
            v.insert(Arc::clone(&entry));
        }
    }
    let mut shutdown = shared.shutdown.subscribe();
    let mut seen = None;
    let (reader, writer) = tokio::io::split(stream);
    let end = tokio::select! {
        end = read_loop(shared, reader, peer, first_deadline, inbound, &mut seen) => end,
        end = write_loop(shared, writer, &entry, rx) => end,
        _ = shutdown.wait_for(|closed| *closed) => End::Shutdown,
    };
    entry.closed.store(true, Ordering::Relaxed);
    let counters = &shared.counters;
    match end {
        End::ByClient => bump(&counters.closed_by_client, 1),
        End::Garbage => bump(&counters.closed_garbage, 1),
        End::Timeout => bump(&counters.closed_timeout, 1),
        End::SlowReader => bump(&counters.closed_slow_reader, 1),
        End::Shutdown => {}
    }
    if end != End::Shutdown {
        if let (Some(auth), Some(seen)) = (&shared.options.release_allocations, seen) {
            if let Some(request) = release_request(auth.as_ref(), &seen, peer) {
                tokio::select! {
                    r = inbound.send((request, peer)) => {
                        if r.is_ok() {
                            bump(&counters.released_allocations, 1);
                        }
                    }
                    _ = shutdown.wait_for(|closed| *closed) => {}
                }
            }
        }
    }
    let mut conns = write(&shared.conns);
    if conns.get(&peer).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
        conns.remove(&peer);
    }
}

async fn read_loop<R: AsyncRead>(
    shared: &Shared,
    mut reader: ReadHalf<R>,
    peer: SocketAddr,
    first_deadline: Instant,
    inbound: &Inbound,
    seen: &mut Option<SeenCredentials>,
) -> End {
    let counters = &shared.counters;
    let remember = shared.options.release_allocations.is_some();
    let mut decoder = FrameDecoder::new();
    let mut deadline = first_deadline;
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    bump(&counters.messages_in, 1);
                    bump(&counters.bytes_in, message.len() as u64);
                    if remember {
                        note_credentials(&message, seen);
                    }
                    if inbound.send((message, peer)).await.is_err() {
                        return End::Shutdown;
                    }
                    deadline = Instant::now() + shared.options.idle_timeout;
                }
                Ok(None) => break,
                Err(_) => return End::Garbage,
            }
        }
        match tokio::time::timeout_at(deadline, reader.read(decoder.space())).await {
            Err(_) => return End::Timeout,
            Ok(Ok(0)) | Ok(Err(_)) => return End::ByClient,
            Ok(Ok(n)) => decoder.filled(n),
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    shared: &Shared,
    mut writer: WriteHalf<W>,
    entry: &ConnEntry,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> End {
    let coalesce = shared.transport == StreamTransport::Tcp;
    let stall = shared.options.write_stall_timeout;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut written = first.len();
        let result = if coalesce {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH_BYTES {
                let Ok(next) = rx.try_recv() else { break };
                batch.extend_from_slice(&next);
            }
            written = batch.len();
            write_within(&mut writer, &batch, stall).await
        } else {
            // One TLS record per message, then whatever else is queued.
            let mut result = write_within(&mut writer, &first, stall).await;
            while result == Ok(()) {
                let Ok(next) = rx.try_recv() else { break };
                written += next.len();
                result = write_within(&mut writer, &next, stall).await;
            }
            result
        };
        if let Err(end) = result {
            return end;
        }
        entry.queued.fetch_sub(written, Ordering::Relaxed);
        if batch.capacity() > WRITE_BATCH_BYTES * 2 {
            batch = Vec::new();
        }
    }
    End::Shutdown
}

/// Writes and flushes `bytes`, or says why the connection ends: an I/O error
/// (the client went away) or no completion within `stall`.
async fn write_within<W: AsyncWrite>(
    writer: &mut WriteHalf<W>,
    bytes: &[u8],
    stall: Duration,
) -> Result<(), End> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ByClient),
        Err(_) => Err(End::SlowReader),
    }
}

/// Remembers USERNAME, REALM and NONCE of an Allocate / Refresh /
/// CreatePermission / ChannelBind request carrying MESSAGE-INTEGRITY; a
/// Refresh with LIFETIME 0 (the client deallocated) forgets them.
fn note_credentials(message: &[u8], seen: &mut Option<SeenCredentials>) {
    // Request class, methods 0x003, 0x004, 0x008, 0x009: a two-byte check
    // keeps the data path (ChannelData, Send indications) out of it.
    if message.len() < STUN_HEADER_BYTES
        || message[0] != 0
        || !matches!(message[1], 0x03 | 0x04 | 0x08 | 0x09)
    {
        return;
    }
    let mut m = Message {
        raw: message.to_vec(),
        ..Default::default()
    };
    if m.decode().is_err() || !m.contains(ATTR_MESSAGE_INTEGRITY) {
        return;
    }
    if m.typ.method == METHOD_REFRESH {
        let mut lifetime = Lifetime::default();
        if lifetime.get_from(&m).is_ok() && lifetime.0.is_zero() {
            *seen = None;
            return;
        }
    }
    let text = |attr| TextAttribute::get_from_as(&m, attr).ok().map(|t| t.text);
    let (Some(username), Some(realm), Some(nonce)) =
        (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
    else {
        return;
    };
    if username.len() > MAX_USERNAME_BYTES
        || realm.len() > MAX_REALM_OR_NONCE_BYTES
        || nonce.len() > MAX_REALM_OR_NONCE_BYTES
    {
        return;
    }
    *seen = Some(SeenCredentials {
        username,
        realm,
        nonce,
    });
}

/// A Refresh request with LIFETIME 0 as the client would send it to
/// deallocate, signed with the key `auth` gives for its username.
fn release_request(
    auth: &(dyn AuthHandler + Send + Sync),
    seen: &SeenCredentials,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
    let key = auth.auth_handle(&seen.username, &seen.realm, peer).ok()?;
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
        Box::new(Lifetime(Duration::ZERO)),
        Box::new(TextAttribute::new(ATTR_USERNAME, seen.username.clone())),
        Box::new(TextAttribute::new(ATTR_REALM, seen.realm.clone())),
        Box::new(TextAttribute::new(ATTR_NONCE, seen.nonce.clone())),
        Box::new(MessageIntegrity(key)),
        Box::new(FINGERPRINT),
    ];
    let mut m = Message::new();
    m.build(&setters).ok()?;
    Some(m.raw)
}

// ---------------------------------------------------------------------------
// TLS setup
// ---------------------------------------------------------------------------

/// A TLS certificate or key that cannot be used; names the config key
/// (`turn.tls_cert` or `turn.tls_key`) like the config validation does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `turn.{key}`: {message}")]
pub struct TlsSetupError {
    pub key: &'static str,
    pub message: String,
}

impl TlsSetupError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        TlsSetupError {
            key,
            message: message.into(),
        }
    }
}

/// The crypto provider for everything here: ring, explicitly, so that a
/// second provider feature in the same build cannot make rustls' default
/// ambiguous.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config from a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3, no client
/// certificates, no ALPN requirement.
pub fn tls_server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::new("tls_cert", format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsSetupError::new(
            "tls_cert",
            "no CERTIFICATE found in the PEM",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsSetupError::new("tls_key", format!("no usable PEM private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new("tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsSetupError::new(
                "tls_key",
                format!("does not fit the certificate in turn.tls_cert: {e}"),
            )
        })?;
    Ok(Arc::new(config))
}

/// [`tls_server_config`] from the files named by `turn.tls_cert` and
/// `turn.tls_key`, as a [`TlsAcceptor`] for [`StreamListener::bind_tls`].
pub fn tls_acceptor_from_pem_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let read = |key_name, path: &Path| {
        std::fs::read(path).map_err(|e| {
            TlsSetupError::new(key_name, format!("cannot read {}: {e}", path.display()))
        })
    };
    let cert_pem = read("tls_cert", cert)?;
    let key_pem = read("tls_key", key)?;
    Ok(TlsAcceptor::from(tls_server_config(&cert_pem, &key_pem)?))
}

/// A TLS client config (ring, TLS 1.2/1.3) trusting `roots`, for
/// [`StreamConn::connect_tls`].
pub fn tls_client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
type BoxedStream = Box<dyn Stream>;

/// One TCP or TLS connection to a TURN server as a packet [`Conn`], for the
/// `turn` crate's `Client` (whose `turn_serv_addr` / `stun_serv_addr` must
/// be [`remote_addr`](Conn::remote_addr)): `send_to` frames (pads
/// ChannelData), `recv_from` unframes. Cancel-safe `recv_from`.
pub struct StreamConn {
    local: SocketAddr,
    remote: SocketAddr,
    reader: tokio::sync::Mutex<(ReadHalf<BoxedStream>, FrameDecoder)>,
    writer: tokio::sync::Mutex<WriteHalf<BoxedStream>>,
    closed: watch::Sender<bool>,
}

impl fmt::Debug for StreamConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConn")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish()
    }
}

impl StreamConn {
    /// `turn:host:port?transport=tcp`.
    pub async fn connect_tcp(server: SocketAddr) -> io::Result<Self> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        Ok(Self::from_stream(tcp, local, server))
    }

    /// `turns:host:port`: TLS to `server`, checking the certificate against
    /// `server_name` with `config` (see [`tls_client_config`]).
    pub async fn connect_tls(
        server: SocketAddr,
        server_name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Self> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
        Ok(Self::from_stream(tls, local, server))
    }

    /// Over any byte stream already connected to `remote`.
    pub fn from_stream<S>(stream: S, local: SocketAddr, remote: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (reader, writer) = tokio::io::split(Box::new(stream) as BoxedStream);
        StreamConn {
            local,
            remote,
            reader: tokio::sync::Mutex::new((reader, FrameDecoder::new())),
            writer: tokio::sync::Mutex::new(writer),
            closed: watch::channel(false).0,
        }
    }

    async fn write_message(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        let mut frame = Vec::with_capacity(buf.len() + 3);
        encode_frame(buf, &mut frame)
            .map_err(|e| webrtc_util::Error::Other(format!("TURN stream send: {e}")))?;
        let mut writer = self.writer.lock().await;
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(buf.len())
    }
}

#[async_trait]
impl Conn for StreamConn {
    /// Only to the server it is connected to.
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        if addr == self.remote {
            Ok(())
        } else {
            Err(webrtc_util::Error::Other(format!(
                "a TURN stream connection only reaches {}",
                self.remote
            )))
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    /// The next message from the server (padding stripped). A message larger
    /// than `buf` is an error, garbage or the end of the stream too.
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut closed = self.closed.subscribe();
        let mut guard = self.reader.lock().await;
        let (reader, decoder) = &mut *guard;
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    if message.len() > buf.len() {
                        return Err(webrtc_util::Error::ErrBufferShort);
                    }
                    buf[..message.len()].copy_from_slice(&message);
                    return Ok((message.len(), self.remote));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(webrtc_util::Error::Other(format!(
                        "TURN stream from {}: {e}",
                        self.remote
                    )))
                }
            }
            let n = tokio::select! {
                r = reader.read(decoder.space()) => r?,
                _ = closed.wait_for(|c| *c) => return Err(webrtc_util::Error::ErrUseClosedNetworkConn),
            };
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            decoder.filled(n);
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.write_message(buf).await
    }

    /// `target` must be the server ([`remote_addr`](Conn::remote_addr)).
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.connect(target).await?;
        self.write_message(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.remote)
    }

    /// Shuts the stream down (TLS close_notify, then FIN); `recv_from` ends.
    async fn close(&self) -> webrtc_util::Result<()> {
        self.closed.send_replace(true);
        let mut writer = self.writer.lock().await;
        let _ = writer.shutdown().await;
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(length: u16) -> Vec<u8> {
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&length.to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.resize(STUN_HEADER_BYTES + usize::from(length), 0xAB);
        m
    }

    fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut m = channel.to_be_bytes().to_vec();
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn headers_of_both_kinds_and_garbage() {
        assert_eq!(parse_frame_header(&[]), Ok(None));
        let s = stun(8);
        assert_eq!(parse_frame_header(&s[..7]), Ok(None));
        assert_eq!(
            parse_frame_header(&s),
            Ok(Some(FrameHeader {
                kind: FrameKind::Stun,
                message_len: 28,
                wire_len: 28
            }))
        );
        let c = channel_data(0x4001, b"hello");
        assert_eq!(parse_frame_header(&c[..3]), Ok(None));
        assert_eq!(
            parse_frame_header(&c),
            Ok(Some(FrameHeader {
                kind: FrameKind::ChannelData,
                message_len: 9,
                wire_len: 12
            }))
        );
        assert_eq!(parse_frame_header(b"\x80"), Err(FrameError::NotTurn(0x80)));
        assert_eq!(parse_frame_header(b"\xff"), Err(FrameError::NotTurn(0xff)));
        // RFC 5766 channel numbers above RFC 8656's 0x4FFF frame as well.
        assert_eq!(
            parse_frame_header(b"\x6d\x82\x00\x01"),
            Ok(Some(FrameHeader {
                kind: FrameKind::ChannelData,
                message_len: 5,
                wire_len: 8
            }))
        );
        let mut bad_len = stun(8);
        bad_len[3] = 9;
        assert_eq!(parse_frame_header(&bad_len), Err(FrameError::StunLength(9)));
        // TLS ClientHello on the plain TCP port: no cookie, seen at byte 5.
        assert_eq!(
            parse_frame_header(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            Err(FrameError::NoMagicCookie)
        );
    }

    #[test]
    fn encode_pads_channel_data_once() {
        let mut out = Vec::new();
        encode_frame(&channel_data(0x4000, b"abcde"), &mut out).unwrap();
        assert_eq!(out.len(), 12);
        assert_eq!(&out[9..], &[0, 0, 0]);
        // Already padded (the crate pads): unchanged.
        let padded = out.clone();
        out.clear();
        encode_frame(&padded, &mut out).unwrap();
        assert_eq!(out, padded);
        out.clear();
        encode_frame(&stun(4), &mut out).unwrap();
        assert_eq!(out, stun(4));
        assert!(encode_frame(&stun(4)[..23], &mut Vec::new()).is_err());
        assert!(encode_frame(&[0x40, 0, 0, 9, 1], &mut Vec::new()).is_err());
        assert!(encode_frame(&[], &mut Vec::new()).is_err());
    }

    #[test]
    fn decoder_grows_to_the_frame_and_shrinks_back() {
        let mut d = FrameDecoder::new();
        let big = stun(60_000);
        d.extend(&big);
        assert!(d.capacity() <= MAX_FRAME_BYTES);
        assert_eq!(d.next_message().unwrap().unwrap(), big);
        assert_eq!(d.next_message().unwrap(), None);
        let _ = d.space();
        assert_eq!(d.capacity(), INITIAL_READ_BUFFER);
    }

    #[test]
    fn decoder_buffer_stays_bounded_by_the_largest_frame() {
        let mut d = FrameDecoder::new();
        // A maximal STUN message followed by the start of another.
        let big = stun(65532);
        assert_eq!(big.len(), MAX_FRAME_BYTES);
        let mut stream = big.clone();
        stream.extend_from_slice(&big[..100]);
        // Read as the listener does: into `space`, then drain.
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let space = d.space();
            let n = space.len().min(rest.len()).min(1000);
            space[..n].copy_from_slice(&rest[..n]);
            d.filled(n);
            rest = &rest[n..];
            while let Some(m) = d.next_message().unwrap() {
                assert_eq!(m, big);
            }
            assert!(d.capacity() <= MAX_FRAME_BYTES, "{}", d.capacity());
        }
        assert_eq!(d.buffered(), 100);
    }
}
