//! `supportrag-worker`: runs queued jobs until SIGTERM/SIGINT, then exits 0
//! once the jobs in hand are finished or handed back.

use std::path::PathBuf;

use clap::Parser;
use shared::config::Settings;
use shared::services::Services;
use tokio_util::sync::CancellationToken;

/// Support RAG worker: outbound webhook deliveries with retries and a
/// dead-letter set. Run as many as you like against one Redis.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML file layered over config/default.toml (environment variables
    /// SUPPORTRAG__SECTION__KEY still win).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref())?;
    shared::telemetry::init(&settings.log);
    let services = Services::connect(settings)?;
    let stop = CancellationToken::new();
    worker::startup::stop_on_signals(stop.clone());
    worker::startup::run(services, stop).await
}
