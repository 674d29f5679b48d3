//! The webhook registry endpoints. Each handler extracts, calls
//! the library, and maps the result.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use shared::delivery::publish::PublishError;
use shared::events::catalog::{Event, EventFilter, EventMetadata};
use shared::events::payloads::WebhookTest;
use shared::ids::{EventId, WebhookId};
use shared::webhooks::auto_disable;
use shared::webhooks::registry::{RotateSecretRequest, Rules, Webhook, WebhookRequest};
use utoipa::IntoParams;

use crate::http::body::{Json, decode_json};
use crate::http::envelope::{Accepted, Created, Data, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::trace::current_trace_id;
use crate::state::AppState;
use crate::views::{Deleted, EnabledView, Registered, SecretRotated, TestQueued, WebhookView};

pub(crate) fn parse_webhook_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook", id))
}

pub(crate) async fn load_webhook(state: &AppState, id: &str) -> Result<Webhook, ApiError> {
    let id = parse_webhook_id(id)?;
    state
        .services
        .webhooks
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", id.as_str()))
}

/// Deliveries to an inactive webhook would only be parked in the
/// dead-letter set; asking for one is a conflict to report at once.
pub(crate) fn refuse_inactive(webhook: &Webhook) -> Result<(), ApiError> {
    if webhook.active {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "WEBHOOK_INACTIVE",
            "the webhook is inactive; activate it (PATCH active=true) first",
        ))
    }
}

fn rules(state: &AppState) -> Rules<'_> {
    Rules {
        policy: &state.services.policy,
        resolver: state.services.resolver.as_ref(),
    }
}

async fn view(state: &AppState, webhook: &Webhook) -> Result<WebhookView, ApiError> {
    let stats = state.services.deliveries.stats(&webhook.webhook_id).await?;
    Ok(WebhookView::new(webhook, stats))
}

/// Register a webhook.
#[utoipa::path(post, path = "/webhooks/register", tag = "webhooks",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "registered; `secret` present only when generated", body = Registered),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn register(
    State(state): State<AppState>,
    Json(req): Json<WebhookRequest>,
) -> Result<Created<Registered>, ApiError> {
    let draft = rules(&state).register(req).await?;
    let generated = draft
        .secret_generated
        .then(|| draft.secret.expose().to_owned());
    let webhook = state.services.webhooks.insert(draft).await?;
    tracing::info!(webhook_id = %webhook.webhook_id, "webhook registered");
    Ok(Created(Registered {
        webhook: view(&state, &webhook).await?,
        secret: generated,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct ListFilter {
    /// Only active (`true`) or inactive (`false`) webhooks.
    active: Option<bool>,
    /// Only webhooks that receive this event type.
    event: Option<String>,
}

/// List webhooks with their delivery stats.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    params(ListFilter, Pagination),
    responses((status = 200, body = [WebhookView]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<ListFilter>,
    page: Pagination,
) -> Result<Paged<WebhookView>, ApiError> {
    let event = filter
        .event
        .as_deref()
        .map(EventFilter::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("event: {e}")))?;
    let matching: Vec<Webhook> = state
        .services
        .webhooks
        .all()
        .await?
        .into_iter()
        .filter(|w| filter.active.is_none_or(|a| w.active == a))
        .filter(|w| match event {
            None => true,
            Some(EventFilter::All) => w.events.contains(&EventFilter::All),
            Some(EventFilter::Only(t)) => w.subscribes_to(t),
        })
        .collect();
    let total = matching.len() as u64;
    let mut items = Vec::new();
    for webhook in matching
        .iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(page.limit as usize)
    {
        items.push(view(&state, webhook).await?);
    }
    Ok(Paged::new(items, page, total))
}

/// One webhook with its delivery stats.
#[utoipa::path(get, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<WebhookView>, ApiError> {
    let webhook = load_webhook(&state, &id).await?;
    Ok(Data(view(&state, &webhook).await?))
}

/// Change a webhook; only the fields given change.
#[utoipa::path(patch, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = WebhookRequest,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<WebhookRequest>,
) -> Result<Data<WebhookView>, ApiError> {
    let before = load_webhook(&state, &id).await?;
    let webhook = rules(&state).update(before.clone(), req).await?;
    state.services.webhooks.save(&webhook).await?;
    auto_disable::after_admin_change(
        &state.services.publisher,
        &before,
        &webhook,
        &current_trace_id(),
    )
    .await;
    Ok(Data(view(&state, &webhook).await?))
}

/// Replace the webhook's secret, keeping the old one valid for `overlap`.
///
/// The new secret (given, or generated as `whsec_…`) is in the answer, and
/// only there. Until the overlap ends deliveries are signed by both (see
/// README, "Rotating a webhook's secret") and incoming requests signed by
/// either are accepted; then the old one stops working by itself.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = RotateSecretRequest,
    responses((status = 200, body = SecretRotated), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<RotateSecretRequest>,
) -> Result<Data<SecretRotated>, ApiError> {
    let mut webhook = load_webhook(&state, &id).await?;
    let rotation = req.check()?;
    let now = chrono::Utc::now();
    webhook.rotate_secret(rotation.secret, rotation.overlap, now);
    state.services.webhooks.save(&webhook).await?;
    tracing::info!(
        webhook_id = %webhook.webhook_id,
        overlap_secs = rotation.overlap.as_secs(),
        generated = rotation.secret_generated,
        "webhook secret rotated"
    );
    Ok(Data(SecretRotated::new(&webhook, now)))
}

/// What `POST /webhooks/{id}/enable` may ask besides turning it on.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct EnableRequest {
    /// Also re-queue every dead letter of this webhook (deliveries parked
    /// while it was failing or off).
    #[serde(default)]
    pub replay_dead_letters: bool,
}

/// Turn a webhook back on (e.g. after it was disabled for `410 Gone` or a
/// failure streak), optionally replaying its dead letters; announces
/// `webhook.enabled` to operational subscribers if it was off.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/enable", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body(content = Option<EnableRequest>),
    responses((status = 200, body = EnabledView), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Data<EnabledView>, ApiError> {
    let req: EnableRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EnableRequest::default()
    } else {
        decode_json(&body)?
    };
    let webhook = load_webhook(&state, &id).await?;
    let enabled = auto_disable::enable(
        &state.replayer,
        webhook,
        req.replay_dead_letters,
        &current_trace_id(),
    )
    .await?;
    tracing::info!(
        webhook_id = %enabled.webhook.webhook_id,
        replayed = enabled.dead_letters_replayed,
        "webhook enabled"
    );
    Ok(Data(EnabledView {
        webhook: view(&state, &enabled.webhook).await?,
        dead_letters_replayed: enabled.dead_letters_replayed,
    }))
}

/// Send a `webhook.test` event to this webhook alone.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/test", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 202, body = TestQueued), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Accepted<TestQueued>, ApiError> {
    let webhook = load_webhook(&state, &id).await?;
    refuse_inactive(&webhook)?;
    let event = Event::of(
        EventId::generate(),
        &WebhookTest {
            message: "This is a test event from Support RAG.".into(),
            webhook_id: webhook.webhook_id.clone(),
        },
        EventMetadata {
            trace_id: current_trace_id(),
            correlation_id: None,
        },
    )
    .map_err(PublishError::from)?;
    let event_id = event.event_id.to_string();
    let delivery_id = state
        .services
        .publisher
        .send_to(&webhook.webhook_id, event)
        .await?;
    Ok(Accepted(TestQueued {
        event_id,
        delivery_id: delivery_id.to_string(),
        status: "queued",
    }))
}

/// Delete a webhook; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<Deleted>, ApiError> {
    let webhook = load_webhook(&state, &id).await?;
    if !state.services.webhooks.delete(&webhook.webhook_id).await? {
        return Err(ApiError::not_found("webhook", &id));
    }
    let cancelled = state
        .services
        .publisher
        .cancel_pending(&webhook.webhook_id)
        .await?;
    tracing::info!(webhook_id = %webhook.webhook_id, cancelled, "webhook deleted");
    Ok(Data(Deleted {
        webhook_id: webhook.webhook_id.to_string(),
        status: "deleted",
        message: "Webhook deleted successfully".into(),
        cancelled_deliveries: cancelled,
    }))
}

/// `POST /webhooks/{id}/recover` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339: deliveries created at or after this time.
    since: String,
    /// Re-sends per second (above 0, at most 1000); with it the recovery
    /// runs in the background and answers 202 with a `replay_id`.
    rate: Option<f64>,
    /// Only count what would be re-sent; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Re-send this webhook's failed and dead deliveries created since a time:
/// per event its newest record counts; a dead one is replayed from the
/// dead-letter set (which it leaves), a failed one (retry scheduled) gets a
/// manual retry now. Same event id, attempt numbering continuing. Paced
/// and followed like a bulk replay.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/recover", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = RecoverRequest,
    responses(
        (status = 200, description = "re-sent now (no rate), or the count of a dry run",
            body = crate::routes::dead_letters::ReplayAnswer),
        (status = 202, description = "paced run started; follow it at \
            /dead-letters/replays/{replay_id}", body = shared::delivery::replays::ReplayRun),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn recover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<RecoverRequest>,
) -> Result<axum::response::Response, ApiError> {
    let webhook = load_webhook(&state, &id).await?;
    let since = chrono::DateTime::parse_from_rfc3339(&req.since)
        .map_err(|_| ApiError::validation("since", "since must be an RFC 3339 time"))?
        .with_timezone(&chrono::Utc);
    let pace = crate::routes::dead_letters::pace(req.rate)?;
    if !req.dry_run {
        refuse_inactive(&webhook)?;
    }
    let records = state
        .replayer
        .recoverable(&webhook.webhook_id, since)
        .await?;
    crate::routes::dead_letters::replay_as_asked(
        &state,
        shared::delivery::replays::RunKind::Recover,
        Some(webhook.webhook_id.to_string()),
        shared::delivery::replays::Work::Recover(records),
        req.dry_run,
        pace,
    )
    .await
}
