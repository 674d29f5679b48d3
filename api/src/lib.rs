//! The Support RAG HTTP API: webhook registry, delivery history, dead-letter
//! administration and operations endpoints. `startup` builds it from
//! settings; `http` is the plumbing every route shares.

pub mod console;
pub mod http;
pub mod routes;
pub mod startup;
pub mod state;
pub mod views;
