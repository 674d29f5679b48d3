//! The indexing step: fetch (or take the upload), parse in a
//! sandboxed child process, chunk, index, classify, and tell subscribers
//! how it went.
//!
//! Every failure is announced (`knowledge.document.failed` with the
//! precise code and the retry plan) and retried on the ingestion schedule,
//! since the source may fix the file. Parsing never runs in this process:
//! a flate bomb or a stack-busting PDF kills a child, not the worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use queue::Job;
use queue::RetryPlan;
use rag::chunk::{ChunkOptions, chunk};
use rag::knowledge::Knowledge;
use rag::parse::ParseError;
use rag::parse::sandbox::ParserPool;
use rag::types::{BlockKind, Chunk, DocumentMeta, ParsedDocument};
use shared::delivery::publish::Publisher;
use shared::events::catalog::{Event, EventMetadata};
use shared::events::payloads::{
    AnalysisClassificationCompleted, ErrorRelated, FailedStatus, IndexedStatus,
    KnowledgeDocumentFailed, KnowledgeDocumentIndexed,
};
use shared::ids::{DocumentId, EventId};
use shared::jobs::{DocumentSource, IngestDocument};
use shared::knowledge::documents::{
    CHUNK_PREVIEWS, ChunkPreview, ClassificationView, DocumentFailure, DocumentRecord,
    DocumentStatus, DocumentStore, Holder,
};
use shared::net::egress::{EgressClient, EgressError};
use shared::time::elapsed_ms;
use tracing::{info, warn};

use queue::runtime::{DeadContext, Handler, JobContext, Outcome};

use crate::dead::dead_job_event;

/// Text handed to the classifier: the start of a document says what it
/// is about, and the cost stays bounded.
const CLASSIFY_CHARS: usize = 20_000;
/// Characters of a chunk shown in the document's record.
const PREVIEW_CHARS: usize = 160;

/// How to start the parser child: a program and the arguments that make
/// it read one document on stdin (the worker binary's hidden
/// `parse-document` command).
#[derive(Clone, Debug)]
pub struct ParserCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

pub struct IngestHandler {
    pub documents: DocumentStore,
    pub publisher: Publisher,
    pub knowledge: Knowledge,
    pub egress: EgressClient,
    /// Parser children, shared by this process' ingestion jobs.
    pub parsers: ParserPool,
    pub chunking: ChunkOptions,
    pub max_document_size: usize,
    pub max_retries: u32,
    /// How long a document's ingestion lock outlives a worker that died
    /// holding it; renewed every third of it while the job runs.
    pub lock_ttl: Duration,
}

/// When a job whose document is being ingested by another job looks again.
const LOCKED_RETRY: Duration = Duration::from_secs(1);

/// Why an attempt failed, with its documented code.
#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("{0}")]
    Fetch(String),
    #[error("document is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("indexing failed: {0}")]
    Index(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl IngestError {
    fn code(&self) -> &'static str {
        match self {
            IngestError::Fetch(_) => "FETCH_FAILED",
            IngestError::TooLarge { .. } => "TOO_LARGE",
            IngestError::Parse(e) => e.code(),
            IngestError::Index(_) => "INDEX_FAILED",
            IngestError::Storage(_) => "STORAGE_UNAVAILABLE",
        }
    }
}

fn storage(e: impl std::fmt::Display) -> IngestError {
    IngestError::Storage(e.to_string())
}

/// What one successful attempt produced.
struct Indexed {
    record: DocumentRecord,
    processing_time_ms: u64,
    classification_time_ms: u64,
}

impl Handler for IngestHandler {
    type Job = IngestDocument;

    async fn handle(&self, job: IngestDocument, ctx: &JobContext) -> Outcome {
        // One ingestion per document at a time: two uploads of one document
        // run in parallel could finish out of order and leave the older
        // text indexed. The other waits (no attempt counted).
        let token = ctx.job_id.as_str();
        match self
            .documents
            .lock(&job.document_id, token, self.lock_ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Later(LOCKED_RETRY),
            Err(e) => {
                return Outcome::Failed {
                    error: format!("storage: {e}"),
                    plan: ctx.plan_failure(None),
                };
            }
        }
        let outcome = {
            let work = self.handle_locked(job.clone(), ctx);
            tokio::pin!(work);
            tokio::select! {
                outcome = &mut work => outcome,
                // Lost: the job goes on, but its saves are refused.
                () = self.keep_lock(&job.document_id, token) => work.await,
            }
        };
        if let Err(e) = self.documents.unlock(&job.document_id, token).await {
            // It expires after lock_ttl; until then the next upload waits.
            warn!(error = %e, "could not release the document's ingestion lock");
        }
        outcome
    }

    async fn on_dead(
        &self,
        job: Option<&IngestDocument>,
        ctx: &DeadContext,
    ) -> Result<(), anyhow::Error> {
        let event = dead_job_event(
            IngestDocument::QUEUE,
            "INGEST_FAILED",
            ctx,
            ErrorRelated::Ingest {
                document_id: job.map(|j| j.document_id.clone()),
                staging_id: job.map(|j| j.staging_id.clone()),
                external_document_id: job.and_then(|j| j.external_document_id.clone()),
                webhook_id: job.and_then(|j| j.webhook_id.clone()),
            },
            job.and_then(|j| j.correlation_id.clone()),
        )?;
        self.publisher.publish(event).await?;
        Ok(())
    }
}

impl IngestHandler {
    /// Renews the document's lock every third of its TTL, so an ingestion
    /// longer than the TTL keeps it; returns only once the lock is no
    /// longer `token`'s (renewals failed for a whole TTL, and it expired).
    async fn keep_lock(&self, id: &DocumentId, token: &str) {
        let every = self.lock_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.documents.renew_lock(id, token, self.lock_ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(document_id = %id, "lost the document's ingestion lock");
                    return;
                }
                Err(e) => warn!(
                    document_id = %id,
                    error = %e,
                    "could not renew the document's ingestion lock; will try again"
                ),
            }
        }
    }

    async fn handle_locked(&self, job: IngestDocument, ctx: &JobContext) -> Outcome {
        let started = Instant::now();
        let mut record = match self.current_record(&job).await {
            Ok(Some(record)) => record,
            Ok(None) => return Outcome::Done,
            Err(e) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    plan: ctx.plan_failure(None),
                };
            }
        };
        match self
            .ingest(&job, &mut record, ctx.job_id.as_str(), started)
            .await
        {
            Ok(None) => Outcome::Done,
            Ok(Some(indexed)) => match self.announce_indexed(&job, ctx, indexed).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed {
                    error: format!("announcing the indexed document: {e:#}"),
                    plan: ctx.plan_failure(None),
                },
            },
            Err(error) => self.fail(&job, ctx, record, error).await,
        }
    }

    /// The document's record if this job is still wanted: not deleted, and
    /// not superseded by a newer upload (staging ids sort by time). The
    /// job is the newest upload, so its name and metadata win.
    async fn current_record(
        &self,
        job: &IngestDocument,
    ) -> Result<Option<DocumentRecord>, IngestError> {
        if self
            .documents
            .is_deleted(&job.document_id)
            .await
            .map_err(storage)?
        {
            info!(document_id = %job.document_id, "document was deleted; ingestion skipped");
            return Ok(None);
        }
        let latest = self
            .documents
            .latest_staging(&job.document_id)
            .await
            .map_err(storage)?;
        if let Some(newer) = latest.filter(|l| *l > job.staging_id) {
            info!(
                document_id = %job.document_id,
                staging_id = %job.staging_id,
                newer = %newer,
                "a newer upload supersedes this one; skipped"
            );
            return Ok(None);
        }
        let record = self
            .documents
            .get(&job.document_id)
            .await
            .map_err(storage)?;
        Ok(Some(match record {
            Some(mut record) => {
                record.staging_id = job.staging_id.clone();
                record.name = job.name.clone();
                record.metadata = job.metadata.clone();
                record.source_url = job.source.url().map(str::to_owned);
                record
            }
            // The API writes the record after queueing the job; if that
            // write was lost (or has not landed yet) the job has all it
            // takes to write it.
            None => DocumentRecord::staged(
                job.document_id.clone(),
                job.staging_id.clone(),
                job.name.clone(),
                job.external_document_id.clone(),
                job.webhook_id.clone(),
                job.metadata.clone(),
            ),
        }))
    }

    /// One attempt, as the holder of the document's lock under `token`.
    async fn ingest(
        &self,
        job: &IngestDocument,
        record: &mut DocumentRecord,
        token: &str,
        started: Instant,
    ) -> Result<Option<Indexed>, IngestError> {
        record.status = DocumentStatus::Processing;
        record.updated_at = Utc::now();
        if !self.still_wanted(job, token, Some(record)).await? {
            return Ok(None);
        }
        let (bytes, content_type) = self.fetch(job).await?;
        let parsed = self.parse(job, content_type.as_deref(), &bytes).await?;
        let chunks = split(&parsed, &self.chunking)?;
        // Indexing replaces the document's chunks, which the final save's
        // checks cannot take back: the last look before it.
        if !self.still_wanted(job, token, None).await? {
            return Ok(None);
        }
        let count = self.index(job, &chunks).await?;
        let processing_time_ms = elapsed_ms(started);
        let classify_started = Instant::now();
        let classifications = self.classify(&parsed);
        let classification_time_ms = elapsed_ms(classify_started);

        let now = Utc::now();
        record.status = DocumentStatus::Indexed;
        record.format = Some(parsed.format);
        record.total_size_bytes = Some(bytes.len() as u64);
        record.chunks_count = count;
        record.chunks = chunks.iter().take(CHUNK_PREVIEWS).map(preview).collect();
        record.classifications = classifications;
        record.embeddings_model = Some(self.knowledge.embeddings_model());
        record.vector_store = Some(self.knowledge.vector_store().to_owned());
        record.error = None;
        record.updated_at = now;
        record.indexed_at = Some(now);
        if !self.save_indexed(job, record, token).await? {
            return Ok(None);
        }
        Ok(Some(Indexed {
            record: record.clone(),
            processing_time_ms,
            classification_time_ms,
        }))
    }

    /// Whether `token` still holds the document's lock for this upload;
    /// with a `record`, saves it under that check.
    async fn still_wanted(
        &self,
        job: &IngestDocument,
        token: &str,
        record: Option<&DocumentRecord>,
    ) -> Result<bool, IngestError> {
        let holder = match record {
            Some(record) => self.documents.save_locked(record, token).await,
            None => {
                self.documents
                    .check_locked(&job.document_id, &job.staging_id, token)
                    .await
            }
        }
        .map_err(storage)?;
        if holder != Holder::Current {
            log_refused(job, holder);
        }
        Ok(holder == Holder::Current)
    }

    /// In a sandboxed child process (see [`ParserPool`]).
    #[tracing::instrument(name = "ingest.parse", skip_all, fields(bytes = bytes.len()))]
    async fn parse(
        &self,
        job: &IngestDocument,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<ParsedDocument, IngestError> {
        Ok(self.parsers.parse(job.format, content_type, bytes).await?)
    }

    #[tracing::instrument(name = "ingest.index", skip_all, fields(chunks = chunks.len()))]
    async fn index(&self, job: &IngestDocument, chunks: &[Chunk]) -> Result<usize, IngestError> {
        let meta = DocumentMeta {
            document_id: job.document_id.to_string(),
            title: job.name.clone(),
        };
        self.knowledge
            .index(&meta, chunks)
            .await
            .map_err(|e| IngestError::Index(e.to_string()))
    }

    #[tracing::instrument(name = "ingest.classify", skip_all)]
    fn classify(&self, parsed: &ParsedDocument) -> Vec<ClassificationView> {
        self.knowledge
            .classify(&classification_text(parsed))
            .into_iter()
            .map(|c| ClassificationView {
                intent: c.intent,
                confidence: c.confidence,
                category: c.category,
            })
            .collect()
    }

    /// Saves the indexed record; false when the document is no longer this
    /// job's to save.
    async fn save_indexed(
        &self,
        job: &IngestDocument,
        record: &DocumentRecord,
        token: &str,
    ) -> Result<bool, IngestError> {
        match self
            .documents
            .save_locked(record, token)
            .await
            .map_err(storage)?
        {
            Holder::Current => Ok(true),
            Holder::Deleted => {
                // The delete may have removed the chunks before we
                // indexed them, so remove them again.
                log_refused(job, Holder::Deleted);
                self.knowledge
                    .remove(job.document_id.as_str())
                    .await
                    .map_err(|e| IngestError::Index(e.to_string()))?;
                Ok(false)
            }
            // Superseded: the newer upload's job waits for this lock and
            // indexes its own text after these chunks.
            refused => {
                log_refused(job, refused);
                Ok(false)
            }
        }
    }

    #[tracing::instrument(name = "ingest.fetch", skip_all, fields(source = source_kind(&job.source)))]
    async fn fetch(&self, job: &IngestDocument) -> Result<(Vec<u8>, Option<String>), IngestError> {
        match &job.source {
            DocumentSource::Upload { content_type } => {
                let bytes = self
                    .documents
                    .staged_bytes(&job.staging_id)
                    .await
                    .map_err(storage)?
                    .ok_or_else(|| {
                        IngestError::Fetch(
                            "the uploaded file expired before it was processed".into(),
                        )
                    })?;
                Ok((bytes, content_type.clone()))
            }
            DocumentSource::Url { url } => {
                // One byte over the limit tells "exactly the limit" from
                // "more than the limit".
                let response = self
                    .egress
                    .get(url, self.max_document_size.saturating_add(1))
                    .await
                    .map_err(|e| match e {
                        EgressError::TooLarge { .. } => IngestError::TooLarge {
                            limit: self.max_document_size,
                        },
                        other => {
                            IngestError::Fetch(format!("fetching the document failed: {other}"))
                        }
                    })?;
                if !response.is_success() {
                    return Err(IngestError::Fetch(format!(
                        "fetching the document failed: HTTP {}",
                        response.status
                    )));
                }
                let content_type = response
                    .headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .into_complete_body()
                    .map_err(|_| IngestError::TooLarge {
                        limit: self.max_document_size,
                    })?;
                if body.len() > self.max_document_size {
                    return Err(IngestError::TooLarge {
                        limit: self.max_document_size,
                    });
                }
                Ok((body, content_type))
            }
        }
    }

    async fn announce_indexed(
        &self,
        job: &IngestDocument,
        ctx: &JobContext,
        indexed: Indexed,
    ) -> anyhow::Result<()> {
        let record = &indexed.record;
        let metadata = EventMetadata {
            trace_id: ctx.trace_id.clone(),
            correlation_id: job.correlation_id.clone(),
        };
        self.publisher
            .publish(Event::of(
                EventId::derived(&ctx.job_id, "indexed"),
                &KnowledgeDocumentIndexed {
                    document_id: record.document_id.clone(),
                    name: record.name.clone(),
                    external_document_id: record.external_document_id.clone(),
                    status: IndexedStatus::Indexed,
                    chunks_count: record.chunks_count,
                    total_size_bytes: record.total_size_bytes,
                    processing_time_ms: indexed.processing_time_ms,
                    metadata: record.metadata.clone(),
                    embeddings_model: record.embeddings_model.clone(),
                    vector_store: record.vector_store.clone(),
                },
                metadata.clone(),
            )?)
            .await?;
        self.publisher
            .publish(Event::of(
                EventId::derived(&ctx.job_id, "classified"),
                &AnalysisClassificationCompleted {
                    document_id: record.document_id.clone(),
                    classifications: record.classifications.clone(),
                    processing_time_ms: indexed.classification_time_ms,
                },
                metadata,
            )?)
            .await?;
        if matches!(job.source, DocumentSource::Upload { .. })
            && let Err(e) = self.documents.drop_staged_bytes(&job.staging_id).await
        {
            // They expire on their own; a leftover costs memory for a while.
            warn!(error = %e, "could not drop the staged upload");
        }
        info!(
            document_id = %record.document_id,
            chunks = record.chunks_count,
            processing_time_ms = indexed.processing_time_ms,
            "document indexed"
        );
        Ok(())
    }

    /// Records and announces a failed attempt, and tells the runtime when
    /// to try again.
    #[tracing::instrument(name = "ingest.fail", skip_all, fields(error_code = error.code()))]
    async fn fail(
        &self,
        job: &IngestDocument,
        ctx: &JobContext,
        mut record: DocumentRecord,
        error: IngestError,
    ) -> Outcome {
        let plan = ctx.plan_failure(None);
        let failure = DocumentFailure {
            error_code: error.code().to_owned(),
            error_message: error.to_string(),
            retry_count: ctx.overall_attempt(),
            max_retries: self.max_retries,
            next_retry: match plan {
                RetryPlan::After(delay) => {
                    Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
                }
                RetryPlan::Exhausted => None,
            },
        };
        warn!(
            document_id = %job.document_id,
            error_code = %failure.error_code,
            error = %failure.error_message,
            retry_count = failure.retry_count,
            "document ingestion failed"
        );
        let failed = Outcome::Failed {
            error: format!("{}: {}", failure.error_code, failure.error_message),
            plan,
        };
        record.status = DocumentStatus::Failed;
        record.error = Some(failure.clone());
        record.updated_at = Utc::now();
        match self
            .documents
            .save_locked(&record, ctx.job_id.as_str())
            .await
        {
            Ok(Holder::Current) => {}
            // Nobody waits for this upload any more.
            Ok(refused @ (Holder::Deleted | Holder::Superseded)) => {
                log_refused(job, refused);
                return Outcome::Done;
            }
            // Another job may be ingesting the document: announcing a
            // failure would be about its work. Tried again, quietly.
            Ok(Holder::LockLost) => {
                log_refused(job, Holder::LockLost);
                return failed;
            }
            Err(e) => warn!(error = %e, "could not record the failed ingestion"),
        }
        if let Err(e) = self.announce_failed(job, ctx, &record, failure).await {
            warn!(error = %e, "could not announce the failed ingestion");
        }
        failed
    }

    async fn announce_failed(
        &self,
        job: &IngestDocument,
        ctx: &JobContext,
        record: &DocumentRecord,
        failure: DocumentFailure,
    ) -> anyhow::Result<()> {
        let event = Event::of(
            EventId::derived(&ctx.job_id, &format!("failed_{}", failure.retry_count)),
            &KnowledgeDocumentFailed {
                document_id: record.document_id.clone(),
                name: record.name.clone(),
                external_document_id: record.external_document_id.clone(),
                status: FailedStatus::Failed,
                error_code: failure.error_code,
                error_message: failure.error_message,
                retry_count: failure.retry_count,
                max_retries: failure.max_retries,
                next_retry: failure.next_retry,
            },
            EventMetadata {
                trace_id: ctx.trace_id.clone(),
                correlation_id: job.correlation_id.clone(),
            },
        )?;
        self.publisher.publish(event).await?;
        Ok(())
    }
}

/// Why an attempt stops without writing its document's record.
fn log_refused(job: &IngestDocument, holder: Holder) {
    let (document_id, staging_id) = (&job.document_id, &job.staging_id);
    match holder {
        Holder::Current => {}
        Holder::Deleted => {
            info!(%document_id, %staging_id, "document deleted during ingestion; not saved");
        }
        Holder::Superseded => info!(
            %document_id,
            %staging_id,
            "a newer upload arrived during ingestion; not saved (its own job indexes it)"
        ),
        Holder::LockLost => warn!(
            %document_id,
            %staging_id,
            "the document's ingestion lock is no longer this job's; not saved"
        ),
    }
}

#[tracing::instrument(name = "ingest.chunk", skip_all, fields(chunks))]
fn split(parsed: &ParsedDocument, options: &ChunkOptions) -> Result<Vec<Chunk>, IngestError> {
    let chunks = chunk(parsed, options);
    tracing::Span::current().record("chunks", chunks.len());
    if chunks.is_empty() {
        return Err(ParseError::Empty.into());
    }
    Ok(chunks)
}

fn source_kind(source: &DocumentSource) -> &'static str {
    match source {
        DocumentSource::Upload { .. } => "upload",
        DocumentSource::Url { .. } => "url",
    }
}

fn preview(chunk: &Chunk) -> ChunkPreview {
    ChunkPreview {
        index: chunk.index,
        heading: chunk.heading.clone(),
        chars: chunk.text.chars().count(),
        excerpt: excerpt(&chunk.text),
    }
}

/// The title and the first blocks of text, up to the classifier's budget.
fn classification_text(doc: &ParsedDocument) -> String {
    let mut text = doc.title.clone().unwrap_or_default();
    for block in &doc.blocks {
        if text.len() >= CLASSIFY_CHARS {
            break;
        }
        if block.kind != BlockKind::PageBreak {
            text.push('\n');
            text.push_str(&block.text);
        }
    }
    text.chars().take(CLASSIFY_CHARS).collect()
}

fn excerpt(text: &str) -> String {
    if text.chars().count() <= PREVIEW_CHARS {
        return text.to_owned();
    }
    let cut: String = text.chars().take(PREVIEW_CHARS).collect();
    format!("{}…", cut.trim_end())
}
