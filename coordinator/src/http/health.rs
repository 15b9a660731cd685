//! Liveness and readiness: Postgres reachable with the schema migrated, and Redis
//! reachable (without Redis the coordinator runs, degraded).

use std::time::Duration;

use actix_web::{http::StatusCode, web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::store::migrate;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = Duration::from_secs(2);
    let postgres = tokio::time::timeout(timeout, async {
        let client = state.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM settle_migrations",
                &[],
            )
            .await
            .ok()?;
        Some(row.get::<_, i32>(0))
    })
    .await
    .ok()
    .flatten();
    let redis = state.locks.ping().await;
    let (postgres_check, migrations_check) = match postgres {
        None => ("unreachable", "unknown"),
        Some(v) if v >= migrate::latest_version() => ("ok", "ok"),
        Some(_) => ("ok", "pending"),
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
