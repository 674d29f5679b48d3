//! The command line: global options and one subcommand per resource.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the API refused the request (4xx not listed below), or another error
  2  bad usage, or a confirmation refused or impossible (no terminal, no --yes)
  3  authentication: the admin key is missing or wrong (401/403)
  4  not found (404)
  5  conflict (409), e.g. the webhook is inactive
  6  rate limited (429); the message says when to try again
  7  service unavailable (502/503/504), cannot connect, or timed out";

/// Administer a Support RAG service over its HTTP API.
///
/// The URL and admin key come from flags, else the environment
/// (SUPPORTRAG_URL, SUPPORTRAG_ADMIN_KEY), else the config file (keys
/// `url` and `admin_key`), else the default URL.
#[derive(Debug, Parser)]
#[command(name = "supportrag", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Base URL of the API (without /api/v1) [default: http://127.0.0.1:8000]
    #[arg(long, global = true, env = "SUPPORTRAG_URL")]
    pub url: Option<String>,
    /// Admin key, sent as a bearer token; never printed
    #[arg(
        long,
        global = true,
        env = "SUPPORTRAG_ADMIN_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Config file [default: $XDG_CONFIG_HOME/supportrag/config.toml or
    /// ~/.config/supportrag/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the API's `data` as JSON (stable, for scripts) instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// How long one request may take
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Registered webhooks: list, inspect, test, turn on and off
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Delivery history of webhooks, and manual retries
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// The dead-letter set: jobs that failed every attempt
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Depth of every job queue; with --watch, redrawn until Ctrl-C
    Queues(QueuesArgs),
    /// Knowledge documents: list, upload, re-ingest, delete
    #[command(subcommand)]
    Docs(DocsCommand),
    /// Ask a question and print the answer with its confidence and sources
    Ask(AskArgs),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List webhooks with their delivery stats
    Ls,
    /// Show one webhook
    Show { id: String },
    /// Send a `webhook.test` event to one webhook
    Test { id: String },
    /// Turn a webhook on again (e.g. after it was auto-disabled)
    Enable {
        id: String,
        /// Also re-queue every dead letter of this webhook
        #[arg(long)]
        replay_dead_letters: bool,
    },
    /// Turn a webhook off; its deliveries are parked as dead letters
    Disable { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Recent deliveries, newest first (of every webhook unless --webhook)
    Ls(DeliveryFilters),
    /// One delivery with every attempt and the payload
    Show { id: String },
    /// Send a delivery again now, as a new delivery of the same event
    Retry { id: String },
}

#[derive(Debug, Args)]
pub struct DeliveryFilters {
    /// Only this webhook's deliveries
    #[arg(long, value_name = "ID")]
    pub webhook: Option<String>,
    /// queued, in_progress, success, failed, dead or cancelled
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// Only this event type, e.g. chat.message.received
    #[arg(long, value_name = "T")]
    pub event_type: Option<String>,
    /// How many to show (1-100)
    #[arg(long, value_name = "N", default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first
    Ls {
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// How many to show (1-100)
        #[arg(long, value_name = "N", default_value_t = 20,
            value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Re-queue one dead letter, or (without an id) every one matching the
    /// filters after showing the count and asking
    Replay(ReplayArgs),
    /// Discard one dead letter, on purpose
    Discard { id: String },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Replay only this dead letter (the filters do not apply)
    pub id: Option<String>,
    #[command(flatten)]
    pub filters: DeadLetterFilters,
    /// Only count what would be replayed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Replays per second (above 0, at most 1000); the run goes on in the
    /// background and is followed with a progress bar
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Do not ask for confirmation (needed without a terminal)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DeadLetterFilters {
    /// Only this webhook's dead letters
    #[arg(long, value_name = "ID")]
    pub webhook: Option<String>,
    /// Only this event type
    #[arg(long, value_name = "T")]
    pub event_type: Option<String>,
    /// Only this job type: deliver, chat, ingest or session
    #[arg(long, value_name = "T")]
    pub job_type: Option<String>,
    /// Failed at or after: an RFC 3339 time, or a duration ago (`2h`)
    #[arg(long, value_name = "WHEN", value_parser = crate::time::parse_when)]
    pub since: Option<String>,
    /// Failed at or before: an RFC 3339 time, or a duration ago (`30m`)
    #[arg(long, value_name = "WHEN", value_parser = crate::time::parse_when)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Redraw until Ctrl-C
    #[arg(long)]
    pub watch: bool,
    /// How often --watch redraws
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "watch")]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// List documents, newest first, with their ingestion status
    Ls {
        /// How many to show (1-100)
        #[arg(long, value_name = "N", default_value_t = 20,
            value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Upload a file (pdf, html, markdown, text, docx); a worker indexes it
    Upload {
        file: PathBuf,
        /// Your own id for the document
        #[arg(long = "id", value_name = "EXTERNAL_ID")]
        external_id: Option<String>,
        /// Its title [default: the file name]
        #[arg(long, value_name = "T")]
        title: Option<String>,
    },
    /// Index a document again from its stored original
    Reingest { id: String },
    /// Delete a document; it leaves retrieval at once
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct AskArgs {
    pub question: String,
    /// Continue this chat session
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// How long to wait for the answer
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// Checked here as the API checks it, so a bad rate is refused before the
/// confirmation rather than after.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1000.0 => Ok(rate),
        _ => Err("must be a number above 0 and at most 1000".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_are_checked_as_the_api_checks_them() {
        assert_eq!(parse_rate("20"), Ok(20.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "1001", "NaN", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("7  service unavailable"), "{help}");
    }
}
