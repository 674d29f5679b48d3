//! Request-body gatekeeping: size limit, media type and memory budget, and
//! the `Json` extractor handlers use.
//!
//! The documented contract fixes the order in which a bad request is reported: 413 size,
//! 415 content type, 401 credentials, 400 malformed JSON, 422 content. What
//! the headers tell (a declared Content-Length over the limit, a media type
//! not accepted) is judged by [`screen_body`] outside auth, without reading
//! a byte. The body itself is read by [`buffer_body`] only once the caller
//! is authenticated: on admin routes it sits inside the auth layer (see
//! [`crate::http::openapi::admin_only`]), so an unauthenticated client
//! cannot make the server hold its upload. (A body without Content-Length
//! can only be found too large by reading it, so on admin routes it gets
//! 401 before 413.) Buffering also caps memory per request before any other
//! code touches the body, and [`BodyBudget`] caps it over all requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::ApiError;

/// Default cap on a request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Default time a client has to send a whole body once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default total of request bodies held at once.
pub const DEFAULT_BODY_BUDGET: usize = 128 * 1024 * 1024;

/// What a client refused for lack of budget is told to wait: bodies in
/// flight are answered within seconds, or cut off by the read timeout.
const BUDGET_RETRY_AFTER_SECS: u64 = 1;

/// Media types accepted by default. `type/*+suffix` entries match any
/// structured-syntax type with that suffix (RFC 6839), e.g.
/// `application/cloudevents+json`.
pub const JSON_MEDIA_TYPES: &[&str] = &["application/json", "application/*+json"];

/// Media types of document uploads: JSON, or a multipart form with a file.
pub const UPLOAD_MEDIA_TYPES: &[&str] = &["application/json", "multipart/form-data"];

/// What [`screen_body`] and [`buffer_body`] enforce; the state of the
/// former, which hands it on to the latter.
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    pub limit_bytes: usize,
    /// Lowercase media types (without parameters) allowed for non-empty
    /// POST/PUT/PATCH bodies.
    pub media_types: &'static [&'static str],
    /// The one route that takes files rather than messages, with its own
    /// limit and media types.
    pub upload: Option<UploadRoute>,
    /// The whole body must arrive within this long (slow-body clients get
    /// 408 and a closed connection instead of holding a task forever).
    pub read_timeout: Duration,
    /// Shared by every request the policy is installed for.
    pub budget: BodyBudget,
}

#[derive(Debug, Clone, Copy)]
pub struct UploadRoute {
    pub path: &'static str,
    pub limit_bytes: usize,
}

impl Default for BodyPolicy {
    fn default() -> Self {
        Self {
            limit_bytes: DEFAULT_BODY_LIMIT,
            media_types: JSON_MEDIA_TYPES,
            upload: None,
            read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            budget: BodyBudget::new(DEFAULT_BODY_BUDGET),
        }
    }
}

impl BodyPolicy {
    /// The limit and media types that apply to a request.
    fn for_request(&self, method: &Method, path: &str) -> (usize, &'static [&'static str]) {
        match self.upload {
            Some(upload) if *method == Method::POST && path == upload.path => {
                (upload.limit_bytes, UPLOAD_MEDIA_TYPES)
            }
            _ => (self.limit_bytes, self.media_types),
        }
    }

    /// The most any one request may send.
    pub fn largest_limit(&self) -> usize {
        self.upload
            .map_or(self.limit_bytes, |u| u.limit_bytes.max(self.limit_bytes))
    }
}

/// Bytes of request bodies held at once, over all requests: with only a
/// per-request limit, N concurrent uploads hold N times that limit.
/// Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    capacity: usize,
    in_use: AtomicUsize,
}

impl BodyBudget {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(BudgetState {
            capacity,
            in_use: AtomicUsize::new(0),
        }))
    }

    /// Room for `bytes` more, held until the reservation is dropped; `None`
    /// when that would go beyond the capacity. Never waits: a client told
    /// to retry costs less than one queued with its socket open.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let capacity = self.0.capacity;
        self.0
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= capacity)
            })
            .ok()
            .map(|_| Reservation {
                budget: self.clone(),
                bytes,
            })
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> usize {
        self.0.in_use.load(Ordering::Acquire)
    }
}

/// A share of a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    bytes: usize,
}

impl Reservation {
    /// Gives back what was reserved beyond `bytes` (a body without
    /// Content-Length reserves its whole limit, and is usually smaller).
    fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .0
                .in_use
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Lets [`Json`] honour the configured limit when it re-reads the body.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// Left by [`screen_body`] for [`buffer_body`]: what applies to this body.
#[derive(Debug, Clone)]
struct PendingBody {
    limit: usize,
    media_types: &'static [&'static str],
    /// From Content-Length (or the body's exact size); `None` for chunked.
    declared: Option<usize>,
    read_timeout: Duration,
    budget: BodyBudget,
}

/// Middleware, outermost of the body checks: refuses what the headers
/// already show is wrong, without reading the body: a declared length over
/// the limit (413) and, for a non-empty POST/PUT/PATCH body, a media type
/// not accepted (415). Install it outside the auth layer; [`buffer_body`]
/// reads the body later.
pub async fn screen_body(
    State(policy): State<BodyPolicy>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (limit, media_types) = policy.for_request(req.method(), req.uri().path());
    let declared = declared_length(req.headers(), req.body());
    if let Some(length) = declared
        && length > limit as u64
    {
        return Err(ApiError::payload_too_large(limit as u64));
    }
    if declared.is_some_and(|length| length > 0) && carries_content(req.method()) {
        check_media_type(req.headers(), media_types)?;
    }
    req.extensions_mut().insert(BodyLimit(limit));
    req.extensions_mut().insert(PendingBody {
        limit,
        media_types,
        // At most `limit`, checked above.
        declared: declared.map(|length| length as usize),
        read_timeout: policy.read_timeout,
        budget: policy.budget,
    });
    Ok(next.run(req).await)
}

/// Has every route registered so far on `router` read its body through
/// [`buffer_body`]. [`crate::http::openapi::admin_only`] does this inside
/// its auth layer; routes that authenticate by the body itself (signed
/// incoming webhooks) call it directly.
pub fn buffered<S>(router: OpenApiRouter<S>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(from_fn(buffer_body))
}

/// Middleware: reserves the body's size in the [`BodyBudget`] (503 and
/// `Retry-After` when it is spent), buffers the body up to the limit (413
/// beyond it) and within the read timeout (408 beyond it), checks the media
/// type of a chunked body that turned out non-empty (415), then hands the
/// buffered request on and holds the reservation until it is answered.
/// Needs [`screen_body`] outside it; install it with [`buffered`].
pub async fn buffer_body(req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let Some(pending) = parts.extensions.remove::<PendingBody>() else {
        return Err(ApiError::internal(
            "buffer_body is installed on a route without screen_body around it",
        ));
    };
    let wanted = pending.declared.unwrap_or(pending.limit);
    let Some(mut reservation) = pending.budget.try_reserve(wanted) else {
        tracing::warn!(
            wanted,
            in_use = pending.budget.in_use(),
            "request body budget spent"
        );
        return Err(budget_spent());
    };
    let read = read_limited(body, pending.limit);
    let bytes = match tokio::time::timeout(pending.read_timeout, read).await {
        Ok(read) => read?,
        Err(_) => return Ok(body_timeout(pending.read_timeout)),
    };
    reservation.shrink_to(bytes.len());
    if pending.declared.is_none() && !bytes.is_empty() && carries_content(&parts.method) {
        check_media_type(&parts.headers, pending.media_types)?;
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(reservation);
    Ok(response)
}

fn budget_spent() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
        "too many request bodies in flight, retry later",
    )
    .with_retry_after(BUDGET_RETRY_AFTER_SECS)
}

/// 408 for a body that did not arrive in time. The rest of that body may
/// still be on its way, so the connection cannot be reused: close it.
fn body_timeout(after: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
        format!(
            "request body was not received within {} s",
            after.as_secs_f64()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The body's size before reading it: its Content-Length, or the exact
/// size the body knows (0 for none; a body built in memory). An unparsable
/// Content-Length is left to the streaming limit rather than trusted.
fn declared_length(headers: &HeaderMap, body: &Body) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| body.size_hint().exact())
}

/// Reads at most `limit` bytes, so chunked bodies without a Content-Length
/// are capped too.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit as u64))
        }
        Err(err) => {
            // Usually the client went away mid-upload; nobody will read this.
            tracing::debug!(error = %err, "failed to read request body");
            Err(ApiError::bad_request(
                "BODY_READ_FAILED",
                "failed to read request body",
            ))
        }
    }
}

fn carries_content(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn check_media_type(headers: &HeaderMap, allowed: &'static [&'static str]) -> Result<(), ApiError> {
    let raw = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = raw.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match essence {
        Some(essence) if allowed.iter().any(|p| media_type_matches(&essence, p)) => Ok(()),
        _ => Err(ApiError::unsupported_media_type(raw).with_details(json!({ "allowed": allowed }))),
    }
}

/// `essence` is the lowercase `type/subtype` without parameters.
fn media_type_matches(essence: &str, pattern: &str) -> bool {
    match pattern.split_once("/*+") {
        Some((ty, suffix)) => essence.split_once('/').is_some_and(|(t, sub)| {
            t == ty
                && sub
                    .strip_suffix(suffix)
                    .and_then(|rest| rest.strip_suffix('+'))
                    .is_some_and(|name| !name.is_empty())
        }),
        None => essence == pattern,
    }
}

/// JSON request body extractor: 400 `MALFORMED_JSON` for an empty or
/// syntactically invalid body, 422 `VALIDATION_FAILED` with
/// `details.field` for well-formed JSON of the wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Without the middleware (e.g. a route that forgot it) the default
        // limit still protects memory.
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let bytes = read_limited(req.into_body(), limit).await?;
        decode_json(&bytes).map(Json)
    }
}

/// Decodes `bytes` as `T` with the same error mapping as [`Json`]; useful
/// when the bytes were needed first (e.g. for a webhook signature check).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "MALFORMED_JSON",
            "request body is empty; expected a JSON document",
        ));
    }
    // Syntax first over the whole document: a type error early in a body
    // that is broken further on must still be reported as 400, not 422.
    check_syntax(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(shape_error)
}

fn check_syntax(bytes: &[u8]) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    IgnoredAny::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|err| malformed(&err))
}

fn malformed(err: &serde_json::Error) -> ApiError {
    ApiError::bad_request("MALFORMED_JSON", format!("malformed JSON: {err}"))
        .with_details(json!({ "line": err.line(), "column": err.column() }))
}

fn shape_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let parent = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        // Syntax the skim above let through (e.g. bad UTF-8 inside a string).
        return malformed(&inner);
    }
    let message = inner.to_string();
    let field = field_path(&parent, &message);
    ApiError::validation(&field, message)
}

/// serde reports a missing field at the enclosing object, naming the field
/// only in its message (``missing field `user_id` ``), so the name is
/// appended to get the path a client can act on. (Unknown fields are
/// already part of the path.) The root is `.`, as serde_path_to_error has it.
fn field_path(parent: &str, message: &str) -> String {
    let missing = message
        .split_once("missing field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name);
    match missing {
        Some(name) if parent == "." => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None => parent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Webhook {
        data: Inner,
        #[serde(default)]
        events: Vec<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        user_id: String,
    }

    fn field_of(body: &str) -> (u16, String, String) {
        match decode_json::<Webhook>(body.as_bytes()) {
            Ok(v) => panic!("decoded {v:?}"),
            Err(e) => (
                e.status().as_u16(),
                e.code().to_owned(),
                e.details()
                    .and_then(|d| d.get("field"))
                    .and_then(|f| f.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ),
        }
    }

    #[test]
    fn paths_point_at_the_problem() {
        let cases = [
            (r#"{"data":{}}"#, "data.user_id"),
            (r#"{}"#, "data"),
            (r#"{"data":{"user_id":"u","x":1}}"#, "data.x"),
            (r#"{"data":{"user_id":7}}"#, "data.user_id"),
            (
                r#"{"data":{"user_id":"u"},"events":[1,2,"three"]}"#,
                "events[2]",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                field_of(body),
                (422, "VALIDATION_FAILED".to_owned(), want.to_owned()),
                "{body}"
            );
        }
    }

    #[test]
    fn syntax_errors_win_over_shape_errors() {
        for body in [
            "",
            "  ",
            "{",
            r#"{"data": 1,"#,
            r#"{"data":{"user_id":"u"}} trailing"#,
        ] {
            let (status, code, _) = field_of(body);
            assert_eq!((status, code.as_str()), (400, "MALFORMED_JSON"), "{body:?}");
        }
    }

    #[test]
    fn malformed_message_has_position() {
        let err = decode_json::<Webhook>(b"{\n  \"data\": }").err();
        let message = err
            .as_ref()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("line 2 column"), "{message}");
    }

    #[test]
    fn budget_refuses_beyond_capacity_and_takes_back_what_is_dropped() {
        let budget = BodyBudget::new(100);
        let first = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(41).is_none());
        let mut second = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.in_use(), 100);
        second.shrink_to(10);
        second.shrink_to(50);
        assert_eq!(budget.in_use(), 70);
        drop(first);
        assert_eq!(budget.in_use(), 10);
        drop(second);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_reserve(101).is_none());
        assert!(budget.try_reserve(0).is_some());
    }

    #[test]
    fn media_type_patterns() {
        let ok = |e: &str| JSON_MEDIA_TYPES.iter().any(|p| media_type_matches(e, p));
        assert!(ok("application/json"));
        assert!(ok("application/cloudevents+json"));
        assert!(!ok("application/+json"));
        assert!(!ok("text/json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
    }
}
