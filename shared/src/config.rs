//! Layered configuration, read the same way by the API and the worker.
//!
//! Layers, later ones winning: the `config/default.toml` compiled into the
//! binary (so a bare start works from any directory), `config/default.toml`
//! in the working directory when present, `config/<SUPPORTRAG_ENV>.toml`,
//! the file named with `--config`, then environment variables
//! `SUPPORTRAG__SECTION__KEY`. Every field is parsed into its final type here
//! (durations, byte sizes, CIDRs, the key prefix), so a bad value stops the
//! process at start with the key named, and the rest of the code never
//! re-checks a setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
pub use queue::KeyPrefix;
use serde::Deserialize;
use serde::de::{self, Deserializer};

const EMBEDDED_DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("configuration: {key}: {message}")]
    Rule { key: &'static str, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app: AppSettings,
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub security: SecuritySettings,
    pub signing: SigningSettings,
    pub secrets: SecretsSettings,
    pub delivery: DeliverySettings,
    pub queue: QueueSettings,
    pub incoming: IncomingSettings,
    pub idempotency: IdempotencySettings,
    pub ingest: IngestSettings,
    pub chat: ChatSettings,
    pub retrieval: RetrievalSettings,
    pub openai: OpenAiSettings,
    pub qdrant: QdrantSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub worker: WorkerSettings,
    pub telemetry: TelemetrySettings,
    pub console: ConsoleSettings,
}

/// Where this deployment runs: decides what a missing safeguard means
/// (a warning in a local trial, a refusal to start in production).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AppEnvironment {
    Local,
    Production,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub environment: AppEnvironment,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub body_limit: ByteSize,
    /// A connection must deliver a request's complete header block within
    /// this long of starting it (or of connecting), else it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this long of its headers,
    /// else 408 and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Bytes of request bodies held in memory at once, all requests
    /// together; a body that would go beyond gets 503 and `Retry-After`.
    pub body_budget: ByteSize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: RedisUrl,
    pub key_prefix: KeyPrefix,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Replicas that must confirm an enqueue (`WAIT`) before it is
    /// acknowledged (202); 0 = do not wait (see docs/RELIABILITY.md).
    pub wait_replicas: u32,
    /// How long an enqueue waits for those replicas before failing (503).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Start even when Redis' `maxmemory-policy` may evict keys (queued
    /// jobs among them). Off: such a Redis is refused at start.
    pub allow_eviction: bool,
    /// For `rediss://`: the CA that signed the server's certificate (PEM);
    /// unset, the system's roots are trusted.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// For `rediss://` with client authentication (`tls-auth-clients`):
    /// this client's certificate and key (PEM). Both or neither.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// Shortest admin key accepted: anything shorter is guessable offline or
/// by a patient client, whatever the rate limit.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Each at least [`MIN_ADMIN_KEY_CHARS`] characters.
    #[serde(deserialize_with = "string_list")]
    pub admin_keys: Vec<String>,
    /// Wrong admin keys a client address may present per
    /// `failed_attempts_window` before it is answered 429; 0 = no limit.
    pub max_failed_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub failed_attempts_window: Duration,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "admin_keys",
                &format_args!("[{} redacted]", self.admin_keys.len()),
            )
            .field("max_failed_attempts", &self.max_failed_attempts)
            .field("failed_attempts_window", &self.failed_attempts_window)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    #[serde(deserialize_with = "cidr_list")]
    pub allowed_cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    #[serde(with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// Keys that encrypt webhook secrets at rest, `id:base64(32 bytes)`;
    /// the first encrypts, all decrypt (by the id stored with each value).
    /// Empty: secrets are stored in clear (refused when
    /// `app.environment = production`).
    #[serde(deserialize_with = "encryption_key_list")]
    pub encryption_keys: Vec<crate::webhooks::secret_box::EncryptionKey>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    pub retry_jitter: f64,
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    pub concurrency: usize,
    /// In-flight deliveries per webhook per worker process: a slow or
    /// hanging endpoint holds at most this many of `concurrency`.
    pub per_webhook_concurrency: usize,
    /// How long a worker reuses a webhook it read (URL, secret, active);
    /// changes reach deliveries within this long. 0 = read every time.
    #[serde(with = "humantime_serde")]
    pub webhook_cache_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    pub history_max_per_webhook: u64,
    /// A webhook whose deliveries have all failed for this long (and at
    /// least `disable_min_failures` times) is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    pub disable_min_failures: u64,
}

impl QueueSettings {
    /// The consumer runtime's settings for one queue: these, with the
    /// queue's concurrency and how long one blocking read may wait.
    pub fn runner(&self, concurrency: usize, block: Duration) -> queue::runtime::RunnerSettings {
        queue::runtime::RunnerSettings {
            concurrency,
            batch_size: self.batch_size,
            block,
            visibility_timeout: self.visibility_timeout,
            poll_interval: self.poll_interval,
            promote_batch: self.promote_batch,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub batch_size: usize,
    pub promote_batch: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

/// The operator console served at `/console`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// How long a console sign-in lasts (no sliding renewal: an operator
    /// signs in again after it).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`);
    /// traces go to its `/v1/traces` as JSON. Unset: no export.
    #[serde(default, deserialize_with = "optional_http_url")]
    pub otlp_endpoint: Option<url::Url>,
}

/// An empty string means "unset", as environment overrides can only clear
/// a setting that way.
fn optional_http_url<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<url::Url>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let url = url::Url::parse(text.trim()).map_err(de::Error::custom)?;
    match url.scheme() {
        "http" | "https" => Ok(Some(url)),
        other => Err(de::Error::custom(format!(
            "{other}:// is not an http(s) URL"
        ))),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Touched every few seconds while the worker's runtime is responsive,
    /// for a container health check; empty: none.
    pub heartbeat_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingSettings {
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub webhook_cache_ttl: Duration,
}

/// `Idempotency-Key` on admin POSTs (see `idempotency.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a first answer is replayed for the same key.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a key stays claimed by a request that has not answered
    /// (a crashed API frees it after this).
    #[serde(with = "humantime_serde")]
    pub in_progress_ttl: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    pub concurrency: usize,
    pub max_document_size: ByteSize,
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub parse_timeout: Duration,
    pub parse_memory_limit: ByteSize,
    /// Parser child processes alive at once per worker process, whatever
    /// `concurrency` is (each within `parse_memory_limit`).
    pub parser_processes: usize,
    /// Small documents one parser child parses in turn before it is
    /// replaced; 1: a fresh child per document.
    pub parser_reuse: usize,
    /// How long a document's ingestion lock outlives a worker that died
    /// holding it; a live worker renews it every third of this.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
}

impl IngestSettings {
    /// Largest body of a direct upload: the largest document as base64
    /// (4/3), with room for the JSON or multipart around it.
    pub fn upload_body_limit(&self) -> usize {
        self.max_document_size.0.saturating_mul(4) / 3 + 64 * 1024
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    pub escalation_threshold: f64,
    /// Below this (and at or above `escalation_threshold`) an answer also
    /// offers a person (see `answer_policy`).
    pub offer_person_threshold: f64,
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub completion_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    pub history_turns: usize,
    /// Who escalations are assigned to. Empty: escalated sessions wait
    /// unassigned, and the first operator to reply takes one.
    #[serde(deserialize_with = "operator_list")]
    pub operators: Vec<Operator>,
    pub operator_assignment: OperatorAssignment,
}

/// A human who takes escalated conversations.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAssignment {
    RoundRobin,
    LeastLoaded,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalProvider {
    /// BM25 with tantivy in each process over the chunks kept in Redis,
    /// extractive answers: no external service.
    Embedded,
    /// Embeddings (and optionally answers) from an OpenAI-compatible API,
    /// vectors in Qdrant.
    Openai,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSettings {
    pub provider: RetrievalProvider,
    pub top_k: usize,
    /// Where this process keeps its search replica; `None`: a fresh
    /// temporary directory (rebuilt from Redis at every start).
    #[serde(deserialize_with = "optional_path")]
    pub index_dir: Option<PathBuf>,
    /// Entries the change feed keeps (about); a replica away for longer
    /// rebuilds.
    pub feed_length: usize,
    #[serde(deserialize_with = "optional_path")]
    pub glossary_file: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path")]
    pub intents_file: Option<PathBuf>,
    /// Directory of the Mueller English–Russian dictionary in dictd format
    /// (`mueller7.index`, `mueller7.dict.dz`, Debian package
    /// `mueller7-dict`). Missing files or `None`: the glossary alone.
    #[serde(deserialize_with = "optional_path")]
    pub dictionary_dir: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSettings {
    pub base_url: url::Url,
    #[serde(deserialize_with = "optional_string")]
    pub api_key: Option<String>,
    pub embeddings_model: String,
    #[serde(deserialize_with = "optional_string")]
    pub chat_model: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("embeddings_model", &self.embeddings_model)
            .field("chat_model", &self.chat_model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantSettings {
    pub url: url::Url,
    pub collection: String,
    #[serde(deserialize_with = "optional_string")]
    pub api_key: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl fmt::Debug for QdrantSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantSettings")
            .field("url", &self.url.as_str())
            .field("collection", &self.collection)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    #[serde(deserialize_with = "optional_addr")]
    pub bind: Option<SocketAddr>,
}

impl Settings {
    /// The full layered load used by both binaries.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(EMBEDDED_DEFAULTS, FileFormat::Toml))
            .add_source(File::with_name("config/default.toml").required(false));
        if let Ok(env) = std::env::var("SUPPORTRAG_ENV")
            && !env.is_empty()
        {
            builder = builder.add_source(File::with_name(&format!("config/{env}.toml")));
        }
        if let Some(path) = explicit_file {
            builder = builder.add_source(File::from(path).required(true));
        }
        let config = builder
            .add_source(
                Environment::with_prefix("SUPPORTRAG")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()?;
        Self::from_config(config)
    }

    /// The compiled-in defaults alone; tests start from these and adjust.
    pub fn defaults() -> Result<Self, ConfigError> {
        let config = Config::builder()
            .add_source(File::from_str(EMBEDDED_DEFAULTS, FileFormat::Toml))
            .build()?;
        Self::from_config(config)
    }

    fn from_config(config: Config) -> Result<Self, ConfigError> {
        let settings: Settings = config.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    /// Rules on a value's range rather than its type, each failure naming
    /// its key; split by area so each reads as one list.
    fn check(&self) -> Result<(), ConfigError> {
        self.check_http()?;
        self.check_delivery()?;
        self.check_chat()?;
        self.check_ingest()?;
        self.check_retrieval()
    }

    /// Server, Redis, admin auth and idempotency.
    fn check_http(&self) -> Result<(), ConfigError> {
        rule(
            self.server.body_limit.0 > 0,
            "server.body_limit",
            "must be greater than zero",
        )?;
        rule(
            self.redis.tls_cert_file.is_some() == self.redis.tls_key_file.is_some(),
            "redis.tls_cert_file",
            "a client certificate needs its key (redis.tls_key_file), and a key its certificate",
        )?;
        rule(
            !self.server.header_read_timeout.is_zero(),
            "server.header_read_timeout",
            "must be greater than zero",
        )?;
        rule(
            !self.server.body_read_timeout.is_zero(),
            "server.body_read_timeout",
            "must be greater than zero",
        )?;
        // Else the largest allowed body could never be accepted.
        rule(
            self.server.body_budget.0 >= self.server.body_limit.0
                && self.server.body_budget.0 >= self.ingest.upload_body_limit(),
            "server.body_budget",
            "must be at least server.body_limit and the largest upload \
             (ingest.max_document_size as base64, about 4/3 of it, plus 64KiB)",
        )?;
        if let Some(position) = self
            .auth
            .admin_keys
            .iter()
            .position(|key| key.chars().count() < MIN_ADMIN_KEY_CHARS)
        {
            // Which key, never the key: this message goes to logs.
            return Err(ConfigError::Rule {
                key: "auth.admin_keys",
                message: format!(
                    "key {} of {} is shorter than {MIN_ADMIN_KEY_CHARS} characters; \
                     generate one with `openssl rand -hex 32`",
                    position + 1,
                    self.auth.admin_keys.len()
                ),
            });
        }
        rule(
            !self.auth.failed_attempts_window.is_zero(),
            "auth.failed_attempts_window",
            "must be greater than zero",
        )?;
        rule(
            !self.idempotency.ttl.is_zero(),
            "idempotency.ttl",
            "must be greater than zero",
        )?;
        rule(
            !self.idempotency.in_progress_ttl.is_zero(),
            "idempotency.in_progress_ttl",
            "must be greater than zero",
        )?;
        Ok(())
    }

    /// Deliveries and the queue.
    fn check_delivery(&self) -> Result<(), ConfigError> {
        rule(
            !self.delivery.timeout.is_zero(),
            "delivery.timeout",
            "must be greater than zero",
        )?;
        rule(
            (0.0..1.0).contains(&self.delivery.retry_jitter),
            "delivery.retry_jitter",
            "must be at least 0 and below 1",
        )?;
        rule(
            self.delivery.concurrency > 0,
            "delivery.concurrency",
            "must be at least 1",
        )?;
        rule(
            self.delivery.per_webhook_concurrency > 0,
            "delivery.per_webhook_concurrency",
            "must be greater than zero",
        )?;
        rule(
            self.delivery.history_max_per_webhook > 0,
            "delivery.history_max_per_webhook",
            "must be at least 1",
        )?;
        rule(
            !self.delivery.disable_after.is_zero(),
            "delivery.disable_after",
            "must be greater than zero",
        )?;
        rule(
            self.delivery.disable_min_failures > 0,
            "delivery.disable_min_failures",
            "must be at least 1",
        )?;
        rule(
            self.queue.visibility_timeout >= Duration::from_millis(100),
            "queue.visibility_timeout",
            "must be at least 100ms",
        )?;
        rule(
            !self.queue.poll_interval.is_zero(),
            "queue.poll_interval",
            "must be greater than zero",
        )?;
        rule(
            self.queue.batch_size > 0,
            "queue.batch_size",
            "must be at least 1",
        )?;
        rule(
            self.queue.promote_batch > 0,
            "queue.promote_batch",
            "must be at least 1",
        )?;
        Ok(())
    }

    /// Chat: answer thresholds, workers and sessions.
    fn check_chat(&self) -> Result<(), ConfigError> {
        rule(
            (0.0..=1.0).contains(&self.chat.escalation_threshold),
            "chat.escalation_threshold",
            "must be between 0 and 1",
        )?;
        rule(
            crate::chat::answer_policy::Thresholds::new(
                self.chat.escalation_threshold,
                self.chat.offer_person_threshold,
            )
            .is_ok(),
            "chat.offer_person_threshold",
            "must be between chat.escalation_threshold and 1",
        )?;
        rule(
            self.chat.concurrency > 0,
            "chat.concurrency",
            "must be at least 1",
        )?;
        rule(
            self.chat.history_turns > 0,
            "chat.history_turns",
            "must be at least 1",
        )?;
        rule(
            !self.chat.session_idle_timeout.is_zero(),
            "chat.session_idle_timeout",
            "must be greater than zero",
        )
    }

    /// Ingestion: workers, parser sandbox, document limits and chunking.
    fn check_ingest(&self) -> Result<(), ConfigError> {
        rule(
            self.ingest.concurrency > 0,
            "ingest.concurrency",
            "must be at least 1",
        )?;
        rule(
            self.ingest.parser_processes > 0,
            "ingest.parser_processes",
            "must be at least 1",
        )?;
        rule(
            self.ingest.parser_reuse > 0,
            "ingest.parser_reuse",
            "must be at least 1",
        )?;
        rule(
            self.ingest.max_document_size.0 > 0,
            "ingest.max_document_size",
            "must be greater than zero",
        )?;
        rule(
            self.ingest.parse_memory_limit.0 >= 64 << 20,
            "ingest.parse_memory_limit",
            "must be at least 64MiB",
        )?;
        rule(
            self.ingest.lock_ttl >= Duration::from_millis(100),
            "ingest.lock_ttl",
            "must be at least 100ms",
        )?;
        rule(
            self.ingest.chunk_size >= 200,
            "ingest.chunk_size",
            "must be at least 200 characters",
        )?;
        rule(
            self.ingest.chunk_overlap < self.ingest.chunk_size / 2,
            "ingest.chunk_overlap",
            "must be less than half of ingest.chunk_size",
        )
    }

    /// Retrieval: the embedded search and the external providers.
    fn check_retrieval(&self) -> Result<(), ConfigError> {
        rule(
            (1..=50).contains(&self.retrieval.top_k),
            "retrieval.top_k",
            "must be between 1 and 50",
        )?;
        rule(
            self.retrieval.feed_length >= 1000,
            "retrieval.feed_length",
            "must be at least 1000",
        )?;
        rule(
            !self.openai.embeddings_model.trim().is_empty(),
            "openai.embeddings_model",
            "must not be empty",
        )?;
        rule(
            !self.qdrant.collection.trim().is_empty(),
            "qdrant.collection",
            "must not be empty",
        )
    }
}

fn rule(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Rule {
            key,
            message: message.to_owned(),
        })
    }
}

/// A byte count written as "1MiB", "512KiB", "2MB" or a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: usize = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as \"1MiB\""))?;
        let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?}")),
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = StringOrNumber::deserialize(deserializer)?;
        ByteSize::parse(&value.0).map_err(de::Error::custom)
    }
}

/// A Redis connection URL whose scheme we can actually open.
#[derive(Clone, Debug)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let known = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if known.iter().any(|scheme| text.starts_with(scheme)) {
            Ok(RedisUrl(text.to_owned()))
        } else {
            Err(format!("{text:?} is not a redis:// URL"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RedisUrl::parse(&String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// Environment variables always arrive as strings, TOML may give numbers.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Unsigned(u64),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => StringOrNumber(text),
            Raw::Unsigned(n) => StringOrNumber(n.to_string()),
        })
    }
}

/// A list given either as a TOML array or as one comma-separated string
/// (the only way an environment variable can carry one).
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Joined(String),
        List(Vec<String>),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::Joined(text) => text.split(',').map(str::to_owned).collect(),
        Raw::List(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

fn encryption_key_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<crate::webhooks::secret_box::EncryptionKey>, D::Error> {
    let keys = string_list(deserializer)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // Which key, never the key: this message goes to logs.
            crate::webhooks::secret_box::EncryptionKey::parse(item)
                .map_err(|e| de::Error::custom(format!("key {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|k| k.id() == key.id()) {
            return Err(de::Error::custom(format!(
                "key id {:?} is given twice",
                key.id()
            )));
        }
    }
    Ok(keys)
}

fn duration_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    string_list(deserializer)?
        .iter()
        .map(|item| {
            humantime::parse_duration(item)
                .map_err(|e| de::Error::custom(format!("{item:?} is not a duration: {e}")))
        })
        .collect()
}

fn cidr_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    string_list(deserializer)?
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!("{item:?} is not a CIDR such as 127.0.0.0/8"))
                })
        })
        .collect()
}

fn operator_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Operator>, D::Error> {
    string_list(deserializer)?
        .iter()
        .map(|item| match item.split_once(':') {
            Some((id, name)) if !id.trim().is_empty() && !name.trim().is_empty() => Ok(Operator {
                id: id.trim().to_owned(),
                name: name.trim().to_owned(),
            }),
            _ => Err(de::Error::custom(format!(
                "{item:?} is not an operator such as \"op_1:Jane Smith\""
            ))),
        })
        .collect()
}

fn optional_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_string(deserializer)?.map(PathBuf::from))
}

fn optional_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        de::Error::custom(format!("{text:?} is not an address such as 127.0.0.1:9464"))
    })
}

/// humantime durations ("500ms", "5m", "30days") for single fields.
mod humantime_serde {
    use std::time::Duration;

    use serde::de::{self, Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            de::Error::custom(format!("{text:?} is not a duration such as \"5s\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec_table() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.server.body_limit, ByteSize(1 << 20));
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(s.server.body_budget, ByteSize(128 << 20));
        assert_eq!(s.redis.url.as_str(), "redis://127.0.0.1:6379");
        assert_eq!(s.redis.key_prefix.as_str(), "supportrag");
        assert!(s.auth.admin_keys.is_empty());
        assert_eq!(s.auth.max_failed_attempts, 20);
        assert_eq!(s.auth.failed_attempts_window, Duration::from_secs(60));
        assert!(s.security.allowed_cidrs.is_empty());
        assert_eq!(s.signing.timestamp_tolerance, Duration::from_secs(300));
        assert_eq!(s.delivery.timeout, Duration::from_secs(15));
        let secs: Vec<u64> = s
            .delivery
            .retry_schedule
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(s.delivery.concurrency, 64);
        assert_eq!(s.queue.visibility_timeout, Duration::from_secs(60));
        let ingest: Vec<u64> = s
            .ingest
            .retry_schedule
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(ingest, [300, 600, 1200]);
        assert_eq!(s.chat.escalation_threshold, 0.35);
        assert_eq!(s.ingest.max_document_size, ByteSize(20 << 20));
        assert_eq!(s.ingest.fetch_timeout, Duration::from_secs(30));
        assert_eq!(s.ingest.lock_ttl, Duration::from_secs(30));
        assert_eq!(s.incoming.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(s.retrieval.provider, RetrievalProvider::Embedded);
        assert_eq!(
            s.retrieval.dictionary_dir.as_deref(),
            Some(Path::new("/usr/share/dictd"))
        );
        assert!(!s.chat.operators.is_empty());
        assert_eq!(s.log.format, LogFormat::Auto);
        assert_eq!(s.metrics.bind, None);
        assert_eq!(s.app.environment, AppEnvironment::Local);
        assert!(s.secrets.encryption_keys.is_empty());
    }

    #[test]
    fn encryption_keys_parse_in_order_and_bad_ones_name_the_key_not_its_material() {
        let s = load_toml(
            "[app]\nenvironment = \"production\"\n[secrets]\nencryption_keys = \
             \"k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=, k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"",
        )
        .unwrap();
        assert_eq!(s.app.environment, AppEnvironment::Production);
        let ids: Vec<&str> = s.secrets.encryption_keys.iter().map(|k| k.id()).collect();
        assert_eq!(ids, ["k2", "k1"]);
        assert!(!format!("{s:?}").contains("AgICAg"));
        for bad in [
            "[secrets]\nencryption_keys = \"k1:QUJD\"",
            "[secrets]\nencryption_keys = \"k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"",
            "[app]\nenvironment = \"staging\"",
        ] {
            let err = load_toml(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("secrets.encryption_keys") || err.contains("app.environment"),
                "{bad}: {err}"
            );
            assert!(!err.contains("QUJD") && !err.contains("AQEB"), "{err}");
        }
    }

    fn load_toml(extra: &str) -> Result<Settings, ConfigError> {
        let config = Config::builder()
            .add_source(File::from_str(EMBEDDED_DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(extra, FileFormat::Toml))
            .build()?;
        Settings::from_config(config)
    }

    #[test]
    fn lists_accept_a_comma_separated_string() {
        let s = load_toml(
            "[delivery]\nretry_schedule = \"10ms, 20ms\"\n\
             [auth]\nadmin_keys = \"admin-key-one-0123, admin-key-two-0123\"\n\
             [security]\nallowed_cidrs = \"127.0.0.0/8,::1\"",
        )
        .unwrap();
        assert_eq!(
            s.delivery.retry_schedule,
            [Duration::from_millis(10), Duration::from_millis(20)]
        );
        assert_eq!(
            s.auth.admin_keys,
            ["admin-key-one-0123", "admin-key-two-0123"]
        );
        assert_eq!(s.security.allowed_cidrs.len(), 2);
    }

    #[test]
    fn an_empty_roster_means_escalations_wait_for_an_operator() {
        let s = load_toml("[chat]\noperators = \"\"").unwrap();
        assert!(s.chat.operators.is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[delivery]\ntimeout = \"soon\"", "delivery.timeout"),
            ("[server]\nbody_limit = \"1 parsec\"", "server.body_limit"),
            (
                "[security]\nallowed_cidrs = \"localhost\"",
                "security.allowed_cidrs",
            ),
            ("[redis]\nkey_prefix = \"a{b}\"", "redis.key_prefix"),
            ("[delivery]\nretry_jitter = 1.5", "delivery.retry_jitter"),
            ("[delivery]\ntimeuot = \"1s\"", "timeuot"),
            ("[chat]\noperators = \"nobody\"", "chat.operators"),
            ("[retrieval]\nprovider = \"magic\"", "retrieval.provider"),
            ("[retrieval]\nfeed_length = 10", "retrieval.feed_length"),
            ("[openai]\nbase_url = \"not a url\"", "openai.base_url"),
            ("[server]\nbody_budget = \"20MiB\"", "server.body_budget"),
        ];
        for (toml, key) in cases {
            let err = load_toml(toml).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "{toml:?} gave {err:?}, expected it to name {key}"
            );
        }
    }

    #[test]
    fn a_short_admin_key_stops_the_start_naming_the_setting_not_the_key() {
        let err = load_toml("[auth]\nadmin_keys = \"long-enough-admin-key,s3cret-short\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("auth.admin_keys"), "{err}");
        assert!(err.contains("key 2 of 2"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        // Sixteen characters are enough.
        let s = load_toml("[auth]\nadmin_keys = \"0123456789abcdef\"").unwrap();
        assert_eq!(s.auth.admin_keys.len(), 1);
        assert!(!format!("{:?}", s.auth).contains("0123456789abcdef"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("1MiB").unwrap(), ByteSize(1 << 20));
        assert_eq!(ByteSize::parse("2MB").unwrap(), ByteSize(2_000_000));
        assert_eq!(ByteSize::parse("512").unwrap(), ByteSize(512));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
    }
}
