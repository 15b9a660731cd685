//! The operator dashboard at `/ui/`, in a real headless Chromium: an operator finds a
//! stuck saga on the home view, reads it, retries it once the participant is fixed and
//! watches it finish; plus the headers and 404s of the static files themselves.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use settle_participant::api::{NewBranch, NewTransaction};
use settle_tests::scripted::Answer;
use settle_tests::webdriver::Browser;

use crate::support::{saga_yaml, World, WAIT};

/// Polls of 100 ms the browser waits for a view to show what the test expects.
const POLLS: u32 = 300;

/// `target/test-artifacts/ui/` (under CARGO_TARGET_DIR when set).
fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("test-artifacts/ui")
}

/// No script error and no Content-Security-Policy violation was logged; refused API
/// calls (the 409 the test provokes) are expected console noise.
async fn assert_no_script_errors(browser: &Browser) {
    let console = browser.console().await.unwrap();
    let bad: Vec<&String> = console
        .iter()
        .filter(|line| {
            line.contains("Uncaught")
                || line.contains("Content Security Policy")
                || line.contains("TypeError")
                || line.contains("SyntaxError")
        })
        .collect();
    assert!(bad.is_empty(), "the page logged errors: {bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_stuck_saga_on_the_dashboard_and_retries_it_to_compensated() {
    let browser = Browser::launch()
        .await
        .unwrap_or_else(|e| panic!("cannot drive a browser: {e:#}"));
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register("ok", &saga_yaml(&world, "ok", "", &[("a", None, true)]))
        .await;
    world
        .register(
            "fixable",
            &saga_yaml(
                &world,
                "fixable",
                "",
                &[("x", None, true), ("y", Some(&["x"]), true)],
            ),
        )
        .await;
    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    let finished = client
        .start_saga("ok", json!({ "order": 1 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(finished.state, "completed");
    let stuck = client
        .start_saga("fixable", json!({ "order": 2 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(stuck.state, "stuck");
    let ui = format!("{}/ui/", world.coordinator.base_url);
    let shots = screenshots_dir();

    // Home: the stuck count first, and the saga on the stuck list.
    browser.goto(&ui).await.unwrap();
    let row = format!("#stuck-list tr[data-id='{}']", stuck.id);
    browser.wait_for(&row, POLLS).await.unwrap();
    assert_eq!(
        browser
            .text_of("#counts .count")
            .await
            .unwrap()
            .replace('\n', " "),
        "1 stuck",
        "stuck comes first on the home view"
    );
    assert!(browser
        .text_of(&row)
        .await
        .unwrap()
        .contains("compensation of x failed"));
    browser.screenshot(&shots.join("home.png")).await.unwrap();

    // List: filter by definition with the form, then walk pages of one.
    browser.goto(&format!("{ui}#/list")).await.unwrap();
    browser
        .wait_until("#tx-list tbody", POLLS, |t| t.lines().count() == 2)
        .await
        .unwrap();
    let definition = browser.find("#filter-definition").await.unwrap();
    browser.send_keys(&definition, "fixable").await.unwrap();
    browser
        .click(&browser.find("#filter-apply").await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#tx-list tbody", POLLS, |t| {
            t.lines().count() == 1 && t.contains(&stuck.id.to_string())
        })
        .await
        .unwrap();
    browser.screenshot(&shots.join("list.png")).await.unwrap();
    browser
        .goto(&format!("{ui}#/list?kind=saga&limit=1"))
        .await
        .unwrap();
    let (_, first_text) = browser
        .wait_until_text("#tx-list tbody", POLLS, |t| t.lines().count() == 1)
        .await
        .unwrap();
    browser
        .click(&browser.wait_for("#next-page", POLLS).await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#tx-list tbody", POLLS, |t| {
            t.lines().count() == 1 && t != first_text
        })
        .await
        .unwrap();

    // Detail: reached from the stuck list; the graph, the steps and the failed attempts.
    browser.goto(&ui).await.unwrap();
    browser
        .click(&browser.wait_for(&format!("{row} a"), POLLS).await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#tx-state", POLLS, |t| t == "stuck")
        .await
        .unwrap();
    for step in ["x", "y"] {
        browser
            .find(&format!("#graph svg g[data-step='{step}']"))
            .await
            .unwrap();
    }
    assert!(browser
        .text_of("#steps tr[data-step='x']")
        .await
        .unwrap()
        .contains("500"));
    assert!(browser
        .text_of("#timeline")
        .await
        .unwrap()
        .contains("compensation"));
    browser
        .full_page_screenshot(&shots.join("detail.png"))
        .await
        .unwrap();

    // The participant is fixed by hand; the operator retries with a note.
    world
        .participant
        .set_default("/x/undo", Answer::ok(json!({})));
    browser
        .click(&browser.find("button[data-action='retry']").await.unwrap())
        .await
        .unwrap();
    let note = browser.wait_for("#action-note", POLLS).await.unwrap();
    browser
        .send_keys(&note, "refund service redeployed")
        .await
        .unwrap();
    browser
        .click(&browser.find("#action-confirm").await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#tx-state", POLLS, |t| t == "compensated")
        .await
        .unwrap();
    browser
        .wait_until("#timeline tr[data-kind='operator_retry']", POLLS, |t| {
            t.contains("refund service redeployed") && t.contains("api")
        })
        .await
        .unwrap();
    browser
        .full_page_screenshot(&shots.join("detail-compensated.png"))
        .await
        .unwrap();
    assert_eq!(
        client.get_saga(stuck.id).await.unwrap().state,
        "compensated"
    );

    // A second retry is refused; the dialog shows the server's reason.
    browser
        .click(&browser.find("button[data-action='retry']").await.unwrap())
        .await
        .unwrap();
    browser
        .click(&browser.wait_for("#action-confirm", POLLS).await.unwrap())
        .await
        .unwrap();
    let (_, refusal) = browser
        .wait_until_text("#action-error", POLLS, |t| {
            t.contains("action_not_applicable")
        })
        .await
        .unwrap();
    assert!(refusal.starts_with("Conflict: "), "{refusal}");
    assert_no_script_errors(&browser).await;
    browser.quit().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_transaction_shows_its_branches_under_the_decision_and_the_token_stays_in_the_tab(
) {
    let browser = Browser::launch()
        .await
        .unwrap_or_else(|e| panic!("cannot drive a browser: {e:#}"));
    let world = World::start().await;
    let client = &world.coordinator.client;
    let branch = |name: &str| NewBranch {
        name: name.into(),
        prepare_url: Some(world.participant.url(&format!("/{name}/prepare"))),
        commit_url: world.participant.url(&format!("/{name}/commit")),
        abort_url: world.participant.url(&format!("/{name}/abort")),
        payload: None,
    };
    let tx = client
        .create_transaction(&NewTransaction {
            participants: Some(vec![branch("debit"), branch("credit")]),
            timeout: Some("10s".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        client.wait_transaction(tx.id, WAIT).await.unwrap().state,
        "committed"
    );
    let ui = format!("{}/ui/", world.coordinator.base_url);

    browser.goto(&format!("{ui}#/tx/{}", tx.id)).await.unwrap();
    browser
        .wait_until("#tx-state", POLLS, |t| t == "committed")
        .await
        .unwrap();
    for node in ["decision", "debit", "credit"] {
        browser
            .find(&format!("#graph svg g[data-step='{node}']"))
            .await
            .unwrap();
    }
    for branch in ["debit", "credit"] {
        assert!(browser
            .text_of(&format!("#steps tr[data-step='{branch}']"))
            .await
            .unwrap()
            .contains("committed"));
    }
    browser
        .full_page_screenshot(&screenshots_dir().join("detail-twopc.png"))
        .await
        .unwrap();

    // Skip asks for a step and an output; output that is not JSON never leaves the page.
    browser
        .click(&browser.find("button[data-action='skip']").await.unwrap())
        .await
        .unwrap();
    let output = browser.wait_for("#action-output", POLLS).await.unwrap();
    browser.clear(&output).await.unwrap();
    browser.send_keys(&output, "{not json").await.unwrap();
    assert_eq!(
        browser
            .text_of("#action-step")
            .await
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["debit", "credit"]
    );
    browser
        .click(&browser.find("#action-confirm").await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#action-error", POLLS, |t| {
            t.starts_with("The output is not valid JSON")
        })
        .await
        .unwrap();
    browser
        .click(&browser.find("#action-cancel").await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        client.get_transaction(tx.id).await.unwrap().state,
        "committed"
    );

    // The token is kept for this tab only, and forgotten on request.
    let token = browser.find("#token").await.unwrap();
    browser
        .send_keys(&token, "an-operator-token")
        .await
        .unwrap();
    browser
        .click(
            &browser
                .find("#token-form button[type='submit']")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    browser
        .wait_until("#token-status", POLLS, |t| t == "token set for this tab")
        .await
        .unwrap();
    let stored = browser
        .execute("return sessionStorage.getItem('settle.token');", json!([]))
        .await
        .unwrap();
    assert_eq!(stored, "an-operator-token");
    browser
        .click(&browser.find("#token-clear").await.unwrap())
        .await
        .unwrap();
    browser
        .wait_until("#token-status", POLLS, |t| t == "no token")
        .await
        .unwrap();
    assert_eq!(
        browser
            .execute("return sessionStorage.getItem('settle.token');", json!([]))
            .await
            .unwrap(),
        Value::Null
    );
    assert_no_script_errors(&browser).await;
    browser.quit().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_files_come_with_their_types_and_a_strict_content_security_policy() {
    let world = World::start().await;
    let base = &world.coordinator.base_url;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    let page = get("/ui/").await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "no unsafe-* source in {csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="assets/app.js"></script>"#));
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=").count(),
        "no inline script"
    );

    let bare = get("/ui").await.unwrap();
    assert_eq!(bare.status().as_u16(), 308);
    assert_eq!(header(&bare, "location"), "/ui/");

    for (asset, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("graph.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let response = get(&format!("/ui/assets/{asset}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert_eq!(header(&response, "content-type"), content_type, "{asset}");
        assert!(!header(&response, "content-security-policy").is_empty());
        assert!(!response.text().await.unwrap().is_empty(), "{asset}");
    }

    for (path, code) in [
        ("/ui/assets/nope.js", "asset_not_found"),
        ("/ui/settings", "route_not_found"),
        ("/ui/assets/deeper/app.js", "route_not_found"),
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json",
            "{path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{path}");
    }
    world.stop().await;
}
