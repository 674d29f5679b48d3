//! `supportrag`: the admin command line of Support RAG. It only speaks the
//! HTTP API, so it works against any deployment the key opens.

mod args;
mod client;
mod commands;
mod error;
mod output;
mod progress;
mod settings;
mod time;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
