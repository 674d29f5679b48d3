//! Incoming webhooks and direct uploads: who sent it, what it
//! says, and putting it durably in the right queue exactly once.
//!
//! The HTTP layer checks size and media type, then calls
//! [`Intake::authenticate`] over the raw bytes, decodes the JSON, and hands
//! the typed payload to [`Intake::message`] or [`Intake::document`], which
//! answer only once the job is in Redis.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rag::types::Format;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chat::sessions::{SessionError, SessionStore, ThreadKey};
use crate::ids::{DocumentId, EventId, SessionId, StagingId, TraceId, WebhookId};
use crate::jobs::{DocumentSource, IngestDocument, ProcessMessage};
use crate::knowledge::documents::{DocumentRecord, DocumentStore};
use crate::net::ssrf::{NameResolver, SsrfPolicy};
use crate::store::StoreError;
use crate::webhooks::registry::{FieldError, Rules, Webhook, WebhookCache, WebhookStore};
use crate::webhooks::signature_profiles::{self, Presented, SignatureError, Window};
use queue::{Envelope, Job, PushOnce, QueueClient, QueueError};

/// Longest chat message accepted (characters).
const MAX_MESSAGE_CHARS: usize = 16_000;
/// Longest id-like field (user, thread, channel, external ids).
const MAX_ID_CHARS: usize = 256;
/// Longest document name.
const MAX_NAME_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{0}")]
    UnknownWebhook(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{}: {}", .0.field, .0.message)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// An incoming request as received: the sending webhook's id, every header
/// (which ones carry the signature depends on the webhook's
/// `signature_profile`) and the raw body.
pub struct SignedRequest<'a> {
    /// `X-Webhook-ID`, or the `webhook_id` query parameter for senders that
    /// cannot add headers of their own.
    pub webhook_id: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// `POST /webhooks/incoming/message`, as the seed shows it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IncomingMessage {
    /// Must be `message.received`.
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub data: MessageData,
    #[serde(default)]
    pub metadata: Option<IncomingMetadata>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageData {
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    pub message: String,
    /// Messages of one thread share a session; without it, a user's
    /// messages from this integration do.
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    /// The sender's id for the message: a repeat within the idempotency
    /// window is answered `duplicate` and not processed again.
    #[serde(default)]
    pub external_message_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct IncomingMetadata {
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// `POST /webhooks/incoming/document`, as the seed shows it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IncomingDocument {
    /// Must be `document.upload`.
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub data: DocumentData,
    #[serde(default)]
    pub metadata: Option<IncomingMetadata>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DocumentData {
    pub document_url: String,
    #[serde(default)]
    pub document_name: Option<String>,
    /// `pdf`, `html`, `markdown`/`md`, `text`/`txt`, `docx`; absent, it is
    /// detected from the response.
    #[serde(default)]
    pub document_format: Option<String>,
    #[serde(default)]
    pub external_document_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The fields of an incoming message once every field rule has passed:
/// trimmed, bounded, free of NUL. Pure (no I/O), so the rules can be fuzzed
/// on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFields {
    pub user_id: String,
    pub message: String,
    pub thread_id: Option<String>,
    pub external_message_id: Option<String>,
    pub channel: Option<String>,
    pub user_name: Option<String>,
    pub correlation_id: Option<String>,
}

impl MessageFields {
    /// The field rules of `POST /webhooks/incoming/message`, in the order
    /// their errors are reported.
    pub fn check(msg: IncomingMessage) -> Result<Self, FieldError> {
        expect_event_type(&msg.event_type, "message.received")?;
        check_timestamp(msg.timestamp.as_deref())?;
        let data = msg.data;
        let user_id = id_field("data.user_id", &data.user_id)?;
        let message = text_field("data.message", &data.message, MAX_MESSAGE_CHARS)?;
        let thread_id = optional_id("data.thread_id", data.thread_id)?;
        let external_message_id =
            optional_id("data.external_message_id", data.external_message_id)?;
        let channel = optional_id("data.channel", data.channel)?;
        let user_name = optional_text("data.user_name", data.user_name, MAX_NAME_CHARS)?;
        let correlation_id = optional_id(
            "metadata.correlation_id",
            msg.metadata.and_then(|m| m.correlation_id),
        )?;
        Ok(Self {
            user_id,
            message,
            thread_id,
            external_message_id,
            channel,
            user_name,
            correlation_id,
        })
    }
}

/// What the API answers for an accepted (or repeated) message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageAccepted {
    pub webhook_event_id: EventId,
    pub session_id: SessionId,
    #[serde(skip)]
    pub duplicate: bool,
}

/// What the API answers for an accepted (or repeated) document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentAccepted {
    pub webhook_event_id: EventId,
    pub staging_id: StagingId,
    pub document_id: DocumentId,
    #[serde(skip)]
    pub duplicate: bool,
}

/// A document to ingest, from either door (incoming webhook or upload).
pub struct DocumentDraft {
    pub name: String,
    pub external_document_id: Option<String>,
    pub source: DocumentSource,
    pub format: Option<Format>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub correlation_id: Option<String>,
}

#[derive(Clone)]
pub struct Intake {
    pub webhooks: WebhookStore,
    pub sessions: SessionStore,
    pub documents: DocumentStore,
    pub queue: QueueClient,
    pub policy: SsrfPolicy,
    pub resolver: std::sync::Arc<dyn NameResolver>,
    pub timestamp_tolerance: Duration,
    pub idempotency_ttl: Duration,
    /// Webhooks looked up recently (`incoming.webhook_cache_ttl`): a burst
    /// from one integration does not read the registry per request.
    pub webhook_cache: std::sync::Arc<WebhookCache>,
}

impl Intake {
    /// The sending integration, if the request is signed by it: an active
    /// webhook named by `X-Webhook-ID` (or `?webhook_id=`), and a valid
    /// signature over the raw body under the webhook's signature profile,
    /// with a timestamp within the window where the profile has one.
    pub async fn authenticate(&self, req: &SignedRequest<'_>) -> Result<Webhook, IntakeError> {
        let raw_id = req
            .webhook_id
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| IntakeError::UnknownWebhook("X-Webhook-ID header is missing".into()))?;
        let unknown = || IntakeError::UnknownWebhook(format!("no active webhook '{raw_id}'"));
        let id = WebhookId::parse(raw_id).map_err(|_| unknown())?;
        let webhook = match self.webhook_cache.get(&id) {
            Some(webhook) => Some(webhook),
            None => {
                let found = self.webhooks.get(&id).await?;
                if let Some(webhook) = &found {
                    self.webhook_cache.put(webhook);
                }
                found
            }
        };
        let webhook = webhook.filter(|w| w.active).ok_or_else(unknown)?;
        let now = Utc::now();
        let window = Window {
            now_unix: now.timestamp(),
            tolerance_secs: i64::try_from(self.timestamp_tolerance.as_secs()).unwrap_or(i64::MAX),
        };
        let presented = Presented {
            headers: req.headers,
            body: req.body,
        };
        signature_profiles::verify(
            webhook.signature_profile,
            // During a rotation's overlap the sender may still sign with
            // the previous secret.
            &webhook.valid_secrets(now),
            &presented,
            window,
            webhook.strict_signatures,
        )?;
        Ok(webhook)
    }

    /// Queues a chat message of `webhook` (once per external message id).
    pub async fn message(
        &self,
        webhook: &Webhook,
        msg: IncomingMessage,
        trace_id: TraceId,
    ) -> Result<MessageAccepted, IntakeError> {
        let MessageFields {
            user_id,
            message,
            thread_id,
            external_message_id,
            channel,
            user_name,
            correlation_id,
        } = MessageFields::check(msg)?;

        let once = external_message_id
            .as_deref()
            .map(|external| once_key(&webhook.webhook_id, "msg", external.as_bytes()));
        // A repeat is answered before the thread is looked at: opening it
        // would start a new, empty session if the first one has ended.
        // (`push_once` below still decides races between two copies.)
        if let Some(key) = &once
            && let Some(first) = self
                .first_acceptance::<ProcessMessage, MessageAccepted>(key)
                .await?
        {
            return Ok(first);
        }
        let thread = ThreadKey::new(&webhook.webhook_id, thread_id.as_deref(), &user_id);
        let session_id = self
            .sessions
            .open_thread(&thread, &webhook.webhook_id, &user_id)
            .await?;
        let accepted = MessageAccepted {
            webhook_event_id: EventId::generate(),
            session_id: session_id.clone(),
            duplicate: false,
        };
        let job = Envelope::new(
            ProcessMessage::QUEUE,
            ProcessMessage {
                session_id,
                user_id,
                user_name,
                message,
                webhook_id: Some(webhook.webhook_id.clone()),
                webhook_event_id: Some(accepted.webhook_event_id.clone()),
                correlation_id,
                channel,
                external_message_id,
                received_at: Utc::now(),
                reply_expected: false,
            },
            trace_id,
        );
        let Some(key) = once else {
            self.queue.push(&[job]).await?;
            return Ok(accepted);
        };
        self.push_once(&job, &key, accepted).await
    }

    /// Queues a document of `webhook` (once per external id and body).
    pub async fn document(
        &self,
        webhook: &Webhook,
        doc: IncomingDocument,
        body: &[u8],
        trace_id: TraceId,
    ) -> Result<DocumentAccepted, IntakeError> {
        expect_event_type(&doc.event_type, "document.upload")?;
        check_timestamp(doc.timestamp.as_deref())?;
        let data = doc.data;
        let rules = Rules {
            policy: &self.policy,
            resolver: self.resolver.as_ref(),
        };
        let url = rules
            .destination("data.document_url", data.document_url.trim())
            .await?;
        let format = data
            .document_format
            .as_deref()
            .map(|f| parse_format("data.document_format", f))
            .transpose()?;
        let external_document_id =
            optional_id("data.external_document_id", data.external_document_id)?;
        let name = match optional_text("data.document_name", data.document_name, MAX_NAME_CHARS)? {
            Some(name) => name,
            None => name_from_url(&url),
        };
        let correlation_id = optional_id(
            "metadata.correlation_id",
            doc.metadata.and_then(|m| m.correlation_id),
        )?;
        let draft = DocumentDraft {
            name,
            external_document_id,
            source: DocumentSource::Url { url },
            format,
            metadata: data.metadata,
            correlation_id,
        };
        let fingerprint = DocumentStore::upload_fingerprint(
            draft.external_document_id.as_deref().unwrap_or_default(),
            body,
        );
        let key = once_key(&webhook.webhook_id, "doc", fingerprint.as_bytes());
        self.stage(Some(&webhook.webhook_id), draft, Some(&key), None, trace_id)
            .await
    }

    /// Queues a direct upload whose bytes are given.
    pub async fn upload(
        &self,
        draft: DocumentDraft,
        bytes: &[u8],
        trace_id: TraceId,
    ) -> Result<DocumentAccepted, IntakeError> {
        self.stage(None, draft, None, Some(bytes), trace_id).await
    }

    async fn stage(
        &self,
        webhook: Option<&WebhookId>,
        draft: DocumentDraft,
        once: Option<&str>,
        bytes: Option<&[u8]>,
        trace_id: TraceId,
    ) -> Result<DocumentAccepted, IntakeError> {
        let document_id = self
            .documents
            .resolve(webhook, draft.external_document_id.as_deref())
            .await?;
        let staging_id = StagingId::generate();
        let accepted = DocumentAccepted {
            webhook_event_id: EventId::generate(),
            staging_id: staging_id.clone(),
            document_id: document_id.clone(),
            duplicate: false,
        };
        if let Some(bytes) = bytes {
            self.documents.put_staged_bytes(&staging_id, bytes).await?;
        }
        let mut record = DocumentRecord::staged(
            document_id.clone(),
            staging_id.clone(),
            draft.name.clone(),
            draft.external_document_id.clone(),
            webhook.cloned(),
            draft.metadata.clone(),
        );
        record.source_url = draft.source.url().map(str::to_owned);
        let job = Envelope::new(
            IngestDocument::QUEUE,
            IngestDocument {
                document_id,
                staging_id,
                name: draft.name,
                external_document_id: draft.external_document_id,
                source: draft.source,
                format: draft.format,
                metadata: draft.metadata,
                webhook_id: webhook.cloned(),
                correlation_id: draft.correlation_id,
            },
            trace_id,
        );
        let accepted = match once {
            Some(key) => self.push_once(&job, key, accepted).await?,
            None => {
                self.queue.push(&[job]).await?;
                accepted
            }
        };
        if !accepted.duplicate {
            // After the push: a record must never claim a version that is
            // not queued. The worker writes the record itself if this
            // write is lost.
            self.documents.stage(&record).await?;
        }
        Ok(accepted)
    }

    async fn push_once<J: Job, A>(
        &self,
        job: &Envelope<J>,
        key: &str,
        accepted: A,
    ) -> Result<A, IntakeError>
    where
        A: Serialize + for<'de> Deserialize<'de> + Duplicate,
    {
        let value = serde_json::to_string(&accepted).map_err(QueueError::Encode)?;
        match self
            .queue
            .push_once(job, key, self.idempotency_ttl, &value)
            .await?
        {
            PushOnce::Pushed => Ok(accepted),
            PushOnce::Duplicate(first) => serde_json::from_str::<A>(&first)
                .map(Duplicate::duplicate)
                .map_err(|e| IntakeError::Queue(QueueError::Reply(e.to_string()))),
        }
    }
}

impl Intake {
    /// The first acceptance of a request already queued once under `key`.
    async fn first_acceptance<J: Job, A>(&self, key: &str) -> Result<Option<A>, IntakeError>
    where
        A: for<'de> Deserialize<'de> + Duplicate,
    {
        self.queue
            .remembered(J::QUEUE, key)
            .await?
            .map(|f| serde_json::from_str::<A>(&f).map(Duplicate::duplicate))
            .transpose()
            .map_err(|e| IntakeError::Queue(QueueError::Reply(e.to_string())))
    }
}

/// An acceptance recalled for a repeated request.
trait Duplicate {
    fn duplicate(self) -> Self;
}

impl Duplicate for MessageAccepted {
    fn duplicate(mut self) -> Self {
        self.duplicate = true;
        self
    }
}

impl Duplicate for DocumentAccepted {
    fn duplicate(mut self) -> Self {
        self.duplicate = true;
        self
    }
}

/// Scoped to the webhook; hashed so any external id fits a key.
fn once_key(webhook: &WebhookId, kind: &str, id: &[u8]) -> String {
    let digest = Sha256::digest(id);
    format!("{webhook}:{kind}:{}", hex::encode(&digest[..16]))
}

fn expect_event_type(got: &str, want: &str) -> Result<(), FieldError> {
    if got == want {
        Ok(())
    } else {
        Err(FieldError::new(
            "event_type",
            format!(
                "unknown event type {:?} for this endpoint (expected {want:?})",
                got.chars().take(100).collect::<String>()
            ),
        ))
    }
}

fn check_timestamp(timestamp: Option<&str>) -> Result<(), FieldError> {
    match timestamp {
        Some(t) if DateTime::parse_from_rfc3339(t).is_err() => Err(FieldError::new(
            "timestamp",
            "must be an RFC 3339 date-time such as 2025-01-09T12:00:00Z",
        )),
        _ => Ok(()),
    }
}

pub fn parse_format(field: &str, text: &str) -> Result<Format, FieldError> {
    text.parse::<Format>().map_err(|_| {
        FieldError::new(
            field,
            "must be one of pdf, html, markdown (md), text (txt), docx",
        )
    })
}

pub(crate) fn text_field(field: &str, value: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if trimmed.chars().any(|c| c == '\0') {
        return Err(FieldError::new(field, "must not contain NUL characters"));
    }
    Ok(trimmed.to_owned())
}

fn id_field(field: &str, value: &str) -> Result<String, FieldError> {
    text_field(field, value, MAX_ID_CHARS)
}

fn optional_id(field: &str, value: Option<String>) -> Result<Option<String>, FieldError> {
    optional_text(field, value, MAX_ID_CHARS)
}

/// Absent and empty are the same: no value.
pub(crate) fn optional_text(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) if !v.trim().is_empty() => text_field(field, &v, max_chars).map(Some),
        _ => Ok(None),
    }
}

/// A name for a document sent without one: the last path segment.
fn name_from_url(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "document".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_must_match_the_endpoint() {
        assert!(expect_event_type("message.received", "message.received").is_ok());
        let err = expect_event_type("document.upload", "message.received").unwrap_err();
        assert_eq!(err.field, "event_type");
    }

    #[test]
    fn fields_are_trimmed_and_bounded() {
        assert_eq!(id_field("f", "  u1 ").unwrap(), "u1");
        assert!(id_field("f", "   ").is_err());
        assert!(id_field("f", &"x".repeat(MAX_ID_CHARS + 1)).is_err());
        assert!(text_field("f", "a\0b", 10).is_err());
        assert_eq!(optional_id("f", Some(" ".into())).unwrap(), None);
    }

    #[test]
    fn timestamps_and_formats() {
        assert!(check_timestamp(Some("2025-01-09T12:00:00Z")).is_ok());
        assert!(check_timestamp(None).is_ok());
        assert_eq!(
            check_timestamp(Some("yesterday")).unwrap_err().field,
            "timestamp"
        );
        assert_eq!(parse_format("f", "MD").unwrap(), Format::Markdown);
        assert!(parse_format("f", "exe").is_err());
    }

    #[test]
    fn names_from_urls() {
        assert_eq!(
            name_from_url("https://x.example/docs/policy-2025.pdf"),
            "policy-2025.pdf"
        );
        assert_eq!(name_from_url("https://x.example/"), "document");
    }

    #[test]
    fn once_keys_are_scoped_by_webhook() {
        let a = WebhookId::parse("webhook_a").unwrap();
        let b = WebhookId::parse("webhook_b").unwrap();
        assert_ne!(once_key(&a, "msg", b"1"), once_key(&b, "msg", b"1"));
        assert_ne!(once_key(&a, "msg", b"1"), once_key(&a, "doc", b"1"));
    }
}
