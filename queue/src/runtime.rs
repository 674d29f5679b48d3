//! The consumer runtime: runs one queue's jobs with bounded concurrency
//! until told to stop.
//!
//! Per queue it runs four loops:
//! - **fetch**: waits for a free slot, then reads as many jobs as there are
//!   free slots in one `XREADGROUP` (and, now and then, reclaims jobs of dead
//!   workers the same way, taking at most one *suspect* — a job in flight in
//!   two crashes or more — at a time), and runs each in its own task;
//! - **ack**: finished jobs are acknowledged in batches, one owner-checked
//!   script per batch, which is what makes the hot path cheap;
//! - **promote**: moves due retries from the delayed set into the stream;
//! - **heartbeat**: keeps the visibility timeout from expiring on jobs that
//!   are still running here.
//!
//! Redis errors never end a loop: each backs off (capped) and tries again,
//! so a worker outlives a Redis restart. On shutdown the fetch loop stops,
//! running jobs get `shutdown_timeout` to finish, and whatever is still
//! running then is handed back to the queue for another worker.
//!
//! Every settle (ack, retry, defer, dead-letter, hand-back) is refused by
//! Redis when the entry is no longer this consumer's; the runtime then logs
//! that it lost the job to another consumer and moves on (see the crate's
//! guarantees).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde::Deserialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::client::{Fetched, FetchedKind, QueueClient, Settled};
use crate::dead_letter::DeadLetter;
use crate::ids::{DeadLetterId, JobId};
use crate::retry::{RetryPlan, RetryPolicy};
use crate::{ENVELOPE_VERSION, Envelope, Job, Labels, QueueError, TraceId};

/// What a handler knows about the run it is in.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub job_id: JobId,
    pub trace_id: TraceId,
    /// Attempt number within this run, from 1 (crashes counted).
    pub attempt: u32,
    /// Attempts made before a manual retry or replay started this run.
    pub prior_attempts: u32,
    policy: Arc<RetryPolicy>,
}

impl JobContext {
    /// The attempt number receivers see: it continues across replays.
    pub fn overall_attempt(&self) -> u32 {
        self.prior_attempts.saturating_add(self.attempt)
    }

    /// What happens if this attempt fails: the one place handlers learn the
    /// next retry time, so what they record is what the runtime does.
    pub fn plan_failure(&self, retry_after: Option<Duration>) -> RetryPlan {
        self.policy.plan(self.attempt, retry_after)
    }
}

/// How a job's attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    Failed {
        error: String,
        plan: RetryPlan,
    },
    /// Not attempted (e.g. the destination is at its concurrency cap): run
    /// again after this delay, counting no attempt and no failure.
    Later(Duration),
}

/// What a handler is told when one of its jobs is dead-lettered.
#[derive(Debug)]
pub struct DeadContext {
    /// New for each dead-lettering: what a notice about it is keyed by.
    pub dead_letter_id: DeadLetterId,
    pub job_id: Option<JobId>,
    pub trace_id: TraceId,
    pub error: String,
    /// Attempts of the run that ended here.
    pub attempts: u32,
    /// Attempts of the job in all, earlier runs (before replays) included.
    pub overall_attempts: u32,
    pub labels: Labels,
}

impl DeadContext {
    fn of(dead: &DeadLetter) -> Self {
        Self {
            dead_letter_id: dead.dead_letter_id.clone(),
            job_id: dead.job_id.clone(),
            trace_id: dead
                .job
                .get("trace_id")
                .and_then(|t| TraceId::deserialize(t).ok())
                .unwrap_or_else(TraceId::generate),
            error: dead.last_error.clone(),
            attempts: dead.attempts,
            overall_attempts: dead.prior_attempts.saturating_add(dead.attempts),
            labels: dead.labels.clone(),
        }
    }
}

pub trait Handler: Send + Sync + 'static {
    type Job: Job;

    fn handle(&self, job: Self::Job, ctx: &JobContext) -> impl Future<Output = Outcome> + Send;

    /// Runs once a job is in the dead-letter set, at least once per
    /// dead-lettering (again if a worker dies while it runs), so what it
    /// does must be idempotent on `ctx.dead_letter_id`. `job` is absent
    /// when the stored job could not be decoded.
    fn on_dead(
        &self,
        job: Option<&Self::Job>,
        ctx: &DeadContext,
    ) -> impl Future<Output = Result<(), anyhow::Error>> + Send;
}

#[derive(Clone, Debug)]
pub struct RunnerSettings {
    pub concurrency: usize,
    pub batch_size: usize,
    pub block: Duration,
    pub visibility_timeout: Duration,
    pub poll_interval: Duration,
    pub promote_batch: usize,
    pub shutdown_timeout: Duration,
}

/// Entries running in this process, by stream entry id, with what a
/// hand-back on shutdown re-enqueues.
type InFlight = Arc<Mutex<HashMap<String, (FetchedKind, Vec<u8>)>>>;

pub struct QueueRunner<H: Handler> {
    pub handler: Arc<H>,
    pub client: QueueClient,
    /// A connection of its own for blocking reads.
    pub read_conn: redis::aio::ConnectionManager,
    pub consumer: String,
    pub policy: Arc<RetryPolicy>,
    pub settings: RunnerSettings,
}

struct Shared<H: Handler> {
    handler: Arc<H>,
    client: QueueClient,
    consumer: String,
    policy: Arc<RetryPolicy>,
    in_flight: InFlight,
    acks: mpsc::UnboundedSender<String>,
    /// Wakes the promote loop when this process schedules a job, which may
    /// be due sooner than what the loop is sleeping towards.
    scheduled: Arc<Notify>,
    stop: CancellationToken,
}

impl<H: Handler> QueueRunner<H> {
    /// Runs until `stop` is cancelled and the jobs in hand are finished or
    /// handed back.
    pub async fn run(self, stop: CancellationToken) {
        let queue = H::Job::QUEUE;
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let in_flight: InFlight = Arc::default();
        let scheduled = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            handler: self.handler.clone(),
            client: self.client.clone(),
            consumer: self.consumer.clone(),
            policy: self.policy.clone(),
            in_flight: in_flight.clone(),
            acks: ack_tx,
            scheduled: scheduled.clone(),
            stop: stop.clone(),
        });
        let acker = tokio::spawn(ack_loop(
            self.client.clone(),
            queue,
            self.consumer.clone(),
            ack_rx,
        ));
        let background = CancellationToken::new();
        let promoter = tokio::spawn(promote_loop(
            self.client.clone(),
            queue,
            self.consumer.clone(),
            self.settings.clone(),
            scheduled,
            background.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            queue,
            self.consumer.clone(),
            in_flight.clone(),
            self.settings.visibility_timeout,
            background.clone(),
        ));

        let mut tasks = JoinSet::new();
        self.fetch_loop(&shared, &mut tasks).await;

        info!(
            queue,
            running = tasks.len(),
            "stopping: waiting for running jobs"
        );
        let drained = tokio::time::timeout(self.settings.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            hand_back_all(&self.client, queue, &self.consumer, &in_flight).await;
        }
        drop(shared);
        background.cancel();
        let _ = tokio::join!(acker, promoter, heartbeat);
        info!(queue, "stopped");
    }

    async fn fetch_loop(&self, shared: &Arc<Shared<H>>, tasks: &mut JoinSet<()>) {
        let queue = H::Job::QUEUE;
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut fetch = FetchState {
            read_conn: self.read_conn.clone(),
            backoff: Backoff::default(),
            reclaim_every: (self.settings.visibility_timeout / 4)
                .clamp(self.settings.poll_interval, Duration::from_secs(5)),
            last_reclaim: tokio::time::Instant::now(),
            suspect_running: Arc::new(AtomicBool::new(false)),
        };
        if let Err(e) = self.client.ensure_group(queue).await {
            warn!(queue, error = %e, "could not create the consumer group yet; the first fetch will try again");
        }
        loop {
            while tasks.try_join_next().is_some() {}
            let Some(permits) = self.free_slots(&slots, &shared.stop).await else {
                return;
            };
            match self.fetch(&mut fetch, permits.len()).await {
                Ok(fetched) => {
                    fetch.backoff.reset();
                    start_all(shared, tasks, fetched, permits, &fetch.suspect_running);
                }
                Err(e) => {
                    drop(permits);
                    if !self.recover(e, &mut fetch.backoff, &shared.stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits for one free slot, then takes as many more as are free, up
    /// to a batch; `None` once the runner is stopping.
    async fn free_slots(
        &self,
        slots: &Arc<Semaphore>,
        stop: &CancellationToken,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            () = stop.cancelled() => return None,
            permit = slots.clone().acquire_owned() => permit.ok()?,
        };
        if stop.is_cancelled() {
            return None;
        }
        let mut permits = vec![first];
        while permits.len() < self.settings.batch_size {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    /// New entries, or now and then the entries of consumers that stopped
    /// answering for them.
    async fn fetch(
        &self,
        fetch: &mut FetchState,
        count: usize,
    ) -> Result<Vec<Fetched>, QueueError> {
        let queue = H::Job::QUEUE;
        if fetch.last_reclaim.elapsed() >= fetch.reclaim_every {
            fetch.last_reclaim = tokio::time::Instant::now();
            self.client
                .reclaim(
                    queue,
                    &self.consumer,
                    self.settings.visibility_timeout,
                    count,
                    usize::from(!fetch.suspect_running.load(Ordering::Acquire)),
                )
                .await
        } else {
            self.client
                .read(
                    &mut fetch.read_conn,
                    queue,
                    &self.consumer,
                    count,
                    self.settings.block,
                )
                .await
        }
    }

    /// After a failed fetch: creates the consumer group if it is missing,
    /// else waits out the backoff. False once the runner is stopping.
    async fn recover(
        &self,
        error: QueueError,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> bool {
        let queue = H::Job::QUEUE;
        let delay = if error.is_missing_group() {
            match self.client.ensure_group(queue).await {
                Ok(()) => {
                    info!(queue, "consumer group created");
                    return true;
                }
                Err(e) => {
                    let delay = backoff.next();
                    warn!(queue, error = %e, retry_in_ms = delay.as_millis() as u64, "could not create the consumer group");
                    delay
                }
            }
        } else {
            let delay = backoff.next();
            warn!(queue, error = %error, retry_in_ms = delay.as_millis() as u64, "fetching jobs failed");
            delay
        };
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// What the fetch loop carries from one round to the next.
struct FetchState {
    read_conn: redis::aio::ConnectionManager,
    backoff: Backoff,
    reclaim_every: Duration,
    last_reclaim: tokio::time::Instant,
    /// Whether a suspect (a job in flight in two crashes or more) runs
    /// here: only one at a time, so a job that aborts the process cannot
    /// keep taking the same other jobs down with it.
    suspect_running: Arc<AtomicBool>,
}

/// Runs each fetched entry on a task of its own, holding its slot.
fn start_all<H: Handler>(
    shared: &Arc<Shared<H>>,
    tasks: &mut JoinSet<()>,
    fetched: Vec<Fetched>,
    permits: Vec<OwnedSemaphorePermit>,
    suspect_running: &Arc<AtomicBool>,
) {
    for (job, permit) in fetched.into_iter().zip(permits) {
        if let Ok(mut map) = shared.in_flight.lock() {
            map.insert(job.entry_id.clone(), (job.kind, job.raw.clone()));
        }
        let suspect = job.is_suspect();
        if suspect {
            suspect_running.store(true, Ordering::Release);
        }
        let suspect_running = suspect_running.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            run_one(&shared, job).await;
            if suspect {
                suspect_running.store(false, Ordering::Release);
            }
            drop(permit);
        });
    }
}

/// Decodes, runs and settles one fetched entry.
async fn run_one<H: Handler>(shared: &Shared<H>, fetched: Fetched) {
    if fetched.kind == FetchedKind::DeadNotice {
        run_notice(shared, fetched).await;
        return;
    }
    let queue = H::Job::QUEUE;
    let envelope = match decode::<H::Job>(&fetched.raw) {
        Ok(envelope) => envelope,
        Err(reason) => {
            let dead = dead_letter_for::<H::Job>(queue, None, &fetched.raw, reason, 0);
            settle_dead(shared, &fetched.entry_id, dead).await;
            return;
        }
    };
    // Each extra delivery of the same entry is a worker that died holding it.
    let crashes = fetched.times_delivered.saturating_sub(1);
    let attempt = envelope.attempt.saturating_add(crashes).saturating_add(1);
    let span =
        info_span!("job", queue, job_id = %envelope.id, trace_id = %envelope.trace_id, attempt);
    if let Some(hook) = JOB_SPAN_HOOK.get() {
        hook(&span, &envelope.trace_id);
    }
    async {
        if crashes > 0 && attempt > shared.policy.max_attempts() {
            let error = format!("worker stopped {crashes} time(s) while running this job (crashed or killed)");
            // Count every attempt made (crashes included) in the stored job,
            // as the failure path below does, so a replay continues after
            // them instead of after the last attempt that returned.
            let mut envelope = envelope;
            envelope.attempt = attempt.saturating_sub(2);
            let envelope = envelope.failed(error.clone());
            let dead = dead_letter_for(queue, Some(&envelope), &fetched.raw, error, attempt - 1);
            settle_dead(shared, &fetched.entry_id, dead).await;
            return;
        }
        let ctx = JobContext {
            job_id: envelope.id.clone(),
            trace_id: envelope.trace_id.clone(),
            attempt,
            prior_attempts: envelope.prior_attempts,
            policy: shared.policy.clone(),
        };
        let outcome = AssertUnwindSafe(shared.handler.handle(envelope.payload.clone(), &ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Outcome::Failed {
                error: format!("handler panicked: {}", panic_message(&panic)),
                plan: ctx.plan_failure(None),
            });
        match outcome {
            Outcome::Done => done(shared, fetched.entry_id),
            Outcome::Later(delay) => {
                // Crashes before this run still count; this run does not.
                let mut envelope = envelope;
                envelope.attempt = attempt - 1;
                settle_delayed(shared, &fetched.entry_id, &envelope, delay, Delayed::Deferred).await;
            }
            Outcome::Failed { error, plan } => {
                // The envelope's count is of attempts before this one, so
                // bring it to `attempt` (crashes included) before failing.
                let mut envelope = envelope;
                envelope.attempt = attempt - 1;
                let envelope = envelope.failed(error.clone());
                match plan {
                    RetryPlan::After(delay) => {
                        warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
                        settle_delayed(shared, &fetched.entry_id, &envelope, delay, Delayed::Retry)
                            .await;
                    }
                    RetryPlan::Exhausted => {
                        let dead = dead_letter_for(queue, Some(&envelope), &fetched.raw, error, attempt);
                        settle_dead(shared, &fetched.entry_id, dead).await;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// The typed envelope of a raw job, or why there is none. The direct parse
/// is the hot path; only a failure takes the slower route that says what is
/// wrong (not JSON, unknown version, payload of another shape).
fn decode<J: Job>(raw: &[u8]) -> Result<Envelope<J>, String> {
    let direct = serde_json::from_slice::<Envelope<J>>(raw);
    if let Ok(envelope) = direct.as_ref()
        && envelope.v == ENVELOPE_VERSION
    {
        return direct.map_err(|e| e.to_string());
    }
    let generic: Envelope<serde_json::Value> =
        serde_json::from_slice(raw).map_err(|e| format!("job is not a readable envelope: {e}"))?;
    if generic.v != ENVELOPE_VERSION {
        return Err(format!(
            "job envelope version {} is not supported (this worker reads {ENVELOPE_VERSION})",
            generic.v
        ));
    }
    match serde_json::from_value::<J>(generic.payload) {
        Ok(_) => Err(format!(
            "job envelope could not be read: {}",
            direct.err().map(|e| e.to_string()).unwrap_or_default()
        )),
        Err(e) => Err(format!("job payload does not match {}: {e}", J::QUEUE)),
    }
}

fn dead_letter_for<J: Job>(
    queue: &str,
    envelope: Option<&Envelope<J>>,
    raw: &[u8],
    error: String,
    attempts: u32,
) -> DeadLetter {
    let job = envelope
        .and_then(|e| serde_json::to_value(e).ok())
        .or_else(|| serde_json::from_slice(raw).ok())
        .unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(raw).into_owned()));
    DeadLetter {
        dead_letter_id: DeadLetterId::generate(),
        job_type: queue.to_owned(),
        job_id: envelope.map(|e| e.id.clone()),
        labels: envelope.map(|e| e.payload.labels()).unwrap_or_default(),
        attempts,
        prior_attempts: envelope.map_or(0, |e| e.prior_attempts),
        last_error: error,
        failed_at: chrono::Utc::now(),
        history: envelope.map(|e| e.errors.clone()).unwrap_or_default(),
        job,
    }
}

/// Retries a settle until Redis answers or the worker is told to stop; a
/// job not settled stays pending and is reclaimed later, so giving up on
/// stop loses nothing. Whatever Redis answered, the entry is no longer
/// this worker's to track.
async fn settle<H, F, Fut>(shared: &Shared<H>, entry_id: &str, what: &str, mut op: F)
where
    H: Handler,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Settled, QueueError>>,
{
    let mut backoff = Backoff::default();
    let settled = loop {
        match op().await {
            Ok(settled) => break settled,
            Err(e) => {
                let delay = backoff.next();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed");
                tokio::select! {
                    () = shared.stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    if settled == Settled::NotOwned {
        lost(H::Job::QUEUE, entry_id, what);
    }
    forget(shared, entry_id);
}

/// Says that a settle was refused: another consumer reclaimed the entry
/// while it ran here (this worker stalled past the visibility timeout), so
/// the job is theirs now and this run's result is dropped.
fn lost(queue: &str, entry_id: &str, what: &str) {
    warn!(
        queue,
        entry_id,
        "lost the job to another worker (held past the visibility timeout); {what} dropped"
    );
}

/// Why a job goes back to the delayed set.
#[derive(Clone, Copy)]
enum Delayed {
    /// An attempt failed; counted as a failure and a retry.
    Retry,
    /// Not attempted (its endpoint is at its cap); counted as nothing.
    Deferred,
}

async fn settle_delayed<H: Handler>(
    shared: &Shared<H>,
    entry_id: &str,
    envelope: &Envelope<H::Job>,
    delay: Duration,
    why: Delayed,
) {
    let Ok(bytes) = serde_json::to_vec(envelope) else {
        error!("could not encode a job to run later; it stays pending and will be reclaimed");
        return;
    };
    let due =
        crate::time::now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let (queue, consumer) = (H::Job::QUEUE, shared.consumer.as_str());
    let _wake = WakeOnDrop(&shared.scheduled);
    match why {
        Delayed::Retry => {
            settle(shared, entry_id, "scheduling a retry", || {
                shared
                    .client
                    .retry_later(queue, consumer, entry_id, &bytes, due)
            })
            .await;
        }
        Delayed::Deferred => {
            settle(shared, entry_id, "deferring a job", || {
                shared.client.defer(queue, consumer, entry_id, &bytes, due)
            })
            .await;
        }
    }
}

/// Moves a job into the dead-letter set; the notice written with it makes
/// some consumer run the handler's `on_dead` afterwards.
async fn settle_dead<H: Handler>(shared: &Shared<H>, entry_id: &str, dead: DeadLetter) {
    warn!(dead_letter_id = %dead.dead_letter_id, error = %dead.last_error, "job dead-lettered");
    let (queue, consumer) = (H::Job::QUEUE, shared.consumer.as_str());
    settle(shared, entry_id, "dead-lettering", || {
        shared.client.dead_letter(queue, consumer, entry_id, &dead)
    })
    .await;
}

/// Runs `on_dead` for a dead-letter notice, then acknowledges the notice.
/// A hook that keeps failing is retried until shutdown (the notice stays
/// pending and another worker runs it); one whose notice was handed out
/// [`NOTICE_MAX_DELIVERIES`] times (its workers keep dying) is given up,
/// so it cannot loop for ever.
async fn run_notice<H: Handler>(shared: &Shared<H>, fetched: Fetched) {
    /// A notice is redone after each crash of the worker running it, up to
    /// this many times.
    const NOTICE_MAX_DELIVERIES: u32 = 5;
    let queue = H::Job::QUEUE;
    let dead: DeadLetter = match serde_json::from_slice(&fetched.raw) {
        Ok(dead) => dead,
        Err(e) => {
            error!(queue, entry_id = fetched.entry_id, error = %e, "unreadable dead-letter notice dropped");
            return done(shared, fetched.entry_id);
        }
    };
    if fetched.times_delivered > NOTICE_MAX_DELIVERIES {
        error!(queue, dead_letter_id = %dead.dead_letter_id, times = fetched.times_delivered,
            "giving up the dead-letter hook: its workers stopped while running it");
        return done(shared, fetched.entry_id);
    }
    let ctx = DeadContext::of(&dead);
    let job = serde_json::from_value::<Envelope<H::Job>>(dead.job)
        .ok()
        .map(|e| e.payload);
    let mut backoff = Backoff::default();
    loop {
        let run = AssertUnwindSafe(shared.handler.on_dead(job.as_ref(), &ctx))
            .catch_unwind()
            .await;
        let error = match run {
            Ok(Ok(())) => return done(shared, fetched.entry_id),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("panicked: {}", panic_message(&panic)),
        };
        let delay = backoff.next();
        warn!(queue, dead_letter_id = %ctx.dead_letter_id, error, "dead-letter hook failed");
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// A finished entry: acknowledged with the next batch.
fn done<H: Handler>(shared: &Shared<H>, entry_id: String) {
    forget(shared, &entry_id);
    let _ = shared.acks.send(entry_id);
}

fn forget<H: Handler>(shared: &Shared<H>, entry_id: &str) {
    if let Ok(mut map) = shared.in_flight.lock() {
        map.remove(entry_id);
    }
}

async fn hand_back_all(client: &QueueClient, queue: &str, consumer: &str, in_flight: &InFlight) {
    let entries: Vec<(String, (FetchedKind, Vec<u8>))> = match in_flight.lock() {
        Ok(mut map) => map.drain().collect(),
        Err(_) => return,
    };
    for (entry_id, (kind, raw)) in entries {
        match client
            .hand_back(queue, consumer, &entry_id, kind, &raw)
            .await
        {
            Ok(Settled::Moved) => info!(queue, entry_id, "handed back an unfinished job"),
            Ok(Settled::NotOwned) => lost(queue, &entry_id, "hand-back"),
            // Still pending under our name: reclaimed after the timeout.
            Err(e) => warn!(queue, entry_id, error = %e, "could not hand back a job"),
        }
    }
}

/// Acknowledges finished jobs in batches until every sender is gone.
async fn ack_loop(
    client: QueueClient,
    queue: &'static str,
    consumer: String,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    const MAX_BATCH: usize = 1024;
    let mut batch: Vec<String> = Vec::with_capacity(MAX_BATCH);
    let mut backoff = Backoff::default();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(id) => batch.push(id),
                None => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        match client.ack(queue, &consumer, &batch).await {
            Ok(lost_ids) => {
                for entry_id in &lost_ids {
                    lost(queue, entry_id, "acknowledging");
                }
                batch.clear();
                backoff.reset();
            }
            Err(e) => {
                let delay = backoff.next();
                warn!(queue, error = %e, pending_acks = batch.len(), "acknowledging failed; retrying");
                if rx.is_closed() && backoff.attempts > 20 {
                    // Shutting down with Redis gone: these jobs stay
                    // pending and will be redone (at-least-once).
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Notifies when dropped: after a settle into the delayed set, whichever
/// way the settle ended.
struct WakeOnDrop<'a>(&'a Notify);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Promotes due jobs, then sleeps until the next one is due — at most
/// `poll_interval`, since other processes may schedule sooner ones, and
/// less when this process schedules one (`scheduled`). So a retry runs
/// within a round trip of its due time instead of up to a poll late.
async fn promote_loop(
    client: QueueClient,
    queue: &'static str,
    consumer: String,
    settings: RunnerSettings,
    scheduled: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        let result = async {
            while client.promote(queue, settings.promote_batch).await? >= settings.promote_batch {}
            if last_cleanup.elapsed() >= Duration::from_secs(60) {
                last_cleanup = tokio::time::Instant::now();
                client
                    .forget_idle_consumers(queue, &consumer, Duration::from_secs(3600))
                    .await?;
            }
            client.next_due(queue).await
        }
        .await;
        let delay = match result {
            Ok(next_due) => {
                backoff.reset();
                let until_due = next_due.map_or(settings.poll_interval, |due| {
                    let wait = due.saturating_sub(crate::time::now_ms());
                    Duration::from_millis(u64::try_from(wait).unwrap_or(0))
                });
                until_due.min(settings.poll_interval)
            }
            Err(e) => {
                warn!(queue, error = %e, "promoting due jobs failed");
                backoff.next()
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            () = scheduled.notified() => {
                // A burst of failures wakes the loop once per gap, not once
                // per job.
                tokio::time::sleep(WAKE_GAP).await;
            }
        }
    }
}

/// The shortest pause between two promotions woken by local schedules.
const WAKE_GAP: Duration = Duration::from_millis(5);

async fn heartbeat_loop(
    client: QueueClient,
    queue: &'static str,
    consumer: String,
    in_flight: InFlight,
    visibility_timeout: Duration,
    stop: CancellationToken,
) {
    let every = visibility_timeout / 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let ids: Vec<String> = match in_flight.lock() {
            Ok(map) => map.keys().cloned().collect(),
            Err(_) => continue,
        };
        for chunk in ids.chunks(500) {
            if let Err(e) = client.touch(queue, &consumer, chunk).await {
                warn!(queue, error = %e, "heartbeat failed");
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Called with each job's span and trace id before the job runs: how the
/// service joins the span to a distributed trace, without this crate
/// knowing which tracing system that is.
static JOB_SPAN_HOOK: std::sync::OnceLock<fn(&tracing::Span, &TraceId)> =
    std::sync::OnceLock::new();

/// Sets the job span hook for this process; the first call wins.
pub fn set_job_span_hook(hook: fn(&tracing::Span, &TraceId)) {
    let _ = JOB_SPAN_HOOK.set(hook);
}

/// Capped exponential backoff for reconnect-style retries, with half of
/// each delay random: every worker loses Redis at the same moment, and
/// without jitter they would all come back in lock-step.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(5);

    fn next(&mut self) -> Duration {
        let exp = self.attempts.min(10);
        self.attempts = self.attempts.saturating_add(1);
        let full = (Self::BASE * 2u32.pow(exp)).min(Self::CAP);
        full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_to_the_cap_with_half_of_each_random() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..14).map(|_| backoff.next()).collect();
        for (n, delay) in delays.iter().enumerate() {
            let full = (Backoff::BASE * 2u32.pow(n.min(10) as u32)).min(Backoff::CAP);
            assert!(
                *delay >= full / 2 && *delay <= full,
                "attempt {n}: {delay:?}"
            );
        }
        // Two workers starting together do not keep the same schedule.
        let mut other = Backoff::default();
        let others: Vec<Duration> = (0..14).map(|_| other.next()).collect();
        assert_ne!(delays, others);
        backoff.reset();
        assert!(backoff.next() <= Backoff::BASE);
    }
}
