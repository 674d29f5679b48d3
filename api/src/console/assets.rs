//! The console's static files, compiled into the binary. Their paths carry
//! a version (htmx's release, the stylesheet's own number), so they can be
//! cached for a year: a change ships under a new path.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

pub const HTMX_PATH: &str = "/console/assets/htmx-2.0.11.min.js";
/// Bump the number with every change to `console.css`.
pub const CSS_PATH: &str = "/console/assets/console-2.css";

const HTMX: &str = include_str!("assets/htmx-2.0.11.min.js");
const CSS: &str = include_str!("assets/console.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(HTMX_PATH, get(|| async { asset("text/javascript", HTMX) }))
        .route(CSS_PATH, get(|| async { asset("text/css", CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
}
