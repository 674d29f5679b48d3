//! Opening Redis connections the same way everywhere: lazily (a process
//! starts even while Redis is down and connects when it comes back), with
//! a response timeout (a hung Redis becomes an error, not a hung request)
//! and capped reconnect backoff.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;

/// A connection for ordinary commands, shared (multiplexed) by every task.
pub fn connect(settings: &RedisSettings) -> Result<ConnectionManager, redis::RedisError> {
    open(settings, settings.command_timeout)
}

/// A connection for one loop's blocking reads: a `BLOCK` command would
/// stall every other command multiplexed behind it, so blocking readers
/// get their own, with a timeout that allows for the block.
pub fn connect_blocking(
    settings: &RedisSettings,
    block: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    open(settings, settings.command_timeout + block)
}

fn open(
    settings: &RedisSettings,
    response_timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(settings.url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(settings.command_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(2);
    ConnectionManager::new_lazy_with_config(client, config)
}
