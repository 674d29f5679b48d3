//! Conversations: escalated sessions waiting for an operator first, then
//! those an operator has, then the bot's; one transcript with reply (which
//! assigns an unassigned session to the replying operator), hand back to
//! the bot, and resolve (end the session).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Redirect;
use maud::{Markup, html};
use shared::chat::sessions::{Role, Session as ChatSession, SessionStatus};
use shared::config::Operator;

use crate::console::error::PageError;
use crate::console::layout::{Nav, data_table, notice, page};
use crate::console::query::{Filters, segment};
use crate::console::session::Session;
use crate::console::webhooks::post_button;
use crate::http::body::Json;
use crate::http::envelope::{Pagination, Query};
use crate::routes::chat::{self as api, ReplyRequest, SessionListQuery, TurnView};
use crate::state::AppState;

async fn sessions(
    state: &AppState,
    status: &str,
    assigned: Option<&str>,
) -> Result<Vec<ChatSession>, PageError> {
    let query = SessionListQuery {
        status: Some(status.to_owned()),
        assigned: assigned.map(str::to_owned),
    };
    let page_of = api::list_sessions(
        State(state.clone()),
        Query(query),
        Pagination {
            limit: 100,
            offset: 0,
        },
    )
    .await?;
    Ok(page_of.items)
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Markup, PageError> {
    let waiting = sessions(&state, "escalated", Some("false")).await?;
    let assigned = sessions(&state, "escalated", Some("true")).await?;
    let bot = sessions(&state, "active", None).await?;
    let bot: Vec<ChatSession> = bot.into_iter().filter(|s| !s.escalated).collect();
    let body = html! {
        h2 { "Waiting for an operator (" (waiting.len()) ")" }
        (session_table(&waiting))
        h2 { "With an operator (" (assigned.len()) ")" }
        (session_table(&assigned))
        h2 { "With the bot (" (bot.len()) ")" }
        (session_table(&bot))
    };
    Ok(page(
        "Conversations",
        Nav::Conversations,
        Some(&session.csrf),
        body,
    ))
}

fn session_table(items: &[ChatSession]) -> Markup {
    html! {
        @if items.is_empty() {
            p.muted { "None." }
        } @else {
            (data_table(&["Session", "User", "Messages", "Last activity", "Escalation"], html! {
                @for s in items {
                    tr {
                        th scope="row" { a href={ "/console/conversations/" (segment(s.session_id.as_str())) } { (s.session_id) } }
                        td { (s.user_id) }
                        td { (s.messages_count) }
                        td { (crate::console::text::time(s.last_activity_at)) }
                        td.wrap { @if let Some(e) = &s.escalation {
                            (e.reason)
                            @if let Some(name) = e.operator_name.as_ref().or(e.operator_id.as_ref()) { " · " (name) }
                        } }
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
    filters: Filters,
) -> Result<Markup, PageError> {
    let view = api::get_session(State(state.clone()), Path(id)).await?.0;
    let chat = &view.session;
    let base = format!(
        "/console/conversations/{}",
        segment(chat.session_id.as_str())
    );
    let operators = &state.services.settings.chat.operators;
    let unassigned = chat
        .escalation
        .as_ref()
        .is_some_and(|e| e.operator_id.is_none());
    let message = match filters.get("done") {
        Some("reply") => Some("Reply queued for delivery."),
        Some("handback") => Some("The bot has this conversation again."),
        Some("end") => Some("Conversation resolved."),
        _ => None,
    };
    let status = match chat.status {
        SessionStatus::Active => "active",
        SessionStatus::Ended => "ended",
    };
    let body = html! {
        @if let Some(message) = message { (notice(message)) }
        dl.facts {
            dt { "User" } dd { (chat.user_id) }
            dt { "Status" } dd { (status) @if chat.escalated { ", escalated" } }
            @if let Some(e) = &chat.escalation {
                dt { "Reason" } dd { (e.reason) }
                dt { "Operator" } dd { (e.operator_name.as_deref().or(e.operator_id.as_deref()).unwrap_or("nobody yet")) }
            }
        }
        h2 { "Transcript" }
        (transcript(&view.history))
        @if chat.status == SessionStatus::Active {
            @if chat.escalated {
                (reply_form(&base, &session.csrf, unassigned, operators))
                div.actions {
                    (post_button(&format!("{base}/handback"), &session.csrf, "Hand back to the bot", "secondary"))
                    (post_button(&format!("{base}/end"), &session.csrf, "Resolve", "danger"))
                }
            } @else {
                div.actions { (post_button(&format!("{base}/end"), &session.csrf, "Resolve", "danger")) }
            }
        }
    };
    Ok(page(
        &format!("Conversation {}", chat.session_id),
        Nav::Conversations,
        Some(&session.csrf),
        body,
    ))
}

/// The conversation so far, oldest first, who said what and when.
fn transcript(history: &[TurnView]) -> Markup {
    html! {
        ol.transcript {
            @for turn in history {
                @let who = match turn.turn.role { Role::User => "User", Role::Assistant => "Bot", Role::Operator => "Operator" };
                li {
                    strong { (who) } " " span.muted { (crate::console::text::time(turn.turn.at)) }
                    @if let Some(c) = turn.turn.confidence { span.muted { " · confidence " (format!("{c:.2}")) } }
                    p { (turn.turn.text) }
                }
            }
        }
    }
}

/// The operator's reply; an unassigned conversation asks who replies
/// (replying takes it).
fn reply_form(base: &str, csrf: &str, unassigned: bool, operators: &[Operator]) -> Markup {
    html! {
        h2 { "Reply" }
        form.filters method="post" action={ (base) "/reply" } {
            input type="hidden" name="csrf" value=(csrf);
            @if unassigned {
                label for="operator_id" { "Reply as (takes the conversation)"
                    @if operators.is_empty() {
                        input #operator_id type="text" name="operator_id" required maxlength="128";
                    } @else {
                        select #operator_id name="operator_id" required {
                            @for op in operators { option value=(op.id) { (op.name) } }
                        }
                    }
                }
            }
            label for="message" { "Message"
                textarea #message name="message" rows="3" cols="40" required maxlength="4000" {}
            }
            button type="submit" { "Send reply" }
        }
    }
}

fn back(id: &str, done: &str) -> Redirect {
    Redirect::to(&format!(
        "/console/conversations/{}?done={done}",
        segment(id)
    ))
}

pub async fn reply(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = Filters::from_query(&String::from_utf8_lossy(&body));
    let request = ReplyRequest {
        message: form.get("message").unwrap_or_default().to_owned(),
        operator_id: form.get("operator_id").map(str::to_owned),
    };
    let queued = api::reply(State(state), Path(id), Json(request)).await?.0;
    Ok(back(&queued.session_id, "reply"))
}

pub async fn hand_back(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let view = api::hand_back(State(state), Path(id)).await?.0;
    Ok(back(view.session.session_id.as_str(), "handback"))
}

pub async fn end(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let view = api::end_session(State(state), Path(id)).await?.0;
    Ok(back(view.session.session_id.as_str(), "end"))
}
