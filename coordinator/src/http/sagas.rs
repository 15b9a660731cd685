//! `/v1/sagas`: start (idempotent, optionally waiting), read, and cancel sagas.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use settle_participant::api::StartSaga;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::{fetch, parse_wait, views, AppState};
use crate::driver::Started;
use crate::store::transactions::TransactionRow;

const MAX_IDEMPOTENCY_KEY: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    pub wait: Option<String>,
}

pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.chars().all(|c| c.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
                ),
            )
            .with_field("Idempotency-Key")
        })?;
    Ok(Some(key.to_string()))
}

async fn respond(
    state: &AppState,
    id: Uuid,
    wait: Option<std::time::Duration>,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    answer(
        fetch(state, id, "saga", wait, "saga_not_found").await?,
        status,
    )
}

fn answer(row: TransactionRow, status: StatusCode) -> Result<HttpResponse, ApiError> {
    let id = row.id;
    Ok(HttpResponse::build(status)
        .insert_header((header::LOCATION, format!("/v1/sagas/{id}")))
        .json(views::saga(row)?))
}

/// `POST /v1/sagas`: 201 for a new saga, 200 for the one the idempotency key already names.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    query: web::Query<WaitQuery>,
    body: web::Json<StartSaga>,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    let key = idempotency_key(&req)?;
    let StartSaga { definition, input } = body.into_inner();
    super::limits::check_value("input", &input, &state.settings.limits)?;
    let started = state
        .driver
        .start_saga(
            &definition,
            input,
            key.as_deref(),
            caller.name(),
            super::trace_context(&req).as_ref(),
        )
        .await?;
    match started {
        // Not waiting: the saga as its creation stored it, with no read.
        Started::New(created) if wait.is_none() => answer(created.stored()?, StatusCode::CREATED),
        Started::New(created) => respond(&state, created.id(), wait, StatusCode::CREATED).await,
        Started::Existing(id) => respond(&state, id, wait, StatusCode::OK).await,
    }
}

/// `GET /v1/sagas/{id}`, optionally `?wait=5s` for a settled state.
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    respond(&state, *id, wait, StatusCode::OK).await
}

/// `POST /v1/sagas/{id}/cancel`: a running saga compensates (202); asking again is harmless.
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    let id = *id;
    let current = state.driver.cancel(id, caller.name()).await?;
    match current.as_deref() {
        None => Err(ApiError::not_found(
            "saga_not_found",
            format!("no saga with id {id}"),
        )),
        Some("running") | Some("compensating") => {
            respond(&state, id, wait, StatusCode::ACCEPTED).await
        }
        Some("compensated") => respond(&state, id, None, StatusCode::OK).await,
        Some("completed") => Err(ApiError::conflict(
            "saga_completed",
            "the saga has completed; a completed saga cannot be cancelled",
        )),
        Some(other) => Err(ApiError::conflict(
            "saga_not_cancellable",
            format!("the saga is {other}; an operator must resolve it first"),
        )),
    }
}
