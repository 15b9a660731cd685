//! The pure core: saga state machines that turn events and a clock reading into
//! decisions. Nothing here performs I/O, reads the wall clock or awaits; the
//! driver (`crate::driver`) carries out what the machines decide.

pub mod operator;
pub mod retry;
pub mod saga;
pub mod spec;
pub mod twopc;

/// The stored states a transaction never leaves, of either kind. `stuck` is not
/// one of them: an operator can still act on it. (SQL that must match the partial
/// index `transactions_due` spells its own state lists out.)
pub const FINISHED_STATES: &[&str] = &[
    "completed",
    "compensated",
    "committed",
    "aborted",
    "resolved",
];

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

/// What a participant call came back with, already classified by the status-code
/// contract of its phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done (2xx, or "already done" for phase two); the body (or null) is the output.
    Done(serde_json::Value),
    /// A business "no" (409/422 for actions and prepares). Never retried.
    Refused { status: u16, message: String },
    /// 202/425: still working; ask again later without using up an attempt.
    InProgress { status: u16 },
    /// Any other status, a timeout, a refused connection.
    Transient { status: Option<u16>, error: String },
}
