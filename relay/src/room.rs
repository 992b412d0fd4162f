//! Relay rooms, sans-IO: who is in which room, which DataChannels a member
//! must open, and what may be forwarded. The shard does the writing.

use std::collections::HashMap;

use rtcrelay_protocol::frame::RELAYED_HEADER_LEN;
use rtcrelay_protocol::limits::{MAX_CONTROL_MESSAGE_BYTES, MAX_REALTIME_MESSAGE_BYTES};
use rtcrelay_protocol::signaling::ChannelParams;
use rtcrelay_protocol::{channels, PeerId, RoomId};
use str0m::channel::{ChannelConfig, Reliability};

/// The two DataChannels of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    Realtime,
    Control,
}

impl Lane {
    pub fn label(self) -> &'static str {
        match self {
            Lane::Realtime => channels::REALTIME,
            Lane::Control => channels::CONTROL,
        }
    }

    /// Largest client payload that still fits the lane's message limit once
    /// the relay header is added.
    pub fn max_payload(self) -> usize {
        let max = match self {
            Lane::Realtime => MAX_REALTIME_MESSAGE_BYTES,
            Lane::Control => MAX_CONTROL_MESSAGE_BYTES,
        };
        max - RELAYED_HEADER_LEN
    }
}

/// A channel's parameters in protocol terms.
pub(crate) fn params_of(config: &ChannelConfig) -> ChannelParams {
    let (max_retransmits, max_packet_lifetime_ms) = match config.reliability {
        Reliability::Reliable => (None, None),
        Reliability::MaxRetransmits { retransmits } => (Some(u32::from(retransmits)), None),
        Reliability::MaxPacketLifetime { lifetime } => (None, Some(u32::from(lifetime))),
    };
    ChannelParams {
        ordered: config.ordered,
        max_retransmits,
        max_packet_lifetime_ms,
    }
}

/// Checks a channel the client opened. `config` is None when str0m has no
/// parameters for it (a channel negotiated out of band).
pub(crate) fn check_channel(
    label: &str,
    config: Option<&ChannelConfig>,
) -> Result<(Lane, ChannelParams), String> {
    let lane = match label {
        channels::REALTIME => Lane::Realtime,
        channels::CONTROL => Lane::Control,
        _ => {
            let shown: String = label.chars().take(32).collect();
            return Err(format!(
                "unknown channel {shown:?}: open exactly \"{}\" and \"{}\"",
                channels::REALTIME,
                channels::CONTROL
            ));
        }
    };
    let required = ChannelParams::required_for(label).unwrap_or(ChannelParams::CONTROL);
    let Some(config) = config else {
        return Err(format!(
            "channel {label:?} has no parameters (negotiated out of band?): it must be \
             {required}, announced in band"
        ));
    };
    let got = params_of(config);
    if got != required {
        return Err(format!("channel {label:?} must be {required}, got {got}"));
    }
    Ok((lane, got))
}

/// Members per room, in join order. A room exists while it has members.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: HashMap<RoomId, Vec<PeerId>>,
}

impl Rooms {
    pub fn join(&mut self, room: &RoomId, peer: PeerId) {
        let members = self.rooms.entry(room.clone()).or_default();
        if !members.contains(&peer) {
            members.push(peer);
        }
    }

    /// Removes `peer`; the room goes when it is empty.
    pub fn leave(&mut self, room: &RoomId, peer: PeerId) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|m| *m != peer);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    pub fn members(&self, room: &RoomId) -> &[PeerId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }
}

/// May a relayed frame of `frame_len` bytes go onto a `realtime` lane that
/// has `buffered` bytes waiting? Never queue: a couple of datagrams at most.
pub(crate) fn realtime_has_room(buffered: usize, frame_len: usize, limit: usize) -> bool {
    buffered.saturating_add(frame_len) <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(label: &str, ordered: bool, reliability: Reliability) -> ChannelConfig {
        ChannelConfig {
            label: label.into(),
            ordered,
            reliability,
            negotiated: None,
            protocol: String::new(),
        }
    }

    #[test]
    fn accepts_the_two_required_channels() {
        let rt = cfg(
            "realtime",
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        );
        assert_eq!(
            check_channel("realtime", Some(&rt)),
            Ok((Lane::Realtime, ChannelParams::REALTIME))
        );
        let ctl = cfg("control", true, Reliability::Reliable);
        assert_eq!(
            check_channel("control", Some(&ctl)),
            Ok((Lane::Control, ChannelParams::CONTROL))
        );
    }

    #[test]
    fn rejects_wrong_parameters_with_a_clear_reason() {
        let rt = cfg("realtime", true, Reliability::Reliable);
        assert_eq!(
            check_channel("realtime", Some(&rt)).unwrap_err(),
            "channel \"realtime\" must be ordered=false maxRetransmits=0, got ordered=true reliable"
        );
        let rt = cfg(
            "realtime",
            false,
            Reliability::MaxPacketLifetime { lifetime: 100 },
        );
        assert!(check_channel("realtime", Some(&rt))
            .unwrap_err()
            .ends_with("got ordered=false maxPacketLifeTime=100ms"));
        let rt = cfg(
            "realtime",
            false,
            Reliability::MaxRetransmits { retransmits: 2 },
        );
        assert!(check_channel("realtime", Some(&rt)).is_err());
        let ctl = cfg("control", false, Reliability::Reliable);
        assert_eq!(
            check_channel("control", Some(&ctl)).unwrap_err(),
            "channel \"control\" must be ordered=true reliable, got ordered=false reliable"
        );
        assert!(check_channel("control", None)
            .unwrap_err()
            .contains("no parameters"));
        let chat = cfg("chat", true, Reliability::Reliable);
        assert!(check_channel("chat", Some(&chat))
            .unwrap_err()
            .starts_with("unknown channel \"chat\""));
        let long = "x".repeat(500);
        assert!(check_channel(&long, None).unwrap_err().len() < 120);
    }

    #[test]
    fn rooms_come_and_go_with_members() {
        let mut rooms = Rooms::default();
        let a = RoomId::try_from("a").unwrap();
        let b = RoomId::try_from("b").unwrap();
        rooms.join(&a, PeerId(1));
        rooms.join(&a, PeerId(2));
        rooms.join(&a, PeerId(2));
        rooms.join(&b, PeerId(3));
        assert_eq!(rooms.members(&a), &[PeerId(1), PeerId(2)]);
        assert_eq!(rooms.len(), 2);
        rooms.leave(&a, PeerId(1));
        assert_eq!(rooms.members(&a), &[PeerId(2)]);
        rooms.leave(&a, PeerId(2));
        rooms.leave(&a, PeerId(9));
        assert_eq!(rooms.members(&a), &[] as &[PeerId]);
        assert_eq!(rooms.len(), 1);
        rooms.leave(&b, PeerId(3));
        assert_eq!(rooms.len(), 0);
    }

    #[test]
    fn limits_include_the_header() {
        assert_eq!(Lane::Realtime.max_payload(), 1194);
        assert_eq!(Lane::Control.max_payload(), 16 * 1024 - 6);
        assert!(realtime_has_room(0, 1200, 2400));
        assert!(realtime_has_room(1200, 1200, 2400));
        assert!(!realtime_has_room(1201, 1200, 2400));
        assert!(!realtime_has_room(usize::MAX, 1, 2400));
    }
}
