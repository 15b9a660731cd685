//! The shipping participant: `POST /shipments` books a shipment for the reservation
//! and charge made by the earlier steps (read from the call's `results`, showing
//! outputs flowing between steps) and `POST /shipments/cancel` cancels it, both
//! through the barrier in the `shipping` schema.

use actix_web::web;
use serde_json::{json, Map, Value};
use settle_participant::participant::{ParticipantCall, Reply};

use crate::http::{Error, Service};

/// The schema holding the shipping tables and their barrier.
pub const SCHEMA: &str = "shipping";

/// The carrier every shipment goes with.
pub const CARRIER: &str = "settle-post";

/// Tables; safe to run again.
pub(crate) const SETUP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS shipping;
CREATE TABLE IF NOT EXISTS shipping.shipments (
    transaction_id uuid PRIMARY KEY,
    reservation_id text NOT NULL,
    charge_id text NOT NULL,
    carrier text NOT NULL,
    cancelled boolean NOT NULL DEFAULT false,
    cancellations integer NOT NULL DEFAULT 0,
    booked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    cancelled_at timestamptz
);
";

const RECORD_SHIPMENT: &str = "
INSERT INTO shipping.shipments (transaction_id, reservation_id, charge_id, carrier)
VALUES ($1, $2, $3, $4)";
// Not guarded by `NOT cancelled`: the barrier keeps duplicates out; `cancellations`
// would show one that got through.
const CANCEL_SHIPMENT: &str = "
UPDATE shipping.shipments
SET cancelled = true, cancellations = cancellations + 1, cancelled_at = clock_timestamp()
WHERE transaction_id = $1";

/// Mounts `POST /shipments` and `POST /shipments/cancel`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/shipments", web::post().to(ship))
        .route("/shipments/cancel", web::post().to(cancel));
}

/// `results[step][field]` as text, or a 422 reply naming what is missing.
fn earlier_output(results: &Map<String, Value>, step: &str, field: &str) -> Result<String, Reply> {
    results
        .get(step)
        .and_then(|output| output.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Reply::Invalid(format!("results: no {field} from step {step}")))
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn ship(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let reservation_id = match earlier_output(&call.results, "reserve-inventory", "reservation_id")
    {
        Ok(id) => id,
        Err(reply) => return Ok(reply),
    };
    let charge_id = match earlier_output(&call.results, "charge-payment", "charge_id") {
        Ok(id) => id,
        Err(reply) => return Ok(reply),
    };
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .action(&mut db, &call, async |tx| {
            tx.execute(
                RECORD_SHIPMENT,
                &[&id, &reservation_id, &charge_id, &CARRIER],
            )
            .await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({
                "shipment_id": id.to_string(),
                "carrier": CARRIER,
            })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "shipment");
    Ok(reply)
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn cancel(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .compensation(&mut db, &call, async |tx| {
            let cancelled = tx.execute(CANCEL_SHIPMENT, &[&id]).await? == 1;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({ "cancelled": cancelled })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "shipment cancellation");
    Ok(reply)
}
