//! Delivery history (SPEC §9): one record per event sent to one webhook,
//! with every attempt, kept for `delivery.history_ttl` and at most
//! `delivery.history_max_per_webhook` per webhook, plus per-webhook stats.
//!
//! Records are written by several hands at once (the publisher, workers,
//! replays, cancellations), each from a copy it read a moment earlier, so
//! no write is a plain `SET`: a record is created only if absent (`SET NX`)
//! and changed only by a script that refuses to put back an
//! earlier state over a later one (see [`DeliveryStatus::may_replace`]).

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

/// How far into a stored record its `status`, `event_type` and `attempt`
/// are sure to be: they are serialized before the event (whose data could
/// hold look-alike keys), after ids of at most 100 characters each.
const HEAD_BYTES: isize = 1024;

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

    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::InProgress,
        DeliveryStatus::Success,
        DeliveryStatus::Failed,
        DeliveryStatus::Dead,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::InProgress => "in_progress",
            DeliveryStatus::Success => "success",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a record in this state may overwrite one in `current`.
    /// `success` and `cancelled` are the end: a slow duplicate of a job, a
    /// replay or a cancellation racing a worker must not undo them.
    /// `queued` is written over a record only by a replay, so only over
    /// `dead`; every other state follows any state short of the end (a
    /// replayed job may find its record still `dead`).
    pub fn may_replace(self, current: DeliveryStatus) -> bool {
        match (current, self) {
            (DeliveryStatus::Success | DeliveryStatus::Cancelled, _) => false,
            (current, DeliveryStatus::Queued) => current == DeliveryStatus::Dead,
            _ => true,
        }
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

/// What [`DeliveryStore::create`] found for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// Written now.
    New,
    /// A record with that id was there already and was left alone; its
    /// status, if it could be read.
    Existing(Option<DeliveryStatus>),
}

/// Adds a delivery to its webhook's index and trims the index by age and
/// count in one step; returns the ids trimmed so their records go too.
/// KEYS: index. ARGV: delivery id, created ms, max kept, oldest ms kept.
/// Sent as `EVAL` inside a pipeline (Redis caches it by its hash), so that
/// every record of a publish goes in one round trip. `NX`: a re-publish
/// keeps the delivery where it was in the listing.
const INDEX_ADD_LUA: &str = r"
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
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

/// Overwrites a record unless that would move it back: refused (0) when
/// the stored status is not one the new record may replace, or the stored
/// attempt is newer. Reads only the record's head (see [`HEAD_BYTES`]); a
/// record whose head cannot be read is overwritten, as is a missing one
/// (expired: the writer holds all it needs).
/// KEYS: record. ARGV: new record, ttl seconds, new attempt, bytes of head
/// to read, then the statuses the new record may replace.
const TRANSITION_LUA: &str = r#"
local head = redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
if head ~= '' then
  local status = string.match(head, '"status":"([%a_]+)"')
  if status then
    local allowed = false
    for i = 5, #ARGV do
      if ARGV[i] == status then allowed = true break end
    end
    if not allowed then return 0 end
  end
  local attempt = tonumber(string.match(head, '"attempt":(%d+)'))
  if attempt and attempt > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// A record's status and event type, read from its first bytes (see
/// [`HEAD_BYTES`]) so that judging a record never needs it whole (its
/// attempts and payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordHead {
    status: DeliveryStatus,
    event_type: EventType,
}

impl RecordHead {
    /// `None` when the head is not in the first [`HEAD_BYTES`] of `raw`.
    fn parse(raw: &[u8]) -> Option<Self> {
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            // Cut inside a character of the payload, past the head.
            Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).ok()?,
        };
        let field = |name: &str| {
            let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
            let len = text[start..].find('"')?;
            Some(&text[start..start + len])
        };
        Some(Self {
            status: DeliveryStatus::parse(field("status")?)?,
            event_type: field("event_type")?.parse().ok()?,
        })
    }
}

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
    /// indexed), plus a `DEL` of trimmed records when there are any. A
    /// record whose id exists already is left as it is (`SET NX`): a
    /// re-publish must not turn a delivered record back into a queued one.
    pub async fn create(&self, records: &[DeliveryRecord]) -> Result<Vec<Created>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let oldest_kept =
            Utc::now().timestamp_millis() - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for record in records {
            pipe.cmd("SET")
                .arg(keys::delivery(&self.prefix, record.delivery_id.as_str()))
                .arg(serde_json::to_vec(record)?)
                .arg("NX")
                .arg("GET")
                .arg("EX")
                .arg(self.ttl_secs())
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
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut created = Vec::with_capacity(records.len());
        let mut trimmed_all: Vec<String> = Vec::new();
        for pair in replies.chunks(2) {
            let [previous, trimmed] = pair else {
                break;
            };
            let previous: Option<Vec<u8>> =
                redis::from_redis_value_ref(previous).map_err(redis::RedisError::from)?;
            created.push(match previous {
                None => Created::New,
                Some(raw) => Created::Existing(RecordHead::parse(&raw).map(|h| h.status)),
            });
            trimmed_all.extend(
                redis::from_redis_value_ref::<Vec<String>>(trimmed)
                    .map_err(redis::RedisError::from)?,
            );
        }
        if !trimmed_all.is_empty() {
            let keys: Vec<String> = trimmed_all
                .iter()
                .map(|id| keys::delivery(&self.prefix, id))
                .collect();
            let _: i64 = conn.del(keys).await?;
        }
        Ok(created)
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// Adds `record` as a `TRANSITION_LUA` call to `pipe`.
    fn push_transition(
        &self,
        pipe: &mut redis::Pipeline,
        record: &DeliveryRecord,
    ) -> Result<(), StoreError> {
        pipe.cmd("EVAL")
            .arg(TRANSITION_LUA)
            .arg(1)
            .arg(keys::delivery(&self.prefix, record.delivery_id.as_str()))
            .arg(serde_json::to_vec(record)?)
            .arg(self.ttl_secs())
            .arg(record.attempt)
            .arg(HEAD_BYTES);
        for current in DeliveryStatus::ALL {
            if record.status.may_replace(current) {
                pipe.arg(current.as_str());
            }
        }
        Ok(())
    }

    /// Writes `record` over the stored one unless that would move it back
    /// (see [`DeliveryStatus::may_replace`]); false when refused.
    pub async fn transition(&self, record: &DeliveryRecord) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        self.push_transition(&mut pipe, record)?;
        let (written,): (i64,) = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(written == 1)
    }

    /// Saves an attempt's outcome (as [`Self::transition`]: false when
    /// refused) and counts it in the webhook's stats, which count attempts
    /// made whether or not the record took it.
    pub async fn save_attempt(
        &self,
        record: &DeliveryRecord,
        success: bool,
    ) -> Result<bool, StoreError> {
        let stats = keys::webhook_stats(&self.prefix, record.webhook_id.as_str());
        let mut pipe = redis::pipe();
        self.push_transition(&mut pipe, record)?;
        pipe.hincr(&stats, "attempts", 1)
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
        let (written,): (i64,) = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(written == 1)
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

    /// The next manual-retry number of a delivery (1, 2, …), counted on
    /// the first delivery so retries of retries are numbered on with it.
    pub async fn next_retry_number(&self, delivery: &DeliveryId) -> Result<u32, StoreError> {
        let key = keys::delivery_retries(&self.prefix, delivery.root().as_str());
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1)
            .expire(&key, i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
            .ignore();
        let (n,): (u32,) = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::EventMetadata;

    fn record(status: DeliveryStatus, attempt: u32) -> DeliveryRecord {
        // The longest ids there are, and a payload full of look-alikes.
        let long = "x".repeat(96);
        let event = Event::new(
            EventId::parse(&format!("evt_{long}")).unwrap(),
            EventType::KnowledgeDocumentIndexed,
            json!({"status": "indexed", "event_type": "chat.escalated", "attempt": 99}),
            EventMetadata {
                trace_id: "t".into(),
                correlation_id: None,
            },
        );
        let mut record = DeliveryRecord::queued(
            DeliveryId::parse(&format!("dlv_{long}")).unwrap(),
            WebhookId::parse(&format!("webhook_{long}")).unwrap(),
            event,
            attempt,
        );
        record.status = status;
        record
    }

    #[test]
    fn the_head_holds_the_records_own_status_type_and_attempt() {
        let stored = serde_json::to_vec(&record(DeliveryStatus::InProgress, 7)).unwrap();
        let text = String::from_utf8_lossy(&stored);
        let event_at = text.find("\"event\":").unwrap();
        assert!(event_at < usize::try_from(HEAD_BYTES).unwrap(), "{text}");
        let head = &stored[..event_at];
        assert_eq!(
            RecordHead::parse(head),
            Some(RecordHead {
                status: DeliveryStatus::InProgress,
                event_type: EventType::KnowledgeDocumentIndexed,
            })
        );
        // What the transition script reads: the first `"attempt":` is ours.
        let at = text.find("\"attempt\":").unwrap() + "\"attempt\":".len();
        assert!(at < event_at && text[at..].starts_with("7,"), "{text}");
    }

    #[test]
    fn a_head_cut_inside_a_character_still_parses() {
        let mut raw = serde_json::to_vec(&record(DeliveryStatus::Dead, 1)).unwrap();
        raw.truncate(600);
        raw.extend_from_slice(&"ж".as_bytes()[..1]);
        assert_eq!(
            RecordHead::parse(&raw).map(|h| h.status),
            Some(DeliveryStatus::Dead)
        );
        assert_eq!(RecordHead::parse(b"{\"garbage\":1}"), None);
    }

    #[test]
    fn later_states_are_never_replaced_by_earlier_ones() {
        use DeliveryStatus::*;
        for current in DeliveryStatus::ALL {
            for new in DeliveryStatus::ALL {
                let expected = match (current, new) {
                    (Success | Cancelled, _) => false,
                    (Dead, Queued) => true,
                    (_, Queued) => false,
                    _ => true,
                };
                assert_eq!(
                    new.may_replace(current),
                    expected,
                    "{new:?} over {current:?}"
                );
            }
        }
        // The races that were reproduced:
        assert!(!Queued.may_replace(Success), "a re-publish or late replay");
        assert!(!Failed.may_replace(Success), "a slow duplicate attempt");
        assert!(!Cancelled.may_replace(Success), "a delete racing a worker");
        assert!(Queued.may_replace(Dead), "a replay");
        assert!(InProgress.may_replace(Dead), "a replayed job starting");
    }

    #[test]
    fn status_names_are_the_serialized_ones() {
        for status in DeliveryStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
    }
}
