//! `aihub bench`: load harnesses (see docs/benchmarks.md).

use crate::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Reserve+settle pairs across many accounts.
    Ledger,
}

pub async fn run(which: Which, _settings: Settings) -> anyhow::Result<()> {
    match which {
        Which::Ledger => anyhow::bail!("the ledger benchmark is not built yet"),
    }
}
