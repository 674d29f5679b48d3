//! `supportrag-api`: the HTTP API. Serves until SIGTERM/SIGINT.

use std::path::PathBuf;

use api::startup::{Application, admin_keys};
use clap::Parser;
use shared::config::Settings;
use shared::services::Services;
use tokio_util::sync::CancellationToken;

/// Support RAG API: webhook registry, delivery history, dead-letter
/// administration. Workers (supportrag-worker) do the deliveries.
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
    let keys = admin_keys(&settings.auth.admin_keys);
    let app = Application::build(Services::connect(settings)?, keys).await?;
    tracing::info!(addr = %app.local_addr()?, "API listening");
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_stop.cancel();
    });
    app.run(stop).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
