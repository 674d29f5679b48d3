//! Protection of receivers and of the people who run them, end to end with
//! the real worker and real loopback receivers: auto-disable (410 Gone, a
//! failure streak), `webhook.disabled` / `webhook.enabled` to operational
//! subscribers, re-enabling with dead-letter replay, the per-webhook rate
//! limit across two workers, a receiver's `429` + `Retry-After`, and
//! custom headers.

use crate::common::dead_deliveries;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::config::Settings;
use shared::delivery::history::DeliveryStatus;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId};
use shared::services::Services;
use shared::webhooks::auto_disable;
use shared::webhooks::registry::Webhook;
use shared::webhooks::signing::{self, Secret};
use testkit::{Behaviour, PATIENCE, Receiver, TestRedis, spawn_receiver, spawn_worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::delivery::GONE_REASON;

const SECRET: &str = "my_secret_key_12345";

fn settings(redis: &TestRedis, adjust: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = testkit::test_settings(&redis.url());
    adjust(&mut settings);
    settings
}

fn services(settings: &Settings) -> Services {
    Services::connect(settings.clone()).expect("services")
}

async fn register(services: &Services, url: &str, events: &[EventFilter]) -> Webhook {
    testkit::register_webhook(services, url, events.to_vec(), SECRET).await
}

/// A webhook for the people operating the integrations.
async fn operations_desk(services: &Services) -> Receiver {
    let desk = spawn_receiver(Behaviour::AlwaysOk).await;
    register(
        services,
        &desk.url(),
        &[
            EventFilter::Only(EventType::WebhookDisabled),
            EventFilter::Only(EventType::WebhookEnabled),
        ],
    )
    .await;
    desk
}

fn escalation() -> Event {
    Event::new(
        EventId::generate(),
        EventType::ChatEscalated,
        json!({"session_id": "sess_1"}),
        EventMetadata {
            trace_id: "trace-protection".parse().unwrap(),
            correlation_id: None,
        },
    )
}

async fn publish(services: &Services) -> Vec<DeliveryId> {
    services
        .publisher
        .publish(escalation())
        .await
        .expect("publish")
}

async fn stored(services: &Services, webhook: &Webhook) -> Webhook {
    services
        .webhooks
        .get(&webhook.webhook_id)
        .await
        .expect("read webhook")
        .expect("webhook exists")
}

fn event_types(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json()["event_type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn wait_for_status(services: &Services, id: &DeliveryId, status: DeliveryStatus) {
    testkit::wait_until(&format!("{id} to be {status:?}"), PATIENCE, || async {
        services
            .deliveries
            .get(id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.status == status)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_receiver_is_disabled_and_only_explicit_operational_subscribers_are_told() {
    // Given a webhook whose receiver is gone for good, an operations desk
    // subscribed to the operational events, and a catch-all ("*") webhook
    let redis = TestRedis::start();
    let settings = settings(&redis, |_| {});
    let services = services(&settings);
    let gone = spawn_receiver(Behaviour::AlwaysStatus(410)).await;
    let target = register(
        &services,
        &gone.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    let desk = operations_desk(&services).await;
    let everything = spawn_receiver(Behaviour::AlwaysOk).await;
    register(&services, &everything.url(), &[EventFilter::All]).await;
    let _worker = spawn_worker(services.clone()).await;

    // When an event reaches it and it answers 410
    publish(&services).await;

    // Then the desk is told, with the webhook, the reason and the streak
    let notice = desk.wait_for(1, PATIENCE).await[0].json();
    assert_eq!(notice["event_type"], "webhook.disabled");
    let data = &notice["data"];
    assert_eq!(data["webhook_id"], target.webhook_id.as_str());
    assert_eq!(data["name"], target.name);
    assert_eq!(data["url"], gone.url());
    assert_eq!(data["reason"], GONE_REASON);
    assert_eq!(data["failure_streak"]["failures"], 1);
    assert!(data["disabled_at"].as_str().unwrap().ends_with('Z'));
    // and the webhook is off, saying why
    let now = stored(&services, &target).await;
    assert!(!now.active);
    assert_eq!(now.disabled_reason.as_deref(), Some(GONE_REASON));
    // and the catch-all got the escalation but no operational news
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = event_types(&everything);
    assert!(seen.contains(&"chat.escalated".to_owned()), "{seen:?}");
    assert!(!seen.iter().any(|t| t.starts_with("webhook.")), "{seen:?}");
    assert_eq!(gone.requests().len(), 1, "410 is not retried");
    assert_eq!(desk.requests().len(), 1, "announced once");
}

/// Delays short enough for a test: failing continuously for 2 s with at
/// least 3 failed attempts disables.
fn short_streaks(settings: &mut Settings) {
    settings.delivery.disable_after = Duration::from_secs(2);
    settings.delivery.disable_min_failures = 3;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_continuously_past_disable_after_is_disabled() {
    // Given a webhook whose receiver fails everything
    let redis = TestRedis::start();
    let settings = settings(&redis, short_streaks);
    let services = services(&settings);
    let failing = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let target = register(
        &services,
        &failing.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    let desk = operations_desk(&services).await;
    let _worker = spawn_worker(services.clone()).await;

    // When events keep coming and keep failing
    let started = Instant::now();
    while stored(&services, &target).await.active {
        assert!(started.elapsed() < PATIENCE, "never disabled");
        publish(&services).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Then it is disabled only once it had failed for 2 s, and said so
    let notice = desk.wait_for(1, PATIENCE).await;
    let first_failure = failing.requests()[0].received_at;
    let failing_for = notice[0].received_at - first_failure;
    assert!(failing_for >= Duration::from_secs(2), "{failing_for:?}");
    let data = &notice[0].json()["data"];
    assert_eq!(notice[0].json()["event_type"], "webhook.disabled");
    assert!(data["failure_streak"]["failures"].as_u64().unwrap() >= 3);
    let reason = stored(&services, &target).await.disabled_reason.unwrap();
    assert!(reason.contains("failed attempts"), "{reason}");
    assert_eq!(data["reason"], reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_in_between_resets_the_streak() {
    // Given a failing receiver and short streak bounds
    let redis = TestRedis::start();
    let settings = settings(&redis, short_streaks);
    let services = services(&settings);
    let flaky = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let target = register(
        &services,
        &flaky.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    let desk = operations_desk(&services).await;
    let _worker = spawn_worker(services.clone()).await;
    let started = Instant::now();

    // When a delivery fails every attempt (3) at the start,
    let first = publish(&services).await;
    wait_for_status(&services, &first[0], DeliveryStatus::Dead).await;
    // one succeeds a second later,
    tokio::time::sleep(Duration::from_millis(1000)).await;
    flaky.set_behaviour(Behaviour::AlwaysOk);
    let second = publish(&services).await;
    wait_for_status(&services, &second[0], DeliveryStatus::Success).await;
    flaky.set_behaviour(Behaviour::AlwaysStatus(500));
    // and more fail past the 2 s since the first failure
    tokio::time::sleep(Duration::from_millis(2400).saturating_sub(started.elapsed())).await;
    let third = publish(&services).await;
    wait_for_status(&services, &third[0], DeliveryStatus::Dead).await;
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Then the webhook stays on: its streak began after the success
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stored(&services, &target).await.active);
    assert!(desk.requests().is_empty());
    assert_eq!(flaky.requests().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enabling_announces_it_and_replays_the_dead_letters_when_asked() {
    // Given a webhook disabled for 410 Gone, with the events that were on
    // their way parked as dead letters (refused with 410 themselves, or
    // finding it off)
    let redis = TestRedis::start();
    let settings = settings(&redis, |_| {});
    let services = services(&settings);
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(410)).await;
    let target = register(
        &services,
        &receiver.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    let desk = operations_desk(&services).await;
    let _worker = spawn_worker(services.clone()).await;
    for _ in 0..3 {
        publish(&services).await;
    }
    desk.wait_for(1, PATIENCE).await;
    testkit::wait_until("3 dead letters", PATIENCE, || async {
        (dead_deliveries(&services, &target).await.total == 3).then_some(())
    })
    .await;

    // When the receiver is back and an administrator re-enables the
    // webhook asking for its dead letters
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let refused = receiver.requests().len();
    let before = stored(&services, &target).await;
    let replayer = shared::delivery::replays::Replayer::new(
        services.publisher.clone(),
        services.queue.connection(),
        services.settings.redis.key_prefix.clone(),
    );
    let enabled = auto_disable::enable(&replayer, before, true, &"trace-enable".parse().unwrap())
        .await
        .expect("enable");

    // Then it is on, the three events arrive, and the desk is told
    assert!(enabled.webhook.active);
    assert_eq!(enabled.webhook.disabled_reason, None);
    assert_eq!(enabled.dead_letters_replayed, 3);
    let delivered = receiver.wait_for(refused + 3, PATIENCE).await;
    assert!(
        delivered[refused..]
            .iter()
            .all(|r| r.json()["event_type"] == "chat.escalated"),
    );
    let notices = desk.wait_for(2, PATIENCE).await;
    let enabled_notice = notices[1].json();
    assert_eq!(enabled_notice["event_type"], "webhook.enabled");
    assert_eq!(
        enabled_notice["data"]["webhook_id"],
        target.webhook_id.as_str()
    );
    assert_eq!(enabled_notice["data"]["reason"], GONE_REASON);
    assert_eq!(enabled_notice["data"]["dead_letters_replayed"], 3);
    testkit::wait_until("the dead letters to be gone", PATIENCE, || async {
        (dead_deliveries(&services, &target).await.total == 0).then_some(())
    })
    .await;
    assert!(stored(&services, &target).await.active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_together_keep_to_a_webhooks_rate_limit() {
    // Given a webhook limited to 20 deliveries a second and two workers
    let redis = TestRedis::start();
    let settings = settings(&redis, |_| {});
    let services = services(&settings);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let mut target = register(
        &services,
        &receiver.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    target.rate_limit_per_second = Some(20.0);
    services
        .webhooks
        .save(&target)
        .await
        .expect("set the limit");
    let _first = spawn_worker(services.clone()).await;
    let _second = spawn_worker(Services::connect(settings.clone()).expect("services")).await;

    // When 200 events are published at once
    const EVENTS: usize = 200;
    for _ in 0..EVENTS {
        publish(&services).await;
    }

    // Then they arrive at 20/s (on the receiver's clock), none of them
    // counted as a failed attempt for having waited
    let requests = receiver.wait_for(EVENTS, Duration::from_secs(60)).await;
    let span = requests[EVENTS - 1].received_at - requests[0].received_at;
    let rate = (EVENTS - 1) as f64 / span.as_secs_f64();
    eprintln!("rate limit 20/s: measured {rate:.3}/s over {EVENTS} deliveries in {span:?}");
    assert!((rate - 20.0).abs() <= 2.0, "measured {rate}/s");
    // No burst either: no one-second window holds more than the limit
    // plus 10 % and one (a delivery the scheduler started late, followed by
    // one on time, brings two closer than an interval).
    for (i, first) in requests.iter().enumerate() {
        let within = requests[i..]
            .iter()
            .take_while(|r| r.received_at - first.received_at < Duration::from_secs(1))
            .count();
        assert!(within <= 23, "{within} deliveries within a second");
    }
    assert!(
        requests.iter().all(|r| r.json()["delivery_attempt"] == 1),
        "waiting for the limit is not an attempt"
    );
}

/// What [`spawn_busy_receiver`] saw: when each request came and what it
/// answered.
type Arrivals = Arc<Mutex<Vec<(Instant, u16, Value)>>>;

/// A receiver that answers its first request `429` with `Retry-After:
/// <seconds>` and every later one 200. Written on raw TCP because the
/// shared test receiver sets no `Retry-After`.
async fn spawn_busy_receiver(retry_after_secs: u64) -> (String, Arrivals) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buffer = [0u8; 8192];
                let body = loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buffer[..n]);
                    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if raw.len() >= end + 4 + length {
                        break raw[end + 4..end + 4 + length].to_vec();
                    }
                };
                let status = {
                    let mut seen = seen.lock().unwrap();
                    let status = if seen.is_empty() { 429 } else { 200 };
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.push((Instant::now(), status, json));
                    status
                };
                let answer = if status == 429 {
                    format!(
                        "HTTP/1.1 429 Too Many Requests\r\nretry-after: {retry_after_secs}\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned()
                };
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_with_retry_after_nothing_arrives_before_it_has_passed() {
    // Given a receiver that answers 429 with Retry-After: 2 once
    let redis = TestRedis::start();
    let settings = settings(&redis, |_| {});
    let services = services(&settings);
    let (url, arrivals) = spawn_busy_receiver(2).await;
    register(
        &services,
        &url,
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    let _worker = spawn_worker(services.clone()).await;

    // When an event meets the 429, and four more follow at once
    publish(&services).await;
    let refused_at = testkit::wait_until("the 429", PATIENCE, || async {
        arrivals.lock().unwrap().first().map(|a| a.0)
    })
    .await;
    for _ in 0..4 {
        publish(&services).await;
    }

    // Then all five arrive, none before the Retry-After has passed
    let all = testkit::wait_until("five deliveries after the 429", PATIENCE, || async {
        let seen = arrivals.lock().unwrap().clone();
        (seen.len() >= 6).then_some(seen)
    })
    .await;
    for (at, status, body) in &all[1..] {
        assert_eq!(*status, 200);
        let after = *at - refused_at;
        assert!(
            after >= Duration::from_secs(2),
            "a delivery came {after:?} after the 429"
        );
        let attempt = body["delivery_attempt"].as_u64().unwrap();
        assert!(
            attempt <= 2,
            "only the refused one is a second attempt: {body}"
        );
    }
    let second_attempts = all[1..]
        .iter()
        .filter(|(_, _, body)| body["delivery_attempt"] == 2)
        .count();
    assert_eq!(second_attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_arrive_and_cannot_stand_in_for_the_signature() {
    // Given a webhook with its own headers — one of them, written straight
    // into the registry past the API's checks, naming the signature header
    let redis = TestRedis::start();
    let settings = settings(&redis, |_| {});
    let services = services(&settings);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let mut target = register(
        &services,
        &receiver.url(),
        &[EventFilter::Only(EventType::ChatEscalated)],
    )
    .await;
    target.headers = [
        ("x-tenant", "acme"),
        ("authorization", "Bearer receiver-token"),
        ("x-webhook-signature", "sha256=forged"),
        ("webhook-signature", "v1,forged"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect();
    services.webhooks.save(&target).await.expect("save headers");
    let _worker = spawn_worker(services.clone()).await;

    // When an event is delivered
    publish(&services).await;

    // Then the webhook's headers arrive, and the signatures are ours
    let request = receiver.wait_for(1, PATIENCE).await.remove(0);
    assert_eq!(request.header("x-tenant"), Some("acme"));
    assert_eq!(
        request.header("authorization"),
        Some("Bearer receiver-token")
    );
    let legacy = request.header("x-webhook-signature").unwrap();
    assert!(!legacy.contains("forged"), "{legacy}");
    assert!(
        !request
            .header("webhook-signature")
            .unwrap()
            .contains("forged")
    );
    let verified = signing::verify_incoming(
        &Secret::parse(SECRET).unwrap(),
        request.header("x-webhook-signature"),
        request.header("x-webhook-timestamp"),
        &request.body,
        chrono::Utc::now().timestamp(),
        300,
        true,
    );
    assert_eq!(verified, Ok(signing::SignatureForm::Timestamped));
    assert_eq!(request.header("content-type"), Some("application/json"));
}
