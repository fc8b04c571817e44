//! The HTTP API against a real PostgreSQL: every route, every error class, pagination,
//! load shedding, timeouts, fault injection, live configuration, database outages.

#[path = "../support/mod.rs"]
mod support;

mod batched_inserts;
mod bounds;
mod database;
mod errors;
mod hostile;
mod live_config;
mod notes;
mod operations;
mod pooler;
mod resilience;
mod retries;
