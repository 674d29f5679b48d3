//! The semantic index: chunks embedded by an OpenAI-compatible model and
//! stored in Qdrant, used when configuration selects that provider.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::ProviderError;
use super::openai::OpenAiClient;
use super::qdrant::{Point, QdrantStore, ScoredPoint, point_id};
use crate::types::{Chunk, DocumentMeta, Hit};

/// Top cosine at or below which retrieval is considered to have found
/// nothing. Modern embedding models (OpenAI text-embedding-3, nomic, bge)
/// give unrelated texts cosines around 0.0–0.3 (rarely negative), so 0.3 is
/// where "not about this at all" ends.
pub const CONFIDENCE_LOW: f64 = 0.3;
/// Top cosine at or above which retrieval is fully trusted: a question and
/// the passage that answers it typically score 0.6–0.85, and paraphrases
/// above 0.8, so 0.8 means the passage says what was asked.
pub const CONFIDENCE_HIGH: f64 = 0.8;

const SYSTEM_PROMPT: &str = "You are a customer support assistant. Answer the user's question using only \
the numbered passages provided. Answer in the language of the question. If the passages do not contain \
the answer, say that you do not know; do not guess or use outside knowledge. Cite the passages you used \
by their number, like [1].";

#[derive(Clone)]
pub struct SemanticIndex {
    embedder: OpenAiClient,
    store: QdrantStore,
}

/// The id a chunk is stored and cited under: unique across documents and
/// stable across re-indexing, so the same chunk keeps the same Qdrant point.
pub fn chunk_id(document_id: &str, index: usize) -> String {
    format!("{document_id}:{index}")
}

impl SemanticIndex {
    pub fn new(embedder: OpenAiClient, store: QdrantStore) -> Self {
        Self { embedder, store }
    }

    /// Embeds the chunks (each prefixed with the document title and its
    /// heading, which often carry the words a question uses), upserts them
    /// with payload {document_id, chunk_id, title, heading, text, version},
    /// then deletes the document's points of any other version.
    ///
    /// Qdrant has no transaction over several operations, so between the
    /// upsert and the delete both versions are visible for a moment (and stay
    /// so if the delete fails, until the next call). Chunks with the same
    /// index share a point id and are overwritten in place; only the old
    /// version's extra chunks linger, and [`SemanticIndex::search`] drops
    /// them by keeping, per document, only the newest version among its hits.
    /// Returns the number of chunks indexed.
    pub async fn replace_document(
        &self,
        doc: &DocumentMeta,
        chunks: &[Chunk],
    ) -> Result<usize, ProviderError> {
        let version = next_version();
        if !chunks.is_empty() {
            let inputs: Vec<String> = chunks.iter().map(|c| embedding_text(doc, c)).collect();
            let vectors = self.embedder.embed(&inputs).await?;
            let dim = vectors.first().map_or(0, Vec::len);
            // Checked on every call, not once: it costs two small requests
            // next to the embeddings, and catches a collection that was
            // dropped or a model that was changed while the service ran.
            self.store.ensure_collection(dim).await?;
            let points = chunks
                .iter()
                .zip(vectors)
                .map(|(chunk, vector)| {
                    let id = chunk_id(&doc.document_id, chunk.index);
                    let payload = json!({
                        "document_id": doc.document_id,
                        "chunk_id": id,
                        "title": doc.title,
                        "heading": chunk.heading,
                        "text": chunk.text,
                        "version": version,
                    });
                    Point {
                        id: point_id(&id),
                        vector,
                        payload: into_map(payload),
                    }
                })
                .collect();
            self.store.upsert(points).await?;
        }
        let stale = self
            .store
            .delete_where(
                json!([document_condition(&doc.document_id)]),
                json!([{ "key": "version", "match": { "value": version } }]),
            )
            .await;
        allow_missing_collection(stale)?;
        tracing::debug!(document_id = %doc.document_id, chunks = chunks.len(), version, "indexed document");
        Ok(chunks.len())
    }

    pub async fn delete_document(&self, document_id: &str) -> Result<(), ProviderError> {
        let deleted = self
            .store
            .delete_where(json!([document_condition(document_id)]), json!([]))
            .await;
        allow_missing_collection(deleted)
    }

    /// The chunks nearest to the query, best first; `score` is the cosine
    /// similarity. Asks Qdrant for more than `limit` because hits of an old
    /// version that a concurrent [`SemanticIndex::replace_document`] has not
    /// deleted yet are dropped here.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, ProviderError> {
        if limit == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let vector = self
            .embedder
            .embed(&[query.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ProviderError::Protocol("openai embeddings reply: no vector for the query".into())
            })?;
        let points = match self.store.search(&vector, limit.saturating_mul(2)).await {
            Err(e) if is_missing_collection(&e) => return Ok(Vec::new()),
            other => other?,
        };
        let hits = points
            .into_iter()
            .map(to_hit)
            .collect::<Result<Vec<(Hit, u64)>, ProviderError>>()?;
        let mut newest: HashMap<String, u64> = HashMap::new();
        for (hit, version) in &hits {
            let entry = newest.entry(hit.document_id.clone()).or_insert(*version);
            *entry = (*entry).max(*version);
        }
        Ok(hits
            .into_iter()
            .filter(|(hit, version)| newest.get(&hit.document_id) == Some(version))
            .map(|(hit, _)| hit)
            .take(limit)
            .collect())
    }

    /// [`SemanticIndex::confidence_between`] with [`CONFIDENCE_LOW`] and
    /// [`CONFIDENCE_HIGH`].
    pub fn confidence(hits: &[Hit]) -> f64 {
        Self::confidence_between(hits, CONFIDENCE_LOW, CONFIDENCE_HIGH)
    }

    /// Confidence in [0, 1] from the best cosine among `hits`: 0 at or below
    /// `low`, 1 at or above `high`, linear between.
    pub fn confidence_between(hits: &[Hit], low: f64, high: f64) -> f64 {
        let top = hits
            .iter()
            .map(|h| h.score)
            .filter(|s| !s.is_nan())
            .fold(f64::NEG_INFINITY, f64::max);
        if top <= low {
            return 0.0;
        }
        if top >= high {
            return 1.0;
        }
        ((top - low) / (high - low)).clamp(0.0, 1.0)
    }

    /// An answer written by the chat model from the numbered passages only;
    /// `None` when no chat model is configured (the caller then answers
    /// extractively).
    pub async fn generate(
        &self,
        question: &str,
        hits: &[Hit],
    ) -> Option<Result<String, ProviderError>> {
        if !self.embedder.has_chat_model() {
            return None;
        }
        Some(
            self.embedder
                .complete(SYSTEM_PROMPT, &user_prompt(question, hits))
                .await,
        )
    }

    pub fn embeddings_model(&self) -> String {
        self.embedder.embeddings_model_name()
    }

    pub fn vector_store(&self) -> &'static str {
        "qdrant"
    }
}

fn embedding_text(doc: &DocumentMeta, chunk: &Chunk) -> String {
    match &chunk.heading {
        Some(heading) => format!("{}\n{}\n\n{}", doc.title, heading, chunk.text),
        None => format!("{}\n\n{}", doc.title, chunk.text),
    }
}

fn user_prompt(question: &str, hits: &[Hit]) -> String {
    let mut prompt = String::from("Passages:\n\n");
    for (n, hit) in hits.iter().enumerate() {
        let _ = write!(prompt, "[{}] {}", n + 1, hit.title);
        if let Some(heading) = &hit.heading {
            let _ = write!(prompt, " — {heading}");
        }
        let _ = write!(prompt, "\n{}\n\n", hit.text);
    }
    if hits.is_empty() {
        prompt.push_str("(none)\n\n");
    }
    let _ = write!(prompt, "Question: {question}");
    prompt
}

/// Qdrant answers 404 when the collection does not exist yet, i.e. before
/// the first document was indexed: there is then nothing to find or delete.
fn is_missing_collection(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Status {
            service: "qdrant",
            status: 404,
            ..
        }
    )
}

fn allow_missing_collection(result: Result<(), ProviderError>) -> Result<(), ProviderError> {
    match result {
        Err(e) if is_missing_collection(&e) => Ok(()),
        other => other,
    }
}

fn document_condition(document_id: &str) -> Value {
    json!({ "key": "document_id", "match": { "value": document_id } })
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A hit and the version of the document it was indexed with.
fn to_hit(point: ScoredPoint) -> Result<(Hit, u64), ProviderError> {
    let payload = &point.payload;
    let text_field = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ProviderError::Protocol(format!(
                    "qdrant point {}: payload field `{name}` is missing or not a string",
                    point.id
                ))
            })
    };
    let hit = Hit {
        document_id: text_field("document_id")?,
        chunk_id: text_field("chunk_id")?,
        title: text_field("title")?,
        heading: payload
            .get("heading")
            .and_then(Value::as_str)
            .map(str::to_owned),
        text: text_field("text")?,
        score: point.score,
    };
    // Points written without a version (none are, by this code) count as
    // oldest rather than failing the search.
    let version = payload.get("version").and_then(Value::as_u64).unwrap_or(0);
    Ok((hit, version))
}

/// A version newer than any this process handed out before: the wall clock
/// in nanoseconds, so versions also grow across restarts and processes, and
/// bumped when the clock has not moved or went backwards.
fn next_version() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
