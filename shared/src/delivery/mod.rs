//! Getting events to webhooks: publishing an event as one delivery per
//! webhook that wants it, the history of every delivery and its attempts,
//! and paced replays of dead letters and failed deliveries. Sending itself
//! is the worker's delivery handler.
//!
//! Redis keys (layout in [`crate::keys`]): per webhook `P:{P:wh:W}:dlv` and
//! `P:{P:wh:W}:stats`, per delivery `P:dlv:D` and `P:dlv:D:retries`, replay
//! runs `P:replay:R`, the `P:metrics:delivery_latency` histogram, and the
//! deliver queue's once-keys (`dlv:D`).

pub mod history;
pub mod ordering;
pub mod publish;
pub mod replays;
