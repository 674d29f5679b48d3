//! `error.occurred`: what integrators are told when a job ends in the
//! dead-letter set.

use queue::runtime::DeadContext;
use shared::events::{Event, EventMetadata, EventType};
use shared::ids::EventId;

/// `error.occurred` for a job that ended in the dead-letter set (SPEC §5).
/// Its id derives from the dead letter's: a worker that redoes the notice
/// after a crash announces the same event (receivers de-duplicate), and a
/// replayed job that fails again is a new dead letter with a new event.
/// `related` holds the ids an integrator looks the job up by.
pub fn dead_job_event(
    job_type: &str,
    error_code: &str,
    ctx: &DeadContext,
    related: serde_json::Value,
    correlation_id: Option<String>,
) -> Event {
    let mut data = serde_json::json!({
        "error_code": error_code,
        "error_message": ctx.error,
        "job_type": job_type,
        "job_id": ctx.job_id,
        "dead_letter_id": ctx.dead_letter_id,
        "attempts": ctx.overall_attempts,
    });
    if let (Some(data), serde_json::Value::Object(related)) = (data.as_object_mut(), related) {
        data.extend(related);
    }
    let metadata = EventMetadata {
        trace_id: ctx.trace_id.clone(),
        correlation_id,
    };
    Event::new(
        EventId::for_dead_letter(&ctx.dead_letter_id),
        EventType::ErrorOccurred,
        data,
        metadata,
    )
}
