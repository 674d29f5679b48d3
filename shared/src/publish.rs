//! Publishing an event: fan it out into one `DeliverEvent` job (and one
//! history record) per webhook that should get it.
//!
//! Records are written before their jobs so a job never runs without a
//! record to update; a crash between the two leaves a record "queued" with
//! no job, which the publishing job's redo (its ids are deterministic)
//! repairs.

use chrono::Utc;

use crate::deliveries::{DeliveryRecord, DeliveryStatus, DeliveryStore};
use crate::events::Event;
use crate::ids::{DeliveryId, WebhookId};
use crate::jobs::DeliverEvent;
use crate::webhooks::{StoreError, Webhook, WebhookStore};
use queue::{DeadLetter, Envelope, Job, QueueClient, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl PublishError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            PublishError::Store(e) => e.is_unavailable(),
            PublishError::Queue(e) => e.is_unavailable(),
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

    /// Writes the records, then queues one job per record.
    pub async fn enqueue(&self, planned: Vec<Planned>) -> Result<Vec<DeliveryId>, PublishError> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<DeliveryRecord> = planned.iter().map(|p| p.record.clone()).collect();
        self.deliveries.create(&records).await?;
        let jobs: Vec<Envelope<DeliverEvent>> = planned
            .into_iter()
            .map(|p| {
                let trace_id = p.record.event.metadata.trace_id.clone();
                let mut envelope = Envelope::new(
                    DeliverEvent::QUEUE,
                    DeliverEvent {
                        delivery_id: p.record.delivery_id,
                        webhook_id: p.record.webhook_id,
                        event: p.record.event,
                    },
                    trace_id,
                );
                envelope.prior_attempts = p.prior_attempts;
                envelope
            })
            .collect();
        self.queue.push(&jobs).await?;
        Ok(jobs.into_iter().map(|j| j.payload.delivery_id).collect())
    }

    /// A manual retry (SPEC §9): a new delivery `<orig>_retry_<n>` of the
    /// same event, its attempt numbering continuing from the original.
    pub async fn retry_delivery(
        &self,
        original: &DeliveryRecord,
    ) -> Result<DeliveryRecord, PublishError> {
        let n = self
            .deliveries
            .next_retry_number(&original.delivery_id)
            .await?;
        let prior_attempts = last_attempt_made(original);
        let mut record = DeliveryRecord::queued(
            DeliveryId::retry_of(&original.delivery_id, n),
            original.webhook_id.clone(),
            original.event.clone(),
            prior_attempts + 1,
        );
        record.original_delivery_id = Some(original.delivery_id.clone());
        record.timestamp = Utc::now();
        self.enqueue(vec![Planned {
            record: record.clone(),
            prior_attempts,
        }])
        .await?;
        Ok(record)
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
            .get(crate::jobs::label::DELIVERY_ID)
            .and_then(|id| DeliveryId::parse(id).ok());
        if let Some(id) = delivery
            && let Some(mut record) = self.deliveries.get(&id).await?
        {
            record.set_status(DeliveryStatus::Queued, None);
            self.deliveries.save(&record).await?;
        }
        Ok(true)
    }

    /// Cancels a deleted webhook's pending deliveries (the worker also
    /// cancels any it meets) and drops its history index.
    pub async fn cancel_pending(&self, webhook: &WebhookId) -> Result<usize, PublishError> {
        let pending = self.deliveries.pending_for(webhook).await?;
        for mut record in pending.iter().cloned() {
            record.set_status(
                DeliveryStatus::Cancelled,
                Some("webhook was deleted".into()),
            );
            self.deliveries.save(&record).await?;
        }
        self.deliveries.forget_webhook(webhook).await?;
        Ok(pending.len())
    }
}

/// The number of the last attempt actually made for a record (0 if none).
fn last_attempt_made(record: &DeliveryRecord) -> u32 {
    record
        .attempts
        .last()
        .map_or(record.attempt.saturating_sub(1), |a| a.attempt)
}
