//! Passwords, opaque tokens, codes and API keys: how they are made, hashed and checked.
//!
//! - Randomness: every random secret the hub makes (salts, tokens, OIDC state, nonce and PKCE
//!   verifier, codes, API keys) is drawn through [`random_bytes`], the one place that touches
//!   the operating system's CSPRNG (via `rand::rng()`); [`random_token`] and
//!   [`random_chars`] shape those bytes.
//! - Passwords: argon2id (PHC strings), hashed and verified off the async runtime.
//! - Opaque tokens (refresh tokens, reset links) and API keys carry 256 bits of randomness,
//!   so one SHA-256 is enough to store them.
//! - Six-digit codes have only a million values: they are stored as an HMAC under a server
//!   secret and the user id, so a leaked hash cannot be reversed by trying them all.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use hub_domain::{PasswordHash, SecretHash};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Shortest and longest password accepted, in characters.
pub const PASSWORD_LEN_MIN: usize = 8;
pub const PASSWORD_LEN_MAX: usize = 128;

/// Why a password was refused; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password must be at least {PASSWORD_LEN_MIN} characters")]
    TooShort,
    #[error("the password must be at most {PASSWORD_LEN_MAX} characters")]
    TooLong,
    #[error("the password must contain a letter and a digit or symbol")]
    TooSimple,
    #[error("the password must not contain the email address")]
    ContainsEmail,
}

/// The strength rule, for registration and for a new password.
pub fn check_strength(password: &str, email: &str) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < PASSWORD_LEN_MIN {
        return Err(WeakPassword::TooShort);
    }
    if chars > PASSWORD_LEN_MAX {
        return Err(WeakPassword::TooLong);
    }
    let letter = password.chars().any(char::is_alphabetic);
    let other = password.chars().any(|c| !c.is_alphabetic());
    if !(letter && other) {
        return Err(WeakPassword::TooSimple);
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.chars().count() >= 4 && password.to_lowercase().contains(&local) {
        return Err(WeakPassword::ContainsEmail);
    }
    Ok(())
}

/// A URL fit for logs and errors: a password in it becomes `***`, and so does a user part
/// with no password (`nats://<token>@host` carries its token there).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => {
            let head = url.get(..scheme + 3).unwrap_or("");
            let tail = url.get(at..).unwrap_or("");
            match url
                .get(scheme + 3..at)
                .and_then(|info| info.split_once(':'))
            {
                Some((user, _)) => format!("{head}{user}:***{tail}"),
                None => format!("{head}***{tail}"),
            }
        }
        _ => url.to_string(),
    }
}

/// Random bytes in an argon2 salt: 128 bits, as the PHC string format recommends.
const SALT_BYTES: usize = 16;

/// Hashing failed (never shows the password).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashingFailed;

/// Hash a password with argon2id and a fresh salt (on a blocking thread: ~tens of ms).
pub async fn hash_password(password: String) -> Result<PasswordHash, HashingFailed> {
    tokio::task::spawn_blocking(move || {
        let salt =
            SaltString::encode_b64(&random_bytes::<SALT_BYTES>()).map_err(|_| HashingFailed)?;
        let phc = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| HashingFailed)?
            .to_string();
        PasswordHash::parse(phc).map_err(|_| HashingFailed)
    })
    .await
    .map_err(|_| HashingFailed)?
}

/// The hub's password work, capped. Each argon2id hash or verification takes about 19 MiB and
/// tens of milliseconds of a core, and anonymous callers (register, sign in, reset) can ask
/// for one: at most `max_concurrent` run at once, a caller waits at most `queue_wait` for a
/// turn and is otherwise told the hub is busy ([`PasswordWorkError::Busy`], a 503 with
/// `Retry-After`). Cloning shares the cap.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    queue_wait: std::time::Duration,
    /// Hashes and verifications started, for tests and metrics.
    started: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Hashes and verifications running now, and the most that ever ran at once.
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    running_max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A turn at password work: the permit, and the count of work running, both given back
/// when dropped.
struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why password work was not done.
#[derive(Debug, thiserror::Error)]
pub enum PasswordWorkError {
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    #[error(transparent)]
    Failed(#[from] HashingFailed),
}

impl Passwords {
    pub fn new(max_concurrent: usize, queue_wait: std::time::Duration) -> Self {
        Passwords {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            queue_wait,
            started: std::sync::Arc::default(),
            running: std::sync::Arc::default(),
            running_max: std::sync::Arc::default(),
        }
    }

    /// The most hashes and verifications that ever ran at once (never above the cap).
    pub fn running_max(&self) -> usize {
        self.running_max.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Hashes and verifications started since the hub started.
    pub fn started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn turn(&self) -> Result<Turn, PasswordWorkError> {
        let permit = tokio::time::timeout(self.queue_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordWorkError::Busy)?
            .map_err(|_| PasswordWorkError::Busy)?;
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = self
            .running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.running_max
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        Ok(Turn {
            _permit: permit,
            running: self.running.clone(),
        })
    }

    /// [`hash_password`], when a turn comes within the queue wait.
    pub async fn hash(&self, password: String) -> Result<PasswordHash, PasswordWorkError> {
        let _turn = self.turn().await?;
        Ok(hash_password(password).await?)
    }

    /// [`verify_password`], when a turn comes within the queue wait.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<PasswordHash>,
    ) -> Result<bool, PasswordWorkError> {
        let _turn = self.turn().await?;
        Ok(verify_password(password, hash).await)
    }
}

/// Check a password against a stored hash (on a blocking thread). `None` still spends the
/// time of one verification, so an unknown user answers as slowly as a known one.
pub async fn verify_password(password: String, hash: Option<PasswordHash>) -> bool {
    tokio::task::spawn_blocking(move || {
        let argon = Argon2::default();
        match hash {
            Some(hash) => argon2::PasswordHash::new(hash.as_str())
                .is_ok_and(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok()),
            None => {
                let salt = SaltString::encode_b64(b"timing-equaliser").ok();
                if let Some(salt) = salt {
                    let _ = argon.hash_password(password.as_bytes(), &salt);
                }
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// `N` bytes from the thread-local CSPRNG (seeded from the operating system). The one source
/// of randomness for secrets: everything below is built on it.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `N` random bytes, base64url without padding: unguessable and safe in a URL or a header
/// (32 bytes give 43 characters, 48 bytes give 64).
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// `len` characters drawn uniformly from `alphabet` (ASCII symbols; only the first 256 are
/// used, and an empty alphabet gives an empty string). Bytes that would favour the first
/// symbols (those at or above the largest multiple of the alphabet's size) are thrown away and
/// drawn again, so every symbol is equally likely.
pub fn random_chars(len: usize, alphabet: &[u8]) -> String {
    let alphabet = &alphabet[..alphabet.len().min(256)];
    if alphabet.is_empty() {
        return String::new();
    }
    let unbiased_below = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut drawn = 0;
    while drawn < len {
        for byte in random_bytes::<RANDOM_CHARS_BATCH_BYTES>() {
            let byte = usize::from(byte);
            if drawn < len && byte < unbiased_below {
                if let Some(&symbol) = alphabet.get(byte % alphabet.len()) {
                    out.push(char::from(symbol));
                    drawn += 1;
                }
            }
        }
    }
    out
}

/// Random bytes drawn at a time by [`random_chars`]; enough for a code or a key id in one go.
const RANDOM_CHARS_BATCH_BYTES: usize = 32;

/// Random bytes in an opaque token: 256 bits, 43 characters once encoded.
pub const OPAQUE_TOKEN_BYTES: usize = 32;

/// A random opaque token (256 bits, base64url).
pub fn opaque_token() -> String {
    random_token::<OPAQUE_TOKEN_BYTES>()
}

/// SHA-256 of a high-entropy secret, as the domain stores it.
pub fn sha256_hash(secret: &str) -> SecretHash {
    let digest = Sha256::digest(secret.as_bytes());
    SecretHash::parse(hex(&digest)).expect("a SHA-256 digest is 64 hex digits")
}

/// Digits in a verification code.
const CODE_DIGITS: usize = 6;

/// A six-digit code, uniformly drawn (leading zeros included).
pub fn six_digit_code() -> String {
    random_chars(CODE_DIGITS, b"0123456789")
}

/// HMAC-SHA-256 of a short code under the server secret, bound to one user.
pub fn code_hash(server_secret: &str, user: uuid::Uuid, code: &str) -> SecretHash {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"aihub-verification-code:");
    mac.update(user.as_bytes());
    mac.update(b":");
    mac.update(code.trim().as_bytes());
    SecretHash::parse(hex(&mac.finalize().into_bytes())).expect("a SHA-256 digest is 64 hex digits")
}

/// What an API key looks like: `aihub_<10 characters>_<43 characters>`. The first part is
/// its public prefix (shown in listings, used to find the owner); the rest is the secret.
pub const API_KEY_PREFIX_TAG: &str = "aihub_";
const API_KEY_ID_LEN: usize = 10;
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new API key: (the key, shown once; its prefix; its hash).
pub fn new_api_key() -> (String, String, SecretHash) {
    let id = random_chars(API_KEY_ID_LEN, ALPHANUMERIC);
    let prefix = format!("{API_KEY_PREFIX_TAG}{id}");
    let key = format!("{prefix}_{}", opaque_token());
    let hash = sha256_hash(&key);
    (key, prefix, hash)
}

/// The public prefix of something that looks like an API key.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX_TAG)?;
    let id = rest.get(..API_KEY_ID_LEN)?;
    if !id.bytes().all(|b| b.is_ascii_alphanumeric())
        || rest.as_bytes().get(API_KEY_ID_LEN) != Some(&b'_')
    {
        return None;
    }
    key.get(..API_KEY_PREFIX_TAG.len() + API_KEY_ID_LEN)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strength_rule_accepts_the_seed_contract_password_and_refuses_weak_ones() {
        assert_eq!(check_strength("password123", "test@example.com"), Ok(()));
        assert_eq!(
            check_strength("short1", "a@b.co"),
            Err(WeakPassword::TooShort)
        );
        assert_eq!(
            check_strength("onlyletters", "a@b.co"),
            Err(WeakPassword::TooSimple)
        );
        assert_eq!(
            check_strength("12345678", "a@b.co"),
            Err(WeakPassword::TooSimple)
        );
        assert_eq!(
            check_strength("alice-2024!", "alice@example.com"),
            Err(WeakPassword::ContainsEmail)
        );
        assert_eq!(
            check_strength(&"a1".repeat(65), "a@b.co"),
            Err(WeakPassword::TooLong)
        );
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_only() {
        let hash = hash_password("correct horse 1".into()).await.expect("hash");
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(verify_password("correct horse 1".into(), Some(hash.clone())).await);
        assert!(!verify_password("correct horse 2".into(), Some(hash)).await);
        assert!(!verify_password("anything".into(), None).await);
    }

    #[test]
    fn api_keys_carry_their_prefix_and_hash_to_what_they_are() {
        let (key, prefix, hash) = new_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        assert!(hash.matches(&sha256_hash(&key)));
        assert_eq!(prefix.len(), 16);
        assert_eq!(api_key_prefix("aihub_short"), None);
        assert_eq!(api_key_prefix("eyJhbGciOiJIUzI1NiJ9.x.y"), None);
    }

    #[test]
    fn random_tokens_are_base64url_of_their_byte_count_and_fresh() {
        let token = random_token::<48>();
        assert_eq!(token.len(), 64);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(opaque_token().len(), 43);
        assert_ne!(opaque_token(), opaque_token());
    }

    #[test]
    fn random_chars_come_from_the_alphabet_and_reach_every_symbol() {
        let drawn = random_chars(2_000, b"abc");
        assert_eq!(drawn.len(), 2_000);
        for symbol in ['a', 'b', 'c'] {
            assert!(drawn.contains(symbol), "{symbol} never drawn");
        }
        assert!(drawn.chars().all(|c| matches!(c, 'a' | 'b' | 'c')));
        assert_eq!(random_chars(0, b"abc"), "");
    }

    #[test]
    fn codes_are_six_digits_and_their_hash_depends_on_user_and_secret() {
        let code = six_digit_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let user = uuid::Uuid::new_v4();
        let h = code_hash("secret-a", user, "123456");
        assert!(h.matches(&code_hash("secret-a", user, " 123456 ")));
        assert!(!h.matches(&code_hash("secret-b", user, "123456")));
        assert!(!h.matches(&code_hash("secret-a", uuid::Uuid::new_v4(), "123456")));
    }
}
