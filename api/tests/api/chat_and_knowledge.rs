//! Chat and knowledge APIs with a real worker: documents go in
//! (text, base64, multipart), get indexed and searched, replaced and
//! deleted; questions get answers from them; sessions are continued,
//! escalated and ended, and subscribers hear about it. After a hand-over
//! a person has the session (forwarded questions, operator replies, hand
//! back); answers are rated, and low-confidence questions are grouped
//! into knowledge gaps.

use std::time::Duration;

use crate::common::{Reply, TestApp, spawn_app, spawn_app_with};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::catalog::{EventFilter, EventType};
use shared::ids::{DocumentId, JobId, SessionId, StagingId};
use shared::knowledge::documents::DocumentRecord;
use testkit::{Behaviour, PATIENCE, Receiver, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "receiver_secret_12345";
const DOCUMENTS: &str = "/api/v1/knowledge/documents";
const COMPLETIONS: &str = "/api/v1/chat/completions";

const PASSWORD_GUIDE: &str = "\
Password reset guide

To reset your password, open the login page and click \"Forgot password\". \
We send a reset link to your registered email address. The reset link is \
valid for 24 hours. After you choose a new password, all other sessions are \
signed out.

If the reset email does not arrive, check the spam folder or contact support.";

async fn upload(app: &TestApp, body: Value) -> Reply {
    app.admin_json(Method::POST, DOCUMENTS, &body).await
}

/// Uploads `text` and returns the document id (asserting the 202).
async fn upload_text(app: &TestApp, name: &str, text: &str, external_id: &str) -> String {
    let reply = upload(
        app,
        json!({"name": name, "text": text, "external_document_id": external_id}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.data()["document_id"].as_str().expect("document_id");
    assert!(id.starts_with("doc_"), "{id}");
    assert!(
        reply.data()["staging_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("staging_"))
    );
    id.to_owned()
}

/// Waits until the document's current upload is indexed; returns its record.
async fn indexed(app: &TestApp, document_id: &str) -> Value {
    wait_until(
        &format!("{document_id} to be indexed"),
        PATIENCE,
        || async {
            let reply = app.admin_get(&format!("{DOCUMENTS}/{document_id}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let data = reply.data().clone();
            assert_ne!(data["status"], "failed", "ingestion failed: {data}");
            (data["status"] == "indexed").then_some(data)
        },
    )
    .await
}

/// Waits until the upload with `staging_id` is the indexed version.
async fn indexed_version(app: &TestApp, document_id: &str, staging_id: &str) -> Value {
    wait_until(
        &format!("{document_id} version {staging_id} to be indexed"),
        PATIENCE,
        || async {
            let reply = app.admin_get(&format!("{DOCUMENTS}/{document_id}")).await;
            let data = reply.data().clone();
            (data["status"] == "indexed" && data["staging_id"] == staging_id).then_some(data)
        },
    )
    .await
}

async fn search(app: &TestApp, q: &str) -> Reply {
    // The queries here are plain ASCII words.
    assert!(q.chars().all(|c| c.is_ascii_alphanumeric() || c == ' '));
    app.admin_get(&format!(
        "/api/v1/knowledge/search?q={}",
        q.replace(' ', "%20")
    ))
    .await
}

/// The document ids a search returns, best first.
async fn found(app: &TestApp, q: &str) -> Vec<String> {
    let reply = search(app, q).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.data()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["document_id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_found_first(reply: &Reply, document_id: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let first = &reply.data()["results"][0];
    assert_eq!(first["document_id"], document_id, "{}", reply.body);
    assert!(
        first["score"].as_f64().is_some_and(|s| s > 0.0),
        "{}",
        reply.body
    );
    assert!(first["text"].as_str().is_some_and(|t| !t.is_empty()));
}

async fn ask(app: &TestApp, body: Value) -> Reply {
    app.admin_json(Method::POST, COMPLETIONS, &body).await
}

fn field_of(reply: &Reply) -> &str {
    reply.body["error"]["details"]["field"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_text_upload_is_indexed_classified_and_searchable() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;

    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    let staged = app.admin_get(&format!("{DOCUMENTS}/{id}")).await;
    assert_eq!(staged.status, StatusCode::OK);
    assert!(
        ["staged", "processing", "indexed"].contains(&staged.data()["status"].as_str().unwrap()),
        "{}",
        staged.body
    );

    let record = indexed(&app, &id).await;
    assert!(record["chunks_count"].as_u64().unwrap() >= 1, "{record}");
    assert!(record["classifications"].is_array(), "{record}");
    assert_eq!(record["name"], "Password reset");
    assert_eq!(record["external_document_id"], "kb_password");
    assert!(record["indexed_at"].is_string(), "{record}");

    assert_found_first(&search(&app, "password").await, &id);
    let listed = app.admin_get(DOCUMENTS).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["meta"]["pagination"]["total"], 1);
    assert_eq!(listed.data()[0]["document_id"], id.as_str());
    worker.shutdown().await;
}

/// Percent-encodes every byte that is not an ASCII letter or digit.
fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn hostile_searches_through_the_api_answer_correctly() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let get = |q: String| {
        let app = &app;
        async move {
            app.admin_get(&format!("/api/v1/knowledge/search?q={}", encode_query(&q)))
                .await
        }
    };

    // Over the 2,000-character cap: refused, whatever it holds. (Much
    // longer URLs, such as 1 MB, are refused by the HTTP server before the
    // handler; rag/tests/rag/search.rs sends those to the engine directly.)
    for (name, q) in [
        ("just over the cap", "a".repeat(2_001)),
        (
            "1,000 distinct terms",
            (0..1_000).map(|n| format!("w{n} ")).collect(),
        ),
    ] {
        let reply = get(q).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "INVALID_QUERY", "{name}");
    }
    // Within it: answered, and the password guide still comes first.
    let cases = [
        (
            "as many distinct terms as fit",
            format!(
                "password {}",
                (0..330)
                    .map(|n| format!("w{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        (
            "control characters",
            "\u{0000}\u{0007}\u{001b}[2J\r\n\t password ".repeat(40),
        ),
        (
            "query syntax",
            "password AND (reset OR x) title:* \"link\"~2 -email +[a TO z] ^3 \\ *:*".to_owned(),
        ),
        ("key-like", "{kb:kb}:feed password ' ) -- ; DROP".to_owned()),
    ];
    for (name, q) in cases {
        assert!(q.chars().count() <= 2000, "{name}");
        let reply = get(q).await;
        assert_found_first(&reply, &id);
        let confidence = reply.data()["confidence"].as_f64().expect("confidence");
        assert!((0.0..=1.0).contains(&confidence), "{name}: {confidence}");
    }
    // Nothing to search for once analysed: an empty answer, not an error.
    for q in [
        "\u{0000}\u{0001}",
        "?!.,:;",
        "the and of",
        "\u{202e}\u{200b}",
    ] {
        let reply = get(q.to_owned()).await;
        assert_eq!(reply.status, StatusCode::OK, "{q:?}: {}", reply.body);
        assert_eq!(reply.data()["results"], json!([]), "{q:?}");
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn base64_and_multipart_uploads_are_indexed_too() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;

    let html = "<html><head><title>Shipping</title></head><body><h1>Shipping times</h1>\
        <p>Parcels to Europe arrive within five working days by courier.</p></body></html>";
    let reply = upload(
        &app,
        json!({
            "name": "Shipping",
            "content_base64": base64::engine::general_purpose::STANDARD.encode(html),
            "format": "html",
            "metadata": {"team": "logistics"}
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let html_id = reply.data()["document_id"].as_str().unwrap().to_owned();

    let markdown = "# Warranty\n\nEvery kettle has a warranty of two years from purchase.\n";
    let boundary = "supportragboundary7MA4YWxkTrZu0gW";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nWarranty terms\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"external_document_id\"\r\n\r\nkb_warranty\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"warranty.md\"\r\n\
         Content-Type: text/markdown\r\n\r\n{markdown}\r\n--{boundary}--\r\n"
    );
    let reply = app
        .send(
            app.admin(Method::POST, DOCUMENTS)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(form),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let md_id = reply.data()["document_id"].as_str().unwrap().to_owned();

    let html_record = indexed(&app, &html_id).await;
    assert_eq!(html_record["metadata"]["team"], "logistics");
    let md_record = indexed(&app, &md_id).await;
    assert_eq!(md_record["name"], "Warranty terms");
    assert_eq!(md_record["external_document_id"], "kb_warranty");

    assert_found_first(&search(&app, "courier parcels").await, &html_id);
    assert_found_first(&search(&app, "kettle warranty").await, &md_id);
    assert!(
        !search(&app, "kettle warranty")
            .await
            .body
            .to_string()
            .contains("<p>"),
        "HTML is parsed, not indexed as markup"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn bad_uploads_and_searches_are_refused_with_their_codes() {
    let app = spawn_app().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let cases = [
        ("neither text nor base64", json!({"name": "n"}), "text"),
        (
            "both text and base64",
            json!({"name": "n", "text": "a", "content_base64": b64("a")}),
            "text",
        ),
        (
            "unknown format",
            json!({"name": "n", "text": "a", "format": "exe"}),
            "format",
        ),
        (
            "bad base64",
            json!({"name": "n", "content_base64": "***not base64***"}),
            "content_base64",
        ),
        ("empty text", json!({"name": "n", "text": ""}), "text"),
        ("blank text", json!({"name": "n", "text": " \n\t "}), "text"),
        (
            "empty base64",
            json!({"name": "n", "content_base64": ""}),
            "content_base64",
        ),
        ("blank name", json!({"name": "  ", "text": "a"}), "name"),
        ("no name", json!({"text": "a"}), "name"),
        ("name not a string", json!({"name": 7, "text": "a"}), "name"),
    ];
    for (case, body, field) in cases {
        let reply = upload(&app, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "VALIDATION_FAILED", "{case}");
        assert_eq!(field_of(&reply), field, "{case}: {}", reply.body);
    }

    let reply = app
        .send(
            app.admin(Method::POST, DOCUMENTS)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.error_code(), "MALFORMED_JSON");

    let reply = app
        .send(
            app.admin(Method::POST, DOCUMENTS)
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let boundary = "b0undary";
    let no_file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let reply = app
        .send(
            app.admin(Method::POST, DOCUMENTS)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(no_file),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(field_of(&reply), "file");

    for query in [
        "",
        "?q=",
        "?q=%20%20",
        "?q=password&limit=0",
        "?q=password&limit=51",
        "?q=password&limit=many",
    ] {
        let reply = app
            .admin_get(&format!("/api/v1/knowledge/search{query}"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
        reply.error_code();
    }

    let depth = app.services.queue.depth("ingest").await.unwrap();
    assert_eq!(depth.ready, 0, "nothing refused was queued");
    assert_eq!(
        app.admin_get(&format!("{DOCUMENTS}/doc_nothing"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_re_upload_replaces_the_old_text_and_a_delete_removes_it_at_once() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(
        &app,
        "Office",
        "Our office is in Zanzibar, next to the harbour.",
        "kb_office",
    )
    .await;
    indexed(&app, &id).await;
    assert_eq!(found(&app, "zanzibar").await, vec![id.clone()]);

    let reply = upload(
        &app,
        json!({
            "name": "Office",
            "text": "Our office moved to Kilimanjaro, near the airport.",
            "external_document_id": "kb_office"
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.data()["document_id"], id.as_str(), "same document");
    let staging_id = reply.data()["staging_id"].as_str().unwrap().to_owned();
    indexed_version(&app, &id, &staging_id).await;

    assert_eq!(found(&app, "kilimanjaro").await, vec![id.clone()]);
    assert!(
        found(&app, "zanzibar").await.is_empty(),
        "the old version is gone"
    );
    let listed = app.admin_get(DOCUMENTS).await;
    assert_eq!(
        listed.body["meta"]["pagination"]["total"], 1,
        "one document"
    );

    let deleted = app
        .send(app.admin(Method::DELETE, &format!("{DOCUMENTS}/{id}")))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.data()["document_id"], id.as_str());
    assert_eq!(deleted.data()["status"], "deleted");
    assert_eq!(deleted.data()["removed_from_search"], true);

    assert!(found(&app, "kilimanjaro").await.is_empty(), "gone at once");
    let gone = app.admin_get(&format!("{DOCUMENTS}/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "NOT_FOUND");
    let again = app
        .send(app.admin(Method::DELETE, &format!("{DOCUMENTS}/{id}")))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let listed = app.admin_get(DOCUMENTS).await;
    assert_eq!(listed.body["meta"]["pagination"]["total"], 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_older_upload_never_takes_the_place_of_a_newer_one() {
    // Two uploads of one document whose requests finish out of order: the
    // older one's record write lands last. The record must keep pointing
    // at the newer upload, or the worker would index the older text over
    // the newer one (it only skips uploads older than the record's).
    let app = spawn_app().await;
    let mut ids = [StagingId::generate(), StagingId::generate()];
    ids.sort();
    let [older, newer] = ids;
    let document_id = DocumentId::generate();
    let record = |staging: &StagingId, name: &str| {
        DocumentRecord::staged(
            document_id.clone(),
            staging.clone(),
            name.to_owned(),
            Some("kb_race".into()),
            None,
            serde_json::Map::new(),
        )
    };
    let documents = &app.services.documents;

    documents.stage(&record(&newer, "Version 2")).await.unwrap();
    documents.stage(&record(&older, "Version 1")).await.unwrap();

    let shown = app.admin_get(&format!("{DOCUMENTS}/{document_id}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.data()["staging_id"], newer.as_str(), "{}", shown.body);
    assert_eq!(shown.data()["name"], "Version 2");
}

#[tokio::test]
async fn a_question_is_answered_from_the_knowledge_base_and_the_session_continues() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;

    let first = ask(
        &app,
        json!({"question": "How do I reset my password?", "user_id": "u42"}),
    )
    .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let data = first.data();
    assert_eq!(data["status"], "done");
    assert!(data["answer"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(data["sources"][0]["document_id"], id.as_str(), "{data}");
    let confidence = data["confidence"].as_f64().expect("confidence");
    assert!((0.0..=1.0).contains(&confidence), "{confidence}");
    assert_eq!(data["escalated"], false, "{data}");
    assert!(data["processing_time_ms"].is_u64());
    let session_id = data["session_id"].as_str().unwrap().to_owned();
    assert!(session_id.starts_with("sess_"));
    assert!(data["job_id"].as_str().unwrap().starts_with("job_"));

    let second = ask(
        &app,
        json!({
            "question": "How long is the reset link valid?",
            "user_id": "u42",
            "session_id": session_id
        }),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.data()["session_id"], session_id.as_str());

    let session = app
        .admin_get(&format!("/api/v1/chat/sessions/{session_id}"))
        .await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    let s = session.data();
    assert_eq!(s["messages_count"], 2, "{s}");
    assert_eq!(s["status"], "active");
    assert_eq!(s["user_id"], "u42");
    let history = s["history"].as_array().unwrap();
    let roles: Vec<&str> = history
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"], "{s}");
    assert_eq!(history[0]["text"], "How do I reset my password?");
    assert_eq!(history[2]["text"], "How long is the reset link valid?");

    let off_topic = ask(
        &app,
        json!({"question": "Which football team won the 1974 world cup?", "user_id": "u7"}),
    )
    .await;
    assert_eq!(off_topic.status, StatusCode::OK, "{}", off_topic.body);
    let threshold = app.services.settings.chat.escalation_threshold;
    let low = off_topic.data()["confidence"].as_f64().unwrap();
    assert!(low < threshold, "off-topic confidence {low}");
    assert_eq!(off_topic.data()["escalated"], true, "{}", off_topic.body);
    assert_ne!(off_topic.data()["session_id"], session_id.as_str());
    worker.shutdown().await;
}

#[tokio::test]
async fn a_slow_answer_is_polled_by_job_id() {
    let app = spawn_app_with(|s| s.chat.completion_wait = Duration::ZERO).await;

    let queued = ask(&app, json!({"question": "How do I reset my password?"})).await;

    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    assert_eq!(queued.data()["status"], "queued");
    let job_id = queued.data()["job_id"].as_str().unwrap().to_owned();
    assert!(job_id.starts_with("job_"));
    assert!(
        queued.data()["session_id"]
            .as_str()
            .unwrap()
            .starts_with("sess_")
    );
    let path = format!("/api/v1/chat/jobs/{job_id}");
    let poll = app.admin_get(&path).await;
    assert_eq!(poll.status, StatusCode::ACCEPTED, "{}", poll.body);
    assert_eq!(poll.data()["status"], "queued");

    let worker = spawn_worker(app.services.clone()).await;
    let done = wait_until("the chat job to be done", PATIENCE, || async {
        let poll = app.admin_get(&path).await;
        (poll.status == StatusCode::OK).then_some(poll)
    })
    .await;
    assert_eq!(done.data()["status"], "done", "{}", done.body);
    assert_eq!(done.data()["session_id"], queued.data()["session_id"]);
    assert!(done.data()["answer"].is_string());
    assert!(done.data()["confidence"].is_number());

    let unknown = app
        .admin_get(&format!("/api/v1/chat/jobs/{}", JobId::generate()))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "NOT_FOUND");
    let garbage = app.admin_get("/api/v1/chat/jobs/whatever").await;
    assert_eq!(garbage.status, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

#[tokio::test]
async fn bad_questions_are_refused() {
    let app = spawn_app_with(|s| s.chat.completion_wait = Duration::ZERO).await;
    let cases = [
        (
            "invalid session id",
            json!({"question": "hi", "session_id": "not-a-session"}),
            "session_id",
        ),
        ("blank question", json!({"question": "   "}), "question"),
        ("no question", json!({"user_id": "u1"}), "question"),
        (
            "question not a string",
            json!({"question": ["a"]}),
            "question",
        ),
    ];
    for (case, body, field) in cases {
        let reply = ask(&app, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            reply.body
        );
        assert_eq!(field_of(&reply), field, "{case}: {}", reply.body);
    }
    let depth = app.services.queue.depth("chat").await.unwrap();
    assert_eq!(depth.ready, 0, "nothing refused was queued");
}

/// A receiver subscribed to `events`, and the webhook id.
async fn subscriber(app: &TestApp, events: &[EventType]) -> (Receiver, String) {
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook = testkit::register_webhook(
        &app.services,
        &receiver.url(),
        events.iter().map(|e| EventFilter::Only(*e)).collect(),
        SECRET,
    )
    .await;
    (receiver, webhook.webhook_id.to_string())
}

fn events_of(receiver: &Receiver, event_type: &str) -> Vec<Value> {
    receiver
        .requests()
        .iter()
        .map(testkit::Recorded::json)
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

async fn wait_for_event(receiver: &Receiver, event_type: &str) -> Value {
    wait_until(&format!("a {event_type} event"), PATIENCE, || async {
        events_of(receiver, event_type).into_iter().next()
    })
    .await
}

#[tokio::test]
async fn a_session_is_escalated_and_ended_once_and_subscribers_hear_of_it() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let (receiver, _) =
        subscriber(&app, &[EventType::ChatEscalated, EventType::SessionEnded]).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let answered = ask(
        &app,
        json!({"question": "How do I reset my password?", "user_id": "u42"}),
    )
    .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(answered.data()["escalated"], false, "{}", answered.body);
    let session_id = answered.data()["session_id"].as_str().unwrap().to_owned();
    let session_path = format!("/api/v1/chat/sessions/{session_id}");

    let escalated = app
        .admin_json(
            Method::POST,
            &format!("{session_path}/escalate"),
            &json!({"reason": "Customer asked for a refund", "priority": "high"}),
        )
        .await;

    assert_eq!(escalated.status, StatusCode::OK, "{}", escalated.body);
    let e = escalated.data();
    assert_eq!(e["session_id"], session_id.as_str());
    assert_eq!(e["escalated"], true);
    assert_eq!(e["escalation"]["reason"], "Customer asked for a refund");
    assert_eq!(e["escalation"]["priority"], "high");
    assert_eq!(e["escalation"]["operator_id"], "op_1", "{e}");
    assert_eq!(e["escalation"]["operator_name"], "Jane Smith");
    let event = wait_for_event(&receiver, "chat.escalated").await;
    let data = &event["data"];
    assert_eq!(data["session_id"], session_id.as_str());
    assert_eq!(data["user_id"], "u42");
    assert_eq!(data["escalation_reason"], "Customer asked for a refund");
    assert_eq!(data["escalation_priority"], "high");
    assert_eq!(data["assigned_operator_id"], "op_1");
    assert_eq!(data["assigned_operator_name"], "Jane Smith");
    assert_eq!(data["last_message"], "How do I reset my password?");
    assert!(
        data["conversation_summary"]
            .as_str()
            .is_some_and(|s| s.contains("How do I reset my password?")),
        "{data}"
    );
    let session = app.admin_get(&session_path).await;
    assert_eq!(session.data()["escalated"], true);
    assert_eq!(session.data()["escalation"]["operator_id"], "op_1");

    let ended = app
        .send(app.admin(Method::POST, &format!("{session_path}/end")))
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.data()["status"], "ended");
    assert_eq!(ended.data()["end_reason"], "requested");
    assert!(ended.data()["ended_at"].is_string());
    let again = app
        .send(app.admin(Method::POST, &format!("{session_path}/end")))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.data()["ended_at"], ended.data()["ended_at"]);

    let event = wait_for_event(&receiver, "session.ended").await;
    let data = &event["data"];
    assert_eq!(data["session_id"], session_id.as_str());
    assert_eq!(data["reason"], "requested");
    assert_eq!(data["messages_count"], 1);
    assert_eq!(data["escalated"], true);
    // Every session job ever queued has run, and there was one.
    let depth = wait_until("the session queue to drain", PATIENCE, || async {
        let d = app.services.queue.depth("session").await.unwrap();
        (d.ready + d.in_flight + d.scheduled == 0).then_some(d)
    })
    .await;
    assert_eq!(
        depth.processed_total, 1,
        "one session.ended job for two /end"
    );
    assert_eq!(events_of(&receiver, "session.ended").len(), 1);

    let late = app
        .admin_json(
            Method::POST,
            &format!("{session_path}/escalate"),
            &json!({"reason": "again", "priority": "low"}),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert_eq!(late.error_code(), "SESSION_ENDED");
    let late = ask(
        &app,
        json!({"question": "Still there?", "session_id": session_id}),
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert_eq!(late.error_code(), "SESSION_ENDED");
    assert_eq!(events_of(&receiver, "chat.escalated").len(), 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn escalating_or_ending_an_unknown_session_or_with_bad_input_is_refused() {
    let app = spawn_app_with(|s| s.chat.completion_wait = Duration::ZERO).await;
    let unknown = SessionId::generate();
    for path in [
        format!("/api/v1/chat/sessions/{unknown}/escalate"),
        "/api/v1/chat/sessions/nonsense/escalate".to_owned(),
    ] {
        let reply = app
            .admin_json(
                Method::POST,
                &path,
                &json!({"reason": "r", "priority": "high"}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "NOT_FOUND");
    }
    for path in [
        format!("/api/v1/chat/sessions/{unknown}/end"),
        format!("/api/v1/chat/sessions/{unknown}"),
    ] {
        let reply = app
            .send(app.admin(
                if path.ends_with("/end") {
                    Method::POST
                } else {
                    Method::GET
                },
                &path,
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
    }

    let queued = ask(&app, json!({"question": "hello", "user_id": "u1"})).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    let session_id = queued.data()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/chat/sessions/{session_id}/escalate");
    for (case, body, field) in [
        (
            "unknown priority",
            json!({"reason": "r", "priority": "critical"}),
            "priority",
        ),
        (
            "blank reason",
            json!({"reason": " ", "priority": "low"}),
            "reason",
        ),
        ("no reason", json!({"priority": "low"}), "reason"),
    ] {
        let reply = app.admin_json(Method::POST, &path, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            reply.body
        );
        assert_eq!(field_of(&reply), field, "{case}: {}", reply.body);
    }
    let session = app
        .admin_get(&format!("/api/v1/chat/sessions/{session_id}"))
        .await;
    assert_eq!(session.data()["escalated"], false, "{}", session.body);
}

#[tokio::test]
async fn chat_and_knowledge_routes_need_the_admin_key() {
    let app = spawn_app().await;
    let session = SessionId::generate();
    let requests = [
        (Method::POST, COMPLETIONS.to_owned()),
        (
            Method::GET,
            format!("/api/v1/chat/jobs/{}", JobId::generate()),
        ),
        (Method::GET, format!("/api/v1/chat/sessions/{session}")),
        (
            Method::POST,
            format!("/api/v1/chat/sessions/{session}/escalate"),
        ),
        (Method::POST, format!("/api/v1/chat/sessions/{session}/end")),
        (
            Method::GET,
            "/api/v1/chat/sessions?status=escalated".to_owned(),
        ),
        (
            Method::POST,
            format!("/api/v1/chat/sessions/{session}/reply"),
        ),
        (
            Method::POST,
            format!("/api/v1/chat/sessions/{session}/handback"),
        ),
        (
            Method::POST,
            format!("/api/v1/chat/sessions/{session}/feedback"),
        ),
        (Method::GET, "/api/v1/knowledge/gaps".to_owned()),
        (Method::POST, DOCUMENTS.to_owned()),
        (Method::GET, DOCUMENTS.to_owned()),
        (Method::GET, format!("{DOCUMENTS}/doc_x")),
        (Method::DELETE, format!("{DOCUMENTS}/doc_x")),
        (
            Method::GET,
            "/api/v1/knowledge/search?q=password".to_owned(),
        ),
    ];
    for (method, path) in requests {
        for auth in [None, Some("Bearer wrong-key")] {
            let mut request = app
                .http
                .request(method.clone(), app.url(&path))
                .header("content-type", "application/json")
                .body(r#"{"question":"hi","name":"n","text":"t","reason":"r"}"#);
            if let Some(value) = auth {
                request = request.header("authorization", value);
            }
            let reply = app.send(request).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}: {}",
                reply.body
            );
        }
    }
    assert_eq!(app.services.queue.depth("chat").await.unwrap().ready, 0);
    assert_eq!(app.services.queue.depth("ingest").await.unwrap().ready, 0);
}

#[tokio::test]
async fn a_document_deleted_while_it_is_being_fetched_stays_deleted() {
    let app = spawn_app().await;
    let source = spawn_receiver(Behaviour::Delay(Duration::from_secs(1))).await;
    let webhook =
        testkit::register_webhook(&app.services, &source.url(), vec![EventFilter::All], SECRET)
            .await;
    let worker = spawn_worker(app.services.clone()).await;
    let body = json!({
        "event_type": "document.upload",
        "data": {
            "document_url": source.url(),
            "document_name": "Slow",
            "document_format": "text",
            "external_document_id": "kb_slow"
        }
    })
    .to_string();
    let reply = app
        .post_signed(
            "/api/v1/webhooks/incoming/document",
            webhook.webhook_id.as_str(),
            SECRET,
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.data()["document_id"].as_str().unwrap().to_owned();

    // The worker is fetching (the source answers after a second).
    source.wait_for(1, PATIENCE).await;
    let deleted = app
        .send(app.admin(Method::DELETE, &format!("{DOCUMENTS}/{id}")))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);

    wait_until("the ingestion to finish", PATIENCE, || async {
        let d = app.services.queue.depth("ingest").await.unwrap();
        (d.processed_total + d.dead >= 1 && d.ready + d.in_flight + d.scheduled == 0).then_some(())
    })
    .await;
    assert_eq!(
        app.admin_get(&format!("{DOCUMENTS}/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        found(&app, "slowly").await.is_empty(),
        "deleted stays unsearchable"
    );
    worker.shutdown().await;
}

/// Checks the `sha256=` signature over the raw body, as a receiver that
/// verifies raw bytes would.
fn assert_signed(request: &testkit::Recorded) {
    let secret = shared::webhooks::signing::Secret::parse(SECRET).unwrap();
    let verified = shared::webhooks::signing::verify_incoming(
        &secret,
        request.header("x-webhook-signature"),
        request.header("x-webhook-timestamp"),
        &request.body,
        chrono::Utc::now().timestamp(),
        300,
        true,
    );
    assert_eq!(
        verified,
        Ok(shared::webhooks::signing::SignatureForm::Timestamped),
        "{:?}",
        request.headers
    );
}

async fn post(app: &TestApp, path: &str, body: Value) -> Reply {
    app.admin_json(Method::POST, path, &body).await
}

#[tokio::test]
async fn a_person_has_an_escalated_session_until_it_is_handed_back() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let (receiver, _) = subscriber(
        &app,
        &[
            EventType::ChatResponseGenerated,
            EventType::ChatMessageForwarded,
            EventType::ChatOperatorReplied,
        ],
    )
    .await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let question = json!({"question": "How do I reset my password?", "user_id": "u42"});
    let first = ask(&app, question.clone()).await;
    assert_eq!(first.data()["status"], "done", "{}", first.body);
    let session_id = first.data()["session_id"].as_str().unwrap().to_owned();
    let session_path = format!("/api/v1/chat/sessions/{session_id}");
    let mut in_session = question.clone();
    in_session["session_id"] = json!(session_id);

    // Given an escalated session,
    let escalated = post(
        &app,
        &format!("{session_path}/escalate"),
        json!({"reason": "VIP customer"}),
    )
    .await;
    assert_eq!(escalated.status, StatusCode::OK, "{}", escalated.body);

    // when the user asks again, the bot does not answer: the question goes
    // to the operator, and the answer says a person has the conversation.
    let forwarded = ask(&app, in_session.clone()).await;
    assert_eq!(forwarded.status, StatusCode::OK, "{}", forwarded.body);
    let data = forwarded.data();
    assert_eq!(data["status"], "forwarded", "{data}");
    assert_eq!(data["escalated"], true);
    assert_eq!(data["operator_id"], "op_1");
    assert!(
        data["notice"].as_str().unwrap().contains("operator"),
        "{data}"
    );
    assert!(data.get("answer").is_none(), "{data}");
    let event = wait_for_event(&receiver, "chat.message.forwarded").await;
    assert_eq!(
        event["data"],
        json!({"session_id": session_id, "user_id": "u42",
               "message": "How do I reset my password?", "operator_id": "op_1"})
    );
    assert_eq!(events_of(&receiver, "chat.response.generated").len(), 1);

    // The operator replies: recorded, delivered signed to the subscriber.
    let replied = post(
        &app,
        &format!("{session_path}/reply"),
        json!({"message": "Hi, this is Jane. I have sent you a reset link."}),
    )
    .await;
    assert_eq!(replied.status, StatusCode::ACCEPTED, "{}", replied.body);
    let r = replied.data();
    assert_eq!(r["status"], "queued");
    assert_eq!(r["operator_id"], "op_1");
    assert_eq!(r["deliveries"], 1);
    let event = wait_for_event(&receiver, "chat.operator.replied").await;
    assert_eq!(event["event_id"], r["event_id"]);
    assert_eq!(
        event["data"],
        json!({"session_id": session_id, "user_id": "u42",
               "message": "Hi, this is Jane. I have sent you a reset link.", "operator_id": "op_1"})
    );
    let delivery = receiver
        .requests()
        .into_iter()
        .find(|r| r.json()["event_type"] == "chat.operator.replied")
        .unwrap();
    assert_signed(&delivery);
    let session = app.admin_get(&session_path).await;
    let history = session.data()["history"].as_array().unwrap().clone();
    let last = history.last().unwrap();
    assert_eq!(last["role"], "operator", "{last}");
    assert_eq!(last["operator_id"], "op_1");
    assert_eq!(last["job_id"], r["reply_id"]);
    assert_eq!(history[history.len() - 2]["role"], "user");

    // Handed back, the bot answers again; the history stays.
    let handed_back = app
        .send(app.admin(Method::POST, &format!("{session_path}/handback")))
        .await;
    assert_eq!(handed_back.status, StatusCode::OK, "{}", handed_back.body);
    assert_eq!(handed_back.data()["escalated"], false);
    assert!(handed_back.data()["escalation"].is_null());
    assert!(handed_back.data()["handed_back_at"].is_string());
    assert_eq!(
        handed_back.data()["history"].as_array().unwrap().len(),
        history.len()
    );
    let answered = ask(&app, in_session.clone()).await;
    assert_eq!(answered.data()["status"], "done", "{}", answered.body);
    assert_eq!(answered.data()["escalated"], false);
    assert!(answered.data()["answer"].is_string());
    assert_eq!(events_of(&receiver, "chat.response.generated").len(), 2);
    assert_eq!(events_of(&receiver, "chat.message.forwarded").len(), 1);

    // The bot has it: no reply, no second hand-back.
    for (path, body) in [
        (
            format!("{session_path}/reply"),
            json!({"message": "hello?"}),
        ),
        (format!("{session_path}/handback"), json!({})),
    ] {
        let refused = post(&app, &path, body).await;
        assert_eq!(
            refused.status,
            StatusCode::CONFLICT,
            "{path}: {}",
            refused.body
        );
        assert_eq!(refused.error_code(), "SESSION_NOT_ESCALATED");
    }
    // Ended, or unknown.
    post(
        &app,
        &format!("{session_path}/escalate"),
        json!({"reason": "again"}),
    )
    .await;
    app.send(app.admin(Method::POST, &format!("{session_path}/end")))
        .await;
    let ended = post(
        &app,
        &format!("{session_path}/reply"),
        json!({"message": "still there?"}),
    )
    .await;
    assert_eq!(ended.status, StatusCode::CONFLICT, "{}", ended.body);
    assert_eq!(ended.error_code(), "SESSION_ENDED");
    for path in [
        format!("/api/v1/chat/sessions/{}/reply", SessionId::generate()),
        "/api/v1/chat/sessions/nonsense/reply".to_owned(),
        format!("/api/v1/chat/sessions/{}/handback", SessionId::generate()),
    ] {
        let unknown = post(&app, &path, json!({"message": "hi"})).await;
        assert_eq!(
            unknown.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            unknown.body
        );
    }
    let blank = post(
        &app,
        &format!("{session_path}/reply"),
        json!({"message": "  "}),
    )
    .await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&blank), "message");
    worker.shutdown().await;
}

#[tokio::test]
async fn escalated_sessions_are_listed_and_the_first_reply_takes_an_unassigned_one() {
    // No roster: escalations wait for an operator to take them.
    let app = spawn_app_with(|s| {
        s.chat.completion_wait = Duration::ZERO;
        s.chat.operators = Vec::new();
    })
    .await;
    let mut sessions = Vec::new();
    for n in 0..3 {
        let queued = ask(&app, json!({"question": format!("question {n}")})).await;
        sessions.push(queued.data()["session_id"].as_str().unwrap().to_owned());
    }
    let path = |id: &str, action: &str| format!("/api/v1/chat/sessions/{id}/{action}");
    for id in &sessions[..2] {
        let escalated = post(&app, &path(id, "escalate"), json!({"reason": "r"})).await;
        assert_eq!(escalated.status, StatusCode::OK, "{}", escalated.body);
        assert!(escalated.data()["escalation"]["operator_id"].is_null());
    }
    let listed = |query: &'static str| {
        let app = &app;
        async move {
            let reply = app
                .admin_get(&format!("/api/v1/chat/sessions{query}"))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
            let ids: Vec<String> = reply
                .data()
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_owned())
                .collect();
            (
                ids,
                reply.body["meta"]["pagination"]["total"].as_u64().unwrap(),
            )
        }
    };

    // Longest waiting first, paged.
    let waiting = "?status=escalated&assigned=false";
    assert_eq!(listed(waiting).await, (sessions[..2].to_vec(), 2));
    assert_eq!(
        listed("?status=escalated&assigned=false&limit=1&offset=1").await,
        (vec![sessions[1].clone()], 2)
    );
    assert_eq!(listed("?status=escalated&assigned=true").await.1, 0);
    assert_eq!(listed("").await.1, 3, "all active sessions");

    // The first operator to reply takes the session.
    let anonymous = post(&app, &path(&sessions[0], "reply"), json!({"message": "Hi"})).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        anonymous.body
    );
    assert_eq!(field_of(&anonymous), "operator_id");
    let taken = post(
        &app,
        &path(&sessions[0], "reply"),
        json!({"message": "Hi, Max here", "operator_id": "op_max"}),
    )
    .await;
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.body);
    assert_eq!(taken.data()["operator_id"], "op_max");
    assert_eq!(taken.data()["deliveries"], 0);
    assert_eq!(listed(waiting).await, (vec![sessions[1].clone()], 1));
    let assigned = app
        .admin_get("/api/v1/chat/sessions?status=escalated&assigned=true")
        .await;
    assert_eq!(assigned.data()[0]["session_id"], sessions[0].as_str());
    assert_eq!(assigned.data()[0]["escalation"]["operator_id"], "op_max");
    // Then a reply without operator_id is theirs.
    let again = post(
        &app,
        &path(&sessions[0], "reply"),
        json!({"message": "Done"}),
    )
    .await;
    assert_eq!(again.data()["operator_id"], "op_max", "{}", again.body);

    // Handing back and ending take sessions off the list.
    let back = post(&app, &path(&sessions[1], "handback"), json!({})).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    app.send(app.admin(Method::POST, &path(&sessions[0], "end")))
        .await;
    assert_eq!(listed("?status=escalated").await, (Vec::new(), 0));
    assert_eq!(listed("?status=active").await.1, 2);

    for query in [
        "?status=bogus",
        "?status=escalated&assigned=maybe",
        "?status=active&assigned=true",
        "?status=escalated&limit=0",
        "?status=escalated&limit=101",
    ] {
        let bad = app
            .admin_get(&format!("/api/v1/chat/sessions{query}"))
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}: {}", bad.body);
        assert_eq!(bad.error_code(), "INVALID_QUERY");
    }
}

async fn metric(app: &TestApp, line_start: &str) -> u64 {
    let reply = app.send(app.admin(Method::GET, "/metrics")).await;
    let text = reply.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn an_answer_is_rated_once_a_second_rating_replacing_the_first() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let answered = ask(&app, json!({"question": "How do I reset my password?"})).await;
    let job_id = answered.data()["job_id"].as_str().unwrap().to_owned();
    let session_id = answered.data()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/chat/sessions/{session_id}/feedback");

    let up = post(&app, &path, json!({"job_id": job_id, "rating": "up"})).await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert_eq!(up.data()["job_id"], job_id.as_str());
    assert_eq!(up.data()["rating"], "up");
    assert_eq!(up.data()["replaced"], false);

    // The same answer named by its place in the history: replaced.
    let down = post(
        &app,
        &path,
        json!({"turn": 1, "rating": "down", "comment": "The link never came"}),
    )
    .await;
    assert_eq!(down.status, StatusCode::OK, "{}", down.body);
    assert_eq!(down.data()["job_id"], job_id.as_str());
    assert_eq!(down.data()["replaced"], true);
    let session = app
        .admin_get(&format!("/api/v1/chat/sessions/{session_id}"))
        .await;
    let history = session.data()["history"].as_array().unwrap();
    assert!(history[0].get("feedback").is_none(), "{}", session.body);
    assert_eq!(
        history[1]["feedback"]["rating"], "down",
        "one feedback per answer: {}",
        session.body
    );
    assert_eq!(history[1]["feedback"]["comment"], "The link never came");

    // By the event id an integration got with chat.response.generated.
    let event_id = shared::ids::EventId::derived(&JobId::parse(&job_id).unwrap(), "response");
    let by_event = post(&app, &path, json!({"event_id": event_id, "rating": "down"})).await;
    assert_eq!(by_event.status, StatusCode::OK, "{}", by_event.body);
    assert_eq!(by_event.data()["replaced"], true);

    for (case, body, field) in [
        (
            "a user's message",
            json!({"turn": 0, "rating": "up"}),
            "turn",
        ),
        (
            "past the history",
            json!({"turn": 9, "rating": "up"}),
            "turn",
        ),
        (
            "another job",
            json!({"job_id": JobId::generate(), "rating": "up"}),
            "job_id",
        ),
        ("no answer named", json!({"rating": "up"}), "job_id"),
        (
            "two names",
            json!({"turn": 1, "job_id": job_id, "rating": "up"}),
            "job_id",
        ),
        ("bad rating", json!({"turn": 1, "rating": "meh"}), "rating"),
        (
            "long comment",
            json!({"turn": 1, "rating": "up", "comment": "x".repeat(2001)}),
            "comment",
        ),
    ] {
        let refused = post(&app, &path, body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            refused.body
        );
        assert_eq!(field_of(&refused), field, "{case}: {}", refused.body);
    }
    let unknown = post(
        &app,
        &format!("/api/v1/chat/sessions/{}/feedback", SessionId::generate()),
        json!({"turn": 1, "rating": "up"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);

    // Ratings count once per change; turn outcomes are counted too.
    assert_eq!(
        metric(&app, "supportrag_chat_feedback_total{rating=\"up\"}").await,
        1
    );
    assert_eq!(
        metric(&app, "supportrag_chat_feedback_total{rating=\"down\"}").await,
        1
    );
    assert_eq!(
        metric(&app, "supportrag_chat_turns_total{outcome=\"answered\"}").await,
        1
    );
    assert_eq!(
        metric(
            &app,
            "supportrag_chat_turns_total{outcome=\"offered_person\"}"
        )
        .await,
        0
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn knowledge_gaps_group_the_questions_handed_over_for_low_confidence() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let before = chrono::Utc::now();
    let questions = [
        ("What is the weather in Paris tomorrow?", true),
        ("How do I cancel my subscription?", true),
        ("How do I reset my password?", false),
        ("cancel subscriptions", true),
        ("I want to talk to a human operator", true),
        ("How can I cancel the subscription", true),
    ];
    let mut cancel_sessions = Vec::new();
    for (question, escalated) in questions {
        let reply = ask(&app, json!({"question": question})).await;
        assert_eq!(
            reply.data()["escalated"],
            escalated,
            "{question}: {}",
            reply.body
        );
        if question.contains("cancel") {
            cancel_sessions.push(reply.data()["session_id"].clone());
        }
    }

    let gaps = app.admin_get("/api/v1/knowledge/gaps").await;
    assert_eq!(gaps.status, StatusCode::OK, "{}", gaps.body);
    // A request for a person is no gap in the knowledge base.
    assert_eq!(gaps.body["meta"]["pagination"]["total"], 2, "{}", gaps.body);
    let top = &gaps.data()[0];
    assert_eq!(top["representative"], "How can I cancel the subscription");
    assert_eq!(top["count"], 3);
    let mut examples = top["session_ids"].as_array().unwrap().clone();
    examples.reverse();
    assert_eq!(examples, cancel_sessions);
    assert!(top["last_seen"].as_str().unwrap() >= top["first_seen"].as_str().unwrap());
    assert_eq!(
        gaps.data()[1]["representative"],
        "What is the weather in Paris tomorrow?"
    );
    assert_eq!(gaps.data()[1]["count"], 1);

    let second = app
        .admin_get("/api/v1/knowledge/gaps?limit=1&offset=1")
        .await;
    assert_eq!(second.data().as_array().unwrap().len(), 1);
    assert_eq!(second.data()[0]["count"], 1);
    let since =
        (before - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = app
        .admin_get(&format!("/api/v1/knowledge/gaps?since={since}"))
        .await;
    assert_eq!(
        recent.body["meta"]["pagination"]["total"], 2,
        "{}",
        recent.body
    );
    let later = app
        .admin_get("/api/v1/knowledge/gaps?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(
        later.body["meta"]["pagination"]["total"], 0,
        "{}",
        later.body
    );
    let bad = app
        .admin_get("/api/v1/knowledge/gaps?since=yesterday")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "INVALID_QUERY");

    assert_eq!(
        metric(&app, "supportrag_chat_turns_total{outcome=\"handed_over\"}").await,
        5
    );
    assert_eq!(
        metric(&app, "supportrag_chat_turns_total{outcome=\"answered\"}").await,
        1
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn answers_fall_into_bands_a_middle_one_offering_a_person_and_a_hand_over_keeping_its_sources()
 {
    // Every answer with content lands in the middle band: answered, with
    // sources, a person offered, nobody paged
    let app = spawn_app_with(|s| {
        s.chat.escalation_threshold = 0.0;
        s.chat.offer_person_threshold = 1.0;
    })
    .await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let (receiver, _) = subscriber(&app, &[EventType::ChatEscalated]).await;
    let offered = ask(&app, json!({"question": "How do I reset my password?"})).await;
    assert_eq!(offered.status, StatusCode::OK, "{}", offered.body);
    let data = offered.data();
    assert_eq!(data["escalated"], false, "{data}");
    assert_eq!(data["sources"][0]["document_id"], id.as_str(), "{data}");
    let answer = data["answer"].as_str().expect("answer");
    assert!(answer.contains("reply \"operator\""), "{answer}");
    let russian = ask(&app, json!({"question": "Как сбросить пароль?"})).await;
    let answer = russian.data()["answer"].as_str().expect("answer");
    assert!(answer.contains("напишите «оператор»"), "{answer}");
    worker.shutdown().await;

    // Every answer below 1.0 is handed over: the user reads the hand-over,
    // and the sources travel with the turn and with chat.escalated
    let app = spawn_app_with(|s| {
        s.chat.escalation_threshold = 1.0;
        s.chat.offer_person_threshold = 1.0;
    })
    .await;
    let worker = spawn_worker(app.services.clone()).await;
    let id = upload_text(&app, "Password reset", PASSWORD_GUIDE, "kb_password").await;
    indexed(&app, &id).await;
    let (receiver_low, _) = subscriber(&app, &[EventType::ChatEscalated]).await;
    let handed = ask(&app, json!({"question": "How do I reset my password?"})).await;
    let data = handed.data();
    assert_eq!(data["escalated"], true, "{data}");
    assert!(
        data["answer"]
            .as_str()
            .is_some_and(|a| a.contains("operator")),
        "{data}"
    );
    assert_eq!(data["sources"][0]["document_id"], id.as_str(), "{data}");
    let escalated = wait_for_event(&receiver_low, "chat.escalated").await;
    assert_eq!(
        escalated["data"]["sources"][0]["document_id"],
        id.as_str(),
        "{escalated}"
    );
    assert!(events_of(&receiver, "chat.escalated").is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_the_api_see_each_re_index_at_once_and_a_delete_everywhere() {
    let app = spawn_app().await;
    // Each worker with services of its own: its own search replica, as a
    // worker process has.
    let workers: Vec<shared::services::Services> = (0..2)
        .map(|_| shared::services::Services::connect((*app.services.settings).clone()).unwrap())
        .collect();
    let mut running = Vec::new();
    for services in &workers {
        running.push(spawn_worker(services.clone()).await);
    }
    let id = upload_text(&app, "Flip", "common alpha text", "kb_flip").await;
    indexed(&app, &id).await;

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for services in &workers {
        let (knowledge, done) = (services.knowledge.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut searches = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let hits = knowledge.search("common", 10).await.unwrap().hits;
                assert_eq!(hits.len(), 1, "both versions or neither: {hits:?}");
                searches += 1;
            }
            searches
        }));
    }
    for round in 0..6 {
        let word = if round % 2 == 0 { "beta" } else { "alpha" };
        let reply = upload(
            &app,
            json!({"name": "Flip", "text": format!("common {word} text"), "external_document_id": "kb_flip"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let staging = reply.data()["staging_id"].as_str().unwrap().to_owned();
        // The API's replica, meanwhile, over HTTP.
        while app.admin_get(&format!("{DOCUMENTS}/{id}")).await.data()["staging_id"] != staging
            || app.admin_get(&format!("{DOCUMENTS}/{id}")).await.data()["status"] != "indexed"
        {
            assert_eq!(found(&app, "common").await, vec![id.clone()]);
        }
        // Announced as indexed: every replica finds the new text (a search
        // waits up to a second for its replica; a loaded test machine may
        // need longer).
        wait_until(
            "the API's replica to find the new text",
            PATIENCE,
            || async { (found(&app, word).await == vec![id.clone()]).then_some(()) },
        )
        .await;
        for services in &workers {
            wait_until(
                "a worker's replica to find the new text",
                PATIENCE,
                || async {
                    let hits = services.knowledge.search(word, 5).await.unwrap().hits;
                    (hits.len() == 1).then_some(())
                },
            )
            .await;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }

    let deleted = app
        .send(app.admin(Method::DELETE, &format!("{DOCUMENTS}/{id}")))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.data()["removed_from_search"], true);
    assert!(found(&app, "common").await.is_empty());
    for services in &workers {
        wait_until(
            "a worker's replica to drop the document",
            PATIENCE,
            || async {
                let hits = services.knowledge.search("common", 5).await.unwrap().hits;
                hits.is_empty().then_some(())
            },
        )
        .await;
    }
    for worker in running {
        worker.shutdown().await;
    }
}
