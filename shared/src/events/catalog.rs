//! The outbound event catalogue and the one function that turns an
//! event into the exact bytes a receiver gets.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::payloads::EventPayload;
use crate::ids::{EventId, TraceId, WebhookId};
use crate::time::serde_rfc3339;

macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Every event type this system emits.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($(#[$doc])* $variant,)*
        }

        impl EventType {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// Every type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];
        }

        impl FromStr for EventType {
            type Err = UnknownEventType;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($name => Ok(EventType::$variant),)*
                    _ => Err(UnknownEventType(text.chars().take(100).collect())),
                }
            }
        }
    };
}

// The `data` of each event is one struct of `event_payloads` (named like
// the variant): its fields, their docs and the JSON Schema the catalogue
// serves all come from it.
event_types! {
    /// The bot answered a message.
    ChatResponseGenerated => "chat.response.generated",
    /// A conversation went to a person.
    ChatEscalated => "chat.escalated",
    /// A user wrote in a session a person owns: the bot did not answer, the
    /// message is for the operator.
    ChatMessageForwarded => "chat.message.forwarded",
    /// An operator answered the user (`POST /chat/sessions/{id}/reply`).
    ChatOperatorReplied => "chat.operator.replied",
    /// A session was closed.
    SessionEnded => "session.ended",
    /// A document was parsed, chunked and indexed.
    KnowledgeDocumentIndexed => "knowledge.document.indexed",
    /// An ingestion attempt failed.
    KnowledgeDocumentFailed => "knowledge.document.failed",
    /// A document was classified.
    AnalysisClassificationCompleted => "analysis.classification.completed",
    /// A job ended in the dead-letter set.
    ErrorOccurred => "error.occurred",
    /// `POST /webhooks/{id}/test`.
    WebhookTest => "webhook.test",
    /// Operational: a webhook was turned off, by the system (410 Gone, a
    /// failure streak) or an administrator. `webhook_id, name, url, reason,
    /// disabled_at, failure_streak{since, failures}` (null when no streak).
    /// Only to webhooks listing it by name (see `is_operational`).
    WebhookDisabled => "webhook.disabled",
    /// Operational: an administrator turned a webhook back on. `webhook_id,
    /// name, url, reason` (why it had been off, if the system said),
    /// `enabled_at, dead_letters_replayed`.
    WebhookEnabled => "webhook.enabled",
}

impl EventType {
    /// `webhook.test` goes to one webhook on request, whatever it
    /// subscribes to; it is not something to subscribe to.
    pub fn is_subscribable(self) -> bool {
        self != EventType::WebhookTest
    }

    /// News about the webhooks themselves, for the people operating the
    /// integrations rather than for the integrations: like Svix's
    /// operational webhooks they go only to webhooks that list the type by
    /// name, never through `"*"` (a catch-all integration did not ask for
    /// them, and would otherwise receive another receiver's failures).
    pub fn is_operational(self) -> bool {
        matches!(self, EventType::WebhookDisabled | EventType::WebhookEnabled)
    }
}

/// A payload that did not serialize (none of ours can fail: their maps
/// have string keys); kept as an error rather than a panic all the same.
#[derive(Debug, thiserror::Error)]
#[error("event data could not be serialized: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a webhook subscribes to: one event type, or `"*"` for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventFilter {
    All,
    Only(EventType),
}

impl EventFilter {
    pub fn parse(text: &str) -> Result<Self, UnknownEventType> {
        if text == "*" {
            return Ok(EventFilter::All);
        }
        match text.parse::<EventType>()? {
            t if t.is_subscribable() => Ok(EventFilter::Only(t)),
            _ => Err(UnknownEventType(text.to_owned())),
        }
    }

    pub fn matches(self, event: EventType) -> bool {
        match self {
            EventFilter::All => event.is_subscribable() && !event.is_operational(),
            EventFilter::Only(t) => t == event,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventFilter::All => "*",
            EventFilter::Only(t) => t.as_str(),
        }
    }
}

impl Serialize for EventFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventFilter::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `metadata` of every outbound body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub trace_id: TraceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl EventMetadata {
    /// Metadata of an event that belongs to no other event's conversation.
    pub fn new(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            correlation_id: None,
        }
    }
}

/// One event, as stored with its deliveries: everything of the outbound
/// body except what differs per webhook and per attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: EventId,
    pub event_type: EventType,
    #[serde(with = "serde_rfc3339")]
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
    pub metadata: EventMetadata,
}

impl Event {
    /// The event a publishing site sends: its type and `data` come from the
    /// payload struct, so what is sent is what the catalogue's schema says.
    pub fn of<P: EventPayload>(
        event_id: EventId,
        payload: &P,
        metadata: EventMetadata,
    ) -> Result<Self, PayloadError> {
        Ok(Self::new(
            event_id,
            P::TYPE,
            serde_json::to_value(payload)?,
            metadata,
        ))
    }

    /// An event from raw `data`: for stored events and tests; publishing
    /// sites use [`Event::of`].
    pub fn new(
        event_id: EventId,
        event_type: EventType,
        data: serde_json::Value,
        metadata: EventMetadata,
    ) -> Self {
        Self {
            event_id,
            event_type,
            timestamp: Utc::now(),
            data,
            metadata,
        }
    }

    /// The outbound body for one webhook and attempt, in the canonical form
    /// receivers that re-serialize (the seed's Express verifier) reproduce.
    pub fn body(
        &self,
        webhook_id: &WebhookId,
        delivery_attempt: u32,
    ) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            webhook_id: &'a WebhookId,
            event_id: &'a EventId,
            event_type: EventType,
            timestamp: String,
            delivery_attempt: u32,
            data: &'a serde_json::Value,
            metadata: &'a EventMetadata,
        }
        crate::jsonjs::to_vec(&Body {
            webhook_id,
            event_id: &self.event_id,
            event_type: self.event_type,
            timestamp: crate::time::rfc3339(self.timestamp),
            delivery_attempt,
            data: &self.data,
            metadata: &self.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        assert_eq!(EventFilter::parse("*").unwrap(), EventFilter::All);
        let only = EventFilter::parse("chat.escalated").unwrap();
        assert!(only.matches(EventType::ChatEscalated));
        assert!(!only.matches(EventType::SessionEnded));
        assert!(EventFilter::parse("chat.nonsense").is_err());
        for hand_over in ["chat.message.forwarded", "chat.operator.replied"] {
            assert_eq!(EventFilter::parse(hand_over).unwrap().as_str(), hand_over);
        }
        assert!(EventFilter::parse("webhook.test").is_err());
        assert!(!EventFilter::All.matches(EventType::WebhookTest));
        for operational in [EventType::WebhookDisabled, EventType::WebhookEnabled] {
            assert!(!EventFilter::All.matches(operational), "{operational}");
            let named = EventFilter::parse(operational.as_str()).unwrap();
            assert!(named.matches(operational));
        }
    }

    #[test]
    fn body_has_the_spec_field_order() {
        let event = Event::new(
            EventId::parse("evt_1").unwrap(),
            EventType::ChatResponseGenerated,
            serde_json::json!({"confidence": 1.0, "answer": "Да"}),
            EventMetadata {
                trace_id: "t".parse().unwrap(),
                correlation_id: Some("c".into()),
            },
        );
        let body = String::from_utf8(
            event
                .body(&WebhookId::parse("webhook_a").unwrap(), 2)
                .unwrap(),
        )
        .unwrap();
        let ts = crate::time::rfc3339(event.timestamp);
        assert_eq!(
            body,
            format!(
                r#"{{"webhook_id":"webhook_a","event_id":"evt_1","event_type":"chat.response.generated","timestamp":"{ts}","delivery_attempt":2,"data":{{"confidence":1,"answer":"Да"}},"metadata":{{"trace_id":"t","correlation_id":"c"}}}}"#
            )
        );
    }
}
