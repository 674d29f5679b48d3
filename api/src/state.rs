//! What every handler can reach: the shared services and the metrics
//! registry.

use prometheus::Registry;
use shared::services::Services;

#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub registry: Registry,
}
