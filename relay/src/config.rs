use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rtcrelay_netlab::Lab;

use crate::authoritative::{GameConfig, ResumeRules};

/// What the relay needs to start. The binary fills this from its config file.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The one UDP socket all peers share. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Advertised as an extra host candidate, for a 1:1 NAT (cloud VM with a
    /// public IP mapped to a private one).
    pub public_addr: Option<SocketAddr>,
    /// Worker shards; peers of one room always share a shard. 0 = one per core.
    pub shards: usize,
    /// Most bytes the `realtime` channel may have buffered before further
    /// messages on it are dropped (never queued): a couple of datagrams.
    pub realtime_buffer_limit: usize,
    /// How authoritative rooms run (tick and snapshot rates…).
    pub game: GameConfig,
    /// The game authoritative rooms run, by its `GameFactory` name.
    pub game_name: String,
    /// Where each authoritative room's match log (seed, accepted inputs,
    /// per-tick state hashes) is written when the room closes; `rtcrelay
    /// replay` re-runs it. None: logs are not kept.
    pub record_dir: Option<PathBuf>,
    /// The network lab: impairment in force per scope (global, room,
    /// peer), applied to each peer's packets both ways. Empty by default.
    pub netlab: Arc<Lab>,
    /// A peer from which no datagram arrived for this long is dead: its
    /// session is closed (`Closed`, signaling marks it disconnected). Works
    /// when packets silently stop (no DTLS close, no FIN). Default 5 s.
    pub dead_after: Duration,
    /// The server sends a heartbeat on `control` to a peer it sent nothing
    /// to for this long, so that an idle client's SCTP stack answers (its
    /// acknowledgements prove it alive). Default 1 s.
    pub heartbeat_interval: Duration,
    /// Most WebRTC sessions at once; more offers get `server_full`.
    pub max_peers: usize,
    /// Datagrams per second one peer may send (burst: one second's worth);
    /// the rest are dropped before any processing and counted. 0 = no limit.
    pub peer_datagram_rate: u32,
    /// Per room: how long a lost player's seat is kept and what the match
    /// does meanwhile. Authoritative rooms take their away policy and
    /// after-grace rule from here (the grace timer runs in signaling).
    pub resume: ResumeRules,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3480)),
            public_addr: None,
            shards: 0,
            realtime_buffer_limit: 2 * rtcrelay_protocol::limits::MAX_REALTIME_MESSAGE_BYTES,
            game: GameConfig::default(),
            game_name: "dizolaur".to_string(),
            record_dir: None,
            netlab: Arc::new(Lab::default()),
            dead_after: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            max_peers: 10_000,
            peer_datagram_rate: 2_000,
            resume: ResumeRules::default(),
        }
    }
}
