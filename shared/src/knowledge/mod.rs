//! The knowledge base's documents as records: their status, uploads and
//! ingestion locks, and where each worker's search replica stands. The
//! searchable chunks themselves are rag's search store.
//!
//! Redis keys (layout in [`crate::keys`]): `P:doc:D` and its `:staging`,
//! `:lock` and `:deleted` keys, `P:docs`, `P:docext:W:H`, `P:staging:S`, and
//! `P:metrics:search_replicas`.

pub mod documents;
pub mod search_replicas;
