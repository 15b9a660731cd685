//! actix-web handlers and the wiring of routes, extractor limits and error shapes.

pub mod admin;
pub mod auth;
pub mod definitions;
pub mod error;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod sagas;
pub mod transactions;
pub mod ui;
mod views;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{error::JsonPayloadError, web, HttpRequest, HttpResponse};
use deadpool_postgres::Pool;

use crate::driver::Driver;
use crate::lock::Locks;
use crate::settings::Settings;
use crate::specs::Specs;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub driver: Arc<Driver>,
    pub pool: Pool,
    pub specs: Arc<Specs>,
    pub locks: Arc<Locks>,
    pub settings: Settings,
}

pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.settings.server.max_body_bytes;
        cfg.app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(|e, _req| json_error(e).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|e, _req| {
                ApiError::bad_request("invalid_path", format!("invalid path parameter: {e}")).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|e, _req| {
                ApiError::bad_request("invalid_query", format!("invalid query parameter: {e}"))
                    .into()
            }))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/ui", web::get().to(ui::redirect))
            .route("/ui/", web::get().to(ui::index))
            .service(
                // Routes are tried in order, and each one with a {parameter} costs a
                // regex match: the starts and reads of every workflow come first.
                web::scope("/v1")
                    .route("/sagas", web::post().to(sagas::start))
                    .route("/sagas/{id}", web::get().to(sagas::get))
                    .route("/sagas/{id}/cancel", web::post().to(sagas::cancel))
                    .route("/transactions", web::post().to(transactions::start))
                    .route("/transactions/{id}", web::get().to(transactions::get))
                    .route("/saga-definitions", web::get().to(definitions::list))
                    .route(
                        "/saga-definitions/{name}",
                        web::put().to(definitions::register),
                    )
                    .route(
                        "/saga-definitions/{name}",
                        web::get().to(definitions::latest),
                    )
                    .route(
                        "/saga-definitions/{name}/versions",
                        web::get().to(definitions::versions),
                    )
                    .route(
                        "/saga-definitions/{name}/versions/{version}",
                        web::get().to(definitions::version),
                    )
                    .route(
                        "/transactions/{id}/branches",
                        web::post().to(transactions::register_branch),
                    )
                    .route(
                        "/transactions/{id}/commit",
                        web::post().to(transactions::commit),
                    )
                    .route(
                        "/transactions/{id}/abort",
                        web::post().to(transactions::abort),
                    )
                    .route("/admin/transactions", web::get().to(admin::list))
                    .route(
                        "/admin/transactions/actions/{action}",
                        web::post().to(admin::bulk),
                    )
                    .route("/admin/transactions/{id}", web::get().to(admin::detail))
                    .route(
                        "/admin/transactions/{id}/{action}",
                        web::post().to(admin::act),
                    ),
            )
            .route("/ui/assets/{name}", web::get().to(ui::asset))
            .default_service(web::to(not_found));
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "route_not_found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is {length} bytes; the limit is {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.to_string().contains("recursion limit") => {
            ApiError::bad_request(
                "json_too_deep",
                "the body nests arrays and objects more than 128 levels deep",
            )
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::unprocessable(
            "invalid_body",
            format!("the body does not match the schema: {e}"),
        ),
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
        other => ApiError::bad_request(
            "unreadable_body",
            format!("the body could not be read: {other}"),
        ),
    }
}

/// Parses `?wait=5s`: absent means do not wait; longer than allowed is an error.
pub fn parse_wait(text: Option<&str>, max: Duration) -> Result<Option<Duration>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            format!("wait: '{text}' is not a duration like 500ms or 5s"),
        )
        .with_field("wait")
    })?;
    if d > max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "wait: at most {} is allowed",
                humantime::format_duration(max)
            ),
        )
        .with_field("wait"));
    }
    Ok(Some(d))
}

/// Reads a transaction of `kind` (`saga` or `twopc`), waiting for it to settle when
/// asked to; any other kind, or none, is a 404 with `not_found_code`.
pub async fn fetch(
    state: &AppState,
    id: uuid::Uuid,
    kind: &str,
    wait: Option<Duration>,
    not_found_code: &'static str,
) -> Result<crate::store::transactions::TransactionRow, ApiError> {
    let row = match wait {
        Some(w) => state.driver.wait(id, std::time::Instant::now() + w).await?,
        None => crate::store::transactions::get(&state.pool, id).await?,
    };
    row.filter(|r| r.kind == kind).ok_or_else(|| {
        ApiError::not_found(
            not_found_code,
            format!("no {kind} transaction with id {id}"),
        )
    })
}

/// The caller's W3C trace context (`traceparent`, `tracestate`); None when absent
/// or invalid, and the transaction then starts a trace of its own (never an error).
pub fn trace_context(req: &HttpRequest) -> Option<crate::telemetry::TraceContext> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    use settle_participant::protocol::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
    crate::telemetry::TraceContext::parse(header(TRACEPARENT_HEADER)?, header(TRACESTATE_HEADER))
}

/// The query of a route that takes none: any parameter is a 400 `invalid_query`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

pub fn json<T: serde::Serialize>(status: actix_web::http::StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status).json(body)
}
