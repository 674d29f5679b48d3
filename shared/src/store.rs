//! The storage failure every store shares: Redis out of reach or refusing
//! a command, or a record that cannot be read back. Domain errors keep what
//! means something to a caller (not found, conflict, ended ...) and wrap
//! this as their `Store` variant, so whether a failure is worth a retry is
//! judged in one place.

use crate::webhooks::secret_box::SecretBoxError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A record that does not decode (encoding one that was built in
    /// memory does not fail in practice, and lands here too).
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A record or script reply of a shape this version does not know.
    #[error("stored record is malformed: {0}")]
    Malformed(String),
    #[error("webhook {webhook_id}: its secret cannot be decrypted: {source}")]
    Secret {
        webhook_id: String,
        source: SecretBoxError,
    },
}

impl StoreError {
    /// Redis out of reach or unable to serve for now (by the queue's rule,
    /// so every store and the queue judge Redis alike): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Redis(e) if queue::is_unavailable(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_owned(), Some("from the test".to_owned()))
    }

    #[test]
    fn only_redis_refusing_for_now_is_unavailable() {
        assert!(StoreError::Redis(reply("LOADING")).is_unavailable());
        assert!(!StoreError::Redis(reply("WRONGTYPE")).is_unavailable());
        assert!(!StoreError::Malformed("x".to_owned()).is_unavailable());
    }
}
