//! The dead-letter set (SPEC §9): list, inspect, replay one or many, discard.

use axum::body::Bytes;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use queue::{AttemptError, DeadLetter, DeadLetterFilter, Labels};
use serde::{Deserialize, Serialize};
use shared::ids::DeadLetterId;
use shared::jobs::{ALL_QUEUES, label};
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
        let labels: Labels = [
            (label::WEBHOOK_ID, self.webhook_id),
            (label::EVENT_TYPE, self.event_type),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .collect();
        Ok(DeadLetterFilter {
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            labels,
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

/// What the list endpoint shows of one dead letter.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeadLetterSummary {
    pub dead_letter_id: String,
    pub job_type: String,
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: String,
}

impl From<&DeadLetter> for DeadLetterSummary {
    fn from(d: &DeadLetter) -> Self {
        let label = |name: &str| d.labels.get(name).cloned();
        Self {
            dead_letter_id: d.dead_letter_id.to_string(),
            job_type: d.job_type.clone(),
            job_id: d.job_id.as_ref().map(ToString::to_string),
            delivery_id: label(label::DELIVERY_ID),
            webhook_id: label(label::WEBHOOK_ID),
            event_id: label(label::EVENT_ID),
            event_type: label(label::EVENT_TYPE),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            failed_at: shared::time::rfc3339(d.failed_at),
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
    let found = state
        .services
        .queue
        .dead_letters(
            ALL_QUEUES,
            &filter,
            usize::try_from(page.offset).unwrap_or(usize::MAX),
            page.limit as usize,
        )
        .await?;
    let items = found.items.iter().map(DeadLetterSummary::from).collect();
    Ok(Paged::new(items, page, found.total))
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

/// Dead letters read per round of a bulk replay: its memory stays bounded
/// however large the set.
const REPLAY_PAGE: usize = 100;

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
    let mut filter = query.merged(body).parse()?;
    // Only what was dead when the call came: a replayed job that dies
    // again at once is not replayed again in the same call.
    let now = Utc::now();
    filter.until = Some(filter.until.map_or(now, |until| until.min(now)));
    let (mut replayed, mut skipped) = (0, 0);
    loop {
        // Replayed entries leave the set, so the next page starts after
        // the ones that were not (gone meanwhile).
        let page = state
            .services
            .queue
            .dead_letters(ALL_QUEUES, &filter, skipped, REPLAY_PAGE)
            .await?;
        if page.items.is_empty() {
            break;
        }
        for dead in &page.items {
            if state.services.publisher.replay(dead).await? {
                replayed += 1;
            } else {
                skipped += 1;
            }
        }
    }
    tracing::info!(replayed, skipped, "bulk replay");
    Ok(Data(BulkReplayed { replayed, skipped }))
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
