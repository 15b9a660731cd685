//! What the coordinator may call and how its calls prove themselves: the
//! participant allow-list (no SSRF into metadata services or private networks,
//! whatever spelling the address takes) and signatures under secret rotation.

use std::time::Duration;

use serde_json::{json, Value};
use settle_participant::signature::{now_unix, Error as SignatureError, Verifier};

use settle_tests::scripted::Answer;

use crate::support::{count, saga_yaml, World, WAIT};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn one_step(url: &str) -> String {
    json!({ "name": "probe", "steps": [{ "name": "a", "action": { "url": url } }] }).to_string()
}

fn branch(prepare: &str) -> Value {
    json!({ "name": "debit", "prepare_url": prepare, "commit_url": "http://127.0.0.1:9/commit",
            "abort_url": "http://127.0.0.1:9/abort" })
}

/// Every URL is refused with 422 naming the field and the URL, and nothing is stored.
async fn assert_refused(world: &World, urls: &[&str]) {
    let base = &world.coordinator.base_url;
    let http = reqwest::Client::new();
    for url in urls {
        let (status, body) = problem(
            http.put(format!("{base}/v1/saga-definitions/probe"))
                .header("content-type", "application/json")
                .body(one_step(url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["code"], "invalid_definition", "{url}");
        assert_eq!(body["field"], "steps[0].action.url", "{url}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(url.trim_end_matches('/')),
            "the detail names the URL: {body}"
        );

        let (status, body) = problem(
            http.post(format!("{base}/v1/transactions"))
                .json(&json!({ "participants": [branch(url)] }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["field"], "participants[0].prepare_url", "{url}");
    }
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM saga_definitions").await,
        0
    );
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_calls_loopback_only_and_never_metadata_services() {
    let world = World::start().await;
    assert_refused(
        &world,
        &[
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fe80::1]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://10.0.0.1/",
            "http://192.168.1.10:8080/",
            "http://example.com/",
        ],
    )
    .await;

    // An interactive transaction's branches meet the same list.
    let tx = world
        .coordinator
        .client
        .create_transaction(&serde_json::from_value(json!({})).unwrap())
        .await
        .unwrap();
    let (status, body) = problem(
        reqwest::Client::new()
            .post(format!(
                "{}/v1/transactions/{}/branches",
                world.coordinator.base_url, tx.id
            ))
            .json(
                &json!({ "name": "b", "commit_url": "http://169.254.169.254/c",
                           "abort_url": "http://127.0.0.1:9/a" }),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "branch.commit_url");

    // Loopback in any spelling is what a fresh install allows.
    let yaml = saga_yaml(&world, "local", "", &[("a", None, false)]);
    world.register("local", &yaml).await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_list_admits_its_blocks_and_names_and_nothing_else() {
    let world = World::start_with(|s| {
        s.participants.allow = settle_coordinator::allow::AllowList::parse(
            &["10.0.0.0/8".into(), "*.svc.cluster.local".into()],
            &["http".into()],
        )
        .unwrap();
    })
    .await;
    assert_refused(
        &world,
        &[
            "http://[::1]:7000/",
            "http://127.0.0.1:7000/",
            "http://localhost:7000/",
            "http://2130706433/",
            "http://11.0.0.1/",
            "https://10.1.2.3/",
            "http://svc.cluster.local.evil.com/",
        ],
    )
    .await;
    for url in [
        "http://10.1.2.3:8080/reserve",
        "http://orders.shop.svc.cluster.local/x",
    ] {
        world
            .coordinator
            .client
            .register_definition("probe", &one_step(url), "application/json")
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_signed_with_both_secrets_during_a_rotation() {
    let world = World::start_with(|s| {
        s.participants.signing_secret = Some(settle_coordinator::settings::Secret::new("new-one"));
        s.participants.previous_signing_secret =
            Some(settle_coordinator::settings::Secret::new("old-one"));
    })
    .await;
    let yaml = saga_yaml(&world, "signed", "", &[("a", None, false)]);
    world.register("signed", &yaml).await;
    let saga = world
        .coordinator
        .client
        .start_saga("signed", json!({ "n": 1 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    let call = world.participant.calls_to("/a").pop().expect("a call");
    let header = call.signature.clone().expect("a Settle-Signature header");
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    let body = call.raw_body.clone();
    let now = now_unix();
    let accepts =
        |secret: &[u8]| Verifier::new(vec![secret.to_vec()]).verify(Some(&header), &body, now);
    assert_eq!(
        accepts(b"new-one"),
        Ok(()),
        "a participant on the new secret"
    );
    assert_eq!(
        accepts(b"old-one"),
        Ok(()),
        "a participant still on the old one"
    );
    assert_eq!(accepts(b"third"), Err(SignatureError::Mismatch));
    let mut tampered = call.body.clone();
    tampered["input"]["n"] = json!(2);
    assert_eq!(
        Verifier::new(vec![b"new-one".to_vec()]).verify(
            Some(&header),
            &serde_json::to_vec(&tampered).unwrap(),
            now
        ),
        Err(SignatureError::Mismatch)
    );
    let later = now + Duration::from_secs(301).as_secs();
    assert!(matches!(
        Verifier::new(vec![b"new-one".to_vec()]).verify(Some(&header), &body, later),
        Err(SignatureError::Expired { .. })
    ));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_from_participants_are_not_followed() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "moved", "", &[("a", None, false)]);
    world.register("moved", &yaml).await;
    let elsewhere = world.participant.url("/elsewhere");
    world
        .participant
        .set_default("/a", Answer::redirect(307, elsewhere.clone()));
    let saga = world
        .coordinator
        .client
        .start_saga("moved", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    // A redirect is neither success nor refusal: retried, then given up on.
    assert_ne!(saga.state, "completed", "{saga:?}");
    assert!(world.participant.calls_to("/a").len() >= 2, "retried");
    assert!(
        world.participant.calls_to("/elsewhere").is_empty(),
        "the coordinator followed a redirect to {elsewhere}"
    );
    let step = saga.step("a").expect("step a");
    assert!(
        format!("{step:?}").contains("307"),
        "the step's error names the redirect status: {step:?}"
    );
    world.stop().await;
}
