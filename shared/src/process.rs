//! What both binaries do the same way at start and stop: the `--config`
//! option, and turning SIGTERM/SIGINT into a cancellation every task sees.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Settings};

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// A TOML file layered over config/default.toml (environment variables
    /// SUPPORTRAG__SECTION__KEY still win).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping");
        signalled.cancel();
    });
    stop
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
