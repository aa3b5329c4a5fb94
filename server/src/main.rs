//! `aihub`: every role of Smart AI Hub in one binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hub_adapters::jwt::Jwt;
use hub_app::analytics::events::RawEventsFilter;
use hub_app::queries::usage::RawFilter;
use hub_domain::Role;
use hub_projections::ProjectionKind;
use hub_server::{connect, telemetry, Application, Roles, Settings};
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "aihub",
    version,
    about = "Smart AI Hub: a credit-metered AI gateway"
)]
struct Cli {
    /// Settings file (default: ./aihub.toml if present). Environment `AIHUB__SECTION__KEY` overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Relay committed events from Postgres to JetStream.
    Relay,
    /// Run the projections (read models).
    Project,
    /// Run inference workers: pull commands, call providers, settle.
    Worker {
        /// Do not apply settlements in this process (another process's settler does).
        #[arg(long)]
        no_settler: bool,
    },
    /// Apply database migrations.
    Migrate,
    /// Rebuild a projection from the start of the stream.
    Replay {
        /// `balances`, `ledger`, `users`, `usage`, `payments` or `promos`.
        projection: ProjectionKind,
        /// Build the tables as they stood at this time (RFC 3339 or a date) into `--into`
        /// instead: messages JetStream stored after it are left out.
        #[arg(long, requires = "into")]
        until: Option<String>,
        /// A schema of its own for the tables (created; never `public`). The live tables,
        /// checkpoint and projector are not touched.
        #[arg(long)]
        into: Option<String>,
        /// Rebuild the projection's tables in an `--into` schema that already holds relations.
        #[arg(long, requires = "into")]
        replace: bool,
    },
    /// Every role in one process (migrations included): the laptop default.
    All,
    /// Print a signed access token for a user id and role.
    Token {
        #[arg(long)]
        user: Option<Uuid>,
        /// user, admin, analyst or auditor (repeat for several).
        #[arg(long, default_value = "user")]
        role: Vec<Role>,
        /// Lifetime in seconds (default: auth.token_ttl_s).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Write the events HUB_EVENTS stored in a time range, one JSON object per line
    /// (stream order; ends at --to or at the stream's last event when the command began).
    Events {
        /// RFC 3339 time or date (UTC midnight), inclusive: the JetStream timestamp.
        #[arg(long)]
        from: String,
        /// RFC 3339 time or date, exclusive.
        #[arg(long)]
        to: String,
        /// Only this event type (`CreditsGranted`, `ReservationSettled`, ...).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only the events of the aggregates with this id (a user's account and profile).
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value = "ndjson")]
        format: EventsFormat,
    },
    /// Usage analytics.
    Usage {
        #[command(subcommand)]
        which: UsageCommand,
    },
    /// Auditors' checks (docs/audit.md).
    Audit {
        #[command(subcommand)]
        which: AuditCommand,
    },
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        which: AdminCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EventsFormat {
    Ndjson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Ndjson,
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Write the usage records of a range to stdout, as `GET /api/usage/export` answers
    /// (a progress bar on stderr when it is a terminal).
    Export {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
    /// What the usage of a range would have cost under another price table, per model and
    /// per user (JSON on stdout). Nothing is written.
    Reprice {
        /// The price table: model name → price per million tokens, as in the models'
        /// settings (`input_per_million_micros`, `output_per_million_micros`,
        /// `cached_input_per_million_micros`); JSON if the name ends in `.json`, else TOML.
        #[arg(long)]
        prices: PathBuf,
        /// Start of the range, inclusive (RFC 3339 or a date).
        #[arg(long)]
        from: String,
        /// End of the range, exclusive (RFC 3339 or a date).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the books from the event store outward (accounts, stream, charges, payments,
    /// trial balance, hash chain and checkpoints); list every discrepancy and exit with 1
    /// if there is any. The report is kept for `GET /api/audit/verify`.
    Verify {
        /// Hold the events against this stream instead of HUB_EVENTS (a copy or mirror).
        #[arg(long)]
        stream: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of every aggregate's head now, if any moved since the last one.
    Checkpoint,
    /// Check a proof (from GET /api/audit/events/{id}/{sequence}/proof) offline: no
    /// database, no network, only the file and the public key (hex or base64).
    VerifyProof {
        file: PathBuf,
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user with roles (the first admin), or give an existing user those roles.
    CreateUser {
        #[arg(long)]
        email: String,
        /// admin, analyst or auditor (repeat for several); every user also has `user`.
        #[arg(long)]
        role: Vec<Role>,
        /// The password; a strong one is generated and printed once when absent.
        #[arg(long, env = "AIHUB_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Audit {
        which: AuditCommand::VerifyProof { file, public_key },
    } = &cli.command
    {
        // Offline: no settings, no database, no network.
        match hub_server::audit::verify_proof_file(file, public_key) {
            Ok(line) => {
                println!("{line}");
                return Ok(());
            }
            Err(err) => {
                eprintln!("NOT verified: {err:#}");
                std::process::exit(1);
            }
        }
    }
    let settings = Settings::load(cli.config.as_deref())?;
    if let Command::Token { user, role, ttl } = cli.command {
        let user = user.unwrap_or_else(Uuid::new_v4);
        let token = Jwt::new(&settings.auth.jwt_secret)
            .mint(user, &role, ttl.unwrap_or(settings.auth.token_ttl_s))
            .context("could not sign the token")?;
        println!("{token}");
        return Ok(());
    }
    let role = cli.command.role();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // Inside the runtime: spans are exported from a task on it.
            let telemetry = telemetry::init(&settings.log, &settings.traces, role)?;
            let ran = run(cli.command, settings).await;
            // After every role stopped: the last spans go out before the process exits.
            telemetry.shutdown().await;
            ran
        })
}

impl Command {
    /// The role a process runs, as its spans name it (`aihub.role`).
    fn role(&self) -> &'static str {
        match self {
            Command::Serve => "serve",
            Command::Relay => "relay",
            Command::Project => "project",
            Command::Worker { .. } => "worker",
            Command::All => "all",
            Command::Migrate => "migrate",
            Command::Replay { .. } => "replay",
            Command::Token { .. } => "token",
            Command::Events { .. } => "events",
            Command::Usage { .. } => "usage",
            Command::Audit { .. } => "audit",
            Command::Admin { .. } => "admin",
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    if settings.auth.jwt_secret == hub_app::config::DEV_JWT_SECRET {
        // Accepted only on loopback (Settings::validate refuses it on any other address).
        tracing::warn!(
            "auth.jwt_secret is the public development secret (allowed on loopback only); \
             set AIHUB__AUTH__JWT_SECRET before serving anyone else"
        );
    }
    let roles = match command {
        Command::Serve => Roles {
            http: true,
            ..Roles::NONE
        },
        Command::Relay => Roles {
            relay: true,
            ..Roles::NONE
        },
        Command::Project => Roles {
            projections: true,
            sweeper: true,
            ..Roles::NONE
        },
        Command::Worker { no_settler } => Roles {
            worker: true,
            settler: !no_settler,
            ..Roles::NONE
        },
        Command::All => Roles::ALL,
        Command::Migrate => {
            let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
            hub_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::Replay {
            projection,
            until,
            into: Some(into),
            replace,
        } => {
            let (pool, _nats, js) = connect(&settings).await?;
            let request = hub_projections::PointInTime {
                kind: projection,
                until: until
                    .map(|t| hub_app::queries::usage::parse_time("--until", &t))
                    .transpose()?,
                into: hub_projections::SchemaName::parse(&into)?,
                replace,
            };
            let stats =
                hub_projections::replay_until(&pool, &js, &settings.topology(), &request, true)
                    .await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            return Ok(());
        }
        Command::Replay { projection, .. } => {
            let (pool, _nats, js) = connect(&settings).await?;
            let stats = hub_projections::replay(
                &pool,
                &settings.database.url,
                &js,
                &settings.topology(),
                projection,
                true,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            return Ok(());
        }
        Command::Usage {
            which: UsageCommand::Reprice { prices, from, to },
        } => {
            use hub_app::analytics::reprice;
            use hub_app::queries::usage::parse_time;
            let prices = reprice::price_table(&reprice::load_price_table(&prices)?)?;
            let (from, to) = (parse_time("--from", &from)?, parse_time("--to", &to)?);
            let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
            let report = reprice::reprice(&pool, from, to, &prices).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        Command::Admin {
            which:
                AdminCommand::CreateUser {
                    email,
                    role,
                    password,
                },
        } => {
            let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
            hub_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            let app = Application::build(settings, Roles::NONE).await?;
            let done =
                hub_app::bootstrap::create_user(&app.state(), &email, &role, password).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            return Ok(());
        }
        Command::Events {
            from,
            to,
            event_type,
            account,
            format: EventsFormat::Ndjson,
        } => {
            let range = hub_server::analytics::events_range(RawEventsFilter {
                from: Some(from),
                to: Some(to),
                event_type,
                account,
            })?;
            let (_pool, _nats, js) = connect(&settings).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let n = hub_server::analytics::write_events(&js, &settings.topology(), range, &mut out)
                .await?;
            tracing::info!(events = n, "events written");
            return Ok(());
        }
        Command::Usage {
            which: UsageCommand::Export { from, to, format },
        } => {
            let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
            let format = match format {
                ExportFormat::Csv => hub_app::analytics::export::Format::Csv,
                ExportFormat::Ndjson => hub_app::analytics::export::Format::Ndjson,
            };
            let raw = RawFilter {
                from: Some(from),
                to: Some(to),
                ..Default::default()
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let n = hub_server::analytics::write_usage_export(&pool, raw, format, &mut out, true)
                .await?;
            tracing::info!(rows = n, "usage records written");
            return Ok(());
        }
        Command::Audit {
            which: AuditCommand::Verify { stream, json },
        } => {
            let report = hub_server::audit::run_verify(&settings, stream).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", hub_server::audit::render(&report));
            }
            if !report.passed {
                std::process::exit(1);
            }
            return Ok(());
        }
        Command::Audit {
            which: AuditCommand::Checkpoint,
        } => {
            let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
            let (_, _nats, js) = connect(&settings).await?;
            let key = settings.checkpoint_key()?;
            let made =
                hub_app::evidence::checkpoints::checkpoint_once(&pool, &key, chrono::Utc::now())
                    .await?;
            hub_app::evidence::checkpoints::publish_pending(&pool, &js, &settings.topology())
                .await?;
            println!("{}", serde_json::to_string_pretty(&made)?);
            return Ok(());
        }
        Command::Audit {
            which: AuditCommand::VerifyProof { .. },
        }
        | Command::Token { .. } => return Ok(()),
    };
    if roles.http || roles.projections {
        let pool = hub_commands::db::connect_lazy(&settings.pool_settings())?;
        hub_commands::db::migrate(&pool)
            .await
            .context("migrations failed")?;
    }
    let app = Application::build(settings, roles).await?;
    app.run_until(stop_signal()).await
}

/// Ctrl-C, or SIGTERM (what orchestrators and `kill` send): either starts a graceful
/// shutdown ([`Application::run_until`]).
async fn stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
                    _ = term.recv() => tracing::info!("terminated (SIGTERM)"),
                }
                return;
            }
            Err(err) => tracing::warn!(error = %err, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("interrupted");
}
