//! Building and running a worker process from settings. `main` and the
//! tests both call [`run`], so what is tested is what ships.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::egress::{EgressClient, EgressOptions};
use shared::retry::RetryPolicy;
use shared::services::Services;
use tokio_util::sync::CancellationToken;

use crate::delivery::DeliveryHandler;
use crate::runtime::{QueueRunner, RunnerSettings};

/// How long a blocking read waits for a job before the loop looks around
/// (shutdown, reclaim); bounds how late a stop is noticed.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Runs every queue's consumer until `stop` is cancelled and the jobs in
/// hand are finished or handed back.
pub async fn run(services: Services, stop: CancellationToken) -> anyhow::Result<()> {
    let settings = services.settings.clone();
    let consumer = consumer_name();
    tracing::info!(consumer, "worker starting");
    let egress = EgressClient::new(
        services.policy.clone(),
        services.resolver.clone(),
        EgressOptions {
            timeout: settings.delivery.timeout,
            connect_timeout: settings.delivery.timeout.min(Duration::from_secs(10)),
            user_agent: format!("SupportRAG/{}", env!("CARGO_PKG_VERSION")),
            pool_max_idle_per_host: 32,
        },
    )
    .context("building the HTTP client")?;
    let delivery = QueueRunner {
        handler: Arc::new(DeliveryHandler {
            webhooks: services.webhooks.clone(),
            deliveries: services.deliveries.clone(),
            publisher: services.publisher.clone(),
            egress,
        }),
        client: services.queue.clone(),
        read_conn: shared::redis_conn::connect_blocking(&settings.redis, READ_BLOCK)?,
        consumer: consumer.clone(),
        policy: Arc::new(RetryPolicy::new(
            settings.delivery.retry_schedule.clone(),
            settings.delivery.retry_jitter,
            settings.delivery.max_retry_after,
        )),
        settings: RunnerSettings::new(&settings.queue, settings.delivery.concurrency, READ_BLOCK),
    };
    delivery.run(stop).await;
    tracing::info!(consumer, "worker stopped");
    Ok(())
}

/// Unique per process, readable in `XINFO CONSUMERS`: host, pid, and a
/// random suffix so a restarted process with a reused pid is a new consumer.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}
