//! Starting 2PC / TCC transactions, registering TCC branches, and closing an
//! interactive transaction (commit, abort, or its deadline), which takes ownership
//! of it in the same database transaction that reads its branch list.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use settle_participant::api::{NewBranch, NewTransaction};
use uuid::Uuid;

use super::workflow::{step_of, Event, TxRun, Workflow};
use super::{request_digest, run, Created, Driver, Started};
use crate::allow::AllowList;
use crate::definition::{self, Invalid};
use crate::machine::retry::RetryPolicy;
use crate::machine::twopc::{BranchSpec, TwoPc, Verdict};
use crate::store::create::{Inserted, NewRow};
use crate::store::transactions::EventRecord;
use crate::store::twopc::{ClosedState, Registered};
use crate::store::{self, twopc::Closed as StoreClosed};
use crate::telemetry::TraceContext;

const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_BRANCHES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TxStartError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("idempotency key reused with a different request")]
    KeyReused,
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("stored transaction state is unreadable: {0}")]
    Corrupt(String),
}

/// What a commit or abort request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Closed by this request; this instance drives it now.
    Now,
    /// Closed before (or a one-shot transaction): its state and decision, if any.
    Already {
        state: String,
        verdict: Option<Verdict>,
    },
    NotFound,
}

/// A branch from the wire, checked.
pub fn branch_spec(
    field: &str,
    b: &NewBranch,
    needs_prepare: bool,
    allow: &AllowList,
) -> Result<BranchSpec, Invalid> {
    definition::check_name(&format!("{field}.name"), &b.name)?;
    if let Some(url) = &b.prepare_url {
        definition::check_allowed(&format!("{field}.prepare_url"), url, allow)?;
    } else if needs_prepare {
        return Err(Invalid::new(
            format!("{field}.prepare_url"),
            "a one-shot participant needs a prepare_url",
        ));
    }
    definition::check_allowed(&format!("{field}.commit_url"), &b.commit_url, allow)?;
    definition::check_allowed(&format!("{field}.abort_url"), &b.abort_url, allow)?;
    Ok(BranchSpec {
        name: b.name.clone(),
        prepare_url: b.prepare_url.clone(),
        commit_url: b.commit_url.clone(),
        abort_url: b.abort_url.clone(),
        payload: b.payload.clone().unwrap_or(Value::Null),
    })
}

impl Driver {
    /// Creates a one-shot (participants given: prepared at once) or interactive
    /// (TCC: collects branches) transaction in one commit and drives it here.
    pub async fn start_transaction(
        self: &Arc<Self>,
        request: &NewTransaction,
        idempotency_key: Option<&str>,
        actor: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Started, TxStartError> {
        if self.shutdown.is_cancelled() {
            return Err(TxStartError::ShuttingDown);
        }
        let defaults = &self.settings.twopc;
        let timeout = match &request.timeout {
            Some(t) => {
                definition::check_duration("timeout", t, Duration::from_millis(100), MAX_TIMEOUT)?
            }
            None => defaults.default_timeout,
        };
        // Past max_attempts a transaction in phase two is flagged stuck and retried at max_backoff.
        let retry = RetryPolicy {
            max_attempts: defaults.max_attempts,
            initial_backoff_ms: defaults.initial_backoff.as_millis() as u64,
            max_backoff_ms: defaults
                .max_backoff
                .as_millis()
                .max(defaults.initial_backoff.as_millis()) as u64,
            multiplier: 2.0,
        };
        let call_timeout_ms = defaults.call_timeout.as_millis() as u64;
        let clock = self.clock();
        let deadline = clock.now + timeout.as_millis() as i64;
        let tx = match &request.participants {
            Some(participants) => {
                if participants.is_empty() || participants.len() > MAX_BRANCHES {
                    return Err(Invalid::new(
                        "participants",
                        format!(
                            "between 1 and {MAX_BRANCHES} participants are needed, got {}",
                            participants.len()
                        ),
                    )
                    .into());
                }
                let mut branches = Vec::with_capacity(participants.len());
                for (i, p) in participants.iter().enumerate() {
                    let spec = branch_spec(
                        &format!("participants[{i}]"),
                        p,
                        true,
                        &self.settings.participants.allow,
                    )?;
                    if branches.iter().any(|b: &BranchSpec| b.name == spec.name) {
                        return Err(Invalid::new(
                            format!("participants[{i}].name"),
                            format!("duplicate participant name '{}'", spec.name),
                        )
                        .into());
                    }
                    branches.push(spec);
                }
                TwoPc::one_shot(branches, deadline, retry, call_timeout_ms)
            }
            None => TwoPc::interactive(deadline, retry, call_timeout_ms),
        };
        let input =
            serde_json::to_value(request).map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let mut run = TxRun { tx };
        let mut first = run.on(Event::Start, clock);
        first.durable = false;
        let progress = run
            .progress()
            .map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let id = Uuid::now_v7();
        let sent_ms = self.monotonic_ms();
        let raw_input = serde_json::value::to_raw_value(&input)
            .map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let row = Arc::new(NewRow {
            id,
            kind: "twopc",
            definition: None,
            version: None,
            state: run.state(),
            request_digest: request_digest(&[b"twopc", raw_input.get().as_bytes()]),
            input: raw_input,
            progress,
            idempotency_key: idempotency_key.map(str::to_owned),
            deadline_ms: deadline,
            next_ms: run.wake_at(clock.now),
            lease_ms: self.lease_duration().as_millis() as i64,
            actor: actor.to_string(),
            traceparent: trace.map(TraceContext::traceparent),
            tracestate: trace.and_then(|t| t.tracestate.clone()),
        });
        match self.creator.write(row.clone()).await? {
            Inserted::Created { fence, created_at } => {
                tracing::info!(transaction_id = %id, mode = ?run.tx.mode, branches = run.tx.branches.len(), "transaction started");
                self.metrics.started("twopc", "");
                self.drive_created(id, fence, run, first, trace, sent_ms);
                Ok(Started::New(Created {
                    row,
                    fence,
                    created_at,
                }))
            }
            Inserted::Existing { id, same_request } if same_request => Ok(Started::Existing(id)),
            Inserted::Existing { .. } => Err(TxStartError::KeyReused),
            // Only a saga names a definition version that can be outdated.
            Inserted::StaleVersion => Err(store::Error::Corrupt(
                "a 2PC transaction was refused as created under an old definition".into(),
            )
            .into()),
        }
    }

    /// Registers a TCC branch on an active interactive transaction.
    pub async fn register_branch(
        &self,
        id: Uuid,
        branch: &BranchSpec,
        actor: &str,
    ) -> Result<Registered, store::Error> {
        store::twopc::add_branch(&self.pool, id, branch, actor).await
    }

    /// Commits or aborts an interactive transaction (also: its deadline passing).
    /// Whoever closes it owns it from then on and drives phase one or two.
    #[tracing::instrument(skip_all, fields(transaction_id = %id, verdict = verdict.as_str()))]
    pub async fn close_transaction(
        self: &Arc<Self>,
        id: Uuid,
        verdict: Verdict,
        reason: Option<String>,
        actor: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Closed, CloseError> {
        let traceparent = trace.map(TraceContext::traceparent);
        let clock = self.clock();
        let sent_ms = self.monotonic_ms();
        let closed = store::twopc::close(
            &self.pool,
            id,
            self.instance(),
            self.lease_duration(),
            (
                traceparent.as_deref(),
                trace.and_then(|t| t.tracestate.as_deref()),
            ),
            |progress, branches| {
                let mut tx: TwoPc = serde_json::from_value(progress).ok()?;
                let decision = tx.close(verdict, branches, reason, clock);
                if !decision.durable {
                    return None;
                }
                let mut step = step_of(decision);
                step.durable = false;
                let mut events = vec![EventRecord {
                    kind: "close_requested",
                    actor: actor.to_string(),
                    detail: Some(serde_json::json!({ "verdict": verdict.as_str() })),
                    ..EventRecord::default()
                }];
                events.extend(self.transition_records(&step.transitions));
                let closed = ClosedState {
                    state: tx.status.as_str(),
                    progress: serde_json::to_value(&tx).ok()?,
                    reason: tx.reason.clone(),
                    next_attempt_at: tx.wake_at(clock.now),
                    events,
                };
                Some((closed, (tx, step)))
            },
        )
        .await?;
        match closed {
            StoreClosed::Now {
                fence,
                value: (tx, step),
                trace: (traceparent, tracestate),
            } => {
                self.adopt(
                    run::Run {
                        id,
                        fence,
                        w: TxRun { tx },
                        trace: TraceContext::stored_or_own(
                            id,
                            traceparent.as_deref(),
                            tracestate.as_deref(),
                        ),
                    },
                    (step, Vec::new()),
                    None,
                    sent_ms,
                );
                Ok(Closed::Now)
            }
            StoreClosed::Already { state, progress } => {
                let tx: TwoPc = serde_json::from_value(progress)
                    .map_err(|e| CloseError::Corrupt(e.to_string()))?;
                Ok(Closed::Already {
                    state,
                    verdict: tx.verdict,
                })
            }
            StoreClosed::NotFound => Ok(Closed::NotFound),
        }
    }
}
