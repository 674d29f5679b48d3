//! The job queue: typed jobs on Redis Streams, our own (see NOTES.md for
//! why not apalis-redis).
//!
//! A job's life, per queue (key layout in [`crate::keys`]):
//!
//! 1. `enqueue` → `XADD stream` (or `ZADD delayed` with a due time).
//! 2. A worker's `read` → `XREADGROUP … COUNT n BLOCK ms`: the job is now in
//!    the group's pending list, owned by that worker.
//! 3. Success → `ack` (`XACK` + `XDEL`, many ids per call, pipelined).
//!    Failure with attempts left → `retry` (`XACK` + `XDEL` + `ZADD delayed`
//!    in one transaction, the envelope's attempt count +1). Out of attempts
//!    → `dead_letter` (`XACK` + `XDEL` + record in the dead-letter hash, in
//!    one transaction).
//! 4. A worker that dies leaves its jobs pending; `reclaim` (`XAUTOCLAIM`
//!    after the visibility timeout) hands them to a live worker together
//!    with the entry's delivery counter, so every crash counts as an
//!    attempt and a job that keeps killing its worker ends dead-lettered
//!    instead of looping. Jobs already in flight in two crashes are
//!    reclaimed one at a time, so the jobs reclaimed next to a killer are
//!    not dead-lettered with it. Live workers `touch` their running jobs so a long
//!    job is not taken from them.
//! 5. `promote` moves due delayed jobs into the stream in bounded batches
//!    (any backlog drains; no reply ever holds more than one batch).
//!
//! Every step that moves a job between structures is one transaction or
//! script, so a job is always in exactly one place (stream, delayed set or
//! dead-letter set) whatever fails when.

mod client;
mod dead_letter;
mod envelope;
mod scripts;

pub use client::{Durability, Fetched, PushOnce, QueueClient, QueueDepth};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterSummary};
pub use envelope::{AttemptError, ENVELOPE_VERSION, Envelope};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A kind of job: its payload type and the queue it runs on.
pub trait Job: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The queue's name, also the job type shown to administrators.
    const QUEUE: &'static str;

    /// Ids that let an administrator find this job in the dead-letter set.
    fn labels(&self) -> JobLabels {
        JobLabels::default()
    }
}

/// Related ids kept beside a dead-lettered job for filtering.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLabels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// `redis.wait_replicas` is set and fewer replicas confirmed the write
    /// within `redis.wait_timeout`: the job is in the primary but may not
    /// survive its loss, so the caller must not promise it (answer 503;
    /// a retry of an idempotent enqueue is then answered as a duplicate).
    #[error("only {acked} of {wanted} replica(s) confirmed the write in time")]
    NotReplicated { acked: u64, wanted: u32 },
}

impl QueueError {
    /// Whether the error means Redis itself is out of reach (as opposed to a
    /// bad reply), so callers answer 503 and retry rather than give up.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Redis(e) => is_unavailable(e),
            QueueError::NotReplicated { .. } => true,
            _ => false,
        }
    }
}

/// Connection-level failures: refused, reset, timed out; or a server that
/// answers but cannot take commands right now (loading, a script running,
/// out of memory, a replica or failover in the way).
pub fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        // A pipeline or transaction reports the failing commands inside.
        || e.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, error)| TRANSIENT_SERVER_ERRORS.contains(&error.code()))
        })
}

/// Server error codes that mean "not now" rather than "never".
const TRANSIENT_SERVER_ERRORS: &[&str] = &[
    "LOADING",
    "BUSY",
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
];
