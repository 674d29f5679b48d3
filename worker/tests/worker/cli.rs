//! The worker binary as an operator starts it.

use std::process::Command;

#[test]
fn the_binary_explains_itself() {
    let output = Command::new(env!("CARGO_BIN_EXE_supportrag-worker"))
        .arg("--help")
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--config"));
}

#[test]
fn a_bad_setting_stops_the_binary_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_supportrag-worker"))
        .env("SUPPORTRAG__QUEUE__VISIBILITY_TIMEOUT", "1ms")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("queue.visibility_timeout"), "{stderr}");
}

#[tokio::test]
async fn the_worker_keeps_its_heartbeat_file_fresh_while_it_runs() {
    let redis = testkit::TestRedis::start();
    let settings = testkit::test_settings(&redis.url());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("alive");
    let mut env = testkit::settings_env(&settings);
    env.push((
        "SUPPORTRAG__WORKER__HEARTBEAT_FILE".to_owned(),
        file.display().to_string(),
    ));
    let mut worker = testkit::WorkerProcess::spawn(env!("CARGO_BIN_EXE_supportrag-worker"), &env);

    let first = testkit::wait_until("the first heartbeat", testkit::PATIENCE, || async {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await;
    // A second, different stamp shows a loop, not a one-off write at start.
    testkit::wait_until("a later heartbeat", testkit::PATIENCE, || async {
        std::fs::read_to_string(&file).ok().filter(|s| *s != first)
    })
    .await;
    assert!(worker.is_running());
    worker.terminate();
}
