use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::commands::{UserCommand, ACTOR_LEN_MAX};
use super::error::UserError;
use super::events::UserEvent;
use super::values::{
    ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, DisplayName, Email, GoogleSubject,
    PasswordHash, Role, SecretHash, SuspensionReason,
};
use crate::decider::{cqrs_aggregate, Decider, Decision};
use crate::ids::ApiKeyId;
use crate::money::Credits;

/// Most unrevoked API keys one user may hold: bounds the state and each snapshot. An
/// expired key still counts until it is revoked.
pub const API_KEYS_LIVE_MAX: usize = 100;

/// How many revoked keys a user remembers (the most recently revoked). Older ones are
/// dropped from the state to keep it bounded; the event store's unique index on each key's
/// id still refuses to create or revoke it again, and the command layer finds it there
/// (see [`User::recall`]).
pub const REVOKED_API_KEYS_KEPT: usize = 100;

/// Most wrong guesses a verification code may allow. Six digits against ten guesses is a
/// one-in-100,000 chance.
pub const VERIFICATION_ATTEMPTS_MAX: u32 = 10;

/// Most wrong verification codes an address may ever take, over every code issued for it.
/// A new code every minute must not buy a fresh set of guesses: twenty guesses at six
/// digits is a one-in-50,000 chance, for the life of the address.
pub const VERIFICATION_FAILURES_MAX: u32 = 20;

/// Longest life of a verification code.
pub const VERIFICATION_CODE_TTL_MAX_S: i64 = 24 * 60 * 60;

/// Longest life of a password reset link.
pub const PASSWORD_RESET_TTL_MAX_S: i64 = 24 * 60 * 60;

/// The verification code sent last, while it may still be used or until a new one replaces
/// it. Its hash is never shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCode {
    code_hash: SecretHash,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    attempts_allowed: u32,
    /// Wrong guesses still allowed; at 0 the code is dead.
    attempts_left: u32,
}

impl PendingCode {
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.issued_at
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    pub fn attempts_allowed(&self) -> u32 {
        self.attempts_allowed
    }

    pub fn attempts_left(&self) -> u32 {
        self.attempts_left
    }

    /// Whether a right guess at `now` would verify the email.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        self.attempts_left > 0 && now < self.expires_at
    }
}

/// The password reset asked for last, until it is used or replaced. Its hash is never shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReset {
    token_hash: SecretHash,
    requested_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl PendingReset {
    pub fn requested_at(&self) -> DateTime<Utc> {
        self.requested_at
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
}

/// One API key as the user sees it: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    id: ApiKeyId,
    prefix: ApiKeyPrefix,
    key_hash: SecretHash,
    name: ApiKeyName,
    spending_limit: Option<Credits>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    /// What the key may be used for (a state of version 1 had none: its snapshots are not
    /// read, see `STATE_VERSION`).
    #[serde(default = "ApiKeyScope::before_scopes")]
    scopes: BTreeSet<ApiKeyScope>,
    /// The key's own rate limits (none in states of keys created before they existed).
    #[serde(default)]
    rate_limits: ApiKeyRateLimits,
}

impl ApiKey {
    pub fn id(&self) -> ApiKeyId {
        self.id
    }

    pub fn prefix(&self) -> &ApiKeyPrefix {
        &self.prefix
    }

    /// What a presented key's SHA-256 must match.
    pub fn key_hash(&self) -> &SecretHash {
        &self.key_hash
    }

    pub fn name(&self) -> &ApiKeyName {
        &self.name
    }

    pub fn spending_limit(&self) -> Option<Credits> {
        self.spending_limit
    }

    /// The key's own rate limits, overriding the hub's defaults where set.
    pub fn rate_limits(&self) -> ApiKeyRateLimits {
        self.rate_limits
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    pub fn scopes(&self) -> &BTreeSet<ApiKeyScope> {
        &self.scopes
    }

    pub fn has_scope(&self, scope: ApiKeyScope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Neither revoked nor expired at `now`.
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        !self.is_revoked() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A suspension in force: why, by whom, since when. Shown to admins only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    reason: SuspensionReason,
    by: String,
    since: DateTime<Utc>,
}

impl Suspension {
    pub fn reason(&self) -> &SuspensionReason {
        &self.reason
    }

    pub fn by(&self) -> &str {
        &self.by
    }

    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }
}

/// One person or program owner: how they log in, what they may do, their API keys. Their
/// credit account has the same id (see [`crate::UserId`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Set at registration; `None` until then.
    email: Option<Email>,
    display_name: Option<DisplayName>,
    registered_at: Option<DateTime<Utc>>,
    /// `None` for a user who signs in only with Google.
    password_hash: Option<PasswordHash>,
    email_verified_at: Option<DateTime<Utc>>,
    /// Holds [`Role::User`] once registered.
    roles: BTreeSet<Role>,
    google_subject: Option<GoogleSubject>,
    /// At most one code: a new one replaces the last, verifying clears it.
    verification: Option<PendingCode>,
    /// Wrong codes submitted for this address, over all its codes (at most
    /// [`VERIFICATION_FAILURES_MAX`] before no code is issued or checked any more).
    #[serde(default)]
    verification_failures: u32,
    /// At most one reset: a new one replaces the last, using it or changing the password
    /// clears it.
    password_reset: Option<PendingReset>,
    /// Every unrevoked key, and the last [`REVOKED_API_KEYS_KEPT`] revoked ones.
    api_keys: BTreeMap<ApiKeyId, ApiKey>,
    /// Set while the user is suspended.
    #[serde(default)]
    suspension: Option<Suspension>,
    /// How many events have ended the user's sessions (see [`UserEvent::ends_sessions`]).
    /// An access token carries the version it was minted at and is refused once it is
    /// behind.
    #[serde(default)]
    session_version: u32,
}

impl User {
    pub fn is_registered(&self) -> bool {
        self.email.is_some()
    }

    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    pub fn display_name(&self) -> Option<&DisplayName> {
        self.display_name.as_ref()
    }

    pub fn registered_at(&self) -> Option<DateTime<Utc>> {
        self.registered_at
    }

    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }

    pub fn email_verified_at(&self) -> Option<DateTime<Utc>> {
        self.email_verified_at
    }

    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The suspension in force, if the user is suspended.
    pub fn suspension(&self) -> Option<&Suspension> {
        self.suspension.as_ref()
    }

    pub fn is_suspended(&self) -> bool {
        self.suspension.is_some()
    }

    /// Raised by every event that ends sessions (a suspension, a revoked role, a password
    /// reset, "log out everywhere"). A counter rather than a time: an access token's `iat`
    /// has whole seconds, so a time would either keep a token minted just before the cut
    /// or refuse one minted just after it.
    pub fn session_version(&self) -> u32 {
        self.session_version
    }

    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// What a login's password is verified against; `None` for a Google-only user.
    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.password_hash.as_ref()
    }

    pub fn google_subject(&self) -> Option<&GoogleSubject> {
        self.google_subject.as_ref()
    }

    /// The last verification code issued, unless it was used. It may be dead: see
    /// [`PendingCode::is_live_at`]. The API can throttle resends on its `issued_at`.
    pub fn pending_verification(&self) -> Option<&PendingCode> {
        self.verification.as_ref()
    }

    /// Whether a reset link's token may set a new password now: the rule `ResetPassword`
    /// applies, for a caller to check before it spends a password hash.
    pub fn check_reset_token(
        &self,
        token_hash: &SecretHash,
        now: DateTime<Utc>,
    ) -> Result<(), UserError> {
        let Some(reset) = &self.password_reset else {
            return Err(UserError::NoPasswordResetPending);
        };
        // The token is checked before its expiry, so a wrong token learns nothing.
        if !reset.token_hash.matches(token_hash) {
            return Err(UserError::ResetTokenMismatch);
        }
        if now >= reset.expires_at {
            return Err(UserError::ResetTokenExpired);
        }
        Ok(())
    }

    pub fn pending_password_reset(&self) -> Option<&PendingReset> {
        self.password_reset.as_ref()
    }

    /// The user's keys, oldest first: every unrevoked one and the most recently revoked.
    pub fn api_keys(&self) -> Vec<&ApiKey> {
        let mut keys: Vec<&ApiKey> = self.api_keys.values().collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        keys
    }

    pub fn api_key(&self, id: ApiKeyId) -> Option<&ApiKey> {
        self.api_keys.get(&id)
    }

    /// The key whose hash this is, if the user has it (revoked or not).
    pub fn api_key_by_hash(&self, key_hash: &SecretHash) -> Option<&ApiKey> {
        self.api_keys
            .values()
            .find(|k| k.key_hash.matches(key_hash))
    }

    /// Keys not revoked (expired ones included: they hold their slot until revoked).
    pub fn unrevoked_api_keys(&self) -> usize {
        self.api_keys.values().filter(|k| !k.is_revoked()).count()
    }

    /// The events [`Decider::decide`] writes.
    fn decide_events(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let registered = self.is_registered();
        match command {
            UserCommand::RegisterUser { .. } if registered => Err(UserError::AlreadyRegistered),
            UserCommand::RegisterUser {
                email,
                password_hash,
                display_name,
                mut roles,
                google_subject,
                email_verified,
                now,
            } => {
                if password_hash.is_none() && google_subject.is_none() {
                    return Err(UserError::NoCredential);
                }
                roles.insert(Role::User);
                let mut events = vec![UserEvent::UserRegistered {
                    email: email.clone(),
                    password_hash,
                    display_name,
                    roles,
                    registered_at: now,
                }];
                if let Some(subject) = google_subject {
                    events.push(UserEvent::GoogleAccountLinked { subject });
                }
                if email_verified {
                    events.push(UserEvent::EmailVerified {
                        email,
                        verified_at: now,
                    });
                }
                Ok(events)
            }
            _ if !registered => Err(UserError::NotRegistered),
            UserCommand::IssueVerificationCode {
                code_hash,
                expires_at,
                attempts_allowed,
                now,
            } => {
                if self.email_verified() {
                    return Err(UserError::EmailAlreadyVerified);
                }
                if self.verification_failures >= VERIFICATION_FAILURES_MAX {
                    return Err(UserError::VerificationLocked);
                }
                check_expiry(expires_at, now, VERIFICATION_CODE_TTL_MAX_S)?;
                if !(1..=VERIFICATION_ATTEMPTS_MAX).contains(&attempts_allowed) {
                    return Err(UserError::AttemptsOutOfRange {
                        max: VERIFICATION_ATTEMPTS_MAX,
                    });
                }
                Ok(vec![UserEvent::VerificationCodeIssued {
                    code_hash,
                    issued_at: now,
                    expires_at,
                    attempts_allowed,
                }])
            }
            UserCommand::VerifyEmail { code_hash, now } => self.verify_email(&code_hash, now),
            UserCommand::ChangePassword { password_hash, now } => {
                Ok(vec![UserEvent::PasswordChanged {
                    password_hash,
                    changed_at: now,
                }])
            }
            UserCommand::RequestPasswordReset {
                token_hash,
                expires_at,
                now,
            } => {
                check_expiry(expires_at, now, PASSWORD_RESET_TTL_MAX_S)?;
                Ok(vec![UserEvent::PasswordResetRequested {
                    token_hash,
                    requested_at: now,
                    expires_at,
                }])
            }
            UserCommand::ResetPassword {
                token_hash,
                password_hash,
                now,
            } => {
                self.check_reset_token(&token_hash, now)?;
                Ok(vec![UserEvent::PasswordReset {
                    token_hash,
                    password_hash,
                    reset_at: now,
                }])
            }
            UserCommand::GrantRole { role, granted_by } => {
                check_actor(&granted_by)?;
                if self.roles.contains(&role) {
                    return Ok(Vec::new());
                }
                let mut roles_after = self.roles.clone();
                roles_after.insert(role);
                Ok(vec![UserEvent::RoleGranted {
                    role,
                    granted_by,
                    roles_after,
                }])
            }
            UserCommand::RevokeRole { role, revoked_by } => {
                check_actor(&revoked_by)?;
                if role == Role::User {
                    return Err(UserError::CannotRevokeUserRole);
                }
                if !self.roles.contains(&role) {
                    return Err(UserError::RoleNotHeld(role));
                }
                let mut roles_after = self.roles.clone();
                roles_after.remove(&role);
                Ok(vec![UserEvent::RoleRevoked {
                    role,
                    revoked_by,
                    roles_after,
                }])
            }
            UserCommand::LinkGoogleAccount { subject } => match &self.google_subject {
                Some(linked) if *linked == subject => Ok(Vec::new()),
                Some(_) => Err(UserError::GoogleAccountAlreadyLinked),
                None => Ok(vec![UserEvent::GoogleAccountLinked { subject }]),
            },
            UserCommand::CreateApiKey {
                key_id,
                prefix,
                key_hash,
                name,
                spending_limit,
                expires_at,
                scopes,
                rate_limits,
                now,
            } => {
                if scopes.is_empty() {
                    return Err(UserError::NoScopes);
                }
                if self.api_keys.contains_key(&key_id) {
                    return Err(UserError::ApiKeyIdTaken(key_id));
                }
                if self.unrevoked_api_keys() >= API_KEYS_LIVE_MAX {
                    return Err(UserError::TooManyApiKeys {
                        max: API_KEYS_LIVE_MAX,
                    });
                }
                if let Some(limit) = spending_limit {
                    Credits::positive(limit.micros()).map_err(UserError::InvalidSpendingLimit)?;
                }
                if expires_at.is_some_and(|at| at <= now) {
                    return Err(UserError::ExpiryNotInFuture);
                }
                Ok(vec![UserEvent::ApiKeyCreated {
                    key_id,
                    prefix,
                    key_hash,
                    name,
                    spending_limit,
                    expires_at,
                    created_at: now,
                    scopes,
                    rate_limits,
                }])
            }
            UserCommand::RevokeApiKey { key_id, now } => match self.api_keys.get(&key_id) {
                None => Err(UserError::ApiKeyNotFound(key_id)),
                Some(key) if key.is_revoked() => Err(UserError::ApiKeyAlreadyRevoked(key_id)),
                Some(_) => Ok(vec![UserEvent::ApiKeyRevoked {
                    key_id,
                    revoked_at: now,
                }]),
            },
            UserCommand::SuspendUser { reason, by, now } => {
                check_actor(&by)?;
                if self.is_suspended() {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::UserSuspended {
                    reason,
                    suspended_by: by,
                    suspended_at: now,
                }])
            }
            UserCommand::UnsuspendUser { reason, by, now } => {
                check_actor(&by)?;
                if !self.is_suspended() {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::UserUnsuspended {
                    reason,
                    unsuspended_by: by,
                    unsuspended_at: now,
                }])
            }
            UserCommand::EndSessions { by, now } => {
                check_actor(&by)?;
                Ok(vec![UserEvent::SessionsEnded {
                    ended_by: by,
                    ended_at: now,
                }])
            }
        }
    }

    fn verify_email(
        &self,
        code_hash: &SecretHash,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserEvent>, UserError> {
        if self.email_verified() {
            return Err(UserError::EmailAlreadyVerified);
        }
        if self.verification_failures >= VERIFICATION_FAILURES_MAX {
            return Err(UserError::VerificationLocked);
        }
        let (Some(code), Some(email)) = (&self.verification, &self.email) else {
            return Err(UserError::NoVerificationCode);
        };
        if code.attempts_left == 0 {
            return Err(UserError::VerificationCodeExhausted);
        }
        if now >= code.expires_at {
            return Err(UserError::VerificationCodeExpired);
        }
        if code.code_hash.matches(code_hash) {
            Ok(vec![UserEvent::EmailVerified {
                email: email.clone(),
                verified_at: now,
            }])
        } else {
            Ok(vec![UserEvent::EmailVerificationFailed {
                attempts_left: code.attempts_left - 1,
            }])
        }
    }

    /// Drop the longest-revoked keys beyond [`REVOKED_API_KEYS_KEPT`].
    fn forget_oldest_revoked_keys(&mut self) {
        let mut revoked: Vec<(DateTime<Utc>, ApiKeyId)> = self
            .api_keys
            .values()
            .filter_map(|k| k.revoked_at.map(|at| (at, k.id)))
            .collect();
        if revoked.len() <= REVOKED_API_KEYS_KEPT {
            return;
        }
        revoked.sort();
        let excess = revoked.len() - REVOKED_API_KEYS_KEPT;
        for (_, id) in revoked.into_iter().take(excess) {
            self.api_keys.remove(&id);
        }
    }
}

impl ApiKey {
    /// The key an `ApiKeyCreated` event describes.
    fn from_event(event: UserEvent) -> Option<ApiKey> {
        match event {
            UserEvent::ApiKeyCreated {
                key_id,
                prefix,
                key_hash,
                name,
                spending_limit,
                expires_at,
                created_at,
                scopes,
                rate_limits,
            } => Some(ApiKey {
                id: key_id,
                prefix,
                key_hash,
                name,
                spending_limit,
                expires_at,
                created_at,
                revoked_at: None,
                scopes,
                rate_limits,
            }),
            _ => None,
        }
    }
}

/// `now < expires_at <= now + max_s`.
fn check_expiry(
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    max_s: i64,
) -> Result<(), UserError> {
    if expires_at <= now {
        return Err(UserError::ExpiryNotInFuture);
    }
    if expires_at.signed_duration_since(now) > Duration::seconds(max_s) {
        return Err(UserError::ExpiryTooFar { max_s });
    }
    Ok(())
}

fn check_actor(actor: &str) -> Result<(), UserError> {
    if actor.trim().is_empty() || actor.chars().count() > ACTOR_LEN_MAX {
        return Err(UserError::ActorInvalid { max: ACTOR_LEN_MAX });
    }
    Ok(())
}

impl Decider for User {
    const TYPE: &'static str = "User";
    /// 2: the session version, the suspension and key scopes (a version-1 snapshot would
    /// start the session version at 0 whatever roles were revoked before it). 3: the wrong
    /// verification codes counted over an address's life.
    const STATE_VERSION: i32 = 3;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    /// Decide what a command does to this user. Pure: the caller writes the events. Never a
    /// replay: no events means the command asked for what already holds.
    fn decide(&self, command: UserCommand) -> Result<Decision<UserEvent>, UserError> {
        self.decide_events(command).map(Decision::write)
    }

    /// Apply an event. Only assigns: every check happened in [`Decider::decide`].
    fn evolve(&mut self, event: UserEvent) {
        if event.ends_sessions() {
            self.session_version = self.session_version.saturating_add(1);
        }
        match event {
            UserEvent::UserRegistered {
                email,
                password_hash,
                display_name,
                roles,
                registered_at,
            } => {
                self.email = Some(email);
                self.password_hash = password_hash;
                self.display_name = display_name;
                self.roles = roles;
                self.registered_at = Some(registered_at);
            }
            UserEvent::VerificationCodeIssued {
                code_hash,
                issued_at,
                expires_at,
                attempts_allowed,
            } => {
                self.verification = Some(PendingCode {
                    code_hash,
                    issued_at,
                    expires_at,
                    attempts_allowed,
                    attempts_left: attempts_allowed,
                });
            }
            UserEvent::EmailVerificationFailed { attempts_left } => {
                self.verification_failures = self.verification_failures.saturating_add(1);
                if let Some(code) = &mut self.verification {
                    code.attempts_left = attempts_left;
                }
            }
            UserEvent::EmailVerified { verified_at, .. } => {
                self.email_verified_at = Some(verified_at);
                self.verification = None;
            }
            UserEvent::PasswordChanged { password_hash, .. }
            | UserEvent::PasswordReset { password_hash, .. } => {
                self.password_hash = Some(password_hash);
                self.password_reset = None;
            }
            UserEvent::PasswordResetRequested {
                token_hash,
                requested_at,
                expires_at,
            } => {
                self.password_reset = Some(PendingReset {
                    token_hash,
                    requested_at,
                    expires_at,
                });
            }
            UserEvent::RoleGranted { roles_after, .. }
            | UserEvent::RoleRevoked { roles_after, .. } => {
                self.roles = roles_after;
            }
            UserEvent::GoogleAccountLinked { subject } => {
                self.google_subject = Some(subject);
            }
            event @ UserEvent::ApiKeyCreated { .. } => {
                if let Some(key) = ApiKey::from_event(event) {
                    self.api_keys.insert(key.id, key);
                }
            }
            UserEvent::ApiKeyRevoked { key_id, revoked_at } => {
                if let Some(key) = self.api_keys.get_mut(&key_id) {
                    key.revoked_at = Some(revoked_at);
                }
                self.forget_oldest_revoked_keys();
            }
            UserEvent::UserSuspended {
                reason,
                suspended_by,
                suspended_at,
            } => {
                self.suspension = Some(Suspension {
                    reason,
                    by: suspended_by,
                    since: suspended_at,
                });
            }
            UserEvent::UserUnsuspended { .. } => {
                self.suspension = None;
            }
            UserEvent::SessionsEnded { .. } => {}
        }
    }

    /// Take back into memory revoked keys the user no longer remembers (found in the event
    /// store by their keys, see [`UserCommand::related_keys`]), so that revoking one again
    /// says it was revoked rather than unknown. Only keys whose creation and revocation are
    /// both given are taken.
    fn recall(&mut self, events: impl IntoIterator<Item = UserEvent>) {
        let mut created = Vec::new();
        let mut revoked = BTreeMap::new();
        for event in events {
            match event {
                UserEvent::ApiKeyCreated { .. } => created.push(event),
                UserEvent::ApiKeyRevoked { key_id, revoked_at } => {
                    revoked.insert(key_id, revoked_at);
                }
                _ => {}
            }
        }
        for event in created {
            if let Some(mut key) = ApiKey::from_event(event) {
                if self.api_keys.contains_key(&key.id) {
                    continue;
                }
                if let Some(at) = revoked.get(&key.id) {
                    key.revoked_at = Some(*at);
                    self.api_keys.insert(key.id, key);
                }
            }
        }
    }

    fn event_key(event: &UserEvent) -> Option<String> {
        event.idempotency_key()
    }

    fn related_keys(command: &UserCommand) -> Vec<String> {
        command.related_keys()
    }

    fn may_be_forgotten(refusal: &UserError) -> bool {
        // A revoke of a key revoked longer ago than the user remembers.
        matches!(refusal, UserError::ApiKeyNotFound(_))
    }
}

cqrs_aggregate!(User);
