//! The worker: runs queued jobs with retries, dead-lettering and graceful
//! shutdown. `startup` wires it from settings and runs one consumer of the
//! queue crate per job type; `dead` says what a dead job announces; one
//! module per job: `chat` (the RAG step), `ingest` (the
//! indexing step), `session` (session ends and the idle sweep) and
//! `delivery` (outbound webhooks, with per-webhook `lanes` for fairness).

pub mod chat;
pub mod dead;
pub mod delivery;
pub mod ingest;
pub mod lanes;
pub mod session;
pub mod startup;
