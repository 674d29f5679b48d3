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
    die_quietly_on_closed_pipe();
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

/// `supportrag deliveries ls | head` closes our stdout early; like other
/// Unix tools we should then stop silently, where Rust's default (SIGPIPE
/// ignored) makes the next `println!` panic.
#[cfg(unix)]
fn die_quietly_on_closed_pipe() {
    // SAFETY: restoring the default disposition of one signal, before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn die_quietly_on_closed_pipe() {}
