//! One participant call: the signed POST, its timeout, and the reading of the
//! response by the status-code contract. No retry here; the machine decides that.

use std::time::{Duration, Instant};

use serde_json::Value;
use settle_participant::protocol::{
    StatusMeaning, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER,
};
use settle_participant::signature;

use super::workflow::Outgoing;
use crate::machine::Outcome;
use crate::metrics::status_class;
use crate::outbound::{Answer, Outbound};
use crate::settings::Secret;
use crate::telemetry::TraceContext;

/// What a call came back with, plus what the timeline records about it.
#[derive(Debug)]
pub struct Answered {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub duration: Duration,
    /// For metrics: the status class of an answer that was not done (`5xx`, `timeout`, ...).
    pub error_class: Option<&'static str>,
}

/// The longest error text kept from a participant's body.
const MAX_ERROR_TEXT: usize = 500;

/// Sends one call in the transaction's trace: `traceparent` with the trace's id and
/// a new span id per call, and the caller's `tracestate` when it gave one.
pub async fn post(
    http: &Outbound,
    out: &Outgoing,
    trace: &TraceContext,
    secrets: &[Secret],
    max_response_bytes: usize,
) -> Answered {
    let started = Instant::now();
    let (outcome, status, transport_error) =
        match send(http, out, trace, secrets, max_response_bytes).await {
            Ok((outcome, status)) => (outcome, status, None),
            Err(error) => (
                Outcome::Transient {
                    status: None,
                    error: error.clone(),
                },
                None,
                Some(error),
            ),
        };
    let error_class = match outcome {
        Outcome::Done(_) => None,
        _ => Some(status_class(status, transport_error.as_deref())),
    };
    Answered {
        outcome,
        status,
        duration: started.elapsed(),
        error_class,
    }
}

async fn send(
    http: &Outbound,
    out: &Outgoing,
    trace: &TraceContext,
    secrets: &[Secret],
    max_response_bytes: usize,
) -> Result<(Outcome, Option<u16>), String> {
    let traceparent = trace.child();
    let signed = (!secrets.is_empty()).then(|| {
        signature::sign_with_all(
            &secrets
                .iter()
                .map(|s| s.expose().as_bytes())
                .collect::<Vec<_>>(),
            signature::now_unix(),
            &out.body,
        )
    });
    let mut headers = vec![
        (IDEMPOTENCY_KEY_HEADER, out.idempotency_key.as_str()),
        (TRACEPARENT_HEADER, traceparent.as_str()),
    ];
    if let Some(state) = &trace.tracestate {
        headers.push((TRACESTATE_HEADER, state));
    }
    if let Some(signed) = &signed {
        headers.push((SIGNATURE_HEADER, signed));
    }
    let Answer {
        status,
        body: bytes,
    } = http
        .post(
            &out.url,
            &headers,
            out.body.clone(),
            out.timeout,
            max_response_bytes,
        )
        .await
        .map_err(|failure| failure.to_string())?;
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
