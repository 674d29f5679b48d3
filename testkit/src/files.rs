//! Small file helpers for logs of child processes.

use std::fs::File;
use std::path::Path;

/// The last `lines` lines of a text file ("" if it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Creates a file for a child's output.
pub(crate) fn create_log(path: &Path) -> File {
    File::create(path)
        .unwrap_or_else(|e| panic!("testkit: could not create {}: {e}", path.display()))
}
