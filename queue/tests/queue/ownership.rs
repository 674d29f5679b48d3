//! Settles are owner-checked: a consumer that held an entry past the
//! visibility timeout (another consumer reclaimed it) cannot ack, retry,
//! defer, dead-letter or hand it back, so a job never splits in two.
//! Also: the dead-letter listing reads pages through its indexes, idle
//! consumers are removed only when they hold nothing, and the errors of a
//! Redis that cannot serve for now count as "unavailable".

use std::time::Duration;

use queue::keys::CONSUMER_GROUP;
use queue::{
    DeadLetter, DeadLetterFilter, DeadLetterId, Envelope, FetchedKind, Job, Labels, QueueClient,
    Settled,
};
use serde::{Deserialize, Serialize};
use testkit::TestRedis;

use crate::common::{READ_BLOCK, TestQueue};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Task {
    n: u64,
    owner: String,
}

impl Job for Task {
    const QUEUE: &'static str = "test-owned";

    fn labels(&self) -> Labels {
        Labels::from([("owner".to_owned(), self.owner.clone())])
    }
}

fn task(n: u64, owner: &str) -> Envelope<Task> {
    Envelope::new(
        Task::QUEUE,
        Task {
            n,
            owner: owner.to_owned(),
        },
        format!("trace-{n}").parse().unwrap(),
    )
}

/// Consumer `a` takes one job; consumer `b` then claims it (what the
/// reclaim script does once `a` has been silent for the visibility
/// timeout). Returns the entry id and its bytes.
async fn taken_by_a_then_reclaimed_by_b(q: &TestQueue, client: &QueueClient) -> (String, Vec<u8>) {
    client.ensure_group(Task::QUEUE).await.expect("group");
    client.push(&[task(1, "x")]).await.expect("push");
    let mut conn = q.connection();
    let taken = client
        .read(&mut conn, Task::QUEUE, "a", 1, READ_BLOCK)
        .await
        .expect("read");
    let entry = taken.into_iter().next().expect("one entry");
    let reclaimed = client
        .reclaim(Task::QUEUE, "b", Duration::ZERO, 1, 1)
        .await
        .expect("reclaim");
    assert_eq!(reclaimed.len(), 1, "b takes the entry over");
    assert_eq!(reclaimed[0].times_delivered, 2);
    (entry.entry_id, entry.raw)
}

fn dead_letter_of(raw: &[u8], error: &str) -> DeadLetter {
    let envelope: Envelope<Task> = serde_json::from_slice(raw).expect("envelope");
    DeadLetter {
        dead_letter_id: DeadLetterId::generate(),
        job_type: Task::QUEUE.to_owned(),
        job_id: Some(envelope.id.clone()),
        labels: envelope.payload.labels(),
        attempts: 3,
        prior_attempts: 0,
        last_error: error.to_owned(),
        failed_at: chrono::Utc::now(),
        history: Vec::new(),
        job: serde_json::to_value(&envelope).expect("json"),
    }
}

async fn stat(client: &QueueClient, name: &str) -> u64 {
    let keys = client.keys(Task::QUEUE);
    let value: Option<u64> = redis::cmd("HGET")
        .arg(&keys.stats)
        .arg(name)
        .query_async(&mut client.connection())
        .await
        .expect("HGET");
    value.unwrap_or(0)
}

#[tokio::test]
async fn a_worker_that_lost_its_job_cannot_settle_it_and_the_new_owner_can() {
    // Given a job taken by `a` and reclaimed by `b` (a stalled past the
    // visibility timeout)
    let redis = TestRedis::start();
    let q = TestQueue::new(&redis);
    let client = q.client();
    let (entry, raw) = taken_by_a_then_reclaimed_by_b(&q, &client).await;

    // When `a` wakes up and tries every way of settling it
    let due = chrono::Utc::now().timestamp_millis();
    let lost = client
        .ack(Task::QUEUE, "a", std::slice::from_ref(&entry))
        .await
        .expect("ack");
    let retried = client
        .retry_later(Task::QUEUE, "a", &entry, &raw, due)
        .await
        .expect("retry");
    let deferred = client
        .defer(Task::QUEUE, "a", &entry, &raw, due)
        .await
        .expect("defer");
    let handed = client
        .hand_back(Task::QUEUE, "a", &entry, FetchedKind::Job, &raw)
        .await
        .expect("hand back");
    let dead_a = client
        .dead_letter(
            Task::QUEUE,
            "a",
            &entry,
            &dead_letter_of(&raw, "a says dead"),
        )
        .await
        .expect("dead letter");

    // Then nothing of it lands: the entry is still b's, nothing is delayed,
    // dead or added, and each refusal is counted as lost
    assert_eq!(lost, vec![entry.clone()]);
    assert_eq!(
        [retried, deferred, handed, dead_a],
        [Settled::NotOwned; 4],
        "every settle by the old owner is refused"
    );
    let depth = client.depth(Task::QUEUE).await.expect("depth");
    assert_eq!(
        (depth.ready, depth.scheduled, depth.in_flight, depth.dead),
        (0, 0, 1, 0)
    );
    assert_eq!(stat(&client, "lost").await, 5);

    // And when `b` dead-letters it, it ends in exactly one dead letter,
    // with one notice on the stream for on_dead
    let settled = client
        .dead_letter(
            Task::QUEUE,
            "b",
            &entry,
            &dead_letter_of(&raw, "b says dead"),
        )
        .await
        .expect("dead letter");
    assert_eq!(settled, Settled::Moved);
    let all = client
        .dead_letters(&[Task::QUEUE], &DeadLetterFilter::default(), 0, 10)
        .await
        .expect("list");
    assert_eq!(all.total, 1);
    assert_eq!(all.items[0].last_error, "b says dead");
    let mut conn = q.connection();
    let notice = client
        .read(&mut conn, Task::QUEUE, "c", 10, READ_BLOCK)
        .await
        .expect("read");
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].kind, FetchedKind::DeadNotice);
    let record: DeadLetter = serde_json::from_slice(&notice[0].raw).expect("notice record");
    assert_eq!(record.dead_letter_id, all.items[0].dead_letter_id);

    // And settling twice is refused the second time (a retried reply)
    let again = client
        .dead_letter(Task::QUEUE, "b", &entry, &dead_letter_of(&raw, "twice"))
        .await
        .expect("dead letter");
    assert_eq!(again, Settled::NotOwned);
}

#[tokio::test]
async fn the_owner_acks_and_retries_normally() {
    let redis = TestRedis::start();
    let q = TestQueue::new(&redis);
    let client = q.client();
    client.ensure_group(Task::QUEUE).await.expect("group");
    client
        .push(&[task(1, "x"), task(2, "x")])
        .await
        .expect("push");
    let mut conn = q.connection();
    let taken = client
        .read(&mut conn, Task::QUEUE, "a", 2, READ_BLOCK)
        .await
        .expect("read");
    let lost = client
        .ack(Task::QUEUE, "a", std::slice::from_ref(&taken[0].entry_id))
        .await
        .expect("ack");
    assert!(lost.is_empty());
    let due = chrono::Utc::now().timestamp_millis() + 60_000;
    let retried = client
        .retry_later(Task::QUEUE, "a", &taken[1].entry_id, &taken[1].raw, due)
        .await
        .expect("retry");
    assert_eq!(retried, Settled::Moved);
    let depth = client.depth(Task::QUEUE).await.expect("depth");
    assert_eq!(
        (
            depth.ready,
            depth.scheduled,
            depth.in_flight,
            depth.processed_total
        ),
        (0, 1, 0, 1)
    );
    assert_eq!(stat(&client, "retried").await, 1);
}

/// Dead-letters `n` jobs labelled `owner` through a real read + settle.
async fn dead_jobs(q: &TestQueue, client: &QueueClient, owners: &[&str]) {
    client.ensure_group(Task::QUEUE).await.expect("group");
    let jobs: Vec<Envelope<Task>> = owners
        .iter()
        .enumerate()
        .map(|(n, owner)| task(n as u64, owner))
        .collect();
    client.push(&jobs).await.expect("push");
    let mut conn = q.connection();
    let taken = client
        .read(&mut conn, Task::QUEUE, "a", jobs.len(), READ_BLOCK)
        .await
        .expect("read");
    assert_eq!(taken.len(), jobs.len());
    for entry in taken {
        let settled = client
            .dead_letter(
                Task::QUEUE,
                "a",
                &entry.entry_id,
                &dead_letter_of(&entry.raw, "boom"),
            )
            .await
            .expect("dead letter");
        assert_eq!(settled, Settled::Moved);
    }
}

#[tokio::test]
async fn dead_letters_are_listed_in_pages_through_their_label_indexes() {
    // Given 250 dead letters, 100 of owner "x" and 150 of owner "y"
    let redis = TestRedis::start();
    let q = TestQueue::new(&redis);
    let client = q.client();
    let owners: Vec<&str> = (0..250)
        .map(|n| if n % 5 < 2 { "x" } else { "y" })
        .collect();
    dead_jobs(&q, &client, &owners).await;

    // When listing owner x in pages of 30
    let filter = DeadLetterFilter {
        labels: Labels::from([("owner".to_owned(), "x".to_owned())]),
        ..DeadLetterFilter::default()
    };
    let mut seen = Vec::new();
    for offset in (0..120).step_by(30) {
        let page = client
            .dead_letters(&[Task::QUEUE], &filter, offset, 30)
            .await
            .expect("page");
        assert_eq!(page.total, 100);
        seen.extend(page.items);
    }

    // Then each of the 100 comes once, newest first, all of owner x
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|d| d.labels["owner"] == "x"));
    let mut ids: Vec<_> = seen.iter().map(|d| d.dead_letter_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert!(
        seen.windows(2).all(|w| w[0].failed_at >= w[1].failed_at),
        "newest first"
    );

    // And a filter on two labels (walked, not indexed) finds the same
    let both = DeadLetterFilter {
        labels: Labels::from([
            ("owner".to_owned(), "y".to_owned()),
            ("absent".to_owned(), "z".to_owned()),
        ]),
        ..DeadLetterFilter::default()
    };
    let page = client
        .dead_letters(&[Task::QUEUE], &both, 0, 10)
        .await
        .expect("page");
    assert_eq!((page.total, page.items.len()), (0, 0));

    // And replaying or discarding removes an entry from every index
    let first = seen[0].clone();
    assert!(client.dead_letter_replay(&first).await.expect("replay"));
    assert!(!client.dead_letter_replay(&first).await.expect("replay"));
    assert!(client.dead_letter_discard(&seen[1]).await.expect("discard"));
    let after = client
        .dead_letters(&[Task::QUEUE], &filter, 0, 100)
        .await
        .expect("page");
    assert_eq!(after.total, 98);
    let everything = client
        .dead_letters(&[Task::QUEUE], &DeadLetterFilter::default(), 0, 1)
        .await
        .expect("page");
    assert_eq!(everything.total, 248);
}

#[tokio::test]
async fn idle_consumers_are_forgotten_only_when_they_hold_nothing() {
    let redis = TestRedis::start();
    let q = TestQueue::new(&redis);
    let client = q.client();
    client.ensure_group(Task::QUEUE).await.expect("group");
    client.push(&[task(1, "x")]).await.expect("push");
    let mut conn = q.connection();
    // "holder" keeps a job pending; "empty" read nothing
    client
        .read(&mut conn, Task::QUEUE, "holder", 1, READ_BLOCK)
        .await
        .expect("read");
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(client.keys(Task::QUEUE).stream)
        .arg(CONSUMER_GROUP)
        .arg("empty")
        .query_async(&mut conn)
        .await
        .expect("XGROUP CREATECONSUMER");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let removed = client
        .forget_idle_consumers(Task::QUEUE, "me", Duration::from_millis(10))
        .await
        .expect("forget");
    assert_eq!(removed, 1);
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(client.keys(Task::QUEUE).stream)
        .arg(CONSUMER_GROUP)
        .query_async(&mut conn)
        .await
        .expect("XINFO");
    assert_eq!(consumers.len(), 1, "the holder stays");
}

#[tokio::test]
async fn an_evicting_redis_is_reported_and_a_full_one_is_unavailable() {
    let redis = TestRedis::start();
    let q = TestQueue::new(&redis);
    let client = q.client();
    assert_eq!(
        client.eviction_policy().await.expect("policy"),
        "noeviction"
    );
    let mut admin = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    assert_eq!(
        client.eviction_policy().await.expect("policy"),
        "allkeys-lru"
    );

    // A Redis out of memory (noeviction, maxmemory reached) refuses writes
    // with OOM: a passing condition, not a bad request
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    let err = client
        .push(&[task(1, "x")])
        .await
        .expect_err("a full Redis refuses");
    assert!(err.is_unavailable(), "{err}");
}
