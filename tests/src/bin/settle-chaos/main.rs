//! `settle-chaos --seed N --duration 60s`: a Jepsen-style run against 2–3 real
//! coordinators — load from many clients, faults from the seed, then ledger checks —
//! ending in one summary line and a non-zero exit on any violation.
//!
//! ```text
//! chaos seed=42 txns=3000 kills=25 pauses=6 pg_restarts=3 redis_flushes=4 net_faults=180 lost=0 duplicated=0 violations=0
//! ```

mod check;
mod load;
mod nemesis;
mod world;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nemesis::Counts;
use settle_tests::proxy::parse_duration;
use tokio::time::Instant;

/// How long clients keep retrying a start that was under way when the load stopped.
const FINISH_STARTS: Duration = Duration::from_secs(30);
/// How long the coordinators get, once every fault is healed, to finish everything.
const QUIESCENCE: Duration = Duration::from_secs(120);

struct Options {
    seed: u64,
    duration: Duration,
    coordinators: usize,
    clients: usize,
}

const USAGE: &str = "usage: settle-chaos --seed N --duration 60s [--coordinators 3] [--clients 12]";

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seed: 42,
        duration: Duration::from_secs(60),
        coordinators: 3,
        clients: 12,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seed" => options.seed = value.parse().context("--seed: not a number")?,
            "--duration" => {
                options.duration = parse_duration(&value).context("--duration")?;
            }
            "--coordinators" => {
                options.coordinators = value.parse().context("--coordinators")?;
                anyhow::ensure!(
                    (2..=3).contains(&options.coordinators),
                    "--coordinators: 2 or 3"
                );
            }
            "--clients" => {
                options.clients = value.parse().context("--clients")?;
                anyhow::ensure!(options.clients > 0, "--clients: at least 1");
            }
            _ => anyhow::bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("starting the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos seed={} could not run: {error:#}", options.seed);
            ExitCode::from(2)
        }
    }
}

/// Runs the whole thing; `Ok(false)` when a check found a violation.
async fn run(options: &Options) -> anyhow::Result<bool> {
    let seed = options.seed;
    let began = Instant::now();
    let phase = |what: &str| eprintln!("chaos: {what} at {:.1}s", began.elapsed().as_secs_f64());
    let world = world::World::build(options.coordinators)
        .await
        .context("setting up")?;
    phase("set up; load and faults start");
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + options.duration;
    let network = nemesis::network_faults(&world, seed, options.duration, &counts);
    let target = load::Target {
        urls: Arc::clone(&world.urls),
        banks: [world.participant_url(3, ""), world.participant_url(4, "")],
    };
    let clients = tokio::spawn(load::run(
        target,
        options.clients,
        seed,
        deadline,
        deadline + FINISH_STARTS,
    ));
    let faults = nemesis::process_faults(world, seed, deadline, Arc::clone(&counts)).await;
    for task in &network {
        task.abort();
    }
    let mut world = faults?;
    phase("faults stop");
    world.heal().await.context("healing every fault")?;
    phase("healed");
    let report = clients.await.context("the clients")?;
    phase("clients done");
    let in_flight = check::quiesce(&world, QUIESCENCE).await?;
    phase("quiescent");
    let mut verdict = check::check(&world, &report.starts).await?;
    if in_flight > 0 {
        verdict.violations.push(format!(
            "{in_flight} transactions still in flight {QUIESCENCE:?} after every fault healed"
        ));
    }
    verdict.violations.extend(report.violations);
    for violation in &verdict.violations {
        eprintln!("violation: {violation}");
    }
    let unconfirmed = report
        .starts
        .iter()
        .filter(|s| s.accepted.is_none())
        .count();
    let states: Vec<String> = verdict
        .states
        .iter()
        .map(|(state, n)| format!("{state}={n}"))
        .collect();
    eprintln!(
        "chaos detail: starts={} unconfirmed_starts={unconfirmed} participant_crashes={} {}",
        report.starts.len(),
        Counts::get(&counts.participant_crashes),
        states.join(" ")
    );
    println!(
        "chaos seed={seed} txns={} kills={} pauses={} pg_restarts={} redis_flushes={} net_faults={} lost={} duplicated={} violations={}",
        verdict.txns,
        Counts::get(&counts.kills),
        Counts::get(&counts.pauses),
        Counts::get(&counts.pg_restarts),
        Counts::get(&counts.redis_flushes),
        Counts::get(&counts.net_faults),
        verdict.lost,
        verdict.duplicated,
        verdict.violations.len()
    );
    world.shut_down().await;
    phase("shut down");
    Ok(verdict.violations.is_empty())
}
