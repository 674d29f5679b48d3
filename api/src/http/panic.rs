//! A panicking handler answers like any other failure: the 500 envelope
//! with the request's trace id, instead of a dropped connection that a
//! client cannot tell from a network fault (and would retry blindly).

use std::any::Any;
use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use crate::http::error::ApiError;

pub async fn catch_panics(req: Request, next: Next) -> Response {
    // The handler's state is dropped with its future; nothing it held is
    // observed afterwards, so the unwind-safety assertion holds.
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            ApiError::internal(format!("handler panicked: {}", message(&*panic))).into_response()
        }
    }
}

fn message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}
