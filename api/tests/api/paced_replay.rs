//! Paced replay and recovery, end to end with the real worker and a real
//! receiver: a dry run counts without changing anything, a paced bulk
//! replay spreads its deliveries over time (measured on the receiver's
//! clock) and shows its progress while it runs, and recovery since a time
//! re-sends only what failed after that time.

use std::time::{Duration, Instant};

use crate::common::{TestApp, spawn_app};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::catalog::{Event, EventMetadata, EventType};
use shared::ids::EventId;
use testkit::{Behaviour, PATIENCE, Receiver, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "paced_replay_secret_1";

async fn publish(app: &TestApp, n: usize) -> String {
    let event = Event::new(
        EventId::generate(),
        EventType::ChatResponseGenerated,
        json!({"n": n}),
        EventMetadata {
            trace_id: format!("trace-{n}").parse().unwrap(),
            correlation_id: None,
        },
    );
    let id = event.event_id.to_string();
    app.services
        .publisher
        .publish(event)
        .await
        .expect("publish");
    id
}

async fn dead_total(app: &TestApp) -> u64 {
    let list = app.admin_get("/api/v1/dead-letters").await;
    list.body["meta"]["pagination"]["total"]
        .as_u64()
        .expect("total")
}

/// Publishes `n` events to a receiver answering 500 and waits until every
/// delivery is dead (the test schedule: 3 attempts).
async fn dead_letters(app: &TestApp, n: usize) -> (Receiver, String) {
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = app
        .register(&receiver.url(), &["chat.response.generated"], SECRET)
        .await;
    for i in 0..n {
        publish(app, i).await;
    }
    wait_until("every delivery to be dead", PATIENCE, || async {
        (dead_total(app).await == n as u64).then_some(())
    })
    .await;
    (receiver, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_changes_nothing() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let (receiver, _) = dead_letters(&app, 3).await;
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let before = receiver.requests().len();

    let dry = app
        .send(app.admin(Method::POST, "/api/v1/dead-letters/replay?dry_run=true"))
        .await;

    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(dry.data()["dry_run"], true);
    assert_eq!(dry.data()["would_replay"], 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dead_total(&app).await, 3, "still dead");
    assert_eq!(receiver.requests().len(), before, "nothing sent");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_spreads_deliveries_and_shows_progress_while_it_runs() {
    // Given 60 dead letters and a receiver that is back
    const DEAD: usize = 60;
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let (receiver, _) = dead_letters(&app, DEAD).await;
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let before = receiver.requests().len();

    // When they are replayed at 20 per second
    let started = app
        .admin_json(
            Method::POST,
            "/api/v1/dead-letters/replay",
            &json!({"rate": 20}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.data()["total"], DEAD);
    assert_eq!(started.data()["state"], "running");
    let replay_id = started.data()["replay_id"].as_str().expect("id").to_owned();
    let status_path = format!("/api/v1/dead-letters/replays/{replay_id}");

    // Then progress shows mid-run
    let mid = wait_until("progress mid-run", PATIENCE, || async {
        let run = app.admin_get(&status_path).await;
        let done = run.data()["replayed"].as_u64()?;
        (done > 0 && done < DEAD as u64).then_some(run)
    })
    .await;
    assert_eq!(mid.data()["state"], "running", "{}", mid.body);
    let finished = wait_until("the run to finish", PATIENCE, || async {
        let run = app.admin_get(&status_path).await;
        (run.data()["state"] == "finished").then_some(run)
    })
    .await;
    assert_eq!(finished.data()["replayed"], DEAD, "{}", finished.body);
    assert_eq!(dead_total(&app).await, 0);

    // ... and the receiver saw them spread over at least ~2.5 s
    let replayed = receiver.wait_for(before + DEAD, PATIENCE).await;
    let replayed = &replayed[before..];
    let first = replayed.iter().map(|r| r.received_at).min().expect("some");
    let last = replayed.iter().map(|r| r.received_at).max().expect("some");
    let spread = last - first;
    eprintln!("60 replays at rate 20: first to last {spread:?} on the receiver's clock");
    assert!(spread >= Duration::from_millis(2500), "{spread:?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_since_a_time_resends_only_what_failed_after_it() {
    // Given one dead delivery before `since` and two after
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = app
        .register(&receiver.url(), &["chat.response.generated"], SECRET)
        .await;
    let old = publish(&app, 0).await;
    wait_until("the old delivery to be dead", PATIENCE, || async {
        (dead_total(&app).await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recent = [publish(&app, 1).await, publish(&app, 2).await];
    wait_until("all three to be dead", PATIENCE, || async {
        (dead_total(&app).await == 3).then_some(())
    })
    .await;
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let before = receiver.requests().len();
    let path = format!("/api/v1/webhooks/{id}/recover");
    let since = shared::time::rfc3339(since);

    // A dry run counts the two
    let dry = app
        .admin_json(
            Method::POST,
            &path,
            &json!({"since": since, "dry_run": true}),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(dry.data()["would_replay"], 2);

    // When they are recovered, paced
    let started = app
        .admin_json(Method::POST, &path, &json!({"since": since, "rate": 10}))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.data()["kind"], "recover");
    assert_eq!(started.data()["total"], 2);
    let replay_id = started.data()["replay_id"].as_str().expect("id").to_owned();
    let started_at = Instant::now();
    wait_until("the recovery to finish", PATIENCE, || async {
        let run = app
            .admin_get(&format!("/api/v1/dead-letters/replays/{replay_id}"))
            .await;
        (run.data()["state"] == "finished").then_some(())
    })
    .await;

    // Then only the two recent events reach the receiver, attempt 4
    let got = receiver.wait_for(before + 2, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resent: Vec<_> = receiver.requests()[before..].to_vec();
    assert!(started_at.elapsed() >= Duration::from_millis(100));
    assert_eq!(resent.len(), 2, "{got:?}");
    let mut ids: Vec<&str> = resent
        .iter()
        .map(|r| r.header("x-event-id").expect("event id"))
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = recent.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        resent
            .iter()
            .all(|r| r.header("x-delivery-attempt") == Some("4"))
    );
    // ... and the old one is still dead, the recent ones left the set
    let left = app.admin_get("/api/v1/dead-letters").await;
    assert_eq!(left.body["meta"]["pagination"]["total"], 1);
    assert_eq!(left.data()[0]["event_id"], old.as_str());

    // Bad input is named
    let bad: Value = app
        .admin_json(Method::POST, &path, &json!({"since": "yesterday"}))
        .await
        .body;
    assert_eq!(bad["error"]["details"]["field"], "since");
    let bad = app
        .admin_json(Method::POST, &path, &json!({"since": since, "rate": 0}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_retries_a_failed_delivery_now_and_only_once() {
    // Given a delivery failed twice, its next retry an hour away
    let app = crate::common::spawn_app_with(|s| {
        s.delivery.retry_schedule = vec![Duration::from_millis(20), Duration::from_secs(3600)];
    })
    .await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = app
        .register(&receiver.url(), &["chat.response.generated"], SECRET)
        .await;
    let since = shared::time::rfc3339(Utc::now() - chrono::Duration::seconds(1));
    let event = publish(&app, 0).await;
    receiver.wait_for(2, PATIENCE).await;
    wait_until("the delivery to show failed", PATIENCE, || async {
        let h = app
            .admin_get(&format!("/api/v1/webhooks/{id}/deliveries"))
            .await;
        (h.data()[0]["status"] == "failed").then_some(())
    })
    .await;
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let path = format!("/api/v1/webhooks/{id}/recover");

    // When it is recovered (no rate: at once)
    let done = app
        .admin_json(Method::POST, &path, &json!({"since": since}))
        .await;

    // Then it is sent now, same event, attempt 3
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.data()["replayed"], 1);
    let got = receiver.wait_for(3, PATIENCE).await;
    assert_eq!(got[2].header("x-event-id"), Some(event.as_str()));
    assert_eq!(got[2].header("x-delivery-attempt"), Some("3"));
    // ... and asking again finds it handled (its retry is the newest record)
    wait_until("the retry to succeed", PATIENCE, || async {
        let h = app
            .admin_get(&format!("/api/v1/webhooks/{id}/deliveries"))
            .await;
        (h.data()[0]["status"] == "success").then_some(())
    })
    .await;
    let again = app
        .admin_json(Method::POST, &path, &json!({"since": since}))
        .await;
    assert_eq!(again.data()["replayed"], 0, "{}", again.body);
    worker.shutdown().await;
}
