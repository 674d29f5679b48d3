//! A Qdrant client over its REST API (port 6333), limited to what the
//! semantic index needs: one collection of unnamed cosine vectors.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{ProviderError, base_with_slash, http_client, redacted, send, send_json};

const SERVICE: &str = "qdrant";

/// Points per upsert request: Qdrant's default request limit is 32 MiB, and
/// 256 points of 3072 floats with their text stay well under it.
const UPSERT_BATCH: usize = 256;

#[derive(Clone)]
pub struct QdrantSettings {
    pub url: url::Url,
    pub collection: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl fmt::Debug for QdrantSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantSettings")
            .field("url", &self.url.as_str())
            .field("collection", &self.collection)
            .field("api_key", &redacted(&self.api_key))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone)]
pub struct QdrantStore {
    http: reqwest::Client,
    base: url::Url,
    collection: String,
    api_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// UUID text, see [`point_id`].
    pub id: String,
    pub vector: Vec<f32>,
    pub payload: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    pub id: String,
    pub score: f64,
    pub payload: Map<String, Value>,
}

/// A stable point id for a key (a chunk id): Qdrant only takes unsigned
/// integers or UUIDs, and deriving it from the key makes re-upserting the same
/// chunk overwrite its point instead of adding one. The first 16 bytes of
/// SHA-256 with the RFC 9562 version 8 ("custom", the one for hashes other
/// than MD5/SHA-1) and variant bits.
pub fn point_id(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Deserialize)]
struct SearchReply {
    result: Vec<RawScoredPoint>,
}

#[derive(Deserialize)]
struct RawScoredPoint {
    id: RawPointId,
    score: f64,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPointId {
    Number(u64),
    Uuid(String),
}

impl QdrantStore {
    /// Fails (as [`ProviderError::Protocol`], since retrying cannot help)
    /// when the URL is not http(s) or the collection name is empty.
    pub fn new(settings: QdrantSettings) -> Result<Self, ProviderError> {
        if settings.collection.trim().is_empty() {
            return Err(ProviderError::Protocol(
                "qdrant: collection name is empty".into(),
            ));
        }
        Ok(Self {
            http: http_client(SERVICE, settings.timeout)?,
            base: base_with_slash(SERVICE, &settings.url)?,
            collection: settings.collection,
            api_key: settings.api_key.filter(|k| !k.is_empty()),
        })
    }

    /// Creates the collection (cosine vectors of `dim`) when it does not
    /// exist and the `document_id` keyword index that deletes filter on. An
    /// existing collection of another size is an error rather than being
    /// recreated: that would silently drop every indexed document.
    pub async fn ensure_collection(&self, dim: usize) -> Result<(), ProviderError> {
        match self.check_collection(dim).await {
            Ok(()) => {}
            Err(ProviderError::Status { status: 404, .. }) => {
                let create = json!({ "vectors": { "size": dim, "distance": "Cosine" } });
                let url = self.endpoint(&[], false);
                match send(
                    SERVICE,
                    self.request(reqwest::Method::PUT, url).json(&create),
                    self.key(),
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(collection = %self.collection, dim, "created qdrant collection")
                    }
                    // Another process created it between our GET and PUT: it
                    // must still have our size.
                    Err(ProviderError::Status { status: 409, .. }) => {
                        self.check_collection(dim).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        // Creating an index that exists is a no-op in Qdrant, so this is
        // done every time rather than only after creating the collection.
        let index = json!({ "field_name": "document_id", "field_schema": "keyword" });
        let url = self.endpoint(&["index"], true);
        send(
            SERVICE,
            self.request(reqwest::Method::PUT, url).json(&index),
            self.key(),
        )
        .await?;
        Ok(())
    }

    /// PUT /collections/{c}/points?wait=true in batches of 256; waits so
    /// that a search right after sees the points.
    pub async fn upsert(&self, points: Vec<Point>) -> Result<(), ProviderError> {
        for batch in points.chunks(UPSERT_BATCH) {
            let url = self.endpoint(&["points"], true);
            let body = json!({ "points": batch });
            send(
                SERVICE,
                self.request(reqwest::Method::PUT, url).json(&body),
                self.key(),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the points matching a filter made of Qdrant `must` and
    /// `must_not` condition arrays.
    pub async fn delete_where(&self, must: Value, must_not: Value) -> Result<(), ProviderError> {
        let url = self.endpoint(&["points", "delete"], true);
        let body = json!({ "filter": { "must": must, "must_not": must_not } });
        send(
            SERVICE,
            self.request(reqwest::Method::POST, url).json(&body),
            self.key(),
        )
        .await?;
        Ok(())
    }

    /// The `limit` points nearest to `vector`, best first, with payloads;
    /// with cosine distance the score is the cosine similarity.
    pub async fn search(
        &self,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<ScoredPoint>, ProviderError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let url = self.endpoint(&["points", "search"], false);
        let body = json!({ "vector": vector, "limit": limit, "with_payload": true });
        let reply: SearchReply = send_json(
            SERVICE,
            "search",
            self.request(reqwest::Method::POST, url).json(&body),
            self.key(),
        )
        .await?;
        Ok(reply
            .result
            .into_iter()
            .map(|p| ScoredPoint {
                id: match p.id {
                    RawPointId::Number(n) => n.to_string(),
                    RawPointId::Uuid(s) => s,
                },
                score: p.score,
                payload: p.payload.unwrap_or_default(),
            })
            .collect())
    }

    /// GET /collections/{c} and compares its vector parameters with ours.
    async fn check_collection(&self, dim: usize) -> Result<(), ProviderError> {
        let url = self.endpoint(&[], false);
        let info: Value = send_json(
            SERVICE,
            "collection info",
            self.request(reqwest::Method::GET, url),
            self.key(),
        )
        .await?;
        let vectors = info
            .pointer("/result/config/params/vectors")
            .ok_or_else(|| {
                ProviderError::Protocol(
                    "qdrant collection info reply: `result.config.params.vectors` is missing"
                        .into(),
                )
            })?;
        let Some(size) = vectors.get("size").and_then(Value::as_u64) else {
            return Err(ProviderError::Protocol(format!(
                "qdrant collection {:?} does not have a single unnamed vector (named vectors are not supported)",
                self.collection
            )));
        };
        if size != dim as u64 {
            return Err(ProviderError::Protocol(format!(
                "qdrant collection {:?} has vectors of size {size} but the embeddings model produces {dim}; \
                 use another collection or delete this one and reindex",
                self.collection
            )));
        }
        match vectors.get("distance").and_then(Value::as_str) {
            Some("Cosine") => Ok(()),
            other => Err(ProviderError::Protocol(format!(
                "qdrant collection {:?} uses distance {other:?}; scores are read as cosine similarity, so it must be \"Cosine\"",
                self.collection
            ))),
        }
    }

    /// `{base}/collections/{collection}/{segments…}`, with each segment
    /// percent-encoded so a collection name cannot change the path.
    fn endpoint(&self, segments: &[&str], wait: bool) -> url::Url {
        let mut url = self.base.clone();
        // `new` checked the base can be a base, so segments can always be pushed.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .push("collections")
                .push(&self.collection)
                .extend(segments);
        }
        if wait {
            url.set_query(Some("wait=true"));
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.header("api-key", key),
            None => request,
        }
    }

    fn key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }
}
