//! Helpers shared by the worker's test modules.

use queue::{DeadLetterFilter, DeadLetterPage, Job};
use shared::jobs::DeliverEvent;
use shared::services::Services;
use shared::webhooks::registry::Webhook;

/// The first 100 dead deliveries of `webhook`, and how many there are.
pub async fn dead_deliveries(services: &Services, webhook: &Webhook) -> DeadLetterPage {
    let filter = DeadLetterFilter {
        labels: [(
            shared::jobs::label::WEBHOOK_ID.to_owned(),
            webhook.webhook_id.to_string(),
        )]
        .into(),
        ..DeadLetterFilter::default()
    };
    services
        .queue
        .dead_letters(&[DeliverEvent::QUEUE], &filter, 0, 100)
        .await
        .expect("list dead letters")
}
