//! The id that ties a request to the jobs, events and log lines it causes.
//!
//! It arrives from callers (`X-Trace-Id`, `traceparent`) and ends up in logs,
//! response headers and outbound webhook bodies, so it is checked once, when
//! made, and a [`TraceId`] always holds 1..=128 characters of
//! `[A-Za-z0-9_.:-]`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{found:?} is not a valid trace id (1 to 128 of A-Z a-z 0-9 _ . : -)")]
pub struct InvalidTraceId {
    pub found: String,
}

/// A trace id known to keep to the rule; made only by [`TraceId::parse`],
/// [`TraceId::generate`], [`TraceId::from_traceparent`] or deserializing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(String);

impl TraceId {
    pub const MAX_LEN: usize = 128;

    /// A caller's id, if it keeps to the character set: anything wider could
    /// forge log lines or break the header it is echoed in.
    pub fn parse(id: &str) -> Result<Self, InvalidTraceId> {
        let allowed = (1..=Self::MAX_LEN).contains(&id.len()) && id.bytes().all(allowed_byte);
        if allowed {
            Ok(Self(id.to_owned()))
        } else {
            Err(InvalidTraceId {
                found: id.to_owned(),
            })
        }
    }

    /// A new id; the ULID keeps ids roughly time-ordered in log searches.
    pub fn generate() -> Self {
        Self(format!(
            "trace_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        ))
    }

    /// The trace-id field of a W3C `traceparent`
    /// (`version-traceid-parentid-flags`), when it is well-formed.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut fields = value.trim().split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let parent_id = fields.next()?;
        let flags = fields.next()?;
        let well_formed = is_lower_hex(version, 2)
            && version != "ff"
            && is_lower_hex(trace_id, 32)
            && is_lower_hex(parent_id, 16)
            && is_lower_hex(flags, 2);
        // The spec marks an all-zero trace id as invalid, not "unsampled".
        let non_zero = trace_id.bytes().any(|b| b != b'0');
        (well_formed && non_zero).then(|| Self(trace_id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stored id that breaks the rule (written before it was enforced)
    /// with each disallowed character replaced by `_` and cut to the limit.
    /// Mapping rather than replacing it with a fresh id keeps a record's
    /// trace id the same on every read and still findable by its readable
    /// part; only an empty one has nothing to keep and gets a fresh id.
    fn repaired(stored: &str) -> Self {
        let id: String = stored
            .chars()
            .map(|c| {
                if c.is_ascii() && allowed_byte(c as u8) {
                    c
                } else {
                    '_'
                }
            })
            .take(Self::MAX_LEN)
            .collect();
        if id.is_empty() {
            Self::generate()
        } else {
            Self(id)
        }
    }
}

fn allowed_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TraceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TraceId {
    type Err = InvalidTraceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq<str> for TraceId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TraceId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    /// Lenient: a trace id only helps find log lines, so a bad one in a
    /// stored job or record is repaired instead of making it unreadable.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = String::deserialize(d)?;
        Ok(Self::parse(&stored).unwrap_or_else(|_| Self::repaired(&stored)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_the_character_rule() {
        for good in ["a", "abc-123_x.y:z", "4bf92f3577b34da6a3ce929d0e0e4736"] {
            assert_eq!(
                TraceId::parse(good).map(|t| t.to_string()),
                Ok(good.to_owned())
            );
        }
        let max = "a".repeat(TraceId::MAX_LEN);
        assert_eq!(TraceId::parse(&max).map(|t| t.to_string()), Ok(max));
        let long = "a".repeat(TraceId::MAX_LEN + 1);
        for bad in [
            "",
            "has space",
            "semi;colon",
            "line\nbreak",
            "é",
            long.as_str(),
        ] {
            assert_eq!(
                TraceId::parse(bad),
                Err(InvalidTraceId {
                    found: bad.to_owned()
                }),
                "for {bad:?}"
            );
        }
    }

    #[test]
    fn generated_ids_are_prefixed_lowercase_ulids_and_valid() {
        let id = TraceId::generate();
        let ulid = id.as_str().strip_prefix("trace_").unwrap_or_default();
        assert_eq!(ulid.len(), 26);
        assert_eq!(ulid, ulid.to_lowercase());
        assert_eq!(TraceId::parse(id.as_str()), Ok(id.clone()));
        assert_ne!(id, TraceId::generate());
    }

    #[test]
    fn traceparent_gives_its_trace_id_field() {
        let id =
            TraceId::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            id.as_ref().map(TraceId::as_str),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
            "garbage",
        ] {
            assert_eq!(TraceId::from_traceparent(bad), None, "for {bad:?}");
        }
    }

    #[test]
    fn serializes_as_the_plain_string_and_back() -> Result<(), serde_json::Error> {
        let id = TraceId::parse("client-trace.42").map_err(serde::de::Error::custom)?;
        let json = serde_json::to_string(&id)?;
        assert_eq!(json, r#""client-trace.42""#);
        assert_eq!(serde_json::from_str::<TraceId>(&json)?, id);
        Ok(())
    }

    #[test]
    fn a_bad_stored_id_is_repaired_not_rejected() -> Result<(), serde_json::Error> {
        let bad: TraceId = serde_json::from_str(r#""old id;é\n""#)?;
        assert_eq!(bad, "old_id___");
        let long: TraceId = serde_json::from_str(&format!("\"{}\"", " ".repeat(300)))?;
        assert_eq!(long.as_str(), "_".repeat(TraceId::MAX_LEN));
        let empty: TraceId = serde_json::from_str(r#""""#)?;
        assert!(empty.as_str().starts_with("trace_"), "{empty}");
        assert!(serde_json::from_str::<TraceId>("42").is_err());
        Ok(())
    }
}
