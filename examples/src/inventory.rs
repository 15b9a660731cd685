//! The inventory participant: `POST /reservations` takes stock for an order and
//! `POST /reservations/release` gives it back. Both run through the barrier in the
//! `inventory` schema, so retries and out-of-order calls change stock at most once.

use actix_web::web;
use serde::Deserialize;
use serde_json::json;
use settle_participant::participant::{ParticipantCall, Reply};

use crate::http::{Error, Service};

/// The schema holding the inventory tables and their barrier.
pub const SCHEMA: &str = "inventory";

/// Tables and seed stock; safe to run again.
pub(crate) const SETUP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS inventory;
CREATE TABLE IF NOT EXISTS inventory.stock (
    sku text PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS inventory.reservations (
    transaction_id uuid PRIMARY KEY,
    sku text NOT NULL REFERENCES inventory.stock (sku),
    quantity bigint NOT NULL CHECK (quantity > 0),
    released boolean NOT NULL DEFAULT false,
    releases integer NOT NULL DEFAULT 0,
    reserved_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at timestamptz
);
INSERT INTO inventory.stock (sku, available)
VALUES ('widget', 1000000), ('gadget', 1000000)
ON CONFLICT (sku) DO NOTHING;
";

const TAKE_STOCK: &str =
    "UPDATE inventory.stock SET available = available - $2 WHERE sku = $1 AND available >= $2";
const SKU_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM inventory.stock WHERE sku = $1)";
const RECORD_RESERVATION: &str =
    "INSERT INTO inventory.reservations (transaction_id, sku, quantity) VALUES ($1, $2, $3)";
// Deliberately not guarded by `NOT released`: the barrier is what keeps a duplicate
// release from running, and `releases` would show it if it did not.
const RELEASE_RESERVATION: &str = "
UPDATE inventory.reservations
SET released = true, releases = releases + 1, released_at = clock_timestamp()
WHERE transaction_id = $1
RETURNING sku, quantity";
const RETURN_STOCK: &str = "UPDATE inventory.stock SET available = available + $2 WHERE sku = $1";

/// Mounts `POST /reservations` and `POST /reservations/release`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/reservations", web::post().to(reserve))
        .route("/reservations/release", web::post().to(release));
}

/// The part of the saga input inventory reads.
#[derive(Debug, Deserialize)]
struct Order {
    sku: String,
    quantity: i64,
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn reserve(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let order: Order = match serde_json::from_value(call.input.clone()) {
        Ok(order) => order,
        Err(error) => return Ok(Reply::Invalid(format!("input: {error}"))),
    };
    if order.quantity <= 0 {
        return Ok(Reply::Invalid(
            "input: quantity must be positive".to_owned(),
        ));
    }
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .action(&mut db, &call, async |tx| {
            let taken = tx
                .execute(TAKE_STOCK, &[&order.sku, &order.quantity])
                .await?;
            if taken == 0 {
                let known: bool = tx.query_one(SKU_EXISTS, &[&order.sku]).await?.try_get(0)?;
                return Ok(Reply::Refuse(if known {
                    format!("not enough {} in stock for {}", order.sku, order.quantity)
                } else {
                    format!("unknown sku {}", order.sku)
                }));
            }
            tx.execute(RECORD_RESERVATION, &[&id, &order.sku, &order.quantity])
                .await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({
                "reservation_id": id.to_string(),
                "sku": order.sku,
                "quantity": order.quantity,
            })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "reservation");
    Ok(reply)
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn release(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .compensation(&mut db, &call, async |tx| {
            let Some(row) = tx.query_opt(RELEASE_RESERVATION, &[&id]).await? else {
                return Ok(Reply::Done(json!({ "released": false })));
            };
            let (sku, quantity): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            tx.execute(RETURN_STOCK, &[&sku, &quantity]).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({ "released": true })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "release");
    Ok(reply)
}
