//! Delivery history (SPEC §9): one record per event sent to one webhook,
//! with every attempt, kept for `delivery.history_ttl` and at most
//! `delivery.history_max_per_webhook` per webhook, plus per-webhook stats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::config::KeyPrefix;
use crate::events::{Event, EventType};
use crate::ids::{DeliveryId, EventId, WebhookId};
use crate::keys;
use crate::time::{serde_rfc3339, serde_rfc3339::option as opt_rfc3339};
use crate::webhooks::StoreError;

/// The first KiB of a receiver's answer is kept with each attempt.
pub const RESPONSE_BODY_KEPT: usize = 1024;

/// Upper bounds (seconds) of the delivery latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Cumulative bucket counts, count and sum, as Prometheus wants them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// Attempts kept per record: the schedule has 8, manual retries add more,
/// and a record must stay bounded.
const MAX_ATTEMPTS_KEPT: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    InProgress,
    Success,
    /// The last attempt failed; another is scheduled (`next_retry`).
    Failed,
    /// Out of attempts; the job is in the dead-letter set.
    Dead,
    /// The webhook was deleted before the event reached it.
    Cancelled,
}

impl DeliveryStatus {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Success | DeliveryStatus::Dead | DeliveryStatus::Cancelled
        )
    }
}

/// One attempt to deliver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String)]
    pub timestamp: DateTime<Utc>,
    pub success: bool,
    pub http_status: Option<u16>,
    pub response_time_ms: u64,
    /// The first KiB of the response body, lossily decoded.
    pub response_body: Option<String>,
    /// Why the attempt failed, for network errors and non-2xx answers.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    /// The number of the latest attempt made, or of the next one while
    /// none was made in this run yet.
    pub attempt: u32,
    pub http_status: Option<u16>,
    pub response_time_ms: Option<u64>,
    pub error: Option<String>,
    #[serde(with = "opt_rfc3339")]
    pub next_retry: Option<DateTime<Utc>>,
    #[serde(with = "serde_rfc3339")]
    pub timestamp: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_delivery_id: Option<DeliveryId>,
    pub event: Event,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

impl DeliveryRecord {
    pub fn queued(
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        event: Event,
        first_attempt: u32,
    ) -> Self {
        let now = Utc::now();
        Self {
            delivery_id,
            webhook_id,
            event_id: event.event_id.clone(),
            event_type: event.event_type,
            status: DeliveryStatus::Queued,
            attempt: first_attempt,
            http_status: None,
            response_time_ms: None,
            error: None,
            next_retry: None,
            timestamp: now,
            updated_at: now,
            original_delivery_id: None,
            event,
            attempts: Vec::new(),
        }
    }

    /// Records an attempt's result and what happens next.
    pub fn record(
        &mut self,
        attempt: Attempt,
        status: DeliveryStatus,
        next_retry: Option<DateTime<Utc>>,
    ) {
        self.attempt = attempt.attempt;
        self.http_status = attempt.http_status;
        self.response_time_ms = Some(attempt.response_time_ms);
        self.error = attempt.error.clone();
        self.status = status;
        self.next_retry = next_retry;
        self.updated_at = Utc::now();
        self.attempts.push(attempt);
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            let excess = self.attempts.len() - MAX_ATTEMPTS_KEPT;
            self.attempts.drain(..excess);
        }
    }

    pub fn set_status(&mut self, status: DeliveryStatus, error: Option<String>) {
        self.status = status;
        if error.is_some() {
            self.error = error;
        }
        if status != DeliveryStatus::Failed {
            self.next_retry = None;
        }
        self.updated_at = Utc::now();
    }
}

/// Per-webhook counters shown in the registry listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookStats {
    /// Attempts made (each retry counts).
    pub deliveries_count: u64,
    /// Attempts that failed.
    pub failures_count: u64,
    /// Percent of attempts that succeeded, 2 decimals; 0 before any.
    pub success_rate: f64,
    pub last_delivery: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
}

/// Adds a delivery to its webhook's index and trims the index by age and
/// count in one step; returns the ids trimmed so their records go too.
/// KEYS: index. ARGV: delivery id, created ms, max kept, oldest ms kept.
/// Sent as `EVAL` inside a pipeline (Redis caches it by its hash), so that
/// every record of a publish goes in one round trip.
const INDEX_ADD_LUA: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local trimmed = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[4], 'BYSCORE')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    trimmed[#trimmed + 1] = id
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
return trimmed
";

#[derive(Clone)]
pub struct DeliveryStore {
    conn: ConnectionManager,
    prefix: KeyPrefix,
    ttl: Duration,
    max_per_webhook: u64,
}

impl DeliveryStore {
    pub fn new(
        conn: ConnectionManager,
        prefix: KeyPrefix,
        ttl: Duration,
        max_per_webhook: u64,
    ) -> Self {
        Self {
            conn,
            prefix,
            ttl,
            max_per_webhook,
        }
    }

    /// Stores new records and indexes them under their webhooks: one
    /// pipeline for all of them (each record is written before it is
    /// indexed), plus a `DEL` of trimmed records when there are any.
    pub async fn create(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let oldest_kept =
            Utc::now().timestamp_millis() - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for record in records {
            pipe.set_ex(
                keys::delivery(&self.prefix, record.delivery_id.as_str()),
                serde_json::to_vec(record)?,
                self.ttl.as_secs().max(1),
            )
            .ignore()
            .cmd("EVAL")
            .arg(INDEX_ADD_LUA)
            .arg(1)
            .arg(keys::webhook_deliveries(
                &self.prefix,
                record.webhook_id.as_str(),
            ))
            .arg(record.delivery_id.as_str())
            .arg(record.timestamp.timestamp_millis())
            .arg(self.max_per_webhook)
            .arg(oldest_kept);
        }
        let trimmed: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let trimmed_all: Vec<String> = trimmed.into_iter().flatten().collect();
        if !trimmed_all.is_empty() {
            let keys: Vec<String> = trimmed_all
                .iter()
                .map(|id| keys::delivery(&self.prefix, id))
                .collect();
            let _: i64 = conn.del(keys).await?;
        }
        Ok(())
    }

    pub async fn save(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(
                keys::delivery(&self.prefix, record.delivery_id.as_str()),
                serde_json::to_vec(record)?,
                self.ttl.as_secs().max(1),
            )
            .await?;
        Ok(())
    }

    /// Saves an attempt's outcome and counts it in the webhook's stats.
    pub async fn save_attempt(
        &self,
        record: &DeliveryRecord,
        success: bool,
    ) -> Result<(), StoreError> {
        let stats = keys::webhook_stats(&self.prefix, record.webhook_id.as_str());
        let mut pipe = redis::pipe();
        pipe.set_ex(
            keys::delivery(&self.prefix, record.delivery_id.as_str()),
            serde_json::to_vec(record)?,
            self.ttl.as_secs().max(1),
        )
        .ignore()
        .hincr(&stats, "attempts", 1)
        .ignore()
        .hset(&stats, "last_delivery", crate::time::rfc3339(Utc::now()))
        .ignore();
        if !success {
            pipe.hincr(&stats, "failures", 1).ignore();
        }
        if let Some(ms) = record.attempts.last().map(|a| a.response_time_ms) {
            let latency = keys::delivery_latency(&self.prefix);
            let seconds = ms as f64 / 1000.0;
            if let Some(bound) = LATENCY_BUCKETS.iter().find(|b| seconds <= **b) {
                pipe.hincr(&latency, format!("le_{bound}"), 1).ignore();
            }
            pipe.hincr(&latency, "count", 1)
                .ignore()
                .hincr(&latency, "sum_ms", ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// The delivery latency histogram of every worker, from Redis.
    pub async fn latency_histogram(&self) -> Result<LatencyHistogram, StoreError> {
        let raw: std::collections::HashMap<String, u64> = self
            .conn
            .clone()
            .hgetall(keys::delivery_latency(&self.prefix))
            .await?;
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .map(|bound| {
                cumulative += raw.get(&format!("le_{bound}")).copied().unwrap_or(0);
                (*bound, cumulative)
            })
            .collect();
        let sum_seconds = raw.get("sum_ms").copied().unwrap_or(0) as f64 / 1000.0;
        Ok(LatencyHistogram {
            buckets,
            count: raw.get("count").copied().unwrap_or(0),
            sum_seconds,
        })
    }

    pub async fn get(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .conn
            .clone()
            .get(keys::delivery(&self.prefix, id.as_str()))
            .await?;
        Ok(raw.map(|raw| serde_json::from_slice(&raw)).transpose()?)
    }

    /// A webhook's deliveries, newest first, filtered and paginated.
    /// Returns the page and the total matching.
    pub async fn list(
        &self,
        webhook: &WebhookId,
        filter: &DeliveryFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<DeliveryRecord>, usize), StoreError> {
        let index = keys::webhook_deliveries(&self.prefix, webhook.as_str());
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.zrevrange(&index, 0, -1).await?;
        let mut matching = 0usize;
        let mut page = Vec::new();
        let mut expired = Vec::new();
        for chunk in ids.chunks(200) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| keys::delivery(&self.prefix, id))
                .collect();
            let raws: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            for (id, raw) in chunk.iter().zip(raws) {
                let Some(raw) = raw else {
                    expired.push(id.clone());
                    continue;
                };
                let record: DeliveryRecord = serde_json::from_slice(&raw)?;
                let wanted = filter.status.is_none_or(|s| s == record.status)
                    && filter.event_type.is_none_or(|t| t == record.event_type);
                if wanted {
                    if matching >= offset && page.len() < limit {
                        page.push(record);
                    }
                    matching += 1;
                }
            }
        }
        if !expired.is_empty() {
            // Records expired by TTL: drop them from the index as we notice.
            let _: i64 = conn.zrem(&index, expired).await?;
        }
        Ok((page, matching))
    }

    /// Ids of a webhook's deliveries that have not reached a final state.
    pub async fn pending_for(
        &self,
        webhook: &WebhookId,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (records, _) = self
            .list(webhook, &DeliveryFilter::default(), usize::MAX, 0)
            .await?;
        Ok(records
            .into_iter()
            .filter(|r| !r.status.is_final())
            .collect())
    }

    pub async fn stats(&self, webhook: &WebhookId) -> Result<WebhookStats, StoreError> {
        let raw: std::collections::HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(keys::webhook_stats(&self.prefix, webhook.as_str()))
            .await?;
        let count = |name: &str| {
            raw.get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let attempts = count("attempts");
        let failures = count("failures").min(attempts);
        let success_rate = if attempts == 0 {
            0.0
        } else {
            ((attempts - failures) as f64 * 10_000.0 / attempts as f64).round() / 100.0
        };
        Ok(WebhookStats {
            deliveries_count: attempts,
            failures_count: failures,
            success_rate,
            last_delivery: raw.get("last_delivery").cloned(),
        })
    }

    /// Drops a deleted webhook's index and stats (its records expire).
    pub async fn forget_webhook(&self, webhook: &WebhookId) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .del(&[
                keys::webhook_deliveries(&self.prefix, webhook.as_str()),
                keys::webhook_stats(&self.prefix, webhook.as_str()),
            ])
            .await?;
        Ok(())
    }

    /// The next manual-retry number for a delivery (1, 2, …).
    pub async fn next_retry_number(&self, original: &DeliveryId) -> Result<u32, StoreError> {
        let key = keys::delivery_retries(&self.prefix, original.as_str());
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1)
            .expire(&key, i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
            .ignore();
        let (n,): (u32,) = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(n)
    }
}
