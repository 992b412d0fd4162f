//! TODO
pub struct TickClock;
