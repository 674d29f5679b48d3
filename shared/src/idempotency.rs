//! `Idempotency-Key` for the admin API's POSTs: a client that retries a
//! request (a timeout, a dropped connection) gets the first answer again
//! instead of a second webhook, replay or retry.
//!
//! The rule, in one place:
//! - A key is 1–255 visible ASCII characters (`!`..`~`); anything else is
//!   refused ([`IdempotencyKey::parse`]) rather than silently ignored.
//! - Keys are global to the deployment, not per admin key: the configured
//!   admin keys are one principal (several exist only so they can be
//!   rotated), and a client that moves to the new key mid-retry must still
//!   find its first answer.
//! - A request is identified by its [`Fingerprint`]: method, path with
//!   query, and the SHA-256 of its body. The same key with another
//!   fingerprint is a conflict, never a replay of someone else's answer.
//! - The first request claims the key ([`IdempotencyStore::begin`]) with a
//!   marker that expires after `in_progress_ttl`, so a crashed API does not
//!   hold a key for a day; a second request while the marker stands is told
//!   so (in progress) instead of running twice.
//! - Only final answers are stored ([`is_final`]): 2xx and 4xx, except 408
//!   and 429, which say "try again". A 5xx (503: Redis away) is not stored
//!   and the claim is released, so a retry can succeed (as Stripe does).
//! - A stored answer is kept for `ttl` (24 h) after it was given.

use std::sync::LazyLock;
use std::time::Duration;

use queue::KeyPrefix;
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// Longest key accepted (Stripe's limit).
pub const KEY_MAX_LEN: usize = 255;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// A well-formed `Idempotency-Key` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Idempotency-Key is empty")]
    Empty,
    #[error("Idempotency-Key is longer than {KEY_MAX_LEN} characters")]
    TooLong,
    #[error("Idempotency-Key may only hold visible ASCII characters (no spaces)")]
    BadCharacter,
}

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > KEY_MAX_LEN {
            return Err(KeyError::TooLong);
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(KeyError::BadCharacter);
        }
        // Visible ASCII is UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests "the same": method, path with query, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(method: &str, path_and_query: &str, body: &[u8]) -> Self {
        let body_hash = Sha256::digest(body);
        let mut whole = Sha256::new();
        // Separators a method or a path cannot contain, so no two
        // different triples hash the same input.
        whole.update(method.as_bytes());
        whole.update(b"\n");
        whole.update(path_and_query.as_bytes());
        whole.update(b"\n");
        whole.update(body_hash);
        Self(hex::encode(whole.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether an answer with this status is kept and replayed. 408 and 429
/// tell the client to come back, and 5xx are our failures: a retry must be
/// able to get a better answer.
pub fn is_final(status: u16) -> bool {
    (200..500).contains(&status) && status != 408 && status != 429
}

/// An answer as stored and replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::begin`] found for a key.
#[derive(Debug)]
pub enum Begin {
    /// The key is new: this request runs, and must end with
    /// [`IdempotencyStore::complete`] or [`IdempotencyStore::release`].
    Started(Claim),
    /// The same request was answered already: this is its answer.
    Replay(StoredAnswer),
    /// The key was used for another request.
    Conflict,
    /// The same request is still running.
    InProgress,
}

/// A key held by one running request.
#[derive(Clone, Debug)]
pub struct Claim {
    redis_key: String,
    token: String,
}

/// Claims a key, or reads what it holds. KEYS: record. ARGV: fingerprint,
/// claim token, in-progress TTL (ms).
/// Returns {"started"} | {"conflict"} | {"running"} |
/// {"done", status, content type, body}.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'started'}
end
if fp ~= ARGV[1] then return {'conflict'} end
local answer = redis.call('HMGET', KEYS[1], 'status', 'ctype', 'body')
if not answer[1] then return {'running'} end
return {'done', answer[1], answer[2] or '', answer[3] or ''}
",
    )
});

/// Stores the answer if the claim is still this request's (it may have
/// expired and been taken by a retry). KEYS: record. ARGV: token, status,
/// content type, body, TTL (ms).
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ctype', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// Gives a key back (no answer to keep). KEYS: record. ARGV: token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
",
    )
});

/// The stored keys and answers (layout in [`crate::keys`]).
#[derive(Clone)]
pub struct IdempotencyStore {
    conn: ConnectionManager,
    prefix: KeyPrefix,
    ttl: Duration,
    in_progress_ttl: Duration,
}

impl IdempotencyStore {
    pub fn new(
        conn: ConnectionManager,
        prefix: KeyPrefix,
        ttl: Duration,
        in_progress_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            prefix,
            ttl,
            in_progress_ttl,
        }
    }

    pub async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Begin, StoreError> {
        let redis_key = crate::keys::idempotency(&self.prefix, &key_hash(key));
        let token = ulid::Ulid::generate().to_string();
        let reply: Vec<Vec<u8>> = BEGIN
            .key(&redis_key)
            .arg(fingerprint.as_str())
            .arg(&token)
            .arg(millis(self.in_progress_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        decode_begin(reply, Claim { redis_key, token })
    }

    /// Keeps `answer` for the key; false when the claim had expired and
    /// the key was taken by another request meanwhile.
    pub async fn complete(&self, claim: &Claim, answer: &StoredAnswer) -> Result<bool, StoreError> {
        let stored: i64 = COMPLETE
            .key(&claim.redis_key)
            .arg(&claim.token)
            .arg(answer.status)
            .arg(answer.content_type.as_deref().unwrap_or_default())
            .arg(answer.body.as_slice())
            .arg(millis(self.ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(stored == 1)
    }

    /// Frees the key for a retry (the answer was not final).
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        let _: i64 = RELEASE
            .key(&claim.redis_key)
            .arg(&claim.token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// Keys are hashed into the Redis key: a client's text (up to 255
/// characters, braces included) never shapes a key or its cluster slot.
fn key_hash(key: &IdempotencyKey) -> String {
    hex::encode(Sha256::digest(key.as_str().as_bytes()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode_begin(reply: Vec<Vec<u8>>, claim: Claim) -> Result<Begin, StoreError> {
    let corrupt = || StoreError::Malformed(format!("unexpected reply for {}", claim.redis_key));
    let mut parts = reply.into_iter();
    let kind = parts.next().ok_or_else(corrupt)?;
    match kind.as_slice() {
        b"started" => Ok(Begin::Started(claim)),
        b"conflict" => Ok(Begin::Conflict),
        b"running" => Ok(Begin::InProgress),
        b"done" => {
            let status = parts
                .next()
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
                .ok_or_else(corrupt)?;
            let content_type = parts
                .next()
                .filter(|c| !c.is_empty())
                .map(|c| String::from_utf8_lossy(&c).into_owned());
            let body = parts.next().unwrap_or_default();
            Ok(Begin::Replay(StoredAnswer {
                status,
                content_type,
                body,
            }))
        }
        _ => Err(corrupt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            redis_key: "k".into(),
            token: "t".into(),
        }
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(IdempotencyKey::parse(b"4f7a-retry_1:x.y/z").is_ok());
        assert!(IdempotencyKey::parse(&[b'a'; KEY_MAX_LEN]).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&[b'a'; KEY_MAX_LEN + 1]),
            Err(KeyError::TooLong)
        );
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        for bad in [&b"has space"[..], b"tab\t", "é".as_bytes(), b"nul\0"] {
            assert_eq!(IdempotencyKey::parse(bad), Err(KeyError::BadCharacter));
        }
    }

    #[test]
    fn a_fingerprint_changes_with_method_path_or_body() {
        let base = Fingerprint::of("POST", "/api/v1/webhooks/register", b"{\"a\":1}");
        assert_eq!(
            base,
            Fingerprint::of("POST", "/api/v1/webhooks/register", b"{\"a\":1}")
        );
        for other in [
            Fingerprint::of("PUT", "/api/v1/webhooks/register", b"{\"a\":1}"),
            Fingerprint::of("POST", "/api/v1/webhooks/register?x=1", b"{\"a\":1}"),
            Fingerprint::of("POST", "/api/v1/webhooks/register", b"{\"a\":2}"),
            Fingerprint::of("POST", "/api/v1/webhooks/register", b""),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base.as_str().len(), 64);
    }

    #[test]
    fn only_final_answers_are_kept() {
        for kept in [200, 201, 202, 400, 404, 409, 413, 422] {
            assert!(is_final(kept), "{kept}");
        }
        for retried in [408, 429, 500, 502, 503, 504, 101] {
            assert!(!is_final(retried), "{retried}");
        }
    }

    #[test]
    fn begin_replies_decode() {
        assert!(matches!(
            decode_begin(vec![b"started".to_vec()], claim()),
            Ok(Begin::Started(_))
        ));
        assert!(matches!(
            decode_begin(vec![b"conflict".to_vec()], claim()),
            Ok(Begin::Conflict)
        ));
        assert!(matches!(
            decode_begin(vec![b"running".to_vec()], claim()),
            Ok(Begin::InProgress)
        ));
        let done = decode_begin(
            vec![
                b"done".to_vec(),
                b"201".to_vec(),
                b"application/json".to_vec(),
                b"{}".to_vec(),
            ],
            claim(),
        );
        let Ok(Begin::Replay(answer)) = done else {
            panic!("{done:?}");
        };
        assert_eq!(
            answer,
            StoredAnswer {
                status: 201,
                content_type: Some("application/json".into()),
                body: b"{}".to_vec(),
            }
        );
        assert!(decode_begin(vec![b"done".to_vec(), b"x".to_vec()], claim()).is_err());
        assert!(decode_begin(vec![], claim()).is_err());
    }
}
