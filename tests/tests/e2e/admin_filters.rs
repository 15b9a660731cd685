//! The operators' list filters, one by one, against a mix of sagas and 2PC
//! transactions; bad filter values get a 400 naming the parameter; pages stay
//! stable while a writer inserts concurrently.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use settle_participant::api::{NewBranch, NewTransaction};
use settle_participant::client::CoordinatorClient;
use settle_tests::scripted::Answer;
use uuid::Uuid;

use crate::admin_actions::yaml_with_retry;
use crate::support::{saga_yaml, World, WAIT};

fn ids(page: &settle_participant::api::AdminPage) -> HashSet<Uuid> {
    page.items.iter().map(|t| t.id).collect()
}

/// The ids the operators' list shows for these filters.
async fn listed(client: &CoordinatorClient, query: &[(&str, &str)]) -> HashSet<Uuid> {
    ids(&client.admin_list(query).await.unwrap())
}

/// The database's clock a second ago, as RFC 3339 with a numeric offset.
async fn a_second_ago(world: &World) -> String {
    let row = world
        .db
        .client()
        .await
        .query_one("SELECT to_json(now() - interval '1 second')::text", &[])
        .await
        .unwrap();
    let quoted: String = row.get(0);
    quoted.trim_matches('"').to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_filter_narrows_the_list() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let p = &world.participant;
    world
        .register(
            "ship",
            &saga_yaml(&world, "ship", "", &[("pack", None, false)]),
        )
        .await;
    world
        .register(
            "pay",
            &saga_yaml(&world, "pay", "", &[("charge", None, true)]),
        )
        .await;
    let before = a_second_ago(&world).await;
    let shipped = client
        .start_saga("ship", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    // Version 2 of pay: a different step name.
    world
        .register(
            "pay",
            &yaml_with_retry(
                &world,
                "pay",
                "{ max_attempts: 100, initial_backoff: 1s, max_backoff: 1s }",
                &[("charge-v2", false)],
            ),
        )
        .await;
    p.set_default("/charge-v2", Answer::status(503));
    let paying = client
        .start_saga("pay", json!({}), None, None)
        .await
        .unwrap();
    let tx = client
        .create_transaction(&NewTransaction {
            participants: Some(vec![NewBranch {
                name: "ledger".into(),
                prepare_url: Some(p.url("/ledger/prepare")),
                commit_url: p.url("/ledger/commit"),
                abort_url: p.url("/ledger/abort"),
                payload: None,
            }]),
            timeout: None,
        })
        .await
        .unwrap();
    client.wait_transaction(tx.id, WAIT).await.unwrap();
    let all = [shipped.id, paying.id, tx.id];

    let list = |query: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        listed(client, &pairs).await
    };
    let only = |these: &[Uuid]| these.iter().copied().collect::<HashSet<_>>();

    assert_eq!(list(vec![]).await, only(&all));
    assert_eq!(list(vec![("kind", "twopc".into())]).await, only(&[tx.id]));
    assert_eq!(
        list(vec![("state", "running".into())]).await,
        only(&[paying.id])
    );
    assert_eq!(
        list(vec![("definition", "pay".into())]).await,
        only(&[paying.id])
    );
    assert_eq!(
        list(vec![("definition", "pay".into()), ("version", "2".into())]).await,
        only(&[paying.id])
    );
    assert!(list(vec![("version", "3".into())]).await.is_empty());
    assert_eq!(
        list(vec![("in_flight_longer_than", "1ms".into())]).await,
        only(&[paying.id]),
        "only what is not finished"
    );
    assert!(list(vec![("in_flight_longer_than", "1h".into())])
        .await
        .is_empty());
    assert!(list(vec![("older_than", "1h".into())]).await.is_empty());
    assert_eq!(
        list(vec![("created_after", before.clone())]).await,
        only(&all)
    );
    assert!(list(vec![("created_before", before.clone())])
        .await
        .is_empty());
    assert!(
        list(vec![("created_after", "2999-01-01T00:00:00+02:00".into())])
            .await
            .is_empty()
    );
    assert_eq!(
        list(vec![("updated_after", before.clone())]).await,
        only(&all)
    );
    assert!(list(vec![("updated_before", before.clone())])
        .await
        .is_empty());
    assert_eq!(
        list(vec![("step", "pack".into())]).await,
        only(&[shipped.id])
    );
    assert_eq!(list(vec![("step", "ledger".into())]).await, only(&[tx.id]));
    assert_eq!(
        list(vec![("step", "charge-v2".into())]).await,
        only(&[paying.id])
    );
    assert_eq!(
        list(vec![("participant", p.url("/pack"))]).await,
        only(&[shipped.id]),
        "a participant URL"
    );
    assert_eq!(
        list(vec![("participant", p.url("/ledger"))]).await,
        only(&[tx.id]),
        "a path prefix of the branch's URLs"
    );
    assert_eq!(
        list(vec![("participant", p.url("/"))]).await,
        only(&all),
        "the participant's origin"
    );
    assert!(list(vec![("participant", "http://127.0.0.1:1".into())])
        .await
        .is_empty());
    let hex = paying.id.simple().to_string();
    assert_eq!(
        list(vec![("id_prefix", hex.clone())]).await,
        only(&[paying.id])
    );
    assert!(list(vec![("id_prefix", hex[..12].to_string())])
        .await
        .contains(&paying.id));
    let typed = paying.id.hyphenated().to_string()[..13].to_uppercase();
    assert!(
        list(vec![("id_prefix", typed)]).await.contains(&paying.id),
        "dashes and upper case are fine in the search box"
    );
    client.cancel_saga(paying.id).await.unwrap();
    world.stop().await;
}

/// An interactive transaction learns its branches one by one; the filters find it
/// by them once it is closed (the close statement sets its search terms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_transaction_is_found_by_the_branches_it_closed_with() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let p = &world.participant;
    let id = world
        .open_interactive(&NewBranch {
            name: "audit".into(),
            prepare_url: Some(p.url("/audit/prepare")),
            commit_url: p.url("/audit/commit"),
            abort_url: p.url("/audit/abort"),
            payload: None,
        })
        .await;
    assert!(
        listed(client, &[("step", "audit")]).await.is_empty(),
        "an open transaction's branches may still change: it has no terms yet"
    );
    client.commit_transaction(id).await.unwrap();
    assert_eq!(
        client.wait_transaction(id, WAIT).await.unwrap().state,
        "committed"
    );
    let only = HashSet::from([id]);
    assert_eq!(listed(client, &[("step", "audit")]).await, only);
    assert_eq!(
        listed(client, &[("participant", &p.url("/audit"))]).await,
        only,
        "a path prefix of the branch's URLs"
    );
    assert!(listed(client, &[("step", "ledger")]).await.is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filter_values_get_a_400_naming_the_parameter() {
    let world = World::start().await;
    let base = &world.coordinator.base_url;
    for (query, field) in [
        ("limit=-1", "limit"),
        ("older_than=banana", "older_than"),
        ("in_flight_longer_than=soon", "in_flight_longer_than"),
        ("version=two", "version"),
        ("version=0", "version"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01T00:00:00Z", "created_before"),
        ("updated_after=2026-01-01", "updated_after"),
        ("updated_before=2026-01-01T00:00:00+0200", "updated_before"),
        ("participant=ftp://files", "participant"),
        ("id_prefix=xyz", "id_prefix"),
        ("id_prefix=0123456789abcdef0123456789abcdef0", "id_prefix"),
        ("state=paused", "state"),
    ] {
        let response = reqwest::get(format!("{base}/v1/admin/transactions?{query}"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_query", "{query}");
        assert_eq!(problem["field"], field, "{query}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(field),
            "{query}"
        );
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_stable_while_a_writer_inserts_concurrently() {
    let world = World::start().await;
    let client = world.coordinator.client.clone();
    world
        .register(
            "many",
            &saga_yaml(&world, "many", "", &[("a", None, false)]),
        )
        .await;
    let mut before = HashSet::new();
    for i in 0..40 {
        let saga = client
            .start_saga("many", json!({ "i": i }), None, None)
            .await
            .unwrap();
        before.insert(saga.id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                client
                    .start_saga("many", json!({ "late": written }), None, None)
                    .await
                    .unwrap();
                written += 1;
            }
            written
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "6".to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = client.admin_list(&pairs).await.unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer inserted while the pages were read");
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no transaction shows up twice");
    assert!(
        before.is_subset(&unique),
        "every transaction from before the walk was seen"
    );
    world.stop().await;
}
