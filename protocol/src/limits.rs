//! Limits shared by the server and the clients. Servers may lower the
//! configurable ones; they never raise the hard ones.

/// Largest signaling WebSocket message the server accepts by default (bytes).
/// An SDP offer from Chromium with two DataChannels is about 1 KiB; 64 KiB
/// leaves room for any real offer while bounding memory per connection.
pub const DEFAULT_MAX_SIGNALING_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest SDP the server parses.
pub const MAX_SDP_BYTES: usize = 32 * 1024;

/// Largest ICE candidate line.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

pub const MAX_ROOM_ID_BYTES: usize = 64;
pub const MAX_DISPLAY_NAME_CHARS: usize = 32;

/// Largest DataChannel message on `realtime`, relay header included: one
/// datagram that fits the path MTU with room for DTLS/SCTP overhead.
pub const MAX_REALTIME_MESSAGE_BYTES: usize = 1200;

/// Largest DataChannel message on `control`, relay header included.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 * 1024;

/// Default capacity of a room.
pub const DEFAULT_ROOM_CAPACITY: usize = 4;

/// Largest capacity any room may have: a hard bound on fan-out per message.
pub const MAX_ROOM_CAPACITY: usize = 64;

/// Largest join token (a JWT with a few claims is a few hundred bytes).
pub const MAX_JOIN_TOKEN_BYTES: usize = 2048;
