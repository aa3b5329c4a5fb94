//! `aihub-bench`: load benchmarks against local Postgres and NATS (see docs/benchmarks.md).

use clap::Parser;
use hub_server::{telemetry, Settings};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aihub-bench",
    version,
    about = "Load benchmarks of Smart AI Hub against local Postgres and NATS"
)]
struct Cli {
    /// Settings file (default: ./aihub.toml if present). Environment `AIHUB__SECTION__KEY` overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    which: hub_bench::Which,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let telemetry = telemetry::init(&settings.log, &settings.traces, "bench")?;
            let ran = hub_bench::run(cli.which, settings).await;
            telemetry.shutdown().await;
            ran
        })
}
