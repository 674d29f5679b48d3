//! A worker outlives Redis going away: it backs off, reconnects by itself,
//! and delivers what was queued, without being restarted.

use std::time::Duration;

use serde_json::json;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::EventId;
use shared::services::Services;
use testkit::{Behaviour, PATIENCE, TestRedis, spawn_receiver, spawn_worker, test_settings};

fn event(n: u32) -> Event {
    Event::new(
        EventId::generate(),
        EventType::ChatResponseGenerated,
        json!({"n": n}),
        EventMetadata {
            trace_id: format!("trace_{n}").parse().unwrap(),
            correlation_id: None,
        },
    )
}

#[tokio::test]
async fn a_worker_survives_a_redis_restart_and_delivers_what_was_queued() {
    // Given a worker and a webhook, on a Redis that persists to AOF
    let mut redis = TestRedis::start_with_aof();
    let settings = test_settings(&redis.url());
    let services = Services::connect(settings).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    testkit::register_webhook(
        &services,
        &receiver.url(),
        vec![EventFilter::All],
        "my_secret_key_12345",
    )
    .await;
    let worker = spawn_worker(services.clone()).await;
    services
        .publisher
        .publish(event(1))
        .await
        .expect("published");
    receiver.wait_for(1, PATIENCE).await;

    // When Redis is killed for a while, then comes back with its data
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();

    // Then the same worker, never restarted, delivers what is queued next
    testkit::wait_until("Redis to accept the event again", PATIENCE, || async {
        services.publisher.publish(event(2)).await.ok()
    })
    .await;
    // (event 1 may come again: its acknowledgement can die with Redis, and
    // at-least-once means it is then redone, under the same event id)
    testkit::wait_until("event 2 to be delivered", PATIENCE, || async {
        let got = receiver.requests();
        got.iter().any(|r| r.json()["data"]["n"] == 2).then_some(())
    })
    .await;
    let first_ids: std::collections::HashSet<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.json()["data"]["n"] == 1)
        .map(|r| r.json()["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(first_ids.len(), 1, "a redo keeps the event id");
    worker.shutdown().await;
}
