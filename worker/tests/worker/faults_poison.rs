//! Poison jobs against real worker processes (issue 5, item 3).
//!
//! A job whose handler panics, a job that aborts the whole process, and
//! entries that no longer decode (garbage, an unknown envelope version, a
//! payload of another shape) are mixed into a stream of ordinary jobs. A
//! supervisor (this test) restarts the worker process whenever it dies, as
//! systemd or Kubernetes would. Each poison job must end in the dead-letter
//! set with its reason after the configured number of tries, the process
//! must die exactly as often as the aborting job was tried (no crash loop),
//! every ordinary job must run, none of them dead-lettered as collateral,
//! and the last worker must still stop cleanly on SIGTERM (not stuck).
//!
//! The worker process is this very test binary, re-run on the hidden test
//! [`child_worker`] with `FAULTS_CHILD_REDIS` set: it runs the production
//! [`QueueRunner`] with a test job type whose handler can call
//! `std::process::abort()`. No hook of any kind is needed in the shipped
//! worker. Without that variable `child_worker` does nothing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue::RetryPolicy;
use queue::runtime::{DeadContext, Handler, JobContext, Outcome, QueueRunner};
use queue::{DeadLetter, DeadLetterFilter, Envelope, Job, QueueClient};
use serde::{Deserialize, Serialize};
use shared::config::{KeyPrefix, Settings};
use testkit::{PATIENCE, TestRedis, test_settings, wait_until};
use tokio_util::sync::CancellationToken;

const CHILD_REDIS: &str = "FAULTS_CHILD_REDIS";
const CHILD_PREFIX: &str = "FAULTS_CHILD_PREFIX";
/// Tries per job: the policy has two retries.
const MAX_ATTEMPTS: u32 = 3;
const ORDINARY: u64 = 300;
const PANICS: u64 = 100;
const ABORTS: u64 = 150;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PoisonJob {
    n: u64,
}

impl Job for PoisonJob {
    const QUEUE: &'static str = "faults-poison";
}

struct PoisonHandler {
    conn: redis::aio::ConnectionManager,
    done: String,
}

impl Handler for PoisonHandler {
    type Job = PoisonJob;

    async fn handle(&self, job: PoisonJob, _ctx: &JobContext) -> Outcome {
        // Long enough that other jobs are in flight when the poison strikes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        match job.n {
            PANICS => panic!("poison job {PANICS} panics"),
            ABORTS => std::process::abort(),
            n => {
                let added: Result<i64, _> = redis::cmd("SADD")
                    .arg(&self.done)
                    .arg(n)
                    .query_async(&mut self.conn.clone())
                    .await;
                match added {
                    Ok(_) => Outcome::Done,
                    Err(e) => Outcome::Failed {
                        error: e.to_string(),
                        plan: _ctx.plan_failure(None),
                    },
                }
            }
        }
    }

    async fn on_dead(&self, _: Option<&PoisonJob>, _: &DeadContext) -> Result<(), anyhow::Error> {
        Ok(())
    }
}

fn settings(url: &str, prefix: &str) -> Settings {
    let mut settings = test_settings(url);
    settings.redis.key_prefix = KeyPrefix::parse(prefix).expect("prefix");
    settings.queue.visibility_timeout = Duration::from_secs(1);
    settings
}

fn done_key(prefix: &str) -> String {
    format!("{prefix}:faults:done")
}

/// The worker process (only when run by [`poison_jobs_end_dead_lettered_with_no_crash_loop`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker() {
    let (Ok(url), Ok(prefix)) = (std::env::var(CHILD_REDIS), std::env::var(CHILD_PREFIX)) else {
        return;
    };
    let settings = settings(&url, &prefix);
    let conn = shared::redis_conn::connect(&settings.redis).expect("redis");
    let block = Duration::from_millis(200);
    let runner = QueueRunner {
        handler: Arc::new(PoisonHandler {
            conn: conn.clone(),
            done: done_key(&prefix),
        }),
        client: QueueClient::new(conn, settings.redis.key_prefix.clone()),
        read_conn: shared::redis_conn::connect_blocking(&settings.redis, block).expect("redis"),
        consumer: format!("child-{}", std::process::id()),
        policy: Arc::new(RetryPolicy::new(
            vec![Duration::from_millis(20), Duration::from_millis(20)],
            0.0,
            Duration::from_secs(1),
        )),
        settings: settings.queue.runner(16, block),
    };
    let stop = CancellationToken::new();
    let on_term = stop.clone();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            on_term.cancel();
        }
    });
    runner.run(stop).await;
}

struct Supervised {
    child: Child,
    log: PathBuf,
}

fn spawn_child(url: &str, prefix: &str, dir: &std::path::Path, n: usize) -> Supervised {
    let log = dir.join(format!("child-{n}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "faults_poison::child_worker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_REDIS, url)
        .env(CHILD_PREFIX, prefix)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn child worker");
    Supervised { child, log }
}

async fn dead_letters(client: &QueueClient) -> Vec<DeadLetter> {
    client
        .dead_letters(&[PoisonJob::QUEUE], &DeadLetterFilter::default(), 0, 100)
        .await
        .expect("list dead letters")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_end_dead_lettered_with_no_crash_loop() {
    // Given ordinary jobs with, among them, one that panics, one that
    // aborts the process, and three entries no worker can decode
    let redis = TestRedis::start();
    let prefix = format!("t{:016x}", rand::random::<u64>());
    let settings = settings(&redis.url(), &prefix);
    let conn = shared::redis_conn::connect(&settings.redis).expect("redis");
    let client = QueueClient::new(conn.clone(), settings.redis.key_prefix.clone());
    client.ensure_group(PoisonJob::QUEUE).await.expect("group");
    let jobs: Vec<Envelope<PoisonJob>> = (1..=ORDINARY)
        .map(|n| {
            Envelope::new(
                PoisonJob::QUEUE,
                PoisonJob { n },
                format!("trace-{n}").parse().unwrap(),
            )
        })
        .collect();
    client.push(&jobs[..120]).await.expect("push");
    client
        .push_raw(PoisonJob::QUEUE, b"\xff\x00 not json at all")
        .await
        .expect("raw");
    let mut future = serde_json::to_value(&jobs[0]).expect("json");
    future["v"] = 99.into();
    client
        .push_raw(PoisonJob::QUEUE, future.to_string().as_bytes())
        .await
        .expect("raw");
    let mut reshaped = serde_json::to_value(&jobs[1]).expect("json");
    reshaped["payload"] = serde_json::json!({"n": "not a number"});
    client
        .push_raw(PoisonJob::QUEUE, reshaped.to_string().as_bytes())
        .await
        .expect("raw");
    client.push(&jobs[120..]).await.expect("push");
    let poison_ids: HashSet<String> = jobs
        .iter()
        .filter(|j| j.payload.n == PANICS || j.payload.n == ABORTS)
        .map(|j| j.id.to_string())
        .collect();

    // When worker processes run them, each restarted as soon as it dies
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spawned = 0;
    let mut current = spawn_child(&redis.url(), &prefix, dir.path(), spawned);
    let mut crashes = Vec::new();
    let started = Instant::now();
    let done_key = done_key(&prefix);
    loop {
        let done: u64 = redis::cmd("SCARD")
            .arg(&done_key)
            .query_async(&mut conn.clone())
            .await
            .expect("SCARD");
        let dead = dead_letters(&client).await.len();
        if done == ORDINARY - 2 && dead >= 5 {
            break;
        }
        if let Ok(Some(status)) = current.child.try_wait() {
            crashes.push(status);
            assert!(
                crashes.len() <= MAX_ATTEMPTS as usize,
                "crash loop: the worker died {} times: {crashes:?}",
                crashes.len()
            );
            spawned += 1;
            current = spawn_child(&redis.url(), &prefix, dir.path(), spawned);
        }
        assert!(
            started.elapsed() < PATIENCE * 2,
            "not settled: {done} ordinary jobs done, {dead} dead letters, {} crash(es); log:\n{}",
            crashes.len(),
            std::fs::read_to_string(&current.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Then the aborting job killed the process exactly once per try, and
    // each poison job is a dead letter with its reason
    assert_eq!(
        crashes.len(),
        MAX_ATTEMPTS as usize,
        "the aborting job should be tried (and crash) exactly {MAX_ATTEMPTS} times: {crashes:?}"
    );
    let dead = dead_letters(&client).await;
    let reason_of = |pattern: &str| -> &DeadLetter {
        dead.iter()
            .find(|d| d.last_error.contains(pattern))
            .unwrap_or_else(|| panic!("no dead letter says {pattern:?}: {dead:#?}"))
    };
    let of_job = |n: u64| -> &DeadLetter {
        dead.iter()
            .find(|d| d.job["payload"]["n"] == n)
            .unwrap_or_else(|| panic!("job {n} is not a dead letter: {dead:#?}"))
    };
    // The panicking job's last try may have been cut short by the aborting
    // job's crash (both in flight at once): then its reason is that stop,
    // and its history still shows the panics.
    let panicked = of_job(PANICS);
    assert!(
        std::iter::once(&panicked.last_error)
            .chain(panicked.history.iter().map(|h| &h.error))
            .any(|e| e.contains("handler panicked")),
        "{panicked:#?}"
    );
    assert_eq!(panicked.attempts, MAX_ATTEMPTS);
    let aborted = of_job(ABORTS);
    assert!(
        aborted.last_error.contains("worker stopped"),
        "{aborted:#?}"
    );
    assert_eq!(aborted.attempts, MAX_ATTEMPTS);
    assert_eq!(reason_of("not a readable envelope").attempts, 0);
    assert_eq!(reason_of("version 99 is not supported").attempts, 0);
    assert_eq!(reason_of("payload does not match").attempts, 0);
    // ... and no ordinary job went down with them
    let collateral: Vec<&DeadLetter> = dead
        .iter()
        .filter(|d| {
            d.job_id
                .as_ref()
                .is_some_and(|id| !poison_ids.contains(&id.to_string()))
        })
        .collect();
    assert!(
        collateral.is_empty(),
        "ordinary jobs dead-lettered alongside the poison: {collateral:#?}"
    );
    assert_eq!(dead.len(), 5, "{dead:#?}");
    eprintln!(
        "poison: {} crash(es), {} dead letters, {ORDINARY} - 2 ordinary jobs all done",
        crashes.len(),
        dead.len()
    );

    // ... and the worker standing at the end is not stuck: more jobs flow,
    // and SIGTERM stops it with status 0
    let more: Vec<Envelope<PoisonJob>> = (ORDINARY + 1..=ORDINARY + 20)
        .map(|n| {
            Envelope::new(
                PoisonJob::QUEUE,
                PoisonJob { n },
                format!("trace-{n}").parse().unwrap(),
            )
        })
        .collect();
    client.push(&more).await.expect("push");
    wait_until("the new jobs to run", PATIENCE, || async {
        let done: u64 = redis::cmd("SCARD")
            .arg(&done_key)
            .query_async(&mut conn.clone())
            .await
            .ok()?;
        (done == ORDINARY - 2 + 20).then_some(())
    })
    .await;
    let pid = libc::pid_t::try_from(current.child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::block_in_place(|| {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = current.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "the last worker did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(
        status.success(),
        "the last worker exited with {status}; log:\n{}",
        std::fs::read_to_string(&current.log).unwrap_or_default()
    );
}
