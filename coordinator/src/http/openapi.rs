//! `GET /openapi.json`: the committed `openapi/coordinator.yaml`, compiled into the
//! binary and served as JSON, so the document clients read is the one the drift
//! test (tests/tests/e2e/contract.rs) checks against the code.

use std::sync::OnceLock;

use actix_web::HttpResponse;

use super::error::ApiError;

/// The API description of record.
pub const SPEC_YAML: &str = include_str!("../../../openapi/coordinator.yaml");

/// The YAML document converted to JSON text, once per process.
pub fn spec_json() -> Result<&'static str, &'static SpecError> {
    static JSON: OnceLock<Result<String, SpecError>> = OnceLock::new();
    JSON.get_or_init(|| {
        let value: serde_json::Value = serde_norway::from_str(SPEC_YAML)
            .map_err(|e| SpecError(format!("openapi/coordinator.yaml: {e}")))?;
        serde_json::to_string(&value)
            .map_err(|e| SpecError(format!("openapi/coordinator.yaml as JSON: {e}")))
    })
    .as_ref()
    .map(String::as_str)
}

/// The embedded document could not be converted (a unit test keeps this from shipping).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

pub async fn document() -> Result<HttpResponse, ApiError> {
    let json = spec_json().map_err(|e| ApiError::internal(e))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_yaml_converts_to_an_openapi_3_1_json_document() {
        let json = spec_json().expect("the spec converts");
        let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(value["openapi"], "3.1.0");
        assert!(value["paths"]["/openapi.json"]["get"].is_object());
        assert!(value["components"]["schemas"]["Problem"].is_object());
    }
}
