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
    let id_like = id.bytes().any(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !id_like {
        return Err(CliError::Usage(format!(
            "{id:?} is not an id (letters, digits, - _ . only)"
        )));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn only_ids_become_path_segments() {
        assert_eq!(
            segment(" dlv_01ab_retry_1 ").ok().as_deref(),
            Some("dlv_01ab_retry_1")
        );
        for bad in ["", "..", ".", "a/b", "../webhooks", "a?b=c", "a b"] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }
}
