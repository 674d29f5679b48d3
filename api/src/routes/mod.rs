//! The API's routes, one module per resource; handlers stay thin.

pub mod dead_letters;
pub mod deliveries;
pub mod ops;
pub mod webhooks;
