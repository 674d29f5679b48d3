//! Every Redis key this system uses, and why it has the shape it has.
//!
//! All keys start with `redis.key_prefix` (`P` below). Keys that a single
//! script or transaction touches together share a `{hash tag}`, so the
//! layout also works on Redis Cluster, where a multi-key command must stay
//! in one slot. Each queue is one tag; each webhook's history is one tag.
//!
//! ```text
//! Queues (one per job type Q: "deliver", …; tag {P:q:Q})
//!   P:{P:q:Q}:stream    STREAM  ready and in-flight jobs, field "j" = job
//!                               envelope (JSON). Consumer group "workers":
//!                               XREADGROUP hands a job to one worker; it
//!                               stays in the group's pending list until
//!                               XACK+XDEL; XAUTOCLAIM gives jobs of dead
//!                               workers to live ones after the visibility
//!                               timeout, and the entry's delivery counter
//!                               counts those crashes.
//!   P:{P:q:Q}:delayed   ZSET    jobs waiting for a retry or a run time:
//!                               member = envelope, score = due (unix ms).
//!                               Promoted into the stream by a script in
//!                               bounded batches.
//!   P:{P:q:Q}:dead      HASH    dead-letter id -> dead-letter record (JSON:
//!                               the job, its last error, its history).
//!   P:{P:q:Q}:dead:idx  ZSET    dead-letter ids by failure time (unix ms),
//!                               for listing newest first and time filters.
//!   P:{P:q:Q}:stats     HASH    counters: processed, failed, retried, dead.
//!   P:{P:q:Q}:rate:M    HASH    processed, failed during unix minute M (for
//!                               rates); expires after two hours.
//!
//! Webhook registry
//!   P:webhooks          HASH    webhook id -> webhook record (JSON, with
//!                               its secret: never returned by the API).
//!
//! Delivery history (tag {P:wh:W} per webhook W)
//!   P:{P:wh:W}:dlv      ZSET    the webhook's delivery ids by creation time
//!                               (unix ms); trimmed to
//!                               delivery.history_max_per_webhook.
//!   P:{P:wh:W}:stats    HASH    attempts, failures, last_delivery.
//!   P:dlv:D             STRING  delivery record (JSON: status, every
//!                               attempt, the payload sent); expires after
//!                               delivery.history_ttl.
//!
//! Metrics kept in Redis so one scrape of the API covers every worker
//!   P:metrics:delivery_latency  HASH  histogram of attempt durations:
//!                               "le_<seconds>" bucket counts, "count",
//!                               "sum_ms".
//!   P:dlv:D:retries     STRING  manual retries made of D (for the
//!                               `D_retry_n` ids); same expiry.
//! ```

use crate::config::KeyPrefix;

/// Keys of one queue.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    pub stream: String,
    pub delayed: String,
    pub dead: String,
    pub dead_index: String,
    pub stats: String,
    rate_prefix: String,
}

impl QueueKeys {
    pub fn new(prefix: &KeyPrefix, queue: &str) -> Self {
        let base = format!("{prefix}:{{{prefix}:q:{queue}}}");
        Self {
            stream: format!("{base}:stream"),
            delayed: format!("{base}:delayed"),
            dead: format!("{base}:dead"),
            dead_index: format!("{base}:dead:idx"),
            stats: format!("{base}:stats"),
            rate_prefix: format!("{base}:rate:"),
        }
    }

    /// Counts of one unix minute (`unix ms / 60 000`).
    pub fn rate(&self, minute: i64) -> String {
        format!("{}{minute}", self.rate_prefix)
    }
}

/// How long per-minute rate counters are kept.
pub const RATE_TTL_SECS: i64 = 7200;

/// The consumer group every worker joins.
pub const CONSUMER_GROUP: &str = "workers";

/// The stream field that carries the job envelope.
pub const JOB_FIELD: &str = "j";

pub fn webhooks(prefix: &KeyPrefix) -> String {
    format!("{prefix}:webhooks")
}

pub fn webhook_deliveries(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:dlv")
}

pub fn webhook_stats(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:stats")
}

pub fn delivery(prefix: &KeyPrefix, delivery_id: &str) -> String {
    format!("{prefix}:dlv:{delivery_id}")
}

pub fn delivery_latency(prefix: &KeyPrefix) -> String {
    format!("{prefix}:metrics:delivery_latency")
}

pub fn delivery_retries(prefix: &KeyPrefix, delivery_id: &str) -> String {
    format!("{prefix}:dlv:{delivery_id}:retries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let prefix = KeyPrefix::parse("sr").unwrap();
        let keys = QueueKeys::new(&prefix, "deliver");
        assert_eq!(keys.stream, "sr:{sr:q:deliver}:stream");
        for key in [&keys.delayed, &keys.dead, &keys.dead_index, &keys.stats] {
            assert!(key.starts_with("sr:{sr:q:deliver}:"), "{key}");
        }
    }
}
