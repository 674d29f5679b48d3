//! The JSON shapes the API answers with. Built from stored records here, so no handler formats a field by hand and a
//! secret has no way into a response except [`Registered::secret`] and
//! [`SecretRotated::secret`].

use serde::Serialize;
use shared::delivery::history::{Attempt, DeliveryRecord, DeliveryStatus, WebhookStats};
use shared::delivery::ordering::DeliveryOrdering;
use shared::time::rfc3339;
use shared::webhooks::filters::Filters;
use shared::webhooks::registry::{Metadata, Webhook};
use shared::webhooks::signature_profiles::SignatureProfile;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub webhook_id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    /// Conditions on the payload, on top of `events`; `{}` when none.
    #[schema(value_type = Object)]
    pub filters: Filters,
    pub active: bool,
    /// Why the system turned the webhook off (e.g. its receiver answered
    /// `410 Gone`); absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    pub strict_signatures: bool,
    /// How incoming requests of this integration are signed.
    pub signature_profile: SignatureProfile,
    /// Deliveries per second at most, across every worker; null: no limit.
    pub rate_limit_per_second: Option<f64>,
    /// Headers sent with every delivery (lowercase names).
    #[schema(value_type = Object)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `session`: each chat session's events arrive in the order they were
    /// produced; `none`: no order is kept.
    pub ordering: DeliveryOrdering,
    pub created_at: String,
    pub updated_at: String,
    pub last_delivery: Option<String>,
    pub deliveries_count: u64,
    pub failures_count: u64,
    /// Percent of attempts that succeeded, 2 decimals.
    pub success_rate: f64,
}

impl WebhookView {
    pub fn new(w: &Webhook, stats: WebhookStats) -> Self {
        Self {
            webhook_id: w.webhook_id.to_string(),
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.as_str().to_owned()).collect(),
            filters: w.filters.clone(),
            active: w.active,
            disabled_reason: w.disabled_reason.clone(),
            metadata: w.metadata.clone(),
            strict_signatures: w.strict_signatures,
            signature_profile: w.signature_profile,
            rate_limit_per_second: w.rate_limit_per_second,
            headers: w.headers.clone(),
            ordering: w.ordering,
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
            last_delivery: stats.last_delivery,
            deliveries_count: stats.deliveries_count,
            failures_count: stats.failures_count,
            success_rate: stats.success_rate,
        }
    }
}

/// The registration answer: the webhook, plus its secret when it was
/// generated here (shown this once, never again).
#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    pub webhook: WebhookView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The rotation answer: the new secret, shown this once, never again.
#[derive(Serialize, ToSchema)]
pub struct SecretRotated {
    pub webhook_id: String,
    pub secret: String,
    /// Until when the replaced secret still signs deliveries and verifies
    /// incoming requests; absent when the overlap was zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Secrets valid now, the new one included (at most 3).
    pub valid_secrets: usize,
}

impl SecretRotated {
    pub fn new(w: &Webhook, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            webhook_id: w.webhook_id.to_string(),
            secret: w.secret.expose().to_owned(),
            previous_secret_expires_at: w.previous_secrets.first().map(|p| rfc3339(p.expires_at)),
            valid_secrets: w.valid_secrets(now).len(),
        }
    }
}

/// The answer to `POST /webhooks/{id}/enable`.
#[derive(Serialize, ToSchema)]
pub struct EnabledView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// Dead letters of this webhook re-queued (0 unless asked).
    pub dead_letters_replayed: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub webhook_id: String,
    pub status: &'static str,
    pub message: String,
    /// Deliveries that were still pending and are now cancelled.
    pub cancelled_deliveries: usize,
}

#[derive(Serialize, ToSchema)]
pub struct TestQueued {
    pub event_id: String,
    pub delivery_id: String,
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub http_status: Option<u16>,
    pub response_time_ms: Option<u64>,
    pub attempt: u32,
    pub error: Option<String>,
    pub next_retry: Option<String>,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_delivery_id: Option<String>,
    /// For a webhook ordered by session: the event's number in its chat
    /// session (`X-Webhook-Sequence`, from 1); absent before the first
    /// attempt and for unordered deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(r: &DeliveryRecord) -> Self {
        Self {
            delivery_id: r.delivery_id.to_string(),
            webhook_id: r.webhook_id.to_string(),
            event_id: r.event_id.to_string(),
            event_type: r.event_type.to_string(),
            status: r.status,
            http_status: r.http_status,
            response_time_ms: r.response_time_ms,
            attempt: r.attempt,
            error: r.error.clone(),
            next_retry: r.next_retry.map(rfc3339),
            timestamp: rfc3339(r.timestamp),
            original_delivery_id: r.original_delivery_id.as_ref().map(ToString::to_string),
            sequence: r.sequence,
        }
    }
}

/// One delivery with every attempt and the payload it sends.
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub attempts: Vec<Attempt>,
    /// The body of the latest attempt (or of the next one, if none yet).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<&DeliveryRecord> for DeliveryDetail {
    fn from(r: &DeliveryRecord) -> Self {
        let payload = r
            .event
            .body(&r.webhook_id, r.attempt.max(1))
            .ok()
            .and_then(|body| serde_json::from_slice(&body).ok())
            .unwrap_or(serde_json::Value::Null);
        Self {
            delivery: r.into(),
            attempts: r.attempts.clone(),
            payload,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RetryQueued {
    pub delivery_id: String,
    pub original_delivery_id: String,
    pub status: DeliveryStatus,
    pub attempt: u32,
    pub scheduled_for: String,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub dead_letter_id: String,
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct BulkReplayed {
    /// Dead letters re-enqueued by this call.
    pub replayed: usize,
    /// Matching entries another caller replayed or discarded meanwhile.
    pub skipped: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Discarded {
    pub dead_letter_id: String,
    pub status: &'static str,
}
