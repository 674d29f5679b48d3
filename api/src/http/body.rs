//! Request-body gatekeeping: size limit and media type (as a middleware that
//! runs before authentication), and the `Json` extractor handlers use.
//!
//! SPEC fixes the order in which a bad request is reported: 413 size,
//! 415 content type, 401 credentials, 400 malformed JSON, 422 content. Size
//! and media type can be judged without knowing who the caller is, so they
//! are checked here, outside auth; JSON syntax and shape are checked by the
//! extractor, i.e. only after auth let the request through. Buffering here
//! also caps memory per request before any other code touches the body.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::json;

use crate::http::error::ApiError;

/// Default cap on a request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Default time a client has to send a whole body once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Media types accepted by default. `type/*+suffix` entries match any
/// structured-syntax type with that suffix (RFC 6839), e.g.
/// `application/cloudevents+json`.
pub const JSON_MEDIA_TYPES: &[&str] = &["application/json", "application/*+json"];

/// Media types of document uploads: JSON, or a multipart form with a file.
pub const UPLOAD_MEDIA_TYPES: &[&str] = &["application/json", "multipart/form-data"];

/// What [`buffer_body`] enforces; passed as the middleware state.
#[derive(Debug, Clone, Copy)]
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
}

/// Lets [`Json`] honour the configured limit when it re-reads the body.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// Middleware: buffers the body up to the limit (413 beyond it) and within
/// the read timeout (408 beyond it), checks the media type of non-empty
/// POST/PUT/PATCH bodies (415), then hands the buffered request on. Install
/// it outside the auth layer.
pub async fn buffer_body(
    State(policy): State<BodyPolicy>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (limit, media_types) = policy.for_request(req.method(), req.uri().path());
    reject_declared_oversize(req.headers(), limit)?;
    let (mut parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(policy.read_timeout, read_limited(body, limit)).await {
        Ok(read) => read?,
        Err(_) => return Ok(body_timeout(policy.read_timeout)),
    };
    if !bytes.is_empty() && carries_content(&parts.method) {
        check_media_type(&parts.headers, media_types)?;
    }
    parts.extensions.insert(BodyLimit(limit));
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
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

/// A declared Content-Length lets us refuse without reading a single byte.
/// An unparsable value is left to the streaming limit below rather than
/// trusted.
fn reject_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(ApiError::payload_too_large(limit as u64)),
        _ => Ok(()),
    }
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
