//! The dead-letter set: jobs out of attempts, kept with their labels, last
//! error and history until an administrator replays or discards them.
//!
//! Each dead letter is indexed by failure time, once for its queue and once
//! per label value, so a listing filtered by one label reads one page of
//! one index, never the whole set.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::client::QueueClient;
use crate::ids::{DeadLetterId, JobId};
use crate::keys::{JOB_FIELD, QueueKeys};
use crate::scripts;
use crate::{AttemptError, Envelope, Labels, QueueError};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    pub dead_letter_id: DeadLetterId,
    pub job_type: String,
    /// Absent when the job was too broken to read its id.
    pub job_id: Option<JobId>,
    #[serde(default)]
    pub labels: Labels,
    /// Attempts made in the run that ended here (crashes included).
    pub attempts: u32,
    /// Attempts made in earlier runs (before replays): `prior_attempts +
    /// attempts` numbers this dead-lettering among all of the job's.
    #[serde(default)]
    pub prior_attempts: u32,
    pub last_error: String,
    #[serde(with = "rfc3339")]
    pub failed_at: DateTime<Utc>,
    pub history: Vec<AttemptError>,
    /// The job as it was stored (an envelope), or the raw text when it
    /// could not be decoded; replay re-enqueues it from here.
    pub job: serde_json::Value,
}

impl DeadLetter {
    /// Every index that lists this dead letter.
    pub(crate) fn index_keys(&self, keys: &QueueKeys) -> Vec<String> {
        std::iter::once(keys.dead_index.clone())
            .chain(
                self.labels
                    .iter()
                    .map(|(name, value)| keys.dead_label_index(name, value)),
            )
            .collect()
    }
}

/// Which dead letters to list or replay. Every field narrows.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    pub job_type: Option<String>,
    /// Each label must have exactly this value.
    pub labels: Labels,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.job_type.as_ref().is_none_or(|j| *j == d.job_type)
            && self
                .labels
                .iter()
                .all(|(name, value)| d.labels.get(name) == Some(value))
    }

    fn score_range(&self) -> (String, String) {
        let min = self
            .since
            .map_or("-inf".to_owned(), |t| t.timestamp_millis().to_string());
        let max = self
            .until
            .map_or("+inf".to_owned(), |t| t.timestamp_millis().to_string());
        (min, max)
    }
}

/// One page of a listing, and how many match in all.
#[derive(Clone, Debug)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub total: u64,
}

/// A dead letter's place in a listing: newest first, ties by id.
type Ranked = (Reverse<i64>, Reverse<String>, usize);

/// Index entries read per round trip when a listing has to check records
/// (a filter on two labels or more).
const SCAN_BATCH: usize = 500;

impl QueueClient {
    /// The dead letters of `queues` matching `filter`, newest first,
    /// `limit` of them after skipping `offset`.
    ///
    /// With no label filter or one, this reads `offset + limit` ids of one
    /// index per queue and the records of the page only. With two labels or
    /// more it walks the smallest of their indexes, reading its records.
    pub async fn dead_letters(
        &self,
        queues: &[&str],
        filter: &DeadLetterFilter,
        offset: usize,
        limit: usize,
    ) -> Result<DeadLetterPage, QueueError> {
        let wanted = offset.saturating_add(limit);
        let mut ranked: Vec<Ranked> = Vec::new();
        let mut total = 0;
        for (q, queue) in queues.iter().enumerate() {
            if filter.job_type.as_deref().is_some_and(|j| j != *queue) {
                continue;
            }
            let (ids, matching) = self.matching_ids(queue, filter, wanted).await?;
            total += matching;
            ranked.extend(
                ids.into_iter()
                    .map(|(id, score)| (Reverse(score), Reverse(id), q)),
            );
        }
        ranked.sort();
        if offset >= ranked.len() || limit == 0 {
            return Ok(DeadLetterPage {
                items: Vec::new(),
                total,
            });
        }
        let mut pipe = redis::pipe();
        for (_, Reverse(id), q) in ranked.into_iter().skip(offset).take(limit) {
            pipe.hget(self.keys(queues[q]).dead, id);
        }
        let records: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.connection()).await?;
        // A record gone since the index was read (replayed or discarded)
        // makes the page one shorter rather than wrong.
        let items = records
            .into_iter()
            .flatten()
            .filter_map(|raw| serde_json::from_slice(&raw).ok())
            .collect();
        Ok(DeadLetterPage { items, total })
    }

    /// Up to `wanted` (id, failed-at) pairs of `queue` matching `filter`,
    /// newest first, and how many match in all.
    async fn matching_ids(
        &self,
        queue: &str,
        filter: &DeadLetterFilter,
        wanted: usize,
    ) -> Result<(Vec<(String, i64)>, u64), QueueError> {
        let keys = self.keys(queue);
        let (min, max) = filter.score_range();
        let mut conn = self.connection();
        let indexes: Vec<String> = if filter.labels.is_empty() {
            vec![keys.dead_index.clone()]
        } else {
            filter
                .labels
                .iter()
                .map(|(name, value)| keys.dead_label_index(name, value))
                .collect()
        };
        let mut sizes = Vec::with_capacity(indexes.len());
        for index in &indexes {
            let size: u64 = conn.zcount(index, &min, &max).await?;
            sizes.push(size);
        }
        let Some((smallest, &size)) = sizes.iter().enumerate().min_by_key(|(_, n)| **n) else {
            return Ok((Vec::new(), 0));
        };
        let driver = &indexes[smallest];
        if indexes.len() == 1 {
            let ids: Vec<(String, i64)> = conn
                .zrevrangebyscore_limit_withscores(driver, &max, &min, 0, wanted as isize)
                .await?;
            return Ok((ids, size));
        }
        let mut out = Vec::new();
        let mut matching = 0;
        let mut offset = 0;
        loop {
            let batch: Vec<(String, i64)> = conn
                .zrevrangebyscore_limit_withscores(
                    driver,
                    &max,
                    &min,
                    offset as isize,
                    SCAN_BATCH as isize,
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            offset += batch.len();
            let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
            let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&keys.dead)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for ((id, score), raw) in batch.into_iter().zip(records) {
                let Some(record) = raw.and_then(|r| serde_json::from_slice::<DeadLetter>(&r).ok())
                else {
                    continue;
                };
                if filter.matches(&record) {
                    matching += 1;
                    if out.len() < wanted {
                        out.push((id, score));
                    }
                }
            }
        }
        Ok((out, matching))
    }

    pub async fn dead_letter_get(
        &self,
        queues: &[&str],
        id: &DeadLetterId,
    ) -> Result<Option<DeadLetter>, QueueError> {
        for queue in queues {
            let keys = self.keys(queue);
            let raw: Option<Vec<u8>> = self.connection().hget(&keys.dead, id.as_str()).await?;
            if let Some(raw) = raw {
                return Ok(Some(serde_json::from_slice(&raw)?));
            }
        }
        Ok(None)
    }

    /// Re-enqueues one dead letter with a fresh run of attempts, its attempt
    /// numbering continuing. Returns false when it was no longer there
    /// (already replayed or discarded), which makes replays idempotent.
    pub async fn dead_letter_replay(&self, dead: &DeadLetter) -> Result<bool, QueueError> {
        let keys = self.keys(&dead.job_type);
        let job = match serde_json::from_value::<Envelope<serde_json::Value>>(dead.job.clone()) {
            Ok(envelope) => serde_json::to_vec(&envelope.restarted())?,
            // An undecodable job goes back as it was: the fix was presumably
            // deployed in the worker, not in the bytes.
            Err(_) => match &dead.job {
                serde_json::Value::String(raw) => raw.clone().into_bytes(),
                other => serde_json::to_vec(other)?,
            },
        };
        let mut invocation = scripts::REPLAY.key(&keys.dead);
        invocation.key(&keys.stream);
        for index in dead.index_keys(&keys) {
            invocation.key(index);
        }
        let replayed: i64 = invocation
            .arg(dead.dead_letter_id.as_str())
            .arg(JOB_FIELD)
            .arg(job)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(replayed == 1)
    }

    /// Discards one dead letter on purpose. False when it was not there.
    pub async fn dead_letter_discard(&self, dead: &DeadLetter) -> Result<bool, QueueError> {
        let keys = self.keys(&dead.job_type);
        let mut invocation = scripts::DISCARD.key(&keys.dead);
        for index in dead.index_keys(&keys) {
            invocation.key(index);
        }
        let removed: i64 = invocation
            .arg(dead.dead_letter_id.as_str())
            .invoke_async(&mut self.connection())
            .await?;
        Ok(removed == 1)
    }
}

/// Timestamps as RFC 3339 with `Z`, millisecond precision, as everything
/// a person reads.
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}
