//! Delivery fairness: one bad subscriber must not hurt the others.
//!
//! A receiver that never answers and one that answers 500 at once sit next
//! to a healthy one, all served by one real worker (`startup::run`). With
//! the per-webhook cap (`delivery.per_webhook_concurrency`) the hanging
//! endpoint holds only its capped slots, deliveries over the cap are
//! deferred (not counted as attempts), and every healthy delivery arrives
//! while the hanging requests are still open. A control run without a cap
//! shows the same crowd taking every slot. Assertions are on counts and
//! ordering, never on durations; the durations are printed for
//! docs/PERFORMANCE.md.

use std::time::{Duration, Instant};

use queue::Job;
use serde_json::json;
use shared::config::Settings;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::EventId;
use shared::jobs::DeliverEvent;
use shared::services::Services;
use shared::webhooks::registry::Webhook;
use testkit::{
    Behaviour, PATIENCE, Receiver, TestRedis, spawn_receiver, spawn_worker, test_settings,
};

const SECRET: &str = "my_secret_key_12345";
/// Deliveries per receiver.
const EACH: usize = 24;

fn event() -> Event {
    let event_id = EventId::generate();
    Event::new(
        event_id,
        EventType::ChatResponseGenerated,
        json!({"answer": "fine"}),
        EventMetadata {
            trace_id: "fairness".parse().unwrap(),
            correlation_id: None,
        },
    )
}

/// Subscribed to the benchmark's event type only, so the `error.occurred`
/// of dead deliveries goes nowhere and the counts stay exact.
async fn register(services: &Services, receiver: &Receiver) -> Webhook {
    let events = vec![EventFilter::Only(EventType::ChatResponseGenerated)];
    testkit::register_webhook(services, &receiver.url(), events, SECRET).await
}

async fn send(services: &Services, webhook: &Webhook, count: usize) {
    for _ in 0..count {
        services
            .publisher
            .send_to(&webhook.webhook_id, event())
            .await
            .expect("enqueue a delivery");
    }
}

fn settings(
    redis: &TestRedis,
    concurrency: usize,
    per_webhook: usize,
    timeout: Duration,
) -> Settings {
    let mut settings = test_settings(&redis.url());
    settings.delivery.concurrency = concurrency;
    settings.delivery.per_webhook_concurrency = per_webhook;
    settings.delivery.timeout = timeout;
    settings.queue.shutdown_timeout = Duration::from_secs(1);
    settings
}

/// How long `count` deliveries to `receiver` took to arrive, from `since`.
async fn arrival(receiver: &Receiver, count: usize, since: Instant) -> Duration {
    let got = receiver.wait_for(count, PATIENCE).await;
    got.iter()
        .map(|r| r.received_at.duration_since(since))
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_holds_only_its_capped_slots_and_healthy_deliveries_flow() {
    const CONCURRENCY: usize = 16;
    const CAP: usize = 4;
    let redis = TestRedis::start();
    // The hanging requests stay open for the whole test.
    let services = Services::connect(settings(&redis, CONCURRENCY, CAP, Duration::from_secs(20)))
        .expect("services");
    let healthy = spawn_receiver(Behaviour::AlwaysOk).await;
    let hanging = spawn_receiver(Behaviour::Hang).await;
    let failing = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let healthy_hook = register(&services, &healthy).await;
    let hanging_hook = register(&services, &hanging).await;
    let failing_hook = register(&services, &failing).await;
    let worker = spawn_worker(services.clone()).await;

    // Given the healthy receiver alone,
    let started = Instant::now();
    send(&services, &healthy_hook, EACH).await;
    let alone = arrival(&healthy, EACH, started).await;

    // when the bad neighbours' deliveries are queued ahead of its next ones,
    send(&services, &hanging_hook, EACH).await;
    send(&services, &failing_hook, EACH).await;
    let started = Instant::now();
    send(&services, &healthy_hook, EACH).await;
    let crowded = arrival(&healthy, 2 * EACH, started).await;

    // then every healthy delivery arrived while the hanging endpoint still
    // held no more than its capped slots (none of its requests has ended:
    // its timeout is far away, so nothing was retried either),
    let open = hanging.requests().len();
    assert!(
        (1..=CAP).contains(&open),
        "the hanging receiver got {open} requests; the cap is {CAP}"
    );
    // and the failing endpoint was served too: every one of its deliveries
    // ran to the dead-letter set (1 try + 2 retries each).
    let depth = testkit::wait_until(
        "the failing deliveries to be dead-lettered",
        PATIENCE,
        || {
            let services = services.clone();
            async move {
                let depth = services.queue.depth(DeliverEvent::QUEUE).await.ok()?;
                (depth.dead >= EACH as u64).then_some(depth)
            }
        },
    )
    .await;
    assert_eq!(depth.dead, EACH as u64, "only the failing deliveries die");
    // Deferred deliveries are neither attempts nor failures: every failure
    // counted is one of the failing receiver's answers.
    assert_eq!(
        depth.failed_total,
        failing.requests().len() as u64,
        "deferrals must not count as failed attempts"
    );
    assert_eq!(
        hanging.requests().len(),
        open,
        "the hanging lane stayed capped"
    );
    eprintln!(
        "fairness: {EACH} healthy deliveries took {alone:?} alone, {crowded:?} behind {EACH} hanging \
         and {EACH} failing ones (factor {:.1}); hanging requests open: {open}",
        crowded.as_secs_f64() / alone.as_secs_f64().max(1e-6)
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_a_hanging_receiver_takes_every_slot() {
    // The control: the cap as large as the concurrency is no cap at all.
    const CONCURRENCY: usize = 8;
    let redis = TestRedis::start();
    let services = Services::connect(settings(
        &redis,
        CONCURRENCY,
        CONCURRENCY,
        Duration::from_secs(1),
    ))
    .expect("services");
    let healthy = spawn_receiver(Behaviour::AlwaysOk).await;
    let hanging = spawn_receiver(Behaviour::Hang).await;
    let healthy_hook = register(&services, &healthy).await;
    let hanging_hook = register(&services, &hanging).await;
    send(&services, &hanging_hook, EACH).await;
    send(&services, &healthy_hook, EACH).await;
    let started = Instant::now();
    let worker = spawn_worker(services.clone()).await;
    let took = arrival(&healthy, EACH, started).await;
    // Healthy deliveries could only start once hanging requests timed out:
    // by then every slot had gone to the hanging endpoint.
    let open = hanging.requests().len();
    assert!(
        open >= CONCURRENCY,
        "expected the hanging receiver to take all {CONCURRENCY} slots first, it got {open} requests"
    );
    eprintln!(
        "fairness control (no cap): {EACH} healthy deliveries took {took:?}; hanging requests: {open}"
    );
    drop(worker);
}
