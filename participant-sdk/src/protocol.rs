//! The participant call contract: the body and headers the coordinator sends to a
//! participant endpoint, and what each response status means. This is the one
//! definition both sides compile against (see `openapi/participant.yaml`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Header carrying `{transaction_id}:{step}:{phase}`, identical for every retry of a call.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Header carrying `t={unix seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
pub const SIGNATURE_HEADER: &str = "Settle-Signature";
/// W3C trace context header passed on to participants.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// W3C header with vendor trace data, passed on beside `traceparent` when the caller sent one.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Which half of a saga step the coordinator is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The forward action of a step.
    Action,
    /// The compensation that undoes a step's action.
    Compensation,
}

impl Phase {
    /// The snake_case name used on the wire and in idempotency keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every saga call the coordinator makes to a participant.
///
/// ```
/// use settle_participant::protocol::{CallRequest, Phase};
/// let body = r#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","saga":"order-checkout",
///   "step":"charge-payment","phase":"action","attempt":1,"input":{"amount":10},"results":{}}"#;
/// let call: CallRequest = serde_json::from_str(body).unwrap();
/// assert_eq!(call.phase, Phase::Action);
/// assert_eq!(call.idempotency_key(), "0190b6c2-5a1e-7000-8000-000000000001:charge-payment:action");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The saga's id (a UUID v7).
    pub transaction_id: Uuid,
    /// The saga definition's name.
    pub saga: String,
    /// The step being called.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// 1 for the first call, counting up on every retry of the same call.
    pub attempt: u32,
    /// The input the saga was started with.
    pub input: Value,
    /// Outputs of every step that has succeeded so far, by step name.
    #[serde(default)]
    pub results: Map<String, Value>,
}

impl CallRequest {
    /// The idempotency key of this call: the same for every retry.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.transaction_id, &self.step, self.phase)
    }
}

/// Builds `{transaction_id}:{step}:{phase}`.
pub fn idempotency_key(transaction_id: Uuid, step: &str, phase: Phase) -> String {
    format!("{transaction_id}:{step}:{phase}")
}

/// How the coordinator reads a participant's response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMeaning {
    /// 2xx: done; the JSON body (optional) is the step's output.
    Done,
    /// 409 or 422: the participant refuses; not retried.
    Refused,
    /// 202 or 425: still in progress; ask again later.
    InProgress,
    /// Anything else: a transient failure, retried with backoff.
    Transient,
}

/// Classifies a response status per the participant contract.
///
/// ```
/// use settle_participant::protocol::{classify_status, StatusMeaning};
/// assert_eq!(classify_status(200), StatusMeaning::Done);
/// assert_eq!(classify_status(202), StatusMeaning::InProgress);
/// assert_eq!(classify_status(409), StatusMeaning::Refused);
/// assert_eq!(classify_status(503), StatusMeaning::Transient);
/// ```
pub fn classify_status(status: u16) -> StatusMeaning {
    match status {
        202 | 425 => StatusMeaning::InProgress,
        200..=299 => StatusMeaning::Done,
        409 | 422 => StatusMeaning::Refused,
        _ => StatusMeaning::Transient,
    }
}

/// Which call of two-phase commit (or TCC) the coordinator is making to a branch.
/// TCC names them Try (the service does it itself, or `prepare`), Confirm (`commit`)
/// and Cancel (`abort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchPhase {
    Prepare,
    Commit,
    Abort,
}

impl BranchPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BranchPhase::Prepare => "prepare",
            BranchPhase::Commit => "commit",
            BranchPhase::Abort => "abort",
        }
    }
}

impl std::fmt::Display for BranchPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every 2PC / TCC call the coordinator makes to a branch.
///
/// ```
/// use settle_participant::protocol::{BranchCall, BranchPhase};
/// let body = r#"{"transaction_id":"0190b6c2-5a1e-7000-8000-000000000001","branch":"debit",
///   "phase":"prepare","attempt":1,"payload":{"account":"alice","delta":-10}}"#;
/// let call: BranchCall = serde_json::from_str(body).unwrap();
/// assert_eq!(call.phase, BranchPhase::Prepare);
/// assert_eq!(call.idempotency_key(), "0190b6c2-5a1e-7000-8000-000000000001:debit:prepare");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchCall {
    pub transaction_id: Uuid,
    /// The branch's name, unique within its transaction.
    pub branch: String,
    pub phase: BranchPhase,
    /// 1 for the first call, counting up on every retry of the same call.
    pub attempt: u32,
    /// What the branch was registered with (one-shot participants' `payload`).
    #[serde(default)]
    pub payload: Value,
}

impl BranchCall {
    /// `{transaction_id}:{branch}:{phase}`, the same for every retry.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.transaction_id, self.branch, self.phase)
    }
}

/// How the coordinator reads the answer to a `commit` or `abort` call: 2xx, and
/// 404/410 ("already done, nothing here"), acknowledge it; 202/425 mean ask again;
/// anything else (a refusal included: the decision cannot change) is retried.
///
/// ```
/// use settle_participant::protocol::{classify_phase_two, StatusMeaning};
/// assert_eq!(classify_phase_two(204), StatusMeaning::Done);
/// assert_eq!(classify_phase_two(410), StatusMeaning::Done);
/// assert_eq!(classify_phase_two(409), StatusMeaning::Transient);
/// ```
pub fn classify_phase_two(status: u16) -> StatusMeaning {
    match status {
        202 | 425 => StatusMeaning::InProgress,
        200..=299 | 404 | 410 => StatusMeaning::Done,
        _ => StatusMeaning::Transient,
    }
}
