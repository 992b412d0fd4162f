//! [`GameClient`]: a [`Client`] in an authoritative room, driving a
//! [`GameCore`] from a background task.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtcrelay_protocol::game::WorldState;
use rtcrelay_protocol::{PeerId, RoomKind};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::debug;

use super::{GameCore, GameEvent, GameOutput, Hello, NetStats, Predictor};
use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::event::{Channel, ClientEvent};

/// Game events waiting for the application. When full, `Snapshot` and
/// `Stats` notifications are dropped (the state itself is always current
/// in [`GameClient::state`]); the others wait.
const EVENT_QUEUE: usize = 1024;

/// Called by the driver right before each local tick samples the input;
/// what it returns (if anything) becomes the input. Lets a bot decide on
/// the freshest prediction, once per tick.
pub type InputSource = Box<dyn FnMut(&GameCore) -> Option<Vec<u8>> + Send>;

struct Shared {
    core: GameCore,
    source: Option<InputSource>,
}

/// A player in an authoritative room: joins, then a background task runs
/// the local tick timer, feeds what arrives into a [`GameCore`] and sends
/// what it produces. Read what happens with [`GameClient::next_game_event`].
pub struct GameClient {
    shared: Arc<Mutex<Shared>>,
    /// Wakes the task to send what a method call queued (commands).
    wake: Arc<Notify>,
    events: mpsc::Receiver<GameEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Client>>,
    peer_id: PeerId,
}

impl std::fmt::Debug for GameClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameClient")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl GameClient {
    /// Joins `config.room` as an authoritative room (whatever
    /// `config.kind` says) and starts driving it.
    pub async fn connect(mut config: ClientConfig) -> Result<GameClient, ClientError> {
        config.kind = RoomKind::Authoritative;
        let client = Client::connect(config).await?;
        GameClient::start(client)
    }

    /// Drives an already connected client; it must be in an authoritative
    /// room.
    pub fn start(client: Client) -> Result<GameClient, ClientError> {
        if client.kind() != RoomKind::Authoritative {
            return Err(ClientError::Config(format!(
                "room {} is a {} room, not authoritative",
                client.room().as_str(),
                client.kind().as_str()
            )));
        }
        let peer_id = client.peer_id();
        let shared = Arc::new(Mutex::new(Shared {
            core: GameCore::new(peer_id, Instant::now()),
            source: None,
        }));
        let wake = Arc::new(Notify::new());
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(drive(
            client,
            shared.clone(),
            wake.clone(),
            events_tx,
            stop_rx,
        ));
        Ok(GameClient {
            shared,
            wake,
            events,
            stop: Some(stop),
            task: Some(task),
            peer_id,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The next game event; after `Closed`, `None`.
    pub async fn next_game_event(&mut self) -> Option<GameEvent> {
        self.events.recv().await
    }

    /// Sets the buttons the next local ticks send.
    pub fn set_input(&self, input: &[u8]) {
        self.lock().core.set_input(input);
    }

    /// Runs `source` before every local tick to choose the input.
    pub fn set_input_source(&self, source: InputSource) {
        self.lock().source = Some(source);
    }

    /// Predicts the own entity with `predictor`.
    pub fn set_predictor(&self, predictor: Box<dyn Predictor>) {
        self.lock().core.set_predictor(predictor);
    }

    /// Sends a game command.
    pub fn command(&self, command: serde_json::Value) {
        self.lock().core.command(command);
        self.wake.notify_one();
    }

    pub fn hello(&self) -> Option<Hello> {
        self.lock().core.hello().cloned()
    }

    /// The newest server state and its tick.
    pub fn state(&self) -> Option<(u32, WorldState)> {
        let shared = self.lock();
        Some((shared.core.state_tick()?, shared.core.state()?.clone()))
    }

    /// The own entity's predicted fields.
    pub fn predicted(&self) -> Option<Vec<i32>> {
        self.lock().core.predicted().map(<[i32]>::to_vec)
    }

    /// Entity `id` interpolated at the render tick (see
    /// [`GameCore::interpolated`]).
    pub fn interpolated(&self, id: u32) -> Option<Vec<i32>> {
        self.lock().core.interpolated(id, Instant::now())
    }

    pub fn net_stats(&self) -> NetStats {
        self.lock().core.net_stats()
    }

    /// Anything else about the session, under the lock: keep it short, the
    /// driver waits meanwhile.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut GameCore) -> R) -> R {
        f(&mut self.lock().core)
    }

    /// Stops the driver (what it queued is sent first), then leaves the
    /// room and closes the connection.
    pub async fn close(mut self) {
        // Dropping the receiver first: a driver waiting for room in the
        // event queue gets an error instead of waiting forever.
        let (tx, rx) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.events, rx));
        drop(tx);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(client) => client.close().await,
                Err(e) => debug!(error = %e, "game driver task ended abnormally"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock (in an input source or predictor)
        // leaves a usable core: keep going with it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for GameClient {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The driver: returns the client when stopped or when the session ends.
async fn drive(
    mut client: Client,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    events: mpsc::Sender<GameEvent>,
    mut stop: oneshot::Receiver<()>,
) -> Client {
    let mut ticker: Option<Interval> = None;
    let mut closed = false;
    loop {
        let (outputs, game_events, timeout, period) = {
            let mut s = lock(&shared);
            let outputs: Vec<GameOutput> = std::iter::from_fn(|| s.core.poll_output()).collect();
            let game_events: Vec<GameEvent> = std::iter::from_fn(|| s.core.poll_event()).collect();
            let period = s
                .core
                .hello()
                .map(|h| Duration::from_secs_f64(h.tick_ms() / 1000.0));
            (outputs, game_events, s.core.poll_timeout(), period)
        };
        // Outputs first: an event's ack leaves before the application
        // hears of the event (and may exit).
        for output in outputs {
            let sent = match &output {
                GameOutput::Realtime(bytes) => client.send(Channel::Realtime, bytes).await,
                GameOutput::Control(text) => client.send_text(Channel::Control, text).await,
            };
            match sent {
                Ok(()) => {}
                // A reconnecting client reports the end itself (`Closed`
                // after `ResumeFailed`); meanwhile inputs are resent
                // redundantly and events re-acked once resumed.
                Err(ClientError::Closed) if !client.reconnects() => closed = true,
                Err(e) => debug!(error = %e, "game message not sent"),
            }
        }
        for event in game_events {
            if !forward(&events, event).await {
                return client;
            }
        }
        if closed {
            let _ = forward(&events, GameEvent::Closed).await;
            return client;
        }
        if let (None, Some(period)) = (&ticker, period) {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            // After a stall, one tick: the core's target rule fills the
            // skipped ticks with the same input.
            t.set_missed_tick_behavior(MissedTickBehavior::Skip);
            ticker = Some(t);
        }
        tokio::select! {
            _ = &mut stop => return client,
            event = client.next_event() => match event {
                Some(ClientEvent::Message { channel, text, payload, .. }) => {
                    let mut s = lock(&shared);
                    let now = Instant::now();
                    match (channel, text) {
                        (Channel::Realtime, false) => s.core.handle_realtime(&payload, now),
                        (Channel::Control, true) => match std::str::from_utf8(&payload) {
                            Ok(text) => s.core.handle_control(text, now),
                            Err(_) => debug!("control message not UTF-8 ignored"),
                        },
                        _ => debug!(?channel, text, "message of the wrong type ignored"),
                    }
                }
                Some(ClientEvent::PeerLeft { peer_id, .. }) if peer_id == client.peer_id() => {
                    closed = true;
                }
                Some(ClientEvent::Error { code, message, .. }) => {
                    let event = GameEvent::Error { code: code.to_string(), message };
                    if !forward(&events, event).await {
                        return client;
                    }
                }
                // Without reconnection, a silent server is as good as gone
                // for a game.
                Some(ClientEvent::Disconnected { .. }) if !client.reconnects() => closed = true,
                Some(ClientEvent::Closed) | None => closed = true,
                Some(
                    event @ (ClientEvent::PeerJoined { .. }
                    | ClientEvent::PeerLeft { .. }
                    | ClientEvent::PeerAway { .. }
                    | ClientEvent::PeerBack { .. }
                    | ClientEvent::Disconnected { .. }
                    | ClientEvent::Reconnecting { .. }
                    | ClientEvent::Resumed { .. }
                    | ClientEvent::ResumeFailed { .. }),
                ) => {
                    if !forward(&events, GameEvent::Connection(event)).await {
                        return client;
                    }
                }
                Some(other) => debug!(event = ?other, "client event ignored"),
            },
            _ = next_tick(&mut ticker) => {
                let mut s = lock(&shared);
                let Shared { core, source } = &mut *s;
                if let Some(input) = source.as_mut().and_then(|f| f(core)) {
                    core.set_input(&input);
                }
                core.local_tick(Instant::now());
            }
            _ = sleep_until(timeout) => lock(&shared).core.handle_timeout(Instant::now()),
            _ = wake.notified() => {}
        }
    }
}

/// Hands an event to the application; false when it is gone.
async fn forward(events: &mpsc::Sender<GameEvent>, event: GameEvent) -> bool {
    match event {
        GameEvent::Snapshot { .. } | GameEvent::Stats { .. } => !matches!(
            events.try_send(event),
            Err(mpsc::error::TrySendError::Closed(_))
        ),
        other => events.send(other).await.is_ok(),
    }
}

async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
