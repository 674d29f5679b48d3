//! The stored form of a job: its payload plus what the queue needs to know
//! about it whatever its type (id, attempts, trace id, error history).

use serde::{Deserialize, Serialize};

use crate::ids::JobId;
use crate::time::now_ms;
use crate::trace_id::TraceId;

/// Bumped when the envelope's shape changes incompatibly; a worker refuses
/// (dead-letters, with the reason) an envelope of a version it does not know
/// instead of guessing.
pub const ENVELOPE_VERSION: u32 = 1;

/// Only the newest errors are kept, so a job's size stays bounded however
/// often it fails.
const MAX_ERRORS_KEPT: usize = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<P> {
    pub v: u32,
    pub id: JobId,
    /// The queue (= job type) it was made for.
    pub kind: String,
    /// Attempts that failed in this run of the job (crashes included once
    /// the job is reclaimed).
    pub attempt: u32,
    /// Attempts made before a manual retry or a replay started this run:
    /// the attempt number shown to receivers continues from them.
    #[serde(default)]
    pub prior_attempts: u32,
    pub trace_id: TraceId,
    /// Unix ms.
    pub enqueued_at: i64,
    #[serde(default)]
    pub errors: Vec<AttemptError>,
    pub payload: P,
}

/// One failed attempt, as kept in the job's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Attempt number within this run, from 1.
    pub attempt: u32,
    /// Unix ms.
    pub at: i64,
    pub error: String,
}

impl<P> Envelope<P> {
    pub fn new(kind: &str, payload: P, trace_id: TraceId) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id: JobId::generate(),
            kind: kind.to_owned(),
            attempt: 0,
            prior_attempts: 0,
            trace_id,
            enqueued_at: now_ms(),
            errors: Vec::new(),
            payload,
        }
    }

    /// The same job after one more failed attempt.
    pub fn failed(mut self, error: String) -> Self {
        self.attempt = self.attempt.saturating_add(1);
        self.errors.push(AttemptError {
            attempt: self.attempt,
            at: now_ms(),
            error,
        });
        if self.errors.len() > MAX_ERRORS_KEPT {
            let excess = self.errors.len() - MAX_ERRORS_KEPT;
            self.errors.drain(..excess);
        }
        self
    }

    /// The same job starting a fresh run of attempts (replay), its attempt
    /// numbering continuing where the last run stopped.
    pub fn restarted(mut self) -> Self {
        self.prior_attempts = self.prior_attempts.saturating_add(self.attempt);
        self.attempt = 0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_history_is_bounded() {
        let mut env = Envelope::new("t", (), TraceId::generate());
        for n in 0..25 {
            env = env.failed(format!("boom {n}"));
        }
        assert_eq!(env.attempt, 25);
        assert_eq!(env.errors.len(), MAX_ERRORS_KEPT);
        assert_eq!(env.errors.last().unwrap().error, "boom 24");
        let env = env.restarted();
        assert_eq!((env.attempt, env.prior_attempts), (0, 25));
    }

    #[test]
    fn a_stored_envelope_reads_and_writes_back_byte_for_byte() -> Result<(), serde_json::Error> {
        let stored = r#"{"v":1,"id":"job_01jbx7g0000000000000000000","kind":"t","attempt":2,"prior_attempts":0,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","enqueued_at":1,"errors":[],"payload":null}"#;
        let env: Envelope<()> = serde_json::from_str(stored)?;
        assert_eq!(env.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(serde_json::to_string(&env)?, stored);
        Ok(())
    }
}
