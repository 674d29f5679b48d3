//! The admin API under abuse (issue 11, items 11 and 12a): no body is read
//! for a caller without a valid key, the memory all request bodies hold at
//! once is bounded, and guessing keys is slowed per client address.
//!
//! Requests that must stay half-sent are written on raw sockets.

use std::time::Duration;

use crate::common::{TestApp, spawn_app, spawn_app_with};
use shared::config::ByteSize;
use testkit::{PATIENCE, TEST_ADMIN_KEY, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOCUMENTS: &str = "/api/v1/knowledge/documents";

/// A response as read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        assert!(body["meta"]["trace_id"].is_string(), "{body}");
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// An upload whose head and the first `sent` bytes of a `declared`-byte
/// JSON body are on their way; the rest never comes unless written.
async fn start_upload(
    app: &TestApp,
    key: Option<&str>,
    declared: Option<usize>,
    sent: usize,
) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let length = match declared {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    let head = format!(
        "POST {DOCUMENTS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}{length}\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    // JSON may start with any amount of whitespace.
    let start = vec![b' '; sent];
    let framed = match declared {
        Some(_) => start,
        None => [format!("{sent:x}\r\n").as_bytes(), &start, b"\r\n"].concat(),
    };
    stream.write_all(&framed).await.expect("first bytes");
    stream
}

/// The rest of a `declared`-byte body begun with `sent` spaces: a valid
/// upload, so it is answered 202.
async fn finish_upload(stream: &mut TcpStream, declared: usize, sent: usize) {
    let document = r#"{"name":"Budget","text":"Refunds take five days."}"#;
    let rest = declared - sent;
    let padding = " ".repeat(rest - document.len());
    stream
        .write_all(format!("{padding}{document}").as_bytes())
        .await
        .expect("rest of the body");
}

/// Reads one response (head and Content-Length body); `None` if none is
/// complete within `within`.
async fn response_within(stream: &mut TcpStream, within: Duration) -> Option<Raw> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(raw) = parse_response(&got) {
                return Some(raw);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return parse_response(&got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

fn parse_response(bytes: &[u8]) -> Option<Raw> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let raw = Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    let length: usize = raw.header("content-length")?.parse().ok()?;
    (raw.body.len() >= length).then_some(raw)
}

/// A document upload sent whole with the admin key: its status.
async fn upload_status(app: &TestApp, declared: usize) -> u16 {
    let mut stream = start_upload(app, Some(TEST_ADMIN_KEY), Some(declared), 0).await;
    finish_upload(&mut stream, declared, 0).await;
    response_within(&mut stream, PATIENCE)
        .await
        .expect("an answer")
        .status
}

#[tokio::test]
async fn an_upload_without_a_valid_key_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    // Well under the upload limit, so only the key can refuse it; the
    // body is never completed.
    let declared = 20 << 20;
    for (key, code) in [
        (None, "MISSING_CREDENTIALS"),
        (Some("wrong-key-wrong-key-wrong"), "INVALID_CREDENTIALS"),
    ] {
        for length in [Some(declared), None] {
            let mut stream = start_upload(&app, key, length, 1024).await;
            let raw = response_within(&mut stream, PATIENCE)
                .await
                .unwrap_or_else(|| {
                    panic!("{key:?} {length:?}: no answer before the body was complete")
                });
            assert_eq!(raw.status, 401, "{key:?} {length:?}: {raw:?}");
            assert_eq!(raw.error_code(), code);
        }
    }

    // With the key the same request is let through, and its body awaited.
    let mut stream = start_upload(&app, Some(TEST_ADMIN_KEY), Some(declared), 1024).await;
    let early = response_within(&mut stream, Duration::from_millis(500)).await;
    assert!(
        early.is_none(),
        "an authenticated upload was answered before its body: {early:?}"
    );
}

#[tokio::test]
async fn bodies_in_flight_beyond_the_budget_get_503_with_retry_after() {
    // Uploads of up to 96 KiB (a 192 KiB body with base64 and framing),
    // 300 KiB of bodies at once.
    let app = spawn_app_with(|s| {
        s.ingest.max_document_size = ByteSize(96 << 10);
        s.server.body_budget = ByteSize(300 << 10);
    })
    .await;
    let big = 120 << 10;

    // Unauthenticated uploads hold nothing: five of them, all refused, and
    // left open.
    let mut strangers = Vec::new();
    for _ in 0..5 {
        let mut stream = start_upload(&app, None, Some(big), 1024).await;
        let raw = response_within(&mut stream, PATIENCE).await.expect("401");
        assert_eq!(raw.status, 401);
        strangers.push(stream);
    }

    // Two authenticated uploads, each stalled after 1 KiB, hold 240 KiB.
    let mut first = start_upload(&app, Some(TEST_ADMIN_KEY), Some(big), 1024).await;
    let second = start_upload(&app, Some(TEST_ADMIN_KEY), Some(big), 1024).await;

    // So a third of 100 KiB does not fit; it is refused without being read
    // (once the server has taken the two above: until then it fits, and
    // is answered 202).
    let refused = wait_until(
        "a body beyond the budget to be refused",
        PATIENCE,
        || async {
            let mut stream = start_upload(&app, Some(TEST_ADMIN_KEY), Some(100 << 10), 0).await;
            let raw = response_within(&mut stream, Duration::from_millis(300)).await;
            match raw {
                Some(raw) if raw.status == 503 => Some(raw),
                Some(_) => None,
                None => {
                    finish_upload(&mut stream, 100 << 10, 0).await;
                    let _ = response_within(&mut stream, PATIENCE).await;
                    None
                }
            }
        },
    )
    .await;
    assert_eq!(refused.error_code(), "SERVICE_UNAVAILABLE", "{refused:?}");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {refused:?}"));
    assert!(retry_after >= 1);
    // A small admin request with no body still fits.
    let list = app.admin_get(DOCUMENTS).await;
    assert_eq!(list.status, reqwest::StatusCode::OK, "{}", list.body);

    // The stalled uploads complete and are accepted; what they held is
    // given back, so the third fits now.
    finish_upload(&mut first, big, 1024).await;
    let raw = response_within(&mut first, PATIENCE).await.expect("answer");
    assert_eq!(raw.status, 202, "{raw:?}");
    drop(second);
    wait_until("the budget to be given back", PATIENCE, || async {
        (upload_status(&app, 100 << 10).await == 202).then_some(())
    })
    .await;
    drop(strangers);
}

#[tokio::test]
async fn wrong_keys_past_the_limit_get_429_from_that_address_until_it_waits() {
    let app = spawn_app_with(|s| {
        s.auth.max_failed_attempts = 3;
        s.auth.failed_attempts_window = Duration::from_secs(3);
    })
    .await;
    let list = |client: &reqwest::Client, key: &str| {
        client
            .get(app.url("/api/v1/webhooks"))
            .bearer_auth(key.to_owned())
    };
    let wrong = "wrong-key-0123456789";

    for _ in 0..3 {
        let reply = app.send(list(&app.http, wrong)).await;
        assert_eq!(reply.error_code(), "INVALID_CREDENTIALS");
    }
    for key in [wrong, TEST_ADMIN_KEY] {
        let reply = app.send(list(&app.http, key)).await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.body
        );
        assert_eq!(reply.error_code(), "TOO_MANY_AUTH_FAILURES");
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
    }

    // Another address (loopback is a /8) is not held back.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let reply = app.send(list(&elsewhere, TEST_ADMIN_KEY)).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    let reply = app.send(list(&elsewhere, wrong)).await;
    assert_eq!(reply.error_code(), "INVALID_CREDENTIALS");

    // After the Retry-After, one more try.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = app.send(list(&app.http, TEST_ADMIN_KEY)).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
}
