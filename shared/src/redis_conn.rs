//! Opening Redis connections the same way everywhere: lazily (a process
//! starts even while Redis is down and connects when it comes back), with
//! a response timeout (a hung Redis becomes an error, not a hung request),
//! capped reconnect backoff, and TLS for `rediss://` URLs.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ClientTlsConfig, ErrorKind, RedisError, TlsCertificates};

use crate::config::RedisSettings;

/// A connection for ordinary commands, shared (multiplexed) by every task.
pub fn connect(settings: &RedisSettings) -> Result<ConnectionManager, RedisError> {
    open(settings, settings.command_timeout)
}

/// A connection for one loop's blocking reads: a `BLOCK` command would
/// stall every other command multiplexed behind it, so blocking readers
/// get their own, with a timeout that allows for the block.
pub fn connect_blocking(
    settings: &RedisSettings,
    block: Duration,
) -> Result<ConnectionManager, RedisError> {
    open(settings, settings.command_timeout + block)
}

fn open(
    settings: &RedisSettings,
    response_timeout: Duration,
) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(settings.command_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(2);
    ConnectionManager::new_lazy_with_config(client(settings)?, config)
}

/// A client for `redis.url`; for `rediss://`, with the CA and client
/// certificate files of the settings read now, so a wrong path stops the
/// start naming its key instead of failing every reconnect.
pub fn client(settings: &RedisSettings) -> Result<redis::Client, RedisError> {
    if !settings.url.is_tls() {
        return redis::Client::open(settings.url.as_str());
    }
    // rustls needs one process-wide crypto provider; reqwest brings the
    // same one. Installing twice is refused harmlessly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root_cert = settings
        .tls_ca_file
        .as_deref()
        .map(|path| read("redis.tls_ca_file", path))
        .transpose()?;
    let client_tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("redis.tls_cert_file", cert)?,
            client_key: read("redis.tls_key_file", key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        settings.url.as_str(),
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, RedisError> {
    std::fs::read(path).map_err(|e| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "unreadable TLS file",
            format!("{key} = {}: {e}", path.display()),
        ))
    })
}
