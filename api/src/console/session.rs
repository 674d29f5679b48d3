//! Console sessions and their CSRF tokens.
//!
//! A sign-in creates a random session id (256 bits, the cookie's value)
//! and a random CSRF token (256 bits). Redis keeps the token under the
//! SHA-256 of the id (see `shared::keys::console_session`) for
//! `console.session_ttl`: whoever can read Redis learns no cookie to sign
//! in with. Signing out deletes the key, so the cookie dies at once on
//! every server.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use rand::RngCore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use queue::KeyPrefix;

/// The cookie carrying the session id.
pub const COOKIE_NAME: &str = "supportrag_console";

/// Bytes of randomness in a session id and in a CSRF token.
const TOKEN_BYTES: usize = 32;

/// A signed-in operator's session: the cookie value and the token every
/// POST must carry.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub csrf: String,
}

#[derive(Clone)]
pub struct SessionStore {
    conn: ConnectionManager,
    prefix: KeyPrefix,
    ttl: Duration,
}

impl SessionStore {
    pub fn new(conn: ConnectionManager, prefix: KeyPrefix, ttl: Duration) -> Self {
        // Redis refuses `SET .. EX 0`; a zero TTL would make every sign-in
        // fail instead of lasting a moment.
        let ttl = ttl.max(Duration::from_secs(1));
        Self { conn, prefix, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub async fn create(&self) -> Result<Session, redis::RedisError> {
        let session = Session {
            id: random_token(),
            csrf: random_token(),
        };
        let _: () = self
            .conn
            .clone()
            .set_ex(self.key(&session.id), &session.csrf, self.ttl.as_secs())
            .await?;
        Ok(session)
    }

    /// The live session with this cookie value, if any.
    pub async fn find(&self, id: &str) -> Result<Option<Session>, redis::RedisError> {
        if !well_formed(id) {
            return Ok(None);
        }
        let csrf: Option<String> = self.conn.clone().get(self.key(id)).await?;
        Ok(csrf.map(|csrf| Session {
            id: id.to_owned(),
            csrf,
        }))
    }

    pub async fn delete(&self, id: &str) -> Result<(), redis::RedisError> {
        if well_formed(id) {
            let _: () = self.conn.clone().del(self.key(id)).await?;
        }
        Ok(())
    }

    fn key(&self, id: &str) -> String {
        shared::keys::console_session(&self.prefix, &hex::encode(Sha256::digest(id.as_bytes())))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What [`random_token`] makes: anything else is not looked up at all.
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Compares a presented CSRF token with the session's in constant time
/// (for equal lengths; the length is no secret).
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// The session id from the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then_some(value.trim())
        })
}

/// `Set-Cookie` for a new session. `Secure` only in production: a local
/// trial over plain HTTP could not sign in otherwise.
pub fn set_cookie(session: &Session, ttl: Duration, secure: bool) -> String {
    cookie(&session.id, ttl.as_secs(), secure)
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> String {
    cookie("", 0, secure)
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={max_age}{secure}"
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[tokio::test]
    async fn sessions_live_in_redis_under_a_hash_until_deleted() {
        let redis = testkit::TestRedis::start();
        let conn = redis::Client::open(redis.url())
            .expect("a Redis URL")
            .get_connection_manager()
            .await
            .expect("connected");
        let prefix = KeyPrefix::parse("console_test").expect("a prefix");
        let store = SessionStore::new(conn.clone(), prefix, Duration::from_secs(60));
        let session = store.create().await.expect("created");
        assert_ne!(session.id, session.csrf);

        let found = store.find(&session.id).await.expect("read");
        assert_eq!(found.map(|s| s.csrf), Some(session.csrf.clone()));
        let keys: Vec<String> = conn.clone().keys("*").await.expect("keys");
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(
            !keys[0].contains(&session.id),
            "the raw id is not in the key"
        );
        let ttl: i64 = conn.clone().ttl(&keys[0]).await.expect("ttl");
        assert!((1..=60).contains(&ttl), "{ttl}");

        assert!(store.find(&"0".repeat(64)).await.expect("read").is_none());
        store.delete(&session.id).await.expect("deleted");
        assert!(store.find(&session.id).await.expect("read").is_none());
    }

    #[test]
    fn tokens_are_256_random_bits_in_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = random_token();
        assert!(tokens_match(&token, &token));
        assert!(!tokens_match(&token, &token[..63]));
        assert!(!tokens_match(&token, &token.to_uppercase()));
        assert!(!tokens_match(&token, ""));
        assert!(!tokens_match("", ""), "an empty token never matches");
    }

    #[test]
    fn malformed_ids_are_not_looked_up() {
        assert!(!well_formed(""));
        assert!(!well_formed("../../etc"));
        assert!(!well_formed(&"g".repeat(64)));
        assert!(!well_formed(&"a".repeat(65)));
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; other=1"));
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=b; supportrag_console=abc123 ; z=y"),
        );
        assert_eq!(cookie_value(&headers), Some("abc123"));
        assert_eq!(cookie_value(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_is_http_only_strict_and_scoped_to_the_console() {
        let session = Session {
            id: "abc".into(),
            csrf: "def".into(),
        };
        let local = set_cookie(&session, Duration::from_secs(60), false);
        assert_eq!(
            local,
            "supportrag_console=abc; HttpOnly; SameSite=Strict; Path=/console; Max-Age=60"
        );
        let production = set_cookie(&session, Duration::from_secs(60), true);
        assert!(production.ends_with("; Secure"), "{production}");
        assert!(clear_cookie(false).contains("supportrag_console=; "));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
