//! Auditors' queries over the real app: the ledger across accounts, an account as it stood
//! at captured moments (folded from the event store), what admins did, and who may read
//! any of it (issue 16).
//!
//! Credit events come from the API (grants) and from the credit accounts' commands as the
//! API and workers run them (reservations, settlements); they reach the read models through
//! the relay, JetStream and the live projectors.

use chrono::{DateTime, Duration as Span, Utc};
use hub_domain::{AccountId, CreditCommand, Credits, RequestId, Role, UserId};
use hub_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
const CREDIT: i64 = 1_000_000;

/// Every audit route, with parameters that make a valid request.
fn audit_routes(account: Uuid) -> Vec<String> {
    vec![
        "/api/audit/ledger".into(),
        format!("/api/audit/accounts/{account}"),
        "/api/audit/trial-balance".into(),
        "/api/audit/payments/reconciliation".into(),
        "/api/audit/admin-actions".into(),
    ]
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let (status, body) = json_of(app.get(path, Some(token)).await).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    json_of(
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

/// `time` as a query parameter.
fn param(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B")
}

async fn reserve(app: &TestApp, user: Uuid, request: &str, credits: i64) {
    let now = Utc::now();
    app.state
        .credits
        .execute(
            AccountId::from(UserId(user)),
            CreditCommand::ReserveCredits {
                request_id: RequestId::parse(request).expect("a request id"),
                amount: Credits::from_micros(credits * CREDIT),
                expires_at: now + Span::minutes(5),
                now,
                key: None,
            },
            "test",
        )
        .await
        .expect("reserve");
}

async fn settle(app: &TestApp, user: Uuid, request: &str, credits: i64) {
    app.state
        .credits
        .execute(
            AccountId::from(UserId(user)),
            CreditCommand::SettleReservation {
                request_id: RequestId::parse(request).expect("a request id"),
                charge: Credits::from_micros(credits * CREDIT),
            },
            "test",
        )
        .await
        .expect("settle");
}

/// A captured moment: when, `(balance, reserved, available)` as the API showed it, and how
/// many ledger entries the account had.
type Moment = (DateTime<Utc>, (i64, i64, i64), usize);

/// The balance the API shows the user once it has applied the account's `version`-th
/// event: `(balance, reserved, available)`.
async fn shown_balance(app: &TestApp, token: &str, version: i64) -> (i64, i64, i64) {
    eventually(
        WAIT,
        &format!("the balance at version {version}"),
        || async {
            let (_, b) = json_of(app.get("/api/credits/balance", Some(token)).await).await;
            (b["version"].as_i64() == Some(version)).then(|| {
                (
                    b["balance_micros"].as_i64().unwrap_or(-1),
                    b["reserved_micros"].as_i64().unwrap_or(-1),
                    b["available_micros"].as_i64().unwrap_or(-1),
                )
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_as_of_each_captured_moment_equals_what_the_api_showed_then() {
    let app = spawn_app().await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    let before_anything = Utc::now();

    // After each step: the moment, the balance the API showed once it had applied it, and
    // the ledger entries by then.
    let mut moments: Vec<Moment> = Vec::new();
    let granted = app.grant(&admin, user, 100 * CREDIT, "asof-1").await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    // Opening (1) and grant (2).
    moments.push((Utc::now(), shown_balance(&app, &token, 2).await, 1));
    reserve(&app, user, "asof-r1", 40).await;
    moments.push((Utc::now(), shown_balance(&app, &token, 3).await, 1));
    settle(&app, user, "asof-r1", 15).await;
    moments.push((Utc::now(), shown_balance(&app, &token, 4).await, 2));
    let granted = app.grant(&admin, user, 5 * CREDIT, "asof-2").await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    moments.push((Utc::now(), shown_balance(&app, &token, 5).await, 3));
    reserve(&app, user, "asof-r2", 30).await;
    moments.push((Utc::now(), shown_balance(&app, &token, 6).await, 3));
    assert_eq!(
        moments.iter().map(|m| m.1).collect::<Vec<_>>(),
        [
            (100 * CREDIT, 0, 100 * CREDIT),
            (100 * CREDIT, 40 * CREDIT, 60 * CREDIT),
            (85 * CREDIT, 0, 85 * CREDIT),
            (90 * CREDIT, 0, 90 * CREDIT),
            (90 * CREDIT, 30 * CREDIT, 60 * CREDIT),
        ],
        "the steps as the API showed them"
    );

    for (at, (balance, reserved, available), entries) in &moments {
        let path = format!("/api/audit/accounts/{user}?as_of={}", param(*at));
        let asof = get_json(&app, &path, &auditor).await;
        assert_eq!(asof["balance_micros"], json!(balance), "{asof}");
        assert_eq!(asof["reserved_micros"], json!(reserved), "{asof}");
        assert_eq!(asof["available_micros"], json!(available), "{asof}");
        assert_eq!(asof["debt_micros"], json!(0));
        // The ledger up to then, and only up to then, sums to the folded balance.
        assert_eq!(
            asof["ledger"].as_array().map(Vec::len),
            Some(*entries),
            "{asof}"
        );
        assert_eq!(asof["ledger_sum_micros"], json!(balance));
        assert_eq!(asof["ledger_agrees"], json!(true), "{asof}");
        assert_eq!(
            asof["read_model"],
            Value::Null,
            "a past time is not compared"
        );
    }

    // Before the account existed, it held nothing.
    let path = format!(
        "/api/audit/accounts/{user}?as_of={}",
        param(before_anything)
    );
    let empty = get_json(&app, &path, &auditor).await;
    assert_eq!(empty["events_folded"], json!(0));
    assert_eq!(empty["balance_micros"], json!(0));

    // At the head the fold agrees with the balances read model, and says so.
    let head = get_json(&app, &format!("/api/audit/accounts/{user}"), &auditor).await;
    assert_eq!(head["through_sequence"], json!(6));
    assert_eq!(head["read_model"]["agrees"], json!(true), "{head}");
    assert_eq!(head["read_model"]["differences"], json!([]));

    // A read model that drifts from the events is named, not hidden.
    sqlx::query("UPDATE balances SET balance_micros = balance_micros + 1 WHERE account_id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .expect("edit the read model");
    let head = get_json(&app, &format!("/api/audit/accounts/{user}"), &auditor).await;
    assert_eq!(head["balance_micros"], json!(90 * CREDIT), "the events win");
    assert_eq!(head["read_model"]["agrees"], json!(false), "{head}");
    let differences = head["read_model"]["differences"].to_string();
    assert!(differences.contains("balance"), "{differences}");

    // The ledger of the as-of answer pages, newest first.
    let first = get_json(
        &app,
        &format!("/api/audit/accounts/{user}?limit=2"),
        &auditor,
    )
    .await;
    let cursor = first["ledger_next_cursor"].as_str().expect("a next page");
    let second = get_json(
        &app,
        &format!("/api/audit/accounts/{user}?limit=2&cursor={cursor}"),
        &auditor,
    )
    .await;
    assert_eq!(second["ledger"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["ledger_next_cursor"], Value::Null);
    assert_eq!(second["ledger"][0]["cause"]["id"], json!("asof-1"));

    // An account the event store never heard of, and a bad time.
    let (status, body) = json_of(
        app.get(
            &format!("/api/audit/accounts/{}", Uuid::new_v4()),
            Some(&auditor),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], json!("account_not_found"));
    let (status, body) = json_of(
        app.get(
            &format!("/api/audit/accounts/{user}?as_of=yesterday"),
            Some(&auditor),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], json!("invalid_filter"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_across_accounts_is_filtered_and_paged_newest_first() {
    let app = spawn_app().await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let admin_id = Uuid::new_v4();
    let admin = app.token(admin_id, Role::Admin);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    for (user, key) in [(alice, "l-a1"), (bob, "l-b1"), (alice, "l-a2")] {
        let granted = app.grant(&admin, user, 10 * CREDIT, key).await;
        assert_eq!(granted.status(), StatusCode::CREATED);
    }
    reserve(&app, bob, "l-req", 4).await;
    let middle = Utc::now();
    settle(&app, bob, "l-req", 3).await;

    let all = eventually(WAIT, "four ledger entries", || async {
        let page = get_json(&app, "/api/audit/ledger", &auditor).await;
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        (rows.len() == 4).then_some(rows)
    })
    .await;
    let seen: Vec<(String, String, i64)> = all
        .iter()
        .map(|r| {
            (
                r["account_id"].as_str().unwrap_or_default().to_string(),
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["balance_after_micros"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (bob.to_string(), "charge".into(), 7 * CREDIT),
            (alice.to_string(), "grant".into(), 20 * CREDIT),
            (bob.to_string(), "grant".into(), 10 * CREDIT),
            (alice.to_string(), "grant".into(), 10 * CREDIT),
        ],
        "newest first, each with its balance after"
    );

    let count = |path: String| {
        let (app, auditor) = (&app, &auditor);
        async move {
            get_json(app, &path, auditor).await["data"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    assert_eq!(count(format!("/api/audit/ledger?account={alice}")).await, 2);
    assert_eq!(count("/api/audit/ledger?kind=charge".into()).await, 1);
    assert_eq!(
        count("/api/audit/ledger?cause_type=request&cause_id=l-req".into()).await,
        1
    );
    assert_eq!(
        count("/api/audit/ledger?cause_type=grant&cause_id=l-b1".into()).await,
        1
    );
    assert_eq!(
        count(format!("/api/audit/ledger?actor={admin_id}")).await,
        3
    );
    assert_eq!(
        count(format!("/api/audit/ledger?from={}", param(middle))).await,
        1
    );
    assert_eq!(
        count(format!("/api/audit/ledger?to={}", param(middle))).await,
        3
    );

    // Paging one at a time walks the same entries, each once.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit/ledger?limit=1&cursor={c}"),
            None => "/api/audit/ledger?limit=1".into(),
        };
        let page = get_json(&app, &path, &auditor).await;
        walked.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(walked.len() <= 4, "paging does not end");
    }
    assert_eq!(walked, all);

    for bad in [
        "/api/audit/ledger?kind=gift",
        "/api/audit/ledger?account=someone",
        "/api/audit/ledger?from=2026-02-01&to=2026-01-01",
        "/api/audit/ledger?cursor=nope",
        "/api/audit/ledger?limit=0",
        "/api/audit/ledger?colour=red",
    ] {
        let (status, body) = json_of(app.get(bad, Some(&auditor)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    app.stop().await;
}

/// Register `email` and answer its user id and token.
async fn register(app: &TestApp, email: &str) -> (Uuid, String) {
    let (status, body) = json_of(
        app.client
            .post(app.url("/api/auth/register"))
            .json(&json!({"email": email, "password": "correct horse 1"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    (id, body["token"].as_str().expect("a token").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_say_who_did_what_when_and_why() {
    let app = spawn_app().await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let admin_id = Uuid::new_v4();
    let admin = app.token(admin_id, Role::Admin);
    let actor = format!("user:{admin_id}");
    let (user, user_token) = register(&app, "target@example.com").await;
    // A key its owner revokes is the owner's business: not an admin action.
    let (status, key) = post_json(&app, "/api/keys", &user_token, json!({"name": "mine"})).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key_id = key["id"].as_str().expect("a key id");
    let gone = app
        .client
        .delete(app.url(&format!("/api/keys/{key_id}")))
        .bearer_auth(&user_token)
        .send()
        .await
        .expect("sent");
    assert!(gone.status().is_success());

    let started = Utc::now();
    let granted = app
        .client
        .post(app.url("/api/admin/credits/grant"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "aa-grant")
        .json(&json!({"user_id": user, "amount_micros": 7 * CREDIT, "reason": "goodwill for ticket 42"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(granted.status(), StatusCode::CREATED);
    let path = format!("/api/admin/users/{user}/roles");
    let (status, body) = post_json(&app, &path, &admin, json!({"role": "analyst"})).await;
    assert!(status.is_success(), "{body}");
    let revoked = app
        .client
        .delete(app.url(&format!("/api/admin/users/{user}/roles/analyst")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert!(revoked.status().is_success());
    let path = format!("/api/admin/users/{user}/suspend");
    let (status, body) =
        post_json(&app, &path, &admin, json!({"reason": "chargeback fraud"})).await;
    assert!(status.is_success(), "{body}");
    let path = format!("/api/admin/users/{user}/unsuspend");
    let (status, body) = post_json(&app, &path, &admin, json!({"reason": "cleared"})).await;
    assert!(status.is_success(), "{body}");
    let (status, body) = post_json(
        &app,
        "/api/admin/promos",
        &admin,
        json!({"code": "AUDIT5", "credits_micros": 5 * CREDIT, "max_redemptions": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for action in ["disable", "enable"] {
        let path = format!("/api/admin/promos/AUDIT5/{action}");
        let (status, body) = post_json(&app, &path, &admin, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let page = get_json(&app, "/api/audit/admin-actions", &auditor).await;
    let actions = page["data"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = actions
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "promo_enabled",
            "promo_disabled",
            "promo_created",
            "user_unsuspended",
            "user_suspended",
            "role_revoked",
            "role_granted",
            "credits_granted",
        ],
        "newest first, nothing else: {page}"
    );
    for a in &actions {
        assert_eq!(a["actor"], json!(actor), "{a}");
        assert_eq!(a["by"], json!(admin_id.to_string()), "{a}");
        let at: DateTime<Utc> = serde_json::from_value(a["at"].clone()).expect("a time");
        assert!(at >= started && at <= Utc::now(), "{a}");
    }
    let grant = &actions[7];
    assert_eq!(grant["target"], json!(format!("account:{user}")));
    assert_eq!(grant["what"]["amount_micros"], json!(7 * CREDIT));
    assert_eq!(grant["why"], json!("goodwill for ticket 42"));
    assert_eq!(actions[6]["what"]["role"], json!("analyst"));
    assert_eq!(actions[6]["target"], json!(format!("user:{user}")));
    assert_eq!(actions[4]["why"], json!("chargeback fraud"));
    assert_eq!(actions[3]["why"], json!("cleared"));
    assert_eq!(actions[2]["target"], json!("promo:AUDIT5"));
    assert_eq!(actions[2]["what"]["credits_micros"], json!(5 * CREDIT));

    // By actor, and paged.
    let other = get_json(
        &app,
        &format!("/api/audit/admin-actions?actor=user:{}", Uuid::new_v4()),
        &auditor,
    )
    .await;
    assert_eq!(other["data"], json!([]));
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit/admin-actions?limit=3&cursor={c}"),
            None => "/api/audit/admin-actions?limit=3".into(),
        };
        let page = get_json(&app, &path, &auditor).await;
        walked.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.replace('+', "%2B")),
            None => break,
        }
        assert!(walked.len() <= actions.len(), "paging does not end");
    }
    assert_eq!(walked, actions);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_admins_read_any_audit_route() {
    let app = spawn_app().await;
    let account = Uuid::new_v4();
    let granted = app
        .grant(
            &app.token(Uuid::new_v4(), Role::Admin),
            account,
            CREDIT,
            "roles-1",
        )
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);

    // Even an auditor's own API key acts as a user only.
    let (auditor_id, _) = register(&app, "auditor@example.com").await;
    let bootstrap = app.token(Uuid::new_v4(), Role::Admin);
    let path = format!("/api/admin/users/{auditor_id}/roles");
    let (status, body) = post_json(&app, &path, &bootstrap, json!({"role": "auditor"})).await;
    assert!(status.is_success(), "{body}");
    let auditor_token = app.token(auditor_id, Role::Auditor);
    let (status, key) = post_json(
        &app,
        "/api/keys",
        &auditor_token,
        json!({"name": "audit-bot", "scopes": ["inference", "read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = key["key"].as_str().expect("the key").to_string();

    for path in audit_routes(account) {
        for (who, token) in [
            ("a user", app.token(Uuid::new_v4(), Role::User)),
            ("an analyst", app.token(Uuid::new_v4(), Role::Analyst)),
            ("an API key", key.clone()),
        ] {
            let (status, body) = json_of(app.get(&path, Some(&token)).await).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} on {path}: {body}");
            assert_eq!(body["error"]["code"], json!("forbidden"), "{who} on {path}");
        }
        let (status, _) = json_of(app.get(&path, None).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous on {path}");
        for (who, token) in [
            ("an auditor", auditor_token.clone()),
            ("an admin", app.token(Uuid::new_v4(), Role::Admin)),
        ] {
            // The account's events are written at once; the route reads them at once.
            let (status, body) = json_of(app.get(&path, Some(&token)).await).await;
            assert_eq!(status, StatusCode::OK, "{who} on {path}: {body}");
        }
    }
    app.stop().await;
}
