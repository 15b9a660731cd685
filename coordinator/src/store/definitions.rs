//! Saga definition versions: immutable rows, a new version only when content changes.

use std::time::SystemTime;

use deadpool_postgres::Pool;
use serde_json::Value;

use super::Result;

/// One stored definition version.
#[derive(Debug, Clone)]
pub struct StoredDefinition {
    pub name: String,
    pub version: i32,
    pub spec: Value,
    pub digest: String,
    pub created_at: SystemTime,
}

impl StoredDefinition {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        StoredDefinition {
            name: row.get("name"),
            version: row.get("version"),
            spec: row.get("spec"),
            digest: row.get("digest"),
            created_at: row.get("created_at"),
        }
    }
}

const COLUMNS: &str = "name, version, spec, digest, created_at";

/// Registers `spec` under `name`: returns the latest version unchanged when its
/// digest matches, a new version otherwise. The bool says whether it is new.
pub async fn register(
    pool: &Pool,
    name: &str,
    spec: &Value,
    digest: &str,
) -> Result<(StoredDefinition, bool)> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serializes concurrent registrations of one name without touching others.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('settle-definition:' || $1, 0))",
        &[&name],
    )
    .await?;
    let latest = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM saga_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1"),
            &[&name],
        )
        .await?
        .map(|r| StoredDefinition::from_row(&r));
    if let Some(latest) = latest.as_ref().filter(|l| l.digest == digest) {
        tx.commit().await?;
        return Ok((latest.clone(), false));
    }
    let version = latest.map_or(1, |l| l.version + 1);
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO saga_definitions (name, version, spec, digest) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
            ),
            &[&name, &version, spec, &digest],
        )
        .await?;
    tx.commit().await?;
    Ok((StoredDefinition::from_row(&row), true))
}

/// The number of the newest version of a definition: all a start needs when that
/// version is already compiled (versions never change once stored).
pub async fn latest_version(pool: &Pool, name: &str) -> Result<Option<i32>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT max(version) FROM saga_definitions WHERE name = $1")
        .await?;
    Ok(client.query_one(&stmt, &[&name]).await?.get(0))
}

/// The newest version of a definition.
pub async fn latest(pool: &Pool, name: &str) -> Result<Option<StoredDefinition>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM saga_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&name])
        .await?
        .map(|r| StoredDefinition::from_row(&r)))
}

/// One specific version.
pub async fn version(pool: &Pool, name: &str, version: i32) -> Result<Option<StoredDefinition>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM saga_definitions WHERE name = $1 AND version = $2"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&name, &version])
        .await?
        .map(|r| StoredDefinition::from_row(&r)))
}

/// The latest version of every definition, by name.
pub async fn list_latest(pool: &Pool) -> Result<Vec<StoredDefinition>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT ON (name) {COLUMNS} FROM saga_definitions ORDER BY name, version DESC"
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(StoredDefinition::from_row).collect())
}

/// Every version of one definition, newest first.
pub async fn versions(pool: &Pool, name: &str) -> Result<Vec<StoredDefinition>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM saga_definitions WHERE name = $1 ORDER BY version DESC"
            ),
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(StoredDefinition::from_row).collect())
}
