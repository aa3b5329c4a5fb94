//! What wraps every route: cross-origin access (CORS) as configured, and the request id.

use hub_domain::Role;
use hub_server::Roles;
use hub_tests::{spawn_app, spawn_app_with, TestApp};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

const ALLOWED: &str = "https://app.example.com";

async fn cors_app() -> TestApp {
    spawn_app_with(Roles::ALL, |s| {
        s.server.cors.allowed_origins = vec![ALLOWED.into(), "http://localhost:5173".into()];
        s.server.cors.allow_credentials = true;
        s.server.cors.max_age_s = 900;
    })
    .await
}

/// One route of each kind: anonymous, signed in, inference, admin, a path with an id, the
/// health checks.
const ROUTES: [(&str, &str); 9] = [
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/register"),
    ("GET", "/api/credits/balance"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/api/admin/credits/grant"),
    ("DELETE", "/api/keys/3f0c1a52-2d7a-4a5e-9a51-0f1c8f6a9b10"),
    ("GET", "/api/usage/export"),
    ("GET", "/health"),
];

async fn preflight(app: &TestApp, origin: &str, method: &str, path: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("sent")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_route_answers_a_preflight_from_an_allowed_origin_as_configured() {
    let app = cors_app().await;
    for (method, path) in ROUTES {
        let answer = preflight(&app, ALLOWED, method, path).await;
        assert!(
            answer.status().is_success(),
            "{method} {path}: {}",
            answer.status()
        );
        assert_eq!(
            header(&answer, "access-control-allow-origin"),
            Some(ALLOWED),
            "{method} {path}"
        );
        assert_eq!(
            header(&answer, "access-control-allow-credentials"),
            Some("true"),
            "{method} {path}"
        );
        assert_eq!(
            header(&answer, "access-control-max-age"),
            Some("900"),
            "{method} {path}"
        );
        let methods = header(&answer, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{method} {path}: {methods}");
        let headers = header(&answer, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{method} {path}: {headers}"
        );
    }
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers() {
    let app = cors_app().await;
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        for (method, path) in ROUTES {
            let answer = preflight(&app, origin, method, path).await;
            let cors: Vec<&str> = answer
                .headers()
                .keys()
                .map(|k| k.as_str())
                .filter(|k| k.starts_with("access-control-"))
                .collect();
            assert!(cors.is_empty(), "{origin} {method} {path}: {cors:?}");
        }
        let answer = app
            .client
            .get(app.url("/health"))
            .header("origin", origin)
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(header(&answer, "access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn an_allowed_origin_may_read_the_request_id_of_an_answer() {
    let app = cors_app().await;
    let user = app.token(Uuid::new_v4(), Role::User);
    let answer = app
        .client
        .get(app.url("/api/credits/balance"))
        .bearer_auth(&user)
        .header("origin", ALLOWED)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = header(&answer, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert!(
        exposed.contains("x-ratelimit-remaining-requests"),
        "{exposed}"
    );
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_sent() {
    let app = spawn_app().await;
    let answer = preflight(&app, ALLOWED, "POST", "/api/auth/login").await;
    assert!(header(&answer, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_clients_request_id_comes_back_and_one_is_made_when_absent_or_unsafe() {
    let app = spawn_app().await;
    let mine = "client-7f3a.retry:2";
    let answer = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", mine)
        .send()
        .await
        .expect("sent");
    assert_eq!(header(&answer, "x-request-id"), Some(mine));

    // On an error too, and on a route the client may not call.
    let refused = app
        .client
        .get(app.url("/api/credits/balance"))
        .header("x-request-id", mine)
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&refused, "x-request-id"), Some(mine));

    let none = app.get("/health", None).await;
    let made = header(&none, "x-request-id").expect("an id is made");
    assert!(Uuid::parse_str(made).is_ok(), "{made}");
    let again = app.get("/health", None).await;
    assert_ne!(
        header(&again, "x-request-id"),
        Some(made),
        "each request its own"
    );

    for unsafe_id in [
        "has spaces in it",
        &"x".repeat(129),
        "semi;colon",
        "quote\"d",
    ] {
        let answer = app
            .client
            .get(app.url("/health"))
            .header("x-request-id", unsafe_id)
            .send()
            .await
            .expect("sent");
        let got = header(&answer, "x-request-id").expect("an id");
        assert_ne!(got, unsafe_id);
        assert!(Uuid::parse_str(got).is_ok(), "{got}");
    }
}
