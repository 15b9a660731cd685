//! Settle's end-to-end tests, one binary: real coordinators (in process and as
//! processes), real participant HTTP servers, real PostgreSQL and Redis.

mod admin;
mod api_errors;
mod chaos;
mod cli;
mod crash_recovery;
mod definitions;
mod lifecycle;
mod order_workflow;
mod ownership;
mod sagas;
mod support;
mod twopc;
mod twopc_crash;
mod xa_participant;
