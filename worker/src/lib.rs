//! The worker: runs queued jobs (outbound deliveries) with retries,
//! dead-lettering and graceful shutdown. `startup` wires it from settings;
//! `runtime` is the queue consumer; `delivery` is the delivery job.

pub mod delivery;
pub mod runtime;
pub mod startup;
