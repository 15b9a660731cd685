//! `settle-recovery-bench`: how fast a fresh coordinator finishes what a dead one
//! left. Starts a coordinator process, puts N sagas in flight (their second step
//! answers "in progress" until released), reads the process's RSS, SIGKILLs it,
//! releases the step, starts a fresh coordinator and times until every saga is
//! terminal. Prints numbers; asserts nothing.
//!
//! `cargo build --release -p settle-tests && target/release/settle-recovery-bench --sagas 10000`

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;
use serde_json::json;
use settle_participant::client::CoordinatorClient;
use settle_tests::db::TestDatabase;

struct Args {
    sagas: usize,
    clients: usize,
    lease: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sagas: 10_000,
        clients: 32,
        lease: "3s".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sagas" => args.sagas = value()?.parse().map_err(|e| format!("--sagas: {e}"))?,
            "--clients" => {
                args.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?
            }
            "--lease" => args.lease = value()?,
            _ => {
                return Err(
                    "usage: settle-recovery-bench [--sagas N] [--clients C] [--lease 3s]".into(),
                )
            }
        }
    }
    Ok(args)
}

/// The `settle` program built next to this one.
fn settle_binary() -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("settle-under-test");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p settle-tests`",
        path.display()
    );
    Ok(path)
}

fn spawn_coordinator(
    binary: &std::path::Path,
    db: &str,
    port: u16,
    lease: &str,
    prefix: &str,
) -> anyhow::Result<Child> {
    Ok(Command::new(binary)
        .arg("serve")
        .env("SETTLE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SETTLE__DATABASE__URL", db)
        .env("SETTLE__DATABASE__POOL_SIZE", "16")
        .env("SETTLE__REDIS__KEY_PREFIX", prefix)
        .env("SETTLE__COORDINATOR__LEASE", lease)
        .env("SETTLE__COORDINATOR__RECOVERY_INTERVAL", "100ms")
        .env("SETTLE__COORDINATOR__CLAIM_BATCH", "500")
        .env("SETTLE__COORDINATOR__SAGAS_DIR", "")
        .env("SETTLE__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

async fn ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the coordinator at {base} did not come up")
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args().map_err(|e| anyhow::anyhow!(e))?;
    let binary = settle_binary()?;
    let db = TestDatabase::create().await;
    let prefix = settle_tests::unique("recovery-bench");

    // The participant: every step answers at once, except `hold`, which says
    // "in progress" until released.
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    let server = HttpServer::new(move || {
        let flag = flag.clone();
        App::new().default_service(web::post().to(move |req: actix_web::HttpRequest| {
            let flag = flag.clone();
            async move {
                if req.path() == "/hold" && !flag.load(Ordering::Relaxed) {
                    HttpResponse::Accepted().finish()
                } else {
                    HttpResponse::Ok().json(json!({}))
                }
            }
        }))
    })
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", 0))?;
    let participant = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());

    let port = settle_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = spawn_coordinator(&binary, &db.url, port, &args.lease, &prefix)?;
    ready(&base).await?;
    let client = CoordinatorClient::new(&base)?;
    let definition = json!({
        "name": "held",
        "timeout": "10m",
        "retry": { "max_attempts": 5, "initial_backoff": "50ms", "max_backoff": "300ms" },
        "steps": [
            { "name": "first", "action": { "url": format!("{participant}/first") } },
            { "name": "hold", "action": { "url": format!("{participant}/hold") } },
            { "name": "last", "action": { "url": format!("{participant}/last") } }
        ]
    });
    client
        .register_definition("held", &definition.to_string(), "application/json")
        .await?;

    let started = Instant::now();
    let per_client = args.sagas.div_ceil(args.clients);
    join_all((0..args.clients).map(|c| {
        let client = client.clone();
        let n = per_client.min(args.sagas.saturating_sub(c * per_client));
        async move {
            for _ in 0..n {
                let _ = client.start_saga("held", json!({}), None, None).await;
            }
        }
    }))
    .await;
    let start_elapsed = started.elapsed();
    let in_flight = count(
        &db,
        "SELECT count(*) FROM transactions WHERE state = 'running'",
    )
    .await;
    let rss = rss_mb(first.id());
    first.kill()?;
    first.wait()?;
    released.store(true, Ordering::Relaxed);

    let recovery_started = Instant::now();
    let mut second = spawn_coordinator(
        &binary,
        &db.url,
        settle_tests::free_port(),
        &args.lease,
        &prefix,
    )?;
    let mut terminal;
    loop {
        terminal = count(
            &db,
            "SELECT count(*) FROM transactions WHERE state IN ('completed', 'compensated')",
        )
        .await;
        if terminal >= in_flight || recovery_started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = recovery_started.elapsed();
    println!(
        "recovery sagas={} in_flight_at_kill={in_flight} started_in={:.1}s rss_at_kill={} lease={} recovered_in={:.2}s terminal={terminal}",
        args.sagas,
        start_elapsed.as_secs_f64(),
        rss.map_or("unknown".into(), |mb| format!("{mb:.0}MB")),
        args.lease,
        recovery.as_secs_f64(),
    );
    second.kill()?;
    second.wait()?;
    settle_tests::redis_server::clean_prefix(&prefix).await;
    Ok(())
}
