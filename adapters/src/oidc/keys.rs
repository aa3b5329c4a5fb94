//! The provider's signing keys (its JWKS): read, kept for [`JWKS_MAX_AGE`], and read again at
//! once when a token names an unknown key (providers rotate keys), at most once per
//! [`JWKS_REFETCH_INTERVAL_MIN`].

use super::{GoogleOidc, OidcError};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use reqwest::Url;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// How long the signing keys are trusted before they are read again, even when every `kid`
/// is known. Google rotates keys over days and publishes the next one in advance.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3_600);

/// The shortest time between two key-set reads caused by an unknown `kid`. The first such read
/// is immediate (a rotation is picked up on the next sign-in); later ones wait, so a stream of
/// tokens with made-up `kid`s costs the provider one request per interval at most.
pub const JWKS_REFETCH_INTERVAL_MIN: Duration = Duration::from_secs(30);

/// Keys kept from one key set; Google publishes two or three.
const JWKS_KEYS_MAX: usize = 32;

#[derive(Default)]
pub(super) struct KeyCache {
    keys: Vec<(Option<String>, DecodingKey)>,
    read_at: Option<Instant>,
    /// The last read caused by an unknown `kid`.
    refetched_at: Option<Instant>,
}

impl KeyCache {
    /// The key a token's `kid` names; without a `kid`, the only key if there is one.
    fn find(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key),
            None if self.keys.len() == 1 => self.keys.first().map(|(_, key)| key),
            None => None,
        }
    }
}

impl GoogleOidc {
    /// The key a token names: from the cache, else after one rate-limited read of the key set.
    pub(super) async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        let provider = self.discover().await?;
        let mut cache = self.inner.keys.lock().await;
        let now = Instant::now();
        let fresh = cache
            .read_at
            .is_some_and(|at| now.duration_since(at) < JWKS_MAX_AGE);
        if !fresh {
            cache.keys = self.read_keys(&provider.jwks_uri).await?;
            cache.read_at = Some(now);
        }
        if let Some(key) = cache.find(kid) {
            return Ok(key.clone());
        }
        let may_refetch = fresh
            && cache
                .refetched_at
                .is_none_or(|at| now.duration_since(at) >= JWKS_REFETCH_INTERVAL_MIN);
        if may_refetch {
            cache.refetched_at = Some(now);
            cache.keys = self.read_keys(&provider.jwks_uri).await?;
            cache.read_at = Some(now);
            if let Some(key) = cache.find(kid) {
                return Ok(key.clone());
            }
        }
        Err(OidcError::UnknownKey)
    }

    /// Reads the key set and keeps the RSA signature keys usable with RS256; keys of other
    /// types or uses are skipped rather than failing the whole set.
    async fn read_keys(
        &self,
        jwks_uri: &Url,
    ) -> Result<Vec<(Option<String>, DecodingKey)>, OidcError> {
        let body = self.get_json(jwks_uri.clone(), OidcError::Jwks).await?;
        let set: RawKeySet = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Jwks(format!("not a JWK set: {e}")))?;
        let keys: Vec<_> = set
            .keys
            .into_iter()
            .take(JWKS_KEYS_MAX)
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| rs256_key(&jwk).map(|key| (jwk.common.key_id.clone(), key)))
            .collect();
        if keys.is_empty() {
            return Err(OidcError::Jwks("it holds no RSA signing key".into()));
        }
        Ok(keys)
    }
}

/// The verifying key of an RSA signature key usable with RS256.
fn rs256_key(jwk: &Jwk) -> Option<DecodingKey> {
    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        return None;
    };
    let for_signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let for_rs256 = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256));
    if !(for_signing && for_rs256) {
        return None;
    }
    DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}
