//! `/metrics`: the Prometheus text is well formed and its counters move with real
//! work: sagas started and finished, participant calls and their errors by class,
//! step latency, group-commit batch sizes, pool gauges.

use std::collections::HashMap;

use serde_json::json;
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World, WAIT};

/// One scrape: every sample line, keyed by `name{labels}` exactly as exposed.
pub async fn scrape(base_url: &str) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{base_url}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(meta) = line.strip_prefix('#') {
            assert!(
                meta.starts_with(" HELP ") || meta.starts_with(" TYPE "),
                "{line}"
            );
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "duplicate {key}"
        );
    }
    samples
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_and_move_after_sagas_run() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "metered",
        "",
        &[("a", None, true), ("b", None, true)],
    );
    world.register("metered", &yaml).await;
    let base = world.coordinator.base_url.clone();
    let before = scrape(&base).await;

    // One saga completes after a 503 on b; one compensates because b refuses.
    world.participant.push("/b", [Answer::status(503)]);
    let completed = world
        .coordinator
        .client
        .start_saga("metered", json!({ "n": 1 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(completed.state, "completed");
    world.participant.push("/b", [Answer::status(409)]);
    let compensated = world
        .coordinator
        .client
        .start_saga("metered", json!({ "n": 2 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(compensated.state, "compensated");

    let after = scrape(&base).await;
    let delta = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(
        delta(r#"settle_transactions_started_total{kind="saga",definition="metered"}"#),
        2.0
    );
    for outcome in ["completed", "compensated"] {
        assert_eq!(
            delta(&format!(
                r#"settle_transaction_outcomes_total{{kind="saga",definition="metered",outcome="{outcome}"}}"#
            )),
            1.0,
            "{outcome}"
        );
    }
    assert_eq!(
        delta(
            r#"settle_participant_errors_total{definition="metered",step="b",phase="action",class="5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(
            r#"settle_participant_errors_total{definition="metered",step="b",phase="action",class="4xx"}"#
        ),
        1.0
    );
    // a: two actions and one compensation; b: 503, 200, 409.
    assert_eq!(
        delta(
            r#"settle_participant_call_duration_seconds_count{definition="metered",step="a",phase="action"}"#
        ),
        2.0
    );
    assert_eq!(
        delta(
            r#"settle_participant_call_duration_seconds_count{definition="metered",step="a",phase="compensation"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(
            r#"settle_participant_call_duration_seconds_count{definition="metered",step="b",phase="action"}"#
        ),
        3.0
    );
    // b settled twice (done once, refused once), each timed from its first call.
    assert_eq!(
        delta(
            r#"settle_step_duration_seconds_count{definition="metered",step="b",phase="action"}"#
        ),
        2.0
    );
    let b_steps_inf = delta(
        r#"settle_step_duration_seconds_bucket{definition="metered",step="b",phase="action",le="+Inf"}"#,
    );
    assert_eq!(b_steps_inf, 2.0);
    assert!(delta("settle_write_batch_size_count") >= 4.0);
    assert!(delta("settle_write_batch_size_sum") >= delta("settle_write_batch_size_count"));
    assert_eq!(
        get(&after, r#"settle_db_pool_connections{state="max"}"#),
        8.0
    );
    assert!(get(&after, r#"settle_db_pool_connections{state="size"}"#) >= 1.0);
    assert!(after.contains_key(r#"settle_lock_acquire_failures_total{reason="held"}"#));
    assert!(after.contains_key("settle_transactions_stuck"));
    assert!(after.contains_key("settle_owned_transactions"));
    world.stop().await;
}
