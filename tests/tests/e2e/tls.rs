//! The listener over TLS (rustls): HTTPS with a configured certificate and key,
//! plain HTTP refused on that port, and a bad key file named at start-up; and
//! participants over HTTPS: called when their certificate is trusted (the
//! system's roots or `participants.ca_file`), refused when it is not.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use settle_coordinator::app::Application;
use settle_coordinator::settings::TlsFiles;

use crate::support::{saga_yaml, World};

/// A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI.
fn self_signed(dir: &Path) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command (apt-get install openssl) makes the test certificate");
    assert!(status.success(), "openssl req failed");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_https_when_a_certificate_is_configured() {
    let dir = settle_tests::artifacts_dir().join(settle_tests::unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let files = self_signed(&dir);
    let world = World::start_with(|s| s.server.tls = Some(files.clone())).await;
    let port = world
        .coordinator
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let https = format!("https://127.0.0.1:{port}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.cert).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();

    let health = http.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let registered = http
        .put(format!("{https}/v1/saga-definitions/secure"))
        .header("content-type", "application/yaml")
        .body(saga_yaml(&world, "secure", "", &[("a", None, false)]))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let saga: Value = http
        .post(format!("{https}/v1/sagas?wait=10s"))
        .json(&json!({ "definition": "secure", "input": {} }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saga["state"], "completed", "{saga}");

    // Plain HTTP on the TLS port gets no API answer; an untrusting client refuses the certificate.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    assert!(reqwest::get(format!("{https}/healthz")).await.is_err());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_read_stops_start_up_naming_the_setting() {
    let dir = settle_tests::artifacts_dir().join(settle_tests::unique("tls-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = self_signed(&dir);
    std::fs::write(dir.join("not-a-key.pem"), "hello").unwrap();
    files.key = dir.join("not-a-key.pem");
    let db = settle_tests::db::TestDatabase::create().await;
    let mut settings =
        settle_tests::coordinator::test_settings(&db.url, settle_tests::redis_server::SHARED);
    settings.server.tls = Some(files);
    let error = match Application::build(settings).await {
        Ok(_) => panic!("a coordinator started with an unreadable key"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("server.tls_key"), "{error}");
}

/// One step on `url`, tried once.
async fn run_one_step_saga(world: &World, url: &str) -> Value {
    let definition = json!({
        "name": "over-tls",
        "steps": [{ "name": "a", "action": { "url": format!("{url}/a"), "retry": { "max_attempts": 1 } } }]
    });
    world
        .coordinator
        .client
        .register_definition("over-tls", &definition.to_string(), "application/json")
        .await
        .unwrap();
    let saga = world
        .coordinator
        .client
        .start_saga(
            "over-tls",
            json!({}),
            None,
            Some(std::time::Duration::from_secs(10)),
        )
        .await
        .unwrap();
    serde_json::to_value(saga).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_over_https_is_called_only_when_its_certificate_is_trusted() {
    let dir = settle_tests::artifacts_dir().join(settle_tests::unique("tls-participant"));
    std::fs::create_dir_all(&dir).unwrap();
    let files = self_signed(&dir);
    let tls = settle_coordinator::tls::server_config(&files).unwrap();
    let url = settle_tests::instant::start(Some(tls)).unwrap();

    let trusting = World::start_with(|s| s.participants.ca_file = Some(files.cert.clone())).await;
    let saga = run_one_step_saga(&trusting, &url).await;
    assert_eq!(saga["state"], "completed", "{saga}");
    trusting.stop().await;

    // Without the setting the certificate is unknown: the call fails, nothing is sent.
    let untrusting = World::start().await;
    let saga = run_one_step_saga(&untrusting, &url).await;
    assert_eq!(saga["steps"][0]["state"], "failed", "{saga}");
    assert_ne!(saga["state"], "completed", "{saga}");
    untrusting.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_that_holds_no_certificate_stops_start_up_naming_the_setting() {
    let dir = settle_tests::artifacts_dir().join(settle_tests::unique("tls-bad-ca"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("not-a-ca.pem"), "hello").unwrap();
    let db = settle_tests::db::TestDatabase::create().await;
    for ca_file in [dir.join("not-a-ca.pem"), dir.join("missing.pem")] {
        let mut settings =
            settle_tests::coordinator::test_settings(&db.url, settle_tests::redis_server::SHARED);
        settings.participants.ca_file = Some(ca_file.clone());
        let error = match Application::build(settings).await {
            Ok(_) => panic!("a coordinator started with {}", ca_file.display()),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("participants.ca_file"), "{error}");
    }
}
