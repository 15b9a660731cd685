//! A validated, compiled saga definition: the shape the machine reasons about.
//! Built by `crate::definition` from a user's YAML/JSON document; never from the wire directly.

use super::retry::RetryPolicy;

/// One version of a saga definition, with dependencies resolved to step indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaSpec {
    pub name: String,
    pub version: i32,
    /// Forward-progress deadline, from the saga's start.
    pub timeout_ms: i64,
    /// Steps in definition order; validation guarantees the dependencies form a DAG.
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub name: String,
    pub action: Endpoint,
    pub compensation: Option<Endpoint>,
    /// Indexes of the steps that must succeed before this one starts.
    pub depends_on: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub url: String,
    /// Per-call timeout.
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
}
