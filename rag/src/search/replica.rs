//! One process's copy of the search index: a tantivy index on local disk,
//! built from the documents in Redis and kept current by [`super::follow`].
//!
//! Every change is staged and then published by one commit whose payload
//! records the feed position it brings the index to. A document's old
//! chunks are deleted and its new ones added in the same commit, so a
//! search (which sees one commit) finds either version, never both or
//! neither. A reopened index reads its position from the last commit and
//! only catches up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};
use tokio::sync::watch;

use super::SearchError;
use super::feed_id::FeedId;
use super::query::{self, SearchOutcome};
use super::schema::{Fields, SCHEMA_VERSION, doc_key, register_tokenizer};
use super::store::{DocRecord, StoredChunk};
use crate::text::{Analyzer, TermCaches};

/// Indexing memory of the writer; tantivy flushes a segment when its
/// share fills, so this bounds memory, not document size.
const WRITER_MEMORY: usize = 96 << 20;

/// What a commit's payload records.
#[derive(Serialize, Deserialize)]
struct Payload {
    schema: u32,
    position: String,
}

/// The new state of one document.
pub enum Change {
    /// Its current version (record and chunks read from Redis).
    Put {
        document_id: String,
        record: DocRecord,
        chunks: Vec<StoredChunk>,
    },
    /// It has no record any more.
    Gone { document_id: String },
}

pub struct Replica {
    path: PathBuf,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    analyzer: Arc<Analyzer>,
    /// Analysed words, one cache per analysis thread, kept from batch to
    /// batch: a follower applies a few documents at a time, and a cache
    /// that starts cold each time stems nearly every word again.
    caches: TermCaches,
    /// The feed position the searchable index reflects; `None` while it
    /// has never been built.
    position: watch::Sender<Option<FeedId>>,
    /// The default (temporary) index directory lives as long as this.
    _temp: Option<tempfile::TempDir>,
}

impl Replica {
    /// Opens the index in `dir` (created if need be), or in a fresh
    /// temporary directory. An index of another schema version is wiped:
    /// it is rebuilt from Redis.
    pub fn open(dir: Option<&Path>, analyzer: Arc<Analyzer>) -> Result<Self, SearchError> {
        let (path, temp) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("supportrag-index-")
                    .tempdir()
                    .map_err(|e| SearchError::Storage(format!("temporary index directory: {e}")))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| SearchError::Storage(format!("{}: {e}", path.display())))?;
        let (schema, fields) = Fields::schema();
        let open_dir = || {
            MmapDirectory::open(&path)
                .map_err(|e| SearchError::Storage(format!("{}: {e}", path.display())))
        };
        // Another schema, another analysis, or unreadable files: the
        // replica is rebuilt from Redis rather than misread.
        let builder = || {
            Index::builder()
                .schema(schema.clone())
                .settings(index_settings())
        };
        let index = match builder().open_or_create(open_dir()?) {
            Ok(index)
                if stored_position(&index)?.is_some()
                    || index.searchable_segment_ids()?.is_empty() =>
            {
                index
            }
            _ => {
                tracing::warn!(dir = %path.display(), "index of another version or unreadable; rebuilding it");
                wipe(&path)?;
                builder().open_or_create(open_dir()?)?
            }
        };
        register_tokenizer(&index);
        let position = stored_position(&index)?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(|e| match e {
            tantivy::TantivyError::LockFailure(..) => SearchError::Storage(format!(
                "{} is in use by another process (each process needs its own retrieval.index_dir)",
                path.display()
            )),
            other => other.into(),
        })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            path,
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer,
            caches: TermCaches::default(),
            position: watch::channel(position).0,
            _temp: temp,
        })
    }

    pub fn position(&self) -> Option<FeedId> {
        *self.position.borrow()
    }

    /// Tells of every commit's position.
    pub fn watch(&self) -> watch::Receiver<Option<FeedId>> {
        self.position.subscribe()
    }

    /// Chunks in the searchable index.
    pub fn chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes of the index directory's files.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn writer(&self) -> MutexGuard<'_, IndexWriter<TantivyDocument>> {
        // A panic while holding it leaves at worst staged changes, which
        // the next commit or rollback settles.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stages `changes` (not searchable until [`Self::commit`]): each
    /// document's indexed chunks are replaced by its new state. Analysis,
    /// the costly part, runs on every core.
    pub fn stage(&self, changes: Vec<Change>) -> Result<(), SearchError> {
        let writer = self.writer();
        let mut puts = Vec::new();
        for change in changes {
            match change {
                Change::Gone { document_id } => {
                    writer.delete_term(self.fields.doc_term(&document_id));
                }
                Change::Put {
                    document_id,
                    record,
                    chunks,
                } => {
                    writer.delete_term(self.fields.doc_term(&document_id));
                    puts.push((document_id, record, chunks));
                }
            }
        }
        let keys: Vec<u64> = puts.iter().map(|(id, _, _)| doc_key(id)).collect();
        let work: Vec<(&str, u64, &DocRecord, &StoredChunk)> = puts
            .iter()
            .zip(&keys)
            .flat_map(|((id, record, chunks), &key)| {
                chunks.iter().map(move |c| (id.as_str(), key, record, c))
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(work.len().div_ceil(64).max(1));
        let per = work.len().div_ceil(threads).max(1);
        let writer_ref: &IndexWriter<TantivyDocument> = &writer;
        let index_part = |part: &[(&str, u64, &DocRecord, &StoredChunk)]| {
            let mut cache = self.caches.take();
            let added = part.iter().try_for_each(|&(id, key, record, chunk)| {
                let doc = self
                    .fields
                    .document(&self.analyzer, &mut cache, id, key, record, chunk);
                writer_ref.add_document(doc)?;
                Ok::<(), SearchError>(())
            });
            self.caches.give_back(cache);
            added
        };
        if threads == 1 {
            // A few documents (a follower's usual batch): not worth a thread.
            return index_part(&work);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(per)
                .map(|part| scope.spawn(move || index_part(part)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| SearchError::Storage("an indexing thread panicked".into()))?
            })
        })
    }

    /// Forgets every chunk (staged: a rebuild then stages every document
    /// and commits once, so searches see the old index until then).
    pub fn stage_clear(&self) -> Result<(), SearchError> {
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// Publishes what was staged as the index at feed position `position`.
    pub fn commit(&self, position: FeedId) -> Result<(), SearchError> {
        let mut writer = self.writer();
        let payload = serde_json::to_string(&Payload {
            schema: SCHEMA_VERSION,
            position: position.to_string(),
        })
        .map_err(|e| SearchError::Corrupt(e.to_string()))?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        drop(writer);
        self.reader.reload()?;
        self.position.send_replace(Some(position));
        Ok(())
    }

    /// Drops what was staged since the last commit.
    pub fn rollback(&self) -> Result<(), SearchError> {
        self.writer().rollback()?;
        Ok(())
    }

    /// The best `limit` chunks for `text` (blocking: call it off the async
    /// executor).
    pub fn search(&self, text: &str, limit: usize) -> Result<SearchOutcome, SearchError> {
        let query = query::capped(self.analyzer.query(query::bounded(text)));
        query::run(
            &self.reader.searcher(),
            &self.fields,
            &self.analyzer,
            query,
            limit,
        )
    }
}

/// Stored chunks are compressed in blocks of about four: a search reads
/// five of them at random, and decompresses a whole block for each.
fn index_settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_blocksize: 4096,
        ..tantivy::IndexSettings::default()
    }
}

/// The position in the last commit's payload, if it was written by this
/// schema version.
fn stored_position(index: &Index) -> Result<Option<FeedId>, SearchError> {
    let metas = index.load_metas()?;
    let Some(raw) = metas.payload else {
        return Ok(None);
    };
    let Ok(payload) = serde_json::from_str::<Payload>(&raw) else {
        return Ok(None);
    };
    if payload.schema != SCHEMA_VERSION {
        return Ok(None);
    }
    Ok(payload.position.parse().ok())
}

fn wipe(path: &Path) -> Result<(), SearchError> {
    let entries = std::fs::read_dir(path)
        .map_err(|e| SearchError::Storage(format!("{}: {e}", path.display())))?;
    for entry in entries.flatten() {
        let p = entry.path();
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| SearchError::Storage(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}
