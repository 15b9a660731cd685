//! The end of a chaos run: wait (bounded) until no transaction is left in flight,
//! then hold what the coordinators recorded against the participants' own ledgers —
//! the example order tables and the banks' XA outcome tables and balances.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::load::{Kind, Start};
use crate::world::{World, ACCOUNTS_PER_BANK, OPENING_BALANCE, POLL, SEED_STOCK, SKUS};

/// States a transaction still moves out of by itself. A stuck 2PC transaction keeps
/// retrying phase two, so it counts as in flight; a stuck saga waits for an operator.
const IN_FLIGHT: &str =
    "state IN ('running', 'compensating', 'active', 'preparing', 'committing', 'aborting')
    OR (kind = 'twopc' AND state = 'stuck')";

/// What the checks found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub txns: u64,
    /// How many transactions ended in each state, e.g. `completed=120`.
    pub states: std::collections::BTreeMap<String, u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub violations: Vec<String>,
}

/// One row of the coordinators' `transactions` table.
struct Recorded {
    id: Uuid,
    kind: String,
    state: String,
    reason: Option<String>,
}

/// Waits until nothing is in flight or `timeout` passes; returns how many still are.
pub async fn quiesce(world: &World, timeout: Duration) -> anyhow::Result<i64> {
    let deadline = Instant::now() + timeout;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    loop {
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            report_in_flight(world).await;
        }
        let in_flight = match connect(&world.coordinator_db_url()).await {
            Ok(db) => db
                .query_one(
                    &format!("SELECT count(*) FROM transactions WHERE {IN_FLIGHT}"),
                    &[],
                )
                .await
                .map(|row| row.get::<_, i64>(0))
                .ok(),
            Err(_) => None,
        };
        match in_flight {
            Some(0) => return Ok(0),
            Some(n) if Instant::now() >= deadline => return Ok(n),
            None if Instant::now() >= deadline => {
                anyhow::bail!("the coordinators' database did not answer")
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// Prints what is still in flight, so a slow quiescence can be read from the log.
async fn report_in_flight(world: &World) {
    let Ok(db) = connect(&world.coordinator_db_url()).await else {
        return;
    };
    let sql = format!(
        "SELECT id::text, kind, state, coalesce(owner, '-'), \
                coalesce(to_char(next_attempt_at - now(), 'SS.MS'), '-'), \
                coalesce(to_char(lease_until - now(), 'SS.MS'), '-') \
         FROM transactions WHERE {IN_FLIGHT} LIMIT 5"
    );
    let Ok(rows) = db.query(&sql, &[]).await else {
        return;
    };
    for row in &rows {
        let cells: Vec<String> = (0..6).map(|i| row.get::<_, String>(i)).collect();
        eprintln!("chaos: still in flight: {}", cells.join(" "));
    }
    for (index, pool) in world.bank_pools.iter().enumerate() {
        eprintln!("chaos:   bank {index} pool {:?}", pool.status());
    }
    if let Ok(bank) = connect(&world.bank_cluster_url()).await {
        let activity = bank
            .query(
                "SELECT datname::text, coalesce(state, '-'), coalesce(wait_event_type, '-'),
                        left(query, 70), coalesce(to_char(now() - xact_start, 'SS.MS'), '-')
                 FROM pg_stat_activity WHERE datname LIKE 'bank%'",
                &[],
            )
            .await;
        for row in activity.unwrap_or_default() {
            let cells: Vec<String> = (0..5).map(|i| row.get::<_, String>(i)).collect();
            eprintln!("chaos:   bank session {}", cells.join(" | "));
        }
    }
    let Some(first) = rows.first() else {
        return;
    };
    let id: String = first.get(0);
    let events = db
        .query(
            "SELECT to_char(at, 'HH24:MI:SS.MS'), kind, coalesce(step, '-'), coalesce(phase, '-'),
                    coalesce(status_code, 0), coalesce(error, '-'), actor
             FROM events WHERE transaction_id = $1::text::uuid ORDER BY id DESC LIMIT 6",
            &[&id],
        )
        .await;
    for row in events.unwrap_or_default() {
        eprintln!(
            "chaos:   {id} event {} {} {} {} {} {} by {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
            row.get::<_, i32>(4),
            row.get::<_, String>(5),
            row.get::<_, String>(6)
        );
    }
}

pub async fn check(world: &World, starts: &[Start]) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();
    let coordinator = connect(&world.coordinator_db_url()).await?;
    let mut by_key: HashMap<String, Recorded> = HashMap::new();
    for row in coordinator
        .query(
            "SELECT idempotency_key, id, kind, state, reason FROM transactions
             WHERE idempotency_key LIKE 'chaos-%'",
            &[],
        )
        .await
        .context("reading the coordinators' transactions")?
    {
        by_key.insert(
            row.get(0),
            Recorded {
                id: row.get(1),
                kind: row.get(2),
                state: row.get(3),
                reason: row.get(4),
            },
        );
    }
    verdict.txns = by_key.len() as u64;
    let known: HashMap<Uuid, &Recorded> = by_key.values().map(|r| (r.id, r)).collect();

    // Every accepted start is recorded under its key, as the id the client was given.
    for start in starts {
        match (start.accepted, by_key.get(&start.key)) {
            (Some(id), Some(recorded)) if recorded.id == id => {}
            (Some(id), Some(recorded)) => {
                verdict.duplicated += 1;
                verdict.violations.push(format!(
                    "{}: accepted as {id} but recorded as {}",
                    start.key, recorded.id
                ));
            }
            (Some(id), None) => {
                verdict.lost += 1;
                verdict
                    .violations
                    .push(format!("{}: accepted as {id} but not recorded", start.key));
            }
            (None, _) => {}
        }
        if let Some(recorded) = by_key.get(&start.key) {
            let expected = match start.kind {
                Kind::Saga => "saga",
                Kind::Transfer => "twopc",
            };
            if recorded.kind != expected {
                verdict.violations.push(format!(
                    "{}: recorded as a {} but started as a {expected}",
                    start.key, recorded.kind
                ));
            }
        }
    }

    for recorded in by_key.values() {
        *verdict.states.entry(recorded.state.clone()).or_default() += 1;
        let terminal = matches!(
            recorded.state.as_str(),
            "completed" | "compensated" | "committed" | "aborted"
        );
        if !terminal {
            // The harness injects no permanent failure: every fault heals, so
            // nothing may be left stuck or in flight.
            verdict.violations.push(format!(
                "{} ({}) ended {} ({}), though every injected fault healed",
                recorded.id,
                recorded.kind,
                recorded.state,
                recorded.reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }

    // Events carry no foreign key (migration 0008): every statement that adds
    // them must add them for a transaction it has just written or locked.
    let orphans: i64 = coordinator
        .query_one(
            "SELECT count(*) FROM events e
              WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = e.transaction_id)",
            &[],
        )
        .await
        .context("reading the coordinators' events")?
        .get(0);
    if orphans != 0 {
        verdict.violations.push(format!(
            "{orphans} timeline events belong to no transaction"
        ));
    }

    check_orders(world, &known, &mut verdict).await?;
    check_banks(world, &known, &mut verdict).await?;
    Ok(verdict)
}

/// One applied action of the order saga and how often it was compensated.
struct Applied {
    participant: &'static str,
    transaction_id: Uuid,
    compensations: i32,
}

async fn check_orders(
    world: &World,
    known: &HashMap<Uuid, &Recorded>,
    verdict: &mut Verdict,
) -> anyhow::Result<()> {
    let orders = world.orders_pool.get().await?;
    let mut applied: Vec<Applied> = Vec::new();
    for (participant, sql) in [
        (
            "inventory",
            "SELECT transaction_id, releases FROM inventory.reservations",
        ),
        (
            "payments",
            "SELECT transaction_id, refunds FROM payments.charges",
        ),
        (
            "shipping",
            "SELECT transaction_id, cancellations FROM shipping.shipments",
        ),
    ] {
        for row in orders.query(sql, &[]).await? {
            applied.push(Applied {
                participant,
                transaction_id: row.get(0),
                compensations: row.get(1),
            });
        }
    }
    let mut per_saga: HashMap<Uuid, Vec<&Applied>> = HashMap::new();
    for effect in &applied {
        if effect.compensations > 1 {
            verdict.duplicated += 1;
            verdict.violations.push(format!(
                "{} at {}: compensated {} times",
                effect.transaction_id, effect.participant, effect.compensations
            ));
        }
        match known.get(&effect.transaction_id) {
            None => {
                verdict.lost += 1;
                verdict.violations.push(format!(
                    "{} at {}: an effect of a transaction the coordinators have no record of",
                    effect.transaction_id, effect.participant
                ));
            }
            Some(_) => per_saga
                .entry(effect.transaction_id)
                .or_default()
                .push(effect),
        }
    }
    for recorded in known.values().filter(|r| r.kind == "saga") {
        let effects = per_saga.remove(&recorded.id).unwrap_or_default();
        let consistent = match recorded.state.as_str() {
            "completed" => effects.len() == 3 && effects.iter().all(|e| e.compensations == 0),
            "compensated" => effects.iter().all(|e| e.compensations == 1),
            _ => true,
        };
        if !consistent {
            verdict.violations.push(format!(
                "{} {}, but its ledgers hold {}",
                recorded.id,
                recorded.state,
                describe(&effects)
            ));
        }
    }

    // One charge per order: the customer is the order's idempotency key.
    for row in orders
        .query(
            "SELECT customer, count(*) FROM payments.charges GROUP BY customer HAVING count(*) > 1",
            &[],
        )
        .await?
    {
        let (customer, count): (String, i64) = (row.get(0), row.get(1));
        verdict.duplicated += 1;
        verdict
            .violations
            .push(format!("order {customer} was charged {count} times"));
    }

    // Stock moved exactly by the reservations that were kept.
    for sku in SKUS {
        let row = orders
            .query_one(
                "SELECT (SELECT available FROM inventory.stock WHERE sku = $1),
                        (SELECT coalesce(sum(quantity), 0)::bigint FROM inventory.reservations
                         WHERE sku = $1 AND NOT released)",
                &[&sku],
            )
            .await?;
        let (available, kept): (i64, i64) = (row.get(0), row.get(1));
        if available != SEED_STOCK - kept {
            verdict.violations.push(format!(
                "{sku}: {available} in stock, but {SEED_STOCK} less the {kept} kept is {}",
                SEED_STOCK - kept
            ));
        }
    }
    Ok(())
}

fn describe(effects: &[&Applied]) -> String {
    if effects.is_empty() {
        return "nothing".to_owned();
    }
    effects
        .iter()
        .map(|e| format!("{} (compensated {}x)", e.participant, e.compensations))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn check_banks(
    world: &World,
    known: &HashMap<Uuid, &Recorded>,
    verdict: &mut Verdict,
) -> anyhow::Result<()> {
    let mut total = 0;
    let mut outcomes: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
    for (index, pool) in world.bank_pools.iter().enumerate() {
        let bank = pool.get().await?;
        total += settle_examples::bank::total(pool).await?;
        let prepared: i64 = bank
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await?
            .get(0);
        if prepared != 0 {
            verdict.violations.push(format!(
                "bank {index}: {prepared} prepared transactions left behind"
            ));
        }
        for row in bank
            .query(
                "SELECT transaction_id, branch, outcome FROM public.settle_xa_outcome",
                &[],
            )
            .await?
        {
            outcomes
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2)));
        }
    }
    let opening = 2 * ACCOUNTS_PER_BANK as i64 * OPENING_BALANCE;
    if total != opening {
        verdict.violations.push(format!(
            "money is not conserved: the banks hold {total}, {opening} were opened"
        ));
    }
    for (id, branches) in &outcomes {
        let Some(recorded) = known.get(id) else {
            verdict.lost += 1;
            verdict.violations.push(format!(
                "{id}: XA outcomes {branches:?} for a transaction the coordinators have no record of"
            ));
            continue;
        };
        let committed = branches.iter().filter(|(_, o)| o == "committed").count();
        let wrong = match recorded.state.as_str() {
            "committed" => committed != 2 || branches.len() != 2,
            "aborted" => committed != 0,
            _ => false,
        };
        if wrong {
            verdict.violations.push(format!(
                "{id}: the coordinator says {}, the banks say {branches:?}",
                recorded.state
            ));
        }
    }
    for recorded in known
        .values()
        .filter(|r| r.kind == "twopc" && r.state == "committed")
    {
        if !outcomes.contains_key(&recorded.id) {
            verdict.violations.push(format!(
                "{}: committed, but no bank has heard of it",
                recorded.id
            ));
        }
    }
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
