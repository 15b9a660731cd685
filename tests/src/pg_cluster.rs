//! A throwaway PostgreSQL cluster of a test's own (`initdb` + `pg_ctl` in a fresh
//! directory under /tmp, on a free port of 127.0.0.1), for what the shared server on
//! 5432 must never be put through: a different configuration (XA participants need
//! `max_prepared_transactions > 0`), a crash and a restart. Dropping it stops it and
//! removes its directory.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio_postgres::NoTls;

/// How long a start (or restart, with crash recovery) may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the cluster is started with.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `max_prepared_transactions`; 0 turns prepared transactions off, as on a
    /// server's default configuration.
    pub max_prepared_transactions: u32,
    /// Further `postgresql.conf` lines, e.g. `("log_min_messages", "debug1")`.
    pub extra: Vec<(String, String)>,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_prepared_transactions: 64,
            extra: Vec::new(),
        }
    }
}

/// A PostgreSQL cluster in its own directory, run as the `postgres` OS user when the
/// tests run as root (`initdb` and `postgres` refuse to run as root).
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("running", &self.running)
            .finish()
    }
}

impl PgCluster {
    /// Creates the cluster with the newest installed PostgreSQL, starts it and waits
    /// until it accepts connections. Fails the test when PostgreSQL is not installed.
    pub async fn start(settings: PgSettings) -> PgCluster {
        let bin = newest_bin_dir();
        let as_postgres = running_as_root().await;
        let dir = Path::new("/tmp").join(format!("settle-pg-{}", crate::unique("cluster")));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut cluster = PgCluster {
            port: crate::free_port(),
            dir,
            bin,
            as_postgres,
            running: false,
        };
        if as_postgres {
            let chown = tokio::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cluster.dir)
                .output()
                .await
                .expect("running chown");
            check("chown", &chown);
        }
        // --no-sync only skips initdb's final flush of the files it wrote; the server
        // itself runs with fsync on, as a real one does.
        let initdb = cluster
            .command("initdb")
            .arg("--pgdata")
            .arg(cluster.data_dir())
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .await
            .expect("running initdb");
        check("initdb", &initdb);
        cluster.configure(&settings);
        cluster.start_again().await;
        cluster
    }

    /// `postgres://postgres@127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates a database; the name must be a plain lower-case identifier.
    pub async fn create_database(&self, name: &str) {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name:?} is not a plain database name"
        );
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .expect("connecting to the throwaway cluster");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    }

    /// Shuts down cleanly (`pg_ctl stop -m fast`): clients are disconnected, open
    /// transactions rolled back, prepared ones kept.
    pub async fn stop(&mut self) {
        self.pg_ctl_stop("fast").await;
    }

    /// Stops like a crash (`pg_ctl stop -m immediate`: every process quits at once,
    /// without a checkpoint); the next start runs crash recovery from the WAL.
    pub async fn kill(&mut self) {
        self.pg_ctl_stop("immediate").await;
    }

    /// Starts the cluster (again) on the same data directory and port, and waits
    /// until it accepts connections.
    pub async fn start_again(&mut self) {
        let start = self
            .command("pg_ctl")
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(self.log_path())
            // Readiness is checked below with a real connection.
            .args(["--no-wait", "start"])
            .output()
            .await
            .expect("running pg_ctl start");
        check("pg_ctl start", &start);
        self.running = true;
        let url = self.url("postgres");
        let log = self.log_path();
        crate::eventually(
            &format!(
                "the throwaway cluster on port {} to accept connections (log: {})",
                self.port,
                log.display()
            ),
            START_TIMEOUT,
            || {
                let url = url.clone();
                async move {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                    tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.ok()
                }
            },
        )
        .await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Writes the settings into `postgresql.conf`, where every later start reads them.
    fn configure(&self, settings: &PgSettings) {
        let mut conf = format!(
            "\n# settle: throwaway test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_prepared_transactions = {prepared}\n\
             max_connections = 50\n\
             shared_buffers = 32MB\n",
            port = self.port,
            socket_dir = self.dir.display(),
            prepared = settings.max_prepared_transactions,
        );
        for (key, value) in &settings.extra {
            conf.push_str(&format!("{key} = '{value}'\n"));
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    async fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let stop = self
            .command("pg_ctl")
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--mode", mode, "--wait", "stop"])
            .output()
            .await
            .expect("running pg_ctl stop");
        check(&format!("pg_ctl stop -m {mode}"), &stop);
        self.running = false;
    }

    /// `program` from the PostgreSQL bin directory, as the `postgres` user when root.
    fn command(&self, program: &str) -> tokio::process::Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            tokio::process::Command::new(path)
        };
        // The postgres user may not be able to enter the test's working directory.
        command.current_dir(&self.dir).kill_on_drop(true);
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let path = self.bin.join("pg_ctl");
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            } else {
                std::process::Command::new(path)
            };
            let stopped = command
                .current_dir(&self.dir)
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--mode", "immediate", "--wait", "stop"])
                .output();
            if !stopped.is_ok_and(|output| output.status.success()) {
                eprintln!(
                    "could not stop the throwaway cluster in {}; leaving it there",
                    self.dir.display()
                );
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/usr/lib/postgresql/{newest version}/bin`.
fn newest_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL must be installed for these tests ({}: {e})",
            root.display()
        )
    });
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: f64 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no {}/*/bin/initdb: install postgresql", root.display()))
}

async fn running_as_root() -> bool {
    let output = tokio::process::Command::new("id")
        .arg("-u")
        .output()
        .await
        .expect("running id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
