//! Prefixed, time-sortable identifiers (`job_…`, `dead_…`), and the macro
//! that makes them, which the crates above this one use for their own ids.
//!
//! Each kind of id is its own type, parsed once at the edge: a value always
//! has the right prefix and a body of a conservative alphabet (ids end up in
//! Redis keys, URLs and headers).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{found:?} is not a valid {kind} id (expected {prefix}_…)")]
pub struct InvalidId {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub found: String,
}

/// Whether `body` may follow a prefix.
pub fn valid_body(body: &str) -> bool {
    !body.is_empty()
        && body.len() <= 96
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use ulid::Ulid;
}

/// Declares a prefixed id type: `prefixed_id!(/// doc
/// WebhookId, "webhook", "webhook")`. A new id's body is a ULID, so ids
/// sort by creation time.
#[macro_export]
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!(
                    concat!($prefix, "_{}"),
                    $crate::ids::__private::Ulid::generate().to_string().to_lowercase()
                ))
            }

            pub fn parse(text: &str) -> Result<Self, $crate::ids::InvalidId> {
                match text.strip_prefix(concat!($prefix, "_")) {
                    Some(body) if $crate::ids::valid_body(body) => Ok(Self(text.to_owned())),
                    _ => Err($crate::ids::InvalidId {
                        kind: $kind,
                        prefix: $prefix,
                        found: text.chars().take(100).collect(),
                    }),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $crate::ids::__private::serde::Serialize for $name {
            fn serialize<S: $crate::ids::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> $crate::ids::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::ids::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let text = <String as $crate::ids::__private::serde::Deserialize>::deserialize(
                    deserializer,
                )?;
                Self::parse(&text).map_err(<D::Error as $crate::ids::__private::serde::de::Error>::custom)
            }
        }
    };
}

prefixed_id!(
    /// One queued job; the same through every retry and replay.
    JobId, "job", "job"
);
prefixed_id!(
    /// One entry of the dead-letter set: each time a job is dead-lettered
    /// it gets a new one.
    DeadLetterId, "dead", "dead letter"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let a = JobId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn wrong_prefix_or_hostile_body_is_refused() {
        assert!(JobId::parse("dead_123").is_err());
        assert!(JobId::parse("job_").is_err());
        assert!(JobId::parse("job_a b").is_err());
        assert!(JobId::parse("job_../../x").is_err());
        assert!(DeadLetterId::parse("dead_abc123").is_ok());
    }
}
