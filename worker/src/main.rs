//! `supportrag-worker`: runs queued jobs until SIGTERM/SIGINT, then exits 0
//! once the jobs in hand are finished or handed back.

use clap::Parser;
use shared::process::{ConfigArgs, stop_on_signals};
use shared::services::Services;

/// Support RAG worker: outbound webhook deliveries with retries and a
/// dead-letter set. Run as many as you like against one Redis.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Args::parse().config.load()?;
    shared::telemetry::init(&settings.log);
    worker::startup::run(Services::connect(settings)?, stop_on_signals()).await
}
