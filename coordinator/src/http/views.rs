//! Turning stored rows into the wire resources of `settle_participant::api`.

use settle_participant::api;

use super::error::ApiError;
use crate::definition::Document;
use crate::machine::saga::Saga;
use crate::store::{self, definitions::StoredDefinition, sagas::SagaRow};

pub fn saga(row: SagaRow) -> Result<api::Saga, ApiError> {
    let saga: Saga = serde_json::from_value(row.progress)
        .map_err(|e| ApiError::internal(&store::Error::Corrupt(e.to_string())))?;
    Ok(api::Saga {
        id: row.id,
        definition: row.definition,
        version: row.version,
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
