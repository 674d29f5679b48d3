//! What this system tells the outside world: the outbound event catalogue,
//! each event's typed `data`, and the exact bytes a receiver gets. Getting
//! those bytes to receivers is [`crate::delivery`].
//!
//! Redis keys: none; events live in the jobs and delivery records that
//! carry them.

pub mod catalog;
pub mod payloads;
