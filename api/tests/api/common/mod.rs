//! `spawn_app`: the real API on a free port against a private Redis, and a
//! small client that speaks to it as an integrator would.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::sync::Arc;

use api::http::auth::AdminKeys;
use api::startup::Application;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use shared::config::Settings;
use shared::net::ssrf::{NameResolver, SystemResolver};
use shared::services::Services;
use testkit::{TEST_ADMIN_KEY, TestRedis, test_settings};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub services: Services,
    pub redis: TestRedis,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_resolving(adjust, Arc::new(SystemResolver)).await
}

/// As [`spawn_app_with`], with the DNS the SSRF checks see (a
/// `StaticResolver` to script private answers and rebinding); the worker
/// spawned from `TestApp::services` uses the same one.
pub async fn spawn_app_resolving(
    adjust: impl FnOnce(&mut Settings),
    resolver: Arc<dyn NameResolver>,
) -> TestApp {
    spawn_app_on(TestRedis::start(), adjust, resolver).await
}

/// As [`spawn_app_with`], on a Redis the test prepared (e.g. with TLS).
pub async fn spawn_app_on(
    redis: TestRedis,
    adjust: impl FnOnce(&mut Settings),
    resolver: Arc<dyn NameResolver>,
) -> TestApp {
    let mut settings = test_settings(&redis.url());
    settings.server.bind = "127.0.0.1:0".parse().expect("literal address");
    settings.server.body_limit = shared::config::ByteSize(64 * 1024);
    adjust(&mut settings);
    let keys = AdminKeys::new(settings.auth.admin_keys.iter().cloned());
    let services = Services::with_resolver(settings, resolver).expect("services");
    let app = Application::build(services.clone(), keys)
        .await
        .expect("API builds");
    let addr = app.local_addr().expect("bound");
    let metrics_addr = app.metrics_addr();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    TestApp {
        addr,
        metrics_addr,
        services,
        redis,
        // Idle pooled connections are dropped before the server's header
        // read timeout (10 s) would close them under a request in flight.
        http: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .build()
            .expect("HTTP client"),
        stop,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A response read whole: status, headers we care about, JSON body.
pub struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub trace_id: Option<String>,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an error envelope, asserting its shape.
    pub fn error_code(&self) -> &str {
        assert!(
            self.body["meta"]["trace_id"].is_string(),
            "no trace id in {}",
            self.body
        );
        assert!(
            self.body["error"]["message"].is_string(),
            "no message in {}",
            self.body
        );
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error envelope: {}", self.body))
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the admin key.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(TEST_ADMIN_KEY)
    }

    /// Posts `body` to the incoming route `path` as an integrator's code
    /// does: signed over `"<now>.<body>"` with `secret`.
    pub async fn post_signed(
        &self,
        path: &str,
        webhook_id: &str,
        secret: &str,
        body: String,
    ) -> Reply {
        let now = chrono::Utc::now().timestamp();
        let key = shared::webhooks::signing::Secret::parse(secret).expect("secret");
        let signature =
            shared::webhooks::signing::sign_incoming_timestamped(&key, now, body.as_bytes());
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .header("x-webhook-id", webhook_id)
                .header("x-webhook-timestamp", now.to_string())
                .header("x-webhook-signature", signature)
                .body(body),
        )
        .await
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let trace_id = header("x-trace-id");
        let bytes = response.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            retry_after,
            trace_id,
            body,
        }
    }

    pub async fn admin_json(&self, method: Method, path: &str, body: &Value) -> Reply {
        self.send(
            self.admin(method, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.admin(Method::GET, path)).await
    }

    /// Registers a webhook pointing at `url` and returns its id.
    pub async fn register(&self, url: &str, events: &[&str], secret: &str) -> String {
        let reply = self
            .admin_json(
                Method::POST,
                "/api/v1/webhooks/register",
                &serde_json::json!({"name": "Test", "url": url, "events": events, "secret": secret}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.data()["webhook_id"]
            .as_str()
            .expect("webhook_id")
            .to_owned()
    }
}
