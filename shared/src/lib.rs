//! Support RAG's shared library: the domain both the API and the worker
//! are thin layers over. One folder per domain:
//!
//! - [`webhooks`]: the webhook registry, event filters, signing and
//!   signature profiles, secrets at rest, auto-disable and rate limit.
//! - [`events`]: the outbound event catalogue and each event's payload.
//! - [`delivery`]: publishing events, delivery history, paced replays.
//! - [`chat`]: chat sessions, answer policy, escalation, hand-over,
//!   feedback, knowledge gaps and chat counters.
//! - [`knowledge`]: document records and search replica status.
//! - [`net`]: the SSRF policy and the one egress HTTP client.
//!
//! Top level, used across domains: configuration ([`config`]), ids, typed
//! jobs, the Redis key layout ([`keys`]), the storage error every store
//! shares ([`store`]), incoming webhooks ([`incoming`]), Idempotency-Key
//! ([`idempotency`]), Redis connections, the service graph ([`services`]),
//! telemetry, time, process helpers and the bytes `JSON.stringify` prints
//! ([`jsonjs`]).

pub mod chat;
pub mod config;
pub mod delivery;
pub mod events;
pub mod idempotency;
pub mod ids;
pub mod incoming;
pub mod jobs;
pub mod jsonjs;
pub mod keys;
pub mod knowledge;
pub mod net;
pub mod process;
pub mod redis_conn;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod webhooks;
