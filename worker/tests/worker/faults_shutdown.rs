//! Graceful shutdown under load (issue 5, item 4): a worker process with
//! hundreds of deliveries in flight and thousands queued gets SIGTERM while
//! every request takes longer than its shutdown deadline. It must exit 0
//! within the deadline (plus start-up margin), hand back what it could not
//! finish, and lose nothing: a second worker delivers every event, and the
//! only events sent twice are ones that were in flight at the signal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use queue::DeadLetterFilter;
use serde_json::json;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::EventId;
use shared::services::Services;
use testkit::{
    Behaviour, PATIENCE, TestRedis, WorkerProcess, settings_env, spawn_receiver, wait_until,
};

const WORKER_BINARY: &str = env!("CARGO_BIN_EXE_supportrag-worker");
const EVENTS: usize = 3000;
const CONCURRENCY: usize = 256;

fn counts(receiver: &testkit::Receiver) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        let id = request.header("x-event-id").unwrap_or_default().to_owned();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_thousands_in_flight_exits_zero_in_time_and_loses_nothing() {
    // Given 3 000 queued deliveries, a worker running 256 at a time, and a
    // receiver slower (1.5 s) than the shutdown deadline (1 s)
    let redis = TestRedis::start();
    let mut settings = testkit::test_settings(&redis.url());
    settings.delivery.concurrency = CONCURRENCY;
    // One receiver takes them all: lift the per-webhook cap to the slots.
    settings.delivery.per_webhook_concurrency = CONCURRENCY;
    settings.delivery.timeout = Duration::from_secs(10);
    settings.queue.shutdown_timeout = Duration::from_secs(1);
    settings.log.level = "info".into();
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::Delay(Duration::from_millis(1500))).await;
    testkit::register_webhook(
        &services,
        &receiver.url(),
        vec![EventFilter::All],
        "shutdown_test_secret_01",
    )
    .await;
    for n in 0..EVENTS {
        let event = Event::new(
            EventId::generate(),
            EventType::ChatResponseGenerated,
            json!({"n": n}),
            EventMetadata {
                trace_id: format!("trace-{n}").parse().unwrap(),
                correlation_id: None,
            },
        );
        services.publisher.publish(event).await.expect("publish");
    }
    let mut worker = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));
    // Wait until the worker's slots are full.
    receiver.wait_for(CONCURRENCY, PATIENCE).await;

    // When it gets SIGTERM
    let signalled = Instant::now();
    worker.terminate();
    let in_flight_at_signal = receiver.requests().len();

    // Then it exits 0 within the deadline (plus a generous margin for a
    // loaded machine; no wall-clock figure is asserted tightly)
    let status = tokio::task::block_in_place(|| {
        worker.wait_exit(settings.queue.shutdown_timeout + Duration::from_secs(10))
    });
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status}; log:\n{}",
        worker.log_tail(30)
    );
    let log = std::fs::read_to_string(worker.log_path()).unwrap_or_default();
    let handed_back = log.matches("handed back an unfinished job").count();
    assert!(
        handed_back > 0,
        "the deadline should have cut some jobs short"
    );

    // ... and a second worker delivers every event, the repeats being at
    // most the jobs that were in flight at the signal
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let mut second = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));
    wait_until("every event to be received", PATIENCE * 2, || async {
        (counts(&receiver).len() == EVENTS).then_some(())
    })
    .await;
    let seen = counts(&receiver);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} repeats, more than the {CONCURRENCY} jobs in flight"
    );
    let dead = services
        .queue
        .dead_letters(&["deliver"], &DeadLetterFilter::default(), 0, EVENTS)
        .await
        .expect("dead letters")
        .items;
    assert!(dead.is_empty(), "{dead:#?}");
    eprintln!(
        "shutdown under load: exit 0 after {took:?} (deadline {:?}); {in_flight_at_signal} in flight, \
         {handed_back} handed back; {EVENTS} sent = {} received distinct, {duplicates} duplicate(s)",
        settings.queue.shutdown_timeout,
        seen.len()
    );
    second.terminate();
    let status = tokio::task::block_in_place(|| second.wait_exit(PATIENCE));
    assert!(status.success());
}
