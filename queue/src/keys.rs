//! Every Redis key the queue uses, and why it has the shape it has.
//!
//! All keys start with a prefix (`P` below, [`KeyPrefix`]). The keys of one
//! queue share one `{hash tag}`, so every script and transaction of the
//! queue touches a single slot and the layout works on Redis Cluster.
//!
//! ```text
//! Queue Q (tag {P:q:Q})
//!   P:{P:q:Q}:stream    STREAM  ready and in-flight entries. Field "j" =
//!                               a job envelope (JSON); field "dead" = a
//!                               dead-letter notice (the dead-letter record,
//!                               JSON), written in the same script that
//!                               dead-letters a job so the handler's
//!                               `on_dead` runs after the move, at least
//!                               once. Consumer group "workers": XREADGROUP
//!                               hands an entry to one consumer; it stays
//!                               in the group's pending list, owned by that
//!                               consumer, until a settle script acks and
//!                               deletes it. XPENDING + XCLAIM (the reclaim
//!                               script) give entries of consumers silent
//!                               for the visibility timeout to live ones;
//!                               the entry's delivery counter counts those
//!                               reclaims.
//!   P:{P:q:Q}:delayed   ZSET    jobs waiting for a retry or a run time:
//!                               member = envelope, score = due (unix ms).
//!                               Promoted into the stream by a script in
//!                               bounded batches.
//!   P:{P:q:Q}:dead      HASH    dead-letter id -> dead-letter record (JSON:
//!                               the job, its labels, last error, history).
//!   P:{P:q:Q}:dead:idx  ZSET    dead-letter ids by failure time (unix ms).
//!   P:{P:q:Q}:dead:lbl:N=V
//!                       ZSET    the same, for dead letters whose label N
//!                               is V (one index per label value), so a
//!                               filtered listing reads one page, never
//!                               the whole set.
//!   P:{P:q:Q}:stats     HASH    counters: processed, failed, retried, dead,
//!                               lost (settles refused: the entry had been
//!                               reclaimed by another consumer).
//!   P:{P:q:Q}:rate:M    HASH    processed, failed during unix minute M (for
//!                               rates); expires after two hours.
//!   P:{P:q:Q}:once:K    STRING  idempotency key K: the first caller's
//!                               answer; set in the script that XADDs the
//!                               job, expires after the caller's TTL.
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The namespace under which every key lives. Braces are refused because
/// they would break the per-queue Redis Cluster hash tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if valid {
            Ok(KeyPrefix(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} must be 1-64 characters of letters, digits, '_', '-', '.', ':'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        KeyPrefix::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Keys of one queue.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    pub stream: String,
    pub delayed: String,
    pub dead: String,
    pub dead_index: String,
    pub stats: String,
    base: String,
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
            base,
        }
    }

    /// Counts of one unix minute (`unix ms / 60 000`).
    pub fn rate(&self, minute: i64) -> String {
        format!("{}:rate:{minute}", self.base)
    }

    /// An idempotency key of this queue.
    pub fn once(&self, key: &str) -> String {
        format!("{}:once:{key}", self.base)
    }

    /// The dead-letter index of one label value.
    pub fn dead_label_index(&self, name: &str, value: &str) -> String {
        format!("{}:dead:lbl:{name}={value}", self.base)
    }
}

/// How long per-minute rate counters are kept.
pub const RATE_TTL_SECS: i64 = 7200;

/// The consumer group every worker joins.
pub const CONSUMER_GROUP: &str = "workers";

/// The stream field that carries a job envelope.
pub const JOB_FIELD: &str = "j";

/// The stream field that carries a dead-letter notice.
pub const DEAD_NOTICE_FIELD: &str = "dead";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let prefix = KeyPrefix::parse("sr").unwrap();
        let keys = QueueKeys::new(&prefix, "deliver");
        assert_eq!(keys.stream, "sr:{sr:q:deliver}:stream");
        for key in [
            &keys.delayed,
            &keys.dead,
            &keys.dead_index,
            &keys.stats,
            &keys.rate(1),
            &keys.once("k"),
            &keys.dead_label_index("webhook_id", "w"),
        ] {
            assert!(key.starts_with("sr:{sr:q:deliver}:"), "{key}");
        }
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(KeyPrefix::parse("a{b}").is_err());
        assert!(KeyPrefix::parse("").is_err());
        assert!(KeyPrefix::parse("support:rag-1.0").is_ok());
    }
}
