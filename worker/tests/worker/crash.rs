//! The real `supportrag-worker` binary under SIGKILL and SIGTERM.
//!
//! These are the promises only a process can test: a worker
//! killed mid-delivery loses nothing (another worker takes its jobs over
//! after the visibility timeout), and a worker asked to stop finishes what
//! it holds and exits 0.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use shared::config::Settings;
use shared::delivery::history::DeliveryStatus;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId};
use shared::services::Services;
use shared::webhooks::registry::Webhook;
use testkit::{
    Behaviour, PATIENCE, Receiver, TestRedis, WorkerProcess, settings_env, spawn_receiver,
    spawn_worker, test_settings, wait_until,
};

const WORKER_BINARY: &str = env!("CARGO_BIN_EXE_supportrag-worker");
const SECRET: &str = "crash_test_secret_0123";

async fn register(services: &Services, url: &str) -> Webhook {
    let events = vec![EventFilter::Only(EventType::SessionEnded)];
    testkit::register_webhook(services, url, events, SECRET).await
}

/// Publishes `count` events; returns their ids and delivery ids.
async fn publish_events(services: &Services, count: usize) -> (HashSet<String>, Vec<DeliveryId>) {
    let mut event_ids = HashSet::new();
    let mut deliveries = Vec::new();
    for n in 0..count {
        let event = Event::new(
            EventId::generate(),
            EventType::SessionEnded,
            json!({"session_id": format!("sess_{n}"), "messages_count": n}),
            EventMetadata {
                trace_id: format!("trace-{n}").parse().unwrap(),
                correlation_id: None,
            },
        );
        event_ids.insert(event.event_id.to_string());
        deliveries.extend(services.publisher.publish(event).await.expect("publish"));
    }
    assert_eq!(deliveries.len(), count);
    (event_ids, deliveries)
}

/// Distinct event ids the receiver got, checking on the way that every
/// request's `X-Event-ID` is its body's `event_id` and one we published.
fn received_event_ids(
    receiver: &Receiver,
    published: &HashSet<String>,
) -> HashMap<String, Vec<u32>> {
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for request in receiver.requests() {
        let body = request.json();
        let event_id = body["event_id"]
            .as_str()
            .expect("event_id in body")
            .to_owned();
        assert_eq!(
            request.header("x-event-id"),
            Some(event_id.as_str()),
            "header and body disagree"
        );
        assert!(
            published.contains(&event_id),
            "received an event never published: {event_id}"
        );
        let attempt = request
            .header("x-delivery-attempt")
            .and_then(|a| a.parse().ok())
            .expect("attempt header");
        seen.entry(event_id).or_default().push(attempt);
    }
    seen
}

async fn wait_all_delivered(services: &Services, deliveries: &[DeliveryId]) {
    wait_until("every delivery record to be success", PATIENCE, || async {
        for id in deliveries {
            let record = services.deliveries.get(id).await.ok()??;
            if record.status != DeliveryStatus::Success {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn process_settings(redis: &TestRedis, concurrency: usize) -> Settings {
    let mut settings = test_settings(&redis.url());
    settings.delivery.concurrency = concurrency;
    settings.log.level = "info".into();
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_no_event() {
    // Given 200 events queued for a receiver that takes 300 ms per request,
    // and a worker process delivering 8 at a time
    let redis = TestRedis::start();
    let settings = process_settings(&redis, 8);
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::Delay(Duration::from_millis(300))).await;
    register(&services, &receiver.url()).await;
    let (published, deliveries) = publish_events(&services, 200).await;
    let mut first = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));

    // When it is SIGKILLed while deliveries are in flight
    receiver.wait_for(20, PATIENCE).await;
    tokio::task::block_in_place(|| first.kill());
    let before_kill = received_event_ids(&receiver, &published).len();
    assert!(
        before_kill < published.len(),
        "the kill came too late to test anything: all {before_kill} arrived"
    );

    // ... and another worker process starts
    let mut second = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));

    // Then every event reaches the receiver (the dead worker's jobs are
    // taken over after the visibility timeout), and every record ends
    // success
    wait_until("every published event to be received", PATIENCE, || async {
        (received_event_ids(&receiver, &published).len() == published.len()).then_some(())
    })
    .await;
    wait_all_delivered(&services, &deliveries).await;
    let seen = received_event_ids(&receiver, &published);
    let duplicates: Vec<(&String, &Vec<u32>)> = seen
        .iter()
        .filter(|(_, attempts)| attempts.len() > 1)
        .collect();
    // At-least-once: requests that were in flight at the kill may arrive
    // twice, under the same event id, the redo counting the crash.
    for (event_id, attempts) in &duplicates {
        assert!(
            attempts.windows(2).all(|w| w[0] < w[1]),
            "{event_id}: attempts {attempts:?} do not go up"
        );
    }
    eprintln!(
        "{} event(s) delivered twice after the kill (in flight at the time)",
        duplicates.len()
    );

    second.terminate();
    let status = tokio::task::block_in_place(|| second.wait_exit(PATIENCE));
    assert!(status.success(), "second worker exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_deliveries_in_flight_finish_and_exits_zero() {
    // Given a worker process busy with deliveries to a receiver that takes
    // 1 s each (shutdown timeout 5 s)
    let redis = TestRedis::start();
    let settings = process_settings(&redis, 4);
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::Delay(Duration::from_secs(1))).await;
    register(&services, &receiver.url()).await;
    let (published, deliveries) = publish_events(&services, 20).await;
    let mut worker = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));
    receiver.wait_for(1, PATIENCE).await;

    // When it gets SIGTERM
    worker.terminate();

    // Then it exits with status 0 within the shutdown timeout (plus start-up
    // and scheduling margin)
    let status = tokio::task::block_in_place(|| {
        worker.wait_exit(settings.queue.shutdown_timeout + Duration::from_secs(10))
    });
    assert_eq!(
        status.code(),
        Some(0),
        "worker exited with {status}; log:\n{}",
        worker.log_tail(30)
    );
    let log = std::fs::read_to_string(worker.log_path()).unwrap_or_default();
    assert!(
        log.contains("signal received"),
        "the worker should log the signal; log:\n{}",
        worker.log_tail(30)
    );

    // ... and nothing it held is lost: a new worker delivers every event,
    // with the ones finished during shutdown not repeated
    let in_process = spawn_worker(services.clone()).await;
    wait_until("every published event to be received", PATIENCE, || async {
        (received_event_ids(&receiver, &published).len() == published.len()).then_some(())
    })
    .await;
    wait_all_delivered(&services, &deliveries).await;
    in_process.shutdown().await;
    let seen = received_event_ids(&receiver, &published);
    let repeated: Vec<_> = seen
        .iter()
        .filter(|(_, attempts)| attempts.len() > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "deliveries finished before exit were sent again: {repeated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_a_backlog_with_no_event_sent_twice() {
    // Given two worker processes on one Redis, and a receiver that takes a
    // little time per request so neither can drain the queue alone at once
    let redis = TestRedis::start();
    let settings = process_settings(&redis, 8);
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::Delay(Duration::from_millis(20))).await;
    register(&services, &receiver.url()).await;
    let mut workers = [
        WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings)),
        WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings)),
    ];

    // When 300 events are published
    let (published, deliveries) = publish_events(&services, 300).await;

    // Then each is delivered exactly once, and both processes took part
    wait_all_delivered(&services, &deliveries).await;
    let seen = received_event_ids(&receiver, &published);
    assert_eq!(seen.len(), published.len());
    let twice: Vec<_> = seen.iter().filter(|(_, a)| a.len() > 1).collect();
    assert!(twice.is_empty(), "sent twice with no crash: {twice:?}");
    for worker in &mut workers {
        worker.terminate();
        let status = tokio::task::block_in_place(|| worker.wait_exit(PATIENCE));
        assert!(status.success(), "worker exited with {status}");
        let log = std::fs::read_to_string(worker.log_path()).unwrap_or_default();
        assert!(
            log.contains("delivery attempt"),
            "a worker did no deliveries; log:\n{}",
            worker.log_tail(20)
        );
    }
}
