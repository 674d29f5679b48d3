//! `rag-bench`: how fast the embedded knowledge base ingests and answers,
//! on the labelled support corpus of `rag/tests/corpus`.
//!
//! ```text
//! cargo run --release -p supportrag-bench --bin rag-bench -- --copies 50 --rounds 20 --runs 3
//! ```
//!
//! Against a private `redis-server` (no persistence), per run:
//!
//! 1. **Ingestion**: every corpus document `--copies` times under distinct
//!    ids, through the production path minus the network: parse
//!    (Markdown), chunk (shipped defaults), index (`LexicalIndex`): chunks/s
//!    for parse+chunk and for indexing, and Redis bytes per chunk.
//! 2. **Parse sandbox**: the same parse in a child process, as the worker
//!    does it (`supportrag-worker parse-document`, found next to this
//!    binary): ms per document, the cost of isolation.
//! 3. **Queries**: every labelled question (answerable and off-topic)
//!    `--rounds` times against the grown index: latency percentiles of a
//!    search and of a full reply (search + extractive answer), next to a
//!    PING round trip measured the same way as the baseline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rag::chunk::{ChunkOptions, chunk};
use rag::classify::Classifier;
use rag::glossary::Glossary;
use rag::knowledge::Knowledge;
use rag::parse::sandbox::{SandboxLimits, parse_isolated};
use rag::parse::{ParseLimits, parse};
use rag::search::EmbeddedSearch;
use rag::text::Analyzer;
use rag::types::{DocumentMeta, Format};
use serde::Deserialize;
use supportrag_bench::{RedisServer, show_spread, spread, thousands};

#[derive(Parser)]
#[command(about = "Ingestion and query benchmark of the embedded knowledge base")]
struct Args {
    /// Copies of the corpus to index (8 documents each).
    #[arg(long, default_value_t = 50)]
    copies: usize,
    /// Times every question is asked.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Whole runs; figures are the median (min–max) over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The corpus directory (documents *.md and questions.toml).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../rag/tests/corpus"))]
    corpus: PathBuf,
}

#[derive(Deserialize)]
struct Questions {
    answerable: Vec<Question>,
    off_topic: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    q: String,
}

struct Run {
    parse_chunks_per_sec: f64,
    index_chunks_per_sec: f64,
    bytes_per_chunk: f64,
    chunks: usize,
    sandbox_ms_per_doc: Option<f64>,
    search_ms: Vec<f64>,
    reply_ms: Vec<f64>,
    ping_ms: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let documents = load_corpus(&args.corpus)?;
    let questions: Questions = toml::from_str(
        &std::fs::read_to_string(args.corpus.join("questions.toml"))
            .context("reading questions.toml")?,
    )?;
    let questions: Vec<String> = questions
        .answerable
        .into_iter()
        .chain(questions.off_topic)
        .map(|q| q.q)
        .collect();
    let redis = RedisServer::start()?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        runs.push(one_run(&redis, &documents, &questions, &args).await?);
    }
    report(&runs, &args, documents.len(), questions.len());
    Ok(())
}

fn load_corpus(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            documents.push((name, std::fs::read(&path)?));
        }
    }
    if documents.is_empty() {
        bail!("no *.md documents in {}", dir.display());
    }
    documents.sort();
    Ok(documents)
}

async fn one_run(
    redis: &RedisServer,
    documents: &[(String, Vec<u8>)],
    questions: &[String],
    args: &Args,
) -> anyhow::Result<Run> {
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_connection_manager().await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
    let memory_before = used_memory(&mut conn).await?;
    let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
    let index = Arc::new(EmbeddedSearch::open(
        conn.clone(),
        client.get_connection_manager().await?,
        "bench",
        100_000,
        None,
        analyzer.clone(),
    )?);
    index.follow();

    let (mut parse_time, mut index_time, mut chunks_total) = (Duration::ZERO, Duration::ZERO, 0);
    for copy in 0..args.copies {
        for (n, (name, bytes)) in documents.iter().enumerate() {
            let started = Instant::now();
            let parsed = parse(Format::Markdown, None, bytes, &ParseLimits::default())?;
            let chunks = chunk(&parsed, &ChunkOptions::default());
            parse_time += started.elapsed();
            let started = Instant::now();
            chunks_total += index
                .index(
                    &DocumentMeta {
                        document_id: format!("doc_{copy}_{n}"),
                        title: name.clone(),
                    },
                    &chunks,
                )
                .await?;
            index_time += started.elapsed();
        }
    }
    let memory_after = used_memory(&mut conn).await?;

    let sandbox_ms_per_doc = match worker_binary() {
        Some(program) => {
            let limits = SandboxLimits {
                memory_bytes: 1 << 30,
                timeout: Duration::from_secs(30),
                parse: ParseLimits::default(),
            };
            let started = Instant::now();
            for (_, bytes) in documents {
                parse_isolated(
                    &program,
                    &["parse-document"],
                    Some(Format::Markdown),
                    None,
                    bytes,
                    &limits,
                )
                .await?;
            }
            Some(started.elapsed().as_secs_f64() * 1000.0 / documents.len() as f64)
        }
        None => None,
    };

    let knowledge = Knowledge::new(
        index.clone(),
        analyzer.clone(),
        Classifier::builtin(analyzer),
        5,
    );
    let (mut search_ms, mut reply_ms, mut ping_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        for question in questions {
            let started = Instant::now();
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            ping_ms.push(ms(started));
            let started = Instant::now();
            index.search(question, 5).await?;
            search_ms.push(ms(started));
            let started = Instant::now();
            knowledge.reply(question).await?;
            reply_ms.push(ms(started));
        }
    }
    Ok(Run {
        parse_chunks_per_sec: chunks_total as f64 / parse_time.as_secs_f64(),
        index_chunks_per_sec: chunks_total as f64 / index_time.as_secs_f64(),
        bytes_per_chunk: (memory_after.saturating_sub(memory_before)) as f64 / chunks_total as f64,
        chunks: chunks_total,
        sandbox_ms_per_doc,
        search_ms,
        reply_ms,
        ping_ms,
    })
}

/// The worker binary next to this one, if it was built (same profile).
fn worker_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("supportrag-worker");
    candidate.is_file().then_some(candidate)
}

async fn used_memory(conn: &mut redis::aio::ConnectionManager) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len().saturating_sub(1)) as f64 * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn report(runs: &[Run], args: &Args, documents: usize, questions: usize) {
    let chunks = runs.first().map_or(0, |r| r.chunks);
    println!(
        "\nrag-bench: {} documents × {} copies = {} chunks; {} questions × {} rounds; {} run(s), median (min–max)\n",
        documents,
        args.copies,
        chunks,
        questions,
        args.rounds,
        runs.len()
    );
    println!("| ingestion | chunks/s |");
    println!("| --- | --- |");
    println!(
        "| parse + chunk (in process) | {} |",
        show_spread(spread(runs.iter().map(|r| r.parse_chunks_per_sec)))
    );
    println!(
        "| index (BM25 in Redis, one script per document) | {} |",
        show_spread(spread(runs.iter().map(|r| r.index_chunks_per_sec)))
    );
    println!(
        "\nRedis memory per indexed chunk: {} bytes",
        thousands(spread(runs.iter().map(|r| r.bytes_per_chunk)).0)
    );
    let sandbox: Vec<f64> = runs.iter().filter_map(|r| r.sandbox_ms_per_doc).collect();
    if sandbox.is_empty() {
        println!(
            "parse in the sandbox child: not measured (build supportrag-worker in the same profile)"
        );
    } else {
        let (median, min, max) = spread(sandbox.into_iter());
        println!(
            "parse in the sandbox child (process start included): {median:.1} ms/document ({min:.1}–{max:.1})"
        );
    }
    println!("\n| latency (ms) | p50 | p99 | p99.9 |");
    println!("| --- | --- | --- | --- |");
    for (name, pick) in [
        ("PING round trip (baseline)", 0),
        ("search (top 5)", 1),
        ("reply: search + extractive answer", 2),
    ] {
        let all: Vec<f64> = runs
            .iter()
            .flat_map(|r| match pick {
                0 => r.ping_ms.clone(),
                1 => r.search_ms.clone(),
                _ => r.reply_ms.clone(),
            })
            .collect();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 0.999)
        );
    }
}
