//! Tamper evidence and `aihub audit verify` over the real app (issue 16): every event's
//! chain hash is the one recomputed from its stored bytes, a clean history verifies, and
//! each kind of tampering — an edited payload, a deleted event, an edited `balances` row, a
//! message missing from (a copy of) the stream, a charge above its price — is found and
//! named. A proof from the API verifies offline, and fails with one bit changed in the
//! event, the path or the signature. Only auditors and admins read any of it.

use async_nats::jetstream;
use futures::StreamExt;
use hub_app::audit::verify::{self, Discrepancy, Options, Report};
use hub_app::evidence::checkpoints::checkpoint_once;
use hub_app::evidence::Proof;
use hub_domain::Role;
use hub_tests::{eventually, spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

async fn register(app: &TestApp, email: &str) -> (Uuid, String) {
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": email, "password": "correct horse 1"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    (
        body["user"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("a user id"),
        body["token"].as_str().expect("a token").to_string(),
    )
}

async fn chat(app: &TestApp, token: &str) {
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "mock-1", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "Say hello."}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Two users with grants and a few answered chats each; returns their ids and tokens.
async fn history(app: &TestApp) -> Vec<(Uuid, String)> {
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let mut people = Vec::new();
    for (i, email) in ["ada@example.com", "grace@example.com"].iter().enumerate() {
        let (id, token) = register(app, email).await;
        let granted = app.grant(&admin, id, 5_000_000, &format!("g{i}")).await;
        assert_eq!(granted.status(), StatusCode::CREATED);
        for _ in 0..3 {
            chat(app, &token).await;
        }
        people.push((id, token));
    }
    people
}

async fn run_verify(app: &TestApp, stream: Option<String>) -> Report {
    let options = Options {
        stream,
        public_key: app.state.checkpoint_key.public_key(),
        now: chrono::Utc::now(),
    };
    verify::verify(
        &app.pool,
        &app.state.js,
        &app.state.topology,
        &options,
        &|_| {},
    )
    .await
    .expect("the verification runs")
}

/// Verify until it passes (the relay and projectors catch up): the clean state.
async fn verified(app: &TestApp) -> Report {
    eventually(WAIT, "a clean history to verify", || async {
        let report = run_verify(app, None).await;
        (report.passed && report.pending_publication == 0 && report.read_model_behind == 0)
            .then_some(report)
    })
    .await
}

/// The discrepancies of `check`.
fn found<'a>(report: &'a Report, check: &str) -> Vec<&'a Discrepancy> {
    report
        .discrepancies
        .iter()
        .filter(|d| d.check == check)
        .collect()
}

/// Run SQL as a superuser would, with the events' immutability trigger off.
async fn tamper(app: &TestApp, sql: &str) {
    let mut tx = app.pool.begin().await.expect("a transaction");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
        .execute(&mut *tx)
        .await
        .expect("trigger off");
    sqlx::query(sql).execute(&mut *tx).await.expect("tampered");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete")
        .execute(&mut *tx)
        .await
        .expect("trigger on");
    tx.commit().await.expect("committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_chained_and_a_clean_history_verifies() {
    let app = spawn_app().await;
    let people = history(&app).await;
    let report = verified(&app).await;
    assert!(report.events >= 20, "{report:?}");
    assert_eq!(report.accounts, 2);
    assert_eq!(report.checks.len(), verify::CHECKS.len());
    assert!(report.discrepancies.is_empty());

    // The database's hashes are the ones the Rust side recomputes (verify checked each);
    // and they chain: no two events share one, none is empty.
    let (hashes, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(hash), count(DISTINCT hash) FROM events")
            .fetch_one(&app.pool)
            .await
            .expect("counted");
    assert_eq!(hashes, distinct);
    assert_eq!(hashes, i64::try_from(report.events).expect("fits"));
    // The migration's SQL digest (which chained the events stored before it) is the
    // writer's, for every event written here.
    let differing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT e.hash, sha256(coalesce(p.hash, decode(repeat('00', 32), 'hex'))
                                  || event_digest(e.aggregate_type, e.aggregate_id,
                                                  e.event_type, e.event_version, e.payload,
                                                  e.metadata, e.sequence, e.recorded_at)) AS sql
              FROM events e
              LEFT JOIN events p ON p.aggregate_type = e.aggregate_type
                                AND p.aggregate_id = e.aggregate_id
                                AND p.sequence = e.sequence - 1) x
          WHERE x.hash <> x.sql",
    )
    .fetch_one(&app.pool)
    .await
    .expect("compared");
    assert_eq!(differing, 0);

    // Kept for auditors: GET /api/audit/verify shows the last run.
    verify::record(&app.pool, &report).await.expect("kept");
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let shown: Value = app
        .get("/api/audit/verify", Some(&auditor))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["passed"], true);
    assert_eq!(shown["events"], report.events);
    drop(people);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_payload_is_found_in_the_chain_and_against_the_stream() {
    let app = spawn_app().await;
    let people = history(&app).await;
    verified(&app).await;
    let account = people[0].0.to_string();
    // The grant, written as 5 credits, edited to say 500.
    tamper(
        &app,
        &format!(
            "UPDATE events SET payload = replace(payload::text, '5000000', '500000000')::json
              WHERE aggregate_type = 'CreditAccount' AND aggregate_id = '{account}'
                AND event_type = 'CreditsGranted'"
        ),
    )
    .await;
    let report = run_verify(&app, None).await;
    assert!(!report.passed);
    let chain = found(&report, "hash_chain");
    assert!(
        chain.iter().any(
            |d| d.subject.starts_with(&format!("CreditAccount/{account}/"))
                && d.detail.contains("does not follow")
        ),
        "{chain:?}"
    );
    let stream = found(&report, "stream");
    assert!(
        stream
            .iter()
            .any(|d| d.subject.contains(&account) && d.detail.contains("payload")),
        "{stream:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_event_is_found() {
    let app = spawn_app().await;
    let people = history(&app).await;
    verified(&app).await;
    let account = people[1].0.to_string();
    tamper(
        &app,
        &format!(
            "DELETE FROM events WHERE aggregate_type = 'CreditAccount'
                AND aggregate_id = '{account}' AND sequence = 3"
        ),
    )
    .await;
    let report = run_verify(&app, None).await;
    assert!(!report.passed);
    let gone = format!("CreditAccount/{account}/3");
    assert!(
        found(&report, "stream")
            .iter()
            .any(|d| d.subject == gone && d.detail.contains("not in the event store")),
        "{:?}",
        report.discrepancies
    );
    assert!(
        found(&report, "hash_chain")
            .iter()
            .any(|d| d.subject == format!("CreditAccount/{account}/4")),
        "{:?}",
        report.discrepancies
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_balances_row_is_found() {
    let app = spawn_app().await;
    let people = history(&app).await;
    verified(&app).await;
    let account = people[0].0;
    sqlx::query(
        "UPDATE balances SET balance_micros = balance_micros + 1000000 WHERE account_id = $1",
    )
    .bind(account)
    .execute(&app.pool)
    .await
    .expect("edited");
    let report = run_verify(&app, None).await;
    assert!(!report.passed);
    assert!(
        found(&report, "accounts")
            .iter()
            .any(|d| d.subject == format!("account {account}") && d.detail.contains("balances row")),
        "{:?}",
        report.discrepancies
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_missing_from_or_edited_in_a_copy_of_the_stream_is_found() {
    let app = spawn_app().await;
    let people = history(&app).await;
    verified(&app).await;
    // The copy: every message of HUB_EVENTS but one, under subjects of its own; one other
    // with its payload's value changed, and one with the same JSON laid out differently (as
    // a message published before payloads travelled verbatim has it).
    let topology = &app.state.topology;
    let copy = format!("{}COPY", topology.stream_prefix);
    let copy_subject = format!("{}_copy", topology.subject_prefix);
    let js = &app.state.js;
    js.get_or_create_stream(jetstream::stream::Config {
        name: copy.clone(),
        subjects: vec![format!("{copy_subject}.>")],
        ..Default::default()
    })
    .await
    .expect("the copy");
    let mut events = js
        .get_stream(topology.events_stream())
        .await
        .expect("the stream");
    let count = events.info().await.expect("info").state.messages;
    let consumer = events
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("a consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let account = people[0].0.to_string();
    let other = people[1].0.to_string();
    let (mut left_out, mut edited, mut laid_out) = (None, None, None);
    for _ in 0..count {
        let message = messages.next().await.expect("a message").expect("read");
        let mut envelope: hub_nats::EventEnvelope =
            serde_json::from_slice(&message.payload).expect("an envelope");
        let name = format!(
            "{}/{}/{}",
            envelope.aggregate_type, envelope.aggregate_id, envelope.sequence
        );
        // The relay publishes the stored JSON text byte for byte.
        let stored: String = sqlx::query_scalar(
            "SELECT payload::text FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .bind(i64::try_from(envelope.sequence).expect("a sequence"))
        .fetch_one(&app.pool)
        .await
        .expect("the stored event");
        assert_eq!(envelope.payload.text(), stored, "{name}");
        let mut body = message.payload.to_vec();
        if envelope.aggregate_type == "CreditAccount" && envelope.aggregate_id == account {
            match envelope.sequence {
                2 => {
                    left_out = Some(name);
                    continue;
                }
                3 => {
                    let value = envelope.payload.to_value().expect("json");
                    let pretty = serde_json::to_string_pretty(&value).expect("json");
                    envelope.payload = hub_nats::RawJson::from_text(pretty).expect("json");
                    body = serde_json::to_vec(&envelope).expect("an envelope");
                    laid_out = Some(name.clone());
                }
                _ => {}
            }
        }
        if envelope.aggregate_type == "CreditAccount"
            && envelope.aggregate_id == other
            && envelope.payload.text().contains("5000000")
            && edited.is_none()
        {
            let changed = envelope.payload.text().replace("5000000", "5000001");
            envelope.payload = hub_nats::RawJson::from_text(changed).expect("json");
            body = serde_json::to_vec(&envelope).expect("an envelope");
            edited = Some(name);
        }
        js.publish(format!("{copy_subject}.m"), body.into())
            .await
            .expect("published")
            .await
            .expect("acked");
    }
    let left_out = left_out.expect("the account's second event was in the stream");
    let edited = edited.expect("the other account's grant was in the stream");
    let laid_out = laid_out.expect("the account's third event was in the stream");

    // The stream itself verifies; the copy does not, and names the missing event.
    assert!(run_verify(&app, None).await.passed);
    let report = run_verify(&app, Some(copy)).await;
    assert!(!report.passed);
    let stream = found(&report, "stream");
    assert!(
        stream
            .iter()
            .any(|d| d.subject == left_out && d.detail.contains("missing")),
        "{stream:?}"
    );
    assert!(
        stream
            .iter()
            .any(|d| d.subject == edited && d.detail.contains("payload")),
        "{stream:?}"
    );
    // The same JSON in another layout is the same event.
    assert!(!stream.iter().any(|d| d.subject == laid_out), "{stream:?}");
    assert_eq!(stream.len(), 2, "{stream:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_above_its_price_is_found() {
    let app = spawn_app().await;
    let people = history(&app).await;
    verified(&app).await;
    let account = people[0].0.to_string();
    // A settlement written straight into the store, correctly chained, whose recorded cost is ten times what its tokens cost at its price version.
    let (sequence, payload): (i64, String) = sqlx::query_as(
        "SELECT sequence, payload::text FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1
            AND event_type = 'ReservationSettled'
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&account)
    .fetch_one(&app.pool)
    .await
    .expect("a settlement");
    let mut settled: Value = serde_json::from_str(&payload).expect("json");
    let cost = settled["ReservationSettled"]["usage"]["cost"]
        .as_i64()
        .expect("a cost");
    settled["ReservationSettled"]["usage"]["cost"] = json!(cost * 10 + 7);
    settled["ReservationSettled"]["charged"] = json!(cost * 10 + 7);
    settled["ReservationSettled"]["reserved"] = json!(cost * 10 + 7);
    settled["ReservationSettled"]["request_id"] = json!("forged-1");
    let head: i64 = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1",
    )
    .bind(&account)
    .fetch_one(&app.pool)
    .await
    .expect("the head");
    // Hashed the way the migration hashed the events stored before it (SQL's digest), so
    // the chain holds: only the charge check can tell.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, recorded_at, hash)
         SELECT 'CreditAccount', $1, $2, 'ReservationSettled', '1', $3::json, '{}'::json, n.t,
                sha256(p.hash || event_digest('CreditAccount', $1, 'ReservationSettled', '1',
                                              $3::json, '{}'::json, $2, n.t))
           FROM events p, (SELECT date_trunc('milliseconds', clock_timestamp()) AS t) n
          WHERE p.aggregate_type = 'CreditAccount' AND p.aggregate_id = $1
            AND p.sequence = $2 - 1",
    )
    .bind(&account)
    .bind(head + 1)
    .bind(settled.to_string())
    .execute(&app.pool)
    .await
    .expect("inserted");
    assert!(sequence < head + 1);

    let forged = format!("CreditAccount/{account}/{}", head + 1);
    let report = eventually(WAIT, "the forged charge to be checked", || async {
        let report = run_verify(&app, None).await;
        found(&report, "charges")
            .iter()
            .any(|d| d.subject == forged && d.detail.contains("costs"))
            .then_some(report)
    })
    .await;
    assert!(!report.passed);
    // The chain alone cannot tell: the forged event was hashed on insert like any other.
    assert!(
        found(&report, "hash_chain").is_empty(),
        "{:?}",
        report.discrepancies
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_from_the_api_verifies_offline_and_fails_with_one_bit_changed() {
    let app = spawn_app().await;
    let people = history(&app).await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let account = people[0].0;

    // Nothing is checkpointed yet: the proof is not there, and says why.
    let early = app
        .get(
            &format!("/api/audit/events/{account}/2/proof"),
            Some(&auditor),
        )
        .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let body: Value = early.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_checkpointed_yet");

    let checkpoint = checkpoint_once(&app.pool, &app.state.checkpoint_key, chrono::Utc::now())
        .await
        .expect("a checkpoint")
        .expect("something moved");
    assert!(checkpoint.tree_size >= 4, "{checkpoint:?}");
    // Nothing moved since: no second checkpoint.
    assert!(
        checkpoint_once(&app.pool, &app.state.checkpoint_key, chrono::Utc::now())
            .await
            .expect("a round")
            .is_none()
    );
    let listed: Value = app
        .get("/api/audit/checkpoints", Some(&auditor))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"][0]["id"], checkpoint.id);
    assert_eq!(listed["data"][0]["root"], checkpoint.root);

    let key: Value = app
        .get("/api/audit/public-key", Some(&auditor))
        .await
        .json()
        .await
        .expect("json");
    let public_key = key["public_key"].as_str().expect("a key").to_string();
    assert_eq!(key["key_id"], checkpoint.key_id);

    let response = app
        .get(
            &format!("/api/audit/events/{account}/2/proof"),
            Some(&auditor),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let proof: Proof = response.json().await.expect("a proof");
    assert_eq!(proof.event.sequence, 2);
    assert_eq!(proof.checkpoint.id, checkpoint.id);
    assert!(
        !proof.later_digests.is_empty(),
        "later events lead to the head"
    );

    let folder = std::env::temp_dir().join(format!("aihub-proof-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&folder).expect("a folder");
    let check = |proof: &Proof, name: &str| {
        let file = folder.join(name);
        std::fs::write(&file, serde_json::to_vec(proof).expect("json")).expect("written");
        hub_server::audit::verify_proof_file(&file, &public_key)
    };
    let verified = check(&proof, "good.json").expect("the proof verifies offline");
    assert!(verified.starts_with("verified"), "{verified}");

    let flip = |hex: &str| {
        let mut bytes: Vec<char> = hex.chars().collect();
        bytes[0] = if bytes[0] == '0' { '1' } else { '0' };
        bytes.into_iter().collect::<String>()
    };
    let mut bad = proof.clone();
    // One byte more in the stored text (the same JSON to a parser, not the same event).
    bad.event.payload.push(' ');
    assert!(check(&bad, "event.json").is_err(), "an edited event");
    let mut bad = proof.clone();
    if let Some(first) = bad.audit_path.first_mut() {
        *first = flip(first);
    }
    assert!(check(&bad, "path.json").is_err(), "an edited path");
    let mut bad = proof.clone();
    bad.checkpoint.signature = flip(&bad.checkpoint.signature);
    assert!(
        check(&bad, "signature.json").is_err(),
        "an edited signature"
    );
    let other_key = hub_app::evidence::CheckpointKey::from_seed(&[9; 32]).public_key_hex();
    let file = folder.join("good.json");
    assert!(
        hub_server::audit::verify_proof_file(&file, &other_key).is_err(),
        "another key"
    );
    let _ = std::fs::remove_dir_all(&folder);

    // The checkpoint was published to its stream, for anyone to keep.
    hub_app::evidence::checkpoints::publish_pending(&app.pool, &app.state.js, &app.state.topology)
        .await
        .expect("published");
    let stream = app
        .state
        .js
        .get_stream(app.state.topology.checkpoints_stream())
        .await
        .expect("the checkpoints stream");
    let message = stream
        .get_last_raw_message_by_subject(&app.state.topology.checkpoint_subject())
        .await
        .expect("the last checkpoint");
    let published: hub_app::evidence::SignedCheckpoint =
        serde_json::from_slice(&message.payload).expect("a checkpoint");
    assert_eq!(published, checkpoint);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_signs_what_moved_on_its_own() {
    let app = spawn_app_with(hub_server::Roles::ALL, |s| {
        s.audit.checkpoint_interval_ms = 200;
    })
    .await;
    let people = history(&app).await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let account = people[1].0;
    let proof: Proof = eventually(WAIT, "a checkpoint covering the account", || async {
        let response = app
            .get(
                &format!("/api/audit/events/{account}/1/proof"),
                Some(&auditor),
            )
            .await;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json().await.ok()
    })
    .await;
    let key = app.state.checkpoint_key.public_key();
    assert_eq!(hub_app::evidence::proof::verify(&proof, &key), Ok(()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_admins_read_the_evidence_routes() {
    let app = spawn_app().await;
    let (user, token) = register(&app, "eve@example.com").await;
    let key = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "k", "scopes": ["inference", "read"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(key.status(), StatusCode::CREATED);
    let key: Value = key.json().await.expect("json");
    let api_key = key["key"].as_str().expect("a key").to_string();
    let routes = [
        "/api/audit/checkpoints".to_string(),
        "/api/audit/public-key".to_string(),
        "/api/audit/verify".to_string(),
        format!("/api/audit/events/{user}/1/proof"),
    ];
    let analyst = app.token(Uuid::new_v4(), Role::Analyst);
    for route in &routes {
        for (who, credential) in [
            ("user", &token),
            ("analyst", &analyst),
            ("API key", &api_key),
        ] {
            assert_eq!(
                app.get(route, Some(credential)).await.status(),
                StatusCode::FORBIDDEN,
                "{who} on {route}"
            );
        }
        assert_eq!(
            app.get(route, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{route}"
        );
    }
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    assert_eq!(
        app.get("/api/audit/public-key", Some(&auditor))
            .await
            .status(),
        StatusCode::OK
    );
    let none = app.get("/api/audit/verify", Some(&auditor)).await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
