//! What every handler can reach: the shared services, the metrics
//! registry, and the replayer that runs paced replays in this process.

use prometheus::Registry;
use shared::delivery::replays::Replayer;
use shared::services::Services;

#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub registry: Registry,
    pub replayer: Replayer,
}
