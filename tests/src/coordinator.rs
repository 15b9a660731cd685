//! Coordinators under test: in process (`Application::build` on port 0) or as a
//! real `settle serve` process that a test can SIGKILL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use settle_coordinator::app::{Application, Handle};
use settle_coordinator::settings::Settings;
use settle_participant::client::CoordinatorClient;

/// Settings for a coordinator on `db_url`: port 0, its own Redis key prefix and
/// instance id, a short lease and quick recovery so crash tests finish fast.
pub fn test_settings(db_url: &str, redis_url: &str) -> Settings {
    let mut s = Settings::defaults();
    s.server.listen = "127.0.0.1:0".parse().expect("address");
    s.server.shutdown_timeout = Duration::from_secs(5);
    s.database.url = db_url.to_string();
    s.database.pool_size = 8;
    s.redis.url = redis_url.to_string();
    s.redis.key_prefix = crate::unique("settle-test");
    s.coordinator.instance_id = crate::unique("test");
    s.coordinator.lease = Duration::from_secs(2);
    s.coordinator.recovery_interval = Duration::from_millis(100);
    s.coordinator.sagas_dir = None;
    s
}

pub struct TestCoordinator {
    pub base_url: String,
    pub client: CoordinatorClient,
    pub settings: Settings,
    handle: Handle,
    stopped: bool,
}

impl TestCoordinator {
    pub async fn start(settings: Settings) -> TestCoordinator {
        let app = Application::build(settings.clone())
            .await
            .expect("the coordinator starts");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        TestCoordinator {
            client: CoordinatorClient::new(&base_url).expect("client"),
            base_url,
            settings,
            handle,
            stopped: false,
        }
    }

    /// Graceful stop (what SIGTERM does).
    pub async fn stop(mut self) {
        self.handle.stop().await;
        crate::redis_server::clean_prefix(&self.settings.redis.key_prefix).await;
        self.stopped = true;
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        if !self.stopped {
            let handle = self.handle.clone();
            // Best effort when a test fails before stopping it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { handle.stop().await });
            }
        }
    }
}

/// A `settle serve` process.
pub struct CoordinatorProcess {
    pub base_url: String,
    pub client: CoordinatorClient,
    pub instance: String,
    pub log: std::path::PathBuf,
    child: Option<Child>,
}

impl CoordinatorProcess {
    /// Starts `binary serve` against `db_url` and waits until it answers `/healthz`.
    pub async fn spawn(
        binary: &str,
        db_url: &str,
        redis_url: &str,
        redis_prefix: &str,
        extra_env: &[(&str, &str)],
    ) -> CoordinatorProcess {
        Self::spawn_under(&[], binary, db_url, redis_url, redis_prefix, extra_env).await
    }

    /// [`CoordinatorProcess::spawn`] with `binary` run by another program, e.g.
    /// `["valgrind", "--tool=callgrind", ...]`: the process is that program's.
    pub async fn spawn_under(
        runner: &[&str],
        binary: &str,
        db_url: &str,
        redis_url: &str,
        redis_prefix: &str,
        extra_env: &[(&str, &str)],
    ) -> CoordinatorProcess {
        let port = crate::free_port();
        let instance = crate::unique("proc");
        let log = crate::artifacts_dir().join(format!("{instance}.log"));
        let log_file = std::fs::File::create(&log).expect("creating the process log");
        let mut command = match runner.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .env("SETTLE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("SETTLE__DATABASE__URL", db_url)
            .env("SETTLE__REDIS__URL", redis_url)
            .env("SETTLE__REDIS__KEY_PREFIX", redis_prefix)
            .env("SETTLE__COORDINATOR__INSTANCE_ID", &instance)
            .env("SETTLE__COORDINATOR__LEASE", "2s")
            .env("SETTLE__COORDINATOR__RECOVERY_INTERVAL", "100ms")
            .env("SETTLE__COORDINATOR__SAGAS_DIR", "")
            .env("SETTLE__LOG__JSON", "true")
            .env("SETTLE__LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting the settle process");
        let base_url = format!("http://127.0.0.1:{port}");
        let process = CoordinatorProcess {
            client: CoordinatorClient::new(&base_url).expect("client"),
            base_url: base_url.clone(),
            instance,
            log,
            child: Some(child),
        };
        let http = reqwest::Client::new();
        let log_path = process.log.clone();
        crate::eventually(
            &format!("settle to answer /healthz (log: {})", log_path.display()),
            Duration::from_secs(30),
            || {
                let http = http.clone();
                let url = format!("{base_url}/healthz");
                async move {
                    http.get(url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            },
        )
        .await;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to clean up, exactly like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself (after SIGTERM); returns its exit success.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.success();
                }
            } else {
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "settle did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The binary path is only known to integration tests (`CARGO_BIN_EXE_*`); they pass it in.
pub fn binary_exists(path: &str) -> bool {
    Path::new(path).exists()
}
