//! Support RAG's shared library: configuration, ids, the Redis job queue and
//! stores, signing, the SSRF policy and the outbound HTTP client. The API
//! and the worker are thin layers over this crate.

pub mod config;
pub mod ids;
pub mod keys;
pub mod queue;
pub mod redis_conn;
pub mod retry;
pub mod time;
