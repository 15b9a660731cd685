//! The coordinator's REST resources as they travel on the wire: what `POST /v1/sagas`
//! takes and what the read endpoints return. The coordinator serializes these and the
//! SDK client deserializes them, so the two cannot disagree.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Body of `POST /v1/sagas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSaga {
    /// Name of a registered saga definition; its latest version is used.
    pub definition: String,
    /// The saga input, passed to every step.
    #[serde(default)]
    pub input: Value,
}

/// A saga as `GET /v1/sagas/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub id: Uuid,
    pub definition: String,
    pub version: i32,
    /// `running`, `compensating`, `completed`, `compensated` or `stuck`.
    pub state: String,
    pub input: Value,
    /// Why the saga left the forward path (a step's refusal, exhausted retries,
    /// the deadline, a cancel) or why it is stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether a cancel was requested.
    #[serde(default)]
    pub cancel_requested: bool,
    pub steps: Vec<SagaStep>,
    /// RFC 3339 timestamps.
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl Saga {
    /// True once the saga can no longer change by itself (`completed` or `compensated`).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "compensated")
    }

    /// The step with this name, if the definition has one.
    pub fn step(&self, name: &str) -> Option<&SagaStep> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// One step of a saga, as the read endpoints show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaStep {
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `compensating`, `compensated` or `skipped`.
    pub state: String,
    /// Calls made for the action.
    pub attempts: u32,
    /// Calls made for the compensation.
    pub compensation_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// A registered saga definition version, as the read endpoints return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDefinition {
    pub name: String,
    pub version: i32,
    /// Hex SHA-256 of the normalized definition.
    pub digest: String,
    pub created_at: String,
    /// The normalized definition document.
    pub spec: Value,
}

/// One entry of `GET /v1/saga-definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDefinitionSummary {
    pub name: String,
    pub latest_version: i32,
    pub description: Option<String>,
    pub steps: usize,
    pub updated_at: String,
}

/// An `application/problem+json` body (RFC 9457) with Settle's stable `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable error code, e.g. `invalid_definition`.
    pub code: String,
    pub detail: String,
    /// The offending field, when one is to blame (e.g. `steps[1].action.url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Body of `POST /v1/transactions`. With `participants` it is a one-shot 2PC
/// transaction, prepared at once; without, an interactive (TCC) transaction that
/// collects branches until the client commits or aborts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTransaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<NewBranch>>,
    /// How long until an undecided transaction aborts, e.g. `30s` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A branch: a one-shot participant, or a TCC branch registered with
/// `POST /v1/transactions/{id}/branches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBranch {
    pub name: String,
    /// Required for one-shot participants; optional for TCC branches (whose Try
    /// already happened), which are then only confirmed or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_url: Option<String>,
    pub commit_url: String,
    pub abort_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// A 2PC / TCC transaction as `GET /v1/transactions/{id}` returns it. An in-doubt
/// participant reads `decision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: Uuid,
    /// `one_shot` or `interactive`.
    pub mode: String,
    /// `active`, `preparing`, `committing`, `committed`, `aborting`, `aborted` or `stuck`.
    pub state: String,
    /// `commit` or `abort` once decided; absent before (presumed abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub branches: Vec<TransactionBranch>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

impl Transaction {
    /// True once every branch has acknowledged the decision.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "committed" | "aborted")
    }

    pub fn branch(&self, name: &str) -> Option<&TransactionBranch> {
        self.branches.iter().find(|b| b.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionBranch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_url: Option<String>,
    pub commit_url: String,
    pub abort_url: String,
    /// `registered`, `preparing`, `prepared`, `refused`, `committing`, `committed`,
    /// `aborting` or `aborted`.
    pub state: String,
    pub prepare_attempts: u32,
    pub phase_two_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// One row of the operators' list, `GET /v1/admin/transactions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminTransaction {
    pub id: Uuid,
    /// `saga` or `twopc`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// An operator paused it: nobody drives it until it is resumed.
    #[serde(default)]
    pub paused: bool,
}

/// A page of the operators' list, newest first, with counts per state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminPage {
    pub items: Vec<AdminTransaction>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Transactions per state over the whole table (the stuck count is the to-do list).
    pub counts: std::collections::BTreeMap<String, i64>,
    /// States whose count is the planner's estimate (finished states on a large
    /// table); in-flight states, `stuck` included, are always exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts_estimated: Vec<String>,
}

/// One entry of a transaction's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at: String,
    /// `started`, `attempt`, `compensating`, `completed`, `recovered`, `stuck`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i32>,
    /// The instance or the client that acted.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// `GET /v1/admin/transactions/{id}`: the transaction as its own endpoint shows it,
/// plus the full timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminDetail {
    pub summary: AdminTransaction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga: Option<Saga>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
    pub events: Vec<TimelineEvent>,
}

/// Body of an operator action such as `POST /v1/admin/transactions/{id}/retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAction {
    /// Why, for the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Body of `POST /v1/admin/transactions/{id}/skip`: mark a saga step done with
/// this output, after the participant was fixed by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipAction {
    pub step: String,
    /// The step's output, as its action would have returned it (default null).
    #[serde(default)]
    pub output: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Body of `POST /v1/admin/transactions/actions/{action}` (filters in the query).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkAction {
    /// Only count what matches; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to a bulk action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    pub action: String,
    pub dry_run: bool,
    /// Transactions the filter matched.
    pub matched: u64,
    /// Those the action was applied to.
    pub applied: u64,
    /// Those it did not apply to (or that were already in that state, or busy).
    pub skipped: u64,
}

/// The answer to an accepted operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionAccepted {
    pub id: Uuid,
    /// e.g. `retry`.
    pub action: String,
    /// The state the transaction moves to.
    pub state: String,
}
