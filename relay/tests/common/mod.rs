//! The str0m client harness shared by the relay's integration tests: a real
//! relay on 127.0.0.1 and real str0m clients (full ICE, not lite) on their
//! own UDP sockets, connected through `SessionHost::open` exactly as
//! signaling does it. The time limits only stop a hung test.
#![allow(dead_code, unused_imports)]

pub use std::collections::HashMap;
pub use std::net::{SocketAddr, UdpSocket};
pub use std::time::{Duration, Instant};

pub use rtcrelay_protocol::frame::{is_heartbeat, Relayed};
pub use rtcrelay_protocol::signaling::ChannelParams;
pub use rtcrelay_protocol::{PeerId, RoomId, RoomKind};
pub use rtcrelay_relay::metrics::{ChannelLabel, ReasonLabel};
pub use rtcrelay_relay::{
    Relay, RelayConfig, RelayMetrics, SeatEnd, SessionError, SessionEvent, SessionHost,
    SessionRequest,
};
pub use str0m::change::{SdpAnswer, SdpPendingOffer};
pub use str0m::channel::{ChannelConfig, ChannelId, Reliability};
pub use str0m::net::{Protocol, Receive};
pub use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
pub use tokio::sync::mpsc;

/// Guards against a hung test; never part of an assertion about speed.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Client {
    pub name: &'static str,
    pub peer: PeerId,
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub channels: HashMap<String, ChannelId>,
    /// (channel label, binary, data) as received.
    pub received: Vec<(String, bool, Vec<u8>)>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    pub session_events: Vec<SessionEvent>,
    pub closed: bool,
    /// UDP datagrams read from its socket.
    pub datagrams_in: u64,
    /// Heartbeat frames received on `control` (kept out of `received`, as
    /// a real client drops them).
    pub heartbeats: u64,
}

/// `RoomId` from a literal.
pub fn room(id: &str) -> RoomId {
    RoomId::try_from(id).unwrap()
}

pub fn realtime_config() -> ChannelConfig {
    ChannelConfig {
        label: "realtime".into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..Default::default()
    }
}

pub fn control_config() -> ChannelConfig {
    ChannelConfig {
        label: "control".into(),
        ..Default::default()
    }
}

/// A client's UDP socket on 127.0.0.1, non-blocking, with a receive buffer
/// large enough (as far as `net.core.rmem_max` allows) that a test task
/// descheduled for a while on a busy machine does not lose datagrams in the
/// kernel.
pub fn client_socket() -> UdpSocket {
    use socket2::{Domain, Protocol as IpProtocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(IpProtocol::UDP)).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.into()
}

/// Datagrams the kernel dropped on a full receive buffer of the UDP socket
/// bound to `local` (Linux's /proc/net/udp; 0 where it cannot be read).
pub fn kernel_drops(local: SocketAddr) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    let port = format!(":{:04X}", local.port());
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1)?.ends_with(&port)).then(|| cols.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// A client's offer, before it is sent to the relay.
pub fn new_client(
    name: &'static str,
    peer: u32,
    channels: &[ChannelConfig],
) -> (
    Client,
    String,
    SdpPendingOffer,
    mpsc::UnboundedSender<SessionEvent>,
) {
    let socket = client_socket();
    let local = socket.local_addr().unwrap();
    let mut rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    for c in channels {
        api.add_channel_with_config(c.clone());
    }
    let (offer, pending) = api.apply().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client {
        name,
        peer: PeerId(peer),
        rtc,
        socket,
        local,
        channels: HashMap::new(),
        received: Vec::new(),
        events: rx,
        session_events: Vec::new(),
        closed: false,
        datagrams_in: 0,
        heartbeats: 0,
    };
    (client, offer.to_sdp_string(), pending, tx)
}

pub async fn connect(
    host: &dyn SessionHost,
    name: &'static str,
    peer: u32,
    room: &str,
    channels: &[ChannelConfig],
) -> Client {
    connect_to(host, name, peer, room, RoomKind::Relay, channels).await
}

pub async fn connect_to(
    host: &dyn SessionHost,
    name: &'static str,
    peer: u32,
    room: &str,
    kind: RoomKind,
    channels: &[ChannelConfig],
) -> Client {
    let (mut client, offer_sdp, pending, events) = new_client(name, peer, channels);
    let answer = host
        .open(SessionRequest {
            peer: client.peer,
            room: RoomId::try_from(room).unwrap(),
            kind,
            name: name.to_string(),
            offer_sdp,
            events,
        })
        .await
        .unwrap();
    assert!(
        answer
            .candidates
            .iter()
            .all(|c| c.starts_with("candidate:")),
        "{:?}",
        answer.candidates
    );
    assert!(!answer.candidates.is_empty());
    let answer = SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
    client.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    client
}

impl Client {
    /// Feeds the client everything that arrived and everything due, and sends
    /// what it wants to send.
    pub fn step(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok((n, source)) = self.socket.recv_from(&mut buf) {
            self.datagrams_in += 1;
            if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                // str0m's DTLS queues at most 30 unprocessed datagrams and
                // a poll does not empty the queue at once: drain after
                // every datagram, or a burst loses some.
                self.drain();
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
        while let Ok(e) = self.events.try_recv() {
            self.session_events.push(e);
        }
    }

    /// Sends what the `Rtc` wants sent and takes in its events.
    fn drain(&mut self) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Event(e)) => match e {
                    Event::ChannelOpen(id, label) => {
                        self.channels.insert(label, id);
                    }
                    Event::ChannelData(d) => {
                        let label = self
                            .channels
                            .iter()
                            .find(|(_, id)| **id == d.id)
                            .map(|(l, _)| l.clone())
                            .unwrap_or_default();
                        if label == "control" && is_heartbeat(d.binary, &d.data) {
                            self.heartbeats += 1;
                        } else {
                            self.received.push((label, d.binary, d.data));
                        }
                    }
                    Event::Closed => self.closed = true,
                    _ => {}
                },
                Err(_) => break,
            }
        }
        if !self.rtc.is_alive() {
            self.closed = true;
        }
    }

    pub fn send(&mut self, label: &str, binary: bool, data: &[u8]) -> bool {
        let id = self.channels[label];
        if self.rtc.channel(id).is_none() {
            // Say why: the server's account of the session's end.
            while let Ok(e) = self.events.try_recv() {
                self.session_events.push(e);
            }
            panic!(
                "{}: channel {label:?} is gone (session events {:?})",
                self.name, self.session_events
            );
        }
        self.rtc.channel(id).unwrap().write(binary, data).unwrap()
    }

    pub fn ready(&self) -> Option<(ChannelParams, ChannelParams)> {
        self.session_events.iter().find_map(|e| match e {
            SessionEvent::Ready { realtime, control } => Some((*realtime, *control)),
            _ => None,
        })
    }

    /// Relayed frames received on `label`, decoded.
    pub fn relayed(&self, label: &str) -> Vec<(PeerId, bool, Vec<u8>)> {
        self.received
            .iter()
            .filter(|(l, _, _)| l == label)
            .map(|(_, binary, data)| {
                assert!(binary, "{}: relayed frames are binary", self.name);
                let r = Relayed::decode(data).expect("a relayed frame");
                (r.sender, r.text, r.payload.to_vec())
            })
            .collect()
    }
}

/// Steps every client until `done` holds (or the patience runs out, which
/// the caller's assertion then reports).
pub async fn pump(
    clients: &mut [&mut Client],
    mut done: impl FnMut(&mut [&mut Client]) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        for c in clients.iter_mut() {
            c.step();
        }
        if done(clients) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Steps every client for a number of rounds, letting traffic settle.
pub async fn settle(clients: &mut [&mut Client], rounds: usize) {
    for _ in 0..rounds {
        for c in clients.iter_mut() {
            c.step();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn dropped(m: &RelayMetrics, reason: &'static str) -> u64 {
    m.datagrams_dropped
        .get_or_create(&ReasonLabel { reason })
        .get()
}

pub fn msg_dropped(m: &RelayMetrics, reason: &'static str) -> u64 {
    m.messages_dropped
        .get_or_create(&ReasonLabel { reason })
        .get()
}

pub fn relayed(m: &RelayMetrics, channel: &'static str) -> u64 {
    m.messages_relayed
        .get_or_create(&ChannelLabel { channel })
        .get()
}

pub async fn start_relay(shards: usize) -> (Relay, RelayMetrics) {
    start_relay_with(RelayConfig {
        shards,
        ..RelayConfig::default()
    })
    .await
}

/// A relay on 127.0.0.1 (any port) with `config` otherwise.
pub async fn start_relay_with(config: RelayConfig) -> (Relay, RelayMetrics) {
    let metrics = RelayMetrics::default();
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    (
        Relay::start(config, metrics.clone()).await.unwrap(),
        metrics,
    )
}

/// A network lab setting that drops everything, both ways, until cleared:
/// packets stop with no close, as when a player's network goes away.
pub fn blackout() -> rtcrelay_netlab::Setting {
    use rtcrelay_netlab::{BlackoutWindow, ImpairmentConfig, LinkConfig, Setting};
    let one_way = ImpairmentConfig {
        blackouts: vec![BlackoutWindow {
            start: Duration::ZERO,
            duration: Duration::from_secs(3600),
        }],
        ..ImpairmentConfig::default()
    };
    Setting {
        link: Some(LinkConfig::symmetric(one_way)),
        ..Setting::default()
    }
}
