//! Logs and metrics.
pub mod json;
pub mod logging;
pub mod metrics;
pub mod writer;
