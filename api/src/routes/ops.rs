//! Operations endpoints: liveness, readiness, Prometheus metrics and queue
//! depths.

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use queue::QueueDepth;
use serde::{Deserialize, Serialize};
use shared::chat::stats::{ChatCounts, Rating, TurnOutcome};
use shared::delivery::history::LatencyHistogram;
use shared::jobs::ALL_QUEUES;
use utoipa::ToSchema;

use crate::http::envelope::{Data, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Data<Health> {
    Data(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// This process's search replica (absent with an external retriever).
    pub search_replica: Option<ReplicaView>,
}

/// Where a search replica stands against the change feed.
#[derive(Serialize, ToSchema)]
pub struct ReplicaView {
    /// Feed entry id the index reflects (`null` before the first build).
    pub position: Option<String>,
    /// It reached the feed position it saw when the process started.
    pub caught_up: bool,
    /// Feed entries not applied yet (counted up to 10,000).
    pub lag_entries: usize,
    /// How much older the replica's position is than the feed's newest
    /// entry, in milliseconds.
    pub lag_ms: u64,
    pub chunks: u64,
}

impl From<rag::search::ReplicaStatus> for ReplicaView {
    fn from(s: rag::search::ReplicaStatus) -> Self {
        Self {
            position: s.position.map(|p| p.to_string()),
            caught_up: s.caught_up,
            lag_entries: s.lag.entries,
            lag_ms: s.lag.ms,
            chunks: s.chunks,
        }
    }
}

/// Redis answers and this process's search replica has caught up with
/// the change feed as it stood at start, so requests can be accepted.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = ErrorEnvelope)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Data<Readiness>, ApiError> {
    state.services.queue.ping().await?;
    let search_replica = match &state.services.search {
        Some(search) => {
            let status = search.status().await.map_err(replica_error)?;
            if !status.caught_up {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SEARCH_REPLICA_BEHIND",
                    "the search index is still catching up with the knowledge base",
                )
                .with_retry_after(1)
                .with_details(serde_json::json!(ReplicaView::from(status))));
            }
            Some(ReplicaView::from(status))
        }
        None => None,
    };
    Ok(Data(Readiness {
        status: "ready",
        search_replica,
    }))
}

fn replica_error(e: rag::search::SearchError) -> ApiError {
    if e.is_unavailable() {
        ApiError::unavailable(2)
    } else {
        ApiError::internal(e)
    }
}

#[derive(Serialize, ToSchema)]
pub struct QueuesView {
    pub queues: Vec<QueueStats>,
}

/// How many jobs a queue holds, by state, and how fast it moves.
#[derive(Serialize, ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// In the stream, not yet handed to a worker.
    pub ready: u64,
    /// Waiting for a retry or a run time.
    pub scheduled: u64,
    /// Handed to a worker, not yet acknowledged.
    pub in_flight: u64,
    pub dead: u64,
    pub processed_total: u64,
    pub failed_total: u64,
    /// Jobs finished per second over about the last minute.
    pub processed_per_second: f64,
    /// Failed attempts per second over about the last minute.
    pub failed_per_second: f64,
    /// Age of the oldest job waiting for a worker.
    pub oldest_ready_age_ms: Option<u64>,
}

impl From<QueueDepth> for QueueStats {
    fn from(d: QueueDepth) -> Self {
        Self {
            queue: d.queue,
            ready: d.ready,
            scheduled: d.scheduled,
            in_flight: d.in_flight,
            dead: d.dead,
            processed_total: d.processed_total,
            failed_total: d.failed_total,
            processed_per_second: d.processed_per_second,
            failed_per_second: d.failed_per_second,
            oldest_ready_age_ms: d.oldest_ready_age_ms,
        }
    }
}

/// Depths and totals per queue, with the age of the oldest job.
#[utoipa::path(get, path = "/admin/queues", tag = "operations",
    responses((status = 200, body = QueuesView), (status = 401, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn queues(State(state): State<AppState>) -> Result<Data<QueuesView>, ApiError> {
    Ok(Data(QueuesView {
        queues: depths(&state)
            .await?
            .into_iter()
            .map(QueueStats::from)
            .collect(),
    }))
}

async fn depths(state: &AppState) -> Result<Vec<QueueDepth>, ApiError> {
    let mut queues = Vec::with_capacity(ALL_QUEUES.len());
    for queue in ALL_QUEUES {
        queues.push(state.services.queue.depth(queue).await?);
    }
    Ok(queues)
}

/// Which metrics a scrape wants. The cluster-wide figures live in Redis and
/// are the same on every API instance, so with several instances scrape
/// them from one (`?scope=cluster`) and the rest per instance
/// (`?scope=instance`), or they add up to a multiple of the truth.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    All,
    Instance,
    Cluster,
}

#[derive(Deserialize)]
pub struct MetricsQuery {
    #[serde(default)]
    scope: Scope,
}

/// Prometheus metrics. Per instance: this process's HTTP metrics, process
/// figures, build info and its own search replica. Cluster-wide: the queue,
/// delivery and chat figures of the whole system (kept in Redis by every
/// worker) and each worker's search replica.
pub async fn metrics(
    State(state): State<AppState>,
    Query(query): Query<MetricsQuery>,
) -> Result<Response, ApiError> {
    let mut out = String::new();
    if query.scope != Scope::Cluster {
        prometheus::TextEncoder::new()
            .encode_utf8(&state.registry.gather(), &mut out)
            .map_err(ApiError::internal)?;
    }
    let mut replicas = Vec::new();
    if query.scope != Scope::Cluster {
        replicas.extend(own_replica(&state).await?);
    }
    if query.scope != Scope::Instance {
        render_queues(&mut out, &depths(&state).await?);
        let chat = state
            .services
            .chat_stats
            .read()
            .await
            .map_err(queue::QueueError::Redis)?;
        render_chat(&mut out, &chat);
        render_delivery_latency(
            &mut out,
            &state.services.deliveries.latency_histogram().await?,
        );
        render_ordering_waits(
            &mut out,
            state
                .services
                .publisher
                .sequences
                .waits_total()
                .await
                .map_err(shared::delivery::publish::PublishError::from)?,
        );
        replicas.extend(worker_replicas(&state).await?);
    }
    render_replicas(&mut out, &replicas);
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response())
}

fn render_delivery_latency(out: &mut String, latency: &LatencyHistogram) {
    let name = "supportrag_delivery_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Duration of delivery attempts, all workers (cluster-wide)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, count) in &latency.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", latency.count);
    let _ = writeln!(out, "{name}_sum {}", latency.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", latency.count);
}

fn render_ordering_waits(out: &mut String, waits: u64) {
    let name = "supportrag_delivery_ordering_waits_total";
    let _ = writeln!(
        out,
        "# HELP {name} Deliveries deferred because an earlier event of their chat session \
         was not delivered yet (webhooks with ordering = session), all workers."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {waits}");
}

/// One search replica's figures: name, lag in entries, lag in ms, chunks.
type ReplicaRow = (String, u64, u64, u64);

async fn own_replica(state: &AppState) -> Result<Option<ReplicaRow>, ApiError> {
    let Some(search) = &state.services.search else {
        return Ok(None);
    };
    let status = search.status().await.map_err(replica_error)?;
    Ok(Some((
        "api".to_owned(),
        status.lag.entries as u64,
        status.lag.ms,
        status.chunks,
    )))
}

async fn worker_replicas(state: &AppState) -> Result<Vec<ReplicaRow>, ApiError> {
    let reports = state
        .services
        .replica_reports
        .fresh(REPORT_MAX_AGE)
        .await
        .map_err(|e| {
            if queue::is_unavailable(&e) {
                ApiError::unavailable(2)
            } else {
                ApiError::internal(e)
            }
        })?;
    Ok(reports
        .into_iter()
        .map(|(worker, r)| (worker, r.lag_entries, r.lag_ms, r.chunks))
        .collect())
}

/// Search replica lag: this process's, and each worker's last report.
fn render_replicas(out: &mut String, replicas: &[ReplicaRow]) {
    for (name, help, pick) in [
        (
            "supportrag_search_replica_lag_entries",
            "Change-feed entries a search replica has not applied yet (counted up to 10000).",
            (|r: &ReplicaRow| r.1 as f64) as fn(&ReplicaRow) -> f64,
        ),
        (
            "supportrag_search_replica_lag_seconds",
            "How far behind the change feed's newest entry a search replica is.",
            |r| r.2 as f64 / 1000.0,
        ),
        (
            "supportrag_search_replica_chunks",
            "Chunks in a search replica.",
            |r| r.3 as f64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for r in replicas {
            let _ = writeln!(
                out,
                "{name}{{replica=\"{}\"}} {}",
                escape_label(&r.0),
                pick(r)
            );
        }
    }
}

/// A worker that has not reported for this long has stopped.
const REPORT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_queues(out: &mut String, depths: &[QueueDepth]) {
    let _ = writeln!(
        out,
        "# HELP supportrag_queue_jobs Jobs per queue and state."
    );
    let _ = writeln!(out, "# TYPE supportrag_queue_jobs gauge");
    for d in depths {
        for (state, value) in [
            ("ready", d.ready),
            ("scheduled", d.scheduled),
            ("in_flight", d.in_flight),
            ("dead", d.dead),
        ] {
            let _ = writeln!(
                out,
                "supportrag_queue_jobs{{queue=\"{}\",state=\"{state}\"}} {value}",
                d.queue
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP supportrag_queue_oldest_ready_job_age_seconds Age of the oldest job waiting for a worker."
    );
    let _ = writeln!(
        out,
        "# TYPE supportrag_queue_oldest_ready_job_age_seconds gauge"
    );
    for d in depths {
        let age = d.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "supportrag_queue_oldest_ready_job_age_seconds{{queue=\"{}\"}} {age}",
            d.queue
        );
    }
    for (name, help, pick) in [
        (
            "supportrag_jobs_processed_total",
            "Jobs finished successfully.",
            (|d: &QueueDepth| d.processed_total) as fn(&QueueDepth) -> u64,
        ),
        (
            "supportrag_jobs_failed_total",
            "Job attempts that failed (retried or dead-lettered).",
            |d| d.failed_total,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for d in depths {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", d.queue, pick(d));
        }
    }
}

fn render_chat(out: &mut String, c: &ChatCounts) {
    let name = "supportrag_chat_turns_total";
    let _ = writeln!(
        out,
        "# HELP {name} Chat turns the bot handled, by outcome: answered, answered with an offer \
         of a person (offered_person), handed over to a person (handed_over)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for outcome in TurnOutcome::ALL {
        let _ = writeln!(
            out,
            "{name}{{outcome=\"{}\"}} {}",
            outcome.as_str(),
            c.outcome(outcome)
        );
    }
    for (name, help, value) in [
        (
            "supportrag_chat_messages_forwarded_total",
            "User messages of escalated sessions forwarded to an operator instead of answered.",
            c.forwarded,
        ),
        (
            "supportrag_chat_operator_replies_total",
            "Operator replies sent to users.",
            c.operator_replies,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "supportrag_chat_feedback_total";
    let _ = writeln!(
        out,
        "# HELP {name} Ratings given to answers (a changed rating counts for its new value; \
         repeating the same one does not count)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for rating in [Rating::Up, Rating::Down] {
        let _ = writeln!(
            out,
            "{name}{{rating=\"{}\"}} {}",
            rating.as_str(),
            c.feedback(rating)
        );
    }
}
