//! HTTP plumbing shared by every route of the API: error and success
//! envelopes, request tracing and metrics, body limits, admin auth and the
//! OpenAPI document.
//!
//! The order in which the layers wrap a route is part of the contract (documented:
//! 413 size, 415 content type, 401 credentials, 400 malformed JSON, 422
//! content), so [`with_common_layers`] and [`openapi::admin_only`] are the
//! places that decide it.

pub mod auth;
pub mod body;
pub mod envelope;
pub mod error;
pub mod idempotency;
pub mod openapi;
pub mod panic;
pub mod reference;
pub mod throttle;
pub mod trace;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};

use crate::http::body::{BodyPolicy, screen_body};
use crate::http::panic::catch_panics;
use crate::http::trace::{HttpMetrics, trace_requests};

/// Wraps every route of `router` in the request-wide layers.
///
/// Call it last, after all routes (including admin sub-routers that carry
/// their own auth `route_layer`) are in place: axum only layers routes that
/// exist at that point. The resulting order, outermost first, is
/// trace → panic catcher → body screening (declared size, media type) → (auth, per
/// sub-router) → body reading and budget ([`body::buffered`], per
/// sub-router) → handler, which is what gives 413/415 precedence over 401,
/// 401 over the handler's 400/422, and means no body is read for a caller
/// who has not authenticated.
pub fn with_common_layers<S>(router: Router<S>, metrics: HttpMetrics, body: BodyPolicy) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        // Bodies are read and capped by `buffer_body`; axum's own 2 MB
        // default would cut uploads below their limit. Its cap stays, at
        // the largest limit, for a route that would read its body itself.
        .layer(DefaultBodyLimit::max(body.largest_limit()))
        .layer(from_fn_with_state(body, screen_body))
        .layer(from_fn(catch_panics))
        .layer(from_fn_with_state(metrics, trace_requests))
}
