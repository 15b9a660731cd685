//! The one place errors become HTTP: a status, a stable `code`, and a message
//! written for the caller (RFC 9457 problem+json). Causes go to the log, never
//! into a response body.

use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use settle_participant::api::Problem;

use crate::definition::Invalid;
use crate::driver::StartError;
use crate::{specs, store};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    /// A failure whose cause must not reach the caller: logged here, generic outside.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the coordinator failed to handle the request; it has been logged",
        )
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!(
                "https://settle.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

/// Rewrites an error answer that is not problem+json (actix's own, from an extractor
/// without our error handler, such as a `web::Bytes` body over its limit) into one,
/// so that no route can answer an error as plain text.
pub fn problem_for_plain_errors<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    // A response a handler built on purpose (the 503 of /readyz with its checks)
    // carries no error: only the ones actix-web made from an error are rewritten.
    if is_problem || res.response().error().is_none() {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let cause = res
        .response()
        .error()
        .map(ToString::to_string)
        .unwrap_or_else(|| status.to_string());
    let error = match status {
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), error = %cause, "internal error outside a handler");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the coordinator failed to handle the request; it has been logged",
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body_too_large",
            format!("the body is larger than this route accepts: {cause}"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            format!("the content type is not one this route accepts: {cause}"),
        ),
        StatusCode::NOT_FOUND => ApiError::not_found("route_not_found", cause),
        _ => ApiError::new(
            status,
            "unreadable_body",
            format!("the request could not be read: {cause}"),
        ),
    };
    let (req, _) = res.into_parts();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, error.error_response()).map_into_right_body(),
    ))
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        /// 503 `database_unavailable`: whatever went wrong, a retry shortly may succeed.
        fn unavailable(detail: &str) -> ApiError {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                detail,
            )
        }
        match e {
            store::Error::Unavailable(ref cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                unavailable("the coordinator's database is unavailable; retry shortly")
            }
            store::Error::Unanswered(after) => {
                tracing::warn!(?after, "database did not answer; connection given up");
                unavailable("the coordinator's database did not answer in time; retry shortly (with the same Idempotency-Key, a start is not repeated)")
            }
            store::Error::Query(_) if e.is_cancelled() => {
                tracing::warn!(error = %error_chain(&e), "database statement ended before it finished");
                unavailable("the coordinator's database did not finish in time (a lock held elsewhere, or a slow statement); retry shortly (with the same Idempotency-Key, a start is not repeated)")
            }
            store::Error::Query(_) if e.is_connection_lost() => {
                tracing::warn!(error = %error_chain(&e), "database connection failed");
                unavailable("the coordinator lost its database connection; retry shortly")
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<specs::Error> for ApiError {
    fn from(e: specs::Error) -> Self {
        match e {
            specs::Error::NotFound(name) => ApiError::not_found(
                "definition_not_found",
                format!("no saga definition named {name}"),
            ),
            specs::Error::Store(s) => s.into(),
            corrupt @ specs::Error::Corrupt { .. } => ApiError::internal(&corrupt),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        let detail = if e.field.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.field, e.message)
        };
        ApiError::unprocessable("invalid_definition", detail).with_field(e.field)
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Definition(specs::Error::NotFound(name)) => ApiError::unprocessable(
                "unknown_definition",
                format!("no saga definition named {name} is registered"),
            )
            .with_field("definition"),
            StartError::Definition(d) => d.into(),
            StartError::Store(s) => s.into(),
            StartError::KeyReused => ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            )
            .with_field("Idempotency-Key"),
            StartError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this coordinator instance is shutting down; retry on another",
            ),
        }
    }
}
