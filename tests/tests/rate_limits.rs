//! Rate limits and quotas over the real app, held across processes by the one shared store
//! (Redis; docs/adr/05-rate-limits.md). Each test's keys carry its sandbox's prefix, so the
//! tests run in parallel on one Redis.
//!
//! A per-minute budget refills while a test runs (a limit of `n` per minute gives one back
//! every `60/n` seconds), so the most a test may see admitted is the limit plus what refilled
//! in the time it took, measured, plus one: the documented tolerance.

use futures::StreamExt;
use hub_domain::Role;
use hub_server::{Roles, Settings};
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("AIHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A slow mock (5 tokens a second): a streamed answer of 100 tokens stays open for 20 s,
/// for as long as the test needs it.
fn slow_model() -> ModelSettings {
    ModelSettings {
        name: "mock-slow".into(),
        price: PriceSettings {
            input_per_million_micros: 1_000_000,
            output_per_million_micros: 1_000_000,
            cached_input_per_million_micros: 1_000_000,
        },
        max_output_tokens: Some(100),
        context_tokens: None,
        tokenizer: "o200k".into(),
        providers: vec![ProviderSettings {
            kind: ProviderKind::Mock,
            base_url: None,
            api_key: None,
            upstream_model: None,
            name: Some("mock".into()),
            mock_tokens_per_second: Some(5),
        }],
        ..ModelSettings::mock("mock-slow")
    }
}

/// The app with rate limits on, over the test's Redis.
async fn limited_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(Roles::ALL, |s| {
        s.rate_limits.enabled = true;
        s.rate_limits.redis_url = redis_url();
        s.models.models.push(slow_model());
        tweak(s);
    })
    .await
}

/// A second API process on the same database, streams and rate-limit keys.
async fn second_api(app: &TestApp) -> hub_tests::Peer {
    app.peer(Roles {
        http: true,
        ..Roles::NONE
    })
    .await
}

/// The most a budget of `limit` per minute may admit in `elapsed`: all of it at once, what
/// refilled meanwhile, and one for the rounding.
fn most_admitted(limit: u64, elapsed: Duration) -> u64 {
    limit + (limit as f64 * elapsed.as_secs_f64() / 60.0).ceil() as u64 + 1
}

/// A registered user with credits: their id and access token.
async fn funded_user(app: &TestApp) -> (Uuid, String) {
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(
            &json!({"email": format!("{}@example.com", Uuid::new_v4().simple()),
                      "password": "password123"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    let token = created["token"].as_str().expect("token").to_string();
    let user = app.state.jwt.verify(&token).expect("token").sub;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, 1_000_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    (user, token)
}

/// A key of the user's with `rate_limits` of its own: the key itself.
async fn key_with(app: &TestApp, token: &str, rate_limits: Value) -> String {
    let response = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(token)
        .json(&json!({"name": "limited", "rate_limits": rate_limits}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["rate_limits"], rate_limits, "the key shows its limits");
    body["key"].as_str().expect("shown once").to_string()
}

/// What an answer's `x-ratelimit-remaining-<what>` says is left (`requests` or `tokens`).
fn left_of(what: &str, response: &reqwest::Response) -> u64 {
    header(response, &format!("x-ratelimit-remaining-{what}"))
        .unwrap_or_else(|| panic!("remaining {what}"))
        .parse()
        .expect("a number")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A refusal on /v1 is OpenAI's: 429, `Retry-After`, `rate_limit_error`.
async fn assert_openai_refusal(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&response, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"].get("param").is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_through_two_processes_admit_no_more_than_the_keys_limit() {
    let app = limited_app(|_| {}).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    let key = key_with(&app, &token, json!({"requests_per_minute": 100})).await;

    let started = Instant::now();
    let urls = [app.url("/v1/models"), peer.url("/v1/models")];
    let answers: Vec<reqwest::Response> = futures::stream::iter(0..1_000)
        .map(|i| {
            let request = app.client.get(&urls[i % 2]).bearer_auth(&key);
            async move { request.send().await.expect("sent") }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let admitted = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count() as u64;
    let most = most_admitted(100, elapsed);
    assert!(
        (100..=most).contains(&admitted),
        "{admitted} of 1,000 admitted against a limit of 100 a minute (at most {most} in {elapsed:?})"
    );
    let mut refused = 0;
    for answer in answers {
        if answer.status() != StatusCode::OK {
            assert_openai_refusal(answer).await;
            refused += 1;
        }
    }
    assert_eq!(admitted + refused, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_headers_count_down_on_every_v1_answer() {
    let app = limited_app(|s| s.rate_limits.user.tokens_per_minute = 50_000).await;
    let (_, token) = funded_user(&app).await;
    let key = key_with(&app, &token, json!({"requests_per_minute": 10})).await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let answer = app.get("/v1/models", Some(&key)).await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            header(&answer, "x-ratelimit-limit-requests").as_deref(),
            Some("10")
        );
        assert_eq!(
            header(&answer, "x-ratelimit-limit-tokens").as_deref(),
            Some("50000"),
            "the key's tokens are the user role's default, and the user's own budget is as large"
        );
        assert!(header(&answer, "x-ratelimit-reset-requests").is_some());
        assert!(header(&answer, "x-ratelimit-remaining-tokens").is_some());
        assert!(header(&answer, "x-ratelimit-reset-tokens").is_some());
        let left: u64 = left_of("requests", &answer);
        remaining.push(left);
    }
    assert_eq!(remaining[0], 9, "{remaining:?}");
    assert!(
        remaining.windows(2).all(|w| w[1] < w[0]),
        "each request takes one: {remaining:?}"
    );

    // A chat takes its tokens: the tokens left go down by its estimate.
    let chat = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(chat.status(), StatusCode::OK);
    let tokens_left: u64 = left_of("tokens", &chat);
    assert!(
        tokens_left <= 50_000 - 20,
        "at least max_tokens were counted: {tokens_left} left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_hold_across_two_processes() {
    let app = limited_app(|_| {}).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    let limit = 1_000;
    let key = key_with(&app, &token, json!({"tokens_per_minute": limit})).await;
    let chat = json!({"model": "mock-1", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "Hello there"}]});

    // One request alone: what it costs, read from the headers.
    let first = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat)
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), StatusCode::OK);
    let left: u64 = left_of("tokens", &first);
    let cost = limit - left;
    assert!(cost >= 100, "prompt and max_tokens are counted: {cost}");
    // What an answer leaves taken once the unused tokens are given back.
    let usage: Value = first.json().await.expect("json");
    let used = usage["usage"]["total_tokens"].as_u64().expect("usage");
    assert!(
        used < cost,
        "the answer used less than was counted: {used} of {cost}"
    );

    let started = Instant::now();
    let urls = [
        app.url("/v1/chat/completions"),
        peer.url("/v1/chat/completions"),
    ];
    let answers: Vec<reqwest::Response> = futures::stream::iter(0..40)
        .map(|i| {
            let request = app.client.post(&urls[i % 2]).bearer_auth(&key).json(&chat);
            async move { request.send().await.expect("sent") }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let admitted = 1 + answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count() as u64;
    // Each admitted chat keeps at least what it used once its answer ends (answers are
    // 12 to 48 words, as long as the first's or longer, give or take), so no more can pass
    // than the budget holds of those.
    let least_kept = used.min(cost) / 2;
    let most = most_admitted(limit, elapsed) / least_kept + 1;
    assert!(
        admitted <= most,
        "{admitted} chats (each keeping at least {least_kept} tokens) admitted against {limit} tokens a minute (at most {most} in {elapsed:?})"
    );
    assert!(admitted >= limit / cost, "the budget's room was used");
    for answer in answers {
        if answer.status() != StatusCode::OK {
            assert_openai_refusal(answer).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_concurrent_streams_are_capped_until_one_ends() {
    let app = limited_app(|_| {}).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    let key = key_with(&app, &token, json!({"concurrent_requests": 2})).await;
    let stream = json!({"model": "mock-slow", "max_tokens": 100, "stream": true,
                        "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let open = |url: String| {
        let request = app.client.post(url).bearer_auth(&key).json(&stream);
        async move { request.send().await.expect("sent") }
    };
    let first = open(app.url("/v1/chat/completions")).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(peer.url("/v1/chat/completions")).await;
    assert_eq!(second.status(), StatusCode::OK);

    let third = open(app.url("/v1/chat/completions")).await;
    assert_openai_refusal(third).await;

    // The client leaves one stream: its place is given back.
    drop(first);
    eventually(
        Duration::from_secs(20),
        "a place among the streams",
        || async {
            let answer = open(peer.url("/v1/chat/completions")).await;
            (answer.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_logins_from_one_address_are_throttled_and_hashing_stays_capped() {
    let per_ip = 20;
    let cap = 2;
    let app = limited_app(|s| {
        s.rate_limits.anonymous_requests_per_minute_per_ip = per_ip;
        s.auth.password_work_max = cap;
    })
    .await;
    let started = Instant::now();
    let registered = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": "crowd@example.com", "password": "password123"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let hashes_before = app.state.passwords.started();

    let logins = (0..500).map(|_| {
        let request = app
            .client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": "crowd@example.com", "password": "password123"}));
        async move { request.send().await.expect("sent") }
    });
    let answers = futures::future::join_all(logins).await;
    let elapsed = started.elapsed();

    // Refused at the door (429 `rate_limited`), or let in: signed in, told the hashing is
    // busy (503 `busy`), or locked by the login throttle behind (429 `too_many_attempts`).
    let (mut reached, mut refused) = (0, 0);
    for answer in answers {
        let status = answer.status();
        let retry_after = header(&answer, "retry-after");
        let body: Value = answer.json().await.expect("json");
        assert!(
            [
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(&status),
            "unexpected {status}: {body}"
        );
        if body["error"]["code"] == "rate_limited" {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert!(retry_after.is_some(), "a refusal says when to come back");
            assert!(body["error"]["message"].is_string(), "{body}");
            refused += 1;
        } else {
            reached += 1;
        }
    }
    assert_eq!(reached + refused, 500);
    let most = most_admitted(per_ip, elapsed);
    assert!(
        reached < most,
        "{reached} logins reached the hub; the address may make {per_ip} calls a minute (the registration was one)"
    );
    let hashes = app.state.passwords.started() - hashes_before;
    assert!(hashes <= reached, "{hashes} hashes for {reached} logins");
    assert!(
        app.state.passwords.running_max() <= cap,
        "{} password hashes ran at once; the cap is {cap}",
        app.state.passwords.running_max()
    );
}

#[tokio::test]
async fn a_store_that_is_down_admits_when_limits_fail_open_and_ready_says_so() {
    let app = limited_app(|s| s.rate_limits.redis_url = "redis://127.0.0.1:1".into()).await;
    let user = app.token(Uuid::new_v4(), Role::User);
    let answer = app.get("/v1/models", Some(&user)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(header(&answer, "x-ratelimit-limit-requests").is_none());

    let anonymous = app.get("/ready", None).await;
    assert_eq!(anonymous.status(), StatusCode::OK);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body, json!({"status": "degraded"}));
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let details: Value = app
        .get("/ready", Some(&admin))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(details["rate_limits"]["ok"], false, "{details}");
    assert_eq!(details["rate_limits"]["fails"], "open", "{details}");
}

#[tokio::test]
async fn a_store_that_is_down_refuses_when_limits_fail_closed() {
    let app = limited_app(|s| {
        s.rate_limits.redis_url = "redis://127.0.0.1:1".into();
        s.rate_limits.fail_open = false;
    })
    .await;
    let user = app.token(Uuid::new_v4(), Role::User);
    let answer = app.get("/v1/models", Some(&user)).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limits_unavailable", "{body}");
    let register = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": "closed@example.com", "password": "password123"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(register.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = register.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limits_unavailable", "{body}");
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_key_refuses_a_zero_rate_limit() {
    let app = limited_app(|_| {}).await;
    let (_, token) = funded_user(&app).await;
    let response = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "zero", "rate_limits": {"requests_per_minute": 0}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_rate_limits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_keys_and_their_own_token_share_the_users_budget() {
    let app = limited_app(|s| s.rate_limits.user.requests_per_minute = 20).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    // Neither key sets a limit of its own: each may make the user role's 20 a minute, and
    // all of them together, with the owner's own token, no more than the user's 20.
    let first = key_with(&app, &token, json!({})).await;
    let second = key_with(&app, &token, json!({})).await;
    let credentials = [first, second, token];
    let started = Instant::now();
    let answers: Vec<reqwest::Response> = futures::stream::iter(0..90)
        .map(|i| {
            let url = if i % 2 == 0 {
                app.url("/v1/models")
            } else {
                peer.url("/v1/models")
            };
            let request = app.client.get(url).bearer_auth(&credentials[i % 3]);
            async move { request.send().await.expect("sent") }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let admitted = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count() as u64;
    let most = most_admitted(20, elapsed);
    assert!(
        (20..=most).contains(&admitted),
        "{admitted} of 90 admitted for one user allowed 20 a minute (at most {most} in {elapsed:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_chats_count_against_the_users_requests_per_minute() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = limited_app(|s| s.rate_limits.user.requests_per_minute = 3).await;
    let (_, token) = funded_user(&app).await;
    let url = format!(
        "{}/api/ws?token={token}",
        app.address.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let started = Instant::now();
    let chats = 8;
    for i in 0..chats {
        let start = json!({"type": "chat.start", "id": format!("c{i}"), "model": "mock-1",
                           "messages": [{"role": "user", "content": "Hello"}],
                           "options": {"max_tokens": 8}});
        socket
            .send(Message::Text(start.to_string().into()))
            .await
            .expect("sent");
    }
    let (mut done, mut limited) = (0_u64, 0);
    while done + limited < chats {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).expect("json");
        match value["type"].as_str() {
            Some("chat.done") => done += 1,
            Some("chat.error") => {
                assert_eq!(value["code"], "rate_limit_exceeded", "{value}");
                limited += 1;
            }
            _ => {}
        }
    }
    let most = most_admitted(3, started.elapsed());
    assert!(
        (3..=most).contains(&done),
        "{done} of {chats} chats answered for a user allowed 3 requests a minute (at most {most})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_on_v1_is_held_to_the_addresss_budget() {
    let per_ip = 5;
    let app = limited_app(|s| s.rate_limits.anonymous_requests_per_minute_per_ip = per_ip).await;
    let started = Instant::now();
    let guesses = (0..40).map(|i| {
        let request = app
            .client
            .get(app.url("/v1/models"))
            .bearer_auth(format!("aihub_guess{i:05}_{}", "x".repeat(43)));
        async move { request.send().await.expect("sent") }
    });
    let answers = futures::future::join_all(guesses).await;
    let elapsed = started.elapsed();
    let mut checked = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::UNAUTHORIZED => checked += 1,
            _ => assert_openai_refusal(answer).await,
        }
    }
    assert!(checked >= 1, "the first guesses were looked up and refused");
    let most = most_admitted(per_ip, elapsed);
    assert!(
        checked < most,
        "{checked} guessed keys were looked up; the address may try {per_ip} a minute"
    );
}

/// The tokens `key` has left once all but the `used` of its `limit` are back, read through a
/// request that takes none (a fraction of a minute's refill only adds).
async fn tokens_back(app: &TestApp, key: &str, limit: u64, used: u64) -> u64 {
    eventually(
        Duration::from_secs(10),
        "the unused tokens back",
        || async {
            let models = app.get("/v1/models", Some(key)).await;
            let now: u64 = header(&models, "x-ratelimit-remaining-tokens")?
                .parse()
                .ok()?;
            (now + used + 2 >= limit).then_some(now)
        },
    )
    .await
}

/// Tokens per minute are counted at acceptance (the prompt and the most the answer may
/// take) and corrected when the answer ends: what it did not use goes back to the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_tokens_go_back_to_the_budget_when_the_answer_ends() {
    let app = limited_app(|_| {}).await;
    let (_, token) = funded_user(&app).await;
    let limit: u64 = 3_000;
    let key = key_with(&app, &token, json!({"tokens_per_minute": limit})).await;
    let answer = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), StatusCode::OK);
    let left: u64 = left_of("tokens", &answer);
    let counted = limit - left;
    assert!(counted >= 1_000, "max_tokens was counted: {counted}");
    let body: Value = answer.json().await.expect("json");
    let used = body["usage"]["total_tokens"].as_u64().expect("usage");
    assert!(used < 200, "a short answer: {used}");
    let restored = tokens_back(&app, &key, limit, used).await;
    assert!(
        restored > left + counted / 2,
        "{restored} tokens left after the answer, {left} while it ran"
    );
}

/// An access token signed out (`logout-all`) is refused with 401 on `/v1`, and the requests
/// it was refused for do not use up its user's per-minute budget: the user's new token still
/// gets the whole of it, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_tokens_refused_requests_leave_the_users_budget_whole() {
    let limit = 5;
    let app = limited_app(|s| {
        s.rate_limits.user.requests_per_minute = limit;
        s.rate_limits.anonymous_requests_per_minute_per_ip = 1_000;
    })
    .await;
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": "password123"});
    let sign = |path: &'static str| {
        let request = app.client.post(app.url(path)).json(&credentials);
        async move {
            let response = request.send().await.expect("sent");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            let body: Value = response.json().await.expect("json");
            body["token"].as_str().expect("token").to_string()
        }
    };
    let old = sign("/api/auth/register").await;
    let ended = app
        .client
        .post(app.url("/api/auth/logout-all"))
        .bearer_auth(&old)
        .send()
        .await
        .expect("sent");
    assert!(
        ended.status().is_success(),
        "logout-all: {}",
        ended.status()
    );
    for _ in 0..(2 * limit) {
        let refused = app.get("/v1/models", Some(&old)).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // A new session of the same user: the whole budget, then 429.
    let fresh = sign("/api/auth/login").await;
    for i in 0..limit {
        let answer = app.get("/v1/models", Some(&fresh)).await;
        assert_eq!(answer.status(), StatusCode::OK, "request {i} of {limit}");
    }
    let over = app.get("/v1/models", Some(&fresh)).await;
    assert_openai_refusal(over).await;
}

/// A chat refused before the limits were reached (its model unknown) still counts against
/// the caller's requests per minute and says so in its headers; a caller out of requests
/// hears 429 before anything about its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_refused_for_its_body_still_counts_and_carries_the_headers() {
    let app = limited_app(|_| {}).await;
    let (_, token) = funded_user(&app).await;
    let key = key_with(&app, &token, json!({"requests_per_minute": 3})).await;
    let send = |model: &'static str| {
        let request = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "max_tokens": 10,
                          "messages": [{"role": "user", "content": "Hello there"}]}));
        async move { request.send().await.expect("sent") }
    };
    let unknown = send("no-such-model").await;
    assert!(
        unknown.status().is_client_error() && unknown.status() != StatusCode::TOO_MANY_REQUESTS,
        "{}",
        unknown.status()
    );
    assert_eq!(
        header(&unknown, "x-ratelimit-remaining-requests").as_deref(),
        Some("2"),
        "the refused chat took a request"
    );
    for left in ["1", "0"] {
        let answered = send("mock-1").await;
        assert_eq!(answered.status(), StatusCode::OK);
        assert_eq!(
            header(&answered, "x-ratelimit-remaining-requests").as_deref(),
            Some(left)
        );
        assert!(header(&answered, "x-ratelimit-remaining-tokens").is_some());
    }
    assert_openai_refusal(send("no-such-model").await).await;
    assert_openai_refusal(send("mock-1").await).await;
}

/// A streamed chat holds its place among the caller's concurrent requests until its last
/// chunk is sent; then the place and the tokens its answer did not use go back together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_streams_place_and_unused_tokens_go_back_together() {
    let app = limited_app(|_| {}).await;
    let (_, token) = funded_user(&app).await;
    let limit: u64 = 3_000;
    let key = key_with(
        &app,
        &token,
        json!({"tokens_per_minute": limit, "concurrent_requests": 1}),
    )
    .await;
    let open = || {
        let request = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(
                &json!({"model": "mock-1", "max_tokens": 1000, "stream": true,
                          "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "Hello there"}]}),
            );
        async move { request.send().await.expect("sent") }
    };
    let stream = open().await;
    assert_eq!(stream.status(), StatusCode::OK);
    let left: u64 = left_of("tokens", &stream);
    assert!(limit - left >= 1_000, "max_tokens was counted: {left} left");
    let body = stream.text().await.expect("the whole stream");
    assert!(body.contains("data: [DONE]"), "{body}");
    let usage: Value = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|chunk| chunk.get("usage").filter(|u| u.is_object()).cloned())
        .expect("a usage chunk");
    let used = usage["total_tokens"].as_u64().expect("usage");

    let restored = tokens_back(&app, &key, limit, used).await;
    assert!(
        restored > left,
        "{restored} tokens left after the stream, {left} while it ran"
    );
    let next = open().await;
    assert_eq!(
        next.status(),
        StatusCode::OK,
        "the one place went back with the tokens"
    );
}

/// A caller with a large budget is decided in the process it calls, from a share of its
/// budget taken ahead: fifty requests cost the store a handful of calls, not fifty or a
/// hundred, and the headers still count every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callers_requests_are_decided_from_a_share_without_asking_the_store_each_time() {
    // The `user` role's defaults: 600 requests and 2,000,000 tokens a minute, 32 at once.
    let app = limited_app(|_| {}).await;
    let (_, token) = funded_user(&app).await;
    let before = app.state.rate_limits.store_calls();
    let started = Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..40 {
        let answer = app.get("/v1/models", Some(&token)).await;
        assert_eq!(answer.status(), StatusCode::OK);
        remaining.push(left_of("requests", &answer));
    }
    for _ in 0..10 {
        let chat = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "mock-1", "max_tokens": 20,
                          "messages": [{"role": "user", "content": "Hello there"}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(chat.status(), StatusCode::OK);
        remaining.push(left_of("requests", &chat));
        chat.bytes().await.expect("the answer");
    }
    let calls = app.state.rate_limits.store_calls() - before;
    assert!(
        calls <= 10,
        "{calls} calls to the store for 50 requests and their ends"
    );
    // One request a tenth of a second refills; none is lost from the count.
    let refilled = started.elapsed().as_millis() as u64 / 100 + 1;
    for (i, left) in remaining.iter().enumerate() {
        let taken = i as u64 + 1;
        assert!(
            *left + taken >= 600 && *left + taken <= 600 + refilled,
            "request {taken}: {left} left ({remaining:?})"
        );
    }
}

/// What one process took ahead and left unused goes back to the store after a second
/// idle, for the caller's requests through the other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_left_unused_goes_back_for_the_callers_other_processes() {
    let app = limited_app(|_| {}).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    // 100 a minute: each process takes 5 ahead, and one comes back every 0.6 s.
    let key = key_with(&app, &token, json!({"requests_per_minute": 100})).await;
    let first = app.get("/v1/models", Some(&key)).await;
    assert_eq!(left_of("requests", &first), 99);
    let through_peer = || {
        let request = app.client.get(peer.url("/v1/models")).bearer_auth(&key);
        async move { request.send().await.expect("sent") }
    };
    let left = left_of("requests", &through_peer().await);
    assert!(
        left <= 94,
        "the first process's share is counted in the store: {left} left"
    );

    tokio::time::sleep(hub_app::rate_limits::SHARE_IDLE + Duration::from_millis(1_000)).await;
    let left = left_of("requests", &through_peer().await);
    // Kept by the first process, its share would leave at most 96 here (2 s of refill).
    assert!(
        left >= 98,
        "both shares went back, two requests used: {left} left"
    );
}

/// Places among a caller's concurrent requests taken ahead never let more run at once than
/// the limit, in the process that holds them or in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_taken_ahead_never_let_more_than_the_limit_run_at_once() {
    let app = limited_app(|_| {}).await;
    let peer = second_api(&app).await;
    let (_, token) = funded_user(&app).await;
    let limit = 16;
    let key = key_with(&app, &token, json!({"concurrent_requests": limit})).await;
    let stream = json!({"model": "mock-slow", "max_tokens": 100, "stream": true,
                        "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let open = |url: String| {
        let request = app.client.post(url).bearer_auth(&key).json(&stream);
        async move { request.send().await.expect("sent") }
    };
    let mut running = Vec::new();
    for _ in 0..limit {
        let answer = open(app.url("/v1/chat/completions")).await;
        assert_eq!(answer.status(), StatusCode::OK);
        running.push(answer);
    }
    assert_openai_refusal(open(app.url("/v1/chat/completions")).await).await;
    assert_openai_refusal(open(peer.url("/v1/chat/completions")).await).await;
    drop(running);
}
