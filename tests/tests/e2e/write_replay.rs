//! A state write whose outcome the coordinator did not learn (its connection
//! closed, or went unanswered, during the commit) is retried as it was: the
//! transaction task sends the same write, under the same `write_id`, again. When
//! the first attempt had committed, the retry must land without a second copy of
//! the write's timeline events or of its webhook notification; a new write with
//! the same content is still a write of its own.

use serde_json::json;
use serde_json::value::to_raw_value;
use settle_coordinator::store::batch::{self, StateWrite};
use settle_coordinator::store::create::{self, Inserted, NewRow};
use settle_coordinator::store::transactions::{EventRecord, Written};
use uuid::Uuid;

use crate::support::{count, World};

/// Far enough ahead that no recovery pass of the test's coordinator claims the row.
const YEAR_2100_MS: i64 = 4_102_444_800_000;

fn state_write(id: Uuid, fence: i64, state: &'static str, event: &'static str) -> StateWrite {
    StateWrite {
        id,
        fence,
        write_id: Uuid::now_v7(),
        state,
        progress: to_raw_value(&json!({ "branches": [] })).unwrap(),
        reason: (state == "stuck").then(|| "a branch keeps failing".to_string()),
        next_ms: Some(YEAR_2100_MS),
        due_now: false,
        lease_ms: 600_000,
        events: vec![EventRecord {
            kind: event,
            actor: "replay-test".into(),
            ..EventRecord::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_that_had_landed_adds_its_events_once() {
    let world = World::start().await;
    let pool = world.db.pool(2);
    let client = pool.get().await.unwrap();
    let id = Uuid::now_v7();
    let new = NewRow {
        id,
        kind: "twopc",
        definition: None,
        version: None,
        state: "preparing",
        input: to_raw_value(&json!({})).unwrap(),
        progress: to_raw_value(&json!({ "branches": [] })).unwrap(),
        idempotency_key: None,
        request_digest: "replay".into(),
        deadline_ms: YEAR_2100_MS,
        next_ms: Some(YEAR_2100_MS),
        lease_ms: 600_000,
        actor: "replay-test".into(),
        traceparent: None,
        tracestate: None,
    };
    let statement = client.prepare(create::CREATE_BATCH).await.unwrap();
    let created = create::create(&client, &statement, "replay-owner", &[&new])
        .await
        .unwrap();
    let Inserted::Created { fence, .. } = created[0] else {
        panic!("not created: {:?}", created[0]);
    };
    let statement = client.prepare(batch::WRITE_BATCH).await.unwrap();
    let events = |kind: &str| {
        format!("SELECT count(*) FROM events WHERE transaction_id = '{id}' AND kind = '{kind}'")
    };

    // The same write twice, as a retry after an unknown outcome sends it.
    let write = state_write(id, fence, "committing", "decided");
    for attempt in 1..=2 {
        let answer = batch::write(&client, &statement, &[&write], false)
            .await
            .unwrap();
        assert!(
            matches!(answer[0], Written::Ok { .. }),
            "attempt {attempt}: {:?}",
            answer[0]
        );
    }
    assert_eq!(
        count(&world.db, &events("decided")).await,
        1,
        "the retry found its write applied and added no second event"
    );

    // A new write with the same content is a write of its own.
    let again = state_write(id, fence, "committing", "decided");
    batch::write(&client, &statement, &[&again], false)
        .await
        .unwrap();
    assert_eq!(count(&world.db, &events("decided")).await, 2);

    // A stuck write retried: one stuck event and one webhook notification.
    let stuck = state_write(id, fence, "stuck", "stuck");
    for _ in 0..2 {
        batch::write(&client, &statement, &[&stuck], true)
            .await
            .unwrap();
    }
    assert_eq!(count(&world.db, &events("stuck")).await, 1);
    assert_eq!(
        count(
            &world.db,
            &format!("SELECT count(*) FROM webhook_outbox WHERE transaction_id = '{id}'")
        )
        .await,
        1,
        "one notification for one stuck transition"
    );
    world.stop().await;
}
