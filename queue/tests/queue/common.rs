//! What the queue's tests share: a queue on a test's own redis-server with
//! every wait shortened, and runners built on it.

use std::sync::Arc;
use std::time::Duration;

use queue::runtime::{Handler, QueueRunner, RunnerSettings};
use queue::{KeyPrefix, QueueClient, RetryPolicy};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use testkit::TestRedis;

/// How long one blocking read waits: bounds how late a stop is noticed.
pub const READ_BLOCK: Duration = Duration::from_millis(200);

/// A queue namespace of its own (random prefix) on a test's Redis.
#[derive(Clone)]
pub struct TestQueue {
    pub url: String,
    pub prefix: KeyPrefix,
    pub runner: RunnerSettings,
    /// Delays between attempts: two retries, so three attempts in all.
    pub retry_schedule: Vec<Duration>,
}

impl TestQueue {
    pub fn new(redis: &TestRedis) -> Self {
        Self::at(redis.url())
    }

    pub fn at(url: String) -> Self {
        Self {
            url,
            prefix: KeyPrefix::parse(&format!("t{:016x}", rand::random::<u64>()))
                .expect("a hex prefix is valid"),
            runner: RunnerSettings {
                concurrency: 64,
                batch_size: 64,
                block: READ_BLOCK,
                visibility_timeout: Duration::from_secs(2),
                poll_interval: Duration::from_millis(20),
                promote_batch: 500,
                shutdown_timeout: Duration::from_secs(5),
            },
            retry_schedule: vec![Duration::from_millis(50), Duration::from_millis(100)],
        }
    }

    /// A connection with a response timeout that allows for blocking reads.
    pub fn connection(&self) -> ConnectionManager {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2) + READ_BLOCK))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        ConnectionManager::new_lazy_with_config(client, config).expect("redis connection")
    }

    pub fn client(&self) -> QueueClient {
        QueueClient::new(self.connection(), self.prefix.clone())
    }

    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retry_schedule.clone(), 0.0, Duration::from_secs(1))
    }

    pub fn runner<H: Handler>(&self, consumer: &str, handler: Arc<H>) -> QueueRunner<H> {
        QueueRunner {
            handler,
            client: self.client(),
            read_conn: self.connection(),
            consumer: consumer.to_owned(),
            policy: Arc::new(self.policy()),
            settings: self.runner.clone(),
        }
    }
}
