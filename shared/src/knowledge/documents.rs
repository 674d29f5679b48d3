//! Knowledge documents as administrators see them: one record per
//! document with the state of its latest ingestion. The searchable chunks
//! live in the retrieval index (rag); key layout in [`crate::keys`].

use chrono::{DateTime, Utc};
use rag::types::Format;
use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::KeyPrefix;
use crate::ids::{DocumentId, StagingId, TraceId, WebhookId};
use crate::jobs::{DocumentSource, IngestDocument};
use crate::keys;
use crate::store::StoreError;
use crate::time::serde_rfc3339;
use queue::{Envelope, Job, QueueClient, QueueError};

/// How long uploaded bytes wait in staging for their ingestion (which
/// retries for about half an hour by default).
const STAGING_TTL_SECS: u64 = 7 * 24 * 3600;

/// Raises the latest staging id (KEYS[1]) to ARGV[1] unless it is newer,
/// and writes a new document's record (KEYS[2], ARGV[2]; indexed in
/// KEYS[3] at ARGV[3] as ARGV[4]) if there is none.
static STAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local latest = redis.call('GET', KEYS[1])
if (not latest) or ARGV[1] > latest then redis.call('SET', KEYS[1], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
return 1
",
    )
});

/// Writes the record of the ingestion that holds the document's lock
/// (KEYS[4], ARGV[3]; indexed in KEYS[5] at ARGV[4] as ARGV[5]), or with
/// ARGV[3] empty only tells whether it may. KEYS: tombstone, lock, latest
/// staging id, record, index. ARGV[1]: the holder's lock token, ARGV[2]:
/// its staging id. Reply: 0 written (may write), 1 deleted, 2 a newer
/// upload is staged, 3 the lock is not the caller's. No staging id at
/// all is not a refusal: the API stages after queueing, and that write
/// may be late or lost.
static SAVE_LOCKED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 3 end
local latest = redis.call('GET', KEYS[3])
if latest and latest > ARGV[2] then return 2 end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[4], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
end
return 0
",
    )
});

/// Extends a lock (KEYS[1]) to ARGV[2] ms only if it still holds the
/// caller's token (ARGV[1]). Reply: 1 renewed, 0 not the caller's.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
",
    )
});

/// Deletes a lock (KEYS[1]) only if it still holds the caller's token.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Chunks shown in a document's record (the rest are counted only).
pub const CHUNK_PREVIEWS: usize = 20;

/// Whether an ingestion may still write its document's record: see
/// [`DocumentStore::save_locked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// It holds the lock and its upload is the newest: written (or may be).
    Current,
    /// The document was deleted.
    Deleted,
    /// A newer upload arrived; its own job will write the record.
    Superseded,
    /// Another job holds the document's lock, or nobody does (it expired).
    LockLost,
}

impl Holder {
    fn from_reply(reply: i64) -> Self {
        match reply {
            0 => Holder::Current,
            1 => Holder::Deleted,
            2 => Holder::Superseded,
            _ => Holder::LockLost,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Accepted, waiting for a worker.
    Staged,
    Processing,
    Indexed,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkPreview {
    pub index: usize,
    pub heading: Option<String>,
    pub chars: usize,
    pub excerpt: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassificationView {
    pub intent: String,
    pub confidence: f64,
    pub category: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DocumentFailure {
    pub error_code: String,
    pub error_message: String,
    pub retry_count: u32,
    pub max_retries: u32,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub next_retry: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DocumentRecord {
    pub document_id: DocumentId,
    pub name: String,
    pub external_document_id: Option<String>,
    pub status: DocumentStatus,
    /// The upload being (or last) processed; an ingestion job of an older
    /// staging id is stale and does nothing.
    pub staging_id: StagingId,
    pub webhook_id: Option<WebhookId>,
    #[schema(value_type = Option<String>)]
    pub format: Option<Format>,
    pub total_size_bytes: Option<u64>,
    pub chunks_count: usize,
    pub chunks: Vec<ChunkPreview>,
    pub classifications: Vec<ClassificationView>,
    pub embeddings_model: Option<String>,
    /// Where a document that came by URL was fetched from: what a
    /// re-ingestion fetches again. Absent for direct uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    pub vector_store: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub error: Option<DocumentFailure>,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub indexed_at: Option<DateTime<Utc>>,
}

impl DocumentRecord {
    pub fn staged(
        document_id: DocumentId,
        staging_id: StagingId,
        name: String,
        external_document_id: Option<String>,
        webhook_id: Option<WebhookId>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let now = Utc::now();
        Self {
            document_id,
            name,
            external_document_id,
            status: DocumentStatus::Staged,
            staging_id,
            webhook_id,
            format: None,
            total_size_bytes: None,
            chunks_count: 0,
            chunks: Vec::new(),
            classifications: Vec::new(),
            embeddings_model: None,
            source_url: None,
            vector_store: None,
            metadata,
            error: None,
            created_at: now,
            updated_at: now,
            indexed_at: None,
        }
    }
}

#[derive(Clone)]
pub struct DocumentStore {
    conn: ConnectionManager,
    prefix: KeyPrefix,
}

impl DocumentStore {
    pub fn new(conn: ConnectionManager, prefix: KeyPrefix) -> Self {
        Self { conn, prefix }
    }

    /// The document id for an external id from one source (a webhook, or
    /// the API): the same external id always maps to the same document, so
    /// a re-upload replaces it. `None` external id: a new document.
    pub async fn resolve(
        &self,
        source: Option<&WebhookId>,
        external_id: Option<&str>,
    ) -> Result<DocumentId, StoreError> {
        let fresh = DocumentId::generate();
        let Some(external) = external_id else {
            return Ok(fresh);
        };
        let key = self.external_key(source, external);
        let mut conn = self.conn.clone();
        let (_, id): (bool, String) = redis::pipe()
            .atomic()
            .set_nx(&key, fresh.as_str())
            .get(&key)
            .query_async(&mut conn)
            .await?;
        Ok(DocumentId::parse(&id).unwrap_or(fresh))
    }

    /// Where an external id from one source (a webhook, or the API's
    /// direct uploads) maps to its document; hashed so any id fits a key.
    fn external_key(&self, source: Option<&WebhookId>, external: &str) -> String {
        let source = source.map_or("api", WebhookId::as_str);
        let hash = hex::encode(&Sha256::digest(external.as_bytes())[..16]);
        keys::document_external(&self.prefix, source, &hash)
    }

    /// Records a new upload: its staging id becomes the document's latest
    /// unless a newer one already is (staging ids sort by time), and a new
    /// document appears as staged. An existing record is left alone (its
    /// old version stays searchable): the worker updates it when it runs
    /// the upload, so the API never writes over what a worker just wrote.
    pub async fn stage(&self, record: &DocumentRecord) -> Result<(), StoreError> {
        let id = record.document_id.as_str();
        let _: () = STAGE
            .key(keys::document_staging(&self.prefix, id))
            .key(keys::document(&self.prefix, id))
            .key(keys::documents(&self.prefix))
            .arg(record.staging_id.as_str())
            .arg(serde_json::to_string(record)?)
            .arg(record.created_at.timestamp_millis())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The newest upload of a document; an ingestion of an older one is
    /// stale and does nothing.
    pub async fn latest_staging(&self, id: &DocumentId) -> Result<Option<StagingId>, StoreError> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(keys::document_staging(&self.prefix, id.as_str()))
            .await?;
        Ok(raw.and_then(|r| StagingId::parse(&r).ok()))
    }

    /// Writes the record of the ingestion holding the document's lock
    /// under `token`, unless the document was deleted (a worker that was
    /// mid-ingestion when the delete came must not bring it back), a newer
    /// upload than `record.staging_id` is staged (its job, not this one,
    /// has the say), or the lock is no longer `token`'s (a job that
    /// stalled past the lock's expiry may be racing another). All checked
    /// in the same script as the write.
    pub async fn save_locked(
        &self,
        record: &DocumentRecord,
        token: &str,
    ) -> Result<Holder, StoreError> {
        self.run_save_locked(&record.document_id, &record.staging_id, token, Some(record))
            .await
    }

    /// What [`Self::save_locked`] would answer now, without writing: lets a
    /// job stop before work that only a save could make count.
    pub async fn check_locked(
        &self,
        id: &DocumentId,
        staging: &StagingId,
        token: &str,
    ) -> Result<Holder, StoreError> {
        self.run_save_locked(id, staging, token, None).await
    }

    async fn run_save_locked(
        &self,
        id: &DocumentId,
        staging: &StagingId,
        token: &str,
        record: Option<&DocumentRecord>,
    ) -> Result<Holder, StoreError> {
        let (json, score) = match record {
            Some(record) => (
                serde_json::to_string(record)?,
                record.created_at.timestamp_millis(),
            ),
            None => (String::new(), 0),
        };
        let id = id.as_str();
        let reply: i64 = SAVE_LOCKED
            .key(keys::document_deleted(&self.prefix, id))
            .key(keys::document_lock(&self.prefix, id))
            .key(keys::document_staging(&self.prefix, id))
            .key(keys::document(&self.prefix, id))
            .key(keys::documents(&self.prefix))
            .arg(token)
            .arg(staging.as_str())
            .arg(json)
            .arg(score)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Holder::from_reply(reply))
    }

    pub async fn get(&self, id: &DocumentId) -> Result<Option<DocumentRecord>, StoreError> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(keys::document(&self.prefix, id.as_str()))
            .await?;
        Ok(raw.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    /// Newest first, and the total.
    pub async fn list(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<DocumentRecord>, u64), StoreError> {
        let mut conn = self.conn.clone();
        let index = keys::documents(&self.prefix);
        let total: u64 = conn.zcard(&index).await?;
        let ids: Vec<String> = conn
            .zrevrange(&index, offset as isize, (offset + limit) as isize - 1)
            .await?;
        if ids.is_empty() {
            return Ok((Vec::new(), total));
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| keys::document(&self.prefix, id))
            .collect();
        let raws: Vec<Option<String>> = conn.mget(&keys).await?;
        let records = raws
            .into_iter()
            .flatten()
            .map(|r| serde_json::from_str(&r))
            .collect::<Result<_, _>>()?;
        Ok((records, total))
    }

    /// First step of a delete: from now on no worker saves the document
    /// or keeps its chunks (see [`Self::save`]). Then the caller removes
    /// the chunks from retrieval and calls [`Self::delete`]; a delete that
    /// fails halfway can be repeated, since the record stays until the end.
    pub async fn mark_deleted(&self, id: &DocumentId) -> Result<(), StoreError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(
                keys::document_deleted(&self.prefix, id.as_str()),
                1,
                STAGING_TTL_SECS,
            )
            .await?;
        Ok(())
    }

    /// Forgets the record, its external id and its uploads.
    pub async fn delete(&self, record: &DocumentRecord) -> Result<(), StoreError> {
        let id = record.document_id.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys::document(&self.prefix, id))
            .ignore()
            .del(keys::document_staging(&self.prefix, id))
            .ignore()
            .zrem(keys::documents(&self.prefix), id)
            .ignore()
            .del(keys::staging(&self.prefix, record.staging_id.as_str()))
            .ignore();
        if let Some(external) = &record.external_document_id {
            pipe.del(self.external_key(record.webhook_id.as_ref(), external))
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Whether the document was deleted (recently enough that jobs for it
    /// may still be queued).
    pub async fn is_deleted(&self, id: &DocumentId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .clone()
            .exists(keys::document_deleted(&self.prefix, id.as_str()))
            .await?)
    }

    /// Takes the document's ingestion lock for `token` unless another
    /// holds it; it expires after `ttl` so a dead holder cannot keep it
    /// (a live one renews it with [`Self::renew_lock`]).
    pub async fn lock(
        &self,
        id: &DocumentId,
        token: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(keys::document_lock(&self.prefix, id.as_str()))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(lock_ms(ttl))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(taken.is_some())
    }

    /// Extends the lock to `ttl` from now if `token` still holds it (then
    /// true): a long ingestion renews it so that it outlives the job and
    /// not a stalled or dead worker.
    pub async fn renew_lock(
        &self,
        id: &DocumentId,
        token: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let renewed: i64 = RENEW
            .key(keys::document_lock(&self.prefix, id.as_str()))
            .arg(token)
            .arg(lock_ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(renewed == 1)
    }

    /// Releases the lock if `token` still holds it.
    pub async fn unlock(&self, id: &DocumentId, token: &str) -> Result<(), StoreError> {
        let _: i64 = UNLOCK
            .key(keys::document_lock(&self.prefix, id.as_str()))
            .arg(token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Keeps uploaded bytes until the ingestion job takes them.
    pub async fn put_staged_bytes(
        &self,
        staging: &StagingId,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(
                keys::staging(&self.prefix, staging.as_str()),
                bytes,
                STAGING_TTL_SECS,
            )
            .await?;
        Ok(())
    }

    pub async fn staged_bytes(&self, staging: &StagingId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .clone()
            .get(keys::staging(&self.prefix, staging.as_str()))
            .await?)
    }

    pub async fn drop_staged_bytes(&self, staging: &StagingId) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .del(keys::staging(&self.prefix, staging.as_str()))
            .await?;
        Ok(())
    }

    /// The idempotency key of an incoming document upload: same source,
    /// same external id, same body.
    pub fn upload_fingerprint(external_id: &str, body: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(external_id.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        hex::encode(&hasher.finalize()[..16])
    }
}

/// A lock's TTL in Redis' unit; PX refuses 0.
fn lock_ms(ttl: std::time::Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a document could not be ingested again.
#[derive(Debug, thiserror::Error)]
pub enum ReingestError {
    #[error("no such document")]
    Missing,
    /// It came as an upload whose bytes are gone (they are dropped once
    /// indexed, and expire), and it has no URL to fetch again.
    #[error("the document has no URL and its uploaded bytes are no longer kept")]
    SourceGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl DocumentStore {
    /// Queues document `id`'s ingestion again, as a new version (staging
    /// id) of the same document: fetched again from its URL, or, for an
    /// upload, from its staged bytes while they are still kept. The old
    /// version stays searchable until the new one is indexed. Answers the
    /// record as it stands once the job is queued.
    pub async fn reingest(
        &self,
        queue: &QueueClient,
        id: &DocumentId,
        trace_id: TraceId,
    ) -> Result<DocumentRecord, ReingestError> {
        let record = self.get(id).await?.ok_or(ReingestError::Missing)?;
        let staging_id = StagingId::generate();
        let source = match &record.source_url {
            Some(url) => DocumentSource::Url { url: url.clone() },
            None => {
                let bytes = self
                    .staged_bytes(&record.staging_id)
                    .await?
                    .ok_or(ReingestError::SourceGone)?;
                self.put_staged_bytes(&staging_id, &bytes).await?;
                DocumentSource::Upload { content_type: None }
            }
        };
        let job = Envelope::new(
            IngestDocument::QUEUE,
            IngestDocument {
                document_id: record.document_id.clone(),
                staging_id: staging_id.clone(),
                name: record.name.clone(),
                external_document_id: record.external_document_id.clone(),
                source,
                format: record.format,
                metadata: record.metadata.clone(),
                webhook_id: record.webhook_id.clone(),
                correlation_id: None,
            },
            trace_id,
        );
        queue.push(&[job]).await?;
        // After the push, as on intake: a record never names a version
        // that is not queued.
        let staged = DocumentRecord {
            staging_id,
            ..record
        };
        self.stage(&staged).await?;
        Ok(self.get(id).await?.unwrap_or(staged))
    }
}
