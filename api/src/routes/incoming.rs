//! Incoming webhooks: authenticated by signature over the raw
//! body, answered 202 once the job is in Redis, 200 `duplicate` for a
//! repeat.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::incoming::{IncomingDocument, IncomingMessage, IntakeError, SignedRequest};
use shared::webhooks::registry::Webhook;
use utoipa::{IntoParams, ToSchema};

use crate::http::body::decode_json;
use crate::http::envelope::{Accepted, Data, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::trace::current_trace_id;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct MessageReceipt {
    pub webhook_event_id: String,
    /// `accepted`, or `duplicate` for a repeat within the idempotency window.
    pub status: &'static str,
    pub session_id: String,
    pub message: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentReceipt {
    pub webhook_event_id: String,
    /// `accepted`, or `duplicate` for a repeat within the idempotency window.
    pub status: &'static str,
    pub message: &'static str,
    pub staging_id: String,
    pub document_id: String,
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::UnknownWebhook(message) => {
                ApiError::unauthorized("UNKNOWN_WEBHOOK", message)
            }
            IntakeError::Signature(e) => ApiError::unauthorized(e.code(), e.to_string()),
            IntakeError::Field(e) => e.into(),
            IntakeError::Store(e) => e.into(),
            IntakeError::Queue(e) => e.into(),
            IntakeError::Session(e) => e.into(),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Where senders that cannot add an `X-Webhook-ID` header (Slack, Stripe,
/// GitHub…) name their webhook: `…/incoming/message?webhook_id=webhook_…`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncomingQuery {
    /// The sending integration's webhook_id, when `X-Webhook-ID` is absent.
    pub webhook_id: Option<String>,
}

/// Every header that is valid UTF-8, for the webhook's signature profile to
/// pick its own from.
fn header_pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect()
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &IncomingQuery,
    body: &[u8],
) -> Result<Webhook, ApiError> {
    let pairs = header_pairs(headers);
    let request = SignedRequest {
        webhook_id: header(headers, "x-webhook-id").or(query.webhook_id.as_deref()),
        headers: &pairs,
        body,
    };
    Ok(state.services.intake.authenticate(&request).await?)
}

/// The receipt's `status`.
fn status(duplicate: bool) -> &'static str {
    if duplicate { "duplicate" } else { "accepted" }
}

/// Answer a repeat with 200 and the first acceptance, a new one with 202.
fn receipt<T: Serialize>(duplicate: bool, body: T) -> Response {
    if duplicate {
        Data(body).into_response()
    } else {
        Accepted(body).into_response()
    }
}

/// A chat message from an integration.
#[utoipa::path(post, path = "/webhooks/incoming/message", tag = "incoming",
    request_body = IncomingMessage,
    params(IncomingQuery,
        ("X-Webhook-ID" = Option<String>, Header, description = "the sending integration's webhook_id (or `?webhook_id=`)"),
        ("X-Webhook-Timestamp" = Option<String>, Header, description = "`seed` profile: unix seconds, within the window"),
        ("X-Webhook-Signature" = Option<String>, Header, description = "`seed` profile: sha256=<hex HMAC-SHA256(secret, \"<timestamp>.<raw body>\")>; other profiles read their provider's headers (README, Incoming signature profiles)")),
    responses(
        (status = 202, description = "queued", body = MessageReceipt),
        (status = 200, description = "a repeat: nothing queued", body = MessageReceipt),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn message(
    State(state): State<AppState>,
    Query(query): Query<IncomingQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let webhook = authenticate(&state, &headers, &query, &body).await?;
    let intake = &state.services.intake;
    let msg: IncomingMessage = decode_json(&body)?;
    let accepted = intake.message(&webhook, msg, current_trace_id()).await?;
    tracing::info!(
        webhook_id = %webhook.webhook_id,
        session_id = %accepted.session_id,
        duplicate = accepted.duplicate,
        "incoming message"
    );
    Ok(receipt(
        accepted.duplicate,
        MessageReceipt {
            webhook_event_id: accepted.webhook_event_id.to_string(),
            status: status(accepted.duplicate),
            session_id: accepted.session_id.to_string(),
            message: if accepted.duplicate {
                "Message already accepted; not queued again"
            } else {
                "Message accepted and queued for processing"
            },
        },
    ))
}

/// A document upload notice from an integration.
#[utoipa::path(post, path = "/webhooks/incoming/document", tag = "incoming",
    request_body = IncomingDocument,
    params(IncomingQuery,
        ("X-Webhook-ID" = Option<String>, Header, description = "the sending integration's webhook_id (or `?webhook_id=`)"),
        ("X-Webhook-Timestamp" = Option<String>, Header, description = "`seed` profile: unix seconds, within the window"),
        ("X-Webhook-Signature" = Option<String>, Header, description = "`seed` profile: sha256=<hex HMAC-SHA256(secret, \"<timestamp>.<raw body>\")>; other profiles read their provider's headers (README, Incoming signature profiles)")),
    responses(
        (status = 202, description = "queued", body = DocumentReceipt),
        (status = 200, description = "a repeat: nothing queued", body = DocumentReceipt),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn document(
    State(state): State<AppState>,
    Query(query): Query<IncomingQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let webhook = authenticate(&state, &headers, &query, &body).await?;
    let intake = &state.services.intake;
    let doc: IncomingDocument = decode_json(&body)?;
    let accepted = intake
        .document(&webhook, doc, &body, current_trace_id())
        .await?;
    tracing::info!(
        webhook_id = %webhook.webhook_id,
        document_id = %accepted.document_id,
        staging_id = %accepted.staging_id,
        duplicate = accepted.duplicate,
        "incoming document"
    );
    Ok(receipt(
        accepted.duplicate,
        DocumentReceipt {
            webhook_event_id: accepted.webhook_event_id.to_string(),
            status: status(accepted.duplicate),
            message: if accepted.duplicate {
                "Document already accepted; not queued again"
            } else {
                "Document accepted for ingestion"
            },
            staging_id: accepted.staging_id.to_string(),
            document_id: accepted.document_id.to_string(),
        },
    ))
}
