//! The event catalogue and webhook filters as an integrator meets them:
//! `GET /event-types` with generated schemas, and `filters` checked at
//! registration and PATCH against those schemas.

use crate::common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "my_secret_key_12345";
const REGISTER: &str = "/api/v1/webhooks/register";

fn registration(events: &[&str], filters: Value) -> Value {
    json!({"name": "Filtered", "url": "http://127.0.0.1:9/hook", "events": events,
           "secret": SECRET, "filters": filters})
}

#[tokio::test]
async fn the_catalogue_lists_every_type_with_a_schema_of_its_data() {
    let app = spawn_app().await;
    let no_key = app.send(app.http.get(app.url("/api/v1/event-types"))).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);

    let listed = app.admin_get("/api/v1/event-types").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let types: Vec<&str> = listed
        .data()
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    for expected in [
        "chat.response.generated",
        "chat.escalated",
        "chat.message.forwarded",
        "chat.operator.replied",
        "session.ended",
        "knowledge.document.indexed",
        "knowledge.document.failed",
        "analysis.classification.completed",
        "error.occurred",
        "webhook.test",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }

    let one = app.admin_get("/api/v1/event-types/chat.escalated").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    let info = one.data();
    assert_eq!(info["type"], "chat.escalated");
    assert_eq!(info["subscribable"], true);
    assert!(!info["description"].as_str().unwrap().is_empty());
    let schema = &info["schema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        schema["properties"]["escalation_priority"]["enum"],
        json!(["low", "medium", "high", "urgent"])
    );
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("session_id"))
    );
    let test = app.admin_get("/api/v1/event-types/webhook.test").await;
    assert_eq!(test.data()["subscribable"], false);

    let unknown = app.admin_get("/api/v1/event-types/chat.nonsense").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "NOT_FOUND");

    let doc = app
        .send(app.http.get(app.url("/api/v1/openapi.json")))
        .await;
    assert!(doc.body["paths"]["/api/v1/event-types"]["get"].is_object());
    assert!(doc.body["paths"]["/api/v1/event-types/{event_type}"]["get"].is_object());
}

#[tokio::test]
async fn filters_are_stored_shown_and_checked_against_the_subscribed_schemas() {
    let app = spawn_app().await;
    let filters = json!({"data.escalation_priority": {"in": ["high", "urgent"]},
                         "data.user_id": "user_42"});
    let created = app
        .admin_json(
            Method::POST,
            REGISTER,
            &registration(&["chat.escalated"], filters.clone()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.data()["filters"], filters);
    let id = created.data()["webhook_id"].as_str().unwrap().to_owned();
    let fetched = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(fetched.data()["filters"], filters);

    // A path no subscribed type has is refused, naming it.
    let unknown = app
        .admin_json(
            Method::POST,
            REGISTER,
            &registration(
                &["session.ended"],
                json!({"data.escalation_priority": "high"}),
            ),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.error_code(), "VALIDATION_FAILED");
    assert_eq!(
        unknown.body["error"]["details"]["field"],
        "filters.data.escalation_priority"
    );
    // "*": a field of any type will do; one of none will not.
    let any = app
        .admin_json(
            Method::POST,
            REGISTER,
            &registration(&["*"], json!({"data.escalation_priority": "high"})),
        )
        .await;
    assert_eq!(any.status, StatusCode::CREATED, "{}", any.body);
    let none = app
        .admin_json(
            Method::POST,
            REGISTER,
            &registration(&["*"], json!({"data.nonsense": 1})),
        )
        .await;
    assert_eq!(
        none.body["error"]["details"]["field"],
        "filters.data.nonsense"
    );

    // Form: path syntax, values, count.
    for (filters, field) in [
        (json!({"source": "web"}), "filters.source"),
        (json!({"data.user_id": ["a"]}), "filters.data.user_id"),
        (json!({"data.user_id": {"in": []}}), "filters.data.user_id"),
        (json!({"data.user_id": {"eq": "a"}}), "filters.data.user_id"),
    ] {
        let refused = app
            .admin_json(
                Method::POST,
                REGISTER,
                &registration(&["chat.escalated"], filters.clone()),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{filters}"
        );
        assert_eq!(
            refused.body["error"]["details"]["field"], field,
            "{filters}"
        );
    }
    let many: serde_json::Map<String, Value> = (0..=10)
        .map(|i| (format!("data.metadata.k{i}"), json!(i)))
        .collect();
    let too_many = app
        .admin_json(
            Method::POST,
            REGISTER,
            &registration(&["knowledge.document.indexed"], Value::Object(many)),
        )
        .await;
    assert_eq!(too_many.body["error"]["details"]["field"], "filters");

    // PATCH: changing the events re-checks the kept filters; `{}` clears.
    let path = format!("/api/v1/webhooks/{id}");
    let orphaned = app
        .admin_json(Method::PATCH, &path, &json!({"events": ["session.ended"]}))
        .await;
    assert_eq!(orphaned.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        orphaned.body["error"]["details"]["field"],
        "filters.data.escalation_priority"
    );
    let changed = app
        .admin_json(
            Method::PATCH,
            &path,
            &json!({"events": ["session.ended"], "filters": {"data.reason": "idle_timeout"}}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(
        changed.data()["filters"],
        json!({"data.reason": "idle_timeout"})
    );
    let cleared = app
        .admin_json(Method::PATCH, &path, &json!({"filters": {}}))
        .await;
    assert_eq!(cleared.data()["filters"], json!({}));
}
