//! Users: the `User` aggregate's entry point, and what one aggregate cannot check alone —
//! that an email address or a Google account belongs to one user only.

use hub_domain::{
    AccountId, CreditCommand, Credits, Email, GoogleSubject, IdempotencyKey, User, UserCommand,
    UserError, UserEvent, UserId,
};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use crate::bus::{CommandBus, Committed};
use crate::credit::CreditAccounts;
use crate::error::{CommandError, StoreError};

pub type UserResult = Result<Committed<UserEvent>, CommandError<UserError>>;

/// Why a registration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another user has this email address (or Google account).
    #[error("a user with this email address already exists")]
    Taken,
    #[error(transparent)]
    Command(#[from] CommandError<UserError>),
    #[error("could not open the credit account")]
    Credits(#[source] CommandError<hub_domain::CreditError>),
}

impl From<StoreError> for RegisterError {
    fn from(err: StoreError) -> Self {
        RegisterError::Command(err.into())
    }
}

/// A registration: the `RegisterUser` command's fields, and the sign-up grant.
#[derive(Debug, Clone)]
pub struct Registration {
    pub command: UserCommand,
    /// Credits granted when the account opens (zero: none), as a normal ledger entry.
    pub signup_grant: Credits,
}

/// Commands for users, one aggregate per user; a user's id is also its credit account's.
pub struct Users {
    bus: CommandBus<User>,
    pool: PgPool,
    /// Users as this process last read them, with the sequence of their last event: see
    /// [`Users::current`].
    read: Mutex<HashMap<UserId, (usize, Arc<User>)>>,
}

/// How many users [`Users::current`] keeps; past it, one is forgotten for each one read.
const CURRENT_USERS_KEPT: usize = 100_000;

impl Users {
    pub fn new(bus: CommandBus<User>) -> Self {
        Users {
            pool: bus.store().pool().clone(),
            bus,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// Run a command; `actor` goes into each event's metadata.
    pub async fn execute(&self, user: UserId, command: UserCommand, actor: &str) -> UserResult {
        let metadata = HashMap::from([("actor".to_string(), actor.to_string())]);
        self.bus
            .execute(&user.to_string(), command, &metadata)
            .await
    }

    /// The user as the event store has it now (never a cached copy: used for sign-in and
    /// for API keys, where a revocation elsewhere must count at once).
    pub async fn load(&self, user: UserId) -> Result<User, StoreError> {
        Ok(self.bus.store().load(&user.to_string()).await?.aggregate)
    }

    /// The user as the event store has it now, exactly as [`Users::load`] would return it,
    /// without reading or folding an event when nothing happened to them since this process
    /// last read them: the sequence of their last event is looked up (one probe of the
    /// primary key's index, no payload) and the copy read at that sequence is reused. Events
    /// are immutable and numbered per user, so an equal sequence is an equal state. For the
    /// checks made on every request.
    pub async fn current(&self, user: UserId) -> Result<Arc<User>, StoreError> {
        let head = self.bus.store().head(&user.to_string()).await?;
        self.current_at(user, head).await
    }

    /// [`Users::current`] when the caller already read the user's head sequence (in the
    /// same query as something else).
    pub async fn current_at(&self, user: UserId, head: usize) -> Result<Arc<User>, StoreError> {
        if let Some(kept) = self.kept(user, head) {
            return Ok(kept);
        }
        let loaded = self.bus.store().load(&user.to_string()).await?;
        let read = Arc::new(loaded.aggregate);
        self.keep(user, loaded.sequence, Arc::clone(&read));
        Ok(read)
    }

    fn kept(&self, user: UserId, head: usize) -> Option<Arc<User>> {
        let read = self
            .read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read.get(&user)
            .filter(|(sequence, _)| *sequence == head)
            .map(|(_, kept)| Arc::clone(kept))
    }

    fn keep(&self, user: UserId, sequence: usize, state: Arc<User>) {
        let mut read = self
            .read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if read.len() >= CURRENT_USERS_KEPT && !read.contains_key(&user) {
            if let Some(&forget) = read.keys().next() {
                read.remove(&forget);
            }
        }
        match read.get(&user) {
            // A concurrent reader kept a later state: keep that one.
            Some((kept, _)) if *kept > sequence => {}
            _ => {
                read.insert(user, (sequence, state));
            }
        }
    }

    /// The user holding `email`, if it is registered.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<(UserId, User)>, StoreError> {
        let owner: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM user_emails WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
        self.registered(owner).await
    }

    /// The user signed in with this Google account, if any.
    pub async fn find_by_google(
        &self,
        subject: &GoogleSubject,
    ) -> Result<Option<(UserId, User)>, StoreError> {
        let owner: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM user_google_subjects WHERE subject = $1")
                .bind(subject.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
        self.registered(owner).await
    }

    async fn registered(&self, owner: Option<Uuid>) -> Result<Option<(UserId, User)>, StoreError> {
        let Some(owner) = owner else {
            return Ok(None);
        };
        let id = UserId(owner);
        let user = self.load(id).await?;
        Ok(user.is_registered().then_some((id, user)))
    }

    /// Register a user, exactly one per email address even when many try at once.
    ///
    /// 1. Claim the address: the first claim fixes the user id forever.
    /// 2. Open the credit account and grant the sign-up credits (idempotent).
    /// 3. Register the user. Of concurrent attempts one succeeds; the others find the user
    ///    registered and get [`RegisterError::Taken`].
    ///
    /// A crash between steps leaves a claim without a user; the next registration of the
    /// address completes it as the same user id, so nothing is orphaned or granted twice.
    pub async fn register(
        &self,
        credits: &CreditAccounts,
        registration: Registration,
    ) -> Result<(UserId, User), RegisterError> {
        let UserCommand::RegisterUser {
            email,
            google_subject,
            ..
        } = &registration.command
        else {
            return Err(RegisterError::Command(CommandError::Internal(
                "Users::register takes a RegisterUser command".into(),
            )));
        };
        let id = self.claim_email(email).await?;
        if self.load(id).await?.is_registered() {
            return Err(RegisterError::Taken);
        }
        if let Some(subject) = google_subject {
            if self.claim_google(subject, id).await? != Some(id) {
                return Err(RegisterError::Taken);
            }
        }
        let account = AccountId::from(id);
        credits
            .execute(account, CreditCommand::OpenAccount, "signup")
            .await
            .map_err(RegisterError::Credits)?;
        if registration.signup_grant.micros() > 0 {
            let grant = CreditCommand::GrantCredits {
                key: IdempotencyKey::parse("signup")
                    .map_err(|e| RegisterError::Command(CommandError::Internal(Box::new(e))))?,
                amount: registration.signup_grant,
                reason: "sign-up grant".into(),
                granted_by: "system".into(),
            };
            credits
                .execute(account, grant, "signup")
                .await
                .map_err(RegisterError::Credits)?;
        }
        match self.execute(id, registration.command, "signup").await {
            Ok(_) => Ok((id, self.load(id).await?)),
            Err(CommandError::Rejected(UserError::AlreadyRegistered)) => Err(RegisterError::Taken),
            Err(err) => Err(err.into()),
        }
    }

    /// The user id owning `email`: a new one if the address was free.
    async fn claim_email(&self, email: &Email) -> Result<UserId, StoreError> {
        self.claim(CLAIM_EMAIL_SQL, email.as_str(), UserId(Uuid::new_v4()))
            .await?
            .ok_or_else(|| StoreError::Internal("an email claim has no owner".into()))
    }

    /// Claim a Google account for `user`. Returns the user holding it, or `None` if `user`
    /// already holds a different Google account.
    pub async fn claim_google(
        &self,
        subject: &GoogleSubject,
        user: UserId,
    ) -> Result<Option<UserId>, StoreError> {
        self.claim(CLAIM_GOOGLE_SQL, subject.as_str(), user).await
    }

    async fn claim(
        &self,
        sql: &str,
        key: &str,
        user: UserId,
    ) -> Result<Option<UserId>, StoreError> {
        // The statement's snapshot may predate a concurrent claim that its INSERT waited
        // for and then skipped; the next statement sees that claim.
        for _ in 0..3 {
            let owner: Option<Uuid> = sqlx::query_scalar(sql)
                .bind(key)
                .bind(user.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            if let Some(owner) = owner {
                return Ok(Some(UserId(owner)));
            }
        }
        Ok(None)
    }
}

/// Insert the claim unless the key is claimed; either way return its owner.
const CLAIM_EMAIL_SQL: &str = "
WITH claimed AS (
    INSERT INTO user_emails (email, user_id) VALUES ($1, $2)
    ON CONFLICT DO NOTHING
    RETURNING user_id)
SELECT user_id FROM claimed
UNION ALL
SELECT user_id FROM user_emails WHERE email = $1
LIMIT 1";

const CLAIM_GOOGLE_SQL: &str = "
WITH claimed AS (
    INSERT INTO user_google_subjects (subject, user_id) VALUES ($1, $2)
    ON CONFLICT DO NOTHING
    RETURNING user_id)
SELECT user_id FROM claimed
UNION ALL
SELECT user_id FROM user_google_subjects WHERE subject = $1
LIMIT 1";
