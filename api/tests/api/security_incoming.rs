//! Incoming abuse (issue 5 item 9): what `api/tests/api/incoming.rs` does not
//! already cover — signature header *values* in other spellings, malformed
//! timestamps, a chunked body one byte over the limit — and slow or idle
//! clients: a slowloris head, a body that never finishes, and 5,000 idle
//! connections while normal requests are still served.
//!
//! (Already in `incoming.rs`: replay outside the window, a signature over
//! another body or with another secret, a short signature, header *names*
//! in any case, a body one byte over the limit with Content-Length.)

use std::time::Duration;

use crate::common::{Reply, TestApp, spawn_app, spawn_app_with};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use shared::events::catalog::EventFilter;
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};
use testkit::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const SECRET: &str = "abuse_test_secret_0123456789";
const MESSAGE: &str = "/api/v1/webhooks/incoming/message";

fn message(external_id: &str) -> String {
    json!({
        "event_type": "message.received",
        "data": {"user_id": "U1", "message": "Hello", "thread_id": "T1",
                 "external_message_id": external_id}
    })
    .to_string()
}

async fn integrator(app: &TestApp) -> String {
    testkit::register_webhook(
        &app.services,
        "http://127.0.0.1:9/outbound",
        vec![EventFilter::All],
        SECRET,
    )
    .await
    .webhook_id
    .to_string()
}

fn secret() -> Secret {
    Secret::parse(SECRET).expect("test secret")
}

async fn post_signed(
    app: &TestApp,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
) -> Reply {
    app.send(
        app.http
            .post(app.url(MESSAGE))
            .header("content-type", "application/json")
            .header("X-Webhook-ID", id)
            .header("X-Webhook-Timestamp", timestamp)
            .header("X-Webhook-Signature", signature)
            .body(body.to_owned()),
    )
    .await
}

async fn queued(app: &TestApp) -> u64 {
    let d = app.services.queue.depth("chat").await.expect("depth");
    d.ready + d.scheduled + d.in_flight
}

#[tokio::test]
async fn signature_values_in_other_spellings_and_malformed_timestamps() {
    let app = spawn_app().await;
    let id = integrator(&app).await;
    let now = Utc::now().timestamp();

    // Accepted: the hex digest and the prefix in any case, padding spaces.
    let good = |body: &str| sign_incoming_timestamped(&secret(), now, body.as_bytes());
    type Spelling = fn(String) -> String;
    let spellings: Vec<(&str, Spelling)> = vec![
        ("uppercase hex", |s| {
            format!("sha256={}", s.trim_start_matches("sha256=").to_uppercase())
        }),
        ("uppercase prefix", |s| s.replacen("sha256=", "SHA256=", 1)),
        ("surrounding spaces", |s| format!("  {s}  ")),
    ];
    for (i, (case, spell)) in spellings.into_iter().enumerate() {
        let body = message(&format!("ok{i}"));
        let reply = post_signed(&app, &id, &now.to_string(), &spell(good(&body)), &body).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{case}: {}", reply.body);
    }
    assert_eq!(queued(&app).await, 3);

    // Refused, nothing queued: digests of the wrong length or alphabet.
    let body = message("bad");
    let digest = good(&body).trim_start_matches("sha256=").to_owned();
    let bad_signatures = [
        ("one hex digit too many", format!("sha256={digest}0")),
        ("one hex digit too few", format!("sha256={}", &digest[..63])),
        ("twice as long", format!("sha256={digest}{digest}")),
        (
            "non-hex of the right length",
            format!("sha256={}", "g".repeat(64)),
        ),
        ("prefix only", "sha256=".to_owned()),
        ("another algorithm", format!("sha1={digest}")),
        ("base64 instead of hex", "sha256=q83vEjRWeJA=".to_owned()),
        (
            "two signatures in one header",
            format!("sha256={digest},sha256={digest}"),
        ),
    ];
    for (case, signature) in bad_signatures {
        let reply = post_signed(&app, &id, &now.to_string(), &signature, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "INVALID_SIGNATURE", "{case}");
    }

    // Timestamps that are not plain unix seconds, each signed over exactly
    // that text, so only the timestamp rule can refuse them.
    for (case, timestamp, code) in [
        ("fractional", format!("{now}.5"), "MISSING_SIGNATURE"),
        ("exponent", "1.7e9".to_owned(), "MISSING_SIGNATURE"),
        ("milliseconds", format!("{}", now * 1000), "STALE_TIMESTAMP"),
        (
            "beyond i64",
            "99999999999999999999".to_owned(),
            "MISSING_SIGNATURE",
        ),
        ("negative", "-1".to_owned(), "STALE_TIMESTAMP"),
        (
            "an RFC 3339 date",
            Utc::now().to_rfc3339(),
            "MISSING_SIGNATURE",
        ),
    ] {
        let signature = format!(
            "sha256={}",
            hex_hmac(format!("{timestamp}.{body}").as_bytes())
        );
        let reply = post_signed(&app, &id, &timestamp, &signature, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), code, "{case}: {}", reply.body);
    }
    assert_eq!(queued(&app).await, 3, "nothing refused was queued");
}

/// HMAC-SHA256(SECRET, message) in hex, computed independently of
/// `shared::webhooks::signing` (via the body-only signer, which MACs exactly the bytes
/// given).
fn hex_hmac(message: &[u8]) -> String {
    shared::webhooks::signing::sign_incoming_body_only(&secret(), message)
        .trim_start_matches("sha256=")
        .to_owned()
}

/// Reads until the server closes the connection; returns what it sent.
/// Panics if that takes longer than `PATIENCE` (a hang).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_chunked_body_one_byte_over_the_limit_is_413() {
    let app = spawn_app().await;
    let id = integrator(&app).await;
    let limit = app.services.settings.server.body_limit.0;
    // Valid JSON of limit + 1 bytes, signed, sent without Content-Length.
    let mut body = message("chunked");
    body.pop();
    let pad = limit + 1 - body.len() - r#","pad":"""#.len() - 1;
    body.push_str(&format!(r#","pad":"{}"}}"#, "x".repeat(pad)));
    assert_eq!(body.len(), limit + 1);
    let now = Utc::now().timestamp();
    let signature = sign_incoming_timestamped(&secret(), now, body.as_bytes());

    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST {MESSAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nX-Webhook-ID: {id}\r\nX-Webhook-Timestamp: {now}\r\n\
         X-Webhook-Signature: {signature}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for chunk in body.as_bytes().chunks(8192) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break; // the server may answer and close before the end
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("PAYLOAD_TOO_LARGE"), "{response}");
    assert_eq!(queued(&app).await, 0);
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_while_it_is_still_trickling() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(format!("POST {MESSAGE} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .expect("request line");

    // One header byte every 50 ms, never the blank line that ends the head,
    // for up to PATIENCE: the server must hang up on its own deadline, not
    // wait for us (each byte must not restart its clock).
    let trickle = async {
        let header = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in header.iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                return true; // the server closed the connection
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut probe = [0u8; 1024];
            match tokio::time::timeout(Duration::ZERO, stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        false
    };
    let closed = tokio::time::timeout(PATIENCE, trickle).await;
    assert_eq!(
        closed,
        Ok(true),
        "a client trickling its headers held the connection for {PATIENCE:?}"
    );

    // And the server still serves everyone else.
    let health = app.send(app.http.get(app.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_and_a_closed_connection() {
    let app = spawn_app_with(|s| s.server.body_read_timeout = Duration::from_millis(500)).await;
    let id = integrator(&app).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST {MESSAGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nX-Webhook-ID: {id}\r\n\r\n{{\"event_type\":"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    // ... and nothing more of the 1000 bytes promised.
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("REQUEST_TIMEOUT"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert_eq!(queued(&app).await, 0);
}

/// Raises this process's open-file limit to its hard limit (the test runs
/// both ends of every connection, so it needs two descriptors each).
fn raise_open_file_limit(need: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit failed");
    if limit.rlim_cur < need {
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max.max(need),
            rlim_max: limit.rlim_max.max(need),
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
            let capped = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) };
        }
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    }
    assert!(
        limit.rlim_cur >= need,
        "RLIMIT_NOFILE is {} and cannot be raised to {need}; raise the hard limit (ulimit -Hn)",
        limit.rlim_cur
    );
}

const IDLE: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_stop_normal_requests_and_are_closed() {
    raise_open_file_limit(2 * IDLE as u64 + 1_000);
    // Long enough that the idle crowd is still there while we make our
    // requests; short enough that the test does not wait long for them to go.
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(5)).await;
    let id = integrator(&app).await;

    // 5,000 connections that never send a byte, opened 250 at a time.
    let mut idle = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        let mut batch = JoinSet::new();
        for _ in 0..250 {
            let addr = app.addr;
            batch.spawn(async move { TcpStream::connect(addr).await });
        }
        while let Some(connected) = batch.join_next().await {
            idle.push(
                connected
                    .expect("connect task")
                    .expect("the API accepts connection after connection"),
            );
        }
    }

    // Normal traffic still gets through: health, an admin call, and a signed
    // incoming message queued.
    let health = app.send(app.http.get(app.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let listed = app.admin_get("/api/v1/webhooks").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let body = message("during-idle-crowd");
    let now = Utc::now().timestamp();
    let reply = post_signed(
        &app,
        &id,
        &now.to_string(),
        &sign_incoming_timestamped(&secret(), now, body.as_bytes()),
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    // Every idle connection is closed by the server (header timeout), none
    // is left for the client to give up on.
    let mut closing = JoinSet::new();
    for mut stream in idle {
        closing.spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 or similar before closing is fine
                }
            }
        });
    }
    let all_closed = tokio::time::timeout(PATIENCE, async {
        let mut closed = 0;
        while let Some(done) = closing.join_next().await {
            done.expect("reader task");
            closed += 1;
        }
        closed
    })
    .await;
    assert_eq!(
        all_closed,
        Ok(IDLE),
        "idle connections the server never closed"
    );

    // And it keeps serving afterwards — on a new connection: the client's
    // pooled one from before went quiet past the header timeout too, and
    // the server has closed it.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let health = app.send(fresh.get(app.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn a_kept_alive_connection_that_goes_quiet_is_closed_too() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    // The answer comes, the connection stays open for the next request ...
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"ok\"") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // ... and when no next request starts, the server closes it.
    let rest = read_until_closed(&mut stream).await;
    assert!(!rest.contains("HTTP/1.1 200"), "{rest}");
}
