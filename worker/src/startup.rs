//! Building and running a worker process from settings. `main` and the
//! tests both call [`run`] (or [`run_with_parser`]), so what is tested is
//! what ships.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use queue::RetryPolicy;
use rag::chunk::ChunkOptions;
use rag::parse::ParseLimits;
use rag::parse::sandbox::{NetworkIsolation, ParserPool, SandboxLimits, network_isolation};
use shared::chat::answer_policy::Thresholds;
use shared::config::Settings;
use shared::knowledge::search_replicas::ReplicaReport;
use shared::net::egress::{EgressClient, EgressOptions};
use shared::services::Services;
use shared::webhooks::auto_disable::DisablePolicy;
use shared::webhooks::registry::WebhookCache;
use tokio_util::sync::CancellationToken;

use crate::chat::ChatHandler;
use crate::delivery::DeliveryHandler;
use crate::ingest::{IngestHandler, ParserCommand};
use crate::lanes::Lanes;
use crate::session::{SessionHandler, sweep_idle};
use queue::runtime::{Handler, QueueRunner};

/// How long a blocking read waits for a job before the loop looks around
/// (shutdown, reclaim); bounds how late a stop is noticed.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// The hidden command of the worker binary that parses one document from
/// stdin (see [`rag::parse::sandbox`]).
pub const PARSE_COMMAND: &str = "parse-document";

/// How often a worker reports its search replica's lag.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Concurrency of the session queue: ending a session is one publish.
const SESSION_CONCURRENCY: usize = 8;

/// Runs every queue's consumer until `stop` is cancelled and the jobs in
/// hand are finished or handed back. Documents are parsed by this very
/// executable (its `parse-document` command) in a child process.
pub async fn run(services: Services, stop: CancellationToken) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("locating the worker executable")?;
    run_with_parser(
        services,
        stop,
        ParserCommand {
            program,
            args: vec![PARSE_COMMAND.to_owned()],
        },
    )
    .await
}

/// As [`run`], with the command that parses documents given (tests that
/// run the worker inside a test binary point it at the worker binary).
pub async fn run_with_parser(
    services: Services,
    stop: CancellationToken,
    parser: ParserCommand,
) -> anyhow::Result<()> {
    let settings = services.settings.clone();
    let consumer = consumer_name();
    tracing::info!(consumer, "worker starting");
    services.check_eviction_policy().await?;
    services
        .webhooks
        .secure_at_start(settings.app.environment)
        .await?;
    log_parser_isolation().await;
    let egress = egress_client(&services, settings.delivery.timeout, 32)
        .context("building the delivery HTTP client")?;
    let fetcher = egress_client(&services, settings.ingest.fetch_timeout, 4)
        .context("building the document HTTP client")?;

    let delivery = runner(
        &services,
        &consumer,
        delivery_handler(&services, egress),
        RetryPolicy::new(
            settings.delivery.retry_schedule.clone(),
            settings.delivery.retry_jitter,
            settings.delivery.max_retry_after,
        ),
        settings.delivery.concurrency,
    )?;
    let chat = runner(
        &services,
        &consumer,
        chat_handler(&services)?,
        internal_retries(&settings),
        settings.chat.concurrency,
    )?;
    let ingest = runner(
        &services,
        &consumer,
        ingest_handler(&services, fetcher, parser),
        RetryPolicy::new(
            settings.ingest.retry_schedule.clone(),
            settings.delivery.retry_jitter,
            settings.delivery.max_retry_after,
        ),
        settings.ingest.concurrency,
    )?;
    let session = runner(
        &services,
        &consumer,
        SessionHandler {
            sessions: services.sessions.clone(),
            publisher: services.publisher.clone(),
        },
        internal_retries(&settings),
        SESSION_CONCURRENCY,
    )?;
    let sweep_every = (settings.chat.session_idle_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));

    if let Some(search) = &services.search {
        search.follow();
    }
    tokio::join!(
        delivery.run(stop.clone()),
        answer_chats_once_caught_up(&services, chat, stop.clone()),
        report_replica(&services, &consumer, stop.clone()),
        ingest.run(stop.clone()),
        session.run(stop.clone()),
        heartbeat(settings.worker.heartbeat_file.clone(), stop.clone()),
        sweep_idle(services.sessions.clone(), sweep_every, stop),
    );
    tracing::info!(consumer, "worker stopped");
    Ok(())
}

fn delivery_handler(services: &Services, egress: EgressClient) -> DeliveryHandler {
    let settings = &services.settings;
    DeliveryHandler {
        webhooks: services.webhooks.clone(),
        deliveries: services.deliveries.clone(),
        publisher: services.publisher.clone(),
        egress,
        lanes: Lanes::new(settings.delivery.per_webhook_concurrency),
        webhook_cache: WebhookCache::new(settings.delivery.webhook_cache_ttl),
        rate: services.rate_limiter.clone(),
        disable: DisablePolicy::from_settings(&settings.delivery),
        max_retry_after: settings.delivery.max_retry_after,
        sequences: services.publisher.sequences.clone(),
    }
}

fn chat_handler(services: &Services) -> anyhow::Result<ChatHandler> {
    let settings = &services.settings;
    Ok(ChatHandler {
        sessions: services.sessions.clone(),
        publisher: services.publisher.clone(),
        escalator: services.escalator.clone(),
        handover: services.handover.clone(),
        knowledge: services.knowledge.clone(),
        stats: services.chat_stats.clone(),
        gaps: services.gaps.clone(),
        thresholds: Thresholds::new(
            settings.chat.escalation_threshold,
            settings.chat.offer_person_threshold,
        )
        .context("chat thresholds")?,
    })
}

fn ingest_handler(
    services: &Services,
    fetcher: EgressClient,
    parser: ParserCommand,
) -> IngestHandler {
    let settings = &services.settings;
    IngestHandler {
        documents: services.documents.clone(),
        publisher: services.publisher.clone(),
        knowledge: services.knowledge.clone(),
        egress: fetcher,
        parsers: ParserPool::new(
            parser.program,
            parser.args,
            SandboxLimits {
                memory_bytes: settings.ingest.parse_memory_limit.0 as u64,
                timeout: settings.ingest.parse_timeout,
                parse: ParseLimits::default(),
            },
            settings.ingest.parser_processes,
            settings.ingest.parser_reuse,
        ),
        chunking: ChunkOptions {
            max_chars: settings.ingest.chunk_size,
            overlap_chars: settings.ingest.chunk_overlap,
        },
        max_document_size: settings.ingest.max_document_size.0,
        max_retries: u32::try_from(settings.ingest.retry_schedule.len()).unwrap_or(u32::MAX),
        lock_ttl: settings.ingest.lock_ttl,
    }
}

/// Chat answers come from this process's search replica, so the chat
/// queue is consumed only once the replica reached the change feed's
/// position at start (other queues, ingestion included, start at once).
async fn answer_chats_once_caught_up(
    services: &Services,
    chat: QueueRunner<ChatHandler>,
    stop: CancellationToken,
) {
    if let Some(search) = &services.search {
        tracing::info!("chat answers wait for the search replica to catch up");
        tokio::select! {
            () = search.wait_caught_up() => {}
            () = stop.cancelled() => return,
        }
        tracing::info!(position = ?search.replica().position(), "search replica caught up; answering chats");
    }
    chat.run(stop).await;
}

/// Touches `file` while this runtime keeps scheduling tasks, so a container
/// health check can tell a hung worker from a live one by the file's age.
async fn heartbeat(file: Option<std::path::PathBuf>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(5);
    let Some(file) = file else {
        return;
    };
    loop {
        let stamp = chrono::Utc::now().to_rfc3339();
        if let Err(e) = tokio::fs::write(&file, stamp).await {
            tracing::warn!(file = %file.display(), error = %e, "could not write the heartbeat file");
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Reports where this worker's search replica stands, for the API's
/// `/metrics` (workers serve none of their own).
async fn report_replica(services: &Services, consumer: &str, stop: CancellationToken) {
    let Some(search) = &services.search else {
        return;
    };
    loop {
        match search.status().await {
            Ok(status) => {
                let report = ReplicaReport {
                    lag_entries: status.lag.entries as u64,
                    lag_ms: status.lag.ms,
                    chunks: status.chunks,
                    caught_up: status.caught_up,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                };
                if let Err(e) = services.replica_reports.put(consumer, &report).await {
                    tracing::debug!(error = %e, "could not report the search replica's lag");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not measure the search replica's lag"),
        }
        tokio::select! {
            () = tokio::time::sleep(REPORT_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Says once, at start, whether parser children will be cut off from the
/// network (the probe behind it runs once per process).
async fn log_parser_isolation() {
    match tokio::task::spawn_blocking(network_isolation).await {
        Ok(NetworkIsolation::None) => tracing::warn!(
            "the document parser runs WITH network access: the kernel refused new user and \
             network namespaces (user namespaces disabled, or a seccomp profile forbidding \
             unshare); it still gets no environment, no capabilities and its resource limits"
        ),
        Ok(isolation) => {
            tracing::info!(
                ?isolation,
                "the document parser runs without network access"
            );
        }
        Err(e) => tracing::warn!(error = %e, "could not probe the parser's network isolation"),
    }
}

/// An SSRF-checked HTTP client with this whole-exchange timeout.
fn egress_client(
    services: &Services,
    timeout: Duration,
    pool_max_idle_per_host: usize,
) -> Result<EgressClient, shared::net::egress::EgressError> {
    EgressClient::new(
        services.policy.clone(),
        services.resolver.clone(),
        EgressOptions {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(10)),
            user_agent: format!("SupportRAG/{}", env!("CARGO_PKG_VERSION")),
            pool_max_idle_per_host,
        },
    )
}

fn runner<H: Handler>(
    services: &Services,
    consumer: &str,
    handler: H,
    policy: RetryPolicy,
    concurrency: usize,
) -> anyhow::Result<QueueRunner<H>> {
    let settings = &services.settings;
    Ok(QueueRunner {
        handler: Arc::new(handler),
        client: services.queue.clone(),
        read_conn: shared::redis_conn::connect_blocking(&settings.redis, READ_BLOCK)?,
        consumer: consumer.to_owned(),
        policy: Arc::new(policy),
        settings: settings.queue.runner(concurrency, READ_BLOCK),
    })
}

/// Chat and session jobs fail only when Redis or a provider is out of
/// reach: retry soon, a few times, then dead-letter (and announce it).
fn internal_retries(settings: &Settings) -> RetryPolicy {
    RetryPolicy::new(
        vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(120),
        ],
        settings.delivery.retry_jitter,
        settings.delivery.max_retry_after,
    )
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
