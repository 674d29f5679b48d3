//! The API's integration tests as one binary (one link instead of one per
//! file): each module is a scenario group against a real API, real Redis
//! processes and real receivers; `common` holds the `spawn_app` helpers.

mod chat_and_knowledge;
mod common;
mod console;
mod delivery_flow;
mod event_catalogue;
mod faults_outage;
mod faults_redis;
mod faults_redis_replies;
mod idempotency;
mod incoming;
mod operations;
mod paced_replay;
mod rag_flow;
mod registry;
mod reingest;
mod secrets;
mod security_admin;
mod security_fuzz;
mod security_incoming;
mod security_secrets;
mod security_ssrf;
mod signature_profiles;
mod webhook_protection;
