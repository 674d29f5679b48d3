//! Retrieval's integration tests as one binary (one link instead of one per
//! file): chunking, formats, search replicas, providers, dictionary and the
//! answer-quality figures on the dev set.

mod chunker;
mod dictionary;
mod formats;
mod pdf;
mod providers;
mod quality;
mod search;
