//! Google sign-in through the hub's routes, against a local OpenID provider.

use hub_domain::Role;
use hub_tests::oidc_provider::{IdTokenClaims, OidcProvider, Signing};
use hub_tests::{spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;

const CLIENT_ID: &str = "hub-client.apps.example";
const CLIENT_SECRET: &str = "hub-client-secret";
const REDIRECT: &str = "http://127.0.0.1:8080/api/auth/google/callback";

async fn app_with_google(provider: &OidcProvider) -> TestApp {
    let settings = provider.google_settings(REDIRECT);
    spawn_app_with(hub_server::Roles::ALL, move |s| s.google = settings).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `GET /api/auth/google`: the redirect's query parameters, and under `cookie` the
/// `name=value` of the cookie the hub set in this browser.
async fn begin(app: &TestApp) -> HashMap<String, String> {
    let response = no_redirects()
        .get(app.url("/api/auth/google"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    let mut params: HashMap<String, String> = url::Url::parse(location)
        .expect("a URL")
        .query_pairs()
        .into_owned()
        .collect();
    if let Some(cookie) = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
    {
        let pair = cookie.split(';').next().unwrap_or_default();
        params.insert("cookie".into(), pair.to_string());
    }
    params
}

/// The callback as the browser that started `started` sends it (with its cookie).
async fn callback(
    app: &TestApp,
    code: &str,
    started: &HashMap<String, String>,
) -> (StatusCode, Value) {
    callback_with_cookie(app, code, &started["state"], started.get("cookie")).await
}

async fn callback_with_cookie(
    app: &TestApp,
    code: &str,
    state: &str,
    cookie: Option<&String>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .get(app.url("/api/auth/google/callback"))
        .query(&[("code", code), ("state", state)]);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A whole sign-in as `claims(nonce)`.
async fn sign_in(
    app: &TestApp,
    provider: &OidcProvider,
    claims: impl FnOnce(&str) -> IdTokenClaims,
) -> (StatusCode, Value) {
    let params = begin(app).await;
    assert_eq!(params["redirect_uri"], REDIRECT);
    assert_eq!(params["code_challenge_method"], "S256");
    let code = provider.issue_code(
        claims(&params["nonce"]),
        &params["code_challenge"],
        REDIRECT,
    );
    callback(app, &code, &params).await
}

#[tokio::test]
async fn a_first_google_sign_in_creates_a_verified_user_and_later_ones_sign_it_in() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;

    let (status, first) = sign_in(&app, &provider, |nonce| {
        IdTokenClaims::new("g-alice", nonce)
    })
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["user"]["email"], "g-alice@example.com");
    assert_eq!(first["user"]["email_verified"], true);
    assert_eq!(first["user"]["google_linked"], true);
    assert_eq!(first["user"]["has_password"], false);
    let token = first["token"].as_str().expect("token");
    assert_eq!(
        app.get("/api/auth/me", Some(token)).await.status(),
        StatusCode::OK
    );

    let (status, again) = sign_in(&app, &provider, |nonce| {
        IdTokenClaims::new("g-alice", nonce)
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["user"]["id"], first["user"]["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_state_works_once_and_a_replayed_nonce_is_refused() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;

    let first = begin(&app).await;
    let code = provider.issue_code(
        IdTokenClaims::new("g-bob", &first["nonce"]),
        &first["code_challenge"],
        REDIRECT,
    );
    assert_eq!(callback(&app, &code, &first).await.0, StatusCode::CREATED);
    // The same state again (a replayed callback URL).
    let (status, body) = callback(&app, &code, &first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_state");

    // A new sign-in, answered with an ID token minted for the first one's nonce.
    let second = begin(&app).await;
    let code = provider.issue_code(
        IdTokenClaims::new("g-bob", &first["nonce"]),
        &second["code_challenge"],
        REDIRECT,
    );
    let (status, body) = callback(&app, &code, &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "oidc_nonce_mismatch");

    // An unknown state.
    let (status, _) = callback_with_cookie(&app, "whatever", "not-a-state", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn forged_misaddressed_and_expired_id_tokens_are_refused() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;

    let (status, body) = sign_in(&app, &provider, |nonce| {
        IdTokenClaims::new("g-eve", nonce).for_audience("someone-else")
    })
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, "oidc_wrong_audience".into())
    );

    let (status, body) = sign_in(&app, &provider, |nonce| {
        IdTokenClaims::new("g-eve", nonce).expired()
    })
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, "oidc_token_expired".into())
    );

    provider
        .set_signing(Signing::UnpublishedKeyUnderPublishedKid)
        .await;
    let (status, body) = sign_in(&app, &provider, |nonce| IdTokenClaims::new("g-eve", nonce)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, "oidc_bad_signature".into())
    );

    // None of them made a user.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM user_emails")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(users, 0);

    // A Google account without a verified email cannot sign up.
    provider.set_signing(Signing::Published).await;
    let (status, _) = sign_in(&app, &provider, |nonce| IdTokenClaims {
        email_verified: false,
        ..IdTokenClaims::new("g-unverified", nonce)
    })
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn google_links_to_a_verified_user_with_its_email_but_never_to_an_unverified_one() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;

    // Verified (an operator vouched for it): linked, same user.
    let verified = hub_app::bootstrap::create_user(
        &app.state,
        "carol@example.com",
        &[Role::Analyst],
        Some("secret-pass-42".into()),
    )
    .await
    .expect("user");
    let (status, linked) = sign_in(&app, &provider, |nonce| IdTokenClaims {
        email: Some("Carol@Example.com".into()),
        ..IdTokenClaims::new("g-carol", nonce)
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["user"]["id"], verified.user_id.0.to_string());
    assert_eq!(linked["user"]["google_linked"], true);
    assert_eq!(
        linked["user"]["roles"],
        serde_json::json!(["user", "analyst"])
    );

    // Unverified (anyone could have typed that address): refused, nothing linked.
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({"email": "dave@example.com", "password": "password123"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, body) = sign_in(&app, &provider, |nonce| IdTokenClaims {
        email: Some("dave@example.com".into()),
        ..IdTokenClaims::new("g-dave", nonce)
    })
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_google_subjects WHERE subject = 'g-dave'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(claimed, 0);
    app.stop().await;
}

#[tokio::test]
async fn without_google_configured_the_routes_answer_503() {
    let app = spawn_app().await;
    let response = no_redirects()
        .get(app.url("/api/auth/google"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
}

/// Issue 14, finding 19: a callback URL carrying someone else's sign-in (login CSRF: an
/// attacker starts a sign-in with their own Google account and sends the victim the
/// callback) is refused in a browser that did not start it.
#[tokio::test]
async fn a_google_callback_without_the_browser_cookie_is_refused() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;

    let attacker = begin(&app).await;
    let cookie = attacker.get("cookie").expect("the start sets a cookie");
    assert!(cookie.starts_with("aihub_oidc="), "{cookie}");
    let code = provider.issue_code(
        IdTokenClaims::new("g-mallory", &attacker["nonce"]),
        &attacker["code_challenge"],
        REDIRECT,
    );
    // The victim's browser follows the link: no cookie, or a cookie of its own sign-in.
    let victim = begin(&app).await;
    let (status, body) = callback_with_cookie(&app, &code, &attacker["state"], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oidc_browser_mismatch");
    assert!(body.get("token").is_none(), "no session for the victim");

    let again = begin(&app).await;
    let code = provider.issue_code(
        IdTokenClaims::new("g-mallory", &again["nonce"]),
        &again["code_challenge"],
        REDIRECT,
    );
    let (status, body) =
        callback_with_cookie(&app, &code, &again["state"], victim.get("cookie")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oidc_browser_mismatch");

    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM user_emails")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(users, 0, "no account was made or signed in");
    app.stop().await;
}

/// Issue 14, finding 17: anonymous Google starts cannot grow `oidc_logins` without bound;
/// beyond `auth.oidc_pending_max` sign-ins in flight a start answers 503, and an expired
/// one makes room again.
#[tokio::test]
async fn google_sign_ins_in_flight_are_bounded() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let settings = provider.google_settings(REDIRECT);
    let app = spawn_app_with(hub_server::Roles::ALL, move |s| {
        s.google = settings;
        s.auth.oidc_pending_max = 3;
    })
    .await;
    for _ in 0..3 {
        begin(&app).await;
    }
    let refused = no_redirects()
        .get(app.url("/api/auth/google"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM oidc_logins")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 3);
    app.clock.advance(std::time::Duration::from_secs(
        u64::try_from(hub_app::identity::google::LOGIN_TTL_S).expect("positive") + 1,
    ));
    begin(&app).await;
    app.stop().await;
}

/// The web app: a browser that follows Google's redirect itself is sent back to the app
/// with the refresh cookie (the app opens the session from it), and a failure goes back
/// to the sign-in page naming its code; `GET /api/auth/options` says whether to offer the
/// button at all.
#[tokio::test]
async fn a_browser_following_googles_redirect_lands_in_the_app_signed_in() {
    let provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = app_with_google(&provider).await;
    let options: Value = app
        .get("/api/auth/options", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(options["google"], true);

    let params = begin(&app).await;
    let code = provider.issue_code(
        IdTokenClaims::new("g-web", &params["nonce"]),
        &params["code_challenge"],
        REDIRECT,
    );
    let navigate = |state: &str, cookie: &str| {
        no_redirects()
            .get(app.url("/api/auth/google/callback"))
            .query(&[("code", code.as_str()), ("state", state)])
            .header("sec-fetch-mode", "navigate")
            .header("accept", "text/html")
            .header("cookie", cookie)
    };
    let response = navigate(&params["state"], &params["cookie"])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/")
    );
    let refresh = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("aihub_refresh="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .expect("the refresh cookie");
    // The app's first call: a refresh with that cookie opens the session.
    let refreshed = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", &refresh)
        .header("origin", app.address.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(refreshed.status(), StatusCode::OK);
    let body: Value = refreshed.json().await.expect("json");
    assert_eq!(body["user"]["email"], "g-web@example.com");

    // The same callback again (the state is spent): back to the sign-in page, no cookie.
    let again = navigate(&params["state"], &params["cookie"])
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), StatusCode::FOUND);
    let location = again
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(location.starts_with("/signin?error="), "{location}");
    assert!(again
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .all(|c| !c.starts_with("aihub_refresh=")));
    app.stop().await;

    let plain = spawn_app().await;
    let options: Value = plain
        .get("/api/auth/options", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(options["google"], false);
    plain.stop().await;
}
