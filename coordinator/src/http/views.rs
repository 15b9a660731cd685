//! Turning stored rows into the wire resources of `settle_participant::api`.

use settle_participant::api;

use super::error::ApiError;
use crate::definition::Document;
use crate::machine::saga::Saga;
use crate::machine::twopc::{BranchSpec, Mode, TwoPc};
use crate::store::{self, definitions::StoredDefinition, transactions::TransactionRow};

pub fn saga(row: TransactionRow) -> Result<api::Saga, ApiError> {
    let saga: Saga = serde_json::from_str(row.progress.get())
        .map_err(|e| ApiError::internal(&store::Error::Corrupt(e.to_string())))?;
    Ok(api::Saga {
        id: row.id,
        definition: row.definition.unwrap_or_default(),
        version: row.version.unwrap_or_default(),
        state: row.state,
        input: row.input,
        reason: row.reason,
        cancel_requested: row.cancel_requested,
        steps: saga
            .steps
            .into_iter()
            .map(|s| api::SagaStep {
                name: s.name,
                state: s.status.as_str().to_string(),
                attempts: s.attempts,
                compensation_attempts: s.compensation_attempts,
                output: s.output,
                last_status: s.last_status,
                last_error: s.last_error,
                next_attempt_at: s
                    .next_attempt_at
                    .map(|ms| store::rfc3339(store::to_time(ms))),
            })
            .collect(),
        created_at: store::rfc3339(row.created_at),
        updated_at: store::rfc3339(row.updated_at),
        deadline: row.deadline.map(store::rfc3339),
        next_attempt_at: row.next_attempt_at.map(store::rfc3339),
    })
}

pub fn definition(d: StoredDefinition) -> api::SagaDefinition {
    api::SagaDefinition {
        name: d.name,
        version: d.version,
        digest: d.digest,
        created_at: store::rfc3339(d.created_at),
        spec: d.spec,
    }
}

pub fn summary(d: StoredDefinition) -> api::SagaDefinitionSummary {
    let doc: Option<Document> = serde_json::from_value(d.spec).ok();
    api::SagaDefinitionSummary {
        name: d.name,
        latest_version: d.version,
        description: doc.as_ref().and_then(|doc| doc.description.clone()),
        steps: doc.map_or(0, |doc| doc.steps.len()),
        updated_at: store::rfc3339(d.created_at),
    }
}

pub fn transaction(
    row: TransactionRow,
    registered: Vec<BranchSpec>,
) -> Result<api::Transaction, ApiError> {
    let tx: TwoPc = serde_json::from_str(row.progress.get())
        .map_err(|e| ApiError::internal(&store::Error::Corrupt(e.to_string())))?;
    let branch_view = |spec: BranchSpec, state: &str| api::TransactionBranch {
        name: spec.name,
        prepare_url: spec.prepare_url,
        commit_url: spec.commit_url,
        abort_url: spec.abort_url,
        state: state.to_string(),
        prepare_attempts: 0,
        phase_two_attempts: 0,
        last_status: None,
        last_error: None,
        next_attempt_at: None,
    };
    let mut branches: Vec<api::TransactionBranch> = tx
        .branches
        .into_iter()
        .map(|b| api::TransactionBranch {
            prepare_attempts: b.prepare_attempts,
            phase_two_attempts: b.phase_two_attempts,
            last_status: b.last_status,
            last_error: b.last_error,
            next_attempt_at: b
                .next_attempt_at
                .map(|ms| store::rfc3339(store::to_time(ms))),
            ..branch_view(b.spec, b.status.as_str())
        })
        .collect();
    // Branches of an active interactive transaction live in their own table until it closes.
    branches.extend(
        registered
            .into_iter()
            .map(|spec| branch_view(spec, "registered")),
    );
    Ok(api::Transaction {
        id: row.id,
        mode: match tx.mode {
            Mode::OneShot => "one_shot",
            Mode::Interactive => "interactive",
        }
        .to_string(),
        state: row.state,
        decision: tx.verdict.map(|v| v.as_str().to_string()),
        reason: row.reason,
        branches,
        created_at: store::rfc3339(row.created_at),
        updated_at: store::rfc3339(row.updated_at),
        deadline: row.deadline.map(store::rfc3339),
    })
}
