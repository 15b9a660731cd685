//! The XA participant and the money-transfer bank on throwaway Postgres clusters of
//! their own (the shared server runs with `max_prepared_transactions = 0`, and must
//! never be crashed): transfers prepared and committed or aborted over signed HTTP,
//! no votes, duplicates and late calls, locks held by prepared transactions, races
//! answered with a retry, a Postgres crash between the phases, and a bank process
//! SIGKILLed between prepare and commit that commits after its restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use settle_examples::bank::{self, Bank};
use settle_participant::barrier::{
    ALREADY_ABORTED, ALREADY_COMMITTED, HANGING_PREPARE, NOT_PREPARED,
};
use settle_participant::participant::Reply;
use settle_participant::protocol::{
    BranchCall, BranchPhase, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER,
};
use settle_participant::signature::{now_unix, sign, Verifier};
use settle_participant::xa::{self, Outcome, Vote, XaParticipant};
use settle_tests::pg_cluster::{PgCluster, PgSettings};
use tokio::sync::Notify;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const SECRET: &[u8] = b"bank-signing-secret";
const WAIT: Duration = Duration::from_secs(30);

fn call(transaction_id: Uuid, branch: &str, phase: BranchPhase, payload: Value) -> BranchCall {
    BranchCall {
        transaction_id,
        branch: branch.to_owned(),
        phase,
        attempt: 1,
        payload,
    }
}

/// One leg of a transfer at a bank.
#[derive(Clone, Copy)]
struct Leg {
    transaction_id: Uuid,
    branch: &'static str,
    account: &'static str,
    delta: i64,
}

impl Leg {
    fn new(branch: &'static str, account: &'static str, delta: i64) -> Leg {
        Leg {
            transaction_id: Uuid::now_v7(),
            branch,
            account,
            delta,
        }
    }

    /// The same leg in another transaction.
    fn of(transaction_id: Uuid, branch: &'static str, account: &'static str, delta: i64) -> Leg {
        Leg {
            transaction_id,
            branch,
            account,
            delta,
        }
    }

    fn call(&self, phase: BranchPhase) -> BranchCall {
        call(
            self.transaction_id,
            self.branch,
            phase,
            json!({ "account": self.account, "delta": self.delta }),
        )
    }

    fn gid(&self) -> String {
        xa::gid(self.transaction_id, self.branch).unwrap()
    }
}

/// Sends a branch call, signed, to `{base}/{phase}` as the coordinator would.
async fn send(http: &reqwest::Client, base: &str, call: &BranchCall) -> (u16, Value) {
    let body = serde_json::to_vec(call).unwrap();
    let response = http
        .post(format!("{base}/{}", call.phase))
        .header(IDEMPOTENCY_KEY_HEADER, call.idempotency_key())
        .header(SIGNATURE_HEADER, sign(SECRET, now_unix(), &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("calling {base}/{}: {e}", call.phase));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Sends a call until it is answered with `status`, as the coordinator's retries would.
async fn send_until(http: &reqwest::Client, base: &str, call: &BranchCall, status: u16) -> Value {
    settle_tests::eventually(
        &format!("{} of {} to answer {status}", call.phase, call.branch),
        WAIT,
        || async move {
            let (got, body) = send(http, base, call).await;
            (got == status).then_some(body)
        },
    )
    .await
}

/// A bank on a throwaway cluster, with alice, bob and carol holding 1000 each.
struct World {
    pool: Pool,
    bank: Bank,
    base: String,
    http: reqwest::Client,
    // Last, so that it goes after the pool and the server.
    cluster: PgCluster,
}

impl World {
    async fn open() -> World {
        let cluster = PgCluster::start(PgSettings::default()).await;
        let pool = settle_examples::connect(&cluster.url("bank"), 8)
            .await
            .expect("connecting to the bank's database");
        let accounts = [("alice", 1000), ("bob", 1000), ("carol", 1000)];
        bank::setup(&pool, &accounts).await.expect("setting up");
        bank::setup(&pool, &[("alice", 5)])
            .await
            .expect("setting up again changes nothing");
        let verifier = Verifier::new(vec![SECRET.to_vec()]);
        let bank = bank::start(pool.clone(), "127.0.0.1", 0, Some(verifier))
            .await
            .expect("starting the bank");
        World {
            base: bank.url(""),
            pool,
            bank,
            http: reqwest::Client::new(),
            cluster,
        }
    }

    async fn send(&self, call: &BranchCall) -> (u16, Value) {
        send(&self.http, &self.base, call).await
    }

    async fn balances(&self) -> [i64; 3] {
        let mut balances = [0; 3];
        for (balance, account) in balances.iter_mut().zip(["alice", "bob", "carol"]) {
            *balance = bank::balance(&self.pool, account).await.unwrap();
        }
        balances
    }

    async fn prepared(&self) -> Vec<String> {
        bank::prepared(&self.pool).await.unwrap()
    }

    async fn close(self) {
        assert_eq!(
            bank::total(&self.pool).await.unwrap(),
            3000,
            "money is conserved"
        );
        self.bank.stop().await;
    }
}

fn refusal(body: &Value) -> &str {
    assert_eq!(body["code"], "refused", "{body}");
    body["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_prepared_transfer_commits_and_moves_the_money_once() {
    let world = World::open().await;
    let id = Uuid::now_v7();
    let (debit, credit) = (
        Leg::of(id, "debit", "alice", -100),
        Leg::of(id, "credit", "bob", 100),
    );

    for leg in [debit, credit] {
        let (status, body) = world.send(&leg.call(BranchPhase::Prepare)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({ "outcome": "prepared", "gid": leg.gid() }));
    }
    assert_eq!(world.prepared().await, [credit.gid(), debit.gid()]);
    assert_eq!(
        world.balances().await,
        [1000, 1000, 1000],
        "prepared work is invisible"
    );

    // A duplicate prepare while prepared says yes again without a second transaction.
    let (status, again) = world.send(&debit.call(BranchPhase::Prepare)).await;
    assert_eq!(
        (status, again["gid"].as_str()),
        (200, Some(debit.gid().as_str()))
    );
    assert_eq!(world.prepared().await.len(), 2);

    for leg in [debit, credit] {
        let (status, body) = world.send(&leg.call(BranchPhase::Commit)).await;
        assert_eq!((status, body), (200, json!({ "outcome": "committed" })));
    }
    assert_eq!(world.balances().await, [900, 1100, 1000]);
    assert!(world.prepared().await.is_empty());

    // Duplicates after the commit change nothing.
    for leg in [debit, credit] {
        assert_eq!(world.send(&leg.call(BranchPhase::Commit)).await.0, 200);
        let (status, body) = world.send(&leg.call(BranchPhase::Prepare)).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("prepared")));
    }
    let (status, body) = world.send(&debit.call(BranchPhase::Abort)).await;
    assert_eq!((status, refusal(&body)), (409, ALREADY_COMMITTED));
    assert_eq!(world.balances().await, [900, 1100, 1000]);
    assert!(world.prepared().await.is_empty());
    world.close().await;
}

#[tokio::test]
async fn an_aborted_transfer_leaves_the_money_where_it_was() {
    let world = World::open().await;
    let id = Uuid::now_v7();
    let (debit, credit) = (
        Leg::of(id, "debit", "alice", -100),
        Leg::of(id, "credit", "bob", 100),
    );
    for leg in [debit, credit] {
        assert_eq!(world.send(&leg.call(BranchPhase::Prepare)).await.0, 200);
    }
    for _ in 0..2 {
        for leg in [debit, credit] {
            let (status, body) = world.send(&leg.call(BranchPhase::Abort)).await;
            assert_eq!((status, body), (200, json!({ "outcome": "aborted" })));
        }
    }
    assert_eq!(world.balances().await, [1000, 1000, 1000]);
    assert!(world.prepared().await.is_empty());

    // A prepare delivered late does not prepare again; a commit is a protocol error.
    let (status, body) = world.send(&debit.call(BranchPhase::Prepare)).await;
    assert_eq!((status, refusal(&body)), (409, xa::ABORTED));
    let (status, body) = world.send(&debit.call(BranchPhase::Commit)).await;
    assert_eq!((status, refusal(&body)), (409, ALREADY_ABORTED));
    assert!(world.prepared().await.is_empty());
    assert_eq!(world.balances().await, [1000, 1000, 1000]);
    world.close().await;
}

#[tokio::test]
async fn an_overdraft_or_an_unknown_account_votes_no_and_prepares_nothing() {
    let world = World::open().await;
    let overdraft = Leg::new("debit", "alice", -5000);
    let (status, body) = world.send(&overdraft.call(BranchPhase::Prepare)).await;
    assert_eq!(status, 409, "{body}");
    let reason = refusal(&body).to_owned();
    assert!(reason.contains("holds 1000"), "{reason}");
    // The no vote is recorded: a duplicate gets the same answer, the abort is harmless.
    let (status, again) = world.send(&overdraft.call(BranchPhase::Prepare)).await;
    assert_eq!((status, refusal(&again)), (409, reason.as_str()));
    let (status, _) = world.send(&overdraft.call(BranchPhase::Abort)).await;
    assert_eq!(status, 200);

    let unknown = Leg::new("credit", "mallory", 100);
    let (status, body) = world.send(&unknown.call(BranchPhase::Prepare)).await;
    assert_eq!(status, 409);
    assert!(refusal(&body).contains("unknown account"), "{body}");

    let malformed = call(
        Uuid::now_v7(),
        "debit",
        BranchPhase::Prepare,
        json!({ "account": "alice" }),
    );
    let (status, body) = world.send(&malformed).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_input"))
    );

    assert!(world.prepared().await.is_empty());
    assert_eq!(world.balances().await, [1000, 1000, 1000]);
    world.close().await;
}

#[tokio::test]
async fn an_abort_before_the_prepare_is_null_and_the_late_prepare_is_refused() {
    let world = World::open().await;
    let leg = Leg::new("debit", "alice", -100);
    let (status, body) = world.send(&leg.call(BranchPhase::Abort)).await;
    assert_eq!((status, body), (200, json!({ "outcome": "aborted" })));
    let (status, body) = world.send(&leg.call(BranchPhase::Prepare)).await;
    assert_eq!((status, refusal(&body)), (409, HANGING_PREPARE));

    let never = Leg::new("debit", "alice", -100);
    let (status, body) = world.send(&never.call(BranchPhase::Commit)).await;
    assert_eq!((status, refusal(&body)), (409, NOT_PREPARED));

    assert!(world.prepared().await.is_empty());
    assert_eq!(world.balances().await, [1000, 1000, 1000]);
    world.close().await;
}

#[tokio::test]
async fn a_prepared_debit_holds_its_account_until_the_decision() {
    let world = World::open().await;
    let (first, second) = (
        Leg::new("debit", "alice", -100),
        Leg::new("debit", "alice", -100),
    );
    assert_eq!(world.send(&first.call(BranchPhase::Prepare)).await.0, 200);
    // The first's prepared transaction holds alice's row: the second gives up after
    // the lock timeout and asks to be retried.
    let (status, body) = world.send(&second.call(BranchPhase::Prepare)).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("retry_later")));
    assert_eq!(world.prepared().await, [first.gid()]);

    assert_eq!(world.send(&first.call(BranchPhase::Commit)).await.0, 200);
    assert_eq!(world.send(&second.call(BranchPhase::Prepare)).await.0, 200);
    assert_eq!(world.send(&second.call(BranchPhase::Commit)).await.0, 200);
    assert_eq!(world.balances().await[0], 800);
    // Someone has to receive it, for the books to balance at the end.
    let credit = Leg::new("credit", "bob", 200);
    assert_eq!(world.send(&credit.call(BranchPhase::Prepare)).await.0, 200);
    assert_eq!(world.send(&credit.call(BranchPhase::Commit)).await.0, 200);
    world.close().await;
}

#[tokio::test]
async fn unsigned_and_misaddressed_calls_are_rejected() {
    let world = World::open().await;
    let leg = Leg::new("debit", "alice", -100);
    let response = world
        .http
        .post(world.bank.url("/prepare"))
        .json(&leg.call(BranchPhase::Prepare))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // A commit call sent to the prepare endpoint.
    let body = serde_json::to_vec(&leg.call(BranchPhase::Commit)).unwrap();
    let response = world
        .http
        .post(world.bank.url("/prepare"))
        .header(SIGNATURE_HEADER, sign(SECRET, now_unix(), &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(world.prepared().await.is_empty());
    world.close().await;
}

#[tokio::test]
async fn prepared_transactions_survive_a_postgres_crash_and_settle_after_it() {
    let mut world = World::open().await;
    let (debit, credit) = (
        Leg::new("debit", "alice", -100),
        Leg::new("credit", "carol", 50),
    );
    for leg in [debit, credit] {
        assert_eq!(world.send(&leg.call(BranchPhase::Prepare)).await.0, 200);
    }

    world.cluster.kill().await;
    world.cluster.start_again().await;

    let mut in_doubt = settle_tests::eventually("the bank database to answer", WAIT, || async {
        bank::prepared(&world.pool).await.ok()
    })
    .await;
    in_doubt.sort();
    let mut expected = vec![debit.gid(), credit.gid()];
    expected.sort();
    assert_eq!(in_doubt, expected, "both survived crash recovery");

    // The bank's pooled connections died with the server: the first calls may fail
    // and are retried, as the coordinator would.
    send_until(
        &world.http,
        &world.base,
        &debit.call(BranchPhase::Commit),
        200,
    )
    .await;
    send_until(
        &world.http,
        &world.base,
        &credit.call(BranchPhase::Abort),
        200,
    )
    .await;
    assert_eq!(world.balances().await, [900, 1000, 1000]);
    assert!(world.prepared().await.is_empty());

    let refill = Leg::new("credit", "bob", 100);
    assert_eq!(world.send(&refill.call(BranchPhase::Prepare)).await.0, 200);
    assert_eq!(world.send(&refill.call(BranchPhase::Commit)).await.0, 200);
    world.close().await;
}

#[tokio::test]
async fn a_server_without_prepared_transactions_is_refused_at_setup() {
    let cluster = PgCluster::start(PgSettings {
        max_prepared_transactions: 0,
        ..PgSettings::default()
    })
    .await;
    let pool = settle_examples::connect(&cluster.url("bank"), 2)
        .await
        .expect("connecting");
    let error = bank::setup(&pool, &[("alice", 1000)])
        .await
        .expect_err("a server that cannot prepare transactions is refused");
    let chain = format!("{error:#}");
    assert!(chain.contains("max_prepared_transactions = 0"), "{chain}");
    let root = error.root_cause().downcast_ref::<xa::Error>();
    assert!(
        matches!(root, Some(xa::Error::PreparedTransactionsDisabled)),
        "{chain}"
    );
}

/// A cluster with an XA participant set up in `public` of database `xa`, and a table
/// `holds(transaction_id)` for effects to write to.
async fn xa_world(lock_timeout: Duration) -> (PgCluster, XaParticipant, String) {
    let cluster = PgCluster::start(PgSettings::default()).await;
    cluster.create_database("xa").await;
    let url = cluster.url("xa");
    let xa = XaParticipant::new("public")
        .unwrap()
        .with_lock_timeout(lock_timeout);
    let db = connect(&url).await;
    xa.ensure_table(&db).await.expect("setting up");
    xa.ensure_table(&db).await.expect("setting up again");
    db.batch_execute("CREATE TABLE holds (transaction_id uuid NOT NULL)")
        .await
        .unwrap();
    (cluster, xa, url)
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connecting to the throwaway cluster");
    tokio::spawn(connection);
    client
}

async fn holds(db: &Client, id: Uuid) -> i64 {
    db.query_one(
        "SELECT count(*) FROM holds WHERE transaction_id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

/// Prepares `call` with an effect that writes a hold, tells `started`, and votes yes
/// only once `release` is notified, so another call can race it meanwhile.
async fn slow_prepare(
    xa: &XaParticipant,
    db: &mut Client,
    call: &BranchCall,
    started: &Notify,
    release: &Notify,
) -> Reply {
    xa.prepare(db, call, async |tx| {
        tx.execute(
            "INSERT INTO holds (transaction_id) VALUES ($1)",
            &[&call.transaction_id],
        )
        .await?;
        started.notify_one();
        release.notified().await;
        Ok::<_, tokio_postgres::Error>(Vote::Yes)
    })
    .await
    .expect("the prepare settles")
}

#[tokio::test]
async fn an_abort_racing_a_prepare_in_flight_is_retried_and_then_rolls_it_back() {
    let (_cluster, xa, url) = xa_world(Duration::from_millis(200)).await;
    let (mut first, mut second, observer) = (
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    );
    let id = Uuid::now_v7();
    let (prepare_call, abort_call) = (
        call(id, "hold", BranchPhase::Prepare, Value::Null),
        call(id, "hold", BranchPhase::Abort, Value::Null),
    );
    let (started, release) = (Notify::new(), Notify::new());

    let (prepared, racing_abort) = tokio::join!(
        slow_prepare(&xa, &mut first, &prepare_call, &started, &release),
        async {
            started.notified().await;
            // Waits on the prepare's claim row until the lock timeout.
            let reply = xa.abort(&mut second, &abort_call).await;
            release.notify_one();
            reply
        }
    );
    assert_eq!(racing_abort.unwrap(), Reply::Retry(xa::BUSY.to_owned()));
    assert!(matches!(prepared, Reply::Done(_)), "{prepared:?}");
    assert_eq!(
        xa.outcome(&observer, id, "hold").await.unwrap(),
        Some(Outcome::Prepared)
    );

    // The coordinator's retry finds it prepared and rolls it back.
    let abort = xa.abort(&mut second, &abort_call).await.unwrap();
    assert_eq!(abort, Reply::Done(json!({ "outcome": "aborted" })));
    assert_eq!(
        xa.outcome(&observer, id, "hold").await.unwrap(),
        Some(Outcome::Aborted)
    );
    assert_eq!(holds(&observer, id).await, 0);
    assert!(xa.prepared_branches(&observer).await.unwrap().is_empty());
    let late = xa
        .prepare(&mut first, &prepare_call, async |_tx| {
            Ok::<_, tokio_postgres::Error>(Vote::Yes)
        })
        .await
        .unwrap();
    assert_eq!(late, Reply::Refuse(xa::ABORTED.to_owned()));
}

#[tokio::test]
async fn a_duplicate_prepare_racing_the_first_is_retried_and_then_says_yes_again() {
    let (_cluster, xa, url) = xa_world(Duration::from_millis(200)).await;
    let (mut first, mut second, observer) = (
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    );
    let id = Uuid::now_v7();
    let prepare_call = call(id, "hold", BranchPhase::Prepare, Value::Null);
    let (started, release) = (Notify::new(), Notify::new());
    let never_runs = async |_tx: &tokio_postgres::Transaction<'_>| {
        Ok::<_, tokio_postgres::Error>(Vote::No("the duplicate ran its effect".to_owned()))
    };

    let (prepared, duplicate) = tokio::join!(
        slow_prepare(&xa, &mut first, &prepare_call, &started, &release),
        async {
            started.notified().await;
            let reply = xa.prepare(&mut second, &prepare_call, never_runs).await;
            release.notify_one();
            reply
        }
    );
    assert_eq!(duplicate.unwrap(), Reply::Retry(xa::BUSY.to_owned()));
    let again = xa
        .prepare(&mut second, &prepare_call, never_runs)
        .await
        .unwrap();
    assert_eq!(again, prepared, "the same yes, without running the effect");

    let branches = xa.prepared_branches(&observer).await.unwrap();
    assert_eq!(branches.len(), 1, "one prepared transaction");
    assert_eq!(
        (branches[0].transaction_id, branches[0].branch.as_str()),
        (id, "hold")
    );
    let commit = xa
        .commit(&mut second, &branches[0].call(BranchPhase::Commit))
        .await
        .unwrap();
    assert_eq!(commit, Reply::Done(json!({ "outcome": "committed" })));
    assert_eq!(holds(&observer, id).await, 1);
    assert_eq!(
        xa.outcome(&observer, id, "hold").await.unwrap(),
        Some(Outcome::Committed)
    );
}

/// `bank-participants`, built for these tests: cargo does not build another
/// package's binaries for them, so the first caller runs `cargo build` (a quick no-op
/// when it is up to date, and never a stale binary) into the same target directory,
/// where the binary lands next to the test binary's `deps` directory
/// (`target/debug/deps/e2e-…` → `target/debug/`).
fn bank_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "-p",
                "settle-examples",
                "--bin",
                "bank-participants",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building bank-participants failed");
        let binary = profile_dir.join(format!("bank-participants{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.exists(), "{} is missing", binary.display());
        binary
    })
}

/// `bank-participants` running bank-a alone, as a real process.
struct BankProcess {
    port: u16,
    db_url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl BankProcess {
    async fn spawn(db_url: &str) -> BankProcess {
        let mut process = BankProcess {
            port: settle_tests::free_port(),
            db_url: db_url.to_owned(),
            log: settle_tests::artifacts_dir()
                .join(format!("{}.log", settle_tests::unique("bank-participants"))),
            child: None,
        };
        process.start().await;
        process
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and database, and waits for `/healthz`.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the process log");
        let child = Command::new(bank_binary())
            .env("SETTLE_BANKS", "a")
            .env("SETTLE_BANK_A_URL", &self.db_url)
            .env("SETTLE_BANK_A_PORT", self.port.to_string())
            .env(
                "SETTLE_SIGNING_SECRET",
                std::str::from_utf8(SECRET).unwrap(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting bank-participants");
        self.child = Some(child);
        let (http, url) = (reqwest::Client::new(), format!("{}/healthz", self.base()));
        settle_tests::eventually(
            &format!("bank-participants to answer (log: {})", self.log.display()),
            WAIT,
            || async {
                let response = http.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// SIGKILL: no chance to clean up, exactly like a crash.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BankProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test]
async fn a_bank_process_killed_between_prepare_and_commit_commits_after_its_restart() {
    let cluster = PgCluster::start(PgSettings::default()).await;
    let db_url = cluster.url("bank_a");
    let mut process = BankProcess::spawn(&db_url).await;
    let http = reqwest::Client::new();
    let debit = Leg::new("debit", "alice", -100);

    let (status, body) = send(&http, &process.base(), &debit.call(BranchPhase::Prepare)).await;
    assert_eq!(status, 200, "{body}");
    process.kill9();

    let pool = settle_examples::connect(&db_url, 2).await.unwrap();
    assert_eq!(bank::prepared(&pool).await.unwrap(), [debit.gid()]);
    assert_eq!(bank::balance(&pool, "alice").await.unwrap(), 1000);

    process.start().await;
    assert!(
        process
            .log_text()
            .contains("waiting for the coordinator's decision"),
        "the restarted bank reports its prepared transaction:\n{}",
        process.log_text()
    );
    let (status, body) = send(&http, &process.base(), &debit.call(BranchPhase::Commit)).await;
    assert_eq!((status, body), (200, json!({ "outcome": "committed" })));
    assert_eq!(bank::balance(&pool, "alice").await.unwrap(), 900);
    assert!(bank::prepared(&pool).await.unwrap().is_empty());

    // A duplicate commit after the restart is acknowledged too.
    let (status, _) = send(&http, &process.base(), &debit.call(BranchPhase::Commit)).await;
    assert_eq!(status, 200);
    assert_eq!(bank::balance(&pool, "alice").await.unwrap(), 900);
}
