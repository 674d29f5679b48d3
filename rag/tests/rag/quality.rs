//! Retrieval quality on a small labelled support corpus (`tests/corpus/`):
//! hit rates per language pair, confidence separation between answerable
//! and off-topic questions, and search latency, on the embedded engine
//! (documents stored in Redis, searched in a tantivy replica). Run with `--nocapture` to
//! see the table; the assertions hold the level reached, with a margin.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rag::chunk::{self, ChunkOptions};
use rag::classify::Classifier;
use rag::confidence::Features;
use rag::glossary::Glossary;
use rag::parse::{ParseLimits, parse};
use rag::search::{EmbeddedSearch, SearchOutcome};
use rag::text::Analyzer;
use rag::types::{Chunk, DocumentMeta, Format};
use serde::Deserialize;
use testkit::TestRedis;

const THRESHOLD: f64 = 0.35;

#[derive(Deserialize)]
struct Questions {
    answerable: Vec<Answerable>,
    off_topic: Vec<OffTopic>,
    holdout_answerable: Vec<Answerable>,
    holdout_off_topic: Vec<OffTopic>,
}

#[derive(Deserialize)]
struct Answerable {
    q: String,
    doc: String,
}

#[derive(Deserialize)]
struct OffTopic {
    q: String,
}

fn is_russian(text: &str) -> bool {
    let cyrillic = text
        .chars()
        .filter(|c| matches!(c, '\u{0400}'..='\u{04FF}'))
        .count();
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    cyrillic * 2 > letters
}

/// The production pipeline: the Markdown parser and the structural
/// chunker with the shipped defaults (`ingest.chunk_size` 1200, overlap 200).
fn chunk(markdown: &str) -> (String, Vec<Chunk>) {
    let doc = parse(
        Format::Markdown,
        None,
        markdown.as_bytes(),
        &ParseLimits::default(),
    )
    .expect("corpus documents parse");
    let chunks = chunk::chunk(&doc, &ChunkOptions::default());
    (doc.title.unwrap_or_default(), chunks)
}

struct Row {
    question: String,
    pair: &'static str,
    answerable: bool,
    top1: bool,
    top3: bool,
    confidence: f64,
    features: Features,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 0.0),
        percentile(&v, 0.5),
        percentile(&v, 1.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_quality_on_the_labelled_corpus() {
    let redis = TestRedis::start();
    let conn = || async {
        redis::Client::open(redis.url())
            .expect("url")
            .get_connection_manager()
            .await
            .expect("connect")
    };
    let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
    let index = EmbeddedSearch::open(
        conn().await,
        conn().await,
        "quality",
        100_000,
        None,
        analyzer.clone(),
    )
    .expect("replica opens");
    index.follow();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let questions: Questions = toml::from_str(
        &std::fs::read_to_string(dir.join("questions.toml")).expect("questions.toml"),
    )
    .expect("questions parse");
    let mut doc_russian = std::collections::HashMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let text = std::fs::read_to_string(path).expect("read doc");
        let (title, chunks) = chunk(&text);
        doc_russian.insert(name.to_owned(), is_russian(&text));
        let meta = DocumentMeta {
            document_id: name.to_owned(),
            title,
        };
        let n = index.index(&meta, &chunks).await.expect("index");
        assert_eq!(n, chunks.len());
    }

    let mut rows = Vec::new();
    let mut latencies_ms = Vec::new();
    let all = questions
        .answerable
        .iter()
        .map(|a| (a.q.as_str(), Some(a.doc.as_str())))
        .chain(questions.off_topic.iter().map(|o| (o.q.as_str(), None)));
    for (question, doc) in all {
        let started = Instant::now();
        let outcome = index.search(question, 5).await.expect("search");
        latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let docs: Vec<&str> =
            outcome
                .hits
                .iter()
                .map(|h| h.document_id.as_str())
                .fold(Vec::new(), |mut acc, d| {
                    if !acc.contains(&d) {
                        acc.push(d);
                    }
                    acc
                });
        let q_ru = is_russian(question);
        let pair = match (q_ru, doc.map(|d| doc_russian[d])) {
            (true, Some(true)) => "RU→RU",
            (false, Some(false)) => "EN→EN",
            (true, Some(false)) => "RU→EN",
            (false, Some(true)) => "EN→RU",
            (true, None) => "RU off",
            (false, None) => "EN off",
        };
        rows.push(Row {
            question: question.to_owned(),
            pair,
            answerable: doc.is_some(),
            top1: doc.is_some_and(|d| docs.first() == Some(&d)),
            top3: doc.is_some_and(|d| docs.iter().take(3).any(|x| *x == d)),
            confidence: outcome.confidence,
            features: outcome.features.clone(),
        });
    }

    println!(
        "\n{:<6} {:>4} {:>4} {:>5} {:>5} {:>5} {:>5}  question",
        "pair", "@1", "@3", "norm", "cov", "marg", "conf"
    );
    for r in &rows {
        println!(
            "{:<6} {:>4} {:>4} {:>5.2} {:>5.2} {:>5.2} {:>5.2}  {}",
            r.pair,
            if r.answerable {
                u8::from(r.top1).to_string()
            } else {
                "-".into()
            },
            if r.answerable {
                u8::from(r.top3).to_string()
            } else {
                "-".into()
            },
            r.features.top_norm,
            r.features.coverage,
            r.features.margin,
            r.confidence,
            r.question
        );
    }

    let rate = |pairs: &[&str], top: fn(&Row) -> bool| {
        let selected: Vec<&Row> = rows
            .iter()
            .filter(|r| r.answerable && pairs.contains(&r.pair))
            .collect();
        let hits = selected.iter().filter(|r| top(r)).count();
        (hits as f64 / selected.len().max(1) as f64, selected.len())
    };
    println!(
        "\n{:<14} {:>3} {:>6} {:>6}",
        "questions", "n", "top-1", "top-3"
    );
    let groups: [(&str, &[&str]); 6] = [
        ("all", &["EN→EN", "RU→RU", "EN→RU", "RU→EN"]),
        ("EN→EN", &["EN→EN"]),
        ("RU→RU", &["RU→RU"]),
        ("EN→RU", &["EN→RU"]),
        ("RU→EN", &["RU→EN"]),
        ("cross-lingual", &["EN→RU", "RU→EN"]),
    ];
    let mut figures = std::collections::HashMap::new();
    for (name, pairs) in groups {
        let (t1, n) = rate(pairs, |r| r.top1);
        let (t3, _) = rate(pairs, |r| r.top3);
        println!("{name:<14} {n:>3} {t1:>6.2} {t3:>6.2}");
        figures.insert(name, (t1, t3, n));
    }

    let answerable: Vec<f64> = rows
        .iter()
        .filter(|r| r.answerable)
        .map(|r| r.confidence)
        .collect();
    let off_topic: Vec<f64> = rows
        .iter()
        .filter(|r| !r.answerable)
        .map(|r| r.confidence)
        .collect();
    let (a_min, a_med, a_max) = stats(&answerable);
    let (o_min, o_med, o_max) = stats(&off_topic);
    let above =
        answerable.iter().filter(|c| **c > THRESHOLD).count() as f64 / answerable.len() as f64;
    let below =
        off_topic.iter().filter(|c| **c < THRESHOLD).count() as f64 / off_topic.len() as f64;
    let mut pairs = 0.0;
    for a in &answerable {
        for o in &off_topic {
            pairs += if a > o {
                1.0
            } else if a == o {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = pairs / (answerable.len() * off_topic.len()) as f64;
    println!("\nconfidence      n   min  median   max");
    println!(
        "answerable    {:>3} {a_min:>5.2} {a_med:>7.2} {a_max:>5.2}",
        answerable.len()
    );
    println!(
        "off-topic     {:>3} {o_min:>5.2} {o_med:>7.2} {o_max:>5.2}",
        off_topic.len()
    );
    println!(
        "answerable > {THRESHOLD}: {above:.2}   off-topic < {THRESHOLD}: {below:.2}   AUC: {auc:.3}"
    );

    // Held-out questions: never used to fit or tune anything.
    let distinct_docs = |outcome: &SearchOutcome| {
        outcome.hits.iter().map(|h| h.document_id.clone()).fold(
            Vec::<String>::new(),
            |mut acc, d| {
                if !acc.contains(&d) {
                    acc.push(d);
                }
                acc
            },
        )
    };
    let (mut held_top1, mut held_top3, mut held_conf) = (0, 0, Vec::new());
    for a in &questions.holdout_answerable {
        let outcome = index.search(&a.q, 5).await.expect("search");
        let docs = distinct_docs(&outcome);
        held_top1 += usize::from(docs.first() == Some(&a.doc));
        held_top3 += usize::from(docs.iter().take(3).any(|d| *d == a.doc));
        held_conf.push(outcome.confidence);
        println!(
            "held-out {:.2} @1={} {}",
            outcome.confidence,
            u8::from(docs.first() == Some(&a.doc)),
            a.q
        );
    }
    let mut held_off = Vec::new();
    for o in &questions.holdout_off_topic {
        let outcome = index.search(&o.q, 5).await.expect("search");
        held_off.push(outcome.confidence);
        println!("held-out off {:.2} {}", outcome.confidence, o.q);
    }
    let n = questions.holdout_answerable.len() as f64;
    let held_t1 = held_top1 as f64 / n;
    let held_t3 = held_top3 as f64 / n;
    let held_above = held_conf.iter().filter(|c| **c > THRESHOLD).count() as f64 / n;
    let held_below =
        held_off.iter().filter(|c| **c < THRESHOLD).count() as f64 / held_off.len() as f64;
    println!(
        "held-out: {} answerable top-1 {held_t1:.2} top-3 {held_t3:.2}, above {THRESHOLD}: {held_above:.2}; \
         {} off-topic below {THRESHOLD}: {held_below:.2}",
        questions.holdout_answerable.len(),
        held_off.len()
    );
    // Reached: top-1 0.92, top-3 1.00, 0.83 of answerable above the
    // threshold, every off-topic one below it.
    assert!(held_t1 >= 0.8, "held-out top-1 {held_t1:.2}");
    assert!(held_t3 >= 0.9, "held-out top-3 {held_t3:.2}");
    assert!(
        held_above >= 0.6,
        "held-out answerable above: {held_above:.2}"
    );
    assert!(
        held_below >= 0.85,
        "held-out off-topic below: {held_below:.2}"
    );

    let classifier = Classifier::builtin(analyzer.clone());
    println!("\ndocument intents (classifier)");
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read doc");
        let found = classifier.classify(&text);
        let shown: Vec<String> = found
            .iter()
            .map(|c| format!("{} {:.2}", c.intent, c.confidence))
            .collect();
        println!(
            "{:<30} {}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            shown.join(", ")
        );
        if path.ends_with("billing-invoices.md") {
            assert_eq!(found[0].intent, "billing");
        }
    }

    latencies_ms.sort_by(f64::total_cmp);
    println!(
        "search latency over {} questions: p50 {:.2} ms, p99 {:.2} ms (debug build, includes the round trip)",
        latencies_ms.len(),
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.99)
    );

    assert!(questions.answerable.len() >= 30 && questions.off_topic.len() >= 12);
    assert!(figures["cross-lingual"].2 >= 8);
    let at_least = |name: &str, t1: f64, t3: f64| {
        let (got1, got3, _) = figures[name];
        assert!(got1 >= t1, "{name} top-1 {got1:.2} < {t1}");
        assert!(got3 >= t3, "{name} top-3 {got3:.2} < {t3}");
    };
    // Reached: all 1.00 / 1.00 in every language pair; confidence
    // separation 1.00 / 1.00, AUC 1.000. This corpus is the development
    // set's "classic" product, which the confidence model was fitted on
    // (with other questions): the figure that predicts a new knowledge
    // base is `rag-eval --holdout`'s, in docs/QUALITY.md.
    at_least("all", 0.9, 0.95);
    at_least("EN→EN", 0.9, 0.95);
    at_least("RU→RU", 0.85, 0.95);
    at_least("cross-lingual", 0.85, 0.9);
    assert!(above >= 0.9, "answerable above {THRESHOLD}: {above:.2}");
    assert!(below >= 0.9, "off-topic below {THRESHOLD}: {below:.2}");
    assert!(auc >= 0.95, "AUC {auc:.3}");
}
