//! Per-webhook delivery lanes: fairness between receivers.
//!
//! A worker runs `delivery.concurrency` deliveries at once. Without lanes, a
//! receiver that hangs until the timeout (15 s by default) would, given
//! enough queued events, hold every one of those slots, and every other
//! webhook's deliveries would wait behind it. So each webhook gets a lane of
//! `delivery.per_webhook_concurrency` permits in this process:
//!
//! - a delivery takes its webhook's permit at once when one is free (the
//!   normal case: a fast receiver never waits here);
//! - otherwise it waits up to [`LANE_WAIT`] for one (a busy but fast
//!   receiver frees one within milliseconds);
//! - if none frees up, the delivery is not attempted: it goes back to the
//!   queue's delayed set for [`DEFER_FOR`] ± half (not counted as an
//!   attempt or a failure), and its slot goes to the jobs behind it.
//!
//! So a hanging endpoint holds at most its lane's permits plus, briefly,
//! the slots of deliveries waiting [`LANE_WAIT`] for it; the other webhooks'
//! deliveries keep flowing. Lanes are per process: N workers allow N × the
//! cap per webhook in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::ids::WebhookId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a delivery over its webhook's cap waits for a permit before it
/// is deferred.
pub const LANE_WAIT: Duration = Duration::from_millis(50);
/// How long a deferred delivery stays out of the stream (± half, so a
/// deferred crowd does not come back at once).
pub const DEFER_FOR: Duration = Duration::from_secs(1);
/// Idle lanes are dropped once there are more than this many.
const SWEEP_ABOVE: usize = 1024;

pub struct Lanes {
    cap: usize,
    lanes: Mutex<HashMap<WebhookId, Arc<Semaphore>>>,
}

impl Lanes {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            lanes: Mutex::default(),
        }
    }

    fn lane(&self, webhook: &WebhookId) -> Arc<Semaphore> {
        let Ok(mut lanes) = self.lanes.lock() else {
            // A poisoned map only loses fairness, never a delivery.
            return Arc::new(Semaphore::new(self.cap));
        };
        if lanes.len() > SWEEP_ABOVE {
            let cap = self.cap;
            lanes.retain(|_, lane| Arc::strong_count(lane) > 1 || lane.available_permits() < cap);
        }
        lanes
            .entry(webhook.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
            .clone()
    }

    /// A permit of `webhook`'s lane, or None when it stayed full for
    /// [`LANE_WAIT`] (the caller defers the delivery).
    pub async fn enter(&self, webhook: &WebhookId) -> Option<OwnedSemaphorePermit> {
        let lane = self.lane(webhook);
        if let Ok(permit) = lane.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(LANE_WAIT, lane.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Deliveries to `webhook` running in this process now.
    pub fn in_flight(&self, webhook: &WebhookId) -> usize {
        self.lanes
            .lock()
            .ok()
            .and_then(|lanes| {
                lanes
                    .get(webhook)
                    .map(|lane| self.cap - lane.available_permits())
            })
            .unwrap_or(0)
    }
}

/// [`DEFER_FOR`] ± half, at random.
pub fn defer_delay() -> Duration {
    DEFER_FOR.mul_f64(0.5 + rand::random::<f64>())
}
