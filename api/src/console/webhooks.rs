//! Webhooks: the list, and one webhook with its figures, a chart of its
//! recent attempts, and its actions (test event, enable, disable).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;
use shared::delivery::history::{DeliveryFilter, ListFrom};
use shared::webhooks::registry::WebhookRequest;

use crate::console::chart::{Point, charts};
use crate::console::deliveries::delivery_table;
use crate::console::error::PageError;
use crate::console::layout::{Nav, data_table, notice, page};
use crate::console::session::Session;
use crate::http::body::Json;
use crate::http::envelope::{Pagination, Query};
use crate::http::error::ApiError;
use crate::routes::webhooks::{self as api, ListFilter, parse_webhook_id};
use crate::state::AppState;
use crate::views::{DeliveryView, WebhookView};

/// Recent attempts the detail page charts and lists.
const RECENT: usize = 50;

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(filter): Query<ListFilter>,
) -> Result<Markup, PageError> {
    let all = Pagination {
        limit: 100,
        offset: 0,
    };
    let page_of = api::list(State(state), Query(filter), all).await?;
    let body = html! {
        p { (page_of.total) " webhooks." }
        (data_table(&["Name", "URL", "State", "Attempts", "Failed", "Success rate", "Last delivery"], html! {
            @for w in &page_of.items {
                tr {
                    th scope="row" { a href={ "/console/webhooks/" (w.webhook_id) } { (w.name) } }
                    td.wrap { (w.url) }
                    td { (state_label(w)) }
                    td { (w.deliveries_count) }
                    td { (w.failures_count) }
                    td { (w.success_rate) " %" }
                    td { (w.last_delivery.as_deref().unwrap_or("–")) }
                }
            }
        }))
    };
    Ok(page("Webhooks", Nav::Webhooks, Some(&session.csrf), body))
}

fn state_label(w: &WebhookView) -> Markup {
    html! {
        @if w.active {
            span.status-active { "active" }
        } @else {
            span.status-inactive { "disabled" }
            @if let Some(reason) = &w.disabled_reason { " (" (reason) ")" }
        }
    }
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

pub async fn detail(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup, PageError> {
    let webhook = api::get(State(state.clone()), Path(id.clone())).await?.0;
    let webhook_id = parse_webhook_id(&id)?;
    let recent = state
        .services
        .deliveries
        .list(
            &webhook_id,
            &DeliveryFilter::default(),
            RECENT,
            ListFrom::Offset(0),
        )
        .await
        .map_err(ApiError::from)?;
    let points: Vec<Point> = recent
        .records
        .iter()
        .flat_map(|r| &r.attempts)
        .map(|a| Point {
            at: a.timestamp,
            success: a.success,
            latency_ms: a.response_time_ms,
        })
        .collect();
    let deliveries: Vec<DeliveryView> = recent.records.iter().map(DeliveryView::from).collect();
    let message = match done.done.as_deref() {
        Some("test") => Some("Test event queued."),
        Some("enabled") => Some("Webhook enabled."),
        Some("disabled") => Some("Webhook disabled."),
        _ => None,
    };
    let action = |what: &str| format!("/console/webhooks/{}/{what}", webhook.webhook_id);
    let body = html! {
        @if let Some(message) = message { (notice(message)) }
        dl.facts {
            dt { "Id" } dd { code { (webhook.webhook_id) } }
            dt { "URL" } dd { (webhook.url) }
            dt { "Events" } dd { (webhook.events.join(", ")) }
            dt { "State" } dd { (state_label(&webhook)) }
            dt { "Attempts" } dd { (webhook.deliveries_count) }
            dt { "Failed attempts" } dd { (webhook.failures_count) }
            dt { "Success rate" } dd { (webhook.success_rate) " %" }
            dt { "Last delivery" } dd { (webhook.last_delivery.as_deref().unwrap_or("–")) }
        }
        div.actions {
            (post_button(&action("test"), &session.csrf, "Send test event", "secondary"))
            @if webhook.active {
                (post_button(&action("disable"), &session.csrf, "Disable", "danger"))
            } @else {
                (post_button(&action("enable"), &session.csrf, "Enable", ""))
            }
            a href={ "/console/deliveries?webhook_id=" (webhook.webhook_id) } { "All deliveries" }
            a href={ "/console/dead-letters?webhook_id=" (webhook.webhook_id) } { "Dead letters" }
        }
        h2 { "Recent attempts" }
        (charts(&points))
        h2 { "Recent deliveries" }
        (delivery_table(&deliveries))
    };
    Ok(page(
        &webhook.name,
        Nav::Webhooks,
        Some(&session.csrf),
        body,
    ))
}

/// A one-button form that posts the session's CSRF token to `action`.
pub fn post_button(action: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" class=(class) { (label) }
        }
    }
}

fn back_to(webhook_id: &str, done: &str) -> Redirect {
    Redirect::to(&format!("/console/webhooks/{webhook_id}?done={done}"))
}

pub async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let webhook_id = parse_webhook_id(&id)?;
    api::test(State(state), Path(id)).await?;
    Ok(back_to(webhook_id.as_str(), "test"))
}

pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let webhook_id = parse_webhook_id(&id)?;
    api::enable(State(state), Path(id), Bytes::new()).await?;
    Ok(back_to(webhook_id.as_str(), "enabled"))
}

pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let webhook_id = parse_webhook_id(&id)?;
    let change = WebhookRequest {
        active: Some(false),
        ..WebhookRequest::default()
    };
    api::update(State(state), Path(id), Json(change)).await?;
    Ok(back_to(webhook_id.as_str(), "disabled"))
}
