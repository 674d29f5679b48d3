//! Hostile documents never take a worker down (issue 3): each
//! ends as `knowledge.document.failed` with the precise code, retried on
//! the ingestion schedule, then dead-lettered with `error.occurred`, while
//! the same worker process keeps indexing good documents.

use std::time::Duration;

use serde_json::{Value, json};
use shared::events::catalog::EventFilter;
use shared::ids::DocumentId;
use shared::incoming::{DocumentDraft, IncomingDocument};
use shared::jobs::DocumentSource;
use shared::services::Services;
use testkit::documents::{
    deeply_nested_pdf, docx_bomb, encrypted_pdf, flate_bomb_pdf, random_bytes,
};
use testkit::{
    Behaviour, PATIENCE, Receiver, Served, TestRedis, WorkerProcess, settings_env,
    spawn_file_server, spawn_receiver, test_settings, wait_until,
};

const SECRET: &str = "ingest_secret_0123456789";

/// Name, declared format, bytes, and the codes its failure may carry.
type Hostile = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    &'static [&'static str],
);

fn draft(name: &str, format: Option<&str>) -> DocumentDraft {
    DocumentDraft {
        name: name.to_owned(),
        external_document_id: Some(format!("ext_{name}")),
        source: DocumentSource::Upload { content_type: None },
        format: format.map(|f| f.parse().unwrap()),
        metadata: serde_json::Map::new(),
        correlation_id: None,
    }
}

/// Events of `event_type` the receiver got for `document_id`.
fn events_for(receiver: &Receiver, event_type: &str, document_id: &str) -> Vec<Value> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|e| e["event_type"] == event_type && e["data"]["document_id"] == document_id)
        .collect()
}

async fn wait_failed(receiver: &Receiver, document_id: &str, count: usize) -> Vec<Value> {
    wait_until(
        &format!("{count} knowledge.document.failed for {document_id}"),
        PATIENCE,
        || async {
            let failed = events_for(receiver, "knowledge.document.failed", document_id);
            (failed.len() >= count).then_some(failed)
        },
    )
    .await
}

#[tokio::test]
async fn hostile_documents_fail_with_their_codes_and_the_worker_keeps_working() {
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.ingest.max_document_size = shared::config::ByteSize(2 << 20);
    settings.ingest.fetch_timeout = Duration::from_secs(2);
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook =
        testkit::register_webhook(&services, &receiver.url(), vec![EventFilter::All], SECRET).await;
    let mut worker = WorkerProcess::spawn(
        env!("CARGO_BIN_EXE_supportrag-worker"),
        &settings_env(&settings),
    );

    let uploads: Vec<Hostile> = vec![
        (
            "flate-bomb",
            Some("pdf"),
            flate_bomb_pdf(300),
            &["INVALID_PDF_FORMAT"],
        ),
        (
            "encrypted",
            Some("pdf"),
            encrypted_pdf(),
            &["INVALID_PDF_FORMAT"],
        ),
        // lopdf caps nesting, so the file parses to a page without text.
        (
            "nested",
            Some("pdf"),
            deeply_nested_pdf(100_000),
            &["INVALID_PDF_FORMAT", "EMPTY_DOCUMENT"],
        ),
        (
            "garbage",
            None,
            random_bytes(64 * 1024, 7),
            &["UNSUPPORTED_FORMAT"],
        ),
        (
            "zip-bomb",
            Some("docx"),
            docx_bomb(1024, 1000),
            &["PARSE_FAILED"],
        ),
        (
            "blank",
            Some("text"),
            b" \n\n \t ".to_vec(),
            &["EMPTY_DOCUMENT"],
        ),
    ];
    let mut expected = Vec::new();
    for (name, format, bytes, codes) in uploads {
        let accepted = services
            .intake
            .upload(
                draft(name, format),
                &bytes,
                "trace_hostile".parse().unwrap(),
            )
            .await
            .expect("upload staged");
        expected.push((accepted.document_id.to_string(), codes));
    }

    let files = spawn_file_server(vec![
        ("endless.pdf", Served::Endless),
        ("trickle.txt", Served::Trickle),
        ("missing.pdf", Served::Status(404)),
    ])
    .await;
    for (file, codes) in [
        ("endless.pdf", &["TOO_LARGE"][..]),
        ("trickle.txt", &["FETCH_FAILED"][..]),
        ("missing.pdf", &["FETCH_FAILED"][..]),
    ] {
        let doc: IncomingDocument = serde_json::from_value(json!({
            "event_type": "document.upload",
            "data": {"document_url": files.url(file), "external_document_id": file},
        }))
        .unwrap();
        let accepted = services
            .intake
            .document(
                &webhook,
                doc,
                file.as_bytes(),
                "trace_hostile".parse().unwrap(),
            )
            .await
            .expect("document accepted");
        expected.push((accepted.document_id.to_string(), codes));
    }

    // A good document after the hostile ones is still indexed.
    let good = services
        .intake
        .upload(
            draft("good", Some("markdown")),
            "# Refunds\n\nRefunds are paid back to the original card within 5 days.".as_bytes(),
            "trace_good".parse().unwrap(),
        )
        .await
        .unwrap();
    wait_until("the good document to be indexed", PATIENCE, || async {
        let indexed = events_for(
            &receiver,
            "knowledge.document.indexed",
            good.document_id.as_str(),
        );
        (!indexed.is_empty()).then_some(())
    })
    .await;

    // Every hostile one fails on each of its 3 attempts (2 retries), with
    // its code, then is dead-lettered with error.occurred.
    for (document_id, codes) in &expected {
        let failed = wait_failed(&receiver, document_id, 3).await;
        for (n, event) in failed.iter().enumerate() {
            let data = &event["data"];
            let code = data["error_code"].as_str().unwrap();
            assert!(
                codes.contains(&code),
                "{document_id}: {code} not in {codes:?}: {data}"
            );
            assert_eq!(data["status"], "failed");
            assert_eq!(data["retry_count"], n as u64 + 1, "{data}");
            assert_eq!(data["max_retries"], 2, "{data}");
            assert_eq!(data["next_retry"].is_null(), n == 2, "{data}");
            assert!(!data["error_message"].as_str().unwrap().is_empty());
        }
        let record = services
            .documents
            .get(&DocumentId::parse(document_id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.status,
            shared::knowledge::documents::DocumentStatus::Failed
        );
    }
    wait_until(
        "an error.occurred per hostile document",
        PATIENCE,
        || async {
            let dead = receiver
                .requests()
                .iter()
                .filter(|r| r.json()["event_type"] == "error.occurred")
                .count();
            (dead >= expected.len()).then_some(())
        },
    )
    .await;
    assert!(worker.is_running(), "{}", worker.log_tail(40));
}

#[tokio::test]
async fn two_uploads_of_one_document_end_with_the_newer_text() {
    let redis = TestRedis::start();
    let settings = test_settings(&redis.url());
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook =
        testkit::register_webhook(&services, &receiver.url(), vec![EventFilter::All], SECRET).await;
    // The older version comes from a slow origin; the newer one from a
    // fast one, so it would be indexed first if both ran at once.
    let files = spawn_file_server(vec![
        (
            "old.md",
            Served::Slow {
                delay: Duration::from_millis(1500),
                content_type: "text/markdown",
                body: b"# Policy\n\nThe old refund window was fourteen days.".to_vec(),
            },
        ),
        (
            "new.md",
            Served::File {
                content_type: "text/markdown",
                body: b"# Policy\n\nThe new refund window is thirty days.".to_vec(),
            },
        ),
    ])
    .await;
    let old: IncomingDocument = serde_json::from_value(json!({
        "event_type": "document.upload",
        "data": {"document_url": files.url("old.md"), "external_document_id": "policy"},
    }))
    .unwrap();
    let first = services
        .intake
        .document(&webhook, old, b"old", "trace_old".parse().unwrap())
        .await
        .unwrap();
    let worker = testkit::spawn_worker(services.clone()).await;
    // Let the worker start on the slow one before the newer one arrives.
    wait_until("the first ingestion to start", PATIENCE, || async {
        let record = services.documents.get(&first.document_id).await.unwrap();
        record
            .filter(|r| r.status == shared::knowledge::documents::DocumentStatus::Processing)
            .map(|_| ())
    })
    .await;
    let new: IncomingDocument = serde_json::from_value(json!({
        "event_type": "document.upload",
        "data": {"document_url": files.url("new.md"), "external_document_id": "policy"},
    }))
    .unwrap();
    let second = services
        .intake
        .document(&webhook, new, b"new", "trace_new".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(first.document_id, second.document_id);
    assert_ne!(first.staging_id, second.staging_id);
    wait_until("both ingestions to finish", PATIENCE, || async {
        let indexed = receiver
            .requests()
            .iter()
            .filter(|r| r.json()["event_type"] == "knowledge.document.indexed")
            .count();
        (indexed >= 1
            && services.queue.depth("ingest").await.unwrap().in_flight == 0
            && services.queue.depth("ingest").await.unwrap().ready == 0
            && services.queue.depth("ingest").await.unwrap().scheduled == 0)
            .then_some(())
    })
    .await;
    worker.shutdown().await;
    let found = services.knowledge.search("refund window", 5).await.unwrap();
    let texts: Vec<&str> = found.hits.iter().map(|h| h.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("thirty")) && !texts.iter().any(|t| t.contains("fourteen")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn a_long_ingestion_keeps_its_lock_past_the_lock_ttl() {
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    let lock_ttl = Duration::from_millis(300);
    settings.ingest.lock_ttl = lock_ttl;
    settings.ingest.fetch_timeout = Duration::from_secs(10);
    let services = Services::connect(settings.clone()).expect("services");
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook =
        testkit::register_webhook(&services, &receiver.url(), vec![EventFilter::All], SECRET).await;
    // The fetch alone outlasts the lock's TTL many times over.
    let files = spawn_file_server(vec![
        (
            "slow.md",
            Served::Slow {
                delay: Duration::from_millis(2500),
                content_type: "text/markdown",
                body: b"# Policy\n\nThe old refund window was fourteen days.".to_vec(),
            },
        ),
        (
            "new.md",
            Served::File {
                content_type: "text/markdown",
                body: b"# Policy\n\nThe new refund window is thirty days.".to_vec(),
            },
        ),
    ])
    .await;
    let upload = |file: &str| -> IncomingDocument {
        serde_json::from_value(json!({
            "event_type": "document.upload",
            "data": {"document_url": files.url(file), "external_document_id": "policy"},
        }))
        .unwrap()
    };
    let first = services
        .intake
        .document(
            &webhook,
            upload("slow.md"),
            b"slow",
            "trace_slow".parse().unwrap(),
        )
        .await
        .unwrap();
    let worker = testkit::spawn_worker(services.clone()).await;
    wait_until("the first ingestion to start", PATIENCE, || async {
        let record = services.documents.get(&first.document_id).await.unwrap();
        record
            .filter(|r| r.status == shared::knowledge::documents::DocumentStatus::Processing)
            .map(|_| ())
    })
    .await;
    let lock_key =
        shared::keys::document_lock(&settings.redis.key_prefix, first.document_id.as_str());
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let holder: Option<String> = redis::AsyncCommands::get(&mut conn, &lock_key)
        .await
        .unwrap();
    let holder = holder.expect("the ingestion holds the document's lock");

    // A second upload now wants the lock; without renewals it would take
    // it once the first holder's TTL ran out.
    let second = services
        .intake
        .document(
            &webhook,
            upload("new.md"),
            b"new",
            "trace_new".parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.document_id, second.document_id);
    tokio::time::sleep(lock_ttl * 3).await;
    let still: Option<String> = redis::AsyncCommands::get(&mut conn, &lock_key)
        .await
        .unwrap();
    assert_eq!(still.as_deref(), Some(holder.as_str()));
    let pttl: i64 = redis::AsyncCommands::pttl(&mut conn, &lock_key)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 300,
        "the lock is renewed to its TTL, not held longer: {pttl} ms"
    );
    let record = services.documents.get(&first.document_id).await.unwrap();
    assert_eq!(
        record.map(|r| r.status),
        Some(shared::knowledge::documents::DocumentStatus::Processing)
    );

    // The first job's save is refused (a newer upload is staged); the
    // second then indexes the newer text.
    wait_until("the newer upload to be indexed", PATIENCE, || async {
        let record = services.documents.get(&first.document_id).await.unwrap()?;
        (record.status == shared::knowledge::documents::DocumentStatus::Indexed
            && record.staging_id == second.staging_id)
            .then_some(())
    })
    .await;
    worker.shutdown().await;
    let found = services.knowledge.search("refund window", 5).await.unwrap();
    let texts: Vec<&str> = found.hits.iter().map(|h| h.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("thirty")) && !texts.iter().any(|t| t.contains("fourteen")),
        "{texts:?}"
    );
    let indexed = events_for(
        &receiver,
        "knowledge.document.indexed",
        first.document_id.as_str(),
    );
    assert_eq!(indexed.len(), 1, "{indexed:?}");
    let left: Option<String> = redis::AsyncCommands::get(&mut conn, &lock_key)
        .await
        .unwrap();
    assert_eq!(left, None, "the lock is released at the end");
}

#[tokio::test]
async fn an_ingestion_cannot_save_after_a_newer_upload_or_without_its_lock() {
    use shared::ids::StagingId;
    use shared::knowledge::documents::{DocumentRecord, DocumentStatus, Holder};

    let redis = TestRedis::start();
    let services = Services::connect(test_settings(&redis.url())).expect("services");
    let documents = &services.documents;
    let id = DocumentId::generate();
    // Staging ids order by time; two of the same millisecond need sorting.
    let mut ids = [StagingId::generate(), StagingId::generate()];
    ids.sort();
    let [older, newer] = ids;
    let staged = |staging: &StagingId| {
        DocumentRecord::staged(
            id.clone(),
            staging.clone(),
            "policy.md".into(),
            None,
            None,
            serde_json::Map::new(),
        )
    };
    let mut record = staged(&older);
    documents.stage(&record).await.unwrap();
    let ttl = Duration::from_secs(30);
    assert!(documents.lock(&id, "job_a", ttl).await.unwrap());

    record.status = DocumentStatus::Processing;
    assert_eq!(
        documents.save_locked(&record, "job_a").await.unwrap(),
        Holder::Current
    );
    // Only the holder renews, and only the holder saves.
    assert!(documents.renew_lock(&id, "job_a", ttl).await.unwrap());
    assert!(!documents.renew_lock(&id, "job_b", ttl).await.unwrap());
    let mut intruder = record.clone();
    intruder.status = DocumentStatus::Indexed;
    assert_eq!(
        documents.save_locked(&intruder, "job_b").await.unwrap(),
        Holder::LockLost
    );

    // A newer upload arrives while job_a works.
    documents.stage(&staged(&newer)).await.unwrap();
    record.status = DocumentStatus::Indexed;
    assert_eq!(
        documents.check_locked(&id, &older, "job_a").await.unwrap(),
        Holder::Superseded
    );
    assert_eq!(
        documents.save_locked(&record, "job_a").await.unwrap(),
        Holder::Superseded
    );
    let stored = documents.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, &stored.staging_id),
        (DocumentStatus::Processing, &older),
        "the refused save wrote nothing"
    );

    // The newer upload's job, once it has the lock, saves.
    documents.unlock(&id, "job_a").await.unwrap();
    assert!(documents.lock(&id, "job_b", ttl).await.unwrap());
    let mut newest = staged(&newer);
    newest.status = DocumentStatus::Indexed;
    assert_eq!(
        documents.save_locked(&newest, "job_b").await.unwrap(),
        Holder::Current
    );
    // A delete wins over everything.
    documents.mark_deleted(&id).await.unwrap();
    assert_eq!(
        documents.save_locked(&newest, "job_b").await.unwrap(),
        Holder::Deleted
    );
}

/// Waits until `document_id`'s record says indexed.
async fn wait_indexed(services: &Services, document_id: &DocumentId) {
    wait_until(&format!("{document_id} indexed"), PATIENCE, || async {
        services
            .documents
            .get(document_id)
            .await
            .unwrap()
            .filter(|r| r.status == shared::knowledge::documents::DocumentStatus::Indexed)
            .map(|_| ())
    })
    .await;
}

/// Services over `settings`, retried while a stopped worker's replica still
/// holds the index directory (it lets go as its follower stops).
async fn services_when_free(settings: &shared::config::Settings) -> Services {
    wait_until("the index directory to be free", PATIENCE, || async {
        Services::connect(settings.clone()).ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_with_its_index_directory_only_catches_up_and_without_one_rebuilds() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&redis.url());
    settings.retrieval.index_dir = Some(dir.path().to_path_buf());
    let upload = |services: Services, name: &'static str, text: &'static str| async move {
        services
            .intake
            .upload(
                draft(name, Some("text")),
                text.as_bytes(),
                format!("trace_{name}").parse().unwrap(),
            )
            .await
            .unwrap()
            .document_id
    };

    let services = Services::connect(settings.clone()).unwrap();
    let worker = testkit::spawn_worker(services.clone()).await;
    let first = upload(
        services.clone(),
        "first",
        "Refunds take five business days.",
    )
    .await;
    wait_indexed(&services, &first).await;
    let search = services.search.clone().expect("embedded search");
    // A search waits for its replica to reach the feed's end.
    let found = services.knowledge.search("refunds", 5).await.unwrap();
    assert_eq!(found.hits[0].document_id, first.as_str());
    assert_eq!(search.replica().chunks(), 1);
    worker.shutdown().await;
    drop((services, search));

    // While the worker is away, another process (here: a replica of its
    // own) indexes a second document.
    let mut elsewhere = settings.clone();
    elsewhere.retrieval.index_dir = None;
    let other = Services::connect(elsewhere.clone()).unwrap();
    let second = upload(
        other.clone(),
        "second",
        "Deliveries arrive within two days.",
    )
    .await;
    let second_worker = testkit::spawn_worker(other.clone()).await;
    wait_indexed(&other, &second).await;
    second_worker.shutdown().await;
    drop(other);

    let restarted = services_when_free(&settings).await;
    let search = restarted.search.clone().expect("embedded search");
    // It reopens where it stopped (one chunk), not empty...
    assert!(search.replica().position().is_some());
    assert_eq!(search.replica().chunks(), 1);
    // ...and catches up on what it missed.
    let worker = testkit::spawn_worker(restarted.clone()).await;
    search.wait_caught_up().await;
    let found = restarted
        .knowledge
        .search("deliveries arrive", 5)
        .await
        .unwrap();
    assert_eq!(found.hits[0].document_id, second.as_str());
    assert_eq!(search.replica().chunks(), 2);
    worker.shutdown().await;

    // Without an index directory a worker starts empty and rebuilds.
    let fresh = Services::connect(elsewhere).unwrap();
    let search = fresh.search.clone().expect("embedded search");
    assert_eq!(search.replica().position(), None);
    assert_eq!(search.replica().chunks(), 0);
    let worker = testkit::spawn_worker(fresh.clone()).await;
    search.wait_caught_up().await;
    let found = fresh
        .knowledge
        .search("refunds five days", 5)
        .await
        .unwrap();
    assert_eq!(found.hits[0].document_id, first.as_str());
    assert_eq!(search.replica().chunks(), 2);
    worker.shutdown().await;
}

/// Text of about `chars` characters with varied words (a repeated line
/// would chunk into identical pieces).
fn long_text(chars: usize) -> String {
    let words = [
        "refund",
        "delivery",
        "account",
        "password",
        "invoice",
        "order",
        "support",
        "ticket",
        "возврат",
        "доставка",
        "счёт",
        "пароль",
        "заказ",
        "поддержка",
        "карта",
        "оплата",
    ];
    let mut text = String::with_capacity(chars + 64);
    let mut n: u64 = 1;
    while text.len() < chars {
        for _ in 0..12 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(words[(n >> 33) as usize % words.len()]);
            text.push_str(&format!(" {} ", (n >> 40) % 997));
        }
        text.push_str(".\n\n");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_million_character_document_does_not_stall_deliveries() {
    let redis = TestRedis::start();
    let mut settings = test_settings(&redis.url());
    settings.ingest.max_document_size = shared::config::ByteSize(32 << 20);
    let services = Services::connect(settings).unwrap();
    let receiver = spawn_receiver(Behaviour::AlwaysOk).await;
    let webhook =
        testkit::register_webhook(&services, &receiver.url(), vec![EventFilter::All], SECRET).await;
    let worker = testkit::spawn_worker(services.clone()).await;

    let text = long_text(5_000_000);
    let document = services
        .intake
        .upload(
            draft("huge", Some("text")),
            text.as_bytes(),
            "trace_huge".parse().unwrap(),
        )
        .await
        .unwrap()
        .document_id;
    // A delivery every 20 ms for as long as the document is ingested.
    let mut sent = std::collections::HashMap::new();
    let started = std::time::Instant::now();
    loop {
        let id = shared::ids::EventId::generate();
        let event = shared::events::catalog::Event::new(
            id.clone(),
            shared::events::catalog::EventType::ChatResponseGenerated,
            json!({"probe": sent.len()}),
            shared::events::catalog::EventMetadata {
                trace_id: "trace_probe".parse().unwrap(),
                correlation_id: None,
            },
        );
        sent.insert(id.to_string(), std::time::Instant::now());
        services.publisher.publish(event).await.unwrap();
        let record = services.documents.get(&document).await.unwrap();
        if record.is_some_and(|r| r.status == shared::knowledge::documents::DocumentStatus::Indexed)
            || started.elapsed() > PATIENCE * 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingestion = started.elapsed();
    wait_until("every probe delivered", PATIENCE, || async {
        let got = receiver
            .requests()
            .iter()
            .filter(|r| r.json()["data"]["probe"].is_number())
            .count();
        (got >= sent.len()).then_some(())
    })
    .await;
    let mut latencies: Vec<f64> = receiver
        .requests()
        .iter()
        .filter_map(|r| {
            let id = r.json()["event_id"].as_str()?.to_owned();
            let at = sent.get(&id)?;
            Some(r.received_at.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let record = services.documents.get(&document).await.unwrap().unwrap();
    println!(
        "5 MB document: {} chunks indexed in {:.1} s; {} deliveries meanwhile, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        record.chunks_count,
        ingestion.as_secs_f64(),
        latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    assert_eq!(
        record.status,
        shared::knowledge::documents::DocumentStatus::Indexed,
        "{record:?}"
    );
    assert!(record.chunks_count > 1000);
    // A search waits up to a second for its replica; indexing 4,000
    // chunks may take longer in a debug build.
    wait_until("the document to be searchable", PATIENCE, || async {
        let found = services
            .knowledge
            .search("refund delivery", 5)
            .await
            .unwrap();
        found
            .hits
            .first()
            .filter(|h| h.document_id == document.as_str())
            .map(|_| ())
    })
    .await;
    worker.shutdown().await;
    drop(webhook);
}
