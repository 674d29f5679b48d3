//! A `redis-server` replicating a [`TestRedis`], for tests of
//! `redis.wait_replicas` (the enqueue waits for `WAIT n` confirmations).
//! Like [`TestRedis`] it never touches port 6379 and is killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestRedis;

pub struct TestReplica {
    child: Child,
    _dir: TempDir,
}

impl TestReplica {
    /// Starts a replica of `primary` and waits until its link is up.
    pub fn start(primary: &TestRedis) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("supportrag-replica-")
            .tempdir()
            .expect("testkit: temporary directory for a replica");
        let port = loop {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("testkit: bind");
            let port = listener.local_addr().expect("testkit: address").port();
            if port != 6379 {
                break port;
            }
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--replicaof", "127.0.0.1", &primary.port().to_string()])
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("testkit: could not run redis-server for a replica");
        let replica = Self { child, _dir: dir };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("testkit: replica URL");
        let started = Instant::now();
        loop {
            let info: Option<String> = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .ok()
                .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c).ok());
            if info.is_some_and(|i| i.contains("master_link_status:up")) {
                return replica;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "testkit: the replica's link to its primary did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
