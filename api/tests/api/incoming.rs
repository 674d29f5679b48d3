//! Incoming webhooks as an integrator sends them: the seed's
//! examples signed both ways, sessions per thread, idempotent repeats, every
//! broken rule answering its own code with nothing queued, and Redis down.
//!
//! No worker runs here: what matters is what lands in Redis.

use std::time::Duration;

use crate::common::{Reply, TestApp, spawn_app, spawn_app_with};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::catalog::EventFilter;
use shared::webhooks::signing::{Secret, sign_incoming_body_only, sign_incoming_timestamped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "slack_secret_key_12345";
const MESSAGE: &str = "/api/v1/webhooks/incoming/message";
const DOCUMENT: &str = "/api/v1/webhooks/incoming/document";

/// The seed's Slack example, byte for byte as its `curl -d` sends it.
const SEED_MESSAGE: &str = r#"{
    "event_type": "message.received",
    "timestamp": "2025-01-09T12:00:00Z",
    "source": "slack",
    "data": {
      "user_id": "U123456789",
      "user_name": "John Doe",
      "message": "Как работает документирование?",
      "thread_id": "1234567890.123456",
      "channel": "support",
      "external_message_id": "1234567890.123456"
    },
    "metadata": {
      "workspace": "myworkspace",
      "correlation_id": "corr_abc123"
    }
  }"#;

/// The seed's document example, byte for byte.
const SEED_DOCUMENT: &str = r#"{
    "event_type": "document.upload",
    "timestamp": "2025-01-09T12:00:00Z",
    "source": "knowledge_management_system",
    "data": {
      "document_url": "https://company.example.com/docs/policy-2025.pdf",
      "document_name": "Company Policy 2025",
      "document_format": "pdf",
      "external_document_id": "doc_ext_policy_001",
      "metadata": {
        "category": "policies",
        "department": "HR",
        "version": "2.1",
        "author": "HR Department",
        "effective_date": "2025-01-01"
      }
    }
  }"#;

/// One registered integration, sending as the seed's senders do.
struct Integrator {
    id: String,
    secret: Secret,
}

impl Integrator {
    async fn register(app: &TestApp) -> Self {
        let webhook = testkit::register_webhook(
            &app.services,
            "http://127.0.0.1:9/outbound",
            vec![EventFilter::All],
            SECRET,
        )
        .await;
        Self {
            id: webhook.webhook_id.to_string(),
            secret: Secret::parse(SECRET).expect("test secret"),
        }
    }

    /// The three headers for `body`, signed over `"<now>.<body>"`.
    fn headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let now = Utc::now().timestamp();
        vec![
            ("X-Webhook-ID", self.id.clone()),
            ("X-Webhook-Timestamp", now.to_string()),
            (
                "X-Webhook-Signature",
                sign_incoming_timestamped(&self.secret, now, body),
            ),
        ]
    }

    /// Signed over the body alone, as the seed's Python example does.
    fn headers_body_only(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("X-Webhook-ID", self.id.clone()),
            ("X-Webhook-Timestamp", Utc::now().timestamp().to_string()),
            (
                "X-Webhook-Signature",
                sign_incoming_body_only(&self.secret, body),
            ),
        ]
    }

    async fn send(&self, app: &TestApp, path: &str, body: &str) -> Reply {
        post(app, path, &self.headers(body.as_bytes()), body).await
    }
}

/// POSTs `body` as JSON with exactly these extra headers.
async fn post(app: &TestApp, path: &str, headers: &[(&str, String)], body: &str) -> Reply {
    post_as(
        app,
        path,
        headers,
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await
}

async fn post_as(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Reply {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    app.send(request).await
}

/// Jobs in a queue, whatever their state.
async fn queued(app: &TestApp, queue: &str) -> u64 {
    let depth = app.services.queue.depth(queue).await.expect("queue depth");
    depth.ready + depth.scheduled + depth.in_flight
}

/// The payloads of the jobs in a queue's stream, oldest first.
async fn jobs(app: &TestApp, queue: &str) -> Vec<Value> {
    let stream = app.services.queue.keys(queue).stream;
    let mut conn = app.services.queue.connection();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
        .map(|raw| serde_json::from_str(&raw).expect("a job is JSON"))
        .collect()
}

fn message_body(thread: &str, external_id: &str, text: &str) -> String {
    json!({
        "event_type": "message.received",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "slack",
        "data": {
            "user_id": "U1",
            "user_name": "John Doe",
            "message": text,
            "thread_id": thread,
            "channel": "support",
            "external_message_id": external_id
        },
        "metadata": {"workspace": "w", "correlation_id": "corr_1"}
    })
    .to_string()
}

/// A valid message of exactly `len` bytes (padded in its metadata, which
/// carries fields the API does not know).
fn padded_message(external_id: &str, len: usize) -> String {
    let mut value: Value = serde_json::from_str(&message_body("T1", external_id, "Hello")).unwrap();
    let bare = value.to_string().len() + r#","padding":"""#.len();
    value["metadata"]["padding"] = json!("x".repeat(len - bare));
    let body = value.to_string();
    assert_eq!(body.len(), len);
    body
}

fn document_body(url: &str, external_id: &str) -> String {
    json!({
        "event_type": "document.upload",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "kms",
        "data": {
            "document_url": url,
            "document_name": "Policy",
            "document_format": "pdf",
            "external_document_id": external_id,
            "metadata": {"category": "policies"}
        }
    })
    .to_string()
}

fn id_with_prefix<'a>(value: &'a Value, prefix: &str) -> &'a str {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("expected an id, got {value}"));
    assert!(id.starts_with(prefix), "{id} should start with {prefix}");
    id
}

fn assert_accepted_message(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let data = reply.data();
    id_with_prefix(&data["webhook_event_id"], "evt_");
    assert_eq!(data["status"], "accepted");
    id_with_prefix(&data["session_id"], "sess_");
    assert!(data["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(reply.body["meta"]["trace_id"].is_string(), "{}", reply.body);
}

#[tokio::test]
async fn the_seed_message_signed_with_a_timestamp_is_accepted_and_queued_once() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;

    let reply = slack.send(&app, MESSAGE, SEED_MESSAGE).await;

    assert_accepted_message(&reply);
    assert_eq!(queued(&app, "chat").await, 1);
    let jobs = jobs(&app, "chat").await;
    let payload = &jobs[0]["payload"];
    assert_eq!(payload["message"], "Как работает документирование?");
    assert_eq!(payload["user_id"], "U123456789");
    assert_eq!(payload["session_id"], reply.data()["session_id"]);
    assert_eq!(
        payload["webhook_event_id"],
        reply.data()["webhook_event_id"]
    );
    assert_eq!(payload["webhook_id"], slack.id.as_str());
    assert_eq!(payload["correlation_id"], "corr_abc123");
    assert_eq!(
        jobs[0]["trace_id"], reply.body["meta"]["trace_id"],
        "the job carries the request's trace id"
    );
}

#[tokio::test]
async fn the_seed_message_signed_over_the_body_only_is_accepted_too() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;

    let headers = slack.headers_body_only(SEED_MESSAGE.as_bytes());
    let reply = post(&app, MESSAGE, &headers, SEED_MESSAGE).await;

    assert_accepted_message(&reply);
    assert_eq!(queued(&app, "chat").await, 1);
}

#[tokio::test]
async fn a_thread_keeps_its_session_and_another_thread_gets_its_own() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;

    let first = slack
        .send(&app, MESSAGE, &message_body("T1", "m1", "Hello"))
        .await;
    let same_thread = slack
        .send(&app, MESSAGE, &message_body("T1", "m2", "Still there?"))
        .await;
    let other_thread = slack
        .send(&app, MESSAGE, &message_body("T2", "m3", "Hi"))
        .await;

    for reply in [&first, &same_thread, &other_thread] {
        assert_accepted_message(reply);
    }
    assert_eq!(first.data()["session_id"], same_thread.data()["session_id"]);
    assert_ne!(
        first.data()["session_id"],
        other_thread.data()["session_id"]
    );
    assert_ne!(
        first.data()["webhook_event_id"],
        same_thread.data()["webhook_event_id"]
    );
    assert_eq!(queued(&app, "chat").await, 3);
}

#[tokio::test]
async fn the_seed_document_is_accepted_and_shows_as_staged() {
    let app = spawn_app().await;
    let kms = Integrator::register(&app).await;

    // The seed's host does not resolve offline: accepted on its form.
    let reply = kms.send(&app, DOCUMENT, SEED_DOCUMENT).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let data = reply.data();
    id_with_prefix(&data["webhook_event_id"], "evt_");
    assert_eq!(data["status"], "accepted");
    assert!(data["message"].as_str().is_some_and(|m| !m.is_empty()));
    let staging_id = id_with_prefix(&data["staging_id"], "staging_");
    let document_id = id_with_prefix(&data["document_id"], "doc_");
    assert!(reply.body["meta"]["trace_id"].is_string());
    assert_eq!(queued(&app, "ingest").await, 1);
    let jobs = jobs(&app, "ingest").await;
    assert_eq!(jobs[0]["payload"]["document_id"], document_id);
    assert_eq!(jobs[0]["payload"]["staging_id"], staging_id);

    let doc = app
        .admin_get(&format!("/api/v1/knowledge/documents/{document_id}"))
        .await;
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
    assert_eq!(doc.data()["status"], "staged");
    assert_eq!(doc.data()["name"], "Company Policy 2025");
    assert_eq!(doc.data()["external_document_id"], "doc_ext_policy_001");
    assert_eq!(doc.data()["staging_id"], staging_id);
    assert_eq!(doc.data()["metadata"]["department"], "HR");
}

#[tokio::test]
async fn a_document_on_loopback_is_accepted_in_tests() {
    let app = spawn_app().await;
    let kms = Integrator::register(&app).await;

    let reply = kms
        .send(
            &app,
            DOCUMENT,
            &document_body("http://127.0.0.1:9/policy.pdf", "loop_1"),
        )
        .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(queued(&app, "ingest").await, 1);
}

#[tokio::test]
async fn a_repeated_message_is_a_duplicate_with_the_first_event_id() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let first = slack.send(&app, MESSAGE, SEED_MESSAGE).await;
    assert_accepted_message(&first);

    let again = slack.send(&app, MESSAGE, SEED_MESSAGE).await;
    // Same external id, other text: still the same message.
    let edited = slack
        .send(
            &app,
            MESSAGE,
            &SEED_MESSAGE.replace("документирование", "индексирование"),
        )
        .await;

    for repeat in [&again, &edited] {
        assert_eq!(repeat.status, StatusCode::OK, "{}", repeat.body);
        assert_eq!(repeat.data()["status"], "duplicate");
        assert_eq!(
            repeat.data()["webhook_event_id"],
            first.data()["webhook_event_id"]
        );
        assert_eq!(repeat.data()["session_id"], first.data()["session_id"]);
    }
    assert_eq!(queued(&app, "chat").await, 1);
}

/// Sessions the API keeps open (waiting for messages or the idle sweep).
async fn active_sessions(app: &TestApp) -> usize {
    let keys = shared::keys::SessionKeys::new(&app.services.settings.redis.key_prefix);
    let mut conn = app.services.queue.connection();
    redis::cmd("ZCARD")
        .arg(keys.active())
        .query_async(&mut conn)
        .await
        .expect("ZCARD")
}

#[tokio::test]
async fn a_repeat_after_its_session_ended_opens_no_new_session() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let first = slack.send(&app, MESSAGE, SEED_MESSAGE).await;
    assert_accepted_message(&first);
    let session_id = first.data()["session_id"].as_str().unwrap();
    let ended = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/chat/sessions/{session_id}/end"),
        ))
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(active_sessions(&app).await, 0);

    let again = slack.send(&app, MESSAGE, SEED_MESSAGE).await;

    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.data()["status"], "duplicate");
    assert_eq!(again.data()["session_id"], session_id);
    assert_eq!(
        active_sessions(&app).await,
        0,
        "a repeat must not open an empty session (its idle end would be announced)"
    );
    assert_eq!(queued(&app, "chat").await, 1);

    // A new message in the thread starts a new session.
    let next = slack
        .send(
            &app,
            MESSAGE,
            &message_body("1234567890.123456", "m2", "Ещё вопрос"),
        )
        .await;
    assert_accepted_message(&next);
    assert_ne!(next.data()["session_id"], session_id);
    assert_eq!(active_sessions(&app).await, 1);
}

#[tokio::test]
async fn the_same_external_message_id_from_another_integration_is_not_a_duplicate() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let teams = Integrator::register(&app).await;

    let a = slack.send(&app, MESSAGE, SEED_MESSAGE).await;
    let b = teams.send(&app, MESSAGE, SEED_MESSAGE).await;

    assert_accepted_message(&a);
    assert_accepted_message(&b);
    assert_ne!(a.data()["session_id"], b.data()["session_id"]);
    assert_eq!(queued(&app, "chat").await, 2);
}

#[tokio::test]
async fn a_repeated_document_is_a_duplicate_but_a_changed_one_is_a_new_upload() {
    let app = spawn_app().await;
    let kms = Integrator::register(&app).await;
    let first = kms.send(&app, DOCUMENT, SEED_DOCUMENT).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);

    let again = kms.send(&app, DOCUMENT, SEED_DOCUMENT).await;

    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.data()["status"], "duplicate");
    for field in ["webhook_event_id", "staging_id", "document_id"] {
        assert_eq!(again.data()[field], first.data()[field], "{field}");
    }
    assert_eq!(queued(&app, "ingest").await, 1);

    let changed = SEED_DOCUMENT.replace("\"2.1\"", "\"2.2\"");
    let new_version = kms.send(&app, DOCUMENT, &changed).await;

    assert_eq!(
        new_version.status,
        StatusCode::ACCEPTED,
        "{}",
        new_version.body
    );
    assert_eq!(new_version.data()["status"], "accepted");
    assert_eq!(
        new_version.data()["document_id"],
        first.data()["document_id"],
        "the same external id is the same document"
    );
    assert_ne!(new_version.data()["staging_id"], first.data()["staging_id"]);
    assert_ne!(
        new_version.data()["webhook_event_id"],
        first.data()["webhook_event_id"]
    );
    assert_eq!(queued(&app, "ingest").await, 2);
}

/// Sends `body` to `path` with `headers` and expects `status` + `code`,
/// with nothing queued anywhere.
async fn refused(
    app: &TestApp,
    case: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    status: StatusCode,
    code: &str,
) -> Reply {
    let reply = post(app, path, headers, body).await;
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_eq!(reply.error_code(), code, "{case}: {}", reply.body);
    assert_nothing_queued(app, case).await;
    reply
}

async fn assert_nothing_queued(app: &TestApp, case: &str) {
    for queue in ["chat", "ingest"] {
        assert_eq!(queued(app, queue).await, 0, "{case}: a job was queued");
    }
}

/// Header name and value pairs, as sent.
type Headers = Vec<(&'static str, String)>;

fn without(headers: &[(&'static str, String)], name: &str) -> Headers {
    headers
        .iter()
        .filter(|(n, _)| *n != name)
        .cloned()
        .collect()
}

fn with(
    headers: &[(&'static str, String)],
    name: &'static str,
    value: String,
) -> Vec<(&'static str, String)> {
    let mut changed = without(headers, name);
    changed.push((name, value));
    changed
}

#[tokio::test]
async fn each_broken_authentication_rule_answers_401_with_its_code() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let body = SEED_MESSAGE;
    let good = slack.headers(body.as_bytes());
    let now = Utc::now().timestamp();
    let signed_at = |ts: i64| {
        with(
            &with(&good, "X-Webhook-Timestamp", ts.to_string()),
            "X-Webhook-Signature",
            sign_incoming_timestamped(&slack.secret, ts, body.as_bytes()),
        )
    };
    let other_body_signature =
        sign_incoming_timestamped(&slack.secret, now, b"{\"event_type\":\"other\"}");
    let other_secret = Secret::parse("another_secret_key_6789").unwrap();

    let cases: Vec<(&str, Headers, &str)> = vec![
        (
            "unknown webhook id",
            with(&good, "X-Webhook-ID", "webhook_nobody".into()),
            "UNKNOWN_WEBHOOK",
        ),
        (
            "webhook id that is not an id",
            with(&good, "X-Webhook-ID", "../../etc".into()),
            "UNKNOWN_WEBHOOK",
        ),
        (
            "missing webhook id",
            without(&good, "X-Webhook-ID"),
            "UNKNOWN_WEBHOOK",
        ),
        (
            "missing signature",
            without(&good, "X-Webhook-Signature"),
            "MISSING_SIGNATURE",
        ),
        (
            "missing timestamp",
            without(&good, "X-Webhook-Timestamp"),
            "MISSING_SIGNATURE",
        ),
        (
            "wrong signature",
            with(
                &good,
                "X-Webhook-Signature",
                format!("sha256={}", "0".repeat(64)),
            ),
            "INVALID_SIGNATURE",
        ),
        (
            "signature over another body",
            with(&good, "X-Webhook-Signature", other_body_signature),
            "INVALID_SIGNATURE",
        ),
        (
            "signature with another secret",
            with(
                &good,
                "X-Webhook-Signature",
                sign_incoming_timestamped(&other_secret, now, body.as_bytes()),
            ),
            "INVALID_SIGNATURE",
        ),
        (
            "signature of the wrong length",
            with(&good, "X-Webhook-Signature", "sha256=b95e2a0b0f3e".into()),
            "INVALID_SIGNATURE",
        ),
        (
            "signature without the sha256= prefix",
            with(
                &good,
                "X-Webhook-Signature",
                sign_incoming_timestamped(&slack.secret, now, body.as_bytes())
                    .trim_start_matches("sha256=")
                    .to_owned(),
            ),
            "INVALID_SIGNATURE",
        ),
        (
            "timestamp 301 s old, correctly signed",
            signed_at(now - 301),
            "STALE_TIMESTAMP",
        ),
        (
            // Not exactly 301: the server's clock may have ticked since.
            "timestamp 6 minutes in the future, correctly signed",
            signed_at(now + 360),
            "STALE_TIMESTAMP",
        ),
        (
            "the seed's own (2022) timestamp",
            with(&good, "X-Webhook-Timestamp", "1641038400".into()),
            "STALE_TIMESTAMP",
        ),
    ];
    for (case, headers, code) in cases {
        for path in [MESSAGE, DOCUMENT] {
            refused(
                &app,
                case,
                path,
                &headers,
                body,
                StatusCode::UNAUTHORIZED,
                code,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn an_inactive_webhook_is_unknown() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let off = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{}", slack.id),
            &json!({"active": false}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);

    refused(
        &app,
        "inactive webhook",
        MESSAGE,
        &slack.headers(SEED_MESSAGE.as_bytes()),
        SEED_MESSAGE,
        StatusCode::UNAUTHORIZED,
        "UNKNOWN_WEBHOOK",
    )
    .await;
}

#[tokio::test]
async fn a_strict_webhook_refuses_body_only_signatures_and_accepts_timestamped_ones() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let strict = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{}", slack.id),
            &json!({"strict_signatures": true}),
        )
        .await;
    assert_eq!(strict.status, StatusCode::OK, "{}", strict.body);

    refused(
        &app,
        "body-only signature on a strict webhook",
        MESSAGE,
        &slack.headers_body_only(SEED_MESSAGE.as_bytes()),
        SEED_MESSAGE,
        StatusCode::UNAUTHORIZED,
        "INVALID_SIGNATURE",
    )
    .await;

    let reply = slack.send(&app, MESSAGE, SEED_MESSAGE).await;
    assert_accepted_message(&reply);
}

#[tokio::test]
async fn each_broken_content_rule_answers_its_code_and_names_the_field() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let message = serde_json::from_str::<Value>(SEED_MESSAGE).unwrap();
    let document = serde_json::from_str::<Value>(SEED_DOCUMENT).unwrap();
    let edit = |base: &Value, change: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        change(&mut v);
        v.to_string()
    };
    let drop_field = |object: &str, field: &'static str| {
        let object = object.to_owned();
        move |v: &mut Value| {
            v[object.as_str()].as_object_mut().unwrap().remove(field);
        }
    };

    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "missing data.message",
            MESSAGE,
            edit(&message, &drop_field("data", "message")),
            "data.message",
        ),
        (
            "missing data.user_id",
            MESSAGE,
            edit(&message, &drop_field("data", "user_id")),
            "data.user_id",
        ),
        (
            "blank data.message",
            MESSAGE,
            edit(&message, &|v| v["data"]["message"] = json!("   ")),
            "data.message",
        ),
        (
            "data.message not a string",
            MESSAGE,
            edit(&message, &|v| v["data"]["message"] = json!(42)),
            "data.message",
        ),
        (
            "unknown message event type",
            MESSAGE,
            edit(&message, &|v| v["event_type"] = json!("message.deleted")),
            "event_type",
        ),
        (
            "a document event sent to the message endpoint",
            MESSAGE,
            edit(&message, &|v| v["event_type"] = json!("document.upload")),
            "event_type",
        ),
        (
            "missing data.document_url",
            DOCUMENT,
            edit(&document, &drop_field("data", "document_url")),
            "data.document_url",
        ),
        (
            "unknown document event type",
            DOCUMENT,
            edit(&document, &|v| v["event_type"] = json!("document.delete")),
            "event_type",
        ),
        (
            "an executable",
            DOCUMENT,
            edit(&document, &|v| v["data"]["document_format"] = json!("exe")),
            "data.document_format",
        ),
        (
            "the cloud metadata address",
            DOCUMENT,
            edit(&document, &|v| {
                v["data"]["document_url"] = json!("http://169.254.169.254/latest/meta-data/")
            }),
            "data.document_url",
        ),
        (
            "a private address",
            DOCUMENT,
            edit(&document, &|v| {
                v["data"]["document_url"] = json!("http://10.0.0.1/policy.pdf")
            }),
            "data.document_url",
        ),
        (
            "not a URL",
            DOCUMENT,
            edit(&document, &|v| {
                v["data"]["document_url"] = json!("policy.pdf")
            }),
            "data.document_url",
        ),
        (
            "a file URL",
            DOCUMENT,
            edit(&document, &|v| {
                v["data"]["document_url"] = json!("file:///etc/passwd")
            }),
            "data.document_url",
        ),
    ];
    for (case, path, body, field) in cases {
        let reply = refused(
            &app,
            case,
            path,
            &slack.headers(body.as_bytes()),
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{case}: {}",
            reply.body
        );
    }

    for (case, body) in [
        ("truncated JSON", &SEED_MESSAGE[..SEED_MESSAGE.len() - 5]),
        ("not JSON at all", "event_type=message.received"),
        ("empty body", ""),
    ] {
        refused(
            &app,
            case,
            MESSAGE,
            &slack.headers(body.as_bytes()),
            body,
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        )
        .await;
    }
}

#[tokio::test]
async fn size_and_media_type_are_judged_first() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;
    let limit = app.services.settings.server.body_limit.0;

    // A valid, correctly signed message exactly one byte over the limit.
    let oversized = padded_message("m1", limit + 1);
    let reply = slack.send(&app, MESSAGE, &oversized).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_code(), "PAYLOAD_TOO_LARGE");

    // The same size with a bad signature: still 413, size comes first.
    let bad = with(
        &slack.headers(oversized.as_bytes()),
        "X-Webhook-Signature",
        format!("sha256={}", "0".repeat(64)),
    );
    let reply = post(&app, MESSAGE, &bad, &oversized).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_nothing_queued(&app, "oversized").await;

    // Exactly at the limit is fine.
    let at_limit = padded_message("m2", limit);
    let reply = slack.send(&app, MESSAGE, &at_limit).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(queued(&app, "chat").await, 1);

    // text/plain, correctly signed: 415.
    let reply = post_as(
        &app,
        DOCUMENT,
        &slack.headers(SEED_DOCUMENT.as_bytes()),
        "text/plain",
        SEED_DOCUMENT.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        reply.body
    );
    // Malformed JSON with a bad signature: the signature answers.
    let broken = "{\"event_type\": ";
    let reply = post(
        &app,
        MESSAGE,
        &with(
            &slack.headers(broken.as_bytes()),
            "X-Webhook-Signature",
            format!("sha256={}", "0".repeat(64)),
        ),
        broken,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.error_code(), "INVALID_SIGNATURE");
    // Malformed JSON from an unknown webhook: 401 too.
    let reply = post(
        &app,
        MESSAGE,
        &with(
            &slack.headers(broken.as_bytes()),
            "X-Webhook-ID",
            "webhook_nobody".into(),
        ),
        broken,
    )
    .await;
    assert_eq!(reply.error_code(), "UNKNOWN_WEBHOOK");
    assert_eq!(queued(&app, "chat").await, 1);
    assert_eq!(queued(&app, "ingest").await, 0);
}

/// Sends a raw HTTP/1.1 request, so header names go on the wire exactly as
/// written, and returns the status code and body.
async fn raw_post(app: &TestApp, path: &str, headers: &[(String, String)], body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        app.addr,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(testkit::PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("the API answers")
        .unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

#[tokio::test]
async fn header_names_are_case_insensitive() {
    let app = spawn_app().await;
    let slack = Integrator::register(&app).await;

    for (i, spell) in [
        str::to_ascii_lowercase as fn(&str) -> String,
        str::to_ascii_uppercase,
        str::to_owned,
    ]
    .into_iter()
    .enumerate()
    {
        let body = message_body("T1", &format!("m{i}"), "Hello");
        let headers: Vec<(String, String)> = slack
            .headers(body.as_bytes())
            .into_iter()
            .map(|(name, value)| (spell(name), value))
            .collect();
        let status = raw_post(&app, MESSAGE, &headers, &body).await;
        assert_eq!(status, 202, "header names spelled as {headers:?}");
    }
    assert_eq!(queued(&app, "chat").await, 3);
}

#[tokio::test]
async fn redis_down_means_503_with_retry_after_and_no_hang() {
    let mut app = spawn_app_with(|s| s.redis.command_timeout = Duration::from_millis(500)).await;
    let slack = Integrator::register(&app).await;
    app.redis.kill();

    for (path, body) in [(MESSAGE, SEED_MESSAGE), (DOCUMENT, SEED_DOCUMENT)] {
        let request = {
            let mut r = app
                .http
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body.to_owned());
            for (name, value) in slack.headers(body.as_bytes()) {
                r = r.header(name, value);
            }
            r
        };
        let reply = tokio::time::timeout(testkit::PATIENCE, app.send(request))
            .await
            .expect("the API answers while Redis is down");
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "SERVICE_UNAVAILABLE");
        assert!(reply.retry_after.is_some(), "{path}: no Retry-After");
    }
}

#[tokio::test]
async fn an_accepted_message_is_answered_to_the_integration_with_its_trace_and_correlation() {
    let app = spawn_app().await;
    let receiver = testkit::spawn_receiver(testkit::Behaviour::AlwaysOk).await;
    let webhook = testkit::register_webhook(
        &app.services,
        &receiver.url(),
        vec![EventFilter::Only(
            shared::events::catalog::EventType::ChatResponseGenerated,
        )],
        SECRET,
    )
    .await;
    let slack = Integrator {
        id: webhook.webhook_id.to_string(),
        secret: Secret::parse(SECRET).unwrap(),
    };
    let worker = testkit::spawn_worker(app.services.clone()).await;

    let mut headers = slack.headers(SEED_MESSAGE.as_bytes());
    headers.push(("X-Trace-Id", "trace_req_123".into()));
    let reply = post(&app, MESSAGE, &headers, SEED_MESSAGE).await;

    assert_accepted_message(&reply);
    assert_eq!(reply.body["meta"]["trace_id"], "trace_req_123");
    assert_eq!(reply.trace_id.as_deref(), Some("trace_req_123"));
    let delivered = receiver.wait_for(1, testkit::PATIENCE).await;
    let event = delivered[0].json();
    assert_eq!(event["event_type"], "chat.response.generated");
    assert_eq!(event["webhook_id"], slack.id.as_str());
    assert_eq!(event["data"]["session_id"], reply.data()["session_id"]);
    assert_eq!(event["data"]["user_id"], "U123456789");
    assert_eq!(event["data"]["message"], "Как работает документирование?");
    assert!(
        event["data"]["answer"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );
    assert_eq!(event["metadata"]["trace_id"], "trace_req_123");
    assert_eq!(event["metadata"]["correlation_id"], "corr_abc123");
    worker.shutdown().await;
}
