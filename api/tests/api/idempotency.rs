//! `Idempotency-Key` on admin POSTs, through the real API and Redis: a
//! retried registration registers one webhook and answers the first answer
//! again; a reused key with another body, a malformed key, and a key whose
//! first request is still running are refused.

use std::time::Duration;

use crate::common::{TestApp, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "idempotency_secret_123";

/// A JSON admin POST with an `Idempotency-Key`: status, the replay marker,
/// body.
async fn post_with_key(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let response = app
        .admin(Method::POST, path)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("JSON body");
    (status, replayed, body)
}

fn registration(name: &str) -> Value {
    json!({"name": name, "url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": SECRET})
}

#[tokio::test]
async fn a_retried_registration_registers_one_webhook_and_answers_the_same() {
    let app = spawn_app().await;
    let path = "/api/v1/webhooks/register";

    let (first_status, first_replayed, first) =
        post_with_key(&app, path, "reg-7f3a", &registration("Shop")).await;
    let (again_status, again_replayed, again) =
        post_with_key(&app, path, "reg-7f3a", &registration("Shop")).await;

    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    assert_eq!(first_replayed, None);
    assert_eq!(again_status, StatusCode::CREATED);
    assert_eq!(again_replayed.as_deref(), Some("true"));
    assert_eq!(again, first, "the very same answer, ids and all");
    let list = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(list.body["meta"]["pagination"]["total"], 1, "{}", list.body);

    // Another key is another request.
    let (other_status, _, other) =
        post_with_key(&app, path, "reg-8000", &registration("Shop")).await;
    assert_eq!(other_status, StatusCode::CREATED);
    assert_ne!(other["data"]["webhook_id"], first["data"]["webhook_id"]);
}

#[tokio::test]
async fn a_key_reused_for_another_body_is_a_conflict() {
    let app = spawn_app().await;
    let path = "/api/v1/webhooks/register";
    let (status, _, _) = post_with_key(&app, path, "reg-1", &registration("One")).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, replayed, body) = post_with_key(&app, path, "reg-1", &registration("Two")).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(replayed, None);
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_CONFLICT");
    let list = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(list.body["meta"]["pagination"]["total"], 1);
}

#[tokio::test]
async fn malformed_keys_are_refused_before_anything_runs() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in ["has space", long.as_str()] {
        let (status, _, body) = post_with_key(
            &app,
            "/api/v1/webhooks/register",
            key,
            &registration("Shop"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_IDEMPOTENCY_KEY");
    }
    let list = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(list.body["meta"]["pagination"]["total"], 0);
}

#[tokio::test]
async fn a_second_request_while_the_first_runs_is_told_it_is_in_progress() {
    // Given no worker, a chat completion waits its whole completion_wait
    let app = spawn_app_with(|s| s.chat.completion_wait = Duration::from_secs(3)).await;
    let question = json!({"question": "How do I reset my password?", "user_id": "u1"});
    let first = {
        let request = app
            .admin(Method::POST, "/api/v1/chat/completions")
            .header("idempotency-key", "chat-1")
            .header("content-type", "application/json")
            .body(question.to_string());
        tokio::spawn(async move { request.send().await.expect("sent").status() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // When the same request comes again meanwhile
    let (status, _, body) =
        post_with_key(&app, "/api/v1/chat/completions", "chat-1", &question).await;

    // Then it is refused as in progress, and the first one still answers
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_IN_PROGRESS");
    assert_eq!(first.await.expect("first request"), StatusCode::ACCEPTED);
    // ... after which its answer is the one replayed
    let (status, replayed, _) =
        post_with_key(&app, "/api/v1/chat/completions", "chat-1", &question).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(replayed.as_deref(), Some("true"));
}

#[tokio::test]
async fn the_openapi_document_names_the_header_on_every_admin_post() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut posts = 0;
    for (path, item) in paths {
        let Some(post) = item.get("post") else {
            continue;
        };
        let admin = post.get("security").is_some();
        let has_header = post["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
        assert_eq!(has_header, admin, "{path}");
        posts += usize::from(admin);
    }
    assert!(posts >= 10, "{posts} admin POSTs");
}
