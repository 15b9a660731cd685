//! Logging set-up (human-readable lines by default, JSON with `log.json = true`;
//! spans carry `transaction_id`) and the W3C trace context a transaction carries to
//! every participant call.

use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::settings::LogSettings;

/// Installs the global subscriber: the log lines, plus (feature `otlp`, with
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set) an OTLP/HTTP span exporter.
pub fn init(log: &LogSettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer());
    let lines = tracing_subscriber::fmt::layer().with_target(true);
    let result = if log.json {
        registry
            .with(lines.json().with_current_span(true).with_span_list(true))
            .try_init()
    } else {
        registry.with(lines).try_init()
    };
    // Already initialised (tests start several applications in one process): keep the first.
    let _ = result;
}

/// The longest `tracestate` passed on; longer ones are dropped (W3C allows 512).
const MAX_TRACESTATE: usize = 512;

/// W3C trace context (<https://www.w3.org/TR/trace-context/>) of one transaction:
/// the caller's trace when it sent a valid `traceparent`, stored with the
/// transaction so that every owner after any recovery stays in that trace;
/// otherwise a trace whose id is the transaction id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span (16 lowercase hex digits), the parent of our calls.
    pub parent_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` header (and `tracestate`); None when it is not valid,
    /// in which case the caller starts a trace of its own.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let text = traceparent.trim();
        let parts: Vec<&str> = text.splitn(5, '-').collect();
        if parts.len() < 4 {
            return None;
        }
        let (version, trace_id, parent_id, flags) = (parts[0], parts[1], parts[2], parts[3]);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2) || version == "ff" || !hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.len() != 4 {
            return None;
        }
        if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return None;
        }
        if !hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_TRACESTATE
                    && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(str::to_owned);
        Some(TraceContext {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
            tracestate,
        })
    }

    /// The trace of a transaction started without (a valid) trace context: its id is the trace id.
    pub fn of_transaction(id: Uuid) -> TraceContext {
        TraceContext {
            trace_id: id.simple().to_string(),
            parent_id: format!("{:016x}", rand::random::<u64>() | 1),
            flags: 1,
            tracestate: None,
        }
    }

    /// The context stored with a transaction, or the transaction's own trace.
    pub fn stored_or_own(
        id: Uuid,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> TraceContext {
        traceparent
            .and_then(|t| TraceContext::parse(t, tracestate))
            .unwrap_or_else(|| TraceContext::of_transaction(id))
    }

    /// The `traceparent` as received (version 00), for storing.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }

    /// The `traceparent` of one outgoing call: same trace, a new span id (the
    /// current span's, when OTLP export is on and the span is in this trace).
    pub fn child(&self) -> String {
        #[cfg(feature = "otlp")]
        if let Some(span) = otlp::current_span_id(&self.trace_id) {
            return format!("00-{}-{span}-{:02x}", self.trace_id, self.flags);
        }
        let span: u64 = rand::random::<u64>() | 1;
        format!("00-{}-{span:016x}-{:02x}", self.trace_id, self.flags)
    }

    /// Makes `span` (a transaction's task) a child of this context in exported
    /// traces; without the `otlp` feature there is nothing to link.
    pub fn link(&self, span: &tracing::Span) {
        #[cfg(feature = "otlp")]
        otlp::set_parent(span, self);
        #[cfg(not(feature = "otlp"))]
        let _ = span;
    }
}

/// OTLP/HTTP export of spans (feature `otlp`). Configured by the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables;
/// without them nothing is exported.
#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    pub fn layer<S>(
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if !configured {
            return None;
        }
        // The exporter's blocking HTTP client must not be made on an async worker thread.
        let built = std::thread::spawn(|| {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| e.to_string())
        })
        .join();
        let exporter = match built {
            Ok(Ok(exporter)) => exporter,
            Ok(Err(e)) => {
                eprintln!("OTLP export disabled: {e}");
                return None;
            }
            Err(_) => {
                eprintln!("OTLP export disabled: building the exporter failed");
                return None;
            }
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("settle")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("settle-coordinator");
        opentelemetry::global::set_tracer_provider(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub fn set_parent(span: &tracing::Span, trace: &TraceContext) {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&trace.trace_id),
            SpanId::from_hex(&trace.parent_id),
        ) else {
            return;
        };
        let state = trace
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let remote = SpanContext::new(trace_id, span_id, TraceFlags::new(trace.flags), true, state);
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The current span's id when it is exported and belongs to `trace_id`.
    pub fn current_span_id(trace_id: &str) -> Option<String> {
        let context = tracing::Span::current().context();
        let span = context.span();
        let sc = span.span_context();
        (sc.is_valid() && sc.trace_id().to_string() == trace_id).then(|| sc.span_id().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_children_share_its_trace() {
        let t = TraceContext::parse(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.traceparent(), VALID);
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let child = t.child();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, VALID);
        assert_eq!(
            TraceContext::parse(&child, None).unwrap().trace_id,
            t.trace_id
        );
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse(&format!("01{}-more", &VALID[2..]), None).is_some());
    }

    #[test]
    fn without_a_stored_context_the_transaction_id_is_the_trace_id() {
        let id = Uuid::now_v7();
        let t = TraceContext::stored_or_own(id, Some("not valid"), None);
        assert_eq!(t.trace_id, id.simple().to_string());
    }
}
