//! `supportrag deliveries …`

use serde_json::Value;

use super::{Context, segment, webhooks};
use crate::args::{DeliveriesCommand, DeliveryFilters};
use crate::error::CliError;
use crate::output::{self, Table, field};

pub async fn run(ctx: &Context, cmd: DeliveriesCommand) -> Result<(), CliError> {
    match cmd {
        DeliveriesCommand::Ls(filters) => ls(ctx, filters).await,
        DeliveriesCommand::Show { id } => {
            let reply = ctx
                .client
                .get(&format!("/webhooks/deliveries/{}", segment(&id)?), &[])
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            show(&reply.data);
            Ok(())
        }
        DeliveriesCommand::Retry { id } => {
            let reply = ctx
                .client
                .post(
                    &format!("/webhooks/deliveries/{}/retry", segment(&id)?),
                    None,
                )
                .await?;
            if ctx.json {
                return output::json(&reply.data);
            }
            println!(
                "retry queued as delivery {} (attempt {})",
                field(&reply.data, "delivery_id"),
                field(&reply.data, "attempt"),
            );
            Ok(())
        }
    }
}

/// The API lists deliveries per webhook; without `--webhook` every
/// webhook's newest are merged, newest first.
async fn ls(ctx: &Context, filters: DeliveryFilters) -> Result<(), CliError> {
    let webhook_ids = match &filters.webhook {
        Some(id) => vec![segment(id)?],
        None => webhooks::all(ctx)
            .await?
            .iter()
            .filter_map(|w| {
                w.get("webhook_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect(),
    };
    let mut query = vec![("limit", filters.limit.to_string())];
    if let Some(status) = &filters.status {
        query.push(("status", status.clone()));
    }
    if let Some(event_type) = &filters.event_type {
        query.push(("event_type", event_type.clone()));
    }
    let mut deliveries: Vec<Value> = Vec::new();
    for id in &webhook_ids {
        let reply = ctx
            .client
            .get(&format!("/webhooks/{id}/deliveries"), &query)
            .await?;
        let page: Vec<Value> = reply.decode("the delivery list")?;
        deliveries.extend(page);
    }
    // RFC 3339 times in UTC, as the API writes them, sort as text.
    deliveries.sort_by_key(|d| std::cmp::Reverse(field(d, "timestamp")));
    deliveries.truncate(filters.limit as usize);
    if ctx.json {
        return output::json(&Value::Array(deliveries));
    }
    let mut table = Table::new(&[
        "ID",
        "WEBHOOK",
        "EVENT TYPE",
        "STATUS",
        "HTTP",
        "ATTEMPT",
        "TIME",
        "ERROR",
    ])
    .whole(&["ID", "WEBHOOK"]);
    for d in &deliveries {
        table.row(vec![
            field(d, "delivery_id"),
            field(d, "webhook_id"),
            field(d, "event_type"),
            field(d, "status"),
            field(d, "http_status"),
            field(d, "attempt"),
            field(d, "timestamp"),
            field(d, "error"),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// The delivery's fields, then one line per attempt; the payload as JSON.
fn show(delivery: &Value) {
    let mut summary = delivery.clone();
    let (attempts, payload) = match summary.as_object_mut() {
        Some(object) => (object.remove("attempts"), object.remove("payload")),
        None => (None, None),
    };
    print!("{}", output::details(&summary));
    if let Some(Value::Array(attempts)) = attempts {
        println!("\nattempts:");
        let mut table = Table::new(&["ATTEMPT", "OK", "HTTP", "MS", "TIME", "ERROR"]);
        for a in &attempts {
            table.row(vec![
                field(a, "attempt"),
                field(a, "success"),
                field(a, "http_status"),
                field(a, "response_time_ms"),
                field(a, "timestamp"),
                field(a, "error"),
            ]);
        }
        print!("{}", table.render());
    }
    if let Some(payload) = payload {
        let text = serde_json::to_string_pretty(&payload).unwrap_or_else(|_| payload.to_string());
        println!("\npayload:\n{text}");
    }
}
