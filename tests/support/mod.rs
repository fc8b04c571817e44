//! Shared by the integration test binaries (`tests/api`, `tests/lifecycle`).
#![allow(dead_code)] // each binary uses a different part

pub mod app;
pub mod forward;
pub mod kubelet;
pub mod otlp;
pub mod pg;
pub mod pgbouncer;
pub mod process;
pub mod raw;
pub mod tls;
