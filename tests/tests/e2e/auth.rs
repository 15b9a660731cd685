//! Bearer tokens with roles against a live coordinator: 401 and 403 as problem+json
//! on every route group, tokens made by `settle token`, token names as timeline
//! actors, and the refusal to serve an open API off loopback.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use settle_participant::client::CoordinatorClient;
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World, SETTLE_BIN, WAIT};

/// Runs `settle` with `args` (and `stdin`), returning stdout; panics with stderr on failure.
async fn settle(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(SETTLE_BIN)
        .args(args)
        .env("SETTLE__LOG__LEVEL", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running settle");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .await
            .expect("writing stdin");
    }
    drop(input);
    child.wait_with_output().await.expect("settle output")
}

/// A token from `settle token new NAME ROLE`: (token, `name:role:hash` entry).
async fn new_token(name: &str, role: &str) -> (String, String) {
    let output = settle(&["token", "new", name, role], None).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token line")
        .to_string();
    let entry = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SETTLE__AUTH__TOKENS="))
        .expect("an environment line")
        .to_string();
    // `settle token hash` gives the same hash for the same token.
    let hashed = settle(&["token", "hash"], Some(&format!("{token}\n"))).await;
    let hash = String::from_utf8_lossy(&hashed.stdout).trim().to_string();
    assert!(entry.ends_with(&hash), "{entry} vs {hash}");
    (token, entry)
}

struct Tokens {
    service: String,
    operator: String,
    reader: String,
}

async fn world_with_tokens() -> (World, Tokens) {
    let (service, s) = new_token("orders", "service").await;
    let (operator, o) = new_token("alice", "operator").await;
    let (reader, r) = new_token("dashboard", "reader").await;
    let lines = format!("{s},{o},{r}");
    let world = World::start_with(|settings| {
        for entry in lines.split(',') {
            let mut parts = entry.splitn(3, ':');
            let (name, role, hash) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            settings
                .auth
                .tokens
                .push(settle_coordinator::auth::TokenEntry {
                    name: name.into(),
                    role: settle_coordinator::auth::Role::parse(role).unwrap(),
                    digest: settle_coordinator::auth::parse_hash(hash).unwrap(),
                });
        }
    })
    .await;
    (
        world,
        Tokens {
            service,
            operator,
            reader,
        },
    )
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = crate::support::content_type(&response);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        assert_eq!(content_type, "application/problem+json", "{body}");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_group_answers_401_without_a_token_and_403_to_the_wrong_role() {
    let (world, tokens) = world_with_tokens().await;
    let id = uuid::Uuid::now_v7();
    let definition = saga_yaml(&world, "guarded", "", &[("a", None, true)]);
    // (method, path, body, roles that may call it)
    let routes: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (
            Method::PUT,
            "/v1/saga-definitions/guarded".into(),
            None,
            &["service"],
        ),
        (
            Method::GET,
            "/v1/saga-definitions".into(),
            None,
            &["service", "operator", "reader"],
        ),
        (
            Method::GET,
            "/v1/saga-definitions/guarded".into(),
            None,
            &["service", "operator", "reader"],
        ),
        (
            Method::POST,
            "/v1/sagas".into(),
            Some(json!({ "definition": "guarded", "input": {} })),
            &["service"],
        ),
        (
            Method::GET,
            format!("/v1/sagas/{id}"),
            None,
            &["service", "operator", "reader"],
        ),
        (
            Method::POST,
            format!("/v1/sagas/{id}/cancel"),
            None,
            &["service"],
        ),
        (
            Method::POST,
            "/v1/transactions".into(),
            Some(json!({})),
            &["service"],
        ),
        (
            Method::GET,
            format!("/v1/transactions/{id}"),
            None,
            &["service", "operator", "reader"],
        ),
        (
            Method::POST,
            format!("/v1/transactions/{id}/commit"),
            None,
            &["service"],
        ),
        (
            Method::GET,
            "/v1/admin/transactions".into(),
            None,
            &["operator", "reader"],
        ),
        (
            Method::GET,
            format!("/v1/admin/transactions/{id}"),
            None,
            &["operator", "reader"],
        ),
        (
            Method::POST,
            format!("/v1/admin/transactions/{id}/retry"),
            None,
            &["operator"],
        ),
        (
            Method::POST,
            format!("/v1/admin/transactions/{id}/pause"),
            Some(json!({ "note": "why" })),
            &["operator"],
        ),
        (
            Method::POST,
            "/v1/admin/transactions/actions/resolve?state=stuck".into(),
            Some(json!({ "dry_run": true })),
            &["operator"],
        ),
        (
            Method::GET,
            "/metrics".into(),
            None,
            &["operator", "reader"],
        ),
    ];
    let http = reqwest::Client::new();
    let by_role = [
        ("service", &tokens.service),
        ("operator", &tokens.operator),
        ("reader", &tokens.reader),
    ];
    for (method, path, body, allowed) in &routes {
        let url = format!("{}{path}", world.coordinator.base_url);
        let request = |token: Option<&str>| {
            let mut r = http.request(method.clone(), &url);
            if path.starts_with("/v1/saga-definitions/") && method == Method::PUT {
                r = r
                    .header("content-type", "application/yaml")
                    .body(definition.clone());
            } else if let Some(body) = body {
                r = r.json(body);
            }
            if let Some(token) = token {
                r = r.bearer_auth(token);
            }
            r
        };
        let (status, body) = problem(request(None).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["code"], "missing_token", "{method} {path}");
        let (status, body) = problem(request(Some("not-a-token")).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["code"], "invalid_token", "{method} {path}");
        for (role, token) in by_role {
            let (status, body) = problem(request(Some(token)).send().await.unwrap()).await;
            if allowed.contains(&role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} may call {method} {path}, got {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} on {method} {path}");
                assert_eq!(body["code"], "forbidden");
                assert!(body["detail"].as_str().unwrap().contains(role), "{body}");
            }
        }
    }
    // Probes stay open; a token never appears in a response.
    for path in ["/healthz", "/readyz", "/openapi.json", "/ui/"] {
        let response = http
            .get(format!("{}{path}", world.coordinator.base_url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
    }
    let unauthorized = http
        .get(format!(
            "{}/v1/admin/transactions",
            world.coordinator.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unauthorized.headers()["www-authenticate"],
        "Bearer realm=\"settle\""
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_name_the_token_that_acted() {
    let (world, tokens) = world_with_tokens().await;
    let base = &world.coordinator.base_url;
    let service = CoordinatorClient::new(base)
        .unwrap()
        .with_token(&tokens.service)
        .unwrap();
    let operator = CoordinatorClient::new(base)
        .unwrap()
        .with_token(&tokens.operator)
        .unwrap();
    service
        .register_definition_yaml(
            "fragile",
            &saga_yaml(
                &world,
                "fragile",
                "",
                &[("x", None, true), ("y", Some(&["x"]), true)],
            ),
        )
        .await
        .unwrap();
    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    let stuck = service
        .start_saga("fragile", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(stuck.state, "stuck");

    // The operator command line sends the token too.
    world
        .participant
        .set_default("/x/undo", Answer::ok(json!({})));
    let retried = tokio::process::Command::new(SETTLE_BIN)
        .args([
            "tx",
            "retry",
            &stuck.id.to_string(),
            "--note",
            "fixed by hand",
        ])
        .args(["--url", base])
        .env("SETTLE_TOKEN", &tokens.operator)
        .output()
        .await
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let done = service
        .wait_saga(stuck.id, WAIT)
        .await
        .expect("the saga settles");
    assert_eq!(done.state, "compensated");

    let detail = operator.admin_transaction(stuck.id).await.unwrap();
    let actor_of = |kind: &str| {
        detail
            .events
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.actor.clone())
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", detail.events))
    };
    assert_eq!(actor_of("started"), "orders");
    let retry = detail
        .events
        .iter()
        .find(|e| e.actor == "alice")
        .expect("the operator's retry is in the timeline");
    assert!(
        retry
            .detail
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default()
            .contains("fixed by hand"),
        "{retry:?}"
    );

    // Without the token the CLI gets the coordinator's 401 and says so.
    let refused = tokio::process::Command::new(SETTLE_BIN)
        .args(["tx", "list", "--url", base])
        .env_remove("SETTLE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("missing_token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_is_refused_off_loopback_and_warned_about_on_it() {
    let output = tokio::process::Command::new(SETTLE_BIN)
        .arg("serve")
        .env("SETTLE__SERVER__LISTEN", "0.0.0.0:0")
        .env("SETTLE__AUTH__TOKENS", "")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server.listen") && stderr.contains("not a loopback address"),
        "{stderr}"
    );
    // A malformed token entry names its key and starts nothing.
    let output = tokio::process::Command::new(SETTLE_BIN)
        .arg("serve")
        .env("SETTLE__AUTH__TOKENS", "alice:admin:sha256:00")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.tokens[0].role"));
    // `settle token new` refuses a role that does not exist.
    let output = settle(&["token", "new", "bob", "admin"], None).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("role"));

    let db = settle_tests::db::TestDatabase::create().await;
    let prefix = settle_tests::unique("auth-open");
    let mut process = settle_tests::coordinator::CoordinatorProcess::spawn(
        SETTLE_BIN,
        &db.url,
        settle_tests::redis_server::SHARED,
        &prefix,
        &[],
    )
    .await;
    let log = process.log_text();
    assert!(
        log.contains("no auth.tokens configured"),
        "the start-up warning is missing: {log}"
    );
    process.signal("TERM");
    assert!(process.wait_exit(std::time::Duration::from_secs(20)).await);
    settle_tests::redis_server::clean_prefix(&prefix).await;
}
