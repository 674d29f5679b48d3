//! Unix milliseconds: scores of the delayed set and the dead-letter index.

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
