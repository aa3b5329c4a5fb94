//! Access tokens: HS256 JWTs with a required `exp` and `sub`, and the roles they carry.
//!
//! Time is the caller's: [`Jwt::mint_at`] and [`Jwt::verify_at`] take `now`, so the hub
//! checks tokens against its own clock (and tests move that clock instead of sleeping).

use chrono::{DateTime, Utc};
use hub_domain::Role;
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How far past its `exp` a token is still accepted, in seconds: clocks of the issuer and
/// the checker may disagree a little.
pub const EXP_LEEWAY_S: i64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// Every role the user held when the token was issued.
    pub roles: Vec<Role>,
    pub iat: i64,
    pub exp: i64,
    /// The user's session version when the token was minted (tokens minted before
    /// versions existed carry none: 0). A token behind its user's version was cut off by a
    /// suspension, a revoked role, a password reset or "log out everywhere".
    #[serde(default)]
    pub sv: u32,
}

/// Signs and checks tokens with one fixed algorithm.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // `exp` is checked in `verify_at` against the caller's clock, not the system's.
        validation.validate_exp = false;
        validation.leeway = 0;
        Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A token for `user`, issued at `now` and valid for `ttl_s` seconds, at session
    /// version 0 (a user none of whose sessions was ever cut off).
    pub fn mint_at(
        &self,
        user: Uuid,
        roles: &[Role],
        ttl_s: u64,
        now: DateTime<Utc>,
    ) -> Result<String, Error> {
        self.mint_session_at(user, roles, 0, ttl_s, now)
    }

    /// A token for `user` at their session version `session_version`, issued at `now` and
    /// valid for `ttl_s` seconds.
    pub fn mint_session_at(
        &self,
        user: Uuid,
        roles: &[Role],
        session_version: u32,
        ttl_s: u64,
        now: DateTime<Utc>,
    ) -> Result<String, Error> {
        let now = now.timestamp();
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let claims = Claims {
            sub: user,
            roles,
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX)),
            sv: session_version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// [`Jwt::mint_at`] on the system clock, for tools that hold no clock (the command line,
    /// the bench).
    pub fn mint(&self, user: Uuid, roles: &[Role], ttl_s: u64) -> Result<String, Error> {
        self.mint_at(user, roles, ttl_s, Utc::now())
    }

    /// The claims of a token signed with this secret and not expired at `now` (give or take
    /// [`EXP_LEEWAY_S`]).
    pub fn verify_at(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, Error> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        // jsonwebtoken's own rule, against `now`: expired once `exp < now - leeway`.
        if claims.exp < now.timestamp().saturating_sub(EXP_LEEWAY_S) {
            return Err(ErrorKind::ExpiredSignature.into());
        }
        Ok(claims)
    }

    /// [`Jwt::verify_at`] on the system clock, for tools that hold no clock.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        self.verify_at(token, Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

    #[test]
    fn a_token_is_accepted_until_its_lifetime_and_the_leeway_have_passed() {
        let jwt = Jwt::new(SECRET);
        let issued = Utc::now();
        let user = Uuid::new_v4();
        let token = jwt
            .mint_at(user, &[Role::User], 60, issued)
            .expect("minted");
        let at = |s: i64| issued + chrono::Duration::seconds(s);
        assert_eq!(jwt.verify_at(&token, at(0)).expect("fresh").sub, user);
        assert!(jwt.verify_at(&token, at(60 + EXP_LEEWAY_S)).is_ok());
        let expired = jwt
            .verify_at(&token, at(60 + EXP_LEEWAY_S + 1))
            .expect_err("expired");
        assert_eq!(expired.kind(), &ErrorKind::ExpiredSignature);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = Jwt::new("another-secret-that-is-long-enough-0123456789");
        let token = other.mint(Uuid::new_v4(), &[], 60).expect("minted");
        assert!(Jwt::new(SECRET).verify(&token).is_err());
    }
}
