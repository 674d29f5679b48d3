//! Handing a conversation to a human: pick the operator, mark
//! the session, and emit `chat.escalated` with a summary of the
//! conversation. The worker (low confidence, a request for a human) and the
//! admin endpoint both come through here.

use crate::chat::sessions::{
    Escalation, Priority, Role, Session, SessionError, SessionStore, Turn,
};
use crate::config::{Operator, OperatorAssignment};
use crate::delivery::publish::{PublishError, Publisher};
use crate::events::catalog::{Event, EventMetadata};
use crate::events::payloads::{ChatEscalated, SourceRef};
use crate::ids::EventId;

/// Turns the summary looks back on.
const SUMMARY_TURNS: usize = 6;
/// Characters quoted per turn in the summary.
const QUOTE_CHARS: usize = 140;

#[derive(Debug, thiserror::Error)]
pub enum EscalateError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Why a conversation goes to a human.
pub struct Request {
    pub reason: String,
    pub priority: Priority,
    /// The message that triggered it (the newest user turn if absent).
    pub last_message: Option<String>,
    /// What retrieval found for it (`document_id`, `title`, `excerpt`), so
    /// the operator starts from the best sources; empty when none.
    pub sources: Vec<SourceRef>,
}

#[derive(Clone)]
pub struct Escalator {
    pub sessions: SessionStore,
    pub publisher: Publisher,
    pub operators: Vec<Operator>,
    pub assignment: OperatorAssignment,
}

impl Escalator {
    /// Escalates `session` (the bot stops answering it until it is handed
    /// back); an already escalated session keeps its operator, and with an
    /// empty roster it waits unassigned. `event_id` is derived from the
    /// causing job or request so a redo emits the same event.
    /// [`SessionError::Ended`] if the session is no longer active.
    pub async fn escalate(
        &self,
        session: &Session,
        request: Request,
        event_id: EventId,
        metadata: EventMetadata,
    ) -> Result<Escalation, EscalateError> {
        let escalation = self
            .sessions
            .escalate(
                &session.session_id,
                &request.reason,
                request.priority,
                &self.operators,
                self.assignment,
            )
            .await?;
        let turns = self
            .sessions
            .turns(&session.session_id, SUMMARY_TURNS * 2)
            .await?;
        let last_message = request.last_message.or_else(|| {
            turns
                .iter()
                .rev()
                .find(|t| t.role == Role::User)
                .map(|t| t.text.clone())
        });
        let data = ChatEscalated {
            session_id: session.session_id.clone(),
            user_id: session.user_id.clone(),
            escalation_reason: escalation.reason.clone(),
            escalation_priority: escalation.priority,
            assigned_operator_id: escalation.operator_id.clone(),
            assigned_operator_name: escalation.operator_name.clone(),
            conversation_summary: summarize(&turns),
            last_message: last_message.unwrap_or_default(),
            sources: request.sources,
        };
        let event = Event::of(event_id, &data, metadata).map_err(PublishError::from)?;
        self.publisher.publish(event).await?;
        Ok(escalation)
    }
}

/// A few sentences an operator reads before taking over: what the user
/// asked and how sure the assistant was, in the user's language.
pub fn summarize(turns: &[Turn]) -> String {
    let russian = turns
        .iter()
        .rev()
        .find(|t| t.role == Role::User)
        .is_some_and(|t| is_cyrillic(&t.text));
    let questions: Vec<String> = turns
        .iter()
        .filter(|t| t.role == Role::User)
        .rev()
        .take(SUMMARY_TURNS)
        .map(|t| quote(&t.text))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let asked = turns.iter().filter(|t| t.role == Role::User).count();
    let last_confidence = turns
        .iter()
        .rev()
        .find(|t| t.role == Role::Assistant)
        .and_then(|t| t.confidence);
    if questions.is_empty() {
        return if russian {
            "Сообщений в диалоге пока нет.".into()
        } else {
            "No messages in the conversation yet.".into()
        };
    }
    let mut summary = if russian {
        format!(
            "Пользователь отправил сообщений: {asked}. Вопросы: {}.",
            questions.join("; ")
        )
    } else {
        format!(
            "The user sent {asked} message(s). Asked: {}.",
            questions.join("; ")
        )
    };
    if let Some(confidence) = last_confidence {
        let percent = (confidence * 100.0).round();
        summary.push_str(&if russian {
            format!(" Последний ответ ассистента дан с уверенностью {percent}%.")
        } else {
            format!(" The assistant's last answer had {percent}% confidence.")
        });
    }
    summary
}

fn quote(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > QUOTE_CHARS {
        let cut: String = flat.chars().take(QUOTE_CHARS).collect();
        format!("«{}…»", cut.trim_end())
    } else {
        format!("«{flat}»")
    }
}

/// Whether a text is mostly Cyrillic (the reply language rule).
pub use rag::text::is_russian as is_cyrillic;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use chrono::Utc;

    fn turn(role: Role, text: &str, confidence: Option<f64>) -> Turn {
        Turn {
            role,
            text: text.into(),
            at: Utc::now(),
            job_id: JobId::generate(),
            confidence,
            operator_id: None,
        }
    }

    #[test]
    fn summary_speaks_the_users_language() {
        let turns = [
            turn(Role::User, "Как вернуть товар?", None),
            turn(Role::Assistant, "…", Some(0.21)),
        ];
        let s = summarize(&turns);
        assert!(s.contains("«Как вернуть товар?»"), "{s}");
        assert!(s.contains("21%"), "{s}");
        let s = summarize(&[turn(Role::User, "How do I get a refund?", None)]);
        assert!(s.starts_with("The user sent 1 message(s)"), "{s}");
    }

    #[test]
    fn long_messages_are_quoted_short() {
        let long = "слово ".repeat(100);
        let s = summarize(&[turn(Role::User, &long, None)]);
        assert!(s.chars().count() < 300, "{s}");
        assert!(s.contains('…'));
    }

    #[test]
    fn empty_history() {
        assert_eq!(summarize(&[]), "No messages in the conversation yet.");
    }
}
