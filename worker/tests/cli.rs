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
