//! The end of a conversation: `session.ended` for sessions closed on
//! request or by the idle sweep. The session is already marked ended (by
//! the script that queued this job); this only announces it.

use std::time::Duration;

use queue::Job;
use shared::chat::sessions::SessionStore;
use shared::delivery::publish::Publisher;
use shared::events::catalog::{Event, EventMetadata};
use shared::events::payloads::{ErrorRelated, SessionEnded};
use shared::ids::EventId;
use shared::jobs::EndSession;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use queue::runtime::{DeadContext, Handler, JobContext, Outcome};

use crate::dead::dead_job_event;

/// Sessions ended per sweep step; a larger backlog drains over a few steps.
const SWEEP_BATCH: usize = 200;

pub struct SessionHandler {
    pub sessions: SessionStore,
    pub publisher: Publisher,
}

impl Handler for SessionHandler {
    type Job = EndSession;

    async fn handle(&self, job: EndSession, ctx: &JobContext) -> Outcome {
        match self.announce(&job, ctx).await {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Failed {
                error: format!("{error:#}"),
                plan: ctx.plan_failure(None),
            },
        }
    }

    async fn on_dead(&self, job: Option<&EndSession>, ctx: &DeadContext) -> anyhow::Result<()> {
        let event = dead_job_event(
            EndSession::QUEUE,
            "SESSION_END_FAILED",
            ctx,
            ErrorRelated::Session {
                session_id: job.map(|j| j.session_id.clone()),
            },
            None,
        )?;
        self.publisher.publish(event).await?;
        Ok(())
    }
}

impl SessionHandler {
    async fn announce(&self, job: &EndSession, ctx: &JobContext) -> anyhow::Result<()> {
        let Some(session) = self.sessions.get(&job.session_id).await? else {
            // Expired long ago (a replay of an old dead letter): nothing
            // left to tell anyone.
            warn!(session_id = %job.session_id, "ended session no longer exists");
            return Ok(());
        };
        let data = SessionEnded {
            session_id: session.session_id.clone(),
            user_id: session.user_id.clone(),
            started_at: session.started_at,
            ended_at: session.ended_at,
            messages_count: session.messages_count,
            escalated: session.escalated,
            reason: job.reason,
        };
        self.publisher
            .publish(Event::of(
                EventId::derived(&ctx.job_id, "ended"),
                &data,
                EventMetadata {
                    trace_id: ctx.trace_id.clone(),
                    correlation_id: None,
                },
            )?)
            .await?;
        self.sessions.expire_turns(&session.session_id).await?;
        info!(session_id = %session.session_id, reason = job.reason.as_str(), "session ended");
        Ok(())
    }
}

/// Ends idle sessions every `every` until `stop`. Every worker runs it;
/// the end script makes sure each session is ended by one of them.
pub async fn sweep_idle(sessions: SessionStore, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        loop {
            match sessions.sweep_idle(SWEEP_BATCH).await {
                Ok(n) if n == SWEEP_BATCH => continue,
                Ok(0) => break,
                Ok(n) => {
                    info!(ended = n, "idle sessions ended");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "idle session sweep failed; will try again");
                    break;
                }
            }
        }
    }
}
