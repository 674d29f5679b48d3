//! Bearer-key authentication for the admin API.
//!
//! Several keys can be valid at once so a key can be rotated without
//! downtime: deploy with old and new, move clients over, drop the old one.
//! Keys are compared in constant time against every configured key, so
//! neither the response time nor which key matched tells an attacker how
//! close a guess was; and the key holder never prints them in logs. Wrong
//! keys are counted per client address ([`FailureLimiter`]): past the
//! limit, 429 until the address has waited.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::http::error::ApiError;
use crate::http::throttle::{ClientKey, FailureLimiter};

/// The accepted admin keys. Cheap to clone (shared), so it can be the state
/// of `axum::middleware::from_fn_with_state`.
#[derive(Clone)]
pub struct AdminKeys(Arc<Vec<String>>);

impl AdminKeys {
    /// Blank entries are dropped: an empty key would let an empty bearer
    /// token through.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let keys = keys
            .into_iter()
            .map(Into::into)
            .filter(|k| !k.trim().is_empty())
            .collect();
        Self(Arc::new(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// With no keys every admin request is refused; callers may prefer to
    /// refuse to start instead.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Index of the matching key, if any. Every key is compared, whatever
    /// the outcome, so timing does not reveal which one (if any) matched.
    /// Only a key's length can leak, which `subtle` does not hide.
    fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut matched = Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.0.iter().enumerate() {
            let hit = key.as_bytes().ct_eq(presented);
            index = u64::conditional_select(&index, &(i as u64), hit);
            matched |= hit;
        }
        bool::from(matched).then_some(index as usize)
    }
}

impl fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminKeys([{} redacted])", self.0.len())
    }
}

/// What [`require_admin`] checks a request against: the keys, and the
/// failures counted so far. Cheap to clone (shared), so it can be the state
/// of `axum::middleware::from_fn_with_state`.
#[derive(Clone)]
pub struct AdminAuth {
    keys: AdminKeys,
    failures: FailureLimiter,
}

impl AdminAuth {
    pub fn new(keys: AdminKeys, failures: FailureLimiter) -> Self {
        Self { keys, failures }
    }
}

/// Request extension left by [`require_admin`]: which configured key was
/// used (its position), so logs can show whether an old key is still in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminIdentity {
    pub key_index: usize,
}

/// Middleware: lets the request through only with a valid
/// `Authorization: Bearer <key>`; 401 `MISSING_CREDENTIALS` or
/// `INVALID_CREDENTIALS` otherwise (with `WWW-Authenticate: Bearer`), and
/// 429 `TOO_MANY_AUTH_FAILURES` with `Retry-After` to an address that has
/// presented too many wrong keys lately (whatever it presents now).
pub async fn require_admin(
    State(auth): State<AdminAuth>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = client_of(&req);
    let presented = presented_key(req.headers());
    let identity = auth
        .admit(client, presented, Instant::now())
        .map_err(Refusal::into_error)?;
    req.extensions_mut().insert(identity);
    Ok(next.run(req).await)
}

/// The address failures are counted against.
pub fn client_of(req: &Request) -> ClientKey {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(ClientKey::unknown, |peer| ClientKey::of(peer.0.ip()))
}

impl AdminAuth {
    /// Judges a presented key: refused while `client` has too many failures
    /// lately (whatever it presents), a wrong key counted as one more. The
    /// bearer middleware and the console's sign-in form both come here, so
    /// both share one limit per address.
    pub fn admit(
        &self,
        client: ClientKey,
        presented: Result<&str, Refusal>,
        now: Instant,
    ) -> Result<AdminIdentity, Refusal> {
        if let Err(wait) = self.failures.check(client, now) {
            tracing::warn!(%client, "admin authentication refused: too many failures lately");
            return Err(Refusal::TooManyFailures(wait));
        }
        let judged = presented.and_then(|key| {
            if key.is_empty() {
                return Err(Refusal::Missing);
            }
            self.keys
                .find(key.as_bytes())
                .map(|key_index| AdminIdentity { key_index })
                .ok_or(Refusal::Invalid)
        });
        judged.inspect_err(|refusal| {
            // A request without credentials guesses nothing.
            if *refusal == Refusal::Invalid {
                self.failures.failed(client, now);
            }
            tracing::warn!(refusal = ?refusal, %client, "admin authentication failed");
        })
    }
}

/// Why a key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    /// A wrong scheme or a wrong key: one answer for both, since telling
    /// them apart helps nobody but someone probing.
    Invalid,
    /// The address presented too many wrong keys lately; it may try again
    /// after this long.
    TooManyFailures(Duration),
}

impl Refusal {
    fn into_error(self) -> ApiError {
        match self {
            Refusal::Missing => {
                ApiError::unauthorized("MISSING_CREDENTIALS", "missing Authorization header")
            }
            Refusal::Invalid => {
                ApiError::unauthorized("INVALID_CREDENTIALS", "invalid credentials")
            }
            Refusal::TooManyFailures(wait) => too_many_failures(wait),
        }
    }

    /// Whole seconds to wait, at least one, as `Retry-After` says it.
    pub fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_secs_f64().ceil().max(1.0) as u64
    }
}

fn presented_key(headers: &HeaderMap) -> Result<&str, Refusal> {
    let header = headers.get(AUTHORIZATION).ok_or(Refusal::Missing)?;
    header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or(Refusal::Invalid)
}

fn too_many_failures(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_AUTH_FAILURES",
        "too many failed authentications from this address, retry later",
    )
    .with_retry_after(Refusal::retry_after_secs(wait))
}

/// The token of a `Bearer` credential; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_keys() {
        let keys = AdminKeys::new(["s3cret-one", "s3cret-two"]);
        let printed = format!("{keys:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains('2'), "{printed}");
    }

    #[test]
    fn finds_any_rotated_key_and_reports_which() {
        let keys = AdminKeys::new(["old-key", "new-key", ""]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.find(b"old-key"), Some(0));
        assert_eq!(keys.find(b"new-key"), Some(1));
        assert_eq!(keys.find(b"new-ke"), None);
        assert_eq!(keys.find(b""), None);
    }

    #[test]
    fn parses_bearer_scheme_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
