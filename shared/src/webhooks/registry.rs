//! The webhook registry: what a registered integration is, how a
//! registration or a change is checked, and where it is kept.
//!
//! Input is parsed into [`WebhookDraft`]/[`WebhookChanges`] field by field,
//! each rule in one place and each failure naming its field, so a stored
//! [`Webhook`] is always valid (URL allowed by the SSRF policy, known events,
//! a long enough secret).

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::config::{AppEnvironment, KeyPrefix};
use crate::delivery::ordering::DeliveryOrdering;
use crate::events::catalog::EventFilter;
use crate::ids::WebhookId;
use crate::keys;
use crate::net::ssrf::{NameResolver, SsrfPolicy, UrlRejected};
use crate::store::StoreError;
use crate::time::serde_rfc3339;
use crate::webhooks::filters::Filters;
use crate::webhooks::secret_box::{Sealed, SecretBox};
use crate::webhooks::signature_profiles::SignatureProfile;
use crate::webhooks::signing::Secret;

pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A registered webhook. `secret` never leaves the process except in the
/// response to the registration (or rotation) that generated it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: WebhookId,
    pub name: String,
    pub url: String,
    pub events: Vec<EventFilter>,
    /// Conditions on the payload, on top of `events` (see `filters.rs`).
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    pub secret: Secret,
    /// Secrets replaced by a rotation that stay valid until their
    /// `expires_at` (the overlap), newest first; see [`Webhook::rotate_secret`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<PreviousSecret>,
    pub active: bool,
    /// Why the system (not an administrator) turned `active` off, e.g. a
    /// receiver answering `410 Gone`; cleared by any change of `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    /// Incoming requests must sign "<timestamp>.<body>"; the body-only form
    /// of the seed's Python sender is refused.
    #[serde(default)]
    pub strict_signatures: bool,
    /// How incoming requests are signed (records from before profiles
    /// existed read as `seed`).
    #[serde(default)]
    pub signature_profile: SignatureProfile,
    /// Deliveries per second at most, across every worker (`None`: no
    /// limit); see `rate_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<f64>,
    /// Headers added to every delivery (lowercase name → value); never one
    /// of [`SYSTEM_HEADERS`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Whether a chat session's events arrive in order (see `ordering`).
    #[serde(default, skip_serializing_if = "DeliveryOrdering::is_none")]
    pub ordering: DeliveryOrdering,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// A secret replaced by a rotation, still valid before `expires_at`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: Secret,
    #[serde(with = "serde_rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Most secrets valid at once (the current one and the previous ones in
/// their overlap): each one costs an HMAC per delivery and per incoming
/// request, and a receiver never needs more than the last two or three.
pub const MAX_VALID_SECRETS: usize = 3;
/// Longest overlap a rotation may ask for.
pub const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);
/// Overlap of a rotation that names none: a day for integrators to switch.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

impl Webhook {
    pub fn subscribes_to(&self, event: crate::events::catalog::EventType) -> bool {
        self.events.iter().any(|f| f.matches(event))
    }

    /// Whether a published event is for this webhook: its type subscribed
    /// and its payload passing every filter.
    pub fn wants(&self, event: &crate::events::catalog::Event) -> bool {
        self.subscribes_to(event.event_type) && self.filters.matches(event)
    }

    /// The secrets that sign and verify at `now`: the current one first,
    /// then the previous ones whose overlap has not ended, newest first.
    /// Expiry is judged here, by time, so no job has to remove them.
    pub fn valid_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        std::iter::once(&self.secret)
            .chain(
                self.previous_secrets
                    .iter()
                    .filter(|p| p.expires_at > now)
                    .map(|p| &p.secret),
            )
            .collect()
    }

    /// Makes `new` the current secret. The secret it replaces, and any
    /// previous one still valid, stay valid until `now + overlap` at the
    /// latest (never longer than they already had), so once the overlap
    /// ends only `new` is valid whatever rotations came before. An overlap
    /// of zero invalidates every older secret at once (a leaked secret).
    /// At most [`MAX_VALID_SECRETS`] stay valid; the oldest go first.
    pub fn rotate_secret(&mut self, new: Secret, overlap: Duration, now: DateTime<Utc>) {
        let until = chrono::Duration::from_std(overlap)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        let replaced = std::mem::replace(&mut self.secret, new);
        let mut previous = Vec::with_capacity(MAX_VALID_SECRETS);
        if until > now {
            previous.push(PreviousSecret {
                secret: replaced,
                expires_at: until,
            });
            previous.extend(
                self.previous_secrets
                    .drain(..)
                    .filter(|p| p.expires_at > now)
                    .map(|p| PreviousSecret {
                        expires_at: p.expires_at.min(until),
                        secret: p.secret,
                    }),
            );
        }
        previous.truncate(MAX_VALID_SECRETS - 1);
        self.previous_secrets = previous;
        self.updated_at = now;
    }

    /// Forgets previous secrets whose overlap has ended.
    fn drop_expired_secrets(&mut self, now: DateTime<Utc>) {
        self.previous_secrets.retain(|p| p.expires_at > now);
    }
}

/// `POST /webhooks/{id}/rotate-secret` as sent.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RotateSecretRequest {
    /// The new secret (at least 16 characters); generated (`whsec_…`) when
    /// absent.
    pub secret: Option<String>,
    /// How long the replaced secret stays valid, e.g. `"24h"`, `"30m"`,
    /// `"0s"` (at once); at most 30 days. Default `"24h"`.
    pub overlap: Option<String>,
}

/// A checked rotation.
#[derive(Debug)]
pub struct Rotation {
    pub secret: Secret,
    /// Whether the secret was generated here (it is returned either way).
    pub secret_generated: bool,
    pub overlap: Duration,
}

impl RotateSecretRequest {
    pub fn check(self) -> Result<Rotation, FieldError> {
        let (secret, secret_generated) = match self.secret.as_deref() {
            Some(text) => (parse_secret(text)?, false),
            None => (Secret::generate(), true),
        };
        let overlap = match self.overlap.as_deref().map(str::trim) {
            None => DEFAULT_OVERLAP,
            // humantime wants a unit; a bare 0 is unambiguous.
            Some("0") => Duration::ZERO,
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                FieldError::new(
                    "overlap",
                    format!("{text:?} is not a duration such as \"24h\": {e}"),
                )
            })?,
        };
        if overlap > MAX_OVERLAP {
            return Err(FieldError::new("overlap", "must be at most 30 days"));
        }
        Ok(Rotation {
            secret,
            secret_generated,
            overlap,
        })
    }
}

/// A rule broken by a registration or change; `field` is the JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A registration or change as sent. Every field is optional here: a
/// registration's missing `name`, `url` or `events` is reported by name
/// like any other rule, and a `PATCH` changes only the fields present.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct WebhookRequest {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Event types, or `"*"` for all.
    pub events: Option<Vec<String>>,
    /// Conditions on the event's payload, all of which must hold:
    /// `{"data.<field>": value}` (equality) or `{"data.<field>": {"in":
    /// [values]}}`; each path must be a field of a subscribed type's `data`
    /// (`GET /event-types`). At most 10; `{}` removes them.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<serde_json::Map<String, serde_json::Value>>,
    /// At least 16 characters; generated (`whsec_…`) when absent at
    /// registration.
    pub secret: Option<String>,
    pub active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Refuse incoming requests signed over the body alone.
    pub strict_signatures: Option<bool>,
    /// How incoming requests are signed: `seed` (default),
    /// `standard_webhooks`, `slack`, `stripe` or `github`.
    #[schema(value_type = Option<SignatureProfile>)]
    pub signature_profile: Option<String>,
    /// Deliveries per second at most (a positive number, up to 1000), shared
    /// by every worker; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    pub rate_limit_per_second: Option<Option<f64>>,
    /// Headers sent with every delivery (name → value), at most 20. The
    /// headers the system sets (signatures, ids, timestamp, attempt,
    /// content type) cannot be given. A `PATCH` replaces the whole map.
    pub headers: Option<BTreeMap<String, String>>,
    /// `none` (default) or `session`: each chat session's events arrive in
    /// the order they were produced, a failing one holding back the later
    /// events of its session only (a dead-lettered one is skipped).
    #[schema(value_type = Option<DeliveryOrdering>)]
    pub ordering: Option<String>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A checked registration; holding one means every rule passed.
#[derive(Debug)]
pub struct WebhookDraft {
    pub name: String,
    pub url: String,
    pub events: Vec<EventFilter>,
    pub filters: Filters,
    pub secret: Secret,
    /// Whether the secret was generated here and must be shown once.
    pub secret_generated: bool,
    pub active: bool,
    pub metadata: Metadata,
    pub strict_signatures: bool,
    pub signature_profile: SignatureProfile,
    pub rate_limit_per_second: Option<f64>,
    pub headers: BTreeMap<String, String>,
    pub ordering: DeliveryOrdering,
}

impl WebhookDraft {
    /// A draft with every optional part at its default (active, no
    /// filters, no limit, no headers, the seed signature profile), for
    /// callers inside the process that choose the URL themselves (the test
    /// kit, benchmarks); requests from outside go through [`Rules`].
    pub fn new(name: &str, url: &str, events: Vec<EventFilter>, secret: Secret) -> Self {
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            events,
            filters: Filters::default(),
            secret,
            secret_generated: false,
            active: true,
            metadata: Metadata::new(),
            strict_signatures: false,
            signature_profile: SignatureProfile::default(),
            rate_limit_per_second: None,
            headers: BTreeMap::new(),
            ordering: DeliveryOrdering::None,
        }
    }
}

/// What the URL and secret rules need from the outside world.
pub struct Rules<'a> {
    pub policy: &'a SsrfPolicy,
    pub resolver: &'a dyn NameResolver,
}

impl Rules<'_> {
    pub async fn register(&self, req: WebhookRequest) -> Result<WebhookDraft, FieldError> {
        let name = parse_name(req.name.as_deref().ok_or_else(|| missing("name"))?)?;
        let url = self
            .destination("url", req.url.as_deref().ok_or_else(|| missing("url"))?)
            .await?;
        let events = parse_events(req.events.as_deref().ok_or_else(|| missing("events"))?)?;
        let filters = parse_filters(req.filters.as_ref(), &events)?;
        let (secret, secret_generated) = match req.secret.as_deref() {
            Some(text) => (parse_secret(text)?, false),
            None => (Secret::generate(), true),
        };
        Ok(WebhookDraft {
            name,
            url,
            events,
            filters,
            secret,
            secret_generated,
            active: req.active.unwrap_or(true),
            metadata: req.metadata.unwrap_or_default(),
            strict_signatures: req.strict_signatures.unwrap_or(false),
            signature_profile: parse_profile(req.signature_profile.as_deref())?.unwrap_or_default(),
            rate_limit_per_second: req
                .rate_limit_per_second
                .flatten()
                .map(parse_rate)
                .transpose()?,
            headers: req
                .headers
                .as_ref()
                .map(parse_headers)
                .transpose()?
                .unwrap_or_default(),
            ordering: parse_ordering(req.ordering.as_deref())?.unwrap_or_default(),
        })
    }

    /// Applies a change to a copy of `webhook`, checking each given field.
    pub async fn update(
        &self,
        mut webhook: Webhook,
        req: WebhookRequest,
    ) -> Result<Webhook, FieldError> {
        if let Some(name) = req.name.as_deref() {
            webhook.name = parse_name(name)?;
        }
        if let Some(url) = req.url.as_deref() {
            webhook.url = self.destination("url", url).await?;
        }
        if let Some(events) = req.events.as_deref() {
            webhook.events = parse_events(events)?;
        }
        // Checked against the events as changed, whether or not the
        // filters are: new events can leave a kept path without a field.
        if let Some(filters) = req.filters.as_ref() {
            webhook.filters = Filters::parse(filters)?;
        }
        if req.filters.is_some() || req.events.is_some() {
            webhook.filters.check_paths(&webhook.events)?;
        }
        if let Some(secret) = req.secret.as_deref() {
            // A PATCH swaps at once, as it always did; an overlap is what
            // rotate-secret is for.
            webhook.rotate_secret(parse_secret(secret)?, Duration::ZERO, Utc::now());
        }
        if let Some(active) = req.active {
            webhook.active = active;
            webhook.disabled_reason = None;
        }
        if let Some(metadata) = req.metadata {
            webhook.metadata = metadata;
        }
        if let Some(strict) = req.strict_signatures {
            webhook.strict_signatures = strict;
        }
        if let Some(profile) = parse_profile(req.signature_profile.as_deref())? {
            webhook.signature_profile = profile;
        }
        if let Some(rate) = req.rate_limit_per_second {
            webhook.rate_limit_per_second = rate.map(parse_rate).transpose()?;
        }
        if let Some(headers) = &req.headers {
            webhook.headers = parse_headers(headers)?;
        }
        if let Some(ordering) = parse_ordering(req.ordering.as_deref())? {
            webhook.ordering = ordering;
        }
        webhook.updated_at = Utc::now();
        Ok(webhook)
    }

    /// A name that does not resolve right now (DNS trouble, a record not yet
    /// published) is accepted on its form alone: the egress client judges
    /// its addresses at every connection anyway, which is the check that
    /// counts. A name that resolves to a refused address is refused here.
    /// The one check for every URL we will connect to (webhook URLs and
    /// document URLs); `field` names it in the error.
    pub async fn destination(&self, field: &str, url: &str) -> Result<String, FieldError> {
        let checked = match self.policy.check_url_resolving(url, self.resolver).await {
            Err(UrlRejected::Resolve(_) | UrlRejected::NoAllowedAddress { .. }) => {
                self.policy.check_url(url)
            }
            other => other,
        };
        checked
            .map(|checked| checked.as_str().to_owned())
            .map_err(|e| FieldError::new(field, e.to_string()))
    }
}

fn missing(field: &str) -> FieldError {
    FieldError::new(field, "is required")
}

fn parse_name(name: &str) -> Result<String, FieldError> {
    let trimmed = name.trim();
    let length = trimmed.chars().count();
    if (1..=200).contains(&length) {
        Ok(trimmed.to_owned())
    } else {
        Err(FieldError::new("name", "must be 1-200 characters"))
    }
}

fn parse_events(events: &[String]) -> Result<Vec<EventFilter>, FieldError> {
    if events.is_empty() {
        return Err(FieldError::new(
            "events",
            "must name at least one event type, or \"*\"",
        ));
    }
    let mut parsed: Vec<EventFilter> = Vec::with_capacity(events.len());
    for (i, text) in events.iter().enumerate() {
        let filter = EventFilter::parse(text)
            .map_err(|e| FieldError::new(format!("events[{i}]"), e.to_string()))?;
        if !parsed.contains(&filter) {
            parsed.push(filter);
        }
    }
    Ok(parsed)
}

/// Absent filters are none.
fn parse_filters(
    raw: Option<&serde_json::Map<String, serde_json::Value>>,
    events: &[EventFilter],
) -> Result<Filters, FieldError> {
    let filters = raw.map(Filters::parse).transpose()?.unwrap_or_default();
    filters.check_paths(events)?;
    Ok(filters)
}

fn parse_profile(text: Option<&str>) -> Result<Option<SignatureProfile>, FieldError> {
    text.map(|t| {
        SignatureProfile::parse(t).map_err(|e| FieldError::new("signature_profile", e.to_string()))
    })
    .transpose()
}

fn parse_ordering(text: Option<&str>) -> Result<Option<DeliveryOrdering>, FieldError> {
    text.map(|t| DeliveryOrdering::parse(t).map_err(|e| FieldError::new("ordering", e.to_string())))
        .transpose()
}

/// The highest `rate_limit_per_second`: above it the limiter's bookkeeping
/// (a Redis call per delivery) would cost more than the limit saves.
pub const MAX_RATE_PER_SECOND: f64 = 1000.0;

fn parse_rate(rate: f64) -> Result<f64, FieldError> {
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_SECOND {
        Ok(rate)
    } else {
        Err(FieldError::new(
            "rate_limit_per_second",
            format!("must be a number above 0 and at most {MAX_RATE_PER_SECOND}, or null"),
        ))
    }
}

/// The headers every delivery carries, set by the worker, and
/// the ones HTTP framing owns: a webhook's own headers may name none of
/// them, so a receiver can trust that these came from us and a request
/// cannot be malformed by configuration. Lowercase.
pub const SYSTEM_HEADERS: &[&str] = &[
    "x-webhook-signature",
    "x-webhook-signature-next",
    "traceparent",
    "user-agent",
    "x-webhook-timestamp",
    "x-webhook-id",
    "x-delivery-attempt",
    "x-webhook-sequence",
    "x-event-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Bounds of a webhook's own headers: a few credentials or routing tags,
/// not a second body.
pub const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE_BYTES: usize = 1024;
const MAX_HEADERS_BYTES: usize = 8 * 1024;

fn parse_headers(
    headers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    if headers.len() > MAX_HEADERS {
        return Err(FieldError::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut parsed = BTreeMap::new();
    let mut total = 0;
    for (name, value) in headers {
        let field = || format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(FieldError::new(field(), "is not a valid header name"));
        }
        if SYSTEM_HEADERS.contains(&lower.as_str()) {
            return Err(FieldError::new(
                field(),
                "is set by the system on every delivery and cannot be given",
            ));
        }
        // Visible ASCII and spaces only: what every receiver's stack reads
        // the same way (no obs-text, no control characters).
        if value.len() > MAX_HEADER_VALUE_BYTES
            || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(FieldError::new(
                field(),
                format!("value must be printable ASCII, at most {MAX_HEADER_VALUE_BYTES} bytes"),
            ));
        }
        total += lower.len() + value.len();
        if total > MAX_HEADERS_BYTES {
            return Err(FieldError::new(
                "headers",
                format!("at most {MAX_HEADERS_BYTES} bytes of names and values in all"),
            ));
        }
        if parsed.insert(lower, value.trim().to_owned()).is_some() {
            return Err(FieldError::new(
                field(),
                "is given twice (names ignore case)",
            ));
        }
    }
    Ok(parsed)
}

fn parse_secret(text: &str) -> Result<Secret, FieldError> {
    Secret::parse(text).map_err(|e| FieldError::new("secret", e.to_string()))
}

/// Why a process must not start with the registry as it is.
#[derive(Debug, thiserror::Error)]
pub enum SecretsAtStartError {
    #[error(
        "secrets.encryption_keys: required when app.environment = production \
         (webhook secrets would be stored in clear); set one, e.g. \
         SUPPORTRAG__SECRETS__ENCRYPTION_KEYS=k1:$(openssl rand -base64 32)"
    )]
    NoKeyInProduction,
    #[error("encrypting webhook secrets at start: {0}")]
    Store(#[from] StoreError),
}

/// Sets a registry field only if it still holds what the caller read.
/// KEYS: registry. ARGV: webhook id, record read, new record.
static REPLACE_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
",
    )
});

/// What [`WebhookStore::deactivate`] found.
#[derive(Debug)]
pub struct Deactivated {
    pub webhook: Webhook,
    /// This call turned it off (it was active).
    pub now: bool,
}

/// Where webhooks live: one hash, id → record (a registry is small; listing
/// reads it whole). Secrets are sealed with `secrets` on the way in and
/// opened on the way out, so a record in Redis holds no clear secret once a
/// key is configured, and nothing outside this store sees a sealed one.
#[derive(Clone)]
pub struct WebhookStore {
    conn: ConnectionManager,
    key: String,
    secrets: SecretBox,
}

impl WebhookStore {
    pub fn new(conn: ConnectionManager, prefix: &KeyPrefix, secrets: SecretBox) -> Self {
        Self {
            conn,
            key: keys::webhooks(prefix),
            secrets,
        }
    }

    pub async fn insert(&self, draft: WebhookDraft) -> Result<Webhook, StoreError> {
        let now = Utc::now();
        let webhook = Webhook {
            webhook_id: WebhookId::generate(),
            name: draft.name,
            url: draft.url,
            events: draft.events,
            filters: draft.filters,
            secret: draft.secret,
            previous_secrets: Vec::new(),
            active: draft.active,
            disabled_reason: None,
            metadata: draft.metadata,
            strict_signatures: draft.strict_signatures,
            signature_profile: draft.signature_profile,
            rate_limit_per_second: draft.rate_limit_per_second,
            headers: draft.headers,
            ordering: draft.ordering,
            created_at: now,
            updated_at: now,
        };
        self.save(&webhook).await?;
        Ok(webhook)
    }

    pub async fn save(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .hset(
                &self.key,
                webhook.webhook_id.as_str(),
                self.encode(webhook)?,
            )
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        let raw: Option<Vec<u8>> = self.conn.clone().hget(&self.key, id.as_str()).await?;
        raw.map(|raw| self.decode(id.as_str(), &raw)).transpose()
    }

    /// Every webhook that can be read, oldest first. Publishing must not
    /// stop for every subscriber because one record is unreadable (written
    /// by hand, by a version that stored another shape, or sealed under a
    /// key no longer configured, which the start-up check refuses anyway):
    /// such a record is logged with its id and left out.
    pub async fn all_readable(&self) -> Result<Vec<Webhook>, StoreError> {
        Ok(self
            .decoded()
            .await?
            .into_iter()
            .filter_map(|(id, webhook)| {
                webhook
                    .inspect_err(|e| {
                        tracing::warn!(webhook_id = %id, error = %e, "unreadable webhook record skipped");
                    })
                    .ok()
            })
            .collect())
    }

    /// Turns a webhook off on the system's initiative, saying why. Changes
    /// nothing if it is off already (an administrator's reason, or none,
    /// stays), and loses no concurrent edit: the record is replaced only if
    /// it is still the one read. The webhook as it is now, if it exists,
    /// and whether this call is the one that turned it off (of several
    /// workers meeting the same failure, exactly one is).
    pub async fn deactivate(
        &self,
        id: &WebhookId,
        reason: &str,
    ) -> Result<Option<Deactivated>, StoreError> {
        let mut conn = self.conn.clone();
        loop {
            let raw: Option<Vec<u8>> = conn.hget(&self.key, id.as_str()).await?;
            let Some(raw) = raw else { return Ok(None) };
            let mut webhook = self.decode(id.as_str(), &raw)?;
            if !webhook.active {
                return Ok(Some(Deactivated {
                    webhook,
                    now: false,
                }));
            }
            webhook.active = false;
            webhook.disabled_reason = Some(reason.to_owned());
            webhook.updated_at = Utc::now();
            let replaced: i64 = REPLACE_IF_UNCHANGED
                .key(&self.key)
                .arg(id.as_str())
                .arg(raw)
                .arg(self.encode(&webhook)?)
                .invoke_async(&mut conn)
                .await?;
            if replaced == 1 {
                return Ok(Some(Deactivated { webhook, now: true }));
            }
        }
    }

    /// Every webhook, oldest first (ids sort by creation time).
    pub async fn all(&self) -> Result<Vec<Webhook>, StoreError> {
        self.decoded()
            .await?
            .into_iter()
            .map(|(_, webhook)| webhook)
            .collect()
    }

    /// Every record of the registry by id, decoded, oldest first.
    async fn decoded(&self) -> Result<Vec<(String, Result<Webhook, StoreError>)>, StoreError> {
        let raw: Vec<(String, Vec<u8>)> = self.conn.clone().hgetall(&self.key).await?;
        let mut decoded: Vec<_> = raw
            .into_iter()
            .map(|(id, raw)| {
                let webhook = self.decode(&id, &raw);
                (id, webhook)
            })
            .collect();
        decoded.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(decoded)
    }

    pub async fn delete(&self, id: &WebhookId) -> Result<bool, StoreError> {
        let removed: i64 = self.conn.clone().hdel(&self.key, id.as_str()).await?;
        Ok(removed == 1)
    }

    /// What both binaries run before serving: refuses to go on without an
    /// encryption key in production (warns in a local trial), then seals
    /// every clear secret and re-seals every secret sealed under a key other
    /// than the first (see [`WebhookStore::reseal_all`]). A Redis out of
    /// reach is warned about, not fatal (processes start during an outage;
    /// the next start finishes the job, and every save seals meanwhile); a
    /// secret that cannot be decrypted is fatal, naming the webhook and the
    /// key id. Returns how many records were rewritten.
    pub async fn secure_at_start(
        &self,
        environment: AppEnvironment,
    ) -> Result<usize, SecretsAtStartError> {
        if self.secrets.primary().is_none() {
            if environment == AppEnvironment::Production {
                return Err(SecretsAtStartError::NoKeyInProduction);
            }
            tracing::warn!(
                "secrets.encryption_keys is empty: webhook secrets are stored in clear \
                 (accepted for a local trial; refused when app.environment = production)"
            );
        }
        match self.reseal_all().await {
            Ok(rewritten) => {
                if rewritten > 0 {
                    tracing::info!(
                        rewritten,
                        key_id = self.secrets.primary().unwrap_or_default(),
                        "webhook secrets encrypted under the current key"
                    );
                }
                Ok(rewritten)
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "Redis out of reach: stored webhook secrets not checked at start");
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites every record whose secrets are not all sealed under the
    /// first key. Idempotent, and safe with several processes starting at
    /// once: a record is replaced only if it is still the one read, else
    /// read again and judged again. Records that are not JSON are left
    /// alone (reading them reports them); a secret that does not decrypt
    /// stops here, naming the webhook.
    pub async fn reseal_all(&self) -> Result<usize, StoreError> {
        let raw: Vec<(String, Vec<u8>)> = self.conn.clone().hgetall(&self.key).await?;
        let mut rewritten = 0;
        for (id, record) in raw {
            if self.reseal(&id, record).await? {
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    async fn reseal(&self, id: &str, mut raw: Vec<u8>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        loop {
            let webhook = match self.decode(id, &raw) {
                Ok(webhook) => webhook,
                Err(StoreError::Corrupt(e)) => {
                    tracing::warn!(webhook_id = %id, error = %e, "unreadable webhook record left as it is");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            if !self.needs_reseal(&raw)? {
                return Ok(false);
            }
            let replaced: i64 = REPLACE_IF_UNCHANGED
                .key(&self.key)
                .arg(id)
                .arg(&raw)
                .arg(self.encode(&webhook)?)
                .invoke_async(&mut conn)
                .await?;
            if replaced == 1 {
                return Ok(true);
            }
            match conn.hget::<_, _, Option<Vec<u8>>>(&self.key, id).await? {
                Some(now) => raw = now,
                None => return Ok(false),
            }
        }
    }

    /// Whether a stored record has a clear secret while a key is
    /// configured, or one sealed under a key other than the first.
    fn needs_reseal(&self, raw: &[u8]) -> Result<bool, StoreError> {
        let Some(primary) = self.secrets.primary() else {
            return Ok(false);
        };
        let mut record: serde_json::Value = serde_json::from_slice(raw)?;
        Ok(secret_slots(&mut record).iter().any(|slot| match slot {
            serde_json::Value::Object(sealed) => {
                sealed.get("kid").and_then(|k| k.as_str()) != Some(primary)
            }
            _ => true,
        }))
    }

    /// The stored form: expired previous secrets dropped, every secret
    /// sealed when a key is configured.
    fn encode(&self, webhook: &Webhook) -> Result<Vec<u8>, StoreError> {
        let mut webhook = webhook.clone();
        webhook.drop_expired_secrets(Utc::now());
        let mut record = serde_json::to_value(&webhook)?;
        let aad = webhook.webhook_id.as_str().as_bytes();
        for slot in secret_slots(&mut record) {
            if let Some(plain) = slot.as_str()
                && let Some(sealed) = self.secrets.seal(plain, aad)
            {
                *slot = serde_json::to_value(sealed)?;
            }
        }
        Ok(serde_json::to_vec(&record)?)
    }

    /// A stored record back to a webhook, opening sealed secrets with the
    /// key they name; `id` is the registry field (and the sealing's AAD).
    fn decode(&self, id: &str, raw: &[u8]) -> Result<Webhook, StoreError> {
        let mut record: serde_json::Value = serde_json::from_slice(raw)?;
        for slot in secret_slots(&mut record) {
            if slot.is_object() {
                let sealed: Sealed = serde_json::from_value(slot.take())?;
                let plain = self
                    .secrets
                    .open(&sealed, id.as_bytes())
                    .map_err(|source| StoreError::Secret {
                        webhook_id: id.to_owned(),
                        source,
                    })?;
                *slot = serde_json::Value::String(plain);
            }
        }
        Ok(serde_json::from_value(record)?)
    }
}

/// Where a stored record keeps secrets: `secret` and each
/// `previous_secrets[].secret`. A string is a clear secret, an object a
/// [`Sealed`] one.
fn secret_slots(record: &mut serde_json::Value) -> Vec<&mut serde_json::Value> {
    let mut slots = Vec::new();
    let Some(fields) = record.as_object_mut() else {
        return slots;
    };
    for (name, value) in fields.iter_mut() {
        match name.as_str() {
            "secret" => slots.push(value),
            "previous_secrets" => {
                if let Some(items) = value.as_array_mut() {
                    slots.extend(items.iter_mut().filter_map(|item| item.get_mut("secret")));
                }
            }
            _ => {}
        }
    }
    slots
}

/// Stale entries are dropped once the cache holds more than this many.
const CACHE_SWEEP_ABOVE: usize = 1024;

/// Webhooks read from the registry, reused for a short while so that a
/// delivery or an incoming request does not cost a registry read (a burst
/// comes from, or goes to, the same few webhooks). An edit reaches users of
/// the cache within its TTL; a TTL of zero turns it off.
pub struct WebhookCache {
    ttl: Duration,
    entries: Mutex<HashMap<WebhookId, (tokio::time::Instant, Webhook)>>,
}

impl WebhookCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The webhook as read less than the TTL ago, if it was.
    pub fn get(&self, id: &WebhookId) -> Option<Webhook> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (at, webhook) = entries.get(id)?;
        (at.elapsed() < self.ttl).then(|| webhook.clone())
    }

    pub fn put(&self, webhook: &Webhook) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > CACHE_SWEEP_ABOVE {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            entries.insert(
                webhook.webhook_id.clone(),
                (tokio::time::Instant::now(), webhook.clone()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::net::ssrf::StaticResolver;

    fn request(url: &str) -> WebhookRequest {
        WebhookRequest {
            name: Some("n".into()),
            url: Some(url.into()),
            events: Some(vec!["*".into()]),
            ..WebhookRequest::default()
        }
    }

    #[tokio::test]
    async fn urls_are_judged_by_what_their_names_resolve_to() {
        let private: IpAddr = "10.0.0.7".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let resolver = StaticResolver::new()
            .with_host("internal.example", vec![private])
            .with_host("public.example", vec![public]);
        let policy = SsrfPolicy::default();
        let rules = Rules {
            policy: &policy,
            resolver: &resolver,
        };

        let refused = rules
            .register(request("https://internal.example/hook"))
            .await
            .unwrap_err();
        assert_eq!(refused.field, "url");
        assert!(refused.message.contains("10.0.0.7"), "{refused}");

        assert!(
            rules
                .register(request("https://public.example/hook"))
                .await
                .is_ok()
        );
        // Not resolvable now: accepted on form, judged at connection time.
        let draft = rules
            .register(request("https://unknown.example/hook"))
            .await
            .unwrap();
        assert!(draft.secret_generated);
        assert!(
            rules
                .register(request("http://127.0.0.1/hook"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn signature_profile_defaults_to_seed_and_is_checked_by_name() {
        let policy = SsrfPolicy::default();
        let resolver = StaticResolver::new();
        let rules = Rules {
            policy: &policy,
            resolver: &resolver,
        };
        let url = "https://hooks.example/in";
        let draft = rules.register(request(url)).await.unwrap();
        assert_eq!(draft.signature_profile, SignatureProfile::Seed);
        let slack = WebhookRequest {
            signature_profile: Some("slack".into()),
            ..request(url)
        };
        assert_eq!(
            rules.register(slack).await.unwrap().signature_profile,
            SignatureProfile::Slack
        );
        let unknown = WebhookRequest {
            signature_profile: Some("hmac".into()),
            ..request(url)
        };
        assert_eq!(
            rules.register(unknown).await.unwrap_err().field,
            "signature_profile"
        );
        // A change keeps the profile unless it names one.
        let changed = rules
            .update(
                webhook("webhook_p"),
                WebhookRequest {
                    signature_profile: Some("github".into()),
                    ..WebhookRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(changed.signature_profile, SignatureProfile::Github);
        let kept = rules
            .update(changed, WebhookRequest::default())
            .await
            .unwrap();
        assert_eq!(kept.signature_profile, SignatureProfile::Github);
        let refused = WebhookRequest {
            signature_profile: Some("Stripe".into()),
            ..WebhookRequest::default()
        };
        assert_eq!(
            rules.update(kept, refused).await.unwrap_err().field,
            "signature_profile"
        );
        // Records stored before profiles existed read as `seed`.
        let mut old = serde_json::to_value(webhook("webhook_o")).unwrap();
        old.as_object_mut().unwrap().remove("signature_profile");
        let read: Webhook = serde_json::from_value(old).unwrap();
        assert_eq!(read.signature_profile, SignatureProfile::Seed);
    }

    fn webhook(id: &str) -> Webhook {
        Webhook {
            webhook_id: WebhookId::parse(id).unwrap(),
            name: "n".into(),
            url: "https://example.com/hook".into(),
            events: vec![EventFilter::All],
            filters: Filters::default(),
            secret: Secret::generate(),
            previous_secrets: Vec::new(),
            active: true,
            disabled_reason: None,
            metadata: Metadata::default(),
            strict_signatures: false,
            signature_profile: SignatureProfile::Seed,
            rate_limit_per_second: None,
            headers: BTreeMap::new(),
            ordering: DeliveryOrdering::None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn secret(text: &str) -> Secret {
        Secret::parse(text).unwrap()
    }

    fn exposed(webhook: &Webhook, now: DateTime<Utc>) -> Vec<&str> {
        webhook
            .valid_secrets(now)
            .into_iter()
            .map(Secret::expose)
            .collect()
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_for_the_overlap_only() {
        let mut hook = webhook("webhook_a");
        hook.secret = secret("secret_number_one_1");
        let t0 = Utc::now();
        hook.rotate_secret(secret("secret_number_two_2"), Duration::from_secs(60), t0);
        assert_eq!(
            exposed(&hook, t0),
            ["secret_number_two_2", "secret_number_one_1"]
        );
        let end = t0 + chrono::Duration::seconds(60);
        assert_eq!(hook.previous_secrets[0].expires_at, end);
        assert_eq!(exposed(&hook, end), ["secret_number_two_2"]);

        // Rotating again within the overlap: the oldest keeps its own end,
        // capped by the new overlap; never more than three valid.
        let t1 = t0 + chrono::Duration::seconds(10);
        hook.rotate_secret(secret("secret_number_three"), Duration::from_secs(3600), t1);
        assert_eq!(
            exposed(&hook, t1),
            [
                "secret_number_three",
                "secret_number_two_2",
                "secret_number_one_1"
            ]
        );
        assert_eq!(hook.previous_secrets[1].expires_at, end);
        hook.rotate_secret(secret("secret_number_four_"), Duration::from_secs(5), t1);
        assert_eq!(
            exposed(&hook, t1),
            [
                "secret_number_four_",
                "secret_number_three",
                "secret_number_two_2"
            ]
        );
        assert!(
            hook.previous_secrets
                .iter()
                .all(|p| p.expires_at <= t1 + chrono::Duration::seconds(5))
        );

        // Zero overlap: only the new one, at once (a leaked secret).
        hook.rotate_secret(secret("secret_number_five_"), Duration::ZERO, t1);
        assert_eq!(exposed(&hook, t1), ["secret_number_five_"]);
        assert!(hook.previous_secrets.is_empty());
    }

    #[test]
    fn a_rotation_request_is_checked_field_by_field() {
        let check = |secret: Option<&str>, overlap: Option<&str>| {
            RotateSecretRequest {
                secret: secret.map(str::to_owned),
                overlap: overlap.map(str::to_owned),
            }
            .check()
        };
        let default = check(None, None).unwrap();
        assert!(default.secret_generated);
        assert!(default.secret.expose().starts_with("whsec_"));
        assert_eq!(default.overlap, DEFAULT_OVERLAP);
        let given = check(Some("a_given_secret_1234"), Some("90m")).unwrap();
        assert!(!given.secret_generated);
        assert_eq!(given.overlap, Duration::from_secs(5400));
        assert_eq!(check(None, Some("0")).unwrap().overlap, Duration::ZERO);
        assert_eq!(check(None, Some("30days")).unwrap().overlap, MAX_OVERLAP);
        for (secret, overlap, field) in [
            (None, Some("31days"), "overlap"),
            (None, Some("soon"), "overlap"),
            (None, Some("-1h"), "overlap"),
            (Some("short"), None, "secret"),
        ] {
            assert_eq!(check(secret, overlap).unwrap_err().field, field);
        }
    }

    #[tokio::test]
    async fn a_patch_of_the_secret_swaps_it_at_once() {
        let mut hook = webhook("webhook_a");
        hook.rotate_secret(
            secret("secret_number_two_2"),
            Duration::from_secs(60),
            Utc::now(),
        );
        assert_eq!(hook.valid_secrets(Utc::now()).len(), 2);
        let policy = SsrfPolicy::default();
        let resolver = StaticResolver::new();
        let rules = Rules {
            policy: &policy,
            resolver: &resolver,
        };
        let patched = rules
            .update(
                hook,
                WebhookRequest {
                    secret: Some("secret_number_three".into()),
                    ..WebhookRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(exposed(&patched, Utc::now()), ["secret_number_three"]);
    }

    #[test]
    fn every_secret_of_a_record_is_found_for_sealing_expired_ones_included() {
        use base64::Engine as _;
        let key = crate::webhooks::secret_box::EncryptionKey::parse(&format!(
            "k1:{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ))
        .unwrap();
        let sealing = SecretBox::new(vec![key]);
        let mut hook = webhook("webhook_a");
        hook.secret = secret("secret_number_one_1");
        let now = Utc::now();
        hook.rotate_secret(secret("secret_number_two_2"), Duration::from_secs(60), now);
        hook.previous_secrets.push(PreviousSecret {
            secret: secret("an_expired_secret_0"),
            expires_at: now - chrono::Duration::seconds(1),
        });
        let mut record = serde_json::to_value(&hook).unwrap();
        for slot in secret_slots(&mut record) {
            let sealed = sealing.seal(slot.as_str().unwrap(), b"webhook_a").unwrap();
            *slot = serde_json::to_value(sealed).unwrap();
        }
        let text = record.to_string();
        assert!(!text.contains("secret_number"), "{text}");
        assert_eq!(text.matches("\"kid\":\"k1\"").count(), 3);
    }

    fn rules_check<'a>(policy: &'a SsrfPolicy, resolver: &'a StaticResolver) -> Rules<'a> {
        Rules { policy, resolver }
    }

    #[tokio::test]
    async fn rate_limits_are_positive_numbers_and_null_removes_one() {
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let resolver = StaticResolver::new();
        let rules = rules_check(&policy, &resolver);
        let with_rate = |rate: Option<f64>| WebhookRequest {
            rate_limit_per_second: Some(rate),
            ..request("http://127.0.0.1/hook")
        };
        let draft = rules.register(with_rate(Some(2.5))).await.unwrap();
        assert_eq!(draft.rate_limit_per_second, Some(2.5));
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            MAX_RATE_PER_SECOND * 2.0,
        ] {
            let refused = rules.register(with_rate(Some(bad))).await.unwrap_err();
            assert_eq!(refused.field, "rate_limit_per_second", "{bad}");
        }
        let mut hook = webhook("webhook_a");
        hook.rate_limit_per_second = Some(5.0);
        let kept = rules.update(hook.clone(), WebhookRequest::default()).await;
        assert_eq!(kept.unwrap().rate_limit_per_second, Some(5.0));
        let cleared: WebhookRequest =
            serde_json::from_str(r#"{"rate_limit_per_second": null}"#).unwrap();
        assert_eq!(cleared.rate_limit_per_second, Some(None));
        let cleared = rules.update(hook, cleared).await.unwrap();
        assert_eq!(cleared.rate_limit_per_second, None);
    }

    #[tokio::test]
    async fn custom_headers_are_checked_and_never_override_the_systems() {
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let resolver = StaticResolver::new();
        let rules = rules_check(&policy, &resolver);
        let with_headers = |pairs: &[(&str, &str)]| WebhookRequest {
            headers: Some(
                pairs
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..request("http://127.0.0.1/hook")
        };
        let draft = rules
            .register(with_headers(&[
                ("X-Tenant", "acme"),
                ("Authorization", "Bearer t"),
            ]))
            .await
            .unwrap();
        assert_eq!(
            draft.headers.get("x-tenant").map(String::as_str),
            Some("acme")
        );
        assert_eq!(draft.headers.len(), 2);
        for system in SYSTEM_HEADERS {
            let name = system.to_ascii_uppercase();
            let refused = rules
                .register(with_headers(&[(&name, "forged")]))
                .await
                .unwrap_err();
            assert_eq!(refused.field, format!("headers.{name}"));
            assert!(refused.message.contains("set by the system"), "{refused}");
        }
        for (name, value) in [("bad name", "v"), ("x-ok", "line\nbreak"), ("x-ok", "ü")] {
            let refused = rules
                .register(with_headers(&[(name, value)]))
                .await
                .unwrap_err();
            assert_eq!(refused.field, format!("headers.{name}"));
        }
        let twice = rules
            .register(with_headers(&[("X-A", "1"), ("x-a", "2")]))
            .await
            .unwrap_err();
        assert!(twice.message.contains("twice"), "{twice}");
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            rules.register(with_headers(&many)).await.unwrap_err().field,
            "headers"
        );
    }

    #[test]
    fn the_cache_keeps_webhooks_for_its_ttl_and_zero_turns_it_off() {
        let cache = WebhookCache::new(Duration::from_secs(60));
        let hook = webhook("webhook_a");
        assert!(cache.get(&hook.webhook_id).is_none());
        cache.put(&hook);
        assert_eq!(
            cache.get(&hook.webhook_id).unwrap().webhook_id,
            hook.webhook_id
        );
        let off = WebhookCache::new(Duration::ZERO);
        off.put(&hook);
        assert!(off.get(&hook.webhook_id).is_none());
    }
}
