//! Google sign-in over the real `GoogleOidc` client against a local OpenID provider: the good
//! flow, and each way an ID token or a code exchange must be refused.

use hub_adapters::oidc::{AuthorizationRequest, GoogleIdentity, GoogleOidc, OidcError};
use hub_tests::oidc_provider::{IdTokenClaims, OidcProvider, Signing};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const CLIENT_ID: &str = "hub-test-client.apps.example";
const CLIENT_SECRET: &str = "hub-test-client-secret";
const REDIRECT: &str = "http://127.0.0.1:8080/api/auth/google/callback";

async fn provider_and_client() -> (OidcProvider, GoogleOidc) {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let settings = provider.google_settings(REDIRECT);
    settings
        .validate()
        .expect("the provider's settings are valid");
    let client = GoogleOidc::new(settings, reqwest::Client::new());
    (provider, client)
}

fn params(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .expect("a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

fn challenge_of(request: &AuthorizationRequest) -> String {
    params(&request.url)["code_challenge"].clone()
}

/// Begins a sign-in, has the provider issue a code for `claims` (with this sign-in's nonce
/// unless `claims` says otherwise) and finishes it.
async fn sign_in(
    provider: &OidcProvider,
    client: &GoogleOidc,
    claims: impl FnOnce(&AuthorizationRequest) -> IdTokenClaims,
) -> Result<GoogleIdentity, OidcError> {
    let request = client.begin().await.expect("begin");
    let code = provider.issue_code(claims(&request), &challenge_of(&request), REDIRECT);
    client
        .finish(&code, &request.pkce_verifier, &request.nonce)
        .await
}

#[tokio::test]
async fn a_good_sign_in_returns_the_identity() {
    let (provider, client) = provider_and_client().await;
    let request = client.begin().await.expect("begin");

    let query = params(&request.url);
    assert!(request
        .url
        .starts_with(&format!("{}/authorize?", provider.issuer())));
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], REDIRECT);
    assert_eq!(query["scope"], "openid email profile");
    assert_eq!(query["state"], request.state);
    assert_eq!(query["nonce"], request.nonce);
    assert_eq!(query["code_challenge_method"], "S256");
    assert!((43..=128).contains(&request.pkce_verifier.len()));
    let s256 = base64_url(&Sha256::digest(request.pkce_verifier.as_bytes()));
    assert_eq!(query["code_challenge"], s256);
    assert!(!request.url.contains(&request.pkce_verifier));
    assert!(!request.url.contains(CLIENT_SECRET));

    let code = provider.issue_code(
        IdTokenClaims::new("108000000000000000001", &request.nonce),
        &query["code_challenge"],
        REDIRECT,
    );
    let identity = client
        .finish(&code, &request.pkce_verifier, &request.nonce)
        .await
        .expect("a good sign-in succeeds");
    assert_eq!(
        identity,
        GoogleIdentity {
            subject: "108000000000000000001".into(),
            email: Some("108000000000000000001@example.com".into()),
            email_verified: true,
            name: Some("User 108000000000000000001".into()),
        }
    );

    // The code is single use.
    let err = client
        .finish(&code, &request.pkce_verifier, &request.nonce)
        .await
        .expect_err("a spent code is refused");
    assert!(
        matches!(err, OidcError::TokenEndpoint { status: 400 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn two_sign_ins_get_different_state_nonce_and_verifier() {
    let (_provider, client) = provider_and_client().await;
    let (a, b) = (
        client.begin().await.expect("begin"),
        client.begin().await.expect("begin"),
    );
    assert_ne!(a.state, b.state);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.pkce_verifier, b.pkce_verifier);
}

#[tokio::test]
async fn the_authorize_endpoint_sends_the_browser_back_with_a_code_for_the_state() {
    let (provider, client) = provider_and_client().await;
    let mut user = IdTokenClaims::new("google-user-7", "");
    user.email_verified = false;
    provider.set_authorize_user(user);
    let request = client.begin().await.expect("begin");

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let response = browser.get(&request.url).send().await.expect("authorize");
    assert_eq!(response.status(), reqwest::StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("a location")
        .to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let back = params(&location);
    assert_eq!(back["state"], request.state);

    let identity = client
        .finish(&back["code"], &request.pkce_verifier, &request.nonce)
        .await
        .expect("sign-in succeeds");
    assert_eq!(identity.subject, "google-user-7");
    assert!(!identity.email_verified);
}

#[tokio::test]
async fn an_id_token_signed_with_an_unpublished_key_is_a_bad_signature() {
    let (provider, client) = provider_and_client().await;
    provider
        .set_signing(Signing::UnpublishedKeyUnderPublishedKid)
        .await;
    let err = sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect_err("refused");
    assert!(matches!(err, OidcError::BadSignature), "{err:?}");
    assert_eq!(err.code(), "oidc_bad_signature");
    assert!(!err.is_provider_failure());
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    let (provider, client) = provider_and_client().await;
    let err = sign_in(&provider, &client, |r| {
        IdTokenClaims::new("u1", &r.nonce).for_audience("some-other-client.apps.example")
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::WrongAudience), "{err:?}");

    // An authorized party other than this client is refused the same way.
    let err = sign_in(&provider, &client, |r| {
        let mut claims = IdTokenClaims::new("u1", &r.nonce);
        claims.azp = Some("some-other-client.apps.example".into());
        claims
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::WrongAudience), "{err:?}");
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let (provider, client) = provider_and_client().await;
    let err = sign_in(&provider, &client, |r| {
        IdTokenClaims::new("u1", &r.nonce).expired()
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::Expired), "{err:?}");
}

#[tokio::test]
async fn an_id_token_issued_in_the_future_is_refused() {
    let (provider, client) = provider_and_client().await;
    let err = sign_in(&provider, &client, |r| {
        let mut claims = IdTokenClaims::new("u1", &r.nonce);
        claims.iat_offset_s = 3_600;
        claims.exp_offset_s = 7_200;
        claims
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::NotYetValid), "{err:?}");
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let (provider, client) = provider_and_client().await;
    let err = sign_in(&provider, &client, |r| {
        IdTokenClaims::new("u1", &r.nonce).from_issuer("https://accounts.evil.example")
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::WrongIssuer), "{err:?}");
}

#[tokio::test]
async fn a_nonce_replayed_from_an_earlier_sign_in_is_refused() {
    let (provider, client) = provider_and_client().await;
    let earlier = client.begin().await.expect("begin");
    let code = provider.issue_code(
        IdTokenClaims::new("u1", &earlier.nonce),
        &challenge_of(&earlier),
        REDIRECT,
    );
    client
        .finish(&code, &earlier.pkce_verifier, &earlier.nonce)
        .await
        .expect("the earlier sign-in succeeds");

    // A token minted for the earlier sign-in is pushed into a new one.
    let now = client.begin().await.expect("begin");
    let replayed = provider.issue_code(
        IdTokenClaims::new("u1", &earlier.nonce),
        &challenge_of(&now),
        REDIRECT,
    );
    let err = client
        .finish(&replayed, &now.pkce_verifier, &now.nonce)
        .await
        .expect_err("refused");
    assert!(matches!(err, OidcError::NonceMismatch), "{err:?}");
    assert_eq!(err.code(), "oidc_nonce_mismatch");

    // A token without a nonce is refused too.
    let err = sign_in(&provider, &client, |_| {
        let mut claims = IdTokenClaims::new("u1", "");
        claims.nonce = None;
        claims
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, OidcError::NonceMismatch), "{err:?}");
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused_by_the_token_endpoint() {
    let (provider, client) = provider_and_client().await;
    let request = client.begin().await.expect("begin");
    let other = client.begin().await.expect("begin");
    let code = provider.issue_code(
        IdTokenClaims::new("u1", &request.nonce),
        &challenge_of(&request),
        REDIRECT,
    );
    let err = client
        .finish(&code, &other.pkce_verifier, &request.nonce)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, OidcError::TokenEndpoint { status: 400 }),
        "{err:?}"
    );
    assert_eq!(err.code(), "oidc_token_refused");
    assert!(!err.is_provider_failure());
    let shown = format!("{err} {err:?}");
    for secret in [CLIENT_SECRET, code.as_str(), other.pkce_verifier.as_str()] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test]
async fn a_failing_token_endpoint_is_reported_with_its_status() {
    let (provider, client) = provider_and_client().await;
    provider.fail_token_endpoint(Some(500));
    let err = sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, OidcError::TokenEndpoint { status: 500 }),
        "{err:?}"
    );
    assert!(err.is_provider_failure());

    provider.fail_token_endpoint(Some(400));
    let err = sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, OidcError::TokenEndpoint { status: 400 }),
        "{err:?}"
    );
    assert!(!err.is_provider_failure());

    provider.fail_token_endpoint(None);
    sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect("works again");
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_by_reading_the_jwks_again() {
    let (provider, client) = provider_and_client().await;
    sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect("before the rotation");
    sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect("the key set is cached");
    assert_eq!(provider.jwks_reads(), 1);

    let kid = provider.rotate_keys().await;
    assert_eq!(kid, "key-2");
    let identity = sign_in(&provider, &client, |r| IdTokenClaims::new("u2", &r.nonce))
        .await
        .expect("after the rotation");
    assert_eq!(identity.subject, "u2");
    assert_eq!(provider.jwks_reads(), 2);
}

#[tokio::test]
async fn an_unknown_key_is_refused_and_the_key_set_is_read_again_at_most_once_per_interval() {
    let (provider, client) = provider_and_client().await;
    sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
        .await
        .expect("a good sign-in");
    assert_eq!(provider.jwks_reads(), 1);

    provider.set_signing(Signing::UnpublishedKeyAndKid).await;
    for _ in 0..3 {
        let err = sign_in(&provider, &client, |r| IdTokenClaims::new("u1", &r.nonce))
            .await
            .expect_err("refused");
        assert!(matches!(err, OidcError::UnknownKey), "{err:?}");
    }
    // The first unknown kid read the key set once more; the next ones waited.
    assert_eq!(provider.jwks_reads(), 2);
}

#[tokio::test]
async fn a_provider_whose_discovery_names_another_issuer_is_refused() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let mut settings = provider.google_settings(REDIRECT);
    // Same server, but not the issuer it declares.
    settings.issuer = format!("{}/", provider.issuer());
    let client = GoogleOidc::new(settings, reqwest::Client::new());
    let err = client.begin().await.expect_err("refused");
    assert!(matches!(err, OidcError::Discovery(_)), "{err:?}");
    assert!(err.is_provider_failure());
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
