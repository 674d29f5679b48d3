//! The embedded retriever: writes go to Redis ([`super::store`]), reads go
//! to this process's replica ([`super::replica`]) on the search threads
//! ([`super::pool`]).
//!
//! A search first reads the feed's newest id (one O(1) Redis command) and
//! waits, up to [`FRESHNESS_WAIT`], for the replica to reach it: a search
//! sees every change announced before it started, on whichever process it
//! runs. If Redis cannot be read the search still answers from the
//! replica as it stands.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::SearchError;
use super::feed_id::FeedId;
use super::follow::{self, Lag};
use super::pool::SearchPool;
use super::query::SearchOutcome;
use super::replica::Replica;
use super::store::{KnowledgeStore, Written};
use crate::text::Analyzer;
use crate::types::{Chunk, DocumentMeta};

/// How long a search waits for its replica to catch up with the feed.
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(1);
/// How long a delete waits for this process's replica to drop the
/// document before answering.
pub const REMOVAL_WAIT: Duration = Duration::from_secs(2);

pub struct Inner {
    pub(super) store: KnowledgeStore,
    pub(super) replica: Replica,
    /// A connection of its own for the feed's blocking reads.
    pub(super) feed_conn: ConnectionManager,
    /// The feed's newest id when this replica started following it: the
    /// replica is ready once it got there.
    pub(super) start_target: OnceLock<FeedId>,
}

pub struct EmbeddedSearch {
    inner: Arc<Inner>,
    pool: SearchPool,
    following: AtomicBool,
    /// Dropped with this, which tells the follower to stop at once (and
    /// so release the index directory) rather than after its next read.
    alive: watch::Sender<()>,
}

/// Where a replica stands, for readiness and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub position: Option<FeedId>,
    /// It reached the feed position it saw at start.
    pub caught_up: bool,
    pub lag: Lag,
    pub chunks: u64,
}

impl EmbeddedSearch {
    /// `conn` for ordinary commands, `feed_conn` for the blocking feed
    /// reads; the index lives in `index_dir` (a temporary directory when
    /// `None`).
    pub fn open(
        conn: ConnectionManager,
        feed_conn: ConnectionManager,
        key_prefix: &str,
        feed_length: usize,
        index_dir: Option<&Path>,
        analyzer: Arc<Analyzer>,
    ) -> Result<Self, SearchError> {
        Ok(Self {
            inner: Arc::new(Inner {
                store: KnowledgeStore::new(conn, key_prefix, feed_length),
                replica: Replica::open(index_dir, analyzer)?,
                feed_conn,
                start_target: OnceLock::new(),
            }),
            pool: SearchPool::new()?,
            following: AtomicBool::new(false),
            alive: watch::channel(()).0,
        })
    }

    /// Starts following the change feed (once; later calls do nothing).
    /// The follower stops by itself when this is dropped. Needs a Tokio
    /// runtime.
    pub fn follow(&self) {
        if !self.following.swap(true, Ordering::SeqCst) {
            tokio::spawn(follow::follow(
                Arc::downgrade(&self.inner),
                self.alive.subscribe(),
            ));
        }
    }

    pub fn store(&self) -> &KnowledgeStore {
        &self.inner.store
    }

    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    /// Whether the replica reached the feed position it saw at start.
    pub fn caught_up(&self) -> bool {
        match (self.inner.start_target.get(), self.inner.replica.position()) {
            (Some(target), Some(position)) => position >= *target,
            _ => false,
        }
    }

    /// Returns once [`Self::caught_up`] holds.
    pub async fn wait_caught_up(&self) {
        self.follow();
        let mut positions = self.inner.replica.watch();
        while !self.caught_up() {
            // The start target is set before the first build or read, so a
            // wake-up per commit (or a periodic look) suffices.
            let _ = tokio::time::timeout(Duration::from_millis(200), positions.changed()).await;
        }
    }

    pub async fn status(&self) -> Result<ReplicaStatus, SearchError> {
        Ok(ReplicaStatus {
            position: self.inner.replica.position(),
            caught_up: self.caught_up(),
            lag: follow::lag(&self.inner).await?,
            chunks: self.inner.replica.chunks(),
        })
    }

    /// Waits up to `wait` for the replica to reach `position`; whether it
    /// did.
    pub async fn wait_for(&self, position: FeedId, wait: Duration) -> bool {
        let mut positions = self.inner.replica.watch();
        let reached = positions.wait_for(|p| p.is_some_and(|p| p >= position));
        matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)))
    }

    pub async fn index(&self, doc: &DocumentMeta, chunks: &[Chunk]) -> Result<usize, SearchError> {
        if let Written::Stale = self.inner.store.put(doc, chunks).await? {
            tracing::warn!(
                document_id = %doc.document_id,
                "a newer version of the document was already current; this one was dropped"
            );
        }
        Ok(chunks.len())
    }

    /// Removes the document; whether this process's searches no longer
    /// find it (they will within moments if not yet).
    pub async fn remove(&self, document_id: &str) -> Result<bool, SearchError> {
        self.follow();
        match self.inner.store.delete(document_id).await? {
            Some(at) => Ok(self.wait_for(at, REMOVAL_WAIT).await),
            None => Ok(true),
        }
    }

    pub async fn search(&self, query: &str, limit: usize) -> Result<SearchOutcome, SearchError> {
        self.follow();
        match self.inner.store.feed_last().await {
            Ok(last) => {
                if !self.wait_for(last, FRESHNESS_WAIT).await {
                    tracing::debug!(feed = %last, "search replica behind the feed; answering from it");
                }
            }
            Err(e) => tracing::debug!(error = %e, "feed unreadable; answering from the replica"),
        }
        let inner = self.inner.clone();
        let query = query.to_owned();
        self.pool
            .run(move || inner.replica.search(&query, limit))
            .await
    }
}
