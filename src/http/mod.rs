//! HTTP plumbing shared by all routes: errors, extractors, the request middleware,
//! request ids and shutdown.
pub mod budget;
pub mod extract;
pub mod middleware;
pub mod problem;
pub mod request_id;
pub mod server;
pub mod shutdown;
pub mod write_deadline;
