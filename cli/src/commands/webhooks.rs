//! `supportrag webhooks …`

use serde_json::{Value, json};

use super::{Context, segment};
use crate::args::WebhooksCommand;
use crate::error::CliError;
use crate::output::{self, Table, field};

/// Largest page the API gives.
const PAGE: u32 = 100;

pub async fn run(ctx: &Context, cmd: WebhooksCommand) -> Result<(), CliError> {
    match cmd {
        WebhooksCommand::Ls => ls(ctx).await,
        WebhooksCommand::Show { id } => {
            let reply = ctx
                .client
                .get(&format!("/webhooks/{}", segment(&id)?), &[])
                .await?;
            show(ctx, &reply.data)
        }
        WebhooksCommand::Test { id } => {
            let reply = ctx
                .client
                .post(&format!("/webhooks/{}/test", segment(&id)?), None)
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "webhook.test queued: delivery {} (event {}); follow it with `supportrag deliveries show {}`",
                field(&reply.data, "delivery_id"),
                field(&reply.data, "event_id"),
                field(&reply.data, "delivery_id"),
            );
            Ok(())
        }
        WebhooksCommand::Enable {
            id,
            replay_dead_letters,
        } => {
            let body = json!({ "replay_dead_letters": replay_dead_letters });
            let reply = ctx
                .client
                .post(&format!("/webhooks/{}/enable", segment(&id)?), Some(&body))
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "webhook {} enabled; dead letters replayed: {}",
                field(&reply.data, "webhook_id"),
                field(&reply.data, "dead_letters_replayed"),
            );
            Ok(())
        }
        WebhooksCommand::Disable { id } => {
            let reply = ctx
                .client
                .patch(
                    &format!("/webhooks/{}", segment(&id)?),
                    &json!({ "active": false }),
                )
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "webhook {} disabled; its deliveries wait in the dead-letter set until `supportrag webhooks enable`",
                field(&reply.data, "webhook_id")
            );
            Ok(())
        }
    }
}

/// Every webhook, page by page.
pub async fn all(ctx: &Context) -> Result<Vec<Value>, CliError> {
    let mut items = Vec::new();
    loop {
        let reply = ctx
            .client
            .get(
                "/webhooks",
                &[
                    ("limit", PAGE.to_string()),
                    ("offset", items.len().to_string()),
                ],
            )
            .await?;
        let page: Vec<Value> = reply.decode("the webhook list")?;
        let done = page.len() < PAGE as usize;
        items.extend(page);
        if done {
            return Ok(items);
        }
    }
}

async fn ls(ctx: &Context) -> Result<(), CliError> {
    let webhooks = all(ctx).await?;
    if ctx.json {
        return output::json(&Value::Array(webhooks));
    }
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ACTIVE",
        "URL",
        "EVENTS",
        "DELIVERIES",
        "FAILURES",
        "SUCCESS %",
    ])
    .whole(&["ID"]);
    for w in &webhooks {
        table.row(vec![
            field(w, "webhook_id"),
            field(w, "name"),
            active(w),
            field(w, "url"),
            field(w, "events"),
            field(w, "deliveries_count"),
            field(w, "failures_count"),
            field(w, "success_rate"),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// `yes`, or `no` with the reason the system turned it off.
fn active(w: &Value) -> String {
    match (
        w.get("active").and_then(Value::as_bool),
        w.get("disabled_reason"),
    ) {
        (Some(true), _) => "yes".into(),
        (_, Some(Value::String(reason))) => format!("no ({reason})"),
        _ => "no".into(),
    }
}

fn show(ctx: &Context, webhook: &Value) -> Result<(), CliError> {
    if ctx.json {
        return output::json(webhook);
    }
    print!("{}", output::details(webhook));
    Ok(())
}
