//! Shared set-up for the e2e tests: a database, a coordinator and a scripted participant.

use std::time::Duration;

use settle_participant::api::{NewBranch, NewTransaction};
use settle_tests::coordinator::{test_settings, TestCoordinator};
use settle_tests::db::TestDatabase;
use settle_tests::redis_server;
use settle_tests::scripted::ScriptedParticipant;
use uuid::Uuid;

/// The `settle` program as built for these tests.
pub const SETTLE_BIN: &str = env!("CARGO_BIN_EXE_settle-under-test");

pub struct World {
    pub db: TestDatabase,
    pub coordinator: TestCoordinator,
    pub participant: ScriptedParticipant,
}

impl World {
    pub async fn start() -> World {
        Self::start_with(|_| {}).await
    }

    /// With settings adjusted for the test (short retry budgets, say).
    pub async fn start_with(
        adjust: impl FnOnce(&mut settle_coordinator::settings::Settings),
    ) -> World {
        redis_server::require_shared().await;
        let db = TestDatabase::create().await;
        let mut settings = test_settings(&db.url, redis_server::SHARED);
        adjust(&mut settings);
        let coordinator = TestCoordinator::start(settings).await;
        let participant = ScriptedParticipant::start().await;
        World {
            db,
            coordinator,
            participant,
        }
    }

    /// Registers a definition written in YAML and returns its version.
    pub async fn register(&self, name: &str, yaml: &str) -> i32 {
        let (def, _) = self
            .coordinator
            .client
            .register_definition_yaml(name, yaml)
            .await
            .unwrap_or_else(|e| panic!("registering {name}: {e}"));
        def.version
    }

    /// Opens an interactive (TCC) transaction with ten minutes to live and
    /// registers `branch` with it; returns its id.
    pub async fn open_interactive(&self, branch: &NewBranch) -> Uuid {
        let client = &self.coordinator.client;
        let tx = client
            .create_transaction(&NewTransaction {
                participants: None,
                timeout: Some("10m".into()),
            })
            .await
            .unwrap();
        client.register_branch(tx.id, branch).await.unwrap();
        tx.id
    }

    pub async fn stop(self) {
        self.coordinator.stop().await;
        self.participant.stop().await;
    }
}

pub const WAIT: Duration = Duration::from_secs(20);

/// A response's `Content-Type`, or empty when it has none.
pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A saga of steps on the scripted participant: `(name, depends_on, with compensation)`;
/// paths are `/{name}` and `/{name}/undo`.
pub fn saga_yaml(
    world: &World,
    name: &str,
    extra: &str,
    steps: &[(&str, Option<&[&str]>, bool)],
) -> String {
    let mut yaml = format!(
        "name: {name}\n{extra}retry: {{ max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms }}\nsteps:\n"
    );
    for (step, deps, comp) in steps {
        yaml.push_str(&format!("  - name: {step}\n"));
        yaml.push_str(&format!(
            "    action: {{ url: \"{}\", timeout: 2s }}\n",
            world.participant.url(&format!("/{step}"))
        ));
        if *comp {
            yaml.push_str(&format!(
                "    compensation: {{ url: \"{}\" }}\n",
                world.participant.url(&format!("/{step}/undo"))
            ));
        }
        if let Some(deps) = deps {
            yaml.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
        }
    }
    yaml
}

/// The example shop on a fresh database: inventory, payments and shipping
/// participants with their ledgers, plus the stock level before the test.
pub struct Shop {
    pub db: TestDatabase,
    pub pool: deadpool_postgres::Pool,
    pub participants: settle_examples::Participants,
    pub stock_before: i64,
}

impl Shop {
    pub async fn open() -> Shop {
        let db = TestDatabase::create().await;
        let pool = db.pool(8);
        settle_examples::setup(&pool).await.unwrap();
        let participants = settle_examples::start(pool.clone(), "127.0.0.1", [0, 0, 0], None)
            .await
            .unwrap();
        let stock_before = settle_examples::ledger::stock(&pool, "widget")
            .await
            .unwrap();
        Shop {
            db,
            pool,
            participants,
            stock_before,
        }
    }

    pub async fn close(self) {
        self.participants.stop().await;
    }
}

/// One number from the database, for assertions.
pub async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}
