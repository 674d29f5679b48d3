//! Filters per webhook: conditions on an event's payload that must all hold
//! for a webhook to get the event, on top of subscribing to its type.
//!
//! The webhook's `filters` field is an object from path to condition:
//!
//! ```json
//! {"data.source": "web", "data.escalation_priority": {"in": ["high", "urgent"]}}
//! ```
//!
//! - A path is `data.` followed by field names (letters, digits, `_`, `-`)
//!   separated by dots; it must name a field of the `data` of at least one
//!   type the webhook subscribes to (any type for `"*"`), per the catalogue's
//!   schemas. Below a free-form object (`metadata`) any name is accepted.
//! - A string, number, boolean or `null` means "equal to".
//! - `{"in": [v1, v2, …]}` means "equal to one of them".
//! - An event without the path does not match; arrays are not searched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::catalog::{Event, EventFilter, EventType};
use crate::events::payloads;
use crate::webhooks::registry::FieldError;

/// Conditions a webhook may hold: a subscriber's filters are read on every
/// publish, so they stay few and small.
pub const MAX_FILTERS: usize = 10;
/// Values one `in` may list.
pub const MAX_IN_VALUES: usize = 50;
const MAX_PATH_CHARS: usize = 200;
const MAX_STRING_CHARS: usize = 1000;
/// Every path starts here: filters look at the event's `data` only.
const ROOT: &str = "data";

/// A webhook's filters, all of which must match; empty matches everything.
/// Kept in path order, so a stored record and its JSON are stable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filters(BTreeMap<String, Condition>);

/// What the value at one path must be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    In {
        #[serde(rename = "in")]
        values: Vec<Value>,
    },
    Equals(Value),
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the form of filters as sent (count, path syntax, values);
    /// whether the paths exist depends on the subscribed types, see
    /// [`Filters::check_paths`].
    pub fn parse(raw: &serde_json::Map<String, Value>) -> Result<Self, FieldError> {
        if raw.len() > MAX_FILTERS {
            return Err(FieldError::new(
                "filters",
                format!("at most {MAX_FILTERS} filters"),
            ));
        }
        raw.iter()
            .map(|(path, condition)| {
                check_path_syntax(path)?;
                let condition = parse_condition(condition)
                    .map_err(|message| FieldError::new(field(path), message))?;
                Ok((path.clone(), condition))
            })
            .collect::<Result<_, _>>()
            .map(Filters)
    }

    /// Every path must name a field of at least one subscribed type's data.
    pub fn check_paths(&self, events: &[EventFilter]) -> Result<(), FieldError> {
        let types: Vec<EventType> = EventType::ALL
            .iter()
            .copied()
            .filter(|&t| events.iter().any(|f| f.matches(t)))
            .collect();
        for path in self.0.keys() {
            let below_root: Vec<&str> = segments(path).skip(1).collect();
            if !types.iter().any(|&t| payloads::has_path(t, &below_root)) {
                return Err(FieldError::new(
                    field(path),
                    "is not a field of the data of any subscribed event type (see GET /api/v1/event-types)",
                ));
            }
        }
        Ok(())
    }

    /// Whether `event` passes every filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.0.iter().all(|(path, condition)| {
            value_at(&event.data, path).is_some_and(|value| condition.holds(value))
        })
    }
}

impl Condition {
    fn holds(&self, value: &Value) -> bool {
        match self {
            Condition::Equals(wanted) => same(wanted, value),
            Condition::In { values } => values.iter().any(|wanted| same(wanted, value)),
        }
    }
}

/// JSON equality, except that numbers compare by value (`1` = `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('.')
}

/// The value at `path` in the event's `data` (the path's root segment).
fn value_at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path)
        .skip(1)
        .try_fold(data, |value, segment| value.get(segment))
}

/// The error field for a path; a long path is cut so the error stays small.
fn field(path: &str) -> String {
    let shown: String = path.chars().take(MAX_PATH_CHARS).collect();
    format!("filters.{shown}")
}

fn check_path_syntax(path: &str) -> Result<(), FieldError> {
    let invalid = |message: &str| Err(FieldError::new(field(path), message));
    if path.chars().count() > MAX_PATH_CHARS {
        return invalid("path is too long");
    }
    let mut parts = segments(path);
    if parts.next() != Some(ROOT) {
        return invalid("path must start with \"data.\"");
    }
    let mut below_root = 0;
    for part in parts {
        let valid = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return invalid(
                "path segments are field names (letters, digits, _ and -) joined by dots",
            );
        }
        below_root += 1;
    }
    if below_root == 0 {
        return invalid("path must name a field below \"data\"");
    }
    Ok(())
}

fn parse_condition(raw: &Value) -> Result<Condition, String> {
    if let Value::Object(object) = raw {
        let values = match (object.len(), object.get("in")) {
            (1, Some(Value::Array(values))) => values,
            _ => return Err(r#"must be a value, or {"in": [values]}"#.into()),
        };
        if values.is_empty() || values.len() > MAX_IN_VALUES {
            return Err(format!("\"in\" must list 1-{MAX_IN_VALUES} values"));
        }
        values.iter().try_for_each(check_scalar)?;
        return Ok(Condition::In {
            values: values.clone(),
        });
    }
    check_scalar(raw)?;
    Ok(Condition::Equals(raw.clone()))
}

fn check_scalar(value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) if text.chars().count() > MAX_STRING_CHARS => Err(format!(
            "strings are compared up to {MAX_STRING_CHARS} characters long"
        )),
        Value::Array(_) | Value::Object(_) => {
            Err("values are strings, numbers, booleans or null".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::catalog::EventMetadata;
    use crate::ids::{EventId, TraceId};

    fn parse(raw: Value) -> Result<Filters, FieldError> {
        match raw {
            Value::Object(map) => Filters::parse(&map),
            _ => panic!("test filters are objects"),
        }
    }

    fn event(event_type: EventType, data: Value) -> Event {
        Event::new(
            EventId::generate(),
            event_type,
            data,
            EventMetadata::new(TraceId::generate()),
        )
    }

    fn only(t: EventType) -> Vec<EventFilter> {
        vec![EventFilter::Only(t)]
    }

    #[test]
    fn equality_and_in_match_and_a_missing_path_does_not() {
        let filters = parse(json!({
            "data.escalation_priority": {"in": ["high", "urgent"]},
            "data.user_id": "u1",
        }))
        .unwrap();
        let escalated = |priority: &str, user: &str| {
            event(
                EventType::ChatEscalated,
                json!({"user_id": user, "escalation_priority": priority}),
            )
        };
        assert!(filters.matches(&escalated("urgent", "u1")));
        assert!(filters.matches(&escalated("high", "u1")));
        assert!(!filters.matches(&escalated("low", "u1")));
        assert!(!filters.matches(&escalated("high", "u2")));
        let missing = event(EventType::ChatEscalated, json!({"user_id": "u1"}));
        assert!(!filters.matches(&missing));
        assert!(Filters::default().matches(&missing));
    }

    #[test]
    fn nested_paths_nulls_and_numbers() {
        let filters = parse(json!({
            "data.metadata.source": "web",
            "data.chunks_count": 3,
            "data.external_document_id": null,
        }))
        .unwrap();
        let indexed = |source: Value, chunks: Value| {
            event(
                EventType::KnowledgeDocumentIndexed,
                json!({"metadata": {"source": source}, "chunks_count": chunks,
                       "external_document_id": null}),
            )
        };
        assert!(filters.matches(&indexed(json!("web"), json!(3))));
        assert!(filters.matches(&indexed(json!("web"), json!(3.0))));
        assert!(!filters.matches(&indexed(json!("mail"), json!(3))));
        assert!(!filters.matches(&indexed(json!(["web"]), json!(3))));
    }

    #[test]
    fn the_form_is_checked_and_each_error_names_its_path() {
        let field_of = |raw: Value| parse(raw).unwrap_err().field;
        assert_eq!(field_of(json!({"source": "web"})), "filters.source");
        assert_eq!(field_of(json!({"data": "web"})), "filters.data");
        assert_eq!(field_of(json!({"data..a": 1})), "filters.data..a");
        assert_eq!(field_of(json!({"data.a b": 1})), "filters.data.a b");
        assert_eq!(field_of(json!({"data.a": [1]})), "filters.data.a");
        assert_eq!(field_of(json!({"data.a": {"in": []}})), "filters.data.a");
        assert_eq!(
            field_of(json!({"data.a": {"in": [1], "not": 2}})),
            "filters.data.a"
        );
        assert_eq!(field_of(json!({"data.a": {"in": [{}]}})), "filters.data.a");
        let too_many: serde_json::Map<String, Value> = (0..=MAX_FILTERS)
            .map(|i| (format!("data.f{i}"), json!(1)))
            .collect();
        assert_eq!(Filters::parse(&too_many).unwrap_err().field, "filters");
        let long = format!("data.{}", "a".repeat(MAX_PATH_CHARS));
        let long = serde_json::Map::from_iter([(long, json!(1))]);
        assert!(Filters::parse(&long).is_err());
    }

    #[test]
    fn paths_must_exist_in_a_subscribed_type() {
        let priority = parse(json!({"data.escalation_priority": "high"})).unwrap();
        assert!(
            priority
                .check_paths(&only(EventType::ChatEscalated))
                .is_ok()
        );
        let refused = priority
            .check_paths(&only(EventType::SessionEnded))
            .unwrap_err();
        assert_eq!(refused.field, "filters.data.escalation_priority");
        assert!(priority.check_paths(&[EventFilter::All]).is_ok());
        assert!(
            priority
                .check_paths(&[
                    EventFilter::Only(EventType::SessionEnded),
                    EventFilter::Only(EventType::ChatEscalated),
                ])
                .is_ok()
        );
        let unknown = parse(json!({"data.nonsense": 1})).unwrap();
        assert!(unknown.check_paths(&[EventFilter::All]).is_err());
        let free_form = parse(json!({"data.metadata.source": "web"})).unwrap();
        assert!(
            free_form
                .check_paths(&only(EventType::KnowledgeDocumentIndexed))
                .is_ok()
        );
    }

    #[test]
    fn filters_round_trip_as_stored() {
        let filters = parse(json!({
            "data.user_id": "u1",
            "data.escalation_priority": {"in": ["high"]},
        }))
        .unwrap();
        let stored = serde_json::to_string(&filters).unwrap();
        assert_eq!(
            stored,
            r#"{"data.escalation_priority":{"in":["high"]},"data.user_id":"u1"}"#
        );
        assert_eq!(serde_json::from_str::<Filters>(&stored).unwrap(), filters);
    }
}
