//! Verifying an ID token: RS256 only, against the provider's keys, then the claims
//! jsonwebtoken does not check (`iat`, `nonce`, `azp`), and what it says about the user.

use super::{GoogleOidc, OidcError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Longest ID token accepted, in bytes. Google's are about 1 KiB.
const ID_TOKEN_BYTES_MAX: usize = 16 * 1024;

/// The user, as a verified ID token describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleIdentity {
    /// The provider's stable id for the account (`sub`); the key to link on, never the email.
    pub subject: String,
    pub email: Option<String>,
    /// The provider vouches that `email` belongs to the account.
    pub email_verified: bool,
    pub name: Option<String>,
}

impl GoogleOidc {
    /// Verifies an ID token: RS256 only, signed by a key in the provider's JWKS, from the
    /// configured issuer, for this client, not expired, not issued in the future, carrying
    /// `expected_nonce`, and, if it names an authorized party, naming this client.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        expected_nonce: &str,
    ) -> Result<GoogleIdentity, OidcError> {
        if id_token.len() > ID_TOKEN_BYTES_MAX {
            return Err(OidcError::Malformed("the ID token is too long"));
        }
        // The header is read by hand, before any request, so that `alg: none` and HS256
        // (an attacker "signing" with our public key as an HMAC secret) are refused outright.
        let header = token_header(id_token)?;
        if header.alg != "RS256" {
            return Err(OidcError::BadSignature);
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let claims = jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &self.inner.validation)
            .map_err(from_jwt)?
            .claims;
        self.check_claims(claims, expected_nonce)
    }

    /// The checks jsonwebtoken does not make: `iat`, `nonce`, `azp`, a non-empty `sub`.
    fn check_claims(
        &self,
        claims: IdTokenClaims,
        expected_nonce: &str,
    ) -> Result<GoogleIdentity, OidcError> {
        let settings = &self.inner.settings;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if claims.iat > now.saturating_add(settings.clock_skew_s) {
            return Err(OidcError::NotYetValid);
        }
        let nonce_matches = match claims.nonce.as_deref() {
            Some(nonce) => {
                !expected_nonce.is_empty()
                    && bool::from(nonce.as_bytes().ct_eq(expected_nonce.as_bytes()))
            }
            None => false,
        };
        if !nonce_matches {
            return Err(OidcError::NonceMismatch);
        }
        if let Some(azp) = claims.azp.as_deref() {
            if azp != settings.client_id {
                return Err(OidcError::WrongAudience);
            }
        }
        if claims.sub.is_empty() {
            return Err(OidcError::Malformed("the ID token has an empty subject"));
        }
        Ok(GoogleIdentity {
            subject: claims.sub,
            email: claims.email.filter(|e| !e.is_empty()),
            email_verified: claims.email_verified.as_ref().is_some_and(Flag::is_true),
            name: claims.name.filter(|n| !n.is_empty()),
        })
    }
}

fn from_jwt(err: jsonwebtoken::errors::Error) -> OidcError {
    match err.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => OidcError::BadSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => OidcError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => {
            OidcError::Malformed("the ID token lacks a required claim")
        }
        _ => OidcError::Malformed("the ID token could not be decoded"),
    }
}

/// The parts of a JOSE header we look at before verifying.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn token_header(token: &str) -> Result<TokenHeader, OidcError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("the ID token is not a signed JWT"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed("the ID token's header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| OidcError::Malformed("the ID token's header is not the expected JSON"))
}

/// The ID token claims read after jsonwebtoken has checked `exp`, `nbf`, `iss` and `aud`.
#[derive(Deserialize)]
struct IdTokenClaims {
    sub: String,
    iat: u64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    name: Option<String>,
}

/// Google has sent `email_verified` both as a boolean and as the string "true".
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Text(t) => t == "true",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::test_support::offline_client;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    #[tokio::test]
    async fn oidc_tokens_not_signed_with_rs256_are_refused_before_any_request() {
        let client = offline_client();
        let claims = serde_json::json!({
            "iss": "http://127.0.0.1:9", "aud": "client-1.apps.example", "sub": "1",
            "exp": 4_000_000_000u64, "iat": 1, "nonce": "n"
        });
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"public key bytes used as a secret"),
        )
        .expect("encode");
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        for token in [hs256, none] {
            let err = client
                .verify_id_token(&token, "n")
                .await
                .expect_err("refused");
            assert!(matches!(err, OidcError::BadSignature), "{err:?}");
        }
        let err = client
            .verify_id_token("not-a-jwt", "n")
            .await
            .expect_err("refused");
        assert!(matches!(err, OidcError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn oidc_claims_accept_email_verified_as_a_bool_or_a_string() {
        let client = offline_client();
        for (value, expected) in [
            (serde_json::json!(true), true),
            (serde_json::json!("true"), true),
            (serde_json::json!(false), false),
            (serde_json::json!("false"), false),
        ] {
            let claims: IdTokenClaims = serde_json::from_value(serde_json::json!({
                "sub": "42", "iat": 1, "nonce": "n", "email": "a@example.com",
                "email_verified": value,
            }))
            .expect("claims");
            let identity = client.check_claims(claims, "n").expect("valid");
            assert_eq!(identity.email_verified, expected);
        }
    }

    #[test]
    fn oidc_claims_are_refused_for_a_wrong_nonce_azp_or_future_iat() {
        let client = offline_client();
        let claims = |extra: serde_json::Value| -> IdTokenClaims {
            let mut base = serde_json::json!({ "sub": "42", "iat": 1, "nonce": "n" });
            if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
                base.extend(extra.clone());
            }
            serde_json::from_value(base).expect("claims")
        };
        let err = client
            .check_claims(claims(serde_json::json!({})), "other")
            .expect_err("nonce");
        assert!(matches!(err, OidcError::NonceMismatch));
        let err = client
            .check_claims(claims(serde_json::json!({ "nonce": null })), "")
            .expect_err("no nonce");
        assert!(matches!(err, OidcError::NonceMismatch));
        let err = client
            .check_claims(claims(serde_json::json!({ "azp": "someone-else" })), "n")
            .expect_err("azp");
        assert!(matches!(err, OidcError::WrongAudience));
        let err = client
            .check_claims(claims(serde_json::json!({ "iat": 4_000_000_000u64 })), "n")
            .expect_err("iat");
        assert!(matches!(err, OidcError::NotYetValid));
    }
}
