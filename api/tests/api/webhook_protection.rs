//! Webhook protection as an administrator meets it through the API: the
//! rate limit and custom headers of a registration (checked, shown,
//! changed), and turning a webhook off and on again (`PATCH active`,
//! `POST /webhooks/{id}/enable`) with `webhook.disabled` /
//! `webhook.enabled` reaching an operations webhook through the real
//! worker.

use crate::common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::{Behaviour, PATIENCE, spawn_receiver, spawn_worker};

const SECRET: &str = "my_secret_key_12345";

#[tokio::test]
async fn rate_limits_and_headers_are_checked_shown_and_changed() {
    let app = spawn_app().await;
    let registered = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &json!({"name": "Limited", "url": "http://127.0.0.1:9/hook",
                    "events": ["chat.escalated"], "secret": SECRET,
                    "rate_limit_per_second": 20,
                    "headers": {"X-Tenant": "acme", "Authorization": "Bearer t"}}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let data = registered.data();
    assert_eq!(data["rate_limit_per_second"], 20.0);
    assert_eq!(
        data["headers"],
        json!({"authorization": "Bearer t", "x-tenant": "acme"})
    );
    let id = data["webhook_id"].as_str().unwrap().to_owned();

    // A header the system sets is refused, by name.
    let forged = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &json!({"name": "Forger", "url": "http://127.0.0.1:9/hook",
                    "events": ["chat.escalated"],
                    "headers": {"X-Webhook-Signature": "sha256=0"}}),
        )
        .await;
    assert_eq!(
        forged.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        forged.body
    );
    let message = forged.body["error"].to_string();
    assert!(message.contains("headers.X-Webhook-Signature"), "{message}");

    let zero = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"rate_limit_per_second": 0}),
        )
        .await;
    assert_eq!(
        zero.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        zero.body
    );
    assert!(
        zero.body["error"]
            .to_string()
            .contains("rate_limit_per_second")
    );

    // null lifts the limit; a headers map replaces the old one.
    let changed = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"rate_limit_per_second": null, "headers": {"x-region": "eu"}}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.data()["rate_limit_per_second"], json!(null));
    assert_eq!(changed.data()["headers"], json!({"x-region": "eu"}));

    // The OpenAPI document shows the endpoint and the fields.
    let doc = app
        .send(app.http.get(app.url("/api/v1/openapi.json")))
        .await;
    assert!(doc.body["paths"]["/api/v1/webhooks/{webhook_id}/enable"]["post"].is_object());
    let request = &doc.body["components"]["schemas"]["WebhookRequest"]["properties"];
    for field in ["rate_limit_per_second", "headers"] {
        assert!(request[field].is_object(), "{field} not in {request}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_a_webhook_off_and_on_is_announced_to_operational_subscribers() {
    // Given an integration and an operations webhook, and a worker
    let app = spawn_app().await;
    let desk = spawn_receiver(Behaviour::AlwaysOk).await;
    app.register(
        &desk.url(),
        &["webhook.disabled", "webhook.enabled"],
        SECRET,
    )
    .await;
    let integration = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = app
        .register(&integration.url(), &["chat.escalated"], SECRET)
        .await;
    let _worker = spawn_worker(app.services.clone()).await;

    // When an administrator turns it off
    let off = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"active": false}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let disabled = desk.wait_for(1, PATIENCE).await[0].json();
    assert_eq!(disabled["event_type"], "webhook.disabled");
    assert_eq!(disabled["data"]["webhook_id"], id.as_str());
    assert_eq!(disabled["data"]["reason"], "disabled by an administrator");

    // and on again, asking for its dead letters (there are none)
    let on = app
        .admin_json(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/enable"),
            &json!({"replay_dead_letters": true}),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    assert_eq!(on.data()["active"], true);
    assert_eq!(on.data()["dead_letters_replayed"], 0);
    let enabled = desk.wait_for(2, PATIENCE).await[1].json();
    assert_eq!(enabled["event_type"], "webhook.enabled");
    assert_eq!(enabled["data"]["webhook_id"], id.as_str());

    // Enabling an active webhook announces nothing; an empty body is fine.
    let again = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/enable")))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let missing = app
        .send(app.admin(Method::POST, "/api/v1/webhooks/webhook_nope/enable"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(desk.requests().len(), 2);
    assert!(integration.requests().is_empty());
}
