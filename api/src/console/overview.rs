//! The overview: every queue's depths and rates, and the workers reading
//! each queue with their last sign of life. The table refreshes itself
//! every 5 s (htmx polls [`table`]).

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};
use queue::Consumer;
use shared::jobs::ALL_QUEUES;

use crate::console::error::PageError;
use crate::console::layout::{Nav, page, scrolling};
use crate::console::session::Session;
use crate::console::text::duration_ms;
use crate::routes::ops::{self, QueueStats};
use crate::state::AppState;

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Markup, PageError> {
    let table = table_markup(&state).await?;
    let body = html! {
        p.muted { "Refreshes every 5 seconds." }
        div #overview hx-get="/console/overview/table" hx-trigger="every 5s" hx-swap="innerHTML" {
            (table)
        }
    };
    Ok(page("Overview", Nav::Overview, Some(&session.csrf), body))
}

/// The refreshing part of the page.
pub async fn table(State(state): State<AppState>) -> Result<Markup, PageError> {
    table_markup(&state).await
}

async fn table_markup(state: &AppState) -> Result<Markup, PageError> {
    let queues = ops::queues(State(state.clone())).await?.0.queues;
    let mut workers: Vec<(&str, Vec<Consumer>)> = Vec::with_capacity(ALL_QUEUES.len());
    for queue in ALL_QUEUES {
        let consumers = state
            .services
            .queue
            .consumers(queue)
            .await
            .map_err(crate::http::error::ApiError::from)?;
        workers.push((queue, consumers));
    }
    Ok(html! {
        h2 { "Queues" }
        (scrolling(queue_table(&queues)))
        h2 { "Workers" }
        (scrolling(worker_table(&workers)))
    })
}

fn queue_table(queues: &[QueueStats]) -> Markup {
    html! {
        table {
            caption.muted { "Jobs per queue, by state; rates over about the last minute." }
            thead { tr {
                th scope="col" { "Queue" }
                th scope="col" { "Ready" }
                th scope="col" { "In flight" }
                th scope="col" { "Delayed" }
                th scope="col" { "Dead" }
                th scope="col" { "Done / s" }
                th scope="col" { "Failed / s" }
                th scope="col" { "Oldest ready" }
            } }
            tbody {
                @for q in queues {
                    tr {
                        th scope="row" { (q.queue) }
                        td { (q.ready) }
                        td { (q.in_flight) }
                        td { (q.scheduled) }
                        td { @if q.dead > 0 {
                            a href={ "/console/dead-letters?job_type=" (q.queue) } { (q.dead) }
                        } @else { "0" } }
                        td { (q.processed_per_second) }
                        td { (q.failed_per_second) }
                        td { @match q.oldest_ready_age_ms {
                            Some(ms) => (duration_ms(ms)),
                            None => span.muted { "–" },
                        } }
                    }
                }
            }
        }
    }
}

fn worker_table(workers: &[(&str, Vec<Consumer>)]) -> Markup {
    html! {
        @if workers.iter().all(|(_, c)| c.is_empty()) {
            p { "No worker has read any queue yet." }
        } @else {
            table {
                caption.muted { "Each worker as its queue's consumer group knows it." }
                thead { tr {
                    th scope="col" { "Queue" }
                    th scope="col" { "Worker" }
                    th scope="col" { "Jobs in hand" }
                    th scope="col" { "Last activity" }
                } }
                tbody {
                    @for (queue, consumers) in workers {
                        @for c in consumers {
                            tr {
                                th scope="row" { (queue) }
                                td { (c.name) }
                                td { (c.pending) }
                                td { (duration_ms(c.idle_ms)) " ago" }
                            }
                        }
                    }
                }
            }
        }
    }
}
