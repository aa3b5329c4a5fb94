//! The `[google]` settings section: which OpenID provider, which client, where the browser
//! comes back, and the checks made on them at start-up.

use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Google's issuer, the default.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// The issuer Google also writes into some ID tokens: its documentation says `iss` is either
/// this or [`GOOGLE_ISSUER`], so both are accepted when the configured issuer is Google's.
const GOOGLE_ISSUER_BARE: &str = "accounts.google.com";

/// The ceilings `validate` enforces.
const HTTP_TIMEOUT_MS_MAX: u64 = 60_000;
const CLOCK_SKEW_S_MAX: u64 = 600;

/// Google sign-in settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleSettings {
    /// Offer Google sign-in at all. Off by default: it needs a client registered with Google.
    pub enabled: bool,
    /// The OpenID provider's issuer; its metadata is read from
    /// `<issuer>/.well-known/openid-configuration`. Tests point it at a local provider.
    pub issuer: String,
    /// The OAuth client id the provider issued; ID tokens must name it in `aud`.
    pub client_id: String,
    /// The OAuth client secret, sent only to the token endpoint; never printed.
    pub client_secret: String,
    /// Where the provider sends the browser back; must equal one registered for the client.
    pub redirect_url: String,
    /// The scopes asked for; `openid` is required.
    pub scopes: Vec<String>,
    /// Timeout of each request to the provider, in milliseconds.
    pub http_timeout_ms: u64,
    /// Leeway for the `exp`, `nbf` and `iat` checks, in seconds.
    pub clock_skew_s: u64,
}

impl Default for GoogleSettings {
    fn default() -> Self {
        GoogleSettings {
            enabled: false,
            issuer: GOOGLE_ISSUER.into(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_url: "http://127.0.0.1:8080/api/auth/google/callback".into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            http_timeout_ms: 5_000,
            clock_skew_s: 60,
        }
    }
}

impl fmt::Debug for GoogleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.client_secret.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        };
        f.debug_struct("GoogleSettings")
            .field("enabled", &self.enabled)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &secret)
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("http_timeout_ms", &self.http_timeout_ms)
            .field("clock_skew_s", &self.clock_skew_s)
            .finish()
    }
}

impl GoogleSettings {
    /// Checks the settings when sign-in is enabled. The message starts with the field's name
    /// within this section; the caller puts the section's own name in front.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let issuer =
            Url::parse(&self.issuer).map_err(|e| format!("issuer is not an absolute URL: {e}"))?;
        if !secure_or_loopback(&issuer) {
            return Err("issuer must use https (http only on a loopback host)".into());
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err("issuer must not have a query or a fragment".into());
        }
        if self.client_id.trim().is_empty() {
            return Err("client_id must not be empty".into());
        }
        if self.client_secret.is_empty() {
            return Err("client_secret must not be empty".into());
        }
        let redirect = Url::parse(&self.redirect_url)
            .map_err(|e| format!("redirect_url is not an absolute URL: {e}"))?;
        if !matches!(redirect.scheme(), "http" | "https") || redirect.fragment().is_some() {
            return Err("redirect_url must be an http(s) URL without a fragment".into());
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("scopes must include \"openid\"".into());
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err("scopes must be single words".into());
        }
        if self.http_timeout_ms == 0 || self.http_timeout_ms > HTTP_TIMEOUT_MS_MAX {
            return Err(format!(
                "http_timeout_ms must be between 1 and {HTTP_TIMEOUT_MS_MAX}"
            ));
        }
        if self.clock_skew_s > CLOCK_SKEW_S_MAX {
            return Err(format!("clock_skew_s must be at most {CLOCK_SKEW_S_MAX}"));
        }
        Ok(())
    }

    /// The `iss` values an ID token may carry.
    pub(super) fn accepted_issuers(&self) -> Vec<String> {
        let mut issuers = vec![self.issuer.clone()];
        if self.issuer == GOOGLE_ISSUER {
            issuers.push(GOOGLE_ISSUER_BARE.into());
        }
        issuers
    }
}

/// https anywhere; plain http only to this machine (a local provider in tests or development).
pub(super) fn secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::test_support::enabled;

    #[test]
    fn oidc_defaults_are_disabled_and_valid() {
        let settings = GoogleSettings::default();
        assert!(!settings.enabled);
        assert_eq!(settings.issuer, GOOGLE_ISSUER);
        assert_eq!(settings.scopes, ["openid", "email", "profile"]);
        assert!(settings.validate().is_ok());
        assert!(enabled().validate().is_ok());
    }

    #[test]
    fn oidc_enabled_settings_are_refused_naming_the_field() {
        type Spoil = fn(&mut GoogleSettings);
        let cases: [(&str, Spoil); 8] = [
            ("client_id", |s| s.client_id.clear()),
            ("client_secret", |s| s.client_secret.clear()),
            ("issuer", |s| s.issuer = "not a url".into()),
            ("issuer", |s| {
                s.issuer = "http://accounts.example.com".into()
            }),
            ("redirect_url", |s| s.redirect_url = "/callback".into()),
            ("scopes", |s| s.scopes = vec!["email".into()]),
            ("http_timeout_ms", |s| s.http_timeout_ms = 0),
            ("clock_skew_s", |s| s.clock_skew_s = 3_600),
        ];
        for (field, spoil) in cases {
            let mut settings = enabled();
            spoil(&mut settings);
            let err = settings.validate().expect_err("refused");
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn oidc_a_plain_http_issuer_is_allowed_only_on_loopback() {
        for issuer in [
            "http://127.0.0.1:4000",
            "http://localhost:4000",
            "http://[::1]:4000",
        ] {
            let settings = GoogleSettings {
                issuer: issuer.into(),
                ..enabled()
            };
            assert!(settings.validate().is_ok(), "{issuer}");
        }
    }

    #[test]
    fn oidc_settings_debug_never_shows_the_client_secret() {
        let shown = format!("{:?}", enabled());
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
