//! The interactive API reference at `/api/v1/docs`: one HTML page and one
//! script, compiled into the binary, that render the OpenAPI document the
//! API serves. No CDN and no build step, so it works wherever the API runs.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub const REFERENCE_PATH: &str = "/api/v1/docs";
const SCRIPT_PATH: &str = "/api/v1/docs/app.js";

const PAGE: &str = include_str!("docs/index.html");
const SCRIPT: &str = include_str!("docs/app.js");

/// Only this origin's script and API: the page holds an admin key while it
/// is open, so nothing else may run in it or receive from it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            REFERENCE_PATH,
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            SCRIPT_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
}

fn asset(media_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_parses_under_node() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("app.js");
        std::fs::write(&file, SCRIPT).expect("write script");
        let output = std::process::Command::new("node")
            .arg("--check")
            .arg(&file)
            .output()
            .expect("node must be on PATH (scripts/test.sh checks for it)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn the_page_loads_only_the_script_the_api_serves() {
        assert!(PAGE.contains(&format!("<script src=\"{SCRIPT_PATH}\"></script>")));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        assert!(SCRIPT.contains("\"/api/v1/openapi.json\""));
    }
}
