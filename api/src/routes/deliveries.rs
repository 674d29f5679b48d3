//! Delivery history and manual retry.

use axum::extract::{Path, State};
use serde::Deserialize;
use shared::delivery::history::{
    DeliveryFilter, DeliveryRecord, DeliveryStatus, ListCursor, ListFrom,
};
use shared::events::catalog::EventType;
use shared::ids::DeliveryId;
use utoipa::IntoParams;

use crate::http::envelope::{Accepted, Data, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::routes::webhooks::{load_webhook, refuse_inactive};
use crate::state::AppState;
use crate::views::{DeliveryDetail, DeliveryView, RetryQueued};

#[derive(Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// queued, in_progress, success, failed, dead or cancelled.
    status: Option<String>,
    event_type: Option<String>,
    /// `meta.pagination.next_cursor` of the previous page (same filters,
    /// no `offset`): where the next page starts.
    cursor: Option<String>,
}

impl DeliveryQuery {
    fn start(&self, page: &Pagination) -> Result<ListFrom, ApiError> {
        match self.cursor.as_deref() {
            None => Ok(ListFrom::Offset(page.offset)),
            Some(_) if page.offset > 0 => Err(ApiError::bad_request(
                "INVALID_QUERY",
                "cursor: a cursor says where the page starts; leave offset out",
            )),
            Some(text) => ListCursor::parse(text)
                .map(ListFrom::Cursor)
                .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("cursor: {e}"))),
        }
    }

    fn parse(self) -> Result<DeliveryFilter, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                DeliveryStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request("INVALID_QUERY", format!("status: unknown status {s:?}"))
                })
            })
            .transpose()?;
        let event_type = self
            .event_type
            .as_deref()
            .map(|t| {
                t.parse::<EventType>()
                    .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("event_type: {e}")))
            })
            .transpose()?;
        Ok(DeliveryFilter { status, event_type })
    }
}

/// A webhook's deliveries, newest first. Each page costs a bounded amount
/// of work: with a `status` or `event_type` filter at most 1,000 deliveries
/// are examined per request, so `total` is exact when the answer has no
/// `next_cursor` and may otherwise be an upper bound; follow `next_cursor`
/// to reach matches further back.
#[utoipa::path(get, path = "/webhooks/{webhook_id}/deliveries", tag = "deliveries",
    params(("webhook_id" = String, Path), DeliveryQuery, Pagination),
    responses((status = 200, body = [DeliveryView]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
    page: Pagination,
) -> Result<Paged<DeliveryView>, ApiError> {
    let start = query.start(&page)?;
    let filter = query.parse()?;
    let webhook = load_webhook(&state, &id).await?;
    let found = state
        .services
        .deliveries
        .list(&webhook.webhook_id, &filter, page.limit as usize, start)
        .await?;
    let items = found.records.iter().map(DeliveryView::from).collect();
    Ok(Paged::new(items, page, found.total)
        .with_next_cursor(found.next_cursor.map(|c| c.to_string())))
}

async fn load_delivery(state: &AppState, id: &str) -> Result<DeliveryRecord, ApiError> {
    let parsed = DeliveryId::parse(id).map_err(|_| ApiError::not_found("delivery", id))?;
    state
        .services
        .deliveries
        .get(&parsed)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery", id))
}

/// One delivery with every attempt and the payload sent.
#[utoipa::path(get, path = "/webhooks/deliveries/{delivery_id}", tag = "deliveries",
    params(("delivery_id" = String, Path)),
    responses((status = 200, body = DeliveryDetail), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<DeliveryDetail>, ApiError> {
    let record = load_delivery(&state, &id).await?;
    Ok(Data(DeliveryDetail::from(&record)))
}

/// Send a delivery again now, as a new delivery `<id>_retry_<n>` of the
/// same event; a retry of a retry is numbered on the first delivery
/// (`<id>_retry_2` after `<id>_retry_1`), which `original_delivery_id`
/// names.
#[utoipa::path(post, path = "/webhooks/deliveries/{delivery_id}/retry", tag = "deliveries",
    params(("delivery_id" = String, Path)),
    responses((status = 202, body = RetryQueued), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Accepted<RetryQueued>, ApiError> {
    let original = load_delivery(&state, &id).await?;
    let webhook = load_webhook(&state, original.webhook_id.as_str())
        .await
        .map_err(|_| {
            ApiError::conflict(
                "WEBHOOK_DELETED",
                "the webhook of this delivery no longer exists",
            )
        })?;
    refuse_inactive(&webhook)?;
    let record = state.services.publisher.retry_delivery(&original).await?;
    tracing::info!(webhook_id = %webhook.webhook_id, delivery_id = %record.delivery_id, "manual retry queued");
    let original_delivery_id = record
        .original_delivery_id
        .as_ref()
        .unwrap_or(&original.delivery_id);
    Ok(Accepted(RetryQueued {
        delivery_id: record.delivery_id.to_string(),
        original_delivery_id: original_delivery_id.to_string(),
        status: record.status,
        attempt: record.attempt,
        scheduled_for: shared::time::rfc3339(record.timestamp),
    }))
}
