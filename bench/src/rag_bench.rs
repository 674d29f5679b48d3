//! `rag-bench`: how the embedded search engine scales with the size of the
//! knowledge base, and what it leaves of Redis for the queues.
//!
//! ```text
//! cargo run --release -p supportrag-bench --bin rag-bench -- --sizes 10000,100000,1000000
//! ```
//!
//! Against a private `redis-server` (no persistence), the knowledge base
//! grows through each size in turn. The corpus is synthetic but shaped
//! like text: distinct documents of 5 chunks, words drawn with Zipf
//! frequencies from a vocabulary whose most frequent ranks are real
//! English and Russian stop-words (as in any text) and which holds real
//! support words (password, пароль, refund, возврат…) so that queries go
//! through glossary expansion too. At each size:
//!
//! 1. **Store**: the new documents are written through the production
//!    path (`EmbeddedSearch::index`: bounded pieces, flip + feed), 16
//!    writers at once; the bench's own replica follows the feed.
//! 2. **Fresh replica**: a new replica in an empty directory builds from
//!    Redis (what a new worker does): time to catch up, chunks/s, the CPU
//!    time it took (this process', and Redis'), its process RSS growth
//!    and its directory's size, per chunk. CPU time per chunk holds on a
//!    machine that others use too; chunks/s is what two free cores give.
//! 3. **Search under load**: `--clients` concurrent searchers for
//!    `--seconds`, through `EmbeddedSearch::search` (the freshness read of
//!    the feed included), with questions made of 2–6 words of a random
//!    chunk (so word frequencies follow the text's); alongside, one PING
//!    every 5 ms on a connection of its own measures what the queues would
//!    see of Redis meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rag::glossary::Glossary;
use rag::search::EmbeddedSearch;
use rag::text::Analyzer;
use rag::types::{Chunk, DocumentMeta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use supportrag_bench::{RedisServer, cpu_seconds, quantile, rss_kib, thousands};

#[derive(Parser)]
#[command(about = "Scaling benchmark of the embedded search engine")]
struct Args {
    /// Knowledge base sizes, in chunks, reached in turn.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Concurrent searchers.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of searching at each size.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Words per chunk (about; a chunk of 1,200 characters holds ~150).
    #[arg(long, default_value_t = 120)]
    chunk_words: usize,
    /// Distinct words in the corpus.
    #[arg(long, default_value_t = 60_000)]
    vocabulary: usize,
}

const CHUNKS_PER_DOC: usize = 5;
const WRITERS: usize = 16;
const PING_EVERY: Duration = Duration::from_millis(5);
const QUESTIONS_PER_CLIENT: usize = 2_000;

const STOP_WORDS: &str = "the of and to a in is it you that he was for on are with as i his they \
be at one have this from or had by not but what some we can out other were all there when up use \
your how said an each she which do their time if will way about many then them would write like \
so these her long make thing see him two has look more day could go come did no most my over know \
than call first who may down side been now find и в не на я быть он с что а по это она этот к но \
они мы как из у который то за свой весь год от так о для ты же все тот мочь вы человек такой его \
сказать только или еще бы себя один как уже до время если сам когда другой вот говорить наш мой \
знать стать при чтобы дело жизнь кто первый очень два день её новый рука даже во со раз где там";

const SUPPORT_WORDS: &str = "password reset account login refund invoice payment delivery \
shipping order subscription plan billing card charge cancel upgrade email address verify code \
security token api key limit error support ticket return exchange warranty пароль сброс аккаунт \
вход возврат счёт оплата доставка заказ подписка тариф карта списание отмена почта адрес код \
безопасность ключ лимит ошибка поддержка обращение обмен гарантия";

/// A Zipf(s ≈ 1.07) vocabulary: stop-words first, support words among the
/// frequent content words, then made-up words of Latin or Cyrillic
/// syllables.
struct Vocabulary {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize) -> Self {
        let mut words: Vec<String> = STOP_WORDS.split_whitespace().map(str::to_owned).collect();
        let support: Vec<&str> = SUPPORT_WORDS.split_whitespace().collect();
        let mut rng = StdRng::seed_from_u64(7);
        let latin = [
            "ka", "lo", "mi", "ren", "sto", "pa", "vel", "tri", "on", "dus", "ex", "ar",
        ];
        let cyrillic = [
            "ка", "ло", "ми", "рен", "сто", "па", "вел", "три", "он", "дус", "ек", "ар",
        ];
        let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
        while words.len() < size {
            let rank = words.len();
            if (200..200 + support.len() * 4).contains(&rank) && rank.is_multiple_of(4) {
                let w = support[(rank - 200) / 4].to_owned();
                if seen.insert(w.clone()) {
                    words.push(w);
                }
                continue;
            }
            let syllables = if rng.random_bool(0.5) {
                &latin
            } else {
                &cyrillic
            };
            let n = rng.random_range(2..=5);
            let w: String = (0..n)
                .map(|_| syllables[rng.random_range(0..syllables.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let weights: Vec<f64> = (1..=words.len())
            .map(|r| 1.0 / (r as f64).powf(1.07))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self { words, cdf }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let u: f64 = rng.random();
        let i = self
            .cdf
            .partition_point(|c| *c < u)
            .min(self.words.len() - 1);
        &self.words[i]
    }
}

/// Document `n` of the corpus, the same every time it is asked for.
fn document(vocabulary: &Vocabulary, n: usize, words: usize) -> (DocumentMeta, Vec<Chunk>) {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let sentence = |rng: &mut StdRng, len: usize| -> String {
        let mut s = String::new();
        for i in 0..len {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(vocabulary.word(rng));
        }
        s
    };
    let title = sentence(&mut rng, 4);
    let chunks = (0..CHUNKS_PER_DOC)
        .map(|index| {
            let mut text = String::new();
            let mut left = words;
            while left > 0 {
                let len = left.min(rng.random_range(8..20));
                text.push_str(&sentence(&mut rng, len));
                text.push_str(". ");
                left -= len;
            }
            Chunk {
                index,
                heading: Some(sentence(&mut rng, 3)),
                text,
            }
        })
        .collect();
    (
        DocumentMeta {
            document_id: format!("doc_{n:07}"),
            title,
        },
        chunks,
    )
}

/// A question: 2–6 words of a random chunk of the first `docs` documents.
fn question(vocabulary: &Vocabulary, docs: usize, words: usize, rng: &mut StdRng) -> String {
    let (_, chunks) = document(vocabulary, rng.random_range(0..docs), words);
    let text = &chunks[rng.random_range(0..chunks.len())].text;
    let all: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let n = rng.random_range(2..=6).min(all.len());
    let start = rng.random_range(0..=all.len() - n);
    all[start..start + n].join(" ")
}

struct Row {
    chunks: usize,
    store_chunks_per_sec: f64,
    redis_bytes_per_chunk: f64,
    catch_up: Duration,
    /// CPU seconds of the catch-up: this process, Redis.
    catch_up_cpu: (f64, f64),
    rss_per_chunk: f64,
    disk_per_chunk: f64,
    searches: usize,
    search: (f64, f64, f64),
    ping: (f64, f64, f64),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn open(redis: &RedisServer, analyzer: &Arc<Analyzer>) -> anyhow::Result<EmbeddedSearch> {
    let client = redis::Client::open(redis.url())?;
    let search = EmbeddedSearch::open(
        client.get_connection_manager().await?,
        client.get_connection_manager().await?,
        "bench",
        100_000,
        None,
        analyzer.clone(),
    )?;
    search.follow();
    Ok(search)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_connection_manager().await?;
    let analyzer = Arc::new(Analyzer::new(Glossary::builtin()));
    let vocabulary = Arc::new(Vocabulary::new(args.vocabulary));
    let main = Arc::new(open(&redis, &analyzer).await?);
    let memory_start = used_memory(&mut conn).await?;
    let mut docs = 0;
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let target = size.div_ceil(CHUNKS_PER_DOC);
        eprintln!("growing to {} chunks", target * CHUNKS_PER_DOC);
        let started = Instant::now();
        write(&main, &vocabulary, docs, target, args.chunk_words).await?;
        let store_chunks_per_sec =
            ((target - docs) * CHUNKS_PER_DOC) as f64 / started.elapsed().as_secs_f64();
        docs = target;
        let chunks = docs * CHUNKS_PER_DOC;
        let redis_bytes_per_chunk =
            used_memory(&mut conn).await?.saturating_sub(memory_start) as f64 / chunks as f64;
        main.wait_caught_up().await;

        eprintln!("a fresh replica builds from Redis");
        let rss_before = rss_kib(std::process::id()).unwrap_or(0);
        let cpu = || {
            (
                cpu_seconds(std::process::id()).unwrap_or(0.0),
                cpu_seconds(redis.pid()).unwrap_or(0.0),
            )
        };
        let cpu_before = cpu();
        let started = Instant::now();
        let fresh = open(&redis, &analyzer).await?;
        fresh.wait_caught_up().await;
        let catch_up = started.elapsed();
        let cpu_after = cpu();
        let catch_up_cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
        let rss_after = rss_kib(std::process::id()).unwrap_or(0);
        let disk = fresh.replica().disk_bytes();
        anyhow::ensure!(
            fresh.replica().chunks() as usize == chunks,
            "fresh replica holds {} chunks, expected {chunks}",
            fresh.replica().chunks()
        );
        drop(fresh);
        // Let its follower stop and its files go before measuring searches.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        eprintln!("{} clients search for {} s", args.clients, args.seconds);
        let (search_ms, ping_ms) =
            search_under_load(&main, &redis, &vocabulary, docs, &args).await?;
        let mut s = search_ms;
        let mut p = ping_ms;
        rows.push(Row {
            chunks,
            store_chunks_per_sec,
            redis_bytes_per_chunk,
            catch_up,
            catch_up_cpu,
            rss_per_chunk: rss_after.saturating_sub(rss_before) as f64 * 1024.0 / chunks as f64,
            disk_per_chunk: disk as f64 / chunks as f64,
            searches: s.len(),
            search: (
                quantile(&mut s, 0.5),
                quantile(&mut s, 0.99),
                quantile(&mut s, 0.999),
            ),
            ping: (
                quantile(&mut p, 0.5),
                quantile(&mut p, 0.99),
                quantile(&mut p, 0.999),
            ),
        });
        report(&rows, &args);
    }
    Ok(())
}

/// Documents `from..to`, written by [`WRITERS`] concurrent writers.
async fn write(
    search: &Arc<EmbeddedSearch>,
    vocabulary: &Arc<Vocabulary>,
    from: usize,
    to: usize,
    words: usize,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (search, vocabulary) = (search.clone(), vocabulary.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = from + w;
            while n < to {
                let (meta, chunks) = document(&vocabulary, n, words);
                search.index(&meta, &chunks).await?;
                n += WRITERS;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("writer task")??;
    }
    Ok(())
}

async fn search_under_load(
    search: &Arc<EmbeddedSearch>,
    redis: &RedisServer,
    vocabulary: &Arc<Vocabulary>,
    docs: usize,
    args: &Args,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut pinger_conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let pinger = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                redis::cmd("PING")
                    .query_async::<String>(&mut pinger_conn)
                    .await?;
                samples.push(ms(started));
                tokio::time::sleep(PING_EVERY).await;
            }
            Ok::<_, anyhow::Error>(samples)
        })
    };
    let mut clients = Vec::new();
    for c in 0..args.clients {
        // Made beforehand, so the clients' own work does not compete with
        // the searches for the two cores.
        let mut rng = StdRng::seed_from_u64(1000 + c as u64);
        let questions: Vec<String> = (0..QUESTIONS_PER_CLIENT)
            .map(|_| question(vocabulary, docs, args.chunk_words, &mut rng))
            .collect();
        let (search, stop) = (search.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for q in questions.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                search.search(q, 5).await?;
                samples.push(ms(started));
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut search_ms = Vec::new();
    for client in clients {
        search_ms.extend(client.await.context("search client")??);
    }
    let ping_ms = pinger.await.context("pinger")??;
    Ok((search_ms, ping_ms))
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

fn report(rows: &[Row], args: &Args) {
    println!(
        "\nrag-bench: {} concurrent searchers × {} s per size, {} words per chunk, {} distinct words\n",
        args.clients, args.seconds, args.chunk_words, args.vocabulary
    );
    println!(
        "| chunks | searches | search p50 / p99 / p99.9 (ms) | Redis PING p50 / p99 / p99.9 (ms) meanwhile |"
    );
    println!("| ---: | ---: | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} |",
            thousands(r.chunks as f64),
            thousands(r.searches as f64),
            r.search.0,
            r.search.1,
            r.search.2,
            r.ping.0,
            r.ping.1,
            r.ping.2
        );
    }
    println!(
        "\n| chunks | store (Redis) chunks/s | fresh replica catch-up | indexing chunks/s | catch-up CPU: replica / Redis | chunks per CPU-second (replica) | replica RSS / chunk | index disk / chunk | Redis memory / chunk |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} | {:.1} s | {} | {:.1} s / {:.1} s | {} | {} B | {} B | {} B |",
            thousands(r.chunks as f64),
            thousands(r.store_chunks_per_sec),
            r.catch_up.as_secs_f64(),
            thousands(r.chunks as f64 / r.catch_up.as_secs_f64()),
            r.catch_up_cpu.0,
            r.catch_up_cpu.1,
            thousands(r.chunks as f64 / r.catch_up_cpu.0.max(1e-9)),
            thousands(r.rss_per_chunk),
            thousands(r.disk_per_chunk),
            thousands(r.redis_bytes_per_chunk)
        );
    }
}
