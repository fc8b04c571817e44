//! Generic HTTP plumbing that knows nothing of the application's state or its database:
//! problem answers, extractors and the payload budget, request ids and idempotency keys,
//! the server, its head timer and its write deadline. The application's side (routes, the request
//! middleware) is in `crate::routes`.
pub mod budget;
pub mod extract;
pub mod head_timer;
pub mod idempotency;
pub mod problem;
pub mod request_id;
pub mod server;
pub mod write_deadline;
