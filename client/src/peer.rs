//! The WebRTC side: the peer connection to the server peer, its event
//! handler, and one task per DataChannel turning channel events into
//! [`ClientEvent`]s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtcrelay_protocol::signaling::{ChannelParams, IceServer};
use rtcrelay_protocol::RoomKind;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, SettingEngineBuilder,
};

use crate::config::{ClientConfig, ConnectOptions};
use crate::error::ClientError;
use crate::event::{decode_message, Channel, ClientEvent};
use crate::liveness::Heard;

/// Pace of ICE connectivity checks while connecting (webrtc default 200 ms).
/// The controlling agent nominates a pair only on the check *after* the one
/// that found it valid, so at 200 ms every join waited about 200 ms with a
/// working pair in hand. Once connected, the agent goes back to its own
/// pace. 10 ms is twice RFC 8445's floor for the pacing timer Ta, and
/// only lasts until a pair works.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Checks per pair before giving up on it: 140 × 10 ms keeps the default
/// 1.4 s budget for slow paths.
const ICE_MAX_BINDING_REQUESTS: u16 = 140;

/// A local ICE candidate to trickle to the server.
pub(crate) enum LocalCandidate {
    Candidate(String),
    /// Gathering is complete: sent as an empty candidate.
    End,
}

/// Which of the two channels are open locally.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenChannels {
    pub realtime: bool,
    pub control: bool,
}

impl OpenChannels {
    pub(crate) fn both(self) -> bool {
        self.realtime && self.control
    }
}

/// A peer connection with its channels and the streams `connect` watches.
pub(crate) struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub realtime: Arc<dyn DataChannel>,
    pub control: Arc<dyn DataChannel>,
    pub open: watch::Receiver<OpenChannels>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Gathered before the offer was sent are held here, so that no
    /// candidate overtakes the offer on the WebSocket.
    pub candidates: mpsc::UnboundedReceiver<LocalCandidate>,
    pub tasks: Vec<JoinHandle<()>>,
}

struct Handler {
    candidates: mpsc::UnboundedSender<LocalCandidate>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self
                    .candidates
                    .send(LocalCandidate::Candidate(init.candidate));
            }
            Err(e) => warn!(error = %e, "cannot encode local candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.candidates.send(LocalCandidate::End);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "peer connection state");
        self.state.send_replace(state);
    }
}

/// Creates the peer connection and its channels (before the offer, so that
/// the offer carries the SCTP section), and starts the channel tasks, which
/// decode messages the way rooms of `kind` (from `welcome`) frame them.
pub(crate) async fn create(
    config: &ClientConfig,
    options: &ConnectOptions,
    welcome_ice_servers: &[IceServer],
    kind: RoomKind,
    events: mpsc::Sender<ClientEvent>,
    heard: Arc<Heard>,
) -> Result<Peer, ClientError> {
    let ice_servers = options
        .ice_servers
        .as_deref()
        .unwrap_or(welcome_ice_servers)
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let policy = if options.relay_only {
        RTCIceTransportPolicy::Relay
    } else {
        RTCIceTransportPolicy::All
    };
    let rtc_config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(policy)
        .build();
    let mut settings = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS));
    if let Some(wait) = options.relay_acceptance_min_wait {
        settings = settings.with_relay_acceptance_min_wait(Some(wait));
    }

    let (cand_tx, candidates) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(Handler {
        candidates: cand_tx,
        state: state_tx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_setting_engine(settings.build())
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(config.bind_ip, 0)])
        .build()
        .await?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let (open_tx, open) = watch::channel(OpenChannels::default());
    let open_tx = Arc::new(open_tx);
    let mut tasks = Vec::new();

    let realtime = pc
        .create_data_channel(Channel::Realtime.label(), Some(init(options.realtime)))
        .await?;
    tasks.push(spawn_channel_task(
        realtime.clone(),
        Some(Channel::Realtime),
        kind,
        open_tx.clone(),
        events.clone(),
        heard.clone(),
    ));
    let control = pc
        .create_data_channel(Channel::Control.label(), Some(init(options.control)))
        .await?;
    tasks.push(spawn_channel_task(
        control.clone(),
        Some(Channel::Control),
        kind,
        open_tx.clone(),
        events.clone(),
        heard.clone(),
    ));
    for (label, params) in &options.extra_channels {
        let dc = pc.create_data_channel(label, Some(init(*params))).await?;
        tasks.push(spawn_channel_task(
            dc,
            None,
            kind,
            open_tx.clone(),
            events.clone(),
            heard.clone(),
        ));
    }

    Ok(Peer {
        pc,
        realtime,
        control,
        open,
        state,
        candidates,
        tasks,
    })
}

fn init(p: ChannelParams) -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: p.ordered,
        // DCEP carries these as u32, the webrtc crate as u16: saturate.
        max_retransmits: p.max_retransmits.map(saturate_u16),
        max_packet_life_time: p.max_packet_lifetime_ms.map(saturate_u16),
        ..Default::default()
    }
}

fn saturate_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Polls one channel until it closes. `channel` is `None` for the extra
/// channels of [`ConnectOptions::extra_channels`], whose messages are
/// dropped. The channel must be polled even then: the webrtc crate stops
/// delivering to a connection whose channel event queue is full.
fn spawn_channel_task(
    dc: Arc<dyn DataChannel>,
    channel: Option<Channel>,
    kind: RoomKind,
    open: Arc<watch::Sender<OpenChannels>>,
    events: mpsc::Sender<ClientEvent>,
    heard: Arc<Heard>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = dc.poll().await {
            match (event, channel) {
                (DataChannelEvent::OnOpen, Some(ch)) => {
                    debug!(label = ch.label(), "channel open");
                    open.send_modify(|o| match ch {
                        Channel::Realtime => o.realtime = true,
                        Channel::Control => o.control = true,
                    });
                }
                (DataChannelEvent::OnMessage(msg), Some(ch)) => {
                    heard.stamp(std::time::Instant::now());
                    // A full queue means the application is not reading:
                    // waiting here pushes back on the sender through SCTP.
                    let Some(event) = decode_message(kind, ch, msg.is_string, msg.data) else {
                        continue;
                    };
                    let delivered = events.send(event).await;
                    if delivered.is_err() {
                        break;
                    }
                }
                (DataChannelEvent::OnClose, ch) => {
                    debug!(label = ch.map(Channel::label), "channel closed");
                    break;
                }
                _ => {}
            }
        }
        if let Some(ch) = channel {
            open.send_modify(|o| match ch {
                Channel::Realtime => o.realtime = false,
                Channel::Control => o.control = false,
            });
        }
    })
}
