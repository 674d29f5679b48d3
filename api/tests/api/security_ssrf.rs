//! SSRF, end to end (issue 5 item 8): the same policy judges
//! webhook URLs and document URLs when they are registered (API, 422) and
//! again when the worker connects (egress client), so a name that rebinds
//! to a private address after registration, or a receiver that redirects
//! to one, never gets a request out of us.
//!
//! The address table itself is unit-tested in `shared/src/net/ssrf.rs`, and the
//! egress client's connection-time filtering in `shared/src/net/egress.rs`;
//! here the whole path runs: API → Redis → worker → egress.
//!
//! Tests normally allow 127.0.0.0/8 (`test_settings`); these run with an
//! empty allow-list unless a case needs a loopback receiver on purpose.
//! DNS is scripted with `StaticResolver`, shared by the API and the worker.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{TestApp, spawn_app_resolving};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode as AxumStatus, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::catalog::{EventFilter, EventType};
use shared::net::ssrf::StaticResolver;
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};
use testkit::{Behaviour, PATIENCE, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "ssrf_test_secret_0123456789";
const DOCUMENT: &str = "/api/v1/webhooks/incoming/document";
/// A public address (example.com's) that DNS answers first; nothing ever
/// connects to it in these tests.
const PUBLIC: &str = "93.184.216.34";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// DNS for the tests: names that resolve to refused addresses, one public
/// name, and names that answer public first and loopback afterwards.
fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with_host("public.test", vec![ip(PUBLIC)])
        .with_host("private.test", vec![ip("10.0.0.7")])
        .with_host("metadata.test", vec![ip("169.254.169.254")])
        .with_host("mixed.test", vec![ip(PUBLIC), ip("127.0.0.1")])
        .with_host("v6-private.test", vec![ip("fd00::1")])
        .with_host("mapped.test", vec![ip("::ffff:10.0.0.1")])
        .with_host("cgnat.test", vec![ip("100.64.1.1")])
        .with_sequence(
            "rebind-hook.test",
            vec![vec![ip(PUBLIC)], vec![ip("127.0.0.1")]],
        )
        .with_sequence(
            "rebind-doc.test",
            vec![vec![ip(PUBLIC)], vec![ip("127.0.0.1")]],
        )
}

/// Every URL the policy must refuse, with nothing allow-listed: each
/// blocked range, the odd spellings of 127.0.0.1, and names whose DNS
/// answers (or one of whose answers) are refused.
const REFUSED: &[&str] = &[
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8000/api/v1/webhooks",
    "http://localhost:6379/",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[fe80::1]/hook",
    "http://[ff02::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::10.0.0.1]/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://127.1/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f000001/hook",
    "http://127.0.0.1./hook",
    "https://private.test/hook",
    "https://metadata.test/latest/meta-data/",
    "https://mixed.test/hook",
    "https://v6-private.test/hook",
    "https://mapped.test/hook",
    "https://cgnat.test/hook",
    "https://PRIVATE.test./hook",
];

async fn ssrf_app(allowed: &[&str]) -> (TestApp, Arc<StaticResolver>) {
    let resolver = Arc::new(resolver());
    let app = spawn_app_resolving(
        |s| {
            s.security.allowed_cidrs = allowed
                .iter()
                .map(|c| c.parse().expect("literal CIDR"))
                .collect();
        },
        resolver.clone(),
    )
    .await;
    (app, resolver)
}

fn assert_refused_field(reply: &crate::common::Reply, field: &str, case: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{case}: {}",
        reply.body
    );
    assert_eq!(reply.error_code(), "VALIDATION_FAILED", "{case}");
    assert_eq!(reply.body["error"]["details"]["field"], field, "{case}");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("blocked by SSRF policy"),
        "{case}: the message should say why: {message}"
    );
}

#[tokio::test]
async fn registration_and_changes_refuse_every_private_address_form() {
    let (app, _resolver) = ssrf_app(&[]).await;

    for url in REFUSED {
        let reply = app
            .admin_json(
                Method::POST,
                "/api/v1/webhooks/register",
                &json!({"name": "x", "url": url, "events": ["*"], "secret": SECRET}),
            )
            .await;
        assert_refused_field(&reply, "url", url);
    }
    let listed = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(
        listed.body["meta"]["pagination"]["total"], 0,
        "{}",
        listed.body
    );

    // A public name registers; changing its URL to any refused one fails
    // and leaves the stored URL alone.
    let id = app
        .register("https://public.test/hook", &["*"], SECRET)
        .await;
    for url in REFUSED {
        let reply = app
            .admin_json(
                Method::PATCH,
                &format!("/api/v1/webhooks/{id}"),
                &json!({ "url": url }),
            )
            .await;
        assert_refused_field(&reply, "url", url);
    }
    let stored = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(stored.data()["url"], "https://public.test/hook");
}

/// Signs and posts an incoming document whose `document_url` is `url`.
async fn post_document(
    app: &TestApp,
    webhook_id: &str,
    url: &str,
    external_id: &str,
) -> crate::common::Reply {
    let body = json!({
        "event_type": "document.upload",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "kms",
        "data": {
            "document_url": url,
            "document_name": "Policy",
            "document_format": "text",
            "external_document_id": external_id,
        }
    })
    .to_string();
    let now = Utc::now().timestamp();
    let secret = Secret::parse(SECRET).expect("test secret");
    app.send(
        app.http
            .post(app.url(DOCUMENT))
            .header("content-type", "application/json")
            .header("X-Webhook-ID", webhook_id)
            .header("X-Webhook-Timestamp", now.to_string())
            .header(
                "X-Webhook-Signature",
                sign_incoming_timestamped(&secret, now, body.as_bytes()),
            )
            .body(body),
    )
    .await
}

/// An integration that only sends (subscribed to an event these tests never
/// cause, so no delivery is attempted to its placeholder URL).
async fn sender(app: &TestApp) -> String {
    testkit::register_webhook(
        &app.services,
        "https://public.test/outbound",
        vec![EventFilter::Only(EventType::SessionEnded)],
        SECRET,
    )
    .await
    .webhook_id
    .to_string()
}

#[tokio::test]
async fn document_urls_are_refused_at_intake_by_the_same_policy() {
    let (app, _resolver) = ssrf_app(&[]).await;
    let webhook_id = sender(&app).await;

    for (i, url) in REFUSED.iter().enumerate() {
        let reply = post_document(&app, &webhook_id, url, &format!("doc_{i}")).await;
        assert_refused_field(&reply, "data.document_url", url);
    }
    let depth = app.services.queue.depth("ingest").await.expect("depth");
    assert_eq!(
        depth.ready + depth.scheduled + depth.in_flight,
        0,
        "nothing may be queued for a refused document URL"
    );
}

/// A tiny HTTP server that counts requests and answers every one with
/// `answer(path)`.
struct Spy {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct SpyState {
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    answer: Arc<dyn Fn(&str) -> Response + Send + Sync>,
}

async fn spy_handler(State(state): State<SpyState>, uri: Uri) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state
        .paths
        .lock()
        .expect("spy paths")
        .push(uri.path().to_owned());
    (state.answer)(uri.path())
}

impl Spy {
    async fn start(answer: impl Fn(&str) -> Response + Send + Sync + 'static) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let state = SpyState {
            hits: hits.clone(),
            paths: paths.clone(),
            answer: Arc::new(answer),
        };
        let app = Router::new().fallback(spy_handler).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind spy");
        let addr = listener.local_addr().expect("spy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            hits,
            paths,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn redirect_to(location: String) -> impl Fn(&str) -> Response + Send + Sync + 'static {
    move |_| (AxumStatus::FOUND, [(header::LOCATION, location.clone())]).into_response()
}

fn text_document(_: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain")],
        "Refund policy: refunds are issued within 14 days.",
    )
        .into_response()
}

/// Waits until the webhook's newest delivery has `status`, and returns it
/// with every attempt (the detail view).
async fn delivery_with_status(app: &TestApp, webhook_id: &str, status: &str) -> Value {
    let delivery_id = wait_until(
        &format!("a delivery of {webhook_id} in status {status}"),
        PATIENCE,
        || async {
            let history = app
                .admin_get(&format!("/api/v1/webhooks/{webhook_id}/deliveries"))
                .await;
            let first = &history.data()[0];
            (first["status"] == status).then(|| {
                first["delivery_id"]
                    .as_str()
                    .expect("delivery_id")
                    .to_owned()
            })
        },
    )
    .await;
    app.admin_get(&format!("/api/v1/webhooks/deliveries/{delivery_id}"))
        .await
        .data()
        .clone()
}

/// Waits until the document has failed at least once and returns its record.
async fn failed_document(app: &TestApp, document_id: &str) -> Value {
    wait_until(
        &format!("document {document_id} to fail"),
        PATIENCE,
        || async {
            let doc = app
                .admin_get(&format!("/api/v1/knowledge/documents/{document_id}"))
                .await;
            (doc.data()["status"] == "failed").then(|| doc.data().clone())
        },
    )
    .await
}

#[tokio::test]
async fn a_webhook_name_that_rebinds_to_loopback_after_registration_is_never_connected_to() {
    // Nothing allow-listed: loopback is refused, and the receiver below is
    // on loopback, so any request it records is an SSRF that got through.
    let (app, resolver) = ssrf_app(&[]).await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let url = format!("http://rebind-hook.test:{}/hook", receiver.addr().port());

    // Registration resolves the name once: the public answer, accepted.
    // Subscribed to an event nothing here emits: the test event goes to it
    // anyway, and the error.occurred of its dead delivery does not.
    let id = app.register(&url, &["chat.escalated"], SECRET).await;
    assert_eq!(resolver.calls("rebind-hook.test"), 1);

    let worker = spawn_worker(app.services.clone()).await;
    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);

    // Every attempt resolves again, gets 127.0.0.1, and is refused before a
    // socket is opened; the retries run out and the delivery is dead.
    let delivery = delivery_with_status(&app, &id, "dead").await;
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{delivery}");
    for attempt in attempts {
        assert_eq!(attempt["http_status"], Value::Null, "{attempt}");
        assert_eq!(
            attempt["error"], "address 127.0.0.1 blocked by SSRF policy (loopback)",
            "{attempt}"
        );
    }
    // One lookup at registration, at least one per attempt.
    assert!(resolver.calls("rebind-hook.test") > attempts.len());
    assert!(
        receiver.requests().is_empty(),
        "the loopback receiver was reached: {:?}",
        receiver.requests()
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_document_url_that_rebinds_to_loopback_fails_fetch_failed_without_a_request() {
    let (app, resolver) = ssrf_app(&[]).await;
    let files = Spy::start(text_document).await;
    let webhook_id = sender(&app).await;
    let url = format!(
        "http://rebind-doc.test:{}/docs/policy.txt",
        files.addr.port()
    );

    let accepted = post_document(&app, &webhook_id, &url, "doc_rebind").await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    assert_eq!(resolver.calls("rebind-doc.test"), 1, "intake resolved once");
    let document_id = accepted.data()["document_id"]
        .as_str()
        .expect("document_id")
        .to_owned();

    let worker = spawn_worker(app.services.clone()).await;
    let doc = failed_document(&app, &document_id).await;
    assert_eq!(doc["error"]["error_code"], "FETCH_FAILED", "{doc}");
    let message = doc["error"]["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("address 127.0.0.1 blocked by SSRF policy"),
        "{message}"
    );
    assert!(resolver.calls("rebind-doc.test") >= 2);
    assert_eq!(files.hits(), 0, "the loopback file server was reached");
    worker.shutdown().await;
}

#[tokio::test]
async fn redirects_are_recorded_as_failures_and_never_followed() {
    // Loopback allowed, so the redirect target is a destination the policy
    // would accept: only "redirects are not followed" keeps it unreached.
    let (app, _resolver) = ssrf_app(&["127.0.0.1/32"]).await;
    let target = Spy::start(text_document).await;
    let location = format!("http://{}/internal/admin", target.addr);
    let redirector = Spy::start(redirect_to(location.clone())).await;
    let worker = spawn_worker(app.services.clone()).await;

    // An outbound delivery to a receiver that answers 302.
    let id = app
        .register(
            &format!("http://{}/hook", redirector.addr),
            &["chat.escalated"],
            SECRET,
        )
        .await;
    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    let delivery = delivery_with_status(&app, &id, "dead").await;
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{delivery}");
    for attempt in attempts {
        assert_eq!(attempt["http_status"], 302, "{attempt}");
        assert_eq!(attempt["success"], false, "{attempt}");
    }
    assert_eq!(redirector.hits(), 3);

    // A document whose URL answers 302.
    let sender_id = sender(&app).await;
    let accepted = post_document(
        &app,
        &sender_id,
        &format!("http://{}/docs/policy.txt", redirector.addr),
        "doc_redirect",
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let document_id = accepted.data()["document_id"].as_str().expect("id");
    let doc = failed_document(&app, document_id).await;
    assert_eq!(doc["error"]["error_code"], "FETCH_FAILED", "{doc}");
    let message = doc["error"]["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 302"), "{message}");

    assert_eq!(
        target.hits(),
        0,
        "the Location {location} was fetched: {:?}",
        target.paths.lock().expect("paths")
    );
    worker.shutdown().await;
}
