//! Every way a Google sign-in fails, with a stable code for the error body and whether the
//! provider or the sign-in is at fault.

/// Every way a Google sign-in fails. Messages never hold the client secret, the code or a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The discovery document could not be read or does not describe the configured issuer.
    #[error("the OpenID provider's discovery document is unusable: {0}")]
    Discovery(String),
    /// The provider's key set could not be read or holds no usable RS256 key.
    #[error("the OpenID provider's key set is unusable: {0}")]
    Jwks(String),
    /// The token endpoint refused the code (expired, used, wrong PKCE verifier) or failed.
    #[error("the token endpoint answered {status}")]
    TokenEndpoint { status: u16 },
    /// The token endpoint answered without an ID token.
    #[error("the token response holds no ID token")]
    MissingIdToken,
    /// The ID token is not signed with RS256 by the key it names.
    #[error("the ID token's signature does not check out")]
    BadSignature,
    /// The ID token names a key the provider does not publish, even after reading its keys again.
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    /// The ID token was issued by someone other than the configured issuer.
    #[error("the ID token comes from another issuer")]
    WrongIssuer,
    /// The ID token was issued to another client (`aud` or `azp`).
    #[error("the ID token was issued to another client")]
    WrongAudience,
    /// The ID token has expired.
    #[error("the ID token has expired")]
    Expired,
    /// The ID token's `nbf` or `iat` lies in the future.
    #[error("the ID token is not valid yet")]
    NotYetValid,
    /// The ID token's nonce is not the one this sign-in sent (a replayed or injected token).
    #[error("the ID token's nonce does not match this sign-in")]
    NonceMismatch,
    /// The ID token or the token response could not be decoded.
    #[error("malformed response from the OpenID provider: {0}")]
    Malformed(&'static str),
    /// The provider could not be reached, or did not answer in time.
    #[error("the OpenID provider could not be reached")]
    Http(#[source] reqwest::Error),
}

impl OidcError {
    /// A stable snake_case code for the HTTP error body and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Discovery(_) => "oidc_discovery_failed",
            OidcError::Jwks(_) => "oidc_jwks_failed",
            OidcError::TokenEndpoint { .. } => "oidc_token_refused",
            OidcError::MissingIdToken => "oidc_missing_id_token",
            OidcError::BadSignature => "oidc_bad_signature",
            OidcError::UnknownKey => "oidc_unknown_key",
            OidcError::WrongIssuer => "oidc_wrong_issuer",
            OidcError::WrongAudience => "oidc_wrong_audience",
            OidcError::Expired => "oidc_token_expired",
            OidcError::NotYetValid => "oidc_token_not_yet_valid",
            OidcError::NonceMismatch => "oidc_nonce_mismatch",
            OidcError::Malformed(_) => "oidc_malformed",
            OidcError::Http(_) => "oidc_provider_unreachable",
        }
    }

    /// The provider is down or misbehaving (answer 502/503), as opposed to this sign-in being
    /// refused (answer 401 and let the user start again).
    pub fn is_provider_failure(&self) -> bool {
        match self {
            OidcError::Discovery(_)
            | OidcError::Jwks(_)
            | OidcError::Http(_)
            | OidcError::MissingIdToken => true,
            OidcError::TokenEndpoint { status } => *status >= 500,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_error_codes_are_distinct_and_messages_hold_no_secret() {
        let errors = [
            OidcError::Discovery("x".into()),
            OidcError::Jwks("x".into()),
            OidcError::TokenEndpoint { status: 400 },
            OidcError::MissingIdToken,
            OidcError::BadSignature,
            OidcError::UnknownKey,
            OidcError::WrongIssuer,
            OidcError::WrongAudience,
            OidcError::Expired,
            OidcError::NotYetValid,
            OidcError::NonceMismatch,
            OidcError::Malformed("x"),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(OidcError::code).collect();
        assert_eq!(codes.len(), errors.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert!(!OidcError::TokenEndpoint { status: 400 }.is_provider_failure());
        assert!(OidcError::TokenEndpoint { status: 502 }.is_provider_failure());
    }
}
