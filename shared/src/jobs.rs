//! The typed jobs of this system. Each names its queue; the worker runs a
//! handler per queue.

use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::ids::{DeliveryId, WebhookId};
use crate::queue::{Job, JobLabels};

/// Send one event to one webhook (one per event × subscribed webhook).
/// The event travels inside the job so that a dead-lettered delivery can
/// be replayed long after its history record has expired.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliverEvent {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event: Event,
}

impl Job for DeliverEvent {
    const QUEUE: &'static str = "deliver";

    fn labels(&self) -> JobLabels {
        JobLabels {
            webhook_id: Some(self.webhook_id.to_string()),
            delivery_id: Some(self.delivery_id.to_string()),
            event_id: Some(self.event.event_id.to_string()),
            event_type: Some(self.event.event_type.to_string()),
        }
    }
}

/// Every queue this version runs, for listings and metrics.
pub const ALL_QUEUES: &[&str] = &[DeliverEvent::QUEUE];
