//! `/v1/admin/transactions`: what operators read first, the filtered list (with
//! `state=stuck` as the to-do list) and one transaction with its whole timeline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use settle_participant::api::{
    ActionAccepted, AdminDetail, AdminPage, AdminTransaction, BulkAction, BulkResult,
    OperatorAction, SkipAction, TimelineEvent,
};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::{json, views, AppState};
use crate::driver::Acted;
use crate::machine::operator::Action;
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
    "resolved",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    state: Option<String>,
    definition: Option<String>,
    version: Option<String>,
    older_than: Option<String>,
    in_flight_longer_than: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    updated_after: Option<String>,
    updated_before: Option<String>,
    participant: Option<String>,
    step: Option<String>,
    id_prefix: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn duration(field: &str, value: Option<&str>) -> Result<Option<Duration>, ApiError> {
    value
        .map(|t| {
            humantime::parse_duration(t)
                .map_err(|_| bad(field, format!("'{t}' is not a duration like 5m or 1h")))
        })
        .transpose()
}

/// RFC 3339, with `Z` or a numeric offset.
fn instant(field: &str, value: Option<&str>) -> Result<Option<SystemTime>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let invalid = || {
        bad(
            field,
            format!("'{text}' is not an RFC 3339 time like 2026-01-31T12:00:00Z"),
        )
    };
    let (local, offset_s) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((local, off))
            if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' =>
        {
            let hours: i64 = off[1..3].parse().map_err(|_| invalid())?;
            let minutes: i64 = off[4..6].parse().map_err(|_| invalid())?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (local, sign * (hours * 3600 + minutes * 60))
        }
        _ => (text.strip_suffix('Z').ok_or_else(invalid)?, 0),
    };
    let at = humantime::parse_rfc3339_weak(local).map_err(|_| invalid())?;
    let at = if offset_s >= 0 {
        at.checked_sub(Duration::from_secs(offset_s as u64))
    } else {
        at.checked_add(Duration::from_secs((-offset_s) as u64))
    };
    at.ok_or_else(invalid).map(Some)
}

/// The id range a hex prefix (dashes allowed) stands for.
fn id_range(text: &str) -> Result<(Uuid, Uuid), ApiError> {
    let hex: String = text
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_lowercase();
    if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(
            "id_prefix",
            format!("'{text}' is not the start of a transaction id (1 to 32 hex digits)"),
        ));
    }
    let pad = |fill: char| {
        let full: String = hex
            .chars()
            .chain(std::iter::repeat(fill))
            .take(32)
            .collect();
        Uuid::parse_str(&full).map_err(|_| bad("id_prefix", "not hex".into()))
    };
    Ok((pad('0')?, pad('f')?))
}

/// A participant URL or URL prefix as migration 0004 spells its search terms.
fn participant_term(text: &str) -> Result<String, ApiError> {
    let url = text
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len()
    {
        return Err(bad(
            "participant",
            format!("'{text}' is not an http(s) URL or URL prefix like http://host:port/path"),
        ));
    }
    Ok(format!("url:{url}"))
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
        let older_than = duration("older_than", self.older_than.as_deref())?;
        let in_flight_longer_than = duration(
            "in_flight_longer_than",
            self.in_flight_longer_than.as_deref(),
        )?;
        let version = match self.version.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                bad(
                    "version",
                    format!("must be a positive whole number, got '{v}'"),
                )
            })?),
        };
        let mut terms = Vec::new();
        if let Some(p) = self.participant.as_deref() {
            terms.push(participant_term(p)?);
        }
        if let Some(step) = self.step.as_deref() {
            terms.push(format!("step:{step}"));
        }
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
            version,
            older_than,
            in_flight_longer_than,
            created_after: instant("created_after", self.created_after.as_deref())?,
            created_before: instant("created_before", self.created_before.as_deref())?,
            updated_after: instant("updated_after", self.updated_after.as_deref())?,
            updated_before: instant("updated_before", self.updated_before.as_deref())?,
            terms,
            id_range: self.id_prefix.as_deref().map(id_range).transpose()?,
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
        paused: item.paused,
    }
}

/// `GET /v1/admin/transactions` with the filters of [`ListQuery`], `limit` and `cursor`.
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
    let (counts, counts_estimated) = store::admin::counts(&state.pool).await?;
    let page = AdminPage {
        items: items.into_iter().map(summary).collect(),
        next_cursor,
        counts,
        counts_estimated,
    };
    Ok(json(StatusCode::OK, &page))
}

/// `GET /v1/admin/transactions/{id}`: the transaction and every event of its timeline.
pub async fn detail(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
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

/// A JSON body, or the default when the body is empty; unknown fields are 422.
fn body_of<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(
                "invalid_body",
                format!("the body does not match the schema: {e}"),
            )
        } else {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

fn check_note(note: &Option<String>) -> Result<(), ApiError> {
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("note: at most {MAX_NOTE} characters"),
        )
        .with_field("note"));
    }
    Ok(())
}

/// The action a path names, with its note. `skip` reads its step and output from the body.
fn action_of(name: &str, body: &[u8]) -> Result<(Action, Option<String>), ApiError> {
    let simple = |action| -> Result<(Action, Option<String>), ApiError> {
        let body: OperatorAction = body_of(body)?;
        check_note(&body.note)?;
        Ok((action, body.note))
    };
    match name {
        "retry" => simple(Action::Retry),
        "pause" => simple(Action::Pause),
        "resume" => simple(Action::Resume),
        "compensate" => simple(Action::Compensate),
        "resolve" => simple(Action::Resolve),
        "skip" => {
            let body: SkipAction = body_of(body)?;
            check_note(&body.note)?;
            if body.step.is_empty() {
                return Err(ApiError::unprocessable(
                    "invalid_body",
                    "step: name the step to skip",
                )
                .with_field("step"));
            }
            Ok((
                Action::Skip {
                    step: body.step,
                    output: body.output,
                },
                body.note,
            ))
        }
        other => Err(ApiError::not_found(
            "unknown_action",
            format!("no action '{other}'; actions are retry, pause, resume, compensate, skip and resolve"),
        )),
    }
}

/// `POST /v1/admin/transactions/{id}/{action}`: retry, pause, resume, compensate,
/// skip or resolve. 200 when applied or already in effect, 409 with the reason
/// when the action does not apply to the transaction's state.
pub async fn act(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
    caller: Caller,
    path: web::Path<(Uuid, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let (action, note) = action_of(&name, &body)?;
    let acted = state
        .driver
        .operate(id, action, caller.name(), note.as_deref())
        .await?;
    match acted {
        Acted::Done { state } | Acted::AlreadyInEffect { state } => Ok(json(
            StatusCode::OK,
            &ActionAccepted {
                id,
                action: name,
                state,
            },
        )),
        Acted::NotApplicable(why) => Err(ApiError::conflict("action_not_applicable", why)),
        Acted::Busy => Err(ApiError::conflict(
            "transaction_busy",
            "another coordinator instance holds this transaction right now; try again shortly",
        )),
        Acted::NotFound => Err(ApiError::not_found(
            "transaction_not_found",
            format!("no transaction with id {id}"),
        )),
    }
}

/// The most transactions one bulk action may touch; narrow the filter for more.
const MAX_BULK: usize = 10_000;

/// `POST /v1/admin/transactions/actions/{action}` with the list's filters: the
/// action on every match (or, with `dry_run`, only the count).
pub async fn bulk(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    query: web::Query<ListQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    if name == "skip" {
        return Err(ApiError::bad_request(
            "bulk_not_supported",
            "skip needs a step and an output per transaction; it is not available in bulk",
        ));
    }
    let (action, _) = action_of(&name, b"")?;
    let request: BulkAction = body_of(&body)?;
    check_note(&request.note)?;
    let mut filter = query.filter()?;
    filter.limit = 500;
    let mut ids = Vec::new();
    loop {
        let page = store::admin::list(&state.pool, &filter).await?;
        let full = page.len() as i64 == filter.limit;
        filter.after = page.last().map(|t| (t.created_at, t.id));
        ids.extend(page.into_iter().map(|t| t.id));
        if ids.len() > MAX_BULK {
            return Err(ApiError::bad_request(
                "too_many_matches",
                format!("the filter matches more than {MAX_BULK} transactions; narrow it"),
            ));
        }
        if !full {
            break;
        }
    }
    let mut result = BulkResult {
        action: name,
        dry_run: request.dry_run,
        matched: ids.len() as u64,
        applied: 0,
        skipped: 0,
    };
    if !request.dry_run {
        for id in ids {
            match state
                .driver
                .operate(id, action.clone(), caller.name(), request.note.as_deref())
                .await?
            {
                Acted::Done { .. } => result.applied += 1,
                _ => result.skipped += 1,
            }
        }
    }
    Ok(json(StatusCode::OK, &result))
}
