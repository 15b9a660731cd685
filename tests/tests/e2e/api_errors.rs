//! Bad input gets a clear problem+json answer with a stable code, and loses nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{count, saga_yaml, World};

/// A successful answer's JSON body (panics otherwise: a test failure).
async fn success(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap()
    );
    response.json().await.unwrap()
}

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = crate::support::content_type(&response);
    assert_eq!(content_type, "application/problem+json", "status {status}");
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_problem_json_with_a_stable_code() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "errs", "", &[("a", None, true)]);
    world.register("errs", &yaml).await;
    let base = &world.coordinator.base_url;
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(format!("{base}/v1/sagas"))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post("{not json"), 400, "malformed_json"),
        (
            post(r#"{"definition":"errs","input":{},"colour":"red"}"#),
            422,
            "invalid_body",
        ),
        (post(r#"{"input":{}}"#), 422, "invalid_body"),
        (
            post(r#"{"definition":"ghost","input":{}}"#),
            422,
            "unknown_definition",
        ),
        (
            http.post(format!("{base}/v1/sagas"))
                .header("content-type", "text/plain")
                .body("hi"),
            415,
            "unsupported_media_type",
        ),
        (
            post(r#"{"definition":"errs","input":{}}"#).header("Idempotency-Key", ""),
            400,
            "invalid_idempotency_key",
        ),
        (
            http.post(format!("{base}/v1/sagas?wait=banana"))
                .json(&json!({ "definition": "errs", "input": {} })),
            400,
            "invalid_query",
        ),
        (
            http.get(format!("{base}/v1/sagas/not-a-uuid")),
            400,
            "invalid_path",
        ),
        (
            http.get(format!(
                "{base}/v1/sagas/0190b6c2-5a1e-7000-8000-000000000001"
            )),
            404,
            "saga_not_found",
        ),
        (
            http.get(format!("{base}/v1/nothing-here")),
            404,
            "route_not_found",
        ),
        (
            http.get(format!("{base}/v1/saga-definitions/ghost")),
            404,
            "definition_not_found",
        ),
        (
            http.put(format!("{base}/v1/saga-definitions/x"))
                .header("content-type", "image/png")
                .body("x"),
            415,
            "unsupported_media_type",
        ),
        (
            http.post(format!("{base}/v1/sagas"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"definition":"errs","input":"{}"}}"#,
                    "x".repeat(300 * 1024)
                )),
            413,
            "body_too_large",
        ),
        (
            http.put(format!("{base}/v1/saga-definitions/x"))
                .header("content-type", "application/yaml")
                .body("#".repeat(300 * 1024)),
            413,
            "definition_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = problem(request.send().await.unwrap()).await;
        assert_eq!(
            (got, body["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert!(!body["detail"].as_str().unwrap().is_empty());
        assert_eq!(body["status"], status);
    }
    let count: i64 = crate::support::count(&world.db, "SELECT count(*) FROM transactions").await;
    assert_eq!(count, 0, "no rejected request wrote anything");
    assert!(world.participant.calls().is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_report_their_checks() {
    let world = World::start().await;
    let base = &world.coordinator.base_url;
    let health: Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["migrations"], "ok");
    assert_eq!(ready["checks"]["redis"], "ok");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_elsewhere_gets_503_and_loses_nothing() {
    // A session outside Settle (a migration, a VACUUM FULL, an operator's
    // transaction left open) holds a lock on the transactions table. Requests
    // that need it end after the statement timeout with a problem+json naming
    // the database, instead of waiting as long as the lock is held.
    let world = World::start_with(|s| s.database.statement_timeout = Duration::from_secs(1)).await;
    let yaml = saga_yaml(&world, "locked", "", &[("a", None, true)]);
    world.register("locked", &yaml).await;
    let base = &world.coordinator.base_url;
    // A request that waits forever fails the test instead of hanging it.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = |key: &'static str| {
        http.post(format!("{base}/v1/sagas?wait=10s"))
            .header("Idempotency-Key", key)
            .json(&json!({ "definition": "locked", "input": { "n": 1 } }))
    };
    let before = success(start("before-the-lock")).await;
    assert_eq!(before["state"], "completed", "{before}");
    let saga = format!("{base}/v1/sagas/{}", before["id"].as_str().unwrap());

    let holder = world.db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for (what, request) in [
        ("a saga's read", http.get(&saga)),
        (
            "the operators' list",
            http.get(format!("{base}/v1/admin/transactions")),
        ),
        ("a start", start("during-the-lock")),
    ] {
        let (status, body) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, 503, "{what}: {body}");
        assert_eq!(body["code"], "database_unavailable", "{what}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("did not finish in time"),
            "{what}: {body}"
        );
    }
    holder.batch_execute("ROLLBACK").await.unwrap();

    // Once the lock is gone, the same requests succeed, and the start refused
    // under the lock, retried with its key, runs once.
    let read = success(http.get(&saga)).await;
    assert_eq!(read["state"], "completed", "{read}");
    let retried = success(start("during-the-lock")).await;
    assert_eq!(retried["state"], "completed", "{retried}");
    let sagas = count(&world.db, "SELECT count(*) FROM transactions").await;
    assert_eq!(sagas, 2, "one saga before the lock, one started after it");
    let calls = world.participant.calls_to("/a").len();
    assert_eq!(calls, 2, "each saga called its step once");
    world.stop().await;
}
