//! The dead-letter set: jobs out of attempts, kept with their last error and
//! history until an administrator replays or discards them.
//!
//! Listing reads the per-queue time index and filters in memory: dead
//! letters are the exception, not the traffic, so a scan over them is cheap
//! and keeps the write path to a single transaction.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::client::QueueClient;
use super::scripts;
use super::{AttemptError, Envelope, JobLabels, QueueError};
use crate::ids::{DeadLetterId, JobId};
use crate::keys::JOB_FIELD;
use crate::time::serde_rfc3339;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    pub dead_letter_id: DeadLetterId,
    pub job_type: String,
    /// Absent when the job was too broken to read its id.
    pub job_id: Option<JobId>,
    #[serde(flatten)]
    pub labels: JobLabels,
    pub attempts: u32,
    pub last_error: String,
    #[serde(with = "serde_rfc3339")]
    pub failed_at: DateTime<Utc>,
    pub history: Vec<AttemptError>,
    /// The job as it was stored (an envelope), or the raw text when it
    /// could not be decoded; replay re-enqueues it from here.
    pub job: serde_json::Value,
}

/// What the list endpoint shows of one dead letter.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterSummary {
    pub dead_letter_id: String,
    pub job_type: String,
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: String,
}

impl From<&DeadLetter> for DeadLetterSummary {
    fn from(d: &DeadLetter) -> Self {
        Self {
            dead_letter_id: d.dead_letter_id.to_string(),
            job_type: d.job_type.clone(),
            job_id: d.job_id.as_ref().map(ToString::to_string),
            delivery_id: d.labels.delivery_id.clone(),
            webhook_id: d.labels.webhook_id.clone(),
            event_id: d.labels.event_id.clone(),
            event_type: d.labels.event_type.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            failed_at: crate::time::rfc3339(d.failed_at),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    pub webhook_id: Option<String>,
    pub event_type: Option<String>,
    pub job_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        same(&self.webhook_id, &d.labels.webhook_id)
            && same(&self.event_type, &d.labels.event_type)
            && self.job_type.as_ref().is_none_or(|w| *w == d.job_type)
    }
}

impl QueueClient {
    /// Dead letters of the given queues matching `filter`, newest first.
    pub async fn dead_letters(
        &self,
        queues: &[&str],
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let min = filter
            .since
            .map_or("-inf".to_owned(), |t| t.timestamp_millis().to_string());
        let max = filter
            .until
            .map_or("+inf".to_owned(), |t| t.timestamp_millis().to_string());
        let mut all = Vec::new();
        for queue in queues {
            if filter.job_type.as_deref().is_some_and(|j| j != *queue) {
                continue;
            }
            let keys = self.keys(queue);
            let mut conn = self.connection();
            let ids: Vec<String> = conn.zrevrangebyscore(&keys.dead_index, &max, &min).await?;
            for chunk in ids.chunks(500) {
                let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                    .arg(&keys.dead)
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await?;
                all.extend(
                    records
                        .into_iter()
                        .flatten()
                        .filter_map(|raw| serde_json::from_slice::<DeadLetter>(&raw).ok())
                        .filter(|d| filter.matches(d)),
                );
            }
        }
        all.sort_by(|a, b| {
            b.failed_at
                .cmp(&a.failed_at)
                .then(b.dead_letter_id.cmp(&a.dead_letter_id))
        });
        Ok(all)
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
        let replayed: i64 = scripts::REPLAY
            .key(&keys.dead)
            .key(&keys.dead_index)
            .key(&keys.stream)
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
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&keys.dead, dead.dead_letter_id.as_str())
            .zrem(&keys.dead_index, dead.dead_letter_id.as_str())
            .ignore();
        let (removed,): (i64,) = pipe.query_async(&mut self.connection()).await?;
        Ok(removed == 1)
    }
}
