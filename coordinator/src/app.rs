//! Builds the whole coordinator from settings: database, migrations, definitions
//! from `sagas/`, the driver and the HTTP server on its own listener (port 0 in tests).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::definition::{self, Format};
use crate::driver::Driver;
use crate::http::{self, AppState};
use crate::lock::Locks;
use crate::settings::Settings;
use crate::specs::Specs;
use crate::store;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    driver: Arc<Driver>,
    settings: Settings,
}

/// Stops a running application from elsewhere (a signal handler, a test).
#[derive(Clone)]
pub struct Handle {
    server: actix_web::dev::ServerHandle,
    driver: Arc<Driver>,
    shutdown_timeout: std::time::Duration,
}

impl Handle {
    /// Graceful stop: no new requests, calls in flight finish, owned work is given back.
    pub async fn stop(&self) {
        self.server.stop(true).await;
        self.driver.shutdown(self.shutdown_timeout).await;
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        if settings.database.create_if_missing {
            store::create_database_if_missing(&settings.database.url).await?;
        }
        let pool = store::pool(
            &settings.database.url,
            settings.database.pool_size,
            store::Timeouts::of(&settings.database),
        )?;
        store::migrate::run(&pool).await?;
        if let Some(dir) = &settings.coordinator.sagas_dir {
            load_definitions(&pool, dir, &settings.participants.allow).await?;
        }
        let locks = Arc::new(Locks::new(
            &settings.redis.url,
            &settings.redis.key_prefix,
            settings.redis.timeout,
        )?);
        if !locks.ping().await {
            tracing::warn!("redis is unreachable at start-up; running degraded on Postgres leases");
        }
        let specs = Arc::new(Specs::new(pool.clone()));
        let driver = Driver::new(pool.clone(), locks.clone(), specs.clone(), settings.clone())?;
        let state = web::Data::new(AppState {
            driver: driver.clone(),
            pool,
            specs,
            locks,
            settings: settings.clone(),
        });
        let listener = TcpListener::bind(settings.server.listen).map_err(|e| {
            anyhow::anyhow!("server.listen: cannot bind {}: {e}", settings.server.listen)
        })?;
        let port = listener.local_addr()?.port();
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(
                    actix_web::middleware::ErrorHandlers::new()
                        .default_handler(http::error::problem_for_plain_errors),
                )
                .wrap(actix_web::middleware::from_fn(http::auth::gate))
                .wrap(actix_web::middleware::from_fn(http::limits::guard_headers))
                .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("settle::http"))
                .configure(http::configure(state.clone()))
        });
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        };
        let server = server
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1))
            .run();
        driver.spawn_background();
        if !settings.auth.enabled() {
            tracing::warn!(
                address = %settings.server.listen,
                "no auth.tokens configured: the API is open to every process on this machine, so it listens on loopback only"
            );
        }
        tracing::info!(
            instance = %settings.coordinator.instance_id,
            address = %settings.server.listen.ip(),
            port,
            tls = settings.server.tls.is_some(),
            "coordinator listening"
        );
        Ok(Application {
            port,
            server,
            driver,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> Handle {
        Handle {
            server: self.server.handle(),
            driver: self.driver.clone(),
            shutdown_timeout: self.settings.server.shutdown_timeout,
        }
    }

    /// Serves until [`Handle::stop`] is called.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Registers every definition file in `dir`; a broken file stops start-up with its name and field.
pub async fn load_definitions(
    pool: &deadpool_postgres::Pool,
    dir: &Path,
    allow: &crate::allow::AllowList,
) -> anyhow::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(dir = %dir.display(), "no saga definition directory; skipping");
            return Ok(0);
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "coordinator.sagas_dir: reading {}: {e}",
                dir.display()
            ))
        }
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut count = 0;
    for path in paths {
        let Some(format) = Format::from_path(&path) else {
            continue;
        };
        let body =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let doc = definition::parse(&body, format)
            .map_err(|e| anyhow::anyhow!("saga definition {}: {e}", path.display()))?;
        definition::compile(&doc, 1)
            .and_then(|_| definition::check_participants(&doc, allow))
            .map_err(|e| anyhow::anyhow!("saga definition {}: {e}", path.display()))?;
        let spec = serde_json::to_value(&doc)?;
        let (stored, created) =
            store::definitions::register(pool, &doc.name, &spec, &definition::digest(&doc)).await?;
        tracing::info!(
            file = %path.display(),
            definition = %stored.name,
            version = stored.version,
            new = created,
            "loaded saga definition"
        );
        count += 1;
    }
    Ok(count)
}
