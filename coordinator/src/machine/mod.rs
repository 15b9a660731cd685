//! The pure core: saga state machines that turn events and a clock reading into
//! decisions. Nothing here performs I/O, reads the wall clock or awaits; the
//! driver (`crate::driver`) carries out what the machines decide.

pub mod retry;
pub mod saga;
pub mod spec;

/// Milliseconds since the Unix epoch. Time always comes in as an argument.
pub type Millis = i64;

/// What the caller supplies with every event: the current time and one random
/// number in `[0, 1)` used for backoff jitter, so the machine stays deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    pub now: Millis,
    pub jitter: f64,
}

impl Clock {
    pub fn at(now: Millis) -> Self {
        Clock { now, jitter: 0.5 }
    }
}
