//! End-to-end tests of the HTTP plumbing on a small app assembled the way the
//! real API is: documented routes via `OpenApiRouter`, an admin sub-router
//! behind [`admin_only`], and [`with_common_layers`] around everything.
//! Requests go through `tower::ServiceExt::oneshot`; no sockets involved.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::{AdminAuth, AdminIdentity, AdminKeys};
use crate::http::body::{BodyPolicy, JSON_MEDIA_TYPES, Json};
use crate::http::envelope::{Accepted, Data, Envelope, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::openapi::{admin_only, api_router, finish};
use crate::http::throttle::FailureLimiter;
use crate::http::trace::HttpMetrics;
use crate::http::with_common_layers;

const OLD_KEY: &str = "old-admin-key-0123456789";
const NEW_KEY: &str = "new-admin-key-9876543210";
const LIMIT: usize = 1024;
/// Wrong keys per minute per client address.
const FAILURES_ALLOWED: u32 = 10;

// ---- the example app -------------------------------------------------------

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// Public liveness probe.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Envelope<Health>)))]
async fn health() -> Data<Health> {
    Data(Health { status: "ok" })
}

#[derive(Deserialize, ToSchema)]
struct WebhookIn {
    data: WebhookData,
}

#[derive(Deserialize, ToSchema)]
struct WebhookData {
    user_id: String,
}

#[derive(Serialize, ToSchema)]
struct Receipt {
    user_id: String,
    key_index: usize,
}

/// Admin-only webhook intake.
#[utoipa::path(
    post,
    path = "/webhooks",
    request_body = WebhookIn,
    responses(
        (status = 202, body = Envelope<Receipt>),
        (status = 401, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn ingest_webhook(
    axum::Extension(who): axum::Extension<AdminIdentity>,
    Json(hook): Json<WebhookIn>,
) -> Accepted<Receipt> {
    Accepted(Receipt {
        user_id: hook.data.user_id,
        key_index: who.key_index,
    })
}

/// Public paged list of numbers, to exercise pagination end to end.
#[utoipa::path(get, path = "/things", params(Pagination), responses((status = 200, body = Envelope<Vec<u64>>)))]
async fn list_things(page: Pagination) -> Paged<u64> {
    let total = 250;
    let items = (page.offset..total).take(page.limit as usize).collect();
    Paged::new(items, page, total)
}

#[derive(Deserialize)]
struct Search {
    #[allow(dead_code)]
    q: String,
    min: u32,
}

async fn search(Query(search): Query<Search>) -> Data<u32> {
    Data(search.min)
}

async fn panics() -> Data<()> {
    panic!("a handler bug")
}

async fn boom() -> Result<Data<()>, ApiError> {
    Err(ApiError::internal("db connect failed: password=hunter2"))
}

struct App {
    router: Router,
    registry: Registry,
}

fn app() -> App {
    let registry = Registry::new();
    let metrics = HttpMetrics::register(&registry).unwrap();
    let auth = AdminAuth::new(
        AdminKeys::new([OLD_KEY, NEW_KEY]),
        FailureLimiter::new(FAILURES_ALLOWED, Duration::from_secs(60)),
    );

    let admin = admin_only(OpenApiRouter::new().routes(routes!(ingest_webhook)), auth);
    let documented = api_router()
        .routes(routes!(health))
        .routes(routes!(list_things))
        .route("/search", axum::routing::get(search))
        .route("/boom", axum::routing::get(boom))
        .route("/panic", axum::routing::get(panics))
        .nest("/admin", admin);
    let (router, _doc) = finish(documented).unwrap();
    let policy = BodyPolicy {
        limit_bytes: LIMIT,
        media_types: JSON_MEDIA_TYPES,
        upload: None,
        ..BodyPolicy::default()
    };
    App {
        router: with_common_layers(router, metrics, policy),
        registry,
    }
}

// ---- helpers -------------------------------------------------------------

async fn send(app: &App, req: Request<Body>) -> Response {
    app.router.clone().oneshot(req).await.unwrap()
}

async fn json_of(res: Response) -> Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
}

fn header_of<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_webhook(
    content_type: Option<&str>,
    key: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::post("/admin/webhooks");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    req.body(body.into()).unwrap()
}

async fn status_and_code(app: &App, req: Request<Body>) -> (StatusCode, String) {
    let res = send(app, req).await;
    let status = res.status();
    let body = json_of(res).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

const GOOD_BODY: &str = r#"{"data":{"user_id":"u_1"}}"#;

// ---- errors and trace ids --------------------------------------------------

#[tokio::test]
async fn error_envelope_has_code_message_trace_and_hides_internals() {
    let app = app();
    let req = Request::get("/boom")
        .header("x-trace-id", "client-trace.42")
        .body(Body::empty())
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header_of(&res, "x-trace-id"), Some("client-trace.42"));
    assert_eq!(header_of(&res, "content-type"), Some("application/json"));
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    assert_eq!(body["meta"]["trace_id"], "client-trace.42");
    assert!(body["error"].get("details").is_none());
    assert!(!body.to_string().contains("hunter2"), "{body}");
}

#[tokio::test]
async fn a_panicking_handler_answers_the_500_envelope_and_the_next_request_is_served() {
    let app = app();
    let res = send(&app, get("/panic")).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    assert_eq!(body["meta"]["trace_id"], trace);
    assert!(!body.to_string().contains("a handler bug"), "{body}");
    assert_eq!(send(&app, get("/health")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_interactive_reference_is_served_with_a_strict_policy() {
    let app = app();
    let page = send(&app, get("/api/v1/docs")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        header_of(&page, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let policy = header_of(&page, "content-security-policy")
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let script = send(&app, get("/api/v1/docs/app.js")).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        header_of(&script, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn unavailable_sets_retry_after() {
    let res = ApiError::unavailable(30).into_response();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_of(&res, "retry-after"), Some("30"));
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        body["meta"]["trace_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("trace_"))
    );
}

#[tokio::test]
async fn traceparent_trace_id_is_adopted() {
    let app = app();
    let req = Request::get("/health")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header_of(&res, "x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let body = json_of(res).await;
    assert_eq!(
        body,
        json!({"data": {"status": "ok"}, "meta": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}})
    );
}

#[tokio::test]
async fn trace_id_is_generated_when_absent_or_unusable() {
    let app = app();
    for bad in [None, Some("has spaces"), Some("semi;colon")] {
        let mut req = Request::get("/health");
        if let Some(bad) = bad {
            req = req.header("x-trace-id", bad);
        }
        let res = send(&app, req.body(Body::empty()).unwrap()).await;
        let echoed = header_of(&res, "x-trace-id").unwrap_or_default().to_owned();
        assert!(
            echoed.starts_with("trace_") && echoed.len() == 32,
            "{echoed}"
        );
        assert_eq!(json_of(res).await["meta"]["trace_id"], echoed.as_str());
    }
}

#[tokio::test]
async fn unmatched_routes_still_get_a_trace_id() {
    let app = app();
    let res = send(&app, get("/no/such/route")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(header_of(&res, "x-trace-id").is_some_and(|t| t.starts_with("trace_")));
}

// ---- body size and media type ----------------------------------------------

#[tokio::test]
async fn declared_oversize_is_refused_without_reading() {
    let app = app();
    // The sender is kept alive and never sends: reading the body would hang.
    let (_sender, body) = Channel::<Bytes>::new(1);
    let req = Request::post("/admin/webhooks")
        .header(header::CONTENT_LENGTH, (LIMIT + 1).to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {OLD_KEY}"))
        .body(Body::new(body))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), send(&app, req))
        .await
        .expect("413 must not wait for the body");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(body["error"]["details"]["limit_bytes"], LIMIT);
}

#[tokio::test]
async fn no_body_is_read_before_the_key_is_checked() {
    let app = app();
    for declared in [Some(LIMIT), None] {
        // The sender is kept alive and never sends: reading would hang.
        let (_sender, body) = Channel::<Bytes>::new(1);
        let mut req = Request::post("/admin/webhooks")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer not-the-key");
        if let Some(length) = declared {
            req = req.header(header::CONTENT_LENGTH, length.to_string());
        }
        let req = req.body(Body::new(body)).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), send(&app, req))
            .await
            .expect("401 must not wait for the body");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{declared:?}");
    }
}

#[tokio::test]
async fn chunked_body_growing_past_limit_is_refused() {
    let app = app();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let feeder = tokio::spawn(async move {
        // Far more than the limit; the middleware must stop reading early.
        for _ in 0..1000 {
            if sender
                .send_data(Bytes::from(vec![b' '; 256]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let req = post_webhook(Some("application/json"), Some(OLD_KEY), Body::new(body));
    let (status, code) = status_and_code(&app, req).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    feeder.abort();
}

#[tokio::test]
async fn body_exactly_at_limit_is_accepted() {
    let app = app();
    let padded = format!("{GOOD_BODY:<LIMIT$}");
    assert_eq!(padded.len(), LIMIT);
    let res = send(
        &app,
        post_webhook(Some("application/json"), Some(NEW_KEY), padded),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn non_json_media_types_are_refused() {
    let app = app();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let res = send(&app, post_webhook(ct, Some(OLD_KEY), GOOD_BODY)).await;
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let body = json_of(res).await;
        assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
        assert_eq!(body["error"]["details"]["allowed"][0], "application/json");
    }
}

#[tokio::test]
async fn json_media_type_variants_are_accepted() {
    let app = app();
    for ct in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/cloudevents+json",
    ] {
        let res = send(&app, post_webhook(Some(ct), Some(OLD_KEY), GOOD_BODY)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{ct}");
    }
}

// ---- error precedence (the documented order) ---------------------------

#[tokio::test]
async fn errors_are_reported_in_spec_order() {
    let app = app();
    let oversized = "x".repeat(LIMIT + 1);
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "oversized, no auth",
            post_webhook(Some("text/plain"), None, oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "text/plain, no auth",
            post_webhook(Some("text/plain"), None, GOOD_BODY),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "bad JSON, no auth",
            post_webhook(Some("application/json"), None, "{not json"),
            StatusCode::UNAUTHORIZED,
            "MISSING_CREDENTIALS",
        ),
        (
            "bad JSON, good auth",
            post_webhook(Some("application/json"), Some(OLD_KEY), "{not json"),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "empty body, good auth",
            post_webhook(Some("application/json"), Some(OLD_KEY), ""),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "missing nested field, good auth",
            post_webhook(Some("application/json"), Some(OLD_KEY), r#"{"data":{}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
        ),
    ];
    for (name, req, want_status, want_code) in cases {
        let (status, code) = status_and_code(&app, req).await;
        assert_eq!((status, code.as_str()), (want_status, want_code), "{name}");
    }
}

#[tokio::test]
async fn validation_error_names_the_json_path() {
    let app = app();
    let req = post_webhook(Some("application/json"), Some(OLD_KEY), r#"{"data":{}}"#);
    let body = json_of(send(&app, req).await).await;
    assert_eq!(body["error"]["details"]["field"], "data.user_id");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("missing field `user_id`")
    );
}

#[tokio::test]
async fn malformed_json_reports_line_and_column() {
    let app = app();
    let req = post_webhook(Some("application/json"), Some(OLD_KEY), "{\"data\":\n  }");
    let body = json_of(send(&app, req).await).await;
    assert_eq!(body["error"]["code"], "MALFORMED_JSON");
    assert_eq!(body["error"]["details"]["line"], 2);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("line 2 column")
    );
}

// ---- pagination and query strings ------------------------------------------

#[tokio::test]
async fn pagination_edges() {
    let app = app();
    for (query, want) in [
        ("", StatusCode::OK),
        ("?limit=1", StatusCode::OK),
        ("?limit=100&offset=200", StatusCode::OK),
        ("?limit=0", StatusCode::BAD_REQUEST),
        ("?limit=101", StatusCode::BAD_REQUEST),
        ("?limit=abc", StatusCode::BAD_REQUEST),
        ("?limit=-1", StatusCode::BAD_REQUEST),
        ("?offset=-1", StatusCode::BAD_REQUEST),
        ("?limit=5&limit=6", StatusCode::BAD_REQUEST),
    ] {
        let res = send(&app, get(&format!("/things{query}"))).await;
        assert_eq!(res.status(), want, "{query}");
        if want == StatusCode::BAD_REQUEST {
            assert_eq!(
                json_of(res).await["error"]["code"],
                "INVALID_QUERY",
                "{query}"
            );
        }
    }
}

#[tokio::test]
async fn paged_envelope_carries_pagination_meta() {
    let app = app();
    let body = json_of(send(&app, get("/things?limit=100&offset=200")).await).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(50));
    assert_eq!(body["data"][0], 200);
    assert_eq!(
        body["meta"]["pagination"],
        json!({"limit": 100, "offset": 200, "total": 250})
    );

    let body = json_of(send(&app, get("/things?limit=abc")).await).await;
    assert_eq!(body["error"]["details"]["parameter"], "limit");
}

#[tokio::test]
async fn query_rejections_are_json_envelopes() {
    let app = app();
    let ok = send(&app, get("/search?q=refund&min=3")).await;
    assert_eq!(json_of(ok).await["data"], 3);
    for query in ["?q=refund&min=lots", "?min=3"] {
        let res = send(&app, get(&format!("/search{query}"))).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = json_of(res).await;
        assert_eq!(body["error"]["code"], "INVALID_QUERY");
        assert!(!body["error"]["message"].as_str().unwrap_or("").is_empty());
    }
}

// ---- admin auth ------------------------------------------------------------

#[tokio::test]
async fn both_rotated_keys_are_accepted() {
    let app = app();
    for (key, index) in [(OLD_KEY, 0), (NEW_KEY, 1)] {
        let res = send(
            &app,
            post_webhook(Some("application/json"), Some(key), GOOD_BODY),
        )
        .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let body = json_of(res).await;
        assert_eq!(body["data"], json!({"user_id": "u_1", "key_index": index}));
    }
}

#[tokio::test]
async fn bad_credentials_are_401_with_challenge() {
    let app = app();
    let cases = [
        (None, "MISSING_CREDENTIALS"),
        (Some(format!("Bearer {OLD_KEY}x")), "INVALID_CREDENTIALS"),
        (Some("Bearer wrong".to_owned()), "INVALID_CREDENTIALS"),
        (Some(format!("Basic {OLD_KEY}")), "INVALID_CREDENTIALS"),
        (Some("Bearer".to_owned()), "INVALID_CREDENTIALS"),
    ];
    for (authorization, want) in cases {
        let mut req =
            Request::post("/admin/webhooks").header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = &authorization {
            req = req.header(header::AUTHORIZATION, value);
        }
        let res = send(&app, req.body(Body::from(GOOD_BODY)).unwrap()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(header_of(&res, "www-authenticate"), Some("Bearer"));
        assert_eq!(
            json_of(res).await["error"]["code"],
            want,
            "{authorization:?}"
        );
    }
}

fn from_peer(peer: &str, authorization: Option<&str>) -> Request<Body> {
    let mut req = post_webhook(Some("application/json"), authorization, GOOD_BODY);
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

#[tokio::test]
async fn wrong_keys_past_the_limit_get_429_from_that_address_only() {
    let app = app();
    let guesser = "203.0.113.7:40000";
    // Neither successes nor requests without a key are counted.
    for _ in 0..FAILURES_ALLOWED * 2 {
        let res = send(&app, from_peer(guesser, Some(OLD_KEY))).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let res = send(&app, from_peer(guesser, None)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..FAILURES_ALLOWED {
        let res = send(&app, from_peer(guesser, Some("wrong-key-0123456789"))).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    // From another port of the same address too, and with the right key:
    // answering that one would tell a guesser its guess was right.
    for (peer, key) in [
        (guesser, "wrong-key-0123456789"),
        ("203.0.113.7:40001", OLD_KEY),
    ] {
        let res = send(&app, from_peer(peer, Some(key))).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{peer} {key}");
        // One failure comes back every 6 s.
        let wait: u64 = header_of(&res, "retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!((1..=6).contains(&wait), "Retry-After {wait}");
        let body = json_of(res).await;
        assert_eq!(body["error"]["code"], "TOO_MANY_AUTH_FAILURES");
        assert!(body["meta"]["trace_id"].is_string());
    }

    // Everyone else is served as before.
    let res = send(&app, from_peer("203.0.113.8:40000", Some(NEW_KEY))).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = send(&app, from_peer("[2001:db8::1]:40000", Some("wrong"))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

// ---- metrics -----------------------------------------------------------------

fn requests_total(registry: &Registry, route: &str, status: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "http_requests_total")
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
            };
            label("route").as_deref() == Some(route) && label("status").as_deref() == Some(status)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn metrics_use_route_templates_not_raw_paths() {
    let app = app();
    for _ in 0..2 {
        send(
            &app,
            post_webhook(Some("application/json"), Some(OLD_KEY), GOOD_BODY),
        )
        .await;
    }
    send(
        &app,
        post_webhook(Some("application/json"), None, GOOD_BODY),
    )
    .await;
    send(&app, get("/things?limit=3")).await;
    send(&app, get("/no/such/route/123")).await;

    assert_eq!(requests_total(&app.registry, "/admin/webhooks", "202"), 2);
    assert_eq!(requests_total(&app.registry, "/admin/webhooks", "401"), 1);
    assert_eq!(requests_total(&app.registry, "/things", "200"), 1);
    assert_eq!(requests_total(&app.registry, "unmatched", "404"), 1);
    assert_eq!(
        requests_total(&app.registry, "/no/such/route/123", "404"),
        0
    );

    let histograms = app
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "http_request_duration_seconds")
        .map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_histogram().get_sample_count())
                .sum::<u64>()
        });
    assert_eq!(histograms, Some(5));
}

// ---- OpenAPI ---------------------------------------------------------------

#[tokio::test]
async fn openapi_document_lists_routes_and_admin_security() {
    let app = app();
    let res = send(&app, get("/api/v1/openapi.json")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc = json_of(res).await;
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = &doc["paths"];
    assert!(paths.get("/health").is_some(), "{paths}");
    assert!(paths.get("/things").is_some(), "{paths}");
    assert!(paths.get("/admin/webhooks").is_some(), "{paths}");

    assert_eq!(
        paths["/admin/webhooks"]["post"]["security"],
        json!([{"admin_key": []}])
    );
    assert!(paths["/health"]["get"].get("security").is_none());
    // Every admin operation touches Redis, so each may answer 503.
    let unavailable = &paths["/admin/webhooks"]["post"]["responses"]["503"];
    assert_eq!(
        unavailable["headers"]["Retry-After"]["schema"]["type"], "integer",
        "{unavailable}"
    );
    assert!(paths["/health"]["get"]["responses"].get("503").is_none());
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_key"],
        json!({"type": "http", "scheme": "bearer", "description": "Admin API key, sent as `Authorization: Bearer <key>`"})
    );
    let limit = &paths["/things"]["get"]["parameters"][0];
    assert_eq!(
        (limit["name"].as_str(), limit["required"].as_bool()),
        (Some("limit"), Some(false))
    );
}
