//! A person owns the conversation after a hand-over.
//!
//! Once a session is escalated ([`crate::chat::escalation`]: low confidence, the
//! user asking for a person, or the admin endpoint) the bot no longer
//! answers it. Each user message of the session is still recorded in its
//! history, and goes out as `chat.message.forwarded` for the operator
//! instead of `chat.response.generated` (the worker decides this per
//! message, see `worker::chat`). Operators answer with
//! [`Handover::reply`] (`chat.operator.replied`, recorded as an operator
//! turn) and give the session back to the bot with
//! [`Handover::hand_back`]; ending the session works as before.
//!
//! Both events go, like every event, to the webhooks subscribed to their
//! type: the integration that owns the session (the one its messages come
//! in through) subscribes to `chat.operator.replied` to show the reply to
//! the user, an operator console to `chat.message.forwarded`; each tells
//! its conversations apart by `session_id`.

use crate::chat::sessions::{Role, Session, SessionError, SessionStore, Turn};
use crate::chat::stats::ChatStats;
use crate::config::Operator;
use crate::delivery::publish::{PublishError, Publisher};
use crate::events::catalog::{Event, EventMetadata};
use crate::events::payloads::{ChatMessageForwarded, ChatOperatorReplied};
use crate::ids::{EventId, JobId, SessionId};
use crate::incoming::{optional_text, text_field};
use crate::webhooks::registry::FieldError;

/// Longest operator reply (characters), as long as a user's message may be.
pub const MAX_REPLY_CHARS: usize = 16_000;
/// Longest operator id.
const MAX_OPERATOR_ID_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{}: {}", .0.field, .0.message)]
    Field(#[from] FieldError),
}

/// An operator's reply, its fields checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorReply {
    pub message: String,
    /// Who replies; absent, the operator the session is assigned to.
    pub operator_id: Option<String>,
}

impl OperatorReply {
    /// Trimmed, bounded, free of NUL; an empty `operator_id` is absent.
    pub fn check(message: &str, operator_id: Option<String>) -> Result<Self, FieldError> {
        Ok(Self {
            message: text_field("message", message, MAX_REPLY_CHARS)?,
            operator_id: optional_text("operator_id", operator_id, MAX_OPERATOR_ID_CHARS)?,
        })
    }
}

/// A reply recorded and queued for delivery.
#[derive(Clone, Debug)]
pub struct Replied {
    pub session_id: SessionId,
    /// The operator turn's id in the session history.
    pub reply_id: JobId,
    pub event_id: EventId,
    pub operator_id: String,
    /// Deliveries queued: one per webhook subscribed to
    /// `chat.operator.replied` (none means nobody will show the reply).
    pub deliveries: usize,
}

#[derive(Clone)]
pub struct Handover {
    pub sessions: SessionStore,
    pub publisher: Publisher,
    pub stats: ChatStats,
    /// The configured roster, for the names of operators who claim a
    /// session by replying.
    pub operators: Vec<Operator>,
}

impl Handover {
    /// Sends a user's message in an escalated session to the operator
    /// (`chat.message.forwarded`) instead of answering it. The message is
    /// already in the history. Returns the operator it is for, if one is
    /// assigned.
    pub async fn forward(
        &self,
        session: &Session,
        message: &str,
        event_id: EventId,
        metadata: EventMetadata,
    ) -> Result<Option<String>, HandoverError> {
        let operator_id = session
            .escalation
            .as_ref()
            .and_then(|e| e.operator_id.clone());
        let data = ChatMessageForwarded {
            session_id: session.session_id.clone(),
            user_id: session.user_id.clone(),
            message: message.to_owned(),
            operator_id: operator_id.clone(),
        };
        let event = Event::of(event_id, &data, metadata).map_err(PublishError::from)?;
        self.publisher.publish(event).await?;
        self.stats.record_forwarded().await;
        Ok(operator_id)
    }

    /// An operator's reply to the user of an escalated, active session:
    /// recorded as an operator turn, then sent as `chat.operator.replied`.
    /// An unassigned session is assigned to the operator who replies
    /// first; a colleague may reply in an assigned one (named in the
    /// event) without taking it over.
    pub async fn reply(
        &self,
        session_id: &SessionId,
        reply: OperatorReply,
        metadata: EventMetadata,
    ) -> Result<Replied, HandoverError> {
        let operator = reply.operator_id.as_deref().map(|id| self.operator(id));
        let operator_id = self
            .sessions
            .claim_for_reply(session_id, operator.as_ref())
            .await?;
        let session = self
            .sessions
            .get(session_id)
            .await?
            .ok_or_else(|| SessionError::Missing(session_id.clone()))?;
        let reply_id = JobId::generate();
        // The history first: a failure after it is answered 503 and a retry
        // repeats a line of history, whereas the other order could send
        // the user the same reply twice.
        self.sessions
            .record_turn(
                session_id,
                &Turn {
                    role: Role::Operator,
                    text: reply.message.clone(),
                    at: chrono::Utc::now(),
                    job_id: reply_id.clone(),
                    confidence: None,
                    operator_id: Some(operator_id.clone()),
                },
            )
            .await?;
        let event_id = EventId::derived(&reply_id, "operator_reply");
        let data = ChatOperatorReplied {
            session_id: session_id.clone(),
            user_id: session.user_id.clone(),
            message: reply.message,
            operator_id: operator_id.clone(),
        };
        let event = Event::of(event_id.clone(), &data, metadata).map_err(PublishError::from)?;
        let deliveries = self.publisher.publish(event).await?.len();
        self.stats.record_operator_reply().await;
        tracing::info!(%session_id, operator_id, deliveries, "operator replied");
        Ok(Replied {
            session_id: session_id.clone(),
            reply_id,
            event_id,
            operator_id,
            deliveries,
        })
    }

    /// Gives an escalated session back to the bot: it answers the next
    /// message again. The history stays; the operator's load drops.
    pub async fn hand_back(&self, session_id: &SessionId) -> Result<(), HandoverError> {
        self.sessions.hand_back(session_id).await?;
        tracing::info!(%session_id, "session handed back to the bot");
        Ok(())
    }

    /// The roster's entry for `id`, or one named by its id: an operator
    /// outside the roster (or with no roster at all) may still take a
    /// session.
    fn operator(&self, id: &str) -> Operator {
        self.operators
            .iter()
            .find(|o| o.id == id)
            .cloned()
            .unwrap_or_else(|| Operator {
                id: id.to_owned(),
                name: id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_trimmed_and_bounded() {
        let reply = OperatorReply::check("  Hello, I'm Jane.  ", Some(" op_1 ".into())).unwrap();
        assert_eq!(reply.message, "Hello, I'm Jane.");
        assert_eq!(reply.operator_id.as_deref(), Some("op_1"));
        let no_operator = OperatorReply::check("Hi", Some("  ".into())).unwrap();
        assert_eq!(no_operator.operator_id, None);
        for (message, operator, field) in [
            ("   ", None, "message"),
            ("a\0b", None, "message"),
            ("hi", Some("x".repeat(300)), "operator_id"),
        ] {
            let err = OperatorReply::check(message, operator).unwrap_err();
            assert_eq!(err.field, field);
        }
        let long = "я".repeat(MAX_REPLY_CHARS + 1);
        assert_eq!(
            OperatorReply::check(&long, None).unwrap_err().field,
            "message"
        );
    }
}
