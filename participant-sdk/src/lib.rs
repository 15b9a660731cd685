//! Participant SDK for Settle: the wire protocol, a coordinator client, actix-web
//! helpers for participant endpoints, request signing, the idempotency barrier and an
//! XA-style two-phase-commit participant on Postgres.
//!
//! A participant endpoint is an actix-web handler that takes a
//! [`participant::ParticipantCall`] (read, signature-checked, parsed), runs its
//! business effect through a [`barrier::Barrier`] so duplicates, null compensations
//! and late actions are harmless, and answers with a [`participant::Reply`]:
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use settle_participant::barrier::{self, Barrier};
//! use settle_participant::participant::{ParticipantCall, Reply};
//! use settle_participant::signature::Verifier;
//!
//! struct Payments {
//!     barrier: Barrier,
//!     db_url: String,
//! }
//!
//! async fn charge(
//!     state: web::Data<Payments>,
//!     call: ParticipantCall,
//! ) -> Result<Reply, barrier::Error> {
//!     let (mut db, connection) = tokio_postgres::connect(&state.db_url, tokio_postgres::NoTls).await?;
//!     actix_web::rt::spawn(connection);
//!     let id = call.call.transaction_id;
//!     state
//!         .barrier
//!         .action(&mut db, &call.call, async |tx| {
//!             tx.execute("INSERT INTO payments.charges (transaction_id) VALUES ($1)", &[&id])
//!                 .await?;
//!             Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::json!({ "charge_id": id })))
//!         })
//!         .await
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let state = web::Data::new(Payments {
//!         barrier: Barrier::new("payments").expect("a plain schema name"),
//!         db_url: "host=127.0.0.1 user=postgres".into(),
//!     });
//!     let verifier = web::Data::new(Verifier::new(vec![b"signing-secret".to_vec()]));
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(state.clone())
//!             .app_data(verifier.clone())
//!             .route("/charges", web::post().to(charge))
//!     })
//!     .bind(("127.0.0.1", 7102))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! Two-phase commit and TCC branches work the same way with
//! [`participant::BranchRequest`]: the barrier's `prepare` / `commit` / `abort` (TCC
//! `try_` / `confirm` / `cancel`) guard effects that commit locally, and
//! [`xa::XaParticipant`] keeps a prepared branch's work in a Postgres prepared
//! transaction (`PREPARE TRANSACTION`) until the decision arrives.
//!
//! The coordinator side is [`client::CoordinatorClient`].

pub mod api;
pub mod barrier;
pub mod client;
pub mod participant;
pub mod protocol;
pub mod signature;
pub mod xa;
