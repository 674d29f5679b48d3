//! The embedded search engine: BM25 over the knowledge base with tantivy,
//! in every process that searches, off Redis' single thread.
//!
//! Redis holds the truth: each document's current version and its chunks,
//! and a change feed ([`store`], where the key layout is written down).
//! Each process keeps a replica of the index on local disk ([`replica`])
//! and keeps it current by tailing the feed, or rebuilding from the stored
//! chunks when it cannot ([`follow`]). Questions become tantivy queries in
//! code ([`query`]) over terms of the shared [`crate::text::Analyzer`]
//! ([`schema`]) and run on threads of their own ([`pool`]). [`embedded`]
//! puts these together behind the
//! [`crate::knowledge::Retriever`] the service uses.

pub mod embedded;
pub mod feed_id;
pub mod follow;
pub mod pool;
pub mod query;
pub mod replica;
pub mod schema;
pub mod store;

pub use embedded::{EmbeddedSearch, ReplicaStatus};
pub use feed_id::FeedId;
pub use query::SearchOutcome;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("search engine: {0}")]
    Engine(#[from] tantivy::TantivyError),
    #[error("search index storage: {0}")]
    Storage(String),
    #[error("stored knowledge is unreadable: {0}")]
    Corrupt(String),
}

impl SearchError {
    /// Redis is out of reach or refusing work for now (down, loading,
    /// busy with a script, out of memory, failing over): retry later, or
    /// answer 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SearchError::Redis(e) => queue::is_unavailable(e),
            SearchError::Engine(_) | SearchError::Storage(_) | SearchError::Corrupt(_) => false,
        }
    }
}
