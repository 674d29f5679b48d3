//! Turning off a webhook that keeps failing, and telling the people who
//! operate the integrations (`webhook.disabled`, `webhook.enabled`).
//!
//! The rule: a webhook is disabled when its deliveries have failed
//! *continuously* — no successful attempt since the first failure of the
//! current streak — for `delivery.disable_after`, AND at least
//! `delivery.disable_min_failures` attempts failed in that streak. Both,
//! because each alone misjudges: a webhook that gets one event a week
//! would be judged on a single failure by time alone, and a minute's
//! outage under load would reach any count. A `410 Gone` disables at once
//! (the worker's `GONE_REASON`).
//!
//! The streak itself is kept in Redis (`keys::webhook_streak`), updated in
//! the same script as each attempt's stats so every worker adds to one
//! streak (`DeliveryStore::save_attempt`); any success deletes it, and so
//! does re-enabling (a fresh start: an old streak would disable again on
//! the first failure).

use std::time::Duration;

use chrono::{DateTime, Utc};
use queue::Job;

use crate::config::DeliverySettings;
use crate::delivery::publish::{PublishError, Publisher};
use crate::delivery::replays::{ReplayError, Replayer, Work};
use crate::events::catalog::{Event, EventFilter, EventMetadata, EventType, PayloadError};
use crate::events::payloads::{FailureStreakView, WebhookDisabled, WebhookEnabled};
use crate::ids::{DeliveryId, EventId, TraceId, WebhookId};
use crate::jobs::DeliverEvent;
use crate::webhooks::registry::Webhook;

/// The failures of a webhook since its last success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureStreak {
    /// When the first failed attempt of the streak was recorded.
    pub since: DateTime<Utc>,
    /// Failed attempts since then.
    pub failures: u64,
}

/// `delivery.disable_after` and `delivery.disable_min_failures`.
#[derive(Clone, Copy, Debug)]
pub struct DisablePolicy {
    pub after: Duration,
    pub min_failures: u64,
}

impl DisablePolicy {
    pub fn from_settings(delivery: &DeliverySettings) -> Self {
        Self {
            after: delivery.disable_after,
            min_failures: delivery.disable_min_failures,
        }
    }

    /// Whether `streak` at `now` is reason enough to disable (see the
    /// module doc for why both bounds).
    pub fn should_disable(&self, streak: &FailureStreak, now: DateTime<Utc>) -> bool {
        let failing_for = (now - streak.since).to_std().unwrap_or_default();
        streak.failures >= self.min_failures && failing_for >= self.after
    }

    /// The `disabled_reason` recorded on the webhook.
    pub fn reason(&self, streak: &FailureStreak) -> String {
        format!(
            "every delivery failed since {} ({} failed attempts); webhook disabled",
            crate::time::rfc3339(streak.since),
            streak.failures
        )
    }
}

fn metadata(trace_id: &TraceId) -> EventMetadata {
    EventMetadata::new(trace_id.clone())
}

/// `webhook.disabled` for `webhook` (as it was just turned off).
pub fn disabled_event(
    webhook: &Webhook,
    reason: &str,
    streak: Option<&FailureStreak>,
    trace_id: &TraceId,
) -> Result<Event, PayloadError> {
    Event::of(
        EventId::generate(),
        &WebhookDisabled {
            webhook_id: webhook.webhook_id.clone(),
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            reason: reason.to_owned(),
            disabled_at: webhook.updated_at,
            failure_streak: streak.map(|s| FailureStreakView {
                since: s.since,
                failures: s.failures,
            }),
        },
        metadata(trace_id),
    )
}

/// `webhook.enabled` for `webhook`, given why it had been off (if the
/// system said) and how many of its dead letters were replayed.
pub fn enabled_event(
    webhook: &Webhook,
    previous_reason: Option<&str>,
    dead_letters_replayed: usize,
    trace_id: &TraceId,
) -> Result<Event, PayloadError> {
    Event::of(
        EventId::generate(),
        &WebhookEnabled {
            webhook_id: webhook.webhook_id.clone(),
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            reason: previous_reason.map(str::to_owned),
            enabled_at: webhook.updated_at,
            dead_letters_replayed,
        },
        metadata(trace_id),
    )
}

/// Whether `webhook` is an operational subscriber for news about
/// `subject`: active, listing the type by name (never through `"*"`,
/// see `EventType::is_operational`), and not the subject itself (the
/// webhook a notice is about is not where anyone reads it).
pub fn is_operational_subscriber(webhook: &Webhook, event: EventType, subject: &WebhookId) -> bool {
    webhook.active
        && &webhook.webhook_id != subject
        && webhook.events.contains(&EventFilter::Only(event))
}

/// Sends an operational event about `subject` to its operational
/// subscribers.
pub async fn announce(
    publisher: &Publisher,
    event: Event,
    subject: &WebhookId,
) -> Result<Vec<DeliveryId>, PublishError> {
    publisher
        .publish_to(event, |w, event| {
            is_operational_subscriber(w, event.event_type, subject)
        })
        .await
}

/// Why `webhook.disabled` says an administrator's `PATCH active=false`
/// turned a webhook off.
pub const ADMIN_REASON: &str = "disabled by an administrator";

/// What an administrator's change of `active` sets in motion, once the
/// changed webhook is saved: turned on, its failure streak starts afresh
/// and `webhook.enabled` goes out; turned off, `webhook.disabled`. The
/// change stands whatever happens here, so a failure is logged rather than
/// answered (a client retrying the change would find nothing to change).
pub async fn after_admin_change(
    publisher: &Publisher,
    before: &Webhook,
    after: &Webhook,
    trace_id: &TraceId,
) {
    let event = match (before.active, after.active) {
        (false, true) => {
            if let Err(e) = publisher.deliveries.reset_streak(&after.webhook_id).await {
                tracing::warn!(webhook_id = %after.webhook_id, error = %e, "could not reset a failure streak");
            }
            enabled_event(after, before.disabled_reason.as_deref(), 0, trace_id)
        }
        (true, false) => disabled_event(after, ADMIN_REASON, None, trace_id),
        _ => return,
    };
    announce_logged(publisher, event, &after.webhook_id).await;
}

/// [`announce`], logging a failure: what it announces has happened.
pub async fn announce_logged(
    publisher: &Publisher,
    event: Result<Event, PayloadError>,
    subject: &WebhookId,
) {
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(webhook_id = %subject, error = %e, "could not build an operational event");
            return;
        }
    };
    let event_type = event.event_type;
    if let Err(e) = announce(publisher, event, subject).await {
        tracing::warn!(webhook_id = %subject, %event_type, error = %e, "could not announce");
    }
}

/// What [`enable`] did.
#[derive(Debug)]
pub struct Enabled {
    pub webhook: Webhook,
    /// Its dead letters re-queued (when asked).
    pub dead_letters_replayed: usize,
}

/// Turns `webhook` on (an administrator's `POST …/enable`): active, its
/// `disabled_reason` and failure streak cleared, its dead letters replayed
/// when asked (after it is active, so the replayed deliveries find it so),
/// and `webhook.enabled` announced if it was off.
pub async fn enable(
    replayer: &Replayer,
    before: Webhook,
    replay_dead_letters: bool,
    trace_id: &TraceId,
) -> Result<Enabled, ReplayError> {
    let publisher = replayer.publisher();
    let mut webhook = before.clone();
    if !before.active {
        webhook.active = true;
        webhook.disabled_reason = None;
        webhook.updated_at = Utc::now();
        publisher.webhooks.save(&webhook).await?;
        publisher
            .deliveries
            .reset_streak(&webhook.webhook_id)
            .await?;
    }
    let replayed = if replay_dead_letters {
        let filter = queue::DeadLetterFilter {
            job_type: Some(DeliverEvent::QUEUE.to_owned()),
            labels: [(
                crate::jobs::label::WEBHOOK_ID.to_owned(),
                webhook.webhook_id.to_string(),
            )]
            .into(),
            ..queue::DeadLetterFilter::default()
        };
        let tally = replayer.run_now(Work::DeadLetters(filter), None).await?;
        usize::try_from(tally.replayed).unwrap_or(usize::MAX)
    } else {
        0
    };
    if !before.active {
        let event = enabled_event(
            &webhook,
            before.disabled_reason.as_deref(),
            replayed,
            trace_id,
        );
        announce_logged(publisher, event, &webhook.webhook_id).await;
    }
    Ok(Enabled {
        webhook,
        dead_letters_replayed: replayed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DisablePolicy {
        DisablePolicy {
            after: Duration::from_secs(5 * 24 * 3600),
            min_failures: 20,
        }
    }

    #[test]
    fn a_streak_disables_only_when_long_enough_and_with_enough_failures() {
        let now = Utc::now();
        let streak = |days: i64, failures| FailureStreak {
            since: now - chrono::Duration::days(days),
            failures,
        };
        assert!(policy().should_disable(&streak(5, 20), now));
        assert!(policy().should_disable(&streak(30, 500), now));
        // Long but thin: a webhook that rarely gets events.
        assert!(!policy().should_disable(&streak(30, 19), now));
        // Many but short: an outage under load.
        assert!(!policy().should_disable(&streak(4, 10_000), now));
        // A clock that went back never counts as time failing.
        let future = FailureStreak {
            since: now + chrono::Duration::days(9),
            failures: 100,
        };
        assert!(!policy().should_disable(&future, now));
        assert!(
            policy()
                .reason(&streak(5, 20))
                .contains("20 failed attempts")
        );
    }

    #[test]
    fn operational_news_goes_to_explicit_subscribers_other_than_the_subject() {
        let subject = WebhookId::parse("webhook_subject").unwrap();
        let mut hook: Webhook = serde_json::from_value(serde_json::json!({
            "webhook_id": "webhook_ops",
            "name": "ops",
            "url": "https://ops.example/hook",
            "events": ["webhook.disabled"],
            "secret": "a_long_enough_secret_123",
            "active": true,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        }))
        .unwrap();
        assert!(is_operational_subscriber(
            &hook,
            EventType::WebhookDisabled,
            &subject
        ));
        assert!(!is_operational_subscriber(
            &hook,
            EventType::WebhookEnabled,
            &subject
        ));
        assert!(!is_operational_subscriber(
            &hook,
            EventType::WebhookDisabled,
            &hook.webhook_id.clone()
        ));
        hook.events = vec![EventFilter::All];
        assert!(!is_operational_subscriber(
            &hook,
            EventType::WebhookDisabled,
            &subject
        ));
        hook.events = vec![EventFilter::Only(EventType::WebhookDisabled)];
        hook.active = false;
        assert!(!is_operational_subscriber(
            &hook,
            EventType::WebhookDisabled,
            &subject
        ));
    }
}
