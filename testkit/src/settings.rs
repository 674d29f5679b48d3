//! Settings for a test: the shipped defaults, pointed at the test's own
//! Redis, with every wait shortened so retries, reclaims and shutdowns
//! happen in milliseconds instead of minutes.
//!
//! Each call gets a random key prefix, so even two tests on one Redis could
//! not see each other's keys.

use std::time::Duration;

use shared::config::{KeyPrefix, RedisUrl, Settings};

/// The admin key [`test_settings`] configures.
pub const TEST_ADMIN_KEY: &str = "test-admin-key-0123456789";

pub fn test_settings(redis_url: &str) -> Settings {
    let mut settings =
        Settings::defaults().expect("testkit: the compiled-in default configuration must load");
    settings.redis.url = RedisUrl::parse(redis_url)
        .unwrap_or_else(|e| panic!("testkit: {redis_url:?} is not a Redis URL: {e}"));
    settings.redis.key_prefix = KeyPrefix::parse(&format!("t{:016x}", rand::random::<u64>()))
        .expect("testkit: a hex key prefix is always valid");
    settings.security.allowed_cidrs = vec![
        "127.0.0.0/8"
            .parse()
            .expect("testkit: a literal CIDR parses"),
    ];
    settings.delivery.retry_schedule = vec![Duration::from_millis(50), Duration::from_millis(100)];
    settings.delivery.retry_jitter = 0.0;
    settings.delivery.timeout = Duration::from_secs(2);
    settings.queue.visibility_timeout = Duration::from_secs(2);
    settings.queue.poll_interval = Duration::from_millis(20);
    settings.queue.shutdown_timeout = Duration::from_secs(5);
    settings.ingest.retry_schedule = vec![Duration::from_millis(50), Duration::from_millis(100)];
    settings.ingest.fetch_timeout = Duration::from_secs(3);
    settings.ingest.parse_timeout = Duration::from_secs(10);
    settings.chat.completion_wait = Duration::from_secs(10);
    // Tests change webhooks and send at once; the cache's only effect
    // would be to delay that by its TTL.
    settings.incoming.webhook_cache_ttl = Duration::ZERO;
    settings.auth.admin_keys = vec![TEST_ADMIN_KEY.to_owned()];
    settings.log.level = "warn".to_owned();
    settings
}
