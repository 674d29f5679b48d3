//! One module per command group; each prints its own output.

mod ask;
mod deliveries;
mod dlq;
mod docs;
mod queues;
mod webhooks;

use crate::args::{Cli, Command};
use crate::client::Client;
use crate::error::CliError;

/// What every command gets: the client and how to print.
pub struct Context {
    pub client: Client,
    pub json: bool,
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let target = crate::settings::resolve(&cli.global)?;
    let ctx = Context {
        client: Client::new(target, cli.global.timeout)?,
        json: cli.global.json,
    };
    match cli.command {
        Command::Webhooks(cmd) => webhooks::run(&ctx, cmd).await,
        Command::Deliveries(cmd) => deliveries::run(&ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(&ctx, cmd).await,
        Command::Queues(args) => queues::run(&ctx, args).await,
        Command::Docs(cmd) => docs::run(&ctx, cmd).await,
        Command::Ask(args) => ask::run(&ctx, args).await,
    }
}

/// A path segment from user input, so an id cannot walk to another route.
pub fn segment(id: &str) -> Result<String, CliError> {
    let id = id.trim();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || id == "."
        || id == ".."
    {
        return Err(CliError::Usage(format!(
            "{id:?} is not an id (letters, digits, - _ . only)"
        )));
    }
    Ok(id.to_owned())
}
