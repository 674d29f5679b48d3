//! Test support for Support RAG: everything a test needs to run the real
//! thing against real services, so tests read as scenarios
//! (given / when / then) instead of set-up code.
//!
//! - [`TestRedis`]: a private `redis-server` per test (never the one on
//!   6379), killable and restartable.
//! - [`test_settings`]: the shipped defaults, pointed at that Redis, with
//!   short retries and timeouts.
//! - [`spawn_receiver`]: an HTTP receiver that records raw requests and
//!   answers as told (fine, failing, slow, hanging).
//! - [`spawn_js_verifier`]: the seed's Express verifier under `node`, the
//!   judge of whether receivers can check our signatures.
//! - [`spawn_worker`]: the worker in-process (same `startup::run` as the
//!   binary); [`WorkerProcess`]: the binary itself, for kill and signal
//!   tests.
//! - [`spawn_file_server`]: documents to ingest, fine and hostile;
//!   [`documents`]: builders for real PDFs, DOCX files and bombs.
//! - [`fakes`]: an OpenAI-compatible server and a Qdrant that speak just
//!   enough of those protocols for the pluggable providers.
//! - [`wait_until`]: bounded polling with a clear failure message, because
//!   tests here never assert on wall-clock durations.

pub mod documents;
pub mod fakes;
mod file_server;
mod files;
pub mod processes;
pub mod receiver;
pub mod redis;
pub mod replica;
pub mod settings;
pub mod verifier;

use std::future::Future;
use std::time::{Duration, Instant};

use shared::services::Services;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use file_server::{FileServer, Served, spawn_file_server};
pub use processes::{WorkerProcess, settings_env};
pub use receiver::{Behaviour, Receiver, Recorded, spawn_receiver};
pub use redis::{RedisTls, TestRedis};
pub use replica::TestReplica;
pub use settings::{TEST_ADMIN_KEY, test_settings};
pub use verifier::{
    JsVerifier, spawn_js_verifier, spawn_js_verifier_failing_first, spawn_js_verifier_rotating,
};

/// The generous bound tests wait for something that should take
/// milliseconds; only a real hang should ever reach it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A worker running in this process; stopped when [`WorkerHandle::shutdown`]
/// is awaited, or cancelled (without waiting) when dropped.
pub struct WorkerHandle {
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Runs the worker (what the binary runs) in a Tokio task; documents are
/// parsed by the worker binary's `parse-document` command, as in
/// production.
pub async fn spawn_worker(services: Services) -> WorkerHandle {
    let stop = CancellationToken::new();
    let parser = worker::ingest::ParserCommand {
        program: worker_binary(),
        args: vec![worker::startup::PARSE_COMMAND.to_owned()],
    };
    let task = tokio::spawn(worker::startup::run_with_parser(
        services,
        stop.clone(),
        parser,
    ));
    WorkerHandle {
        stop,
        task: Some(task),
    }
}

/// The `supportrag-worker` binary cargo built next to this test binary
/// (`target/<profile>/`, one level above `deps/`): tests of other crates
/// cannot name it with `env!("CARGO_BIN_EXE_…")`.
pub fn worker_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("testkit: current_exe");
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("supportrag-worker"))
        .collect::<Vec<_>>();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "testkit: supportrag-worker not built (looked at {candidates:?}); \
                 run the tests with `cargo nextest run --workspace`"
            )
        })
}

impl WorkerHandle {
    /// Asks the worker to stop and waits until it has (finished or handed
    /// back its jobs). Panics if it fails or takes longer than [`PATIENCE`].
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else { return };
        match tokio::time::timeout(PATIENCE, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("worker ended with an error: {e:#}"),
            Ok(Err(e)) => panic!("worker task panicked or was cancelled: {e}"),
            Err(_) => panic!("worker did not stop within {PATIENCE:?} of being asked to"),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Registers a webhook straight in the registry (the API's checks are
/// tested on their own), active, subscribed to `events`.
pub async fn register_webhook(
    services: &Services,
    url: &str,
    events: Vec<shared::events::catalog::EventFilter>,
    secret: &str,
) -> shared::webhooks::registry::Webhook {
    services
        .webhooks
        .insert(shared::webhooks::registry::WebhookDraft::new(
            "test receiver",
            url,
            events,
            shared::webhooks::signing::Secret::parse(secret)
                .expect("testkit: test secrets are long enough"),
        ))
        .await
        .expect("testkit: register webhook")
}

/// Polls `check` every 20 ms until it returns `Some`, and returns that;
/// panics after `timeout` with `what` (what was being waited for).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
