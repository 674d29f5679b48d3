//! The consumer runtime against a real Redis: backlogs, several consumers,
//! poison jobs, panicking handlers, dead workers and shutdown.
//!
//! Each test starts its own `redis-server` and drives a
//! [`queue::runtime::QueueRunner`] directly with a test job type, so what
//! is checked is the runtime's contract (every job run, at least once and
//! normally exactly once; nothing stuck; nothing lost) independent of what
//! any real job does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use queue::runtime::{DeadContext, Handler, JobContext, Outcome, QueueRunner};
use queue::{DeadLetter, DeadLetterFilter, Envelope, Job, QueueClient};
use serde::{Deserialize, Serialize};
use testkit::{PATIENCE, TestRedis, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{READ_BLOCK, TestQueue};

/// A job that does nothing but say which one it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NoopJob {
    n: u64,
}

impl Job for NoopJob {
    const QUEUE: &'static str = "test-noop";
}

/// What every handler of one test saw, shared between runners.
#[derive(Default)]
struct Tally {
    /// Job number → attempt numbers it was run with (one entry per run).
    runs: Mutex<HashMap<u64, Vec<u32>>>,
    /// Jobs whose handler has started (also those that never finish).
    started: Mutex<Vec<u64>>,
    /// `on_dead` calls: the job number (if the job could be decoded) and
    /// the error.
    dead: Mutex<Vec<(Option<u64>, String)>>,
}

impl Tally {
    fn runs(&self) -> MutexGuard<'_, HashMap<u64, Vec<u32>>> {
        self.runs.lock().expect("tally lock")
    }

    fn distinct_runs(&self) -> usize {
        self.runs().len()
    }

    fn times_run(&self, n: u64) -> usize {
        self.runs().get(&n).map_or(0, Vec::len)
    }

    fn attempts_of(&self, n: u64) -> Vec<u32> {
        self.runs().get(&n).cloned().unwrap_or_default()
    }

    fn has_started(&self, n: u64) -> bool {
        self.started.lock().expect("tally lock").contains(&n)
    }
}

/// How a test handler behaves.
#[derive(Clone, Copy)]
enum Act {
    /// Finish at once.
    Succeed,
    /// Take this long per job.
    Sleep(Duration),
    /// Panic on this job (every attempt), succeed on the others.
    PanicOn(u64),
}

struct TestHandler {
    tally: Arc<Tally>,
    act: Act,
    /// Jobs this handler (this runner) ran.
    handled: AtomicUsize,
}

impl TestHandler {
    fn new(tally: &Arc<Tally>, act: Act) -> Arc<Self> {
        Arc::new(Self {
            tally: tally.clone(),
            act,
            handled: AtomicUsize::new(0),
        })
    }

    fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }
}

impl Handler for TestHandler {
    type Job = NoopJob;

    async fn handle(&self, job: NoopJob, ctx: &JobContext) -> Outcome {
        self.tally.started.lock().expect("tally lock").push(job.n);
        match self.act {
            Act::Succeed => {}
            Act::Sleep(d) => tokio::time::sleep(d).await,
            Act::PanicOn(n) if n == job.n => {
                self.tally
                    .runs()
                    .entry(job.n)
                    .or_default()
                    .push(ctx.overall_attempt());
                panic!("test handler panics on job {n}");
            }
            Act::PanicOn(_) => {}
        }
        self.tally
            .runs()
            .entry(job.n)
            .or_default()
            .push(ctx.overall_attempt());
        self.handled.fetch_add(1, Ordering::SeqCst);
        Outcome::Done
    }

    async fn on_dead(&self, job: Option<&NoopJob>, ctx: &DeadContext) -> Result<(), anyhow::Error> {
        self.tally
            .dead
            .lock()
            .expect("tally lock")
            .push((job.map(|j| j.n), ctx.error.clone()));
        Ok(())
    }
}

fn queue_client(settings: &TestQueue) -> QueueClient {
    settings.client()
}

fn runner(
    settings: &TestQueue,
    consumer: &str,
    handler: Arc<TestHandler>,
) -> QueueRunner<TestHandler> {
    settings.runner(consumer, handler)
}

/// A runner running in a task, stopped by its token.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn start(runner: QueueRunner<TestHandler>) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(runner.run(stop.clone()));
    Running { stop, task }
}

impl Running {
    /// Cancels and waits for `run()` to return.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run() did not return after cancellation")
            .expect("runner task panicked");
    }
}

fn job(n: u64) -> Envelope<NoopJob> {
    Envelope::new(
        NoopJob::QUEUE,
        NoopJob { n },
        format!("trace-{n}").parse().unwrap(),
    )
}

async fn push_jobs(client: &QueueClient, numbers: impl Iterator<Item = u64>) {
    let jobs: Vec<Envelope<NoopJob>> = numbers.map(job).collect();
    for chunk in jobs.chunks(1000) {
        client.push(chunk).await.expect("push jobs");
    }
}

async fn dead_letters(client: &QueueClient) -> Vec<DeadLetter> {
    client
        .dead_letters(&[NoopJob::QUEUE], &DeadLetterFilter::default(), 0, 100)
        .await
        .expect("list dead letters")
        .items
}

/// Waits until nothing is ready, scheduled or in flight (acks included).
async fn wait_until_drained(client: &QueueClient) {
    wait_until(
        "the queue to be empty (ready, scheduled and in flight)",
        PATIENCE,
        || async {
            let depth = client.depth(NoopJob::QUEUE).await.ok()?;
            (depth.ready == 0 && depth.scheduled == 0 && depth.in_flight == 0).then_some(())
        },
    )
    .await;
}

fn assert_each_ran_once(tally: &Tally, numbers: impl Iterator<Item = u64>) {
    let runs = tally.runs();
    let wrong: Vec<(u64, usize)> = numbers
        .map(|n| (n, runs.get(&n).map_or(0, Vec::len)))
        .filter(|(_, times)| *times != 1)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "jobs not run exactly once (job, times), first 10: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_due_at_once_are_promoted_and_each_runs_exactly_once() {
    // Given 10,000 jobs in the delayed set, all already due (a backlog after
    // an outage: more than one promotion batch, more than Lua can unpack)
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    let due = chrono::Utc::now().timestamp_millis() - 1_000;
    let jobs: Vec<Envelope<NoopJob>> = (0..10_000).map(job).collect();
    for chunk in jobs.chunks(500) {
        futures::future::try_join_all(chunk.iter().map(|j| client.schedule(j, due)))
            .await
            .expect("schedule");
    }
    assert_eq!(
        client.depth(NoopJob::QUEUE).await.expect("depth").scheduled,
        10_000
    );

    // When one runner with a no-op handler runs
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "solo",
        TestHandler::new(&tally, Act::Succeed),
    ));

    // Then every job is promoted and run, each exactly once
    wait_until("all 10,000 jobs to run", PATIENCE, || async {
        (tally.distinct_runs() == 10_000).then_some(())
    })
    .await;
    wait_until_drained(&client).await;
    running.stop().await;
    assert_each_ran_once(&tally, 0..10_000);
    let depth = client.depth(NoopJob::QUEUE).await.expect("depth");
    assert_eq!(depth.processed_total, 10_000);
    assert_eq!(depth.dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_share_a_backlog_and_run_each_job_once_in_total() {
    // Given a backlog of 5,000 jobs
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    push_jobs(&client, 0..5_000).await;

    // When two runners (two consumers of the group) work on it
    let tally = Arc::new(Tally::default());
    let a = TestHandler::new(&tally, Act::Sleep(Duration::from_millis(2)));
    let b = TestHandler::new(&tally, Act::Sleep(Duration::from_millis(2)));
    let running_a = start(runner(&settings, "runner-a", a.clone()));
    let running_b = start(runner(&settings, "runner-b", b.clone()));

    // Then every job runs exactly once in total, and both took part
    wait_until("all 5,000 jobs to run", PATIENCE, || async {
        (tally.distinct_runs() == 5_000).then_some(())
    })
    .await;
    wait_until_drained(&client).await;
    running_a.stop().await;
    running_b.stop().await;
    assert_each_ran_once(&tally, 0..5_000);
    assert_eq!(a.handled() + b.handled(), 5_000);
    assert!(
        a.handled() > 0 && b.handled() > 0,
        "one runner did all the work: a={} b={}",
        a.handled(),
        b.handled()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_while_redis_is_busy_creates_its_group_later_and_runs_jobs() {
    // Given Redis busy with a script when the runner starts, long enough
    // for its backoff to outgrow the reclaim interval (so the loop keeps
    // choosing reclaims, which cannot create the group themselves)
    let redis = TestRedis::start();
    let mut settings = TestQueue::new(&redis);
    settings.runner.visibility_timeout = Duration::from_millis(400);
    let busy = redis.busy_for(3_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tally = Arc::new(Tally::default());
    let handler = TestHandler::new(&tally, Act::Succeed);
    let running = start(runner(&settings, "runner-a", handler.clone()));
    busy.join().expect("busy script thread");

    // When jobs are pushed once Redis is free
    let client = queue_client(&settings);
    push_jobs(&client, 0..3).await;

    // Then the runner creates its group and runs them
    wait_until("the jobs to run", PATIENCE, || async {
        (tally.distinct_runs() == 3).then_some(())
    })
    .await;
    running.stop().await;
    assert_each_ran_once(&tally, 0..3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_are_dead_lettered_with_a_reason_and_do_not_block_the_queue() {
    // Given, at the head of the queue, bytes that are not JSON, an envelope
    // of an unknown version, and an envelope whose payload is not this job
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    client
        .push_raw(NoopJob::QUEUE, b"\x00garbage, not json")
        .await
        .expect("push garbage");
    let mut future_version = serde_json::to_value(job(900)).expect("envelope to JSON");
    future_version["v"] = serde_json::json!(99);
    client
        .push_raw(
            NoopJob::QUEUE,
            &serde_json::to_vec(&future_version).expect("JSON"),
        )
        .await
        .expect("push v99");
    let mut wrong_payload = serde_json::to_value(job(901)).expect("envelope to JSON");
    wrong_payload["payload"] = serde_json::json!({"n": "not a number"});
    client
        .push_raw(
            NoopJob::QUEUE,
            &serde_json::to_vec(&wrong_payload).expect("JSON"),
        )
        .await
        .expect("push");
    // ... and valid jobs behind them
    push_jobs(&client, 0..20).await;

    // When a runner runs
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "solo",
        TestHandler::new(&tally, Act::Succeed),
    ));

    // Then the valid jobs run, and the three poison entries are dead letters
    // that say what was wrong
    wait_until("the 20 valid jobs to run", PATIENCE, || async {
        (tally.distinct_runs() == 20).then_some(())
    })
    .await;
    let dead = wait_until("three dead letters", PATIENCE, || async {
        let dead = dead_letters(&client).await;
        (dead.len() == 3).then_some(dead)
    })
    .await;
    wait_until_drained(&client).await;
    running.stop().await;
    assert_each_ran_once(&tally, 0..20);
    let reasons: Vec<&str> = dead.iter().map(|d| d.last_error.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a readable envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("version 99")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not match")),
        "{reasons:?}"
    );
    for d in &dead {
        assert_eq!(d.job_type, NoopJob::QUEUE);
        assert_eq!(d.attempts, 0, "a poison entry is never run: {d:?}");
    }
    let garbage = dead
        .iter()
        .find(|d| d.last_error.contains("not a readable envelope"))
        .expect("garbage entry");
    assert_eq!(
        garbage.job,
        serde_json::json!("\u{0}garbage, not json"),
        "the raw bytes are kept for inspection"
    );
    assert_eq!(
        tally.dead.lock().expect("tally lock").len(),
        3,
        "on_dead runs for each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_per_policy_then_dead_lettered_while_others_flow() {
    // Given a handler that panics on job 3 every time (policy: 3 attempts)
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "solo",
        TestHandler::new(&tally, Act::PanicOn(3)),
    ));

    // When 20 jobs are queued
    push_jobs(&client, 0..20).await;

    // Then job 3 is tried 3 times and ends in the dead-letter set with the
    // panic as its error and its history; every other job runs once
    let dead = wait_until("job 3 to be dead-lettered", PATIENCE, || async {
        dead_letters(&client).await.into_iter().next()
    })
    .await;
    wait_until("the 19 other jobs to run", PATIENCE, || async {
        ((0..20).filter(|n| *n != 3).all(|n| tally.times_run(n) == 1)).then_some(())
    })
    .await;
    wait_until_drained(&client).await;
    running.stop().await;
    assert_each_ran_once(&tally, (0..20).filter(|n| *n != 3));
    assert_eq!(tally.attempts_of(3), [1, 2, 3]);
    assert_eq!(dead.attempts, 3);
    assert!(
        dead.last_error.contains("handler panicked") && dead.last_error.contains("job 3"),
        "{}",
        dead.last_error
    );
    assert_eq!(dead.history.len(), 3);
    assert_eq!(
        dead.history.iter().map(|h| h.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(dead.job["payload"]["n"], 3);
    assert_eq!(dead_letters(&client).await.len(), 1);
    let on_dead = tally.dead.lock().expect("tally lock").clone();
    assert_eq!(on_dead.len(), 1);
    assert_eq!(on_dead[0].0, Some(3));
}

/// Reads jobs as consumer `ghost` and never acknowledges them: a worker
/// that took them and died.
async fn taken_by_dead_worker(
    settings: &TestQueue,
    client: &QueueClient,
    count: usize,
) -> Vec<String> {
    let mut conn = settings.connection();
    let taken = client
        .read(&mut conn, NoopJob::QUEUE, "ghost", count, READ_BLOCK)
        .await
        .expect("read");
    assert_eq!(taken.len(), count);
    taken.into_iter().map(|f| f.entry_id).collect()
}

/// Another worker takes the entry over and dies too: the stream's delivery
/// counter goes up by one, as with a real reclaim (`XCLAIM`) by a worker that
/// then crashes.
async fn taken_over_and_abandoned_again(redis: &TestRedis, client: &QueueClient, entry_id: &str) {
    let keys = client.keys(NoopJob::QUEUE);
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let claimed: redis::Value = redis::cmd("XCLAIM")
        .arg(&keys.stream)
        .arg(queue::keys::CONSUMER_GROUP)
        .arg("ghost")
        .arg(0)
        .arg(entry_id)
        .query_async(&mut conn)
        .await
        .expect("XCLAIM");
    assert!(
        matches!(claimed, redis::Value::Array(ref items) if items.len() == 1),
        "XCLAIM gave {claimed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_a_dead_worker_is_reclaimed_after_the_visibility_timeout() {
    // Given a job taken by a worker that died without acknowledging it
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    push_jobs(&client, [1].into_iter()).await;
    taken_by_dead_worker(&settings, &client, 1).await;

    // When a live runner runs (with the 2 s visibility timeout)
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "alive",
        TestHandler::new(&tally, Act::Succeed),
    ));

    // Then it takes the job over and runs it, counting the crash as an
    // attempt
    wait_until(
        "the abandoned job to be reclaimed and run",
        PATIENCE,
        || async { (tally.times_run(1) > 0).then_some(()) },
    )
    .await;
    wait_until_drained(&client).await;
    running.stop().await;
    assert_eq!(
        tally.attempts_of(1),
        [2],
        "run once, as attempt 2 (the dead worker's run was attempt 1)"
    );
    assert!(dead_letters(&client).await.is_empty());
    let reclaimed: Option<u64> = redis::cmd("HGET")
        .arg(client.keys(NoopJob::QUEUE).stats)
        .arg("reclaimed")
        .query_async(&mut client.connection())
        .await
        .expect("stats");
    assert_eq!(reclaimed, Some(1), "the takeover is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_its_workers_is_dead_lettered_without_running_again() {
    // Given (policy: 3 attempts) job 2, whose 3 deliveries all died with
    // their workers, and job 3, whose 2 deliveries did
    let redis = TestRedis::start();
    let settings = TestQueue::new(&redis);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    push_jobs(&client, [2, 3].into_iter()).await;
    let entries = taken_by_dead_worker(&settings, &client, 2).await;
    let (job2, job3) = (&entries[0], &entries[1]);
    taken_over_and_abandoned_again(&redis, &client, job2).await;
    taken_over_and_abandoned_again(&redis, &client, job2).await;
    taken_over_and_abandoned_again(&redis, &client, job3).await;

    // When a live runner reclaims them after the visibility timeout
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "alive",
        TestHandler::new(&tally, Act::Succeed),
    ));

    // Then job 2 goes to the dead-letter set without running, its three
    // crashes counted as its three attempts
    let dead = wait_until("job 2 to be dead-lettered", PATIENCE, || async {
        dead_letters(&client).await.into_iter().next()
    })
    .await;
    // ... and job 3 still gets its last attempt
    wait_until("job 3 to run", PATIENCE, || async {
        (tally.times_run(3) > 0).then_some(())
    })
    .await;
    wait_until_drained(&client).await;
    assert_eq!(
        tally.times_run(2),
        0,
        "a job out of attempts must not run again"
    );
    assert_eq!(tally.attempts_of(3), [3]);
    assert_eq!(dead.job["payload"]["n"], 2);
    assert_eq!(dead.attempts, 3);
    assert!(
        dead.last_error.contains("worker stopped"),
        "{}",
        dead.last_error
    );
    assert_eq!(
        dead.job["attempt"], 3,
        "the stored job counts the attempts made, so a replay continues after them"
    );

    // When it is replayed (the crash was fixed), it runs as attempt 4
    assert!(client.dead_letter_replay(&dead).await.expect("replay"));
    wait_until("the replayed job to run", PATIENCE, || async {
        (tally.times_run(2) > 0).then_some(())
    })
    .await;
    running.stop().await;
    assert_eq!(tally.attempts_of(2), [4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_the_deadline_hands_the_running_job_back_for_another_worker() {
    // Given a runner whose shutdown deadline (300 ms) is shorter than its
    // job (60 s), busy with job 7
    let redis = TestRedis::start();
    let mut settings = TestQueue::new(&redis);
    settings.runner.shutdown_timeout = Duration::from_millis(300);
    let client = queue_client(&settings);
    client.ensure_group(NoopJob::QUEUE).await.expect("group");
    let slow_tally = Arc::new(Tally::default());
    let slow = start(runner(
        &settings,
        "slow",
        TestHandler::new(&slow_tally, Act::Sleep(Duration::from_secs(60))),
    ));
    push_jobs(&client, [7].into_iter()).await;
    wait_until("job 7 to start", PATIENCE, || async {
        slow_tally.has_started(7).then_some(())
    })
    .await;

    // When it is told to stop
    slow.stop().await; // panics unless run() returns

    // Then the job is back in the stream, not pending under the old runner
    let depth = client.depth(NoopJob::QUEUE).await.expect("depth");
    assert_eq!((depth.ready, depth.in_flight), (1, 0), "{depth:?}");
    assert_eq!(slow_tally.times_run(7), 0);

    // ... and a new runner runs it, as a first attempt (handing back is not
    // a failure)
    let tally = Arc::new(Tally::default());
    let running = start(runner(
        &settings,
        "next",
        TestHandler::new(&tally, Act::Succeed),
    ));
    wait_until("job 7 to run on the new runner", PATIENCE, || async {
        (tally.times_run(7) > 0).then_some(())
    })
    .await;
    wait_until_drained(&client).await;
    running.stop().await;
    assert_eq!(tally.attempts_of(7), [1]);
}
