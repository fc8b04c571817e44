//! How a database failure reaches a client: the fixed vocabulary of problems. Here, at
//! the routes, where the database and HTTP meet: neither knows the other.

use crate::db::DbError;
use crate::http::problem::ApiError;

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable { .. } | DbError::ReadOnly { .. } => ApiError::DatabaseUnavailable,
            DbError::Busy => ApiError::DatabaseBusy,
            DbError::Timeout => ApiError::Timeout,
            DbError::NoRow(operation) => {
                tracing::error!(
                    request_id = crate::http::request_id::current(),
                    operation,
                    "the database returned no row where one is certain"
                );
                ApiError::Internal
            }
            DbError::Query(error) => {
                tracing::error!(
                    request_id = crate::http::request_id::current(),
                    error = %crate::db::describe(&error),
                    "unexpected database error"
                );
                ApiError::Internal
            }
        }
    }
}
