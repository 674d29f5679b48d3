//! `supportrag queues [--watch]`

use std::io::IsTerminal;

use serde_json::Value;

use super::Context;
use crate::args::QueuesArgs;
use crate::error::CliError;
use crate::output::{self, Table, field};

/// Clears the screen and puts the cursor top left.
const CLEAR: &str = "\x1b[2J\x1b[H";

pub async fn run(ctx: &Context, args: QueuesArgs) -> Result<(), CliError> {
    if !args.watch {
        return once(ctx, false).await;
    }
    let redraw = !ctx.json && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(args.interval);
    // One listener for the whole loop: once it exists, SIGINT no longer
    // kills the process, so a signal arriving between two listeners would
    // be lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            drawn = async {
                ticks.tick().await;
                once(ctx, redraw).await
            } => drawn?,
        }
    }
}

async fn once(ctx: &Context, redraw: bool) -> Result<(), CliError> {
    let reply = ctx.client.get("/admin/queues", &[]).await?;
    if ctx.json {
        return output::json(&reply.data);
    }
    let queues: Vec<Value> = reply
        .data
        .get("queues")
        .map(|q| crate::client::decode(q, "the queue list"))
        .transpose()?
        .unwrap_or_default();
    let mut table = Table::new(&[
        "QUEUE",
        "READY",
        "SCHEDULED",
        "IN FLIGHT",
        "DEAD",
        "PROCESSED",
        "FAILED",
        "DONE/S",
        "FAILED/S",
        "OLDEST READY (MS)",
    ]);
    for q in &queues {
        table.row(vec![
            field(q, "queue"),
            field(q, "ready"),
            field(q, "scheduled"),
            field(q, "in_flight"),
            field(q, "dead"),
            field(q, "processed_total"),
            field(q, "failed_total"),
            field(q, "processed_per_second"),
            field(q, "failed_per_second"),
            field(q, "oldest_ready_age_ms"),
        ]);
    }
    if redraw {
        print!("{CLEAR}");
    }
    print!("{}", table.render());
    Ok(())
}
