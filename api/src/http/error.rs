//! The one error type handlers and middleware return, and the JSON error
//! envelope it renders to.
//!
//! Every failure a client sees has the same shape,
//! `{"error":{"code","message","details"?},"meta":{"trace_id"}}`, so webhook
//! senders can branch on a stable `code` and quote the `trace_id` to support.
//! Server-side failures are logged here with their real cause and rendered
//! with a generic message, so internals never leak into responses.

use std::fmt::Display;

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use queue::QueueError;
use rag::knowledge::KnowledgeError;
use serde::Serialize;
use serde_json::{Value, json};
use shared::chat::escalation::EscalateError;
use shared::chat::feedback::FeedbackError;
use shared::chat::gaps::GapError;
use shared::chat::handover::HandoverError;
use shared::chat::sessions::SessionError;
use shared::delivery::publish::PublishError;
use shared::delivery::replays::ReplayError;
use shared::store::StoreError;
use utoipa::ToSchema;

use crate::http::trace::current_trace_id;

/// An error response: status, stable machine-readable code, human message.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    // Boxed: an order-preserving `Value` is large, and this type travels in
    // every `Result` of the request path.
    details: Option<Box<Value>>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// Any status/code pair; prefer the named constructors so codes stay
    /// consistent across handlers.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Rendered with `WWW-Authenticate: Bearer`, as RFC 9110 requires for 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} '{id}' not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn payload_too_large(limit_bytes: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds the limit of {limit_bytes} bytes"),
        )
        .with_details(json!({ "limit_bytes": limit_bytes }))
    }

    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        let message = match got {
            Some(media_type) => format!("unsupported Content-Type '{media_type}'"),
            None => "missing Content-Type header".to_owned(),
        };
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            message,
        )
    }

    /// Well-formed input that breaks a rule; `field_path` is the JSON path
    /// (`data.user_id`, `events[2]`) so clients can point at the culprit.
    pub fn validation(field_path: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            message,
        )
        .with_details(json!({ "field": field_path }))
    }

    /// A dependency is down; `Retry-After` tells webhook senders when to retry.
    pub fn unavailable(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "service temporarily unavailable, retry later",
        )
        .with_retry_after(retry_after_secs)
    }

    /// Logs `err` with the current trace id and hides it from the client.
    pub fn internal(err: impl Display) -> Self {
        tracing::error!(error = %err, trace_id = %current_trace_id(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal server error",
        )
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn details(&self) -> Option<&Value> {
        self.details.as_deref()
    }
}

/// Wire shape of an error response; also the OpenAPI schema for error bodies.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    pub meta: ErrorMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `VALIDATION_FAILED`.
    #[schema(example = "VALIDATION_FAILED")]
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorMeta {
    #[schema(value_type = String)]
    pub trace_id: shared::ids::TraceId,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details.map(|d| *d),
            },
            meta: ErrorMeta {
                trace_id: current_trace_id(),
            },
        };
        let mut response = (self.status, axum::Json(envelope)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Storage failures, mapped once: Redis out of reach or refusing commands
/// for now (loading, busy with a script, out of memory, read-only during a
/// failover) is the client's cue to retry (503 with Retry-After), anything
/// else is our bug (500). `StoreError` and `QueueError` both defer to
/// `queue::is_unavailable`, so every route judges Redis alike; the domain
/// errors below hand their storage part to these two.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let unavailable = e.is_unavailable();
        storage(e, unavailable)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let unavailable = e.is_unavailable();
        storage(e, unavailable)
    }
}

fn storage(e: impl Display, unavailable: bool) -> ApiError {
    if unavailable {
        tracing::warn!(error = %e, "redis unavailable");
        ApiError::unavailable(REDIS_RETRY_AFTER_SECS)
    } else {
        ApiError::internal(e)
    }
}

/// An event that cannot be built or has no retry id left is our bug.
impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Store(e) => e.into(),
            PublishError::Queue(e) => e.into(),
            other @ (PublishError::Payload(_) | PublishError::RetryIdsTaken(_)) => {
                ApiError::internal(other)
            }
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Publish(e) => e.into(),
            ReplayError::Store(e) => e.into(),
            ReplayError::Queue(e) => e.into(),
        }
    }
}

/// A session in the wrong state for the request is the client's to know
/// about (404, 409, 422), not a failure of ours.
impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Missing(id) => ApiError::not_found("session", id.as_str()),
            SessionError::Ended(id) => ApiError::conflict(
                "SESSION_ENDED",
                format!("session '{id}' has ended; start a new one"),
            ),
            SessionError::NotEscalated(id) => ApiError::conflict(
                "SESSION_NOT_ESCALATED",
                format!(
                    "session '{id}' is not with an operator: the bot answers it \
                     (POST /api/v1/chat/sessions/{id}/escalate hands it over)"
                ),
            ),
            SessionError::Unassigned(id) => ApiError::validation(
                "operator_id",
                format!("session '{id}' has no operator yet: name the operator who replies"),
            ),
            SessionError::Store(e) => e.into(),
        }
    }
}

impl From<EscalateError> for ApiError {
    fn from(e: EscalateError) -> Self {
        match e {
            EscalateError::Session(e) => e.into(),
            EscalateError::Publish(e) => e.into(),
        }
    }
}

impl From<HandoverError> for ApiError {
    fn from(e: HandoverError) -> Self {
        match e {
            HandoverError::Session(e) => e.into(),
            HandoverError::Publish(e) => e.into(),
            HandoverError::Field(e) => e.into(),
        }
    }
}

impl From<FeedbackError> for ApiError {
    fn from(e: FeedbackError) -> Self {
        match e {
            FeedbackError::Session(e) => e.into(),
            FeedbackError::Field(e) => e.into(),
        }
    }
}

impl From<GapError> for ApiError {
    fn from(e: GapError) -> Self {
        match e {
            GapError::Store(e) => e.into(),
            other @ GapError::Grouping(_) => ApiError::internal(other),
        }
    }
}

/// Retrieval failures: the embedded search judges its Redis errors by the
/// queue's rule, an external provider (embeddings API, Qdrant) tells
/// itself whether a retry may help.
impl From<KnowledgeError> for ApiError {
    fn from(e: KnowledgeError) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "retrieval backend unavailable");
            ApiError::unavailable(REDIS_RETRY_AFTER_SECS)
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<shared::webhooks::registry::FieldError> for ApiError {
    fn from(e: shared::webhooks::registry::FieldError) -> Self {
        ApiError::validation(&e.field, e.message)
    }
}

/// What a 503 tells clients to wait: reconnects are attempted continuously,
/// so a short wait is right.
const REDIS_RETRY_AFTER_SECS: u64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis sends while it cannot take a command right now.
    const NOT_NOW: &[&str] = &[
        "BUSY",
        "OOM",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
    ];

    fn reply(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_owned(), Some("from the test".to_owned()))
    }

    /// One of each error the handlers return, wrapping the same reply.
    fn every_wrapping(code: &str) -> Vec<(&'static str, ApiError)> {
        vec![
            ("StoreError", StoreError::Redis(reply(code)).into()),
            ("QueueError", QueueError::Redis(reply(code)).into()),
            (
                "PublishError",
                PublishError::Queue(QueueError::Redis(reply(code))).into(),
            ),
            ("SessionError", SessionError::from(reply(code)).into()),
            (
                "PublishError::Store",
                PublishError::Store(StoreError::Redis(reply(code))).into(),
            ),
            (
                "ReplayError",
                ReplayError::Store(StoreError::Redis(reply(code))).into(),
            ),
            (
                "EscalateError",
                shared::chat::escalation::EscalateError::Session(SessionError::from(reply(code)))
                    .into(),
            ),
            (
                "KnowledgeError",
                KnowledgeError::Search(rag::search::SearchError::Redis(reply(code))).into(),
            ),
            (
                "HandoverError",
                shared::chat::handover::HandoverError::Session(SessionError::from(reply(code)))
                    .into(),
            ),
            (
                "FeedbackError",
                shared::chat::feedback::FeedbackError::Session(SessionError::from(reply(code)))
                    .into(),
            ),
            (
                "GapError",
                GapError::Store(StoreError::Redis(reply(code))).into(),
            ),
        ]
    }

    #[test]
    fn redis_refusing_commands_for_now_is_503_with_retry_after() {
        for code in NOT_NOW {
            for (what, err) in every_wrapping(code) {
                assert_eq!(
                    (err.status(), err.code(), err.retry_after),
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SERVICE_UNAVAILABLE",
                        Some(REDIS_RETRY_AFTER_SECS)
                    ),
                    "{what} with {code}"
                );
            }
        }
    }

    #[test]
    fn other_redis_errors_are_still_500() {
        for code in ["ERR", "WRONGTYPE", "NOSCRIPT"] {
            for (what, err) in every_wrapping(code) {
                assert_eq!(
                    (err.status(), err.retry_after),
                    (StatusCode::INTERNAL_SERVER_ERROR, None),
                    "{what} with {code}"
                );
            }
        }
    }
}
