//! TODO
/// TODO
pub struct MatchLog;
/// TODO
pub fn replay() {}
