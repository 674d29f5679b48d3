//! Prefixed, time-sortable identifiers (`webhook_…`, `evt_…`, `dlv_…`).
//!
//! Each kind of id is its own type, so a delivery id can never be passed
//! where a webhook id is expected, and each is parsed once at the edge: a
//! value of these types always has the right prefix and a sane body.

pub use queue::ids::InvalidId;
use queue::prefixed_id;
pub use queue::{DeadLetterId, InvalidTraceId, JobId, TraceId};

/// Shown in the OpenAPI document as the string each id serializes to.
macro_rules! string_schema {
    ($($name:ident),*) => {$(
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <String as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

prefixed_id!(
    /// A registered webhook (one integration).
    WebhookId, "webhook", "webhook"
);
prefixed_id!(
    /// One outbound event; the same for every attempt and replay.
    EventId, "evt", "event"
);
prefixed_id!(
    /// One event sent to one webhook (with all its attempts).
    DeliveryId, "dlv", "delivery"
);
prefixed_id!(
    /// One chat conversation: stable per (webhook, thread).
    SessionId, "sess", "session"
);
prefixed_id!(
    /// One knowledge-base document (all its versions).
    DocumentId, "doc", "document"
);
prefixed_id!(
    /// One accepted upload of a document, before it is indexed.
    StagingId, "staging", "staging"
);

string_schema!(
    WebhookId, EventId, DeliveryId, SessionId, DocumentId, StagingId
);

impl EventId {
    /// The id of an event caused by a job, derived from the job's id so a
    /// job that is run again after a crash emits the same event id and
    /// receivers can de-duplicate.
    pub fn derived(job: &JobId, purpose: &str) -> Self {
        let body = job.as_str().trim_start_matches("job_");
        Self(format!("evt_{body}_{purpose}"))
    }

    /// The job this event was [derived](EventId::derived) from for
    /// `purpose`, if it was: lets an integration that only saw the event
    /// (`chat.response.generated`) name the answer it is about.
    pub fn source_job(&self, purpose: &str) -> Option<JobId> {
        let body = self
            .as_str()
            .strip_prefix("evt_")?
            .strip_suffix(purpose)?
            .strip_suffix('_')?;
        JobId::parse(&format!("job_{body}")).ok()
    }
}

impl EventId {
    /// The `error.occurred` event of one dead-lettering: the same however
    /// often its notice is redone, new when a replayed job dies again.
    pub fn for_dead_letter(dead: &DeadLetterId) -> Self {
        let body = dead.as_str().trim_start_matches("dead_");
        Self(format!("evt_{body}_dead"))
    }
}

impl DeliveryId {
    /// The id of the n-th manual retry of a delivery (`dlv_…_retry_n`);
    /// a retry of a retry is numbered on the first delivery, not nested.
    pub fn retry_of(original: &DeliveryId, n: u32) -> Self {
        Self(format!("{}_retry_{n}", original.root().as_str()))
    }

    /// The delivery a manual retry was made of (itself if it is none):
    /// the one whose counter numbers every retry of it.
    pub fn root(&self) -> DeliveryId {
        match self.0.split_once("_retry_") {
            Some((base, _)) => Self(base.to_owned()),
            None => self.clone(),
        }
    }

    /// Deterministic per (event, webhook): publishing the same event twice
    /// (a job redone after a crash) writes the same delivery record.
    pub fn for_event(event: &EventId, webhook: &WebhookId) -> Self {
        let event_body = event.as_str().trim_start_matches("evt_");
        let webhook_body = webhook.as_str().trim_start_matches("webhook_");
        Self(format!("dlv_{event_body}_{webhook_body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_event_names_its_job() {
        let job = JobId::generate();
        let event = EventId::derived(&job, "response");
        assert_eq!(event.source_job("response"), Some(job.clone()));
        assert_eq!(event.source_job("escalated"), None);
        assert_eq!(EventId::generate().source_job("response"), None);
        assert_eq!(
            EventId::parse("evt_response")
                .unwrap()
                .source_job("response"),
            None
        );
    }

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let a = WebhookId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = WebhookId::generate();
        assert!(a < b);
        assert_eq!(WebhookId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn wrong_prefix_or_hostile_body_is_refused() {
        assert!(WebhookId::parse("evt_123").is_err());
        assert!(WebhookId::parse("webhook_").is_err());
        assert!(WebhookId::parse("webhook_a b").is_err());
        assert!(WebhookId::parse("webhook_../../x").is_err());
        assert!(WebhookId::parse("webhook_abc123").is_ok());
    }

    #[test]
    fn retry_ids_follow_the_seed() {
        let original = DeliveryId::parse("dlv_123").unwrap();
        assert_eq!(
            DeliveryId::retry_of(&original, 1).as_str(),
            "dlv_123_retry_1"
        );
        let first = DeliveryId::retry_of(&original, 1);
        assert_eq!(DeliveryId::retry_of(&first, 2).as_str(), "dlv_123_retry_2");
        assert_eq!(first.root(), original);
        assert_eq!(original.root(), original);
    }
}
