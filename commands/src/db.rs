//! Connection pools, the sorting of lost connections, and migrations. Depends on nothing
//! else in this crate (the store's errors ask it whether a connection was lost).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The migrations of every table the hub owns, from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Pool settings, passed explicitly rather than trusting sqlx's defaults.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// A pooled connection idle longer than this is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// Connect lazily: the process starts even when Postgres is down, and `/ready` says so.
///
/// sqlx pings every connection it hands out by default: one more round trip to Postgres
/// for every query run on the pool, on top of the ping it always sends when a connection
/// comes back. Here a connection is pinged only when it sat idle for [`PING_IF_IDLE_FOR`],
/// or when it was opened before a statement found the server gone
/// ([`note_connection_lost`]) less than that long ago: after a Postgres restart the first
/// caller to meet a dead connection gets an error, and the pool's other dead ones are
/// weeded out before anyone else uses them. One in steady use answered its last ping
/// (sqlx's, on release) moments ago.
pub fn connect_lazy(settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR || opened_before_a_recent_loss(meta.age) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Whether `err` says the connection or the server is gone: an I/O error, a connection
/// exception (SQLSTATE class 08), or the server ending the session (57P01–57P03: an
/// administrator, a crash, a restart).
pub fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            session_ended(err) || db.code().is_some_and(|c| c.starts_with("08"))
        }
        _ => false,
    }
}

/// The server ended the session (SQLSTATE 57P01–57P03: an administrator, a crash, a
/// restart) and said so instead of answering the statement, which was therefore not
/// committed.
pub(crate) fn session_ended(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// When `err` is a [`connection_lost`], remember when: every pool of this process then
/// pings the connections it opened before now, for [`PING_IF_IDLE_FOR`]. (Per process,
/// not per pool: a restart ends every session to the server. A false alarm costs a ping
/// per checkout for ten seconds.) Called wherever a database error is sorted.
pub fn note_connection_lost(err: &sqlx::Error) {
    if connection_lost(err) {
        let now = clock_ms();
        LOST_AT_MS.fetch_max(now, Ordering::Relaxed);
    }
}

/// Milliseconds on [`clock_ms`] at which a connection was last found lost; 0: never.
static LOST_AT_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since this process first asked, from 1 (so 0 means "never").
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// A connection of this `age` was opened no later than a loss noted under
/// [`PING_IF_IDLE_FOR`] ago. Any older loss is covered by the idle rule: a dead connection
/// not checked out since then has been idle that long.
fn opened_before_a_recent_loss(age: Duration) -> bool {
    let lost_at = LOST_AT_MS.load(Ordering::Relaxed);
    if lost_at == 0 {
        return false;
    }
    let now = clock_ms();
    let window = u64::try_from(PING_IF_IDLE_FOR.as_millis()).unwrap_or(u64::MAX);
    let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    now.saturating_sub(lost_at) < window && now.saturating_sub(age) <= lost_at
}

/// Apply every pending migration. Safe to run from several processes: sqlx takes an
/// advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
