//! `bench`: the whole benchmark of issue 4 in one run, one table.
//!
//! ```text
//! scripts/bench.sh            # builds in release, then runs this
//! ```
//!
//! It starts its own `redis-server` (random loopback port, no persistence)
//! and measures, every figure as the median (min–max) of `--runs` runs,
//! next to a baseline measured in the same run on the same Redis:
//!
//! 1. queue, no-op jobs: our `QueueRunner` vs BullMQ (concurrency 50,
//!    `removeOnComplete`): enqueue, processing with 1 and 2 worker
//!    processes, Redis commands per job;
//! 2. outbound delivery: the real `supportrag-worker` binary vs a BullMQ
//!    worker that signs and POSTs with Node's fetch, both to the same local
//!    receiver (axum, answers 200): deliveries/s draining a backlog, and
//!    enqueue → receipt latency at a fixed publish rate; and the bare
//!    ceiling of that receiver (the worker's HTTP client alone, no queue);
//! 3. ingest: the real `supportrag-api` binary under a fixed-concurrency
//!    signed load; every accepted request is counted in the queue after;
//! 4. retry timing: 1,000 deliveries in the delayed set, lateness of each;
//! 5. footprint: RSS of the API and a worker, Redis bytes per queued job;
//! 6. scaling: delivery rate with 1, 2 and 4 worker processes;
//! 7. documents: upload API → searchable, with the real API and two real
//!    workers (sandboxed parse, chunk, index, replicas): documents/s, and
//!    p50/p99 from the upload's request to the first search through the
//!    API that finds the document.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::{Parser, Subcommand};
use queue::{Envelope, Job, QueueClient};
use serde_json::json;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId, TraceId};
use shared::jobs::{DeliverEvent, ProcessMessage};
use shared::net::egress::{EgressClient, EgressOptions};
use shared::services::Services;
use shared::webhooks::registry::{Webhook, WebhookDraft};
use shared::webhooks::signing::Secret;
use supportrag_bench::queue::{BenchArgs, PREFIX, WorkerArgs, redis_settings, worker_process};
use supportrag_bench::{
    RedisServer, command_counts, cpu_seconds, quantile, rss_kib, show_spread, spread, thousands,
    total_delta, used_memory,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};

const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1ieXRlcy0wMTIzNDU2Nzg5";
const BULL_QUEUE: &str = "bq";
const SCRIPT: &str = include_str!("../node/bullmq_bench.js");
const PATIENCE: Duration = Duration::from_secs(180);

#[derive(Parser)]
#[command(
    about = "Issue 4 benchmark: queue, delivery, ingest, retry timing, footprint, scaling",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand)]
enum Command {
    /// A no-op queue worker process (the queue section starts these).
    Worker(WorkerArgs),
}

#[derive(clap::Args, Clone)]
struct Args {
    /// Runs per figure; the table shows median (min–max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// No-op jobs per queue run.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Deliveries per delivery run.
    #[arg(long, default_value_t = 20_000)]
    deliveries: u64,
    /// Events/s published for the latency measurement.
    #[arg(long, default_value_t = 2_000)]
    paced_rate: u64,
    /// Seconds of paced publishing.
    #[arg(long, default_value_t = 3)]
    paced_seconds: u64,
    /// Seconds of ingest load per run (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    ingest_seconds: u64,
    /// Requests in flight during the ingest load.
    #[arg(long, default_value_t = 32)]
    ingest_concurrency: usize,
    /// Worker process counts for the scaling row.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    scaling: Vec<usize>,
    /// Documents uploaded per documents run (~5 chunks each).
    #[arg(long, default_value_t = 4_000)]
    documents: usize,
    /// Uploads in flight during a documents run.
    #[arg(long, default_value_t = 16)]
    upload_concurrency: usize,
    /// Uploads per second in a documents run; 0: as fast as they are taken.
    #[arg(long, default_value_t = 0)]
    upload_rate: u64,
    /// A setting for the workers of the documents runs, as KEY=VALUE in
    /// the environment form (`INGEST__CONCURRENCY=2`); repeatable.
    #[arg(long = "worker-setting")]
    worker_settings: Vec<String>,
    /// Sections to run (queue, delivery, ingest, retry, footprint, scaling, documents).
    #[arg(long, value_delimiter = ',', default_values_t = ["queue".to_owned(), "delivery".to_owned(), "ingest".to_owned(), "retry".to_owned(), "footprint".to_owned(), "scaling".to_owned(), "documents".to_owned()])]
    only: Vec<String>,
    /// Leave out the BullMQ baselines (no node needed).
    #[arg(long)]
    no_bullmq: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker(args)) => {
            tokio::runtime::Runtime::new()?.block_on(worker_process(args))
        }
        // One thread for the harness: the cores belong to Redis, the
        // workers and the API. The receiver runs on a thread of its own.
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(cli.args)),
    }
}

/// One row of the final table.
struct Row {
    what: String,
    ours: String,
    baseline: String,
    note: String,
}

fn row(
    what: impl Into<String>,
    ours: impl Into<String>,
    baseline: impl Into<String>,
    note: impl Into<String>,
) -> Row {
    Row {
        what: what.into(),
        ours: ours.into(),
        baseline: baseline.into(),
        note: note.into(),
    }
}

struct Bench {
    args: Args,
    redis: RedisServer,
    conn: redis::aio::ConnectionManager,
    bin_dir: PathBuf,
    node: Option<Node>,
    receiver: Receiver,
    rows: Vec<Row>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.runs > 0, "--runs must be positive");
    let wall = Instant::now();
    let redis = RedisServer::start()?;
    let client = redis::Client::open(redis.url())?;
    let conn = redis::aio::ConnectionManager::new(client).await?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("bench executable has no directory")?
        .to_path_buf();
    for binary in ["supportrag-worker", "supportrag-api"] {
        ensure!(
            bin_dir.join(binary).is_file(),
            "{binary} is not built next to bench (run scripts/bench.sh, which builds it)"
        );
    }
    let node = if args.no_bullmq {
        None
    } else {
        Some(Node::prepare()?)
    };
    let receiver = Receiver::spawn()?;
    let mut bench = Bench {
        args: args.clone(),
        redis,
        conn,
        bin_dir,
        node,
        receiver,
        rows: Vec::new(),
    };
    let mut notes = Vec::new();
    let wants = |s: &str| args.only.iter().any(|o| o == s);
    if wants("queue") {
        bench.queue().await?;
    }
    if wants("delivery") {
        bench.delivery().await?;
    }
    if wants("ingest") {
        bench.ingest().await?;
    }
    if wants("retry") {
        bench.retry_timing().await?;
    }
    if wants("footprint") {
        bench.footprint(&mut notes).await?;
    }
    if wants("scaling") {
        bench.scaling().await?;
    }
    if wants("documents") {
        bench.documents().await?;
    }

    let version = supportrag_bench::info(&mut bench.conn, "server")
        .await?
        .get("redis_version")
        .cloned()
        .unwrap_or_default();
    println!();
    println!(
        "bench: {} run(s) per figure, median (min–max); Redis {version} on loopback, no persistence; \
         {} CPU(s); {}",
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!();
    println!("| measure | ours | baseline, same run | note |");
    println!("| --- | --- | --- | --- |");
    for r in &bench.rows {
        println!("| {} | {} | {} | {} |", r.what, r.ours, r.baseline, r.note);
    }
    for note in notes {
        println!("{note}");
    }
    println!("wall time {:.0} s", wall.elapsed().as_secs_f64());
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.1}× the baseline", ours / theirs)
    } else {
        String::new()
    }
}

fn ms((median, min, max): (f64, f64, f64)) -> String {
    format!("{median:.1} ms ({min:.1}–{max:.1})")
}

impl Bench {
    async fn flush(&mut self) -> anyhow::Result<()> {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut self.conn).await?;
        Ok(())
    }

    fn services(&self) -> anyhow::Result<Services> {
        let mut settings = redis_settings(&self.redis.url(), PREFIX)?;
        settings.security.allowed_cidrs = vec!["127.0.0.0/8".parse().map_err(anyhow::Error::msg)?];
        Ok(Services::connect(settings)?)
    }

    async fn webhook(&self, services: &Services, url: &str) -> anyhow::Result<Webhook> {
        Ok(services
            .webhooks
            .insert(WebhookDraft::new(
                "bench receiver",
                url,
                vec![EventFilter::All],
                Secret::parse(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
            .await?)
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("REDIS__URL", self.redis.url()),
            ("REDIS__KEY_PREFIX", PREFIX.to_owned()),
            ("SECURITY__ALLOWED_CIDRS", "127.0.0.0/8".to_owned()),
            ("LOG__LEVEL", "warn".to_owned()),
            ("AUTH__ADMIN_KEYS", "bench-admin-key-0123456789".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SUPPORTRAG__{k}"), v))
        .collect()
    }

    fn spawn_binary(&self, name: &str, extra: &[(&str, String)]) -> anyhow::Result<Child> {
        let mut command = Process::new(self.bin_dir.join(name));
        for (key, _) in std::env::vars() {
            if key.starts_with("SUPPORTRAG") {
                command.env_remove(key);
            }
        }
        command.envs(self.env());
        for (k, v) in extra {
            command.env(format!("SUPPORTRAG__{k}"), v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))
    }

    // ------------------------------------------------------------ queue

    async fn queue(&mut self) -> anyhow::Result<()> {
        let settings = redis_settings(&self.redis.url(), PREFIX)?;
        let queue = QueueClient::new(
            shared::redis_conn::connect(&settings.redis)?,
            settings.redis.key_prefix.clone(),
        );
        let poller = QueueClient::new(
            shared::redis_conn::connect(&settings.redis)?,
            settings.redis.key_prefix.clone(),
        );
        let qargs = BenchArgs {
            jobs: self.args.jobs,
            workers: vec![1, 2],
            runs: 1,
            concurrency: 64,
            push_batch: 500,
        };
        let mut ours: HashMap<usize, Vec<supportrag_bench::queue::Sample>> = HashMap::new();
        let mut theirs: HashMap<usize, Vec<(f64, f64, f64)>> = HashMap::new();
        for run in 1..=self.args.runs {
            for workers in [1, 2] {
                let s = supportrag_bench::queue::measure(
                    &qargs,
                    workers,
                    &self.redis.url(),
                    &queue,
                    &poller,
                )
                .await?;
                eprintln!(
                    "queue run {run}, ours, {workers} worker(s): enqueue {}/s, process {}/s, {:.2} cmds/job",
                    thousands(s.enqueue_per_s),
                    thousands(s.process_per_s),
                    s.commands_per_job
                );
                ours.entry(workers).or_default().push(s);
                if self.node.is_some() {
                    let b = self.bull_queue(workers).await?;
                    eprintln!(
                        "queue run {run}, BullMQ, {workers} worker(s): enqueue {}/s, process {}/s, {:.2} cmds/job",
                        thousands(b.0),
                        thousands(b.1),
                        b.2
                    );
                    theirs.entry(workers).or_default().push(b);
                }
            }
        }
        let empty = Vec::new();
        let o1 = &ours[&1];
        let t1 = theirs.get(&1).unwrap_or(&empty);
        let enq = spread(o1.iter().map(|s| s.enqueue_per_s));
        let enq_b = spread(t1.iter().map(|s| s.0));
        self.rows.push(row(
            format!(
                "queue: enqueue no-op jobs/s ({} jobs, batches of 500)",
                self.args.jobs
            ),
            show_spread(enq),
            opt_spread(t1, enq_b, "BullMQ addBulk"),
            ratio(enq.0, enq_b.0),
        ));
        for workers in [1, 2] {
            let o = &ours[&workers];
            let t = theirs.get(&workers).unwrap_or(&empty);
            let p = spread(o.iter().map(|s| s.process_per_s));
            let pb = spread(t.iter().map(|s| s.1));
            self.rows.push(row(
                format!("queue: process no-op jobs/s, {workers} worker process(es)"),
                show_spread(p),
                opt_spread(t, pb, "BullMQ, concurrency 50"),
                format!("{}; target ≥ 3×", ratio(p.0, pb.0)),
            ));
            let c = spread(o.iter().map(|s| s.commands_per_job)).0;
            let cb = spread(t.iter().map(|s| s.2)).0;
            self.rows.push(row(
                format!("queue: Redis commands per job, {workers} worker process(es)"),
                format!("{c:.2}"),
                if t.is_empty() {
                    String::new()
                } else {
                    format!("{cb:.2} (BullMQ)")
                },
                "target ≤ 2 (Lua-internal calls counted)",
            ));
        }
        Ok(())
    }

    /// (enqueue/s, process/s, commands/job) of BullMQ with `workers` processes.
    async fn bull_queue(&mut self, workers: usize) -> anyhow::Result<(f64, f64, f64)> {
        self.flush().await?;
        let port = self.redis.port.to_string();
        let jobs = self.args.jobs.to_string();
        let node = self.node.as_ref().context("node")?;
        let out = node
            .run_to_end(&["enqueue", &port, BULL_QUEUE, &jobs, "500"])
            .await?;
        let enqueue: f64 = serde_json::from_str::<serde_json::Value>(&out)?["enqueue_per_s"]
            .as_f64()
            .context("enqueue rate")?;
        let mut procs = Vec::new();
        for _ in 0..workers {
            procs.push(
                node.start_worker(&["work", &port, BULL_QUEUE, "50"])
                    .await?,
            );
        }
        let wait = format!("bull:{BULL_QUEUE}:wait");
        let active = format!("bull:{BULL_QUEUE}:active");
        let mut poll = self.conn.clone();
        let before_poll = command_counts(&mut self.conn).await?;
        let _: (u64, u64) = redis::pipe()
            .llen(&wait)
            .llen(&active)
            .query_async(&mut poll)
            .await?;
        let before = command_counts(&mut self.conn).await?;
        let poll_cost = total_delta(&before, &before_poll);
        let started = Instant::now();
        for p in &mut procs {
            p.go().await?;
        }
        let mut polls = 0u64;
        loop {
            let (w, a): (u64, u64) = redis::pipe()
                .llen(&wait)
                .llen(&active)
                .query_async(&mut poll)
                .await?;
            polls += 1;
            if w == 0 && a == 0 {
                break;
            }
            ensure!(
                started.elapsed() < PATIENCE,
                "BullMQ stuck: wait {w}, active {a}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = command_counts(&mut self.conn).await?;
        drop(procs);
        let jobs = self.args.jobs as f64;
        let commands = total_delta(&after, &before).saturating_sub(poll_cost * polls) as f64;
        Ok((enqueue, jobs / elapsed, commands / jobs))
    }

    // --------------------------------------------------------- delivery

    fn event(t_us: u64) -> Event {
        Event::new(
            EventId::generate(),
            EventType::ChatResponseGenerated,
            json!({
                "t_us": t_us,
                "session_id": "ses_01JBENCH0000000000000000000",
                "response": "x".repeat(300),
                "confidence": 0.87,
            }),
            EventMetadata {
                trace_id: TraceId::generate(),
                correlation_id: None,
            },
        )
    }

    /// Publishes `n` events (backlog, unstamped) with 16 publishers at once.
    async fn publish_backlog(services: &Services, n: u64) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let per = n.div_ceil(16);
        for t in 0..16u64 {
            let publisher = services.publisher.clone();
            let count = per.min(n.saturating_sub(t * per));
            tasks.spawn(async move {
                for _ in 0..count {
                    publisher.publish(Self::event(0)).await?;
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// Deliveries/s of `workers` worker processes draining a backlog, the
    /// publish rate, Redis commands per delivery, and the largest worker RSS.
    async fn delivery_backlog(&mut self, workers: usize) -> anyhow::Result<(f64, f64, f64, u64)> {
        self.flush().await?;
        let services = self.services()?;
        self.webhook(&services, &self.receiver.url()).await?;
        let n = self.args.deliveries;
        let publish_rate = Self::publish_backlog(&services, n).await?;
        self.receiver.reset();
        let before = command_counts(&mut self.conn).await?;
        let mut procs = Vec::new();
        for _ in 0..workers {
            procs.push(self.spawn_binary("supportrag-worker", &[])?);
        }
        let pids: Vec<u32> = procs.iter().filter_map(Child::id).collect();
        let started = Instant::now();
        let mut max_rss = 0;
        while self.receiver.count() < n {
            ensure!(
                started.elapsed() < PATIENCE,
                "deliveries stuck at {}",
                self.receiver.count()
            );
            for pid in &pids {
                max_rss = max_rss.max(rss_kib(*pid).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = self.receiver.rate();
        let after = command_counts(&mut self.conn).await?;
        stop_all(procs).await?;
        let commands = total_delta(&after, &before) as f64 / n as f64;
        Ok((rate, publish_rate, commands, max_rss))
    }

    /// The bare ceiling the deliveries are measured against: the worker's
    /// own HTTP client (the SSRF-checked egress, built as the worker builds
    /// it) posting the same event body to the same receiver with as many
    /// requests in flight as the worker allows one webhook, and nothing
    /// else: no queue, no records, no signing.
    async fn http_ceiling(&mut self) -> anyhow::Result<f64> {
        let services = self.services()?;
        let delivery = &services.settings.delivery;
        let in_flight = delivery.per_webhook_concurrency.min(delivery.concurrency);
        let client = Arc::new(EgressClient::new(
            services.policy.clone(),
            services.resolver.clone(),
            EgressOptions {
                timeout: delivery.timeout,
                connect_timeout: delivery.timeout.min(Duration::from_secs(10)),
                user_agent: "SupportRAG-bench".to_owned(),
                pool_max_idle_per_host: 32,
            },
        )?);
        let body = serde_json::to_vec(&Self::event(0))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let url = self.receiver.url();
        let remaining = Arc::new(std::sync::atomic::AtomicU64::new(self.args.deliveries));
        self.receiver.reset();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let (client, body, headers, url, remaining) = (
                client.clone(),
                body.clone(),
                headers.clone(),
                url.clone(),
                remaining.clone(),
            );
            tasks.spawn(async move {
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let reply = client.post(&url, headers.clone(), body.clone()).await?;
                    ensure!(reply.is_success(), "the receiver answered {}", reply.status);
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(self.receiver.rate())
    }

    async fn bull_delivery_backlog(&mut self) -> anyhow::Result<f64> {
        self.flush().await?;
        let port = self.redis.port.to_string();
        let n = self.args.deliveries.to_string();
        let url = self.receiver.url();
        let node = self.node.as_ref().context("node")?;
        node.run_to_end(&["enqueue-deliver", &port, BULL_QUEUE, &n, &url, SECRET_B64])
            .await?;
        self.receiver.reset();
        let mut worker = node
            .start_worker(&["deliver", &port, BULL_QUEUE, "50"])
            .await?;
        worker.go().await?;
        let started = Instant::now();
        while self.receiver.count() < self.args.deliveries {
            ensure!(
                started.elapsed() < PATIENCE,
                "BullMQ deliveries stuck at {}",
                self.receiver.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self.receiver.rate())
    }

    /// p50, p99 enqueue → receipt (ms) at the paced rate, and the idle RSS
    /// of the worker before the load (KiB).
    async fn delivery_paced(&mut self) -> anyhow::Result<(f64, f64, u64)> {
        self.flush().await?;
        let services = self.services()?;
        self.webhook(&services, &self.receiver.url()).await?;
        let worker = self.spawn_binary("supportrag-worker", &[])?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = worker.id().and_then(rss_kib).unwrap_or(0);
        self.receiver.reset();
        let total = self.args.paced_rate * self.args.paced_seconds;
        let started = Instant::now();
        let mut sent = 0;
        let mut pending = tokio::task::JoinSet::new();
        while sent < total {
            let due = ((started.elapsed().as_secs_f64() * self.args.paced_rate as f64) as u64 + 1)
                .min(total);
            while sent < due {
                let publisher = services.publisher.clone();
                pending.spawn(async move { publisher.publish(Self::event(now_us())).await });
                sent += 1;
            }
            while let Some(r) = pending.try_join_next() {
                r??;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while let Some(r) = pending.join_next().await {
            r??;
        }
        self.wait_receipts(total).await?;
        stop_all(vec![worker]).await?;
        let mut lat = self.receiver.latencies_ms();
        Ok((quantile(&mut lat, 0.5), quantile(&mut lat, 0.99), idle))
    }

    async fn bull_delivery_paced(&mut self) -> anyhow::Result<(f64, f64)> {
        self.flush().await?;
        let port = self.redis.port.to_string();
        let url = self.receiver.url();
        let node = self.node.as_ref().context("node")?;
        let mut worker = node
            .start_worker(&["deliver", &port, BULL_QUEUE, "50"])
            .await?;
        worker.go().await?;
        self.receiver.reset();
        let rate = self.args.paced_rate.to_string();
        let secs = self.args.paced_seconds.to_string();
        node.run_to_end(&[
            "produce-paced",
            &port,
            BULL_QUEUE,
            &rate,
            &secs,
            &url,
            SECRET_B64,
        ])
        .await?;
        self.wait_receipts(self.args.paced_rate * self.args.paced_seconds)
            .await?;
        drop(worker);
        let mut lat = self.receiver.latencies_ms();
        Ok((quantile(&mut lat, 0.5), quantile(&mut lat, 0.99)))
    }

    async fn wait_receipts(&self, n: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.receiver.count() < n {
            ensure!(
                started.elapsed() < PATIENCE,
                "receipts stuck at {} of {n}",
                self.receiver.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn delivery(&mut self) -> anyhow::Result<()> {
        let mut ours = Vec::new();
        let mut ceiling = Vec::new();
        let mut publish = Vec::new();
        let mut commands = Vec::new();
        let mut theirs = Vec::new();
        let mut lat = Vec::new();
        let mut lat_b = Vec::new();
        for run in 1..=self.args.runs {
            let (rate, pub_rate, cmds, _) = self.delivery_backlog(1).await?;
            eprintln!(
                "delivery run {run}, ours: {} deliveries/s (published {}/s, {cmds:.1} cmds/delivery)",
                thousands(rate),
                thousands(pub_rate)
            );
            let bare = self.http_ceiling().await?;
            eprintln!(
                "delivery run {run}, bare HTTP ceiling: {} requests/s ({:.0} % reached)",
                thousands(bare),
                100.0 * rate / bare
            );
            ceiling.push(bare);
            ours.push(rate);
            publish.push(pub_rate);
            commands.push(cmds);
            let (p50, p99, _) = self.delivery_paced().await?;
            eprintln!("delivery run {run}, ours, paced: p50 {p50:.1} ms, p99 {p99:.1} ms");
            lat.push((p50, p99));
            if self.node.is_some() {
                let b = self.bull_delivery_backlog().await?;
                let (b50, b99) = self.bull_delivery_paced().await?;
                eprintln!(
                    "delivery run {run}, BullMQ: {} deliveries/s; paced p50 {b50:.1} ms, p99 {b99:.1} ms",
                    thousands(b)
                );
                theirs.push(b);
                lat_b.push((b50, b99));
            }
        }
        let o = spread(ours.iter().copied());
        let t = spread(theirs.iter().copied());
        self.rows.push(row(
            format!(
                "delivery: signed deliveries/s, 1 worker process, {} backlog",
                self.args.deliveries
            ),
            show_spread(o),
            opt_spread(&theirs, t, "BullMQ + undici, concurrency 50"),
            format!("{}; target ≥ 10,000 and ahead", ratio(o.0, t.0)),
        ));
        let c = spread(ceiling.iter().copied());
        self.rows.push(row(
            "delivery: bare HTTP ceiling (same client and receiver, no queue or records)",
            show_spread(c),
            "",
            format!(
                "deliveries reach {:.0} % of it; target ≥ 70 %",
                100.0 * o.0 / c.0
            ),
        ));
        self.rows.push(row(
            "delivery: publish (fan-out + record + job) events/s, 16 publishers",
            show_spread(spread(publish.iter().copied())),
            "",
            "",
        ));
        self.rows.push(row(
            "delivery: Redis commands per delivery (publish + deliver)",
            format!("{:.1}", spread(commands.iter().copied()).0),
            "",
            "",
        ));
        let rate = self.args.paced_rate;
        for (name, pick) in [("p50", 0usize), ("p99", 1)] {
            let get = |v: &(f64, f64)| if pick == 0 { v.0 } else { v.1 };
            let b = spread(lat_b.iter().map(get));
            self.rows.push(row(
                format!("delivery: enqueue → receipt {name} at {rate} events/s"),
                ms(spread(lat.iter().map(get))),
                if lat_b.is_empty() {
                    String::new()
                } else {
                    format!("{} (BullMQ)", ms(b))
                },
                "",
            ));
        }
        Ok(())
    }

    // ----------------------------------------------------------- ingest

    async fn ingest(&mut self) -> anyhow::Result<()> {
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut p999 = Vec::new();
        let mut errors = 0;
        let mut missing = 0i64;
        let mut idle_rss = Vec::new();
        let mut load_rss = Vec::new();
        for run in 1..=self.args.runs {
            let r = self.ingest_run().await?;
            eprintln!(
                "ingest run {run}: {} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors, {} accepted, {} queued",
                thousands(r.rate),
                r.p50,
                r.p99,
                r.p999,
                r.errors,
                r.accepted,
                r.queued
            );
            rates.push(r.rate);
            p50.push(r.p50);
            p99.push(r.p99);
            p999.push(r.p999);
            errors += r.errors;
            missing += r.accepted as i64 - r.queued as i64;
            idle_rss.push(r.idle_rss as f64 / 1024.0);
            load_rss.push(r.load_rss as f64 / 1024.0);
        }
        let c = self.args.ingest_concurrency;
        self.rows.push(row(
            format!(
                "ingest: signed POST /api/v1/webhooks/incoming/message, req/s at {c} in flight"
            ),
            show_spread(spread(rates.iter().copied())),
            "",
            format!("target ≥ 10,000; {errors} errors; accepted − queued = {missing}"),
        ));
        for (name, v) in [("p50", &p50), ("p99", &p99), ("p99.9", &p999)] {
            self.rows.push(row(
                format!("ingest: latency {name}"),
                ms(spread(v.iter().copied())),
                "",
                if name == "p99" { "target < 20 ms" } else { "" },
            ));
        }
        self.rows.push(row(
            "footprint: API RSS idle / under ingest load",
            format!(
                "{:.1} MiB / {:.1} MiB",
                spread(idle_rss.iter().copied()).0,
                spread(load_rss.iter().copied()).0
            ),
            "",
            "",
        ));
        Ok(())
    }

    async fn ingest_run(&mut self) -> anyhow::Result<IngestRun> {
        self.flush().await?;
        let services = self.services()?;
        let webhook = self.webhook(&services, "http://127.0.0.1:9/unused").await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let api = self.spawn_binary(
            "supportrag-api",
            &[("SERVER__BIND", format!("127.0.0.1:{port}"))],
        )?;
        let pid = api.id().context("api pid")?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the API did not listen within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = rss_kib(pid).unwrap_or(0);

        let url = format!("http://127.0.0.1:{port}/api/v1/webhooks/incoming/message");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let secret = Secret::parse(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?;
        let shared = Arc::new(LoadState::default());
        let warmup = Duration::from_secs(1);
        let measure = Duration::from_secs(self.args.ingest_seconds);
        let begin = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..self.args.ingest_concurrency {
            let http = http.clone();
            let url = url.clone();
            let secret = secret.clone();
            let webhook_id = webhook.webhook_id.to_string();
            let shared = shared.clone();
            tasks.spawn(async move {
                let mut n = 0u64;
                while begin.elapsed() < warmup + measure {
                    n += 1;
                    let body = format!(
                        r#"{{"event_type":"message.received","data":{{"user_id":"user-{}","message":"How do I reset my password?","external_message_id":"m-{worker}-{n}"}}}}"#,
                        n % 500
                    );
                    let ts = chrono_now();
                    let signature = shared::webhooks::signing::sign_incoming_timestamped(&secret, ts, body.as_bytes());
                    let sent = Instant::now();
                    let result = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-webhook-id", &webhook_id)
                        .header("x-webhook-timestamp", ts.to_string())
                        .header("x-webhook-signature", signature)
                        .body(body)
                        .send()
                        .await;
                    let ok = match result {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.bytes().await;
                            status.is_success()
                        }
                        Err(_) => false,
                    };
                    let in_window = sent.duration_since(begin) >= warmup;
                    shared.record(ok, in_window, sent.elapsed());
                }
            });
        }
        let mut load_rss = 0;
        while !tasks.is_empty() {
            load_rss = load_rss.max(rss_kib(pid).unwrap_or(0));
            tokio::select! {
                _ = tasks.join_next() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        stop_all(vec![api]).await?;
        let stream = services.queue.keys(ProcessMessage::QUEUE).stream;
        let queued: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut self.conn)
            .await?;
        let state = shared
            .inner
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut lat = state.latencies_ms.clone();
        Ok(IngestRun {
            rate: lat.len() as f64 / measure.as_secs_f64(),
            p50: quantile(&mut lat, 0.5),
            p99: quantile(&mut lat, 0.99),
            p999: quantile(&mut lat, 0.999),
            errors: state.errors,
            accepted: state.accepted,
            queued,
            idle_rss,
            load_rss,
        })
    }

    // -------------------------------------------------------- documents

    async fn documents(&mut self) -> anyhow::Result<()> {
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut chunks = 0;
        let mut cpu = Vec::new();
        for run in 1..=self.args.runs {
            let r = self.documents_run().await?;
            eprintln!(
                "documents run {run}: {} documents/s upload → searchable, p50 {:.0} ms, p99 {:.0} ms ({} chunks per document); CPU per document: API {:.2} ms, workers {:.2} ms (parsers included), Redis {:.2} ms",
                thousands(r.rate),
                r.p50,
                r.p99,
                r.chunks,
                r.cpu_ms.0,
                r.cpu_ms.1,
                r.cpu_ms.2
            );
            cpu.push(r.cpu_ms);
            rates.push(r.rate);
            p50.push(r.p50);
            p99.push(r.p99);
            chunks = r.chunks;
        }
        let n = self.args.documents;
        let pace = match self.args.upload_rate {
            0 => format!("{} uploads in flight", self.args.upload_concurrency),
            rate => format!("uploads at {rate}/s"),
        };
        self.rows.push(row(
            format!(
                "documents: upload API → searchable, documents/s ({n} of {chunks} chunks, 2 worker processes, {pace})"
            ),
            show_spread(spread(rates.iter().copied())),
            "",
            "target ≥ 500",
        ));
        for (name, v) in [("p50", &p50), ("p99", &p99)] {
            self.rows.push(row(
                format!("documents: upload → searchable {name}"),
                ms(spread(v.iter().copied())),
                "",
                "",
            ));
        }
        let median = |pick: fn(&(f64, f64, f64)) -> f64| spread(cpu.iter().map(pick)).0;
        self.rows.push(row(
            "documents: CPU per document, API / 2 workers (parsers included) / Redis",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                median(|c| c.0),
                median(|c| c.1),
                median(|c| c.2)
            ),
            "",
            "what the rate is on two cores shared by all of them",
        ));
        Ok(())
    }

    async fn documents_run(&mut self) -> anyhow::Result<DocumentsRun> {
        const KEY: &str = "bench-admin-key-0123456789";
        self.flush().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut children = vec![self.spawn_binary(
            "supportrag-api",
            &[("SERVER__BIND", format!("127.0.0.1:{port}"))],
        )?];
        let worker_settings: Vec<(&str, String)> = self
            .args
            .worker_settings
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k, v.to_owned()))
                    .with_context(|| format!("--worker-setting {kv}: not KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        for _ in 0..2 {
            children.push(self.spawn_binary("supportrag-worker", &worker_settings)?);
        }
        wait_listening(port).await?;
        let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
        ensure!(pids.len() == 3, "a process of the documents run has no pid");
        let redis_pid = self.redis.pid();
        let cpu_now = move || -> anyhow::Result<(f64, f64, f64)> {
            let of = |pid: u32| cpu_seconds(pid).with_context(|| format!("CPU time of {pid}"));
            Ok((of(pids[0])?, of(pids[1])? + of(pids[2])?, of(redis_pid)?))
        };
        let cpu_before = cpu_now()?;
        let base = format!("http://127.0.0.1:{port}/api/v1");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;

        let n = self.args.documents;
        let texts: Vec<String> = (0..n).map(bench_document).collect();
        let texts = Arc::new(texts);
        // document id → (its index, when its upload was sent)
        let uploads: Arc<Mutex<HashMap<String, (usize, Instant)>>> =
            Arc::new(Mutex::new(HashMap::with_capacity(n)));
        let searchable: Arc<Mutex<Vec<(Instant, Instant)>>> =
            Arc::new(Mutex::new(Vec::with_capacity(n)));

        // The change feed names each document as it becomes current in
        // Redis; from there a search through the API must find it.
        let feed_key = format!("{PREFIX}:{{{PREFIX}:kb}}:feed");
        let mut feed_conn = redis::Client::open(self.redis.url())?
            .get_multiplexed_async_connection()
            .await?;
        let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let watcher = tokio::spawn(async move {
            let mut last = "0-0".to_owned();
            loop {
                let opts = redis::streams::StreamReadOptions::default()
                    .count(1000)
                    .block(1000);
                let reply: Option<redis::streams::StreamReadReply> =
                    redis::AsyncCommands::xread_options(
                        &mut feed_conn,
                        &[feed_key.as_str()],
                        &[last.as_str()],
                        &opts,
                    )
                    .await?;
                for key in reply.map(|r| r.keys).unwrap_or_default() {
                    for entry in key.ids {
                        if let Some(doc) = entry.get::<String>("d") {
                            let _ = found_tx.send(doc);
                        }
                        last = entry.id;
                    }
                }
                if found_tx.is_closed() {
                    return Ok::<(), anyhow::Error>(());
                }
            }
        });
        let confirm = {
            let http = http.clone();
            let base = base.clone();
            let uploads = uploads.clone();
            let searchable = searchable.clone();
            tokio::spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(32));
                let mut tasks = tokio::task::JoinSet::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(doc) = found_rx.recv().await {
                    if !seen.insert(doc.clone()) {
                        continue;
                    }
                    let permit = limit.clone().acquire_owned().await?;
                    let (http, base, uploads, searchable) = (
                        http.clone(),
                        base.clone(),
                        uploads.clone(),
                        searchable.clone(),
                    );
                    tasks.spawn(async move {
                        let _permit = permit;
                        confirm_searchable(&http, &base, KEY, &doc, &uploads, &searchable).await
                    });
                    while let Some(done) = tasks.try_join_next() {
                        done??;
                    }
                }
                while let Some(done) = tasks.join_next().await {
                    done??;
                }
                Ok::<(), anyhow::Error>(())
            })
        };

        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let begin = Instant::now();
        let rate = self.args.upload_rate;
        let mut uploaders = tokio::task::JoinSet::new();
        for _ in 0..self.args.upload_concurrency.max(1) {
            let (http, base, texts, uploads, next) = (
                http.clone(),
                base.clone(),
                texts.clone(),
                uploads.clone(),
                next.clone(),
            );
            uploaders.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= texts.len() {
                        return Ok::<(), anyhow::Error>(());
                    }
                    if rate > 0 {
                        let due = begin + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let sent = Instant::now();
                    let response = http
                        .post(format!("{base}/knowledge/documents"))
                        .bearer_auth(KEY)
                        .json(&json!({
                            "name": format!("Bench document {i}"),
                            "text": texts[i],
                            "format": "markdown",
                        }))
                        .send()
                        .await?;
                    let status = response.status();
                    let body: serde_json::Value = response.json().await?;
                    ensure!(status.is_success(), "upload {i}: {status} {body}");
                    let id = body["data"]["document_id"]
                        .as_str()
                        .context("upload answer without document_id")?
                        .to_owned();
                    uploads
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .insert(id, (i, sent));
                }
            });
        }
        while let Some(done) = uploaders.join_next().await {
            done??;
        }
        let uploaded = begin.elapsed();
        loop {
            let count = searchable
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .len();
            if count >= n {
                break;
            }
            ensure!(
                begin.elapsed() < PATIENCE,
                "only {count} of {n} documents searchable after {} s (uploads took {:.1} s)",
                PATIENCE.as_secs(),
                uploaded.as_secs_f64()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        watcher.abort();
        let _ = watcher.await;
        confirm.await??;

        // How many chunks the documents came to (one is representative:
        // they are all cut alike).
        let any = uploads
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .keys()
            .next()
            .cloned()
            .context("no upload")?;
        let record: serde_json::Value = http
            .get(format!("{base}/knowledge/documents/{any}"))
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?;
        let chunks = record["data"]["chunks_count"].as_u64().unwrap_or(0);
        let cpu_after = cpu_now()?;
        let per_doc = |before: f64, after: f64| (after - before) * 1e3 / n as f64;
        let cpu_ms = (
            per_doc(cpu_before.0, cpu_after.0),
            per_doc(cpu_before.1, cpu_after.1),
            per_doc(cpu_before.2, cpu_after.2),
        );
        stop_all(children).await?;

        let times = searchable.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let first_sent = times.iter().map(|t| t.0).min().context("no documents")?;
        let last_found = times.iter().map(|t| t.1).max().context("no documents")?;
        let mut latencies: Vec<f64> = times
            .iter()
            .map(|(sent, found)| found.duration_since(*sent).as_secs_f64() * 1e3)
            .collect();
        Ok(DocumentsRun {
            rate: n as f64 / last_found.duration_since(first_sent).as_secs_f64(),
            p50: quantile(&mut latencies, 0.5),
            p99: quantile(&mut latencies, 0.99),
            chunks,
            cpu_ms,
        })
    }

    // ------------------------------------------------------------ retry

    async fn retry_timing(&mut self) -> anyhow::Result<()> {
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for run in 1..=self.args.runs {
            self.flush().await?;
            let services = self.services()?;
            let webhook = self.webhook(&services, &self.receiver.url()).await?;
            let worker = self.spawn_binary("supportrag-worker", &[])?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.receiver.reset();
            let base = shared::time::now_ms() + 1_000;
            let mut jobs = Vec::new();
            for i in 0..1_000i64 {
                let due_ms = base + i;
                let event = Self::event(u64::try_from(due_ms).unwrap_or(0) * 1_000);
                let job = Envelope::new(
                    DeliverEvent::QUEUE,
                    DeliverEvent {
                        delivery_id: DeliveryId::for_event(&event.event_id, &webhook.webhook_id),
                        webhook_id: webhook.webhook_id.clone(),
                        event,
                    },
                    TraceId::parse(&format!("retry-{i}"))?,
                );
                jobs.push((job, due_ms));
            }
            for (job, due) in &jobs {
                services.queue.schedule(job, *due).await?;
            }
            self.wait_receipts(1_000).await?;
            stop_all(vec![worker]).await?;
            let mut lat = self.receiver.latencies_ms();
            let (a, b) = (quantile(&mut lat, 0.5), quantile(&mut lat, 0.99));
            eprintln!("retry run {run}: late by p50 {a:.1} ms, p99 {b:.1} ms");
            p50.push(a);
            p99.push(b);
        }
        self.rows.push(row(
            "retry timing: 1,000 delayed deliveries, late vs scheduled, p50",
            ms(spread(p50.iter().copied())),
            "",
            "",
        ));
        self.rows.push(row(
            "retry timing: p99",
            ms(spread(p99.iter().copied())),
            "",
            "target < 250 ms",
        ));
        Ok(())
    }

    // -------------------------------------------------------- footprint

    async fn footprint(&mut self, notes: &mut Vec<String>) -> anyhow::Result<()> {
        // Worker RSS idle, and under load (draining a backlog).
        let mut idle = Vec::new();
        let mut load = Vec::new();
        for _ in 0..self.args.runs {
            let (_, _, rss) = self.delivery_paced().await?;
            idle.push(rss as f64 / 1024.0);
            let (_, _, _, max) = self.delivery_backlog(1).await?;
            load.push(max as f64 / 1024.0);
        }
        self.rows.push(row(
            "footprint: worker RSS idle / draining a delivery backlog",
            format!(
                "{:.1} MiB / {:.1} MiB",
                spread(idle.iter().copied()).0,
                spread(load.iter().copied()).0
            ),
            "",
            "target < 50 MiB idle",
        ));

        // Redis bytes per queued delivery job.
        self.flush().await?;
        let services = self.services()?;
        let webhook = self.webhook(&services, &self.receiver.url()).await?;
        let before = used_memory(&mut self.conn).await?;
        let n = 100_000u64;
        let mut size = 0;
        for chunk in 0..n / 1_000 {
            let jobs: Vec<Envelope<DeliverEvent>> = (0..1_000)
                .map(|i| {
                    let event = Self::event(0);
                    Ok::<_, shared::ids::InvalidTraceId>(Envelope::new(
                        DeliverEvent::QUEUE,
                        DeliverEvent {
                            delivery_id: DeliveryId::for_event(
                                &event.event_id,
                                &webhook.webhook_id,
                            ),
                            webhook_id: webhook.webhook_id.clone(),
                            event,
                        },
                        TraceId::parse(&format!("{chunk}-{i}"))?,
                    ))
                })
                .collect::<Result<_, _>>()?;
            size = serde_json::to_vec(&jobs[0])?.len();
            services.queue.push(&jobs).await?;
        }
        let per_job = (used_memory(&mut self.conn).await? - before) / n as f64;

        self.flush().await?;
        let services = self.services()?;
        self.webhook(&services, &self.receiver.url()).await?;
        let before = used_memory(&mut self.conn).await?;
        Self::publish_backlog(&services, 10_000).await?;
        let per_delivery = (used_memory(&mut self.conn).await? - before) / 10_000.0;
        self.rows.push(row(
            "footprint: Redis bytes per queued delivery job (100,000 in the stream)",
            format!("{per_job:.0} B"),
            "",
            format!("target < 1 KiB; the job's JSON is {size} B"),
        ));
        self.rows.push(row(
            "footprint: Redis bytes per published delivery (job + history record + index)",
            format!("{per_delivery:.0} B"),
            "",
            "10,000 published",
        ));
        notes.push(format!(
            "footprint: every event is a chat.response.generated with a 300-character answer (a ~600-byte body, as in the peers' measurements); the job is {size} B of JSON."
        ));
        Ok(())
    }

    // ---------------------------------------------------------- scaling

    async fn scaling(&mut self) -> anyhow::Result<()> {
        let counts = self.args.scaling.clone();
        for workers in counts {
            let mut rates = Vec::new();
            for run in 1..=self.args.runs {
                let (rate, _, _, _) = self.delivery_backlog(workers).await?;
                eprintln!(
                    "scaling run {run}, {workers} worker(s): {} deliveries/s",
                    thousands(rate)
                );
                rates.push(rate);
            }
            self.rows.push(row(
                format!("scaling: deliveries/s with {workers} worker process(es)"),
                show_spread(spread(rates.iter().copied())),
                "",
                "",
            ));
        }
        Ok(())
    }
}

/// The BullMQ side's secret (base64 of the bytes both sides HMAC with).
const SECRET_B64: &str = "YmVuY2htYXJrLXNlY3JldC1ieXRlcy0wMTIzNDU2Nzg5";

fn opt_spread<T>(samples: &[T], s: (f64, f64, f64), label: &str) -> String {
    if samples.is_empty() {
        String::new()
    } else {
        format!("{} ({label})", show_spread(s))
    }
}

fn chrono_now() -> i64 {
    i64::try_from(now_us() / 1_000_000).unwrap_or(0)
}

async fn stop_all(children: Vec<Child>) -> anyhow::Result<()> {
    for child in &children {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on a child we have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for mut child in children {
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .context("a process did not stop within 40 s of SIGTERM")??;
        ensure!(
            status.success(),
            "a process exited with {status} on SIGTERM"
        );
    }
    Ok(())
}

struct DocumentsRun {
    rate: f64,
    p50: f64,
    p99: f64,
    chunks: u64,
    /// CPU milliseconds per document: the API, both workers, Redis.
    cpu_ms: (f64, f64, f64),
}

/// Waits for something to listen on the loopback port.
async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "nothing listened on port {port} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The word only document `i` holds: letters and digits, which the
/// analyser keeps verbatim.
fn marker(i: usize) -> String {
    format!("zq{i}x")
}

/// A support-article-like markdown document of ~5 chunks (at the shipped
/// `ingest.chunk_size` of 1,200 characters): a title and five paragraphs
/// of ~1,000 characters drawn from a small vocabulary, with its marker.
fn bench_document(i: usize) -> String {
    const WORDS: &str = "account password reset login email verify code security token refund \
invoice payment delivery shipping order subscription plan billing card charge cancel upgrade \
address support ticket return exchange warranty the a to of and in is it you for on with your \
can not this be are we will please when how if after before our settings page click open \
select button change update check status request receive send message team customer service";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = format!("# Article {i}\n\n");
    for paragraph in 0..5 {
        let mut len = 0;
        if paragraph == 0 {
            text.push_str(&marker(i));
            text.push(' ');
        }
        while len < 1000 {
            let w = words[(next() % words.len() as u64) as usize];
            text.push_str(w);
            len += w.len() + 1;
            text.push(if next() % 12 == 0 { '.' } else { ' ' });
            if text.ends_with('.') {
                text.push(' ');
            }
        }
        text.push_str("\n\n");
    }
    text
}

/// Searches the API for `doc`'s marker until the document comes first,
/// and notes when (with when its upload was sent).
async fn confirm_searchable(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    doc: &str,
    uploads: &Mutex<HashMap<String, (usize, Instant)>>,
    searchable: &Mutex<Vec<(Instant, Instant)>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        ensure!(
            started.elapsed() < PATIENCE,
            "document {doc} announced in the feed but never searchable"
        );
        // The feed can name a document before its upload's answer came.
        let known = uploads
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(doc)
            .copied();
        let Some((i, sent)) = known else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let found: serde_json::Value = http
            // The marker is letters and digits: nothing to escape.
            .get(format!("{base}/knowledge/search?q={}&limit=1", marker(i)))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        if found["data"]["results"][0]["document_id"].as_str() == Some(doc) {
            searchable
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push((sent, Instant::now()));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct IngestRun {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    accepted: u64,
    queued: u64,
    idle_rss: u64,
    load_rss: u64,
}

#[derive(Default)]
struct LoadState {
    inner: Mutex<LoadInner>,
}

#[derive(Default)]
struct LoadInner {
    latencies_ms: Vec<f64>,
    errors: u64,
    accepted: u64,
}

impl LoadState {
    fn record(&self, ok: bool, in_window: bool, took: Duration) {
        if let Ok(mut s) = self.inner.lock() {
            if ok {
                s.accepted += 1;
            } else {
                s.errors += 1;
            }
            if in_window {
                s.latencies_ms.push(took.as_secs_f64() * 1e3);
            }
        }
    }
}

// ---------------------------------------------------------------- receiver

#[derive(Default)]
struct Receipts {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_us: Vec<f64>,
}

/// A fast local receiver on its own thread and runtime: answers 200 and
/// notes, for bodies stamped with `"t_us":<unix µs>`, how long ago that was.
struct Receiver {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Receipts>>,
}

impl Receiver {
    fn spawn() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Receipts::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        let _ = axum::serve(listener, app).await;
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn reset(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = Receipts::default();
        }
    }

    fn count(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.count)
    }

    /// Receipts per second from the first to the last.
    fn rate(&self) -> f64 {
        self.state.lock().map_or(0.0, |s| match (s.first, s.last) {
            (Some(a), Some(b)) if b > a => {
                (s.count.saturating_sub(1)) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        })
    }

    fn latencies_ms(&self) -> Vec<f64> {
        self.state
            .lock()
            .map(|s| s.latencies_us.iter().map(|us| us / 1e3).collect())
            .unwrap_or_default()
    }
}

async fn receive(State(state): State<Arc<Mutex<Receipts>>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    let received_us = now_us();
    let stamp = find_stamp(&body);
    if let Ok(mut s) = state.lock() {
        s.count += 1;
        s.first.get_or_insert(now);
        s.last = Some(now);
        if let Some(t) = stamp.filter(|t| *t > 0) {
            s.latencies_us.push(received_us.saturating_sub(t) as f64);
        }
    }
    StatusCode::OK
}

fn find_stamp(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t_us\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: String = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().ok()
}

// -------------------------------------------------------------------- node

/// node with bullmq, and the baseline script in a temp dir.
struct Node {
    modules: PathBuf,
    dir: tempfile::TempDir,
}

struct NodeWorker(Child);

impl NodeWorker {
    async fn go(&mut self) -> anyhow::Result<()> {
        self.0
            .stdin
            .as_mut()
            .context("node stdin")?
            .write_all(b"go\n")
            .await?;
        Ok(())
    }
}

impl Node {
    fn prepare() -> anyhow::Result<Self> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let prefix = home.join(".cache").join("supportrag-bench-node");
        let modules = prefix.join("node_modules");
        if !(modules.join("bullmq").join("package.json").is_file()
            && modules.join("undici").join("package.json").is_file())
        {
            std::fs::create_dir_all(&prefix)?;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(prefix.join(".install.lock"))?;
            // SAFETY: flock on a descriptor we own for the lifetime of `lock`.
            ensure!(
                unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } == 0,
                "flock failed"
            );
            if !(modules.join("bullmq").join("package.json").is_file()
                && modules.join("undici").join("package.json").is_file())
            {
                eprintln!("installing bullmq@5 and undici@6 into {}", prefix.display());
                let status = std::process::Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&prefix)
                    .args(["bullmq@5", "undici@6"])
                    .stdin(Stdio::null())
                    .status()
                    .context("running npm (is node installed? or pass --no-bullmq)")?;
                ensure!(status.success(), "npm install bullmq failed: {status}");
            }
        }
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("bullmq_bench.js"), SCRIPT)?;
        Ok(Self { modules, dir })
    }

    fn command(&self, args: &[&str]) -> Process {
        let mut command = Process::new("node");
        command
            .arg(self.script())
            .args(args)
            .env("NODE_PATH", &self.modules)
            .kill_on_drop(true);
        command
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("bullmq_bench.js")
    }

    async fn run_to_end(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).stdin(Stdio::null()).output().await?;
        if !out.status.success() {
            bail!(
                "node {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn start_worker(&self, args: &[&str]) -> anyhow::Result<NodeWorker> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting node")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .context("node worker not ready within 30 s")??;
        ensure!(
            line.as_deref() == Some("ready"),
            "node worker said {line:?}"
        );
        Ok(NodeWorker(child))
    }
}
