//! The OpenAPI 3 document, built from the same code that builds the router.
//!
//! Routes are registered through utoipa-axum's `OpenApiRouter` with
//! `routes!(handler)`: the `#[utoipa::path]` on a handler gives both the axum
//! route and its documentation, so the published document cannot drift from
//! what is served. Likewise [`admin_only`] both installs the auth layer and
//! marks the operations as needing the `admin_key` scheme.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::http::auth::{AdminAuth, require_admin};
use crate::http::body::buffered;
use crate::http::envelope::{Meta, PageMeta};
use crate::http::error::{ErrorBody, ErrorEnvelope, ErrorMeta};
use crate::http::reference;

/// Name of the security scheme admin operations refer to.
pub const ADMIN_SECURITY_SCHEME: &str = "admin_key";
/// Where [`finish`] serves the document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Declares the `admin_key` bearer scheme in `components.securitySchemes`.
pub struct AdminKeySecurity;

impl Modify for AdminKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("Admin API key, sent as `Authorization: Bearer <key>`"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(ADMIN_SECURITY_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// Document-level metadata and the shared schemas; paths come from the
/// routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Support RAG API"),
    tags((name = "event-types", description = "The event catalogue: every outbound event type with a JSON Schema of its `data`, generated from the payload types the system sends.")),
    modifiers(&AdminKeySecurity),
    components(schemas(ErrorEnvelope, ErrorBody, ErrorMeta, Meta, PageMeta))
)]
pub struct ApiDoc;

/// The root router to register documented routes on.
pub fn api_router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// Puts every route registered so far on `router` behind admin bearer auth
/// and documents them as requiring `admin_key`. Routes added afterwards are
/// neither protected nor marked, exactly like axum's `route_layer`.
///
/// Bodies are read ([`buffered`]) inside the auth layer, so a caller without
/// a valid key is answered before a byte of its body is read.
pub fn admin_only<S>(mut router: OpenApiRouter<S>, auth: AdminAuth) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    require_security(router.get_openapi_mut(), ADMIN_SECURITY_SCHEME);
    buffered(router).route_layer(from_fn_with_state(auth, require_admin))
}

fn require_security(doc: &mut utoipa::openapi::OpenApi, scheme: &str) {
    let wanted = SecurityRequirement::new(scheme, Vec::<String>::new());
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let security = operation.security.get_or_insert_with(Vec::new);
            if !security.contains(&wanted) {
                security.push(wanted.clone());
            }
        }
    }
}

/// Every operation of a path, including the OpenAPI 3.2 `query` and
/// additional ones (none are routed today), so a marking pass cannot miss one.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
    .chain(item.additional_operations.values_mut())
}

/// The document pre-serialized once at startup; serving it is a copy of
/// shared bytes.
#[derive(Debug, Clone)]
pub struct OpenApiJson(Bytes);

impl OpenApiJson {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(doc).map(|v| Self(Bytes::from(v)))
    }
}

/// Handler serving the document as plain OpenAPI JSON (not wrapped in the
/// data envelope: tooling expects the bare document).
pub async fn serve_openapi(State(doc): State<OpenApiJson>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        doc.0,
    )
        .into_response()
}

/// Splits the documented router into the axum router and the document, and
/// adds `GET /openapi.json` serving that document and the interactive
/// reference that renders it.
pub fn finish<S>(
    router: OpenApiRouter<S>,
) -> Result<(Router<S>, utoipa::openapi::OpenApi), serde_json::Error>
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut doc) = router.split_for_parts();
    document_envelopes(&mut doc);
    document_common_errors(&mut doc);
    describe_every_response(&mut doc);
    let json = OpenApiJson::new(&doc)?;
    let docs = Router::new()
        .route(OPENAPI_PATH, get(serve_openapi))
        .with_state(json);
    Ok((router.merge(docs).merge(reference::routes()), doc))
}

/// Handlers document what they return (`body = Thing`), but every 2xx JSON
/// answer goes out wrapped as `{"data": Thing, "meta": {...}}` (see
/// [`crate::http::envelope`]). Wrap the documented schemas the same way, in
/// one place, so the document describes the bytes on the wire.
fn document_envelopes(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for (status, response) in &mut operation.responses.responses {
                let RefOr::T(response) = response else {
                    continue;
                };
                if !status.starts_with('2') {
                    continue;
                }
                if let Some(RefOr::T(content)) = response.content.get_mut("application/json")
                    && let Some(data) = content.schema.take()
                {
                    content.schema = Some(enveloped(data));
                }
            }
        }
    }
}

fn enveloped(data: RefOr<Schema>) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .property("data", data)
            .required("data")
            .property("meta", Ref::from_schema_name("Meta"))
            .required("meta")
            .build(),
    ))
}

/// OpenAPI 3.1 requires a description on every response, and utoipa leaves
/// out an empty one (3.2 made it optional), so an annotation such as
/// `(status = 401, body = ErrorEnvelope)` would make the document invalid.
/// Such responses are described by their status' reason phrase.
fn describe_every_response(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("see the error envelope")
                        .to_owned();
                }
            }
        }
    }
}

/// Answers the shared layers give whatever the handler: the body layer's
/// 400/408/413/415/503 (budget spent) and the JSON extractor's 400/422 for
/// operations with a request body, 400 for a bad query string, 401 and 429
/// (too many wrong keys) behind the admin key, and 503 from every admin
/// operation, since each one reads or writes Redis. Added where a handler's annotation does not list them
/// already.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let mut codes: Vec<(&str, &str)> = Vec::new();
            if operation.request_body.is_some() {
                codes.extend([
                    ("400", "malformed JSON"),
                    (
                        "408",
                        "the body did not arrive within server.body_read_timeout",
                    ),
                    ("413", "body larger than the limit"),
                    ("415", "unsupported Content-Type"),
                    (
                        "422",
                        "well-formed JSON that breaks a rule; details.field names it",
                    ),
                    (
                        "503",
                        "too many request bodies in flight (server.body_budget), or Redis \
                         unavailable; retry after Retry-After",
                    ),
                ]);
            }
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
            if has_query {
                codes.push(("400", "bad query parameter"));
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                codes.push(("401", "missing or wrong admin key"));
                codes.push((
                    "429",
                    "too many wrong admin keys from this address lately; retry after Retry-After",
                ));
                codes.push((
                    "503",
                    "Redis is unreachable or refusing commands for now; retry after Retry-After",
                ));
            }
            for (code, description) in codes {
                operation
                    .responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error_response(code, description));
            }
        }
    }
}

pub(crate) fn error_response(code: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
            .build(),
    );
    if matches!(code, "429" | "503") {
        let seconds = HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
            .description(Some("seconds to wait before trying again"))
            .build();
        response = response.header("Retry-After", seconds);
    }
    RefOr::T(response.build())
}
