//! `queue-bench`: throughput of our Redis-Streams job queue with no-op jobs,
//! measured the way the peer queues (BullMQ, Sidekiq, …) were measured on
//! this machine, so the figures can sit beside theirs.
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

use std::time::Instant;

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};
use queue::QueueClient;
use shared::redis_conn;
use supportrag_bench::queue::{
    BenchArgs, POLL_EVERY, PREFIX, Sample, WorkerArgs, measure, redis_benchmark, redis_settings,
    worker_process,
};
use supportrag_bench::{RedisServer, show_spread, spread, thousands};

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
    let version = supportrag_bench::info(&mut queue.connection(), "server")
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
