//! The RAG flow end to end with real processes: the API, a worker process,
//! documents served over HTTP, signed incoming webhooks, and every outbound
//! event checked by the seed's JavaScript verifier.
//!
//! Given a webhook whose URL is the seed's Express verifier,
//! when three documents (PDF, HTML, Russian text) arrive through the
//! incoming document webhook and users send messages in Russian and
//! English, then the answers come from the right documents, an off-topic
//! question is escalated, the next message goes to the operator, the
//! operator's reply goes out, and ending the session is announced.

use crate::common::{TestApp, spawn_app_with};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};
use testkit::documents::text_pdf;
use testkit::{
    JsVerifier, PATIENCE, Served, WorkerProcess, settings_env, spawn_file_server,
    spawn_js_verifier, wait_until, worker_binary,
};

const SECRET: &str = "rag_flow_secret_0123456789";

/// Posts a signed incoming webhook as an integrator's code would.
async fn post_signed(
    app: &TestApp,
    webhook_id: &str,
    path: &str,
    body: &Value,
) -> crate::common::Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    let timestamp = Utc::now().timestamp();
    let secret = Secret::parse(SECRET).unwrap();
    let request = app
        .http
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .header("X-Webhook-ID", webhook_id)
        .header("X-Webhook-Timestamp", timestamp.to_string())
        .header(
            "X-Webhook-Signature",
            sign_incoming_timestamped(&secret, timestamp, &bytes),
        )
        .header("X-Trace-Id", "trace_rag_flow")
        .body(bytes);
    app.send(request).await
}

/// Verified events of one type, in arrival order.
async fn events(verifier: &JsVerifier, event_type: &str) -> Vec<Value> {
    verifier
        .verified()
        .await
        .into_iter()
        .map(|r| r["payload"].clone())
        .filter(|p| p["event_type"] == event_type)
        .collect()
}

async fn wait_for_events(verifier: &JsVerifier, event_type: &str, count: usize) -> Vec<Value> {
    wait_until(
        &format!("{count} verified {event_type} event(s)"),
        PATIENCE,
        || async {
            let found = events(verifier, event_type).await;
            (found.len() >= count).then_some(found)
        },
    )
    .await
}

fn corpus(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../rag/tests/corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The markdown as simple HTML, with navigation a parser must drop.
fn as_html(markdown: &str) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Billing and invoices</title></head>\
         <body><nav><a href=\"/\">Home</a> <a href=\"/pricing\">Pricing</a></nav><main><article>",
    );
    for block in markdown.split("\n\n") {
        let block = block.trim();
        if let Some(h) = block.strip_prefix("## ") {
            html.push_str(&format!("<h2>{h}</h2>"));
        } else if let Some(h) = block.strip_prefix("# ") {
            html.push_str(&format!("<h1>{h}</h1>"));
        } else if !block.is_empty() {
            html.push_str(&format!("<p>{block}</p>"));
        }
    }
    html.push_str("</article></main><footer>© Example</footer></body></html>");
    html
}

/// English markdown as PDF pages of short lines (the standard PDF fonts
/// only carry Latin text).
fn as_pdf(markdown: &str) -> Vec<u8> {
    let mut lines: Vec<String> = Vec::new();
    for block in markdown.split("\n\n") {
        let text = block.trim().trim_start_matches('#').trim();
        let mut line = String::new();
        for word in text.split_whitespace() {
            if line.len() + word.len() > 80 {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
        lines.push(String::new());
    }
    let pages: Vec<Vec<&str>> = lines
        .chunks(40)
        .map(|page| page.iter().map(String::as_str).collect())
        .collect();
    let pages: Vec<&[&str]> = pages.iter().map(Vec::as_slice).collect();
    text_pdf(Some("Password reset and two-factor authentication"), &pages)
}

#[tokio::test]
async fn documents_in_questions_answered_escalated_and_ended() {
    let app = spawn_app_with(|s| s.chat.escalation_threshold = 0.35).await;
    let settings = (*app.services.settings).clone();
    let _worker = WorkerProcess::spawn(worker_binary(), &settings_env(&settings));

    // An integration whose outbound URL is the seed's verifier.
    let webhook_id = app
        .register("http://127.0.0.1:9/placeholder", &["*"], SECRET)
        .await;
    let verifier = spawn_js_verifier(&[(webhook_id.as_str(), SECRET)]);
    let patched = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{webhook_id}"),
            &json!({"url": verifier.url()}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);

    let files = spawn_file_server(vec![
        (
            "password-2fa.pdf",
            Served::File {
                content_type: "application/pdf",
                body: as_pdf(&corpus("password-2fa.md")),
            },
        ),
        (
            "billing.html",
            Served::File {
                content_type: "text/html; charset=utf-8",
                body: as_html(&corpus("billing-invoices.md")).into_bytes(),
            },
        ),
        (
            "documentation-ru.txt",
            Served::File {
                content_type: "text/plain; charset=utf-8",
                body: corpus("documentation-system.md").into_bytes(),
            },
        ),
    ])
    .await;

    // Three documents through the incoming document webhook; the HTML one
    // without a declared format (detected from the response).
    let uploads = [
        (
            "password-2fa.pdf",
            "Password and 2FA",
            Some("pdf"),
            "ext_pw",
        ),
        ("billing.html", "Billing and invoices", None, "ext_billing"),
        (
            "documentation-ru.txt",
            "Документирование",
            Some("txt"),
            "ext_docs",
        ),
    ];
    let mut document_ids = Vec::new();
    for (file, name, format, external) in uploads {
        let mut data = json!({
            "document_url": files.url(file),
            "document_name": name,
            "external_document_id": external,
            "metadata": {"category": "support", "department": "CX"},
        });
        if let Some(format) = format {
            data["document_format"] = json!(format);
        }
        let reply = post_signed(
            &app,
            &webhook_id,
            "/api/v1/webhooks/incoming/document",
            &json!({
                "event_type": "document.upload",
                "timestamp": "2025-01-09T12:00:00Z",
                "source": "knowledge_management_system",
                "data": data,
            }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(reply.data()["status"], "accepted");
        assert!(
            reply.data()["staging_id"]
                .as_str()
                .unwrap()
                .starts_with("staging_")
        );
        document_ids.push(reply.data()["document_id"].as_str().unwrap().to_owned());
    }

    let indexed = wait_for_events(&verifier, "knowledge.document.indexed", 3).await;
    for doc_id in &document_ids {
        let event = indexed
            .iter()
            .find(|e| e["data"]["document_id"] == doc_id.as_str())
            .unwrap_or_else(|| panic!("no indexed event for {doc_id}: {indexed:?}"));
        let data = &event["data"];
        assert_eq!(data["status"], "indexed");
        assert!(data["chunks_count"].as_u64().unwrap() >= 1, "{data}");
        assert!(data["total_size_bytes"].as_u64().unwrap() > 0, "{data}");
        assert_eq!(data["embeddings_model"], "bm25");
        assert_eq!(data["vector_store"], "tantivy");
        assert_eq!(data["metadata"]["department"], "CX");
        assert_eq!(event["metadata"]["trace_id"], "trace_rag_flow");
    }
    let classified = wait_for_events(&verifier, "analysis.classification.completed", 3).await;
    for event in &classified {
        let classes = event["data"]["classifications"].as_array().unwrap();
        assert!(!classes.is_empty(), "{event}");
        for c in classes {
            let confidence = c["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&confidence), "{c}");
        }
    }
    let html_doc = app
        .admin_get(&format!("/api/v1/knowledge/documents/{}", document_ids[1]))
        .await;
    assert_eq!(html_doc.data()["format"], "html", "{}", html_doc.body);
    assert!(
        !html_doc.body.to_string().contains("Pricing"),
        "navigation text was indexed: {}",
        html_doc.body
    );

    // Questions in Russian and English.
    let thread = "1234567890.123456";
    let ask = |text: &'static str, external: &'static str| {
        json!({
            "event_type": "message.received",
            "timestamp": "2025-01-09T12:00:00Z",
            "source": "slack",
            "data": {
                "user_id": "U123456789",
                "user_name": "John Doe",
                "message": text,
                "thread_id": thread,
                "channel": "support",
                "external_message_id": external,
            },
            "metadata": {"workspace": "myworkspace", "correlation_id": "corr_abc123"},
        })
    };
    let path = "/api/v1/webhooks/incoming/message";
    let first = post_signed(
        &app,
        &webhook_id,
        path,
        &ask("Как работает документирование?", "m1"),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let session_id = first.data()["session_id"].as_str().unwrap().to_owned();
    let answers = wait_for_events(&verifier, "chat.response.generated", 1).await;
    let ru = &answers[0]["data"];
    assert_eq!(ru["session_id"], session_id.as_str());
    assert_eq!(ru["message"], "Как работает документирование?");
    assert_eq!(
        ru["sources"][0]["document_id"],
        document_ids[2].as_str(),
        "{ru}"
    );
    assert!(ru["confidence"].as_f64().unwrap() >= 0.35, "{ru}");
    assert!(ru["answer"].as_str().unwrap().contains("документ"), "{ru}");
    assert!(ru["processing_time_ms"].is_u64());
    assert_eq!(answers[0]["metadata"]["correlation_id"], "corr_abc123");
    assert_eq!(answers[0]["metadata"]["trace_id"], "trace_rag_flow");

    let second = post_signed(
        &app,
        &webhook_id,
        path,
        &ask("How do I reset my forgotten password?", "m2"),
    )
    .await;
    assert_eq!(
        second.data()["session_id"],
        session_id.as_str(),
        "same thread, same session"
    );
    let answers = wait_for_events(&verifier, "chat.response.generated", 2).await;
    let en = &answers[1]["data"];
    assert_eq!(
        en["sources"][0]["document_id"],
        document_ids[0].as_str(),
        "{en}"
    );
    assert!(en["confidence"].as_f64().unwrap() >= 0.35, "{en}");
    assert!(
        en["answer"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("password"),
        "{en}"
    );

    // Off-topic: low confidence, then a hand-over.
    post_signed(
        &app,
        &webhook_id,
        path,
        &ask("What will the weather be like in Paris tomorrow?", "m3"),
    )
    .await;
    let answers = wait_for_events(&verifier, "chat.response.generated", 3).await;
    let off = &answers[2]["data"];
    assert!(off["confidence"].as_f64().unwrap() < 0.35, "{off}");
    let escalated = wait_for_events(&verifier, "chat.escalated", 1).await;
    let esc = &escalated[0]["data"];
    assert_eq!(esc["session_id"], session_id.as_str());
    assert_eq!(esc["escalation_priority"], "medium");
    assert_eq!(esc["assigned_operator_id"], "op_1");
    assert_eq!(
        esc["last_message"],
        "What will the weather be like in Paris tomorrow?"
    );
    assert!(
        esc["conversation_summary"]
            .as_str()
            .unwrap()
            .contains("weather"),
        "{esc}"
    );

    // A person has the conversation now: the next message goes to the
    // operator, not to the bot, and the operator's reply comes back.
    post_signed(
        &app,
        &webhook_id,
        path,
        &ask("Hello? Is anyone there?", "m4"),
    )
    .await;
    let forwarded = wait_for_events(&verifier, "chat.message.forwarded", 1).await;
    let fwd = &forwarded[0]["data"];
    assert_eq!(fwd["session_id"], session_id.as_str());
    assert_eq!(fwd["user_id"], "U123456789");
    assert_eq!(fwd["message"], "Hello? Is anyone there?");
    assert_eq!(fwd["operator_id"], "op_1");
    assert_eq!(forwarded[0]["metadata"]["correlation_id"], "corr_abc123");
    let replied = app
        .admin_json(
            Method::POST,
            &format!("/api/v1/chat/sessions/{session_id}/reply"),
            &json!({"message": "Здравствуйте! Я Jane, помогу с вопросом."}),
        )
        .await;
    assert_eq!(replied.status, StatusCode::ACCEPTED, "{}", replied.body);
    let replies = wait_for_events(&verifier, "chat.operator.replied", 1).await;
    assert_eq!(replies[0]["data"]["session_id"], session_id.as_str());
    assert_eq!(replies[0]["data"]["operator_id"], "op_1");
    assert_eq!(
        replies[0]["data"]["message"],
        "Здравствуйте! Я Jane, помогу с вопросом."
    );
    assert_eq!(
        events(&verifier, "chat.response.generated").await.len(),
        3,
        "the bot stayed out of it"
    );

    // The end of the session.
    let ended = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/chat/sessions/{session_id}/end"),
        ))
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    let ended = wait_for_events(&verifier, "session.ended", 1).await;
    let data = &ended[0]["data"];
    assert_eq!(data["session_id"], session_id.as_str());
    assert_eq!(data["messages_count"], 4);
    assert_eq!(data["escalated"], true);
    assert_eq!(data["reason"], "requested");

    // Nothing the verifier got failed its signature check.
    assert!(
        verifier.rejected().await.is_empty(),
        "the seed verifier rejected deliveries: {:?}",
        verifier.rejected().await
    );
}
