//! What the benchmarks share: a private Redis and the way figures are
//! summarised.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

pub mod devset;
pub mod fit;
pub mod queue;

/// A private `redis-server`, killed when dropped (error and panic included).
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
    _dir: TempDir,
}

impl RedisServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> anyhow::Result<Self> {
        let mut last_log = String::new();
        // The port is free when we look, but may be taken before redis binds
        // it: then redis exits and we try another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if port == 6379 {
                continue;
            }
            let dir = tempfile::tempdir()?;
            let log = dir.path().join("redis.log");
            let mut command = std::process::Command::new("redis-server");
            command
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            // Drop covers errors and panics; this covers the parent being
            // killed outright (it fires when the spawning thread dies, and
            // the parent runs on one thread).
            // SAFETY: prctl is async-signal-safe and touches no parent memory.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .context("starting redis-server (is it installed?)")?;
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            if server.wait_ready()? {
                return Ok(server);
            }
            last_log = read_log(&log);
        }
        bail!("redis-server did not start; last log:\n{last_log}")
    }

    /// Whether the server answers PING; false if it exited (port taken).
    fn wait_ready(&mut self) -> anyhow::Result<bool> {
        let client = redis::Client::open(self.url())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            let pong = client
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// (median, min, max); NaN for no values.
pub fn spread(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

pub fn show_spread((median, min, max): (f64, f64, f64)) -> String {
    format!(
        "{} ({}–{})",
        thousands(median),
        thousands(min),
        thousands(max)
    )
}

pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `INFO <section>` as field → value.
pub async fn info(
    conn: &mut redis::aio::ConnectionManager,
    section: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Calls per command so far, from `INFO commandstats`, without INFO itself
/// (that is us measuring).
pub async fn command_counts(
    conn: &mut redis::aio::ConnectionManager,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let mut counts = std::collections::HashMap::new();
    for (key, value) in info(conn, "commandstats").await? {
        let Some(name) = key.strip_prefix("cmdstat_") else {
            continue;
        };
        let calls = value
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unreadable commandstats line {key}:{value}"))?;
        if name != "info" {
            counts.insert(name.to_owned(), calls);
        }
    }
    Ok(counts)
}

/// Commands run between two `command_counts` snapshots.
pub fn total_delta(
    after: &std::collections::HashMap<String, u64>,
    before: &std::collections::HashMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(name, n)| n.saturating_sub(before.get(name).copied().unwrap_or(0)))
        .sum()
}

/// `used_memory` from `INFO memory`, in bytes.
pub async fn used_memory(conn: &mut redis::aio::ConnectionManager) -> anyhow::Result<f64> {
    info(conn, "memory")
        .await?
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .context("INFO memory has no used_memory")
}

/// CPU seconds a process used, its reaped children's included (user +
/// system, from /proc), if it runs.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid … : fields after the command, 1-based from
    // state; utime, stime, cutime, cstime are the 12th to 15th.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// Resident set size of a process in KiB (`VmRSS` in /proc), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The `q`-quantile (0..=1) of `values` (sorted in place), nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}
