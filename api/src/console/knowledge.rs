//! Knowledge: the documents with their status, errors and chunk counts;
//! upload, re-ingest, delete; and a search box showing what retrieval
//! returns, with scores.

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::response::Redirect;
use maud::{Markup, html};
use shared::ids::DocumentId;
use shared::knowledge::documents::{DocumentRecord, DocumentStatus};

use crate::console::error::PageError;
use crate::console::layout::{Nav, data_table, notice, page, scrolling};
use crate::console::query::{Filters, segment};
use crate::console::session::Session;
use crate::console::webhooks::post_button;
use crate::http::envelope::Pagination;
use crate::http::error::ApiError;
use crate::http::trace::current_trace_id;
use crate::routes::knowledge::{self as api, SearchQuery};
use crate::state::AppState;

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    filters: Filters,
) -> Result<Markup, PageError> {
    let documents = api::list(
        State(state.clone()),
        Pagination {
            limit: 100,
            offset: 0,
        },
    )
    .await?;
    let results = match filters.get("q") {
        Some(_) => Some(
            api::search(
                State(state),
                crate::http::envelope::Query(filters.parse::<SearchQuery>()?),
            )
            .await?
            .0,
        ),
        None => None,
    };
    let message = match filters.get("done") {
        Some("reingest") => Some("Document queued for ingestion again."),
        Some("deleted") => Some("Document deleted."),
        _ => None,
    };
    let body = html! {
        @if let Some(message) = message { (notice(message)) }
        h2 { "Search" }
        form.filters method="get" action="/console/knowledge" role="search" {
            label for="q" { "Question or keywords"
                input #q type="search" name="q" value=(filters.get("q").unwrap_or("")) maxlength="2000";
            }
            button type="submit" { "Search" }
        }
        @if let Some(found) = &results {
            p { "Confidence " (found.confidence) "; " (found.results.len()) " passages." }
            @if !found.results.is_empty() {
                (data_table(&["Score", "Document", "Heading", "Passage"], html! {
                    @for hit in &found.results {
                        tr {
                            th scope="row" { (format!("{:.3}", hit.score)) }
                            td { (hit.title) }
                            td { (hit.heading.as_deref().unwrap_or("")) }
                            td.wrap { (hit.text) }
                        }
                    }
                }))
            }
        }
        h2 { "Upload" }
        form.filters hx-post="/console/knowledge/upload" hx-encoding="multipart/form-data"
            hx-target="#upload-result" {
            label for="file" { "File (PDF, DOCX, HTML, Markdown, text)"
                input #file type="file" name="file" required;
            }
            label for="name" { "Name (optional)"
                input #name type="text" name="name" maxlength="300";
            }
            button type="submit" { "Upload" }
        }
        div #upload-result role="status" {}
        h2 { "Documents" }
        p { (documents.total) " documents." }
        (scrolling(document_table(&documents.items, &session.csrf)))
    };
    Ok(page("Knowledge", Nav::Knowledge, Some(&session.csrf), body))
}

fn status(s: DocumentStatus) -> &'static str {
    match s {
        DocumentStatus::Staged => "staged",
        DocumentStatus::Processing => "processing",
        DocumentStatus::Indexed => "indexed",
        DocumentStatus::Failed => "failed",
    }
}

fn document_table(items: &[DocumentRecord], csrf: &str) -> Markup {
    html! {
        table {
            thead { tr {
                th scope="col" { "Name" }
                th scope="col" { "Status" }
                th scope="col" { "Chunks" }
                th scope="col" { "Error" }
                th scope="col" { "Updated" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for d in items {
                    @let id = segment(d.document_id.as_str());
                    tr {
                        th scope="row" { (d.name) br; span.muted { (d.document_id) } }
                        td { span class={ "status-" (status(d.status)) } { (status(d.status)) } }
                        td { (d.chunks_count) }
                        td.wrap { @if let Some(e) = &d.error {
                            (e.error_code) ": " (e.error_message)
                        } }
                        td { (crate::console::text::time(d.updated_at)) }
                        td {
                            (post_button(&format!("/console/knowledge/{id}/reingest"), csrf, "Re-ingest", "secondary"))
                            " "
                            (post_button(&format!("/console/knowledge/{id}/delete"), csrf, "Delete", "danger"))
                        }
                    }
                }
            }
        }
    }
}

/// The upload form's target (htmx, which sends the CSRF header): the same
/// handler as `POST /api/v1/knowledge/documents`; answers a line for the
/// page.
pub async fn upload(State(state): State<AppState>, req: Request) -> Markup {
    match api::upload(State(state), req).await {
        Ok(receipt) => html! {
            p.notice { "Accepted: document " code { (receipt.0.document_id) }
                " is staged; reload to follow its status." }
        },
        Err(e) => html! { p.error role="alert" { (e.message()) } },
    }
}

/// The same library call as `POST /api/v1/knowledge/documents/{id}/reingest`.
pub async fn reingest(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let document_id = DocumentId::parse(&id).map_err(|_| ApiError::not_found("document", &id))?;
    state
        .services
        .documents
        .reingest(&state.services.queue, &document_id, current_trace_id())
        .await
        .map_err(|e| api::reingest_error(e, &id))?;
    Ok(Redirect::to("/console/knowledge?done=reingest"))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    api::delete(State(state), Path(id)).await?;
    Ok(Redirect::to("/console/knowledge?done=deleted"))
}
