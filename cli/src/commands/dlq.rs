//! `supportrag dlq …`: the dead-letter set.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Context, segment};
use crate::args::{DeadLetterFilters, DlqCommand, ReplayArgs};
use crate::client::Reply;
use crate::error::CliError;
use crate::output::{self, Table, field};
use crate::progress::Progress;

/// How often a paced replay's progress is read.
const POLL_EVERY: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Context, cmd: DlqCommand) -> Result<(), CliError> {
    match cmd {
        DlqCommand::Ls { filters, limit } => ls(ctx, &filters, limit).await,
        DlqCommand::Replay(args) => match &args.id {
            Some(id) => {
                if !filter_fields(&args.filters).is_empty() || args.dry_run || args.rate.is_some() {
                    return Err(CliError::Usage(
                        "an id replays that one dead letter: leave out the filters, \
                         --dry-run and --rate (or the id, to replay by filter)"
                            .into(),
                    ));
                }
                replay_one(ctx, id).await
            }
            None => replay_many(ctx, &args).await,
        },
        DlqCommand::Discard { id } => {
            let reply = ctx
                .client
                .delete(&format!("/dead-letters/{}", segment(&id)?))
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "dead letter {} discarded",
                field(&reply.data, "dead_letter_id")
            );
            Ok(())
        }
    }
}

/// The filters as the API names them, as given.
fn filter_fields(filters: &DeadLetterFilters) -> Vec<(&'static str, String)> {
    [
        ("webhook_id", &filters.webhook),
        ("event_type", &filters.event_type),
        ("job_type", &filters.job_type),
        ("since", &filters.since),
        ("until", &filters.until),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value.clone()?)))
    .collect()
}

fn body(fields: &[(&'static str, String)]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Value::String(value.clone())))
        .collect()
}

async fn ls(ctx: &Context, filters: &DeadLetterFilters, limit: u32) -> Result<(), CliError> {
    let mut query = filter_fields(filters);
    query.push(("limit", limit.to_string()));
    let reply = ctx.client.get("/dead-letters", &query).await?;
    if ctx.json {
        return output::json(&reply.data);
    }
    let items: Vec<Value> = reply.decode("the dead-letter list")?;
    let mut table = Table::new(&[
        "ID",
        "JOB TYPE",
        "WEBHOOK",
        "EVENT TYPE",
        "ATTEMPTS",
        "FAILED AT",
        "LAST ERROR",
    ])
    .whole(&["ID", "WEBHOOK"]);
    for d in &items {
        table.row(vec![
            field(d, "dead_letter_id"),
            field(d, "job_type"),
            field(d, "webhook_id"),
            field(d, "event_type"),
            field(d, "attempts"),
            field(d, "failed_at"),
            field(d, "last_error"),
        ]);
    }
    print!("{}", table.render());
    if let Some(more) = output::more(table.len(), reply.total) {
        println!("{more}");
    }
    Ok(())
}

async fn replay_one(ctx: &Context, id: &str) -> Result<(), CliError> {
    let reply = ctx
        .client
        .post(&format!("/dead-letters/{}/replay", segment(id)?), None)
        .await?;
    if ctx.json {
        return output::json(&reply.data);
    }
    println!(
        "dead letter {} replayed",
        field(&reply.data, "dead_letter_id")
    );
    Ok(())
}

#[derive(Deserialize)]
struct DryRun {
    would_replay: u64,
}

/// Counts first (a dry run), asks, then replays: at once, or paced in the
/// background and followed until done.
async fn replay_many(ctx: &Context, args: &ReplayArgs) -> Result<(), CliError> {
    let filters = body(&filter_fields(&args.filters));
    let mut dry = filters.clone();
    dry.insert("dry_run".into(), Value::Bool(true));
    let counted = ctx
        .client
        .post("/dead-letters/replay", Some(&Value::Object(dry)))
        .await?;
    if args.dry_run && ctx.json {
        return output::json(&counted.data);
    }
    let count = counted.decode::<DryRun>("the dry run")?.would_replay;
    if args.dry_run {
        println!("{count} dead letter(s) would be replayed (dry run: nothing changed)");
        return Ok(());
    }
    if count == 0 {
        if ctx.json {
            return output::json(&json!({"replayed": 0, "skipped": 0}));
        }
        println!("no dead letters match: nothing to replay");
        return Ok(());
    }
    if !args.yes {
        confirm(count)?;
    }
    let mut body = filters;
    if let Some(rate) = args.rate {
        body.insert("rate".into(), json!(rate));
    }
    let reply = ctx
        .client
        .post("/dead-letters/replay", Some(&Value::Object(body)))
        .await?;
    if reply.status == StatusCode::ACCEPTED {
        return follow(ctx, reply).await;
    }
    if ctx.json {
        return output::json(&reply.data);
    }
    println!(
        "replayed {} dead letter(s); {} skipped (replayed or discarded meanwhile)",
        field(&reply.data, "replayed"),
        field(&reply.data, "skipped"),
    );
    Ok(())
}

/// Asks on the terminal; without one, refuses (scripts pass `--yes`).
fn confirm(count: u64) -> Result<(), CliError> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::Refused(format!(
            "{count} dead letter(s) would be replayed; not asking without a terminal: \
             pass --yes to replay them, or --dry-run to only count"
        )));
    }
    eprint!("Replay {count} dead letter(s)? [y/N] ");
    // A failed flush only loses the prompt's look; the answer still counts.
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Refused("not confirmed: nothing replayed".into()))
    }
}

/// What the API says of a paced run.
#[derive(Debug, Deserialize)]
struct Run {
    replay_id: String,
    state: String,
    total: u64,
    replayed: u64,
    skipped: u64,
    failed: u64,
    #[serde(default)]
    error: Option<String>,
}

/// Polls a paced run until it is no longer running, with a progress bar.
async fn follow(ctx: &Context, started: Reply) -> Result<(), CliError> {
    let mut run: Run = started.decode("the replay run")?;
    let mut data = started.data;
    let path = format!("/dead-letters/replays/{}", segment(&run.replay_id)?);
    if !ctx.json {
        println!(
            "replay {} started: {} dead letter(s)",
            run.replay_id, run.total
        );
    }
    let mut progress = Progress::new(run.total, "replayed");
    while run.state == "running" {
        progress.set(run.replayed + run.skipped + run.failed);
        tokio::time::sleep(POLL_EVERY).await;
        let reply = ctx.client.get(&path, &[]).await?;
        run = reply.decode("the replay run")?;
        data = reply.data;
    }
    progress.finish(run.replayed + run.skipped + run.failed);
    if ctx.json {
        output::json(&data)?;
    } else {
        println!(
            "replay {} {}: {} replayed, {} skipped, {} failed",
            run.replay_id, run.state, run.replayed, run.skipped, run.failed
        );
    }
    match run.state.as_str() {
        "finished" => Ok(()),
        "interrupted" => Err(CliError::Failed(format!(
            "replay {} was interrupted (the API process running it stopped): \
             run the same replay again for the rest",
            run.replay_id
        ))),
        other => Err(CliError::Failed(format!(
            "replay {} {other}: {}",
            run.replay_id,
            run.error.as_deref().unwrap_or("no error given")
        ))),
    }
}
