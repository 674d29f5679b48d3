//! Knowledge gaps: the questions handed to a person because the knowledge
//! base had no good answer, grouped by similarity (the rule is in
//! `shared::chat::gaps`).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use shared::chat::gaps::GapGroup;
use utoipa::IntoParams;

use crate::http::envelope::{Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GapQuery {
    /// RFC 3339; only questions asked at or after this time.
    #[param(required = false)]
    pub since: Option<String>,
}

impl GapQuery {
    fn since(&self) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.since
            .as_deref()
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_request(
                            "INVALID_QUERY",
                            format!("since: {v:?} is not an RFC 3339 time"),
                        )
                        .with_details(json!({ "parameter": "since" }))
                    })
            })
            .transpose()
    }
}

/// Questions handed over for low confidence (not requests for a person),
/// grouped by similarity, most frequent first: each group has a
/// representative question, a count, first and last time seen, example
/// sessions and wordings. Looks at the most recent 1000 such questions
/// (since `since`, if given); `total` counts groups.
#[utoipa::path(get, path = "/knowledge/gaps", tag = "knowledge",
    params(GapQuery, Pagination),
    responses((status = 200, body = [GapGroup]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn gaps(
    State(state): State<AppState>,
    Query(query): Query<GapQuery>,
    page: Pagination,
) -> Result<Paged<GapGroup>, ApiError> {
    let report = state.services.gaps.report(query.since()?).await?;
    let total = report.groups.len() as u64;
    let items = report
        .groups
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(page.limit as usize)
        .collect();
    Ok(Paged::new(items, page, total))
}
