//! The dead-letter set (SPEC §9): list, inspect, replay one or many, discard.

use axum::body::Bytes;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::ids::DeadLetterId;
use shared::jobs::ALL_QUEUES;
use shared::queue::{AttemptError, DeadLetter, DeadLetterFilter, DeadLetterSummary};
use utoipa::{IntoParams, ToSchema};

use crate::http::body::decode_json;
use crate::http::envelope::{Data, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::state::AppState;
use crate::views::{BulkReplayed, Discarded, Replayed};

#[derive(Clone, Debug, Default, Deserialize, IntoParams, ToSchema)]
pub struct DeadLetterQuery {
    webhook_id: Option<String>,
    event_type: Option<String>,
    job_type: Option<String>,
    /// RFC 3339; only entries that failed at or after this time.
    since: Option<String>,
    /// RFC 3339; only entries that failed at or before this time.
    until: Option<String>,
}

impl DeadLetterQuery {
    fn parse(self) -> Result<DeadLetterFilter, ApiError> {
        let time = |name: &str, value: Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
            value
                .map(|v| {
                    DateTime::parse_from_rfc3339(&v)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| {
                            ApiError::bad_request(
                                "INVALID_QUERY",
                                format!("{name}: {v:?} is not an RFC 3339 time"),
                            )
                        })
                })
                .transpose()
        };
        Ok(DeadLetterFilter {
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            webhook_id: self.webhook_id,
            event_type: self.event_type,
            job_type: self.job_type,
        })
    }

    /// Body fields, where given, win over the query string.
    fn merged(self, body: DeadLetterQuery) -> Self {
        Self {
            webhook_id: body.webhook_id.or(self.webhook_id),
            event_type: body.event_type.or(self.event_type),
            job_type: body.job_type.or(self.job_type),
            since: body.since.or(self.since),
            until: body.until.or(self.until),
        }
    }
}

/// A dead letter with its job and history.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    summary: DeadLetterSummary,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    history: Vec<AttemptError>,
}

async fn load(state: &AppState, id: &str) -> Result<DeadLetter, ApiError> {
    let parsed = DeadLetterId::parse(id).map_err(|_| ApiError::not_found("dead letter", id))?;
    state
        .services
        .queue
        .dead_letter_get(ALL_QUEUES, &parsed)
        .await?
        .ok_or_else(|| ApiError::not_found("dead letter", id))
}

/// The dead-letter set, newest first.
#[utoipa::path(get, path = "/dead-letters", tag = "dead-letters",
    params(DeadLetterQuery, Pagination),
    responses((status = 200, body = [DeadLetterSummary]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<DeadLetterQuery>,
    page: Pagination,
) -> Result<Paged<DeadLetterSummary>, ApiError> {
    let filter = query.parse()?;
    let all = state
        .services
        .queue
        .dead_letters(ALL_QUEUES, &filter)
        .await?;
    let total = all.len() as u64;
    let items = all
        .iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(page.limit as usize)
        .map(DeadLetterSummary::from)
        .collect();
    Ok(Paged::new(items, page, total))
}

/// One dead letter with its payload and attempt history.
#[utoipa::path(get, path = "/dead-letters/{dead_letter_id}", tag = "dead-letters",
    params(("dead_letter_id" = String, Path)),
    responses((status = 200, body = DeadLetterDetail), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<DeadLetterDetail>, ApiError> {
    let dead = load(&state, &id).await?;
    let payload = dead
        .job
        .get("payload")
        .cloned()
        .unwrap_or_else(|| dead.job.clone());
    Ok(Data(DeadLetterDetail {
        summary: DeadLetterSummary::from(&dead),
        payload,
        history: dead.history,
    }))
}

/// Re-enqueue one dead letter (same event id; attempt numbering continues).
#[utoipa::path(post, path = "/dead-letters/{dead_letter_id}/replay", tag = "dead-letters",
    params(("dead_letter_id" = String, Path)),
    responses((status = 200, body = Replayed), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<Replayed>, ApiError> {
    let dead = load(&state, &id).await?;
    if !state.services.publisher.replay(&dead).await? {
        return Err(ApiError::not_found("dead letter", &id));
    }
    tracing::info!(dead_letter_id = %dead.dead_letter_id, "dead letter replayed");
    Ok(Data(Replayed {
        dead_letter_id: dead.dead_letter_id.to_string(),
        status: "replayed",
    }))
}

/// Re-enqueue every dead letter matching the filters (query string or JSON
/// body). Safe to call twice: an entry is replayed once.
#[utoipa::path(post, path = "/dead-letters/replay", tag = "dead-letters",
    params(DeadLetterQuery), request_body(content = Option<DeadLetterQuery>),
    responses((status = 200, body = BulkReplayed), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)))]
pub async fn replay_many(
    State(state): State<AppState>,
    Query(query): Query<DeadLetterQuery>,
    body: Bytes,
) -> Result<Data<BulkReplayed>, ApiError> {
    let body: DeadLetterQuery = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        decode_json(&body)?
    };
    let filter = query.merged(body).parse()?;
    let matching = state
        .services
        .queue
        .dead_letters(ALL_QUEUES, &filter)
        .await?;
    let mut replayed = 0;
    for dead in &matching {
        if state.services.publisher.replay(dead).await? {
            replayed += 1;
        }
    }
    tracing::info!(replayed, matching = matching.len(), "bulk replay");
    Ok(Data(BulkReplayed {
        replayed,
        skipped: matching.len() - replayed,
    }))
}

/// Discard one dead letter, on purpose.
#[utoipa::path(delete, path = "/dead-letters/{dead_letter_id}", tag = "dead-letters",
    params(("dead_letter_id" = String, Path)),
    responses((status = 200, body = Discarded), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<Discarded>, ApiError> {
    let dead = load(&state, &id).await?;
    if !state.services.queue.dead_letter_discard(&dead).await? {
        return Err(ApiError::not_found("dead letter", &id));
    }
    tracing::info!(dead_letter_id = %dead.dead_letter_id, "dead letter discarded");
    Ok(Data(Discarded {
        dead_letter_id: dead.dead_letter_id.to_string(),
        status: "discarded",
    }))
}
