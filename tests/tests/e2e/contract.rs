//! The drift test: openapi/coordinator.yaml, as the coordinator serves it at
//! `/openapi.json`, against the code. The routes the source registers and the
//! operations the document lists must be the same set; every problem `code` the
//! source can answer must be in the document; and the responses of a real run
//! (definitions, sagas, 2PC and TCC transactions, admin reads, problem bodies)
//! must match the document's schemas, statuses and content types, and the calls
//! participants received must match openapi/participant.yaml.

mod schema;
mod source;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World};
use schema::Spec;
use source::Operation;

const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head"];

async fn served_spec(world: &World) -> Value {
    let response = reqwest::get(format!("{}/openapi.json", world.coordinator.base_url))
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let spec: Value = response.json().await.expect("the spec is JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    spec
}

fn spec_operations(spec: &Value) -> BTreeSet<Operation> {
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in HTTP_METHODS {
            if item.get(*method).is_some() {
                operations.insert((method.to_uppercase(), source::normalize(path)));
            }
        }
    }
    operations
}

fn code_operations() -> BTreeSet<Operation> {
    source::coordinator_sources()
        .iter()
        .flat_map(|(file, code)| source::routes_in(file, code))
        .collect()
}

/// A request path for a spec path: each parameter filled with a value its schema allows.
fn concrete_path(spec: &Value, template: &str) -> String {
    let item = &spec["paths"][template];
    let parameters: Vec<Value> = item["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["$ref"].as_str() {
            Some(r) => spec.pointer(&r[1..]).expect("parameter $ref").clone(),
            None => p.clone(),
        })
        .collect();
    let mut path = template.to_string();
    for p in parameters.iter().filter(|p| p["in"] == "path") {
        let schema = &p["schema"];
        let value = if let Some(first) = schema["enum"].get(0) {
            first.as_str().unwrap().to_string()
        } else if schema["type"] == "integer" {
            "1".into()
        } else if schema["format"] == "uuid" {
            uuid::Uuid::now_v7().to_string()
        } else {
            "contract".into()
        };
        path = path.replace(&format!("{{{}}}", p["name"].as_str().unwrap()), &value);
    }
    assert!(
        !path.contains('{'),
        "{template}: a path parameter without a definition"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_in_the_code_and_the_operations_in_the_spec_are_the_same() {
    let world = World::start().await;
    let spec = served_spec(&world).await;
    let in_spec = spec_operations(&spec);
    let in_code = code_operations();
    assert!(
        in_code.len() >= 20,
        "the source reader found the routes: {in_code:?}"
    );
    let undocumented: Vec<_> = in_code.difference(&in_spec).collect();
    let unserved: Vec<_> = in_spec.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes the code serves but openapi/coordinator.yaml does not describe: {undocumented:?}\n\
         operations openapi/coordinator.yaml describes but the code does not serve: {unserved:?}"
    );

    // And the live coordinator agrees: no operation of the spec is an unknown route.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (template, item) in spec["paths"].as_object().unwrap() {
        for method in HTTP_METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let path = concrete_path(&spec, template);
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = client.request(
                method.clone(),
                format!("{}{path}", world.coordinator.base_url),
            );
            if method == Method::POST || method == Method::PUT {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            let response = request.send().await.expect("a response");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(
                !(status == 404 && body.contains("\"route_not_found\"")),
                "{method} {path} ({template}) is in the spec but the coordinator has no such route"
            );
        }
    }
    world.stop().await;
}

#[test]
fn every_problem_code_in_the_code_is_in_the_spec() {
    let spec: Value =
        serde_json::from_str(settle_coordinator::http::openapi::spec_json().expect("the spec"))
            .expect("JSON");
    let mut documented = BTreeSet::new();
    collect_code_enums(&spec, &mut documented);
    let used = source::problem_codes(&source::coordinator_sources());
    for expected in [
        "route_not_found",
        "internal",
        "missing_token",
        "saga_not_found",
    ] {
        assert!(
            used.contains(expected),
            "the source reader found {expected}: {used:?}"
        );
    }
    let missing: Vec<_> = used.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "problem codes the coordinator answers with but no response in openapi/coordinator.yaml lists: {missing:?}"
    );
    // The Problem schema's own list of codes is the one a client reads first.
    let listed = spec["components"]["schemas"]["Problem"]["properties"]["code"]["description"]
        .as_str()
        .expect("Problem.code has a description");
    let unlisted: Vec<_> = used
        .iter()
        .filter(|c| !listed.contains(&format!("`{c}`")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "codes missing from the Problem.code description: {unlisted:?}"
    );
}

#[test]
fn the_spec_says_which_operations_need_a_token_as_the_gate_does() {
    use settle_coordinator::auth::{access, Access};
    let spec: Value =
        serde_json::from_str(settle_coordinator::http::openapi::spec_json().expect("the spec"))
            .expect("JSON");
    let mut wrong = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        for method in HTTP_METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let operation = &item[*method];
            let path = concrete_path(&spec, template);
            let open_in_spec = operation["security"] == json!([]);
            let what = format!("{} {template}", method.to_uppercase());
            match access(&method.to_uppercase(), &path) {
                Access::Open if !open_in_spec => {
                    wrong.push(format!("{what}: open in auth.rs, but the spec asks for a token (add `security: []`)"))
                }
                Access::Open => {}
                Access::AnyToken => wrong.push(format!(
                    "{what}: auth.rs has no rule for it (any valid token passes); give it roles in auth::access"
                )),
                Access::Roles(_) => {
                    if open_in_spec {
                        wrong.push(format!("{what}: needs a token, but the spec says `security: []`"));
                    }
                    for status in ["401", "403"] {
                        if operation["responses"].get(status).is_none() {
                            wrong.push(format!("{what}: needs a token, but the spec has no {status} response"));
                        }
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// In a YAML flow mapping an unquoted comma ends the value: `{ description: Calls
/// allowed, the first included. }` silently adds a key "the first included.".
#[test]
fn the_openapi_documents_have_no_keys_made_of_prose() {
    fn walk(value: &Value, at: &str, under_names: bool, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key.contains(' ') && !under_names {
                        found.push(format!("{at}: {key:?}"));
                    }
                    let names = matches!(
                        key.as_str(),
                        "properties" | "paths" | "webhooks" | "responses" | "schemas"
                    );
                    walk(v, &format!("{at}/{key}"), names, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, at, false, found)),
            _ => {}
        }
    }
    for (name, text) in [
        (
            "coordinator.yaml",
            include_str!("../../../openapi/coordinator.yaml"),
        ),
        (
            "participant.yaml",
            include_str!("../../../openapi/participant.yaml"),
        ),
    ] {
        let document: Value = serde_norway::from_str(text).expect("the document parses");
        let mut found = Vec::new();
        walk(&document, name, false, &mut found);
        assert!(
            found.is_empty(),
            "keys that are prose (quote the value): {found:?}"
        );
    }
}

/// Every `enum` of a `code` property anywhere in the document.
fn collect_code_enums(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(options) = map
                .get("properties")
                .and_then(|p| p.get("code"))
                .and_then(|c| c.get("enum"))
                .and_then(Value::as_array)
            {
                into.extend(options.iter().filter_map(Value::as_str).map(String::from));
            }
            map.values().for_each(|v| collect_code_enums(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_code_enums(v, into)),
        _ => {}
    }
}

/// The calls a participant received against openapi/participant.yaml: the body
/// schema of a saga step or a 2PC branch call, `Idempotency-Key` and `traceparent`.
fn participant_calls_against_the_spec(calls: &[settle_tests::scripted::Received]) -> Vec<String> {
    let document: Value = serde_norway::from_str(include_str!("../../../openapi/participant.yaml"))
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
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
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
