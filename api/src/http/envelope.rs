//! Success envelopes and query-string extractors.
//!
//! Successful responses share one shape, `{"data": …, "meta": {"trace_id"}}`
//! (plus `meta.pagination` for lists), so clients parse every endpoint the
//! same way and can always quote a trace id. The query extractors exist so a
//! bad query string yields our JSON error envelope (400 `INVALID_QUERY`)
//! rather than axum's plain-text rejection.

use std::ops::RangeInclusive;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::extract::rejection::QueryRejection;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::http::error::ApiError;
use crate::http::trace::current_trace_id;

/// Default page size when the client does not ask for one.
pub const DEFAULT_LIMIT: u32 = 20;
/// Upper bound on page size, to keep list queries cheap.
pub const MAX_LIMIT: u32 = 100;
/// Offsets end up in SQL `OFFSET`, a signed 64-bit value.
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Wire shape of a success response; also usable as the OpenAPI response
/// schema (`body = Envelope<Thing>`) so the docs show the real shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub data: T,
    pub meta: Meta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    #[schema(value_type = String)]
    pub trace_id: shared::ids::TraceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<PageMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PageMeta {
    pub limit: u32,
    pub offset: u64,
    pub total: u64,
    /// Where the next page starts (pass it as `cursor`), on listings that
    /// give one out, while there may be a next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// 200 OK with `{"data": T, "meta": {…}}`.
#[derive(Debug)]
pub struct Data<T>(pub T);

/// 201 Created with the same envelope as [`Data`].
#[derive(Debug)]
pub struct Created<T>(pub T);

/// 202 Accepted with the same envelope as [`Data`]; for webhook intake that
/// is processed asynchronously.
#[derive(Debug)]
pub struct Accepted<T>(pub T);

/// 200 OK list page: `data` is the items, `meta.pagination` says where the
/// page sits so clients can fetch the next one.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub limit: u32,
    pub offset: u64,
    pub total: u64,
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    pub fn new(items: Vec<T>, page: Pagination, total: u64) -> Self {
        Self {
            items,
            limit: page.limit,
            offset: page.offset,
            total,
            next_cursor: None,
        }
    }

    pub fn with_next_cursor(mut self, cursor: Option<String>) -> Self {
        self.next_cursor = cursor;
        self
    }
}

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        envelope_response(StatusCode::OK, self.0, None)
    }
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        envelope_response(StatusCode::CREATED, self.0, None)
    }
}

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        envelope_response(StatusCode::ACCEPTED, self.0, None)
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let pagination = PageMeta {
            limit: self.limit,
            offset: self.offset,
            total: self.total,
            next_cursor: self.next_cursor,
        };
        envelope_response(StatusCode::OK, self.items, Some(pagination))
    }
}

/// Serializes by hand rather than via `axum::Json`, whose failure path is a
/// plain-text 500 outside our envelope.
fn envelope_response<T: Serialize>(
    status: StatusCode,
    data: T,
    pagination: Option<PageMeta>,
) -> Response {
    let envelope = Envelope {
        data,
        meta: Meta {
            trace_id: current_trace_id(),
            pagination,
        },
    };
    match serde_json::to_vec(&envelope) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(err) => ApiError::internal(format_args!("serializing response: {err}")).into_response(),
    }
}

/// Query-string extractor whose rejection is a 400 `INVALID_QUERY` envelope
/// carrying serde's explanation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(invalid_query)
    }
}

fn invalid_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request("INVALID_QUERY", rejection.body_text())
}

/// Validated `limit`/`offset` query parameters; extract it directly in a
/// handler, or call [`Pagination::parse`] when the raw values come from
/// elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page size, 1–100.
    #[param(minimum = 1, maximum = 100, default = 20, required = false)]
    pub limit: u32,
    /// Number of items to skip.
    #[param(minimum = 0, default = 0, required = false)]
    pub offset: u64,
}

impl Default for Pagination {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Pagination {
    /// Absent parameters take their defaults; present ones must be plain
    /// integers in range. Anything else is rejected rather than clamped so
    /// client bugs surface instead of silently returning a different page.
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            Some(raw) => parse_param("limit", raw, 1..=MAX_LIMIT)?,
            None => DEFAULT_LIMIT,
        };
        let offset = match offset {
            Some(raw) => parse_param("offset", raw, 0..=MAX_OFFSET)?,
            None => 0,
        };
        Ok(Self { limit, offset })
    }
}

fn parse_param<N>(name: &str, raw: &str, range: RangeInclusive<N>) -> Result<N, ApiError>
where
    N: FromStr + PartialOrd + std::fmt::Display,
{
    raw.parse::<N>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_QUERY",
                format!(
                    "query parameter '{name}' must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
            .with_details(json!({ "parameter": name }))
        })
}

/// Raw values, so range and syntax errors get our message, not serde's.
#[derive(Deserialize)]
struct RawPage {
    limit: Option<String>,
    offset: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(raw) = Query::<RawPage>::from_request_parts(parts, state).await?;
        Self::parse(raw.limit.as_deref(), raw.offset.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_param(err: &ApiError) -> (u16, &str, Option<&str>) {
        (
            err.status().as_u16(),
            err.code(),
            err.details()
                .and_then(|d| d.get("parameter"))
                .and_then(|p| p.as_str()),
        )
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(
            Pagination::parse(None, None).ok(),
            Some(Pagination {
                limit: 20,
                offset: 0
            })
        );
    }

    #[test]
    fn accepts_limit_edges() {
        for (raw, want) in [("1", 1), ("100", 100)] {
            let page = Pagination::parse(Some(raw), Some("40")).ok();
            assert_eq!(
                page,
                Some(Pagination {
                    limit: want,
                    offset: 40
                })
            );
        }
    }

    #[test]
    fn rejects_bad_limits_naming_the_parameter() {
        for raw in ["0", "101", "abc", "-1", "", "1.5"] {
            match Pagination::parse(Some(raw), None) {
                Err(err) => assert_eq!(
                    code_and_param(&err),
                    (400, "INVALID_QUERY", Some("limit")),
                    "{raw}"
                ),
                Ok(page) => panic!("limit {raw:?} accepted as {page:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_offsets_naming_the_parameter() {
        for raw in ["-1", "abc", "9223372036854775808"] {
            match Pagination::parse(None, Some(raw)) {
                Err(err) => assert_eq!(
                    code_and_param(&err),
                    (400, "INVALID_QUERY", Some("offset")),
                    "{raw}"
                ),
                Ok(page) => panic!("offset {raw:?} accepted as {page:?}"),
            }
        }
    }
}
