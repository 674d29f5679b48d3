//! Keeping a replica current: tail the change feed, and rebuild from the
//! stored documents when there is nothing to tail from.
//!
//! The follower reads the feed with `XREAD BLOCK` from the replica's
//! position, looks up the *current* record of each document named (an
//! entry only says "look again"), reads its chunks, and publishes the
//! whole batch in one commit at the batch's last entry id.
//!
//! It rebuilds instead when the replica has never been built, when
//! entries after its position were trimmed from the feed (it was away for
//! longer than `retrieval.feed_length` changes), or when the feed is
//! behind its position (Redis lost data, or is another Redis): it notes
//! the feed's last id first, then indexes every record and commits at that
//! id; changes made meanwhile come after it in the feed and are applied
//! again, which is harmless.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::SearchError;
use super::embedded::Inner;
use super::feed_id::FeedId;
use super::replica::Change;
use super::store::{DocRecord, FeedBounds, PIECE_CHUNKS};

/// Feed entries applied per commit, at most.
const BATCH: usize = 512;
/// How long one read waits for a change; bounds how late the follower
/// notices that its replica was dropped.
pub const BLOCK: Duration = Duration::from_secs(1);
/// Pause after a failed step (Redis away, or busy).
const RETRY: Duration = Duration::from_secs(1);
/// How often the feed's bounds are checked while tailing.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Chunks staged per call into the indexer (bounds memory held here).
const STAGE_CHUNKS: usize = 4096;
/// Attempts to read a document whose version keeps changing under us.
const READ_ATTEMPTS: usize = 5;
/// Least time from one commit's start to the next read of the feed while
/// changes keep coming. Every commit writes a segment (and syncs it to
/// disk) that merges later redo: a busy feed applied a few documents at a
/// time spends more on commits and merges than on indexing. A change that
/// arrives while the feed is quiet is read (and committed) at once.
const COMMIT_GAP: Duration = Duration::from_millis(50);

/// Runs until the replica is dropped (`alive` closes).
pub async fn follow(inner: Weak<Inner>, mut alive: watch::Receiver<()>) {
    let mut last_check: Option<Instant> = None;
    loop {
        let Some(live) = inner.upgrade() else { return };
        let stepped = tokio::select! {
            stepped = step(&live, &mut last_check) => stepped,
            _ = alive.changed() => return,
        };
        if let Err(e) = stepped {
            tracing::warn!(error = %e, "search replica: could not follow the change feed; retrying");
            last_check = None;
            drop(live);
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn step(inner: &Arc<Inner>, last_check: &mut Option<Instant>) -> Result<(), SearchError> {
    if last_check.is_none_or(|at| at.elapsed() >= CHECK_EVERY) {
        let bounds = inner.store.feed_bounds().await?;
        inner.start_target.get_or_init(|| bounds.last);
        if needs_rebuild(inner.replica.position(), bounds) {
            rebuild(inner, bounds.last).await?;
        }
        *last_check = Some(Instant::now());
    }
    let position = inner.replica.position().unwrap_or(FeedId::ZERO);
    let mut feed_conn = inner.feed_conn.clone();
    let entries = inner
        .store
        .feed_read(&mut feed_conn, position, BATCH, BLOCK)
        .await?;
    let Some(&(last, _)) = entries.last() else {
        return Ok(());
    };
    let behind = entries.len() == BATCH;
    if behind {
        // Behind: make sure nothing was trimmed before reading on.
        *last_check = None;
    }
    let mut seen = std::collections::HashSet::new();
    let documents: Vec<String> = entries
        .into_iter()
        .rev()
        .filter_map(|(_, doc)| seen.insert(doc.clone()).then_some(doc))
        .collect();
    let started = Instant::now();
    apply(inner, documents, last).await?;
    tracing::debug!(position = %last, ms = started.elapsed().as_millis() as u64, "search replica applied feed entries");
    if !behind {
        tokio::time::sleep(COMMIT_GAP.saturating_sub(started.elapsed())).await;
    }
    Ok(())
}

fn needs_rebuild(position: Option<FeedId>, bounds: FeedBounds) -> bool {
    match position {
        None => true,
        Some(p) => p > bounds.last || bounds.trimmed.is_some_and(|t| t > p),
    }
}

/// Stages the current state of `documents` and commits it at `position`.
async fn apply(
    inner: &Arc<Inner>,
    documents: Vec<String>,
    position: FeedId,
) -> Result<(), SearchError> {
    let records = inner.store.records(&documents).await?;
    let mut stager = Stager::new(inner);
    let mut staged = stage_records(&mut stager, documents.into_iter().zip(records).collect()).await;
    // Whatever happened, nothing may still be indexing when the batch is
    // committed or rolled back.
    let waited = stager.wait().await;
    if staged.is_ok() {
        staged = waited;
    }
    finish(inner, staged, position).await
}

/// Commits what was staged if `staged` went well, else drops it.
async fn finish(
    inner: &Arc<Inner>,
    staged: Result<(), SearchError>,
    position: FeedId,
) -> Result<(), SearchError> {
    let replica = inner.clone();
    blocking(move || match staged {
        Ok(()) => replica.replica.commit(position),
        Err(e) => {
            replica.replica.rollback()?;
            Err(e)
        }
    })
    .await
}

/// Every record in Redis, committed at `position` (read before the walk).
async fn rebuild(inner: &Arc<Inner>, position: FeedId) -> Result<(), SearchError> {
    let started = Instant::now();
    tracing::info!(%position, "search replica: building from the stored documents");
    let replica = inner.clone();
    blocking(move || replica.replica.stage_clear()).await?;
    let mut stager = Stager::new(inner);
    let mut walked = async {
        let mut cursor = 0;
        loop {
            let (next, records) = inner.store.scan_records(cursor).await?;
            stage_records(
                &mut stager,
                records.into_iter().map(|(id, r)| (id, Some(r))).collect(),
            )
            .await?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
    .await;
    let waited = stager.wait().await;
    if walked.is_ok() {
        walked = waited;
    }
    finish(inner, walked, position).await?;
    tracing::info!(
        %position,
        chunks = inner.replica.chunks(),
        ms = started.elapsed().as_millis() as u64,
        "search replica built"
    );
    Ok(())
}

/// Hands staged changes to the indexer on the blocking pool, one batch at
/// a time, so the next batch is read from Redis while one is indexed.
struct Stager {
    inner: Arc<Inner>,
    indexing: Option<tokio::task::JoinHandle<Result<(), SearchError>>>,
}

impl Stager {
    fn new(inner: &Arc<Inner>) -> Self {
        Self {
            inner: inner.clone(),
            indexing: None,
        }
    }

    async fn push(&mut self, changes: Vec<Change>) -> Result<(), SearchError> {
        self.wait().await?;
        if !changes.is_empty() {
            let replica = self.inner.clone();
            self.indexing = Some(tokio::task::spawn_blocking(move || {
                replica.replica.stage(changes)
            }));
        }
        Ok(())
    }

    /// Waits for the batch being indexed, if any.
    async fn wait(&mut self) -> Result<(), SearchError> {
        match self.indexing.take() {
            Some(task) => task
                .await
                .map_err(|e| SearchError::Storage(format!("indexing task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Reads the chunks of each document's current version and stages them
/// (a document without a record is staged as gone).
async fn stage_records(
    stager: &mut Stager,
    records: Vec<(String, Option<DocRecord>)>,
) -> Result<(), SearchError> {
    let inner = stager.inner.clone();
    let inner = &inner;
    let mut changes = Vec::new();
    let mut staged_chunks = 0;
    let (small, large): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, r)| r.as_ref().is_none_or(|r| r.n <= PIECE_CHUNKS));
    // Small documents: one pipelined read per group of about a piece.
    let mut group: Vec<(String, DocRecord)> = Vec::new();
    let mut group_chunks = 0;
    let mut small = small.into_iter().peekable();
    while let Some((id, record)) = small.next() {
        match record {
            None => changes.push(Change::Gone { document_id: id }),
            Some(record) => {
                group_chunks += record.n;
                group.push((id, record));
            }
        }
        if group_chunks >= PIECE_CHUNKS || (small.peek().is_none() && !group.is_empty()) {
            let refs: Vec<(&str, &DocRecord)> =
                group.iter().map(|(id, r)| (id.as_str(), r)).collect();
            let read = inner.store.chunks_of_many(&refs).await?;
            for ((id, record), chunks) in std::mem::take(&mut group).into_iter().zip(read) {
                let change = match chunks {
                    Some(chunks) => Change::Put {
                        document_id: id,
                        record,
                        chunks,
                    },
                    None => current(inner, id).await?,
                };
                staged_chunks += change_chunks(&change);
                changes.push(change);
            }
            group_chunks = 0;
        }
        if staged_chunks >= STAGE_CHUNKS {
            stager.push(std::mem::take(&mut changes)).await?;
            staged_chunks = 0;
        }
    }
    for (id, record) in large {
        let change = match record {
            Some(record) => match inner.store.chunks(&id, &record).await? {
                Some(chunks) => Change::Put {
                    document_id: id,
                    record,
                    chunks,
                },
                None => current(inner, id).await?,
            },
            None => Change::Gone { document_id: id },
        };
        staged_chunks += change_chunks(&change);
        changes.push(change);
        if staged_chunks >= STAGE_CHUNKS {
            stager.push(std::mem::take(&mut changes)).await?;
            staged_chunks = 0;
        }
    }
    stager.push(changes).await
}

/// The state of a document whose chunks vanished while we read them (a
/// newer version replaced it, or it was deleted): read again.
async fn current(inner: &Arc<Inner>, id: String) -> Result<Change, SearchError> {
    for _ in 0..READ_ATTEMPTS {
        let Some(Some(record)) = inner.store.records(std::slice::from_ref(&id)).await?.pop() else {
            return Ok(Change::Gone { document_id: id });
        };
        if let Some(chunks) = inner.store.chunks(&id, &record).await? {
            return Ok(Change::Put {
                document_id: id,
                record,
                chunks,
            });
        }
    }
    Err(SearchError::Corrupt(format!(
        "the chunks of document {id} keep vanishing (its record names a version that is not stored)"
    )))
}

fn change_chunks(change: &Change) -> usize {
    match change {
        Change::Put { chunks, .. } => chunks.len(),
        Change::Gone { .. } => 0,
    }
}

/// Runs indexing work on the blocking pool, never on the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SearchError::Storage(format!("indexing task failed: {e}")))?
}

/// Lag of a replica behind the feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Feed entries not applied yet (counted up to [`LAG_COUNT_CAP`]).
    pub entries: usize,
    /// Age difference between the feed's newest entry and the replica's
    /// position (stream ids are millisecond timestamps).
    pub ms: u64,
}

/// Lag entries are counted up to this.
pub const LAG_COUNT_CAP: usize = 10_000;

pub async fn lag(inner: &Inner) -> Result<Lag, SearchError> {
    let last = inner.store.feed_last().await?;
    let position = inner.replica.position().unwrap_or(FeedId::ZERO);
    if position >= last {
        return Ok(Lag::default());
    }
    let entries = inner
        .store
        .feed_count_after(position, LAG_COUNT_CAP)
        .await?;
    Ok(Lag {
        entries,
        ms: last.ms.saturating_sub(position.ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> FeedId {
        FeedId { ms, seq: 0 }
    }

    #[test]
    fn rebuilds_when_new_trimmed_past_or_ahead_of_the_feed() {
        let feed = FeedBounds {
            last: id(100),
            trimmed: Some(id(40)),
        };
        assert!(needs_rebuild(None, feed));
        assert!(!needs_rebuild(Some(id(40)), feed), "at the trim point");
        assert!(!needs_rebuild(Some(id(90)), feed));
        assert!(needs_rebuild(Some(id(39)), feed), "missed trimmed entries");
        assert!(needs_rebuild(Some(id(101)), feed), "feed lost data");
        assert!(!needs_rebuild(Some(FeedId::ZERO), FeedBounds::default()));
    }
}
