//! The console's error page: what went wrong, in words, with the status
//! the JSON API would have answered.

use std::fmt::Display;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::console::layout::{Nav, page};
use crate::http::error::ApiError;

#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This form is missing its security token or the token is stale. \
             Go back, reload the page and try again.",
        )
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "The form sent is too large.")
    }

    pub fn unavailable(e: impl Display) -> Self {
        tracing::warn!(error = %e, "console: storage unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis cannot be reached right now; try again in a moment.",
        )
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Something went wrong");
        let body = html! {
            p.error role="alert" { (self.message) }
            p { a href="/console" { "Back to the console" } }
        };
        (self.status, page(title, Nav::None, None, body)).into_response()
    }
}
