//! The bearer-token gate in front of every route, and the `Caller` it leaves for
//! handlers: the token's name is the actor recorded in transaction timelines.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};

use super::error::ApiError;
use super::AppState;
use crate::auth::{self, Refusal};

/// The actor name when no tokens are configured (an open API on loopback).
pub const OPEN_API_ACTOR: &str = "api";

/// Who made the request: the token's name, or [`OPEN_API_ACTOR`].
#[derive(Debug, Clone)]
pub struct Caller(String);

impl Caller {
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Caller, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller(OPEN_API_ACTOR.to_string()));
        ready(Ok(caller))
    }
}

/// Refuses requests without a token of a role the route allows (401 / 403 as
/// problem+json); lets the rest through with their [`Caller`].
pub async fn gate<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    let tokens = &state.settings.auth.tokens;
    if tokens.is_empty() {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let rule = auth::access(req.method().as_str(), req.path());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth::authorize(tokens, rule, authorization) {
        Ok(entry) => {
            if let Some(entry) = entry {
                req.extensions_mut().insert(Caller(entry.name.clone()));
            }
            next.call(req).await.map(|r| r.map_into_left_body())
        }
        Err(refusal) => {
            let (error, challenge) = refusal_error(refusal, rule);
            let mut response = error.error_response();
            if challenge {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"settle\""),
                );
            }
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

fn refusal_error(refusal: Refusal, rule: auth::Access) -> (ApiError, bool) {
    match refusal {
        Refusal::MissingToken => (
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send a bearer token: Authorization: Bearer <token>",
            ),
            true,
        ),
        Refusal::InvalidToken => (
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is not one this coordinator accepts",
            ),
            true,
        ),
        Refusal::WrongRole { name, role } => (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token '{name}' has the {} role; this route needs {}",
                    role.as_str(),
                    auth::describe(rule)
                ),
            ),
            false,
        ),
    }
}
