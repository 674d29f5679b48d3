//! Ordered delivery per chat session (`ordering: "session"`), end to end:
//! events published through the real `Publisher`, delivered by the real
//! worker (in process, or the binary when it has to be killed) to real
//! receivers that fail on demand, with the order judged from what the
//! receivers got.
//!
//! The order rule checked: for each session, every request for its k-th
//! event arrives after the last request for its (k-1)-th, and each carries
//! `X-Webhook-Sequence: k`. An event's last request is the one that
//! delivered it, or its last attempt when it was dead-lettered.

use crate::common::dead_deliveries;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::json;
use shared::config::Settings;
use shared::delivery::history::DeliveryStatus;
use shared::delivery::ordering::DeliveryOrdering;
use shared::events::catalog::{Event, EventFilter, EventMetadata, EventType};
use shared::ids::{DeliveryId, EventId};
use shared::services::Services;
use shared::webhooks::registry::{Webhook, WebhookDraft};
use shared::webhooks::signing::Secret;
use testkit::{
    Behaviour, PATIENCE, Receiver, Recorded, TestRedis, WorkerProcess, settings_env,
    spawn_receiver, spawn_worker, test_settings, wait_until,
};

const WORKER_BINARY: &str = env!("CARGO_BIN_EXE_supportrag-worker");
const SECRET: &str = "ordering_test_secret_01";

async fn webhook(services: &Services, url: &str, ordering: DeliveryOrdering) -> Webhook {
    let secret = Secret::parse(SECRET).expect("a long enough secret");
    // The session's events only: an `error.occurred` about a dead letter
    // would be one more (unordered) request.
    let events = [
        EventType::ChatResponseGenerated,
        EventType::ChatMessageForwarded,
        EventType::SessionEnded,
    ]
    .map(EventFilter::Only)
    .to_vec();
    let mut draft = WebhookDraft::new("ordering", url, events, secret);
    draft.ordering = ordering;
    services.webhooks.insert(draft).await.expect("register")
}

/// One published event: its session (index) and place in it (from 0).
#[derive(Clone, Debug)]
struct Published {
    session: usize,
    index: usize,
    deliveries: Vec<DeliveryId>,
}

/// The events of a session alternate between the types a conversation
/// produces; the last one ends it.
fn event(session: usize, index: usize, last: bool) -> Event {
    let event_type = match (last, index % 2) {
        (true, _) => EventType::SessionEnded,
        (false, 0) => EventType::ChatResponseGenerated,
        (false, _) => EventType::ChatMessageForwarded,
    };
    Event::new(
        EventId::generate(),
        event_type,
        json!({"session_id": format!("sess_ord{session}"), "user_id": "u", "n": index}),
        EventMetadata {
            trace_id: format!("trace-{session}-{index}").parse().unwrap(),
            correlation_id: None,
        },
    )
}

/// Publishes `per_session` events for each of `sessions` sessions,
/// interleaved (the first of every session, then the second, ...), as
/// concurrent conversations produce them.
async fn publish_sessions(
    services: &Services,
    sessions: usize,
    per_session: usize,
) -> HashMap<String, Published> {
    let mut published = HashMap::new();
    for index in 0..per_session {
        for session in 0..sessions {
            let event = event(session, index, index + 1 == per_session);
            let id = event.event_id.to_string();
            let deliveries = services.publisher.publish(event).await.expect("publish");
            published.insert(
                id,
                Published {
                    session,
                    index,
                    deliveries,
                },
            );
        }
    }
    published
}

async fn publish_one(
    services: &Services,
    published: &mut HashMap<String, Published>,
    session: usize,
    index: usize,
) -> String {
    let event = event(session, index, false);
    let id = event.event_id.to_string();
    let deliveries = services.publisher.publish(event).await.expect("publish");
    published.insert(
        id.clone(),
        Published {
            session,
            index,
            deliveries,
        },
    );
    id
}

fn event_id_of(request: &Recorded) -> String {
    request.json()["event_id"]
        .as_str()
        .expect("event_id in body")
        .to_owned()
}

/// Requests that broke the order, and how many requests were judged. A
/// request breaks it when an earlier event of its session had a request
/// after this one's first, or when its sequence header is not its place.
fn reorderings(
    requests: &[Recorded],
    published: &HashMap<String, Published>,
    ordered: bool,
) -> usize {
    let mut first: HashMap<(usize, usize), usize> = HashMap::new();
    let mut last: HashMap<(usize, usize), usize> = HashMap::new();
    let mut broken = 0;
    for (at, request) in requests.iter().enumerate() {
        let Some(p) = published.get(&event_id_of(request)) else {
            continue;
        };
        first.entry((p.session, p.index)).or_insert(at);
        last.insert((p.session, p.index), at);
        let sequence = request.header("x-webhook-sequence");
        let expected = ordered.then(|| (p.index + 1).to_string());
        if sequence != expected.as_deref() {
            broken += 1;
        }
    }
    for (&(session, index), &at) in &first {
        let earlier_after = (0..index)
            .filter(|j| last.get(&(session, *j)).is_some_and(|l| *l > at))
            .count();
        broken += earlier_after;
    }
    broken
}

async fn wait_for_status(services: &Services, ids: &[&DeliveryId], status: DeliveryStatus) {
    wait_until(
        &format!("deliveries to be {status:?}"),
        PATIENCE,
        || async {
            for id in ids {
                let record = services.deliveries.get(id).await.ok()??;
                if record.status != status {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

async fn status_of(services: &Services, id: &DeliveryId) -> Option<DeliveryStatus> {
    services
        .deliveries
        .get(id)
        .await
        .expect("read record")
        .map(|r| r.status)
}

fn ids_of(published: &HashMap<String, Published>, at: usize) -> Vec<&DeliveryId> {
    published.values().map(|p| &p.deliveries[at]).collect()
}

async fn ordering_keys(services: &Services, webhook: &Webhook) -> Vec<String> {
    let pattern = format!(
        "{prefix}:{{{prefix}:wh:{id}}}:ord:*",
        prefix = services.settings.redis.key_prefix,
        id = webhook.webhook_id
    );
    services
        .queue
        .connection()
        .keys(pattern)
        .await
        .expect("list keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_arrives_in_order_though_first_attempts_fail() {
    // Given an ordered webhook and an unordered one, each behind a receiver
    // that fails the first attempt of every third event
    let (sessions, per_session) = (6, 8);
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let ordered_rx = spawn_receiver(Behaviour::AlwaysOk).await;
    let unordered_rx = spawn_receiver(Behaviour::AlwaysOk).await;
    let ordered = webhook(&services, &ordered_rx.url(), DeliveryOrdering::Session).await;
    let unordered = webhook(&services, &unordered_rx.url(), DeliveryOrdering::None).await;

    // When sessions x events are published, interleaved, and delivered
    let published = publish_sessions(&services, sessions, per_session).await;
    let failing: BTreeSet<String> = published
        .iter()
        .filter(|(_, p)| (p.session + p.index) % 3 == 0)
        .map(|(id, _)| id.clone())
        .collect();
    let failing = Arc::new(failing);
    ordered_rx.set_behaviour(Behaviour::FailFirstAttemptOf(failing.clone()));
    unordered_rx.set_behaviour(Behaviour::FailFirstAttemptOf(failing.clone()));
    let worker = spawn_worker(services.clone()).await;
    // Deliveries come in webhook order (oldest first): the ordered one's,
    // then the unordered one's.
    let (first, second) = (ids_of(&published, 0), ids_of(&published, 1));
    wait_for_status(&services, &first, DeliveryStatus::Success).await;
    wait_for_status(&services, &second, DeliveryStatus::Success).await;
    worker.shutdown().await;

    // Then the ordered webhook got every session in production order, each
    // request numbered by its place, with the failed first attempts retried
    // before the next event of their session went
    let requests = ordered_rx.requests();
    let events = sessions * per_session;
    assert_eq!(
        requests.len(),
        events + failing.len(),
        "one retry per failed first attempt"
    );
    let broken = reorderings(&requests, &published, true);
    // ... while the unordered one got everything too, unnumbered, and no
    // line was kept for it
    let control = unordered_rx.requests();
    assert_eq!(control.len(), events + failing.len());
    let control_broken = reorderings(&control, &published, false);
    assert!(ordering_keys(&services, &unordered).await.is_empty());
    assert!(
        !ordering_keys(&services, &ordered).await.is_empty(),
        "the ordered webhook keeps its sessions' counters"
    );
    let waits = services
        .publisher
        .sequences
        .waits_total()
        .await
        .expect("waits");
    eprintln!(
        "ordering: {sessions} sessions x {per_session} events per session, {} first attempts \
         failed; ordered webhook: {broken} reorderings, {waits} waits; unordered webhook: \
         {control_broken} events sent before an earlier one of their session was delivered",
        failing.len()
    );
    assert_eq!(broken, 0, "the ordered webhook saw reorderings");
    assert!(
        waits > 0,
        "the ordered webhook's deliveries never had to wait"
    );
    for p in published.values() {
        let record = services
            .deliveries
            .get(&p.deliveries[0])
            .await
            .expect("read");
        assert_eq!(
            record.and_then(|r| r.sequence),
            Some(p.index as u64 + 1),
            "the record shows the sequence sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_session_holds_back_only_its_own_later_events() {
    // Given an ordered webhook whose receiver fails every attempt of
    // session 0's first event, with retries to spare
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.delivery.retry_schedule = vec![Duration::from_millis(100); 500];
    let services = Services::connect(settings).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    webhook(&services, &receiver.url(), DeliveryOrdering::Session).await;
    let published = publish_sessions(&services, 3, 5).await;
    let (stuck_id, stuck) = published
        .iter()
        .find(|(_, p)| p.session == 0 && p.index == 0)
        .map(|(id, p)| (id.clone(), p.clone()))
        .expect("session 0's first event");
    receiver.set_behaviour(Behaviour::FailEventsOf(Arc::new(BTreeSet::from([
        stuck_id.clone(),
    ]))));

    // When the worker delivers
    let worker = spawn_worker(services.clone()).await;

    // Then the other sessions are delivered in full while the stuck event
    // is still being retried, and nothing later of its session was sent
    let others: Vec<&DeliveryId> = published
        .values()
        .filter(|p| p.session != 0)
        .map(|p| &p.deliveries[0])
        .collect();
    wait_for_status(&services, &others, DeliveryStatus::Success).await;
    assert_eq!(
        status_of(&services, &stuck.deliveries[0]).await,
        Some(DeliveryStatus::Failed),
        "the stuck event should still be retrying"
    );
    let sent_from_stuck_session: Vec<String> = receiver
        .requests()
        .iter()
        .map(event_id_of)
        .filter(|id| published[id].session == 0 && *id != stuck_id)
        .collect();
    assert_eq!(sent_from_stuck_session, Vec::<String>::new());

    // ... and once the receiver recovers, the stuck session follows in order
    receiver.set_behaviour(Behaviour::AlwaysOk);
    let all = ids_of(&published, 0);
    wait_for_status(&services, &all, DeliveryStatus::Success).await;
    worker.shutdown().await;
    assert_eq!(reorderings(&receiver.requests(), &published, true), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_head_releases_the_next_and_its_replay_blocks_nothing() {
    // Given an ordered webhook whose receiver always fails one session's
    // first event (three attempts, then the dead-letter set)
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let hook = webhook(&services, &receiver.url(), DeliveryOrdering::Session).await;
    let mut published = publish_sessions(&services, 1, 3).await;
    let head_id = published
        .iter()
        .find(|(_, p)| p.index == 0)
        .map(|(id, _)| id.clone())
        .expect("the first event");
    let failing = Arc::new(BTreeSet::from([head_id.clone()]));
    receiver.set_behaviour(Behaviour::FailEventsOf(failing));
    let worker = spawn_worker(services.clone()).await;

    // When it is dead-lettered
    let head = published[&head_id].deliveries[0].clone();
    wait_for_status(&services, &[&head], DeliveryStatus::Dead).await;

    // Then the events after it are delivered, in order, after its last
    // attempt, numbered 2 and 3 (the gap says one was skipped)
    let rest: Vec<&DeliveryId> = published
        .values()
        .filter(|p| p.index > 0)
        .map(|p| &p.deliveries[0])
        .collect();
    wait_for_status(&services, &rest, DeliveryStatus::Success).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3 + 2, "three attempts, then the two others");
    assert_eq!(reorderings(&requests, &published, true), 0);

    // When the dead letter is replayed (still failing), and the session
    // goes on
    let dead = wait_until("the dead letter", PATIENCE, || async {
        dead_deliveries(&services, &hook)
            .await
            .items
            .into_iter()
            .next()
    })
    .await;
    assert!(services.publisher.replay(&dead).await.expect("replay"));
    let next = publish_one(&services, &mut published, 0, 3).await;

    // Then the new event is delivered whatever the replay does, numbered
    // on from the line (4), and the replay carries its own number (1)
    let next_delivery = published[&next].deliveries[0].clone();
    wait_for_status(&services, &[&next_delivery], DeliveryStatus::Success).await;
    let numbered = |event: &str| -> Vec<Option<String>> {
        receiver
            .requests()
            .iter()
            .filter(|r| event_id_of(r) == event)
            .map(|r| r.header("x-webhook-sequence").map(str::to_owned))
            .collect()
    };
    assert_eq!(numbered(&next), vec![Some("4".to_owned())]);
    wait_until("the replay to be attempted", PATIENCE, || async {
        (numbered(&head_id).len() > 3).then_some(())
    })
    .await;
    assert!(
        numbered(&head_id).iter().all(|s| s.as_deref() == Some("1")),
        "{:?}",
        numbered(&head_id)
    );

    // ... and a manual retry of a delivered event keeps its number too
    let (second_id, second) = published
        .iter()
        .find(|(_, p)| p.index == 1)
        .map(|(id, p)| (id.clone(), p.deliveries[0].clone()))
        .expect("the second event");
    let original = services
        .deliveries
        .get(&second)
        .await
        .expect("read")
        .expect("the second event's record");
    let retry = services
        .publisher
        .retry_delivery(&original)
        .await
        .expect("retry");
    wait_for_status(&services, &[&retry.delivery_id], DeliveryStatus::Success).await;
    assert_eq!(numbered(&second_id), vec![Some("2".to_owned()); 2]);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_sequence_does_not_wedge_it() {
    // Given an ordered webhook behind a slow receiver and a worker process
    // delivering four sessions of six events
    let redis = TestRedis::start();
    let mut settings: Settings = test_settings(&redis.url());
    settings.delivery.concurrency = 8;
    settings.log.level = "info".into();
    let services = Services::connect(settings.clone()).expect("services");
    let receiver: Receiver = spawn_receiver(Behaviour::Delay(Duration::from_millis(200))).await;
    webhook(&services, &receiver.url(), DeliveryOrdering::Session).await;
    let published = publish_sessions(&services, 4, 6).await;
    let mut first = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));

    // When it is SIGKILLed in the middle of the sequences
    receiver.wait_for(6, PATIENCE).await;
    tokio::task::block_in_place(|| first.kill());
    let before_kill = receiver.requests().len();
    assert!(
        before_kill < published.len(),
        "the kill came too late to test anything: {before_kill} requests already"
    );

    // ... and another worker process takes over
    let mut second = WorkerProcess::spawn(WORKER_BINARY, &settings_env(&settings));

    // Then every event is delivered, each session in order (the requests in
    // flight at the kill are sent again before the next of their session)
    let all = ids_of(&published, 0);
    wait_for_status(&services, &all, DeliveryStatus::Success).await;
    let requests = receiver.requests();
    let broken = reorderings(&requests, &published, true);
    eprintln!(
        "killed after {before_kill} requests; {} requests for {} events; {broken} reorderings",
        requests.len(),
        published.len()
    );
    assert_eq!(broken, 0);
    second.terminate();
    let status = tokio::task::block_in_place(|| second.wait_exit(PATIENCE));
    assert!(status.success(), "second worker exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_recorded_delivered_but_never_released_is_dropped_by_the_next() {
    // Given a session's first event whose record says delivered while it
    // is still at the head of its line: what a worker leaves when it dies
    // between recording the success and leaving the line
    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    webhook(&services, &receiver.url(), DeliveryOrdering::Session).await;
    let mut published = HashMap::new();
    let first = publish_one(&services, &mut published, 0, 0).await;
    let head = published[&first].deliveries[0].clone();
    let mut record = services
        .deliveries
        .get(&head)
        .await
        .expect("read")
        .expect("the head's record");
    record.set_status(DeliveryStatus::Success, None);
    assert!(
        services
            .deliveries
            .transition(&record)
            .await
            .expect("write")
    );

    // When the session's next event is published and the worker runs
    let next = publish_one(&services, &mut published, 0, 1).await;
    let worker = spawn_worker(services.clone()).await;

    // Then the next event is delivered, numbered 2, and the head (over
    // already) is not sent again
    let next_delivery = published[&next].deliveries[0].clone();
    wait_for_status(&services, &[&next_delivery], DeliveryStatus::Success).await;
    worker.shutdown().await;
    let requests = receiver.requests();
    let sent: Vec<(String, Option<&str>)> = requests
        .iter()
        .map(|r| (event_id_of(r), r.header("x-webhook-sequence")))
        .collect();
    assert_eq!(sent, vec![(next, Some("2"))]);
}
