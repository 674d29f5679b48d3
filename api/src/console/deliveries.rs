//! Deliveries: one webhook's history with filters, one delivery with every
//! attempt, and a manual retry.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Redirect;
use maud::{Markup, html};
use shared::delivery::history::DeliveryStatus;

use crate::console::error::PageError;
use crate::console::layout::{
    Field, Nav, data_table, event_type_options, page, select_filter, webhook_options,
};
use crate::console::query::{Filters, segment};
use crate::console::session::Session;
use crate::console::text::duration_ms;
use crate::console::webhooks::post_button;
use crate::http::envelope::{Pagination, Query};
use crate::http::error::ApiError;
use crate::routes::deliveries::{self as api, DeliveryQuery};
use crate::state::AppState;
use crate::views::DeliveryView;

const STATUSES: [DeliveryStatus; 6] = [
    DeliveryStatus::Queued,
    DeliveryStatus::InProgress,
    DeliveryStatus::Success,
    DeliveryStatus::Failed,
    DeliveryStatus::Dead,
    DeliveryStatus::Cancelled,
];

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    filters: Filters,
) -> Result<Markup, PageError> {
    let mut webhooks = state
        .services
        .webhooks
        .all()
        .await
        .map_err(ApiError::from)?;
    webhooks.sort_by(|a, b| a.name.cmp(&b.name));
    // The history is kept per webhook: without a choice, the first one.
    let chosen = filters
        .get("webhook_id")
        .map(str::to_owned)
        .or_else(|| webhooks.first().map(|w| w.webhook_id.to_string()));
    let query: DeliveryQuery = filters.parse()?;
    let page_of = match &chosen {
        Some(id) => Some(
            api::list(
                State(state.clone()),
                Path(id.clone()),
                Query(query),
                Pagination {
                    limit: 50,
                    offset: 0,
                },
            )
            .await?,
        ),
        None => None,
    };
    let body = html! {
        form.filters method="get" action="/console/deliveries" {
            (select_filter(
                Field { id: "f_webhook", label: "Webhook", name: "webhook_id", required: true },
                webhook_options(&webhooks),
                chosen.as_deref(),
            ))
            (select_filter(
                Field { id: "f_status", label: "Status", name: "status", required: false },
                STATUSES.iter().map(|s| (s.as_str().to_owned(), s.as_str().to_owned())),
                filters.get("status"),
            ))
            (select_filter(
                Field { id: "f_event", label: "Event type", name: "event_type", required: false },
                event_type_options(),
                filters.get("event_type"),
            ))
            button type="submit" { "Filter" }
        }
        @match &page_of {
            None => p { "No webhook is registered yet." },
            Some(p) => {
                p { (p.items.len()) " of " (p.total) " deliveries." }
                (delivery_table(&p.items))
            }
        }
    };
    Ok(page(
        "Deliveries",
        Nav::Deliveries,
        Some(&session.csrf),
        body,
    ))
}

/// Deliveries newest first, each linking to its detail page.
pub fn delivery_table(items: &[DeliveryView]) -> Markup {
    html! {
        @if items.is_empty() {
            p.muted { "No deliveries." }
        } @else {
            (data_table(&["Delivery", "Event", "Status", "HTTP", "Attempt", "Time", "Error"], html! {
                @for d in items {
                    @let status = d.status.as_str();
                    tr {
                        th scope="row" { a href={ "/console/deliveries/" (segment(&d.delivery_id)) } { (d.delivery_id) } }
                        td { (d.event_type) }
                        td { span class={ "status-" (status) } { (status) } }
                        td { (d.http_status.map_or_else(|| "–".to_owned(), |s| s.to_string())) }
                        td { (d.attempt) }
                        td { (d.timestamp) }
                        td.wrap { (d.error.as_deref().unwrap_or("")) }
                    }
                }
            }))
        }
    }
}

pub async fn detail(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let detail = api::get(State(state), Path(id)).await?.0;
    let d = &detail.delivery;
    let payload = serde_json::to_string_pretty(&detail.payload).unwrap_or_default();
    let retry = format!("/console/deliveries/{}/retry", segment(&d.delivery_id));
    let body = html! {
        dl.facts {
            dt { "Webhook" } dd { a href={ "/console/webhooks/" (segment(&d.webhook_id)) } { (d.webhook_id) } }
            dt { "Event" } dd { (d.event_type) " " code { (d.event_id) } }
            dt { "Status" } dd { span class={ "status-" (d.status.as_str()) } { (d.status.as_str()) } }
            dt { "Queued" } dd { (d.timestamp) }
            @if let Some(next) = &d.next_retry { dt { "Next retry" } dd { (next) } }
            @if let Some(original) = &d.original_delivery_id {
                dt { "Retry of" } dd { a href={ "/console/deliveries/" (segment(original)) } { (original) } }
            }
        }
        div.actions { (post_button(&retry, &session.csrf, "Retry now", "secondary")) }
        h2 { "Attempts" }
        @if detail.attempts.is_empty() {
            p.muted { "No attempt made yet." }
        } @else {
            (data_table(&["#", "Time", "Outcome", "HTTP status", "Took", "Error", "Response body (first KiB)"], html! {
                @for a in &detail.attempts {
                    tr {
                        th scope="row" { (a.attempt) }
                        td { (crate::console::text::time(a.timestamp)) }
                        td { @if a.success { span.status-success { "success" } } @else { span.status-failed { "failed" } } }
                        td { (a.http_status.map_or_else(|| "–".to_owned(), |s| s.to_string())) }
                        td { (duration_ms(a.response_time_ms)) }
                        td.wrap { (a.error.as_deref().unwrap_or("")) }
                        td.wrap { code { (a.response_body.as_deref().unwrap_or("")) } }
                    }
                }
            }))
        }
        h2 { "Request" }
        p.muted { "POST to the webhook's URL with " code { "Content-Type: application/json" }
            " and the signature headers of its signature profile (signed per attempt, so not stored). Body:" }
        pre { code { (payload) } }
    };
    Ok(page(
        &format!("Delivery {}", d.delivery_id),
        Nav::Deliveries,
        Some(&session.csrf),
        body,
    ))
}

pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let queued = api::retry(State(state), Path(id)).await?.0;
    Ok(Redirect::to(&format!(
        "/console/deliveries/{}",
        segment(&queued.delivery_id)
    )))
}
