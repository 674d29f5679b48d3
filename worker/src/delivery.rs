//! Outbound delivery: sign one event for one webhook, POST it, record the
//! attempt, and tell the runtime whether and when to try again. For a
//! webhook ordered by session, a delivery waits for its turn in its chat
//! session's line first (see `shared::delivery::ordering`).

use std::time::{Duration, SystemTime};

use chrono::Utc;
use queue::Job;
use queue::RetryPlan;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use shared::delivery::history::{
    Attempt, DeliveryRecord, DeliveryStatus, DeliveryStore, RESPONSE_BODY_KEPT,
};
use shared::delivery::ordering::{self, HeadState, Sequences, Turn};
use shared::delivery::publish::Publisher;
use shared::events::catalog::{Event, EventType, PayloadError};
use shared::events::payloads::ErrorRelated;
use shared::ids::{EventId, SessionId, TraceId, WebhookId};
use shared::jobs::DeliverEvent;
use shared::net::egress::{EgressClient, EgressError, EgressResponse};
use shared::webhooks::auto_disable::{self, DisablePolicy, FailureStreak};
use shared::webhooks::rate_limit::{Admission, RateLimiter};
use shared::webhooks::registry::{Webhook, WebhookCache, WebhookStore};
use shared::webhooks::signing;
use tracing::{info, warn};

use crate::lanes::{Lanes, defer_delay};
use queue::runtime::{DeadContext, Handler, JobContext, Outcome};

use crate::dead::dead_job_event;

/// What a delivery and its webhook are marked with when the receiver
/// answers `410 Gone`: it says the endpoint is gone for good, so retrying
/// for a day would only load it (and us) for nothing.
pub const GONE_REASON: &str = "receiver answered 410 Gone; webhook disabled";

pub struct DeliveryHandler {
    pub webhooks: WebhookStore,
    pub deliveries: DeliveryStore,
    pub publisher: Publisher,
    pub egress: EgressClient,
    /// Per-webhook concurrency caps (`delivery.per_webhook_concurrency`).
    pub lanes: Lanes,
    /// Webhooks read recently (`delivery.webhook_cache_ttl`).
    pub webhook_cache: WebhookCache,
    /// Per-webhook rate limits and `Retry-After` pauses, shared by every
    /// worker.
    pub rate: RateLimiter,
    /// When a failure streak disables a webhook.
    pub disable: DisablePolicy,
    /// The longest pause a receiver's `Retry-After` imposes.
    pub max_retry_after: Duration,
    /// The chat session lines of webhooks ordered by session.
    pub sequences: Sequences,
}

/// Heads found over that one check drops before it defers.
const MAX_HEADS_DROPPED: usize = 16;

/// A delivery's place in its chat session's line, once it is its turn.
struct Place {
    session: SessionId,
    sequence: u64,
}

/// The headers of one attempt, as README documents them, plus the
/// Standard Webhooks trio so receivers can use its libraries, over the
/// webhook's own headers (which registration keeps off these names; set
/// last, ours would win anyway).
fn headers(
    webhook: &Webhook,
    event_id: &EventId,
    attempt: u32,
    sequence: Option<u64>,
    body: &[u8],
) -> HeaderMap {
    let now = Utc::now();
    let timestamp = now.timestamp();
    // Every valid secret signs, so receivers on either side of a rotation
    // verify during its overlap.
    let signature = signing::sign_outbound_all(
        &webhook.valid_secrets(now),
        event_id.as_str(),
        timestamp,
        body,
    );
    let mut headers = HeaderMap::new();
    for (name, value) in &webhook.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("x-webhook-signature", signature.legacy);
    if let Some(next) = signature.legacy_next {
        put("x-webhook-signature-next", next);
    }
    put("x-webhook-timestamp", timestamp.to_string());
    put("x-webhook-id", webhook.webhook_id.to_string());
    put("x-delivery-attempt", attempt.to_string());
    if let Some(sequence) = sequence {
        put("x-webhook-sequence", sequence.to_string());
    }
    put("x-event-id", event_id.to_string());
    put("webhook-id", event_id.to_string());
    put("webhook-timestamp", timestamp.to_string());
    put("webhook-signature", signature.standard);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// The error text recorded for a non-2xx answer.
fn status_error(response: &EgressResponse) -> String {
    let reason = reqwest::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {} {reason}", response.status)
        .trim_end()
        .to_owned()
}

impl DeliveryHandler {
    async fn load_record(&self, job: &DeliverEvent, attempt: u32) -> DeliveryRecord {
        match self.deliveries.get(&job.delivery_id).await {
            Ok(Some(record)) => record,
            _ => rebuilt_record(job, attempt),
        }
    }

    async fn cancel(&self, job: &DeliverEvent, ctx: &JobContext, why: &str) -> Outcome {
        let mut record = self.load_record(job, ctx.overall_attempt()).await;
        record.set_status(DeliveryStatus::Cancelled, Some(why.to_owned()));
        // Refused when the record shows the delivery succeeded: it stays so.
        match self.deliveries.transition(&record).await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed {
                error: format!("recording cancellation: {e}"),
                plan: ctx.plan_failure(None),
            },
        }
    }

    /// Records an attempt and what comes next, in the delivery record and
    /// the webhook's stats; returns the delivery's new status.
    async fn save_outcome(
        &self,
        record: &mut DeliveryRecord,
        attempt: Attempt,
        plan: Option<RetryPlan>,
    ) -> (DeliveryStatus, Option<FailureStreak>) {
        let success = attempt.success;
        let (status, next_retry) = match plan {
            None => (DeliveryStatus::Success, None),
            Some(RetryPlan::After(delay)) => (
                DeliveryStatus::Failed,
                Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()),
            ),
            Some(RetryPlan::Exhausted) => (DeliveryStatus::Dead, None),
        };
        record.record(attempt, status, next_retry);
        match self.deliveries.save_attempt(record, success).await {
            Ok(saved) => {
                if !saved.written {
                    // Another run of this delivery got further (its record
                    // shows success, or a later attempt); that one stands.
                    info!(delivery_id = %record.delivery_id, "record had moved on; attempt counted, record kept")
                }
                (status, saved.streak)
            }
            // The attempt happened; losing its record is worse than a
            // duplicate, but failing here would resend a delivered event.
            Err(e) => {
                warn!(error = %e, "could not record a delivery attempt");
                (status, None)
            }
        }
    }

    /// Turns the webhook off (after a `410 Gone`, or a failure streak past
    /// `delivery.disable_*`), lets this process's next jobs for it see that
    /// at once rather than after the cache TTL, and announces it to the
    /// operational subscribers — once: of several workers meeting the
    /// failure, only the one whose call turned it off announces.
    async fn disable(
        &self,
        webhook: &Webhook,
        reason: &str,
        streak: Option<&FailureStreak>,
        trace_id: &TraceId,
    ) {
        match self.webhooks.deactivate(&webhook.webhook_id, reason).await {
            Ok(Some(off)) => {
                self.webhook_cache.put(&off.webhook);
                if !off.now {
                    return;
                }
                warn!(webhook_id = %webhook.webhook_id, url = %webhook.url, "{reason}");
                let event = auto_disable::disabled_event(&off.webhook, reason, streak, trace_id);
                auto_disable::announce_logged(&self.publisher, event, &webhook.webhook_id).await;
            }
            Ok(None) => {}
            // The delivery goes on by its plan; the next failure tries
            // again.
            Err(e) => {
                warn!(webhook_id = %webhook.webhook_id, error = %e, "could not disable a webhook")
            }
        }
    }

    /// Holds the webhook's next deliveries (every worker's) back for the
    /// receiver's `Retry-After`, capped by `delivery.max_retry_after`.
    async fn honour_retry_after(&self, webhook: &WebhookId, retry_after: Duration) {
        let pause = retry_after.min(self.max_retry_after);
        if let Err(e) = self.rate.pause(webhook, pause).await {
            warn!(webhook_id = %webhook, error = %e, "could not pause a webhook for its Retry-After");
        }
    }
}

/// Why a delivery stops before its request: the job's outcome.
type Stop = Outcome;

impl DeliveryHandler {
    /// The webhook and the delivery record, read at once (the webhook from
    /// a short cache when it can be), or why there is nothing to send now.
    #[tracing::instrument(name = "delivery.load", skip_all)]
    async fn load(
        &self,
        job: &DeliverEvent,
        ctx: &JobContext,
    ) -> Result<(Webhook, DeliveryRecord), Stop> {
        let cached = self.webhook_cache.get(&job.webhook_id);
        let from_cache = cached.is_some();
        let (webhook, record) = match cached {
            Some(webhook) => (
                Ok(Some(webhook)),
                self.deliveries.get(&job.delivery_id).await,
            ),
            None => {
                tokio::join!(
                    self.webhooks.get(&job.webhook_id),
                    self.deliveries.get(&job.delivery_id)
                )
            }
        };
        if let Ok(Some(done)) = &record
            && matches!(
                done.status,
                DeliveryStatus::Success | DeliveryStatus::Cancelled
            )
        {
            // A second job for a delivery that is over (a duplicate from
            // before publishing was idempotent, or a redo after a worker
            // died between recording and acknowledging): nothing to send.
            info!(delivery_id = %job.delivery_id, status = ?done.status, "delivery already over; job dropped");
            return Err(Outcome::Done);
        }
        let webhook = match webhook {
            // Inactive by a cached copy: asked again before parking the
            // delivery, since a webhook just re-enabled (with its dead
            // letters replayed) must not send them back to the dead-letter
            // set for the cache's TTL.
            Ok(Some(webhook)) if !webhook.active && from_cache => {
                match self.webhooks.get(&job.webhook_id).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => return Err(self.cancel(job, ctx, "webhook was deleted").await),
                    Err(_) => webhook,
                }
            }
            Ok(Some(webhook)) => webhook,
            Ok(None) => return Err(self.cancel(job, ctx, "webhook was deleted").await),
            Err(e) => {
                return Err(Outcome::Failed {
                    error: format!("loading webhook: {e}"),
                    plan: ctx.plan_failure(None),
                });
            }
        };
        self.webhook_cache.put(&webhook);
        if !webhook.active {
            // Parked in the dead-letter set rather than dropped, so the
            // events can be replayed once the webhook is active again. The
            // queue counts this run as an attempt; a replay numbers on from
            // the attempts the record shows were sent (`Publisher::replay`).
            return Err(Outcome::Failed {
                error: "webhook is inactive".into(),
                plan: RetryPlan::Exhausted,
            });
        }
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => rebuilt_record(job, ctx.overall_attempt()),
            // Redis is out of reach: no request now, try again later.
            Err(e) => {
                return Err(Outcome::Failed {
                    error: format!("loading the delivery record: {e}"),
                    plan: ctx.plan_failure(None),
                });
            }
        };
        Ok((webhook, record))
    }

    /// Waits for the webhook's rate limit and any `Retry-After` pause, or
    /// hands the job back when the wait is long: a delivery that must wait
    /// is not an attempt (see `rate_limit`).
    #[tracing::instrument(name = "delivery.admit", skip_all)]
    async fn admit(&self, webhook: &Webhook) -> Result<(), Stop> {
        match self
            .rate
            .admit(&webhook.webhook_id, webhook.rate_limit_per_second)
            .await
        {
            Ok(Admission::Go(wait)) if wait.is_zero() => Ok(()),
            Ok(Admission::Go(wait)) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Ok(Admission::Defer(wait)) => Err(Outcome::Later(wait)),
            // Redis is out of reach: the attempt could not be recorded
            // either; not counted, try again in a moment.
            Err(e) => {
                warn!(webhook_id = %webhook.webhook_id, error = %e, "rate limiter unavailable; delivery deferred");
                Err(Outcome::Later(defer_delay()))
            }
        }
    }

    /// Whether it is this delivery's turn in its chat session's line (for a
    /// webhook ordered by session): its place when it is, `None` when it
    /// is in no line, or the deferral until it may be. An earlier delivery
    /// found over (or gone) is taken out of the line on the way.
    #[tracing::instrument(name = "delivery.turn", skip_all)]
    async fn take_turn(
        &self,
        webhook: &Webhook,
        job: &DeliverEvent,
    ) -> Result<Option<Place>, Stop> {
        let Some(session) = webhook.ordering.line_of(&job.event) else {
            return Ok(None);
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            warn!(webhook_id = %webhook.webhook_id, error = %e, "ordering state unavailable; delivery deferred");
            Outcome::Later(defer_delay())
        };
        // Each round drops one head that is over; a line of them is
        // cleared over a few checks rather than in one long one.
        for _ in 0..MAX_HEADS_DROPPED {
            let turn = self
                .sequences
                .check(&webhook.webhook_id, &session, &job.delivery_id)
                .await
                .map_err(|e| unavailable(&e))?;
            let (ahead, head) = match turn {
                Turn::Free => return Ok(None),
                Turn::Head { sequence } => return Ok(Some(Place { session, sequence })),
                Turn::Wait { ahead, head } => (ahead, head),
            };
            let head_record = self
                .deliveries
                .get(&head)
                .await
                .map_err(|e| unavailable(&e))?;
            match ordering::head_state(head_record.as_ref(), Utc::now()) {
                // A worker that settled it may have died before releasing.
                HeadState::Over => self
                    .sequences
                    .release(&webhook.webhook_id, &session, &head)
                    .await
                    .map_err(|e| unavailable(&e))?,
                HeadState::Pending { retry_in } => {
                    if let Err(e) = self.sequences.count_wait().await {
                        warn!(error = %e, "could not count an ordering wait");
                    }
                    return Err(Outcome::Later(ordering::wait_for(ahead, retry_in)));
                }
            }
        }
        Err(Outcome::Later(ordering::WAIT_STEP))
    }

    /// Lets the next delivery of the line go once this one is over.
    async fn leave_line(&self, job: &DeliverEvent, place: &Place) {
        if let Err(e) = self
            .sequences
            .release(&job.webhook_id, &place.session, &job.delivery_id)
            .await
        {
            // The next one's check finds this record over and releases it.
            warn!(delivery_id = %job.delivery_id, error = %e, "could not leave the ordering line");
        }
    }

    /// Sends one attempt, marking the record in progress meanwhile; the
    /// response (or why there is none) and how long it took.
    #[tracing::instrument(name = "delivery.send", skip_all, fields(url = %webhook.url))]
    async fn send(
        &self,
        webhook: &Webhook,
        job: &DeliverEvent,
        ctx: &JobContext,
        record: &DeliveryRecord,
        body: Vec<u8>,
    ) -> Result<(Result<EgressResponse, EgressError>, u64), Stop> {
        // At most `per_webhook_concurrency` requests to one webhook are out
        // from this process at once; over that the job goes back for a
        // moment, so a hanging endpoint cannot take every slot (see
        // `lanes`). The permit covers the request only, not the Redis work
        // around it, so a fast endpoint is not slowed by the cap.
        let Some(lane) = self.lanes.enter(&job.webhook_id).await else {
            return Err(Outcome::Later(defer_delay()));
        };
        let mut headers = headers(
            webhook,
            &job.event.event_id,
            record.attempt,
            record.sequence,
            &body,
        );
        // The receiver can join its own trace to ours (W3C Trace Context).
        if let Ok(value) = HeaderValue::from_str(&shared::telemetry::traceparent(&ctx.trace_id)) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
        // "in progress" is written while the request is out rather than
        // before it: one Redis round trip less per delivery. The attempt's
        // own record is written after both.
        let started = std::time::Instant::now();
        let (saved, result) = tokio::join!(
            self.deliveries.transition(record),
            self.egress.post(&webhook.url, headers, body)
        );
        let elapsed_ms = shared::time::elapsed_ms(started);
        drop(lane);
        match saved {
            Ok(true) => {}
            Ok(false) => {
                info!(delivery_id = %job.delivery_id, "record had moved on; not marked in progress")
            }
            Err(e) => warn!(error = %e, "could not mark a delivery in progress"),
        }
        Ok((result, elapsed_ms))
    }

    /// What an answer means for the webhook beyond this delivery: a
    /// `Retry-After` holds its next deliveries back; `410 Gone` or a long
    /// enough failure streak turns it off.
    #[tracing::instrument(name = "delivery.after_answer", skip_all)]
    async fn after_answer(
        &self,
        webhook: &Webhook,
        result: &Result<EgressResponse, EgressError>,
        streak: Option<FailureStreak>,
        trace_id: &TraceId,
    ) {
        if let Ok(response) = result
            && matches!(response.status, 429 | 503)
            && let Some(retry_after) = response.retry_after(SystemTime::now())
        {
            self.honour_retry_after(&webhook.webhook_id, retry_after)
                .await;
        }
        if matches!(result, Ok(response) if response.status == 410) {
            self.disable(webhook, GONE_REASON, streak.as_ref(), trace_id)
                .await;
        } else if let Some(streak) = streak
            && self.disable.should_disable(&streak, Utc::now())
        {
            let reason = self.disable.reason(&streak);
            self.disable(webhook, &reason, Some(&streak), trace_id)
                .await;
        }
    }

    /// One delivery attempt, stage by stage; a stage that stops early
    /// answers the job's outcome.
    async fn deliver(&self, job: &DeliverEvent, ctx: &JobContext) -> Result<Outcome, Stop> {
        let (webhook, mut record) = self.load(job, ctx).await?;
        let attempt_number = ctx.overall_attempt();
        let body = job
            .event
            .body(&webhook.webhook_id, attempt_number)
            .map_err(|e| Outcome::Failed {
                error: format!("encoding event: {e}"),
                plan: RetryPlan::Exhausted,
            })?;
        let place = self.take_turn(&webhook, job).await?;
        if let Some(place) = &place {
            record.sequence = Some(place.sequence);
        }
        record.attempt = attempt_number;
        record.set_status(DeliveryStatus::InProgress, None);
        self.admit(&webhook).await?;
        let (result, elapsed_ms) = self.send(&webhook, job, ctx, &record, body).await?;

        let (mut attempt, plan) = judge(&result, attempt_number, elapsed_ms, ctx);
        if attempt.http_status == Some(410) {
            // Said in the record at once, not only later by `on_dead`.
            attempt.error = Some(GONE_REASON.to_owned());
        }
        let error = attempt.error.clone();
        let (status, streak) = self.save_outcome(&mut record, attempt, plan).await;
        if let Some(place) = &place
            && status.is_final()
        {
            self.leave_line(job, place).await;
        }
        self.after_answer(&webhook, &result, streak, &job.event.metadata.trace_id)
            .await;
        info!(
            delivery_id = %job.delivery_id,
            webhook_id = %job.webhook_id,
            event_id = %job.event.event_id,
            attempt = attempt_number,
            status = ?status,
            response_time_ms = elapsed_ms,
            "delivery attempt"
        );
        Ok(match plan {
            None => Outcome::Done,
            Some(plan) => Outcome::Failed {
                error: error.unwrap_or_else(|| "delivery failed".into()),
                plan,
            },
        })
    }
}

impl Handler for DeliveryHandler {
    type Job = DeliverEvent;

    async fn handle(&self, job: DeliverEvent, ctx: &JobContext) -> Outcome {
        self.deliver(&job, ctx).await.unwrap_or_else(|stop| stop)
    }

    async fn on_dead(
        &self,
        job: Option<&DeliverEvent>,
        ctx: &DeadContext,
    ) -> Result<(), anyhow::Error> {
        if let Some(job) = job {
            let mut record = self.load_record(job, ctx.attempts).await;
            record.set_status(DeliveryStatus::Dead, Some(ctx.error.clone()));
            self.deliveries.transition(&record).await?;
            // Skipped: the next of its session goes (see `shared::delivery::ordering`;
            // a delivery in no line is no member, and removing it is a no-op).
            if let Some(session) = ordering::session_of(&job.event) {
                self.sequences
                    .release(&job.webhook_id, &session, &job.delivery_id)
                    .await?;
            }
            if job.event.event_type == EventType::ErrorOccurred {
                // Never announce the failure of an announcement: that could
                // loop for as long as a receiver is down.
                return Ok(());
            }
        }
        let event = error_event(job, ctx)?;
        self.publisher.publish(event).await?;
        Ok(())
    }
}

/// What an answer (or the failure to get one) means: the attempt as
/// recorded, and what happens next (`None`: delivered).
fn judge(
    result: &Result<EgressResponse, EgressError>,
    number: u32,
    elapsed_ms: u64,
    ctx: &JobContext,
) -> (Attempt, Option<RetryPlan>) {
    let mut attempt = Attempt {
        attempt: number,
        timestamp: Utc::now(),
        success: false,
        http_status: None,
        response_time_ms: elapsed_ms,
        response_body: None,
        error: None,
    };
    let plan = match result {
        Ok(response) => {
            attempt.http_status = Some(response.status);
            attempt.response_body = Some(kept_body(response));
            if response.is_success() {
                attempt.success = true;
                None
            } else {
                attempt.error = Some(status_error(response));
                Some(match response.status {
                    // Gone for good: no retries (see `GONE_REASON`).
                    410 => RetryPlan::Exhausted,
                    429 | 503 => ctx.plan_failure(response.retry_after(SystemTime::now())),
                    _ => ctx.plan_failure(None),
                })
            }
        }
        Err(e) => {
            attempt.error = Some(e.to_string());
            Some(ctx.plan_failure(None))
        }
    };
    (attempt, plan)
}

/// A record expired or never written, rebuilt from the job, which carries
/// everything the record needs.
fn rebuilt_record(job: &DeliverEvent, attempt: u32) -> DeliveryRecord {
    DeliveryRecord::queued(
        job.delivery_id.clone(),
        job.webhook_id.clone(),
        job.event.clone(),
        attempt,
    )
}

fn kept_body(response: &EgressResponse) -> String {
    let end = response.body.len().min(RESPONSE_BODY_KEPT);
    String::from_utf8_lossy(&response.body[..end]).into_owned()
}

/// `error.occurred` for a dead-lettered delivery.
pub fn error_event(job: Option<&DeliverEvent>, ctx: &DeadContext) -> Result<Event, PayloadError> {
    dead_job_event(
        DeliverEvent::QUEUE,
        "DELIVERY_FAILED",
        ctx,
        ErrorRelated::Delivery {
            delivery_id: job.map(|j| j.delivery_id.clone()),
            webhook_id: job.map(|j| j.webhook_id.clone()),
            event_id: job.map(|j| j.event.event_id.clone()),
            event_type: job.map(|j| j.event.event_type),
        },
        job.and_then(|j| j.event.metadata.correlation_id.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::webhooks::registry::SYSTEM_HEADERS;

    #[test]
    fn every_header_the_worker_sets_is_one_a_webhook_may_not_give() {
        let webhook: Webhook = serde_json::from_value(serde_json::json!({
            "webhook_id": "webhook_a",
            "name": "a",
            "url": "https://a.example/hook",
            "events": ["*"],
            "secret": "a_long_enough_secret_123",
            "active": true,
            "headers": {"x-tenant": "acme"},
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        }))
        .expect("a webhook record");
        let set = headers(&webhook, &EventId::generate(), 1, Some(7), b"{}");
        for name in set.keys() {
            assert!(
                name == "x-tenant" || SYSTEM_HEADERS.contains(&name.as_str()),
                "{name} is set on deliveries but not reserved in SYSTEM_HEADERS"
            );
        }
        assert_eq!(set.len(), 11, "{set:?}");
        assert_eq!(set["x-webhook-sequence"], "7");
        let unordered = headers(&webhook, &EventId::generate(), 1, None, b"{}");
        assert!(!unordered.contains_key("x-webhook-sequence"));
    }
}
