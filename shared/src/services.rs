//! The stores and clients a process needs, built once from settings so the
//! API, the worker and tests wire them the same way.

use std::sync::Arc;

use crate::config::Settings;
use crate::deliveries::DeliveryStore;
use crate::publish::Publisher;
use crate::queue::QueueClient;
use crate::ssrf::{NameResolver, SsrfPolicy, SystemResolver};
use crate::webhooks::WebhookStore;

#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub queue: QueueClient,
    pub webhooks: WebhookStore,
    pub deliveries: DeliveryStore,
    pub publisher: Publisher,
    pub policy: SsrfPolicy,
    pub resolver: Arc<dyn NameResolver>,
}

impl Services {
    /// Connects lazily: this succeeds while Redis is down.
    pub fn connect(settings: Settings) -> Result<Self, redis::RedisError> {
        Self::with_resolver(settings, Arc::new(SystemResolver))
    }

    /// As [`Services::connect`], with the DNS resolver the SSRF checks use
    /// (tests pass a fixed one to play DNS tricks).
    pub fn with_resolver(
        settings: Settings,
        resolver: Arc<dyn NameResolver>,
    ) -> Result<Self, redis::RedisError> {
        let conn = crate::redis_conn::connect(&settings.redis)?;
        let prefix = settings.redis.key_prefix.clone();
        let queue = QueueClient::new(conn.clone(), prefix.clone());
        let webhooks = WebhookStore::new(conn.clone(), &prefix);
        let deliveries = DeliveryStore::new(
            conn,
            prefix,
            settings.delivery.history_ttl,
            settings.delivery.history_max_per_webhook,
        );
        let publisher = Publisher {
            webhooks: webhooks.clone(),
            deliveries: deliveries.clone(),
            queue: queue.clone(),
        };
        let policy = SsrfPolicy::new(settings.security.allowed_cidrs.clone());
        Ok(Self {
            settings: Arc::new(settings),
            queue,
            webhooks,
            deliveries,
            publisher,
            policy,
            resolver,
        })
    }
}
