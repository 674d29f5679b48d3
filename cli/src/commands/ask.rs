//! `supportrag ask "question"`

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Context, segment};
use crate::args::AskArgs;
use crate::client::Reply;
use crate::error::CliError;
use crate::output::{self, field};

/// How often a queued question is looked at again.
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct Completion {
    job_id: String,
    status: String,
}

pub async fn run(ctx: &Context, args: AskArgs) -> Result<(), CliError> {
    let mut body = json!({ "question": args.question });
    if let Some(session) = &args.session {
        body["session_id"] = Value::String(session.clone());
    }
    let mut reply = ctx.client.post("/chat/completions", Some(&body)).await?;
    let deadline = tokio::time::Instant::now() + args.wait;
    // 202: the worker has not answered yet.
    while reply.status == StatusCode::ACCEPTED {
        let job_id = reply.decode::<Completion>("the chat answer")?.job_id;
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "no answer within {} (job {job_id} is still queued): are workers running? \
                 raise --wait to wait longer",
                humantime::format_duration(args.wait)
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
        reply = ctx
            .client
            .get(&format!("/chat/jobs/{}", segment(&job_id)?), &[])
            .await?;
    }
    print(ctx, &reply)
}

fn print(ctx: &Context, reply: &Reply) -> Result<(), CliError> {
    let completion: Completion = reply.decode("the chat answer")?;
    if ctx.json {
        output::json(&reply.data)?;
    } else {
        show(&reply.data);
    }
    if completion.status == "failed" {
        return Err(CliError::Failed(format!(
            "the question failed: {}",
            field(&reply.data, "error")
        )));
    }
    Ok(())
}

fn show(data: &Value) {
    match data.get("status").and_then(Value::as_str) {
        Some("forwarded") => println!(
            "{}\n\n(a person has this conversation; operator: {})",
            field(data, "notice"),
            field(data, "operator_id")
        ),
        Some("done") => {
            println!("{}\n", field(data, "answer"));
            println!("confidence: {}", field(data, "confidence"));
            if data.get("escalated").and_then(Value::as_bool) == Some(true) {
                println!("escalated: yes (handed to an operator)");
            }
            println!("session:    {}", field(data, "session_id"));
            let sources = data.get("sources").and_then(Value::as_array);
            match sources {
                Some(sources) if !sources.is_empty() => {
                    println!("sources:");
                    for s in sources {
                        println!("  - {} ({})", field(s, "title"), field(s, "document_id"));
                    }
                }
                _ => println!("sources:    none"),
            }
        }
        _ => {}
    }
}
