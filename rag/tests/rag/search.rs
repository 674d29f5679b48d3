//! The embedded search engine against a private Redis: documents stored
//! in Redis and searched in tantivy replicas that tail the change feed.
//! Several replicas on one Redis stand for the API and the workers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rag::glossary::Glossary;
use rag::search::EmbeddedSearch;
use rag::text::Analyzer;
use rag::types::{Chunk, DocumentMeta};
use redis::aio::ConnectionManager;
use testkit::{PATIENCE, TestRedis};

async fn connect(redis: &TestRedis) -> ConnectionManager {
    redis::Client::open(redis.url())
        .expect("url")
        .get_connection_manager()
        .await
        .expect("connect")
}

/// A replica as a process would have it, following the feed.
async fn replica_in(redis: &TestRedis, dir: Option<&Path>, feed_length: usize) -> EmbeddedSearch {
    let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
    let search = EmbeddedSearch::open(
        connect(redis).await,
        connect(redis).await,
        "kb",
        feed_length,
        dir,
        analyzer,
    )
    .expect("replica opens");
    search.follow();
    search
}

async fn replica(redis: &TestRedis) -> EmbeddedSearch {
    replica_in(redis, None, 100_000).await
}

fn doc(id: &str, title: &str) -> DocumentMeta {
    DocumentMeta {
        document_id: id.into(),
        title: title.into(),
    }
}

fn chunks(texts: &[&str]) -> Vec<Chunk> {
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| Chunk {
            index,
            heading: (index == 0).then(|| "Intro".to_owned()),
            text: (*text).to_owned(),
        })
        .collect()
}

/// Version segment of a `<doc>:<version>:<n>` chunk id.
fn version(chunk_id: &str) -> &str {
    chunk_id.rsplit(':').nth(1).unwrap_or("")
}

async fn caught_up(search: &EmbeddedSearch) {
    tokio::time::timeout(PATIENCE, search.wait_caught_up())
        .await
        .expect("replica catches up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_found_replaced_and_deleted_on_every_replica() {
    let redis = TestRedis::start();
    let (api, worker) = (replica(&redis).await, replica(&redis).await);
    let pw = doc("doc_pw", "Password reset");
    let n = worker
        .index(
            &pw,
            &chunks(&[
                "Click Forgot password to get a reset link.",
                "The link expires after one hour.",
            ]),
        )
        .await
        .expect("index");
    assert_eq!(n, 2);
    worker
        .index(
            &doc("doc_ship", "Shipping"),
            &chunks(&["Доставка курьером занимает два дня."]),
        )
        .await
        .expect("index");

    for search in [&api, &worker] {
        let found = search
            .search("how to reset my password", 5)
            .await
            .expect("search");
        assert_eq!(found.hits[0].document_id, "doc_pw");
        assert_eq!(found.hits[0].title, "Password reset");
        assert_eq!(found.hits[0].heading.as_deref(), Some("Intro"));
        assert!(found.hits[0].text.contains("Forgot password"));
        assert!(found.confidence > 0.35, "{found:?}");
        // Cross-lingual through the glossary.
        let ru = search.search("сбросить пароль", 5).await.expect("search");
        assert_eq!(ru.hits[0].document_id, "doc_pw");
        assert_eq!(search.replica().chunks(), 3);
    }
    let first = api.search("forgot", 5).await.expect("search").hits[0]
        .chunk_id
        .clone();

    worker
        .index(
            &pw,
            &chunks(&["Use the recovery page.", "Codes arrive by SMS."]),
        )
        .await
        .expect("re-index");
    for search in [&api, &worker] {
        let old = search.search("forgot expires", 5).await.expect("search");
        assert!(old.hits.is_empty(), "old text still found: {:?}", old.hits);
        let new = search.search("recovery page", 5).await.expect("search");
        assert_eq!(new.hits[0].document_id, "doc_pw");
        let (old_v, new_v): (u64, u64) = (
            version(&first).parse().expect("version"),
            version(&new.hits[0].chunk_id).parse().expect("version"),
        );
        assert!(new_v > old_v, "{first} then {}", new.hits[0].chunk_id);
        assert_eq!(search.replica().chunks(), 3, "re-index keeps the count");
    }

    // The deleting process's own replica has dropped it when remove answers.
    assert!(api.remove("doc_pw").await.expect("delete"));
    let gone = api.search("recovery page sms", 5).await.expect("search");
    assert!(gone.hits.is_empty(), "{:?}", gone.hits);
    assert_eq!(gone.confidence, 0.0);
    // Another replica: its next search waits for the deletion.
    let gone = worker.search("recovery page sms", 5).await.expect("search");
    assert!(gone.hits.is_empty(), "{:?}", gone.hits);
    assert_eq!(worker.replica().chunks(), 1);
    assert!(api.remove("doc_pw").await.expect("delete again"));
    assert!(api.remove("doc_never").await.expect("delete unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_on_two_replicas_never_see_both_versions_or_neither() {
    let redis = TestRedis::start();
    let writer = Arc::new(replica(&redis).await);
    let readers = [
        Arc::new(replica(&redis).await),
        Arc::new(replica(&redis).await),
    ];
    let meta = doc("doc_flip", "Flip");
    writer
        .index(
            &meta,
            &chunks(&["common alpha one", "common alpha two", "common alpha three"]),
        )
        .await
        .expect("index");

    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let (writer, done) = (writer.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                let word = if i % 2 == 0 { "beta" } else { "alpha" };
                let texts: Vec<String> = (0..3).map(|n| format!("common {word} {n}")).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                writer.index(&meta, &chunks(&refs)).await.expect("re-index");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut searching = Vec::new();
    for reader in readers {
        let done = done.clone();
        searching.push(tokio::spawn(async move {
            let mut searches = 0;
            while !done.load(Ordering::SeqCst) {
                let outcome = reader.search("common", 10).await.expect("search");
                assert_eq!(outcome.hits.len(), 3, "saw {:?}", outcome.hits);
                let v = version(&outcome.hits[0].chunk_id);
                assert!(
                    outcome.hits.iter().all(|h| version(&h.chunk_id) == v),
                    "two versions at once: {:?}",
                    outcome.hits.iter().map(|h| &h.chunk_id).collect::<Vec<_>>()
                );
                searches += 1;
            }
            searches
        }));
    }
    writing.await.expect("writer");
    for s in searching {
        assert!(s.await.expect("reader") > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_stop_word_and_hostile_queries_answer_quickly_and_correctly() {
    let redis = TestRedis::start();
    let search = replica(&redis).await;
    // An empty index answers with nothing rather than an error.
    assert!(
        search
            .search("refund", 5)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
    search
        .index(
            &doc("doc_a", "Refunds"),
            &chunks(&["Refunds take five days. Возврат занимает пять дней."]),
        )
        .await
        .expect("index");

    for query in ["", "   ", "the and of", "и в на", "?!.,"] {
        let outcome = search.search(query, 5).await.expect("search");
        assert!(outcome.hits.is_empty(), "{query:?}");
        assert_eq!(outcome.confidence, 0.0, "{query:?}");
    }
    let hostile: Vec<(&str, String)> = vec![
        (
            "10k distinct terms",
            (0..10_000).map(|n| format!("w{n} ")).collect(),
        ),
        ("1 MB of one letter", "a".repeat(1 << 20)),
        (
            "1 MB of words, refund first",
            format!("refund {}", "lorem ipsum ".repeat(90_000)),
        ),
        ("emoji", "😀".repeat(2_000)),
        (
            "control characters",
            "\u{0000}\u{0007}\u{001b}[2J\r\n\t refund".repeat(500),
        ),
        (
            "query syntax",
            "refund AND (возврат OR x) title:* \"five\"~2 -days +[a TO z] ^3 \\".into(),
        ),
        ("key-like", "{kb:kb}:feed refund ' ) -- ".into()),
    ];
    for (name, query) in &hostile {
        let started = Instant::now();
        let outcome = search
            .search(query, 5)
            .await
            .expect("hostile query answers");
        println!(
            "{name}: {} bytes, {} groups, {} hits in {:.2} ms",
            query.len(),
            outcome.query.groups.len(),
            outcome.hits.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert!((0.0..=1.0).contains(&outcome.confidence));
        assert!(outcome.query.groups.len() <= 32);
        if query.contains("refund") && !query.starts_with("w0") {
            assert_eq!(outcome.hits[0].document_id, "doc_a", "{name}");
        }
    }
    assert!(
        search
            .search("refund", 0)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reopened_from_its_directory_only_catches_up() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().expect("dir");
    let writer = replica(&redis).await;
    for n in 0..5 {
        writer
            .index(
                &doc(&format!("doc_{n}"), "Old"),
                &chunks(&[&format!("topic{n} kept")]),
            )
            .await
            .expect("index");
    }
    let before = {
        let worker = replica_in(&redis, Some(dir.path()), 100_000).await;
        caught_up(&worker).await;
        assert_eq!(worker.replica().chunks(), 5);
        worker.replica().position()
    };
    // While it is away: one new document, one replaced, one deleted.
    writer
        .index(&doc("doc_new", "New"), &chunks(&["arrived while away"]))
        .await
        .expect("index");
    writer
        .index(&doc("doc_1", "Replaced"), &chunks(&["topic1 rewritten"]))
        .await
        .expect("index");
    writer.remove("doc_2").await.expect("delete");

    // The old replica releases the directory as its follower stops.
    let reopened = tokio::time::timeout(PATIENCE, async {
        loop {
            match EmbeddedSearch::open(
                connect(&redis).await,
                connect(&redis).await,
                "kb",
                100_000,
                Some(dir.path()),
                Arc::new(Analyzer::new(Glossary::builtin())),
            ) {
                Ok(reopened) => return reopened,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("reopens");
    // Before following anything, it stands where it stopped.
    let at_open = reopened.replica().position();
    assert!(
        at_open.is_some() && at_open >= before,
        "{at_open:?} {before:?}"
    );
    assert!(reopened.replica().chunks() >= 5);
    reopened.follow();
    caught_up(&reopened).await;
    assert_eq!(
        reopened.replica().chunks(),
        5,
        "6 documents less one deleted"
    );
    let found = reopened.search("arrived away", 5).await.expect("search");
    assert_eq!(found.hits[0].document_id, "doc_new");
    assert!(
        reopened
            .search("topic2", 5)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
    let found = reopened.search("topic1", 5).await.expect("search");
    assert_eq!(found.hits.len(), 1);
    assert!(found.hits[0].text.contains("rewritten"));

    // The same directory cannot serve two processes at once.
    assert!(
        EmbeddedSearch::open(
            connect(&redis).await,
            connect(&redis).await,
            "kb",
            100_000,
            Some(dir.path()),
            Arc::new(Analyzer::new(Glossary::default())),
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_feeds_trimmed_tail_rebuilds() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().expect("dir");
    // A feed this short is trimmed (in whole nodes of 100 entries) within
    // a few hundred changes.
    let writer = replica_in(&redis, None, 10).await;
    writer
        .index(&doc("doc_keep", "Keep"), &chunks(&["durable topic"]))
        .await
        .expect("index");
    {
        let away = replica_in(&redis, Some(dir.path()), 10).await;
        caught_up(&away).await;
        assert_eq!(away.replica().chunks(), 1);
    }
    for n in 0..400 {
        writer
            .index(
                &doc(&format!("doc_{}", n % 20), "Churn"),
                &chunks(&[&format!("churn{n}")]),
            )
            .await
            .expect("index");
    }
    writer.remove("doc_keep").await.expect("delete");
    let back = replica_in(&redis, Some(dir.path()), 10).await;
    caught_up(&back).await;
    assert_eq!(back.replica().chunks(), 20);
    assert!(
        back.search("durable topic", 5)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
    let last = back.search("churn399", 5).await.expect("search");
    assert_eq!(last.hits[0].document_id, "doc_19");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_with_and_without_its_data() {
    let mut redis = TestRedis::start_with_aof();
    let search = replica(&redis).await;
    search
        .index(&doc("doc_a", "A"), &chunks(&["persistent refund"]))
        .await
        .expect("index");
    assert_eq!(
        search.search("refund", 5).await.expect("search").hits.len(),
        1
    );

    // Redis gone: searches answer from the replica; writes say
    // "unavailable" (503 / retry), not a bug.
    redis.stop();
    let stale = search
        .search("refund", 5)
        .await
        .expect("answers from the replica");
    assert_eq!(stale.hits.len(), 1);
    let err = search
        .index(&doc("doc_b", "B"), &chunks(&["x"]))
        .await
        .expect_err("redis is gone");
    assert!(err.is_unavailable(), "{err:?}");

    // Back with its data (AOF): the replica goes on from where it was.
    redis.restart();
    let fresh = tokio::time::timeout(PATIENCE, async {
        loop {
            match search
                .index(&doc("doc_b", "B"), &chunks(&["second refund"]))
                .await
            {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    fresh.await.expect("writes resume");
    // The follower reconnects with a backoff; searches meanwhile answer
    // from the replica as it stands.
    tokio::time::timeout(PATIENCE, async {
        while search.search("refund", 5).await.expect("search").hits.len() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the replica follows the restarted Redis");

    // Back without its data: the feed is behind the replica, which
    // rebuilds from what Redis now holds (nothing), then follows it.
    redis.stop();
    std::fs::remove_dir_all(redis.dir().join("appendonlydir")).expect("AOF removed");
    redis.restart();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(outcome) = search.search("refund", 5).await
                && outcome.hits.is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the replica drops what Redis lost");
    search
        .index(&doc("doc_c", "C"), &chunks(&["third refund"]))
        .await
        .expect("index");
    let found = search.search("refund", 5).await.expect("search");
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].document_id, "doc_c");
}
