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

use std::time::Duration;

use chrono::Utc;

use crate::deliveries::{Created, DeliveryRecord, DeliveryStatus, DeliveryStore};
use crate::events::Event;
use crate::ids::{DeliveryId, WebhookId};
use crate::jobs::DeliverEvent;
use crate::queue::{DeadLetter, Envelope, Job, QueueClient, QueueError};
use crate::webhooks::{StoreError, Webhook, WebhookStore};

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
    #[error("no free manual retry id for {0}: the next ones exist already")]
    RetryIdsTaken(DeliveryId),
}

impl PublishError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            PublishError::Store(e) => e.is_unavailable(),
            PublishError::Queue(e) => e.is_unavailable(),
            PublishError::RetryIdsTaken(_) => false,
        }
    }
}

/// A delivery about to be queued: where a retry or replay starts counting.
pub struct Planned {
    pub record: DeliveryRecord,
    pub prior_attempts: u32,
}

#[derive(Clone)]
pub struct Publisher {
    pub webhooks: WebhookStore,
    pub deliveries: DeliveryStore,
    pub queue: QueueClient,
}

impl Publisher {
    /// Sends `event` to every active webhook subscribed to its type.
    pub async fn publish(&self, event: Event) -> Result<Vec<DeliveryId>, PublishError> {
        let targets: Vec<Webhook> = self
            .webhooks
            .all()
            .await?
            .into_iter()
            .filter(|w| w.active && w.subscribes_to(event.event_type))
            .collect();
        let planned = targets
            .iter()
            .map(|w| Planned {
                record: DeliveryRecord::queued(
                    DeliveryId::for_event(&event.event_id, &w.webhook_id),
                    w.webhook_id.clone(),
                    event.clone(),
                    1,
                ),
                prior_attempts: 0,
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
        self.enqueue(vec![Planned {
            record,
            prior_attempts: 0,
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

    /// Queues the job of one delivery unless it was queued within
    /// [`REPUBLISH_WINDOW`].
    async fn push_once(&self, planned: Planned) -> Result<(), QueueError> {
        let Planned {
            record,
            prior_attempts,
        } = planned;
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

    /// A manual retry (SPEC §9): a new delivery `<orig>_retry_<n>` of the
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
            record.timestamp = Utc::now();
            let created = self
                .deliveries
                .create(std::slice::from_ref(&record))
                .await?;
            if created.first() != Some(&Created::New) {
                continue;
            }
            self.push_once(Planned {
                record: record.clone(),
                prior_attempts,
            })
            .await?;
            return Ok(record);
        }
        Err(PublishError::RetryIdsTaken(root))
    }
}

impl Publisher {
    /// Replays a dead letter (same event id, attempt numbering continuing)
    /// and shows its delivery as queued again. False when another caller
    /// replayed or discarded it first.
    pub async fn replay(&self, dead: &DeadLetter) -> Result<bool, PublishError> {
        if !self.queue.dead_letter_replay(dead).await? {
            return Ok(false);
        }
        let delivery = dead
            .labels
            .delivery_id
            .as_deref()
            .and_then(|id| DeliveryId::parse(id).ok());
        if let Some(id) = delivery
            && let Some(mut record) = self.deliveries.get(&id).await?
        {
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

/// The number of the last attempt actually made for a record (0 if none).
fn last_attempt_made(record: &DeliveryRecord) -> u32 {
    record
        .attempts
        .last()
        .map_or(record.attempt.saturating_sub(1), |a| a.attempt)
}
