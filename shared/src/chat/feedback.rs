//! Feedback on the bot's answers: a thumbs up or down, with an optional
//! comment, on one answer of one session.
//!
//! An answer is named the way the caller knows it: by the chat job that
//! produced it (`job_id`, returned by `/chat/completions` and shown on
//! every turn of `GET /chat/sessions/{id}`), by the `event_id` of its
//! `chat.response.generated` (all an integration that only receives
//! webhooks has), or by its position in the history as that endpoint shows
//! it (`turn`, 0-based, oldest first; it shifts once old turns are trimmed,
//! so the ids are the stable choice). Each answer has at most one
//! feedback: a second one replaces the first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chat::sessions::{Role, SessionError, SessionStore, Turn};
use crate::chat::stats::{ChatStats, Rating};
use crate::ids::{EventId, JobId, SessionId};
use crate::incoming::optional_text;
use crate::time::serde_rfc3339;
use crate::webhooks::registry::FieldError;

/// Longest comment (characters).
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// `POST /chat/sessions/{id}/feedback`: exactly one of `job_id`,
/// `event_id`, `turn` names the answer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The chat job that produced the answer (`job_…`).
    #[serde(default)]
    pub job_id: Option<String>,
    /// The `event_id` of the answer's `chat.response.generated`.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The answer's index in the session history (0-based, oldest first).
    #[serde(default)]
    pub turn: Option<u32>,
    pub rating: Rating,
    #[serde(default)]
    pub comment: Option<String>,
}

/// How the request names the answer, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AnswerRef {
    Job(JobId),
    Turn(usize),
}

impl FeedbackRequest {
    fn answer_ref(&self) -> Result<AnswerRef, FieldError> {
        let named = [
            self.job_id.is_some(),
            self.event_id.is_some(),
            self.turn.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(FieldError::new(
                "job_id",
                "name the answer with exactly one of job_id, event_id or turn",
            ));
        }
        if let Some(job) = &self.job_id {
            return JobId::parse(job.trim())
                .map(AnswerRef::Job)
                .map_err(|e| FieldError::new("job_id", e.to_string()));
        }
        if let Some(event) = &self.event_id {
            return EventId::parse(event.trim())
                .ok()
                .and_then(|e| e.source_job(RESPONSE_EVENT))
                .map(AnswerRef::Job)
                .ok_or_else(|| {
                    FieldError::new(
                        "event_id",
                        "is not the event_id of a chat.response.generated",
                    )
                });
        }
        let turn = self.turn.unwrap_or_default();
        Ok(AnswerRef::Turn(usize::try_from(turn).unwrap_or(usize::MAX)))
    }
}

/// What the worker derives a `chat.response.generated` event id from its
/// job with (`EventId::derived(job, "response")`).
pub const RESPONSE_EVENT: &str = "response";

/// One feedback as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Feedback {
    pub rating: Rating,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(with = "serde_rfc3339")]
    pub at: DateTime<Utc>,
}

/// A feedback stored.
#[derive(Clone, Debug)]
pub struct Rated {
    pub session_id: SessionId,
    /// The answer it is about.
    pub job_id: JobId,
    pub feedback: Feedback,
    /// The feedback it replaced, if the answer had one.
    pub replaced: Option<Feedback>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{}: {}", .0.field, .0.message)]
    Field(#[from] FieldError),
}

#[derive(Clone)]
pub struct Ratings {
    pub sessions: SessionStore,
    pub stats: ChatStats,
    /// How much history a session keeps: an answer older than that can no
    /// longer be named.
    pub history_turns: usize,
}

impl Ratings {
    /// Stores the feedback on one answer of the session (active or ended,
    /// while its history lasts), replacing an earlier one.
    pub async fn rate(
        &self,
        session_id: &SessionId,
        request: FeedbackRequest,
    ) -> Result<Rated, FeedbackError> {
        let answer = request.answer_ref()?;
        let comment = optional_text("comment", request.comment.clone(), MAX_COMMENT_CHARS)?;
        if self.sessions.get(session_id).await?.is_none() {
            return Err(SessionError::Missing(session_id.clone()).into());
        }
        let turns = self.sessions.turns(session_id, self.history_turns).await?;
        let job_id = find_answer(&turns, &answer)?;
        let feedback = Feedback {
            rating: request.rating,
            comment,
            at: Utc::now(),
        };
        let replaced = self
            .sessions
            .put_feedback(session_id, &job_id, &serde_json::to_string(&feedback)?)
            .await?
            // One we wrote and cannot read back is as good as none.
            .and_then(|old| serde_json::from_str::<Feedback>(&old).ok());
        self.stats
            .record_feedback(feedback.rating, replaced.as_ref().map(|f| f.rating))
            .await;
        Ok(Rated {
            session_id: session_id.clone(),
            job_id,
            feedback,
            replaced,
        })
    }

    /// The feedback on a session's answers, by the answer's job id.
    pub async fn of_session(
        &self,
        session_id: &SessionId,
    ) -> Result<HashMap<JobId, Feedback>, SessionError> {
        Ok(self
            .sessions
            .feedback(session_id)
            .await?
            .into_iter()
            .filter_map(|(job, record)| {
                Some((
                    JobId::parse(&job).ok()?,
                    serde_json::from_str(&record).ok()?,
                ))
            })
            .collect())
    }
}

impl From<serde_json::Error> for FeedbackError {
    fn from(e: serde_json::Error) -> Self {
        FeedbackError::Session(e.into())
    }
}

/// The job id of the answer `answer` names among `turns`; only the bot's
/// answers can be rated (not the user's messages, not operators' replies).
fn find_answer(turns: &[Turn], answer: &AnswerRef) -> Result<JobId, FieldError> {
    let is_answer = |t: &&Turn| t.role == Role::Assistant;
    match answer {
        AnswerRef::Job(job) => turns
            .iter()
            .filter(is_answer)
            .find(|t| &t.job_id == job)
            .map(|t| t.job_id.clone())
            .ok_or_else(|| {
                FieldError::new(
                    "job_id",
                    format!("session has no answer of job '{job}' (or it is too old to rate)"),
                )
            }),
        AnswerRef::Turn(index) => match turns.get(*index) {
            Some(t) if t.role == Role::Assistant => Ok(t.job_id.clone()),
            Some(_) => Err(FieldError::new(
                "turn",
                format!("turn {index} is not an answer of the assistant"),
            )),
            None => Err(FieldError::new(
                "turn",
                format!("the session history has {} turns", turns.len()),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, job: &JobId) -> Turn {
        Turn {
            role,
            text: "…".into(),
            at: Utc::now(),
            job_id: job.clone(),
            confidence: None,
            operator_id: None,
        }
    }

    fn request(value: serde_json::Value) -> FeedbackRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_answer_is_named_exactly_once() {
        let job = JobId::generate();
        let by_job = request(serde_json::json!({"job_id": job, "rating": "up"}));
        assert_eq!(by_job.answer_ref().unwrap(), AnswerRef::Job(job.clone()));
        let event = EventId::derived(&job, RESPONSE_EVENT);
        let by_event = request(serde_json::json!({"event_id": event, "rating": "down"}));
        assert_eq!(by_event.answer_ref().unwrap(), AnswerRef::Job(job.clone()));
        let by_turn = request(serde_json::json!({"turn": 3, "rating": "up"}));
        assert_eq!(by_turn.answer_ref().unwrap(), AnswerRef::Turn(3));

        for (body, field) in [
            (serde_json::json!({"rating": "up"}), "job_id"),
            (
                serde_json::json!({"job_id": job, "turn": 1, "rating": "up"}),
                "job_id",
            ),
            (
                serde_json::json!({"job_id": "nope", "rating": "up"}),
                "job_id",
            ),
            (
                serde_json::json!({"event_id": EventId::derived(&job, "escalated"), "rating": "up"}),
                "event_id",
            ),
        ] {
            assert_eq!(request(body).answer_ref().unwrap_err().field, field);
        }
    }

    #[test]
    fn only_the_assistants_answers_can_be_rated() {
        let (asked, answered, replied) = (JobId::generate(), JobId::generate(), JobId::generate());
        let turns = [
            turn(Role::User, &asked),
            turn(Role::Assistant, &asked),
            turn(Role::User, &answered),
            turn(Role::Assistant, &answered),
            turn(Role::Operator, &replied),
        ];
        assert_eq!(
            find_answer(&turns, &AnswerRef::Job(answered.clone())).unwrap(),
            answered
        );
        assert_eq!(find_answer(&turns, &AnswerRef::Turn(1)).unwrap(), asked);
        for wrong in [
            AnswerRef::Job(replied),
            AnswerRef::Job(JobId::generate()),
            AnswerRef::Turn(0),
            AnswerRef::Turn(4),
            AnswerRef::Turn(5),
        ] {
            assert!(find_answer(&turns, &wrong).is_err(), "{wrong:?}");
        }
    }
}
