//! The typed jobs of this system. Each names its queue; the worker runs a
//! handler per queue. Payloads only grow by optional fields, so a job
//! written by an older version still decodes.

use chrono::{DateTime, Utc};
use rag::types::Format;
use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::ids::{DeliveryId, DocumentId, EventId, SessionId, StagingId, WebhookId};
use crate::time::serde_rfc3339;
use queue::{Job, Labels};

/// The labels jobs carry into the dead-letter set, which the API lists
/// and filters dead letters by.
pub mod label {
    pub const WEBHOOK_ID: &str = "webhook_id";
    pub const DELIVERY_ID: &str = "delivery_id";
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
}

/// Send one event to one webhook (one per event × subscribed webhook).
/// The event travels inside the job so that a dead-lettered delivery can
/// be replayed long after its history record has expired.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliverEvent {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event: Event,
}

impl Job for DeliverEvent {
    const QUEUE: &'static str = "deliver";

    fn labels(&self) -> Labels {
        Labels::from([
            (label::WEBHOOK_ID.to_owned(), self.webhook_id.to_string()),
            (label::DELIVERY_ID.to_owned(), self.delivery_id.to_string()),
            (label::EVENT_ID.to_owned(), self.event.event_id.to_string()),
            (
                label::EVENT_TYPE.to_owned(),
                self.event.event_type.to_string(),
            ),
        ])
    }
}

/// Answer one chat message: retrieve, answer, score, maybe escalate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessMessage {
    pub session_id: SessionId,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub message: String,
    /// The integration the message came in through (absent for
    /// `/chat/completions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<WebhookId>,
    /// The id the API answered the incoming webhook with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_event_id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_message_id: Option<String>,
    #[serde(with = "serde_rfc3339")]
    pub received_at: DateTime<Utc>,
    /// Set by `/chat/completions`: the answer is also stored for the API
    /// request (or a later poll) waiting on it.
    #[serde(default)]
    pub reply_expected: bool,
}

impl Job for ProcessMessage {
    const QUEUE: &'static str = "chat";
}

/// Fetch (or take from staging), parse, chunk, index and classify one
/// document version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestDocument {
    pub document_id: DocumentId,
    pub staging_id: StagingId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_document_id: Option<String>,
    pub source: DocumentSource,
    /// Declared by the sender; absent, it is detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<WebhookId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// Where a document's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DocumentSource {
    /// Fetched under the SSRF policy (incoming document webhooks).
    Url { url: String },
    /// Uploaded directly; the bytes wait in the staging key.
    Upload { content_type: Option<String> },
}

impl DocumentSource {
    /// The URL a document is fetched from, if it came by URL.
    pub fn url(&self) -> Option<&str> {
        match self {
            DocumentSource::Url { url } => Some(url),
            DocumentSource::Upload { .. } => None,
        }
    }
}

impl Job for IngestDocument {
    const QUEUE: &'static str = "ingest";
}

/// Close a session and tell subscribers (`session.ended`). Queued by the
/// same script that marks the session ended, so the event cannot be lost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndSession {
    pub session_id: SessionId,
    pub reason: EndReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `POST /chat/sessions/{id}/end`.
    Requested,
    /// No message for `chat.session_idle_timeout`.
    IdleTimeout,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Requested => "requested",
            EndReason::IdleTimeout => "idle_timeout",
        }
    }
}

impl Job for EndSession {
    const QUEUE: &'static str = "session";
}

/// Every queue this version runs, for listings and metrics.
pub const ALL_QUEUES: &[&str] = &[
    DeliverEvent::QUEUE,
    ProcessMessage::QUEUE,
    IngestDocument::QUEUE,
    EndSession::QUEUE,
];
