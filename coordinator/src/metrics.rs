//! Prometheus metrics: counters and histograms that the driver's call sites bump
//! with one-line calls, gauges read at scrape time (pool, locks, a cached
//! index-only count of in-flight transactions), rendered in the text format.
//! Hand-written: the exposition format is small and this keeps the build lean.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

/// How long the in-flight counts from Postgres are reused between scrapes.
const COUNTS_TTL: Duration = Duration::from_secs(5);

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const LAG_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every family this module exports: name, type, help, histogram buckets.
const FAMILIES: &[(&str, &str, &str, &[f64])] = &[
    ("settle_transactions_started_total", "counter", "Transactions started by this instance.", &[]),
    ("settle_transaction_outcomes_total", "counter", "Transactions reaching completed, compensated, committed, aborted or stuck (durably) on this instance.", &[]),
    ("settle_transactions_in_flight", "gauge", "Transactions not finished, by state, across all instances (cached for a few seconds).", &[]),
    ("settle_transactions_stuck", "gauge", "Transactions waiting for an operator, across all instances (cached for a few seconds).", &[]),
    ("settle_owned_transactions", "gauge", "Transactions this instance is driving right now.", &[]),
    ("settle_step_duration_seconds", "histogram", "From a step's first call to its settled answer (done or refused), retries included.", LATENCY_BUCKETS),
    ("settle_participant_call_duration_seconds", "histogram", "One participant call, from sending to the full answer.", LATENCY_BUCKETS),
    ("settle_participant_errors_total", "counter", "Participant answers other than done, by status class (2xx: in progress, 4xx, 5xx, timeout, connect, other).", &[]),
    ("settle_recovery_claims_total", "counter", "Transactions claimed by this instance's recovery loop.", &[]),
    ("settle_recovery_lag_seconds", "histogram", "How late a claimed transaction was: claim time minus its next_attempt_at.", LAG_BUCKETS),
    ("settle_lock_acquire_failures_total", "counter", "Redis lock acquisitions that failed: held by another instance, or Redis unreachable.", &[]),
    ("settle_db_pool_connections", "gauge", "PostgreSQL pool: max, size (open), available (idle) and waiting (callers queued).", &[]),
    ("settle_write_batch_size", "histogram", "State writes carried by one group commit.", BATCH_BUCKETS),
    ("settle_db_connections_given_up_total", "counter", "Group-commit connections given up after a batch went unanswered past database.statement_timeout, by writer (creations, state_writes).", &[]),
    ("settle_retention_purged_total", "counter", "Finished transactions purged past retention (with their timelines).", &[]),
    ("settle_webhook_deliveries_total", "counter", "Webhook delivery attempts by result.", &[]),
    ("settle_webhook_outbox_pending", "gauge", "Webhook notifications not yet delivered (cached for a few seconds).", &[]),
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// What a scrape reads from Postgres, reused for [`COUNTS_TTL`].
#[derive(Debug, Clone, Default)]
struct Counts {
    by_state: Vec<(String, i64)>,
    outbox: i64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
    counts: tokio::sync::Mutex<Option<(Instant, Counts)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What scrape-time gauges read besides Postgres.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub owned: usize,
    pub lock_held: u64,
    pub lock_unreachable: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn add(&self, name: &'static str, labels: Labels, n: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters.entry((name, labels)).or_insert(0) += n;
    }

    fn observe(&self, name: &'static str, labels: Labels, value: f64) {
        let buckets = FAMILIES
            .iter()
            .find(|f| f.0 == name)
            .map_or(&[][..], |f| f.3);
        let mut histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let h = histograms
            .entry((name, labels))
            .or_insert_with(|| Histogram {
                buckets,
                counts: vec![0; buckets.len()],
                sum: 0.0,
                count: 0,
            });
        for (i, bound) in h.buckets.iter().enumerate() {
            if value <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }

    pub fn started(&self, kind: &str, definition: &str) {
        self.add(
            "settle_transactions_started_total",
            labels(&[("kind", kind), ("definition", definition)]),
            1,
        );
    }

    /// A transition written durably; only the ones operators count are kept.
    pub fn transition(&self, kind: &str, definition: &str, transition: &str) {
        if matches!(
            transition,
            "completed" | "compensated" | "committed" | "aborted" | "stuck"
        ) {
            self.add(
                "settle_transaction_outcomes_total",
                labels(&[
                    ("kind", kind),
                    ("definition", definition),
                    ("outcome", transition),
                ]),
                1,
            );
        }
    }

    /// One participant call: its latency, and its class when it was not a success.
    pub fn call(
        &self,
        definition: &str,
        step: &str,
        phase: &str,
        duration: Duration,
        error_class: Option<&str>,
    ) {
        let l = labels(&[("definition", definition), ("step", step), ("phase", phase)]);
        if let Some(class) = error_class {
            let mut with_class = l.clone();
            with_class.push(("class", class.to_string()));
            self.add("settle_participant_errors_total", with_class, 1);
        }
        self.observe(
            "settle_participant_call_duration_seconds",
            l,
            duration.as_secs_f64(),
        );
    }

    /// A step's (or branch phase's) whole time, from its first call to its settled answer.
    pub fn step(&self, definition: &str, step: &str, phase: &str, duration: Duration) {
        self.observe(
            "settle_step_duration_seconds",
            labels(&[("definition", definition), ("step", step), ("phase", phase)]),
            duration.as_secs_f64(),
        );
    }

    /// A recovery claim, `lag` past its due time.
    pub fn recovery_claim(&self, lag: Duration) {
        self.add("settle_recovery_claims_total", Vec::new(), 1);
        self.observe("settle_recovery_lag_seconds", Vec::new(), lag.as_secs_f64());
    }

    pub fn write_batch(&self, size: usize) {
        self.observe("settle_write_batch_size", Vec::new(), size as f64);
    }

    /// A writer's connection left a batch unanswered and was given up.
    pub fn connection_given_up(&self, writer: &str) {
        self.add(
            "settle_db_connections_given_up_total",
            labels(&[("writer", writer)]),
            1,
        );
    }

    pub fn purged(&self, transactions: u64) {
        self.add("settle_retention_purged_total", Vec::new(), transactions);
    }

    pub fn webhook_delivery(&self, result: &str) {
        self.add(
            "settle_webhook_deliveries_total",
            labels(&[("result", result)]),
            1,
        );
    }

    /// The text exposition of everything, gauges read now (Postgres counts cached).
    pub async fn render(&self, pool: &Pool, snapshot: Snapshot) -> String {
        let counts = self.counts(pool).await;
        let mut gauges: BTreeMap<&'static str, Vec<(Labels, f64)>> = BTreeMap::new();
        let status = pool.status();
        gauges.insert(
            "settle_db_pool_connections",
            vec![
                (labels(&[("state", "max")]), status.max_size as f64),
                (labels(&[("state", "size")]), status.size as f64),
                (labels(&[("state", "available")]), status.available as f64),
                (labels(&[("state", "waiting")]), status.waiting as f64),
            ],
        );
        gauges.insert(
            "settle_owned_transactions",
            vec![(Vec::new(), snapshot.owned as f64)],
        );
        let mut stuck = 0;
        let mut in_flight = Vec::new();
        if let Some(counts) = &counts {
            for (state, n) in &counts.by_state {
                if state == "stuck" {
                    stuck = *n;
                } else {
                    in_flight.push((labels(&[("state", state)]), *n as f64));
                }
            }
            gauges.insert(
                "settle_webhook_outbox_pending",
                vec![(Vec::new(), counts.outbox as f64)],
            );
            gauges.insert("settle_transactions_in_flight", in_flight);
            gauges.insert(
                "settle_transactions_stuck",
                vec![(Vec::new(), stuck as f64)],
            );
        }
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        counters.insert(
            (
                "settle_lock_acquire_failures_total",
                labels(&[("reason", "held")]),
            ),
            snapshot.lock_held,
        );
        counters.insert(
            (
                "settle_lock_acquire_failures_total",
                labels(&[("reason", "unreachable")]),
            ),
            snapshot.lock_unreachable,
        );
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::with_capacity(8 * 1024);
        for (name, kind, help, _) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for ((_, l), v) in counters
                        .range((*name, Vec::new())..)
                        .take_while(|e| e.0 .0 == *name)
                    {
                        let _ = writeln!(out, "{name}{} {v}", format_labels(l, None));
                    }
                }
                "gauge" => {
                    for (l, v) in gauges.get(name).into_iter().flatten() {
                        let _ = writeln!(out, "{name}{} {v}", format_labels(l, None));
                    }
                }
                _ => {
                    for ((_, l), h) in histograms
                        .range((*name, Vec::new())..)
                        .take_while(|e| e.0 .0 == *name)
                    {
                        for (bound, n) in h.buckets.iter().zip(&h.counts) {
                            let le = bound.to_string();
                            let _ =
                                writeln!(out, "{name}_bucket{} {n}", format_labels(l, Some(&le)));
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            format_labels(l, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", format_labels(l, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", format_labels(l, None), h.count);
                    }
                }
            }
        }
        out
    }

    /// In-flight counts by state and the outbox size, at most every [`COUNTS_TTL`].
    /// Both are index-only scans over unfinished rows (`transactions_state_created`,
    /// `webhook_outbox_due`): the cost follows the work in flight, not the table size.
    async fn counts(&self, pool: &Pool) -> Option<Counts> {
        let mut cache = self.counts.lock().await;
        if let Some((at, counts)) = cache.as_ref() {
            if at.elapsed() < COUNTS_TTL {
                return Some(counts.clone());
            }
        }
        let fresh = async {
            let client = pool.get().await.ok()?;
            let rows = client
                .query(
                    "SELECT state, count(*) FROM transactions
                      WHERE state IN ('running', 'compensating', 'active', 'preparing', 'committing', 'aborting', 'stuck')
                      GROUP BY state",
                    &[],
                )
                .await
                .ok()?;
            let outbox: i64 = client
                .query_one("SELECT count(*) FROM webhook_outbox", &[])
                .await
                .ok()?
                .get(0);
            Some(Counts {
                by_state: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
                outbox,
            })
        };
        match tokio::time::timeout(Duration::from_secs(2), fresh).await {
            Ok(Some(counts)) => {
                *cache = Some((Instant::now(), counts.clone()));
                Some(counts)
            }
            // Postgres is away: serve the last counts rather than none.
            _ => cache.as_ref().map(|(_, c)| c.clone()),
        }
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn format_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The status class of a participant answer that was not a success, for
/// `settle_participant_errors_total`.
pub fn status_class(status: Option<u16>, transport_error: Option<&str>) -> &'static str {
    match (status, transport_error) {
        (Some(s), _) if (200..300).contains(&s) => "2xx",
        (Some(s), _) if (300..400).contains(&s) => "3xx",
        (Some(s), _) if (400..500).contains(&s) => "4xx",
        (Some(s), _) if (500..600).contains(&s) => "5xx",
        (None, Some("timed out")) => "timeout",
        (None, Some("connection failed")) => "connect",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::new();
        m.step("d\"x", "s", "action", Duration::from_millis(3));
        m.step("d\"x", "s", "action", Duration::from_millis(300));
        let h = m.histograms.lock().unwrap();
        let (key, h) = h.iter().next().unwrap();
        assert_eq!(h.count, 2);
        // 0.005 holds the first; 0.5 and above hold both.
        let at = |bound: f64| h.counts[h.buckets.iter().position(|b| *b == bound).unwrap()];
        assert_eq!((at(0.001), at(0.005), at(0.5)), (0, 1, 2));
        assert_eq!(
            format_labels(&key.1, Some("+Inf")),
            "{definition=\"d\\\"x\",step=\"s\",phase=\"action\",le=\"+Inf\"}"
        );
    }

    #[test]
    fn only_outcomes_are_counted_as_transitions() {
        let m = Metrics::new();
        m.transition("saga", "a", "compensating");
        m.transition("saga", "a", "stuck");
        let counters = m.counters.lock().unwrap();
        assert_eq!(counters.len(), 1);
        assert_eq!(counters.values().sum::<u64>(), 1);
    }

    #[test]
    fn status_classes_follow_the_answer() {
        assert_eq!(status_class(Some(503), None), "5xx");
        assert_eq!(status_class(Some(409), None), "4xx");
        assert_eq!(status_class(None, Some("timed out")), "timeout");
        assert_eq!(status_class(None, Some("connection failed")), "connect");
        assert_eq!(status_class(None, Some("request failed")), "other");
    }
}
