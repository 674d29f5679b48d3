//! The frame of every console page, and the headers every console answer
//! carries.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;
use maud::{DOCTYPE, Markup, html};
use shared::events::catalog::EventType;
use shared::webhooks::registry::Webhook;

use crate::console::assets;

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Webhooks,
    Deliveries,
    DeadLetters,
    Knowledge,
    Conversations,
    /// Pages outside the navigation (sign-in, errors).
    None,
}

const SECTIONS: [(Nav, &str, &str); 6] = [
    (Nav::Overview, "/console", "Overview"),
    (Nav::Webhooks, "/console/webhooks", "Webhooks"),
    (Nav::Deliveries, "/console/deliveries", "Deliveries"),
    (Nav::DeadLetters, "/console/dead-letters", "Dead letters"),
    (Nav::Knowledge, "/console/knowledge", "Knowledge"),
    (
        Nav::Conversations,
        "/console/conversations",
        "Conversations",
    ),
];

/// A whole page. `csrf` is the signed-in session's token: htmx sends it
/// with every request it makes (`hx-headers` on `<body>`), and the sign-out
/// form carries it. `None` on pages shown before sign-in.
pub fn page(title: &str, active: Nav, csrf: Option<&str>, body: Markup) -> Markup {
    let headers = csrf.map(|token| serde_json::json!({ "X-CSRF-Token": token }).to_string());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No eval and no injected <style>: both would break under
                // the console's Content-Security-Policy.
                meta name="htmx-config" content=r#"{"allowEval":false,"includeIndicatorStyles":false}"#;
                title { (title) " · Support RAG console" }
                link rel="stylesheet" href=(assets::CSS_PATH);
                script src=(assets::HTMX_PATH) defer {}
            }
            body hx-headers=[headers] {
                header {
                    a.brand href="/console" { "Support RAG console" }
                    @if let Some(token) = csrf {
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(token);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if csrf.is_some() {
                    nav aria-label="Console sections" {
                        ul {
                            @for (nav, href, label) in SECTIONS {
                                li {
                                    @if nav == active {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A table wrapped so that it scrolls sideways on a narrow screen instead
/// of widening the page.
pub fn scrolling(table: Markup) -> Markup {
    html! { div.scroll tabindex="0" { (table) } }
}

/// A table with one header row, scrolling sideways on a narrow screen.
pub fn data_table(columns: &[&str], rows: Markup) -> Markup {
    scrolling(html! {
        table {
            thead { tr { @for column in columns { th scope="col" { (column) } } } }
            tbody { (rows) }
        }
    })
}

/// A list filter's labelled `<select>`: "any" first unless a choice is
/// required, the current value selected.
pub fn select_filter(
    field: Field<'_>,
    options: impl IntoIterator<Item = (String, String)>,
    current: Option<&str>,
) -> Markup {
    html! {
        label for=(field.id) { (field.label)
            select id=(field.id) name=(field.name) {
                @if !field.required { option value="" { "any" } }
                @for (value, text) in options {
                    option value=(value) selected[current == Some(value.as_str())] { (text) }
                }
            }
        }
    }
}

/// Where a [`select_filter`] goes in its form.
pub struct Field<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub name: &'a str,
    pub required: bool,
}

/// The webhooks as choices of a filter, by name.
pub fn webhook_options(webhooks: &[Webhook]) -> Vec<(String, String)> {
    webhooks
        .iter()
        .map(|w| {
            let id = w.webhook_id.to_string();
            (id.clone(), format!("{} ({id})", w.name))
        })
        .collect()
}

/// Every event type as choices of a filter.
pub fn event_type_options() -> Vec<(String, String)> {
    EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), t.as_str().to_owned()))
        .collect()
}

/// A notice above a page's content (the outcome of the last action).
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// Middleware on every console route: the security headers, and no caching
/// of pages (the assets set their own long-lived `Cache-Control`).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}
