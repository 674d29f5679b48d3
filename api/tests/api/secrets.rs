//! Webhook secrets over their life: rotation with an overlap through the
//! API (the new secret shown once, incoming requests signed by either
//! secret accepted until the overlap ends), and secrets encrypted at rest
//! (nothing clear in Redis, clear records migrated at start, the key itself
//! rotated, a missing key refused in production), against a real Redis.

use crate::common::{TestApp, spawn_app_with};
use api::startup::Application;
use chrono::Utc;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::config::{AppEnvironment, Settings};
use shared::services::Services;
use shared::webhooks::secret_box::EncryptionKey;
use testkit::{PATIENCE, TestRedis, test_settings};

const OLD_SECRET: &str = "old_secret_key_0123456789";
const NEW_SECRET: &str = "new_secret_key_9876543210";
const MESSAGE: &str = "/api/v1/webhooks/incoming/message";
/// `id:base64(32 bytes)` keys, as an operator writes them.
const KEY_1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const KEY_3: &str = "k3:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

fn keys(list: &[&str]) -> Vec<EncryptionKey> {
    list.iter()
        .map(|k| EncryptionKey::parse(k).expect("test key"))
        .collect()
}

fn with_keys(list: &'static [&'static str]) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| s.secrets.encryption_keys = keys(list)
}

async fn rotate(app: &TestApp, id: &str, body: Value) -> crate::common::Reply {
    app.admin_json(
        Method::POST,
        &format!("/api/v1/webhooks/{id}/rotate-secret"),
        &body,
    )
    .await
}

/// A chat message signed over `"<now>.<body>"` with `secret`, as the seed's
/// senders sign.
async fn send_signed(
    app: &TestApp,
    webhook_id: &str,
    secret: &str,
    n: u32,
) -> crate::common::Reply {
    let body = json!({
        "event_type": "message.received",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "slack",
        "data": {"user_id": "U1", "user_name": "Jane", "message": format!("hello {n}"),
                 "thread_id": format!("t{n}"), "channel": "support",
                 "external_message_id": format!("m{n}-{secret}")},
        "metadata": {"workspace": "w", "correlation_id": "c"}
    })
    .to_string();
    app.post_signed(MESSAGE, webhook_id, secret, body).await
}

async fn raw_record(redis: &TestRedis, settings: &Settings, id: &str) -> String {
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let registry = shared::keys::webhooks(&settings.redis.key_prefix);
    let raw: Option<String> = conn.hget(&registry, id).await.expect("HGET");
    raw.unwrap_or_else(|| panic!("no record for {id}"))
}

/// Every key id the record's secrets are sealed under (empty: all clear).
fn sealed_under(raw: &str) -> Vec<String> {
    let record: Value = serde_json::from_str(raw).expect("record is JSON");
    let mut kids = Vec::new();
    let mut note = |v: &Value| match v {
        Value::Object(o) => kids.push(o["kid"].as_str().unwrap_or("?").to_owned()),
        _ => kids.push("clear".to_owned()),
    };
    note(&record["secret"]);
    for p in record["previous_secrets"].as_array().into_iter().flatten() {
        note(&p["secret"]);
    }
    kids
}

#[tokio::test]
async fn rotation_answers_the_new_secret_once_and_checks_its_overlap() {
    let app = spawn_app_with(|_| {}).await;
    let id = app
        .register("http://127.0.0.1:9/hook", &["*"], OLD_SECRET)
        .await;

    // Generated when absent, shown in this answer only.
    let generated = rotate(&app, &id, json!({"overlap": "1h"})).await;
    assert_eq!(generated.status, StatusCode::OK, "{}", generated.body);
    let data = generated.data();
    assert_eq!(data["webhook_id"], id.as_str());
    assert!(data["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(data["valid_secrets"], 2);
    let expires = data["previous_secret_expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");
    let shown = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert!(shown.data().get("secret").is_none(), "{}", shown.body);
    assert!(!shown.body.to_string().contains(OLD_SECRET));

    // Given, with the default overlap; three secrets at most stay valid.
    let given = rotate(&app, &id, json!({"secret": NEW_SECRET})).await;
    assert_eq!(given.status, StatusCode::OK, "{}", given.body);
    assert_eq!(given.data()["secret"], NEW_SECRET);
    assert_eq!(given.data()["valid_secrets"], 3);
    let again = rotate(&app, &id, json!({"secret": "a_fourth_secret_value_42"})).await;
    assert_eq!(again.data()["valid_secrets"], 3);
    // Zero: every older secret stops at once.
    let now = rotate(&app, &id, json!({"secret": NEW_SECRET, "overlap": "0s"})).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.body);
    assert_eq!(now.data()["valid_secrets"], 1);
    assert!(now.data().get("previous_secret_expires_at").is_none());

    for (body, field) in [
        (json!({"overlap": "forever"}), "overlap"),
        (json!({"overlap": "31days"}), "overlap"),
        (json!({"secret": "short"}), "secret"),
    ] {
        let refused = rotate(&app, &id, body.clone()).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            refused.error_code(),
            "VALIDATION_FAILED",
            "{}",
            refused.body
        );
        assert!(
            refused.body.to_string().contains(field),
            "{body}: {}",
            refused.body
        );
    }
    let unknown = rotate(&app, "webhook_nope", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let no_key = app
        .send(
            app.http
                .post(app.url(&format!("/api/v1/webhooks/{id}/rotate-secret")))
                .json(&json!({})),
        )
        .await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn incoming_requests_signed_by_either_secret_pass_during_the_overlap_and_the_old_one_fails_after()
 {
    // Given an integration that sends with its secret, encrypted at rest
    let app = spawn_app_with(with_keys(&[KEY_1])).await;
    let id = app
        .register("http://127.0.0.1:9/hook", &["*"], OLD_SECRET)
        .await;
    assert_eq!(
        send_signed(&app, &id, OLD_SECRET, 1).await.status,
        StatusCode::ACCEPTED
    );

    // When the secret is rotated with a 2-second overlap
    let rotated = rotate(&app, &id, json!({"secret": NEW_SECRET, "overlap": "2s"})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);

    // Then both secrets are accepted during the overlap
    assert_eq!(
        send_signed(&app, &id, OLD_SECRET, 2).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send_signed(&app, &id, NEW_SECRET, 3).await.status,
        StatusCode::ACCEPTED
    );
    let other = send_signed(&app, &id, "never_this_secret_000", 4).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.error_code(), "INVALID_SIGNATURE");

    // And once it has ended, the old one is refused by itself, the new one
    // still accepted
    let mut n = 10;
    let refused = testkit::wait_until("the old secret to expire", PATIENCE, || {
        n += 1;
        let app = &app;
        let id = &id;
        async move {
            let reply = send_signed(app, id, OLD_SECRET, n).await;
            (reply.status == StatusCode::UNAUTHORIZED).then_some(reply)
        }
    })
    .await;
    assert_eq!(refused.error_code(), "INVALID_SIGNATURE");
    assert_eq!(
        send_signed(&app, &id, NEW_SECRET, 99).await.status,
        StatusCode::ACCEPTED
    );
    // The next save drops the expired secret from the record.
    let patched = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let settings = app.services.settings.clone();
    assert_eq!(
        sealed_under(&raw_record(&app.redis, &settings, &id).await),
        ["k1"]
    );
}

#[tokio::test]
async fn a_stored_webhook_holds_no_clear_secret_once_a_key_is_configured() {
    let app = spawn_app_with(with_keys(&[KEY_1])).await;
    let id = app
        .register("http://127.0.0.1:9/hook", &["*"], OLD_SECRET)
        .await;
    let rotated = rotate(&app, &id, json!({"overlap": "1h"})).await;
    let new_secret = rotated.data()["secret"].as_str().unwrap().to_owned();

    let settings = app.services.settings.clone();
    let raw = raw_record(&app.redis, &settings, &id).await;
    assert!(!raw.contains(OLD_SECRET), "{raw}");
    assert!(!raw.contains(&new_secret), "{raw}");
    assert!(!raw.contains(&new_secret["whsec_".len()..]), "{raw}");
    assert_eq!(sealed_under(&raw), ["k1", "k1"]);
    // Read back through the store, both secrets are what was set.
    let webhook = app
        .services
        .webhooks
        .get(&shared::ids::WebhookId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let valid: Vec<&str> = webhook
        .valid_secrets(Utc::now())
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(valid, [new_secret.as_str(), OLD_SECRET]);
}

/// Services on `redis` under `prefix_of`'s key prefix, with these keys.
fn services_with(redis: &TestRedis, prefix_of: &Settings, list: &[&str]) -> Services {
    let mut settings = test_settings(&redis.url());
    settings.redis.key_prefix = prefix_of.redis.key_prefix.clone();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.secrets.encryption_keys = keys(list);
    Services::connect(settings).expect("services")
}

async fn build(services: &Services) -> anyhow::Result<Application> {
    Application::build(
        services.clone(),
        api::http::auth::AdminKeys::new([testkit::TEST_ADMIN_KEY.to_owned()]),
    )
    .await
}

#[tokio::test]
async fn clear_secrets_migrate_at_start_and_the_key_itself_rotates() {
    // Given webhooks stored in clear by a version without a key
    let redis = TestRedis::start();
    let base = test_settings(&redis.url());
    let clear = services_with(&redis, &base, &[]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let w = testkit::register_webhook(
            &clear,
            "http://127.0.0.1:9/hook",
            vec![shared::events::catalog::EventFilter::All],
            &format!("{OLD_SECRET}_{i}"),
        )
        .await;
        ids.push(w.webhook_id.to_string());
    }
    assert_eq!(
        sealed_under(&raw_record(&redis, &base, &ids[0]).await),
        ["clear"]
    );

    // When two processes start with key k1 at the same moment
    let one = services_with(&redis, &base, &[KEY_1]);
    let two = services_with(&redis, &base, &[KEY_1]);
    let (a, b) = tokio::join!(
        one.webhooks.secure_at_start(AppEnvironment::Production),
        two.webhooks.secure_at_start(AppEnvironment::Production)
    );
    // Then every record was sealed once, under k1, and reads the same
    assert_eq!(a.unwrap() + b.unwrap(), ids.len());
    for (i, id) in ids.iter().enumerate() {
        let raw = raw_record(&redis, &base, id).await;
        assert_eq!(sealed_under(&raw), ["k1"], "{raw}");
        assert!(!raw.contains(OLD_SECRET));
        let w = one
            .webhooks
            .get(&shared::ids::WebhookId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.secret.expose(), format!("{OLD_SECRET}_{i}"));
    }
    // Idempotent: a second start rewrites nothing.
    assert_eq!(one.webhooks.reseal_all().await.unwrap(), 0);

    // When the key rotates (k2 first, k1 kept to decrypt) and the API starts
    let rotated = services_with(&redis, &base, &[KEY_2, KEY_1]);
    let app = build(&rotated).await.expect("starts with k2, k1");
    drop(app);
    // Then every record is re-sealed under k2, and k1 can go
    for id in &ids {
        assert_eq!(sealed_under(&raw_record(&redis, &base, id).await), ["k2"]);
    }
    let only_k2 = services_with(&redis, &base, &[KEY_2]);
    let w = only_k2
        .webhooks
        .all()
        .await
        .expect("all open with k2 alone");
    assert_eq!(w.len(), ids.len());

    // A key that is gone: start refused, naming the webhook and the key id
    let wrong = services_with(&redis, &base, &[KEY_3]);
    let refused = build(&wrong).await.err().expect("refused").to_string();
    assert!(refused.contains("k2"), "{refused}");
    assert!(refused.contains("webhook_"), "{refused}");
    assert!(refused.contains("secrets.encryption_keys"), "{refused}");
    // No key at all with sealed records: refused too (not read as clear).
    let none = services_with(&redis, &base, &[]);
    let refused = build(&none).await.err().expect("refused").to_string();
    assert!(refused.contains("k2"), "{refused}");
}

#[tokio::test]
async fn without_a_key_production_refuses_to_start() {
    let redis = TestRedis::start();
    let base = test_settings(&redis.url());
    let mut settings = base.clone();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.app.environment = AppEnvironment::Production;
    let production = Services::connect(settings.clone()).expect("services");
    let refused = build(&production).await.err().expect("refused").to_string();
    assert!(refused.contains("secrets.encryption_keys"), "{refused}");
    assert!(refused.contains("production"), "{refused}");

    // (A local trial without a key is how every other test starts.)
    settings.secrets.encryption_keys = keys(&[KEY_1]);
    let keyed = Services::connect(settings).expect("services");
    assert!(build(&keyed).await.is_ok());
}
