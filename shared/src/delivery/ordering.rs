//! Ordered delivery per chat session, per webhook (`ordering: "session"`).
//!
//! A webhook that asks for it gets the events of one chat session (events
//! whose `data.session_id` names one) in the order they were published,
//! even when some attempts fail and are retried. Events without a session
//! are not ordered, and neither is anything across sessions or webhooks:
//! a failing event holds back only the later events of its own session
//! for its own webhook.
//!
//! # Design
//!
//! Each (webhook, session) has a *line* in Redis: a sorted set of delivery
//! ids scored by a sequence number, plus the counter that hands the numbers
//! out (`keys::ordering_line`, under the webhook's hash tag).
//!
//! - **Publish** appends each ordered delivery to its line before its job
//!   is queued ([`Sequences::append`]: idempotent per delivery id, so a
//!   publishing redo keeps its number).
//! - **Worker**, before sending, asks whether its delivery heads its line
//!   ([`Sequences::check`], one script). The head is sent; any other is
//!   deferred (the queue's defer: not an attempt, no retry used up) for
//!   [`wait_for`]: a short step per delivery ahead of it, or until the
//!   head's next retry when the head is failing, so a line behind a failing
//!   receiver does not poll it. A head whose record is over (delivered,
//!   dead-lettered, cancelled) or gone is dropped by the waiter, which then
//!   asks again.
//! - **Settling** the head (delivered, or dead-lettered by `on_dead`)
//!   removes it from its line ([`Sequences::release`]); the next one goes
//!   at its next check, at most one step later.
//!   Waking the next job at once is not possible from here: it sits in the
//!   queue's delayed set as bytes only the runtime knows.
//!
//! What this promises: deliveries that are *delivered* arrive in order. A
//! dead-lettered delivery is skipped (the next one goes); replaying it later
//! is the administrator's decision and sends it out of order: a replayed
//! (or manually retried) delivery is no longer in its line and waits for
//! nothing. Deleting the webhook cancels the line's deliveries.
//!
//! Crash safety: nothing is popped before its record is over, and a record
//! that is over is popped by whoever meets it at the head, so a worker that
//! dies between recording a success and popping leaves no wedge. A head
//! whose worker died is still a job in the queue: it is reclaimed and
//! retried or dead-lettered, either of which releases the line. A head
//! still `queued` after [`UNSTARTED_LIMIT`] (its job was lost: a publish
//! cut short between the line and the queue and never redone) is dropped
//! too. Lines
//! expire `delivery.history_ttl` after their last append or send (a wait
//! does not keep one alive), so abandoned sessions leave nothing behind.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::config::KeyPrefix;
use crate::delivery::history::{DeliveryRecord, DeliveryStatus};
use crate::events::catalog::Event;
use crate::ids::{DeliveryId, SessionId, WebhookId};
use crate::keys;
use crate::store::StoreError;

/// How a webhook's deliveries are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrdering {
    /// No order is kept: each delivery goes as soon as it can.
    #[default]
    None,
    /// The events of one chat session arrive in the order they were
    /// produced; other sessions and events without one are not held.
    Session,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ordering: use \"none\" or \"session\"")]
pub struct UnknownOrdering(pub String);

impl DeliveryOrdering {
    pub fn parse(text: &str) -> Result<Self, UnknownOrdering> {
        match text {
            "none" => Ok(DeliveryOrdering::None),
            "session" => Ok(DeliveryOrdering::Session),
            other => Err(UnknownOrdering(other.chars().take(100).collect())),
        }
    }

    pub fn is_none(&self) -> bool {
        *self == DeliveryOrdering::None
    }

    /// The line `event` joins for a webhook ordered like this, if any.
    pub fn line_of(self, event: &Event) -> Option<SessionId> {
        match self {
            DeliveryOrdering::None => None,
            DeliveryOrdering::Session => session_of(event),
        }
    }
}

/// The chat session an event is about: its `data.session_id`, when that is
/// a valid session id (`error.occurred` of a delivery has none, of a
/// session job it may be null).
pub fn session_of(event: &Event) -> Option<SessionId> {
    event
        .data
        .get("session_id")
        .and_then(serde_json::Value::as_str)
        .and_then(|id| SessionId::parse(id).ok())
}

/// How long a waiter stays away per delivery ahead of it.
pub const WAIT_STEP: Duration = Duration::from_millis(50);
/// The longest a waiter stays away: a line released by a replay, a discard
/// or an expiry is noticed within it.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long a delivery with `ahead` deliveries before it waits, when the
/// head's next retry is `head_retry_in` away (if it is failing).
pub fn wait_for(ahead: u64, head_retry_in: Option<Duration>) -> Duration {
    let steps = u32::try_from(ahead).unwrap_or(u32::MAX);
    let behind = WAIT_STEP.saturating_mul(steps);
    head_retry_in
        .map_or(behind, |retry| retry.max(behind))
        .clamp(WAIT_STEP, MAX_WAIT)
}

/// How long a head may stay `queued`, never attempted, before those behind
/// it stop waiting: far beyond any backlog, yet not the line's whole TTL.
pub const UNSTARTED_LIMIT: Duration = Duration::from_secs(3600);

/// What the head of a line means for the deliveries behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadState {
    /// It holds nothing back any more: delivered, dead-lettered, cancelled,
    /// its record expired, or never started within [`UNSTARTED_LIMIT`].
    Over,
    /// Still to be delivered; when failing, its next retry is this far off.
    Pending { retry_in: Option<Duration> },
}

/// Judges a head by its delivery record (`None`: there is none).
pub fn head_state(record: Option<&DeliveryRecord>, now: DateTime<Utc>) -> HeadState {
    let Some(record) = record else {
        return HeadState::Over;
    };
    let unstarted_for = (now - record.updated_at).to_std().unwrap_or_default();
    if record.status.is_final()
        || (record.status == DeliveryStatus::Queued && unstarted_for > UNSTARTED_LIMIT)
    {
        return HeadState::Over;
    }
    HeadState::Pending {
        retry_in: record.next_retry.and_then(|at| (at - now).to_std().ok()),
    }
}

/// Where a delivery stands in its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Not in a line (never ordered, released after it was dead-lettered,
    /// or expired): nothing to wait for.
    Free,
    /// First in its line: send it.
    Head { sequence: u64 },
    /// `ahead` deliveries before it, `head` the first of them.
    Wait { ahead: u64, head: DeliveryId },
}

/// KEYS: line, counter. ARGV: delivery id, TTL ms. Returns the delivery's
/// number, handing out the next one unless it has one.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not n then
  n = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], n, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return tonumber(n)
",
    )
});

/// KEYS: line, counter. ARGV: delivery id, TTL ms. Returns {"free"},
/// {"head", n} (and keeps the line alive) or {"wait", ahead, head id}.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not n then
  return {'free'}
end
local ahead = redis.call('ZRANK', KEYS[1], ARGV[1])
if ahead == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {'head', n}
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
return {'wait', tostring(ahead), head[1]}
",
    )
});

/// The lines of ordered webhooks, in Redis.
#[derive(Clone)]
pub struct Sequences {
    conn: ConnectionManager,
    prefix: KeyPrefix,
    ttl: Duration,
}

impl Sequences {
    /// `ttl`: how long a line outlives its last append or send.
    pub fn new(conn: ConnectionManager, prefix: KeyPrefix, ttl: Duration) -> Self {
        Self { conn, prefix, ttl }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn line(&self, webhook: &WebhookId, session: &SessionId) -> String {
        keys::ordering_line(&self.prefix, webhook.as_str(), session.as_str())
    }

    fn counter(&self, webhook: &WebhookId, session: &SessionId) -> String {
        keys::ordering_counter(&self.prefix, webhook.as_str(), session.as_str())
    }

    /// Puts a delivery at the end of its line (where it stays if it is in
    /// it already); its sequence number, from 1.
    pub async fn append(
        &self,
        webhook: &WebhookId,
        session: &SessionId,
        delivery: &DeliveryId,
    ) -> Result<u64, StoreError> {
        Ok(APPEND
            .key(self.line(webhook, session))
            .key(self.counter(webhook, session))
            .arg(delivery.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Where a delivery stands in its line.
    pub async fn check(
        &self,
        webhook: &WebhookId,
        session: &SessionId,
        delivery: &DeliveryId,
    ) -> Result<Turn, StoreError> {
        let reply: Vec<String> = CHECK
            .key(self.line(webhook, session))
            .key(self.counter(webhook, session))
            .arg(delivery.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        parse_turn(&reply)
            .ok_or_else(|| StoreError::Malformed(format!("ordering script replied {reply:?}")))
    }

    /// Takes a delivery out of its line (it is over), letting the next go.
    pub async fn release(
        &self,
        webhook: &WebhookId,
        session: &SessionId,
        delivery: &DeliveryId,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .zrem(self.line(webhook, session), delivery.as_str())
            .await?;
        Ok(())
    }

    /// Counts one deferral for ordering, for every worker's metrics.
    pub async fn count_wait(&self) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .hincr(keys::ordering_metrics(&self.prefix), "waits", 1)
            .await?;
        Ok(())
    }

    /// Deferrals for ordering so far, all workers.
    pub async fn waits_total(&self) -> Result<u64, StoreError> {
        let waits: Option<u64> = self
            .conn
            .clone()
            .hget(keys::ordering_metrics(&self.prefix), "waits")
            .await?;
        Ok(waits.unwrap_or(0))
    }
}

fn parse_turn(reply: &[String]) -> Option<Turn> {
    match reply {
        [free] if free == "free" => Some(Turn::Free),
        [head, n] if head == "head" => Some(Turn::Head {
            sequence: n.parse().ok()?,
        }),
        [wait, ahead, head] if wait == "wait" => Some(Turn::Wait {
            ahead: ahead.parse().ok()?,
            head: DeliveryId::parse(head).ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::catalog::{EventMetadata, EventType};
    use crate::ids::{EventId, TraceId};

    #[test]
    fn orderings_parse_by_name_only() {
        assert_eq!(
            DeliveryOrdering::parse("session"),
            Ok(DeliveryOrdering::Session)
        );
        assert_eq!(DeliveryOrdering::parse("none"), Ok(DeliveryOrdering::None));
        for bad in ["Session", "", "fifo"] {
            assert!(DeliveryOrdering::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(DeliveryOrdering::default(), DeliveryOrdering::None);
    }

    #[test]
    fn only_events_naming_a_session_join_a_line() {
        let event = |data| {
            Event::new(
                EventId::generate(),
                EventType::SessionEnded,
                data,
                EventMetadata::new(TraceId::generate()),
            )
        };
        let with = event(json!({"session_id": "sess_abc"}));
        assert_eq!(
            DeliveryOrdering::Session
                .line_of(&with)
                .map(|s| s.to_string()),
            Some("sess_abc".to_owned())
        );
        assert_eq!(DeliveryOrdering::None.line_of(&with), None);
        for data in [
            json!({"session_id": null}),
            json!({"document_id": "doc_1"}),
            json!({"session_id": "not a {session}"}),
        ] {
            assert_eq!(DeliveryOrdering::Session.line_of(&event(data)), None);
        }
    }

    #[test]
    fn waits_grow_with_the_line_and_follow_a_failing_head() {
        assert_eq!(wait_for(1, None), WAIT_STEP);
        assert_eq!(wait_for(4, None), WAIT_STEP * 4);
        assert_eq!(wait_for(u64::MAX, None), MAX_WAIT);
        let retry = Duration::from_secs(2);
        assert_eq!(wait_for(1, Some(retry)), retry);
        assert_eq!(wait_for(1, Some(Duration::ZERO)), WAIT_STEP);
        assert_eq!(wait_for(1, Some(Duration::from_secs(3600))), MAX_WAIT);
    }

    #[test]
    fn a_head_holds_back_until_its_record_is_over_or_lost() {
        let now = Utc::now();
        let record = |status, age_secs: i64| {
            let mut r = DeliveryRecord::queued(
                DeliveryId::parse("dlv_h").unwrap(),
                WebhookId::parse("webhook_w").unwrap(),
                Event::new(
                    EventId::generate(),
                    EventType::SessionEnded,
                    json!({}),
                    EventMetadata::new(TraceId::generate()),
                ),
                1,
            );
            r.status = status;
            r.updated_at = now - chrono::Duration::seconds(age_secs);
            r
        };
        assert_eq!(head_state(None, now), HeadState::Over);
        for over in [
            DeliveryStatus::Success,
            DeliveryStatus::Dead,
            DeliveryStatus::Cancelled,
        ] {
            assert_eq!(head_state(Some(&record(over, 0)), now), HeadState::Over);
        }
        let pending = HeadState::Pending { retry_in: None };
        assert_eq!(
            head_state(Some(&record(DeliveryStatus::Queued, 60)), now),
            pending
        );
        let lost = UNSTARTED_LIMIT.as_secs() as i64 + 1;
        assert_eq!(
            head_state(Some(&record(DeliveryStatus::Queued, lost)), now),
            HeadState::Over
        );
        // Long in progress or failing is the queue's to settle, not ours.
        assert_eq!(
            head_state(Some(&record(DeliveryStatus::InProgress, lost)), now),
            pending
        );
        let mut failing = record(DeliveryStatus::Failed, 0);
        failing.next_retry = Some(now + chrono::Duration::seconds(5));
        assert_eq!(
            head_state(Some(&failing), now),
            HeadState::Pending {
                retry_in: Some(Duration::from_secs(5))
            }
        );
        failing.next_retry = Some(now - chrono::Duration::seconds(5));
        assert_eq!(head_state(Some(&failing), now), pending);
    }

    #[test]
    fn script_replies_are_read_strictly() {
        let s = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_turn(&s(&["free"])), Some(Turn::Free));
        assert_eq!(
            parse_turn(&s(&["head", "3"])),
            Some(Turn::Head { sequence: 3 })
        );
        assert_eq!(
            parse_turn(&s(&["wait", "2", "dlv_x"])),
            Some(Turn::Wait {
                ahead: 2,
                head: DeliveryId::parse("dlv_x").unwrap(),
            })
        );
        for bad in [s(&[]), s(&["head", "x"]), s(&["wait", "1", "nope"])] {
            assert_eq!(parse_turn(&bad), None, "{bad:?}");
        }
    }
}
