//! The API client: bearer key, JSON envelopes in and out, and every failure
//! turned into a [`CliError`] (with its exit code) in one place.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiFailure, CliError};
use crate::settings::Target;

/// A successful answer: its status (200, 201 or 202 mean different things
/// on some endpoints) and its `data`.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub data: Value,
    /// `meta.pagination.total` of a list: how many match in all.
    pub total: Option<u64>,
}

impl Reply {
    /// `data` as `T`; a shape we do not understand is an error, not a panic.
    pub fn decode<T: DeserializeOwned>(&self, what: &str) -> Result<T, CliError> {
        decode(&self.data, what)
    }
}

/// `value` as `T`, naming `what` if it does not fit.
pub fn decode<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CliError> {
    serde_json::from_value(value.clone()).map_err(|e| CliError::Unexpected {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(target: Target, timeout: Duration) -> Result<Self, CliError> {
        let base = target.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--url / SUPPORTRAG_URL must start with http:// or https://, not {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("supportrag-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Http {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            key: target.key,
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => builder.header(AUTHORIZATION, format!("Bearer {key}")),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, CliError> {
        self.send(path, self.request(Method::GET, path).query(query))
            .await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Reply, CliError> {
        let builder = self.request(Method::POST, path);
        let builder = match body {
            Some(body) => builder.json(body),
            None => builder,
        };
        self.send(path, builder).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        self.send(path, self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply, CliError> {
        self.send(path, self.request(Method::DELETE, path)).await
    }

    async fn send(&self, path: &str, builder: RequestBuilder) -> Result<Reply, CliError> {
        let url = self.url(path);
        let response = builder.send().await.map_err(|e| self.transport(&url, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            return Err(CliError::Api {
                failure: failure(status, body.as_ref(), &bytes, retry_after),
            });
        }
        let data = body
            .as_ref()
            .and_then(|b| b.get("data"))
            .cloned()
            .ok_or_else(|| CliError::Unexpected {
                what: url.clone(),
                detail: format!("{status} without a JSON `data` envelope"),
            })?;
        let total = body
            .as_ref()
            .and_then(|b| b.pointer("/meta/pagination/total"))
            .and_then(Value::as_u64);
        Ok(Reply {
            status,
            data,
            total,
        })
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> CliError {
        if e.is_timeout() {
            CliError::Timeout {
                url: url.to_owned(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            }
        } else if e.is_connect() {
            CliError::Connect {
                url: self.base.clone(),
                detail: root_cause(&e),
            }
        } else {
            CliError::Http {
                url: url.to_owned(),
                detail: root_cause(&e),
            }
        }
    }
}

/// The innermost error: reqwest's own message ("error sending request")
/// hides the useful part ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The error envelope, or what there is of it (a proxy's HTML page, say).
fn failure(
    status: StatusCode,
    body: Option<&Value>,
    bytes: &[u8],
    retry_after: Option<String>,
) -> ApiFailure {
    let error = body.and_then(|b| b.get("error"));
    let text = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = text(error, "message").unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(bytes);
        let raw = raw.trim();
        if raw.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            raw.chars().take(200).collect()
        }
    });
    ApiFailure {
        status: status.as_u16(),
        code: text(error, "code"),
        message,
        trace_id: text(body.and_then(|b| b.get("meta")), "trace_id"),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_error_envelope_is_read_whole() {
        let body = json!({"error": {"code": "NOT_FOUND", "message": "webhook x not found"},
            "meta": {"trace_id": "abc"}});
        let f = failure(StatusCode::NOT_FOUND, Some(&body), b"", None);
        assert_eq!(f.code.as_deref(), Some("NOT_FOUND"));
        assert_eq!(f.message, "webhook x not found");
        assert_eq!(f.trace_id.as_deref(), Some("abc"));
    }

    #[test]
    fn a_foreign_error_page_still_says_something() {
        let f = failure(StatusCode::BAD_GATEWAY, None, b"<h1>bad gateway</h1>", None);
        assert_eq!(f.code, None);
        assert_eq!(f.message, "<h1>bad gateway</h1>");
        let empty = failure(StatusCode::SERVICE_UNAVAILABLE, None, b"", Some("3".into()));
        assert_eq!(empty.message, "Service Unavailable");
        assert_eq!(empty.retry_after.as_deref(), Some("3"));
    }
}
