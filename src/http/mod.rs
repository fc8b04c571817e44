//! Generic HTTP plumbing that knows nothing of the application's state or its database:
//! problem answers, extractors and the payload budget, request ids and idempotency keys,
//! the server, its connections' clock and its write deadline. The application's side
//! (routes, the request middleware) is in `crate::routes`.
pub mod budget;
pub mod connection_clock;
pub mod extract;
pub mod idempotency;
pub mod problem;
pub mod request_id;
pub mod server;
pub mod write_deadline;
