//! `/v1/saga-definitions`: register (YAML or JSON) and read versioned definitions.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::error::ApiError;
use super::{json, views, AppState};
use crate::definition::{self, Format};
use crate::store;

const ACCEPTED_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
];

/// `PUT /v1/saga-definitions/{name}`: 201 with a new version, 200 when unchanged.
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    _: web::Query<super::NoQuery>,
    name: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid").to_ascii_lowercase());
    if let Some(ct) = &content_type {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !ACCEPTED_TYPES.contains(&essence) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "send the definition as application/yaml or application/json, not {essence}"
                ),
            ));
        }
    }
    let limit = state.settings.limits.max_definition_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "definition_too_large",
                format!("a definition may be at most {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let format = Format::from_content_type(content_type.as_deref());
    let doc = definition::parse(&body, format)?;
    if doc.name != *name {
        return Err(ApiError::unprocessable(
            "invalid_definition",
            format!(
                "name: the definition is named '{}' but was sent to '{}'",
                doc.name, name
            ),
        )
        .with_field("name"));
    }
    definition::compile(&doc, 1)?;
    definition::check_participants(&doc, &state.settings.participants.allow)?;
    let spec = serde_json::to_value(&doc).map_err(|e| ApiError::internal(&e))?;
    let digest = definition::digest(&doc);
    let (stored, created) =
        store::definitions::register(&state.pool, &doc.name, &spec, &digest).await?;
    state.specs.learned(&stored.name, stored.version);
    if created {
        tracing::info!(definition = %stored.name, version = stored.version, "registered saga definition");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((
            header::LOCATION,
            format!(
                "/v1/saga-definitions/{}/versions/{}",
                stored.name, stored.version
            ),
        ))
        .json(views::definition(stored)))
}

/// `GET /v1/saga-definitions`: the latest version of each.
pub async fn list(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let all = store::definitions::list_latest(&state.pool).await?;
    let summaries: Vec<_> = all.into_iter().map(views::summary).collect();
    Ok(json(StatusCode::OK, &summaries))
}

/// `GET /v1/saga-definitions/{name}`: the latest version.
pub async fn latest(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let stored = store::definitions::latest(&state.pool, &name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "definition_not_found",
                format!("no saga definition named {name}"),
            )
        })?;
    Ok(json(StatusCode::OK, &views::definition(stored)))
}

/// `GET /v1/saga-definitions/{name}/versions`: every version, newest first.
pub async fn versions(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let all = store::definitions::versions(&state.pool, &name).await?;
    if all.is_empty() {
        return Err(ApiError::not_found(
            "definition_not_found",
            format!("no saga definition named {name}"),
        ));
    }
    let all: Vec<_> = all.into_iter().map(views::definition).collect();
    Ok(json(StatusCode::OK, &all))
}

/// `GET /v1/saga-definitions/{name}/versions/{version}`.
pub async fn version(
    state: web::Data<AppState>,
    _: web::Query<super::NoQuery>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    let stored = store::definitions::version(&state.pool, &name, version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "definition_not_found",
                format!("saga definition {name} has no version {version}"),
            )
        })?;
    Ok(json(StatusCode::OK, &views::definition(stored)))
}
