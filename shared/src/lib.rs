//! Support RAG's shared library: configuration, ids, the Redis job queue and
//! stores, signing, the SSRF policy and the outbound HTTP client. The API
//! and the worker are thin layers over this crate.

pub mod answer_policy;
pub mod auto_disable;
pub mod chat_stats;
pub mod config;
pub mod deliveries;
pub mod documents;
pub mod egress;
pub mod escalation;
pub mod event_payloads;
pub mod events;
pub mod feedback;
pub mod filters;
pub mod gaps;
pub mod handover;
pub mod idempotency;
pub mod ids;
pub mod incoming;
pub mod jobs;
pub mod jsonjs;
pub mod keys;
pub mod ordering;
pub mod process;
pub mod publish;
pub mod rate_limit;
pub mod redis_conn;
pub mod replays;
pub mod search_replicas;
pub mod secret_box;
pub mod services;
pub mod sessions;
pub mod signature_profiles;
pub mod signing;
pub mod ssrf;
pub mod telemetry;
pub mod time;
pub mod webhooks;
