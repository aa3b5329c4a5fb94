//! An isolated environment for one test or one benchmark run: a fresh Postgres database
//! (created and migrated) and NATS stream and subject prefixes of its own, applied to a copy
//! of the caller's [`Settings`]; and the cleanup that removes them again.
//!
//! The black-box tests (`hub-tests`) and the benchmarks (`hub-bench`) both run the real hub
//! beside other runs on shared servers. Both need the same thing, so it is written once here:
//! only the names differ ([`Prefixes::TEST`], [`Prefixes::BENCH`]).

use futures::TryStreamExt;
use hub_app::Settings;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// Hex digits of the random tag in every name: 48 bits, unique enough among the runs that
/// share a server.
const TAG_HEX_DIGITS: usize = 12;
/// Connections the migration uses: it runs one statement at a time.
const MIGRATION_CONNECTIONS: u32 = 2;
/// How long the migration waits for a connection.
const MIGRATION_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cleanup waits to reach NATS; it does not retry (a Drop must not hang).
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most [`Sandbox::destroy_blocking`] takes before giving up.
const BLOCKING_CLEANUP_MAX: Duration = Duration::from_secs(60);

/// How a sandbox's names begin; a random tag follows each prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    /// Of the database's name (lowercase letters, digits and `_` only).
    pub database: &'static str,
    /// Of the stream names: `<streams><tag>_HUB_EVENTS`.
    pub streams: &'static str,
    /// Of the subjects: `<subjects><tag>.events...` (one subject token).
    pub subjects: &'static str,
}

impl Prefixes {
    /// The black-box tests: `aihub_test_<tag>`, `T<tag>_*`, `t<tag>.*`.
    pub const TEST: Prefixes = Prefixes {
        database: "aihub_test_",
        streams: "T",
        subjects: "t",
    };
    /// The benchmarks: `aihub_bench_<tag>`, `BENCH<tag>_*`, `bench<tag>.*`.
    pub const BENCH: Prefixes = Prefixes {
        database: "aihub_bench_",
        streams: "BENCH",
        subjects: "bench",
    };
}

/// Why a sandbox could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("database url {0} has no scheme (postgres://...)")]
    BadUrl(String),
    #[error("could not connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not create database {name}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the sandbox's settings are invalid")]
    Settings(#[source] hub_app::config::ConfigError),
    #[error("migrations failed on database {name}")]
    Migrate {
        name: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("could not drop database {name}")]
    DropDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not connect to NATS at {url} to delete the streams")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("could not list the streams")]
    ListStreams(#[source] async_nats::jetstream::context::StreamsError),
    #[error("could not delete stream {name}")]
    DeleteStream {
        name: String,
        #[source]
        source: async_nats::jetstream::context::DeleteStreamError,
    },
    #[error("the cleanup did not finish: {0}")]
    Cleanup(String),
}

/// A database and stream names of one run's own. [`Sandbox::settings`] points at them;
/// nothing is removed until [`Sandbox::destroy`] (or one of its halves) is called, so a
/// caller can keep them (`aihub-bench --keep`).
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The caller's settings with the database's URL and the stream and subject prefixes
    /// replaced; the caller may change the rest (pool size, roles' tuning).
    pub settings: Settings,
    database: String,
    admin_url: String,
    /// Captured at creation: what [`Sandbox::destroy`] removes, whatever the caller later
    /// does to `settings`.
    nats_url: String,
    stream_prefix: String,
}

impl Sandbox {
    /// Creates and migrates database `<prefixes.database><tag>` on the server of
    /// `admin_database_url` (a database the caller may `CREATE DATABASE` from, usually
    /// `postgres`), and returns `base` pointed at it with stream prefix
    /// `<prefixes.streams><tag>_` and subject prefix `<prefixes.subjects><tag>`. The
    /// streams themselves are created by the hub when it starts.
    pub async fn create(
        base: &Settings,
        admin_database_url: &str,
        prefixes: Prefixes,
    ) -> Result<Sandbox, SandboxError> {
        let id = Uuid::new_v4().simple().to_string();
        let tag = id.get(..TAG_HEX_DIGITS).unwrap_or(&id);
        let database = format!("{}{tag}", prefixes.database);
        let mut settings = base.clone();
        settings.database.url = with_database(admin_database_url, &database)?;
        settings.nats.stream_prefix = format!("{}{tag}_", prefixes.streams);
        settings.nats.subject_prefix = format!("{}{tag}", prefixes.subjects);
        // Rate limits (when a test turns them on) in keys of this sandbox alone; they lapse
        // within a minute of the last request.
        settings.rate_limits.key_prefix = format!("aihub-{}{tag}", prefixes.subjects);
        settings.validate().map_err(SandboxError::Settings)?;

        let mut admin = connect(admin_database_url).await?;
        // The name is ours (a prefix and hex digits), never input.
        let created = sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
        created.map_err(|source| SandboxError::CreateDatabase {
            name: database.clone(),
            source,
        })?;

        let sandbox = Sandbox {
            nats_url: settings.nats.url.clone(),
            stream_prefix: settings.nats.stream_prefix.clone(),
            settings,
            database,
            admin_url: admin_database_url.to_string(),
        };
        if let Err(err) = sandbox.migrate().await {
            let _ = sandbox.drop_database().await;
            return Err(err);
        }
        Ok(sandbox)
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The database's URL on its server (also in `settings.database.url`).
    pub fn database_url(&self) -> String {
        self.settings.database.url.clone()
    }

    async fn migrate(&self) -> Result<(), SandboxError> {
        let pool = hub_commands::db::connect_lazy(&hub_commands::db::PoolSettings {
            url: self.settings.database.url.clone(),
            max_connections: MIGRATION_CONNECTIONS,
            acquire_timeout: MIGRATION_ACQUIRE_TIMEOUT,
        })
        .map_err(|source| SandboxError::Connect {
            url: redact(&self.settings.database.url),
            source,
        })?;
        let migrated = hub_commands::db::migrate(&pool).await;
        pool.close().await;
        migrated.map_err(|source| SandboxError::Migrate {
            name: self.database.clone(),
            source,
        })
    }

    /// Drops the database and deletes every stream (with its consumers) whose name starts
    /// with the sandbox's stream prefix.
    pub async fn destroy(&self) -> Result<(), SandboxError> {
        let dropped = self.drop_database().await;
        let deleted = self.delete_streams().await;
        dropped.and(deleted.map(|_| ()))
    }

    /// [`Sandbox::destroy`] from synchronous code, such as a `Drop` that may itself run
    /// inside a Tokio runtime: the cleanup runs on a thread and runtime of its own, and
    /// this waits for it (at most [`BLOCKING_CLEANUP_MAX`]).
    pub fn destroy_blocking(&self) -> Result<(), SandboxError> {
        let sandbox = self.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SandboxError::Cleanup(format!("no runtime: {e}")))?;
            runtime.block_on(async move {
                tokio::time::timeout(BLOCKING_CLEANUP_MAX, sandbox.destroy())
                    .await
                    .map_err(|_| {
                        SandboxError::Cleanup(format!(
                            "still running after {}s",
                            BLOCKING_CLEANUP_MAX.as_secs()
                        ))
                    })?
            })
        });
        cleanup
            .join()
            .map_err(|_| SandboxError::Cleanup("the cleanup thread panicked".into()))?
    }

    /// Drops the database, ending the sessions still connected to it.
    pub async fn drop_database(&self) -> Result<(), SandboxError> {
        let mut admin = connect(&self.admin_url).await?;
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
        dropped
            .map(|_| ())
            .map_err(|source| SandboxError::DropDatabase {
                name: self.database.clone(),
                source,
            })
    }

    /// Deletes the streams whose names start with the sandbox's stream prefix (deleting a
    /// stream deletes its consumers); their names.
    pub async fn delete_streams(&self) -> Result<Vec<String>, SandboxError> {
        let client = async_nats::ConnectOptions::new()
            .name("aihub-sandbox-cleanup")
            .connection_timeout(NATS_CONNECT_TIMEOUT)
            .connect(self.nats_url.as_str())
            .await
            .map_err(|source| SandboxError::Nats {
                url: self.nats_url.clone(),
                source,
            })?;
        let js = async_nats::jetstream::new(client);
        let names: Vec<String> = js
            .stream_names()
            .try_filter(|name| std::future::ready(name.starts_with(&self.stream_prefix)))
            .try_collect()
            .await
            .map_err(SandboxError::ListStreams)?;
        for name in &names {
            js.delete_stream(name)
                .await
                .map_err(|source| SandboxError::DeleteStream {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(names)
    }
}

async fn connect(url: &str) -> Result<PgConnection, SandboxError> {
    PgConnection::connect(url)
        .await
        .map_err(|source| SandboxError::Connect {
            url: redact(url),
            source,
        })
}

/// `url` naming database `name` instead (query parameters kept).
pub fn with_database(url: &str, name: &str) -> Result<String, SandboxError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|at| at + 3)
        .ok_or_else(|| SandboxError::BadUrl(redact(url)))?;
    let authority_end = base
        .get(scheme_end..)
        .and_then(|rest| rest.find('/'))
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", base.get(..authority_end).unwrap_or(base));
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// A URL fit for logs and errors (see [`hub_adapters::secrets::redact_url`]).
pub fn redact(url: &str) -> String {
    hub_adapters::secrets::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/aihub", "x")
                .ok()
                .as_deref(),
            Some("postgres://u:p@h:5432/x")
        );
        assert_eq!(
            with_database("postgres://h/aihub?sslmode=disable", "x")
                .ok()
                .as_deref(),
            Some("postgres://h/x?sslmode=disable")
        );
        assert_eq!(
            with_database("postgresql://h:1", "x").ok().as_deref(),
            Some("postgresql://h:1/x")
        );
        assert!(with_database("h/aihub", "x").is_err());
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("nats://s3cr3t-token@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn prefixes_leave_room_for_a_valid_subject_token_and_database_name() {
        for prefixes in [Prefixes::TEST, Prefixes::BENCH] {
            assert!(prefixes
                .database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!prefixes.streams.is_empty(), "never every stream");
            assert!(!prefixes.subjects.contains(['.', '*', '>', ' ']));
        }
    }
}
