//! The seed's Express verifier, run under `node`, as a receiver.
//!
//! README promises that receivers can check our signatures the way the
//! seed's JavaScript does: parse the body, `JSON.stringify` it again, and
//! HMAC `"<timestamp>.<that>"`. Only the real code under the real runtime
//! proves that promise, so `verifier.js` carries the seed's
//! `verifyWebhookSignature` and `/webhooks` handler verbatim; the only
//! additions are a port from the environment, the secrets from the
//! environment, a record of every answered request (`GET /received`) and an
//! optional `FAIL_FIRST=n`.
//!
//! Express is looked up in `$SUPPORTRAG_NODE_MODULES`, then in
//! `$HOME/.cache/supportrag-node/node_modules`; if it is in neither it is
//! installed there once with npm, under a file lock so that parallel test
//! processes do not run npm on top of each other.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::files::{create_log, tail};

const SCRIPT: &str = include_str!("verifier.js");
/// The seed's signature check in `verifier.js`, and what README
/// ("Rotating a webhook's secret") tells receivers built on it to put
/// there: the same `verifyWebhookSignature`, tried on `X-Webhook-Signature`
/// and then on each value of `X-Webhook-Signature-Next`.
const SEED_CHECK: &str = "        const isValid = verifyWebhookSignature(
            payload,
            signature,
            timestamp,
            WEBHOOK_SECRETS[webhookId]
        );";
const ROTATING_CHECK: &str = "        const candidates = [signature].concat(
            (req.headers['x-webhook-signature-next'] || '').split(',').filter(s => s)
        );
        const isValid = candidates.some(candidate => {
            try {
                return verifyWebhookSignature(
                    payload,
                    candidate.trim(),
                    timestamp,
                    WEBHOOK_SECRETS[webhookId]
                );
            } catch (err) {
                return false;
            }
        });";
const START_WITHIN: Duration = Duration::from_secs(30);

/// A running `node verifier.js`; killed when dropped.
pub struct JsVerifier {
    child: Child,
    port: u16,
    dir: TempDir,
    http: reqwest::Client,
}

/// Starts the verifier knowing these `(webhook_id, secret)` pairs.
pub fn spawn_js_verifier(secrets: &[(&str, &str)]) -> JsVerifier {
    spawn_with(SCRIPT, secrets, 0)
}

/// As [`spawn_js_verifier`], with the seed's verifier changed as README
/// tells receivers to change it for secret rotation: it also tries each
/// signature of `X-Webhook-Signature-Next`.
pub fn spawn_js_verifier_rotating(secrets: &[(&str, &str)]) -> JsVerifier {
    assert!(
        SCRIPT.contains(SEED_CHECK),
        "testkit: verifier.js no longer holds the seed's signature check"
    );
    spawn_with(&SCRIPT.replacen(SEED_CHECK, ROTATING_CHECK, 1), secrets, 0)
}

/// As [`spawn_js_verifier`], answering 500 to the first `fail_first`
/// webhook requests.
pub fn spawn_js_verifier_failing_first(secrets: &[(&str, &str)], fail_first: usize) -> JsVerifier {
    spawn_with(SCRIPT, secrets, fail_first)
}

fn spawn_with(script_text: &str, secrets: &[(&str, &str)], fail_first: usize) -> JsVerifier {
    let node_modules = node_modules_with_express();
    let dir = tempfile::Builder::new()
        .prefix("supportrag-verifier-")
        .tempdir()
        .expect("testkit: could not create a temporary directory for the verifier");
    let script = dir.path().join("verifier.js");
    std::fs::write(&script, script_text).expect("testkit: could not write verifier.js");
    let secrets: HashMap<&str, &str> = secrets.iter().copied().collect();
    let secrets = serde_json::to_string(&secrets).expect("testkit: a string map always serializes");
    let stderr = create_log(&dir.path().join("node.stderr.log"));
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(dir.path())
        .env("NODE_PATH", &node_modules)
        .env("WEBHOOK_SECRETS", secrets)
        .env("PORT", "0")
        .env("FAIL_FIRST", fail_first.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("testkit: could not run node (is it on PATH?): {e}"));

    // The first stdout line is the port; the rest (the seed's console.log of
    // every event) is drained into a file so node never blocks on a full pipe.
    let stdout = child.stdout.take().expect("testkit: stdout was piped");
    let stdout_log = dir.path().join("node.stdout.log");
    let (port_tx, port_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = port_tx.send(first);
        }
        let mut log = create_log(&stdout_log);
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    let port = match port_rx.recv_timeout(START_WITHIN) {
        Ok(line) => line.trim().parse::<u16>().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("testkit: the verifier printed {line:?} instead of its port")
        }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "testkit: the verifier did not print its port within {START_WITHIN:?}; node's stderr:\n{}",
                tail(&dir.path().join("node.stderr.log"), 20)
            );
        }
    };
    JsVerifier {
        child,
        port,
        dir,
        http: reqwest::Client::new(),
    }
}

impl JsVerifier {
    /// The URL to register as the webhook's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks", self.port)
    }

    /// Every webhook request answered so far, in order: `{verified, status,
    /// payload, headers}` (headers with lowercase names, as node gives them).
    /// Verified ones have `verified: true, status: 200`; the seed's 401s
    /// (unknown webhook, bad signature) have `verified: false, status: 401`.
    pub async fn received(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/received", self.port);
        let response =
            self.http.get(&url).send().await.unwrap_or_else(|e| {
                panic!("testkit: GET {url} failed: {e}\n{}", self.stderr_tail())
            });
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("testkit: reading GET {url}'s answer failed: {e}"));
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            other => panic!("testkit: GET {url} did not answer a JSON array: {other:?}"),
        }
    }

    /// Requests that passed the seed's signature check.
    pub async fn verified(&self) -> Vec<Value> {
        self.received()
            .await
            .into_iter()
            .filter(|r| r["verified"] == Value::Bool(true))
            .collect()
    }

    /// Requests the seed's handler refused with 401.
    pub async fn rejected(&self) -> Vec<Value> {
        self.received()
            .await
            .into_iter()
            .filter(|r| r["status"] == 401)
            .collect()
    }

    /// Waits until at least `count` requests were verified; panics after
    /// `timeout`, showing what arrived (a 401 there means a bad signature).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let all = self.received().await;
            let verified: Vec<Value> = all
                .iter()
                .filter(|r| r["verified"] == Value::Bool(true))
                .cloned()
                .collect();
            if verified.len() >= count {
                return verified;
            }
            if started.elapsed() >= timeout {
                let statuses: Vec<&Value> = all.iter().map(|r| &r["status"]).collect();
                panic!(
                    "JS verifier: expected {count} verified request(s) within {timeout:?}, got {}; \
                     statuses of everything received: {statuses:?}",
                    verified.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr_tail(&self) -> String {
        tail(&self.dir.path().join("node.stderr.log"), 20)
    }
}

impl Drop for JsVerifier {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- verifier (node) stderr ---\n{}", self.stderr_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `node_modules` directory that holds express, installing it if needed.
fn node_modules_with_express() -> PathBuf {
    if let Some(dir) = std::env::var_os("SUPPORTRAG_NODE_MODULES").map(PathBuf::from)
        && has_express(&dir)
    {
        return dir;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let prefix = home.join(".cache").join("supportrag-node");
    let node_modules = prefix.join("node_modules");
    if has_express(&node_modules) {
        return node_modules;
    }
    std::fs::create_dir_all(&prefix)
        .unwrap_or_else(|e| panic!("testkit: could not create {}: {e}", prefix.display()));
    let _lock = FileLock::acquire(&prefix.join(".install.lock"));
    // Another test process may have installed it while we waited.
    if !has_express(&node_modules) {
        let output = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("express@4")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("testkit: could not run npm (is it on PATH?): {e}"));
        assert!(
            output.status.success() && has_express(&node_modules),
            "testkit: `npm install express@4` into {} failed ({}):\n{}\n{}",
            prefix.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    node_modules
}

fn has_express(node_modules: &Path) -> bool {
    node_modules.join("express").join("package.json").is_file()
}

/// An exclusive `flock(2)` held until dropped (closing the file releases
/// it, also when the process dies).
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| {
                panic!("testkit: could not open lock file {}: {e}", path.display())
            });
        // SAFETY: flock on a descriptor we own for the lifetime of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "testkit: flock({}) failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self { _file: file }
    }
}
