//! Runs a parser in a child process under memory and CPU limits, so a
//! document that crashes, overflows the stack or eats memory only kills
//! the child; and without the worker's environment or network, so one that
//! takes over the parser finds no secrets and reaches nothing.
//!
//! Protocol: per document, the parent writes one JSON header line
//! ([`Request`]) followed by exactly `len` raw document bytes to the
//! child's stdin; the child writes one JSON `Result<ParsedDocument,
//! ParseError>` line to stdout. It reads the next request until stdin
//! ends, then exits 0. [`parse_isolated`] gives a child one document;
//! [`ParserPool`] gives one child several small documents in turn, which
//! spares a process start (and a network namespace) per document.

use std::io::{BufRead, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use super::{ParseError, ParseLimits, detect, parse};
use crate::types::{Format, ParsedDocument};

pub struct SandboxLimits {
    /// Address-space limit (RLIMIT_AS) of the child.
    pub memory_bytes: u64,
    /// Wall-clock limit; the CPU-time limit is derived from it.
    pub timeout: Duration,
    pub parse: ParseLimits,
}

#[derive(Serialize, Deserialize)]
struct Request {
    declared: Option<Format>,
    content_type: Option<String>,
    limits: ParseLimits,
    len: usize,
    /// CPU seconds this document may use: a reused child moves its
    /// RLIMIT_CPU soft limit to what it used so far plus this, so each
    /// document has the same backstop as in a child of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<u64>,
}

/// The header line is small; anything longer is not our parent talking.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Stderr is kept only to explain a crash.
const MAX_STDERR_BYTES: u64 = 64 * 1024;

/// Runs detect+parse in a child process `program args...` (the child calls
/// [`child_main`]), feeding the request on stdin and reading a JSON result
/// from stdout.
///
/// The child is confined by [`spawn_confined`] and killed on timeout. A
/// child that dies by signal, exits non-zero or writes garbage gives
/// [`ParseError::Failed`] (or [`ParseError::InvalidPdf`] when the format is
/// pdf) saying what happened.
/// Detection runs in the parent too (it is byte sniffing only), so an
/// unsupported format is reported without spawning anything.
pub async fn parse_isolated(
    program: &Path,
    args: &[&str],
    declared: Option<Format>,
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &SandboxLimits,
) -> Result<ParsedDocument, ParseError> {
    let format = detect(declared, content_type, bytes)?;
    let result = run_child(program, args, format, content_type, bytes, limits).await;
    match result {
        Err(ParseError::Failed(msg)) if format == Format::Pdf => Err(ParseError::InvalidPdf(msg)),
        other => other,
    }
}

async fn run_child(
    program: &Path,
    args: &[&str],
    format: Format,
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &SandboxLimits,
) -> Result<ParsedDocument, ParseError> {
    let header = request_header(format, content_type, bytes, limits, None)?;

    let mut child = spawn_confined(program, args, limits)
        .map_err(|e| ParseError::Failed(format!("cannot start the parser process: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ParseError::Failed("the parser process has no pipes".into()));
    };
    let pid = child.id();

    let max_stdout = max_output(limits);

    // The three pipes are driven concurrently so that neither side blocks on a
    // full pipe (a big document on stdin while the child already writes).
    let exchange = async {
        let write = async {
            // A child that dies early closes its stdin: the broken pipe is
            // expected, and its exit status explains what happened.
            if stdin.write_all(&header).await.is_ok() {
                let _ = stdin.write_all(bytes).await;
            }
            drop(stdin);
        };
        let read_out = read_capped(stdout, max_stdout, pid);
        let read_err = read_capped(stderr, MAX_STDERR_BYTES, None);
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (out, err, status)
    };

    let (out, err, status) = match tokio::time::timeout(limits.timeout, exchange).await {
        Ok(done) => done,
        Err(_) => {
            // Kill and reap now rather than leaving it to kill_on_drop, so no
            // zombie or runaway process outlives this call.
            let _ = child.kill().await;
            return Err(ParseError::Failed(format!(
                "parser timed out after {}",
                describe_duration(limits.timeout)
            )));
        }
    };
    // Checked before the exit status: we killed the child ourselves for it.
    let out = match out {
        Ok(out) => out,
        Err(Capped::TooLarge) => {
            return Err(ParseError::Failed(format!(
                "parser output exceeded {max_stdout} bytes"
            )));
        }
        Err(Capped::Io(e)) => {
            return Err(ParseError::Failed(format!(
                "cannot read the parser output: {e}"
            )));
        }
    };
    let status =
        status.map_err(|e| ParseError::Failed(format!("lost track of the parser process: {e}")))?;
    if !status.success() {
        let stderr_text = String::from_utf8_lossy(&err.unwrap_or_default()).into_owned();
        let reason = describe_failure(status, &stderr_text);
        tracing::warn!(%reason, stderr = %stderr_text.trim(), "document parser process failed");
        return Err(ParseError::Failed(reason));
    }
    serde_json::from_slice::<Result<ParsedDocument, ParseError>>(&out)
        .map_err(|_| ParseError::Failed("parser produced an unreadable result".into()))?
}

/// The header line of one document's request.
fn request_header(
    format: Format,
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &SandboxLimits,
    cpu_seconds: Option<u64>,
) -> Result<Vec<u8>, ParseError> {
    let header = Request {
        declared: Some(format),
        content_type: content_type.map(str::to_owned),
        limits: limits.parse.clone(),
        len: bytes.len(),
        cpu_seconds,
    };
    let mut header = serde_json::to_vec(&header)
        .map_err(|e| ParseError::Failed(format!("cannot encode the parse request: {e}")))?;
    header.push(b'\n');
    Ok(header)
}

/// Largest result accepted from the child: JSON escaping can double the
/// text, plus structure per block.
fn max_output(limits: &SandboxLimits) -> u64 {
    (limits.parse.max_text_chars as u64)
        .saturating_mul(8)
        .saturating_add(1024 * 1024)
}

/// CPU seconds a document may use (a backstop: the wall-clock timeout is
/// what normally fires).
fn cpu_seconds(limits: &SandboxLimits) -> u64 {
    limits.timeout.as_secs().saturating_add(1)
}

/// Documents larger than this always get a child of their own: a big
/// parse leaves the most behind (a grown heap) for the next document, and
/// the process start is small next to parsing it.
pub const REUSE_MAX_BYTES: usize = 1 << 20;

/// Parser children shared by the documents of one process: at most
/// `processes` alive at once, each parsing up to `reuse` small documents
/// one after the other before it is replaced.
///
/// Every document still runs in a confined child under its own limits
/// (wall-clock timeout per document, RLIMIT_CPU moved per document, the
/// child's address space, output cap), and its result is its own: a child
/// that crashes, hangs or writes garbage is killed and fails only the
/// document it was parsing; a crash in a child that had parsed others
/// before is tried once more in a fresh child, so a document's failure
/// never depends on what its predecessors left behind. What reuse gives
/// up is isolation between the documents sharing a child: a document
/// that took over the parser could alter the results of the (at most
/// `reuse - 1`) documents parsed after it by that child. `reuse = 1`
/// gives every document a fresh child, as [`parse_isolated`] does.
pub struct ParserPool {
    program: PathBuf,
    args: Vec<String>,
    limits: SandboxLimits,
    reuse: usize,
    slots: Semaphore,
    idle: Mutex<Vec<Warm>>,
}

/// A running child waiting for its next document.
struct Warm {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What it wrote on stderr during the current document (drained all
    /// the time, so that a child that warns a lot never blocks on it).
    stderr: Arc<Mutex<Vec<u8>>>,
    drain: tokio::task::JoinHandle<()>,
    served: usize,
}

/// How one document's exchange with a reused child ended, when it failed.
enum Broken {
    TimedOut,
    TooLarge(u64),
    /// The child ended (or closed its output) without a whole answer.
    Died,
    Io(std::io::Error),
}

impl ParserPool {
    /// `processes` and `reuse` are taken as at least 1.
    pub fn new(
        program: PathBuf,
        args: Vec<String>,
        limits: SandboxLimits,
        processes: usize,
        reuse: usize,
    ) -> Self {
        Self {
            program,
            args,
            limits,
            reuse: reuse.max(1),
            slots: Semaphore::new(processes.max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// As [`parse_isolated`], in one of the pool's children.
    pub async fn parse(
        &self,
        declared: Option<Format>,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<ParsedDocument, ParseError> {
        let format = detect(declared, content_type, bytes)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ParseError::Failed("the parser pool is closed".into()))?;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let reused = if self.reuse == 1 || bytes.len() > REUSE_MAX_BYTES {
            Reused::Again
        } else {
            self.parse_reused(format, content_type, bytes).await
        };
        let result = match reused {
            Reused::Done(result) => result,
            // Too large to share a child, reuse off, or undecided in a
            // reused child: a fresh child, as if it were alone.
            Reused::Again => {
                run_child(
                    &self.program,
                    &args,
                    format,
                    content_type,
                    bytes,
                    &self.limits,
                )
                .await
            }
        };
        match result {
            Err(ParseError::Failed(msg)) if format == Format::Pdf => {
                Err(ParseError::InvalidPdf(msg))
            }
            other => other,
        }
    }

    async fn parse_reused(
        &self,
        format: Format,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Reused {
        let header = match request_header(
            format,
            content_type,
            bytes,
            &self.limits,
            Some(cpu_seconds(&self.limits)),
        ) {
            Ok(header) => header,
            Err(e) => return Reused::Done(Err(e)),
        };
        let warm = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut warm = match warm {
            Some(warm) => warm,
            None => match self.spawn_warm() {
                Ok(warm) => warm,
                Err(e) => {
                    return Reused::Done(Err(ParseError::Failed(format!(
                        "cannot start the parser process: {e}"
                    ))));
                }
            },
        };
        warm.stderr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        let max = max_output(&self.limits);
        let exchanged =
            match tokio::time::timeout(self.limits.timeout, warm.exchange(&header, bytes, max))
                .await
            {
                Ok(exchanged) => exchanged,
                Err(_) => Err(Broken::TimedOut),
            };
        match exchanged {
            Ok(line) => {
                warm.served += 1;
                let result = serde_json::from_slice::<Result<ParsedDocument, ParseError>>(&line)
                    .map_err(|_| ParseError::Failed("parser produced an unreadable result".into()))
                    .and_then(|r| r);
                if warm.served < self.reuse {
                    self.idle
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(warm);
                } else {
                    warm.retire().await;
                }
                Reused::Done(result)
            }
            Err(broken) => {
                // The wall clock is the document's own: its predecessors
                // cannot have used it up.
                let retry = warm.served > 0 && !matches!(broken, Broken::TimedOut);
                let reason = warm.fail(broken, &self.limits).await;
                if retry {
                    tracing::info!(%reason, "a reused parser process failed; parsing the document again in a fresh one");
                    Reused::Again
                } else {
                    Reused::Done(Err(ParseError::Failed(reason)))
                }
            }
        }
    }

    fn spawn_warm(&self) -> std::io::Result<Warm> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        // Each document moves the soft limit (see Request::cpu_seconds);
        // the hard one bounds the child's whole life.
        let per = cpu_seconds(&self.limits);
        let hard = per.saturating_mul(self.reuse as u64).saturating_add(1);
        let mut child = spawn_confined_cpu(&self.program, &args, &self.limits, per, hard)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("the parser process has no pipes"));
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let drain = tokio::spawn(drain_stderr(stderr, tail.clone()));
        Ok(Warm {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr: tail,
            drain,
            served: 0,
        })
    }
}

enum Reused {
    Done(Result<ParsedDocument, ParseError>),
    Again,
}

impl Warm {
    /// Sends one document and reads its answer line.
    async fn exchange(&mut self, header: &[u8], bytes: &[u8], max: u64) -> Result<Vec<u8>, Broken> {
        let write = async {
            self.stdin.write_all(header).await?;
            self.stdin.write_all(bytes).await?;
            self.stdin.flush().await
        };
        let mut line = Vec::new();
        let read = async {
            let mut limited = (&mut self.stdout).take(max.saturating_add(1));
            limited.read_until(b'\n', &mut line).await
        };
        // Both at once: a child that dies early stops reading, and its
        // exit (seen on stdout) explains more than the broken pipe.
        let (written, read) = tokio::join!(write, read);
        match read {
            Err(e) => return Err(Broken::Io(e)),
            Ok(_) if line.len() as u64 > max => return Err(Broken::TooLarge(max)),
            Ok(_) if line.last() != Some(&b'\n') => return Err(Broken::Died),
            Ok(_) => {}
        }
        written.map_err(Broken::Io)?;
        line.pop();
        Ok(line)
    }

    /// Kills the child after a failed exchange; why it failed, in words.
    async fn fail(mut self, broken: Broken, limits: &SandboxLimits) -> String {
        let _ = self.child.start_kill();
        let status = self.child.wait().await;
        // Its stderr ends with it.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.drain).await;
        let stderr = String::from_utf8_lossy(
            &self
                .stderr
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
        .into_owned();
        let reason = match broken {
            Broken::TimedOut => format!(
                "parser timed out after {}",
                describe_duration(limits.timeout)
            ),
            Broken::TooLarge(max) => format!("parser output exceeded {max} bytes"),
            Broken::Io(e) => format!("cannot exchange with the parser process: {e}"),
            Broken::Died => match status {
                Ok(status) => describe_failure(status, &stderr),
                Err(e) => format!("lost track of the parser process: {e}"),
            },
        };
        tracing::warn!(%reason, stderr = %stderr.trim(), "document parser process failed");
        reason
    }

    /// Lets a child that parsed its share end: its stdin closes, it exits.
    async fn retire(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Keeps the last [`MAX_STDERR_BYTES`] a child writes on stderr.
async fn drain_stderr(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut kept = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(MAX_STDERR_BYTES as usize);
                kept.drain(..excess);
            }
        }
    }
}

/// Open files the child may hold: its three pipes and the few the runtime
/// opens at start. A parser has no business opening more.
const MAX_OPEN_FILES: u64 = 16;

/// How the parser child is cut off from the network, decided once per
/// process by [`network_isolation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkIsolation {
    /// A new user namespace owning a new network namespace: the child has
    /// only a loopback interface that is down, and whatever capabilities it
    /// has exist in that namespace only, so it cannot rejoin the host's.
    UserAndNetworkNamespace,
    /// A new network namespace alone: a privileged worker on a kernel that
    /// refuses user namespaces. The child's capabilities are dropped before
    /// exec, so it cannot rejoin the host's network namespace either.
    NetworkNamespace,
    /// The kernel refused both (user namespaces disabled, or a seccomp
    /// profile that forbids `unshare`, as Docker's default does): the child
    /// shares the worker's network.
    None,
}

impl NetworkIsolation {
    fn unshare_flags(self) -> Option<libc::c_int> {
        match self {
            NetworkIsolation::UserAndNetworkNamespace => {
                Some(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)
            }
            NetworkIsolation::NetworkNamespace => Some(libc::CLONE_NEWNET),
            NetworkIsolation::None => None,
        }
    }
}

static NETWORK_ISOLATION: OnceLock<NetworkIsolation> = OnceLock::new();

/// The network isolation every parser child of this process gets: the
/// strongest that the kernel allows, probed on first use (a child that
/// exits right after `unshare`). Blocks for that probe the first time.
pub fn network_isolation() -> NetworkIsolation {
    *NETWORK_ISOLATION.get_or_init(|| {
        // The user namespace first even for root: in it the child's
        // capabilities stop at its own namespace.
        [
            NetworkIsolation::UserAndNetworkNamespace,
            NetworkIsolation::NetworkNamespace,
        ]
        .into_iter()
        .find(|mode| mode.unshare_flags().is_some_and(unshare_allowed))
        .unwrap_or(NetworkIsolation::None)
    })
}

fn unshare_allowed(flags: libc::c_int) -> bool {
    // Never executed: the child exits in pre_exec, and the path only has
    // to be absolute so that nothing is looked up on PATH.
    let mut probe = std::process::Command::new("/proc/self/exe");
    probe
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure calls only unshare and
    // _exit, both async-signal-safe; it touches no locks or allocations.
    unsafe {
        probe.pre_exec(move || {
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::_exit(0)
        });
    }
    // A refusal comes back as the spawn's error.
    probe
        .spawn()
        .and_then(|mut child| child.wait())
        .is_ok_and(|status| status.success())
}

/// Starts `program args` confined as the parser child is: an empty
/// environment (the worker's holds API keys, admin keys and the Redis URL),
/// no network (see [`network_isolation`]), RLIMIT_AS = `memory_bytes`, an
/// RLIMIT_CPU derived from the timeout, no core dumps, few open files,
/// no new privileges and no capabilities. Its stdin, stdout and stderr are
/// pipes, and it is killed when dropped.
///
/// Should the kernel refuse, at spawn time, an isolation that it allowed
/// when probed, the spawn fails rather than run the child with network.
pub fn spawn_confined(
    program: &Path,
    args: &[&str],
    limits: &SandboxLimits,
) -> std::io::Result<Child> {
    // RLIMIT_CPU is a backstop for the wall-clock timeout (which is what
    // normally fires); it catches a child that outlives a dropped parent future.
    let cpu_secs = cpu_seconds(limits);
    spawn_confined_cpu(program, args, limits, cpu_secs, cpu_secs.saturating_add(1))
}

/// As [`spawn_confined`], with the RLIMIT_CPU soft and hard limits given.
fn spawn_confined_cpu(
    program: &Path,
    args: &[&str],
    limits: &SandboxLimits,
    cpu_soft: u64,
    cpu_hard: u64,
) -> std::io::Result<Child> {
    let memory = limits.memory_bytes;
    let unshare = network_isolation().unshare_flags();
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and makes only raw
    // system calls (setrlimit, prctl, unshare, capset), which are
    // async-signal-safe; it touches no locks or allocations.
    unsafe {
        command.pre_exec(move || {
            set_rlimit(libc::RLIMIT_AS, memory, memory)?;
            set_rlimit(libc::RLIMIT_CPU, cpu_soft, cpu_hard)?;
            set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
            set_rlimit(libc::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES)?;
            // Without it, exec could hand back what is dropped below (a
            // set-uid program, or root's capabilities).
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(flags) = unshare {
                check(libc::unshare(flags))?;
            }
            // After unshare, which as root without a user namespace needs
            // CAP_SYS_ADMIN; a root child that kept it could rejoin the
            // host's network namespace through /proc/1/ns/net.
            drop_capabilities()
        });
    }
    command.spawn()
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Empties the effective, permitted and inheritable sets (and with them the
/// ambient set). A no-op for an unprivileged process outside a namespace.
fn drop_capabilities() -> std::io::Result<()> {
    // The kernel's capset ABI (linux/capability.h), which libc does not wrap.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    // Version 3 takes two data words (capabilities 0–31 and 32–63).
    let data = [none; 2];
    // SAFETY: both pointers are to initialised structs of the layout the
    // kernel expects for version 3, alive for the call.
    let result =
        unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads a valid, initialised struct we own.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

enum Capped {
    TooLarge,
    Io(std::io::Error),
}

/// Reads a pipe up to `max` bytes. Past that, the child (if `kill_pid` is
/// given) is killed: it is not going to produce a usable result, and leaving
/// it blocked on a full pipe would only wait for the timeout.
async fn read_capped(
    pipe: impl AsyncRead + Unpin,
    max: u64,
    kill_pid: Option<u32>,
) -> Result<Vec<u8>, Capped> {
    let mut data = Vec::new();
    let mut limited = pipe.take(max.saturating_add(1));
    limited.read_to_end(&mut data).await.map_err(Capped::Io)?;
    if data.len() as u64 <= max {
        return Ok(data);
    }
    if let Some(pid) = kill_pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: plain syscall; the child is not reaped yet (we have not
        // waited on it), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    } else {
        // Keep draining so the child is never blocked on this pipe.
        let mut rest = limited.into_inner();
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    }
    Err(Capped::TooLarge)
}

/// Turns a failed exit into a message for the uploader / operator. The Rust
/// runtime's own last words on stderr tell an allocation failure from a stack
/// overflow, both of which end in SIGABRT.
fn describe_failure(status: ExitStatus, stderr: &str) -> String {
    if stderr.contains("memory allocation of") {
        return "parser exceeded its memory limit".into();
    }
    if stderr.contains("has overflowed its stack") {
        return "parser overflowed its stack (the document is nested too deeply)".into();
    }
    match status.signal() {
        Some(libc::SIGXCPU) => "parser exceeded its CPU time limit".into(),
        Some(libc::SIGKILL) => "parser was killed (CPU time or memory exhausted)".into(),
        // Without RLIMIT_AS headroom, mmap failures in the runtime surface as segfaults.
        Some(libc::SIGSEGV) | Some(libc::SIGBUS) => {
            "parser crashed (segmentation fault, likely its memory limit)".into()
        }
        Some(libc::SIGABRT) => "parser aborted".into(),
        Some(sig) => format!("parser died of signal {sig}"),
        None => match status.code() {
            Some(code) => format!("parser exited with status {code}"),
            None => "parser ended abnormally".into(),
        },
    }
}

fn describe_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Entry point of the parser child process: reads requests from stdin
/// until it ends, parses each and writes its JSON result line to stdout.
pub fn child_main() -> ExitCode {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let (request, bytes) = match read_request(&mut input) {
            Ok(Some(r)) => r,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("parse child: bad request: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(seconds) = request.cpu_seconds {
            allow_cpu_seconds(seconds);
        }
        let result = std::panic::catch_unwind(|| {
            let format = detect(request.declared, request.content_type.as_deref(), &bytes)?;
            parse(
                format,
                request.content_type.as_deref(),
                &bytes,
                &request.limits,
            )
        })
        .unwrap_or_else(|_| Err(ParseError::Failed("parser panicked".into())));
        drop(bytes);
        let mut stdout = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut stdout, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if let Err(e) = written {
            eprintln!("parse child: cannot write the result: {e}");
            return ExitCode::from(3);
        }
    }
}

/// Moves the RLIMIT_CPU soft limit to the CPU time used so far plus
/// `seconds` (within the hard limit the parent set).
fn allow_cpu_seconds(seconds: u64) {
    // SAFETY: getrusage and getrlimit/setrlimit write to / read from
    // structs we own, valid for the calls.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return;
        }
        let used = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec).max(0) as u64;
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CPU, &mut limit) != 0 {
            return;
        }
        // +1: the seconds already started count as used.
        let wanted = used.saturating_add(seconds).saturating_add(1) as libc::rlim_t;
        limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY {
            wanted
        } else {
            wanted.min(limit.rlim_max)
        };
        libc::setrlimit(libc::RLIMIT_CPU, &limit);
    }
}

/// The next request, or `None` if stdin ended before one began.
fn read_request(input: &mut impl BufRead) -> std::io::Result<Option<(Request, Vec<u8>)>> {
    let mut line = Vec::new();
    (&mut *input)
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    let request: Request = serde_json::from_slice(&line)?;
    let mut bytes = Vec::new();
    // try_reserve: an absurd length fails as an error instead of an abort.
    bytes
        .try_reserve_exact(request.len)
        .map_err(|_| std::io::Error::other("memory allocation of the document buffer failed"))?;
    (&mut *input)
        .take(request.len as u64)
        .read_to_end(&mut bytes)?;
    if bytes.len() != request.len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the document was cut short",
        ));
    }
    Ok(Some((request, bytes)))
}
