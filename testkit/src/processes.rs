//! The real `supportrag-worker` binary as a child process, for tests that
//! need what only a process has: being SIGKILLed mid-job, or handling
//! SIGTERM and reporting an exit status.
//!
//! Settings reach the child the way they reach it in production, as
//! `SUPPORTRAG__SECTION__KEY` variables ([`settings_env`]); every other
//! `SUPPORTRAG…` variable of the test's own environment is removed so the
//! child sees only what the test chose. Its output goes to a log file whose
//! end is printed if the test panics while the process handle is alive.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shared::config::Settings;
use tempfile::TempDir;

use crate::files::{create_log, tail};

/// The environment that makes a worker process use `settings`' key fields:
/// Redis URL and prefix, SSRF allow-list, retry schedule and jitter,
/// timeouts, visibility timeout, poll interval, shutdown timeout,
/// concurrency, the ingestion and chat settings tests change, and log
/// level (JSON logs).
pub fn settings_env(settings: &Settings) -> Vec<(String, String)> {
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let list = |items: Vec<String>| items.join(",");
    let pairs = [
        ("REDIS__URL", settings.redis.url.as_str().to_owned()),
        ("REDIS__KEY_PREFIX", settings.redis.key_prefix.to_string()),
        (
            "SECURITY__ALLOWED_CIDRS",
            list(
                settings
                    .security
                    .allowed_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
        ),
        (
            "DELIVERY__RETRY_SCHEDULE",
            list(
                settings
                    .delivery
                    .retry_schedule
                    .iter()
                    .copied()
                    .map(duration)
                    .collect(),
            ),
        ),
        (
            "DELIVERY__RETRY_JITTER",
            settings.delivery.retry_jitter.to_string(),
        ),
        ("DELIVERY__TIMEOUT", duration(settings.delivery.timeout)),
        (
            "DELIVERY__CONCURRENCY",
            settings.delivery.concurrency.to_string(),
        ),
        (
            "DELIVERY__PER_WEBHOOK_CONCURRENCY",
            settings.delivery.per_webhook_concurrency.to_string(),
        ),
        (
            "QUEUE__VISIBILITY_TIMEOUT",
            duration(settings.queue.visibility_timeout),
        ),
        (
            "QUEUE__POLL_INTERVAL",
            duration(settings.queue.poll_interval),
        ),
        (
            "QUEUE__SHUTDOWN_TIMEOUT",
            duration(settings.queue.shutdown_timeout),
        ),
        (
            "INGEST__RETRY_SCHEDULE",
            list(
                settings
                    .ingest
                    .retry_schedule
                    .iter()
                    .copied()
                    .map(duration)
                    .collect(),
            ),
        ),
        (
            "INGEST__FETCH_TIMEOUT",
            duration(settings.ingest.fetch_timeout),
        ),
        (
            "INGEST__PARSE_TIMEOUT",
            duration(settings.ingest.parse_timeout),
        ),
        ("INGEST__LOCK_TTL", duration(settings.ingest.lock_ttl)),
        (
            "INGEST__MAX_DOCUMENT_SIZE",
            settings.ingest.max_document_size.0.to_string(),
        ),
        (
            "CHAT__ESCALATION_THRESHOLD",
            settings.chat.escalation_threshold.to_string(),
        ),
        (
            "CHAT__SESSION_IDLE_TIMEOUT",
            duration(settings.chat.session_idle_timeout),
        ),
        ("AUTH__ADMIN_KEYS", list(settings.auth.admin_keys.clone())),
        ("LOG__LEVEL", settings.log.level.clone()),
        ("LOG__FORMAT", "json".to_owned()),
    ];
    pairs
        .into_iter()
        .map(|(key, value)| (format!("SUPPORTRAG__{key}"), value))
        .collect()
}

/// A running worker process; SIGKILLed when dropped if still running.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    // Working directory and log; removed on drop.
    dir: TempDir,
}

impl WorkerProcess {
    /// Runs `binary` (e.g. `env!("CARGO_BIN_EXE_supportrag-worker")`) with
    /// these extra environment variables, in an empty working directory.
    pub fn spawn<K: AsRef<str>, V: AsRef<str>>(binary: impl AsRef<Path>, env: &[(K, V)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("supportrag-worker-")
            .tempdir()
            .expect("testkit: could not create a temporary directory for a worker process");
        let log = dir.path().join("worker.log");
        let out = create_log(&log);
        let err = out
            .try_clone()
            .expect("testkit: could not duplicate a log file handle");
        let mut command = Command::new(binary.as_ref());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SUPPORTRAG") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        for (key, value) in env {
            command.env(key.as_ref(), value.as_ref());
        }
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "testkit: could not start {}: {e}",
                    binary.as_ref().display()
                )
            });
        Self { child, log, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: asks for a graceful shutdown (see [`Self::wait_exit`]).
    pub fn terminate(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            assert_eq!(
                rc,
                0,
                "testkit: kill(SIGTERM) failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; panics (with the log's end) if it has
    /// not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!(
                    "worker process {} still running {timeout:?} after being asked to stop; log:\n{}",
                    self.child.id(),
                    self.log_tail(30)
                ),
                Err(e) => panic!(
                    "testkit: waiting for worker process {}: {e}",
                    self.child.id()
                ),
            }
        }
    }

    /// The end of the process' combined stdout/stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- worker process {} log ---\n{}",
                self.child.id(),
                self.log_tail(30)
            );
        }
        self.kill();
    }
}
