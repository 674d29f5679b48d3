//! The operator console at `/console`: server-rendered HTML pages (maud)
//! with htmx for the parts that refresh themselves.
//!
//! Not part of the JSON API: no bearer key, no `Idempotency-Key`, not in
//! the OpenAPI document. An operator signs in with an admin key
//! ([`signin`]); the session lives in Redis ([`session`]) and every POST
//! carries the session's CSRF token ([`require_session`]). Each page calls
//! the same functions as its JSON route, in process.

pub mod assets;
mod chart;
mod conversations;
mod dead_letters;
mod deliveries;
mod error;
mod knowledge;
mod layout;
mod overview;
mod query;
pub mod session;
mod signin;
mod text;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, body};
use redis::aio::ConnectionManager;
use shared::config::{AppEnvironment, Settings};

use crate::console::error::PageError;
use crate::console::session::{Session, SessionStore, cookie_value, tokens_match};
use crate::http::auth::AdminAuth;
use crate::state::AppState;

/// Largest form a console page posts (filters, a few buttons).
const FORM_LIMIT: usize = 64 * 1024;

const UPLOAD_PATH: &str = "/console/knowledge/upload";

/// What the console needs beyond [`AppState`]: the admin keys and their
/// failure limiter (shared with the bearer auth), and the session store.
#[derive(Clone)]
pub struct Console {
    admin: AdminAuth,
    sessions: SessionStore,
    /// `Secure` cookies (production only: a local trial runs over HTTP).
    secure_cookie: bool,
    upload_limit: usize,
    body_read_timeout: Duration,
}

/// The console's routes, to merge into the application's router.
pub fn router(admin: AdminAuth, settings: &Settings, conn: ConnectionManager) -> Router<AppState> {
    let console = Console {
        admin,
        sessions: SessionStore::new(
            conn,
            settings.redis.key_prefix.clone(),
            settings.console.session_ttl,
        ),
        secure_cookie: settings.app.environment == AppEnvironment::Production,
        upload_limit: settings.ingest.upload_body_limit(),
        body_read_timeout: settings.server.body_read_timeout,
    };
    let upload_limit = console.upload_limit;
    let signed_in = Router::new()
        .route("/console", get(overview::show))
        .route("/console/overview/table", get(overview::table))
        .route("/console/webhooks", get(webhooks::list))
        .route("/console/webhooks/{id}", get(webhooks::detail))
        .route("/console/webhooks/{id}/test", post(webhooks::send_test))
        .route("/console/webhooks/{id}/enable", post(webhooks::enable))
        .route("/console/webhooks/{id}/disable", post(webhooks::disable))
        .route("/console/deliveries", get(deliveries::list))
        .route("/console/deliveries/{id}", get(deliveries::detail))
        .route("/console/deliveries/{id}/retry", post(deliveries::retry))
        .route("/console/dead-letters", get(dead_letters::list))
        .route(
            "/console/dead-letters/replay",
            post(dead_letters::replay_many),
        )
        .route(
            "/console/dead-letters/replays/{id}",
            get(dead_letters::progress),
        )
        .route(
            "/console/dead-letters/replays/{id}/status",
            get(dead_letters::progress_fragment),
        )
        .route(
            "/console/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route(
            "/console/dead-letters/{id}/discard",
            post(dead_letters::discard),
        )
        .route("/console/knowledge", get(knowledge::list))
        .route(
            UPLOAD_PATH,
            post(knowledge::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/console/knowledge/{id}/reingest",
            post(knowledge::reingest),
        )
        .route("/console/knowledge/{id}/delete", post(knowledge::delete))
        .route("/console/conversations", get(conversations::list))
        .route("/console/conversations/{id}", get(conversations::detail))
        .route(
            "/console/conversations/{id}/reply",
            post(conversations::reply),
        )
        .route(
            "/console/conversations/{id}/handback",
            post(conversations::hand_back),
        )
        .route("/console/conversations/{id}/end", post(conversations::end))
        .route("/console/logout", post(signin::logout))
        .route_layer(from_fn(require_session));
    Router::new()
        .route("/console/login", get(signin::form).post(signin::submit))
        .merge(assets::router())
        .merge(signed_in)
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(from_fn(layout::security_headers))
        .layer(Extension(console))
}

/// Middleware on every console route but sign-in and assets: the request
/// must carry a live session's cookie (else a redirect to the sign-in
/// form), and a POST must carry that session's CSRF token, in the
/// `X-CSRF-Token` header (htmx) or a `csrf` form field (else 403). The
/// session is left in the request's extensions for the handler.
async fn require_session(
    Extension(console): Extension<Console>,
    req: Request,
    next: Next,
) -> Response {
    let found = match cookie_value(req.headers()) {
        Some(id) => console.sessions.find(id).await,
        None => Ok(None),
    };
    let session = match found {
        Ok(Some(session)) => session,
        Ok(None) => return to_sign_in(req.headers()),
        Err(e) => return PageError::unavailable(e).into_response(),
    };
    let mut req = if req.method() == Method::POST {
        // Read only now, for a signed-in operator: nobody else makes the
        // console hold an upload's worth of memory.
        let limit = if req.uri().path() == UPLOAD_PATH {
            console.upload_limit
        } else {
            FORM_LIMIT
        };
        let checked = match read_in_time(req, limit, console.body_read_timeout).await {
            Ok(req) => checked_post(req, &session).await,
            Err(refused) => Err(refused),
        };
        match checked {
            Ok(req) => req,
            Err(refused) => return refused.into_response(),
        }
    } else {
        req
    };
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// Reads a request's body whole, within `limit` and `timeout`: the console
/// is outside the JSON API's body policy, so it keeps the same deadline
/// (`server.body_read_timeout`) itself, and a client sending one byte a
/// minute holds nothing for long.
async fn read_in_time(req: Request, limit: usize, timeout: Duration) -> Result<Request, PageError> {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(PageError::too_large()),
        Err(_) => Err(PageError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The form took too long to arrive.",
        )),
    }
}

/// Back to the sign-in form: a 303 for a page, `HX-Redirect` for an htmx
/// request (whose redirect would land inside the part it refreshes).
fn to_sign_in(headers: &HeaderMap) -> Response {
    if headers.contains_key("hx-request") {
        let mut res = ().into_response();
        res.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/console/login"));
        return res;
    }
    Redirect::to("/console/login").into_response()
}

/// The request again, if its CSRF token is the session's. The body is
/// already read ([`read_in_time`]).
async fn checked_post(req: Request, session: &Session) -> Result<Request, PageError> {
    let presented = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(token) = presented {
        return if tokens_match(&session.csrf, &token) {
            Ok(req)
        } else {
            Err(PageError::csrf())
        };
    }
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(PageError::csrf());
    }
    let (parts, body) = req.into_parts();
    let bytes = body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| PageError::too_large())?;
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if tokens_match(&session.csrf, &token) {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(PageError::csrf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            id: "a".repeat(64),
            csrf: "b".repeat(64),
        }
    }

    fn post(content_type: Option<&str>, token: Option<&str>, body: &str) -> Request {
        let mut req = Request::builder().method(Method::POST).uri("/console/x");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(token) = token {
            req = req.header("x-csrf-token", token);
        }
        req.body(Body::from(body.to_owned())).expect("a request")
    }

    async fn judged(req: Request) -> Result<String, StatusCode> {
        match checked_post(req, &session()).await {
            Ok(req) => {
                let bytes = body::to_bytes(req.into_body(), FORM_LIMIT)
                    .await
                    .expect("body");
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => Err(e.into_response().status()),
        }
    }

    #[tokio::test]
    async fn the_header_token_is_enough_for_any_body() {
        let token = "b".repeat(64);
        let got = judged(post(
            Some("multipart/form-data; boundary=x"),
            Some(&token),
            "--x",
        ))
        .await;
        assert_eq!(got, Ok("--x".to_owned()));
        let wrong = judged(post(None, Some(&"c".repeat(64)), "")).await;
        assert_eq!(wrong, Err(StatusCode::FORBIDDEN));
    }

    #[tokio::test]
    async fn a_form_carries_it_as_a_field_and_the_body_is_handed_on() {
        let body = format!("a=1&csrf={}&b=2", "b".repeat(64));
        let got = judged(post(Some("application/x-www-form-urlencoded"), None, &body)).await;
        assert_eq!(got, Ok(body));
    }

    #[tokio::test]
    async fn missing_or_wrong_tokens_are_forbidden() {
        let form = Some("application/x-www-form-urlencoded; charset=utf-8");
        for body in [
            "",
            "a=1",
            "csrf=",
            "csrf=bbbb",
            &format!("csrf={}", "c".repeat(64)),
        ] {
            assert_eq!(
                judged(post(form, None, body)).await,
                Err(StatusCode::FORBIDDEN),
                "{body:?}"
            );
        }
        // A multipart or JSON body can only carry it in the header.
        let field = format!("csrf={}", "b".repeat(64));
        assert_eq!(
            judged(post(Some("application/json"), None, &field)).await,
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            judged(post(None, None, &field)).await,
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[tokio::test]
    async fn an_oversized_form_is_refused_unread() {
        let body = format!("csrf={}&pad={}", "b".repeat(64), "x".repeat(FORM_LIMIT));
        let got = judged(post(Some("application/x-www-form-urlencoded"), None, &body)).await;
        assert_eq!(got, Err(StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[tokio::test]
    async fn a_body_that_never_ends_is_cut_off_at_the_deadline() {
        let stalled = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let req = Request::builder()
            .method(Method::POST)
            .uri("/console/login")
            .body(Body::from_stream(stalled))
            .expect("a request");
        let got = read_in_time(req, FORM_LIMIT, Duration::from_millis(50)).await;
        assert_eq!(
            got.map(|_| ()).map_err(|e| e.into_response().status()),
            Err(StatusCode::REQUEST_TIMEOUT)
        );
    }

    #[test]
    fn an_htmx_request_without_a_session_is_sent_to_sign_in_by_header() {
        let mut headers = HeaderMap::new();
        let page = to_sign_in(&headers);
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        headers.insert("hx-request", HeaderValue::from_static("true"));
        let fragment = to_sign_in(&headers);
        assert_eq!(fragment.status(), StatusCode::OK);
        assert_eq!(
            fragment.headers().get("hx-redirect"),
            Some(&HeaderValue::from_static("/console/login"))
        );
    }
}
