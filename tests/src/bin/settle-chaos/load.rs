//! The clients of a chaos run: each starts order sagas and bank transfers one after
//! another on a random coordinator, and when a start fails (the coordinator is dead,
//! paused, or cannot reach Postgres) retries it, on any coordinator, with the same
//! `Idempotency-Key` and body until it is accepted, so nothing is lost or doubled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

use crate::world::{account, ACCOUNTS_PER_BANK, SKUS};

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Saga,
    Transfer,
}

/// One start a client made, with the id a coordinator accepted it under, if any did.
#[derive(Debug, Clone)]
pub struct Start {
    pub key: String,
    pub kind: Kind,
    pub accepted: Option<Uuid>,
}

/// What the clients need to know of the world.
#[derive(Clone)]
pub struct Target {
    pub urls: Arc<Mutex<Vec<String>>>,
    /// `POST /prepare`, `/commit`, `/abort` bases of bank a and bank b (through proxies).
    pub banks: [String; 2],
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    pub starts: Vec<Start>,
    /// Answers no correct coordinator gives, e.g. a 422 for a key reused with the
    /// same body.
    pub violations: Vec<String>,
}

/// Runs `clients` clients until `stop_starting`; a start in progress then is still
/// retried until `give_up`.
pub async fn run(
    target: Target,
    clients: usize,
    seed: u64,
    stop_starting: Instant,
    give_up: Instant,
) -> Report {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("building the HTTP client");
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (target, http) = (target.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(client as u64));
            let mut report = Report::default();
            let mut n = 0;
            while Instant::now() < stop_starting {
                n += 1;
                let key = format!("chaos-{seed}-{client}-{n}");
                let (kind, path, body) = if rng.gen_bool(0.6) {
                    (Kind::Saga, "/v1/sagas", saga_input(&mut rng, &key))
                } else {
                    (
                        Kind::Transfer,
                        "/v1/transactions",
                        transfer(&mut rng, &target),
                    )
                };
                let accepted = start(
                    &http,
                    &target,
                    &mut rng,
                    &key,
                    path,
                    &body,
                    give_up,
                    &mut report,
                )
                .await;
                if let Some(id) = accepted {
                    // Pace the client on the outcome, as an order workflow would.
                    let read = if kind == Kind::Saga {
                        "sagas"
                    } else {
                        "transactions"
                    };
                    if let Some(url) = pick(&target, &mut rng) {
                        let _ = http
                            .get(format!("{url}/v1/{read}/{id}?wait=3s"))
                            .send()
                            .await;
                    }
                }
                report.starts.push(Start {
                    key,
                    kind,
                    accepted,
                });
            }
            report
        }));
    }
    let mut all = Report::default();
    for task in tasks {
        if let Ok(report) = task.await {
            all.starts.extend(report.starts);
            all.violations.extend(report.violations);
        }
    }
    all
}

/// Sends the start until a coordinator accepts it (201 new, 200 the same one again)
/// or `give_up` passes.
#[allow(clippy::too_many_arguments)]
async fn start(
    http: &reqwest::Client,
    target: &Target,
    rng: &mut StdRng,
    key: &str,
    path: &str,
    body: &Value,
    give_up: Instant,
    report: &mut Report,
) -> Option<Uuid> {
    while Instant::now() < give_up {
        if let Some(url) = pick(target, rng) {
            let sent = http
                .post(format!("{url}{path}"))
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await;
            if let Ok(response) = sent {
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                match status {
                    200 | 201 => {
                        if let Some(id) = answer["id"].as_str().and_then(|id| id.parse().ok()) {
                            return Some(id);
                        }
                    }
                    // Transient by contract: the coordinator could not serve it now.
                    500..=599 | 429 => {}
                    _ => {
                        report.violations.push(format!(
                            "start {key}: the coordinator answered {status} {answer} to a request it must accept"
                        ));
                        return None;
                    }
                }
            }
        }
        let pause = Duration::from_millis(rng.gen_range(50..=300));
        tokio::time::sleep(pause).await;
    }
    None
}

fn pick(target: &Target, rng: &mut StdRng) -> Option<String> {
    let urls = target.urls.lock().unwrap_or_else(|p| p.into_inner());
    (!urls.is_empty()).then(|| urls[rng.gen_range(0..urls.len())].clone())
}

/// An order; one in ten is over the card limit, so payments declines it and the
/// saga compensates the reservation.
fn saga_input(rng: &mut StdRng, key: &str) -> Value {
    let amount = if rng.gen_bool(0.1) {
        rng.gen_range(1_001..=2_000)
    } else {
        rng.gen_range(1..=999)
    };
    json!({
        "definition": settle_examples::ORDER_CHECKOUT,
        "input": {
            "sku": SKUS[rng.gen_range(0..SKUS.len())],
            "quantity": rng.gen_range(1..=5),
            "amount": f64::from(amount),
            // The charge is recorded under the customer: one charge per key at most.
            "customer": key,
        },
    })
}

/// A transfer between an account at bank a and one at bank b, either way; one in
/// ten asks for more than any account can hold, so the debit votes no and the
/// transaction aborts.
fn transfer(rng: &mut StdRng, target: &Target) -> Value {
    let from = rng.gen_range(0..2);
    let to = 1 - from;
    let amount: i64 = if rng.gen_bool(0.1) {
        1_000_000
    } else {
        rng.gen_range(1..=200)
    };
    let branch = |name: &str, bank: usize, account_index: usize, delta: i64| {
        let base = &target.banks[bank];
        json!({
            "name": name,
            "prepare_url": format!("{base}/prepare"),
            "commit_url": format!("{base}/commit"),
            "abort_url": format!("{base}/abort"),
            "payload": { "account": account(bank, account_index), "delta": delta },
        })
    };
    let debit = branch("debit", from, rng.gen_range(0..ACCOUNTS_PER_BANK), -amount);
    let credit = branch("credit", to, rng.gen_range(0..ACCOUNTS_PER_BANK), amount);
    json!({ "participants": [debit, credit], "timeout": "10s" })
}
