//! The faults of a chaos run, drawn from the seed: network faults on every proxy
//! (each on its own seeded schedule), and one process-level fault at a time —
//! SIGKILL and restart of a coordinator, SIGSTOP past the lease, a Postgres crash or
//! restart, a Redis FLUSHALL or restart, a participant crash and restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settle_tests::proxy::{Fault, Proxy, Schedule};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::world::{World, LEASE};

/// What was injected, for the summary line.
#[derive(Debug, Default)]
pub struct Counts {
    pub kills: AtomicU64,
    pub pauses: AtomicU64,
    pub pg_restarts: AtomicU64,
    /// FLUSHALLs and restarts alike: the throwaway Redis keeps nothing on disk, so
    /// both leave it empty.
    pub redis_flushes: AtomicU64,
    pub net_faults: AtomicU64,
    pub participant_crashes: AtomicU64,
}

impl Counts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts one task per proxy applying its seeded schedule over `duration`, except
/// while its `calm` flag is up. Abort the handles to stop them.
pub fn network_faults(
    world: &World,
    seed: u64,
    duration: Duration,
    counts: &Arc<Counts>,
) -> Vec<JoinHandle<()>> {
    let never_calm = Arc::new(AtomicBool::new(false));
    let mut plans: Vec<(Arc<Proxy>, Arc<AtomicBool>, Duration, Duration)> = Vec::new();
    for proxy in &world.participant_proxies {
        plans.push((
            Arc::clone(proxy),
            Arc::clone(&never_calm),
            Duration::from_secs(4),
            Duration::from_millis(2500),
        ));
    }
    for slot in &world.slots {
        for proxy in [&slot.pg_proxy, &slot.redis_proxy] {
            plans.push((
                Arc::clone(proxy),
                Arc::clone(&slot.calm),
                Duration::from_secs(6),
                Duration::from_millis(1500),
            ));
        }
    }
    plans
        .into_iter()
        .enumerate()
        .map(|(n, (proxy, calm, mean_gap, max_len))| {
            let schedule = Schedule::random(
                seed.wrapping_mul(1_000_003).wrapping_add(n as u64),
                duration,
                mean_gap,
                max_len,
            );
            let counts = Arc::clone(counts);
            tokio::spawn(async move {
                let start = Instant::now();
                for step in schedule.steps {
                    tokio::time::sleep_until(start + step.at).await;
                    if !calm.load(Ordering::SeqCst) {
                        proxy.set_fault(step.fault);
                        Counts::bump(&counts.net_faults);
                    }
                    tokio::time::sleep_until(start + step.at + step.length).await;
                    proxy.set_fault(Fault::None);
                }
            })
        })
        .collect()
}

/// Applies process-level faults one at a time until `deadline`; returns the world.
pub async fn process_faults(
    mut world: World,
    seed: u64,
    deadline: Instant,
    counts: Arc<Counts>,
) -> anyhow::Result<World> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c4a0_5eed_c4a0);
    loop {
        let gap = Duration::from_millis(rng.gen_range(1_000..=4_000));
        if Instant::now() + gap >= deadline {
            break;
        }
        tokio::time::sleep(gap).await;
        let coordinators = world.slots.len();
        match rng.gen_range(0..12) {
            0..=2 => {
                let index = rng.gen_range(0..coordinators);
                world.kill_coordinator(index);
                Counts::bump(&counts.kills);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..=3_000))).await;
                world.start_coordinator(index).await?;
            }
            3..=5 => {
                let index = rng.gen_range(0..coordinators);
                world.pause_coordinator(index);
                Counts::bump(&counts.pauses);
                let past_lease = Duration::from_millis(rng.gen_range(500..=3_000));
                tokio::time::sleep(LEASE + past_lease).await;
                world.resume_coordinator(index);
            }
            6..=7 => {
                if rng.gen_bool(0.5) {
                    world.coordinator_cluster.kill().await;
                } else {
                    world.coordinator_cluster.stop().await;
                }
                Counts::bump(&counts.pg_restarts);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..=2_000))).await;
                world.coordinator_cluster.start_again().await;
            }
            8..=9 => {
                if rng.gen_bool(0.5) {
                    flush_redis(&world.redis.url()).await;
                } else {
                    world.redis.kill();
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(200..=2_000))).await;
                    world.redis.restart().await;
                }
                Counts::bump(&counts.redis_flushes);
            }
            _ => {
                let down = Duration::from_millis(rng.gen_range(0..=2_000));
                match rng.gen_range(0..3) {
                    0 => world.crash_order_participants(down).await?,
                    which => world.crash_bank(which - 1, down).await?,
                }
                Counts::bump(&counts.participant_crashes);
            }
        }
    }
    Ok(world)
}

async fn flush_redis(url: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let _: Result<(), _> = redis::cmd("FLUSHALL").query_async(&mut conn).await;
    }
}
