//! External services behind the semantic index: an OpenAI-compatible API
//! (embeddings and chat; also Ollama, vLLM and the llama.cpp server) and a
//! Qdrant vector store, both over plain HTTP/JSON.

pub mod openai;
pub mod qdrant;
pub mod semantic;

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Largest reply body read from a provider. A batch of 64 embeddings of
/// 3072 floats is about 4 MiB of JSON, so 16 MiB leaves room while keeping a
/// misbehaving server from exhausting memory.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// How much of an error body is kept in [`ProviderError::Status`]: enough to
/// read the provider's explanation, short enough for a log line.
const MAX_ERROR_EXCERPT_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Could not reach the service or it timed out: worth retrying.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The service answered with an error status (keeps the status and a
    /// short body excerpt, never the API key).
    #[error("{service} answered HTTP {status}: {message}")]
    Status {
        service: &'static str,
        status: u16,
        message: String,
    },
    /// The reply did not have the shape we need, or the settings cannot work
    /// (neither is fixed by trying again).
    #[error("provider protocol error: {0}")]
    Protocol(String),
}

impl ProviderError {
    /// Whether the same request may succeed later: the service was
    /// unreachable, rate limited us, or failed on its side.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Unavailable(_) => true,
            ProviderError::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            ProviderError::Protocol(_) => false,
        }
    }
}

/// A client shared by the providers: bounded in time, and never following
/// redirects so a request (and its key header) cannot be sent to another host.
fn http_client(service: &'static str, timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            ProviderError::Protocol(format!(
                "{service}: cannot build HTTP client: {}",
                chain(&e)
            ))
        })
}

/// A base URL with a trailing slash, so that joining a relative path appends
/// to it (`…/v1` + `embeddings` → `…/v1/embeddings`) instead of replacing
/// its last segment.
fn base_with_slash(service: &'static str, url: &url::Url) -> Result<url::Url, ProviderError> {
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ProviderError::Protocol(format!(
            "{service}: base URL must be an http(s) URL, got scheme {:?}",
            url.scheme()
        )));
    }
    let mut base = url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.set_query(None);
    base.set_fragment(None);
    Ok(base)
}

/// Sends a request and returns the 2xx body, bounded in size. Error statuses
/// become [`ProviderError::Status`] with the provider's own message when it
/// has one; `secret` is scrubbed from that message because some servers echo
/// the key they rejected.
async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
    secret: Option<&str>,
) -> Result<Vec<u8>, ProviderError> {
    let response = request.send().await.map_err(|e| unavailable(service, &e))?;
    let status = response.status();
    if status.is_success() {
        return read_bounded(service, response).await;
    }
    // The body only explains the failure: losing it must not hide the status.
    let body = read_bounded(service, response).await.unwrap_or_default();
    let mut message = error_message(&body);
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        message = message.replace(secret, "[redacted]");
    }
    Err(ProviderError::Status {
        service,
        status: status.as_u16(),
        message,
    })
}

/// [`send`], then decodes the JSON reply; the serde message names the field
/// that was missing or of the wrong type.
async fn send_json<T: DeserializeOwned>(
    service: &'static str,
    what: &str,
    request: reqwest::RequestBuilder,
    secret: Option<&str>,
) -> Result<T, ProviderError> {
    let body = send(service, request, secret).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::Protocol(format!("{service} {what} reply: {e}")))
}

async fn read_bounded(
    service: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || {
        ProviderError::Protocol(format!(
            "{service} reply is larger than {MAX_REPLY_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable(service, &e))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The explanation in an error body: OpenAI-style `{"error":{"message"}}`,
/// Qdrant-style `{"status":{"error"}}`, Ollama's `{"error"}`, vLLM's
/// `{"message"}`, else the start of the raw text.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let structured = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/status/error"))
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    });
    let text = structured.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    let mut excerpt: String = text.chars().take(MAX_ERROR_EXCERPT_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

fn unavailable(service: &'static str, error: &reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(format!("{service}: {}", chain(error)))
}

/// The error with its causes: reqwest's own message ("error sending request")
/// says nothing about why, the cause ("connection refused") does.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Renders a secret for `Debug` without revealing it.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "[redacted]")
}
