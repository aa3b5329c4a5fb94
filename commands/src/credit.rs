//! The credit account's entry point for the rest of the hub.

use hub_domain::{AccountId, CreditAccount, CreditCommand, CreditError, CreditEvent};
use std::collections::HashMap;

use crate::bus::{CommandBus, Committed};
use crate::error::CommandError;

pub type CreditResult = Result<Committed<CreditEvent>, CommandError<CreditError>>;

/// Commands for credit accounts, one aggregate per user.
pub struct CreditAccounts {
    bus: CommandBus<CreditAccount>,
}

impl CreditAccounts {
    pub fn new(bus: CommandBus<CreditAccount>) -> Self {
        CreditAccounts { bus }
    }

    pub fn bus(&self) -> &CommandBus<CreditAccount> {
        &self.bus
    }

    /// Run a command. `actor` (who asked: a user id, `system`, ...) goes into each event's
    /// metadata for the audit trail.
    pub async fn execute(
        &self,
        account: AccountId,
        command: CreditCommand,
        actor: &str,
    ) -> CreditResult {
        let metadata = HashMap::from([("actor".to_string(), actor.to_string())]);
        let outcome = self
            .bus
            .execute(&account.to_string(), command, &metadata)
            .await;
        if let Ok(committed) = &outcome {
            crate::metrics::record(&committed.events);
        }
        outcome
    }

    /// Run a command that brings credits in (grant, purchase, promo), opening the account
    /// first if it was never opened.
    pub async fn credit(
        &self,
        account: AccountId,
        command: CreditCommand,
        actor: &str,
    ) -> CreditResult {
        match self.execute(account, command.clone(), actor).await {
            Err(CommandError::Rejected(CreditError::AccountNotOpen)) => {
                self.execute(account, CreditCommand::OpenAccount, actor)
                    .await?;
                self.execute(account, command, actor).await
            }
            other => other,
        }
    }
}
