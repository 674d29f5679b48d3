//! The Redis side of webhook protection, against a real Redis: the GCRA
//! script of `rate_limit` on a clock the test controls, and the failure
//! streak `DeliveryStore::save_attempt` keeps for `auto_disable`.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shared::delivery::history::{Attempt, DeliveryRecord, DeliveryStatus};
use shared::events::catalog::{Event, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId, TraceId, WebhookId};
use shared::services::Services;
use shared::webhooks::rate_limit::Admission::{Defer, Go};
use testkit::{TestRedis, test_settings};

const T0: u64 = 1_764_000_000_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn services(redis: &TestRedis) -> Services {
    Services::connect(test_settings(&redis.url())).expect("services")
}

fn webhook(n: u32) -> WebhookId {
    WebhookId::parse(&format!("webhook_{n}")).unwrap()
}

#[tokio::test]
async fn slots_are_one_interval_apart_up_to_the_horizon_then_deferred_in_single_file() {
    let redis = TestRedis::start();
    let limiter = services(&redis).rate_limiter;
    let hook = webhook(1);
    // 20/s: one slot every 50 ms; slots up to 400 ms ahead are handed out.
    let mut got = Vec::new();
    for _ in 0..11 {
        got.push(limiter.admit_at(&hook, Some(20.0), Some(T0)).await.unwrap());
    }
    let expected: Vec<_> = (0..9)
        .map(|i| Go(ms(50 * i)))
        .chain([Defer(ms(50)), Defer(ms(100))])
        .collect();
    assert_eq!(got, expected);

    // 450 ms on, the next slot is now; deferred ones that come back take
    // the slots in turn, and the line moves on past the ones handed out.
    let later = T0 + 450_000;
    assert_eq!(
        limiter
            .admit_at(&hook, Some(20.0), Some(later))
            .await
            .unwrap(),
        Go(ms(0))
    );
    assert_eq!(
        limiter
            .admit_at(&hook, Some(20.0), Some(later))
            .await
            .unwrap(),
        Go(ms(50))
    );

    // Idle for a while: no burst is saved up, the next one goes at once
    // and the one after it an interval later.
    let idle = T0 + 60_000_000;
    assert_eq!(
        limiter
            .admit_at(&hook, Some(20.0), Some(idle))
            .await
            .unwrap(),
        Go(ms(0))
    );
    assert_eq!(
        limiter
            .admit_at(&hook, Some(20.0), Some(idle))
            .await
            .unwrap(),
        Go(ms(50))
    );
    // Another webhook has its own state.
    assert_eq!(
        limiter
            .admit_at(&webhook(2), Some(20.0), Some(T0))
            .await
            .unwrap(),
        Go(ms(0))
    );
}

#[tokio::test]
async fn a_retry_after_pause_holds_back_limited_and_unlimited_webhooks_and_never_shortens() {
    let redis = TestRedis::start();
    let limiter = services(&redis).rate_limiter;
    let unlimited = webhook(1);
    for _ in 0..3 {
        assert_eq!(
            limiter.admit_at(&unlimited, None, Some(T0)).await.unwrap(),
            Go(Duration::ZERO)
        );
    }
    limiter
        .pause_at(&unlimited, Duration::from_secs(5), Some(T0))
        .await
        .unwrap();
    // A shorter pause later does not cut the first one short.
    limiter
        .pause_at(&unlimited, Duration::from_secs(1), Some(T0))
        .await
        .unwrap();
    assert_eq!(
        limiter
            .admit_at(&unlimited, None, Some(T0 + 1_000_000))
            .await
            .unwrap(),
        Defer(Duration::from_secs(4))
    );
    assert_eq!(
        limiter
            .admit_at(&unlimited, None, Some(T0 + 5_000_000))
            .await
            .unwrap(),
        Go(Duration::ZERO)
    );

    // Limited: the first slot after the pause is where it ends.
    let limited = webhook(2);
    limiter
        .pause_at(&limited, Duration::from_secs(2), Some(T0))
        .await
        .unwrap();
    assert_eq!(
        limiter
            .admit_at(&limited, Some(20.0), Some(T0))
            .await
            .unwrap(),
        Defer(ms(1600))
    );
    let resumed = T0 + 1_600_000;
    assert_eq!(
        limiter
            .admit_at(&limited, Some(20.0), Some(resumed))
            .await
            .unwrap(),
        Go(ms(400))
    );
    assert_eq!(
        limiter
            .admit_at(&limited, Some(20.0), Some(resumed))
            .await
            .unwrap(),
        Defer(ms(50)),
        "the line goes on from where the first deferral was put"
    );
}

#[tokio::test]
async fn redis_clock_is_used_when_no_time_is_given() {
    let redis = TestRedis::start();
    let limiter = services(&redis).rate_limiter;
    let hook = webhook(1);
    assert_eq!(
        limiter.admit(&hook, Some(2.0)).await.unwrap(),
        Go(Duration::ZERO)
    );
    match limiter.admit(&hook, Some(2.0)).await.unwrap() {
        Go(wait) => assert!(wait <= ms(500) && wait > ms(400), "{wait:?}"),
        other => panic!("expected the next slot half a second on, got {other:?}"),
    }
    limiter.pause(&hook, Duration::from_secs(30)).await.unwrap();
    match limiter.admit(&hook, None).await.unwrap() {
        Defer(wait) => assert!(wait > Duration::from_secs(29), "{wait:?}"),
        other => panic!("expected a deferral for the pause, got {other:?}"),
    }
}

fn record(webhook: &WebhookId) -> DeliveryRecord {
    let event = Event::new(
        EventId::generate(),
        EventType::ChatEscalated,
        json!({}),
        EventMetadata::new(TraceId::generate()),
    );
    DeliveryRecord::queued(
        DeliveryId::for_event(&event.event_id, webhook),
        webhook.clone(),
        event,
        1,
    )
}

fn attempted(mut record: DeliveryRecord, n: u32, success: bool) -> DeliveryRecord {
    record.record(
        Attempt {
            attempt: n,
            timestamp: Utc::now(),
            success,
            http_status: Some(if success { 200 } else { 500 }),
            response_time_ms: 1,
            response_body: None,
            error: None,
        },
        if success {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Failed
        },
        None,
    );
    record
}

#[tokio::test]
async fn every_failure_adds_to_one_streak_and_a_success_ends_it() {
    let redis = TestRedis::start();
    let deliveries = services(&redis).deliveries;
    let hook = webhook(1);
    let before = Utc::now() - chrono::Duration::seconds(1);
    let mut streaks = Vec::new();
    // Failures of different deliveries (as different workers would record
    // them) make one streak, which starts at the first.
    for n in 1..=3 {
        let saved = deliveries
            .save_attempt(&attempted(record(&hook), n, false), false)
            .await
            .unwrap();
        streaks.push(saved.streak.expect("a failure reports the streak"));
    }
    assert_eq!(
        streaks.iter().map(|s| s.failures).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(streaks.iter().all(|s| s.since == streaks[0].since));
    assert!(streaks[0].since >= before && streaks[0].since <= Utc::now());

    let success = deliveries
        .save_attempt(&attempted(record(&hook), 1, true), true)
        .await
        .unwrap();
    assert_eq!(success.streak, None);
    let after = deliveries
        .save_attempt(&attempted(record(&hook), 1, false), false)
        .await
        .unwrap();
    assert_eq!(after.streak.map(|s| s.failures), Some(1), "a new streak");

    deliveries.reset_streak(&hook).await.unwrap();
    let fresh = deliveries
        .save_attempt(&attempted(record(&hook), 2, false), false)
        .await
        .unwrap();
    assert_eq!(fresh.streak.map(|s| s.failures), Some(1));
}
