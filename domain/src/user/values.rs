//! Validated values of the identity domain, parsed once at the edge.
//!
//! Secrets never enter the domain: a password arrives as its argon2 PHC string
//! ([`PasswordHash`]), a verification code, reset token or API key as the SHA-256 of it
//! ([`SecretHash`]). Their shapes are checked, so a plaintext password or a six-digit code
//! cannot be passed where a hash is expected, and their `Debug` output hides the digest.
//!
//! Every value here is stored in events forever: a check may be loosened, never tightened,
//! or old events would stop deserializing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Longest email address (RFC 5321's path limit less the angle brackets).
pub const EMAIL_LEN_MAX: usize = 254;
/// Longest local part (before the `@`), per RFC 5321.
pub const EMAIL_LOCAL_LEN_MAX: usize = 64;
/// Longest label of a domain name, per RFC 1035.
const DOMAIN_LABEL_LEN_MAX: usize = 63;
/// Longest display name, in characters.
pub const DISPLAY_NAME_LEN_MAX: usize = 100;
/// Longest name of an API key, in characters.
pub const API_KEY_NAME_LEN_MAX: usize = 100;
/// Longest visible prefix of an API key. Short, so that what is shown reveals little of it.
pub const API_KEY_PREFIX_LEN_MAX: usize = 16;
/// Longest reason given for suspending or reinstating a user, in characters.
pub const SUSPENSION_REASON_LEN_MAX: usize = 500;
/// Longest Google subject: OpenID Connect caps `sub` at 255 ASCII characters.
pub const GOOGLE_SUBJECT_LEN_MAX: usize = 255;
/// Longest password hash; an argon2id PHC string is about 100 characters.
pub const PASSWORD_HASH_LEN_MAX: usize = 512;
/// Shortest digest segment of a PHC string: anything shorter is no hash.
const PASSWORD_DIGEST_LEN_MIN: usize = 16;
/// A SHA-256 digest in hexadecimal.
const SHA256_HEX_LEN: usize = 64;

/// Why a value was refused. Messages never repeat the input: it may be personal or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserValueError {
    /// A value must not be empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A value is longer than allowed.
    #[error("{what} must be at most {max} characters")]
    TooLong { what: &'static str, max: usize },
    /// A value holds a character it may not (a control character, or one outside its
    /// alphabet).
    #[error("{0} contains a character that is not allowed")]
    BadCharacter(&'static str),
    /// Not an email address of the form `local@domain.tld`.
    #[error("not a valid email address")]
    MalformedEmail,
    /// Not a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`.
    #[error("the password hash must be a PHC string such as $argon2id$v=19$...")]
    MalformedPasswordHash,
    /// Not a SHA-256 digest as 64 hexadecimal digits.
    #[error("a secret hash must be a SHA-256 digest as 64 hexadecimal digits")]
    MalformedSecretHash,
    /// Not one of the four roles.
    #[error("unknown role: expected one of user, admin, analyst, auditor")]
    UnknownRole,
    /// Not one of the API key scopes.
    #[error("unknown scope: expected inference or read")]
    UnknownScope,
}

/// `TryFrom<String>` (for serde), `From<T> for String`, and `as_str`.
macro_rules! text_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = UserValueError;
            fn try_from(s: String) -> Result<Self, UserValueError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// `Display` for values that may be shown (never for hashes).
macro_rules! display_value {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// An email address, trimmed and lowercased, so that two spellings of one address are
/// equal (uniqueness across users is case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(s: impl AsRef<str>) -> Result<Self, UserValueError> {
        let s = s.as_ref().trim().to_lowercase();
        if s.is_empty() {
            return Err(UserValueError::Empty("email"));
        }
        if s.len() > EMAIL_LEN_MAX {
            return Err(UserValueError::TooLong {
                what: "email",
                max: EMAIL_LEN_MAX,
            });
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(UserValueError::MalformedEmail);
        };
        if !valid_local_part(local) || !valid_domain(domain) {
            return Err(UserValueError::MalformedEmail);
        }
        Ok(Email(s))
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

text_value!(Email);
display_value!(Email);

/// A dot-atom, loosely: no quoting, no whitespace, no leading, trailing or double dot.
fn valid_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= EMAIL_LOCAL_LEN_MAX
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"\"(),:;<>@[\\]".contains(c))
}

/// At least two labels of letters, digits and inner hyphens (letters may be Unicode).
fn valid_domain(domain: &str) -> bool {
    let mut labels = 0;
    for label in domain.split('.') {
        labels += 1;
        if label.is_empty()
            || label.len() > DOMAIN_LABEL_LEN_MAX
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
        {
            return false;
        }
    }
    labels >= 2
}

/// What a user may do. Every user holds [`Role::User`]; the others are granted by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Spends their own credits, manages their own keys.
    User,
    /// Grants credits and roles, manages promo codes and users.
    Admin,
    /// Reads all usage, replays and exports.
    Analyst,
    /// Reads all ledgers and verifies them.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Admin, Role::Analyst, Role::Auditor];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UserValueError;

    /// Case-insensitive, surrounding whitespace ignored (`" Admin "` is `admin`).
    fn from_str(s: &str) -> Result<Self, UserValueError> {
        let s = s.trim();
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s))
            .ok_or(UserValueError::UnknownRole)
    }
}

/// What an API key may be used for, chosen when it is created. A key acts with its owner's
/// `user` role only, and only where one of its scopes reaches; everything else (grants,
/// roles, keys, payments, promo codes) needs a person signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyScope {
    /// `/v1` (chat completions, models) and the chat WebSocket: spends credits.
    Inference,
    /// The owner's own reads (`GET` routes outside `/v1`: balance, ledger, payments, keys).
    Read,
}

/// An API key's own rate limits, each overriding the hub's default for keys when set. Keys
/// created before these existed carry none in their event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRateLimits {
    /// Requests to `/v1` per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt plus the most the answer may hold) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Inference requests running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u32>,
}

impl ApiKeyRateLimits {
    /// No limit of its own: the defaults apply.
    pub fn is_unset(&self) -> bool {
        *self == ApiKeyRateLimits::default()
    }
}

impl ApiKeyScope {
    pub const ALL: [ApiKeyScope; 2] = [ApiKeyScope::Inference, ApiKeyScope::Read];

    pub const fn as_str(self) -> &'static str {
        match self {
            ApiKeyScope::Inference => "inference",
            ApiKeyScope::Read => "read",
        }
    }

    /// What a new key may do when its creator names no scope: inference only.
    pub fn default_set() -> BTreeSet<ApiKeyScope> {
        BTreeSet::from([ApiKeyScope::Inference])
    }

    /// What a key created before scopes existed may do: what every key could then
    /// (inference and reads). Its events carry no scopes.
    pub fn before_scopes() -> BTreeSet<ApiKeyScope> {
        BTreeSet::from(ApiKeyScope::ALL)
    }
}

impl fmt::Display for ApiKeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiKeyScope {
    type Err = UserValueError;

    /// Case-insensitive, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, UserValueError> {
        let s = s.trim();
        ApiKeyScope::ALL
            .into_iter()
            .find(|scope| scope.as_str().eq_ignore_ascii_case(s))
            .ok_or(UserValueError::UnknownScope)
    }
}

/// Trimmed free text of at most `max` characters, without control characters.
fn label(what: &'static str, s: &str, max: usize) -> Result<String, UserValueError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UserValueError::Empty(what));
    }
    if s.chars().count() > max {
        return Err(UserValueError::TooLong { what, max });
    }
    if s.chars().any(char::is_control) {
        return Err(UserValueError::BadCharacter(what));
    }
    Ok(s.to_string())
}

/// The name a user goes by, shown in the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(s: impl AsRef<str>) -> Result<Self, UserValueError> {
        label("display name", s.as_ref(), DISPLAY_NAME_LEN_MAX).map(DisplayName)
    }
}

text_value!(DisplayName);
display_value!(DisplayName);

/// The name a user gives an API key ("CI pipeline").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyName(String);

impl ApiKeyName {
    pub fn parse(s: impl AsRef<str>) -> Result<Self, UserValueError> {
        label("API key name", s.as_ref(), API_KEY_NAME_LEN_MAX).map(ApiKeyName)
    }
}

text_value!(ApiKeyName);
display_value!(ApiKeyName);

/// Why an admin suspended a user or lifted a suspension ("chargeback fraud, ticket 812"):
/// kept in the event, shown to admins, never to the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SuspensionReason(String);

impl SuspensionReason {
    pub fn parse(s: impl AsRef<str>) -> Result<Self, UserValueError> {
        label("reason", s.as_ref(), SUSPENSION_REASON_LEN_MAX).map(SuspensionReason)
    }
}

text_value!(SuspensionReason);
display_value!(SuspensionReason);

/// The first characters of an API key (`ahk_3f9a2b`), kept in clear so that a user can tell
/// keys apart. The rest of the key must carry its entropy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyPrefix(String);

impl ApiKeyPrefix {
    pub fn parse(s: impl Into<String>) -> Result<Self, UserValueError> {
        let s = s.into();
        if s.is_empty() {
            return Err(UserValueError::Empty("API key prefix"));
        }
        if s.len() > API_KEY_PREFIX_LEN_MAX {
            return Err(UserValueError::TooLong {
                what: "API key prefix",
                max: API_KEY_PREFIX_LEN_MAX,
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(UserValueError::BadCharacter("API key prefix"));
        }
        Ok(ApiKeyPrefix(s))
    }
}

text_value!(ApiKeyPrefix);
display_value!(ApiKeyPrefix);

/// The `sub` claim of a Google ID token: Google's stable id for the account. Compared
/// exactly (it is case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GoogleSubject(String);

impl GoogleSubject {
    pub fn parse(s: impl Into<String>) -> Result<Self, UserValueError> {
        let s = s.into();
        if s.is_empty() {
            return Err(UserValueError::Empty("Google subject"));
        }
        if s.len() > GOOGLE_SUBJECT_LEN_MAX {
            return Err(UserValueError::TooLong {
                what: "Google subject",
                max: GOOGLE_SUBJECT_LEN_MAX,
            });
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UserValueError::BadCharacter("Google subject"));
        }
        Ok(GoogleSubject(s))
    }
}

text_value!(GoogleSubject);
display_value!(GoogleSubject);

/// A password as its PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), made by the API.
/// The domain only stores it; the API verifies a login against it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn parse(s: impl Into<String>) -> Result<Self, UserValueError> {
        let s = s.into();
        if s.len() > PASSWORD_HASH_LEN_MAX {
            return Err(UserValueError::TooLong {
                what: "password hash",
                max: PASSWORD_HASH_LEN_MAX,
            });
        }
        let phc_alphabet = |b: u8| b.is_ascii_alphanumeric() || b"$,=+/.-".contains(&b);
        let segments: Vec<&str> = s.split('$').collect();
        let shaped = matches!(
            segments.as_slice(),
            ["", id, .., digest] if !id.is_empty() && digest.len() >= PASSWORD_DIGEST_LEN_MIN
        ) && s.bytes().all(phc_alphabet);
        if !shaped {
            return Err(UserValueError::MalformedPasswordHash);
        }
        Ok(PasswordHash(s))
    }

    /// The algorithm named by the PHC string (`argon2id`).
    pub fn algorithm(&self) -> &str {
        self.0.split('$').nth(1).unwrap_or_default()
    }
}

text_value!(PasswordHash);

impl fmt::Debug for PasswordHash {
    /// Names the algorithm, hides the salt and digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash(${}$…)", self.algorithm())
    }
}

/// The SHA-256 of a secret the user was sent or shown (a verification code, a reset token,
/// an API key), as 64 lowercase hexadecimal digits. Commands carry the hash of what the
/// user submitted; the aggregate compares hashes with [`SecretHash::matches`].
///
/// Short secrets (a six-digit code) are only as safe as their hash is hard to brute-force:
/// the API should use a keyed hash (HMAC-SHA-256 with a server secret) for those.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretHash(String);

impl SecretHash {
    /// Hexadecimal in either case; stored lowercase.
    pub fn parse(s: impl AsRef<str>) -> Result<Self, UserValueError> {
        let s = s.as_ref();
        if s.len() != SHA256_HEX_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UserValueError::MalformedSecretHash);
        }
        Ok(SecretHash(s.to_ascii_lowercase()))
    }

    /// Equal, compared in time independent of where the two differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

text_value!(SecretHash);

impl fmt::Debug for SecretHash {
    /// Hides the digest: the hash of a short code is as good as the code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGON: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn an_email_is_trimmed_and_lowercased() {
        let email = Email::parse("  Alice.Smith+hub@Example.COM ").expect("a valid email");
        assert_eq!(email.as_str(), "alice.smith+hub@example.com");
        assert_eq!(email.domain(), "example.com");
        assert_eq!(
            Email::parse("ALICE@example.com"),
            Email::parse("alice@EXAMPLE.com")
        );
    }

    #[test]
    fn an_email_refuses_malformed_addresses() {
        for bad in [
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@@example.com",
            "a@b@example.com",
            "al ice@example.com",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example-.com",
            "alice@exa_mple.com",
            "alice@example..com",
            "\"alice\"@example.com",
            "alice\n@example.com",
        ] {
            assert_eq!(
                Email::parse(bad),
                Err(UserValueError::MalformedEmail),
                "{bad:?}"
            );
        }
        assert_eq!(Email::parse("   "), Err(UserValueError::Empty("email")));
        let long_local = format!("{}@example.com", "a".repeat(EMAIL_LOCAL_LEN_MAX + 1));
        assert_eq!(
            Email::parse(long_local),
            Err(UserValueError::MalformedEmail)
        );
        let long = format!("a@{}.com", "b".repeat(EMAIL_LEN_MAX));
        assert!(matches!(
            Email::parse(long),
            Err(UserValueError::TooLong { .. })
        ));
    }

    #[test]
    fn an_email_is_normalised_when_deserialized_and_refused_when_malformed() {
        let email: Email = serde_json::from_str("\"Bob@Example.org\"").expect("valid");
        assert_eq!(email.as_str(), "bob@example.org");
        assert!(serde_json::from_str::<Email>("\"bob\"").is_err());
    }

    #[test]
    fn roles_parse_and_print_in_lowercase() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).expect("serializes");
            assert_eq!(json, format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&json).ok(), Some(role));
        }
        assert_eq!(" Admin ".parse::<Role>(), Ok(Role::Admin));
        assert_eq!("root".parse::<Role>(), Err(UserValueError::UnknownRole));
    }

    #[test]
    fn labels_are_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(
            DisplayName::parse("  Ada Lovelace ").map(String::from),
            Ok("Ada Lovelace".to_string())
        );
        assert_eq!(
            DisplayName::parse(" "),
            Err(UserValueError::Empty("display name"))
        );
        assert!(matches!(
            ApiKeyName::parse("é".repeat(API_KEY_NAME_LEN_MAX + 1)),
            Err(UserValueError::TooLong { .. })
        ));
        assert!(ApiKeyName::parse("é".repeat(API_KEY_NAME_LEN_MAX)).is_ok());
        assert_eq!(
            ApiKeyName::parse("ci\u{7}"),
            Err(UserValueError::BadCharacter("API key name"))
        );
    }

    #[test]
    fn prefixes_and_subjects_keep_to_their_alphabets() {
        assert!(ApiKeyPrefix::parse("ahk_3f9a-2B").is_ok());
        assert!(ApiKeyPrefix::parse("ahk 1").is_err());
        assert!(ApiKeyPrefix::parse("x".repeat(API_KEY_PREFIX_LEN_MAX + 1)).is_err());
        assert!(GoogleSubject::parse("110169484474386276334").is_ok());
        assert!(GoogleSubject::parse("a b").is_err());
        assert!(GoogleSubject::parse("").is_err());
    }

    #[test]
    fn a_password_hash_must_be_a_phc_string_not_a_password() {
        let hash = PasswordHash::parse(ARGON).expect("a PHC string");
        assert_eq!(hash.algorithm(), "argon2id");
        for bad in [
            "password123",
            "",
            "$argon2id",
            "$argon2id$short",
            "argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
            "$argon2id$v=19$m=19456 t=2$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        ] {
            assert_eq!(
                PasswordHash::parse(bad),
                Err(UserValueError::MalformedPasswordHash),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_secret_hash_must_be_sha256_hex_not_a_code() {
        assert_eq!(
            SecretHash::parse("123456"),
            Err(UserValueError::MalformedSecretHash)
        );
        assert_eq!(
            SecretHash::parse("g".repeat(64)),
            Err(UserValueError::MalformedSecretHash)
        );
        let upper = SecretHash::parse("AB".repeat(32)).expect("hex");
        let lower = SecretHash::parse("ab".repeat(32)).expect("hex");
        assert!(upper.matches(&lower));
        assert_eq!(upper, lower);
        assert!(!lower.matches(&SecretHash::parse("ac".repeat(32)).expect("hex")));
    }

    #[test]
    fn debug_output_hides_hashes() {
        let hash = PasswordHash::parse(ARGON).expect("a PHC string");
        let debug = format!("{hash:?}");
        assert!(!debug.contains("c29tZXNhbHQ"), "{debug}");
        assert!(debug.contains("argon2id"));
        let secret = SecretHash::parse("ab".repeat(32)).expect("hex");
        assert!(!format!("{secret:?}").contains("abab"));
    }
}
