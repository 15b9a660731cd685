//! `/v1/admin/transactions`: what operators read first, the filtered list (with
//! `state=stuck` as the to-do list) and one transaction with its whole timeline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use settle_participant::api::{
    ActionAccepted, AdminDetail, AdminPage, AdminTransaction, OperatorAction, TimelineEvent,
};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::{json, views, AppState};
use crate::driver::Retried;
use crate::store::{self, admin::Filter, admin::Listed};

const MAX_LIMIT: i64 = 500;
const STATES: &[&str] = &[
    "running",
    "compensating",
    "completed",
    "compensated",
    "stuck",
    "active",
    "preparing",
    "committing",
    "committed",
    "aborting",
    "aborted",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    state: Option<String>,
    definition: Option<String>,
    older_than: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn bad(field: &str, detail: String) -> ApiError {
    ApiError::bad_request("invalid_query", format!("{field}: {detail}")).with_field(field)
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let kind = match self.kind.as_deref() {
            None => None,
            Some(k @ ("saga" | "twopc")) => Some(k.to_string()),
            Some(other) => {
                return Err(bad("kind", format!("must be saga or twopc, got '{other}'")))
            }
        };
        let state = match self.state.as_deref() {
            None => None,
            Some(s) if STATES.contains(&s) => Some(s.to_string()),
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("must be one of {}, got '{other}'", STATES.join(", ")),
                ))
            }
        };
        let older_than = match self.older_than.as_deref() {
            None => None,
            Some(t) => Some(humantime::parse_duration(t).map_err(|_| {
                bad(
                    "older_than",
                    format!("'{t}' is not a duration like 5m or 1h"),
                )
            })?),
        };
        let limit = match self.limit.as_deref() {
            None => 50,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    bad(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}, got '{l}'"),
                    )
                })?,
        };
        let after = self.cursor.as_deref().map(parse_cursor).transpose()?;
        Ok(Filter {
            kind,
            state,
            definition: self.definition.clone(),
            older_than,
            after,
            limit,
        })
    }
}

/// Cursors are `{created_at in microseconds}_{id}`: opaque to clients, stable across pages.
fn cursor_of(item: &Listed) -> String {
    let micros = item
        .created_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros}_{}", item.id.simple())
}

fn parse_cursor(text: &str) -> Result<(SystemTime, Uuid), ApiError> {
    let invalid = || bad("cursor", "not a cursor this API gave out".to_string());
    let (micros, id) = text.split_once('_').ok_or_else(invalid)?;
    let micros: u64 = micros.parse().map_err(|_| invalid())?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((UNIX_EPOCH + Duration::from_micros(micros), id))
}

fn summary(item: Listed) -> AdminTransaction {
    AdminTransaction {
        id: item.id,
        kind: item.kind,
        definition: item.definition,
        version: item.version,
        state: item.state,
        reason: item.reason,
        owner: item.owner,
        created_at: store::rfc3339(item.created_at),
        updated_at: store::rfc3339(item.updated_at),
        next_attempt_at: item.next_attempt_at.map(store::rfc3339),
    }
}

/// `GET /v1/admin/transactions?kind&state&definition&older_than&limit&cursor`.
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    let mut items = store::admin::list(
        &state.pool,
        &Filter {
            limit: filter.limit + 1,
            ..filter.clone()
        },
    )
    .await?;
    let next_cursor = if items.len() as i64 > filter.limit {
        items.truncate(filter.limit as usize);
        items.last().map(cursor_of)
    } else {
        None
    };
    let page = AdminPage {
        items: items.into_iter().map(summary).collect(),
        next_cursor,
        counts: store::admin::counts(&state.pool).await?,
    };
    Ok(json(StatusCode::OK, &page))
}

/// `GET /v1/admin/transactions/{id}`: the transaction and every event of its timeline.
pub async fn detail(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let not_found = || {
        ApiError::not_found(
            "transaction_not_found",
            format!("no transaction with id {id}"),
        )
    };
    let item = store::admin::one(&state.pool, id)
        .await?
        .ok_or_else(not_found)?;
    let row = store::transactions::get(&state.pool, id)
        .await?
        .ok_or_else(not_found)?;
    let (saga, transaction) = if row.kind == "saga" {
        (Some(views::saga(row)?), None)
    } else {
        let branches = if row.state == "active" {
            store::twopc::branches(&state.pool, id).await?
        } else {
            Vec::new()
        };
        (None, Some(views::transaction(row, branches)?))
    };
    let events = store::transactions::events(&state.pool, id)
        .await?
        .into_iter()
        .map(|e| TimelineEvent {
            at: e.at,
            kind: e.kind,
            step: e.step,
            phase: e.phase,
            attempt: e.attempt,
            status_code: e.status_code,
            error: e.error,
            duration_ms: e.duration_ms,
            actor: e.actor,
            detail: e.detail,
        })
        .collect();
    let detail = AdminDetail {
        summary: summary(item),
        saga,
        transaction,
        events,
    };
    Ok(json(StatusCode::OK, &detail))
}

/// The longest note an operator can attach to an action.
const MAX_NOTE: usize = 2000;

/// The optional JSON body of an operator action; an empty body is no note.
fn operator_action(body: &[u8]) -> Result<OperatorAction, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(OperatorAction::default());
    }
    // Syntax first, then shape: read straight into the struct, serde calls an array
    // with one element too many "trailing characters", which is valid JSON.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::unprocessable(
            "invalid_body",
            format!("the body does not match the schema: {e}"),
        )
    })
}

/// `POST /v1/admin/transactions/{id}/retry`: a stuck saga compensates again with a
/// fresh retry budget (after the participant was fixed). 409 when it is not stuck.
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let note = operator_action(&body)?.note;
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("note: at most {MAX_NOTE} characters"),
        )
        .with_field("note"));
    }
    match state.driver.operator_retry(id, caller.name(), note.as_deref()).await? {
        Retried::Now => Ok(json(
            StatusCode::ACCEPTED,
            &ActionAccepted {
                id,
                action: "retry".into(),
                state: "compensating".into(),
            },
        )),
        Retried::NotStuck(s) => Err(ApiError::conflict(
            "not_stuck",
            format!("the transaction is {s}; only a stuck saga can be retried (2PC transactions retry by themselves)"),
        )),
        Retried::Busy => Err(ApiError::conflict(
            "transaction_busy",
            "another coordinator instance holds this transaction right now; try again shortly",
        )),
        Retried::NotFound => Err(ApiError::not_found("transaction_not_found", format!("no transaction with id {id}"))),
    }
}
