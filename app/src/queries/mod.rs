//! The read side: one module per read model, each reading its tables (kept by the
//! projections) and nothing else. Writes go through the command side; these only look.
//!
//! - [`balances`]: an account's balance, and waiting until it shows a write.
//! - [`ledger`]: an account's movements, newest first.
//! - [`payments`]: a user's payments, newest first.
//! - [`promos`]: promo codes, oldest first, and waiting until one shows a change.
//! - [`users`]: registered users, oldest first.
//! - [`usage`]: settled requests, newest first; the usage filters and who reads whose usage.
//!
//! The four listings page the same way, through [`crate::page`].

pub mod balances;
pub mod ledger;
pub mod payments;
pub mod promos;
pub mod usage;
pub mod users;

use hub_domain::Role;
use std::future::Future;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::page::PageError;

/// The roles that may read another user's account and payments.
pub const READ_OTHERS: [Role; 2] = [Role::Admin, Role::Auditor];

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("could not read the read model")]
    Database(#[from] sqlx::Error),
}

/// A reader asked for another user's records without a role that allows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading another user's records needs one of the roles: admin, auditor")]
pub struct NotAllowed {
    /// The roles that would allow it.
    pub needs: &'static [Role],
}

/// Whose records a reader reads: their own (no `requested`, or themselves), or another
/// user's, which needs one of [`READ_OTHERS`].
pub fn account_for(
    reader: Uuid,
    roles: &[Role],
    requested: Option<Uuid>,
) -> Result<Uuid, NotAllowed> {
    match requested {
        Some(other) if other != reader => {
            if READ_OTHERS.iter().any(|r| roles.contains(r)) {
                Ok(other)
            } else {
                Err(NotAllowed {
                    needs: &READ_OTHERS,
                })
            }
        }
        _ => Ok(reader),
    }
}

/// First pause between two looks at a read model while waiting for a write to show.
const WAIT_PAUSE_FIRST: Duration = Duration::from_millis(2);
/// Longest pause between two looks (the pause doubles up to this).
const WAIT_PAUSE_MAX: Duration = Duration::from_millis(25);

/// Look at a read model (`seen` answers the version it shows, if any) until it shows
/// `version` or later, for at most `max_wait`. Answers whether it does: this is how a write
/// becomes visible to the read that follows it (read-your-writes).
pub(crate) async fn wait_for_version<F, Fut>(
    version: i64,
    max_wait: Duration,
    mut seen: F,
) -> Result<bool, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<i64>, sqlx::Error>>,
{
    let deadline = Instant::now() + max_wait;
    let mut pause = WAIT_PAUSE_FIRST;
    loop {
        if seen().await?.is_some_and(|v| v >= version) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(WAIT_PAUSE_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_reads_their_own_account_without_a_role() {
        let me = Uuid::new_v4();
        assert_eq!(account_for(me, &[Role::User], None), Ok(me));
        assert_eq!(account_for(me, &[Role::User], Some(me)), Ok(me));
    }

    #[test]
    fn another_users_account_needs_admin_or_auditor() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        assert!(account_for(me, &[Role::User, Role::Analyst], Some(other)).is_err());
        assert_eq!(account_for(me, &[Role::Auditor], Some(other)), Ok(other));
        assert_eq!(account_for(me, &[Role::Admin], Some(other)), Ok(other));
    }
}
