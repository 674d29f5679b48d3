//! The `data` of every outbound event, one struct per event type.
//!
//! Publishing sites build these structs ([`Event::of`]) and the catalogue
//! (`GET /api/v1/event-types`) serves the JSON Schema generated from the
//! same structs, so the bytes a receiver gets and the schema it reads cannot
//! drift apart. Field order is the order receivers have always seen.
//!
//! A new event type is a variant in `catalog.rs`, a struct here named like
//! the variant, and its name in [`payloads!`]: the catalogue's `match` does
//! not compile until it is there.
//!
//! [`Event::of`]: crate::events::catalog::Event::of

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::PartialSchema;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::chat::sessions::Priority;
use crate::events::catalog::EventType;
use crate::ids::{
    DeadLetterId, DeliveryId, DocumentId, EventId, JobId, SessionId, StagingId, WebhookId,
};
use crate::jobs::EndReason;
use crate::knowledge::documents::ClassificationView;
use crate::time::serde_rfc3339;

/// The `data` of one event type.
pub trait EventPayload: Serialize {
    const TYPE: EventType;
}

/// A passage an answer or an escalation rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    pub document_id: String,
    pub title: String,
    /// The passage quoted.
    pub excerpt: String,
}

impl From<&rag::answer::Source> for SourceRef {
    fn from(source: &rag::answer::Source) -> Self {
        Self {
            document_id: source.document_id.clone(),
            title: source.title.clone(),
            excerpt: source.excerpt.clone(),
        }
    }
}

/// The bot answered a message.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatResponseGenerated {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    pub user_id: String,
    /// The user's message.
    pub message: String,
    pub answer: String,
    /// The passages the answer rests on; empty when none was found.
    #[schema(inline)]
    pub sources: Vec<SourceRef>,
    /// 0–1, 2 decimals.
    pub confidence: f64,
    pub processing_time_ms: u64,
}

/// A conversation went to a person: the bot stops answering it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatEscalated {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    pub user_id: String,
    pub escalation_reason: String,
    #[schema(inline)]
    pub escalation_priority: Priority,
    /// Null while nobody is assigned.
    pub assigned_operator_id: Option<String>,
    /// Null while nobody is assigned.
    pub assigned_operator_name: Option<String>,
    /// A few sentences on what the user asked, in the user's language.
    pub conversation_summary: String,
    /// The message that triggered it (empty when there was none).
    pub last_message: String,
    /// What retrieval found for that message; empty when none.
    #[schema(inline)]
    pub sources: Vec<SourceRef>,
}

/// A user wrote in a session a person owns: the bot did not answer, the
/// message is for the operator.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatMessageForwarded {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    pub user_id: String,
    pub message: String,
    /// Null while nobody is assigned.
    pub operator_id: Option<String>,
}

/// An operator answered the user (`POST /chat/sessions/{id}/reply`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatOperatorReplied {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    pub user_id: String,
    pub message: String,
    pub operator_id: String,
}

/// A session was closed, on request or after its idle timeout.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionEnded {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    pub user_id: String,
    #[serde(with = "serde_rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339::option")]
    pub ended_at: Option<DateTime<Utc>>,
    pub messages_count: u64,
    /// Whether a person took the conversation over at some point.
    pub escalated: bool,
    #[schema(inline)]
    pub reason: EndReason,
}

/// `status` of `knowledge.document.indexed`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexedStatus {
    Indexed,
}

/// `status` of `knowledge.document.failed`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailedStatus {
    Failed,
}

/// A document was parsed, chunked and indexed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KnowledgeDocumentIndexed {
    #[schema(value_type = String)]
    pub document_id: DocumentId,
    pub name: String,
    /// The integrator's own id for the document, if it gave one.
    pub external_document_id: Option<String>,
    #[schema(inline)]
    pub status: IndexedStatus,
    pub chunks_count: usize,
    pub total_size_bytes: Option<u64>,
    pub processing_time_ms: u64,
    /// What the uploader attached to the document, as given.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    pub embeddings_model: Option<String>,
    pub vector_store: Option<String>,
}

/// An ingestion attempt failed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KnowledgeDocumentFailed {
    #[schema(value_type = String)]
    pub document_id: DocumentId,
    pub name: String,
    pub external_document_id: Option<String>,
    #[schema(inline)]
    pub status: FailedStatus,
    pub error_code: String,
    pub error_message: String,
    pub retry_count: u32,
    pub max_retries: u32,
    /// When the next attempt runs; null when no retry is left.
    #[serde(with = "serde_rfc3339::option")]
    pub next_retry: Option<DateTime<Utc>>,
}

/// A document was classified.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AnalysisClassificationCompleted {
    #[schema(value_type = String)]
    pub document_id: DocumentId,
    #[schema(inline)]
    pub classifications: Vec<ClassificationView>,
    pub processing_time_ms: u64,
}

/// A job ended in the dead-letter set. Besides the fields every such event
/// has, it names what the job concerned; which ids depends on `job_type`
/// (each null when the job itself could not be read).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorOccurred {
    /// `CHAT_FAILED`, `INGEST_FAILED`, `DELIVERY_FAILED`,
    /// `SESSION_END_FAILED`.
    pub error_code: String,
    pub error_message: String,
    /// The queue the job ran on.
    pub job_type: String,
    #[schema(value_type = Option<String>)]
    pub job_id: Option<JobId>,
    /// The dead letter to replay or discard.
    #[schema(value_type = String)]
    pub dead_letter_id: DeadLetterId,
    /// Every attempt the job had, replays included.
    pub attempts: u32,
    #[serde(flatten)]
    #[schema(inline)]
    pub related: ErrorRelated,
}

/// The ids an `error.occurred` concerns, by the kind of job that failed.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorRelated {
    /// A chat message (`job_type` `chat`).
    Chat {
        #[schema(value_type = Option<String>)]
        session_id: Option<SessionId>,
        #[schema(value_type = Option<String>)]
        webhook_id: Option<WebhookId>,
        #[schema(value_type = Option<String>)]
        webhook_event_id: Option<EventId>,
    },
    /// A document ingestion (`ingest`).
    Ingest {
        #[schema(value_type = Option<String>)]
        document_id: Option<DocumentId>,
        #[schema(value_type = Option<String>)]
        staging_id: Option<StagingId>,
        external_document_id: Option<String>,
        #[schema(value_type = Option<String>)]
        webhook_id: Option<WebhookId>,
    },
    /// A webhook delivery (`deliver`).
    Delivery {
        #[schema(value_type = Option<String>)]
        delivery_id: Option<DeliveryId>,
        #[schema(value_type = Option<String>)]
        webhook_id: Option<WebhookId>,
        #[schema(value_type = Option<String>)]
        event_id: Option<EventId>,
        #[schema(value_type = Option<String>)]
        event_type: Option<EventType>,
    },
    /// The end of a session (`session`).
    Session {
        #[schema(value_type = Option<String>)]
        session_id: Option<SessionId>,
    },
}

/// Sent by `POST /webhooks/{id}/test` to that webhook alone.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookTest {
    pub message: String,
    #[schema(value_type = String)]
    pub webhook_id: WebhookId,
}

/// A webhook was turned off: by the system (a receiver answering
/// `410 Gone`, or failing continuously for `delivery.disable_after`) or by
/// an administrator. Sent only to webhooks that list this type by name.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookDisabled {
    #[schema(value_type = String)]
    pub webhook_id: WebhookId,
    pub name: String,
    pub url: String,
    pub reason: String,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub disabled_at: DateTime<Utc>,
    /// The failures that disabled it; null when it was not a streak.
    #[schema(inline)]
    pub failure_streak: Option<FailureStreakView>,
}

/// Failed attempts since the webhook's last success.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FailureStreakView {
    /// The first failed attempt of the streak.
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    pub failures: u64,
}

/// A webhook was turned on again by an administrator. Sent only to
/// webhooks that list this type by name.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookEnabled {
    #[schema(value_type = String)]
    pub webhook_id: WebhookId,
    pub name: String,
    pub url: String,
    /// Why the system had turned it off, if it had.
    pub reason: Option<String>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub enabled_at: DateTime<Utc>,
    /// Its dead letters re-queued on the way (when asked).
    pub dead_letters_replayed: usize,
}

/// Ties each payload struct to its event type (same name), and the
/// catalogue to the payloads.
macro_rules! payloads {
    ($($name:ident),* $(,)?) => {
        $(impl EventPayload for $name {
            const TYPE: EventType = EventType::$name;
        })*

        fn data_schema(event_type: EventType) -> RefOr<Schema> {
            match event_type {
                $(EventType::$name => <$name as PartialSchema>::schema(),)*
            }
        }
    };
}

payloads!(
    ChatResponseGenerated,
    ChatEscalated,
    ChatMessageForwarded,
    ChatOperatorReplied,
    SessionEnded,
    KnowledgeDocumentIndexed,
    KnowledgeDocumentFailed,
    AnalysisClassificationCompleted,
    ErrorOccurred,
    WebhookTest,
    WebhookDisabled,
    WebhookEnabled,
);

/// One entry of the event catalogue.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventTypeInfo {
    /// The `event_type` of the outbound body, and what `events[]` names.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub event_type: EventType,
    pub description: String,
    /// False for `webhook.test`, which is sent on request only.
    pub subscribable: bool,
    /// JSON Schema (2020-12) of the event's `data`.
    #[schema(value_type = Object)]
    pub schema: Value,
}

const JSON_SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

static CATALOGUE: LazyLock<Vec<EventTypeInfo>> =
    LazyLock::new(|| EventType::ALL.iter().map(|&t| info(t)).collect());

fn info(event_type: EventType) -> EventTypeInfo {
    // utoipa's schema types only hold strings, numbers and maps with string
    // keys: they always serialize (the tests check every entry).
    let mut schema = serde_json::to_value(data_schema(event_type)).unwrap_or_default();
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(object) = schema.as_object_mut() {
        object.insert("$schema".into(), JSON_SCHEMA_DIALECT.into());
    }
    EventTypeInfo {
        event_type,
        description,
        subscribable: event_type.is_subscribable(),
        schema,
    }
}

/// Every event type, in catalogue order.
pub fn catalogue() -> &'static [EventTypeInfo] {
    &CATALOGUE
}

/// The catalogue entry of one type.
pub fn describe(event_type: EventType) -> Option<&'static EventTypeInfo> {
    CATALOGUE.iter().find(|i| i.event_type == event_type)
}

/// Whether `path` (segments below `data`) names a field of `event_type`'s
/// `data`. Below a free-form object (`metadata`) any path exists.
pub fn has_path(event_type: EventType, path: &[&str]) -> bool {
    describe(event_type).is_some_and(|info| schema_has_path(&info.schema, path))
}

fn schema_has_path(schema: &Value, path: &[&str]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    if let Some(property) = schema.get("properties").and_then(|p| p.get(*first)) {
        return schema_has_path(property, rest);
    }
    let in_branch = ["allOf", "oneOf", "anyOf"].iter().any(|combinator| {
        schema
            .get(*combinator)
            .and_then(Value::as_array)
            .is_some_and(|branches| branches.iter().any(|b| schema_has_path(b, path)))
    });
    in_branch || is_free_form(schema)
}

/// An object whose keys the schema does not list.
fn is_free_form(schema: &Value) -> bool {
    let is_object = match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    is_object
        && schema.get("properties").is_none()
        && schema
            .get("additionalProperties")
            .is_none_or(|extra| extra != &Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_an_object_schema_and_a_description() {
        assert_eq!(catalogue().len(), EventType::ALL.len());
        for info in catalogue() {
            assert_eq!(info.schema["$schema"], JSON_SCHEMA_DIALECT);
            assert!(
                info.schema.get("properties").is_some() || info.schema.get("allOf").is_some(),
                "{}: {}",
                info.event_type,
                info.schema
            );
            assert!(!info.description.is_empty(), "{}", info.event_type);
            assert!(
                !info.schema.to_string().contains("$ref"),
                "{}: schemas are self-contained: {}",
                info.event_type,
                info.schema
            );
        }
    }

    #[test]
    fn paths_are_found_in_fields_flattened_ids_and_free_form_objects() {
        let has = |t, path: &str| has_path(t, &path.split('.').collect::<Vec<_>>());
        assert!(has(EventType::ChatEscalated, "escalation_priority"));
        assert!(!has(EventType::ChatEscalated, "priority"));
        assert!(has(EventType::ErrorOccurred, "error_code"));
        assert!(has(EventType::ErrorOccurred, "session_id"));
        assert!(has(EventType::ErrorOccurred, "delivery_id"));
        assert!(has(EventType::KnowledgeDocumentIndexed, "metadata.source"));
        assert!(has(EventType::KnowledgeDocumentIndexed, "metadata.a.b"));
        assert!(!has(EventType::KnowledgeDocumentIndexed, "name.first"));
        assert!(!has(EventType::ChatResponseGenerated, "metadata.source"));
    }

    /// The typed payloads give the bytes the `json!` they replaced gave.
    #[test]
    fn timestamps_and_statuses_serialize_as_before() {
        let started = Utc::now();
        let session = SessionId::generate();
        let ended = serde_json::to_string(&SessionEnded {
            session_id: session.clone(),
            user_id: "u".into(),
            started_at: started,
            ended_at: None,
            messages_count: 2,
            escalated: false,
            reason: EndReason::IdleTimeout,
        })
        .unwrap();
        let before = serde_json::json!({
            "session_id": session,
            "user_id": "u",
            "started_at": crate::time::rfc3339(started),
            "ended_at": None::<String>,
            "messages_count": 2,
            "escalated": false,
            "reason": EndReason::IdleTimeout.as_str(),
        });
        assert_eq!(ended, before.to_string());

        let document = DocumentId::generate();
        let failed = serde_json::to_string(&KnowledgeDocumentFailed {
            document_id: document.clone(),
            name: "a.pdf".into(),
            external_document_id: None,
            status: FailedStatus::Failed,
            error_code: "PARSE".into(),
            error_message: "bad".into(),
            retry_count: 1,
            max_retries: 3,
            next_retry: Some(started),
        })
        .unwrap();
        let before = serde_json::json!({
            "document_id": document,
            "name": "a.pdf",
            "external_document_id": None::<String>,
            "status": "failed",
            "error_code": "PARSE",
            "error_message": "bad",
            "retry_count": 1,
            "max_retries": 3,
            "next_retry": Some(crate::time::rfc3339(started)),
        });
        assert_eq!(failed, before.to_string());
    }

    #[test]
    fn payloads_serialize_in_the_order_receivers_know() {
        let data = serde_json::to_string(&ErrorOccurred {
            error_code: "SESSION_END_FAILED".into(),
            error_message: "boom".into(),
            job_type: "session".into(),
            job_id: None,
            dead_letter_id: DeadLetterId::parse("dead_1").unwrap(),
            attempts: 3,
            related: ErrorRelated::Session { session_id: None },
        })
        .unwrap();
        assert_eq!(
            data,
            r#"{"error_code":"SESSION_END_FAILED","error_message":"boom","job_type":"session","job_id":null,"dead_letter_id":"dead_1","attempts":3,"session_id":null}"#
        );
    }
}
