//! `error.occurred`: what integrators are told when a job ends in the
//! dead-letter set.

use queue::runtime::DeadContext;
use shared::events::catalog::{Event, EventMetadata, PayloadError};
use shared::events::payloads::{ErrorOccurred, ErrorRelated};
use shared::ids::EventId;

/// `error.occurred` for a job that ended in the dead-letter set.
/// Its id derives from the dead letter's: a worker that redoes the notice
/// after a crash announces the same event (receivers de-duplicate), and a
/// replayed job that fails again is a new dead letter with a new event.
/// `related` holds the ids an integrator looks the job up by.
pub fn dead_job_event(
    job_type: &str,
    error_code: &str,
    ctx: &DeadContext,
    related: ErrorRelated,
    correlation_id: Option<String>,
) -> Result<Event, PayloadError> {
    let data = ErrorOccurred {
        error_code: error_code.to_owned(),
        error_message: ctx.error.clone(),
        job_type: job_type.to_owned(),
        job_id: ctx.job_id.clone(),
        dead_letter_id: ctx.dead_letter_id.clone(),
        attempts: ctx.overall_attempts,
        related,
    };
    let metadata = EventMetadata {
        trace_id: ctx.trace_id.clone(),
        correlation_id,
    };
    Event::of(
        EventId::for_dead_letter(&ctx.dead_letter_id),
        &data,
        metadata,
    )
}
