//! The README walk-through, end to end through the API: register, send a
//! test event (checked by the seed's JavaScript verifier), read the history,
//! force failures into the dead-letter set, replay, retry by hand.

use crate::common::spawn_app;
use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::delivery::history::{DeliveryRecord, DeliveryStatus};
use shared::events::catalog::{Event, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId, WebhookId};
use testkit::{Behaviour, PATIENCE, spawn_js_verifier, spawn_receiver, spawn_worker, wait_until};

const SECRET: &str = "my_secret_key_12345";

#[tokio::test]
async fn test_event_reaches_the_seed_verifier_and_shows_in_the_history() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    // The verifier must know the webhook id before it exists, so register
    // first against a placeholder, then point the webhook at the verifier.
    let id = app
        .register("http://127.0.0.1:9/placeholder", &["*"], SECRET)
        .await;
    let verifier = spawn_js_verifier(&[(id.as_str(), SECRET)]);
    let patched = app
        .admin_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"url": verifier.url()}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);

    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    assert_eq!(queued.data()["status"], "queued");
    let event_id = queued.data()["event_id"].as_str().unwrap().to_owned();

    let got = verifier.wait_for(1, PATIENCE).await;
    assert!(
        verifier.rejected().await.is_empty(),
        "the seed verifier rejected a delivery: {got:?}"
    );
    let verified = verifier.verified().await;
    assert_eq!(verified.len(), 1, "{got:?}");
    let received = serde_json::to_string(&verified[0]).unwrap();
    assert!(
        received.contains(&event_id) && received.contains("webhook.test"),
        "{received}"
    );

    let history = wait_until(
        "the delivery to be recorded as success",
        PATIENCE,
        || async {
            let h = app
                .admin_get(&format!("/api/v1/webhooks/{id}/deliveries"))
                .await;
            (h.data()[0]["status"] == "success").then_some(h)
        },
    )
    .await;
    let delivery = &history.data()[0];
    assert_eq!(delivery["event_id"], event_id.as_str());
    assert_eq!(delivery["http_status"], 200);
    assert_eq!(delivery["attempt"], 1);
    let delivery_id = delivery["delivery_id"].as_str().unwrap();
    let detail = app
        .admin_get(&format!("/api/v1/webhooks/deliveries/{delivery_id}"))
        .await;
    assert_eq!(detail.data()["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(detail.data()["payload"]["event_id"], event_id.as_str());
    assert!(
        !detail.body.to_string().contains(SECRET),
        "no secret in a delivery record"
    );

    let stats = app.admin_get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(stats.data()["deliveries_count"], 1);
    assert_eq!(stats.data()["success_rate"], 100.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn failures_land_in_the_dead_letter_set_and_replay_after_recovery() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(500)).await;
    let id = app
        .register(&receiver.url(), &["chat.response.generated"], SECRET)
        .await;

    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    let event_id = queued.data()["event_id"].as_str().unwrap().to_owned();
    let dead = wait_until("the delivery to be dead-lettered", PATIENCE, || async {
        let list = app
            .admin_get(&format!("/api/v1/dead-letters?webhook_id={id}"))
            .await;
        (list.body["meta"]["pagination"]["total"] == 1).then_some(list)
    })
    .await;
    let entry = &dead.data()[0];
    assert_eq!(entry["event_id"], event_id.as_str());
    assert_eq!(entry["job_type"], "deliver");
    assert_eq!(
        entry["attempts"], 3,
        "1 + the 2 retries of the test schedule"
    );
    assert!(entry["last_error"].as_str().unwrap().contains("500"));
    let dead_id = entry["dead_letter_id"].as_str().unwrap().to_owned();

    let detail = app
        .admin_get(&format!("/api/v1/dead-letters/{dead_id}"))
        .await;
    assert_eq!(
        detail.data()["payload"]["event"]["event_id"],
        event_id.as_str()
    );
    let failed = app
        .admin_get(&format!("/api/v1/webhooks/{id}/deliveries?status=dead"))
        .await;
    assert_eq!(failed.body["meta"]["pagination"]["total"], 1);
    assert_eq!(receiver.requests().len(), 3);

    receiver.set_behaviour(Behaviour::AlwaysOk);
    let replayed = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/dead-letters/{dead_id}/replay"),
        ))
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    let requests = receiver.wait_for(4, PATIENCE).await;
    let last = &requests[3];
    assert_eq!(
        last.header("x-event-id"),
        Some(event_id.as_str()),
        "a replay keeps the event id"
    );
    assert_eq!(
        last.header("x-delivery-attempt"),
        Some("4"),
        "and continues the attempt count"
    );

    let again = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/dead-letters/{dead_id}/replay"),
        ))
        .await;
    assert_eq!(
        again.status,
        StatusCode::NOT_FOUND,
        "a replayed entry is gone from the set"
    );
    let bulk = app
        .admin_json(
            Method::POST,
            "/api/v1/dead-letters/replay",
            &json!({"webhook_id": id}),
        )
        .await;
    assert_eq!(
        bulk.data()["replayed"],
        0,
        "bulk replay is safe to call twice"
    );

    // A manual retry is a new delivery of the same event, counting on.
    let delivery_id = last_delivery_id(&app, &id).await;
    let retry = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/webhooks/deliveries/{delivery_id}/retry"),
        ))
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(
        retry.data()["delivery_id"],
        format!("{delivery_id}_retry_1")
    );
    assert_eq!(retry.data()["original_delivery_id"], delivery_id.as_str());
    assert_eq!(retry.data()["status"], "queued");
    assert_eq!(retry.data()["attempt"], 5);
    let requests = receiver.wait_for(5, PATIENCE).await;
    assert_eq!(requests[4].header("x-event-id"), Some(event_id.as_str()));
    assert_eq!(requests[4].header("x-delivery-attempt"), Some("5"));
    worker.shutdown().await;
}

#[tokio::test]
async fn bulk_replay_by_filter_requeues_every_match_once() {
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysStatus(503)).await;
    let id = app.register(&receiver.url(), &["*"], SECRET).await;
    for _ in 0..3 {
        app.send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
            .await;
    }
    wait_until("three dead letters", PATIENCE, || async {
        let list = app.admin_get("/api/v1/dead-letters?job_type=deliver").await;
        (list.body["meta"]["pagination"]["total"] == 3).then_some(())
    })
    .await;
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let bulk = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/dead-letters/replay?webhook_id={id}"),
        ))
        .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.body);
    assert_eq!(bulk.data()["replayed"], 3);
    receiver.wait_for(9 + 3, PATIENCE).await;
    let left = app.admin_get("/api/v1/dead-letters").await;
    assert_eq!(left.body["meta"]["pagination"]["total"], 0);
    worker.shutdown().await;
}

async fn last_delivery_id(app: &crate::common::TestApp, webhook: &str) -> String {
    let list = app
        .admin_get(&format!("/api/v1/webhooks/{webhook}/deliveries"))
        .await;
    list.data()[0]["delivery_id"]
        .as_str()
        .expect("a delivery")
        .to_owned()
}

async fn wait_for_delivery(app: &crate::common::TestApp, id: &str, status: &str) -> Value {
    wait_until(&format!("{id} to be {status}"), PATIENCE, || async {
        let reply = app
            .admin_get(&format!("/api/v1/webhooks/deliveries/{id}"))
            .await;
        (reply.data()["status"] == status).then(|| reply.data().clone())
    })
    .await
}

async fn retry(app: &crate::common::TestApp, id: &str) -> Value {
    let reply = app
        .send(app.admin(
            Method::POST,
            &format!("/api/v1/webhooks/deliveries/{id}/retry"),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    reply.data().clone()
}

#[tokio::test]
async fn a_retry_of_a_retry_is_a_new_delivery_numbered_on_the_first() {
    // Given a delivered test event and a manual retry of it
    let app = spawn_app().await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = app.register(&receiver.url(), &["*"], SECRET).await;
    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    let first = queued.data()["delivery_id"].as_str().unwrap().to_owned();
    wait_for_delivery(&app, &first, "success").await;
    let retry_1 = retry(&app, &first).await;
    assert_eq!(retry_1["delivery_id"], format!("{first}_retry_1"));
    let retried = wait_for_delivery(&app, &format!("{first}_retry_1"), "success").await;

    // When the retry is retried
    let retry_2 = retry(&app, &format!("{first}_retry_1")).await;

    // Then that is a new delivery, numbered on the first one, counting on
    assert_eq!(retry_2["delivery_id"], format!("{first}_retry_2"));
    assert_eq!(retry_2["original_delivery_id"], first.as_str());
    assert_eq!(retry_2["attempt"], 3);
    let done = wait_for_delivery(&app, &format!("{first}_retry_2"), "success").await;
    assert_eq!(done["attempts"][0]["attempt"], 3);
    // ... and the retry it was made of keeps its own history
    let kept = wait_for_delivery(&app, &format!("{first}_retry_1"), "success").await;
    assert_eq!(kept["attempts"], retried["attempts"]);
    assert_eq!(kept["attempts"].as_array().map(Vec::len), Some(1));
    let attempts: Vec<Option<String>> = receiver
        .wait_for(3, PATIENCE)
        .await
        .iter()
        .map(|r| r.header("x-delivery-attempt").map(str::to_owned))
        .collect();
    assert_eq!(
        attempts,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );

    // When the next retry id is taken already (a record outliving the
    // retry counter)
    let first_id = DeliveryId::parse(&first).unwrap();
    let taken = DeliveryId::retry_of(&first_id, 3);
    let original = app
        .services
        .deliveries
        .get(&first_id)
        .await
        .unwrap()
        .unwrap();
    let mut squatter = DeliveryRecord::queued(
        taken.clone(),
        original.webhook_id.clone(),
        original.event.clone(),
        7,
    );
    squatter.set_status(DeliveryStatus::Dead, Some("left from before".into()));
    app.services
        .deliveries
        .create(&[squatter])
        .await
        .expect("an old record");
    let retry_4 = retry(&app, &first).await;

    // Then the retry takes the next free id and leaves that record alone
    assert_eq!(retry_4["delivery_id"], format!("{first}_retry_4"));
    let untouched = app.services.deliveries.get(&taken).await.unwrap().unwrap();
    assert_eq!(untouched.status, DeliveryStatus::Dead);
    assert_eq!(untouched.attempt, 7);
    worker.shutdown().await;
}

/// Stores `count` deliveries for `webhook` straight in the history (no
/// worker), `per_ms` to a millisecond so that pages split ties; `status`
/// and `event_type` by position, 0 the oldest. Returns (id, position)
/// newest first.
async fn fill_history(
    app: &crate::common::TestApp,
    webhook: &str,
    count: usize,
    per_ms: usize,
    status: impl Fn(usize) -> DeliveryStatus,
    event_type: impl Fn(usize) -> EventType,
) -> Vec<(String, usize)> {
    let webhook_id = WebhookId::parse(webhook).unwrap();
    let start = Utc::now() - Duration::hours(1);
    let records: Vec<DeliveryRecord> = (0..count)
        .map(|i| {
            let event = Event::new(
                EventId::generate(),
                event_type(i),
                json!({"n": i}),
                EventMetadata {
                    trace_id: format!("t{i}").parse().unwrap(),
                    correlation_id: None,
                },
            );
            let mut record =
                DeliveryRecord::queued(DeliveryId::generate(), webhook_id.clone(), event, 1);
            record.status = status(i);
            record.timestamp = start + Duration::milliseconds((i / per_ms) as i64);
            record
        })
        .collect();
    app.services
        .deliveries
        .create(&records)
        .await
        .expect("history");
    // Newest first; ties (same millisecond) by id, as Redis orders them.
    let mut newest_first: Vec<(i64, String, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.timestamp.timestamp_millis(), r.delivery_id.to_string(), i))
        .collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    newest_first.into_iter().map(|(_, id, i)| (id, i)).collect()
}

/// The delivery ids of a listing page, in order.
fn page_ids(page: &crate::common::Reply) -> Vec<String> {
    page.data()
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("delivery_id").to_owned())
        .collect()
}

/// Every page from `path` (a query without cursor), following
/// `next_cursor`: the ids in order, and each page's `total`.
async fn follow_cursor(app: &crate::common::TestApp, path: &str) -> (Vec<String>, Vec<u64>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    let mut url = path.to_owned();
    for _ in 0..100 {
        let page = app.admin_get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        ids.extend(page_ids(&page));
        totals.push(page.body["meta"]["pagination"]["total"].as_u64().unwrap());
        match page.body["meta"]["pagination"]["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => return (ids, totals),
        }
    }
    panic!("{path}: more than 100 pages");
}

#[tokio::test]
async fn delivery_history_pages_by_offset_and_by_cursor_without_gaps_or_repeats() {
    // Given 250 deliveries, three to a millisecond, every fifth failed,
    // every other one a session.ended
    let app = spawn_app().await;
    let id = app
        .register("http://127.0.0.1:9/unused", &["*"], SECRET)
        .await;
    let history = fill_history(
        &app,
        &id,
        250,
        3,
        |i| {
            if i % 5 == 0 {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Success
            }
        },
        |i| {
            if i % 2 == 0 {
                EventType::SessionEnded
            } else {
                EventType::ChatEscalated
            }
        },
    )
    .await;
    let expected: Vec<String> = history.iter().map(|(id, _)| id.clone()).collect();
    let base = format!("/api/v1/webhooks/{id}/deliveries");

    // When it is read 100 at a time by offset
    let mut by_offset = Vec::new();
    for offset in [0, 100, 200] {
        let page = app
            .admin_get(&format!("{base}?limit=100&offset={offset}"))
            .await;
        assert_eq!(page.body["meta"]["pagination"]["total"], 250);
        by_offset.extend(page_ids(&page));
    }
    // ... and by cursor
    let (by_cursor, totals) = follow_cursor(&app, &format!("{base}?limit=100")).await;

    // Then both give every delivery once, newest first
    assert_eq!(by_offset, expected);
    assert_eq!(by_cursor, expected);
    assert_eq!(totals, [250, 250, 250]);

    // When filtered, by cursor (pages of 7 split the ties) and by offset
    let failed: Vec<String> = history
        .iter()
        .filter(|(_, i)| i % 5 == 0)
        .map(|(id, _)| id.clone())
        .collect();
    let (filtered, totals) = follow_cursor(&app, &format!("{base}?status=failed&limit=7")).await;
    let second = app
        .admin_get(&format!("{base}?status=failed&limit=20&offset=20"))
        .await;

    // Then only the matches come, in order, with their exact count
    assert_eq!(filtered, failed);
    assert!(totals.iter().all(|t| *t == 50), "{totals:?}");
    assert_eq!(page_ids(&second), failed[20..40]);
    assert_eq!(second.body["meta"]["pagination"]["total"], 50);
    let both = app
        .admin_get(&format!(
            "{base}?status=failed&event_type=session.ended&limit=100"
        ))
        .await;
    assert_eq!(both.data().as_array().map(Vec::len), Some(25));
    assert_eq!(both.body["meta"]["pagination"]["total"], 25);
    assert!(both.body["meta"]["pagination"]["next_cursor"].is_null());

    // When one record has become unreadable
    let broken = shared::keys::delivery(&app.services.settings.redis.key_prefix, &expected[1]);
    let _: () = redis::AsyncCommands::set(&mut app.services.queue.connection(), &broken, "{oops")
        .await
        .expect("break a record");

    // Then the pages go on without it, and it is not taken for expired
    for _ in 0..2 {
        let page = app.admin_get(&format!("{base}?limit=3")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(
            page_ids(&page),
            [&expected[0], &expected[2], &expected[3]].map(String::as_str)
        );
        assert_eq!(page.body["meta"]["pagination"]["total"], 250);
    }

    // ... and a cursor with an offset, or a made-up one, is a bad query
    for query in ["limit=5&offset=5&cursor=1.0.0.dlv_x", "cursor=nonsense"] {
        let reply = app.admin_get(&format!("{base}?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.error_code(), "INVALID_QUERY");
    }
}

#[tokio::test]
async fn a_filter_matching_far_back_costs_bounded_pages_and_still_reaches_its_matches() {
    // Given 2,500 deliveries of which only the two oldest are dead
    let app = spawn_app().await;
    let id = app
        .register("http://127.0.0.1:9/unused", &["*"], SECRET)
        .await;
    let history = fill_history(
        &app,
        &id,
        2500,
        1,
        |i| {
            if i < 2 {
                DeliveryStatus::Dead
            } else {
                DeliveryStatus::Success
            }
        },
        |_| EventType::SessionEnded,
    )
    .await;
    let base = format!("/api/v1/webhooks/{id}/deliveries");

    // When the dead ones are asked for
    let first = app.admin_get(&format!("{base}?status=dead&limit=10")).await;

    // Then the first answer examined only part of the history: no match
    // yet, a cursor to go on, and a total that does not undercount
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.data().as_array().map(Vec::len), Some(0));
    assert!(first.body["meta"]["pagination"]["next_cursor"].is_string());
    assert!(first.body["meta"]["pagination"]["total"].as_u64().unwrap() >= 2);

    // ... and following the cursor reaches both, the last page exact
    let (found, totals) = follow_cursor(&app, &format!("{base}?status=dead&limit=10")).await;
    let oldest: Vec<String> = history[2498..].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(found, oldest);
    assert_eq!(totals.len(), 3, "1,000 deliveries examined per page");
    assert_eq!(totals.last(), Some(&2));
}

/// Managed Redis is often reachable over TLS only, with client
/// certificates: the API and a worker work through `rediss://`.
#[tokio::test]
async fn over_rediss_with_client_certificates_a_test_event_is_delivered() {
    let redis = testkit::TestRedis::start();
    let tls = redis.enable_tls(true);
    let tls_settings = |s: &mut shared::config::Settings| {
        s.redis.url = shared::config::RedisUrl::parse(&tls.url).expect("rediss URL");
        s.redis.tls_ca_file = Some(tls.ca.clone());
        s.redis.tls_cert_file = Some(tls.cert.clone());
        s.redis.tls_key_file = Some(tls.key.clone());
    };
    // Without a client certificate the server refuses the connection.
    let mut anonymous = testkit::test_settings(&tls.url);
    anonymous.redis.tls_ca_file = Some(tls.ca.clone());
    let client = shared::redis_conn::client(&anonymous.redis).expect("client");
    assert!(client.get_multiplexed_async_connection().await.is_err());

    let app = crate::common::spawn_app_on(
        redis,
        tls_settings,
        std::sync::Arc::new(shared::net::ssrf::SystemResolver),
    )
    .await;
    let worker = spawn_worker(app.services.clone()).await;
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let id = app.register(&receiver.url(), &["*"], SECRET).await;
    let queued = app
        .send(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test")))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    receiver.wait_for(1, PATIENCE).await;
    worker.shutdown().await;
}
