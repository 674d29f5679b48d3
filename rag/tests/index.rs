//! The BM25 index against a private Redis: replace, delete, atomicity of a
//! re-index seen by concurrent searches, the posting cap, hostile queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rag::glossary::Glossary;
use rag::lexical::{IndexOptions, LexicalIndex};
use rag::text::Analyzer;
use rag::types::{Chunk, DocumentMeta};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use testkit::TestRedis;

async fn connect(redis: &TestRedis) -> ConnectionManager {
    redis::Client::open(redis.url())
        .expect("url")
        .get_connection_manager()
        .await
        .expect("connect")
}

async fn index_with(redis: &TestRedis, opts: IndexOptions) -> LexicalIndex {
    let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
    LexicalIndex::new(connect(redis).await, "kb", analyzer, opts)
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

async fn chunk_count(redis: &TestRedis) -> i64 {
    let mut conn = connect(redis).await;
    conn.hget("kb:{kb:kb}:stats", "chunks")
        .await
        .expect("stats")
}

#[tokio::test]
async fn replaced_document_is_found_then_replaced_then_deleted() {
    let redis = TestRedis::start();
    let index = index_with(&redis, IndexOptions::default()).await;
    assert_eq!(index.model_name(), "bm25");
    let pw = doc("doc_pw", "Password reset");
    let n = index
        .replace_document(
            &pw,
            &chunks(&[
                "Click Forgot password to get a reset link.",
                "The link expires after one hour.",
            ]),
        )
        .await
        .expect("index");
    assert_eq!(n, 2);
    index
        .replace_document(
            &doc("doc_ship", "Shipping"),
            &chunks(&["Доставка курьером занимает два дня."]),
        )
        .await
        .expect("index");

    let found = index
        .search("how to reset my password", 5)
        .await
        .expect("search");
    assert_eq!(found.hits[0].document_id, "doc_pw");
    assert_eq!(found.hits[0].title, "Password reset");
    assert_eq!(found.hits[0].heading.as_deref(), Some("Intro"));
    assert!(found.hits[0].text.contains("Forgot password"));
    assert!(found.confidence > 0.35, "{found:?}");
    // Cross-lingual through the glossary.
    let ru = index.search("сбросить пароль", 5).await.expect("search");
    assert_eq!(ru.hits[0].document_id, "doc_pw");
    assert_eq!(chunk_count(&redis).await, 3);

    let n = index
        .replace_document(
            &pw,
            &chunks(&["Use the recovery page.", "Codes arrive by SMS."]),
        )
        .await
        .expect("re-index");
    assert_eq!(n, 2);
    assert_eq!(chunk_count(&redis).await, 3, "re-index keeps the count");
    let old = index.search("forgot expires", 5).await.expect("search");
    assert!(old.hits.is_empty(), "old text still found: {:?}", old.hits);
    let new = index.search("recovery page", 5).await.expect("search");
    assert_eq!(new.hits[0].document_id, "doc_pw");
    assert_eq!(version(&new.hits[0].chunk_id), "2");

    assert!(index.delete_document("doc_pw").await.expect("delete"));
    let gone = index.search("recovery page sms", 5).await.expect("search");
    assert!(gone.hits.is_empty(), "{:?}", gone.hits);
    assert_eq!(gone.confidence, 0.0);
    assert_eq!(chunk_count(&redis).await, 1);
    assert!(!index.delete_document("doc_pw").await.expect("delete again"));
    assert!(
        !index
            .delete_document("doc_never")
            .await
            .expect("delete unknown")
    );

    // A document indexed again after deletion gets fresh ids.
    index
        .replace_document(&pw, &chunks(&["Recovery page again."]))
        .await
        .expect("index again");
    let back = index.search("recovery", 5).await.expect("search");
    assert_eq!(version(&back.hits[0].chunk_id), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_never_see_a_half_reindexed_document() {
    let redis = TestRedis::start();
    let index = index_with(&redis, IndexOptions::default()).await;
    let meta = doc("doc_flip", "Flip");
    let texts = ["common alpha one", "common alpha two", "common alpha three"];
    index
        .replace_document(&meta, &chunks(&texts))
        .await
        .expect("index");

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let index = index.clone();
        let done = done.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let word = if i % 2 == 0 { "beta" } else { "alpha" };
                let texts: Vec<String> = (0..3).map(|n| format!("common {word} {n}")).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                index
                    .replace_document(&meta, &chunks(&refs))
                    .await
                    .expect("re-index");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut searches = 0;
    while !done.load(Ordering::SeqCst) {
        let outcome = index.search("common", 10).await.expect("search");
        assert_eq!(outcome.hits.len(), 3, "saw {:?}", outcome.hits);
        let v = version(&outcome.hits[0].chunk_id);
        assert!(
            outcome.hits.iter().all(|h| version(&h.chunk_id) == v),
            "two versions at once: {:?}",
            outcome.hits.iter().map(|h| &h.chunk_id).collect::<Vec<_>>()
        );
        searches += 1;
    }
    writer.await.expect("writer");
    assert!(searches > 0);
    assert_eq!(chunk_count(&redis).await, 3);
}

#[tokio::test]
async fn a_very_common_term_reads_at_most_the_cap() {
    let redis = TestRedis::start();
    let cap = 50;
    let capped = index_with(
        &redis,
        IndexOptions {
            max_postings_per_term: cap,
            ..IndexOptions::default()
        },
    )
    .await;
    let texts: Vec<String> = (0..5000)
        .map(|n| format!("widget number{n} {}", "filler ".repeat(n % 7)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let n = capped
        .replace_document(&doc("doc_big", "Big"), &chunks(&refs))
        .await
        .expect("index");
    assert_eq!(n, 5000);

    // Only `cap` postings of "widget" are read, so at most `cap` chunks can
    // come back however large the limit.
    let outcome = capped.search("widget", 100).await.expect("search");
    assert_eq!(outcome.hits.len(), cap);
    // The best postings are the ones read: the shortest chunks.
    assert!(outcome.hits.iter().all(|h| !h.text.contains("filler")));
    // A rare term still finds its chunk next to the common one.
    let rare = capped.search("widget number4321", 5).await.expect("search");
    assert_eq!(rare.hits[0].chunk_id, "doc_big:1:4321");

    let default = index_with(&redis, IndexOptions::default()).await;
    let outcome = default.search("widget", 100).await.expect("search");
    assert_eq!(outcome.hits.len(), 100);
}

#[tokio::test]
async fn empty_stop_word_and_hostile_queries() {
    let redis = TestRedis::start();
    let index = index_with(&redis, IndexOptions::default()).await;
    index
        .replace_document(
            &doc("doc_a", "Refunds"),
            &chunks(&["Refunds take five days. Возврат занимает пять дней."]),
        )
        .await
        .expect("index");

    for query in ["", "   ", "the and of", "и в на", "?!.,"] {
        let outcome = index.search(query, 5).await.expect("search");
        assert!(outcome.hits.is_empty(), "{query:?}");
        assert_eq!(outcome.confidence, 0.0, "{query:?}");
    }
    let hostile = [
        "a".repeat(10_240),
        "😀".repeat(2_000),
        "\u{0000}\u{0007}\u{001b}[2J\r\n\t".repeat(500),
        "refund ".repeat(2_000),
        (0..3_000).map(|n| format!("w{n} ")).collect(),
        "ZZZ\u{202e}возврат\u{200b}refund{}*:[]\\\"'".into(),
        "{kb:kb}:t:refund ' ) -- ".into(),
    ];
    for query in &hostile {
        let outcome = index.search(query, 5).await.expect("hostile query answers");
        assert!((0.0..=1.0).contains(&outcome.confidence));
        assert!(outcome.query.groups.len() <= 32);
    }
    assert!(
        index
            .search("refund", 0)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
    // An empty index answers with nothing rather than an error.
    let other = LexicalIndex::new(
        connect(&redis).await,
        "empty",
        Arc::new(Analyzer::new(Glossary::default())),
        IndexOptions::default(),
    );
    assert!(
        other
            .search("refund", 5)
            .await
            .expect("search")
            .hits
            .is_empty()
    );
}

#[tokio::test]
async fn redis_gone_is_reported_as_unavailable() {
    let redis = TestRedis::start();
    let index = index_with(&redis, IndexOptions::default()).await;
    index
        .replace_document(&doc("doc_a", "A"), &chunks(&["refund"]))
        .await
        .expect("index");
    drop(redis);
    let err = index.search("refund", 5).await.expect_err("redis is gone");
    assert!(err.is_unavailable(), "{err:?}");
}
