//! The coordinator client against a fake coordinator (an in-process actix-web
//! server): paths, headers, query strings, status handling and problem decoding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use settle_participant::api::{Saga, SagaDefinition, SagaDefinitionSummary, StartSaga};
use settle_participant::client::{CoordinatorClient, Error};
use settle_participant::participant::problem_response;
use uuid::Uuid;

/// What the fake coordinator saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    content_type: Option<String>,
    body: String,
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    definitions: Mutex<HashMap<String, (i32, String)>>,
    sagas_by_key: Mutex<HashMap<String, Uuid>>,
}

fn header(request: &HttpRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn saga(id: Uuid, definition: &str, input: Value, cancel_requested: bool) -> Saga {
    Saga {
        id,
        definition: definition.to_owned(),
        version: 1,
        state: "running".to_owned(),
        input,
        reason: None,
        cancel_requested,
        steps: Vec::new(),
        created_at: "2025-01-01T00:00:00Z".to_owned(),
        updated_at: "2025-01-01T00:00:00Z".to_owned(),
        deadline: None,
        next_attempt_at: None,
    }
}

fn definition(name: &str, version: i32) -> SagaDefinition {
    SagaDefinition {
        name: name.to_owned(),
        version,
        digest: "00".repeat(32),
        created_at: "2025-01-01T00:00:00Z".to_owned(),
        spec: json!({ "name": name }),
    }
}

async fn handle(fake: web::Data<Fake>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body = String::from_utf8(body.to_vec()).unwrap();
    fake.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: request.path().to_owned(),
        query: request.query_string().to_owned(),
        authorization: header(&request, "authorization"),
        idempotency_key: header(&request, "idempotency-key"),
        content_type: header(&request, "content-type"),
        body: body.clone(),
    });
    let segments: Vec<&str> = request.path().trim_matches('/').split('/').collect();
    match (request.method().as_str(), segments.as_slice()) {
        ("PUT", ["v1", "saga-definitions", name]) => {
            if body.contains("bogus") {
                return problem_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_definition",
                    "unknown key bogus",
                );
            }
            let mut definitions = fake.definitions.lock().unwrap();
            let (status, version) = match definitions.get(*name) {
                Some((version, stored)) if *stored == body => (StatusCode::OK, *version),
                Some((version, _)) => (StatusCode::CREATED, version + 1),
                None => (StatusCode::CREATED, 1),
            };
            definitions.insert((*name).to_owned(), (version, body));
            HttpResponse::build(status).json(definition(name, version))
        }
        ("GET", ["v1", "saga-definitions"]) => {
            let definitions = fake.definitions.lock().unwrap();
            let mut list: Vec<SagaDefinitionSummary> = definitions
                .iter()
                .map(|(name, (version, _))| SagaDefinitionSummary {
                    name: name.clone(),
                    latest_version: *version,
                    description: None,
                    steps: 1,
                    updated_at: "2025-01-01T00:00:00Z".to_owned(),
                })
                .collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            HttpResponse::Ok().json(list)
        }
        ("GET", ["v1", "saga-definitions", name]) => {
            match fake.definitions.lock().unwrap().get(*name) {
                Some((version, _)) => HttpResponse::Ok().json(definition(name, *version)),
                None => problem_response(
                    StatusCode::NOT_FOUND,
                    "definition_not_found",
                    "no such definition",
                ),
            }
        }
        ("POST", ["v1", "sagas"]) => {
            let start: StartSaga = serde_json::from_str(&body).unwrap();
            let key = header(&request, "idempotency-key");
            let mut by_key = fake.sagas_by_key.lock().unwrap();
            match key.as_ref().and_then(|k| by_key.get(k)) {
                Some(id) => {
                    HttpResponse::Ok().json(saga(*id, &start.definition, start.input, false))
                }
                None => {
                    let id = Uuid::now_v7();
                    if let Some(key) = key {
                        by_key.insert(key, id);
                    }
                    HttpResponse::Created().json(saga(id, &start.definition, start.input, false))
                }
            }
        }
        ("GET", ["v1", "sagas", id]) => HttpResponse::Ok().json(saga(
            id.parse().unwrap(),
            "order-checkout",
            Value::Null,
            false,
        )),
        ("POST", ["v1", "sagas", id, "cancel"]) => HttpResponse::Accepted().json(saga(
            id.parse().unwrap(),
            "order-checkout",
            Value::Null,
            true,
        )),
        _ => HttpResponse::BadGateway().body("upstream hiccup"),
    }
}

/// Starts the fake coordinator on a free port.
async fn fake_coordinator() -> (SocketAddr, web::Data<Fake>, actix_web::dev::ServerHandle) {
    let fake = web::Data::new(Fake::default());
    let data = fake.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (addr, fake, handle)
}

fn last(fake: &Fake) -> Seen {
    fake.seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a request reached the fake")
}

#[tokio::test]
async fn registers_definitions_and_tells_new_versions_from_unchanged_ones() {
    let (addr, fake, server) = fake_coordinator().await;
    let client = CoordinatorClient::new(format!("http://{addr}/"))
        .unwrap()
        .with_token("t0ken")
        .unwrap();

    let yaml = "name: order-checkout\nsteps: []\n";
    let (first, created) = client
        .register_definition_yaml("order-checkout", yaml)
        .await
        .unwrap();
    assert_eq!((first.version, created), (1, true));
    let seen = last(&fake);
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PUT", "/v1/saga-definitions/order-checkout")
    );
    assert_eq!(seen.content_type.as_deref(), Some("application/yaml"));
    assert_eq!(seen.authorization.as_deref(), Some("Bearer t0ken"));
    assert_eq!(seen.body, yaml);

    let (same, created) = client
        .register_definition_yaml("order-checkout", yaml)
        .await
        .unwrap();
    assert_eq!((same.version, created), (1, false));

    let json = r#"{"name":"order-checkout","steps":[{"name":"a"}]}"#;
    let (next, created) = client
        .register_definition("order-checkout", json, "application/json")
        .await
        .unwrap();
    assert_eq!((next.version, created), (2, true));
    assert_eq!(
        last(&fake).content_type.as_deref(),
        Some("application/json")
    );

    assert_eq!(
        client
            .get_definition("order-checkout")
            .await
            .unwrap()
            .version,
        2
    );
    let list = client.list_definitions().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].latest_version),
        ("order-checkout", 2)
    );
    server.stop(true).await;
}

#[tokio::test]
async fn problem_answers_become_api_errors_with_their_code() {
    let (addr, _fake, server) = fake_coordinator().await;
    let client = CoordinatorClient::new(format!("http://{addr}")).unwrap();

    let invalid = client
        .register_definition_yaml("x", "bogus: 1")
        .await
        .unwrap_err();
    match &invalid {
        Error::Api { status, problem } => {
            assert_eq!(*status, 422);
            assert_eq!(problem.code, "invalid_definition");
            assert_eq!(problem.detail, "unknown key bogus");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let missing = client.get_definition("nope").await.unwrap_err();
    assert_eq!(missing.code(), Some("definition_not_found"));
    server.stop(true).await;
}

#[tokio::test]
async fn non_problem_error_bodies_are_decode_errors() {
    let (addr, _fake, server) = fake_coordinator().await;
    let client = CoordinatorClient::new(format!("http://{addr}/unrouted")).unwrap();
    let error = client.list_definitions().await.unwrap_err();
    match error {
        Error::Decode { status, message } => {
            assert_eq!(status, 502);
            assert!(message.contains("upstream hiccup"), "{message}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    server.stop(true).await;
}

#[tokio::test]
async fn starts_sagas_with_an_idempotency_key_and_a_wait() {
    let (addr, fake, server) = fake_coordinator().await;
    let client = CoordinatorClient::new(format!("http://{addr}")).unwrap();
    let input = json!({ "sku": "widget", "quantity": 2 });

    let (started, created) = client
        .start_saga_created(
            "order-checkout",
            input.clone(),
            Some("order-42"),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(started.input, input);
    let seen = last(&fake);
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/sagas")
    );
    assert_eq!(seen.query, "wait=5000ms");
    assert_eq!(seen.idempotency_key.as_deref(), Some("order-42"));
    assert_eq!(seen.authorization, None);
    let body: StartSaga = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        StartSaga {
            definition: "order-checkout".to_owned(),
            input: input.clone()
        }
    );

    let (again, created) = client
        .start_saga_created("order-checkout", input.clone(), Some("order-42"), None)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, started.id);
    assert_eq!(last(&fake).query, "");

    let unkeyed = client
        .start_saga("order-checkout", input, None, None)
        .await
        .unwrap();
    assert_ne!(unkeyed.id, started.id);
    assert_eq!(last(&fake).idempotency_key, None);
    server.stop(true).await;
}

#[tokio::test]
async fn reads_waits_for_and_cancels_sagas() {
    let (addr, fake, server) = fake_coordinator().await;
    let client = CoordinatorClient::new(format!("http://{addr}")).unwrap();
    let id = Uuid::now_v7();

    assert_eq!(client.get_saga(id).await.unwrap().id, id);
    assert_eq!(last(&fake).path, format!("/v1/sagas/{id}"));

    client
        .wait_saga(id, Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(last(&fake).query, "wait=1500ms");

    let cancelled = client.cancel_saga(id).await.unwrap();
    assert!(cancelled.cancel_requested);
    let seen = last(&fake);
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", format!("/v1/sagas/{id}/cancel").as_str())
    );
    server.stop(true).await;
}

#[tokio::test]
async fn an_unreachable_coordinator_is_an_http_error() {
    // Bind and release a port so nothing listens on it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = CoordinatorClient::new(format!("http://{free}")).unwrap();
    let error = client.get_saga(Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(error, Error::Http(_)), "{error:?}");
}
