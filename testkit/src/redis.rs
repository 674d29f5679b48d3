//! A private `redis-server` per test.
//!
//! Why not the Redis on 6379: tests that kill, restart and flood Redis must
//! not share it with each other or with a developer's running stack, and a
//! test that looks at queue depths must see only its own jobs. So each test
//! starts `redis-server` (from `PATH`) on a free loopback port with a fresh
//! data directory, and `Drop` kills it and removes the directory.
//!
//! The port is found by binding `127.0.0.1:0` and releasing it: another
//! process can grab it in between, so a start that fails to bind is retried
//! on a new port. Once `PING` answers, `INFO server` must report our child's
//! pid, so a foreign server that happens to own the port is never mistaken
//! for ours. The port 6379 is never used.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::files::tail;

/// The developer's (or the compose stack's) Redis: never ours to touch.
const RESERVED_PORT: u16 = 6379;
const START_ATTEMPTS: usize = 5;
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` child process owned by one test.
pub struct TestRedis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    aof: bool,
}

impl TestRedis {
    /// Redis without persistence (`--save ""`, no AOF).
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Redis with `appendonly yes` and `appendfsync always`, so a `kill()` +
    /// `restart()` loses nothing that was acknowledged.
    pub fn start_with_aof() -> Self {
        Self::launch(true)
    }

    fn launch(aof: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("supportrag-redis-")
            .tempdir()
            .expect("testkit: could not create a temporary directory for redis-server");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_and_wait(port, dir.path(), aof) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                        aof,
                    };
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!(
            "testkit: redis-server did not start after {START_ATTEMPTS} attempts:\n  {}\n(log: {})",
            failures.join("\n  "),
            log_path(dir.path()).display()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url())
            .expect("testkit: a redis:// URL we built ourselves must parse")
    }

    /// Keeps the server busy in a script for `ms` milliseconds, on a
    /// thread of its own: every other client gets `BUSY` meanwhile (the
    /// `busy-reply-threshold` is set to 20 ms first). Join the handle to
    /// wait for the script's end.
    pub fn busy_for(&self, ms: u64) -> std::thread::JoinHandle<()> {
        let mut conn = self
            .client()
            .get_connection()
            .expect("testkit: connection for the busy script");
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("busy-reply-threshold")
            .arg(20)
            .query(&mut conn)
            .expect("testkit: CONFIG SET busy-reply-threshold");
        std::thread::spawn(move || {
            let _: i64 = redis::Script::new(
                r"
local function now() local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000) end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return 1
",
            )
            .arg(ms)
            .invoke(&mut conn)
            .expect("testkit: busy script runs");
        })
    }

    /// Opens a TLS port beside the plain one (`CONFIG SET tls-*`), with a
    /// fresh CA, a server certificate for 127.0.0.1 and a client
    /// certificate made by the `openssl` command. With
    /// `require_client_certs`, clients without a certificate from that CA
    /// are refused (`tls-auth-clients yes`).
    pub fn enable_tls(&self, require_client_certs: bool) -> RedisTls {
        let dir = tempfile::Builder::new()
            .prefix("supportrag-tls-")
            .tempdir()
            .expect("testkit: temporary directory for certificates");
        let d = dir.path();
        // Extensions make both certificates X.509 v3, the only version
        // rustls accepts.
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("testkit: write the server certificate extensions");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("testkit: write the client certificate extensions");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=supportrag test CA",
            ],
        );
        for name in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
        let port = free_port();
        let mut conn = self
            .client()
            .get_connection()
            .expect("testkit: connection to enable TLS");
        let auth = if require_client_certs { "yes" } else { "no" };
        for (name, value) in [
            ("tls-cert-file", d.join("server.pem").display().to_string()),
            ("tls-key-file", d.join("server.key").display().to_string()),
            ("tls-ca-cert-file", d.join("ca.pem").display().to_string()),
            ("tls-auth-clients", auth.to_owned()),
            ("tls-port", port.to_string()),
        ] {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(&value)
                .query(&mut conn)
                .unwrap_or_else(|e| {
                    panic!("testkit: CONFIG SET {name}: {e} (is redis-server built with TLS?)")
                });
        }
        RedisTls {
            url: format!("rediss://127.0.0.1:{port}/"),
            ca: d.join("ca.pem"),
            cert: d.join("client.pem"),
            key: d.join("client.key"),
            _dir: dir,
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL, as a crash or an OOM kill would: no chance to save anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A clean stop: `SHUTDOWN NOSAVE`, falling back to SIGTERM, then waits
    /// for the process to exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let shutdown = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut conn| redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut conn));
        // A successful SHUTDOWN closes the connection, which the client
        // reports as an error: only the process exiting tells us it worked.
        let _ = shutdown;
        if !wait_exit(&mut child, Duration::from_secs(5)) {
            signal(&child, libc::SIGTERM);
            if !wait_exit(&mut child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts the server again on the same port and directory (so an AOF is
    /// loaded back) and waits for `PING`. Stops it first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        let mut last_error = String::new();
        // The old process' socket may linger for a moment after it exits.
        while started.elapsed() < READY_WITHIN {
            match spawn_and_wait(self.port, self.dir.path(), self.aof) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) => last_error = why,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "testkit: redis-server did not restart on port {}: {last_error} (log: {})",
            self.port,
            log_path(self.dir.path()).display()
        );
    }

    /// The end of `redis.log`, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&log_path(self.dir.path()), lines)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log (port {}) ---\n{}",
                self.port,
                self.log_tail(20)
            );
        }
        self.kill();
        // `dir` (a TempDir) removes itself after this.
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

/// A port the OS just gave us on loopback, never 6379.
/// A TLS port of a [`TestRedis`] and the files a client needs for it.
pub struct RedisTls {
    pub url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("testkit: the openssl command is needed for TLS tests (Debian: apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "testkit: openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .expect("testkit: could not bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("testkit: a bound listener has an address")
            .port();
        drop(listener);
        if port != RESERVED_PORT {
            return port;
        }
    }
}

/// Starts `redis-server` on `port` and waits until it answers as itself.
fn spawn_and_wait(port: u16, dir: &Path, aof: bool) -> Result<Child, String> {
    assert_ne!(
        port, RESERVED_PORT,
        "testkit: refusing to start a test Redis on port 6379"
    );
    let log = log_path(dir);
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--daemonize")
        .arg("no")
        .arg("--logfile")
        .arg(&log)
        .arg("--save")
        .arg("");
    if aof {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not run redis-server (is it on PATH?): {e}"))?;

    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .map_err(|e| format!("bad redis URL: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < READY_WITHIN {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited with {status}: {}",
                tail(&log, 3)
            ));
        }
        if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            let pong: Result<String, _> = redis::cmd("PING").query(&mut conn);
            let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut conn);
            match (pong, info) {
                (Ok(_), Ok(info)) if info_pid(&info) == Some(child.id()) => return Ok(child),
                (Ok(_), Ok(_)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("another redis-server answers on this port".into());
                }
                // LOADING (an AOF being read back) or not yet listening.
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "no PING answer within {READY_WITHIN:?}: {}",
        tail(&log, 3)
    ))
}

fn info_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}
