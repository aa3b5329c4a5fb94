//! Identifiers that cross the domain boundary, validated once at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Longest request id or idempotency key accepted. They are stored in every event and index.
pub const KEY_LEN_MAX: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An identifier must not be empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// An identifier is longer than allowed.
    #[error("{what} must be at most {max} characters", max = KEY_LEN_MAX)]
    TooLong { what: &'static str },
    /// An identifier holds a character outside `[A-Za-z0-9._:-]`.
    #[error("{what} may only contain letters, digits and . _ : -")]
    BadCharacter { what: &'static str },
}

fn validate(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(what));
    }
    if s.len() > KEY_LEN_MAX {
        return Err(IdError::TooLong { what });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::BadCharacter { what });
    }
    Ok(())
}

/// A credit account; one per user, so its id is the user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user. One user owns exactly one credit account, under the same id, so the two convert
/// freely: [`UserId::account_id`] and `AccountId::from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// The user's credit account.
    pub const fn account_id(self) -> AccountId {
        AccountId(self.0)
    }
}

impl From<UserId> for AccountId {
    fn from(user: UserId) -> AccountId {
        user.account_id()
    }
}

impl From<AccountId> for UserId {
    fn from(account: AccountId) -> UserId {
        UserId(account.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(UserId)
    }
}

/// One API key of a user. The caller picks it (a random UUID), so it is unique everywhere;
/// the user aggregate refuses a second key with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(pub Uuid);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ApiKeyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(ApiKeyId)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($what, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// The id of one inference request: the key of its reservation and of its settlement.
    RequestId,
    "request id"
);
string_id!(
    /// A caller-chosen key that makes a grant, purchase or promo credit happen at most once.
    IdempotencyKey,
    "idempotency key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_empty_long_and_odd_strings() {
        assert_eq!(RequestId::parse(""), Err(IdError::Empty("request id")));
        assert!(matches!(
            IdempotencyKey::parse("x".repeat(KEY_LEN_MAX + 1)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(
            RequestId::parse("a b"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(RequestId::parse("req_01:abc-DEF.9").is_ok());
    }

    #[test]
    fn a_user_id_is_its_credit_account_id() {
        let user: UserId = "6f1c1f8e-0b7a-4a44-9d3e-2b1f3c4d5e6f"
            .parse()
            .expect("a valid uuid");
        let account = AccountId::from(user);
        assert_eq!(account.0, user.0);
        assert_eq!(UserId::from(account), user);
        assert_eq!(user.to_string(), account.to_string());
        assert_eq!(
            serde_json::to_string(&user).expect("serializes"),
            serde_json::to_string(&account).expect("serializes")
        );
    }

    #[test]
    fn ids_refuse_bad_strings_when_deserialized() {
        assert!(serde_json::from_str::<RequestId>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<RequestId>("\"ok-1\"").is_ok());
    }
}
