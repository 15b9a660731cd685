//! Liveness, readiness (Postgres reachable, every embedded migration applied, Redis
//! reachable; without Redis the coordinator runs, degraded) with the reasons in the
//! body, and the Prometheus `/metrics` exposition.

use std::time::Duration;

use actix_web::{http::StatusCode, web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::store::migrate;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// What Postgres said about the schema, or why it said nothing.
enum Schema {
    Applied(Vec<i32>),
    Unreachable(&'static str),
}

async fn schema(state: &AppState) -> Schema {
    let probe = async {
        let client = state
            .pool
            .get()
            .await
            .map_err(|_| "unreachable: no connection could be made")?;
        let rows = client
            .query("SELECT version FROM settle_migrations", &[])
            .await
            .map_err(|_| "unreachable: the migrations table cannot be read")?;
        Ok::<_, &'static str>(rows.iter().map(|r| r.get(0)).collect())
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(applied)) => Schema::Applied(applied),
        Ok(Err(reason)) => Schema::Unreachable(reason),
        Err(_) => Schema::Unreachable("unreachable: no answer within 2s"),
    }
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let schema = schema(&state).await;
    let redis = state.locks.ping().await;
    let (postgres_check, migrations_check) = match &schema {
        Schema::Unreachable(reason) => (
            reason.to_string(),
            "unknown: postgres is unreachable".to_string(),
        ),
        Schema::Applied(applied) => {
            let missing: Vec<String> = migrate::versions()
                .filter(|v| !applied.contains(v))
                .map(|v| v.to_string())
                .collect();
            let check = if missing.is_empty() {
                "ok".to_string()
            } else {
                format!(
                    "pending: migration(s) {} not applied; run `settle migrate`",
                    missing.join(", ")
                )
            };
            ("ok".to_string(), check)
        }
    };
    let ready = postgres_check == "ok" && migrations_check == "ok";
    let status = match (ready, redis) {
        (false, _) => "unavailable",
        (true, true) => "ready",
        (true, false) => "degraded",
    };
    let body = json!({
        "status": status,
        "instance": state.driver.instance(),
        "checks": {
            "postgres": postgres_check,
            "migrations": migrations_check,
            "redis": if redis { "ok" } else { "unreachable: running on Postgres leases alone" },
        },
        "in_flight": state.driver.in_flight(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(code).json(body)
}

/// `GET /metrics`: Prometheus text format 0.0.4.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.driver.render_metrics().await)
}
