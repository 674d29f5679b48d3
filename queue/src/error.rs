//! What can go wrong talking to the queue, and which of it is worth a
//! retry.

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// Replicas were asked for ([`crate::Durability`]) and fewer confirmed
    /// the write in time: the job is in the primary but may not survive its
    /// loss, so the caller must not promise it (answer 503; a retry of an
    /// idempotent push is then answered as a duplicate).
    #[error("only {acked} of {wanted} replica(s) confirmed the write in time")]
    NotReplicated { acked: u64, wanted: u32 },
}

impl QueueError {
    /// Whether the error is Redis being out of reach or temporarily unable
    /// to serve (as opposed to a bad reply), so callers answer 503 and
    /// retry rather than give up.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Redis(e) => is_unavailable(e),
            QueueError::NotReplicated { .. } => true,
            QueueError::Encode(_) | QueueError::Reply(_) => false,
        }
    }

    /// Whether the stream's consumer group is missing: its creation failed
    /// while Redis was unavailable, or Redis lost it (a restart without
    /// persistence). The runner creates it again.
    pub fn is_missing_group(&self) -> bool {
        matches!(self, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// Server error codes that mean "not now": still loading its data
/// (`LOADING`), busy with a script (`BUSY`), out of memory (`OOM`), a
/// replica or a master being failed over (`READONLY`, `MASTERDOWN`,
/// `NOREPLICAS`), a cluster resharding or down (`TRYAGAIN`, `CLUSTERDOWN`),
/// or unable to persist (`MISCONF`).
const PASSING: &[&str] = &[
    "LOADING",
    "BUSY",
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MISCONF",
];

/// Failures that pass: the connection is refused, reset or timed out, or
/// the server answers one of [`PASSING`] (alone, or for a command of a
/// pipeline or transaction).
pub fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, err)| PASSING.contains(&err.code())))
}
