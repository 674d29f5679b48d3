//! Outbound delivery end to end, in process: events published through the
//! real `Publisher`, delivered by the real worker (`startup::run`) over HTTP
//! to real receivers — the seed's JavaScript verifier under node, and
//! recording receivers that fail on demand — with retries, dead letters,
//! `error.occurred`, replay and cancellation checked in Redis.

use crate::common::dead_deliveries;
use std::time::Duration;

use queue::{DeadLetter, Job, QueueDepth};
use redis::AsyncCommands;
use serde_json::{Value, json};
use shared::delivery::history::{Attempt, DeliveryRecord, DeliveryStatus};
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId};
use shared::jobs::DeliverEvent;
use shared::services::Services;
use shared::webhooks::registry::Webhook;
use shared::webhooks::signing::{self, Secret};
use testkit::{
    Behaviour, PATIENCE, Recorded, TestRedis, spawn_js_verifier, spawn_receiver, spawn_worker,
    test_settings,
};
use worker::delivery::GONE_REASON;

const SECRET: &str = "my_secret_key_12345";

fn services(redis: &TestRedis) -> Services {
    Services::connect(test_settings(&redis.url())).expect("services")
}

async fn register(services: &Services, url: &str, events: &[EventType], secret: &str) -> Webhook {
    let events = events.iter().copied().map(EventFilter::Only).collect();
    testkit::register_webhook(services, url, events, secret).await
}

fn event(event_type: EventType, data: Value) -> Event {
    let event_id = EventId::generate();
    let trace_id = format!("trace-{}", event_id.as_str().trim_start_matches("evt_"))
        .parse()
        .unwrap();
    Event::new(
        event_id,
        event_type,
        data,
        EventMetadata {
            trace_id,
            correlation_id: Some("corr-42".into()),
        },
    )
}

fn chat_answer() -> Value {
    json!({
        "session_id": "sess_01hq3",
        "user_id": "user_42",
        "message": "Как сбросить пароль? 🔑",
        "answer": "Откройте «Настройки» → «Безопасность» и нажмите «Сбросить пароль». Готово! 🎉\n\
                   Строка с \"кавычками\", обратной чертой \\, табуляцией\t и U+2028\u{2028}.",
        "sources": [
            {"document_id": "doc_1", "title": "FAQ — пароли", "excerpt": "Пароль можно сбросить в настройках…"},
            {"document_id": "doc_2", "title": "Security 🛡️", "excerpt": "Reset links expire after 24 h."}
        ],
        "confidence": 1.0,
        "processing_time_ms": 1234,
        "metadata": {
            "channel": {"name": "поддержка", "tags": ["срочно", "vip", 3, null, true]},
            "scores": [0.5, 0.25, 1e-7, 1e21, 0.30000000000000004],
            "nested": [[{"deep": {"deeper": "глубже 🐙"}}], []],
            "empty": {}
        }
    })
}

async fn record(services: &Services, id: &DeliveryId) -> Option<DeliveryRecord> {
    services
        .deliveries
        .get(id)
        .await
        .expect("read delivery record")
}

async fn wait_for_status(
    services: &Services,
    id: &DeliveryId,
    status: DeliveryStatus,
) -> DeliveryRecord {
    testkit::wait_until(
        &format!("delivery {id} to be {status:?}"),
        PATIENCE,
        || async { record(services, id).await.filter(|r| r.status == status) },
    )
    .await
}

async fn depth(services: &Services) -> QueueDepth {
    services
        .queue
        .depth(DeliverEvent::QUEUE)
        .await
        .expect("queue depth")
}

/// What a worker writes when an attempt succeeds.
fn succeeded(mut record: DeliveryRecord) -> DeliveryRecord {
    let attempt = record.attempt;
    record.record(
        Attempt {
            attempt,
            timestamp: chrono::Utc::now(),
            success: true,
            http_status: Some(200),
            response_time_ms: 3,
            response_body: Some("ok".into()),
            error: None,
        },
        DeliveryStatus::Success,
        None,
    );
    record
}

async fn dead_letter_of(services: &Services, webhook: &Webhook) -> DeadLetter {
    testkit::wait_until("the dead letter", PATIENCE, || async {
        dead_deliveries(services, webhook)
            .await
            .items
            .into_iter()
            .next()
    })
    .await
}

fn header<'a>(request: &'a Recorded, name: &str) -> &'a str {
    request
        .header(name)
        .unwrap_or_else(|| panic!("request has no {name} header: {:?}", request.headers))
}

/// Checks the `sha256=` signature over the raw body, as a receiver that
/// verifies raw bytes would.
fn assert_legacy_signature_valid(request: &Recorded, secret: &str) {
    let secret = Secret::parse(secret).expect("secret");
    let verified = signing::verify_incoming(
        &secret,
        request.header("x-webhook-signature"),
        request.header("x-webhook-timestamp"),
        &request.body,
        chrono::Utc::now().timestamp(),
        300,
        true,
    );
    assert_eq!(
        verified,
        Ok(signing::SignatureForm::Timestamped),
        "signature of {:?}",
        request.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_javascript_verifier_accepts_a_delivery_with_unicode_whole_floats_and_nesting() {
    // Given a webhook for chat answers whose receiver is the seed's Express
    // verifier, knowing the webhook's secret
    let redis = TestRedis::start();
    let services = services(&redis);
    let mut webhook = register(
        &services,
        "http://127.0.0.1:9/placeholder",
        &[EventType::ChatResponseGenerated],
        SECRET,
    )
    .await;
    let verifier = spawn_js_verifier(&[(webhook.webhook_id.as_str(), SECRET)]);
    webhook.url = verifier.url();
    services
        .webhooks
        .save(&webhook)
        .await
        .expect("point the webhook at the verifier");
    let worker = spawn_worker(services.clone()).await;

    // When a chat answer with confidence 1.0, Russian text, emoji and nested
    // metadata is published
    let data = chat_answer();
    let event = event(EventType::ChatResponseGenerated, data.clone());
    let delivery_ids = services
        .publisher
        .publish(event.clone())
        .await
        .expect("publish");
    assert_eq!(delivery_ids.len(), 1);

    // Then the verifier accepted its signature, and the payload arrived intact
    let received = verifier.wait_for(1, PATIENCE).await;
    let rejected = verifier.rejected().await;
    assert!(
        rejected.is_empty(),
        "the seed's verifier refused deliveries: {rejected:?}"
    );
    let delivered = &received[0];
    assert_eq!(delivered["verified"], true);
    let payload = &delivered["payload"];
    assert_eq!(payload["webhook_id"], webhook.webhook_id.as_str());
    assert_eq!(payload["event_id"], event.event_id.as_str());
    assert_eq!(payload["event_type"], "chat.response.generated");
    assert_eq!(payload["delivery_attempt"], 1);
    assert_eq!(
        payload["metadata"]["trace_id"],
        event.metadata.trace_id.as_str()
    );
    assert_eq!(payload["metadata"]["correlation_id"], "corr-42");
    let got = &payload["data"];
    for field in [
        "session_id",
        "user_id",
        "message",
        "answer",
        "sources",
        "processing_time_ms",
    ] {
        assert_eq!(got[field], data[field], "data.{field}");
    }
    assert_eq!(got["confidence"].as_f64(), Some(1.0));
    assert_eq!(got["metadata"], data["metadata"], "nested metadata");

    // ... with the documented headers
    let headers = &delivered["headers"];
    let h = |name: &str| {
        headers[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} header in {headers}"))
            .to_owned()
    };
    assert!(h("x-webhook-signature").starts_with("sha256="));
    let timestamp: i64 = h("x-webhook-timestamp").parse().expect("unix seconds");
    assert_eq!(h("x-webhook-id"), webhook.webhook_id.as_str());
    assert_eq!(h("x-delivery-attempt"), "1");
    assert_eq!(h("x-event-id"), event.event_id.as_str());
    assert!(
        h("user-agent").starts_with("SupportRAG/"),
        "user-agent {}",
        h("user-agent")
    );
    assert!(h("content-type").starts_with("application/json"));

    // ... and a Standard Webhooks signature that Rust recomputes over the
    // exact body sent (the event's canonical form for this webhook/attempt)
    let body = event.body(&webhook.webhook_id, 1).expect("body");
    let expected =
        signing::sign_outbound(&webhook.secret, event.event_id.as_str(), timestamp, &body);
    assert_eq!(h("webhook-id"), event.event_id.as_str());
    assert_eq!(h("webhook-timestamp"), timestamp.to_string());
    assert_eq!(h("webhook-signature"), expected.standard);
    assert_eq!(h("x-webhook-signature"), expected.legacy);

    let done = wait_for_status(&services, &delivery_ids[0], DeliveryStatus::Success).await;
    assert_eq!(done.http_status, Some(200));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_verifier_refuses_a_forged_signature() {
    // Given the seed's verifier knowing one webhook
    let verifier = spawn_js_verifier(&[("webhook_abc123", SECRET)]);

    // When a request arrives signed with another secret
    let body = br#"{"event_type":"chat.response.generated","data":{}}"#;
    let forged = signing::sign_outbound(
        &Secret::parse("not_the_right_secret").expect("secret"),
        "evt_1",
        1,
        body,
    );
    let status = reqwest::Client::new()
        .post(verifier.url())
        .header("content-type", "application/json")
        .header("x-webhook-signature", forged.legacy)
        .header("x-webhook-timestamp", "1")
        .header("x-webhook-id", "webhook_abc123")
        .body(body.to_vec())
        .send()
        .await
        .expect("POST to the verifier")
        .status();

    // Then it answers 401 and records the refusal (what the other tests
    // assert never happens to our deliveries)
    assert_eq!(status.as_u16(), 401);
    let rejected = verifier.rejected().await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["verified"], false);
    assert!(verifier.verified().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_three_attempts_of_the_same_event() {
    // Given a receiver that answers 500 twice, then 200
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::FailTimes(2)).await;
    let webhook = register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let worker = spawn_worker(services.clone()).await;

    // When an event is published
    let event = event(
        EventType::SessionEnded,
        json!({"session_id": "sess_1", "messages_count": 3}),
    );
    let ids = services
        .publisher
        .publish(event.clone())
        .await
        .expect("publish");

    // Then it succeeds on the third attempt, and the history shows all three
    let done = wait_for_status(&services, &ids[0], DeliveryStatus::Success).await;
    assert_eq!(done.event_id, event.event_id);
    assert_eq!(done.attempt, 3);
    assert_eq!(done.http_status, Some(200));
    let attempts: Vec<(u32, Option<u16>, bool)> = done
        .attempts
        .iter()
        .map(|a| (a.attempt, a.http_status, a.success))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Some(500), false),
            (2, Some(500), false),
            (3, Some(200), true)
        ]
    );
    assert!(
        done.attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{:?}",
        done.attempts[0]
    );

    // ... and the receiver got the same event three times, numbered 1, 2, 3
    let requests = receiver.wait_for(3, PATIENCE).await;
    assert_eq!(requests.len(), 3);
    for (n, request) in requests.iter().enumerate() {
        let attempt = (n + 1).to_string();
        assert_eq!(header(request, "x-event-id"), event.event_id.as_str());
        assert_eq!(header(request, "x-delivery-attempt"), attempt);
        assert_eq!(header(request, "x-webhook-id"), webhook.webhook_id.as_str());
        let body = request.json();
        assert_eq!(body["event_id"], event.event_id.as_str());
        assert_eq!(body["delivery_attempt"], n + 1);
        assert_legacy_signature_valid(request, SECRET);
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_delivery_announces_error_occurred_and_replays_with_the_same_event_once() {
    // Given a receiver that always fails, and a second webhook subscribed to
    // error.occurred
    let redis = TestRedis::start();
    let services = services(&redis);
    let failing = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let webhook = register(
        &services,
        &failing.url(),
        &[EventType::ChatEscalated],
        SECRET,
    )
    .await;
    let alerts = spawn_receiver(Behaviour::AlwaysOk).await;
    let alert_webhook = register(
        &services,
        &alerts.url(),
        &[EventType::ErrorOccurred],
        SECRET,
    )
    .await;
    let worker = spawn_worker(services.clone()).await;

    // When an event is published to it
    let event = event(
        EventType::ChatEscalated,
        json!({"session_id": "sess_9", "escalation_priority": "high"}),
    );
    let ids = services
        .publisher
        .publish(event.clone())
        .await
        .expect("publish");
    assert_eq!(ids.len(), 1, "only the chat.escalated webhook subscribes");
    let delivery_id = &ids[0];

    // Then after the configured 3 attempts the delivery is dead ...
    let dead_record = wait_for_status(&services, delivery_id, DeliveryStatus::Dead).await;
    assert_eq!(dead_record.attempts.len(), 3);
    assert_eq!(
        dead_record
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // ... it is in the dead-letter set, findable by its ids ...
    let dead = testkit::wait_until("the dead letter", PATIENCE, || async {
        dead_deliveries(&services, &webhook)
            .await
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(dead.job_type, DeliverEvent::QUEUE);
    assert_eq!(dead.attempts, 3);
    assert_eq!(
        dead.labels.get("delivery_id").map(String::as_str),
        Some(delivery_id.as_str())
    );
    assert_eq!(
        dead.labels.get("webhook_id").map(String::as_str),
        Some(webhook.webhook_id.as_str())
    );
    assert_eq!(
        dead.labels.get("event_id").map(String::as_str),
        Some(event.event_id.as_str())
    );
    assert_eq!(
        dead.labels.get("event_type").map(String::as_str),
        Some("chat.escalated")
    );
    assert!(dead.last_error.contains("500"), "{}", dead.last_error);
    // ... and error.occurred reached the other webhook
    let alert = alerts.wait_for(1, PATIENCE).await[0].json();
    assert_eq!(alert["event_type"], "error.occurred");
    assert_eq!(alert["webhook_id"], alert_webhook.webhook_id.as_str());
    assert_eq!(alert["data"]["error_code"], "DELIVERY_FAILED");
    assert_eq!(alert["data"]["delivery_id"], delivery_id.as_str());
    assert_eq!(alert["data"]["event_id"], event.event_id.as_str());
    assert_eq!(alert["data"]["webhook_id"], webhook.webhook_id.as_str());
    assert_eq!(
        alert["data"]["dead_letter_id"],
        dead.dead_letter_id.as_str()
    );
    assert_eq!(alert["data"]["attempts"], 3);
    assert_eq!(failing.requests().len(), 3);

    // When the receiver recovers and the dead letter is replayed
    failing.set_behaviour(Behaviour::AlwaysOk);
    assert!(
        services
            .queue
            .dead_letter_replay(&dead)
            .await
            .expect("replay")
    );

    // Then it is delivered as attempt 4 of the same event
    let requests = failing.wait_for(4, PATIENCE).await;
    let replayed = &requests[3];
    assert_eq!(header(replayed, "x-event-id"), event.event_id.as_str());
    assert_eq!(header(replayed, "x-delivery-attempt"), "4");
    assert_eq!(replayed.json()["delivery_attempt"], 4);
    assert_legacy_signature_valid(replayed, SECRET);
    let done = wait_for_status(&services, delivery_id, DeliveryStatus::Success).await;
    assert_eq!(done.attempt, 4);
    assert!(dead_deliveries(&services, &webhook).await.items.is_empty());

    // ... and replaying the same dead letter again does nothing
    assert!(
        !services
            .queue
            .dead_letter_replay(&dead)
            .await
            .expect("second replay")
    );
    worker.shutdown().await;
    assert_eq!(
        failing.requests().len(),
        4,
        "the second replay must not deliver again"
    );
    assert_eq!(alerts.requests().len(), 1, "one failure, one announcement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_webhook_cancels_its_pending_delivery_without_sending_it() {
    // Given a delivery queued while no worker runs
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook = register(
        &services,
        &receiver.url(),
        &[EventType::KnowledgeDocumentIndexed],
        SECRET,
    )
    .await;
    let event = event(
        EventType::KnowledgeDocumentIndexed,
        json!({"document_id": "doc_7", "status": "indexed"}),
    );
    let ids = services.publisher.publish(event).await.expect("publish");
    assert_eq!(
        record(&services, &ids[0]).await.map(|r| r.status),
        Some(DeliveryStatus::Queued)
    );

    // When the webhook is deleted before a worker gets to it
    assert!(
        services
            .webhooks
            .delete(&webhook.webhook_id)
            .await
            .expect("delete")
    );
    let worker = spawn_worker(services.clone()).await;

    // Then the delivery is recorded as cancelled, and nothing was sent
    let cancelled = wait_for_status(&services, &ids[0], DeliveryStatus::Cancelled).await;
    assert!(
        cancelled
            .error
            .as_deref()
            .is_some_and(|e| e.contains("deleted")),
        "{cancelled:?}"
    );
    assert!(cancelled.attempts.is_empty());
    testkit::wait_until("the queue to be empty", PATIENCE, || async {
        let depth = services.queue.depth(DeliverEvent::QUEUE).await.ok()?;
        (depth.ready == 0 && depth.in_flight == 0 && depth.scheduled == 0).then_some(())
    })
    .await;
    worker.shutdown().await;
    assert!(
        receiver.requests().is_empty(),
        "a cancelled delivery must not be sent"
    );
    assert!(dead_deliveries(&services, &webhook).await.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_an_event_again_queues_no_second_job_and_keeps_the_record() {
    // Given an event published while no worker runs: one record, one job
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let event = event(EventType::SessionEnded, json!({"session_id": "sess_1"}));
    let ids = services
        .publisher
        .publish(event.clone())
        .await
        .expect("publish");
    assert_eq!(depth(&services).await.ready, 1);

    // When the same event is published again (a publishing job redone)
    let again = services
        .publisher
        .publish(event.clone())
        .await
        .expect("publish again");

    // Then it names the same delivery, and still one job waits
    assert_eq!(again, ids);
    assert_eq!(depth(&services).await.ready, 1, "no second job");

    // When a worker has delivered it (written here, as a worker would) and
    // the event is published once more
    let queued = record(&services, &ids[0]).await.expect("record");
    assert!(
        services
            .deliveries
            .transition(&succeeded(queued))
            .await
            .expect("write success")
    );
    services
        .publisher
        .publish(event)
        .await
        .expect("publish a third time");

    // Then the record is still a success with its attempt, and no job was
    // added for it
    let kept = record(&services, &ids[0]).await.expect("record");
    assert_eq!(kept.status, DeliveryStatus::Success);
    assert_eq!(kept.attempts.len(), 1);
    assert_eq!(depth(&services).await.ready, 1);

    // ... and a worker running that one job sends nothing: it is over
    let worker = spawn_worker(services.clone()).await;
    testkit::wait_until("the job to be dropped", PATIENCE, || async {
        let d = depth(&services).await;
        (d.ready == 0 && d.in_flight == 0 && d.scheduled == 0).then_some(())
    })
    .await;
    worker.shutdown().await;
    assert!(
        receiver.requests().is_empty(),
        "a delivered event was sent again"
    );
    assert_eq!(
        record(&services, &ids[0]).await.map(|r| r.status),
        Some(DeliveryStatus::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cut_short_between_record_and_job_is_completed_by_its_redo() {
    // Given a record written by a publish that stopped before its job
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook = register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let event = event(EventType::SessionEnded, json!({"session_id": "sess_2"}));
    let id = DeliveryId::for_event(&event.event_id, &webhook.webhook_id);
    services
        .deliveries
        .create(&[DeliveryRecord::queued(
            id.clone(),
            webhook.webhook_id.clone(),
            event.clone(),
            1,
        )])
        .await
        .expect("record only");
    assert_eq!(depth(&services).await.ready, 0);

    // When the publish is redone
    let ids = services.publisher.publish(event).await.expect("redo");

    // Then the delivery gets its one job, and arrives
    assert_eq!(ids, std::slice::from_ref(&id));
    assert_eq!(depth(&services).await.ready, 1);
    let worker = spawn_worker(services.clone()).await;
    wait_for_status(&services, &id, DeliveryStatus::Success).await;
    worker.shutdown().await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_never_move_a_delivery_back() {
    // Given a queued delivery
    let redis = TestRedis::start();
    let services = services(&redis);
    let webhook = register(
        &services,
        "http://127.0.0.1:9/unused",
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let event = event(EventType::SessionEnded, json!({"session_id": "sess_3"}));
    let ids = services.publisher.publish(event).await.expect("publish");
    let queued = record(&services, &ids[0]).await.expect("record");
    let write = |r: DeliveryRecord| {
        let services = services.clone();
        async move { services.deliveries.transition(&r).await.expect("write") }
    };
    let with = |status: DeliveryStatus, attempt: u32| {
        let mut r = queued.clone();
        r.attempt = attempt;
        r.set_status(status, None);
        r
    };
    assert_eq!(webhook.webhook_id, queued.webhook_id);

    // A worker moves it forward
    assert!(write(with(DeliveryStatus::InProgress, 1)).await);
    assert!(write(with(DeliveryStatus::Failed, 1)).await);
    assert!(write(with(DeliveryStatus::InProgress, 2)).await);
    // ... a stale run of attempt 1 cannot write over attempt 2
    assert!(!write(with(DeliveryStatus::Failed, 1)).await);
    // ... nor can `queued` be put back except over `dead` (a replay)
    assert!(!write(with(DeliveryStatus::Queued, 2)).await);
    assert!(write(with(DeliveryStatus::Dead, 2)).await);
    assert!(write(with(DeliveryStatus::Queued, 2)).await);
    assert!(write(succeeded(with(DeliveryStatus::InProgress, 3))).await);

    // Once it succeeded, nothing moves it: not a late replay, a slow
    // duplicate, a cancellation or a dead-letter hook
    for status in [
        DeliveryStatus::Queued,
        DeliveryStatus::InProgress,
        DeliveryStatus::Failed,
        DeliveryStatus::Dead,
        DeliveryStatus::Cancelled,
    ] {
        assert!(!write(with(status, 9)).await, "{status:?} over success");
    }
    let kept = record(&services, &ids[0]).await.expect("record");
    assert_eq!(kept.status, DeliveryStatus::Success);
    assert_eq!(kept.attempts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_does_not_put_back_queued_over_a_delivery_a_worker_finished() {
    // Given a dead-lettered delivery
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let webhook = register(
        &services,
        &receiver.url(),
        &[EventType::ChatEscalated],
        SECRET,
    )
    .await;
    let worker = spawn_worker(services.clone()).await;
    let ids = services
        .publisher
        .publish(event(
            EventType::ChatEscalated,
            json!({"session_id": "sess_4"}),
        ))
        .await
        .expect("publish");
    let dead_record = wait_for_status(&services, &ids[0], DeliveryStatus::Dead).await;
    let dead = dead_letter_of(&services, &webhook).await;
    worker.shutdown().await;

    // When the replayed job's worker is faster than the replay's own
    // write of `queued` (its success is written first here)
    assert!(
        services
            .deliveries
            .transition(&succeeded(dead_record))
            .await
            .expect("write success")
    );
    assert!(services.publisher.replay(&dead).await.expect("replay"));

    // Then the record keeps the success, and the job is queued once
    let kept = record(&services, &ids[0]).await.expect("record");
    assert_eq!(kept.status, DeliveryStatus::Success);
    assert_eq!(depth(&services).await.ready, 1);
    assert!(dead_deliveries(&services, &webhook).await.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_disables_the_webhook_and_dead_letters_the_delivery_at_once() {
    // Given a receiver that answers 410 Gone
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(410)).await;
    let webhook = register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let worker = spawn_worker(services.clone()).await;

    // When an event is published to it
    let ids = services
        .publisher
        .publish(event(
            EventType::SessionEnded,
            json!({"session_id": "sess_5"}),
        ))
        .await
        .expect("publish");

    // Then the delivery is dead-lettered after that one attempt, saying why
    let dead = dead_letter_of(&services, &webhook).await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error, GONE_REASON);
    let record = wait_for_status(&services, &ids[0], DeliveryStatus::Dead).await;
    assert_eq!(record.error.as_deref(), Some(GONE_REASON));
    let attempts: Vec<(u32, Option<u16>)> = record
        .attempts
        .iter()
        .map(|a| (a.attempt, a.http_status))
        .collect();
    assert_eq!(attempts, [(1, Some(410))]);
    assert_eq!(receiver.requests().len(), 1);

    // ... and the webhook is off, with the reason
    let now = services
        .webhooks
        .get(&webhook.webhook_id)
        .await
        .expect("read webhook")
        .expect("webhook");
    assert!(!now.active);
    assert_eq!(now.disabled_reason.as_deref(), Some(GONE_REASON));
    worker.shutdown().await;
    assert_eq!(receiver.requests().len(), 1, "no retry after 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_skipped_for_an_inactive_webhook_is_not_counted_when_replayed() {
    // Given a delivery whose first attempt is under way (the receiver holds
    // it until the 2 s timeout), to a worker that reads webhooks fresh
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.delivery.webhook_cache_ttl = Duration::ZERO;
    let services = Services::connect(settings).expect("services");
    let receiver = spawn_receiver(Behaviour::Hang).await;
    let mut webhook = register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let worker = spawn_worker(services.clone()).await;
    let ids = services
        .publisher
        .publish(event(
            EventType::SessionEnded,
            json!({"session_id": "sess_6"}),
        ))
        .await
        .expect("publish");
    receiver.wait_for(1, PATIENCE).await;

    // When the webhook is deactivated before the retry, which is then
    // parked in the dead-letter set without being sent
    webhook.active = false;
    services.webhooks.save(&webhook).await.expect("deactivate");
    let dead = dead_letter_of(&services, &webhook).await;
    let parked = wait_for_status(&services, &ids[0], DeliveryStatus::Dead).await;
    assert_eq!(parked.attempts.len(), 1, "one attempt was sent");
    assert_eq!(receiver.requests().len(), 1);

    // ... and it is replayed once the webhook is active again
    receiver.set_behaviour(Behaviour::AlwaysOk);
    webhook.active = true;
    services.webhooks.save(&webhook).await.expect("reactivate");
    assert!(services.publisher.replay(&dead).await.expect("replay"));

    // Then the receiver sees attempt 2, not 3
    let requests = receiver.wait_for(2, PATIENCE).await;
    assert_eq!(header(&requests[1], "x-delivery-attempt"), "2");
    assert_eq!(requests[1].json()["delivery_attempt"], 2);
    let done = wait_for_status(&services, &ids[0], DeliveryStatus::Success).await;
    assert_eq!(done.attempt, 2);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_webhook_record_does_not_stop_publishing_to_the_others() {
    // Given a working webhook, and garbage under another id in the registry
    let redis = TestRedis::start();
    let services = services(&redis);
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    register(
        &services,
        &receiver.url(),
        &[EventType::SessionEnded],
        SECRET,
    )
    .await;
    let registry = shared::keys::webhooks(&services.settings.redis.key_prefix);
    let _: i64 = services
        .queue
        .connection()
        .hset(&registry, "webhook_garbage", "{not a webhook")
        .await
        .expect("write garbage");
    let worker = spawn_worker(services.clone()).await;

    // When an event is published
    let ids = services
        .publisher
        .publish(event(
            EventType::SessionEnded,
            json!({"session_id": "sess_7"}),
        ))
        .await
        .expect("publishing goes on past the unreadable record");

    // Then the readable webhook gets it
    assert_eq!(ids.len(), 1);
    wait_for_status(&services, &ids[0], DeliveryStatus::Success).await;
    assert_eq!(receiver.requests().len(), 1);
    worker.shutdown().await;
}
