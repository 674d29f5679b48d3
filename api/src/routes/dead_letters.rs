//! The dead-letter set: list, inspect, replay one or many, discard.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use queue::{AttemptError, DeadLetter, DeadLetterFilter, Labels};
use serde::{Deserialize, Serialize};
use shared::delivery::replays::{Pace, ReplayRun, RunKind, Work};
use shared::ids::DeadLetterId;
use shared::jobs::{ALL_QUEUES, label};
use utoipa::{IntoParams, ToSchema};

use crate::http::body::decode_json;
use crate::http::envelope::{Accepted, Data, Paged, Pagination, Query};
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

/// `POST /dead-letters/replay` options: the list filters plus `dry_run`
/// and `rate`, in the query string or the JSON body (the body wins).
#[derive(Clone, Debug, Default, Deserialize, IntoParams, ToSchema)]
pub struct BulkReplayRequest {
    webhook_id: Option<String>,
    event_type: Option<String>,
    job_type: Option<String>,
    /// RFC 3339; only entries that failed at or after this time.
    since: Option<String>,
    /// RFC 3339; only entries that failed at or before this time.
    until: Option<String>,
    /// Only count what would be replayed; change nothing.
    dry_run: Option<bool>,
    /// Replays per second (above 0, at most 1000). With it the replay runs
    /// in the background and answers 202 with a `replay_id` to follow.
    rate: Option<f64>,
}

impl BulkReplayRequest {
    /// Body fields, where given, win over the query string.
    fn merged(self, body: BulkReplayRequest) -> Self {
        Self {
            webhook_id: body.webhook_id.or(self.webhook_id),
            event_type: body.event_type.or(self.event_type),
            job_type: body.job_type.or(self.job_type),
            since: body.since.or(self.since),
            until: body.until.or(self.until),
            dry_run: body.dry_run.or(self.dry_run),
            rate: body.rate.or(self.rate),
        }
    }

    fn filter(&self) -> DeadLetterQuery {
        DeadLetterQuery {
            webhook_id: self.webhook_id.clone(),
            event_type: self.event_type.clone(),
            job_type: self.job_type.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
        }
    }
}

/// The `rate` of a replay or recovery request, checked.
pub(crate) fn pace(rate: Option<f64>) -> Result<Option<Pace>, ApiError> {
    rate.map(|r| Pace::new(r).map_err(|e| ApiError::validation("rate", e.to_string())))
        .transpose()
}

/// What a dry run answers.
#[derive(Serialize, ToSchema)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    /// Entries a real call would re-send now.
    pub would_replay: u64,
}

/// The answer of a replay or recovery without a rate (done when answered),
/// or of a dry run.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReplayAnswer {
    Done(BulkReplayed),
    DryRun(DryRun),
}

/// Runs `work` as the request asks: counted only, at once, or paced in the
/// background (202 and the run to follow).
pub(crate) async fn replay_as_asked(
    state: &AppState,
    kind: RunKind,
    webhook_id: Option<String>,
    work: Work,
    dry_run: bool,
    pace: Option<Pace>,
) -> Result<Response, ApiError> {
    let replayer = &state.replayer;
    if dry_run {
        let would_replay = replayer.count(&work).await?;
        return Ok(Data(ReplayAnswer::DryRun(DryRun {
            dry_run: true,
            would_replay,
        }))
        .into_response());
    }
    match pace {
        Some(pace) => {
            let run = replayer.start(kind, webhook_id, work, pace).await?;
            tracing::info!(replay_id = %run.replay_id, total = run.total, rate = pace.rate(),
                "paced replay started");
            Ok(Accepted(run).into_response())
        }
        None => {
            let tally = replayer.run_now(work, None).await?;
            tracing::info!(
                replayed = tally.replayed,
                skipped = tally.skipped,
                failed = tally.failed,
                ?kind,
                "replay done"
            );
            Ok(Data(ReplayAnswer::Done(BulkReplayed {
                replayed: usize::try_from(tally.replayed).unwrap_or(usize::MAX),
                skipped: usize::try_from(tally.skipped + tally.failed).unwrap_or(usize::MAX),
            }))
            .into_response())
        }
    }
}

/// Re-enqueue every dead letter matching the filters (query string or JSON
/// body). Safe to call twice: an entry is replayed once. With `dry_run`,
/// only counts; with `rate`, replays that many per second in the
/// background and answers 202 with the run (follow it at
/// `GET /dead-letters/replays/{replay_id}`).
#[utoipa::path(post, path = "/dead-letters/replay", tag = "dead-letters",
    params(BulkReplayRequest), request_body(content = Option<BulkReplayRequest>),
    responses(
        (status = 200, description = "replayed now (no rate), or the count of a dry run",
            body = ReplayAnswer),
        (status = 202, description = "paced run started", body = ReplayRun),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)))]
pub async fn replay_many(
    State(state): State<AppState>,
    Query(query): Query<BulkReplayRequest>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: BulkReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        decode_json(&body)?
    };
    let request = query.merged(body);
    let pace = pace(request.rate)?;
    let filter = replay_filter(request.filter())?;
    replay_as_asked(
        &state,
        RunKind::DeadLetters,
        request.webhook_id,
        Work::DeadLetters(filter),
        request.dry_run.unwrap_or(false),
        pace,
    )
    .await
}

/// What a bulk replay asked now works through: the entries matching
/// `query` that are dead already. A replayed job that dies again at once
/// is not replayed again by the same call.
pub(crate) fn replay_filter(query: DeadLetterQuery) -> Result<DeadLetterFilter, ApiError> {
    let mut filter = query.parse()?;
    let now = Utc::now();
    filter.until = Some(filter.until.map_or(now, |until| until.min(now)));
    Ok(filter)
}

/// A paced replay or recovery run and how far it got. `interrupted`: the
/// process running it stopped (what it had not re-sent is still where it
/// was; ask again to re-send it).
#[utoipa::path(get, path = "/dead-letters/replays/{replay_id}", tag = "dead-letters",
    params(("replay_id" = String, Path)),
    responses((status = 200, body = ReplayRun), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn replay_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<ReplayRun>, ApiError> {
    let well_formed = id.strip_prefix("replay_").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !well_formed {
        return Err(ApiError::not_found("replay", &id));
    }
    state
        .replayer
        .get(&id)
        .await?
        .map(Data)
        .ok_or_else(|| ApiError::not_found("replay", &id))
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
