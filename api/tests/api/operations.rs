//! What operators see: the binary's start-up checks, metrics, queue depths,
//! and bounded history.

use std::process::Command;

use crate::common::{spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use testkit::{Behaviour, PATIENCE, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "my_secret_key_12345";

#[test]
fn a_bad_setting_stops_the_binary_naming_the_key() {
    let cases = [
        ("SUPPORTRAG__DELIVERY__TIMEOUT", "soon", "delivery.timeout"),
        (
            "SUPPORTRAG__SECURITY__ALLOWED_CIDRS",
            "127.0.0.0/8,nonsense",
            "security.allowed_cidrs",
        ),
        (
            "SUPPORTRAG__SERVER__BODY_LIMIT",
            "lots",
            "server.body_limit",
        ),
        ("SUPPORTRAG__REDIS__URL", "http://example", "redis.url"),
    ];
    for (var, value, key) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_supportrag-api"))
            .env(var, value)
            // Never reached: the process must stop before binding.
            .env("SUPPORTRAG__SERVER__BIND", "127.0.0.1:0")
            .output()
            .expect("binary runs");
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key),
            "{var}={value}: stderr does not name {key}: {stderr}"
        );
    }
}

#[test]
fn the_binary_explains_itself() {
    let output = Command::new(env!("CARGO_BIN_EXE_supportrag-api"))
        .arg("--help")
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--config"));
}

#[tokio::test]
async fn metrics_and_queue_depths_cover_the_whole_system() {
    let app = spawn_app().await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = app.register(&receiver.url(), &["*"], SECRET).await;
    // No worker yet: the test events wait in the queue.
    for _ in 0..3 {
        app.send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
            .await;
    }
    let queues = app.admin_get("/api/v1/admin/queues").await;
    assert_eq!(queues.status, StatusCode::OK);
    let deliver = &queues.data()["queues"][0];
    assert_eq!(deliver["queue"], "deliver");
    assert_eq!(deliver["ready"], 3, "{}", queues.body);
    assert!(deliver["oldest_ready_age_ms"].is_u64());

    let worker = spawn_worker(app.services.clone()).await;
    receiver.wait_for(3, PATIENCE).await;
    let moving = wait_until("the queue to show its rate", PATIENCE, || async {
        let queues = app.admin_get("/api/v1/admin/queues").await;
        let deliver = queues.data()["queues"][0].clone();
        (deliver["processed_total"] == 3).then_some(deliver)
    })
    .await;
    assert!(
        moving["processed_per_second"].as_f64().unwrap() > 0.0,
        "{moving}"
    );
    assert_eq!(moving["ready"], 0);
    assert!(moving["oldest_ready_age_ms"].is_null(), "{moving}");
    let text = wait_until("metrics to show 3 processed jobs", PATIENCE, || async {
        let reply = app.send(app.admin(Method::GET, "/metrics")).await;
        let text = reply.body.as_str().unwrap_or_default().to_owned();
        text.contains("supportrag_jobs_processed_total{queue=\"deliver\"} 3")
            .then_some(text)
    })
    .await;
    for line in [
        "supportrag_queue_jobs{queue=\"deliver\",state=\"ready\"} 0",
        "supportrag_queue_jobs{queue=\"deliver\",state=\"dead\"} 0",
        "supportrag_delivery_latency_seconds_count 3",
        "http_requests_total",
        "supportrag_build_info{component=\"api\",version=",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    // Per instance and cluster-wide apart, so several API instances can be
    // scraped without adding up the cluster's figures.
    let instance = app
        .send(app.admin(Method::GET, "/metrics?scope=instance"))
        .await;
    let instance = instance.body.as_str().unwrap_or_default();
    assert!(instance.contains("http_requests_total"), "{instance}");
    assert!(!instance.contains("supportrag_queue_jobs"), "{instance}");
    let cluster = app
        .send(app.admin(Method::GET, "/metrics?scope=cluster"))
        .await;
    let cluster = cluster.body.as_str().unwrap_or_default();
    assert!(
        cluster.contains("supportrag_queue_jobs{queue=\"deliver\""),
        "{cluster}"
    );
    assert!(!cluster.contains("http_requests_total"), "{cluster}");
    let wrong = app
        .send(app.admin(Method::GET, "/metrics?scope=everything"))
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    worker.shutdown().await;
}

#[tokio::test]
async fn metrics_can_be_served_open_on_their_own_address() {
    let app =
        spawn_app_with(|s| s.metrics.bind = Some("127.0.0.1:0".parse().expect("literal"))).await;
    let on_main = app
        .send(
            app.http
                .get(app.url("/metrics"))
                .bearer_auth(testkit::TEST_ADMIN_KEY),
        )
        .await;
    assert_eq!(
        on_main.status,
        StatusCode::NOT_FOUND,
        "moved off the main port"
    );
    let addr = app.metrics_addr.expect("metrics listener bound");
    let open = app
        .send(app.http.get(format!("http://{addr}/metrics")))
        .await;
    assert_eq!(
        open.status,
        StatusCode::OK,
        "open without a key on its own address"
    );
    assert!(
        open.body
            .as_str()
            .unwrap_or_default()
            .contains("supportrag_queue_jobs")
    );
}

#[tokio::test]
async fn delivery_history_is_bounded_per_webhook() {
    let app = spawn_app_with(|s| s.delivery.history_max_per_webhook = 3).await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = app.register(&receiver.url(), &["*"], SECRET).await;
    for _ in 0..5 {
        app.send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
            .await;
    }
    let history = app
        .admin_get(&format!("/api/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!(
        history.body["meta"]["pagination"]["total"], 3,
        "{}",
        history.body
    );
    let worker = spawn_worker(app.services.clone()).await;
    receiver.wait_for(5, PATIENCE).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn readiness_and_metrics_show_each_search_replica() {
    let app = spawn_app().await;
    let ready = wait_until("/readyz to pass", PATIENCE, || async {
        let reply = app.send(app.http.get(app.url("/readyz"))).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    let replica = &ready.data()["search_replica"];
    assert_eq!(replica["caught_up"], true, "{}", ready.body);
    assert_eq!(replica["lag_entries"], 0, "{}", ready.body);
    assert!(replica["position"].is_string(), "{}", ready.body);

    let worker = spawn_worker(app.services.clone()).await;
    // The worker reports its replica through Redis when it starts.
    let text = wait_until(
        "metrics to show the API's and the worker's replica",
        PATIENCE,
        || async {
            let reply = app.send(app.admin(Method::GET, "/metrics")).await;
            let text = reply.body.as_str().unwrap_or_default().to_owned();
            (text
                .matches("supportrag_search_replica_lag_seconds{")
                .count()
                >= 2)
                .then_some(text)
        },
    )
    .await;
    for line in [
        "supportrag_search_replica_lag_entries{replica=\"api\"} 0",
        "supportrag_search_replica_chunks{replica=\"api\"} 0",
        "# TYPE supportrag_search_replica_lag_seconds gauge",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    worker.shutdown().await;
}

/// One trace, followed in a tracing tool: a signed incoming message, its
/// chat job (the RAG step) and the deliveries of what it produced share the
/// caller's W3C trace id in the spans exported over OTLP, and receivers get
/// it in `traceparent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_message_its_job_and_its_deliveries_form_one_exported_trace() {
    use shared::webhooks::signing::{Secret, sign_incoming_timestamped};

    let collector = spawn_receiver(Behaviour::AlwaysOk).await;
    let telemetry = shared::config::TelemetrySettings {
        otlp_endpoint: Some(
            url::Url::parse(&format!("http://{}", collector.addr())).expect("collector URL"),
        ),
    };
    let defaults = shared::config::Settings::defaults().expect("defaults");
    let guard = shared::telemetry::init(&defaults.log, &telemetry, "supportrag-test")
        .expect("telemetry starts");
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let secret = "otel_test_secret_0123456789";
    let id = app.register(&receiver.url(), &["*"], secret).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = serde_json::to_vec(&serde_json::json!({
        "event_type": "message.received",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "slack",
        "data": {"user_id": "U1", "message": "How do I reset my password?",
                 "external_message_id": "m1"},
    }))
    .expect("JSON");
    let now = chrono::Utc::now().timestamp();
    let signature = sign_incoming_timestamped(&Secret::parse(secret).expect("secret"), now, &body);
    let reply = app
        .send(
            app.http
                .post(app.url("/api/v1/webhooks/incoming/message"))
                .header("Content-Type", "application/json")
                .header("X-Webhook-ID", &id)
                .header("X-Webhook-Timestamp", now.to_string())
                .header("X-Webhook-Signature", signature)
                .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                .body(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    let delivered = receiver.wait_for(1, PATIENCE).await;
    let parent = delivered[0]
        .header("traceparent")
        .expect("traceparent sent");
    assert!(parent.starts_with(&format!("00-{trace}-")), "{parent}");

    // Spans are exported in batches (every few seconds).
    let spans = wait_until("the trace's spans at the collector", PATIENCE, || async {
        let spans: Vec<(String, Option<String>)> = collector
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/traces")
            .flat_map(|r| exported_spans(&r.json(), trace))
            .collect();
        let has = |name: &str, queue: Option<&str>| {
            spans
                .iter()
                .any(|(n, q)| n == name && q.as_deref() == queue)
        };
        (has("http_request", None) && has("job", Some("chat")) && has("job", Some("deliver")))
            .then_some(spans)
    })
    .await;
    assert!(spans.len() >= 3, "{spans:?}");
    // The trace as the collector got it (shown with `--no-capture`).
    for (name, queue) in &spans {
        println!("trace {trace}: {name} {}", queue.as_deref().unwrap_or(""));
    }
    worker.shutdown().await;
    drop(guard);
}

/// (span name, its `queue` attribute) of every exported span of `trace`.
fn exported_spans(body: &serde_json::Value, trace: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                if span["traceId"].as_str() != Some(trace) {
                    continue;
                }
                let queue = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "queue")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .map(str::to_owned);
                found.push((span["name"].as_str().unwrap_or_default().to_owned(), queue));
            }
        }
    }
    found
}
