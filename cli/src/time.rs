//! Times on the command line: RFC 3339, or a duration meaning "that long
//! ago", which is what an operator usually has in mind (`--since 2h`).

use std::time::SystemTime;

/// `2h` becomes the RFC 3339 time two hours ago; anything else is passed on
/// as given, for the API to check as RFC 3339 (it accepts offsets, which
/// humantime's parser does not).
pub fn parse_when(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("give an RFC 3339 time or a duration such as 2h".into());
    }
    match humantime::parse_duration(text) {
        Ok(ago) => SystemTime::now()
            .checked_sub(ago)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .ok_or_else(|| format!("{text} ago is before 1970")),
        Err(_) => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_means_that_long_ago() {
        let when = parse_when("1h").expect("a duration");
        let parsed = humantime::parse_rfc3339(&when).expect("RFC 3339");
        assert!(parsed < SystemTime::now());
    }

    #[test]
    fn a_time_is_passed_on() {
        assert_eq!(
            parse_when("2026-12-03T10:00:00+02:00").as_deref(),
            Ok("2026-12-03T10:00:00+02:00")
        );
        assert!(parse_when(" ").is_err());
    }
}
