//! Read-only queries over the example participants' tables, for tests and operators
//! who want to see what each saga step actually did: one row per applied action,
//! with how often (and when) it was compensated.

use std::time::SystemTime;

use anyhow::Context;
use deadpool_postgres::Pool;
use settle_participant::barrier::Barrier;
use uuid::Uuid;

/// A stock reservation made by `POST /reservations`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub transaction_id: Uuid,
    pub sku: String,
    pub quantity: i64,
    pub released: bool,
    /// How many times the release was applied; the barrier keeps this at most 1.
    pub releases: i32,
    pub reserved_at: SystemTime,
    pub released_at: Option<SystemTime>,
}

/// A card charge made by `POST /charges`.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub transaction_id: Uuid,
    pub customer: String,
    pub amount_cents: i64,
    pub refunded: bool,
    /// How many times the refund was applied; the barrier keeps this at most 1.
    pub refunds: i32,
    pub charged_at: SystemTime,
    pub refunded_at: Option<SystemTime>,
}

/// A shipment booked by `POST /shipments`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipment {
    pub transaction_id: Uuid,
    pub reservation_id: String,
    pub charge_id: String,
    pub carrier: String,
    pub cancelled: bool,
    /// How many times the cancellation was applied; the barrier keeps this at most 1.
    pub cancellations: i32,
    pub booked_at: SystemTime,
    pub cancelled_at: Option<SystemTime>,
}

/// One barrier row: `(step, phase, origin, status)`; `status` is `None` for the
/// placeholder a null compensation leaves in the action's slot.
pub type BarrierRow = (String, String, String, Option<i16>);

async fn client(pool: &Pool) -> anyhow::Result<deadpool_postgres::Object> {
    pool.get()
        .await
        .context("connecting to the participant database")
}

/// The reservation made for a saga, if its inventory action was applied.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool, id: uuid::Uuid) -> anyhow::Result<()> {
/// if let Some(reservation) = settle_examples::ledger::reservations(&pool, id).await? {
///     assert!(reservation.releases <= 1);
/// }
/// # Ok(()) }
/// ```
pub async fn reservations(
    pool: &Pool,
    transaction_id: Uuid,
) -> anyhow::Result<Option<Reservation>> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT transaction_id, sku, quantity, released, releases, reserved_at, released_at
             FROM inventory.reservations WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await
        .context("reading inventory.reservations")?;
    row.map(|row| {
        Ok(Reservation {
            transaction_id: row.try_get(0)?,
            sku: row.try_get(1)?,
            quantity: row.try_get(2)?,
            released: row.try_get(3)?,
            releases: row.try_get(4)?,
            reserved_at: row.try_get(5)?,
            released_at: row.try_get(6)?,
        })
    })
    .transpose()
}

/// The charge made for a saga, if its payment action was applied.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool, id: uuid::Uuid) -> anyhow::Result<()> {
/// let charge = settle_examples::ledger::charges(&pool, id).await?;
/// assert!(charge.is_none_or(|c| c.refunds <= 1));
/// # Ok(()) }
/// ```
pub async fn charges(pool: &Pool, transaction_id: Uuid) -> anyhow::Result<Option<Charge>> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT transaction_id, customer, amount_cents, refunded, refunds, charged_at, refunded_at
             FROM payments.charges WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await
        .context("reading payments.charges")?;
    row.map(|row| {
        Ok(Charge {
            transaction_id: row.try_get(0)?,
            customer: row.try_get(1)?,
            amount_cents: row.try_get(2)?,
            refunded: row.try_get(3)?,
            refunds: row.try_get(4)?,
            charged_at: row.try_get(5)?,
            refunded_at: row.try_get(6)?,
        })
    })
    .transpose()
}

/// The shipment booked for a saga, if its shipping action was applied.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool, id: uuid::Uuid) -> anyhow::Result<()> {
/// let shipment = settle_examples::ledger::shipments(&pool, id).await?;
/// # Ok(()) }
/// ```
pub async fn shipments(pool: &Pool, transaction_id: Uuid) -> anyhow::Result<Option<Shipment>> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT transaction_id, reservation_id, charge_id, carrier, cancelled, cancellations,
                    booked_at, cancelled_at
             FROM shipping.shipments WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await
        .context("reading shipping.shipments")?;
    row.map(|row| {
        Ok(Shipment {
            transaction_id: row.try_get(0)?,
            reservation_id: row.try_get(1)?,
            charge_id: row.try_get(2)?,
            carrier: row.try_get(3)?,
            cancelled: row.try_get(4)?,
            cancellations: row.try_get(5)?,
            booked_at: row.try_get(6)?,
            cancelled_at: row.try_get(7)?,
        })
    })
    .transpose()
}

/// Units of `sku` still available.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
/// let widgets = settle_examples::ledger::stock(&pool, "widget").await?;
/// # Ok(()) }
/// ```
pub async fn stock(pool: &Pool, sku: &str) -> anyhow::Result<i64> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT available FROM inventory.stock WHERE sku = $1",
            &[&sku],
        )
        .await
        .context("reading inventory.stock")?
        .with_context(|| format!("no stock row for sku {sku}"))?;
    Ok(row.try_get(0)?)
}

/// The barrier rows a saga left in one participant's schema (`inventory`,
/// `payments` or `shipping`), ordered by step and phase.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool, id: uuid::Uuid) -> anyhow::Result<()> {
/// for (step, phase, origin, status) in settle_examples::ledger::barrier_rows(&pool, "payments", id).await? {
///     println!("{step} {phase} from {origin}: {status:?}");
/// }
/// # Ok(()) }
/// ```
pub async fn barrier_rows(
    pool: &Pool,
    schema: &str,
    transaction_id: Uuid,
) -> anyhow::Result<Vec<BarrierRow>> {
    // Validates the schema name before it is spliced into the query.
    let barrier = Barrier::new(schema)?;
    let sql = format!(
        "SELECT step, phase, origin, status FROM {}.settle_barrier
         WHERE transaction_id = $1 ORDER BY step, phase",
        barrier.schema()
    );
    let rows = client(pool)
        .await?
        .query(&sql, &[&transaction_id])
        .await
        .with_context(|| format!("reading {schema}.settle_barrier"))?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })
        .collect()
}
