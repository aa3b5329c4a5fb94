//! The invariants under concurrency and crashes, over real Postgres and NATS.

use chrono::{Duration as Span, Utc};
use futures::StreamExt;
use hub_commands::{Buses, CommandError, CreditAccounts};
use hub_domain::{
    AccountId, CreditAccount, CreditCommand, CreditError, Credits, IdempotencyKey, RequestId,
};
use hub_nats::{EventEnvelope, Relay, RelayConfig};
use hub_projections::{ProjectionKind, Projector, ProjectorConfig};
use hub_server::Roles;
use hub_tests::{eventually, spawn_app_with, TestApp};
use rand::Rng;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn grant(key: &str, micros: i64) -> CreditCommand {
    CreditCommand::GrantCredits {
        key: IdempotencyKey::parse(key).expect("key"),
        amount: Credits::from_micros(micros),
        reason: "test".into(),
        granted_by: "test".into(),
    }
}

fn reserve(request: &str, micros: i64) -> CreditCommand {
    let now = Utc::now();
    CreditCommand::ReserveCredits {
        request_id: RequestId::parse(request).expect("request id"),
        amount: Credits::from_micros(micros),
        expires_at: now + Span::seconds(600),
        now,
        key: None,
    }
}

fn settle(request: &str, micros: i64) -> CreditCommand {
    CreditCommand::SettleReservation {
        request_id: RequestId::parse(request).expect("request id"),
        charge: Credits::from_micros(micros),
    }
}

/// A second "process": its own command bus and cache over the same database.
fn other_process(app: &TestApp) -> CreditAccounts {
    CreditAccounts::new(Buses::new(app.pool.clone(), 100, 1_000).bus())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_loaded_from_snapshot_and_tail_equals_a_full_fold() {
    let app = spawn_app_with(Roles::NONE, |s| {
        s.credits.snapshot_every = 7;
        s.credits.cache_accounts = 0;
    })
    .await;
    let credits = &app.state.credits;
    let account = AccountId(Uuid::new_v4());
    let store = credits.bus().store();
    let id = account.to_string();
    credits
        .credit(account, grant("seed", 1_000_000), "t")
        .await
        .expect("grant");
    let mut rng = rand::rng();
    for i in 0..300 {
        let request = format!("r{i}");
        let amount = rng.random_range(1..5_000);
        match credits
            .execute(account, reserve(&request, amount), "t")
            .await
        {
            Ok(_) => {
                let command = if rng.random_bool(0.8) {
                    settle(&request, rng.random_range(0..=amount))
                } else {
                    CreditCommand::ReleaseReservation {
                        request_id: RequestId::parse(&request).expect("id"),
                    }
                };
                credits
                    .execute(account, command, "t")
                    .await
                    .expect("resolve");
            }
            Err(CommandError::Rejected(CreditError::InsufficientCredits { .. })) => {}
            Err(other) => panic!("unexpected {other}"),
        }
        if i % 37 == 0 {
            let snapshot = store.load(&id).await.expect("load");
            let full = store.load_without_snapshot(&id).await.expect("fold");
            assert_eq!(snapshot.aggregate, full.aggregate, "after command {i}");
            assert_eq!(snapshot.sequence, full.sequence);
        }
    }
    // Snapshots are saved in the background: wait for the last one to land.
    let snapshot = eventually(Duration::from_secs(20), "the last snapshot", || async {
        let snapshot = store.load(&id).await.expect("load");
        (snapshot.snapshot_sequence > 0 && snapshot.sequence - snapshot.snapshot_sequence < 7 + 2)
            .then_some(snapshot)
    })
    .await;
    let full = store.load_without_snapshot(&id).await.expect("fold");
    assert_eq!(snapshot.aggregate, full.aggregate);
    // The postgres-es 0.5.0 bug would show here: a snapshot that double-applied events lets an
    // overdraft through. Reserving one more than available must fail.
    let available = full.aggregate.available().micros();
    let refused = credits
        .execute(account, reserve("overdraft", available + 1), "t")
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(
                CreditError::InsufficientCredits { .. }
            ))
        ),
        "{refused:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_reservations_from_two_processes_never_overcommit() {
    let app = spawn_app_with(Roles::ALL, |_| {}).await;
    let process_a = app.state.credits.clone();
    let process_b = Arc::new(other_process(&app));
    let account = AccountId(Uuid::new_v4());
    let funded = 1_000_000;
    process_a
        .credit(account, grant("fund", funded), "t")
        .await
        .expect("grant");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let bus = if i % 2 == 0 {
            process_a.clone()
        } else {
            process_b.clone()
        };
        let amount = rand::rng().random_range(1..=20_000);
        tasks.spawn(async move {
            let request = format!("req-{i}");
            let outcome = bus.execute(account, reserve(&request, amount), "t").await;
            (request, amount, outcome)
        });
    }
    let mut reserved = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (request, amount, outcome) = joined.expect("task");
        match outcome {
            Ok(_) => reserved.push((request, amount)),
            Err(CommandError::Rejected(CreditError::InsufficientCredits { .. })) => {}
            Err(other) => panic!("a reservation failed with {other} (conflicts must be retried)"),
        }
    }
    let total: i64 = reserved.iter().map(|(_, a)| a).sum();
    assert!(total <= funded, "over-committed: {total} > {funded}");
    assert!(!reserved.is_empty());

    // Settle them all, concurrently, for random charges.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (request, amount)) in reserved.iter().cloned().enumerate() {
        let bus = if i % 2 == 0 {
            process_a.clone()
        } else {
            process_b.clone()
        };
        tasks.spawn(async move {
            let charge = rand::rng().random_range(0..=amount);
            bus.execute(account, settle(&request, charge), "t")
                .await
                .map(|_| charge)
        });
    }
    let mut charged = 0;
    while let Some(joined) = tasks.join_next().await {
        charged += joined.expect("task").expect("settled");
    }

    let folded = app
        .state
        .credits
        .bus()
        .store()
        .load_without_snapshot(&account.to_string())
        .await
        .expect("fold");
    assert_eq!(folded.aggregate.balance().micros(), funded - charged);
    assert_eq!(folded.aggregate.reserved().micros(), 0);
    assert_balances_match_ledger_and_events(&app).await;
    app.stop().await;
}

/// Wait for the projections to reach `version` for every account, then check that each
/// balance equals the sum of its ledger rows and a fold of its events.
async fn assert_balances_match_ledger_and_events(app: &TestApp) {
    let accounts: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT aggregate_id::uuid FROM events")
        .fetch_all(&app.pool)
        .await
        .expect("accounts");
    let store = app.state.credits.bus().store();
    for account in accounts {
        let folded = store
            .load_without_snapshot(&account.to_string())
            .await
            .expect("fold");
        let version = i64::try_from(folded.sequence).expect("fits");
        let row = eventually(Duration::from_secs(20), "balances caught up", || async {
            let row = sqlx::query("SELECT balance_micros, reserved_micros, version FROM balances WHERE account_id = $1")
                .bind(account)
                .fetch_optional(&app.pool)
                .await
                .ok()??;
            (row.try_get::<i64, _>("version").ok()? == version).then_some(row)
        })
        .await;
        let balance: i64 = row.try_get("balance_micros").expect("balance");
        assert_eq!(
            balance,
            folded.aggregate.balance().micros(),
            "balances = fold for {account}"
        );
        assert_eq!(
            row.try_get::<i64, _>("reserved_micros").expect("reserved"),
            folded.aggregate.reserved().micros()
        );
        let ledger_sum = eventually(Duration::from_secs(20), "ledger caught up", || async {
            let sum: Option<i64> = sqlx::query_scalar(
                "SELECT sum(amount_micros)::bigint FROM ledger WHERE account_id = $1",
            )
            .bind(account)
            .fetch_one(&app.pool)
            .await
            .ok()?;
            (sum.unwrap_or(0) == balance).then_some(sum.unwrap_or(0))
        })
        .await;
        assert_eq!(ledger_sum, balance, "ledger sum = balance for {account}");
    }
}

/// Every message of the events stream, in stream order.
async fn read_stream(app: &TestApp, expected: usize) -> Vec<(String, EventEnvelope)> {
    let js = &app.state.js;
    let mut stream = js
        .get_stream(app.state.topology.events_stream())
        .await
        .expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream holds every event")
            .expect("a message")
            .expect("no error");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string())
            .expect("Nats-Msg-Id");
        out.push((
            id,
            serde_json::from_slice(&message.payload).expect("envelope"),
        ));
    }
    // Nothing beyond what was expected.
    let held = stream.info().await.expect("stream info").state.messages;
    assert_eq!(
        held,
        u64::try_from(expected).expect("fits"),
        "the stream holds as many messages as events"
    );
    out
}

/// Waits until the events stream no longer remembers the ids of the messages stored last,
/// the duplicate window of the newest one having passed. The newest message is sent again
/// under an expectation that can never hold (`Nats-Expected-Last-Sequence`): the server
/// checks ids first, so while it remembers the id the answer is "duplicate", and once it
/// forgot it the answer is "wrong last sequence". Nothing is ever stored.
async fn duplicate_window_passed(app: &TestApp) {
    use async_nats::jetstream::context::PublishErrorKind;
    /// No stream ever reaches this sequence: the probe is always refused.
    const UNREACHABLE_SEQUENCE: i64 = i64::MAX;
    let js = &app.state.js;
    eventually(
        Duration::from_secs(30),
        "the duplicate window to pass",
        || async {
            let mut stream = js
                .get_stream(app.state.topology.events_stream())
                .await
                .ok()?;
            let newest = stream.info().await.ok()?.state.last_sequence;
            let message = stream.get_raw_message(newest).await.ok()?;
            let mut headers = message.headers.clone();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                UNREACHABLE_SEQUENCE.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
                .await
                .ok()?
                .await;
            match ack {
                Ok(ack) => {
                    assert!(ack.duplicate, "the probe was stored ({ack:?})");
                    None
                }
                Err(err) => (err.kind() == PublishErrorKind::WrongLastSequence).then_some(()),
            }
        },
    )
    .await;
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_projector_crashes_lose_nothing_and_duplicate_nothing() {
    // No background roles: the test starts and kills relays and projectors itself. A
    // one-second duplicate window proves exactly-once does not lean on the server's dedupe.
    let app = spawn_app_with(Roles::NONE, |s| s.nats.duplicate_window_s = 1).await;
    let credits = app.state.credits.clone();
    let accounts: Vec<AccountId> = (0..50).map(|_| AccountId(Uuid::new_v4())).collect();
    let mut writers = tokio::task::JoinSet::new();
    for (w, chunk) in accounts.chunks(5).enumerate() {
        let credits = credits.clone();
        let chunk = chunk.to_vec();
        writers.spawn(async move {
            for i in 0..200 {
                for account in &chunk {
                    credits
                        .credit(*account, grant(&format!("w{w}-{i}"), 1 + i), "t")
                        .await
                        .expect("grant");
                }
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let total = usize::try_from(count(&app, "SELECT count(*) FROM events").await).expect("count");
    assert_eq!(total, 50 * 200 + 50, "10,000 grants and 50 openings");

    let relay = || {
        Relay::new(
            app.pool.clone(),
            app.settings.database.url.clone(),
            app.state.js.clone(),
            app.state.topology.clone(),
            RelayConfig {
                batch_max: 256,
                ..RelayConfig::default()
            },
        )
    };
    // Crash the relay part-way: abort it at whatever await it is in.
    let first = tokio::spawn(relay().run(std::future::pending()));
    eventually(Duration::from_secs(60), "a third relayed", || async {
        let left = count(&app, "SELECT count(*) FROM event_outbox").await;
        (usize::try_from(left).ok()? < total * 2 / 3).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    assert!(
        count(&app, "SELECT count(*) FROM event_outbox").await > 0,
        "crashed mid-way"
    );
    // Once the server has forgotten the ids the crashed relay sent, run two relays at once.
    duplicate_window_passed(&app).await;
    let second = tokio::spawn(relay().run(std::future::pending()));
    let third = tokio::spawn(relay().run(std::future::pending()));
    eventually(Duration::from_secs(120), "outbox drained", || async {
        (count(&app, "SELECT count(*) FROM event_outbox").await == 0).then_some(())
    })
    .await;
    second.abort();
    third.abort();

    let messages = read_stream(&app, total).await;
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (id, envelope) in &messages {
        assert!(ids.insert(id.clone()), "{id} appears twice");
        assert_eq!(id, &envelope.message_id());
        let expected = next.entry(envelope.aggregate_id.clone()).or_insert(1);
        assert_eq!(
            envelope.sequence, *expected,
            "aggregate {} out of order",
            envelope.aggregate_id
        );
        *expected += 1;
    }
    assert_eq!(ids.len(), total);

    // Kill the balances projector mid-batch, restart it, and check the read model.
    let projector = |kind| {
        Projector::new(
            app.pool.clone(),
            app.settings.database.url.clone(),
            app.state.js.clone(),
            app.state.topology.clone(),
            kind,
            ProjectorConfig {
                batch_max: 100,
                ..ProjectorConfig::default()
            },
        )
    };
    let last = messages.len() as u64;
    let doomed = tokio::spawn(projector(ProjectionKind::Balances).run(std::future::pending()));
    eventually(Duration::from_secs(60), "projection part-way", || async {
        let at = hub_projections::checkpoint(&app.pool, ProjectionKind::Balances)
            .await
            .ok()?;
        (at > 0).then_some(())
    })
    .await;
    doomed.abort();
    let _ = doomed.await;
    let at = hub_projections::checkpoint(&app.pool, ProjectionKind::Balances)
        .await
        .expect("checkpoint");
    assert!(at < last, "killed before the end ({at} of {last})");
    let revived = tokio::spawn(projector(ProjectionKind::Balances).run(std::future::pending()));
    let ledger = tokio::spawn(projector(ProjectionKind::Ledger).run(std::future::pending()));
    assert_balances_match_ledger_and_events(&app).await;

    // Replay rebuilds tables equal to the live ones.
    let before = table_dump(&app).await;
    for kind in [ProjectionKind::Balances, ProjectionKind::Ledger] {
        let stats = hub_projections::replay(
            &app.pool,
            &app.settings.database.url,
            &app.state.js,
            &app.state.topology,
            kind,
            false,
        )
        .await
        .expect("replay");
        assert_eq!(stats.messages, last);
    }
    assert_eq!(
        table_dump(&app).await,
        before,
        "replayed tables equal the live ones"
    );
    // And the live projectors resume after a replay.
    credits
        .credit(accounts[0], grant("after-replay", 5), "t")
        .await
        .expect("grant");
    let relay_again = tokio::spawn(relay().run(std::future::pending()));
    assert_balances_match_ledger_and_events(&app).await;
    relay_again.abort();
    revived.abort();
    ledger.abort();
    app.stop().await;
}

async fn table_dump(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let balances =
        sqlx::query_scalar("SELECT row_to_json(b)::text FROM balances b ORDER BY account_id")
            .fetch_all(&app.pool)
            .await
            .expect("balances");
    let ledger = sqlx::query_scalar(
        "SELECT row_to_json(l)::text FROM ledger l ORDER BY account_id, sequence",
    )
    .fetch_all(&app.pool)
    .await
    .expect("ledger");
    (balances, ledger)
}

/// `aihub replay` pauses the live projector from a session of its own. Killed with SIGKILL,
/// it never clears the pause, but its session ends; the live projector must then carry on.
/// Balances, ledger and usage share one projector: while balances is paused, the other two
/// must go on, and balances must rejoin and catch up once the pause is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_left_by_a_killed_replay_does_not_stop_the_live_projector() {
    let app = spawn_app_with(Roles::ALL, |_| {}).await;
    let credits = app.state.credits.clone();
    let account = AccountId(Uuid::new_v4());
    let balance = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT balance_micros FROM balances WHERE account_id = $1")
            .bind(account.0)
            .fetch_optional(&pool)
            .await
            .expect("balance")
    };
    credits
        .credit(account, grant("before-pause", 10), "t")
        .await
        .expect("grant");
    eventually(Duration::from_secs(10), "the first grant", || async {
        (balance(app.pool.clone()).await == Some(10)).then_some(())
    })
    .await;

    // A "replay" takes the pause the way `hub_projections::replay` does.
    let mut replay_session =
        <sqlx::PgConnection as sqlx::Connection>::connect(&app.settings.database.url)
            .await
            .expect("connect");
    sqlx::query(
        "UPDATE projection_checkpoints SET paused = true, paused_by = pg_backend_pid()
          WHERE projection = 'balances'",
    )
    .execute(&mut replay_session)
    .await
    .expect("pause");
    credits
        .credit(account, grant("while-paused", 5), "t")
        .await
        .expect("grant");
    // While its owner lives, the pause holds: the ledger moves on, balances do not.
    eventually(Duration::from_secs(10), "the ledger entry", || async {
        let n = count(&app, "SELECT count(*) FROM ledger").await;
        (n == 2).then_some(())
    })
    .await;
    // The entry was written by a batch that left balances out (a batch applies all its
    // projections in one transaction, or none): the pause held for it.
    assert_eq!(balance(app.pool.clone()).await, Some(10), "paused");
    let ledger_at = hub_projections::checkpoint(&app.pool, ProjectionKind::Ledger)
        .await
        .expect("ledger checkpoint");
    let balances_at = hub_projections::checkpoint(&app.pool, ProjectionKind::Balances)
        .await
        .expect("balances checkpoint");
    assert!(
        balances_at < ledger_at,
        "balances stayed behind ({balances_at} < {ledger_at})"
    );

    // The replay dies: its session ends without clearing the pause.
    drop(replay_session);
    eventually(
        Duration::from_secs(10),
        "balances after the replay died",
        || async { (balance(app.pool.clone()).await == Some(15)).then_some(()) },
    )
    .await;
    app.stop().await;
}

/// Concurrent commands are written together (group commit). One that lost a race (its
/// sequence taken by another process) must fail alone: every other command of its batch is
/// written, each aggregate's events keep their order in the outbox, and nothing is written
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_loses_a_race_fails_alone_in_a_group_commit() {
    let app = spawn_app_with(Roles::NONE, |_| {}).await;
    let store = Arc::new(Buses::new(app.pool.clone(), 1_000, 0).store::<CreditAccount>());
    let accounts: Vec<String> = (0..100).map(|_| Uuid::new_v4().to_string()).collect();
    let opened = || hub_domain::CreditEvent::AccountOpened {};
    let granted = |key: &str| hub_domain::CreditEvent::CreditsGranted {
        key: IdempotencyKey::parse(key).expect("key"),
        amount: Credits::from_micros(5),
        reason: "test".into(),
        granted_by: "test".into(),
        balance_after: Credits::from_micros(5),
        reserved_after: Credits::ZERO,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, account) in accounts.iter().enumerate() {
        // Every account gets a two-event command at sequences 1-2; every fourth one also
        // gets a rival command for sequence 1, as a second process would.
        let writers: &[&str] = if i % 4 == 0 { &["a", "rival"] } else { &["a"] };
        for writer in writers {
            let store = store.clone();
            let account = account.clone();
            let events = if *writer == "a" {
                vec![opened(), granted("g1")]
            } else {
                vec![opened()]
            };
            let writer = writer.to_string();
            tasks.spawn(async move {
                let mut loaded = hub_commands::Loaded {
                    aggregate_id: account.clone(),
                    aggregate: CreditAccount::default(),
                    sequence: 0,
                    snapshot_sequence: 0,
                    head_hash: hub_commands::chain::GENESIS,
                };
                let metadata = HashMap::from([("writer".to_string(), writer.clone())]);
                let result = store.append(events, &mut loaded, &metadata).await;
                (account, writer, result.map(|e| e.len()))
            });
        }
    }
    let mut winners: HashMap<String, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (account, writer, result) = joined.expect("task");
        match result {
            Ok(_) => {
                let previous = winners.insert(account.clone(), writer);
                assert!(
                    previous.is_none(),
                    "two writers won sequence 1 of {account}"
                );
            }
            Err(hub_commands::StoreError::Conflict) => {}
            Err(other) => panic!("{writer} on {account} failed with {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        accounts.len(),
        "every account has one winner"
    );

    for account in &accounts {
        let rows = sqlx::query(
            "SELECT e.sequence, e.metadata ->> 'writer' AS writer
               FROM events e WHERE e.aggregate_id = $1 ORDER BY sequence",
        )
        .bind(account)
        .fetch_all(&app.pool)
        .await
        .expect("events");
        let expected = if winners[account] == "a" { 2 } else { 1 };
        assert_eq!(
            rows.len(),
            expected,
            "{account} has the winner's events only"
        );
        for row in &rows {
            let writer: String = row.get("writer");
            assert_eq!(writer, winners[account]);
        }
        let outbox: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM event_outbox WHERE aggregate_id = $1 ORDER BY id",
        )
        .bind(account)
        .fetch_all(&app.pool)
        .await
        .expect("outbox");
        let in_order: Vec<i64> = (1..=i64::try_from(expected).expect("small")).collect();
        assert_eq!(
            outbox, in_order,
            "{account}'s events enter the outbox in order"
        );
    }
    app.stop().await;
}

/// The event writer keeps its connections while busy, and the pool no longer pings a
/// connection it hands out unless it sat idle: after Postgres drops every connection (a
/// restart, a failover), a command still succeeds, written once, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_recover_after_postgres_drops_every_connection() {
    let app = spawn_app_with(Roles::NONE, |s| {
        s.database.max_connections = 8;
    })
    .await;
    let credits = &app.state.credits;
    let account = AccountId(Uuid::new_v4());
    credits
        .credit(account, grant("seed", 1_000_000), "t")
        .await
        .expect("grant");
    // Warm the pool and the writers.
    let warm = (0..16).map(|i| credits.execute(account, reserve(&format!("w{i}"), 10), "t"));
    for result in futures::future::join_all(warm).await {
        result.expect("reserve");
    }

    let dropped = terminate_every_other_session(&app).await;
    assert!(dropped > 0, "the hub had connections to drop");

    // The writer finds its connections dead and writes on new ones: no command fails.
    for i in 0..20 {
        credits
            .execute(account, reserve(&format!("after{i}"), 10), "t")
            .await
            .expect("every command after recovery");
    }
    let full = credits
        .bus()
        .store()
        .load_without_snapshot(&account.to_string())
        .await
        .expect("fold");
    assert_eq!(full.aggregate.reserved().micros(), (16 + 20) * 10);
}

#[tokio::test]
async fn api_reads_after_postgres_drops_every_connection_fail_at_most_once() {
    // The API alone: nothing else in the process meets a dead connection first.
    let api_only = Roles {
        http: true,
        ..Roles::NONE
    };
    let app = spawn_app_with(api_only, |s| {
        s.database.max_connections = 8;
    })
    .await;
    let user = Uuid::new_v4();
    let token = app.token(user, hub_domain::Role::User);
    let read = || app.get("/api/credits/balance", Some(&token));
    // Fill the pool: eight reads at once take eight connections, all idle afterwards.
    let warm = futures::future::join_all((0..8).map(|_| read())).await;
    for response in warm {
        assert_eq!(response.status(), 200, "a read before the restart");
    }
    let dropped = terminate_every_other_session(&app).await;
    assert!(dropped >= 2, "the hub had connections to drop: {dropped}");

    // The first read to meet a dead connection is told to retry (503, not 500); the pool
    // then pings the other connections opened before, so no one else meets one.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(read().await.status().as_u16());
    }
    let failed: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    assert!(
        failed.len() <= 1 && failed.iter().all(|s| *s == 503),
        "reads after the restart: {statuses:?}"
    );
}

/// What a Postgres restart does to the hub: end every session on the test's database but
/// the one asking. Returns how many were ended.
async fn terminate_every_other_session(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&app.pool)
    .await
    .expect("terminate")
}
