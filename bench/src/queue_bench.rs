//! `queue-bench`: throughput of our Redis-Streams job queue with no-op jobs,
//! measured the way the peers in NOTES.md ("Peers measured on this
//! machine") were, so the figures can sit in that table.
//!
//! ```text
//! cargo run --release -p supportrag-bench --bin queue-bench -- --jobs 20000 --workers 1,2 --runs 3
//! ```
//!
//! It starts a private `redis-server` (random loopback port, temp dir, no
//! persistence; killed at the end whatever happens), then for every run and
//! worker count:
//!
//! 1. flushes it and enqueues `--jobs` jobs through `QueueClient::push`,
//!    `--push-batch` per call: **enqueue jobs/s**;
//! 2. starts N worker processes (this binary's `worker` subcommand: the
//!    production `QueueRunner` with a no-op handler), waits until each has
//!    connected and created the group, says "go", and times until the
//!    queue's `processed` counter reaches the job count, polled every 5 ms:
//!    **processing jobs/s** from a full backlog;
//! 3. counts **Redis commands per processed job** from `INFO commandstats`
//!    deltas over that window, minus the benchmark's own polling (commands
//!    run inside Lua scripts count, as they do for BullMQ), and Redis' own
//!    CPU time per job from `INFO cpu` (NOTES: BullMQ ~40 µs).
//!
//! `redis-benchmark` LPUSH against the same server is printed as a
//! baseline: this machine is shared and noisy, so read figures as ratios.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use shared::config::{KeyPrefix, RedisUrl, Settings};
use shared::queue::{Envelope, Job, QueueClient};
use shared::redis_conn;
use shared::retry::RetryPolicy;
use supportrag_bench::{RedisServer, show_spread, spread, thousands};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use worker::runtime::{DeadContext, Handler, JobContext, Outcome, QueueRunner, RunnerSettings};

const PREFIX: &str = "bench";
const POLL_EVERY: Duration = Duration::from_millis(5);
/// A run that takes longer than this is stuck, not slow.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Parser)]
#[command(
    about = "Queue throughput benchmark (no-op jobs)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// One worker process; the benchmark starts these itself.
    Worker(WorkerArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Jobs per run.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    workers: Vec<usize>,
    /// Runs per worker count; the table shows median (min–max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Jobs each worker process runs at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Jobs per `QueueClient::push` call.
    #[arg(long, default_value_t = 500)]
    push_batch: usize,
}

#[derive(Args)]
struct WorkerArgs {
    #[arg(long)]
    redis_url: String,
    #[arg(long)]
    prefix: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NoopJob {
    n: u64,
}

impl Job for NoopJob {
    const QUEUE: &'static str = "bench";
}

struct Noop;

impl Handler for Noop {
    type Job = NoopJob;

    async fn handle(&self, _job: NoopJob, _ctx: &JobContext) -> Outcome {
        Outcome::Done
    }

    async fn on_dead(&self, _job: Option<&NoopJob>, _ctx: &DeadContext) -> anyhow::Result<()> {
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The same multi-threaded runtime as the production worker.
        Some(Command::Worker(args)) => {
            tokio::runtime::Runtime::new()?.block_on(worker_process(args))
        }
        // The parent only enqueues and polls; one thread leaves the cores to
        // Redis and the workers (and keeps PDEATHSIG below meaningful).
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(bench(cli.bench)),
    }
}

fn redis_settings(url: &str, prefix: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.redis.url = RedisUrl::parse(url).map_err(anyhow::Error::msg)?;
    settings.redis.key_prefix = KeyPrefix::parse(prefix).map_err(anyhow::Error::msg)?;
    Ok(settings)
}

// ---------------------------------------------------------------- worker

async fn worker_process(args: WorkerArgs) -> anyhow::Result<()> {
    let settings = redis_settings(&args.redis_url, &args.prefix)?;
    // The shipped queue settings, so the figures are what a deployment gets.
    let runner_settings =
        RunnerSettings::new(&settings.queue, args.concurrency, Duration::from_secs(1));
    let client = QueueClient::new(
        redis_conn::connect(&settings.redis)?,
        settings.redis.key_prefix.clone(),
    );
    let mut read_conn = redis_conn::connect_blocking(&settings.redis, runner_settings.block)?;
    let stop = shared::process::stop_on_signals();

    // Both connections are lazy: open them now so that connection setup
    // stays out of the timed window and the command counts.
    client.ensure_group(NoopJob::QUEUE).await?;
    client.ping().await?;
    let _: String = redis::cmd("PING").query_async(&mut read_conn).await?;

    // Stdin is the parent's channel: "go" starts the runner, EOF means the
    // parent is gone, so no worker outlives the benchmark. A plain thread,
    // because tokio's stdin would hold up runtime shutdown on its read.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let parent_gone = stop.clone();
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lines().map_while(Result::ok);
        if lines.next().as_deref() == Some("go") {
            let _ = go_tx.send(());
            lines.for_each(drop);
        }
        parent_gone.cancel();
        // Its Redis died with it: don't spend the runtime's ack retries (a
        // minute or more) on a server that is not coming back.
        std::thread::sleep(Duration::from_secs(10));
        std::process::exit(1);
    });
    println!("ready");
    if go_rx.await.is_err() {
        return Ok(());
    }

    QueueRunner {
        handler: Arc::new(Noop),
        client,
        read_conn,
        consumer: format!("bench-{}", std::process::id()),
        policy: Arc::new(RetryPolicy::new(
            vec![Duration::from_secs(1)],
            0.0,
            Duration::from_secs(1),
        )),
        settings: runner_settings,
    }
    .run(stop)
    .await;
    Ok(())
}

// ---------------------------------------------------------------- parent

/// One measurement: one run at one worker count.
struct Sample {
    enqueue_per_s: f64,
    process_per_s: f64,
    commands_per_job: f64,
    /// Redis' own CPU time (user + sys) per job, polling included.
    redis_cpu_us_per_job: f64,
    /// Calls by command name over the run, largest first.
    by_command: Vec<(String, u64)>,
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.jobs > 0 && args.runs > 0 && args.push_batch > 0,
        "--jobs, --runs and --push-batch must be positive"
    );
    ensure!(
        !args.workers.is_empty() && !args.workers.contains(&0),
        "--workers needs counts of at least 1"
    );
    let wall = Instant::now();
    let redis = RedisServer::start()?;
    let settings = redis_settings(&redis.url(), PREFIX)?;
    let queue = QueueClient::new(
        redis_conn::connect(&settings.redis)?,
        settings.redis.key_prefix.clone(),
    );
    // Polling gets its own connection so it never waits behind INFO or a push.
    let poller = QueueClient::new(
        redis_conn::connect(&settings.redis)?,
        settings.redis.key_prefix.clone(),
    );
    let version = info(&queue, "server")
        .await?
        .get("redis_version")
        .cloned()
        .unwrap_or_default();

    let baseline = (
        redis_benchmark(redis.port, 16).await,
        redis_benchmark(redis.port, 1).await,
    );

    let mut samples: Vec<Vec<Sample>> = args.workers.iter().map(|_| Vec::new()).collect();
    for run in 1..=args.runs {
        for (i, &workers) in args.workers.iter().enumerate() {
            let sample = measure(&args, workers, &redis.url(), &queue, &poller).await?;
            eprintln!(
                "run {run}/{}, {workers} worker(s): enqueue {} jobs/s, process {} jobs/s, {:.2} Redis commands/job, {:.1} µs Redis CPU/job",
                args.runs,
                thousands(sample.enqueue_per_s),
                thousands(sample.process_per_s),
                sample.commands_per_job,
                sample.redis_cpu_us_per_job,
            );
            samples[i].push(sample);
        }
    }

    println!(
        "queue-bench: {} no-op jobs per run ({} per push), {} run(s), concurrency {} per worker process, \
         Redis {version} on 127.0.0.1:{} (no persistence)",
        args.jobs, args.push_batch, args.runs, args.concurrency, redis.port
    );
    println!();
    println!(
        "| worker processes | enqueue jobs/s | process jobs/s | Redis commands per processed job | Redis CPU µs per job |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (workers, runs) in args.workers.iter().zip(&samples) {
        println!(
            "| {workers} | {} | {} | {:.2} | {:.1} |",
            show_spread(spread(runs.iter().map(|s| s.enqueue_per_s))),
            show_spread(spread(runs.iter().map(|s| s.process_per_s))),
            spread(runs.iter().map(|s| s.commands_per_job)).0,
            spread(runs.iter().map(|s| s.redis_cpu_us_per_job)).0,
        );
    }
    println!();
    match baseline {
        (Some(p16), Some(p1)) => println!(
            "baseline, same server: redis-benchmark -q -n 200000 -t lpush (50 clients): \
             -P 16 {} ops/s, -P 1 {} ops/s",
            thousands(p16),
            thousands(p1)
        ),
        _ => println!("baseline: redis-benchmark not found or failed; skipped"),
    }
    println!(
        "medians (min–max). Processing is timed from \"go\" (workers connected, group created, \
         backlog full) until processed = jobs, polled every {} ms; command counts exclude that \
         polling, Redis CPU (INFO cpu) does not.",
        POLL_EVERY.as_millis()
    );
    for (workers, runs) in args.workers.iter().zip(&samples) {
        let median = spread(runs.iter().map(|s| s.process_per_s)).0;
        let run = runs
            .iter()
            .min_by(|a, b| {
                (a.process_per_s - median)
                    .abs()
                    .total_cmp(&(b.process_per_s - median).abs())
            })
            .context("no runs")?;
        let parts: Vec<String> = run
            .by_command
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        println!(
            "Redis calls for {} jobs, {workers} worker(s), median run: {}",
            args.jobs,
            parts.join(", ")
        );
    }
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    workers: usize,
    url: &str,
    queue: &QueueClient,
    poller: &QueueClient,
) -> anyhow::Result<Sample> {
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut queue.connection())
        .await?;

    let started = Instant::now();
    let mut pushed = 0;
    while pushed < args.jobs {
        let end = (pushed + args.push_batch as u64).min(args.jobs);
        let batch: Vec<_> = (pushed..end)
            .map(|n| Envelope::new(NoopJob::QUEUE, NoopJob { n }, format!("{n:032x}")))
            .collect();
        queue.push(&batch).await?;
        pushed = end;
    }
    let enqueue_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();

    let mut children = Workers::start(workers, url, args.concurrency).await?;
    poller.depth(NoopJob::QUEUE).await?; // connects the poller, outside the counts
    let before_poll = command_counts(queue).await?;
    poller.depth(NoopJob::QUEUE).await?;
    let before = command_counts(queue).await?;
    let poll_cost = delta(&before, &before_poll);
    let cpu_before = redis_cpu_seconds(queue).await?;

    let started = Instant::now();
    children.go().await?;
    let mut polls = 0u64;
    let depth = loop {
        let depth = poller.depth(NoopJob::QUEUE).await?;
        polls += 1;
        if depth.processed_total >= args.jobs {
            break depth;
        }
        children.check_running()?;
        ensure!(started.elapsed() < RUN_TIMEOUT, "stuck: {depth:?}");
        tokio::time::sleep(POLL_EVERY).await;
    };
    let elapsed = started.elapsed();
    let after = command_counts(queue).await?;
    let cpu = redis_cpu_seconds(queue).await? - cpu_before;
    children.stop().await?;
    ensure!(
        depth.failed_total == 0 && depth.dead == 0,
        "no-op jobs failed: {depth:?}"
    );

    let mut by_command: Vec<(String, u64)> = delta(&after, &before)
        .into_iter()
        .map(|(name, calls)| {
            let polling = poll_cost.get(&name).copied().unwrap_or(0) * polls;
            (name, calls.saturating_sub(polling))
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    by_command.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let jobs = args.jobs as f64;
    Ok(Sample {
        enqueue_per_s,
        process_per_s: jobs / elapsed.as_secs_f64(),
        commands_per_job: by_command.iter().map(|(_, n)| *n as f64).sum::<f64>() / jobs,
        redis_cpu_us_per_job: cpu * 1e6 / jobs,
        by_command,
    })
}

/// The worker processes of one measurement; killed if dropped before `stop`.
struct Workers(Vec<tokio::process::Child>);

impl Workers {
    /// Starts `count` workers and returns once every one has printed "ready".
    async fn start(count: usize, url: &str, concurrency: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut workers = Workers(Vec::new());
        for _ in 0..count {
            let child = tokio::process::Command::new(&exe)
                .args(["worker", "--redis-url", url, "--prefix", PREFIX])
                .args(["--concurrency", &concurrency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            workers.0.push(child);
        }
        for child in &mut workers.0 {
            let stdout = child.stdout.take().context("worker stdout")?;
            let line = tokio::time::timeout(
                Duration::from_secs(30),
                BufReader::new(stdout).lines().next_line(),
            )
            .await
            .context("a worker did not get ready within 30 s")??;
            ensure!(
                line.as_deref() == Some("ready"),
                "a worker said {line:?} instead of \"ready\""
            );
        }
        Ok(workers)
    }

    async fn go(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            child
                .stdin
                .as_mut()
                .context("worker stdin")?
                .write_all(b"go\n")
                .await?;
        }
        Ok(())
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!("a worker exited during the run: {status}");
            }
        }
        Ok(())
    }

    /// SIGTERM, as in production; each worker must exit 0 on it.
    async fn stop(mut self) -> anyhow::Result<()> {
        for child in &self.0 {
            let pid = child.id().context("worker already reaped")?;
            // SAFETY: kill(2) on a child we have not reaped, so the pid is ours.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
                return Err(std::io::Error::last_os_error()).context("SIGTERM to a worker");
            }
        }
        for child in &mut self.0 {
            let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .context("a worker did not stop within 15 s of SIGTERM")??;
            ensure!(status.success(), "a worker exited with {status} on SIGTERM");
        }
        Ok(())
    }
}

/// Ops/s of `redis-benchmark -t lpush`, or None if it is missing or failed.
async fn redis_benchmark(port: u16, pipeline: u32) -> Option<f64> {
    let output = tokio::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "200000",
            "-P",
            &pipeline.to_string(),
            "-t",
            "lpush",
        ])
        .output()
        .await
        .ok()?;
    // Progress lines ("LPUSH: rps=…") come before the result, separated by \r.
    String::from_utf8_lossy(&output.stdout)
        .rsplit(['\r', '\n'])
        .find_map(|line| {
            line.strip_prefix("LPUSH: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// `INFO <section>` as field → value.
async fn info(queue: &QueueClient, section: &str) -> anyhow::Result<HashMap<String, String>> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut queue.connection())
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Calls per command so far, from `INFO commandstats`, without INFO itself
/// (that is us measuring).
async fn command_counts(queue: &QueueClient) -> anyhow::Result<HashMap<String, u64>> {
    let mut counts = HashMap::new();
    for (key, value) in info(queue, "commandstats").await? {
        let Some(name) = key.strip_prefix("cmdstat_") else {
            continue;
        };
        let calls = value
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unreadable commandstats line {key}:{value}"))?;
        if name != "info" {
            counts.insert(name.to_owned(), calls);
        }
    }
    Ok(counts)
}

/// Redis' CPU time so far (user + sys, main and background threads).
async fn redis_cpu_seconds(queue: &QueueClient) -> anyhow::Result<f64> {
    let cpu = info(queue, "cpu").await?;
    let seconds = |field: &str| -> anyhow::Result<f64> {
        cpu.get(field)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("INFO cpu has no {field}"))
    };
    Ok(seconds("used_cpu_user")? + seconds("used_cpu_sys")?)
}

fn delta(after: &HashMap<String, u64>, before: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}
