//! Where each worker's search replica stands, kept in Redis so that one
//! scrape of the API's `/metrics` covers every worker (workers serve no
//! metrics of their own), as the delivery latency histogram is.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::config::KeyPrefix;
use crate::keys;

/// One worker's last report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub lag_entries: u64,
    pub lag_ms: u64,
    pub chunks: u64,
    pub caught_up: bool,
    /// When it was reported (unix ms).
    pub at_ms: i64,
}

#[derive(Clone)]
pub struct ReplicaReports {
    conn: ConnectionManager,
    key: String,
}

impl ReplicaReports {
    pub fn new(conn: ConnectionManager, prefix: &KeyPrefix) -> Self {
        Self {
            conn,
            key: keys::search_replicas(prefix),
        }
    }

    pub async fn put(
        &self,
        replica: &str,
        report: &ReplicaReport,
    ) -> Result<(), redis::RedisError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        let _: i64 = self.conn.clone().hset(&self.key, replica, json).await?;
        Ok(())
    }

    /// Reports younger than `max_age`, by replica; older ones (of workers
    /// that stopped) are removed.
    pub async fn fresh(
        &self,
        max_age: Duration,
    ) -> Result<Vec<(String, ReplicaReport)>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<String, String> = conn.hgetall(&self.key).await?;
        let oldest = chrono::Utc::now().timestamp_millis() - max_age.as_millis() as i64;
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for (replica, json) in raw {
            match serde_json::from_str::<ReplicaReport>(&json) {
                Ok(report) if report.at_ms >= oldest => fresh.push((replica, report)),
                _ => stale.push(replica),
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.hdel(&self.key, stale).await?;
        }
        fresh.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(fresh)
    }
}
