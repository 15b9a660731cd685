//! Settle's end-to-end tests, one binary: real coordinators (in process and as
//! processes), real participant HTTP servers, real PostgreSQL and Redis.

mod admin;
mod admin_actions;
mod admin_filters;
mod api_errors;
mod auth;
mod cli;
mod crash_recovery;
mod dashboard;
mod definitions;
mod hostile;
mod lifecycle;
mod order_workflow;
mod outgoing;
mod ownership;
mod sagas;
mod support;
mod tls;
mod twopc;
mod twopc_crash;
mod xa_participant;
