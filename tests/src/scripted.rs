//! A real HTTP participant whose answers a test scripts per path (status, body,
//! delay) and which records every call it receives, for asserting on order,
//! attempts, idempotency keys and the bodies the coordinator sent.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use settle_participant::protocol::{BranchCall, CallRequest};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
    /// A `Location` header, for redirects.
    pub location: Option<String>,
}

impl Answer {
    pub fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body,
            delay: Duration::ZERO,
            location: None,
        }
    }
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            body: json!({ "detail": format!("scripted {status}") }),
            delay: Duration::ZERO,
            location: None,
        }
    }
    /// A redirect (`status` 301/302/307/308) to `url`.
    pub fn redirect(status: u16, url: impl Into<String>) -> Answer {
        Answer {
            location: Some(url.into()),
            ..Answer::status(status)
        }
    }
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// A call as the participant received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// The JSON body as sent.
    pub body: Value,
    /// The body's bytes, exactly as they arrived (what a signature covers).
    pub raw_body: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub signature: Option<String>,
    pub started: Instant,
    pub finished: Option<Instant>,
}

impl Received {
    /// The body as a saga step call (panics if it is not one: a test failure).
    pub fn saga_call(&self) -> CallRequest {
        serde_json::from_value(self.body.clone()).expect("a saga step call")
    }

    /// The body as a 2PC / TCC branch call.
    pub fn branch_call(&self) -> BranchCall {
        serde_json::from_value(self.body.clone()).expect("a branch call")
    }
}

#[derive(Default)]
struct Script {
    queued: HashMap<String, VecDeque<Answer>>,
    defaults: HashMap<String, Answer>,
    calls: Vec<Received>,
}

pub struct ScriptedParticipant {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    handle: actix_web::dev::ServerHandle,
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    script: web::Data<Arc<Mutex<Script>>>,
) -> HttpResponse {
    let path = req.path().to_string();
    let raw_body = body.to_vec();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({ "detail": "not a JSON body" }));
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (answer, index) = {
        let mut s = script.lock().unwrap();
        let answer = s
            .queued
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.defaults.get(&path).cloned())
            .unwrap_or_else(|| Answer::ok(json!({})));
        s.calls.push(Received {
            path: path.clone(),
            body,
            raw_body,
            idempotency_key: header("Idempotency-Key"),
            traceparent: header("traceparent"),
            tracestate: header("tracestate"),
            signature: header("Settle-Signature"),
            started: Instant::now(),
            finished: None,
        });
        (answer, s.calls.len() - 1)
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    script.lock().unwrap().calls[index].finished = Some(Instant::now());
    let status = actix_web::http::StatusCode::from_u16(answer.status).expect("scripted status");
    let mut response = HttpResponse::build(status);
    if let Some(location) = &answer.location {
        response.insert_header((actix_web::http::header::LOCATION, location.as_str()));
    }
    response.json(answer.body)
}

impl ScriptedParticipant {
    pub async fn start() -> ScriptedParticipant {
        Self::start_on(0).await
    }

    /// On a given port (0: any), e.g. to bring back a participant that was away.
    pub async fn start_on(port: u16) -> ScriptedParticipant {
        let script = Arc::new(Mutex::new(Script::default()));
        let data = web::Data::new(script.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                .default_service(web::post().to(answer))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("binding the scripted participant");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        ScriptedParticipant {
            addr,
            script,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers for the next calls to `path`, in order; then the default.
    pub fn push(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut s = self.script.lock().unwrap();
        s.queued
            .entry(path.to_string())
            .or_default()
            .extend(answers);
    }

    /// The answer once the queue for `path` is empty (200 `{}` unless set).
    pub fn set_default(&self, path: &str, answer: Answer) {
        self.script
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_string(), answer);
    }

    pub fn calls(&self) -> Vec<Received> {
        self.script.lock().unwrap().calls.clone()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Received> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
