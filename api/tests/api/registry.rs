//! The webhook registry and admin endpoints as an integrator meets them:
//! auth, every validation rule with its code, and the error envelope.

use crate::common::{spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "my_secret_key_12345";

fn registration(url: &str) -> serde_json::Value {
    json!({"name": "My Integration", "url": url, "events": ["chat.response.generated"], "secret": SECRET})
}

#[tokio::test]
async fn management_endpoints_require_the_admin_key() {
    let app = spawn_app().await;
    let no_key = app.send(app.http.get(app.url("/api/v1/webhooks"))).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_key.error_code(), "MISSING_CREDENTIALS");

    let wrong = app
        .send(
            app.http
                .get(app.url("/api/v1/webhooks"))
                .bearer_auth("nope"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_code(), "INVALID_CREDENTIALS");

    let metrics = app.send(app.http.get(app.url("/metrics"))).await;
    assert_eq!(
        metrics.status,
        StatusCode::UNAUTHORIZED,
        "metrics on the main port need the key"
    );

    // Open: answered without a key (readiness may still say the search
    // replica is catching up, so it is waited for).
    for path in ["/healthz", "/readyz"] {
        testkit::wait_until(
            &format!("{path} to answer 200 without a key"),
            testkit::PATIENCE,
            || async {
                let open = app.send(app.http.get(app.url(path))).await;
                (open.status == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn registration_returns_the_seed_fields_and_never_the_secret_again() {
    let app = spawn_app().await;
    let given = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &registration("http://127.0.0.1:9/hook"),
        )
        .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.body);
    let data = given.data();
    assert!(data["webhook_id"].as_str().unwrap().starts_with("webhook_"));
    assert_eq!(data["name"], "My Integration");
    assert_eq!(data["events"], json!(["chat.response.generated"]));
    assert_eq!(data["active"], true);
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        data.get("secret").is_none(),
        "a secret the client chose is not echoed"
    );
    assert!(given.body["meta"]["trace_id"].is_string());

    let generated = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &json!({"name": "Generated", "url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(generated.status, StatusCode::CREATED);
    let secret = generated.data()["secret"]
        .as_str()
        .expect("generated secret shown once");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );

    let id = generated.data()["webhook_id"].as_str().unwrap();
    let fetched = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert!(
        !fetched.body.to_string().contains(secret),
        "secret must never be returned again"
    );
    let listed = app.admin_get("/api/v1/webhooks").await;
    assert!(!listed.body.to_string().contains(secret));
    assert_eq!(listed.body["meta"]["pagination"]["total"], 2);
    assert_eq!(listed.data()[0]["success_rate"], 0.0);
}

#[tokio::test]
async fn the_seed_registration_works_as_written() {
    let app = spawn_app().await;
    let seed = json!({
        "name": "My Integration",
        "url": "https://my-system.example.com/webhooks",
        "events": ["chat.response.generated", "chat.escalated", "knowledge.document.indexed"],
        "secret": "my_secret_key_12345",
        "active": true
    });
    let reply = app
        .admin_json(Method::POST, "/api/v1/webhooks/register", &seed)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.data()["url"],
        "https://my-system.example.com/webhooks"
    );
}

#[tokio::test]
async fn each_broken_rule_answers_its_code_with_the_envelope() {
    let app = spawn_app().await;
    let register = "/api/v1/webhooks/register";
    let cases: Vec<(&str, serde_json::Value, StatusCode, &str, Option<&str>)> = vec![
        (
            "bad url",
            registration("not a url"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("url"),
        ),
        (
            "ftp url",
            registration("ftp://127.0.0.1/x"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("url"),
        ),
        (
            "private address",
            registration("http://10.1.2.3/hook"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("url"),
        ),
        (
            "metadata address",
            registration("http://169.254.169.254/latest"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("url"),
        ),
        (
            "unknown event",
            json!({"name": "x", "url": "http://127.0.0.1:9/", "events": ["chat.response.generated", "nope"], "secret": SECRET}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("events[1]"),
        ),
        (
            "short secret",
            json!({"name": "x", "url": "http://127.0.0.1:9/", "events": ["*"], "secret": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("secret"),
        ),
        (
            "empty name",
            json!({"name": "  ", "url": "http://127.0.0.1:9/", "events": ["*"], "secret": SECRET}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("name"),
        ),
        (
            "missing url",
            json!({"name": "x", "events": ["*"], "secret": SECRET}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("url"),
        ),
        (
            "wrong type",
            json!({"name": "x", "url": "http://127.0.0.1:9/", "events": "chat.escalated", "secret": SECRET}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            Some("events"),
        ),
    ];
    for (what, body, status, code, field) in cases {
        let reply = app.admin_json(Method::POST, register, &body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(reply.error_code(), code, "{what}");
        if let Some(field) = field {
            assert_eq!(
                reply.body["error"]["details"]["field"], field,
                "{what}: {}",
                reply.body
            );
        }
    }

    let malformed = app
        .send(
            app.admin(Method::POST, register)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "MALFORMED_JSON");

    let text = app
        .send(
            app.admin(Method::POST, register)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = "x".repeat(65 * 1024);
    let oversized = app
        .send(
            app.admin(Method::POST, register)
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(oversized.error_code(), "PAYLOAD_TOO_LARGE");

    // Size is judged before credentials (the documented order).
    let oversized_no_key = app
        .send(
            app.http
                .post(app.url(register))
                .header("content-type", "application/json")
                .body("x".repeat(65 * 1024)),
        )
        .await;
    assert_eq!(oversized_no_key.status, StatusCode::PAYLOAD_TOO_LARGE);

    for path in [
        "/api/v1/webhooks/webhook_nope",
        "/api/v1/webhooks/not-an-id",
        "/api/v1/webhooks/deliveries/dlv_nope",
        "/api/v1/dead-letters/dead_nope",
    ] {
        let missing = app.admin_get(path).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(missing.error_code(), "NOT_FOUND");
    }
    for query in ["limit=0", "limit=101", "limit=abc", "offset=-1"] {
        let bad = app.admin_get(&format!("/api/v1/webhooks?{query}")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}");
    }
    let bad_status = app.admin_get("/api/v1/dead-letters?since=yesterday").await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_webhook_can_be_changed_filtered_and_deleted() {
    let app = spawn_app().await;
    let id = app
        .register(
            "http://127.0.0.1:9/hook",
            &["chat.response.generated", "chat.escalated"],
            SECRET,
        )
        .await;
    let patched = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"url": "http://127.0.0.1:10/new", "events": ["error.occurred"], "active": false}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.data()["url"], "http://127.0.0.1:10/new");
    assert_eq!(patched.data()["active"], false);

    let bad_patch = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"url": "http://192.168.0.1/"}),
        )
        .await;
    assert_eq!(bad_patch.status, StatusCode::UNPROCESSABLE_ENTITY);

    let test_inactive = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    assert_eq!(test_inactive.status, StatusCode::CONFLICT);
    assert_eq!(test_inactive.error_code(), "WEBHOOK_INACTIVE");

    let active = app.admin_get("/api/v1/webhooks?active=true").await;
    assert_eq!(active.body["meta"]["pagination"]["total"], 0);
    let by_event = app.admin_get("/api/v1/webhooks?event=error.occurred").await;
    assert_eq!(by_event.body["meta"]["pagination"]["total"], 1);

    let deleted = app
        .send(app.admin(Method::DELETE, &format!("/api/v1/webhooks/{id}")))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.data()["status"], "deleted");
    let gone = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ordering_is_set_on_registration_changed_by_patch_and_checked_by_name() {
    let app = spawn_app().await;
    let mut body = registration("http://127.0.0.1:9/hook");
    let plain = app
        .admin_json(Method::POST, "/api/v1/webhooks/register", &body)
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    assert_eq!(plain.data()["ordering"], "none", "the default");

    body["ordering"] = json!("session");
    let ordered = app
        .admin_json(Method::POST, "/api/v1/webhooks/register", &body)
        .await;
    assert_eq!(ordered.status, StatusCode::CREATED, "{}", ordered.body);
    assert_eq!(ordered.data()["ordering"], "session");
    let id = ordered.data()["webhook_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/webhooks/{id}");
    assert_eq!(app.admin_get(&path).await.data()["ordering"], "session");

    // A PATCH without the field keeps it; with it, changes it.
    let kept = app
        .admin_json(Method::PATCH, &path, &json!({"name": "renamed"}))
        .await;
    assert_eq!(kept.data()["ordering"], "session");
    let changed = app
        .admin_json(Method::PATCH, &path, &json!({"ordering": "none"}))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.data()["ordering"], "none");

    for bad in [json!("fifo"), json!("Session"), json!(1)] {
        let mut refused_body = registration("http://127.0.0.1:9/hook");
        refused_body["ordering"] = bad.clone();
        for (method, target, request) in [
            (Method::POST, "/api/v1/webhooks/register", refused_body),
            (Method::PATCH, path.as_str(), json!({"ordering": bad})),
        ] {
            let refused = app.admin_json(method.clone(), target, &request).await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {bad}: {}",
                refused.body
            );
            assert_eq!(refused.error_code(), "VALIDATION_FAILED");
            assert_eq!(refused.body["error"]["details"]["field"], "ordering");
        }
    }
    assert_eq!(app.admin_get(&path).await.data()["ordering"], "none");

    // Documented in the OpenAPI schema of the request and of the view.
    let doc = app
        .send(app.http.get(app.url("/api/v1/openapi.json")))
        .await;
    let text = doc.body.to_string();
    for schema in ["WebhookRequest", "WebhookView"] {
        assert!(
            !doc.body["components"]["schemas"][schema]["properties"]["ordering"].is_null(),
            "{schema} has no ordering in {text}"
        );
    }
    assert!(text.contains("\"session\""), "the enum's values are listed");

    // The waits counter is exported even before any wait.
    let metrics = app.send(app.admin(Method::GET, "/metrics")).await;
    let metrics = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l == "supportrag_delivery_ordering_waits_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let app = spawn_app().await;
    let doc = app
        .send(app.http.get(app.url("/api/v1/openapi.json")))
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/webhooks/register",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{webhook_id}",
        "/api/v1/webhooks/{webhook_id}/test",
        "/api/v1/webhooks/{webhook_id}/deliveries",
        "/api/v1/webhooks/deliveries/{delivery_id}",
        "/api/v1/webhooks/deliveries/{delivery_id}/retry",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/replay",
        "/api/v1/dead-letters/{dead_letter_id}",
        "/api/v1/dead-letters/{dead_letter_id}/replay",
        "/api/v1/admin/queues",
        "/api/v1/webhooks/incoming/message",
        "/api/v1/webhooks/incoming/document",
        "/api/v1/chat/completions",
        "/api/v1/chat/jobs/{job_id}",
        "/api/v1/chat/sessions/{session_id}",
        "/api/v1/chat/sessions/{session_id}/escalate",
        "/api/v1/chat/sessions/{session_id}/end",
        "/api/v1/chat/sessions",
        "/api/v1/chat/sessions/{session_id}/reply",
        "/api/v1/chat/sessions/{session_id}/handback",
        "/api/v1/chat/sessions/{session_id}/feedback",
        "/api/v1/knowledge/gaps",
        "/api/v1/knowledge/documents",
        "/api/v1/knowledge/documents/{document_id}",
        "/api/v1/knowledge/search",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Incoming webhooks authenticate by signature, not by the admin key.
    let incoming = &paths["/api/v1/webhooks/incoming/message"]["post"];
    assert!(incoming.get("security").is_none(), "{incoming}");
    let admin = &paths["/api/v1/chat/completions"]["post"];
    assert_eq!(admin["security"][0]["admin_key"], serde_json::json!([]));
    // OpenAPI 3.1 requires a description on every response.
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    !description.is_empty(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
    assert_eq!(
        paths["/api/v1/chat/jobs/{job_id}"]["get"]["responses"]["404"]["description"],
        "Not Found"
    );
}

#[tokio::test]
async fn redis_down_means_503_with_retry_after_not_a_hang() {
    let mut app =
        spawn_app_with(|s| s.redis.command_timeout = std::time::Duration::from_millis(500)).await;
    app.redis.kill();
    let ready = app.send(app.http.get(app.url("/readyz"))).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(ready.retry_after.is_some());
    let list = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(list.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(list.error_code(), "SERVICE_UNAVAILABLE");

    app.redis.restart();
    testkit::wait_until("the API to see Redis again", testkit::PATIENCE, || async {
        let ready = app.send(app.http.get(app.url("/readyz"))).await;
        (ready.status == StatusCode::OK).then_some(())
    })
    .await;
}
