//! The no-op queue benchmark shared by `queue-bench` and `bench`: worker
//! processes running the production `QueueRunner`, and one measurement.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use queue::RetryPolicy;
use queue::runtime::{DeadContext, Handler, JobContext, Outcome, QueueRunner};
use queue::{Envelope, Job, QueueClient};
use serde::{Deserialize, Serialize};
use shared::config::{KeyPrefix, RedisUrl, Settings};
use shared::redis_conn;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const PREFIX: &str = "bench";
pub const POLL_EVERY: Duration = Duration::from_millis(5);
/// A run that takes longer than this is stuck, not slow.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Args)]
pub struct BenchArgs {
    /// Jobs per run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    pub workers: Vec<usize>,
    /// Runs per worker count; the table shows median (min–max).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Jobs each worker process runs at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Jobs per `QueueClient::push` call.
    #[arg(long, default_value_t = 500)]
    pub push_batch: usize,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub redis_url: String,
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
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

pub fn redis_settings(url: &str, prefix: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.redis.url = RedisUrl::parse(url).map_err(anyhow::Error::msg)?;
    settings.redis.key_prefix = KeyPrefix::parse(prefix).map_err(anyhow::Error::msg)?;
    Ok(settings)
}

// ---------------------------------------------------------------- worker

pub async fn worker_process(args: WorkerArgs) -> anyhow::Result<()> {
    let settings = redis_settings(&args.redis_url, &args.prefix)?;
    // The shipped queue settings, so the figures are what a deployment gets.
    let runner_settings = settings
        .queue
        .runner(args.concurrency, Duration::from_secs(1));
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
pub struct Sample {
    pub enqueue_per_s: f64,
    pub process_per_s: f64,
    pub commands_per_job: f64,
    /// Redis' own CPU time (user + sys) per job, polling included.
    pub redis_cpu_us_per_job: f64,
    /// Calls by command name over the run, largest first.
    pub by_command: Vec<(String, u64)>,
}

pub async fn measure(
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
            .map(|n| Envelope::new(NoopJob::QUEUE, NoopJob { n }, queue::TraceId::generate()))
            .collect();
        queue.push(&batch).await?;
        pushed = end;
    }
    let enqueue_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();

    let mut children = Workers::start(workers, url, args.concurrency).await?;
    poller.depth(NoopJob::QUEUE).await?; // connects the poller, outside the counts
    let before_poll = crate::command_counts(&mut queue.connection()).await?;
    poller.depth(NoopJob::QUEUE).await?;
    let before = crate::command_counts(&mut queue.connection()).await?;
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
    let after = crate::command_counts(&mut queue.connection()).await?;
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
pub struct Workers(Vec<tokio::process::Child>);

impl Workers {
    /// Starts `count` workers and returns once every one has printed "ready".
    pub async fn start(count: usize, url: &str, concurrency: usize) -> anyhow::Result<Self> {
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

    pub async fn go(&mut self) -> anyhow::Result<()> {
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

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!("a worker exited during the run: {status}");
            }
        }
        Ok(())
    }

    /// SIGTERM, as in production; each worker must exit 0 on it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
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
pub async fn redis_benchmark(port: u16, pipeline: u32) -> Option<f64> {
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

/// Redis' CPU time so far (user + sys, main and background threads).
pub async fn redis_cpu_seconds(queue: &QueueClient) -> anyhow::Result<f64> {
    let cpu = crate::info(&mut queue.connection(), "cpu").await?;
    let seconds = |field: &str| -> anyhow::Result<f64> {
        cpu.get(field)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("INFO cpu has no {field}"))
    };
    Ok(seconds("used_cpu_user")? + seconds("used_cpu_sys")?)
}

pub fn delta(after: &HashMap<String, u64>, before: &HashMap<String, u64>) -> HashMap<String, u64> {
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
