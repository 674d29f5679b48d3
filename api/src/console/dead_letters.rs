//! Dead letters: the list with filters, replay or discard one, and bulk
//! replay (a dry-run count first, then the real run, optionally paced,
//! with its progress refreshing itself).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use shared::delivery::replays::{ReplayRun, RunKind, RunState, Work};
use shared::jobs::ALL_QUEUES;
use shared::webhooks::registry::Webhook;

use crate::console::error::PageError;
use crate::console::layout::{
    Field, Nav, data_table, event_type_options, notice, page, select_filter, webhook_options,
};
use crate::console::query::{Filters, segment};
use crate::console::session::Session;
use crate::console::webhooks::post_button;
use crate::http::envelope::{Pagination, Query};
use crate::http::error::ApiError;
use crate::routes::dead_letters::{self as api, DeadLetterQuery, pace, replay_filter};
use crate::state::AppState;

/// The list filters, carried from the list to the count to the run.
const FILTERS: [&str; 3] = ["webhook_id", "event_type", "job_type"];

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    filters: Filters,
) -> Result<Markup, PageError> {
    let query: DeadLetterQuery = filters.parse()?;
    let found = api::list(
        State(state.clone()),
        Query(query),
        Pagination {
            limit: 100,
            offset: 0,
        },
    )
    .await?;
    let mut webhooks = state
        .services
        .webhooks
        .all()
        .await
        .map_err(ApiError::from)?;
    webhooks.sort_by(|a, b| a.name.cmp(&b.name));
    let message = match filters.get("done") {
        Some("replayed") => Some("Dead letter replayed."),
        Some("discarded") => Some("Dead letter discarded."),
        _ => None,
    };
    let body = html! {
        @if let Some(message) = message { (notice(message)) }
        (filter_form(&filters, &webhooks))
        p { (found.total) " dead letters match." }
        @if found.total > 0 {
            (bulk_form(&filters, &session.csrf))
        }
        @if !found.items.is_empty() {
            (data_table(&["Dead letter", "Queue", "Webhook", "Event", "Attempts", "Failed at", "Last error", "Actions"], html! {
                @for d in &found.items {
                    @let id = segment(&d.dead_letter_id);
                    tr {
                        th scope="row" { (d.dead_letter_id) }
                        td { (d.job_type) }
                        td { @if let Some(w) = &d.webhook_id {
                            a href={ "/console/webhooks/" (segment(w)) } { (w) }
                        } }
                        td { (d.event_type.as_deref().unwrap_or("")) }
                        td { (d.attempts) }
                        td { (d.failed_at) }
                        td.wrap { (d.last_error) }
                        td {
                            (post_button(&format!("/console/dead-letters/{id}/replay"), &session.csrf, "Replay", "secondary"))
                            " "
                            (post_button(&format!("/console/dead-letters/{id}/discard"), &session.csrf, "Discard", "danger"))
                        }
                    }
                }
            }))
        }
    };
    Ok(page(
        "Dead letters",
        Nav::DeadLetters,
        Some(&session.csrf),
        body,
    ))
}

/// Which dead letters the list shows.
fn filter_form(filters: &Filters, webhooks: &[Webhook]) -> Markup {
    html! {
        form.filters method="get" action="/console/dead-letters" {
            (select_filter(
                Field { id: "f_webhook", label: "Webhook", name: "webhook_id", required: false },
                webhook_options(webhooks),
                filters.get("webhook_id"),
            ))
            (select_filter(
                Field { id: "f_event", label: "Event type", name: "event_type", required: false },
                event_type_options(),
                filters.get("event_type"),
            ))
            (select_filter(
                Field { id: "f_job", label: "Queue", name: "job_type", required: false },
                ALL_QUEUES.iter().map(|q| ((*q).to_owned(), (*q).to_owned())),
                filters.get("job_type"),
            ))
            button type="submit" { "Filter" }
        }
    }
}

/// The first step of a bulk replay: count what the filters match.
fn bulk_form(filters: &Filters, csrf: &str) -> Markup {
    html! {
        h2 { "Replay all that match" }
        form.filters method="post" action="/console/dead-letters/replay" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="step" value="count";
            (carried(filters))
            label for="rate" { "Rate (per second, optional)"
                input #rate type="number" name="rate" min="0.1" max="1000" step="any";
            }
            button type="submit" { "Count what would be replayed" }
        }
    }
}

/// The filters as hidden fields, so the next step works on the same set.
fn carried(filters: &Filters) -> Markup {
    html! {
        @for name in FILTERS {
            @if let Some(value) = filters.get(name) {
                input type="hidden" name=(name) value=(value);
            }
        }
    }
}

/// Both steps of a bulk replay (the form's `step`): `count` answers how
/// many entries a run would replay and asks to confirm; `confirm` runs it,
/// at once or paced (`rate`) in the background.
pub async fn replay_many(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = Filters::from_query(&String::from_utf8_lossy(&body));
    let query: DeadLetterQuery = form.parse()?;
    let rate = form
        .get("rate")
        .map(|r| {
            r.parse::<f64>()
                .map_err(|_| ApiError::validation("rate", "rate must be a number"))
        })
        .transpose()?;
    let pace = pace(rate)?;
    let work = Work::DeadLetters(replay_filter(query)?);
    let replayer = &state.replayer;
    if form.get("step") != Some("confirm") {
        let count = replayer.count(&work).await.map_err(ApiError::from)?;
        let body = html! {
            p.notice role="status" { (count) " entries will be replayed"
                @if let Some(p) = pace { ", " (p.rate()) " per second" } "." }
            @if count > 0 {
                form.filters method="post" action="/console/dead-letters/replay" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="step" value="confirm";
                    (carried(&form))
                    @if let Some(rate) = form.get("rate") { input type="hidden" name="rate" value=(rate); }
                    button type="submit" { "Replay " (count) " entries" }
                }
            }
            p { a href={ "/console/dead-letters?" (carried_query(&form)) } { "Back to the list" } }
        };
        let markup = page(
            "Confirm replay",
            Nav::DeadLetters,
            Some(&session.csrf),
            body,
        );
        return Ok(markup.into_response());
    }
    let webhook_id = form.get("webhook_id").map(str::to_owned);
    match pace {
        Some(pace) => {
            let run = replayer
                .start(RunKind::DeadLetters, webhook_id, work, pace)
                .await
                .map_err(ApiError::from)?;
            tracing::info!(replay_id = %run.replay_id, total = run.total, "console: paced replay started");
            Ok(Redirect::to(&format!(
                "/console/dead-letters/replays/{}",
                segment(&run.replay_id)
            ))
            .into_response())
        }
        None => {
            let tally = replayer.run_now(work, None).await.map_err(ApiError::from)?;
            tracing::info!(replayed = tally.replayed, "console: replay done");
            let body = html! {
                p.notice role="status" { "Replayed " (tally.replayed) " entries; skipped "
                    (tally.skipped + tally.failed) "." }
                p { a href="/console/deliveries" { "Follow them on the deliveries page" } }
            };
            Ok(page("Replay done", Nav::DeadLetters, Some(&session.csrf), body).into_response())
        }
    }
}

fn carried_query(filters: &Filters) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for name in FILTERS {
        if let Some(value) = filters.get(name) {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

pub async fn progress(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let run = api::replay_status(State(state), Path(id)).await?.0;
    let body = html! {
        (run_status(&run))
        p { a href="/console/deliveries" { "Deliveries" } " · " a href="/console/dead-letters" { "Dead letters" } }
    };
    Ok(page(
        "Paced replay",
        Nav::DeadLetters,
        Some(&session.csrf),
        body,
    ))
}

/// The refreshing part of [`progress`].
pub async fn progress_fragment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let run = api::replay_status(State(state), Path(id)).await?.0;
    Ok(run_status(&run))
}

/// While the run goes on, the block asks for itself again every second
/// and replaces itself; once it is over, it no longer asks.
fn run_status(run: &ReplayRun) -> Markup {
    let state = match run.state {
        RunState::Running => "running",
        RunState::Finished => "finished",
        RunState::Failed => "failed",
        RunState::Interrupted => "interrupted",
    };
    let done = run.replayed + run.skipped + run.failed;
    let inner = html! {
        p role="status" { "Replay " code { (run.replay_id) } " is " strong { (state) } ": "
            (done) " of " (run.total) " done (" (run.replayed) " replayed, "
            (run.skipped) " skipped, " (run.failed) " failed) at " (run.rate) " per second." }
        progress max=(run.total.max(1)) value=(done) { (done) " of " (run.total) }
        @if let Some(error) = &run.error { p.error { (error) } }
    };
    if run.state == RunState::Running {
        let source = format!(
            "/console/dead-letters/replays/{}/status",
            segment(&run.replay_id)
        );
        html! { div #run hx-get=(source) hx-trigger="every 1s" hx-swap="outerHTML" { (inner) } }
    } else {
        html! { div #run { (inner) } }
    }
}

pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    api::replay(State(state), Path(id)).await?;
    Ok(Redirect::to("/console/dead-letters?done=replayed"))
}

pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    api::discard(State(state), Path(id)).await?;
    Ok(Redirect::to("/console/dead-letters?done=discarded"))
}
