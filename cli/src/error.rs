//! What can go wrong, each with the exit code scripts can branch on and a
//! message that says what to do about it.

use std::fmt;
use std::path::PathBuf;

/// An error answer of the API: its status and, when it sent our envelope,
/// the error code, message and trace id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
    pub trace_id: Option<String>,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(trace) = &self.trace_id {
            write!(f, " (trace id {trace})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Refused(String),
    #[error("{failure}\n{hint}", hint = hint(failure))]
    Api { failure: ApiFailure },
    #[error(
        "cannot connect to {url}: is the API running? start it with scripts/start.sh \
         or set SUPPORTRAG_URL ({detail})"
    )]
    Connect { url: String, detail: String },
    #[error(
        "no answer from {url} within {timeout}: the API may be overloaded; try again or raise --timeout"
    )]
    Timeout { url: String, timeout: String },
    #[error("request to {url} failed: {detail}")]
    Http { url: String, detail: String },
    /// A 2xx whose body is not what this version of the CLI expects (an
    /// API of another version, or something else answering on the URL).
    #[error("unexpected answer ({what}): {detail}")]
    Unexpected { what: String, detail: String },
    #[error("config file {path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn hint(failure: &ApiFailure) -> String {
    match failure.status {
        401 => "check SUPPORTRAG_ADMIN_KEY (or --key, or admin_key in the config file): \
                the API did not accept it"
            .into(),
        403 => "the key is not allowed to do this; check SUPPORTRAG_ADMIN_KEY".into(),
        404 => "check the id (list them with the matching `ls` command)".into(),
        409 => {
            "the request conflicts with the current state; the message says what to change".into()
        }
        429 => match &failure.retry_after {
            Some(after) => format!("rate limited: try again in {after} s (Retry-After)"),
            None => "rate limited: try again later".into(),
        },
        503 => match &failure.retry_after {
            Some(after) => {
                format!("the service is unavailable (Redis out of reach?): try again in {after} s")
            }
            None => "the service is unavailable (Redis out of reach?): try again later".into(),
        },
        500..=599 => "the API failed; its logs have the trace id".into(),
        _ => "the request was refused; see the message".into(),
    }
}

impl CliError {
    /// The process exit code documented in `--help` and docs/CLI.md.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Refused(_) | Self::Config { .. } => 2,
            Self::Api { failure } => match failure.status {
                401 | 403 => 3,
                404 => 4,
                409 => 5,
                429 => 6,
                502..=504 => 7,
                _ => 1,
            },
            Self::Connect { .. } | Self::Timeout { .. } => 7,
            Self::Http { .. } | Self::Unexpected { .. } | Self::File { .. } | Self::Failed(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api {
            failure: ApiFailure {
                status,
                code: Some("SOME_CODE".into()),
                message: "said the API".into(),
                trace_id: Some("trace-1".into()),
                retry_after: Some("7".into()),
            },
        }
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        let cases = [
            (400, 1),
            (401, 3),
            (403, 3),
            (404, 4),
            (409, 5),
            (413, 1),
            (422, 1),
            (429, 6),
            (500, 1),
            (503, 7),
        ];
        for (status, code) in cases {
            assert_eq!(api(status).exit_code(), code, "status {status}");
        }
    }

    #[test]
    fn other_failures_map_to_their_exit_codes() {
        let connect = CliError::Connect {
            url: "http://127.0.0.1:1".into(),
            detail: "refused".into(),
        };
        assert_eq!(connect.exit_code(), 7);
        assert_eq!(CliError::Refused("no".into()).exit_code(), 2);
        assert_eq!(CliError::Usage("no".into()).exit_code(), 2);
        assert_eq!(CliError::Failed("no".into()).exit_code(), 1);
    }

    #[test]
    fn messages_carry_the_api_error_and_what_to_do() {
        let text = api(401).to_string();
        assert!(
            text.contains("401 SOME_CODE: said the API (trace id trace-1)"),
            "{text}"
        );
        assert!(text.contains("SUPPORTRAG_ADMIN_KEY"), "{text}");
        assert!(api(429).to_string().contains("try again in 7 s"));
        let connect = CliError::Connect {
            url: "http://127.0.0.1:1".into(),
            detail: "refused".into(),
        };
        assert!(connect.to_string().contains("scripts/start.sh"));
    }
}
