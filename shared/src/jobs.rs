//! The typed jobs of this system. Each names its queue; the worker runs a
//! handler per queue. Payloads only grow by optional fields, so a job
//! written by an older version still decodes.

use chrono::{DateTime, Utc};
use rag::types::Format;
use serde::{Deserialize, Serialize};

use crate::events::catalog::Event;
use crate::events::payloads::SourceRef;
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

/// Where a `/chat/completions` job stands, for the request (or a later
/// poll) waiting on it. The API writes `Queued`, the worker one of the
/// others; both go through this type, so neither side can misspell a field.
/// The JSON (`status` plus the variant's fields) is the one both sides
/// wrote by hand before, so a result stored by an older version still
/// reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChatResult {
    Queued {
        session_id: SessionId,
    },
    Done {
        session_id: SessionId,
        answer: String,
        sources: Vec<SourceRef>,
        confidence: f64,
        /// The answer was not good enough, or the user asked for a person.
        escalated: bool,
        processing_time_ms: u64,
    },
    /// A person has the conversation: the message went to them instead.
    Forwarded {
        session_id: SessionId,
        /// Null while the session waits for an operator.
        operator_id: Option<String>,
        /// For the user, in their language.
        notice: String,
        processing_time_ms: u64,
    },
    /// The job was dead-lettered.
    Failed {
        session_id: SessionId,
        error: String,
    },
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the API and the worker stored with `json!` before this type.
    #[test]
    fn results_written_by_hand_before_still_read() {
        let id = SessionId::generate();
        let written = [
            json!({"status": "queued", "session_id": id}),
            json!({
                "status": "done", "session_id": id, "answer": "Reset it in settings.",
                "sources": [{"document_id": "doc_1", "title": "FAQ", "excerpt": "Settings"}],
                "confidence": 0.82, "escalated": false, "processing_time_ms": 41,
            }),
            json!({
                "status": "forwarded", "session_id": id, "escalated": true,
                "operator_id": null, "notice": "A person has it.", "processing_time_ms": 3,
            }),
            json!({"status": "failed", "session_id": id, "error": "timed out"}),
        ];
        let read: Vec<ChatResult> = written
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("an old result reads"))
            .collect();
        assert_eq!(
            read,
            [
                ChatResult::Queued {
                    session_id: id.clone()
                },
                ChatResult::Done {
                    session_id: id.clone(),
                    answer: "Reset it in settings.".into(),
                    sources: vec![SourceRef {
                        document_id: "doc_1".into(),
                        title: "FAQ".into(),
                        excerpt: "Settings".into(),
                    }],
                    confidence: 0.82,
                    escalated: false,
                    processing_time_ms: 41,
                },
                ChatResult::Forwarded {
                    session_id: id.clone(),
                    operator_id: None,
                    notice: "A person has it.".into(),
                    processing_time_ms: 3,
                },
                ChatResult::Failed {
                    session_id: id.clone(),
                    error: "timed out".into(),
                },
            ]
        );
    }

    #[test]
    fn a_result_round_trips_with_its_status_tag() {
        let id = SessionId::generate();
        let result = ChatResult::Forwarded {
            session_id: id.clone(),
            operator_id: Some("op-7".into()),
            notice: "A person has it.".into(),
            processing_time_ms: 3,
        };
        let json = serde_json::to_value(&result).expect("serializes");
        assert_eq!(json["status"], "forwarded");
        assert_eq!(json["operator_id"], "op-7");
        assert_eq!(
            serde_json::from_value::<ChatResult>(json).expect("reads back"),
            result
        );
    }
}
