//! farol: a small notes service on PostgreSQL, built to show the reference way to ship a
//! Rust web service. `main.rs` only calls [`cli::run`]; everything lives here.

pub mod allocator;
pub mod cli;
pub mod config;
pub mod db;
pub mod healthcheck;
pub mod http;
pub mod notes;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;
