//! The RAG step: one chat message in, `chat.response.generated`
//! out, and `chat.escalated` after it when the answer is not good enough
//! or the user asked for a person. In a session a person already has
//! the bot does not answer: the message goes to the operator as
//! `chat.message.forwarded` instead.
//!
//! Everything a redo after a crash would repeat is idempotent: event ids
//! derive from the job id, a turn is recorded once per job.

use std::time::Instant;

use chrono::{DateTime, Utc};
use queue::Job;
use rag::knowledge::Knowledge;
use shared::chat::answer_policy::{self, Handover, Thresholds};
use shared::chat::escalation::{self, EscalateError, Escalator, is_cyrillic};
use shared::chat::gaps::GapLog;
use shared::chat::sessions::{
    Priority, Role, Session, SessionError, SessionStatus, SessionStore, Turn,
};
use shared::chat::stats::{ChatStats, TurnOutcome};
use shared::delivery::publish::Publisher;
use shared::events::catalog::{Event, EventMetadata};
use shared::events::payloads::{ChatResponseGenerated, ErrorRelated, SourceRef};
use shared::ids::EventId;
use shared::jobs::{ChatResult, ProcessMessage};
use tracing::{info, warn};

use queue::runtime::{DeadContext, Handler, JobContext, Outcome};

use crate::dead::dead_job_event;

pub struct ChatHandler {
    pub sessions: SessionStore,
    pub publisher: Publisher,
    pub escalator: Escalator,
    /// Where messages of sessions a person has go.
    pub handover: shared::chat::handover::Handover,
    pub knowledge: Knowledge,
    pub stats: ChatStats,
    pub gaps: GapLog,
    pub thresholds: Thresholds,
}

impl Handler for ChatHandler {
    type Job = ProcessMessage;

    async fn handle(&self, job: ProcessMessage, ctx: &JobContext) -> Outcome {
        match self.answer(&job, ctx).await {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Failed {
                error: format!("{error:#}"),
                plan: ctx.plan_failure(None),
            },
        }
    }

    async fn on_dead(
        &self,
        job: Option<&ProcessMessage>,
        ctx: &DeadContext,
    ) -> Result<(), anyhow::Error> {
        if let Some(job) = job.filter(|j| j.reply_expected)
            && let Some(job_id) = &ctx.job_id
        {
            self.sessions
                .put_result(
                    job_id,
                    &ChatResult::Failed {
                        session_id: job.session_id.clone(),
                        error: ctx.error.clone(),
                    },
                )
                .await?;
        }
        let event = dead_job_event(
            ProcessMessage::QUEUE,
            "CHAT_FAILED",
            ctx,
            ErrorRelated::Chat {
                session_id: job.map(|j| j.session_id.clone()),
                webhook_id: job.and_then(|j| j.webhook_id.clone()),
                webhook_event_id: job.and_then(|j| j.webhook_event_id.clone()),
            },
            job.and_then(|j| j.correlation_id.clone()),
        )?;
        self.publisher.publish(event).await?;
        Ok(())
    }
}

impl ChatHandler {
    async fn answer(&self, job: &ProcessMessage, ctx: &JobContext) -> anyhow::Result<()> {
        let started = Instant::now();
        let question = job_turn(ctx, Role::User, job.message.clone(), job.received_at, None);
        self.sessions
            .record_turn(&job.session_id, &question)
            .await?;
        let metadata = EventMetadata {
            trace_id: ctx.trace_id.clone(),
            correlation_id: job.correlation_id.clone(),
        };

        // Decided per message, when it is handled: a message queued before
        // a hand-back is answered by the bot, one queued before an
        // escalation goes to the operator.
        if let Some(session) = self.sessions.get(&job.session_id).await?
            && session.escalated
            && session.status == SessionStatus::Active
        {
            return self.forward(job, ctx, &session, metadata, started).await;
        }

        let (reply, handover) =
            answer_policy::reply_for(&self.knowledge, &self.thresholds, &job.message).await?;
        let confidence = round2(reply.confidence);
        let processing_time_ms = shared::time::elapsed_ms(started);
        let answer = job_turn(
            ctx,
            Role::Assistant,
            reply.answer.clone(),
            Utc::now(),
            Some(confidence),
        );
        self.sessions.record_turn(&job.session_id, &answer).await?;
        let answered = ChatResponseGenerated {
            session_id: job.session_id.clone(),
            user_id: job.user_id.clone(),
            message: job.message.clone(),
            answer: reply.answer,
            sources: reply.sources.iter().map(SourceRef::from).collect(),
            confidence,
            processing_time_ms,
        };
        self.publisher
            .publish(Event::of(
                EventId::derived(&ctx.job_id, "response"),
                &answered,
                metadata.clone(),
            )?)
            .await?;

        let escalated = self
            .settle(job, ctx, handover, &answered.sources, metadata)
            .await?;
        if job.reply_expected {
            self.sessions
                .put_result(
                    &ctx.job_id,
                    &ChatResult::Done {
                        session_id: job.session_id.clone(),
                        answer: answered.answer,
                        sources: answered.sources,
                        confidence,
                        escalated,
                        processing_time_ms,
                    },
                )
                .await?;
        }
        info!(
            session_id = %job.session_id,
            confidence,
            escalated,
            processing_time_ms,
            "chat message answered"
        );
        Ok(())
    }

    /// Counts the turn's outcome and, when the answer was not good enough
    /// or the user asked for a person, escalates. Returns whether the
    /// session is escalated.
    #[tracing::instrument(name = "chat.escalate", skip_all, fields(handover = ?handover))]
    async fn settle(
        &self,
        job: &ProcessMessage,
        ctx: &JobContext,
        handover: Option<Handover>,
        sources: &[SourceRef],
        metadata: EventMetadata,
    ) -> anyhow::Result<bool> {
        match handover {
            Some(Handover::Offered) => {
                self.stats.record_outcome(TurnOutcome::OfferedPerson).await;
                Ok(false)
            }
            Some(why) => {
                if let Handover::LowConfidence(confidence) = why {
                    self.gaps
                        .record(&job.message, &job.session_id, confidence, &ctx.job_id)
                        .await;
                }
                self.stats.record_outcome(TurnOutcome::HandedOver).await;
                self.hand_over(job, ctx, why, sources, metadata).await
            }
            None => {
                self.stats.record_outcome(TurnOutcome::Answered).await;
                Ok(false)
            }
        }
    }

    /// Escalates the session; a low-confidence turn of a session that is
    /// already with a person does not page anyone again. Returns whether
    /// the session is escalated.
    async fn hand_over(
        &self,
        job: &ProcessMessage,
        ctx: &JobContext,
        why: Handover,
        sources: &[SourceRef],
        metadata: EventMetadata,
    ) -> anyhow::Result<bool> {
        let Some(session) = self.sessions.get(&job.session_id).await? else {
            anyhow::bail!("session {} is gone", job.session_id);
        };
        let (reason, priority) = match why {
            Handover::Asked => (
                "The user asked to talk to a human operator".to_owned(),
                Priority::High,
            ),
            Handover::LowConfidence(_) if session.escalated => return Ok(true),
            Handover::LowConfidence(confidence) => (
                format!(
                    "Answer confidence {:.2} is below the escalation threshold {:.2}",
                    confidence,
                    self.thresholds.hand_over_below()
                ),
                Priority::Medium,
            ),
            Handover::Offered => return Ok(session.escalated),
        };
        let escalated = self
            .escalator
            .escalate(
                &session,
                escalation::Request {
                    reason,
                    priority,
                    last_message: Some(job.message.clone()),
                    sources: sources.to_vec(),
                },
                EventId::derived(&ctx.job_id, "escalated"),
                metadata,
            )
            .await;
        match escalated {
            Ok(_) => Ok(true),
            // Ended while this turn ran: nobody is left to hand it to.
            Err(EscalateError::Session(SessionError::Ended(_))) => {
                warn!(session_id = %job.session_id, "session ended before it could be escalated");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bot stays out of a conversation a person has: the message (in
    /// the history already) goes to the operator, and a waiting
    /// `/chat/completions` is told so instead of getting an answer.
    #[tracing::instrument(name = "chat.forward", skip_all)]
    async fn forward(
        &self,
        job: &ProcessMessage,
        ctx: &JobContext,
        session: &Session,
        metadata: EventMetadata,
        started: Instant,
    ) -> anyhow::Result<()> {
        let operator_id = self
            .handover
            .forward(
                session,
                &job.message,
                EventId::derived(&ctx.job_id, "forwarded"),
                metadata,
            )
            .await?;
        let processing_time_ms = shared::time::elapsed_ms(started);
        if job.reply_expected {
            self.sessions
                .put_result(
                    &ctx.job_id,
                    &ChatResult::Forwarded {
                        session_id: job.session_id.clone(),
                        operator_id: operator_id.clone(),
                        notice: forwarded_notice(&job.message).to_owned(),
                        processing_time_ms,
                    },
                )
                .await?;
        }
        info!(
            session_id = %job.session_id,
            operator_id = operator_id.as_deref().unwrap_or(""),
            processing_time_ms,
            "chat message forwarded to the operator"
        );
        Ok(())
    }
}

/// A turn this job writes: the user's question or the bot's answer.
fn job_turn(
    ctx: &JobContext,
    role: Role,
    text: String,
    at: DateTime<Utc>,
    confidence: Option<f64>,
) -> Turn {
    Turn {
        role,
        text,
        at,
        job_id: ctx.job_id.clone(),
        confidence,
        operator_id: None,
    }
}

/// What `/chat/completions` says instead of an answer while a person has
/// the conversation, in the user's language (a client may show it as is).
fn forwarded_notice(message: &str) -> &'static str {
    if is_cyrillic(message) {
        "Диалог ведёт оператор поддержки: сообщение передано ему, ответ придёт от него."
    } else {
        "A support operator has this conversation: the message was passed to them, and the reply will come from them."
    }
}

fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x.clamp(0.0, 1.0) * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_rounded_and_bounded() {
        assert_eq!(round2(0.9449), 0.94);
        assert_eq!(round2(1.7), 1.0);
        assert_eq!(round2(f64::NAN), 0.0);
    }
}
