//! Forward-only schema migrations from `migrations/`, applied under a Postgres
//! advisory lock so that instances starting together do not race.

use deadpool_postgres::Pool;

/// Every migration, in order. Changing the schema means adding a file here.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "two_phase_commit",
        include_str!("../../../migrations/0002_two_phase_commit.sql"),
    ),
    (
        3,
        "admin_listing",
        include_str!("../../../migrations/0003_admin_listing.sql"),
    ),
    (
        4,
        "admin_filters",
        include_str!("../../../migrations/0004_admin_filters.sql"),
    ),
    (
        5,
        "observability",
        include_str!("../../../migrations/0005_observability.sql"),
    ),
    (
        6,
        "hot_updates",
        include_str!("../../../migrations/0006_hot_updates.sql"),
    ),
    (
        7,
        "write_replay",
        include_str!("../../../migrations/0007_write_replay.sql"),
    ),
    (
        8,
        "lean_writes",
        include_str!("../../../migrations/0008_lean_writes.sql"),
    ),
    (
        9,
        "write_in_one_update",
        include_str!("../../../migrations/0009_write_in_one_update.sql"),
    ),
];

/// Arbitrary constant naming Settle's migration lock.
pub const MIGRATION_LOCK: i64 = 0x5e77_1e00_0001;

/// Applies the migrations that are missing; returns how many were applied.
///
/// Its connection runs without the pool's statement timeout: a migration may
/// rewrite a large table, and waiting for the migration lock lasts as long as
/// another instance's migrations. The bound is back before the connection
/// returns to the pool.
pub async fn run(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL to migrate: {e}"))?;
    client.batch_execute("SET statement_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    client.batch_execute("RESET statement_timeout").await?;
    result
}

async fn apply(client: &mut deadpool_postgres::Object) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS settle_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM settle_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} ({name}) failed: {e}"))?;
        tx.execute(
            "INSERT INTO settle_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Every migration version this binary embeds, for readiness checks (versions may
/// have gaps while branches are merged, so "the newest is applied" is not enough).
pub fn versions() -> impl Iterator<Item = i32> {
    MIGRATIONS.iter().map(|m| m.0)
}

/// The newest migration this binary knows, for readiness checks.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
