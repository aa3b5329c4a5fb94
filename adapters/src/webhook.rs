//! Outgoing webhooks, signed the way Stripe signs its own: a receiver checks that a request
//! came from this hub, and when, before it trusts the body.
//!
//! Each request is a `POST` of a JSON body with:
//!
//! - `AIHub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the
//!   time the request was signed (a receiver refuses one too old, so a captured request
//!   cannot be replayed later) and the signature over that time and the exact body bytes;
//! - `AIHub-Event-Id`: the event's id, also in the body, the same on every retry of it: a
//!   receiver that has seen it already ignores it.
//!
//! The signing secret is one per user, derived from the server secret and a random nonce
//! stored beside the user's webhook URL ([`signing_secret`]): nothing secret is stored, and
//! a new nonce replaces the secret.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// The header carrying the timestamp and signature.
pub const SIGNATURE_HEADER: &str = "AIHub-Signature";
/// The header carrying the event's id (a receiver dedupes on it).
pub const EVENT_ID_HEADER: &str = "AIHub-Event-Id";
/// The longest webhook URL taken.
pub const URL_LEN_MAX: usize = 2_048;
/// Bytes of a receiver's answer read at most (only its status matters; the rest is dropped).
const ANSWER_BYTES_MAX: usize = 4_096;

/// A webhook URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidWebhookUrl {
    #[error("webhook_url is longer than {URL_LEN_MAX} characters")]
    TooLong,
    #[error("webhook_url is not a URL")]
    NotAUrl,
    #[error("webhook_url must be an http or https URL with a host")]
    NotHttp,
}

/// Check that `url` is an absolute `http` or `https` URL with a host; answers it normalised.
pub fn parse_url(url: &str) -> Result<String, InvalidWebhookUrl> {
    if url.len() > URL_LEN_MAX {
        return Err(InvalidWebhookUrl::TooLong);
    }
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| InvalidWebhookUrl::NotAUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(InvalidWebhookUrl::NotHttp);
    }
    Ok(parsed.to_string())
}

/// A user's webhook signing secret: `whsec_` and 64 hex digits of HMAC-SHA256 under the
/// server secret, bound to the user and the nonce of their current webhook.
pub fn signing_secret(server_secret: &str, user: uuid::Uuid, nonce: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"aihub-webhook-secret:");
    mac.update(user.as_bytes());
    mac.update(b":");
    mac.update(nonce.as_bytes());
    format!("whsec_{}", hex(&mac.finalize().into_bytes()))
}

/// The `AIHub-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a webhook was not delivered (the delivery loop retries every one of them).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook client could not be built")]
    Client(#[source] reqwest::Error),
    #[error("the receiver could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("the receiver answered {0}")]
    Status(u16),
}

/// Sends signed webhooks; one per process, reused.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl WebhookClient {
    /// A client that waits at most `timeout` for an answer and follows no redirect (a
    /// receiver that moved says so with a 3xx, which counts as a failure, rather than the
    /// hub posting a signed body wherever a redirect points).
    pub fn new(timeout: Duration) -> Result<Self, WebhookError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookError::Client)?;
        Ok(WebhookClient { http })
    }

    /// `POST` `body` (JSON) to `url`, signed with `secret` at `now`. Delivered: the receiver
    /// answered 2xx.
    pub async fn post(
        &self,
        url: &str,
        event_id: &str,
        body: Vec<u8>,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        let signature = signature_header(secret, now.timestamp(), &body);
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, event_id)
            .body(body)
            .send()
            .await
            .map_err(WebhookError::Unreachable)?;
        let status = response.status();
        // Drain a little of the answer so the connection can be reused; its content is not used.
        let _ = crate::http::read_limited(response, ANSWER_BYTES_MAX, None).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_and_https_urls_with_a_host_are_taken() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://127.0.0.1:9000/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/hook",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "example.com/hook",
            "",
            "http://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} was taken");
        }
        assert!(parse_url(&format!("https://e.com/{}", "a".repeat(URL_LEN_MAX))).is_err());
    }

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature_header("whsec_x", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature_header("whsec_x", 1_700_000_001, b"{}"));
        assert_ne!(a, signature_header("whsec_x", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature_header("whsec_y", 1_700_000_000, b"{}"));
    }

    #[test]
    fn a_secret_is_bound_to_its_user_and_nonce() {
        let user = uuid::Uuid::from_u128(7);
        let s = signing_secret("server", user, "n1");
        assert!(s.starts_with("whsec_"));
        assert_eq!(s, signing_secret("server", user, "n1"));
        assert_ne!(s, signing_secret("server", user, "n2"));
        assert_ne!(s, signing_secret("server", uuid::Uuid::from_u128(8), "n1"));
        assert_ne!(s, signing_secret("other", user, "n1"));
    }
}
