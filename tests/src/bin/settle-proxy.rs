//! `settle-proxy`: the chaos harness's fault-injecting TCP proxy as a program, for
//! putting between processes by hand. Thin glue over `settle_tests::proxy`.
//!
//! `settle-proxy --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432 --seed 7 --for 60s --gap 2s --max-fault 1s`
//! `settle-proxy --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432 --fault latency:200ms`

use std::net::SocketAddr;
use std::time::Duration;

use settle_tests::proxy::{parse_duration, Fault, Proxy, Schedule};
use tokio::time::Instant;

const USAGE: &str = "usage: settle-proxy --listen 127.0.0.1:P --upstream 127.0.0.1:Q \
    [--seed N] [--for 60s] [--gap 2s] [--max-fault 1s] \
    [--fault none|latency:200ms|drop|reset:100|blackhole]";

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    seed: Option<u64>,
    run_for: Duration,
    gap: Duration,
    max_fault: Duration,
    fault: Option<Fault>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: None,
        run_for: Duration::from_secs(60),
        gap: Duration::from_secs(2),
        max_fault: Duration::from_secs(1),
        fault: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(loopback(&flag, &value()?)?),
            "--upstream" => upstream = Some(loopback(&flag, &value()?)?),
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--for" => {
                args.run_for = parse_duration(&value()?).map_err(|e| format!("--for: {e}"))?
            }
            "--gap" => args.gap = parse_duration(&value()?).map_err(|e| format!("--gap: {e}"))?,
            "--max-fault" => {
                args.max_fault =
                    parse_duration(&value()?).map_err(|e| format!("--max-fault: {e}"))?
            }
            "--fault" => args.fault = Some(value()?.parse().map_err(|e| format!("--fault: {e}"))?),
            _ => return Err(USAGE.into()),
        }
    }
    args.listen = listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?;
    args.upstream = upstream.ok_or_else(|| format!("--upstream is required\n{USAGE}"))?;
    if args.fault.is_some() && args.seed.is_some() {
        return Err("give either --fault or --seed, not both".into());
    }
    Ok(args)
}

/// Only loopback targets are allowed on this workplace; refuse anything else up front.
fn loopback(flag: &str, text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("{flag} {text}: {e} (expected e.g. 127.0.0.1:5432)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{flag} {addr}: not a loopback address; settle-proxy only works on 127.0.0.0/8 and ::1"
        ));
    }
    Ok(addr)
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("settle-proxy: {message}");
            std::process::exit(2);
        }
    };
    let proxy = Proxy::start(args.listen, args.upstream).await?;
    let started = Instant::now();
    println!(
        "proxy listening on {} forwarding to {}",
        proxy.addr(),
        proxy.upstream()
    );

    let mut changes = proxy.watch_fault();
    let printer = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let fault = *changes.borrow_and_update();
            println!("{:>9.3}s fault={fault}", started.elapsed().as_secs_f64());
        }
    });

    // With neither a fixed fault nor a seed, draw a seed and say it, so the run can be replayed.
    let seed = match (args.fault, args.seed) {
        (Some(_), _) => None,
        (None, Some(seed)) => Some(seed),
        (None, None) => Some(rand::random()),
    };
    let schedule = match (args.fault, seed) {
        (Some(fault), _) => {
            proxy.set_fault(fault);
            None
        }
        (None, Some(seed)) => {
            let schedule = Schedule::random(seed, args.run_for, args.gap, args.max_fault);
            println!("seed={seed} steps={}", schedule.steps.len());
            Some(proxy.run_schedule(schedule))
        }
        (None, None) => None,
    };

    tokio::select! {
        _ = tokio::time::sleep(args.run_for) => {}
        _ = terminated() => {}
    }
    if let Some(schedule) = schedule {
        schedule.abort();
    }
    proxy.stop().await;
    printer.abort();
    println!(
        "proxy seed={} connections={} faults={}",
        seed.map_or_else(|| "-".to_string(), |s| s.to_string()),
        proxy.connections(),
        proxy.faults_injected()
    );
    Ok(())
}
