//! The auditors' commands: `aihub audit verify` (every check, from the event store
//! outward), `aihub audit checkpoint` (sign one now) and `aihub audit verify-proof` (one
//! proof, offline, with nothing but the file and the public key).

use anyhow::Context;
use hub_app::audit::verify::{self, Options, Progress, Report};
use hub_app::evidence::proof::{parse_public_key, verify as verify_proof};
use hub_app::evidence::Proof;
use hub_app::Settings;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

/// Run every check against the hub `settings` name, keep the report (for
/// `GET /api/audit/verify`) and return it. `stream`: another stream than `HUB_EVENTS` to
/// hold the events against (a copy). A progress bar goes to stderr when it is a terminal.
pub async fn run_verify(settings: &Settings, stream: Option<String>) -> anyhow::Result<Report> {
    let (pool, _nats, js) = crate::connect(settings).await?;
    let options = Options {
        stream,
        public_key: settings.checkpoint_key()?.public_key(),
        now: chrono::Utc::now(),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "audit verify: {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
            )?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let stage = Mutex::new("");
    let on_progress = |p: Progress| {
        let mut current = stage.lock().unwrap_or_else(|e| e.into_inner());
        if *current != p.stage {
            *current = p.stage;
            bar.set_message(p.stage);
            bar.set_length(p.total);
        }
        bar.set_position(p.done);
    };
    let report = verify::verify(&pool, &js, &settings.topology(), &options, &on_progress)
        .await
        .context("the verification could not finish")?;
    bar.finish_and_clear();
    verify::record(&pool, &report)
        .await
        .context("could not keep the report")?;
    Ok(report)
}

/// The report for people: each check, then every discrepancy listed.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "{} events ({:.0}/s), {} accounts, {} payments, {} stream messages ({} pending publication), {} checkpoints\n",
        report.events,
        report.events_per_second,
        report.accounts,
        report.payments,
        report.stream_messages,
        report.pending_publication,
        report.checkpoints
    );
    if report.read_model_behind > 0 {
        out.push_str(&format!(
            "{} accounts' balances rows were still catching up and were not compared\n",
            report.read_model_behind
        ));
    }
    for check in &report.checks {
        out.push_str(&format!(
            "{:<14} {}\n",
            check.check,
            if check.passed {
                "ok".to_string()
            } else {
                format!("FAILED ({} discrepancies)", check.discrepancies)
            }
        ));
    }
    for d in &report.discrepancies {
        out.push_str(&format!("[{}] {}: {}\n", d.check, d.subject, d.detail));
    }
    out.push_str(if report.passed {
        "verified: no discrepancy\n"
    } else {
        "NOT verified\n"
    });
    out
}

/// Check a proof file against a public key (hex or base64): `Ok` with a line to print,
/// or the step that failed.
pub fn verify_proof_file(file: &Path, public_key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    let proof: Proof = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a proof", file.display()))?;
    let key = parse_public_key(public_key)?;
    verify_proof(&proof, &key)?;
    Ok(format!(
        "verified: event {}/{}/{} is in checkpoint {} ({} aggregates, root {}), signed by key {}",
        proof.event.aggregate_type,
        proof.event.aggregate_id,
        proof.event.sequence,
        proof.checkpoint.id,
        proof.checkpoint.tree_size,
        proof.checkpoint.root,
        proof.checkpoint.key_id
    ))
}
