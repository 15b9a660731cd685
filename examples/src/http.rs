//! What the three example participants share: their per-service state (a pool and a
//! barrier in the service's schema), the handler error that answers 500
//! `participant_error`, and the in-process actix-web server they run on.

use std::net::SocketAddr;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use anyhow::Context;
use deadpool_postgres::Pool;
use settle_participant::barrier::{self, Barrier};
use settle_participant::participant::{error_chain, problem_response};
use settle_participant::signature::Verifier;

/// One participant service's state: its database pool and the barrier in its schema.
#[derive(Debug, Clone)]
pub struct Service {
    pub pool: Pool,
    pub barrier: Barrier,
}

/// Why a participant handler could not answer the call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No database connection could be had from the pool.
    #[error("getting a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The barrier or the business effect failed.
    #[error(transparent)]
    Barrier(#[from] barrier::Error),
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Pool(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Barrier(error) => error.status_code(),
        }
    }

    /// The cause chain goes to the log; the body says only that a retry is safe.
    fn error_response(&self) -> HttpResponse {
        match self {
            Error::Barrier(error) => error.error_response(),
            Error::Pool(_) => {
                tracing::error!(error = %error_chain(self), "participant call failed");
                problem_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "participant_error",
                    "the participant could not process the call; it is safe to retry",
                )
            }
        }
    }
}

/// A running participant server: where it listens and how to stop it.
pub(crate) struct Running {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds one participant's routes on `host:port` (0 = any free port) and spawns the
/// server on the current tokio runtime.
pub(crate) fn serve(
    host: &str,
    port: u16,
    service: Service,
    verifier: Option<Verifier>,
    routes: fn(&mut web::ServiceConfig),
) -> anyhow::Result<Running> {
    let service = web::Data::new(service);
    let verifier = verifier.map(web::Data::new);
    let server = HttpServer::new(move || {
        let mut app = App::new().app_data(service.clone());
        if let Some(verifier) = &verifier {
            app = app.app_data(verifier.clone());
        }
        app.configure(routes)
    })
    .workers(2)
    .disable_signals()
    .bind((host, port))
    .with_context(|| format!("binding {host}:{port}"))?;
    let addr = *server
        .addrs()
        .first()
        .with_context(|| format!("{host}:{port} resolved to no address"))?;
    let server: Server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(Running { addr, handle, task })
}
