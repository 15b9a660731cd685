//! Hostile input against every route: malformed JSON, wrong content types, unknown
//! fields, invalid ids, bad query parameters and every size and depth limit. Each
//! gets a 4xx problem+json with a stable code and a message naming the problem;
//! nothing of it is written and no internal text leaks.

use serde_json::{json, Value};

use crate::support::{count, saga_yaml, World};

/// One malformed request and the answer it must get.
struct Case {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    header: Option<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn case(method: &'static str, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.into(),
        content_type: None,
        body: None,
        header: None,
        status,
        code,
    }
}

impl Case {
    fn json(mut self, body: impl Into<String>) -> Case {
        self.content_type = Some("application/json");
        self.body = Some(body.into());
        self
    }
    fn typed(mut self, content_type: &'static str, body: impl Into<String>) -> Case {
        self.content_type = Some(content_type);
        self.body = Some(body.into());
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.header = Some((name, value.into()));
        self
    }
}

/// Text that must never reach a client: SQL, driver, file and panic details.
const LEAKS: &[&str] = &[
    "SELECT",
    "INSERT",
    "postgres",
    "tokio_postgres",
    "deadpool",
    "/work/",
    ".rs:",
    "panicked",
    "stack backtrace",
    "redis::",
];

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_hostile_input_with_a_named_4xx_and_writes_nothing() {
    let world = World::start_with(|s| {
        s.limits.max_input_bytes = 4096;
        s.limits.max_definition_bytes = 8192;
        s.limits.max_header_bytes = 4096;
    })
    .await;
    let yaml = saga_yaml(&world, "errs", "", &[("a", None, true)]);
    world.register("errs", &yaml).await;
    let before_definitions = count(&world.db, "SELECT count(*) FROM saga_definitions").await;
    let id = "0190b6c2-5a1e-7000-8000-000000000001";
    let saga = |input: &str| format!(r#"{{"definition":"errs","input":{input}}}"#);
    let hundred_and_one_steps = json!({
        "name": "huge",
        "steps": (0..101).map(|i| json!({ "name": format!("s{i}"), "action": { "url": "http://127.0.0.1:9/x" } })).collect::<Vec<_>>()
    })
    .to_string();
    let branch =
        r#"{"name":"b","commit_url":"http://127.0.0.1:9/c","abort_url":"http://127.0.0.1:9/a"}"#;

    let cases = vec![
        // definitions
        case("PUT", "/v1/saga-definitions/x", 415, "unsupported_media_type").typed("image/png", "x"),
        case("PUT", "/v1/saga-definitions/x", 422, "invalid_definition").typed("application/json", "{not json"),
        case("PUT", "/v1/saga-definitions/x", 422, "invalid_definition").typed("application/yaml", "name: x\nsteps: []\ncolour: red\n"),
        case("PUT", "/v1/saga-definitions/huge", 422, "invalid_definition").json(hundred_and_one_steps),
        case("PUT", "/v1/saga-definitions/x", 413, "definition_too_large").typed("application/yaml", "#".repeat(9000)),
        case("PUT", "/v1/saga-definitions/bad%20name", 422, "invalid_definition").typed("application/yaml", "name: bad name\nsteps: []\n"),
        case("GET", "/v1/saga-definitions/ghost", 404, "definition_not_found"),
        case("GET", "/v1/saga-definitions/errs/versions/abc", 400, "invalid_path"),
        case("GET", "/v1/saga-definitions/errs/versions/99", 404, "definition_not_found"),
        case("GET", "/v1/saga-definitions?colour=red", 400, "invalid_query"),
        // sagas
        case("POST", "/v1/sagas", 400, "malformed_json").json("{not json"),
        case("POST", "/v1/sagas", 400, "malformed_json").json(""),
        case("POST", "/v1/sagas", 422, "invalid_body").json(r#"{"definition":"errs","input":{},"colour":"red"}"#),
        case("POST", "/v1/sagas", 422, "invalid_body").json(r#"{"definition":7,"input":{}}"#),
        case("POST", "/v1/sagas", 415, "unsupported_media_type").typed("text/plain", saga("{}")),
        case("POST", "/v1/sagas", 415, "unsupported_media_type"),
        case("POST", "/v1/sagas", 400, "json_too_deep").json(saga(&nested(40))),
        case("POST", "/v1/sagas", 400, "json_too_deep").json(saga(&nested(200))),
        case("POST", "/v1/sagas", 413, "input_too_large").json(saga(&format!("\"{}\"", "x".repeat(5000)))),
        case("POST", "/v1/sagas", 413, "body_too_large").json(saga(&format!("\"{}\"", "x".repeat(300 * 1024)))),
        case("POST", "/v1/sagas", 400, "invalid_idempotency_key").json(saga("{}")).header("Idempotency-Key", "x".repeat(201)),
        case("POST", "/v1/sagas?wait=banana", 400, "invalid_query").json(saga("{}")),
        case("POST", "/v1/sagas?wait=-1s", 400, "invalid_query").json(saga("{}")),
        case("POST", "/v1/sagas?colour=red", 400, "invalid_query").json(saga("{}")),
        case("GET", "/v1/sagas/not-a-uuid", 400, "invalid_path"),
        case("GET", format!("/v1/sagas/{id}"), 404, "saga_not_found"),
        case("GET", format!("/v1/sagas/{id}?wait=forever"), 400, "invalid_query"),
        case("POST", "/v1/sagas/12345/cancel", 400, "invalid_path"),
        case("POST", format!("/v1/sagas/{id}/cancel"), 404, "saga_not_found"),
        // 2PC / TCC
        case("POST", "/v1/transactions", 400, "malformed_json").json("{\"participants\": ["),
        case("POST", "/v1/transactions", 422, "invalid_body").json(r#"{"participants":[],"colour":1}"#),
        case("POST", "/v1/transactions", 422, "invalid_transaction").json(r#"{"participants":[]}"#),
        case("POST", "/v1/transactions", 422, "invalid_transaction").json(r#"{"timeout":"banana"}"#),
        case("POST", "/v1/transactions", 415, "unsupported_media_type").typed("application/xml", "<x/>"),
        case("POST", "/v1/transactions", 400, "json_too_deep").json(format!(
            r#"{{"participants":[{{"name":"d","prepare_url":"http://127.0.0.1:9/p","commit_url":"http://127.0.0.1:9/c","abort_url":"http://127.0.0.1:9/a","payload":{}}}]}}"#,
            nested(40)
        )),
        case("GET", "/v1/transactions/zzz", 400, "invalid_path"),
        case("GET", format!("/v1/transactions/{id}"), 404, "transaction_not_found"),
        case("POST", "/v1/transactions/zzz/branches", 400, "invalid_path").json(branch),
        case("POST", format!("/v1/transactions/{id}/branches"), 404, "transaction_not_found").json(branch),
        case("POST", format!("/v1/transactions/{id}/branches"), 422, "invalid_body").json(r#"{"name":"b"}"#),
        case("POST", format!("/v1/transactions/{id}/branches"), 422, "invalid_branch").json(r#"{"name":"b c","commit_url":"http://127.0.0.1:9/c","abort_url":"http://127.0.0.1:9/a"}"#),
        case("POST", format!("/v1/transactions/{id}/branches"), 413, "input_too_large").json(format!(
            r#"{{"name":"b","commit_url":"http://127.0.0.1:9/c","abort_url":"http://127.0.0.1:9/a","payload":"{}"}}"#,
            "x".repeat(5000)
        )),
        case("POST", "/v1/transactions/zzz/commit", 400, "invalid_path"),
        case("POST", format!("/v1/transactions/{id}/commit?wait=soon"), 400, "invalid_query"),
        case("POST", format!("/v1/transactions/{id}/abort"), 404, "transaction_not_found"),
        // admin
        case("GET", "/v1/admin/transactions?limit=-1", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?limit=abc", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?older_than=banana", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?state=melted", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?kind=xa", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?cursor=garbage", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions?colour=red", 400, "invalid_query"),
        case("GET", "/v1/admin/transactions/nope", 400, "invalid_path"),
        case("GET", format!("/v1/admin/transactions/{id}"), 404, "transaction_not_found"),
        case("POST", format!("/v1/admin/transactions/{id}/retry"), 400, "malformed_json").json("{"),
        case("POST", format!("/v1/admin/transactions/{id}/retry"), 422, "invalid_body").json(r#"{"colour":"red"}"#),
        case("POST", "/v1/admin/transactions/nope/retry", 400, "invalid_path"),
        // anywhere
        case("GET", "/v1/nothing-here", 404, "route_not_found"),
        case("DELETE", "/v1/sagas", 404, "route_not_found"),
        case("GET", "/v1/sagas/x", 431, "headers_too_large").header("x-padding", "p".repeat(5000)),
        case("GET", format!("/v1/admin/transactions?older_than={}", "9".repeat(5000)), 431, "headers_too_large"),
    ];

    let http = reqwest::Client::new();
    let base = &world.coordinator.base_url;
    for c in cases {
        let mut request = http.request(c.method.parse().unwrap(), format!("{base}{}", c.path));
        if let Some(content_type) = c.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = &c.body {
            request = request.body(body.clone());
        }
        if let Some((name, value)) = &c.header {
            request = request.header(*name, value);
        }
        let what = format!(
            "{} {}",
            c.method,
            c.path.chars().take(120).collect::<String>()
        );
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let content_type = crate::support::content_type(&response);
        let text = response.text().await.unwrap();
        assert_eq!(
            content_type, "application/problem+json",
            "{what}: {status} {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert_eq!(
            (status, body["code"].as_str().unwrap_or("")),
            (c.status, c.code),
            "{what}: {text}"
        );
        assert_eq!(body["status"], c.status, "{what}");
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(
            detail.len() > 10,
            "{what}: the detail names the problem: {text}"
        );
        for leak in LEAKS {
            assert!(!text.contains(leak), "{what} leaks {leak:?}: {text}");
        }
    }
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        0,
        "nothing of a rejected request is written"
    );
    assert_eq!(count(&world.db, "SELECT count(*) FROM events").await, 0);
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM saga_definitions").await,
        before_definitions
    );
    assert!(world.participant.calls().is_empty());
    world.stop().await;
}
