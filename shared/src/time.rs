//! Clock helpers: unix milliseconds for Redis scores, RFC 3339 with `Z`
//! for everything a person or an integrator reads.

use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339, UTC, `Z` suffix, at most millisecond precision.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    let millis = at.timestamp_subsec_millis() * 1_000_000;
    at.with_nanosecond(millis)
        .unwrap_or(at)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Whole milliseconds since `since` (what events report as
/// `processing_time_ms`, and attempts as `response_time_ms`).
pub fn elapsed_ms(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Serde helpers so timestamps are always written as RFC 3339 with `Z`.
pub mod serde_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_str(&super::super::rfc3339(*at)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_z() {
        assert_eq!(rfc3339(from_ms(1_736_424_000_000)), "2025-01-09T12:00:00Z");
        assert_eq!(
            rfc3339(from_ms(1_736_424_000_123)),
            "2025-01-09T12:00:00.123Z"
        );
    }
}
