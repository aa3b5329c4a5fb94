//! The write side's errors: [`StoreError`] (the event store failed) and [`CommandError`]
//! (a command did not take effect). Sorting a database error asks [`crate::db`] whether
//! the connection was lost; `db` knows nothing of these types.

use cqrs_es::AggregateError;

use crate::db::{connection_lost, note_connection_lost};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of the event store itself, sorted by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the aggregate first (or used the same idempotency key).
    #[error("the aggregate changed concurrently")]
    Conflict,
    /// Postgres cannot be reached or the pool is exhausted: try later.
    #[error("the event store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or corrupt data.
    #[error("event store failure")]
    Internal(#[source] BoxError),
}

impl StoreError {
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        note_connection_lost(&err);
        match err {
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23505") => {
                StoreError::Conflict
            }
            // The pool could not serve, or the server or connection is gone.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable(Box::new(err))
            }
            ref lost if connection_lost(lost) => StoreError::Unavailable(Box::new(err)),
            other => StoreError::Internal(Box::new(other)),
        }
    }

    /// Sort a cqrs-es error, looking inside postgres-es's boxed sqlx errors.
    pub fn from_aggregate<E: std::error::Error>(err: AggregateError<E>) -> Self {
        match err {
            AggregateError::AggregateConflict => StoreError::Conflict,
            AggregateError::DatabaseConnectionError(e) => StoreError::Unavailable(e),
            AggregateError::UnexpectedError(e) | AggregateError::DeserializationError(e) => {
                match e.downcast::<sqlx::Error>() {
                    Ok(sqlx_err) => StoreError::from_sqlx(*sqlx_err),
                    Err(e) => StoreError::Internal(e),
                }
            }
            AggregateError::UserError(e) => StoreError::Internal(e.to_string().into()),
        }
    }
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused it: a rule, reported to the caller as is.
    #[error(transparent)]
    Rejected(E),
    /// Version conflicts outlasted every retry (heavy contention across processes).
    #[error("the account is busy; try again")]
    Contention { attempts: u32 },
    /// The event store is down.
    #[error("the event store is unavailable")]
    Unavailable(#[source] BoxError),
    /// A bug or corrupt data.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl<E: std::error::Error + 'static> From<StoreError> for CommandError<E> {
    fn from(err: StoreError) -> Self {
        match err {
            // Only reached when retries are exhausted.
            StoreError::Conflict => CommandError::Contention { attempts: 0 },
            StoreError::Unavailable(e) => CommandError::Unavailable(e),
            StoreError::Internal(e) => CommandError::Internal(e),
        }
    }
}
