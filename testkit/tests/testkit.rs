//! The test kit's own promises, so a failing scenario elsewhere points at
//! the system, not at its tools.

use std::time::Duration;

use testkit::{Behaviour, PATIENCE, TestRedis, settings_env, spawn_receiver, test_settings};

#[test]
fn each_test_redis_is_private_and_never_on_6379() {
    let a = TestRedis::start();
    let b = TestRedis::start();
    assert_ne!(a.port(), b.port());
    assert!(a.port() != 6379 && b.port() != 6379);
    let mut conn = a.client().get_connection().expect("connect");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("a")
        .query(&mut conn)
        .expect("SET");
    let mut other = b.client().get_connection().expect("connect");
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut other).expect("GET");
    assert_eq!(value, None);
}

#[test]
fn a_killed_aof_redis_restarts_on_the_same_port_with_its_data() {
    let mut redis = TestRedis::start_with_aof();
    let port = redis.port();
    let mut conn = redis.client().get_connection().expect("connect");
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("yes")
        .query(&mut conn)
        .expect("SET");

    redis.kill();
    assert!(!redis.is_running());
    redis.restart();

    assert_eq!(redis.port(), port);
    let mut conn = redis.client().get_connection().expect("reconnect");
    let value: Option<String> = redis::cmd("GET").arg("kept").query(&mut conn).expect("GET");
    assert_eq!(
        value.as_deref(),
        Some("yes"),
        "appendfsync always keeps an acknowledged write"
    );
}

#[test]
fn settings_are_short_and_namespaced_and_reach_processes_as_env() {
    let a = test_settings("redis://127.0.0.1:1/");
    let b = test_settings("redis://127.0.0.1:1/");
    assert_ne!(a.redis.key_prefix, b.redis.key_prefix);
    assert_eq!(
        a.delivery.retry_schedule,
        [Duration::from_millis(50), Duration::from_millis(100)]
    );
    let env = settings_env(&a);
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("SUPPORTRAG__REDIS__URL"), Some("redis://127.0.0.1:1/"));
    assert_eq!(
        get("SUPPORTRAG__REDIS__KEY_PREFIX"),
        Some(a.redis.key_prefix.as_str())
    );
    assert_eq!(
        get("SUPPORTRAG__DELIVERY__RETRY_SCHEDULE"),
        Some("50ms,100ms")
    );
    assert_eq!(
        get("SUPPORTRAG__SECURITY__ALLOWED_CIDRS"),
        Some("127.0.0.0/8")
    );
    assert_eq!(get("SUPPORTRAG__QUEUE__VISIBILITY_TIMEOUT"), Some("2s"));
}

#[tokio::test]
async fn a_receiver_fails_as_told_then_recovers_when_told() {
    let receiver = spawn_receiver(Behaviour::FailTimes(1)).await;
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(receiver.url())
            .header("X-Test", "yes")
            .body(body)
            .send()
    };

    assert_eq!(post("one").await.expect("POST").status().as_u16(), 500);
    assert_eq!(post("two").await.expect("POST").status().as_u16(), 200);
    receiver.set_behaviour(Behaviour::AlwaysStatus(503));
    assert_eq!(post("three").await.expect("POST").status().as_u16(), 503);
    receiver.set_behaviour(Behaviour::AlwaysOk);
    assert_eq!(post("four").await.expect("POST").status().as_u16(), 200);

    let requests = receiver.wait_for(4, PATIENCE).await;
    let bodies: Vec<&[u8]> = requests.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [b"one".as_slice(), b"two", b"three", b"four"]);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/webhooks");
    assert_eq!(requests[0].header("x-test"), Some("yes"));
}

#[tokio::test]
async fn the_js_verifier_can_fail_first_then_verifies_a_correct_signature() {
    let secret = "my_secret_key_12345";
    let verifier = testkit::spawn_js_verifier_failing_first(&[("webhook_abc123", secret)], 1);
    // Already in the form JSON.stringify gives back, as our bodies are.
    let body = r#"{"event_type":"session.ended","data":{"n":1,"text":"Привет 👋"}}"#;
    let timestamp = 1_700_000_000;
    let signature = shared::webhooks::signing::sign_incoming_timestamped(
        &shared::webhooks::signing::Secret::parse(secret).expect("secret"),
        timestamp,
        body.as_bytes(),
    );
    let http = reqwest::Client::new();
    let post = || {
        http.post(verifier.url())
            .header("content-type", "application/json")
            .header("x-webhook-signature", &signature)
            .header("x-webhook-timestamp", timestamp.to_string())
            .header("x-webhook-id", "webhook_abc123")
            .body(body)
            .send()
    };

    assert_eq!(post().await.expect("POST").status().as_u16(), 500);
    assert_eq!(post().await.expect("POST").status().as_u16(), 200);

    let verified = verifier.wait_for(1, PATIENCE).await;
    assert_eq!(verified[0]["payload"]["data"]["text"], "Привет 👋");
    assert_eq!(verifier.received().await.len(), 2);
    assert!(verifier.rejected().await.is_empty());
}
