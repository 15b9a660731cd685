//! The listener over TLS (rustls): HTTPS with a configured certificate and key,
//! plain HTTP refused on that port, and a bad key file named at start-up.

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
