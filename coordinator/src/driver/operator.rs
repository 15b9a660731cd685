//! Operator actions that put a transaction back in motion. Retrying a stuck saga
//! takes it over like a recovery claim (Redis lock, fresh fence) and records who
//! asked, and why, on its timeline.

use std::sync::Arc;

use uuid::Uuid;

use super::run::Run;
use super::workflow::{Event, SagaRun, Workflow};
use super::Driver;
use crate::machine::saga::Saga;
use crate::store::batch::StateWrite;
use crate::store::{
    self,
    transactions::{EventRecord, Written},
};

/// What a retry request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Compensation resumes, driven by this instance.
    Now,
    /// Nothing to retry: the transaction is in this state.
    NotStuck(String),
    /// Another instance holds the transaction's lock right now.
    Busy,
    NotFound,
}

impl Driver {
    /// Sends a stuck saga back to compensation with a fresh retry budget.
    #[tracing::instrument(skip_all, fields(transaction_id = %id))]
    pub async fn operator_retry(
        self: &Arc<Self>,
        id: Uuid,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Retried, store::Error> {
        let lock = match self.locks.acquire(id, self.lease_duration()).await {
            Ok(Some(token)) => Some(token),
            Ok(None) => return Ok(Retried::Busy),
            Err(_) => None,
        };
        let sent_ms = self.monotonic_ms();
        let Some(row) =
            store::transactions::take_stuck(&self.pool, id, self.instance(), self.lease_duration())
                .await?
        else {
            if let Some(token) = &lock {
                let _ = self.locks.release(id, token).await;
            }
            return Ok(match store::transactions::get(&self.pool, id).await? {
                Some(row) => Retried::NotStuck(row.state),
                None => Retried::NotFound,
            });
        };
        let spec = match (row.definition.as_deref(), row.version) {
            (Some(name), Some(version)) => self
                .specs
                .get(name, version)
                .await
                .map_err(|e| store::Error::Corrupt(e.to_string()))?,
            _ => return Err(store::Error::Corrupt("a saga without a definition".into())),
        };
        let saga: Saga = serde_json::from_value(row.progress.clone())
            .map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let mut run = SagaRun {
            spec,
            saga,
            input: Arc::new(row.input.clone()),
        };
        let clock = self.clock();
        let mut step = run.on(Event::OperatorRetry, clock);
        let mut events = vec![EventRecord {
            kind: "operator_retry",
            actor: actor.to_string(),
            detail: note.map(|n| serde_json::json!({ "note": n })),
            ..EventRecord::default()
        }];
        events.extend(self.transition_records(&step.transitions));
        // Durable before the answer: the caller reads `compensating` right away.
        let progress = run
            .progress()
            .map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let write = StateWrite {
            id,
            fence: row.fence,
            state: run.state(),
            progress,
            reason: run.reason().map(str::to_owned),
            next_ms: run.wake_at(clock.now),
            lease_ms: self.lease_duration().as_millis() as i64,
            events,
        };
        if self.writer.write(write).await? == Written::OwnershipLost {
            // Another operator's retry took it over between our claim and our write.
            if let Some(token) = &lock {
                let _ = self.locks.release(id, token).await;
            }
            return Ok(Retried::Busy);
        }
        step.durable = false;
        tracing::info!(actor, "operator retry of a stuck saga");
        let run = Run {
            trace: super::recovery::trace_of(&row),
            id,
            fence: row.fence,
            w: run,
        };
        self.adopt(run, (step, Vec::new()), lock, sent_ms);
        Ok(Retried::Now)
    }
}
