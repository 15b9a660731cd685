//! `/v1/transactions`: two-phase commit (one-shot) and TCC (interactive) transactions.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use settle_participant::api::{NewBranch, NewTransaction};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::sagas::{idempotency_key, WaitQuery};
use super::{fetch, parse_wait, views, AppState};
use crate::driver::{self, Closed, Started};
use crate::machine::twopc::Verdict;
use crate::store::transactions::TransactionRow;
use crate::store::{self, twopc::Registered};

async fn respond(
    state: &AppState,
    id: Uuid,
    wait: Option<std::time::Duration>,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    answer(
        state,
        fetch(state, id, "twopc", wait, "transaction_not_found").await?,
        status,
    )
    .await
}

async fn answer(
    state: &AppState,
    row: TransactionRow,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let id = row.id;
    let branches = if row.state == "active" {
        store::twopc::branches(&state.pool, id).await?
    } else {
        Vec::new()
    };
    Ok(HttpResponse::build(status)
        .insert_header((header::LOCATION, format!("/v1/transactions/{id}")))
        .json(views::transaction(row, branches)?))
}

/// `POST /v1/transactions`: one-shot with `participants`, interactive (TCC) without.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    query: web::Query<WaitQuery>,
    body: web::Json<NewTransaction>,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    let key = idempotency_key(&req)?;
    for (i, p) in body.participants.iter().flatten().enumerate() {
        if let Some(payload) = &p.payload {
            super::limits::check_value(
                &format!("participants[{i}].payload"),
                payload,
                &state.settings.limits,
            )?;
        }
    }
    let started = state
        .driver
        .start_transaction(
            &body,
            key.as_deref(),
            caller.name(),
            super::trace_context(&req).as_ref(),
        )
        .await
        .map_err(|e| match e {
            driver::TxStartError::Invalid(invalid) => {
                ApiError::unprocessable("invalid_transaction", invalid.to_string())
                    .with_field(invalid.field)
            }
            driver::TxStartError::Store(s) => s.into(),
            driver::TxStartError::KeyReused => ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            )
            .with_field("Idempotency-Key"),
            driver::TxStartError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this coordinator instance is shutting down; retry on another",
            ),
        })?;
    match started {
        // Not waiting: the transaction as its creation stored it, with no read.
        Started::New(created) if wait.is_none() => {
            answer(&state, created.stored()?, StatusCode::CREATED).await
        }
        Started::New(created) => respond(&state, created.id(), wait, StatusCode::CREATED).await,
        Started::Existing(id) => respond(&state, id, wait, StatusCode::OK).await,
    }
}

/// `GET /v1/transactions/{id}`: the decision for an in-doubt participant; `?wait=` for the end.
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    respond(&state, *id, wait, StatusCode::OK).await
}

/// `POST /v1/transactions/{id}/branches`: a TCC branch, after its Try succeeded.
pub async fn register_branch(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<NewBranch>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    if let Some(payload) = &body.payload {
        super::limits::check_value("payload", payload, &state.settings.limits)?;
    }
    let spec =
        driver::twopc_branch_spec("branch", &body, false, &state.settings.participants.allow)
            .map_err(|e| {
                ApiError::unprocessable("invalid_branch", e.to_string()).with_field(e.field)
            })?;
    match state
        .driver
        .register_branch(id, &spec, caller.name())
        .await?
    {
        Registered::Added => respond(&state, id, None, StatusCode::CREATED).await,
        Registered::AlreadyThere => respond(&state, id, None, StatusCode::OK).await,
        Registered::NameTaken => Err(ApiError::conflict(
            "branch_name_taken",
            format!(
                "a different branch named {} is already registered",
                spec.name
            ),
        )),
        Registered::NotActive(s) => Err(ApiError::conflict(
            "transaction_not_active",
            format!(
                "the transaction is {s}; branches can only join an active interactive transaction"
            ),
        )),
        Registered::NotFound => Err(ApiError::not_found(
            "transaction_not_found",
            format!("no transaction with id {id}"),
        )),
    }
}

/// `POST /v1/transactions/{id}/commit`.
pub async fn commit(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    close(&state, &caller, *id, Verdict::Commit, &query, &req).await
}

/// `POST /v1/transactions/{id}/abort`.
pub async fn abort(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    close(&state, &caller, *id, Verdict::Abort, &query, &req).await
}

/// Commit and abort are idempotent: asking again for what was decided answers
/// like the first time; asking for the opposite is a conflict.
async fn close(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    verdict: Verdict,
    query: &WaitQuery,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let wait = parse_wait(query.wait.as_deref(), state.settings.server.max_wait)?;
    let reason = (verdict == Verdict::Abort).then(|| "aborted by the client".to_string());
    let closed = state
        .driver
        .close_transaction(
            id,
            verdict,
            reason,
            caller.name(),
            super::trace_context(req).as_ref(),
        )
        .await
        .map_err(|e| match e {
            driver::CloseError::Store(s) => s.into(),
            corrupt => ApiError::internal(&corrupt),
        })?;
    match closed {
        Closed::Now => respond(state, id, wait, StatusCode::ACCEPTED).await,
        Closed::NotFound => Err(ApiError::not_found(
            "transaction_not_found",
            format!("no transaction with id {id}"),
        )),
        Closed::Already { verdict: Some(decided), .. } if decided == verdict => {
            respond(state, id, wait, StatusCode::ACCEPTED).await
        }
        Closed::Already { verdict: Some(Verdict::Abort), .. } => Err(ApiError::conflict(
            "transaction_aborted",
            "the transaction was aborted; it cannot commit",
        )),
        Closed::Already { verdict: Some(Verdict::Commit), .. } => Err(ApiError::conflict(
            "transaction_committed",
            "the transaction was decided to commit; it cannot abort",
        )),
        Closed::Already { verdict: None, .. } if verdict == Verdict::Commit => {
            respond(state, id, wait, StatusCode::ACCEPTED).await
        }
        Closed::Already { verdict: None, state: s } => Err(ApiError::conflict(
            "transaction_preparing",
            format!("the transaction is {s}: its commit has begun and it aborts by itself if a branch votes no"),
        )),
    }
}
