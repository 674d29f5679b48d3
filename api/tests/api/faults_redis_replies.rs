//! Redis up but refusing commands for now (issue 11, item 5): a script
//! hogging the server (`BUSY`) and memory full (`OOM`) must answer 503 with
//! `Retry-After` and the error envelope, as an outage does, and not 500:
//! senders retry a 503, while a 500 reads as "your request is broken".
//!
//! The endpoints are ones that write: registering a webhook, a signed
//! incoming message, a direct document upload; and the knowledge search,
//! which keeps answering from the API's own search replica (a search
//! never needs Redis to be free).

use std::time::Duration;

use crate::common::{Reply, TestApp, spawn_app};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};
use testkit::{PATIENCE, wait_until};

const SECRET: &str = "replies_secret_key_12345";

fn assert_retry_later(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.error_code(), "SERVICE_UNAVAILABLE", "{what}");
    let wait: u64 = reply
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no numeric Retry-After"));
    assert!(wait >= 1, "{what}: Retry-After {wait}");
}

/// Every request of the test, each with a fresh external id so no answer
/// is a duplicate of an earlier one.
async fn writes(app: &TestApp, webhook_id: &str, n: u32) -> Vec<(&'static str, Reply)> {
    let registration = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &json!({"name": format!("Hook {n}"), "url": "http://127.0.0.1:9/hook",
                    "events": ["chat.response.generated"]}),
        )
        .await;

    let message = json!({
        "event_type": "message.received",
        "data": {"user_id": "U1", "message": "Where is my refund?",
                 "external_message_id": format!("m{n}")}
    })
    .to_string();
    let now = Utc::now().timestamp();
    let secret = Secret::parse(SECRET).expect("secret");
    let incoming = app
        .send(
            app.http
                .post(app.url("/api/v1/webhooks/incoming/message"))
                .header("content-type", "application/json")
                .header("X-Webhook-ID", webhook_id)
                .header("X-Webhook-Timestamp", now.to_string())
                .header(
                    "X-Webhook-Signature",
                    sign_incoming_timestamped(&secret, now, message.as_bytes()),
                )
                .body(message),
        )
        .await;

    let upload = app
        .admin_json(
            Method::POST,
            "/api/v1/knowledge/documents",
            &json!({"name": format!("Refunds {n}"), "text": "Refunds take five days."}),
        )
        .await;

    let search = app.admin_get("/api/v1/knowledge/search?q=refund").await;
    vec![
        ("webhook registration", registration),
        ("incoming message", incoming),
        ("document upload", upload),
        ("knowledge search", search),
    ]
}

async fn assert_all_succeed(app: &TestApp, webhook_id: &str, n: u32) {
    for (what, reply) in writes(app, webhook_id, n).await {
        assert!(
            reply.status.is_success(),
            "{what}: {} {}",
            reply.status,
            reply.body
        );
    }
}

async fn started() -> (TestApp, String) {
    let app = spawn_app().await;
    let webhook_id = app
        .register("http://127.0.0.1:9/hook", &["*"], SECRET)
        .await;
    assert_all_succeed(&app, &webhook_id, 0).await;
    (app, webhook_id)
}

fn redis_command(app: &TestApp, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut conn = app
        .redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_hogging_redis_is_503_with_retry_after_then_service_resumes() {
    let (app, webhook_id) = started().await;
    redis_command(&app, &["CONFIG", "SET", "lua-time-limit", "10"]).expect("config");

    // A script that never ends, on a connection of its own: from
    // `lua-time-limit` on, every other client is answered BUSY.
    let mut hog = app
        .redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<redis::Value>(&mut hog)
    });
    wait_until("Redis to answer BUSY", PATIENCE, || async {
        match redis_command(&app, &["PING"]) {
            Err(e) if e.code() == Some("BUSY") => Some(()),
            _ => None,
        }
    })
    .await;

    for (what, reply) in writes(&app, &webhook_id, 1).await {
        if what == "knowledge search" {
            assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
        } else {
            assert_retry_later(&reply, what);
        }
    }

    redis_command(&app, &["SCRIPT", "KILL"]).expect("script killed");
    let ended = tokio::task::spawn_blocking(move || script.join())
        .await
        .expect("joined")
        .expect("script thread");
    assert!(ended.is_err(), "the script only ends when killed");
    assert_all_succeed(&app, &webhook_id, 2).await;
}

#[tokio::test]
async fn redis_out_of_memory_is_503_with_retry_after_then_service_resumes() {
    let (app, webhook_id) = started().await;
    redis_command(&app, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).expect("policy");
    redis_command(&app, &["CONFIG", "SET", "maxmemory", "1"]).expect("maxmemory");

    for (what, reply) in writes(&app, &webhook_id, 1).await {
        // A search is served by the API's replica.
        if what == "knowledge search" {
            assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
        } else {
            assert_retry_later(&reply, what);
        }
    }

    redis_command(&app, &["CONFIG", "SET", "maxmemory", "0"]).expect("maxmemory");
    assert_all_succeed(&app, &webhook_id, 2).await;
}
