//! One participant call: the signed POST, its timeout, and the reading of the
//! response by the status-code contract. No retry here; the machine decides that.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use settle_participant::protocol::{
    StatusMeaning, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, TRACEPARENT_HEADER,
};
use settle_participant::signature;

use uuid::Uuid;

use super::workflow::Outgoing;
use crate::machine::Outcome;
use crate::settings::Secret;

/// What a call came back with, plus what the timeline records about it.
#[derive(Debug)]
pub struct Answered {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub duration: Duration,
}

/// The longest error text kept from a participant's body.
const MAX_ERROR_TEXT: usize = 500;

/// W3C trace context: the transaction's id is the trace id, so every call of one
/// transaction lands in one trace.
pub fn traceparent(trace_id: Uuid) -> String {
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{}-{span:016x}-01", trace_id.simple())
}

pub async fn post(
    http: &reqwest::Client,
    out: &Outgoing,
    secrets: &[Secret],
    max_response_bytes: usize,
) -> Answered {
    let started = Instant::now();
    let (outcome, status) = match send(http, out, secrets, max_response_bytes).await {
        Ok(answer) => answer,
        Err(error) => (
            Outcome::Transient {
                status: None,
                error,
            },
            None,
        ),
    };
    Answered {
        outcome,
        status,
        duration: started.elapsed(),
    }
}

async fn send(
    http: &reqwest::Client,
    out: &Outgoing,
    secrets: &[Secret],
    max_response_bytes: usize,
) -> Result<(Outcome, Option<u16>), String> {
    let mut builder = http
        .post(&out.url)
        .timeout(out.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY_HEADER, &out.idempotency_key)
        .header(TRACEPARENT_HEADER, traceparent(out.trace_id));
    if !secrets.is_empty() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        builder = builder.header(
            SIGNATURE_HEADER,
            signature::sign_with_all(
                &secrets
                    .iter()
                    .map(|s| s.expose().as_bytes())
                    .collect::<Vec<_>>(),
                now,
                &out.body,
            ),
        );
    }
    let mut response = builder
        .body(out.body.clone())
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > max_response_bytes {
            return Err(format!(
                "status {status}: response body exceeds {max_response_bytes} bytes"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let outcome = match (out.classify)(status) {
        StatusMeaning::Done => Outcome::Done(output(&bytes)),
        StatusMeaning::Refused => Outcome::Refused {
            status,
            message: error_text(status, &bytes),
        },
        StatusMeaning::InProgress => Outcome::InProgress { status },
        StatusMeaning::Transient => Outcome::Transient {
            status: Some(status),
            error: error_text(status, &bytes),
        },
    };
    Ok((outcome, Some(status)))
}

/// A 2xx body as the step output: JSON when it is JSON, a string otherwise, null when empty.
fn output(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A short, printable reason from a failure body: a problem+json `detail` or
/// `title` when there is one, else the start of the text.
fn error_text(status: u16, bytes: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
        ["detail", "error", "message", "title"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_string());
    let mut text: String = text.chars().take(MAX_ERROR_TEXT).collect();
    if text.is_empty() {
        text = format!("status {status}");
    } else {
        text = format!("status {status}: {text}");
    }
    text
}

/// Transport errors in words an operator can act on, without internal detail.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_redirect() {
        "redirect refused".to_string()
    } else if e.is_body() || e.is_decode() {
        "response body broken off".to_string()
    } else {
        "request failed".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_json_text_or_null() {
        assert_eq!(output(b""), Value::Null);
        assert_eq!(output(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(output(b"OK"), Value::String("OK".into()));
    }

    #[test]
    fn error_text_prefers_problem_detail() {
        let body = br#"{"title":"Conflict","detail":"card declined"}"#;
        assert_eq!(error_text(409, body), "status 409: card declined");
        assert_eq!(error_text(503, b""), "status 503");
    }
}
