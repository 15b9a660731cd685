//! Bounds on hostile input that no extractor enforces: oversized header sections,
//! and JSON values too deep or too large to store (each a problem+json with its code).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::settings::LimitsSettings;

/// Refuses a request whose request line and headers together exceed
/// `limits.max_header_bytes` with 431 `headers_too_large`, before anything reads it.
pub async fn guard_headers<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(max) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.settings.limits.max_header_bytes)
    else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    let uri = req.uri();
    let line = req.method().as_str().len()
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + headers > max {
        let error = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers are {} bytes; the limit is {max}",
                line + headers
            ),
        );
        return Ok(req
            .into_response(error.error_response())
            .map_into_right_body());
    }
    next.call(req).await.map(|r| r.map_into_left_body())
}

/// How deeply arrays and objects nest in `value` (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, level)) = pending.pop() {
        match v {
            Value::Array(items) => pending.extend(items.iter().map(|c| (c, level + 1))),
            Value::Object(map) => pending.extend(map.values().map(|c| (c, level + 1))),
            _ => continue,
        }
        deepest = deepest.max(level + 1);
    }
    deepest
}

/// Checks a JSON value the caller wants stored (a saga input, a branch payload):
/// at most `max_json_depth` deep and `max_input_bytes` long.
pub fn check_value(field: &str, value: &Value, limits: &LimitsSettings) -> Result<(), ApiError> {
    let levels = depth(value);
    if levels > limits.max_json_depth {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!(
                "{field}: nests {levels} levels of arrays and objects; the limit is {}",
                limits.max_json_depth
            ),
        )
        .with_field(field));
    }
    let size = json_len(value);
    if size > limits.max_input_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            format!(
                "{field}: is {size} bytes as JSON; the limit is {}",
                limits.max_input_bytes
            ),
        )
        .with_field(field));
    }
    Ok(())
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that cannot be written counts as empty.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> LimitsSettings {
        LimitsSettings {
            max_header_bytes: 16 * 1024,
            max_definition_bytes: 1024,
            max_input_bytes: 100,
            max_json_depth: 3,
        }
    }

    #[test]
    fn depth_counts_containers() {
        let cases = [
            (json!(1), 0),
            (json!("x"), 0),
            (json!({}), 1),
            (json!([1, 2]), 1),
            (json!({"a": [1, {"b": null}]}), 3),
            (json!([[[[]]], 1]), 4),
        ];
        for (value, expected) in cases {
            assert_eq!(depth(&value), expected, "{value}");
        }
    }

    #[test]
    fn values_past_a_limit_are_named() {
        assert!(check_value("input", &json!({"a": [1]}), &limits()).is_ok());
        let deep = check_value("input", &json!({"a": [[[1]]]}), &limits()).unwrap_err();
        assert_eq!((deep.status.as_u16(), deep.code), (400, "json_too_deep"));
        assert_eq!(deep.field.as_deref(), Some("input"));
        let big = check_value("input", &json!({ "a": "x".repeat(200) }), &limits()).unwrap_err();
        assert_eq!((big.status.as_u16(), big.code), (413, "input_too_large"));
    }
}
