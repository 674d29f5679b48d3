//! Secrets never leak (issue 5 item 10): the real API and worker
//! binaries run as processes with `log.level = trace`, a full flow goes
//! through them, and then their logs, every API response, /metrics, the
//! delivery and dead-letter records and every Redis key other than the
//! webhook registry itself are searched for the webhook secrets and the
//! admin key. None may appear anywhere (the one exception: the response to
//! the registration that generated a secret, which shows it once).
//!
//! Constant-time comparison cannot be proven by a test; see
//! docs/RELIABILITY.md for where it is done in code.

use std::net::TcpListener;

use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};
use testkit::{
    Behaviour, PATIENCE, TestRedis, WorkerProcess, settings_env, spawn_receiver, test_settings,
    wait_until,
};

fn canary(label: &str) -> String {
    format!(
        "{label}_canary_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Everything the flow saw, to be searched at the end.
#[derive(Default)]
struct Seen {
    /// (what, text)
    texts: Vec<(String, String)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.texts.push((what.into(), text.into()));
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        seen: &mut Seen,
        what: &str,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.expect("a body");
        seen.add(format!("{what} (headers)"), headers);
        seen.add(what, text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_admin_keys_never_appear_in_logs_errors_records_or_metrics() {
    let admin_key = canary("sk_admin");
    let ok_secret = canary("whsec_ok");
    let failing_secret = canary("whsec_fail");
    let rotated_secret = canary("whsec_rotated");

    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.auth.admin_keys = vec![admin_key.clone()];
    // Everything every crate logs (debug and below), so nothing is filtered
    // out of the search.
    settings.log.level = "trace".to_owned();
    let port = free_port();
    let mut env = settings_env(&settings);
    env.push((
        "SUPPORTRAG__SERVER__BIND".into(),
        format!("127.0.0.1:{port}"),
    ));
    let mut api_process = WorkerProcess::spawn(env!("CARGO_BIN_EXE_supportrag-api"), &env);
    let mut worker_process = WorkerProcess::spawn(testkit::worker_binary(), &env);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    wait_until("the API process to answer /healthz", PATIENCE, || async {
        let r = api.http.get(format!("{}/healthz", api.base)).send().await;
        r.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;

    let ok_receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let failing_receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let mut seen = Seen::default();
    let key = admin_key.as_str();

    // Register: one receiver that works, one that always fails, one with a
    // generated secret.
    let (status, ok) = api
        .call(&mut seen, "register ok", Method::POST, "/api/v1/webhooks/register", key,
            Some(&json!({"name": "ok", "url": ok_receiver.url(), "events": ["*"], "secret": ok_secret})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");
    let ok_id = ok["data"]["webhook_id"].as_str().expect("id").to_owned();
    let (status, failing) = api
        .call(
            &mut seen,
            "register failing",
            Method::POST,
            "/api/v1/webhooks/register",
            key,
            Some(&json!({"name": "failing", "url": failing_receiver.url(),
                         "events": ["chat.escalated"], "secret": failing_secret})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{failing}");
    let failing_id = failing["data"]["webhook_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut generated_seen = Seen::default();
    let (status, generated) = api
        .call(
            &mut generated_seen,
            "register generated",
            Method::POST,
            "/api/v1/webhooks/register",
            key,
            Some(&json!({"name": "gen", "url": ok_receiver.url(), "events": ["session.ended"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{generated}");
    let generated_secret = generated["data"]["secret"]
        .as_str()
        .expect("a generated secret is shown once")
        .to_owned();
    let generated_id = generated["data"]["webhook_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Wrong admin keys: one a character off, one that is a webhook secret,
    // one with the right key under the wrong scheme.
    // The last character changed (to one it is not: the key is random).
    let last = if admin_key.ends_with('x') { 'y' } else { 'x' };
    let near_miss = format!("{}{last}", &admin_key[..admin_key.len() - 1]);
    for (what, wrong) in [
        ("near-miss key", near_miss.as_str()),
        ("secret as key", ok_secret.as_str()),
    ] {
        let (status, body) = api
            .call(
                &mut seen,
                what,
                Method::GET,
                "/api/v1/webhooks",
                wrong,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    let basic = api
        .http
        .get(format!("{}/api/v1/webhooks", api.base))
        .header("authorization", format!("Basic {admin_key}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    seen.add("basic scheme", basic.text().await.expect("body"));

    // Incoming: a signed message (accepted), one signed with the wrong
    // secret (refused), one signed with the right secret over another body.
    let body = json!({"event_type": "message.received",
        "data": {"user_id": "U1", "message": "How do refunds work?", "external_message_id": "m1"}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let ok_signing = Secret::parse(&ok_secret).expect("secret");
    for (what, signature, want) in [
        (
            "incoming signed",
            sign_incoming_timestamped(&ok_signing, now, body.as_bytes()),
            StatusCode::ACCEPTED,
        ),
        (
            "incoming wrong secret",
            sign_incoming_timestamped(
                &Secret::parse(&failing_secret).expect("s"),
                now,
                body.as_bytes(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "incoming other body",
            sign_incoming_timestamped(&ok_signing, now, b"{}"),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let response = api
            .http
            .post(format!("{}/api/v1/webhooks/incoming/message", api.base))
            .header("content-type", "application/json")
            .header("X-Webhook-ID", &ok_id)
            .header("X-Webhook-Timestamp", now.to_string())
            .header("X-Webhook-Signature", signature)
            .body(body.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), want, "{what}");
        seen.add(what, response.text().await.expect("body"));
    }

    // A delivery that succeeds (the chat answer) and one that fails until it
    // is dead (test event to the failing receiver, then error.occurred).
    let (status, queued) = api
        .call(
            &mut seen,
            "test event",
            Method::POST,
            &format!("/api/v1/webhooks/{failing_id}/test"),
            key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    ok_receiver.wait_for(1, PATIENCE).await;
    wait_until("the failing delivery to be dead", PATIENCE, || async {
        let mut scratch = Seen::default();
        let (_, history) = api
            .call(
                &mut scratch,
                "history",
                Method::GET,
                &format!("/api/v1/webhooks/{failing_id}/deliveries"),
                key,
                None,
            )
            .await;
        (history["data"][0]["status"] == "dead").then_some(())
    })
    .await;

    // Rotate a secret; read everything back.
    let (status, patched) = api
        .call(
            &mut seen,
            "rotate secret",
            Method::PATCH,
            &format!("/api/v1/webhooks/{ok_id}"),
            key,
            Some(&json!({"secret": rotated_secret})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    for id in [&ok_id, &failing_id, &generated_id] {
        api.call(
            &mut seen,
            "get webhook",
            Method::GET,
            &format!("/api/v1/webhooks/{id}"),
            key,
            None,
        )
        .await;
        let (_, history) = api
            .call(
                &mut seen,
                "deliveries",
                Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries"),
                key,
                None,
            )
            .await;
        for delivery in history["data"].as_array().into_iter().flatten() {
            let delivery_id = delivery["delivery_id"].as_str().expect("delivery id");
            api.call(
                &mut seen,
                "delivery detail",
                Method::GET,
                &format!("/api/v1/webhooks/deliveries/{delivery_id}"),
                key,
                None,
            )
            .await;
        }
    }
    api.call(
        &mut seen,
        "list webhooks",
        Method::GET,
        "/api/v1/webhooks",
        key,
        None,
    )
    .await;
    let (_, dead) = api
        .call(
            &mut seen,
            "dead letters",
            Method::GET,
            "/api/v1/dead-letters",
            key,
            None,
        )
        .await;
    assert!(
        dead["data"].as_array().is_some_and(|d| !d.is_empty()),
        "the failing delivery is dead-lettered: {dead}"
    );
    for item in dead["data"].as_array().into_iter().flatten() {
        let id = item["dead_letter_id"].as_str().expect("dead letter id");
        api.call(
            &mut seen,
            "dead letter detail",
            Method::GET,
            &format!("/api/v1/dead-letters/{id}"),
            key,
            None,
        )
        .await;
    }
    api.call(
        &mut seen,
        "queues",
        Method::GET,
        "/api/v1/admin/queues",
        key,
        None,
    )
    .await;
    let (status, _) = api
        .call(&mut seen, "metrics", Method::GET, "/metrics", key, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    api.call(
        &mut seen,
        "openapi",
        Method::GET,
        "/api/v1/openapi.json",
        key,
        None,
    )
    .await;

    // What the receivers were sent (signatures, never secrets).
    for r in ok_receiver
        .requests()
        .iter()
        .chain(failing_receiver.requests().iter())
    {
        seen.add(
            "outbound request",
            format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.body)),
        );
    }

    // Every Redis value except the registry hash, which must hold them.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let registry = shared::keys::webhooks(&settings.redis.key_prefix);
    let keys: Vec<String> = conn.keys("*").await.expect("KEYS");
    assert!(
        keys.contains(&registry),
        "registry key {registry} in {keys:?}"
    );
    for key in keys.iter().filter(|k| **k != registry) {
        seen.add(format!("redis {key}"), redis_value(&mut conn, key).await);
    }

    // Stop both processes so their logs are complete.
    api_process.terminate();
    worker_process.terminate();
    api_process.wait_exit(PATIENCE);
    worker_process.wait_exit(PATIENCE);
    for (what, process) in [("API log", &api_process), ("worker log", &worker_process)] {
        let log = std::fs::read_to_string(process.log_path()).expect("log file");
        assert!(log.lines().count() > 10, "{what} is nearly empty:\n{log}");
        seen.add(what, log);
    }
    let registry_dump = redis_value(&mut conn, &registry).await;
    assert!(
        registry_dump.contains(&rotated_secret),
        "the check can see a stored secret"
    );

    let secrets = [
        ("admin key", admin_key.as_str()),
        ("webhook secret", ok_secret.as_str()),
        ("failing webhook secret", failing_secret.as_str()),
        ("rotated secret", rotated_secret.as_str()),
        ("generated secret", generated_secret.as_str()),
    ];
    let mut leaks = Vec::new();
    for (what, text) in &seen.texts {
        for (name, secret) in secrets {
            if text.contains(secret) {
                leaks.push(format!("{name} in {what}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    // The one place a generated secret may appear: its registration answer.
    assert_eq!(generated_seen.texts.len(), 2);
    assert!(
        seen.texts.len() > 20,
        "the flow produced what it should have"
    );
}

async fn redis_value(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(conn)
        .await
        .expect("TYPE");
    let value: redis::Value = match kind.as_str() {
        "string" => redis::cmd("GET").arg(key).query_async(conn).await,
        "hash" => redis::cmd("HGETALL").arg(key).query_async(conn).await,
        "list" => {
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(conn)
                .await
        }
        "set" => redis::cmd("SMEMBERS").arg(key).query_async(conn).await,
        "zset" => {
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await
        }
        "stream" => {
            redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(conn)
                .await
        }
        _ => Ok(redis::Value::Nil),
    }
    .expect("read a key");
    format!("{value:?}")
}
