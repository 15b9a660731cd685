//! The responses of a real run (definitions, sagas, 2PC and TCC transactions, admin
//! reads, problem bodies) against openapi/coordinator.yaml's schemas, statuses and
//! content types, and the calls the participant received against
//! openapi/participant.yaml.

use reqwest::Method;
use serde_json::{json, Value};
use settle_tests::scripted::Answer;

use super::schema::Spec;
use super::served_spec;
use crate::support::{saga_yaml, World};

/// The calls a participant received against openapi/participant.yaml: the body
/// schema of a saga step or a 2PC branch call, `Idempotency-Key` and `traceparent`.
fn participant_calls_against_the_spec(calls: &[settle_tests::scripted::Received]) -> Vec<String> {
    let document: Value =
        serde_norway::from_str(include_str!("../../../../openapi/participant.yaml"))
            .expect("openapi/participant.yaml parses");
    let spec = Spec { root: &document };
    let mut violations = Vec::new();
    for call in calls {
        let branch = ["/prepare", "/commit", "/abort"]
            .iter()
            .any(|suffix| call.path.ends_with(suffix));
        let (schema, name_key) = if branch {
            (&document["components"]["schemas"]["BranchCall"], "branch")
        } else {
            (&document["components"]["schemas"]["CallRequest"], "step")
        };
        let what = format!("participant call {}", call.path);
        for error in spec.validate(&call.body, schema) {
            violations.push(format!("{what}: {error}\n  body: {}", call.body));
        }
        let expected_key = format!(
            "{}:{}:{}",
            call.body["transaction_id"].as_str().unwrap_or(""),
            call.body[name_key].as_str().unwrap_or(""),
            call.body["phase"].as_str().unwrap_or("")
        );
        if call.idempotency_key.as_deref() != Some(expected_key.as_str()) {
            violations.push(format!(
                "{what}: Idempotency-Key {:?}, the spec says {expected_key}",
                call.idempotency_key
            ));
        }
        let traceparent_ok = call.traceparent.as_deref().is_some_and(|t| {
            let parts: Vec<&str> = t.split('-').collect();
            let hex = |s: &str, n: usize| {
                s.len() == n
                    && s.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            };
            parts.len() == 4
                && parts[0] == "00"
                && hex(parts[1], 32)
                && hex(parts[2], 16)
                && parts[3] == "01"
        });
        if !traceparent_ok {
            violations.push(format!(
                "{what}: traceparent {:?} is not 00-<32 hex>-<16 hex>-01",
                call.traceparent
            ));
        }
    }
    violations
}

/// Sends requests to a live coordinator and holds every answer against the spec.
struct Conformance<'a> {
    world: &'a World,
    spec: Spec<'a>,
    client: reqwest::Client,
    violations: Vec<String>,
    checked: usize,
}

impl Conformance<'_> {
    async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut request = self.client.request(
            method.clone(),
            format!("{}{path_and_query}", self.world.coordinator.base_url),
        );
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("a response");
        let status = response.status().as_u16();
        let content_type = crate::support::content_type(&response);
        let text = response.text().await.unwrap_or_default();
        let path = path_and_query.split('?').next().unwrap();
        let what = format!("{method} {path_and_query} → {status}");
        self.checked += 1;
        let body: Value = if content_type.contains("json") {
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    self.violations
                        .push(format!("{what}: not JSON ({e}): {text}"));
                    return (status, Value::Null);
                }
            }
        } else {
            Value::String(text)
        };
        if status >= 400 && content_type != "application/problem+json" {
            self.violations.push(format!(
                "{what}: an error as {content_type}, not problem+json"
            ));
        }
        match self
            .spec
            .response_schema(method.as_str(), path, status, &content_type)
        {
            Err(why) => self.violations.push(format!("{what}: {why}")),
            Ok(None) => {}
            Ok(Some(schema)) => {
                for error in self.spec.validate(&body, schema) {
                    self.violations
                        .push(format!("{what}: {error}\n  body: {body}"));
                }
            }
        }
        (status, body)
    }

    async fn json(&mut self, method: Method, path: &str, body: Value) -> (u16, Value) {
        self.call(
            method,
            path,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }

    async fn get(&mut self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_of_a_real_run_match_the_spec_schemas() {
    let world = World::start().await;
    let served = served_spec(&world).await;
    let mut run = Conformance {
        world: &world,
        spec: Spec { root: &served },
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        violations: Vec::new(),
        checked: 0,
    };
    let p = &world.participant;

    // Health, the spec itself, the dashboard.
    run.get("/healthz").await;
    run.get("/readyz").await;
    run.get("/openapi.json").await;
    run.get("/ui").await;
    run.get("/ui/").await;
    run.get("/ui/assets/app.js").await;
    run.get("/ui/assets/style.css").await;
    run.get("/ui/assets/nothing.js").await;

    // Definitions: new, unchanged, read every way, and refused.
    let yaml = saga_yaml(
        &world,
        "contract",
        "",
        &[("reserve", None, true), ("charge", None, true)],
    );
    let (status, _) = run
        .call(
            Method::PUT,
            "/v1/saga-definitions/contract",
            Some("application/yaml"),
            Some(yaml.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = run
        .call(
            Method::PUT,
            "/v1/saga-definitions/contract",
            Some("application/yaml"),
            Some(yaml),
        )
        .await;
    assert_eq!(status, 200);
    run.call(
        Method::PUT,
        "/v1/saga-definitions/contract",
        Some("application/yaml"),
        Some("name: other\nsteps: []\n".into()),
    )
    .await;
    run.call(
        Method::PUT,
        "/v1/saga-definitions/contract",
        Some("image/png"),
        Some("x".into()),
    )
    .await;
    run.call(
        Method::PUT,
        "/v1/saga-definitions/outside",
        Some("application/yaml"),
        Some("name: outside\nsteps:\n  - name: a\n    action: { url: \"http://169.254.169.254/latest\" }\n".into()),
    )
    .await;
    run.get("/v1/saga-definitions").await;
    run.get("/v1/saga-definitions/contract").await;
    run.get("/v1/saga-definitions/contract/versions").await;
    run.get("/v1/saga-definitions/contract/versions/1").await;
    run.get("/v1/saga-definitions/contract/versions/99").await;
    run.get("/v1/saga-definitions/contract/versions/one").await;
    run.get("/v1/saga-definitions/missing").await;
    run.get("/v1/saga-definitions/missing/versions").await;

    // A saga that completes, one that is compensated, and their refusals.
    let (status, saga) = run
        .json(
            Method::POST,
            "/v1/sagas?wait=10s",
            json!({ "definition": "contract", "input": { "order": 1 } }),
        )
        .await;
    assert_eq!(status, 201, "{saga}");
    assert_eq!(saga["state"], "completed", "{saga}");
    let completed = saga["id"].as_str().unwrap().to_string();
    run.get(&format!("/v1/sagas/{completed}")).await;
    run.get(&format!("/v1/sagas/{completed}?wait=1s")).await;
    run.call(
        Method::POST,
        &format!("/v1/sagas/{completed}/cancel"),
        None,
        None,
    )
    .await;

    p.push("/charge", [Answer::status(422)]);
    let (_, saga) = run
        .json(
            Method::POST,
            "/v1/sagas?wait=10s",
            json!({ "definition": "contract", "input": 2 }),
        )
        .await;
    assert_eq!(saga["state"], "compensated", "{saga}");
    let compensated = saga["id"].as_str().unwrap().to_string();
    run.call(
        Method::POST,
        &format!("/v1/sagas/{compensated}/cancel"),
        None,
        None,
    )
    .await;

    let keyed = |key: &str| {
        run.client
            .post(format!("{}/v1/sagas", world.coordinator.base_url))
            .header("idempotency-key", key.to_string())
            .json(&json!({ "definition": "contract", "input": 3 }))
    };
    let first = keyed("contract-key").send().await.unwrap();
    assert_eq!(first.status(), 201);
    let again = keyed("contract-key").send().await.unwrap();
    assert_eq!(again.status(), 200);
    run.json(
        Method::POST,
        "/v1/sagas",
        json!({ "definition": "missing" }),
    )
    .await;
    run.json(
        Method::POST,
        "/v1/sagas",
        json!({ "definition": "contract", "extra": 1 }),
    )
    .await;
    run.json(
        Method::POST,
        "/v1/sagas?wait=banana",
        json!({ "definition": "contract" }),
    )
    .await;
    run.json(
        Method::POST,
        "/v1/sagas?colour=red",
        json!({ "definition": "contract" }),
    )
    .await;
    run.call(
        Method::POST,
        "/v1/sagas",
        Some("application/json"),
        Some("{\"definition\":".into()),
    )
    .await;
    run.call(
        Method::POST,
        "/v1/sagas",
        Some("text/plain"),
        Some("{}".into()),
    )
    .await;
    run.call(
        Method::POST,
        "/v1/sagas",
        Some("application/json"),
        Some(" ".repeat(300 * 1024)),
    )
    .await;
    run.get("/v1/sagas/not-a-uuid").await;
    run.get(&format!("/v1/sagas/{}", uuid::Uuid::now_v7()))
        .await;

    // One-shot 2PC: committed; then an interactive (TCC) transaction with a branch.
    let branch = |name: &str, prepare: bool| {
        let mut b = json!({
            "name": name,
            "commit_url": p.url(&format!("/{name}/commit")),
            "abort_url": p.url(&format!("/{name}/abort")),
            "payload": { "n": 1 },
        });
        if prepare {
            b["prepare_url"] = json!(p.url(&format!("/{name}/prepare")));
        }
        b
    };
    let (status, tx) = run
        .json(
            Method::POST,
            "/v1/transactions?wait=10s",
            json!({ "participants": [branch("stock", true), branch("money", true)], "timeout": "10s" }),
        )
        .await;
    assert_eq!(status, 201, "{tx}");
    assert_eq!(tx["state"], "committed", "{tx}");
    let one_shot = tx["id"].as_str().unwrap().to_string();
    run.get(&format!("/v1/transactions/{one_shot}")).await;
    run.call(
        Method::POST,
        &format!("/v1/transactions/{one_shot}/abort"),
        None,
        None,
    )
    .await;
    run.json(
        Method::POST,
        &format!("/v1/transactions/{one_shot}/branches"),
        branch("late", false),
    )
    .await;

    let (status, tx) = run.json(Method::POST, "/v1/transactions", json!({})).await;
    assert_eq!(status, 201, "{tx}");
    let interactive = tx["id"].as_str().unwrap().to_string();
    let branches = format!("/v1/transactions/{interactive}/branches");
    assert_eq!(
        run.json(Method::POST, &branches, branch("seat", true))
            .await
            .0,
        201
    );
    assert_eq!(
        run.json(Method::POST, &branches, branch("seat", true))
            .await
            .0,
        200
    );
    run.json(
        Method::POST,
        &branches,
        json!({ "name": "seat", "commit_url": p.url("/x"), "abort_url": p.url("/y") }),
    )
    .await;
    run.json(
        Method::POST,
        &branches,
        json!({ "name": "far", "commit_url": "http://10.1.2.3/c", "abort_url": p.url("/y") }),
    )
    .await;
    let (status, tx) = run
        .call(
            Method::POST,
            &format!("/v1/transactions/{interactive}/commit?wait=10s"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 202, "{tx}");
    run.call(
        Method::POST,
        &format!("/v1/transactions/{interactive}/abort"),
        None,
        None,
    )
    .await;

    let (_, tx) = run.json(Method::POST, "/v1/transactions", json!({})).await;
    let aborted = tx["id"].as_str().unwrap().to_string();
    run.call(
        Method::POST,
        &format!("/v1/transactions/{aborted}/abort?wait=5s"),
        None,
        None,
    )
    .await;
    run.call(
        Method::POST,
        &format!("/v1/transactions/{aborted}/commit"),
        None,
        None,
    )
    .await;
    run.json(
        Method::POST,
        "/v1/transactions",
        json!({ "participants": [] }),
    )
    .await;
    run.json(Method::POST, "/v1/transactions", json!({ "timeout": 5 }))
        .await;
    run.get(&format!("/v1/transactions/{}", uuid::Uuid::now_v7()))
        .await;

    // The operators' reads and the retry action.
    run.get("/v1/admin/transactions").await;
    run.get("/v1/admin/transactions?kind=saga&state=completed&limit=1")
        .await;
    let (_, page) = run.get("/v1/admin/transactions?limit=1").await;
    if let Some(cursor) = page["next_cursor"].as_str() {
        run.get(&format!("/v1/admin/transactions?limit=1&cursor={cursor}"))
            .await;
    }
    run.get("/v1/admin/transactions?limit=-1").await;
    run.get("/v1/admin/transactions?older_than=banana").await;
    run.get("/v1/admin/transactions?state=sideways").await;
    for id in [&completed, &compensated, &one_shot, &interactive] {
        run.get(&format!("/v1/admin/transactions/{id}")).await;
    }
    run.get(&format!("/v1/admin/transactions/{}", uuid::Uuid::now_v7()))
        .await;
    run.json(
        Method::POST,
        &format!("/v1/admin/transactions/{completed}/retry"),
        json!({ "note": "checking" }),
    )
    .await;
    run.json(
        Method::POST,
        &format!("/v1/admin/transactions/{completed}/retry"),
        json!({ "colour": "red" }),
    )
    .await;
    run.call(
        Method::POST,
        &format!("/v1/admin/transactions/{completed}/retry"),
        Some("application/json"),
        Some("{".into()),
    )
    .await;

    run.call(
        Method::POST,
        &format!("/v1/admin/transactions/{completed}/retry"),
        Some("application/json"),
        Some(" ".repeat(300 * 1024)),
    )
    .await;

    // What the participant heard must match openapi/participant.yaml.
    let calls = p.calls();
    assert!(calls.len() >= 10, "{} participant calls", calls.len());
    run.violations
        .extend(participant_calls_against_the_spec(&calls));

    let Conformance {
        violations,
        checked,
        ..
    } = run;
    assert!(checked >= 60, "{checked} responses checked");
    assert!(
        violations.is_empty(),
        "{} of {checked} responses break openapi/coordinator.yaml:\n{}",
        violations.len(),
        violations.join("\n")
    );
    world.stop().await;
}
