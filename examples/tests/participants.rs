//! The example participants over real HTTP and a real PostgreSQL: signed calls,
//! outputs flowing between steps, duplicates, declines, null compensations and late
//! actions, checked through the ledger. Each test makes and drops its own database.

use std::panic::AssertUnwindSafe;

use deadpool_postgres::Pool;
use futures_util::FutureExt;
use serde_json::{json, Map, Value};
use settle_examples::{ledger, Participants};
use settle_participant::protocol::{CallRequest, Phase, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER};
use settle_participant::signature::{now_unix, sign, Verifier};
use uuid::Uuid;

const SECRET: &[u8] = b"example-signing-secret";

fn server() -> String {
    std::env::var("SETTLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A fresh database set up for the examples, with the participants running on free
/// ports and requiring signatures; everything is torn down afterwards, also when
/// `test` panics.
async fn with_participants<F>(test: F)
where
    F: AsyncFnOnce(Pool, &Participants),
{
    let name = format!("examples_test_{}", Uuid::new_v4().simple());
    let pool = settle_examples::connect(&format!("{}/{name}", server()), 8)
        .await
        .expect("PostgreSQL must be running for these tests");
    settle_examples::setup(&pool).await.expect("setting up");
    settle_examples::setup(&pool)
        .await
        .expect("setting up again changes nothing");
    let verifier = Verifier::new(vec![SECRET.to_vec()]);
    let participants = settle_examples::start(pool.clone(), "127.0.0.1", [0, 0, 0], Some(verifier))
        .await
        .expect("starting the participants");
    let outcome = AssertUnwindSafe(test(pool.clone(), &participants))
        .catch_unwind()
        .await;
    participants.stop().await;
    drop_database(pool, &name).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drop_database(pool: Pool, name: &str) {
    pool.close();
    let (admin, connection) =
        tokio_postgres::connect(&format!("{}/postgres", server()), tokio_postgres::NoTls)
            .await
            .expect("connecting to drop the test database");
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("dropping the test database");
}

/// One participant call, as the coordinator would make it.
struct Call {
    request: CallRequest,
}

impl Call {
    fn new(id: Uuid, step: &str, phase: Phase, input: Value) -> Self {
        Call {
            request: CallRequest {
                transaction_id: id,
                saga: "order-checkout".to_owned(),
                step: step.to_owned(),
                phase,
                attempt: 1,
                input,
                results: Map::new(),
            },
        }
    }

    fn attempt(mut self, attempt: u32) -> Self {
        self.request.attempt = attempt;
        self
    }

    fn result(mut self, step: &str, output: Value) -> Self {
        self.request.results.insert(step.to_owned(), output);
        self
    }

    /// POSTs the call, signed with `secret`, and returns the status and JSON body.
    async fn send_signed(&self, url: String, secret: &[u8]) -> (u16, Value) {
        let body = serde_json::to_vec(&self.request).unwrap();
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, self.request.idempotency_key())
            .header(SIGNATURE_HEADER, sign(secret, now_unix(), &body))
            .body(body)
            .send()
            .await
            .expect("the participant answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, value)
    }

    async fn send(&self, url: String) -> (u16, Value) {
        self.send_signed(url, SECRET).await
    }
}

fn order() -> Value {
    json!({ "sku": "gadget", "quantity": 3, "amount": 49.99, "customer": "ada" })
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_flows_outputs_between_steps_and_compensates_each_step_once() {
    with_participants(async |pool, p| {
        let id = Uuid::now_v7();
        let stock_before = ledger::stock(&pool, "gadget").await.unwrap();

        let reserve = Call::new(id, "reserve-inventory", Phase::Action, order());
        let (status, reservation) = reserve
            .send(Participants::url(p.inventory, "/reservations"))
            .await;
        assert_eq!(status, 200, "{reservation}");
        assert_eq!(
            reservation,
            json!({ "reservation_id": id.to_string(), "sku": "gadget", "quantity": 3 })
        );
        let (status, again) = reserve
            .attempt(2)
            .send(Participants::url(p.inventory, "/reservations"))
            .await;
        assert_eq!(
            (status, &again),
            (200, &reservation),
            "a retry gets the first answer"
        );
        assert_eq!(
            ledger::stock(&pool, "gadget").await.unwrap(),
            stock_before - 3
        );

        let (status, charge) = Call::new(id, "charge-payment", Phase::Action, order())
            .send(Participants::url(p.payments, "/charges"))
            .await;
        assert_eq!(status, 200, "{charge}");
        assert_eq!(
            charge,
            json!({ "charge_id": id.to_string(), "amount": 49.99 })
        );

        let (status, shipment) = Call::new(id, "ship-order", Phase::Action, order())
            .result("reserve-inventory", reservation.clone())
            .result("charge-payment", charge.clone())
            .send(Participants::url(p.shipping, "/shipments"))
            .await;
        assert_eq!(status, 200, "{shipment}");
        assert_eq!(
            shipment,
            json!({ "shipment_id": id.to_string(), "carrier": "settle-post" })
        );
        let booked = ledger::shipments(&pool, id)
            .await
            .unwrap()
            .expect("a shipment row");
        assert_eq!(booked.reservation_id, id.to_string());
        assert_eq!(booked.charge_id, id.to_string());

        // Compensate in reverse order, each twice (a retry after a lost answer).
        for (addr, path, step) in [
            (p.shipping, "/shipments/cancel", "ship-order"),
            (p.payments, "/refunds", "charge-payment"),
            (p.inventory, "/reservations/release", "reserve-inventory"),
        ] {
            for attempt in 1..=2 {
                let (status, body) = Call::new(id, step, Phase::Compensation, order())
                    .attempt(attempt)
                    .send(Participants::url(addr, path))
                    .await;
                assert_eq!(status, 200, "{step} attempt {attempt}: {body}");
            }
        }

        let reservation = ledger::reservations(&pool, id)
            .await
            .unwrap()
            .expect("a reservation row");
        assert_eq!(
            (reservation.sku.as_str(), reservation.quantity),
            ("gadget", 3)
        );
        assert_eq!((reservation.released, reservation.releases), (true, 1));
        let charge = ledger::charges(&pool, id)
            .await
            .unwrap()
            .expect("a charge row");
        assert_eq!(
            (charge.customer.as_str(), charge.amount_cents),
            ("ada", 4999)
        );
        assert_eq!((charge.refunded, charge.refunds), (true, 1));
        let shipment = ledger::shipments(&pool, id)
            .await
            .unwrap()
            .expect("a shipment row");
        assert_eq!((shipment.cancelled, shipment.cancellations), (true, 1));
        assert!(
            shipment.cancelled_at <= charge.refunded_at
                && charge.refunded_at <= reservation.released_at
        );
        assert_eq!(ledger::stock(&pool, "gadget").await.unwrap(), stock_before);

        assert_eq!(
            ledger::barrier_rows(&pool, "inventory", id).await.unwrap(),
            [
                (s("reserve-inventory"), s("action"), s("action"), Some(200)),
                (
                    s("reserve-inventory"),
                    s("compensation"),
                    s("compensation"),
                    Some(200)
                ),
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_charge_is_refused_every_time_and_its_refund_is_a_null_compensation() {
    with_participants(async |pool, p| {
        let id = Uuid::now_v7();
        let input = json!({ "sku": "widget", "quantity": 1, "amount": 1500.0, "customer": "bob" });
        let charge = Call::new(id, "charge-payment", Phase::Action, input.clone());
        for attempt in 1..=2 {
            let (status, problem) = charge.send(Participants::url(p.payments, "/charges")).await;
            assert_eq!(status, 409, "attempt {attempt}: {problem}");
            assert_eq!(problem["code"], "refused");
            assert_eq!(problem["detail"], "amount over the 1000.00 limit");
        }
        let (status, body) = Call::new(id, "charge-payment", Phase::Compensation, input)
            .send(Participants::url(p.payments, "/refunds"))
            .await;
        assert_eq!((status, body), (200, Value::Null));
        assert_eq!(ledger::charges(&pool, id).await.unwrap(), None);
        assert_eq!(
            ledger::barrier_rows(&pool, "payments", id).await.unwrap(),
            [
                (s("charge-payment"), s("action"), s("action"), Some(409)),
                (
                    s("charge-payment"),
                    s("compensation"),
                    s("compensation"),
                    Some(200)
                ),
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_arriving_after_its_cancellation_is_refused() {
    with_participants(async |pool, p| {
        let id = Uuid::now_v7();
        let (status, body) = Call::new(id, "ship-order", Phase::Compensation, order())
            .send(Participants::url(p.shipping, "/shipments/cancel"))
            .await;
        assert_eq!((status, body), (200, Value::Null), "null compensation");

        let (status, problem) = Call::new(id, "ship-order", Phase::Action, order())
            .result("reserve-inventory", json!({ "reservation_id": "r-1" }))
            .result("charge-payment", json!({ "charge_id": "c-1" }))
            .send(Participants::url(p.shipping, "/shipments"))
            .await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["detail"], "compensated before the action arrived");
        assert_eq!(ledger::shipments(&pool, id).await.unwrap(), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_cannot_be_acted_on_are_rejected_without_effect() {
    with_participants(async |pool, p| {
        let id = Uuid::now_v7();
        let stock_before = ledger::stock(&pool, "widget").await.unwrap();

        let (status, problem) = Call::new(id, "ship-order", Phase::Action, order())
            .result("reserve-inventory", json!({ "reservation_id": "r-1" }))
            .send(Participants::url(p.shipping, "/shipments"))
            .await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["code"], "invalid_input");
        assert_eq!(
            problem["detail"],
            "results: no charge_id from step charge-payment"
        );

        let too_many = json!({ "sku": "widget", "quantity": stock_before + 1, "amount": 1.0 });
        let (status, problem) = Call::new(id, "reserve-inventory", Phase::Action, too_many)
            .send(Participants::url(p.inventory, "/reservations"))
            .await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(
            problem["detail"],
            format!("not enough widget in stock for {}", stock_before + 1)
        );
        assert_eq!(ledger::stock(&pool, "widget").await.unwrap(), stock_before);
        assert_eq!(ledger::reservations(&pool, id).await.unwrap(), None);

        let (status, problem) = Call::new(
            Uuid::now_v7(),
            "reserve-inventory",
            Phase::Action,
            json!({ "quantity": 1 }),
        )
        .send(Participants::url(p.inventory, "/reservations"))
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("invalid_input"))
        );

        let (status, problem) = Call::new(Uuid::now_v7(), "charge-payment", Phase::Action, order())
            .send_signed(Participants::url(p.payments, "/charges"), b"not-the-secret")
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("bad_signature"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_effect_answers_500_without_internal_text_and_a_retry_succeeds() {
    with_participants(async |pool, p| {
        let id = Uuid::now_v7();
        let db = pool.get().await.unwrap();
        db.batch_execute("ALTER TABLE payments.charges RENAME TO charges_away")
            .await
            .unwrap();
        let charge = Call::new(id, "charge-payment", Phase::Action, order());

        let (status, problem) = charge.send(Participants::url(p.payments, "/charges")).await;
        assert_eq!(status, 500, "{problem}");
        assert_eq!(problem["code"], "participant_error");
        let text = problem.to_string();
        assert!(
            !text.contains("charges") && !text.contains("relation"),
            "{text}"
        );
        assert_eq!(
            ledger::barrier_rows(&pool, "payments", id).await.unwrap(),
            []
        );

        db.batch_execute("ALTER TABLE payments.charges_away RENAME TO charges")
            .await
            .unwrap();
        let (status, body) = charge
            .attempt(2)
            .send(Participants::url(p.payments, "/charges"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            ledger::charges(&pool, id)
                .await
                .unwrap()
                .map(|c| c.amount_cents),
            Some(4999)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_checkout_definition_points_at_the_running_participants() {
    with_participants(async |_pool, p| {
        let definition: Value = serde_json::from_str(&p.order_checkout_definition()).unwrap();
        assert_eq!(definition["name"], "order-checkout");
        let steps: Vec<(&str, &str, &str)> = definition["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|step| {
                (
                    step["name"].as_str().unwrap(),
                    step["action"]["url"].as_str().unwrap(),
                    step["compensation"]["url"].as_str().unwrap(),
                )
            })
            .collect();
        let url = |addr, path| Participants::url(addr, path);
        assert_eq!(
            steps,
            [
                (
                    "reserve-inventory",
                    url(p.inventory, "/reservations").as_str(),
                    url(p.inventory, "/reservations/release").as_str()
                ),
                (
                    "charge-payment",
                    url(p.payments, "/charges").as_str(),
                    url(p.payments, "/refunds").as_str()
                ),
                (
                    "ship-order",
                    url(p.shipping, "/shipments").as_str(),
                    url(p.shipping, "/shipments/cancel").as_str()
                ),
            ]
        );
    })
    .await;
}
