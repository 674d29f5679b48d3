//! `supportrag-api`: the HTTP API. Serves until SIGTERM/SIGINT.

use api::startup::{Application, admin_keys};
use clap::Parser;
use shared::process::{ConfigArgs, stop_on_signals};
use shared::services::Services;

/// Support RAG API: webhook registry, delivery history, dead-letter
/// administration. Workers (supportrag-worker) do the deliveries.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Args::parse().config.load()?;
    let _telemetry = shared::telemetry::init(&settings.log, &settings.telemetry, "supportrag-api")?;
    let keys = admin_keys(&settings.auth.admin_keys);
    let app = Application::build(Services::connect(settings)?, keys).await?;
    tracing::info!(addr = %app.local_addr()?, "API listening");
    app.run(stop_on_signals()).await
}
