//! Incoming signature profiles, signed by each provider's own library: a
//! webhook set to `standard_webhooks`, `slack`, `stripe` or `github` accepts
//! a request signed by that provider's official package (run for real,
//! Python or node), and refuses it under a wrong secret, over a tampered
//! body, and (where the scheme has a timestamp) when it is stale.
//!
//! The libraries are pinned and installed by `scripts/signers.sh` (which
//! `scripts/test.sh` runs) under `$SUPPORTRAG_SIGNERS`, default
//! `~/.cache/supportrag-signers`. A missing library fails the test with
//! that instruction rather than skipping it: a profile nobody signed for
//! real is not tested.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{Reply, TestApp, spawn_app};
use base64::Engine as _;
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MESSAGE: &str = "/api/v1/webhooks/incoming/message";
const DOCUMENT: &str = "/api/v1/webhooks/incoming/document";
/// Well outside the default ±5 min window.
const STALE_SECS: i64 = 3600;

/// Signs with `standardwebhooks` and `slack_sdk`; reads a JSON request on
/// stdin, writes the headers to send as a JSON object.
const PYTHON_SIGNER: &str = r#"
import json, sys
from datetime import datetime, timezone
req = json.load(sys.stdin)
profile, secret, body, ts = req["profile"], req["secret"], req["body"], req["timestamp"]
if profile == "standard_webhooks":
    from standardwebhooks.webhooks import Webhook
    msg_id = req["msg_id"]
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
    out = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
elif profile == "slack":
    from slack_sdk.signature import SignatureVerifier
    sig = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    out = {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}
else:
    sys.exit("unknown profile " + profile)
print(json.dumps(out))
"#;

/// Signs with `stripe` and `@octokit/webhooks-methods`, same protocol.
const NODE_SIGNER: &str = r#"
const { createRequire } = require('module');
const path = require('path');
const { pathToFileURL } = require('url');
const modules = process.env.SIGNERS_NODE_MODULES;
const load = createRequire(path.join(modules, 'noop.js'));
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', async () => {
  const req = JSON.parse(input);
  let out;
  if (req.profile === 'stripe') {
    const stripe = load('stripe')('sk_test_unused');
    out = { 'Stripe-Signature': stripe.webhooks.generateTestHeaderString({
      payload: req.body, secret: req.secret, timestamp: req.timestamp }) };
  } else if (req.profile === 'github') {
    // ESM only, and `require` cannot resolve it: import its node entry.
    const dir = path.join(modules, '@octokit', 'webhooks-methods');
    const entry = load(path.join(dir, 'package.json')).exports['.'].node.import;
    const methods = await import(pathToFileURL(path.join(dir, entry)).href);
    out = { 'X-Hub-Signature-256': await methods.sign(req.secret, req.body) };
  } else {
    throw new Error('unknown profile ' + req.profile);
  }
  console.log(JSON.stringify(out));
});
"#;

fn signers_dir() -> PathBuf {
    std::env::var_os("SUPPORTRAG_SIGNERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home)
                .join(".cache")
                .join("supportrag-signers")
        })
}

/// Fails with the script to run when a library is not installed.
fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} missing): run scripts/signers.sh \
         (scripts/test.sh runs it), or set SUPPORTRAG_SIGNERS to where it is",
        path.display()
    );
    path
}

/// The provider libraries that sign for `profile`, run once.
fn library_headers(
    profile: &str,
    secret: &str,
    body: &str,
    timestamp: i64,
) -> Vec<(String, String)> {
    let dir = signers_dir();
    let request = json!({
        "profile": profile,
        "secret": secret,
        "body": body,
        "timestamp": timestamp,
        "msg_id": format!("msg_{}", ulid::Ulid::generate()),
    });
    let mut command = match profile {
        "standard_webhooks" | "slack" => {
            let python = require(
                dir.join("py/bin/python"),
                "the Python venv with standardwebhooks and slack_sdk",
            );
            let mut c = Command::new(python);
            c.args(["-c", PYTHON_SIGNER]);
            c
        }
        "stripe" | "github" => {
            let modules = dir.join("node_modules");
            let package = if profile == "stripe" {
                "stripe"
            } else {
                "@octokit/webhooks-methods"
            };
            require(
                modules.join(package).join("package.json"),
                &format!("npm package {package}"),
            );
            let mut c = Command::new("node");
            c.args(["-e", NODE_SIGNER])
                .env("SIGNERS_NODE_MODULES", &modules);
            c
        }
        other => panic!("no library signs for {other}"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("could not run the {profile} signer (is python3/node on PATH?): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(request.to_string().as_bytes())
        .expect("request written to the signer");
    let out = child.wait_with_output().expect("signer ran");
    assert!(
        out.status.success(),
        "{profile} signer failed (a missing module? run scripts/signers.sh, \
         which scripts/test.sh runs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: serde_json::Map<String, Value> =
        serde_json::from_slice(&out.stdout).expect("the signer prints a JSON object");
    headers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().expect("header values are strings").to_owned()))
        .collect()
}

fn message_body(external_id: &str, text: &str) -> String {
    json!({
        "event_type": "message.received",
        "timestamp": "2025-01-09T12:00:00Z",
        "source": "partner",
        "data": {
            "user_id": "U1",
            "user_name": "Jöhn Doe",
            "message": text,
            "thread_id": "T1",
            "external_message_id": external_id
        }
    })
    .to_string()
}

/// One integration registered through the API with a profile.
struct Sender {
    id: String,
    profile: &'static str,
    secret: String,
}

impl Sender {
    async fn register(app: &TestApp, profile: &'static str, secret: &str) -> Self {
        let reply = app
            .admin_json(
                Method::POST,
                "/api/v1/webhooks/register",
                &json!({"name": profile, "url": "http://127.0.0.1:9/out", "events": ["*"],
                        "secret": secret, "signature_profile": profile}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.data()["signature_profile"], profile);
        Self {
            id: reply.data()["webhook_id"]
                .as_str()
                .expect("webhook_id")
                .to_owned(),
            profile,
            secret: secret.to_owned(),
        }
    }

    /// POSTs `sent` with headers the library made for `signed`, under
    /// `secret`, at `timestamp`. The webhook is named by `?webhook_id=`, as
    /// a provider that cannot add headers would.
    async fn post(
        &self,
        app: &TestApp,
        path: &str,
        signed: &str,
        sent: &str,
        secret: &str,
        timestamp: i64,
    ) -> Reply {
        let headers = library_headers(self.profile, secret, signed, timestamp);
        let mut request = app
            .http
            .post(app.url(&format!("{path}?webhook_id={}", self.id)))
            .header("content-type", "application/json")
            .body(sent.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        app.send(request).await
    }

    /// Accepted when signed right; refused under a wrong secret, over a
    /// tampered body and, when `stale` is expected, an hour old.
    async fn check(&self, app: &TestApp, wrong_secret: &str, has_timestamp: bool) {
        let now = Utc::now().timestamp();
        let body = message_body(&format!("{}-1", self.profile), "Как сбросить пароль?");
        let ok = self
            .post(app, MESSAGE, &body, &body, &self.secret, now)
            .await;
        assert_eq!(
            ok.status,
            StatusCode::ACCEPTED,
            "{}: {}",
            self.profile,
            ok.body
        );
        assert_eq!(ok.data()["status"], "accepted");

        let fresh = message_body(&format!("{}-2", self.profile), "Hello");
        let wrong = self
            .post(app, MESSAGE, &fresh, &fresh, wrong_secret, now)
            .await;
        assert_eq!(
            wrong.status,
            StatusCode::UNAUTHORIZED,
            "{}: {}",
            self.profile,
            wrong.body
        );
        assert_eq!(wrong.error_code(), "INVALID_SIGNATURE", "{}", self.profile);

        let tampered = fresh.replace("Hello", "Hellp");
        let reply = self
            .post(app, MESSAGE, &fresh, &tampered, &self.secret, now)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{}: {}",
            self.profile,
            reply.body
        );
        assert_eq!(reply.error_code(), "INVALID_SIGNATURE", "{}", self.profile);

        let stale = self
            .post(app, MESSAGE, &fresh, &fresh, &self.secret, now - STALE_SECS)
            .await;
        if has_timestamp {
            assert_eq!(
                stale.status,
                StatusCode::UNAUTHORIZED,
                "{}: {}",
                self.profile,
                stale.body
            );
            assert_eq!(stale.error_code(), "STALE_TIMESTAMP", "{}", self.profile);
        } else {
            // No timestamp in the scheme: the signature is still good, and
            // a replay is caught by the message id's idempotency instead.
            assert_eq!(
                stale.status,
                StatusCode::ACCEPTED,
                "{}: {}",
                self.profile,
                stale.body
            );
            let replay = self
                .post(app, MESSAGE, &fresh, &fresh, &self.secret, now)
                .await;
            assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
            assert_eq!(replay.data()["status"], "duplicate");
        }

        // This system's own scheme is not accepted in its place.
        let seed_secret = shared::webhooks::signing::Secret::parse(&self.secret).expect("secret");
        let seed = shared::webhooks::signing::sign_incoming_timestamped(
            &seed_secret,
            now,
            fresh.as_bytes(),
        );
        let reply = app
            .send(
                app.http
                    .post(app.url(MESSAGE))
                    .header("content-type", "application/json")
                    .header("X-Webhook-ID", &self.id)
                    .header("X-Webhook-Timestamp", now.to_string())
                    .header("X-Webhook-Signature", seed)
                    .body(fresh.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{}: {}",
            self.profile,
            reply.body
        );
        assert_eq!(reply.error_code(), "MISSING_SIGNATURE", "{}", self.profile);
    }
}

fn whsec(bytes: &[u8]) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test]
async fn standard_webhooks_library_signatures_are_accepted_and_forgeries_refused() {
    let app = spawn_app().await;
    let sender = Sender::register(&app, "standard_webhooks", &whsec(&[7u8; 32])).await;
    sender.check(&app, &whsec(&[8u8; 32]), true).await;
}

#[tokio::test]
async fn slack_sdk_signatures_are_accepted_and_forgeries_refused() {
    let app = spawn_app().await;
    let sender = Sender::register(&app, "slack", "8f742231b10e8888abcd99yyyzzz85a5").await;
    sender
        .check(&app, "0000000000e8888abcd99yyyzzz85a5", true)
        .await;
}

#[tokio::test]
async fn stripe_library_signatures_are_accepted_and_forgeries_refused() {
    let app = spawn_app().await;
    let sender = Sender::register(&app, "stripe", "whsec_stripe_endpoint_secret_01").await;
    sender
        .check(&app, "whsec_stripe_endpoint_secret_02", true)
        .await;
}

#[tokio::test]
async fn octokit_signatures_are_accepted_and_forgeries_refused() {
    let app = spawn_app().await;
    let sender = Sender::register(&app, "github", "It's a Secret to Everybody").await;
    sender.check(&app, "It's a Secret to Somebody", false).await;
}

#[tokio::test]
async fn a_document_signed_by_a_provider_library_is_accepted() {
    let app = spawn_app().await;
    let sender = Sender::register(&app, "stripe", "whsec_stripe_endpoint_secret_03").await;
    let body = json!({
        "event_type": "document.upload",
        "data": {"document_url": "https://docs.example.com/policy.pdf",
                 "document_format": "pdf", "external_document_id": "ext_1"}
    })
    .to_string();
    let now = Utc::now().timestamp();
    let reply = sender
        .post(&app, DOCUMENT, &body, &body, &sender.secret, now)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

#[tokio::test]
async fn the_profile_is_validated_shown_and_changed_by_patch() {
    let app = spawn_app().await;
    let id = app
        .register(
            "http://127.0.0.1:9/out",
            &["*"],
            "a-secret-of-enough-length",
        )
        .await;
    let path = format!("/api/v1/webhooks/{id}");
    assert_eq!(
        app.admin_get(&path).await.data()["signature_profile"],
        "seed"
    );

    let refused = app
        .admin_json(
            Method::POST,
            "/api/v1/webhooks/register",
            &json!({"name": "x", "url": "http://127.0.0.1:9/", "events": ["*"],
                    "secret": "a-secret-of-enough-length", "signature_profile": "paypal"}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(refused.error_code(), "VALIDATION_FAILED");
    assert_eq!(
        refused.body["error"]["details"]["field"],
        "signature_profile"
    );

    let patched = app
        .admin_json(
            Method::PATCH,
            &path,
            &json!({"signature_profile": "github"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.data()["signature_profile"], "github");
    let bad = app
        .admin_json(Method::PATCH, &path, &json!({"signature_profile": 3}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(
        app.admin_get(&path).await.data()["signature_profile"],
        "github"
    );

    // The OpenAPI document lists the profiles.
    let doc = app
        .send(app.http.get(app.url("/api/v1/openapi.json")))
        .await;
    let schema = &doc.body["components"]["schemas"]["SignatureProfile"];
    assert_eq!(
        schema["enum"],
        json!(["seed", "standard_webhooks", "slack", "stripe", "github"]),
        "{schema}"
    );
}
