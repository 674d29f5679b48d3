//! The API's routes, one module per resource; handlers stay thin.

pub mod chat;
pub mod dead_letters;
pub mod deliveries;
pub mod event_types;
pub mod gaps;
pub mod incoming;
pub mod knowledge;
pub mod ops;
pub mod webhooks;
