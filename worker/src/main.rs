//! `supportrag-worker`: runs queued jobs until SIGTERM/SIGINT, then exits 0
//! once the jobs in hand are finished or handed back.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::process::{ConfigArgs, stop_on_signals};
use shared::services::Services;

/// Support RAG worker: chat answers, document ingestion, session ends and
/// outbound webhook deliveries with retries and a dead-letter set. Run as
/// many as you like against one Redis.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: parse one document from stdin in a sandboxed child (the
    /// worker starts it itself with memory and time limits).
    #[command(name = "parse-document", hide = true)]
    ParseDocument,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Command::ParseDocument) = args.command {
        return Ok(rag::parse::sandbox::child_main());
    }
    let settings = args.config.load()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let _telemetry =
                shared::telemetry::init(&settings.log, &settings.telemetry, "supportrag-worker")?;
            worker::startup::run(Services::connect(settings)?, stop_on_signals()).await
        })?;
    Ok(ExitCode::SUCCESS)
}
