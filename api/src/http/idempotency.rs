//! The `Idempotency-Key` layer of the admin POSTs. The rule (what is a
//! key, what is "the same request", which answers are kept) lives in
//! [`shared::idempotency`]; this layer only applies it to requests.
//!
//! It sits inside auth and body buffering ([`idempotent`] is called before
//! [`crate::http::openapi::admin_only`]): a key is looked at only for an
//! authenticated caller, and the body it fingerprints is already read and
//! capped by the body limits.

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use shared::idempotency::{
    Begin, Claim, Fingerprint, HEADER, IdempotencyKey, IdempotencyStore, KEY_MAX_LEN, StoredAnswer,
    is_final,
};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::ApiError;
use crate::http::openapi::error_response;

/// Set on an answer replayed from an earlier request with the same key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Largest answer kept for replay. Admin answers are a few KiB; a larger
/// one is passed through unstored rather than held in Redis for a day.
const ANSWER_LIMIT: u64 = 1024 * 1024;

/// What a client is told to wait after `IDEMPOTENCY_IN_PROGRESS`.
const IN_PROGRESS_RETRY_AFTER_SECS: u64 = 1;

/// Puts every POST route registered so far on `router` behind the layer,
/// and documents the header and the answers it adds on each of them.
pub fn idempotent<S>(mut router: OpenApiRouter<S>, store: IdempotencyStore) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        if let Some(post) = item.post.as_mut() {
            post.parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::T(header_parameter()));
            for (code, description) in [
                (
                    "400",
                    "malformed request, or an Idempotency-Key that is not 1-255 visible ASCII characters",
                ),
                (
                    "409",
                    "the Idempotency-Key was used for another request, or its first request is still running",
                ),
            ] {
                post.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error_response(code, description));
            }
        }
    }
    router.route_layer(from_fn_with_state(store, apply))
}

fn header_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(format!(
            "Makes a retried POST safe: the same key with the same method, path and body \
             within idempotency.ttl (24 h) answers the first answer again (same status and \
             body, with `Idempotent-Replayed: true`); with another request 409 \
             IDEMPOTENCY_CONFLICT; while the first is still running 409 \
             IDEMPOTENCY_IN_PROGRESS. 1-{KEY_MAX_LEN} visible ASCII characters, else 400 \
             INVALID_IDEMPOTENCY_KEY. Keys are global to the deployment. 5xx, 408 and 429 \
             answers are not kept."
        )))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(KEY_MAX_LEN)),
        ))
        .build()
}

/// Middleware: see the module documentation and [`shared::idempotency`].
async fn apply(
    State(store): State<IdempotencyStore>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(next.run(req).await);
    };
    let key = IdempotencyKey::parse(raw.as_bytes())
        .map_err(|e| ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string()))?;
    let (parts, body) = req.into_parts();
    // Already buffered and capped by `buffer_body`: this only takes the bytes.
    let body = body
        .collect()
        .await
        .map_err(|_| ApiError::bad_request("BODY_READ_FAILED", "failed to read request body"))?
        .to_bytes();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let fingerprint = Fingerprint::of(parts.method.as_str(), target, &body);
    let claim = match store.begin(&key, &fingerprint).await? {
        Begin::Started(claim) => claim,
        Begin::Replay(answer) => return Ok(replay(answer)),
        Begin::Conflict => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_CONFLICT",
                "this Idempotency-Key was used for another request (method, path or body \
                 differ); use a new key for a new request",
            ));
        }
        Begin::InProgress => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "a request with this Idempotency-Key is still running; retry later",
            )
            .with_retry_after(IN_PROGRESS_RETRY_AFTER_SECS));
        }
    };
    // Should the request be dropped before it answers (the client went
    // away), the claim stays until in_progress_ttl: the work may be half
    // done, and a retry told "in progress" is safer than one run again.
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    keep(&store, &claim, response).await
}

/// Stores a final answer and hands it on; frees the key otherwise.
async fn keep(
    store: &IdempotencyStore,
    claim: &Claim,
    response: Response,
) -> Result<Response, ApiError> {
    let status = response.status().as_u16();
    let size = response.body().size_hint().exact();
    if !is_final(status) || size.is_none_or(|n| n > ANSWER_LIMIT) {
        if is_final(status) {
            tracing::warn!(
                status,
                "answer too large or streamed: not kept for Idempotency-Key"
            );
        }
        release(store, claim).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(ApiError::internal)?.to_bytes();
    let answer = StoredAnswer {
        status,
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: bytes.to_vec(),
    };
    match store.complete(claim, &answer).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("Idempotency-Key claim expired before the answer was kept"),
        // The work is done; failing the answer now would invite a retry that
        // does it again. The claim expires after in_progress_ttl.
        Err(e) => tracing::warn!(error = %e, "could not keep the answer of an Idempotency-Key"),
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

async fn release(store: &IdempotencyStore, claim: &Claim) {
    if let Err(e) = store.release(claim).await {
        // It expires after in_progress_ttl.
        tracing::warn!(error = %e, "could not release an Idempotency-Key");
    }
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    if let Some(value) = answer
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    response
}
