//! The payments participant: `POST /charges` charges the customer (declining amounts
//! over 1000.00) and `POST /refunds` refunds the charge, both through the barrier in
//! the `payments` schema.

use actix_web::web;
use serde::Deserialize;
use serde_json::json;
use settle_participant::participant::{ParticipantCall, Reply};

use crate::http::{Error, Service};

/// The schema holding the payments tables and their barrier.
pub const SCHEMA: &str = "payments";

/// The largest amount a charge may have; above it the charge is declined.
pub const LIMIT: f64 = 1000.0;

/// Tables; safe to run again.
pub(crate) const SETUP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS payments;
CREATE TABLE IF NOT EXISTS payments.charges (
    transaction_id uuid PRIMARY KEY,
    customer text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    refunded boolean NOT NULL DEFAULT false,
    refunds integer NOT NULL DEFAULT 0,
    charged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    refunded_at timestamptz
);
";

const RECORD_CHARGE: &str =
    "INSERT INTO payments.charges (transaction_id, customer, amount_cents) VALUES ($1, $2, $3)";
// Not guarded by `NOT refunded`: the barrier keeps duplicates out; `refunds` would
// show one that got through.
const REFUND_CHARGE: &str = "
UPDATE payments.charges
SET refunded = true, refunds = refunds + 1, refunded_at = clock_timestamp()
WHERE transaction_id = $1";

/// Mounts `POST /charges` and `POST /refunds`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/charges", web::post().to(charge))
        .route("/refunds", web::post().to(refund));
}

/// The part of the saga input payments reads.
#[derive(Debug, Deserialize)]
struct Payment {
    amount: f64,
    #[serde(default = "anonymous")]
    customer: String,
}

fn anonymous() -> String {
    "anonymous".to_owned()
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn charge(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let payment: Payment = match serde_json::from_value(call.input.clone()) {
        Ok(payment) => payment,
        Err(error) => return Ok(Reply::Invalid(format!("input: {error}"))),
    };
    if !payment.amount.is_finite() || payment.amount < 0.01 {
        return Ok(Reply::Invalid(
            "input: amount must be at least 0.01".to_owned(),
        ));
    }
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .action(&mut db, &call, async |tx| {
            // A decline is recorded by the barrier like any other outcome, so a retry
            // of the same call is declined the same way.
            if payment.amount > LIMIT {
                return Ok(Reply::Refuse(format!("amount over the {LIMIT:.2} limit")));
            }
            // At most 1000.00, so the cents fit an i64 exactly.
            let cents = (payment.amount * 100.0).round() as i64;
            tx.execute(RECORD_CHARGE, &[&id, &payment.customer, &cents])
                .await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({
                "charge_id": id.to_string(),
                "amount": payment.amount,
            })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "charge");
    Ok(reply)
}

#[tracing::instrument(skip_all, fields(transaction_id = %call.call.transaction_id, attempt = call.call.attempt))]
async fn refund(service: web::Data<Service>, call: ParticipantCall) -> Result<Reply, Error> {
    let call = call.call;
    let id = call.transaction_id;
    let mut db = service.pool.get().await?;
    let reply = service
        .barrier
        .compensation(&mut db, &call, async |tx| {
            let refunded = tx.execute(REFUND_CHARGE, &[&id]).await? == 1;
            Ok::<_, tokio_postgres::Error>(Reply::Done(json!({ "refunded": refunded })))
        })
        .await?;
    tracing::info!(status = reply.status().as_u16(), "refund");
    Ok(reply)
}
