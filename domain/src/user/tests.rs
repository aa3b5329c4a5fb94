//! Given/when/then tests for every rule of the user, and a property test that random
//! command sequences keep every invariant.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use uuid::Uuid;

use super::*;
use crate::decider::Decider;
use crate::ids::ApiKeyId;
use crate::money::{Credits, MoneyError};

type UserTest = TestFramework<User>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed time")
}

fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

/// A stand-in for SHA-256 (the domain has no hashing crate): 64 hex digits from a plaintext.
fn digest_hex(plain: &str) -> String {
    (0u8..4)
        .map(|salt| {
            let mut hasher = DefaultHasher::new();
            (salt, plain).hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// The hash of a code, token or API key the user was sent.
fn sha(plain: &str) -> SecretHash {
    SecretHash::parse(digest_hex(plain)).expect("64 hex digits")
}

/// A stand-in for the argon2id PHC string of a password.
fn pw(plain: &str) -> PasswordHash {
    PasswordHash::parse(format!(
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${}",
        digest_hex(plain)
    ))
    .expect("a PHC string")
}

fn alice() -> Email {
    Email::parse("Alice@Example.com").expect("a valid email")
}

fn kid(n: u128) -> ApiKeyId {
    ApiKeyId(Uuid::from_u128(n))
}

fn c(micros: i64) -> Credits {
    Credits::from_micros(micros)
}

fn roles(list: &[Role]) -> BTreeSet<Role> {
    list.iter().copied().collect()
}

fn register() -> UserCommand {
    UserCommand::RegisterUser {
        email: alice(),
        password_hash: Some(pw("password123")),
        display_name: Some(DisplayName::parse("Alice").expect("a valid name")),
        roles: BTreeSet::new(),
        google_subject: None,
        email_verified: false,
        now: t0(),
    }
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        email: alice(),
        password_hash: Some(pw("password123")),
        display_name: Some(DisplayName::parse("Alice").expect("a valid name")),
        roles: roles(&[Role::User]),
        registered_at: t0(),
    }
}

fn issue(code: &str, expires_in_s: i64, attempts: u32) -> UserCommand {
    UserCommand::IssueVerificationCode {
        code_hash: sha(code),
        expires_at: at(expires_in_s),
        attempts_allowed: attempts,
        now: t0(),
    }
}

fn issued(code: &str, expires_in_s: i64, attempts: u32) -> UserEvent {
    UserEvent::VerificationCodeIssued {
        code_hash: sha(code),
        issued_at: t0(),
        expires_at: at(expires_in_s),
        attempts_allowed: attempts,
    }
}

fn verify(code: &str, now_s: i64) -> UserCommand {
    UserCommand::VerifyEmail {
        code_hash: sha(code),
        now: at(now_s),
    }
}

fn verified(now_s: i64) -> UserEvent {
    UserEvent::EmailVerified {
        email: alice(),
        verified_at: at(now_s),
    }
}

fn reset_requested(token: &str, expires_in_s: i64) -> UserEvent {
    UserEvent::PasswordResetRequested {
        token_hash: sha(token),
        requested_at: t0(),
        expires_at: at(expires_in_s),
    }
}

fn reset(token: &str, password: &str, now_s: i64) -> UserCommand {
    UserCommand::ResetPassword {
        token_hash: sha(token),
        password_hash: pw(password),
        now: at(now_s),
    }
}

fn create_key(n: u128) -> UserCommand {
    UserCommand::CreateApiKey {
        key_id: kid(n),
        prefix: ApiKeyPrefix::parse(format!("ahk_{n}")).expect("a valid prefix"),
        key_hash: sha(&format!("key-{n}")),
        name: ApiKeyName::parse(format!("key {n}")).expect("a valid name"),
        spending_limit: None,
        expires_at: None,
        scopes: ApiKeyScope::default_set(),
        rate_limits: ApiKeyRateLimits::default(),
        now: t0(),
    }
}

fn key_created(n: u128) -> UserEvent {
    UserEvent::ApiKeyCreated {
        key_id: kid(n),
        prefix: ApiKeyPrefix::parse(format!("ahk_{n}")).expect("a valid prefix"),
        key_hash: sha(&format!("key-{n}")),
        name: ApiKeyName::parse(format!("key {n}")).expect("a valid name"),
        spending_limit: None,
        expires_at: None,
        scopes: ApiKeyScope::default_set(),
        rate_limits: ApiKeyRateLimits::default(),
        created_at: t0(),
    }
}

fn key_revoked(n: u128, at_s: i64) -> UserEvent {
    UserEvent::ApiKeyRevoked {
        key_id: kid(n),
        revoked_at: at(at_s),
    }
}

fn user_with(events: &[UserEvent]) -> User {
    let mut user = User::default();
    for e in events {
        user.evolve(e.clone());
    }
    user
}

// ---- registration -----------------------------------------------------------------------

#[test]
fn registering_a_new_user_emits_user_registered_with_the_user_role() {
    UserTest::with(())
        .given_no_previous_events()
        .when(register())
        .then_expect_events(vec![registered()]);
}

#[test]
fn registering_with_extra_roles_keeps_the_user_role() {
    UserTest::with(())
        .given_no_previous_events()
        .when(UserCommand::RegisterUser {
            email: alice(),
            password_hash: Some(pw("password123")),
            display_name: None,
            roles: roles(&[Role::Admin]),
            google_subject: None,
            email_verified: true,
            now: t0(),
        })
        .then_expect_events(vec![
            UserEvent::UserRegistered {
                email: alice(),
                password_hash: Some(pw("password123")),
                display_name: None,
                roles: roles(&[Role::User, Role::Admin]),
                registered_at: t0(),
            },
            verified(0),
        ]);
}

#[test]
fn registering_with_google_links_the_account_and_verifies_the_email_in_one_decision() {
    let subject = GoogleSubject::parse("110169484474386276334").expect("a valid subject");
    UserTest::with(())
        .given_no_previous_events()
        .when(UserCommand::RegisterUser {
            email: alice(),
            password_hash: None,
            display_name: None,
            roles: BTreeSet::new(),
            google_subject: Some(subject.clone()),
            email_verified: true,
            now: t0(),
        })
        .then_expect_events(vec![
            UserEvent::UserRegistered {
                email: alice(),
                password_hash: None,
                display_name: None,
                roles: roles(&[Role::User]),
                registered_at: t0(),
            },
            UserEvent::GoogleAccountLinked { subject },
            verified(0),
        ]);
}

#[test]
fn registering_twice_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(register())
        .then_expect_error(UserError::AlreadyRegistered);
}

#[test]
fn registering_without_a_password_or_a_google_account_is_refused() {
    UserTest::with(())
        .given_no_previous_events()
        .when(UserCommand::RegisterUser {
            email: alice(),
            password_hash: None,
            display_name: None,
            roles: BTreeSet::new(),
            google_subject: None,
            email_verified: true,
            now: t0(),
        })
        .then_expect_error(UserError::NoCredential);
}

#[test]
fn commands_on_an_unregistered_user_are_refused() {
    for command in [
        issue("123456", 600, 5),
        verify("123456", 1),
        UserCommand::GrantRole {
            role: Role::Admin,
            granted_by: "cli".into(),
        },
        create_key(1),
    ] {
        UserTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(UserError::NotRegistered);
    }
}

// ---- email verification -----------------------------------------------------------------

#[test]
fn issuing_a_code_records_its_hash_expiry_and_attempts() {
    UserTest::with(())
        .given(vec![registered()])
        .when(issue("123456", 600, 5))
        .then_expect_events(vec![issued("123456", 600, 5)]);
}

#[test]
fn issuing_a_code_refuses_a_past_or_too_distant_expiry() {
    UserTest::with(())
        .given(vec![registered()])
        .when(issue("123456", 0, 5))
        .then_expect_error(UserError::ExpiryNotInFuture);
    UserTest::with(())
        .given(vec![registered()])
        .when(issue("123456", VERIFICATION_CODE_TTL_MAX_S + 1, 5))
        .then_expect_error(UserError::ExpiryTooFar {
            max_s: VERIFICATION_CODE_TTL_MAX_S,
        });
    UserTest::with(())
        .given(vec![registered()])
        .when(issue("123456", VERIFICATION_CODE_TTL_MAX_S, 5))
        .then_expect_events(vec![issued("123456", VERIFICATION_CODE_TTL_MAX_S, 5)]);
}

#[test]
fn issuing_a_code_refuses_zero_or_too_many_attempts() {
    for attempts in [0, VERIFICATION_ATTEMPTS_MAX + 1] {
        UserTest::with(())
            .given(vec![registered()])
            .when(issue("123456", 600, attempts))
            .then_expect_error(UserError::AttemptsOutOfRange {
                max: VERIFICATION_ATTEMPTS_MAX,
            });
    }
}

#[test]
fn issuing_a_code_to_a_verified_email_is_refused() {
    UserTest::with(())
        .given(vec![registered(), verified(0)])
        .when(issue("123456", 600, 5))
        .then_expect_error(UserError::EmailAlreadyVerified);
}

#[test]
fn the_right_code_verifies_the_email() {
    UserTest::with(())
        .given(vec![registered(), issued("123456", 600, 5)])
        .when(verify("123456", 30))
        .then_expect_events(vec![verified(30)]);
    let user = user_with(&[registered(), issued("123456", 600, 5), verified(30)]);
    assert!(user.email_verified());
    assert_eq!(user.email_verified_at(), Some(at(30)));
    assert!(user.pending_verification().is_none(), "a used code is gone");
}

#[test]
fn a_wrong_code_counts_an_attempt() {
    UserTest::with(())
        .given(vec![registered(), issued("123456", 600, 5)])
        .when(verify("654321", 30))
        .then_expect_events(vec![UserEvent::EmailVerificationFailed {
            attempts_left: 4,
        }]);
}

#[test]
fn after_the_last_allowed_wrong_guess_the_code_is_dead() {
    let given = vec![
        registered(),
        issued("123456", 600, 2),
        UserEvent::EmailVerificationFailed { attempts_left: 1 },
    ];
    UserTest::with(())
        .given(given.clone())
        .when(verify("000000", 30))
        .then_expect_events(vec![UserEvent::EmailVerificationFailed {
            attempts_left: 0,
        }]);
    let mut dead = given;
    dead.push(UserEvent::EmailVerificationFailed { attempts_left: 0 });
    UserTest::with(())
        .given(dead.clone())
        .when(verify("123456", 31))
        .then_expect_error(UserError::VerificationCodeExhausted);
    let user = user_with(&dead);
    let code = user
        .pending_verification()
        .expect("the dead code is remembered");
    assert!(!code.is_live_at(at(31)));
}

#[test]
fn a_new_code_replaces_a_dead_one() {
    UserTest::with(())
        .given(vec![
            registered(),
            issued("123456", 600, 1),
            UserEvent::EmailVerificationFailed { attempts_left: 0 },
            issued("777777", 600, 1),
        ])
        .when(verify("777777", 30))
        .then_expect_events(vec![verified(30)]);
}

#[test]
fn the_previous_code_stops_working_when_a_new_one_is_issued() {
    UserTest::with(())
        .given(vec![
            registered(),
            issued("123456", 600, 5),
            issued("777777", 600, 5),
        ])
        .when(verify("123456", 30))
        .then_expect_events(vec![UserEvent::EmailVerificationFailed {
            attempts_left: 4,
        }]);
}

#[test]
fn an_expired_code_is_refused_without_counting_an_attempt() {
    UserTest::with(())
        .given(vec![registered(), issued("123456", 600, 5)])
        .when(verify("123456", 600))
        .then_expect_error(UserError::VerificationCodeExpired);
}

#[test]
fn verifying_without_a_code_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(verify("123456", 1))
        .then_expect_error(UserError::NoVerificationCode);
}

#[test]
fn verifying_an_already_verified_email_is_refused() {
    UserTest::with(())
        .given(vec![registered(), issued("123456", 600, 5), verified(30)])
        .when(verify("123456", 31))
        .then_expect_error(UserError::EmailAlreadyVerified);
}

// ---- passwords --------------------------------------------------------------------------

#[test]
fn changing_the_password_records_the_new_hash() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ChangePassword {
            password_hash: pw("correct horse"),
            now: at(5),
        })
        .then_expect_events(vec![UserEvent::PasswordChanged {
            password_hash: pw("correct horse"),
            changed_at: at(5),
        }]);
}

#[test]
fn changing_the_password_kills_a_pending_reset_token() {
    UserTest::with(())
        .given(vec![
            registered(),
            reset_requested("token-1", 3600),
            UserEvent::PasswordChanged {
                password_hash: pw("correct horse"),
                changed_at: at(5),
            },
        ])
        .when(reset("token-1", "battery staple", 10))
        .then_expect_error(UserError::NoPasswordResetPending);
}

#[test]
fn a_reset_request_records_the_token_hash_and_expiry() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RequestPasswordReset {
            token_hash: sha("token-1"),
            expires_at: at(3600),
            now: t0(),
        })
        .then_expect_events(vec![reset_requested("token-1", 3600)]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RequestPasswordReset {
            token_hash: sha("token-1"),
            expires_at: at(PASSWORD_RESET_TTL_MAX_S + 1),
            now: t0(),
        })
        .then_expect_error(UserError::ExpiryTooFar {
            max_s: PASSWORD_RESET_TTL_MAX_S,
        });
}

#[test]
fn a_valid_reset_token_sets_the_new_password() {
    UserTest::with(())
        .given(vec![registered(), reset_requested("token-1", 3600)])
        .when(reset("token-1", "battery staple", 10))
        .then_expect_events(vec![UserEvent::PasswordReset {
            token_hash: sha("token-1"),
            password_hash: pw("battery staple"),
            reset_at: at(10),
        }]);
}

#[test]
fn a_reset_token_works_only_once() {
    UserTest::with(())
        .given(vec![
            registered(),
            reset_requested("token-1", 3600),
            UserEvent::PasswordReset {
                token_hash: sha("token-1"),
                password_hash: pw("battery staple"),
                reset_at: at(10),
            },
        ])
        .when(reset("token-1", "another one", 20))
        .then_expect_error(UserError::NoPasswordResetPending);
}

#[test]
fn an_expired_reset_token_is_refused() {
    UserTest::with(())
        .given(vec![registered(), reset_requested("token-1", 3600)])
        .when(reset("token-1", "battery staple", 3600))
        .then_expect_error(UserError::ResetTokenExpired);
}

#[test]
fn a_wrong_or_replaced_reset_token_is_refused() {
    UserTest::with(())
        .given(vec![registered(), reset_requested("token-1", 3600)])
        .when(reset("token-2", "battery staple", 10))
        .then_expect_error(UserError::ResetTokenMismatch);
    UserTest::with(())
        .given(vec![
            registered(),
            reset_requested("token-1", 3600),
            reset_requested("token-2", 3600),
        ])
        .when(reset("token-1", "battery staple", 10))
        .then_expect_error(UserError::ResetTokenMismatch);
}

#[test]
fn resetting_without_a_request_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(reset("token-1", "battery staple", 10))
        .then_expect_error(UserError::NoPasswordResetPending);
}

// ---- roles ------------------------------------------------------------------------------

#[test]
fn granting_a_role_reports_the_roles_after() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::GrantRole {
            role: Role::Analyst,
            granted_by: "admin-1".into(),
        })
        .then_expect_events(vec![UserEvent::RoleGranted {
            role: Role::Analyst,
            granted_by: "admin-1".into(),
            roles_after: roles(&[Role::User, Role::Analyst]),
        }]);
}

#[test]
fn granting_a_held_role_writes_nothing() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::GrantRole {
            role: Role::User,
            granted_by: "admin-1".into(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn revoking_a_held_role_reports_the_roles_after() {
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::RoleGranted {
                role: Role::Auditor,
                granted_by: "admin-1".into(),
                roles_after: roles(&[Role::User, Role::Auditor]),
            },
        ])
        .when(UserCommand::RevokeRole {
            role: Role::Auditor,
            revoked_by: "admin-2".into(),
        })
        .then_expect_events(vec![UserEvent::RoleRevoked {
            role: Role::Auditor,
            revoked_by: "admin-2".into(),
            roles_after: roles(&[Role::User]),
        }]);
}

#[test]
fn the_user_role_cannot_be_revoked() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RevokeRole {
            role: Role::User,
            revoked_by: "admin-1".into(),
        })
        .then_expect_error(UserError::CannotRevokeUserRole);
}

#[test]
fn revoking_a_role_not_held_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RevokeRole {
            role: Role::Admin,
            revoked_by: "admin-1".into(),
        })
        .then_expect_error(UserError::RoleNotHeld(Role::Admin));
}

#[test]
fn a_role_change_needs_a_short_actor() {
    for actor in [String::new(), "  ".into(), "a".repeat(ACTOR_LEN_MAX + 1)] {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::GrantRole {
                role: Role::Admin,
                granted_by: actor,
            })
            .then_expect_error(UserError::ActorInvalid { max: ACTOR_LEN_MAX });
    }
}

// ---- Google -----------------------------------------------------------------------------

#[test]
fn a_google_account_links_once_and_is_never_replaced() {
    let subject = GoogleSubject::parse("1101").expect("a valid subject");
    let other = GoogleSubject::parse("2202").expect("a valid subject");
    let linked = UserEvent::GoogleAccountLinked {
        subject: subject.clone(),
    };
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::LinkGoogleAccount {
            subject: subject.clone(),
        })
        .then_expect_events(vec![linked.clone()]);
    UserTest::with(())
        .given(vec![registered(), linked.clone()])
        .when(UserCommand::LinkGoogleAccount { subject })
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(vec![registered(), linked])
        .when(UserCommand::LinkGoogleAccount { subject: other })
        .then_expect_error(UserError::GoogleAccountAlreadyLinked);
}

// ---- API keys ---------------------------------------------------------------------------

#[test]
fn creating_an_api_key_records_its_hash_prefix_and_limits() {
    let command = UserCommand::CreateApiKey {
        key_id: kid(1),
        prefix: ApiKeyPrefix::parse("ahk_1").expect("a valid prefix"),
        key_hash: sha("key-1"),
        name: ApiKeyName::parse("CI").expect("a valid name"),
        spending_limit: Some(c(5_000_000)),
        expires_at: Some(at(86_400)),
        scopes: ApiKeyScope::default_set(),
        rate_limits: ApiKeyRateLimits::default(),
        now: t0(),
    };
    UserTest::with(())
        .given(vec![registered()])
        .when(command)
        .then_expect_events(vec![UserEvent::ApiKeyCreated {
            key_id: kid(1),
            prefix: ApiKeyPrefix::parse("ahk_1").expect("a valid prefix"),
            key_hash: sha("key-1"),
            name: ApiKeyName::parse("CI").expect("a valid name"),
            spending_limit: Some(c(5_000_000)),
            expires_at: Some(at(86_400)),
            scopes: ApiKeyScope::default_set(),
            rate_limits: ApiKeyRateLimits::default(),
            created_at: t0(),
        }]);
}

#[test]
fn an_api_key_id_is_unique_per_user_even_after_revocation() {
    UserTest::with(())
        .given(vec![registered(), key_created(1)])
        .when(create_key(1))
        .then_expect_error(UserError::ApiKeyIdTaken(kid(1)));
    UserTest::with(())
        .given(vec![registered(), key_created(1), key_revoked(1, 5)])
        .when(create_key(1))
        .then_expect_error(UserError::ApiKeyIdTaken(kid(1)));
}

#[test]
fn an_api_key_refuses_a_non_positive_spending_limit_and_a_past_expiry() {
    let with = |spending_limit, expires_at| UserCommand::CreateApiKey {
        key_id: kid(1),
        prefix: ApiKeyPrefix::parse("ahk_1").expect("a valid prefix"),
        key_hash: sha("key-1"),
        name: ApiKeyName::parse("CI").expect("a valid name"),
        spending_limit,
        expires_at,
        scopes: ApiKeyScope::default_set(),
        rate_limits: ApiKeyRateLimits::default(),
        now: t0(),
    };
    UserTest::with(())
        .given(vec![registered()])
        .when(with(Some(c(0)), None))
        .then_expect_error(UserError::InvalidSpendingLimit(MoneyError::NotPositive(0)));
    UserTest::with(())
        .given(vec![registered()])
        .when(with(None, Some(t0())))
        .then_expect_error(UserError::ExpiryNotInFuture);
}

#[test]
fn a_user_holds_at_most_the_maximum_of_unrevoked_keys() {
    let mut given = vec![registered()];
    given.extend((0..API_KEYS_LIVE_MAX as u128).map(key_created));
    UserTest::with(())
        .given(given.clone())
        .when(create_key(1_000))
        .then_expect_error(UserError::TooManyApiKeys {
            max: API_KEYS_LIVE_MAX,
        });
    given.push(key_revoked(7, 5));
    UserTest::with(())
        .given(given)
        .when(create_key(1_000))
        .then_expect_events(vec![key_created(1_000)]);
}

#[test]
fn revoking_a_key_marks_it_revoked_at_once() {
    UserTest::with(())
        .given(vec![registered(), key_created(1)])
        .when(UserCommand::RevokeApiKey {
            key_id: kid(1),
            now: at(5),
        })
        .then_expect_events(vec![key_revoked(1, 5)]);
    let user = user_with(&[registered(), key_created(1), key_revoked(1, 5)]);
    let key = user.api_key(kid(1)).expect("a revoked key is listed");
    assert!(key.is_revoked());
    assert_eq!(key.revoked_at(), Some(at(5)));
    assert!(!key.is_usable_at(at(5)));
}

#[test]
fn revoking_an_unknown_or_revoked_key_is_refused() {
    UserTest::with(())
        .given(vec![registered(), key_created(1)])
        .when(UserCommand::RevokeApiKey {
            key_id: kid(2),
            now: at(5),
        })
        .then_expect_error(UserError::ApiKeyNotFound(kid(2)));
    UserTest::with(())
        .given(vec![registered(), key_created(1), key_revoked(1, 5)])
        .when(UserCommand::RevokeApiKey {
            key_id: kid(1),
            now: at(6),
        })
        .then_expect_error(UserError::ApiKeyAlreadyRevoked(kid(1)));
}

#[test]
fn an_expired_key_is_listed_but_unusable() {
    let user = user_with(&[
        registered(),
        UserEvent::ApiKeyCreated {
            key_id: kid(1),
            prefix: ApiKeyPrefix::parse("ahk_1").expect("a valid prefix"),
            key_hash: sha("key-1"),
            name: ApiKeyName::parse("CI").expect("a valid name"),
            spending_limit: None,
            expires_at: Some(at(60)),
            scopes: ApiKeyScope::default_set(),
            rate_limits: ApiKeyRateLimits::default(),
            created_at: t0(),
        },
    ]);
    let key = user.api_key(kid(1)).expect("listed");
    assert!(key.is_usable_at(at(59)));
    assert!(!key.is_usable_at(at(60)));
    assert_eq!(
        user.unrevoked_api_keys(),
        1,
        "it holds its slot until revoked"
    );
}

#[test]
fn old_revoked_keys_are_forgotten_and_recalled_from_the_store() {
    let total = REVOKED_API_KEYS_KEPT as u128 + 5;
    let mut events = vec![registered()];
    for n in 0..total {
        events.push(key_created(n));
        events.push(key_revoked(n, i64::try_from(n).expect("small")));
    }
    let mut user = user_with(&events);
    assert_eq!(user.api_keys().len(), REVOKED_API_KEYS_KEPT, "bounded");
    assert!(
        user.api_key(kid(0)).is_none(),
        "the oldest revoked key is forgotten"
    );
    assert!(user.api_key(kid(total - 1)).is_some_and(ApiKey::is_revoked));

    let revoke_0 = UserCommand::RevokeApiKey {
        key_id: kid(0),
        now: at(9_999),
    };
    assert_eq!(
        revoke_0.related_keys(),
        vec![
            key_created(0).idempotency_key().expect("keyed"),
            key_revoked(0, 0).idempotency_key().expect("keyed"),
        ]
    );
    assert_eq!(
        user.decide(revoke_0.clone()),
        Err(UserError::ApiKeyNotFound(kid(0)))
    );
    user.recall(vec![key_created(0), key_revoked(0, 0)]);
    assert_eq!(
        user.decide(revoke_0),
        Err(UserError::ApiKeyAlreadyRevoked(kid(0)))
    );
}

#[test]
fn a_recall_never_brings_back_a_key_as_live() {
    let mut user = user_with(&[registered()]);
    user.recall(vec![key_created(3)]);
    assert!(user.api_key(kid(3)).is_none());
    assert_eq!(user.unrevoked_api_keys(), 0);
}

#[test]
fn an_api_key_needs_a_scope() {
    let mut command = create_key(1);
    if let UserCommand::CreateApiKey { scopes, .. } = &mut command {
        scopes.clear();
    }
    UserTest::with(())
        .given(vec![registered()])
        .when(command)
        .then_expect_error(UserError::NoScopes);
}

#[test]
fn a_key_created_before_rate_limits_has_none_and_a_new_one_keeps_its_own() {
    let json = serde_json::to_value(key_created(1)).expect("json");
    assert!(
        json["ApiKeyCreated"].get("rate_limits").is_none(),
        "a key without limits of its own is written as before: {json}"
    );
    let old: UserEvent = serde_json::from_value(json).expect("an event without rate limits");
    let user = user_with(&[registered(), old]);
    assert!(user
        .api_key(kid(1))
        .expect("the key")
        .rate_limits()
        .is_unset());
    let limits = ApiKeyRateLimits {
        requests_per_minute: Some(100),
        tokens_per_minute: None,
        concurrent_requests: Some(2),
    };
    let mut command = create_key(2);
    let mut expected = key_created(2);
    if let UserCommand::CreateApiKey { rate_limits, .. } = &mut command {
        *rate_limits = limits;
    }
    if let UserEvent::ApiKeyCreated { rate_limits, .. } = &mut expected {
        *rate_limits = limits;
    }
    UserTest::with(())
        .given(vec![registered()])
        .when(command)
        .then_expect_events(vec![expected.clone()]);
    let user = user_with(&[registered(), expected]);
    assert_eq!(user.api_key(kid(2)).expect("the key").rate_limits(), limits);
}

#[test]
fn a_key_created_before_scopes_keeps_what_every_key_could_do_then() {
    let mut json = serde_json::to_value(key_created(1)).expect("json");
    json["ApiKeyCreated"]
        .as_object_mut()
        .expect("an object")
        .remove("scopes");
    let old: UserEvent = serde_json::from_value(json).expect("an event without scopes");
    let user = user_with(&[registered(), old]);
    let key = user.api_key(kid(1)).expect("the key");
    assert_eq!(key.scopes(), &ApiKeyScope::before_scopes());
    assert!(key.has_scope(ApiKeyScope::Read) && key.has_scope(ApiKeyScope::Inference));
    assert_eq!(
        ApiKeyScope::default_set(),
        BTreeSet::from([ApiKeyScope::Inference])
    );
}

// ---- suspension and sessions ------------------------------------------------------------

fn reason(text: &str) -> SuspensionReason {
    SuspensionReason::parse(text).expect("a valid reason")
}

fn suspended(at_s: i64) -> UserEvent {
    UserEvent::UserSuspended {
        reason: reason("chargeback fraud"),
        suspended_by: "admin-1".into(),
        suspended_at: at(at_s),
    }
}

#[test]
fn suspending_a_user_records_why_and_by_whom_and_ends_their_sessions() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::SuspendUser {
            reason: reason("chargeback fraud"),
            by: "admin-1".into(),
            now: at(10),
        })
        .then_expect_events(vec![suspended(10)]);
    let user = user_with(&[registered(), suspended(10)]);
    let suspension = user.suspension().expect("suspended");
    assert_eq!(suspension.reason().as_str(), "chargeback fraud");
    assert_eq!(suspension.by(), "admin-1");
    assert_eq!(suspension.since(), at(10));
    assert_eq!(
        user.session_version(),
        1,
        "tokens minted before it are behind"
    );
}

#[test]
fn suspending_a_suspended_user_or_unsuspending_an_active_one_changes_nothing() {
    UserTest::with(())
        .given(vec![registered(), suspended(10)])
        .when(UserCommand::SuspendUser {
            reason: reason("again"),
            by: "admin-2".into(),
            now: at(20),
        })
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::UnsuspendUser {
            reason: reason("never was"),
            by: "admin-2".into(),
            now: at(20),
        })
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::SuspendUser {
            reason: reason("x"),
            by: " ".into(),
            now: at(20),
        })
        .then_expect_error(UserError::ActorInvalid { max: ACTOR_LEN_MAX });
}

#[test]
fn unsuspending_lifts_the_suspension_but_does_not_bring_old_sessions_back() {
    let reinstated = UserEvent::UserUnsuspended {
        reason: reason("refund settled"),
        unsuspended_by: "admin-2".into(),
        unsuspended_at: at(30),
    };
    UserTest::with(())
        .given(vec![registered(), suspended(10)])
        .when(UserCommand::UnsuspendUser {
            reason: reason("refund settled"),
            by: "admin-2".into(),
            now: at(30),
        })
        .then_expect_events(vec![reinstated.clone()]);
    let user = user_with(&[registered(), suspended(10), reinstated]);
    assert!(!user.is_suspended());
    assert_eq!(user.session_version(), 1);
}

#[test]
fn every_event_that_takes_a_privilege_away_raises_the_session_version() {
    let granted = UserEvent::RoleGranted {
        role: Role::Admin,
        granted_by: "cli".into(),
        roles_after: BTreeSet::from([Role::User, Role::Admin]),
    };
    let user = user_with(&[registered(), granted.clone(), key_created(1)]);
    assert_eq!(
        user.session_version(),
        0,
        "a grant or a new key ends nothing"
    );
    let revoked = UserEvent::RoleRevoked {
        role: Role::Admin,
        revoked_by: "admin-1".into(),
        roles_after: BTreeSet::from([Role::User]),
    };
    let ended = UserEvent::SessionsEnded {
        ended_by: "self".into(),
        ended_at: at(40),
    };
    let user = user_with(&[registered(), granted, revoked, ended]);
    assert_eq!(user.session_version(), 2);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::EndSessions {
            by: "self".into(),
            now: at(40),
        })
        .then_expect_events(vec![UserEvent::SessionsEnded {
            ended_by: "self".into(),
            ended_at: at(40),
        }]);
}

// ---- state, snapshots, payloads ---------------------------------------------------------

#[test]
fn the_state_shows_what_the_api_needs() {
    let user = user_with(&[
        registered(),
        issued("123456", 600, 5),
        key_created(2),
        key_created(1),
    ]);
    assert!(user.is_registered());
    assert_eq!(user.email().map(Email::as_str), Some("alice@example.com"));
    assert_eq!(user.display_name().map(DisplayName::as_str), Some("Alice"));
    assert_eq!(user.registered_at(), Some(t0()));
    assert_eq!(user.roles(), &roles(&[Role::User]));
    assert!(user.has_role(Role::User) && !user.has_role(Role::Admin));
    assert!(user.has_password());
    assert_eq!(user.password_hash(), Some(&pw("password123")));
    assert!(!user.email_verified());
    assert!(user.google_subject().is_none());
    let code = user.pending_verification().expect("a pending code");
    assert_eq!(
        (code.issued_at(), code.expires_at(), code.attempts_left()),
        (t0(), at(600), 5)
    );
    let keys = user.api_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].prefix().as_str(), "ahk_1", "ties on time go by id");
    assert_eq!(
        user.api_key_by_hash(&sha("key-2")).map(ApiKey::id),
        Some(kid(2))
    );
    assert!(user.api_key_by_hash(&sha("key-9")).is_none());
}

#[test]
fn a_snapshot_of_the_state_round_trips_through_json() {
    let user = user_with(&[
        registered(),
        issued("123456", 600, 5),
        UserEvent::EmailVerificationFailed { attempts_left: 4 },
        reset_requested("token-1", 3600),
        UserEvent::RoleGranted {
            role: Role::Admin,
            granted_by: "cli".into(),
            roles_after: roles(&[Role::User, Role::Admin]),
        },
        UserEvent::GoogleAccountLinked {
            subject: GoogleSubject::parse("1101").expect("a valid subject"),
        },
        key_created(1),
        key_created(2),
        key_revoked(2, 9),
    ]);
    let json = serde_json::to_value(&user).expect("state serializes");
    let back: User = serde_json::from_value(json).expect("state deserializes");
    assert_eq!(back, user);
}

#[test]
fn events_are_version_1_and_round_trip_through_json() {
    for event in [
        registered(),
        issued("123456", 600, 5),
        verified(3),
        reset_requested("token-1", 3600),
        key_created(1),
        key_revoked(1, 2),
    ] {
        assert_eq!(event.event_version(), "1");
        let json = serde_json::to_string(&event).expect("serializes");
        assert!(json.contains(&event.event_type()));
        let back: UserEvent = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, event);
    }
}

#[test]
fn no_event_holds_a_plaintext_secret() {
    let events = vec![
        registered(),
        issued("123456", 600, 5),
        reset_requested("reset-token-plain", 3600),
        UserEvent::PasswordReset {
            token_hash: sha("reset-token-plain"),
            password_hash: pw("battery staple"),
            reset_at: at(10),
        },
        key_created(1),
    ];
    let json = serde_json::to_string(&events).expect("serializes");
    for plain in [
        "password123",
        "123456",
        "reset-token-plain",
        "battery staple",
        "key-1",
    ] {
        assert!(!json.contains(plain), "{plain} leaked");
    }
}

#[test]
fn errors_and_debug_output_never_show_a_hash() {
    let user = user_with(&[registered(), issued("123456", 600, 5)]);
    let debug = format!("{user:?}");
    assert!(!debug.contains(&digest_hex("123456")));
    assert!(!debug.contains(&digest_hex("password123")));
}

// ---- property test ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Register { google: bool, verified: bool },
    Issue(u8, i64, u32),
    Verify(u8),
    ChangePassword(u8),
    RequestReset(u8, i64),
    Reset(u8, u8),
    Grant(Role),
    Revoke(Role),
    Link(u8),
    CreateKey(u8, Option<i64>, Option<i64>),
    RevokeKey(u8),
    Suspend,
    Unsuspend,
    EndSessions,
    Tick(i64),
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), any::<bool>()).prop_map(|(google, verified)| Op::Register { google, verified }),
        3 => (0u8..4, -10i64..900, 0u32..5).prop_map(|(n, ttl, a)| Op::Issue(n, ttl, a)),
        4 => (0u8..4).prop_map(Op::Verify),
        1 => (0u8..4).prop_map(Op::ChangePassword),
        2 => (0u8..4, -10i64..900).prop_map(|(n, ttl)| Op::RequestReset(n, ttl)),
        2 => (0u8..4, 0u8..4).prop_map(|(t, p)| Op::Reset(t, p)),
        2 => role().prop_map(Op::Grant),
        2 => role().prop_map(Op::Revoke),
        1 => (0u8..3).prop_map(Op::Link),
        3 => (0u8..8, proptest::option::of(-5i64..1_000), proptest::option::of(-10i64..600))
            .prop_map(|(k, l, e)| Op::CreateKey(k, l, e)),
        2 => (0u8..8).prop_map(Op::RevokeKey),
        1 => Just(Op::Suspend),
        1 => Just(Op::Unsuspend),
        1 => Just(Op::EndSessions),
        2 => (1i64..300).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        first in (any::<bool>(), any::<bool>()).prop_map(|(google, verified)| Op::Register { google, verified }),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut user = User::default();
        let mut now = t0();
        let mut all_events: Vec<UserEvent> = Vec::new();
        // What the rules promise, tracked beside the aggregate.
        let mut last_code: Option<SecretHash> = None;
        let mut used_tokens: HashSet<String> = HashSet::new();
        let mut revoked_keys: HashSet<ApiKeyId> = HashSet::new();
        let mut linked: Option<GoogleSubject> = None;

        for op in std::iter::once(first).chain(ops) {
            let submitted_code = match &op {
                Op::Verify(n) => Some(sha(&format!("plain-code-{n}"))),
                _ => None,
            };
            let command = match op {
                Op::Register { google, verified } => UserCommand::RegisterUser {
                    email: alice(),
                    password_hash: (!google).then(|| pw("plain-pw-first")),
                    display_name: None,
                    roles: BTreeSet::new(),
                    google_subject: google.then(|| GoogleSubject::parse("g-0").expect("valid")),
                    email_verified: verified,
                    now,
                },
                Op::Issue(n, ttl, attempts) => UserCommand::IssueVerificationCode {
                    code_hash: sha(&format!("plain-code-{n}")),
                    expires_at: now + Duration::seconds(ttl),
                    attempts_allowed: attempts,
                    now,
                },
                Op::Verify(n) => UserCommand::VerifyEmail { code_hash: sha(&format!("plain-code-{n}")), now },
                Op::ChangePassword(n) => UserCommand::ChangePassword { password_hash: pw(&format!("plain-pw-{n}")), now },
                Op::RequestReset(n, ttl) => UserCommand::RequestPasswordReset {
                    token_hash: sha(&format!("plain-token-{n}")),
                    expires_at: now + Duration::seconds(ttl),
                    now,
                },
                Op::Reset(t, p) => UserCommand::ResetPassword {
                    token_hash: sha(&format!("plain-token-{t}")),
                    password_hash: pw(&format!("plain-pw-{p}")),
                    now,
                },
                Op::Grant(role) => UserCommand::GrantRole { role, granted_by: "admin".into() },
                Op::Revoke(role) => UserCommand::RevokeRole { role, revoked_by: "admin".into() },
                Op::Link(n) => UserCommand::LinkGoogleAccount { subject: GoogleSubject::parse(format!("g-{n}")).expect("valid") },
                Op::CreateKey(k, limit, expires) => UserCommand::CreateApiKey {
                    key_id: kid(u128::from(k)),
                    prefix: ApiKeyPrefix::parse(format!("ahk_{k}")).expect("valid"),
                    key_hash: sha(&format!("plain-key-{k}")),
                    name: ApiKeyName::parse(format!("key {k}")).expect("valid"),
                    spending_limit: limit.map(c),
                    expires_at: expires.map(|e| now + Duration::seconds(e)),
                    scopes: ApiKeyScope::default_set(),
                    rate_limits: ApiKeyRateLimits::default(),
                    now,
                },
                Op::RevokeKey(k) => UserCommand::RevokeApiKey { key_id: kid(u128::from(k)), now },
                Op::Suspend => UserCommand::SuspendUser { reason: reason("abuse"), by: "admin".into(), now },
                Op::Unsuspend => UserCommand::UnsuspendUser { reason: reason("cleared"), by: "admin".into(), now },
                Op::EndSessions => UserCommand::EndSessions { by: "self".into(), now },
                Op::Tick(dt) => { now += Duration::seconds(dt); continue; }
            };
            let before = user.clone();
            match user.decide(command) {
                Ok(decision) => {
                    prop_assert!(decision.replay_of.is_none(), "a user never replays");
                    for e in decision.events {
                        let json = serde_json::to_string(&e).expect("serializes");
                        // Every event that takes a privilege away moves the session version
                        // on by one, and no other event moves it.
                        let version_before = user.session_version();
                        let ends_sessions = e.ends_sessions();
                        prop_assert!(!json.contains("plain-"), "a plaintext secret in {}", json);
                        match &e {
                            UserEvent::VerificationCodeIssued { code_hash, .. } => last_code = Some(code_hash.clone()),
                            UserEvent::EmailVerified { .. } => {
                                // At most one code is live: only the last one issued verifies,
                                // and only while it has attempts and time left.
                                if let Some(submitted) = &submitted_code {
                                    prop_assert_eq!(Some(submitted), last_code.as_ref());
                                    let code = user.pending_verification().expect("a pending code");
                                    prop_assert!(code.is_live_at(now));
                                }
                            }
                            UserEvent::PasswordResetRequested { token_hash, .. } => {
                                // A fresh issuance (here the same plaintext may come twice).
                                used_tokens.remove(token_hash.as_str());
                            }
                            UserEvent::PasswordReset { token_hash, .. } => {
                                prop_assert!(used_tokens.insert(token_hash.as_str().to_string()), "a reset token used twice");
                            }
                            UserEvent::ApiKeyRevoked { key_id, .. } => {
                                prop_assert!(revoked_keys.insert(*key_id), "a key revoked twice");
                            }
                            UserEvent::ApiKeyCreated { key_id, .. } => {
                                prop_assert!(!revoked_keys.contains(key_id), "a revoked key id reused");
                            }
                            UserEvent::GoogleAccountLinked { subject } => {
                                prop_assert!(linked.is_none(), "a second Google account linked");
                                linked = Some(subject.clone());
                            }
                            _ => {}
                        }
                        user.evolve(e.clone());
                        prop_assert_eq!(
                            user.session_version(),
                            version_before + u32::from(ends_sessions),
                            "the session version after {}", json
                        );
                        all_events.push(e);
                    }
                }
                Err(_) => prop_assert_eq!(&user, &before, "a refused command changes nothing"),
            }

            if user.is_registered() {
                prop_assert!(user.has_role(Role::User), "the user role was lost");
            }
            if user.email_verified() {
                prop_assert!(user.pending_verification().is_none(), "a code outlived verification");
            }
            if let Some(code) = user.pending_verification() {
                prop_assert!(code.attempts_left() <= code.attempts_allowed());
                prop_assert!(code.attempts_allowed() <= VERIFICATION_ATTEMPTS_MAX);
            }
            for id in &revoked_keys {
                prop_assert!(user.api_key(*id).is_some_and(ApiKey::is_revoked), "a revoked key came back");
            }
            prop_assert!(user.unrevoked_api_keys() <= API_KEYS_LIVE_MAX);
            prop_assert_eq!(user.google_subject(), linked.as_ref());
        }
        // A fresh fold of every event gives the same state (what replay and snapshots rely on).
        prop_assert_eq!(&user_with(&all_events), &user);
        let snapshot: User = serde_json::from_value(serde_json::to_value(&user).expect("serializes"))
            .expect("deserializes");
        prop_assert_eq!(snapshot, user);
    }
}

/// Issue 14, finding 18: new codes do not buy new guesses for ever.
#[test]
fn an_address_takes_at_most_the_lifetime_number_of_wrong_codes() {
    let mut user = user_with(&[registered()]);
    let mut failures = 0;
    for n in 0.. {
        match user.decide(issue(&format!("code-{n}"), 600, 5)) {
            Ok(decision) => decision.events.into_iter().for_each(|e| user.evolve(e)),
            Err(err) => {
                assert_eq!(err, UserError::VerificationLocked);
                break;
            }
        }
        for _ in 0..5 {
            match user.decide(verify("wrong", 30)) {
                Ok(decision) => {
                    failures += 1;
                    decision.events.into_iter().for_each(|e| user.evolve(e));
                }
                Err(UserError::VerificationCodeExhausted) => break,
                Err(err) => {
                    assert_eq!(err, UserError::VerificationLocked);
                    break;
                }
            }
        }
        assert!(n < 100, "codes kept coming");
    }
    assert_eq!(failures, VERIFICATION_FAILURES_MAX);
    // Even the right code of a live code is not checked any more.
    assert_eq!(
        user.decide(verify("code-3", 30)).map(|d| d.events),
        Err(UserError::VerificationLocked)
    );
}
