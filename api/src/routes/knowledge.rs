//! Knowledge APIs: upload a document directly, list and inspect
//! documents, delete one (gone from retrieval at once), and see what
//! retrieval returns for a query.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use base64::Engine;
use serde::{Deserialize, Serialize};
use shared::ids::DocumentId;
use shared::incoming::{DocumentDraft, parse_format};
use shared::jobs::DocumentSource;
use shared::knowledge::documents::{DocumentRecord, ReingestError};
use utoipa::{IntoParams, ToSchema};

use crate::http::body::decode_json;
use crate::http::envelope::{Accepted, Data, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::trace::current_trace_id;
use crate::state::AppState;

/// Longest document name.
const MAX_NAME_CHARS: usize = 300;
/// Most results `GET /knowledge/search` returns.
const MAX_SEARCH_LIMIT: usize = 50;

/// JSON form of a direct upload: the text itself, or any file as base64.
#[derive(Deserialize, ToSchema)]
pub struct UploadRequest {
    pub name: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub content_base64: Option<String>,
    /// `pdf`, `html`, `markdown`/`md`, `text`/`txt`, `docx`; absent, it is
    /// detected (a `text` upload defaults to `text`).
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub external_document_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadReceipt {
    pub document_id: String,
    pub staging_id: String,
    pub status: &'static str,
    pub message: &'static str,
}

/// An upload after parsing either form.
struct Upload {
    draft: DocumentDraft,
    bytes: Vec<u8>,
}

fn optional_text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > 256 => Err(ApiError::validation(
            field,
            "must be at most 256 characters",
        )),
        other => Ok(other),
    }
}

fn document_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

fn from_json(req: UploadRequest) -> Result<Upload, ApiError> {
    let name = document_name(&req.name)?;
    let mut format = req
        .format
        .as_deref()
        .map(|f| parse_format("format", f))
        .transpose()?;
    let bytes = match (req.text, req.content_base64) {
        (Some(text), None) => {
            // Nothing to index: refused now rather than failed later.
            if text.trim().is_empty() {
                return Err(ApiError::validation("text", "must not be empty"));
            }
            format.get_or_insert(rag::types::Format::Text);
            text.into_bytes()
        }
        (None, Some(encoded)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| {
                    ApiError::validation("content_base64", format!("is not base64: {e}"))
                })?;
            if bytes.is_empty() {
                return Err(ApiError::validation("content_base64", "must not be empty"));
            }
            bytes
        }
        _ => {
            return Err(ApiError::validation(
                "text",
                "give exactly one of text or content_base64",
            ));
        }
    };
    Ok(Upload {
        draft: DocumentDraft {
            name,
            external_document_id: optional_text("external_document_id", req.external_document_id)?,
            source: DocumentSource::Upload { content_type: None },
            format,
            metadata: req.metadata.unwrap_or_default(),
            correlation_id: None,
        },
        bytes,
    })
}

async fn from_multipart(mut form: Multipart) -> Result<Upload, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(
            "MALFORMED_MULTIPART",
            format!("malformed multipart body: {e}"),
        )
    };
    let (mut file, mut name, mut format, mut external, mut metadata) =
        (None, None, None, None, None);
    while let Some(part) = form.next_field().await.map_err(bad)? {
        let field = part.name().unwrap_or_default().to_owned();
        match field.as_str() {
            "file" => {
                let file_name = part.file_name().map(str::to_owned);
                let content_type = part.content_type().map(str::to_owned);
                let bytes = part.bytes().await.map_err(bad)?;
                file = Some((bytes.to_vec(), file_name, content_type));
            }
            "name" => name = Some(part.text().await.map_err(bad)?),
            "format" => format = Some(part.text().await.map_err(bad)?),
            "external_document_id" => external = Some(part.text().await.map_err(bad)?),
            "metadata" => metadata = Some(part.text().await.map_err(bad)?),
            // Unknown parts are skipped, as browsers add their own.
            _ => {}
        }
    }
    let Some((bytes, file_name, content_type)) = file else {
        return Err(ApiError::validation("file", "is required"));
    };
    let name = match name.or(file_name) {
        Some(name) => document_name(&name)?,
        None => return Err(ApiError::validation("name", "is required")),
    };
    let metadata = match metadata {
        Some(text) => serde_json::from_str(&text)
            .map_err(|_| ApiError::validation("metadata", "must be a JSON object"))?,
        None => serde_json::Map::new(),
    };
    Ok(Upload {
        draft: DocumentDraft {
            name,
            external_document_id: optional_text("external_document_id", external)?,
            source: DocumentSource::Upload { content_type },
            format: format
                .as_deref()
                .map(|f| parse_format("format", f))
                .transpose()?,
            metadata,
            correlation_id: None,
        },
        bytes,
    })
}

/// Upload a document (multipart parts `file` (required), `name`,
/// `format`, `external_document_id`, `metadata` (a JSON object); or JSON
/// with `text` or `content_base64`); a worker indexes it.
#[utoipa::path(post, path = "/knowledge/documents", tag = "knowledge",
    request_body(content(
        (UploadRequest = "application/json"),
        (Object = "multipart/form-data"))),
    responses((status = 202, body = UploadReceipt), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope),
        (status = 415, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn upload(
    State(state): State<AppState>,
    request: Request,
) -> Result<Accepted<UploadReceipt>, ApiError> {
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let upload = if multipart {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("MALFORMED_MULTIPART", e.body_text()))?;
        from_multipart(form).await?
    } else {
        let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .map_err(|_| {
                ApiError::bad_request("BODY_READ_FAILED", "failed to read request body")
            })?;
        from_json(decode_json(&bytes)?)?
    };
    if upload.bytes.is_empty() {
        return Err(ApiError::validation("file", "is empty"));
    }
    let limit = state.services.settings.ingest.max_document_size.0;
    if upload.bytes.len() > limit {
        return Err(ApiError::payload_too_large(limit as u64));
    }
    let accepted = state
        .services
        .intake
        .upload(upload.draft, &upload.bytes, current_trace_id())
        .await?;
    Ok(Accepted(UploadReceipt {
        document_id: accepted.document_id.to_string(),
        staging_id: accepted.staging_id.to_string(),
        status: "staged",
        message: "Document accepted for ingestion",
    }))
}

/// Documents, newest first.
#[utoipa::path(get, path = "/knowledge/documents", tag = "knowledge",
    params(Pagination),
    responses((status = 200, body = [DocumentRecord]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    page: Pagination,
) -> Result<Paged<DocumentRecord>, ApiError> {
    let (items, total) = state
        .services
        .documents
        .list(
            usize::try_from(page.offset).unwrap_or(usize::MAX),
            page.limit as usize,
        )
        .await?;
    Ok(Paged::new(items, page, total))
}

async fn load(state: &AppState, id: &str) -> Result<DocumentRecord, ApiError> {
    let document_id = DocumentId::parse(id).map_err(|_| ApiError::not_found("document", id))?;
    state
        .services
        .documents
        .get(&document_id)
        .await?
        .ok_or_else(|| ApiError::not_found("document", id))
}

/// One document: status (staged, processing, indexed, failed), chunks,
/// classification, last error.
#[utoipa::path(get, path = "/knowledge/documents/{document_id}", tag = "knowledge",
    params(("document_id" = String, Path)),
    responses((status = 200, body = DocumentRecord), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<DocumentRecord>, ApiError> {
    Ok(Data(load(&state, &id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct DocumentDeleted {
    pub document_id: String,
    pub status: &'static str,
    /// This API's search already misses the document (it waits up to 2 s
    /// for that). Searches anywhere that start after this answer miss it
    /// too: each waits for its replica to catch up with the change feed.
    pub removed_from_search: bool,
}

/// Delete a document; it is out of retrieval when this answers (see
/// `removed_from_search`).
#[utoipa::path(delete, path = "/knowledge/documents/{document_id}", tag = "knowledge",
    params(("document_id" = String, Path)),
    responses((status = 200, body = DocumentDeleted), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<DocumentDeleted>, ApiError> {
    let record = load(&state, &id).await?;
    // Tombstone first, so a worker mid-ingestion neither saves the record
    // nor keeps chunks it indexes after the removal below.
    state
        .services
        .documents
        .mark_deleted(&record.document_id)
        .await?;
    let removed_from_search = state
        .services
        .knowledge
        .remove(record.document_id.as_str())
        .await?;
    state.services.documents.delete(&record).await?;
    tracing::info!(document_id = %record.document_id, removed_from_search, "document deleted");
    Ok(Data(DocumentDeleted {
        document_id: record.document_id.to_string(),
        status: "deleted",
        removed_from_search,
    }))
}

/// Ingest a document again (new chunks, new classification), as a new
/// version of the same document: fetched again from its URL, or, for a
/// direct upload, from its uploaded bytes while they are still kept
/// (until indexed, or 7 days). The current version stays searchable until
/// the new one is indexed. 409 `DOCUMENT_SOURCE_GONE` when neither source
/// is left (upload it again instead).
#[utoipa::path(post, path = "/knowledge/documents/{document_id}/reingest", tag = "knowledge",
    params(("document_id" = String, Path)),
    responses((status = 202, body = DocumentRecord), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn reingest(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Accepted<DocumentRecord>, ApiError> {
    let document_id = DocumentId::parse(&id).map_err(|_| ApiError::not_found("document", &id))?;
    let record = state
        .services
        .documents
        .reingest(&state.services.queue, &document_id, current_trace_id())
        .await
        .map_err(|e| reingest_error(e, &id))?;
    tracing::info!(document_id = %record.document_id, "document queued for re-ingestion");
    Ok(Accepted(record))
}

pub(crate) fn reingest_error(e: ReingestError, id: &str) -> ApiError {
    match e {
        ReingestError::Missing => ApiError::not_found("document", id),
        ReingestError::SourceGone => ApiError::conflict("DOCUMENT_SOURCE_GONE", e.to_string()),
        ReingestError::Store(e) => e.into(),
        ReingestError::Queue(e) => e.into(),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct SearchQuery {
    /// The query text.
    q: Option<String>,
    /// Results, 1-50 (default 5).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    pub document_id: String,
    pub chunk_id: String,
    pub title: String,
    pub heading: Option<String>,
    pub text: String,
    pub score: f64,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub query: String,
    /// What a chat answer built on these results would be scored.
    pub confidence: f64,
    pub results: Vec<SearchResult>,
}

/// What retrieval returns for a query, with scores.
#[utoipa::path(get, path = "/knowledge/search", tag = "knowledge",
    params(SearchQuery),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn search(
    State(state): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Data<SearchResults>, ApiError> {
    let q = query.q.unwrap_or_default().trim().to_owned();
    if q.is_empty() || q.chars().count() > 2000 {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "q: must be 1-2000 characters",
        ));
    }
    let limit = query.limit.unwrap_or(5);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit: must be between 1 and {MAX_SEARCH_LIMIT}"),
        ));
    }
    let found = state.services.knowledge.search(&q, limit).await?;
    Ok(Data(SearchResults {
        query: q,
        confidence: (found.confidence * 100.0).round() / 100.0,
        results: found
            .hits
            .into_iter()
            .map(|h| SearchResult {
                document_id: h.document_id,
                chunk_id: h.chunk_id,
                title: h.title,
                heading: h.heading,
                text: h.text,
                score: h.score,
            })
            .collect(),
    }))
}
