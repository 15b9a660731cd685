//! The drift test: openapi/coordinator.yaml, as the coordinator serves it at
//! `/openapi.json`, against the code. The routes the source registers and the
//! operations the document lists must be the same set; every problem `code` the
//! source can answer must be in the document; the document's security matches the
//! token gate; and (in `real_run`) real responses and participant calls match it.

mod real_run;
mod schema;
mod source;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::World;
use source::Operation;

const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head"];

pub(super) async fn served_spec(world: &World) -> Value {
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
