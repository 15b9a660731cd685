//! Settle's end-to-end tests, one binary: real coordinators (in process and as
//! processes), real participant HTTP servers, real PostgreSQL and Redis.

mod admin;
mod admin_actions;
mod admin_filters;
mod api_errors;
mod auth;
mod chaos;
mod cli;
mod contract;
mod crash_recovery;
mod dashboard;
mod definitions;
mod group_create;
mod hostile;
mod hot_path;
mod lifecycle;
mod metrics;
mod order_workflow;
mod outgoing;
mod ownership;
mod sagas;
mod support;
mod tls;
mod trace_context;
mod twopc;
mod twopc_crash;
mod waiting;
mod webhook;
mod write_replay;
mod writer_connection;
mod xa_participant;
