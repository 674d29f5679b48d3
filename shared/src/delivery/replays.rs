//! Paced re-sending: bulk replay of dead letters and recovery of one
//! webhook's failed deliveries since a time, optionally at a fixed rate so
//! a receiver that just came back is not knocked over again.
//!
//! Without a rate a run goes as fast as Redis allows, inside the request
//! that asked for it (the answer is the count). With a rate it runs in the
//! background of the API process that was asked, and its progress
//! ([`ReplayRun`]) lives in Redis, written after every item and at least
//! every [`HEARTBEAT`], so any API process can show it.
//!
//! If that process dies mid-run, nothing is lost or doubled: what was
//! re-sent has left the dead-letter set (or, for a failed delivery, has a
//! newer retry record), and what was not is still where it was. The run
//! shows `interrupted` once its heartbeat is older than [`STALE_AFTER`];
//! asking again (same filter, or same `since`) re-sends what is left.
//! There is no automatic resumption.
//!
//! What "recover" re-sends, per event of the webhook's history created at
//! or after `since` (only the newest record of each event counts, so an
//! event already retried by hand is judged by its retry):
//! - `dead`: its dead letter is replayed (same event id, attempt numbering
//!   continuing), so it leaves the dead-letter set;
//! - `failed` (a retry is scheduled): a manual retry now, as `POST
//!   /webhooks/deliveries/{id}/retry` does. The scheduled retry still
//!   happens; receivers de-duplicate on `event_id`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use queue::{DeadLetter, DeadLetterFilter, Job, KeyPrefix, Labels};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::delivery::history::{DeliveryFilter, DeliveryRecord, DeliveryStatus, ListFrom};
use crate::delivery::publish::{PublishError, Publisher};
use crate::ids::WebhookId;
use crate::jobs::{ALL_QUEUES, DeliverEvent, label};
use crate::store::StoreError;
use crate::time::serde_rfc3339;

/// Highest rate accepted (items per second).
pub const MAX_RATE: f64 = 1000.0;
/// A running run writes its progress at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A run whose last write is older than this is shown `interrupted`.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// How long a run's record is kept after its last write.
const RUN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Dead letters read per round: memory stays bounded however large the set.
const PAGE: usize = 100;
/// History records read per round while collecting what to recover.
const HISTORY_PAGE: usize = 100;

/// A rate of re-sending: the n-th item (from 0) goes at `start + n / rate`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    rate: f64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rate must be a number of items per second above 0 and at most {MAX_RATE}")]
pub struct RateError;

impl Pace {
    pub fn new(rate: f64) -> Result<Self, RateError> {
        if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE {
            Ok(Self { rate })
        } else {
            Err(RateError)
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When item `n` (counted from 0) is due. Counted from the start, not
    /// from the previous item, so slow items do not slow the whole run.
    pub fn due(&self, start: Instant, n: u64) -> Instant {
        start + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `POST /dead-letters/replay` with a rate.
    DeadLetters,
    /// `POST /webhooks/{id}/recover` with a rate.
    Recover,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Every item was tried.
    Finished,
    /// Stopped on an error (Redis out of reach); `error` says which.
    Failed,
    /// Still marked running, but its process stopped writing progress
    /// (it died or was stopped): what is left can be asked for again.
    Interrupted,
}

/// A paced run and how far it got.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayRun {
    pub replay_id: String,
    pub kind: RunKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// Items per second.
    pub rate: f64,
    pub state: RunState,
    /// Items found to re-send when the run started.
    pub total: u64,
    /// Re-sent so far.
    pub replayed: u64,
    /// Gone meanwhile (replayed or discarded by another caller).
    pub skipped: u64,
    /// Could not be re-sent (the error is logged).
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String)]
    pub started_at: DateTime<Utc>,
    /// The run's heartbeat: its last write.
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl ReplayRun {
    /// The state as a reader should see it at `now`.
    fn seen_at(mut self, now: DateTime<Utc>) -> Self {
        let stale = chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        if self.state == RunState::Running && now - self.updated_at > stale {
            self.state = RunState::Interrupted;
        }
        self
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tally {
    pub replayed: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Tally {
    fn tried(&self) -> u64 {
        self.replayed + self.skipped + self.failed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

impl ReplayError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            ReplayError::Publish(e) => e.is_unavailable(),
            ReplayError::Store(e) => e.is_unavailable(),
            ReplayError::Queue(e) => e.is_unavailable(),
        }
    }
}

/// What a run works through.
#[derive(Clone, Debug)]
pub enum Work {
    /// Dead letters matching the filter (read page by page as it goes).
    DeadLetters(DeadLetterFilter),
    /// These deliveries of one webhook (see [`Replayer::recoverable`]).
    Recover(Vec<DeliveryRecord>),
}

#[derive(Clone)]
pub struct Replayer {
    publisher: Publisher,
    conn: ConnectionManager,
    prefix: KeyPrefix,
}

impl Replayer {
    pub fn new(publisher: Publisher, conn: ConnectionManager, prefix: KeyPrefix) -> Self {
        Self {
            publisher,
            conn,
            prefix,
        }
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// How many items `work` holds now (what a dry run answers).
    pub async fn count(&self, work: &Work) -> Result<u64, ReplayError> {
        Ok(match work {
            Work::DeadLetters(filter) => {
                self.publisher
                    .queue
                    .dead_letters(ALL_QUEUES, filter, 0, 0)
                    .await?
                    .total
            }
            Work::Recover(records) => records.len() as u64,
        })
    }

    /// The deliveries of `webhook` that recovery re-sends: per event
    /// created at or after `since`, its newest record, when that is
    /// `failed` or `dead`; oldest first.
    pub async fn recoverable(
        &self,
        webhook: &WebhookId,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRecord>, ReplayError> {
        let deliveries = &self.publisher.deliveries;
        let mut newest_first = Vec::new();
        let mut offset = 0u64;
        'pages: loop {
            let page = deliveries
                .list(
                    webhook,
                    &DeliveryFilter::default(),
                    HISTORY_PAGE,
                    ListFrom::Offset(offset),
                )
                .await?;
            if page.records.is_empty() {
                break;
            }
            offset += page.records.len() as u64;
            for record in page.records {
                if record.timestamp < since {
                    break 'pages;
                }
                newest_first.push(record);
            }
        }
        Ok(select_recoverable(newest_first))
    }

    /// Runs `work` in this task, paced or not, and answers what it did.
    pub async fn run_now(&self, work: Work, pace: Option<Pace>) -> Result<Tally, ReplayError> {
        let mut progress = Progress::untracked(pace);
        self.work_through(work, &mut progress).await?;
        Ok(progress.tally)
    }

    /// Records a new paced run of `work` and starts it in the background;
    /// answers the run as it starts.
    pub async fn start(
        &self,
        kind: RunKind,
        webhook_id: Option<String>,
        work: Work,
        pace: Pace,
    ) -> Result<ReplayRun, ReplayError> {
        let now = Utc::now();
        let run = ReplayRun {
            replay_id: format!(
                "replay_{}",
                ulid::Ulid::generate().to_string().to_lowercase()
            ),
            kind,
            webhook_id,
            rate: pace.rate(),
            state: RunState::Running,
            total: self.count(&work).await?,
            replayed: 0,
            skipped: 0,
            failed: 0,
            error: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
        };
        self.save(&run).await?;
        let this = self.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let id = started.replay_id.clone();
            let mut progress = Progress::tracked(pace, started);
            let outcome = this.work_through(work, &mut progress).await;
            let Some(mut run) = progress.run.take() else {
                return;
            };
            run.replayed = progress.tally.replayed;
            run.skipped = progress.tally.skipped;
            run.failed = progress.tally.failed;
            run.finished_at = Some(Utc::now());
            run.updated_at = Utc::now();
            match outcome {
                Ok(()) => run.state = RunState::Finished,
                Err(e) => {
                    tracing::warn!(replay_id = %id, error = %e, "paced replay stopped");
                    run.state = RunState::Failed;
                    run.error = Some(e.to_string());
                }
            }
            if let Err(e) = this.save(&run).await {
                // Shown as interrupted once stale: still true to the reader.
                tracing::warn!(replay_id = %id, error = %e, "could not record the end of a replay");
            }
            tracing::info!(replay_id = %id, replayed = run.replayed, skipped = run.skipped,
                failed = run.failed, state = ?run.state, "paced replay ended");
        });
        Ok(run)
    }

    /// A run as it stands; `None` for an unknown (or expired) id.
    pub async fn get(&self, replay_id: &str) -> Result<Option<ReplayRun>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .conn
            .clone()
            .get(crate::keys::replay_run(&self.prefix, replay_id))
            .await?;
        let run = raw
            .map(|raw| serde_json::from_slice::<ReplayRun>(&raw))
            .transpose()?;
        Ok(run.map(|r| r.seen_at(Utc::now())))
    }

    async fn save(&self, run: &ReplayRun) -> Result<(), StoreError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(
                crate::keys::replay_run(&self.prefix, &run.replay_id),
                serde_json::to_vec(run)?,
                RUN_TTL.as_secs(),
            )
            .await?;
        Ok(())
    }

    async fn work_through(&self, work: Work, progress: &mut Progress) -> Result<(), ReplayError> {
        match work {
            Work::DeadLetters(filter) => loop {
                // Replayed entries leave the set, so the next page starts
                // after the ones that stay (gone meanwhile, or failed).
                let stayed = progress.tally.skipped + progress.tally.failed;
                let page = self
                    .publisher
                    .queue
                    .dead_letters(
                        ALL_QUEUES,
                        &filter,
                        usize::try_from(stayed).unwrap_or(usize::MAX),
                        PAGE,
                    )
                    .await?;
                if page.items.is_empty() {
                    return Ok(());
                }
                for dead in &page.items {
                    self.pause(progress).await?;
                    let outcome = self
                        .publisher
                        .replay(dead)
                        .await
                        .map(Outcome::from_found)
                        .map_err(ReplayError::from);
                    self.note(progress, outcome).await?;
                }
            },
            Work::Recover(records) => {
                for record in &records {
                    self.pause(progress).await?;
                    let outcome = self.resend(record).await;
                    self.note(progress, outcome).await?;
                }
                Ok(())
            }
        }
    }

    /// Re-sends one recoverable delivery (see the module documentation).
    async fn resend(&self, record: &DeliveryRecord) -> Result<Outcome, ReplayError> {
        match record.status {
            DeliveryStatus::Dead => {
                let Some(dead) = self.dead_letter_of(record).await? else {
                    return Ok(Outcome::Skipped);
                };
                Ok(Outcome::from_found(self.publisher.replay(&dead).await?))
            }
            DeliveryStatus::Failed => {
                self.publisher.retry_delivery(record).await?;
                Ok(Outcome::Replayed)
            }
            _ => Ok(Outcome::Skipped),
        }
    }

    async fn dead_letter_of(
        &self,
        record: &DeliveryRecord,
    ) -> Result<Option<DeadLetter>, ReplayError> {
        let labels: Labels = [(
            label::DELIVERY_ID.to_owned(),
            record.delivery_id.to_string(),
        )]
        .into_iter()
        .collect();
        let filter = DeadLetterFilter {
            labels,
            ..Default::default()
        };
        let page = self
            .publisher
            .queue
            .dead_letters(&[DeliverEvent::QUEUE], &filter, 0, 1)
            .await?;
        Ok(page.items.into_iter().next())
    }

    /// Waits until the next item is due, writing a heartbeat meanwhile.
    async fn pause(&self, progress: &mut Progress) -> Result<(), ReplayError> {
        let Some(pace) = progress.pace else {
            return Ok(());
        };
        let due = pace.due(progress.start, progress.tally.tried());
        loop {
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            let wait = (due - now).min(HEARTBEAT);
            tokio::time::sleep(wait).await;
            if progress.last_write.elapsed() >= HEARTBEAT {
                self.write_progress(progress).await?;
            }
        }
    }

    /// Counts one item's outcome. An item that fails for want of Redis
    /// stops the run (the next would fail too); any other failure is
    /// counted and the run goes on.
    async fn note(
        &self,
        progress: &mut Progress,
        outcome: Result<Outcome, ReplayError>,
    ) -> Result<(), ReplayError> {
        match outcome {
            Ok(Outcome::Replayed) => progress.tally.replayed += 1,
            Ok(Outcome::Skipped) => progress.tally.skipped += 1,
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "re-sending one item failed");
                progress.tally.failed += 1;
            }
        }
        if progress.run.is_some() {
            self.write_progress(progress).await?;
        }
        Ok(())
    }

    async fn write_progress(&self, progress: &mut Progress) -> Result<(), ReplayError> {
        let Some(run) = progress.run.as_mut() else {
            return Ok(());
        };
        run.replayed = progress.tally.replayed;
        run.skipped = progress.tally.skipped;
        run.failed = progress.tally.failed;
        run.updated_at = Utc::now();
        let run = run.clone();
        progress.last_write = Instant::now();
        Ok(self.save(&run).await?)
    }
}

enum Outcome {
    Replayed,
    Skipped,
}

impl Outcome {
    /// A replay answers false when the entry had gone meanwhile.
    fn from_found(found: bool) -> Self {
        if found {
            Outcome::Replayed
        } else {
            Outcome::Skipped
        }
    }
}

/// Where a run stands.
struct Progress {
    pace: Option<Pace>,
    start: Instant,
    tally: Tally,
    /// The record to keep up to date, for a background run.
    run: Option<ReplayRun>,
    last_write: Instant,
}

impl Progress {
    fn untracked(pace: Option<Pace>) -> Self {
        Self {
            pace,
            start: Instant::now(),
            tally: Tally::default(),
            run: None,
            last_write: Instant::now(),
        }
    }

    fn tracked(pace: Pace, run: ReplayRun) -> Self {
        Self {
            run: Some(run),
            ..Self::untracked(Some(pace))
        }
    }
}

/// From a history newest first: per event, its newest record, kept when
/// `failed` or `dead`; oldest first, the order they failed in.
fn select_recoverable(newest_first: Vec<DeliveryRecord>) -> Vec<DeliveryRecord> {
    let mut seen = HashSet::new();
    let mut chosen: Vec<DeliveryRecord> = newest_first
        .into_iter()
        .filter(|r| seen.insert(r.event_id.clone()))
        .filter(|r| matches!(r.status, DeliveryStatus::Failed | DeliveryStatus::Dead))
        .collect();
    chosen.reverse();
    chosen
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::catalog::{Event, EventMetadata, EventType};
    use crate::ids::{DeliveryId, EventId};

    #[test]
    fn rates_outside_the_range_are_refused() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_RATE + 1.0] {
            assert_eq!(Pace::new(bad), Err(RateError), "{bad}");
        }
        assert!(Pace::new(0.5).is_ok());
        assert!(Pace::new(MAX_RATE).is_ok());
    }

    #[test]
    fn items_are_due_at_even_steps_from_the_start() {
        let pace = Pace::new(20.0).unwrap();
        let start = Instant::now();
        assert_eq!(pace.due(start, 0), start);
        assert_eq!(pace.due(start, 1), start + Duration::from_millis(50));
        // 60 items at 20/s: the last goes 2.95 s after the first.
        assert_eq!(pace.due(start, 59), start + Duration::from_millis(2950));
    }

    fn run(state: RunState, updated_ago: Duration) -> ReplayRun {
        let now = Utc::now();
        ReplayRun {
            replay_id: "replay_x".into(),
            kind: RunKind::DeadLetters,
            webhook_id: None,
            rate: 1.0,
            state,
            total: 1,
            replayed: 0,
            skipped: 0,
            failed: 0,
            error: None,
            started_at: now,
            updated_at: now - chrono::Duration::from_std(updated_ago).unwrap(),
            finished_at: None,
        }
    }

    #[test]
    fn a_running_run_without_heartbeat_shows_interrupted() {
        let now = Utc::now();
        let fresh = run(RunState::Running, Duration::from_secs(1)).seen_at(now);
        assert_eq!(fresh.state, RunState::Running);
        let stale = run(RunState::Running, STALE_AFTER * 2).seen_at(now);
        assert_eq!(stale.state, RunState::Interrupted);
        let finished = run(RunState::Finished, STALE_AFTER * 2).seen_at(now);
        assert_eq!(finished.state, RunState::Finished);
    }

    fn record(event: &EventId, n: u32, status: DeliveryStatus) -> DeliveryRecord {
        let webhook = WebhookId::generate();
        let event = Event::new(
            event.clone(),
            EventType::WebhookTest,
            json!({}),
            EventMetadata {
                trace_id: "t".parse().unwrap(),
                correlation_id: None,
            },
        );
        let mut r = DeliveryRecord::queued(
            DeliveryId::for_event(&event.event_id, &webhook),
            webhook,
            event,
            n,
        );
        r.status = status;
        r
    }

    #[test]
    fn recovery_takes_the_newest_record_of_each_failed_or_dead_event() {
        let (a, b, c, d) = (
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
        );
        let newest_first = vec![
            record(&a, 2, DeliveryStatus::Success), // a's retry succeeded
            record(&b, 1, DeliveryStatus::Dead),
            record(&a, 1, DeliveryStatus::Dead),
            record(&c, 1, DeliveryStatus::Failed),
            record(&d, 1, DeliveryStatus::Queued),
        ];
        let chosen: Vec<(EventId, DeliveryStatus)> = select_recoverable(newest_first)
            .into_iter()
            .map(|r| (r.event_id, r.status))
            .collect();
        assert_eq!(
            chosen,
            vec![(c, DeliveryStatus::Failed), (b, DeliveryStatus::Dead)]
        );
    }
}
