//! A model-based randomized test of the queue: worker processes paused for
//! longer than the visibility timeout, SIGKILLed and replaced, Redis
//! restarted under them; then every job is checked against what the crate
//! promises (the guarantees in `queue/src/lib.rs`).
//!
//! Workers are real processes (this test binary run again as
//! `model_child`), so a pause is a real SIGSTOP: timers, heartbeats and
//! connections stall together, as in a frozen VM. Handlers write each run
//! they start, each success and each `on_dead` call to Redis, next to the
//! queue but outside its keys. What a run does (succeed, fail, panic, how
//! long it takes) is decided by the seed per (job, attempt), and so is the
//! chaos schedule: a printed seed replays both (the timing differs).
//!
//! Size, from the environment: `QUEUE_MODEL_JOBS` (300), `QUEUE_MODEL_WORKERS`
//! (4), `QUEUE_MODEL_SECONDS` of chaos (15), `QUEUE_MODEL_SEED` (random).
//! `scripts/queue-model.sh` runs it long.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use queue::runtime::{DeadContext, Handler, JobContext, Outcome};
use queue::{DeadLetter, DeadLetterFilter, Envelope, Job, JobId, KeyPrefix, PushOnce, QueueClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use testkit::{PATIENCE, TestRedis};
use tokio_util::sync::CancellationToken;

#[path = "queue/common.rs"]
mod common;
use common::TestQueue;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ModelJob {
    n: u64,
}

impl Job for ModelJob {
    const QUEUE: &'static str = "model";
}

/// Short, so that a pause of a few seconds outlasts it.
const VISIBILITY: Duration = Duration::from_secs(1);
/// Per worker: enough that a pause or a kill catches several jobs at once.
const CONCURRENCY: usize = 8;

/// Set for a worker process; `model_child` does nothing without it.
const CHILD: &str = "QUEUE_MODEL_CHILD";
const CHILD_REDIS: &str = "QUEUE_MODEL_CHILD_REDIS";
const CHILD_PREFIX: &str = "QUEUE_MODEL_CHILD_PREFIX";
const CHILD_CONSUMER: &str = "QUEUE_MODEL_CHILD_CONSUMER";
const CHILD_SEED: &str = "QUEUE_MODEL_CHILD_SEED";
const CHILD_PARENT: &str = "QUEUE_MODEL_CHILD_PARENT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Succeed,
    Fail,
    Panic,
}

/// What a run of (job, attempt) does, from the seed alone: a duplicate run
/// of an attempt does what the first did.
struct Plan {
    verdict: Verdict,
    sleep: Duration,
}

impl Plan {
    fn of(seed: u64, n: u64, attempt: u32) -> Self {
        let roll = mix(seed ^ mix(n) ^ mix(0x5eed_0000_0000 | u64::from(attempt)));
        let verdict = match roll % 100 {
            0..5 => Verdict::Panic,
            5..30 => Verdict::Fail,
            _ => Verdict::Succeed,
        };
        let pace = mix(roll);
        // One run in twenty outlasts the visibility timeout: only the
        // heartbeat keeps it from being taken over.
        let sleep = if pace % 100 < 5 {
            VISIBILITY * 3 / 2
        } else {
            Duration::from_millis((pace >> 8) % 200)
        };
        Plan { verdict, sleep }
    }
}

/// SplitMix64's finalizer: a cheap, well-spread hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where the handlers write what they did: under the test's prefix but
/// outside the queue's keys.
#[derive(Clone)]
struct ModelKeys {
    /// record id → "n attempt job_id consumer", one per run started.
    runs: String,
    /// record id of the run → "n attempt", one per run that returned Done.
    successes: String,
    /// record id → "n dead_letter_id", one per `on_dead` call.
    on_dead: String,
    /// consumer → 1 once its SIGTERM handler is in place.
    ready: String,
}

impl ModelKeys {
    fn new(prefix: &KeyPrefix) -> Self {
        let key = |name: &str| format!("{prefix}:model:{name}");
        Self {
            runs: key("runs"),
            successes: key("successes"),
            on_dead: key("on-dead"),
            ready: key("ready"),
        }
    }
}

struct ModelHandler {
    conn: ConnectionManager,
    keys: ModelKeys,
    seed: u64,
    consumer: String,
    next_record: AtomicU64,
}

impl ModelHandler {
    /// Records are fields of a hash, each under an id of its own, rather
    /// than list pushes: a write that landed but whose answer was lost
    /// (Redis restarting) is repeated without counting a run twice.
    fn record_id(&self) -> String {
        let n = self.next_record.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.consumer)
    }

    /// Writes until Redis takes it: a record missing because Redis was
    /// restarting would read as a run that never happened.
    async fn record(&self, key: &str, field: &str, value: &str) {
        let mut conn = self.conn.clone();
        while redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(value)
            .query_async::<i64>(&mut conn)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Handler for ModelHandler {
    type Job = ModelJob;

    async fn handle(&self, job: ModelJob, ctx: &JobContext) -> Outcome {
        let plan = Plan::of(self.seed, job.n, ctx.attempt);
        let run = self.record_id();
        let started = format!("{} {} {} {}", job.n, ctx.attempt, ctx.job_id, self.consumer);
        self.record(&self.keys.runs, &run, &started).await;
        tokio::time::sleep(plan.sleep).await;
        match plan.verdict {
            Verdict::Succeed => {
                let done = format!("{} {}", job.n, ctx.attempt);
                self.record(&self.keys.successes, &run, &done).await;
                Outcome::Done
            }
            Verdict::Fail => Outcome::Failed {
                error: format!("model failure (job {}, attempt {})", job.n, ctx.attempt),
                plan: ctx.plan_failure(None),
            },
            Verdict::Panic => panic!("model panic (job {}, attempt {})", job.n, ctx.attempt),
        }
    }

    async fn on_dead(
        &self,
        job: Option<&ModelJob>,
        ctx: &DeadContext,
    ) -> Result<(), anyhow::Error> {
        let n = job.map_or_else(|| "?".to_owned(), |j| j.n.to_string());
        let call = format!("{n} {}", ctx.dead_letter_id);
        self.record(&self.keys.on_dead, &self.record_id(), &call)
            .await;
        Ok(())
    }
}

/// One worker process of the parent test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    die_with_parent(var(CHILD_PARENT).parse().expect("parent pid"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let stop = CancellationToken::new();
    let on_term = stop.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::spawn(async move {
        term.recv().await;
        on_term.cancel();
    });

    let mut queue = TestQueue::at(var(CHILD_REDIS));
    queue.prefix = KeyPrefix::parse(&var(CHILD_PREFIX)).expect("prefix");
    queue.runner.visibility_timeout = VISIBILITY;
    queue.runner.concurrency = CONCURRENCY;
    queue.runner.batch_size = CONCURRENCY;
    let consumer = var(CHILD_CONSUMER);
    let keys = ModelKeys::new(&queue.prefix);
    let handler = Arc::new(ModelHandler {
        conn: queue.connection(),
        keys: keys.clone(),
        seed: var(CHILD_SEED).parse().expect("seed"),
        consumer: consumer.clone(),
        next_record: AtomicU64::new(0),
    });
    // Until now a SIGTERM would have killed the process instead of
    // stopping it: the parent waits for this before asking.
    handler.record(&keys.ready, &consumer, "1").await;
    queue.runner(&consumer, handler).run(stop).await;
}

/// A worker left behind by a test that was itself killed (nextest's
/// timeout, ^C) would run on; this one dies with the thread that started
/// it, which is the test's.
fn die_with_parent(parent: u32) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) sets a flag of this process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // The parent may have gone before the flag was set.
    if std::os::unix::process::parent_id() != parent {
        std::process::exit(1);
    }
}

struct Size {
    jobs: u64,
    workers: usize,
    seconds: u64,
    seed: u64,
}

impl Size {
    fn from_env() -> Self {
        Self {
            jobs: env_or("QUEUE_MODEL_JOBS", 300),
            workers: env_or("QUEUE_MODEL_WORKERS", 4usize).max(1),
            seconds: env_or("QUEUE_MODEL_SECONDS", 15),
            seed: env_or("QUEUE_MODEL_SEED", rand::random()),
        }
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// One worker process.
struct Worker {
    child: Child,
    consumer: String,
    log: PathBuf,
    /// SIGSTOPped until then.
    paused_until: Option<Instant>,
}

impl Worker {
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- worker {} ---\n{}", self.consumer, tail(&self.log, 30));
        }
        // SIGKILL ends a stopped process too: no worker outlives a failed
        // test, paused or not.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The worker processes, each restarted under a new consumer name when
/// killed, as a supervisor would.
struct Fleet {
    // Before `logs`, so that workers are killed before their logs go.
    workers: Vec<Worker>,
    logs: tempfile::TempDir,
    spawned: usize,
    redis_url: String,
    prefix: String,
    seed: u64,
}

impl Fleet {
    fn new(redis_url: String, prefix: &KeyPrefix, seed: u64) -> Self {
        Self {
            workers: Vec::new(),
            logs: tempfile::Builder::new()
                .prefix("queue-model-")
                .tempdir()
                .expect("log directory"),
            spawned: 0,
            redis_url,
            prefix: prefix.to_string(),
            seed,
        }
    }

    fn spawn(&mut self) -> Worker {
        let consumer = format!("w{}", self.spawned);
        self.spawned += 1;
        let log = self.logs.path().join(format!("{consumer}.log"));
        let out = File::create(&log).expect("worker log");
        let err = out.try_clone().expect("worker log");
        // libtest's and nextest's convention: the test binary runs the one
        // test named after `--exact`.
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["model_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env(CHILD_REDIS, &self.redis_url)
            .env(CHILD_PREFIX, &self.prefix)
            .env(CHILD_CONSUMER, &consumer)
            .env(CHILD_SEED, self.seed.to_string())
            .env(CHILD_PARENT, std::process::id().to_string())
            // A planned panic is one line in the log, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start a worker process");
        Worker {
            child,
            consumer,
            log,
            paused_until: None,
        }
    }

    fn add(&mut self) {
        let worker = self.spawn();
        self.workers.push(worker);
    }

    /// SIGKILL, then a new process in its place.
    fn replace(&mut self, i: usize) {
        let _ = self.workers[i].child.kill();
        let _ = self.workers[i].child.wait();
        self.workers[i] = self.spawn();
    }

    fn pause(&mut self, i: usize, length: Duration) {
        self.workers[i].signal(libc::SIGSTOP);
        self.workers[i].paused_until = Some(Instant::now() + length);
    }

    fn resume(&mut self, all: bool) {
        let now = Instant::now();
        for worker in &mut self.workers {
            if worker.paused_until.is_some_and(|until| all || until <= now) {
                worker.signal(libc::SIGCONT);
                worker.paused_until = None;
            }
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|i| self.workers[*i].paused_until.is_none())
            .collect()
    }

    /// A worker ends only when killed or told to stop: one that exits by
    /// itself crashed.
    fn check_alive(&mut self) {
        for worker in &mut self.workers {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!(
                    "worker {} exited by itself ({status}); log:\n{}",
                    worker.consumer,
                    tail(&worker.log, 40)
                );
            }
        }
    }

    /// SIGTERM to every worker; each must finish and exit 0.
    async fn stop(&mut self, conn: &mut ConnectionManager, keys: &ModelKeys) {
        let deadline = Instant::now() + PATIENCE;
        for worker in &self.workers {
            loop {
                let ready: bool = redis::cmd("HEXISTS")
                    .arg(&keys.ready)
                    .arg(&worker.consumer)
                    .query_async(conn)
                    .await
                    .unwrap_or(false);
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "worker {} never became ready",
                    worker.consumer
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for worker in &self.workers {
            worker.signal(libc::SIGTERM);
        }
        for worker in &mut self.workers {
            let status = loop {
                if let Some(status) = worker.child.try_wait().expect("wait for a worker") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "worker {} still running {PATIENCE:?} after SIGTERM",
                    worker.consumer
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(
                status.success(),
                "worker {} ended with {status} after SIGTERM; log:\n{}",
                worker.consumer,
                tail(&worker.log, 40)
            );
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.logs.disable_cleanup(true);
            eprintln!("worker logs kept in {}", self.logs.path().display());
        }
    }
}

#[derive(Default)]
struct Chaos {
    pauses: u32,
    crashes: u32,
    restarts: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_ends_done_or_dead_lettered_once_through_pauses_crashes_and_redis_restarts() {
    let size = Size::from_env();
    eprintln!(
        "queue model: seed {seed} (QUEUE_MODEL_SEED={seed} replays the schedule and every run's outcome), \
         {} jobs, {} workers, {} s of chaos",
        size.jobs,
        size.workers,
        size.seconds,
        seed = size.seed,
    );
    let began = Instant::now();
    // Given a Redis that fsyncs every write (a restart loses nothing it
    // acknowledged), and worker processes
    let mut redis = TestRedis::start_with_aof();
    let queue = TestQueue::new(&redis);
    let max_attempts = queue.policy().max_attempts();
    let client = queue.client();
    let keys = ModelKeys::new(&queue.prefix);
    client
        .ensure_group(ModelJob::QUEUE)
        .await
        .expect("consumer group");
    let mut fleet = Fleet::new(redis.url(), &queue.prefix, size.seed);
    for _ in 0..size.workers {
        fleet.add();
    }

    // When jobs arrive while workers are paused past the visibility
    // timeout, killed and replaced, and Redis is restarted (cleanly, then
    // SIGKILLed, in turn)
    let mut rng = StdRng::seed_from_u64(size.seed);
    let mut chaos = Chaos::default();
    let mut ids: Vec<JobId> = Vec::new();
    let chaos_for = Duration::from_secs(size.seconds);
    let restarts = if size.seconds == 0 {
        0
    } else {
        (size.seconds / 30).max(2)
    };
    let mut restart_at: Vec<Duration> = (1..=restarts)
        .map(|i| {
            chaos_for.mul_f64((i as f64 + rng.random_range(-0.3..0.3)) / (restarts + 1) as f64)
        })
        .collect();
    let gap = |rng: &mut StdRng| Duration::from_millis(rng.random_range(400..1200));
    let chaos_began = Instant::now();
    let mut next_event = chaos_began + gap(&mut rng);
    loop {
        let elapsed = chaos_began.elapsed();
        fleet.check_alive();
        fleet.resume(false);
        // Jobs keep arriving through the chaos, so that it always meets
        // jobs in flight.
        let due = if chaos_for.is_zero() {
            size.jobs
        } else {
            ((size.jobs as f64 * elapsed.as_secs_f64() / chaos_for.as_secs_f64()).ceil() as u64)
                .min(size.jobs)
        };
        push_until(&client, &mut ids, due).await;
        if restart_at.first().is_some_and(|at| elapsed >= *at) {
            restart_at.remove(0);
            // Every other restart is a crash: nothing acknowledged may be
            // lost with `appendfsync always` either.
            if chaos.restarts % 2 == 1 {
                redis.kill();
            }
            redis.restart();
            chaos.restarts += 1;
        }
        if elapsed < chaos_for && Instant::now() >= next_event {
            let running = fleet.running();
            // At most all workers but one paused at once.
            if running.len() > 1 && rng.random_bool(0.55) {
                let i = running[rng.random_range(0..running.len())];
                fleet.pause(i, VISIBILITY.mul_f64(rng.random_range(1.5..3.0)));
                chaos.pauses += 1;
            } else {
                let i = rng.random_range(0..fleet.workers.len());
                fleet.replace(i);
                chaos.crashes += 1;
            }
            next_event = Instant::now() + gap(&mut rng);
        }
        if elapsed >= chaos_for && ids.len() as u64 == size.jobs && restart_at.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.resume(true);

    // Then, once the queue has drained, every job is done or dead-lettered
    // as the model below allows
    let chaos_ended = Instant::now();
    wait_until_drained(&client, &mut fleet).await;
    let drained_in = chaos_ended.elapsed();
    let mut conn = client.connection();
    fleet.stop(&mut conn, &keys).await;
    let observed = observe(&client, &keys, ModelJob::QUEUE).await;
    let report = check(&observed, &ids, max_attempts);
    eprintln!(
        "queue model: seed {}, {} jobs, {} workers, {} s chaos: {} pauses, {} crashes, {} redis restarts; \
         {} reclaims, {} lost settles; {} runs, {} duplicate runs ({} same attempt twice, {} extra successes) \
         <= {} reclaims; {} done ({} successes), {} dead-lettered (at most {} dead letter per job, {} on_dead calls); \
         drained {:.1} s after the chaos, {:.1} s in all",
        size.seed,
        size.jobs,
        size.workers,
        size.seconds,
        chaos.pauses,
        chaos.crashes,
        chaos.restarts,
        report.reclaimed,
        report.lost,
        report.runs,
        report.duplicates,
        report.same_attempt,
        report.extra_successes,
        report.reclaimed,
        report.done,
        report.successes,
        report.dead,
        report.most_dead_letters,
        report.on_dead_calls,
        drained_in.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
    assert!(
        report.violations.is_empty(),
        "{} violation(s) of the model (seed {}), first 30:\n  {}",
        report.violations.len(),
        size.seed,
        report
            .violations
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Pushes jobs until `until` are queued. `push_once`, keyed by the job's
/// number, so that a push whose answer was lost (Redis restarting) can be
/// repeated without queueing the job twice.
async fn push_until(client: &QueueClient, ids: &mut Vec<JobId>, until: u64) {
    for n in ids.len() as u64..until {
        let job = Envelope::new(
            ModelJob::QUEUE,
            ModelJob { n },
            format!("model-{n}").parse().unwrap(),
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            match client
                .push_once(
                    &job,
                    &format!("job-{n}"),
                    Duration::from_secs(3600),
                    job.id.as_str(),
                )
                .await
            {
                Ok(PushOnce::Pushed) => break,
                Ok(PushOnce::Duplicate(first)) => {
                    assert_eq!(first, job.id.as_str(), "job {n} queued under another id");
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "could not queue job {n}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        ids.push(job.id);
    }
}

/// The stream, the delayed set and the pending list sizes.
async fn queue_sizes(client: &QueueClient, queue: &str) -> redis::RedisResult<(u64, u64, u64)> {
    let keys = client.keys(queue);
    let mut conn = client.connection();
    let (stream, delayed, pending): (u64, u64, redis::Value) = redis::pipe()
        .xlen(&keys.stream)
        .zcard(&keys.delayed)
        .cmd("XPENDING")
        .arg(&keys.stream)
        .arg(queue::keys::CONSUMER_GROUP)
        .query_async(&mut conn)
        .await?;
    let pending = match pending {
        redis::Value::Array(summary) => match summary.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    };
    Ok((stream, delayed, pending))
}

/// Waits until nothing is ready, delayed or in flight: every job and every
/// dead-letter notice has been settled.
async fn wait_until_drained(client: &QueueClient, fleet: &mut Fleet) {
    let started = Instant::now();
    let mut last = None;
    loop {
        fleet.check_alive();
        match queue_sizes(client, ModelJob::QUEUE).await {
            Ok((0, 0, 0)) => return,
            Ok(sizes) => last = Some(sizes),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the queue did not drain within {PATIENCE:?} of the chaos' end: \
             (stream, delayed, pending) = {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run as its handler recorded it.
struct Run {
    n: u64,
    attempt: u32,
    job_id: String,
}

/// Everything the check looks at, read from Redis once the workers are gone.
struct Observed {
    /// By record id.
    runs: HashMap<String, Run>,
    /// Record id of the run → (n, attempt).
    successes: HashMap<String, (u64, u32)>,
    /// (n, dead letter id) per `on_dead` call.
    on_dead: Vec<(String, String)>,
    dead: Vec<DeadLetter>,
    dead_hash_len: u64,
    stats: HashMap<String, u64>,
    stream: u64,
    delayed: u64,
    pending: u64,
}

async fn observe(client: &QueueClient, keys: &ModelKeys, queue: &str) -> Observed {
    let mut conn = client.connection();
    let hash = |key: &str| redis::cmd("HGETALL").arg(key).to_owned();
    let runs: HashMap<String, String> =
        hash(&keys.runs).query_async(&mut conn).await.expect("runs");
    let successes: HashMap<String, String> = hash(&keys.successes)
        .query_async(&mut conn)
        .await
        .expect("successes");
    let on_dead: HashMap<String, String> = hash(&keys.on_dead)
        .query_async(&mut conn)
        .await
        .expect("on_dead calls");
    let queue_keys = client.keys(queue);
    let stats: HashMap<String, u64> = hash(&queue_keys.stats)
        .query_async(&mut conn)
        .await
        .expect("stats");
    let dead_hash_len: u64 = redis::cmd("HLEN")
        .arg(&queue_keys.dead)
        .query_async(&mut conn)
        .await
        .expect("HLEN dead");
    let page = client
        .dead_letters(
            &[queue],
            &DeadLetterFilter::default(),
            0,
            usize::try_from(dead_hash_len).expect("count") + 10,
        )
        .await
        .expect("dead letters");
    let (stream, delayed, pending) = queue_sizes(client, queue).await.expect("queue sizes");
    let pair = |text: &str| {
        let mut parts = text.split_whitespace();
        (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        )
    };
    Observed {
        runs: runs
            .into_iter()
            .map(|(id, text)| {
                let parts: Vec<&str> = text.split_whitespace().collect();
                let run = Run {
                    n: parts[0].parse().expect("job number"),
                    attempt: parts[1].parse().expect("attempt"),
                    job_id: parts[2].to_owned(),
                };
                (id, run)
            })
            .collect(),
        successes: successes
            .into_iter()
            .map(|(id, text)| {
                let (n, attempt) = pair(&text);
                let parsed = (
                    n.parse().expect("job number"),
                    attempt.parse().expect("attempt"),
                );
                (id, parsed)
            })
            .collect(),
        on_dead: on_dead.values().map(|text| pair(text)).collect(),
        dead: page.items,
        dead_hash_len,
        stats,
        stream,
        delayed,
        pending,
    }
}

/// What the check found.
#[derive(Default)]
struct Report {
    runs: u64,
    successes: u64,
    done: u64,
    dead: u64,
    most_dead_letters: usize,
    on_dead_calls: u64,
    reclaimed: u64,
    lost: u64,
    /// Runs whose result was dropped (see `check`).
    duplicates: u64,
    same_attempt: u64,
    extra_successes: u64,
    violations: Vec<String>,
}

/// One job's history.
#[derive(Default)]
struct JobView<'a> {
    attempts: Vec<u32>,
    successes: u64,
    dead: Vec<&'a DeadLetter>,
    on_dead: BTreeSet<&'a str>,
}

/// The model every interleaving of the chaos must satisfy.
///
/// Per job:
/// - it ends in exactly one place: done (at least one recorded success, no
///   dead letter) or exactly one dead letter; a dead job's successes are
///   runs whose result was dropped;
/// - every run's attempt is within the policy (a reclaim counts as an
///   attempt, and a job out of attempts is dead-lettered without running);
/// - a dead letter is either exhausted (its last run failed, attempt ==
///   max) or a job whose workers kept stopping ("worker stopped", attempts
///   >= max);
/// - `on_dead` ran for its dead letter, under that dead letter's id only,
///   and never for a job that was not dead-lettered.
///
/// Globally: the stream, the delayed set and the pending list are empty;
/// the stats agree (every done job acknowledged once: processed = done +
/// one acknowledged notice per dead letter), and duplicate runs are bounded
/// by reclaims:
///
/// Each stream entry ends with exactly one settle (the queue is empty),
/// and each run belongs to one delivery of one entry. A job entry settled by
/// a run (ack, retry, or an exhausted dead letter: `done + retried +
/// exhausted` in all, counted by Redis) has one run whose result counted;
/// every other run of the entry was dropped (its settle refused, or its
/// worker killed first), and each of those belonged to a delivery followed
/// by another one, i.e. by a reclaim. So `runs - (done + retried +
/// exhausted)` <= `reclaimed` (which also counts reclaimed notices, which
/// only loosens it). The attempt-level views of the same duplicates — the
/// same (job, attempt) run twice, successes beyond the one acknowledged —
/// each count dropped runs only, so each is bounded by that difference.
fn check(observed: &Observed, ids: &[JobId], max_attempts: u32) -> Report {
    let mut report = Report::default();
    let v = &mut report.violations;
    let index: HashMap<&str, u64> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n as u64))
        .collect();
    let mut jobs: Vec<JobView> = (0..ids.len()).map(|_| JobView::default()).collect();

    for run in observed.runs.values() {
        let Some(job) = jobs.get_mut(run.n as usize) else {
            v.push(format!("a run of job {}, which was never queued", run.n));
            continue;
        };
        if index.get(run.job_id.as_str()) != Some(&run.n) {
            v.push(format!("job {} ran with the id {}", run.n, run.job_id));
        }
        if !(1..=max_attempts).contains(&run.attempt) {
            v.push(format!(
                "job {} ran as attempt {} (the policy allows {max_attempts})",
                run.n, run.attempt
            ));
        }
        job.attempts.push(run.attempt);
    }
    for (record, &(n, attempt)) in &observed.successes {
        match observed.runs.get(record) {
            Some(run) if run.n == n && run.attempt == attempt => {
                jobs[n as usize].successes += 1;
            }
            _ => v.push(format!(
                "a success of job {n}, attempt {attempt} with no run"
            )),
        }
    }
    for dead in &observed.dead {
        let n = dead
            .job_id
            .as_ref()
            .and_then(|id| index.get(id.as_str()).copied());
        let Some(n) = n else {
            v.push(format!(
                "dead letter {} of an unknown job: {:?}",
                dead.dead_letter_id, dead.job_id
            ));
            continue;
        };
        if dead.job["payload"]["n"] != n {
            v.push(format!(
                "dead letter {} of job {n} stores {}",
                dead.dead_letter_id, dead.job
            ));
        }
        jobs[n as usize].dead.push(dead);
    }
    for (n, dead_letter_id) in &observed.on_dead {
        match n.parse::<usize>().ok().and_then(|n| jobs.get_mut(n)) {
            Some(job) => {
                job.on_dead.insert(dead_letter_id);
            }
            None => v.push(format!("on_dead ran for job {n:?} ({dead_letter_id})")),
        }
    }

    let mut exhausted = 0;
    for (n, job) in jobs.iter().enumerate() {
        report.runs += job.attempts.len() as u64;
        report.successes += job.successes;
        let distinct: BTreeSet<u32> = job.attempts.iter().copied().collect();
        report.same_attempt += (job.attempts.len() - distinct.len()) as u64;
        report.most_dead_letters = report.most_dead_letters.max(job.dead.len());
        match job.dead.as_slice() {
            [] if job.successes == 0 => v.push(format!(
                "job {n} is neither done nor dead-lettered (attempts run: {:?})",
                job.attempts
            )),
            [] => {
                report.done += 1;
                report.extra_successes += job.successes - 1;
                if !job.on_dead.is_empty() {
                    v.push(format!(
                        "on_dead ran for job {n}, which was not dead-lettered: {:?}",
                        job.on_dead
                    ));
                }
            }
            [dead] => {
                report.dead += 1;
                report.extra_successes += job.successes;
                let stopped = dead.last_error.starts_with("worker stopped");
                if stopped {
                    if dead.attempts < max_attempts {
                        v.push(format!(
                            "job {n} dead-lettered for stopped workers after {} attempts",
                            dead.attempts
                        ));
                    }
                } else {
                    exhausted += 1;
                    let ours = dead.last_error.contains("model failure")
                        || dead.last_error.contains("model panic");
                    if !ours || dead.attempts != max_attempts {
                        v.push(format!(
                            "job {n} dead-lettered after {} attempts with {:?}",
                            dead.attempts, dead.last_error
                        ));
                    }
                    if !job.attempts.contains(&max_attempts) {
                        v.push(format!(
                            "job {n} exhausted, but attempt {max_attempts} never ran: {:?}",
                            job.attempts
                        ));
                    }
                }
                let expected = BTreeSet::from([dead.dead_letter_id.as_str()]);
                if job.on_dead != expected {
                    v.push(format!(
                        "job {n}: on_dead ran for {:?}, its dead letter is {}",
                        job.on_dead, dead.dead_letter_id
                    ));
                }
            }
            many => v.push(format!(
                "job {n} dead-lettered {} times: {:?}",
                many.len(),
                many.iter()
                    .map(|d| d.dead_letter_id.as_str())
                    .collect::<Vec<_>>()
            )),
        }
    }
    report.on_dead_calls = observed.on_dead.len() as u64;

    let stat = |name: &str| observed.stats.get(name).copied().unwrap_or(0);
    report.reclaimed = stat("reclaimed");
    report.lost = stat("lost");
    if (observed.stream, observed.delayed, observed.pending) != (0, 0, 0) {
        v.push(format!(
            "left in the queue: {} in the stream, {} delayed, {} pending",
            observed.stream, observed.delayed, observed.pending
        ));
    }
    let dead_letters = observed.dead.len() as u64;
    if stat("dead") != dead_letters || observed.dead_hash_len != dead_letters {
        v.push(format!(
            "dead letters: {dead_letters} listed, {} stored, {} counted",
            observed.dead_hash_len,
            stat("dead")
        ));
    }
    if stat("processed") != report.done + stat("dead") {
        v.push(format!(
            "{} acknowledged, but {} jobs done and {} dead-letter notices",
            stat("processed"),
            report.done,
            stat("dead")
        ));
    }
    if stat("failed") != stat("retried") + stat("dead") {
        v.push(format!(
            "{} failures counted, but {} retries and {} dead letters",
            stat("failed"),
            stat("retried"),
            stat("dead")
        ));
    }
    let settled_by_runs = report.done + stat("retried") + exhausted;
    match report.runs.checked_sub(settled_by_runs) {
        Some(dropped) => report.duplicates = dropped,
        None => v.push(format!(
            "{} runs recorded, fewer than the {settled_by_runs} settled by one",
            report.runs
        )),
    }
    if report.duplicates > report.reclaimed {
        v.push(format!(
            "{} duplicate runs, more than the {} reclaims",
            report.duplicates, report.reclaimed
        ));
    }
    for (what, count) in [
        ("(job, attempt) run twice", report.same_attempt),
        ("extra successes", report.extra_successes),
    ] {
        if count > report.duplicates {
            v.push(format!(
                "{count} {what}, more than the {} duplicate runs",
                report.duplicates
            ));
        }
    }
    report
}
