//! The operators' read API: the filtered list with stable keyset pages and counts
//! per state, one transaction's timeline, and clear 400s for bad query parameters.

use std::collections::HashSet;

use serde_json::{json, Value};
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_find_stuck_sagas_and_read_their_timeline() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register("ok", &saga_yaml(&world, "ok", "", &[("a", None, true)]))
        .await;
    world
        .register(
            "breaks",
            &saga_yaml(
                &world,
                "breaks",
                "",
                &[("x", None, true), ("y", None, true)],
            ),
        )
        .await;
    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    for i in 0..3 {
        client
            .start_saga("ok", json!({ "i": i }), None, Some(WAIT))
            .await
            .unwrap();
    }
    let stuck = client
        .start_saga("breaks", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(stuck.state, "stuck");

    let todo = client.admin_list(&[("state", "stuck")]).await.unwrap();
    assert_eq!(todo.items.len(), 1);
    assert_eq!(todo.items[0].id, stuck.id);
    assert!(todo.items[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("compensation of x failed"));
    assert_eq!(todo.counts.get("stuck"), Some(&1));
    assert_eq!(todo.counts.get("completed"), Some(&3));

    let by_definition = client
        .admin_list(&[("definition", "ok"), ("kind", "saga")])
        .await
        .unwrap();
    assert_eq!(by_definition.items.len(), 3);
    assert!(client
        .admin_list(&[("kind", "twopc")])
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(client
        .admin_list(&[("older_than", "1h")])
        .await
        .unwrap()
        .items
        .is_empty());

    let detail = client.admin_transaction(stuck.id).await.unwrap();
    assert_eq!(detail.summary.state, "stuck");
    assert_eq!(
        detail.saga.as_ref().unwrap().step("x").unwrap().last_status,
        Some(500)
    );
    let kinds: Vec<&str> = detail.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert!(kinds.contains(&"compensating"));
    assert_eq!(kinds.last(), Some(&"stuck"));
    let undo_attempts: Vec<_> = detail
        .events
        .iter()
        .filter(|e| e.kind == "attempt" && e.phase.as_deref() == Some("compensation"))
        .collect();
    assert_eq!(undo_attempts.len(), 3, "every attempt is on the timeline");
    assert!(undo_attempts
        .iter()
        .all(|e| e.status_code == Some(500) && e.duration_ms.is_some()));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_stable_while_new_transactions_arrive() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "many",
            &saga_yaml(&world, "many", "", &[("a", None, false)]),
        )
        .await;
    let mut started = HashSet::new();
    for i in 0..25 {
        started.insert(
            client
                .start_saga("many", json!({ "i": i }), None, None)
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "7".to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = client.admin_list(&pairs).await.unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        // Newer transactions arriving meanwhile land before the first page, never inside the walk.
        client
            .start_saga("many", json!({ "late": seen.len() }), None, None)
            .await
            .unwrap();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no transaction shows up twice");
    assert!(
        started.is_subset(&unique),
        "every transaction from before the walk was seen"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_query_parameters_get_a_400_naming_them() {
    let world = World::start().await;
    let base = &world.coordinator.base_url;
    for (query, field) in [
        ("limit=-1", "limit"),
        ("limit=9999", "limit"),
        ("older_than=banana", "older_than"),
        ("state=sleeping", "state"),
        ("kind=batch", "kind"),
        ("cursor=nonsense", "cursor"),
        ("colour=red", ""),
    ] {
        let response = reqwest::get(format!("{base}/v1/admin/transactions?{query}"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_query", "{query}");
        assert_eq!(problem["field"].as_str().unwrap_or(""), field, "{query}");
    }
    let missing = reqwest::get(format!(
        "{base}/v1/admin/transactions/0190b6c2-5a1e-7000-8000-000000000001"
    ))
    .await
    .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retry_finishes_a_stuck_saga_once_the_participant_is_fixed() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "fixable",
            &saga_yaml(
                &world,
                "fixable",
                "",
                &[("x", None, true), ("y", None, true)],
            ),
        )
        .await;
    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    let stuck = client
        .start_saga("fixable", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(stuck.state, "stuck");
    let http = reqwest::Client::new();
    let retry = |body: &'static str| {
        http.post(format!(
            "{}/v1/admin/transactions/{}/retry",
            world.coordinator.base_url, stuck.id
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
    };
    // A malformed action changes nothing.
    assert_eq!(retry("{oops").await.unwrap().status().as_u16(), 400);
    assert_eq!(
        retry(r#"{"note":"x","colour":"red"}"#)
            .await
            .unwrap()
            .status()
            .as_u16(),
        422
    );
    assert_eq!(client.get_saga(stuck.id).await.unwrap().state, "stuck");

    // The participant is fixed by hand; the operator retries with a note.
    world
        .participant
        .set_default("/x/undo", Answer::ok(json!({})));
    let accepted = retry(r#"{"note":"refund service redeployed"}"#)
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    let done = client.wait_saga(stuck.id, WAIT).await.unwrap();
    assert_eq!(done.state, "compensated");
    let detail = client.admin_transaction(stuck.id).await.unwrap();
    let action = detail
        .events
        .iter()
        .find(|e| e.kind == "operator_retry")
        .expect("the retry is on the timeline");
    assert_eq!(action.actor, "api");
    assert_eq!(
        action.detail.as_ref().unwrap()["note"],
        "refund service redeployed"
    );
    // Retrying what is no longer stuck is refused with the reason.
    let again = retry("").await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "action_not_applicable");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_finished_transactions_and_leaves_in_flight_ones_alone() {
    let world = World::start_with(|s| {
        s.retention.finished_after = std::time::Duration::from_secs(24 * 3600);
        s.retention.interval = std::time::Duration::from_millis(100);
    })
    .await;
    let client = &world.coordinator.client;
    world
        .register(
            "kept",
            &saga_yaml(
                &world,
                "kept",
                "",
                &[("a", None, true), ("slow", None, true)],
            ),
        )
        .await;
    world.participant.push("/slow", [Answer::ok(json!({}))]);
    let old_done = client
        .start_saga("kept", json!({ "n": 1 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(old_done.state, "completed");
    let recent_done = client
        .start_saga("kept", json!({ "n": 2 }), None, Some(WAIT))
        .await
        .unwrap();
    world.participant.set_default("/slow", Answer::status(202));
    let old_running = client
        .start_saga("kept", json!({ "n": 3 }), None, None)
        .await
        .unwrap();
    // Make two of them look forty days old.
    world
        .db
        .client()
        .await
        .execute(
            "UPDATE transactions SET created_at = now() - interval '40 days', updated_at = now() - interval '40 days' WHERE id = ANY($1)",
            &[&vec![old_done.id, old_running.id]],
        )
        .await
        .unwrap();
    settle_tests::eventually("the old finished saga to be purged", WAIT, || async {
        let left = crate::support::count(
            &world.db,
            &format!(
                "SELECT count(*) FROM transactions WHERE id = '{}'",
                old_done.id
            ),
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    let events = crate::support::count(
        &world.db,
        &format!(
            "SELECT count(*) FROM events WHERE transaction_id = '{}'",
            old_done.id
        ),
    )
    .await;
    assert_eq!(events, 0, "its timeline went with it");
    assert_eq!(
        client.get_saga(recent_done.id).await.unwrap().state,
        "completed",
        "recent ones stay"
    );
    assert_eq!(
        client.get_saga(old_running.id).await.unwrap().state,
        "running",
        "in-flight ones are never purged"
    );
    world.stop().await;
}
