//! How the console writes times and durations.

use chrono::{DateTime, Utc};

/// A duration for people: "850 ms", "12.5 s", "4 min", "3 h 10 min".
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A UTC time to the second.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_500), "12.5 s");
        assert_eq!(duration_ms(240_000), "4 min");
        assert_eq!(duration_ms(3 * 3_600_000 + 600_000), "3 h 10 min");
    }
}
