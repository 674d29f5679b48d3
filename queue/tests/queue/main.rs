//! The queue against a real Redis (each test starts its own
//! `redis-server`): one test binary, one module per concern.

mod common;
mod ownership;
mod runtime;
