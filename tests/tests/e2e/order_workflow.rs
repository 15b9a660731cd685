//! The example order workflow end to end: real example participants with their
//! own schemas and barriers, one order that completes and one that is compensated.

use serde_json::json;
use settle_examples::ledger;
use settle_tests::coordinator::{test_settings, TestCoordinator};
use settle_tests::redis_server;

use crate::support::{Shop, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_and_a_declined_one_is_compensated() {
    redis_server::require_shared().await;
    let shop = Shop::open().await;
    let Shop {
        db,
        pool,
        participants,
        stock_before,
    } = &shop;
    let pool = pool.clone();
    let coordinator = TestCoordinator::start(test_settings(&db.url, redis_server::SHARED)).await;
    let client = &coordinator.client;
    client
        .register_definition(
            "order-checkout",
            &participants.order_checkout_definition(),
            "application/json",
        )
        .await
        .unwrap();
    let stock_before = *stock_before;

    let good = client
        .start_saga(
            "order-checkout",
            json!({ "sku": "widget", "quantity": 2, "amount": 120, "customer": "ada" }),
            Some("order-1"),
            Some(WAIT),
        )
        .await
        .unwrap();
    assert_eq!(good.state, "completed", "{good:?}");
    let shipment = ledger::shipments(&pool, good.id)
        .await
        .unwrap()
        .expect("shipment booked");
    assert_eq!(
        shipment.reservation_id,
        good.id.to_string(),
        "the reservation id flowed from inventory"
    );
    assert!(!shipment.cancelled);
    assert!(
        !ledger::charges(&pool, good.id)
            .await
            .unwrap()
            .unwrap()
            .refunded
    );
    assert_eq!(
        ledger::stock(&pool, "widget").await.unwrap(),
        stock_before - 2
    );

    let declined = client
        .start_saga(
            "order-checkout",
            json!({ "sku": "widget", "quantity": 5, "amount": 5000, "customer": "bob" }),
            Some("order-2"),
            Some(WAIT),
        )
        .await
        .unwrap();
    assert_eq!(declined.state, "compensated", "{declined:?}");
    assert_eq!(declined.step("charge-payment").unwrap().state, "failed");
    assert_eq!(declined.step("ship-order").unwrap().state, "skipped");
    let reservation = ledger::reservations(&pool, declined.id)
        .await
        .unwrap()
        .expect("reserved, then released");
    assert!(reservation.released);
    assert_eq!(reservation.releases, 1);
    assert!(
        ledger::charges(&pool, declined.id).await.unwrap().is_none(),
        "nothing was charged"
    );
    assert!(ledger::shipments(&pool, declined.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        ledger::stock(&pool, "widget").await.unwrap(),
        stock_before - 2,
        "stock came back"
    );

    coordinator.stop().await;
    shop.close().await;
}
