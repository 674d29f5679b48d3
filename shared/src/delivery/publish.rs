//! Publishing an event: fan it out into one `DeliverEvent` job (and one
//! history record) per webhook that should get it.
//!
//! Records are written before their jobs so a job never runs without a
//! record to update; a crash between the two leaves a record "queued" with
//! no job, which the publishing job's redo (its ids are deterministic)
//! repairs.
//!
//! Publishing the same event again (that redo, or any repeat) is
//! idempotent per delivery id: a record is only ever created, never
//! overwritten, and a job is queued for a delivery only while its record is
//! still `queued`, at most once within [`REPUBLISH_WINDOW`] (the queue's
//! once-key, set in the same script as the `XADD`).
//!
//! A delivery to a webhook ordered by session joins its chat session's
//! line (`ordering`) before its job is queued, so no job runs before its
//! place is known; joining again (a redo) keeps the place.

use std::time::Duration;

use chrono::Utc;

use crate::delivery::history::{Created, DeliveryRecord, DeliveryStatus, DeliveryStore};
use crate::delivery::ordering::Sequences;
use crate::events::catalog::{Event, PayloadError};
use crate::ids::{DeliveryId, SessionId, WebhookId};
use crate::jobs::DeliverEvent;
use crate::store::StoreError;
use crate::webhooks::registry::{Webhook, WebhookStore};
use queue::{DeadLetter, Envelope, Job, QueueClient, QueueError};

/// How long a delivery's job is remembered as queued. Repeats of a publish
/// come from a publishing job redone after a crash or a failed attempt,
/// within its own retry schedule (hours at most); later, a record past
/// `queued` still keeps its delivery from being queued again.
pub const REPUBLISH_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Manual retry numbers tried before giving up, should records with the
/// next ids exist already (their counter expired before them).
const RETRY_ID_TRIES: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("no free manual retry id for {0}: the next ones exist already")]
    RetryIdsTaken(DeliveryId),
}

impl PublishError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            PublishError::Store(e) => e.is_unavailable(),
            PublishError::Queue(e) => e.is_unavailable(),
            PublishError::RetryIdsTaken(_) | PublishError::Payload(_) => false,
        }
    }
}

/// A delivery about to be queued: where a retry or replay starts counting.
pub struct Planned {
    pub record: DeliveryRecord,
    pub prior_attempts: u32,
    /// The chat session whose line it joins (webhooks ordered by session).
    pub line: Option<SessionId>,
}

#[derive(Clone)]
pub struct Publisher {
    pub webhooks: WebhookStore,
    pub deliveries: DeliveryStore,
    pub queue: QueueClient,
    pub sequences: Sequences,
}

impl Publisher {
    /// Sends `event` to every active webhook subscribed to its type whose
    /// filters its payload passes.
    pub async fn publish(&self, event: Event) -> Result<Vec<DeliveryId>, PublishError> {
        self.publish_to(event, |w, event| w.active && w.wants(event))
            .await
    }

    /// Sends `event` to every readable webhook that `to` picks: one
    /// queued delivery each, all enqueued together.
    pub async fn publish_to(
        &self,
        event: Event,
        to: impl Fn(&Webhook, &Event) -> bool,
    ) -> Result<Vec<DeliveryId>, PublishError> {
        let planned = self
            .webhooks
            .all_readable()
            .await?
            .into_iter()
            .filter(|w| to(w, &event))
            .map(|w| Planned {
                record: DeliveryRecord::queued(
                    DeliveryId::for_event(&event.event_id, &w.webhook_id),
                    w.webhook_id.clone(),
                    event.clone(),
                    1,
                ),
                prior_attempts: 0,
                line: w.ordering.line_of(&event),
            })
            .collect();
        self.enqueue(planned).await
    }

    /// Sends `event` to one webhook, whatever it subscribes to.
    pub async fn send_to(
        &self,
        webhook: &WebhookId,
        event: Event,
    ) -> Result<DeliveryId, PublishError> {
        let record = DeliveryRecord::queued(
            DeliveryId::for_event(&event.event_id, webhook),
            webhook.clone(),
            event,
            1,
        );
        let id = record.delivery_id.clone();
        // One webhook's test or announcement: never part of a session.
        self.enqueue(vec![Planned {
            record,
            prior_attempts: 0,
            line: None,
        }])
        .await?;
        Ok(id)
    }

    /// Writes the records, then queues one job per record it created, or
    /// found still `queued` (a publish cut short between the two).
    pub async fn enqueue(&self, planned: Vec<Planned>) -> Result<Vec<DeliveryId>, PublishError> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<DeliveryRecord> = planned.iter().map(|p| p.record.clone()).collect();
        let created = self.deliveries.create(&records).await?;
        let ids = records.into_iter().map(|r| r.delivery_id).collect();
        let pushes = planned
            .into_iter()
            .zip(created)
            .filter(|(_, created)| match created {
                Created::New => true,
                // Unreadable: the worker rebuilds it from the job.
                Created::Existing(status) => status.is_none_or(|s| s == DeliveryStatus::Queued),
            })
            .map(|(p, _)| self.push_once(p));
        futures::future::try_join_all(pushes).await?;
        Ok(ids)
    }

    /// Queues the job of one delivery (in its line first, if it has one)
    /// unless it was queued within [`REPUBLISH_WINDOW`].
    async fn push_once(&self, planned: Planned) -> Result<(), PublishError> {
        let Planned {
            record,
            prior_attempts,
            line,
        } = planned;
        if let Some(session) = &line {
            self.sequences
                .append(&record.webhook_id, session, &record.delivery_id)
                .await?;
        }
        let once_key = format!("dlv:{}", record.delivery_id);
        let trace_id = record.event.metadata.trace_id.clone();
        let mut envelope = Envelope::new(
            DeliverEvent::QUEUE,
            DeliverEvent {
                delivery_id: record.delivery_id,
                webhook_id: record.webhook_id,
                event: record.event,
            },
            trace_id,
        );
        envelope.prior_attempts = prior_attempts;
        let id = envelope.payload.delivery_id.to_string();
        self.queue
            .push_once(&envelope, &once_key, REPUBLISH_WINDOW, &id)
            .await?;
        Ok(())
    }

    /// A manual retry: a new delivery `<orig>_retry_<n>` of the
    /// same event, its attempt numbering continuing from the delivery
    /// retried. A retry of a retry is numbered on the first delivery
    /// (`dlv_X_retry_1` → `dlv_X_retry_2`), and an existing record is never
    /// taken over: a number whose id exists is passed over.
    pub async fn retry_delivery(
        &self,
        original: &DeliveryRecord,
    ) -> Result<DeliveryRecord, PublishError> {
        let root = original.delivery_id.root();
        let prior_attempts = last_attempt_made(original);
        for _ in 0..RETRY_ID_TRIES {
            let n = self.deliveries.next_retry_number(&root).await?;
            let mut record = DeliveryRecord::queued(
                DeliveryId::retry_of(&root, n),
                original.webhook_id.clone(),
                original.event.clone(),
                prior_attempts + 1,
            );
            record.original_delivery_id = Some(root.clone());
            // Sent out of its line, but still numbered as its event was.
            record.sequence = original.sequence;
            record.timestamp = Utc::now();
            let created = self
                .deliveries
                .create(std::slice::from_ref(&record))
                .await?;
            if created.first() != Some(&Created::New) {
                continue;
            }
            // Out of its line by the administrator's decision: it waits
            // for nothing (see `ordering`).
            self.push_once(Planned {
                record: record.clone(),
                prior_attempts,
                line: None,
            })
            .await?;
            return Ok(record);
        }
        Err(PublishError::RetryIdsTaken(root))
    }
}

impl Publisher {
    /// Replays a dead letter (same event id, attempt numbering continuing
    /// from the last attempt its delivery record shows was made) and shows
    /// its delivery as queued again. False when another caller replayed or
    /// discarded it first.
    pub async fn replay(&self, dead: &DeadLetter) -> Result<bool, PublishError> {
        let delivery = dead
            .labels
            .get(crate::jobs::label::DELIVERY_ID)
            .and_then(|id| DeliveryId::parse(id).ok());
        let record = match &delivery {
            Some(id) => match self.deliveries.get(id).await {
                Ok(record) => record,
                // Unreadable: the worker rebuilds it from the job.
                Err(StoreError::Corrupt(_)) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let dead = match &record {
            Some(record) => counting_only_attempts_made(dead, last_attempt_made(record)),
            None => dead.clone(),
        };
        if !self.queue.dead_letter_replay(&dead).await? {
            return Ok(false);
        }
        if let Some(mut record) = record {
            // Written after the job is queued, so a fast worker may have
            // moved the record on already: then this write is refused.
            record.set_status(DeliveryStatus::Queued, None);
            self.deliveries.transition(&record).await?;
        }
        Ok(true)
    }

    /// Cancels a deleted webhook's pending deliveries (the worker also
    /// cancels any it meets) and drops its history index. Returns how many
    /// were cancelled (one finishing meanwhile keeps its outcome).
    pub async fn cancel_pending(&self, webhook: &WebhookId) -> Result<usize, PublishError> {
        let pending = self.deliveries.pending_for(webhook).await?;
        let mut cancelled = 0;
        for mut record in pending {
            record.set_status(
                DeliveryStatus::Cancelled,
                Some("webhook was deleted".into()),
            );
            if self.deliveries.transition(&record).await? {
                cancelled += 1;
            }
        }
        self.deliveries.forget_webhook(webhook).await?;
        Ok(cancelled)
    }
}

/// `dead` with its job's attempt count lowered to `made`, when the job
/// counted more: a run that stopped without sending (the webhook was
/// inactive, Redis was out of reach) counts as an attempt in the queue but
/// must not make the receiver see a gap in `X-Delivery-Attempt`.
fn counting_only_attempts_made(dead: &DeadLetter, made: u32) -> DeadLetter {
    let mut dead = dead.clone();
    let count = |job: &serde_json::Value, field: &str| {
        job.get(field)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let prior = count(&dead.job, "prior_attempts");
    let attempt = count(&dead.job, "attempt");
    let made = u64::from(made);
    if let Some(job) = dead.job.as_object_mut()
        && made < prior.saturating_add(attempt)
    {
        job.insert("prior_attempts".into(), prior.min(made).into());
        job.insert("attempt".into(), made.saturating_sub(prior).into());
    }
    dead
}

/// The number of the last attempt actually made for a record (0 if none).
fn last_attempt_made(record: &DeliveryRecord) -> u32 {
    record
        .attempts
        .last()
        .map_or(record.attempt.saturating_sub(1), |a| a.attempt)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::DeadLetterId;

    fn dead(job: serde_json::Value) -> DeadLetter {
        DeadLetter {
            dead_letter_id: DeadLetterId::generate(),
            job_type: DeliverEvent::QUEUE.into(),
            job_id: None,
            labels: Default::default(),
            attempts: 0,
            prior_attempts: 0,
            last_error: String::new(),
            failed_at: Utc::now(),
            history: Vec::new(),
            job,
        }
    }

    fn counts(dead: &DeadLetter) -> (serde_json::Value, serde_json::Value) {
        (
            dead.job["prior_attempts"].clone(),
            dead.job["attempt"].clone(),
        )
    }

    #[test]
    fn a_replay_counts_only_the_attempts_the_record_shows() {
        // One attempt sent, then a run skipped for an inactive webhook.
        let skipped = dead(json!({"prior_attempts": 0, "attempt": 2}));
        assert_eq!(
            counts(&counting_only_attempts_made(&skipped, 1)),
            (json!(0), json!(1))
        );
        // The skip came right after an earlier replay.
        let after_replay = dead(json!({"prior_attempts": 3, "attempt": 1}));
        assert_eq!(
            counts(&counting_only_attempts_made(&after_replay, 3)),
            (json!(3), json!(0))
        );
        // Never more than the queue counted, and no count invented.
        let sent = dead(json!({"prior_attempts": 1, "attempt": 2}));
        assert_eq!(
            counts(&counting_only_attempts_made(&sent, 5)),
            (json!(1), json!(2))
        );
        let raw = dead(json!("not an envelope"));
        assert_eq!(counting_only_attempts_made(&raw, 0).job, raw.job);
    }
}
