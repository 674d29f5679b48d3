//! A receiver down for the whole retry schedule (issue 5, item 6), with the
//! schedule compressed to milliseconds: every delivery ends in the
//! dead-letter set, then the receiver comes back and one bulk replay
//! (`POST /api/v1/dead-letters/replay`) brings every event to it. Counts
//! reconcile exactly: events sent = distinct event ids received after the
//! receiver came back, nothing left dead, and a second replay replays
//! nothing.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::spawn_app_with;
use queue::DeadLetterFilter;
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::events::catalog::{Event, EventMetadata, EventType};
use shared::ids::EventId;
use testkit::{Behaviour, PATIENCE, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "outage_secret_key_12345";
const EVENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_the_whole_schedule_gets_every_event_after_one_bulk_replay() {
    // Given a 5-attempt schedule compressed to milliseconds and a receiver
    // that is down (500 to everything)
    let app = spawn_app_with(|s| {
        s.delivery.retry_schedule = [20, 40, 80, 160]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
    })
    .await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    app.register(&receiver.url(), &["chat.response.generated"], SECRET)
        .await;
    let worker = spawn_worker(app.services.clone()).await;

    // When 200 events are published and every attempt of each fails
    let mut sent = HashSet::new();
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
        sent.insert(event.event_id.to_string());
        app.services
            .publisher
            .publish(event)
            .await
            .expect("publish");
    }
    let dead = wait_until(
        "every delivery to be dead-lettered",
        PATIENCE * 2,
        || async {
            let dead = app
                .services
                .queue
                .dead_letters(&["deliver"], &DeadLetterFilter::default(), 0, EVENTS)
                .await
                .ok()?
                .items;
            (dead.len() == EVENTS).then_some(dead)
        },
    )
    .await;
    assert!(dead.iter().all(|d| d.attempts == 5), "whole schedule used");
    let attempts_while_down = receiver.requests().len();
    assert_eq!(attempts_while_down, EVENTS * 5);

    // ... and the receiver comes back, and an administrator replays once
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let replay = app
        .send(app.admin(Method::POST, "/api/v1/dead-letters/replay"))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.data()["replayed"], EVENTS, "{}", replay.body);

    // Then every event arrives, exactly the ones sent
    let received = wait_until(
        "every event to arrive after the replay",
        PATIENCE,
        || async {
            let ids: HashSet<String> = receiver.requests()[attempts_while_down..]
                .iter()
                .map(|r| r.json()["event_id"].as_str().unwrap_or_default().to_owned())
                .collect();
            (ids.len() == EVENTS).then_some(ids)
        },
    )
    .await;
    assert_eq!(received, sent, "sent = received, event for event");
    let again = app
        .send(app.admin(Method::POST, "/api/v1/dead-letters/replay"))
        .await;
    assert_eq!(
        again.data()["replayed"],
        0,
        "safe to call twice: {}",
        again.body
    );
    worker.shutdown().await;
    let after = receiver.requests().len() - attempts_while_down;
    let left = app
        .services
        .queue
        .dead_letters(&["deliver"], &DeadLetterFilter::default(), 0, EVENTS)
        .await
        .expect("dead letters")
        .items;
    assert!(left.is_empty(), "{left:#?}");
    eprintln!(
        "long outage: {EVENTS} sent, {attempts_while_down} failed attempts while down, \
         {EVENTS} dead-lettered, 1 bulk replay, {} received distinct ({after} requests), 0 left dead",
        received.len()
    );
}
