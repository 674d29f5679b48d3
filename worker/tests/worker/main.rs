//! The worker's integration tests as one binary (one link instead of one
//! per file): each module is a scenario group against real Redis processes,
//! real receivers and the worker in-process or as its binary.

mod cli;
mod common;
mod crash;
mod delivery;
mod fairness;
mod faults_poison;
mod faults_shutdown;
mod filters;
mod ingest;
mod ordering;
mod parse_sandbox;
mod protection;
mod providers;
mod redis_outage;
mod rotation;
mod sessions;
