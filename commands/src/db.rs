use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::time::Duration;

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
/// comes back. Here only a connection that sat idle for [`PING_IF_IDLE_FOR`] is pinged
/// (one left over from before a Postgres restart is found then); one in steady use
/// answered its last ping moments ago.
pub fn connect_lazy(settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Apply every pending migration. Safe to run from several processes: sqlx takes an
/// advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
