//! `settle-bench`: runs N three-step sagas from C concurrent clients (closed loop,
//! each waiting for its saga's end with `?wait=`) against a coordinator started in
//! this process on a fresh database, and prints throughput and latency percentiles.
//! Participants are either instant (`--participants instant`, the default: every
//! call answers 200 at once, so the coordinator is what is measured) or the example
//! order services with their own Postgres barriers (`--participants example`).
//! Numbers, never assertions.
//!
//! `cargo run --release -p settle-tests --bin settle-bench -- --sagas 5000 --clients 32`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use settle_coordinator::app::Application;
use settle_participant::client::CoordinatorClient;
use settle_tests::coordinator::test_settings;
use settle_tests::db::TestDatabase;

struct Args {
    sagas: usize,
    clients: usize,
    redis: String,
    instant: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sagas: 5000,
        clients: 32,
        redis: settle_tests::redis_server::SHARED.to_string(),
        instant: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sagas" => args.sagas = value()?.parse().map_err(|e| format!("--sagas: {e}"))?,
            "--clients" => {
                args.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?
            }
            "--redis" => args.redis = value()?,
            "--participants" => {
                args.instant = match value()?.as_str() {
                    "instant" => true,
                    "example" => false,
                    other => return Err(format!("--participants: instant or example, not {other}")),
                }
            }
            "-h" | "--help" => {
                return Err("usage: settle-bench [--sagas N] [--clients C] [--participants instant|example] [--redis URL]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.sagas == 0 || args.clients == 0 {
        return Err("--sagas and --clients must be positive".into());
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// A participant that answers every call with `200 {}` at once, on a port of its own.
fn instant_participant() -> anyhow::Result<String> {
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body("{}")
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))?;
    let url = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args().map_err(|e| anyhow::anyhow!(e))?;
    let db = TestDatabase::create().await;
    let mut settings = test_settings(&db.url, &args.redis);
    settings.coordinator.lease = Duration::from_secs(15);
    settings.database.pool_size = 32;
    settings.log.level = "warn".into();
    let app = Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = CoordinatorClient::new(&base)?;
    let (definition, example) = if args.instant {
        let url = instant_participant()?;
        let step = |name: &str| {
            json!({ "name": name, "action": { "url": format!("{url}/{name}") },
                    "compensation": { "url": format!("{url}/{name}/undo") } })
        };
        let definition =
            json!({ "name": "order-checkout", "steps": [step("a"), step("b"), step("c")] });
        (definition.to_string(), None)
    } else {
        let pool = db.pool(16);
        settle_examples::setup(&pool).await?;
        let participants = settle_examples::start(pool, "127.0.0.1", [0, 0, 0], None).await?;
        (participants.order_checkout_definition(), Some(participants))
    };
    client
        .register_definition("order-checkout", &definition, "application/json")
        .await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let total = args.sagas;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut outcomes = (0usize, 0usize, 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    let saga = client
                        .start_saga(
                            "order-checkout",
                            json!({ "sku": "widget", "quantity": 1, "amount": 10, "customer": format!("bench-{i}") }),
                            None,
                            Some(Duration::from_secs(30)),
                        )
                        .await;
                    latencies.push(t.elapsed());
                    match saga.as_ref().map(|s| s.state.as_str()) {
                        Ok("completed") => outcomes.0 += 1,
                        Ok("compensated") => outcomes.1 += 1,
                        _ => outcomes.2 += 1,
                    }
                }
                (latencies, outcomes)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.sagas);
    let (mut completed, mut compensated, mut other) = (0, 0, 0);
    for w in workers {
        let (l, (a, b, c)) = w.await?;
        latencies.extend(l);
        completed += a;
        compensated += b;
        other += c;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "bench participants={} sagas={} clients={} elapsed={:.2}s throughput={:.0} sagas/s p50={:.1}ms p99={:.1}ms p999={:.1}ms completed={completed} compensated={compensated} other={other}",
        if args.instant { "instant" } else { "example" },
        args.sagas,
        args.clients,
        elapsed.as_secs_f64(),
        args.sagas as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
    );
    handle.stop().await;
    if let Some(participants) = example {
        participants.stop().await;
    }
    Ok(())
}
