//! Delivery history: one record per event sent to one webhook,
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
use crate::events::catalog::{Event, EventType};
use crate::ids::{DeliveryId, EventId, WebhookId};
use crate::keys;
use crate::store::StoreError;
use crate::time::{serde_rfc3339, serde_rfc3339::option as opt_rfc3339};
use crate::webhooks::auto_disable::FailureStreak;

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
    /// Its place in its chat session's line, for a webhook ordered by
    /// session (`X-Webhook-Sequence`); set by its first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
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
            sequence: None,
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

/// What [`DeliveryStore::scan`] found.
#[derive(Default)]
struct Scan {
    /// The page: ids and scores of matches after the skipped ones.
    page: Vec<(String, i64)>,
    /// Matches counted, skipped ones included.
    matched: u64,
    last_examined: Option<(i64, String)>,
    reached_end: bool,
    /// Where to resume: position, matches still to skip, matches so far.
    resume: Option<(i64, String, u64, u64)>,
    /// Ids whose records expired.
    expired: Vec<String>,
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

impl DeliveryFilter {
    fn is_empty(&self) -> bool {
        self.status.is_none() && self.event_type.is_none()
    }

    fn wanted(&self, head: &RecordHead) -> bool {
        self.status.is_none_or(|s| s == head.status)
            && self.event_type.is_none_or(|t| t == head.event_type)
    }
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

/// Counts an attempt in its webhook's failure streak (see
/// `auto_disable`): a success ends the streak (returns {}), a failure adds
/// to it, starting it if none is running; returns {since ms, failures}.
/// KEYS: streak. ARGV: 1 for success else 0, now (unix ms).
const STREAK_LUA: &str = r"
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  return {}
end
redis.call('HSETNX', KEYS[1], 'since', ARGV[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
return {tonumber(redis.call('HGET', KEYS[1], 'since')), failures}
";

/// What [`DeliveryStore::save_attempt`] did.
#[derive(Clone, Copy, Debug)]
pub struct SavedAttempt {
    /// The record took the attempt (false: another run got further).
    pub written: bool,
    /// The webhook's failure streak after a failed attempt.
    pub streak: Option<FailureStreak>,
}

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

/// Ids examined per listing request when a filter is set: the bound on the
/// work one page costs (matches far apart are reached by `next_cursor`).
const FILTER_SCAN_BUDGET: usize = 1000;
/// Ids read from the index per round trip while filtering.
const SCAN_CHUNK: usize = 200;

/// Where a listing resumes: after the delivery `after` (created at
/// `created_ms`), newest first, with `skip` matches still to pass over
/// (what is left of an `offset`) and `seen` matches before this point
/// (for `total`). Shown to clients as an opaque string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    created_ms: i64,
    after: DeliveryId,
    skip: u64,
    seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a cursor this listing gave out")]
pub struct InvalidCursor(String);

impl ListCursor {
    pub fn parse(text: &str) -> Result<Self, InvalidCursor> {
        let invalid = || InvalidCursor(text.chars().take(100).collect());
        let mut parts = text.splitn(4, '.');
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (created_ms, skip, seen) = (number(), number(), number());
        let after = parts.next().and_then(|p| DeliveryId::parse(p).ok());
        match (
            created_ms.and_then(|c| i64::try_from(c).ok()),
            skip,
            seen,
            after,
        ) {
            (Some(created_ms), Some(skip), Some(seen), Some(after)) => Ok(Self {
                created_ms,
                after,
                skip,
                seen,
            }),
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.created_ms, self.skip, self.seen, self.after
        )
    }
}

/// Where a listing starts.
#[derive(Clone, Debug)]
pub enum ListFrom {
    Offset(u64),
    Cursor(ListCursor),
}

/// One page of a webhook's deliveries.
#[derive(Clone, Debug)]
pub struct DeliveryPage {
    pub records: Vec<DeliveryRecord>,
    /// Unfiltered: every delivery in the history. Filtered: exact when
    /// `next_cursor` is `None` or the scan reached the oldest delivery;
    /// otherwise an upper bound (the matches counted plus the deliveries
    /// not examined yet), so paging by `offset` up to it misses nothing.
    pub total: u64,
    /// Where the next page starts, while there may be one.
    pub next_cursor: Option<ListCursor>,
}

/// Delivery ids of one webhook's index, newest first, from a position,
/// fetched a chunk at a time. Deliveries created in the same millisecond
/// share a score; ties are ordered by id, so a position is (score, id).
struct IdScan {
    index: String,
    chunk: usize,
    /// Ids with the position's own score that come after it.
    ties: Option<(i64, String)>,
    /// Upper bound (score) of what is left, exclusive once past a tie.
    below: Option<i64>,
    /// Entries of the index from `below` already returned (or skipped).
    offset: usize,
    buffer: std::collections::VecDeque<(String, i64)>,
    exhausted: bool,
}

impl IdScan {
    fn new(index: String, chunk: usize, from: Option<(i64, &DeliveryId)>, skip: usize) -> Self {
        Self {
            index,
            chunk: chunk.max(1),
            ties: from.map(|(score, id)| (score, id.as_str().to_owned())),
            below: from.map(|(score, _)| score),
            offset: skip,
            buffer: Default::default(),
            exhausted: false,
        }
    }

    async fn next(
        &mut self,
        conn: &mut ConnectionManager,
    ) -> Result<Option<(String, i64)>, StoreError> {
        if self.buffer.is_empty() && !self.exhausted {
            self.fill(conn).await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn fill(&mut self, conn: &mut ConnectionManager) -> Result<(), StoreError> {
        if let Some((score, after)) = self.ties.take() {
            // Ties come newest-id first (reverse lexical order), so those
            // still to come are the ones below `after`.
            let tied: Vec<String> = conn.zrangebyscore(&self.index, score, score).await?;
            let mut skip = self.offset;
            for id in tied.into_iter().rev().filter(|id| *id < after) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    self.buffer.push_back((id, score));
                }
            }
            self.offset = skip;
            if !self.buffer.is_empty() {
                return Ok(());
            }
        }
        let max = match self.below {
            Some(score) => format!("({score}"),
            None => "+inf".to_owned(),
        };
        let got: Vec<(String, f64)> = conn
            .zrevrangebyscore_limit_withscores(
                &self.index,
                max,
                "-inf",
                isize::try_from(self.offset).unwrap_or(isize::MAX),
                isize::try_from(self.chunk).unwrap_or(isize::MAX),
            )
            .await?;
        self.exhausted = got.len() < self.chunk;
        self.offset += got.len();
        // Scores are creation times in ms: whole numbers well inside f64.
        self.buffer
            .extend(got.into_iter().map(|(id, score)| (id, score as i64)));
        Ok(())
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

    /// Ends a webhook's failure streak without a success (re-enabled by an
    /// administrator: it starts afresh).
    pub async fn reset_streak(&self, webhook: &WebhookId) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .del(keys::webhook_streak(&self.prefix, webhook.as_str()))
            .await?;
        Ok(())
    }

    /// Saves an attempt's outcome (as [`Self::transition`]: `written`
    /// false when refused) and counts it in the webhook's stats and failure
    /// streak, which count attempts made whether or not the record took it.
    pub async fn save_attempt(
        &self,
        record: &DeliveryRecord,
        success: bool,
    ) -> Result<SavedAttempt, StoreError> {
        let stats = keys::webhook_stats(&self.prefix, record.webhook_id.as_str());
        let mut pipe = redis::pipe();
        self.push_transition(&mut pipe, record)?;
        pipe.cmd("EVAL")
            .arg(STREAK_LUA)
            .arg(1)
            .arg(keys::webhook_streak(
                &self.prefix,
                record.webhook_id.as_str(),
            ))
            .arg(u8::from(success))
            .arg(Utc::now().timestamp_millis());
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
        let (written, streak): (i64, Vec<i64>) = pipe.query_async(&mut self.conn.clone()).await?;
        let streak = match streak.as_slice() {
            [since, failures] => Some(FailureStreak {
                since: DateTime::from_timestamp_millis(*since).unwrap_or_else(Utc::now),
                failures: u64::try_from(*failures).unwrap_or(0),
            }),
            _ => None,
        };
        Ok(SavedAttempt {
            written: written == 1,
            streak,
        })
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

    /// A webhook's deliveries, newest first, filtered, one page. Without a
    /// filter it reads that page's records and nothing else; with one it
    /// examines at most [`FILTER_SCAN_BUDGET`] records by their first bytes
    /// and reads the page's records whole.
    pub async fn list(
        &self,
        webhook: &WebhookId,
        filter: &DeliveryFilter,
        limit: usize,
        from: ListFrom,
    ) -> Result<DeliveryPage, StoreError> {
        let index = keys::webhook_deliveries(&self.prefix, webhook.as_str());
        let mut conn = self.conn.clone();
        let (page, expired) = if filter.is_empty() {
            self.list_all(&mut conn, &index, limit, &from).await?
        } else {
            self.list_matching(&mut conn, &index, filter, limit, &from)
                .await?
        };
        if !expired.is_empty() {
            // Records expired by TTL: drop them from the index as we notice
            // (after the scan, whose offsets they would shift).
            let _: i64 = conn.zrem(&index, expired).await?;
        }
        Ok(page)
    }

    /// Every id matches, so an offset is an offset into the index and the
    /// page is read straight from it. Also returns the ids found expired.
    async fn list_all(
        &self,
        conn: &mut ConnectionManager,
        index: &str,
        limit: usize,
        from: &ListFrom,
    ) -> Result<(DeliveryPage, Vec<String>), StoreError> {
        let mut ids = match from {
            ListFrom::Offset(offset) => IdScan::new(
                index.to_owned(),
                limit.saturating_add(1),
                None,
                usize::try_from(*offset).unwrap_or(usize::MAX),
            ),
            ListFrom::Cursor(c) => IdScan::new(
                index.to_owned(),
                limit.saturating_add(1),
                Some((c.created_ms, &c.after)),
                0,
            ),
        };
        let mut page: Vec<(DeliveryRecord, i64)> = Vec::new();
        let mut expired = Vec::new();
        loop {
            let mut batch = Vec::new();
            while page.len() + batch.len() < limit {
                match ids.next(conn).await? {
                    Some(entry) => batch.push(entry),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            for ((id, score), record) in self.read(conn, &batch).await? {
                match record {
                    Some(record) => page.push((record, *score)),
                    None => expired.push(id.clone()),
                }
            }
        }
        let more = page.len() == limit && ids.next(conn).await?.is_some();
        let next_cursor = match page.last() {
            Some((last, score)) if more => Some(ListCursor {
                created_ms: *score,
                after: last.delivery_id.clone(),
                skip: 0,
                seen: 0,
            }),
            _ => None,
        };
        let page = DeliveryPage {
            records: page.into_iter().map(|(r, _)| r).collect(),
            total: conn.zcard(index).await?,
            next_cursor,
        };
        Ok((page, expired))
    }

    /// Filtered: a bounded scan by record heads, then the page read whole.
    /// Also returns the ids found expired.
    async fn list_matching(
        &self,
        conn: &mut ConnectionManager,
        index: &str,
        filter: &DeliveryFilter,
        limit: usize,
        from: &ListFrom,
    ) -> Result<(DeliveryPage, Vec<String>), StoreError> {
        let (ids, skip, seen) = match from {
            ListFrom::Offset(offset) => (
                IdScan::new(index.to_owned(), SCAN_CHUNK, None, 0),
                *offset,
                0,
            ),
            ListFrom::Cursor(c) => (
                IdScan::new(
                    index.to_owned(),
                    SCAN_CHUNK,
                    Some((c.created_ms, &c.after)),
                    0,
                ),
                c.skip,
                c.seen,
            ),
        };
        let scan = self
            .scan(
                conn,
                ids,
                |head| filter.wanted(head),
                skip,
                limit,
                FILTER_SCAN_BUDGET,
            )
            .await?;
        let total = match &scan.last_examined {
            _ if scan.reached_end => seen + scan.matched,
            // Every delivery not examined yet might match.
            Some((score, _)) => {
                seen + scan.matched + conn.zcount::<_, _, _, u64>(index, "-inf", *score).await?
            }
            None => seen + scan.matched + conn.zcard::<_, u64>(index).await?,
        };
        let next_cursor = scan.resume.and_then(|(score, after, skip, matched)| {
            Some(ListCursor {
                created_ms: score,
                after: DeliveryId::parse(&after).ok()?,
                skip,
                seen: seen + matched,
            })
        });
        let records = self
            .read(conn, &scan.page)
            .await?
            .into_iter()
            .filter_map(|(_, record)| record)
            .collect();
        let page = DeliveryPage {
            records,
            total,
            next_cursor,
        };
        Ok((page, scan.expired))
    }

    /// The records of index entries, each with its entry: `None` for one
    /// gone (expired). An unreadable one is logged and left out, so that it
    /// costs a listing one item rather than the whole page, and is not
    /// taken for expired.
    async fn read<'a>(
        &self,
        conn: &mut ConnectionManager,
        entries: &'a [(String, i64)],
    ) -> Result<Vec<(&'a (String, i64), Option<DeliveryRecord>)>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = entries
            .iter()
            .map(|(id, _)| keys::delivery(&self.prefix, id))
            .collect();
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        Ok(entries
            .iter()
            .zip(raws)
            .filter_map(|(entry, raw)| match raw {
                None => Some((entry, None)),
                Some(raw) => match serde_json::from_slice(&raw) {
                    Ok(record) => Some((entry, Some(record))),
                    Err(e) => {
                        tracing::warn!(delivery_id = %entry.0, error = %e, "unreadable delivery record skipped");
                        None
                    }
                },
            })
            .collect())
    }

    /// Walks `ids`, judging each record by its head: passes over `skip`
    /// matches, collects up to `limit`, and keeps counting matches until
    /// `budget` ids have been examined or the index ends.
    async fn scan(
        &self,
        conn: &mut ConnectionManager,
        mut ids: IdScan,
        wanted: impl Fn(&RecordHead) -> bool,
        mut skip: u64,
        limit: usize,
        budget: usize,
    ) -> Result<Scan, StoreError> {
        let mut scan = Scan::default();
        let mut examined = 0usize;
        // Where a next page would start, once this one is full.
        let mut page_end: Option<(i64, String, u64)> = None;
        let mut more_after_page = false;
        while examined < budget {
            let mut chunk = Vec::new();
            while chunk.len() < SCAN_CHUNK.min(budget - examined) {
                match ids.next(conn).await? {
                    Some(entry) => chunk.push(entry),
                    None => break,
                }
            }
            if chunk.is_empty() {
                scan.reached_end = true;
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &chunk {
                pipe.getrange(keys::delivery(&self.prefix, id), 0, HEAD_BYTES - 1);
            }
            let heads: Vec<Vec<u8>> = pipe.query_async(conn).await?;
            for ((id, score), raw) in chunk.into_iter().zip(heads) {
                if page_end.is_some() {
                    more_after_page = true;
                }
                examined += 1;
                scan.last_examined = Some((score, id.clone()));
                if raw.is_empty() {
                    scan.expired.push(id);
                    continue;
                }
                let head = match RecordHead::parse(&raw) {
                    Some(head) => head,
                    None => {
                        tracing::warn!(delivery_id = %id, "delivery record without a readable head skipped");
                        continue;
                    }
                };
                if !wanted(&head) {
                    continue;
                }
                scan.matched += 1;
                if skip > 0 {
                    skip -= 1;
                } else if scan.page.len() < limit {
                    scan.page.push((id.clone(), score));
                    if scan.page.len() == limit {
                        page_end = Some((score, id, scan.matched));
                    }
                }
            }
        }
        if !scan.reached_end && examined >= budget && ids.next(conn).await?.is_none() {
            scan.reached_end = true;
        }
        scan.resume = match page_end {
            Some((score, after, matched)) => {
                (more_after_page || !scan.reached_end).then_some((score, after, 0, matched))
            }
            None if !scan.reached_end => scan
                .last_examined
                .clone()
                .map(|(score, after)| (score, after, skip, scan.matched)),
            None => None,
        };
        Ok(scan)
    }

    /// A webhook's deliveries that have not reached a final state.
    pub async fn pending_for(
        &self,
        webhook: &WebhookId,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let index = keys::webhook_deliveries(&self.prefix, webhook.as_str());
        let mut conn = self.conn.clone();
        let scan = self
            .scan(
                &mut conn,
                IdScan::new(index, SCAN_CHUNK, None, 0),
                |head| !head.status.is_final(),
                0,
                usize::MAX,
                usize::MAX,
            )
            .await?;
        let mut pending = Vec::with_capacity(scan.page.len());
        for chunk in scan.page.chunks(SCAN_CHUNK) {
            pending.extend(
                self.read(&mut conn, chunk)
                    .await?
                    .into_iter()
                    .filter_map(|(_, record)| record),
            );
        }
        Ok(pending)
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
                keys::webhook_streak(&self.prefix, webhook.as_str()),
                keys::webhook_rate(&self.prefix, webhook.as_str()),
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
    use crate::events::catalog::EventMetadata;

    fn record(status: DeliveryStatus, attempt: u32) -> DeliveryRecord {
        // The longest ids there are, and a payload full of look-alikes.
        let long = "x".repeat(96);
        let event = Event::new(
            EventId::parse(&format!("evt_{long}")).unwrap(),
            EventType::KnowledgeDocumentIndexed,
            json!({"status": "indexed", "event_type": "chat.escalated", "attempt": 99}),
            EventMetadata {
                trace_id: "t".parse().unwrap(),
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

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = ListCursor {
            created_ms: 1_764_000_000_123,
            after: DeliveryId::parse("dlv_01abc_retry_2").unwrap(),
            skip: 3,
            seen: 40,
        };
        assert_eq!(ListCursor::parse(&cursor.to_string()), Ok(cursor));
        for bad in [
            "",
            "1.2.3",
            "a.0.0.dlv_x",
            "1.0.0.evt_x",
            "-1.0.0.dlv_x",
            "1.0.0.dlv_a b",
        ] {
            assert!(ListCursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
