//! Logging set-up (human-readable lines by default, JSON with `log.json = true`;
//! spans carry `transaction_id`) and the W3C trace context a transaction carries to
//! every participant call.

use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::settings::LogSettings;

pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = if log.json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
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

    /// The `traceparent` of one outgoing call: same trace, a new span id.
    pub fn child(&self) -> String {
        let span: u64 = rand::random::<u64>() | 1;
        format!("00-{}-{span:016x}-{:02x}", self.trace_id, self.flags)
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
