//! The signaling WebSocket: one task writes, one task reads.
//!
//! The reader answers `pong`s itself (so [`Signaling::ping`] works whoever is
//! consuming the other messages) and hands every other server message, in
//! order, to a single consumer: first `Client::connect`, then the client's
//! dispatcher task. Keeping one ordered consumer matters: a server
//! `candidate` may only be applied after the `answer` before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rtcrelay_protocol::{ClientMessage, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use crate::error::ClientError;

/// What the writer task sends.
enum Outgoing {
    Msg(ClientMessage),
    /// Send a Close frame and stop writing.
    Close,
}

/// What the reader task hands on.
#[derive(Debug)]
pub(crate) enum Incoming {
    Msg(ServerMessage),
    /// A message that is not a `ServerMessage` this client knows (newer
    /// server, or garbage); logged and skipped by the consumer.
    Unknown(String),
}

type PongWaiters = Arc<Mutex<HashMap<u32, oneshot::Sender<Instant>>>>;

pub(crate) struct Signaling {
    out: mpsc::UnboundedSender<Outgoing>,
    pongs: PongWaiters,
    /// The status code of the server's Close frame, once one arrived
    /// (1005 when it carried none); stays None when the connection just
    /// broke.
    close_code: Arc<Mutex<Option<u16>>>,
    next_ping_id: AtomicU32,
    // Behind locks so that a shared `Signaling` can be closed or aborted.
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Signaling {
    /// Dials `url` and starts the reader and writer tasks. Server messages
    /// other than `pong` arrive on the returned receiver, which ends when the
    /// WebSocket closes.
    pub(crate) async fn open(
        url: &str,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<Incoming>), ClientError> {
        let (ws, _response) = tokio_tungstenite::connect_async(url).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let pongs: PongWaiters = Arc::default();

        let writer = tokio::spawn(async move {
            while let Some(item) = out_rx.recv().await {
                let result = match item {
                    Outgoing::Msg(msg) => match serde_json::to_string(&msg) {
                        Ok(json) => sink.send(Message::text(json)).await,
                        Err(e) => {
                            warn!(error = %e, "cannot serialize signaling message");
                            continue;
                        }
                    },
                    Outgoing::Close => {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                };
                if let Err(e) = result {
                    debug!(error = %e, "signaling write failed");
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_pongs = pongs.clone();
        let close_code: Arc<Mutex<Option<u16>>> = Arc::default();
        let reader_close_code = close_code.clone();
        let reader = tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let text = match frame {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(frame)) => {
                        // RFC 6455 7.1.5: 1005 stands for "no status code".
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        *lock(&reader_close_code) = Some(code);
                        break;
                    }
                    Ok(Message::Binary(b)) => {
                        let note = format!("binary message of {} bytes", b.len());
                        if in_tx.send(Incoming::Unknown(note)).is_err() {
                            break;
                        }
                        continue;
                    }
                    // Pings are answered by tungstenite itself.
                    Ok(_) => continue,
                    Err(e) => {
                        debug!(error = %e, "signaling read failed");
                        break;
                    }
                };
                let incoming = match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(ServerMessage::Pong { id }) => {
                        let waiter = lock(&reader_pongs).remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(Instant::now());
                        }
                        continue;
                    }
                    Ok(msg) => Incoming::Msg(msg),
                    Err(e) => {
                        let shown: String = text.as_str().chars().take(120).collect();
                        Incoming::Unknown(format!("{e}: {shown}"))
                    }
                };
                if in_tx.send(incoming).is_err() {
                    break;
                }
            }
            // Fail pending pings now rather than at their timeout.
            lock(&reader_pongs).clear();
            debug!("signaling connection closed");
        });

        let signaling = Signaling {
            out,
            pongs,
            close_code,
            next_ping_id: AtomicU32::new(1),
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(reader)),
        };
        Ok((signaling, in_rx))
    }

    /// The status code of the server's Close frame, if the server closed
    /// the connection (rather than the connection breaking).
    pub(crate) fn close_code(&self) -> Option<u16> {
        *lock(&self.close_code)
    }

    /// Queues a message; fails only when the WebSocket is gone.
    pub(crate) fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.out
            .send(Outgoing::Msg(msg))
            .map_err(|_| ClientError::Closed)
    }

    /// A sender for tasks that forward messages (local ICE candidates).
    pub(crate) fn sender(&self) -> SignalingSender {
        SignalingSender(self.out.clone())
    }

    /// Round trip of a `ping` to the server and its `pong`.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<Duration, ClientError> {
        let id = self.next_ping_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pongs).insert(id, tx);
        let start = Instant::now();
        if let Err(e) = self.send(ClientMessage::Ping { id }) {
            lock(&self.pongs).remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(at)) => Ok(at.saturating_duration_since(start)),
            // The reader dropped the waiter map: the WebSocket closed.
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.pongs).remove(&id);
                Err(ClientError::Timeout("ping"))
            }
        }
    }

    /// Sends a Close frame and waits (up to `timeout`) until the server has
    /// closed its side, so that everything sent before has been processed.
    pub(crate) async fn close(&self, timeout: Duration) {
        let _ = self.out.send(Outgoing::Close);
        let writer = lock(&self.writer).take();
        if let Some(mut writer) = writer {
            if tokio::time::timeout(timeout, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        let reader = lock(&self.reader).take();
        if let Some(mut reader) = reader {
            if tokio::time::timeout(timeout, &mut reader).await.is_err() {
                reader.abort();
            }
        }
    }

    /// Drops the connection without a Close frame, as a network failure
    /// would: the server keeps this client's seat for resume (a Close
    /// frame would release it).
    pub(crate) fn abort(&self) {
        if let Some(w) = lock(&self.writer).take() {
            w.abort();
        }
        if let Some(r) = lock(&self.reader).take() {
            r.abort();
        }
    }
}

impl Drop for Signaling {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A cloneable handle that can only queue messages.
#[derive(Clone)]
pub(crate) struct SignalingSender(mpsc::UnboundedSender<Outgoing>);

impl SignalingSender {
    pub(crate) fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.0
            .send(Outgoing::Msg(msg))
            .map_err(|_| ClientError::Closed)
    }
}

/// The waiter map is only touched briefly and never across an await, so a
/// poisoned lock (a panic elsewhere) is recovered rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
