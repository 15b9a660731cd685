//! `settle-bench`: runs N three-step sagas (or, with `--twopc`, N one-shot 2PC
//! transactions) from C closed-loop clients against a coordinator on a fresh
//! database, and prints one line of throughput and latency percentiles.
//! Participants are either instant (`--participants instant`, the default: every
//! call answers `200 {}` at once, so the coordinator is what is measured) or the
//! example order services with their own Postgres barriers (`--participants example`).
//! The coordinator runs in this process or, with `--coordinator process`, as a
//! `settle serve` process of its own. Numbers, never assertions; docs/PERFORMANCE.md
//! says how to read them.
//!
//! `cargo run --release -p settle-tests --bin settle-bench -- --sagas 5000 --clients 32`
//!
//! `settle-bench --pgbench-script` prints Settle's own statements for one saga as a
//! pgbench script instead (`settle_tests::pgbench_script`), to be run under the
//! planner settings of the writer's sessions, which `settle-bench --writer-options`
//! prints (for `PGOPTIONS`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::json;
use settle_coordinator::app::{Application, Handle};
use settle_participant::api::{NewBranch, NewTransaction};
use settle_participant::client::CoordinatorClient;
use settle_participant::protocol::{IDEMPOTENCY_KEY_HEADER, TRACEPARENT_HEADER};
use settle_tests::coordinator::{test_settings, CoordinatorProcess};
use settle_tests::db::TestDatabase;

const USAGE: &str = "usage: settle-bench [--sagas N] [--clients C] [--warmup N] \
[--participants instant|example] [--coordinator in-process|process] [--twopc] \
[--per-step-overhead] [--rss] [--history N] [--redis URL] [--callgrind FILE]\n       settle-bench --pgbench-script   (prints Settle's own statements as a pgbench script)
       settle-bench --writer-options   (prints the writer sessions' planner settings, for PGOPTIONS)
       settle-bench --statement write|create   (prints the writer's statement, for psql: bench/admin_million.sql)";

/// How long a client lets the coordinator hold a `?wait=` request.
const WAIT: Duration = Duration::from_secs(30);

struct Args {
    sagas: usize,
    clients: usize,
    warmup: usize,
    redis: String,
    instant: bool,
    process: bool,
    twopc: bool,
    per_step_overhead: bool,
    rss: bool,
    /// Finished sagas (two events each) put in the tables before the run.
    history: usize,
    /// Run the coordinator process under callgrind, counting its instructions
    /// over the measured sagas only, and write the profile to this file.
    callgrind: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sagas: 5000,
        clients: 32,
        warmup: 200,
        redis: settle_tests::redis_server::SHARED.to_string(),
        instant: true,
        process: false,
        twopc: false,
        per_step_overhead: false,
        rss: false,
        history: 0,
        callgrind: None,
    };
    let mut clients_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let count = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--sagas" => args.sagas = count(value()?)?,
            "--clients" => {
                args.clients = count(value()?)?;
                clients_given = true;
            }
            "--warmup" => args.warmup = count(value()?)?,
            "--redis" => args.redis = value()?,
            "--participants" => {
                args.instant = match value()?.as_str() {
                    "instant" => true,
                    "example" => false,
                    other => {
                        return Err(format!("--participants: instant or example, not {other}"))
                    }
                }
            }
            "--coordinator" => {
                args.process = match value()?.as_str() {
                    "in-process" => false,
                    "process" => true,
                    other => {
                        return Err(format!("--coordinator: in-process or process, not {other}"))
                    }
                }
            }
            "--twopc" => args.twopc = true,
            "--per-step-overhead" => args.per_step_overhead = true,
            "--rss" => args.rss = true,
            "--history" => args.history = count(value()?)?,
            "--callgrind" => {
                args.callgrind = Some(value()?);
                args.process = true;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.per_step_overhead {
        // The formula subtracts an unloaded participant round trip: it only holds
        // when nothing else queues in front of the saga.
        if clients_given && args.clients != 1 {
            return Err("--per-step-overhead measures one client: drop --clients or use 1".into());
        }
        args.clients = 1;
        if args.twopc || !args.instant {
            return Err("--per-step-overhead needs sagas with --participants instant".into());
        }
    }
    if args.history > 0 && args.twopc {
        return Err(
            "--history fills the tables with finished sagas: use it without --twopc".into(),
        );
    }
    if args.twopc && !args.instant {
        return Err("--twopc runs against instant participants only".into());
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

/// The coordinator under measurement.
enum Coordinator {
    InProcess {
        handle: Handle,
        redis_prefix: String,
    },
    Process(Box<CoordinatorProcess>, String),
}

impl Coordinator {
    async fn start(args: &Args, db: &TestDatabase) -> anyhow::Result<(Coordinator, String)> {
        let mut settings = test_settings(&db.url, &args.redis);
        let redis_prefix = settings.redis.key_prefix.clone();
        if args.process {
            let me = std::env::current_exe()?;
            let binary = me.with_file_name("settle-under-test");
            anyhow::ensure!(
                binary.exists(),
                "{} is missing: cargo build --release -p settle-tests --bin settle-under-test",
                binary.display()
            );
            // The same settings as in process: a long lease so no renewal races the
            // run, a pool as large as the in-process one, quiet logs.
            let out_file = args
                .callgrind
                .as_ref()
                .map(|file| format!("--callgrind-out-file={file}"));
            let runner: Vec<&str> = match &out_file {
                Some(out_file) => vec!["valgrind", "--tool=callgrind", out_file],
                None => vec![],
            };
            let process = CoordinatorProcess::spawn_under(
                &runner,
                &binary.to_string_lossy(),
                &db.url,
                &args.redis,
                &redis_prefix,
                &[
                    ("SETTLE__COORDINATOR__LEASE", "15s"),
                    ("SETTLE__DATABASE__POOL_SIZE", "32"),
                    ("SETTLE__LOG__LEVEL", "warn"),
                ],
            )
            .await;
            let base = process.base_url.clone();
            return Ok((Coordinator::Process(Box::new(process), redis_prefix), base));
        }
        settings.coordinator.lease = Duration::from_secs(15);
        settings.database.pool_size = 32;
        settings.log.level = "warn".into();
        let app = Application::build(settings).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Ok((
            Coordinator::InProcess {
                handle,
                redis_prefix,
            },
            base,
        ))
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Coordinator::InProcess { .. } => None,
            Coordinator::Process(process, _) => Some(process.pid()),
        }
    }

    async fn stop(self) {
        let prefix = match self {
            Coordinator::InProcess {
                handle,
                redis_prefix,
            } => {
                handle.stop().await;
                redis_prefix
            }
            Coordinator::Process(mut process, redis_prefix) => {
                process.signal("TERM");
                if !process.wait_exit(Duration::from_secs(10)).await {
                    eprintln!(
                        "settle did not exit cleanly; log: {}",
                        process.log.display()
                    );
                }
                redis_prefix
            }
        };
        settle_tests::redis_server::clean_prefix(&prefix).await;
    }
}

/// One unit of work (a saga or a 2PC transaction, started and waited for): the
/// state it ended in, or why it did not.
type Op = Arc<dyn Fn(usize) -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

struct Load {
    latencies: Vec<Duration>,
    elapsed: Duration,
    succeeded: usize,
    other: usize,
    first_other: Option<String>,
}

/// Runs `total` ops from `clients` closed-loop clients, op numbers `first..first+total`.
async fn run_load(clients: usize, first: usize, total: usize, success: &str, op: Op) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, op, success) = (next.clone(), op.clone(), success.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut succeeded, mut other, mut first_other) = (0, 0, None);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    let outcome = op(first + i).await;
                    latencies.push(t.elapsed());
                    match outcome {
                        Ok(state) if state == success => succeeded += 1,
                        not => {
                            other += 1;
                            first_other.get_or_insert(match not {
                                Ok(state) => format!("ended {state}"),
                                Err(e) => e,
                            });
                        }
                    }
                }
                (latencies, succeeded, other, first_other)
            })
        })
        .collect();
    let mut load = Load {
        latencies: Vec::with_capacity(total),
        elapsed: Duration::ZERO,
        succeeded: 0,
        other: 0,
        first_other: None,
    };
    for worker in workers {
        let (latencies, succeeded, other, first_other) = worker.await.expect("a bench client");
        load.latencies.extend(latencies);
        load.succeeded += succeeded;
        load.other += other;
        if load.first_other.is_none() {
            load.first_other = first_other;
        }
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}

/// Registers the 3-step saga and returns the op that starts one and waits for its end.
async fn saga_op(
    client: &CoordinatorClient,
    participants: &Participants,
) -> anyhow::Result<(Op, &'static str)> {
    let definition = match participants {
        Participants::Instant(url) => {
            let step = |name: &str| {
                json!({ "name": name, "action": { "url": format!("{url}/{name}") },
                        "compensation": { "url": format!("{url}/{name}/undo") } })
            };
            json!({ "name": "order-checkout", "steps": [step("a"), step("b"), step("c")] })
                .to_string()
        }
        Participants::Example(services) => services.order_checkout_definition(),
    };
    client
        .register_definition("order-checkout", &definition, "application/json")
        .await?;
    let client = client.clone();
    let op: Op = Arc::new(move |i| {
        let client = client.clone();
        Box::pin(async move {
            let input = json!({ "sku": "widget", "quantity": 1, "amount": 10, "customer": format!("bench-{i}") });
            client
                .start_saga("order-checkout", input, None, Some(WAIT))
                .await
                .map(|saga| saga.state)
                .map_err(|e| e.to_string())
        })
    });
    Ok((op, "completed"))
}

/// The op that creates a one-shot 2PC transaction over two instant participants and
/// waits for its end: the two calls `CoordinatorClient` offers for it.
fn twopc_op(client: &CoordinatorClient, url: &str) -> (Op, &'static str) {
    let branch = |name: &str| NewBranch {
        name: name.to_owned(),
        prepare_url: Some(format!("{url}/{name}/prepare")),
        commit_url: format!("{url}/{name}/commit"),
        abort_url: format!("{url}/{name}/abort"),
        payload: Some(json!({ "account": name, "delta": 10 })),
    };
    let transaction = Arc::new(NewTransaction {
        participants: Some(vec![branch("debit"), branch("credit")]),
        timeout: Some("30s".to_owned()),
    });
    let client = client.clone();
    let op: Op = Arc::new(move |_| {
        let (client, transaction) = (client.clone(), transaction.clone());
        Box::pin(async move {
            let created = client
                .create_transaction(&transaction)
                .await
                .map_err(|e| e.to_string())?;
            client
                .wait_transaction(created.id, WAIT)
                .await
                .map(|t| t.state)
                .map_err(|e| e.to_string())
        })
    });
    (op, "committed")
}

/// Round trips of direct POSTs to the instant participant, one at a time, with the
/// HTTP client settings and headers the coordinator uses for its calls: the part of
/// a step's latency that is the participant's and the loopback's, not Settle's.
async fn participant_round_trips(url: &str, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()?;
    let body = json!({ "transaction_id": uuid::Uuid::now_v7(), "step": "a", "attempt": 1,
        "input": { "sku": "widget", "quantity": 1, "amount": 10, "customer": "bench" } })
    .to_string();
    let traceparent = format!("00-{}-00f067aa0ba902b7-01", uuid::Uuid::now_v7().simple());
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls {
        let t = Instant::now();
        let response = http
            .post(format!("{url}/a"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, format!("bench-{i}"))
            .header(TRACEPARENT_HEADER, traceparent.as_str())
            .body(body.clone())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "participant answered {}",
            response.status()
        );
        response.bytes().await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

/// Fills the tables with `n` finished order-checkout sagas spread over 30 days, two
/// events each, as months of history would, then updates the planner's statistics.
async fn preload_history(db: &TestDatabase, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = db.client().await;
    let n = i64::try_from(n)?;
    client
        .execute(
            "INSERT INTO transactions (id, kind, definition, version, state, input, progress,
                                       request_digest, lease_until, fence, created_at, updated_at)
             SELECT gen_random_uuid(), 'saga', 'order-checkout', 1, 'completed',
                    '{\"sku\":\"widget\",\"quantity\":1,\"amount\":10,\"customer\":\"history\"}',
                    '{\"steps\":{\"a\":{\"state\":\"succeeded\",\"attempt\":1,\"output\":{}},\"b\":{\"state\":\"succeeded\",\"attempt\":1,\"output\":{}},\"c\":{\"state\":\"succeeded\",\"attempt\":1,\"output\":{}}}}',
                    'history', now() - interval '30 days', 1, ts, ts + interval '40 milliseconds'
               FROM generate_series(1, $1::bigint) g,
                    LATERAL (SELECT now() - interval '30 days' + g * (interval '30 days' / $1::bigint) AS ts) t",
            &[&n],
        )
        .await?;
    client
        .execute(
            "INSERT INTO events (transaction_id, at, kind, actor)
             SELECT t.id, t.created_at, e.kind, 'history'
               FROM transactions t, (VALUES ('started'), ('completed')) e(kind)
              WHERE t.request_digest = 'history'",
            &[],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE transactions").await?;
    client.batch_execute("VACUUM ANALYZE events").await?;
    // Flush the load's dirty pages now rather than in a checkpoint during the run.
    client.batch_execute("CHECKPOINT").await?;
    Ok(started.elapsed())
}

/// Runs `callgrind_control <action> <pid>` (`--zero` after the warm-up, `--dump`
/// after the measured sagas).
fn callgrind_control(action: &str, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("callgrind_control")
        .args([action, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "callgrind_control {action} {pid}: {status}"
    );
    Ok(())
}

/// The instruction total of the newest profile part callgrind dumped for `pid`
/// (`<file>.<part>`), the counts since the last `--zero`, and that part's path.
fn dumped_instructions(file: &str, pid: u32) -> anyhow::Result<(u64, std::path::PathBuf)> {
    let path = std::path::Path::new(file);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("--callgrind {file}: not a file name"))?;
    let newest = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{name}.")))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow::anyhow!("callgrind wrote no dump next to {file} (pid {pid})"))?;
    let text = std::fs::read_to_string(&newest)?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: no instruction total", newest.display()))?;
    Ok((total, newest))
}

/// Peak resident set size (`VmHWM`) of a process, in MB.
fn peak_rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

enum Participants {
    Instant(String),
    Example(settle_examples::Participants),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The printing modes: text for pgbench and psql, no run.
    let args: Vec<String> = std::env::args().skip(1).take(2).collect();
    let printed = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--pgbench-script", ..] => Some(settle_tests::pgbench_script::settle_statements()),
        ["--writer-options", ..] => Some(settle_coordinator::store::writer_planning_options()),
        ["--statement", "write"] => Some(settle_coordinator::store::batch::WRITE_BATCH.to_string()),
        ["--statement", "create"] => {
            Some(settle_coordinator::store::create::CREATE_BATCH.to_string())
        }
        ["--statement", ..] => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
        _ => None,
    };
    if let Some(text) = printed {
        println!("{}", text.trim());
        return Ok(());
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let db = TestDatabase::create().await;
    let (coordinator, base) = Coordinator::start(&args, &db).await?;
    let client = CoordinatorClient::new(&base)?;
    let participants = if args.instant {
        Participants::Instant(settle_tests::instant::start(None)?)
    } else {
        let pool = db.pool(16);
        settle_examples::setup(&pool).await?;
        Participants::Example(settle_examples::start(pool, "127.0.0.1", [0, 0, 0], None).await?)
    };
    let ((op, success), kind, unit) = match (&participants, args.twopc) {
        (Participants::Instant(url), true) => (twopc_op(&client, url), "twopc", "transactions"),
        _ => (saga_op(&client, &participants).await?, "saga", "sagas"),
    };

    if args.history > 0 {
        let took = preload_history(&db, args.history).await?;
        eprintln!(
            "history: {} finished sagas and {} events loaded in {:.1}s",
            args.history,
            2 * args.history,
            took.as_secs_f64()
        );
    }
    if args.warmup > 0 {
        let warm = run_load(args.clients, args.sagas, args.warmup, success, op.clone()).await;
        if warm.other > 0 {
            eprintln!(
                "warmup: {} of {} did not end {success}; first: {}",
                warm.other,
                args.warmup,
                warm.first_other.unwrap_or_default()
            );
        }
    }
    let counting = match (&args.callgrind, coordinator.pid()) {
        (Some(file), Some(pid)) => {
            callgrind_control("--zero", pid)?;
            Some((file, pid))
        }
        _ => None,
    };
    let load = run_load(args.clients, 0, args.sagas, success, op).await;
    if let Some((file, pid)) = counting {
        callgrind_control("--dump", pid)?;
        let (instructions, profile) = dumped_instructions(file, pid)?;
        println!(
            "instructions coordinator process per {kind}={:.0} (callgrind, user space, {} {unit} from {} clients; {instructions} in all; profile {})",
            instructions as f64 / args.sagas as f64,
            args.sagas,
            args.clients,
            profile.display(),
        );
    }
    let p50 = percentile(&load.latencies, 50.0);
    println!(
        "bench kind={kind} participants={} coordinator={} history={} {unit}={} clients={} elapsed={:.2}s throughput={:.0} {unit}/s p50={p50:.2}ms p99={:.2}ms p999={:.2}ms completed={} other={}",
        if args.instant { "instant" } else { "example" },
        if args.process { "process" } else { "in-process" },
        args.history,
        args.sagas,
        args.clients,
        load.elapsed.as_secs_f64(),
        args.sagas as f64 / load.elapsed.as_secs_f64(),
        percentile(&load.latencies, 99.0),
        percentile(&load.latencies, 99.9),
        load.succeeded,
        load.other,
    );
    if let Some(first) = &load.first_other {
        eprintln!("first of {} not {success}: {first}", load.other);
    }

    if let (true, Participants::Instant(url)) = (args.per_step_overhead, &participants) {
        let trips = participant_round_trips(url, args.sagas * 3).await?;
        let rtt = percentile(&trips, 50.0);
        println!(
            "added latency per step p50={:.2}ms (saga p50 {p50:.2}ms - 3 x participant round trip p50 {rtt:.3}ms, divided by 3; {} direct POSTs)",
            (p50 - 3.0 * rtt) / 3.0,
            trips.len(),
        );
    }
    if args.rss {
        let me = peak_rss_mb("self").unwrap_or(0.0);
        match coordinator.pid().and_then(|pid| peak_rss_mb(&pid.to_string())) {
            Some(settle) => println!(
                "rss peak coordinator process={settle:.0}MB bench process (clients, participants)={me:.0}MB"
            ),
            None => println!(
                "rss peak bench process (coordinator, clients and participants together)={me:.0}MB"
            ),
        }
    }

    coordinator.stop().await;
    if let Participants::Example(services) = participants {
        services.stop().await;
    }
    Ok(())
}
