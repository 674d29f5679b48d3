//! The stores and clients a process needs, built once from settings so the
//! API, the worker and tests wire them the same way.

use std::path::Path;
use std::sync::Arc;

use rag::classify::Classifier;
use rag::glossary::Glossary;
use rag::knowledge::Knowledge;
use rag::providers::openai::{OpenAiClient, OpenAiSettings};
use rag::providers::qdrant::{QdrantSettings, QdrantStore};
use rag::providers::semantic::SemanticIndex;
use rag::search::EmbeddedSearch;
use rag::text::Analyzer;
use redis::aio::ConnectionManager;

use crate::chat::escalation::Escalator;
use crate::chat::feedback::Ratings;
use crate::chat::gaps::GapLog;
use crate::chat::handover::Handover;
use crate::chat::sessions::SessionStore;
use crate::chat::stats::ChatStats;
use crate::config::{RetrievalProvider, Settings};
use crate::delivery::history::DeliveryStore;
use crate::delivery::ordering::Sequences;
use crate::delivery::publish::Publisher;
use crate::incoming::Intake;
use crate::knowledge::documents::DocumentStore;
use crate::knowledge::search_replicas::ReplicaReports;
use crate::net::ssrf::{NameResolver, SsrfPolicy, SystemResolver};
use crate::webhooks::rate_limit::RateLimiter;
use crate::webhooks::registry::{WebhookCache, WebhookStore};
use crate::webhooks::secret_box::SecretBox;
use queue::{Durability, QueueClient};

#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub queue: QueueClient,
    pub webhooks: WebhookStore,
    pub deliveries: DeliveryStore,
    pub publisher: Publisher,
    /// Per-webhook rate limits, shared by every worker.
    pub rate_limiter: RateLimiter,
    pub sessions: SessionStore,
    pub documents: DocumentStore,
    pub intake: Intake,
    pub escalator: Escalator,
    pub handover: Handover,
    pub ratings: Ratings,
    pub gaps: GapLog,
    pub chat_stats: ChatStats,
    pub knowledge: Knowledge,
    /// The embedded search engine's replica in this process, when it is
    /// the configured retriever (for readiness and lag).
    pub search: Option<Arc<EmbeddedSearch>>,
    pub replica_reports: ReplicaReports,
    pub policy: SsrfPolicy,
    pub resolver: Arc<dyn NameResolver>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A file or provider named in the configuration cannot be used.
    #[error("configuration: {key}: {message}")]
    Setting { key: &'static str, message: String },
}

fn setting(key: &'static str) -> impl FnOnce(String) -> ServicesError {
    move |message| ServicesError::Setting { key, message }
}

fn read_file(key: &'static str, path: &Path) -> Result<String, ServicesError> {
    std::fs::read_to_string(path).map_err(|e| ServicesError::Setting {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// The retrieval backend the configuration chooses, with the glossary and
/// intents it names (and the embedded engine, if that is the one).
fn knowledge(
    settings: &Settings,
    conn: ConnectionManager,
) -> Result<(Knowledge, Option<Arc<EmbeddedSearch>>), ServicesError> {
    let retrieval = &settings.retrieval;
    let mut glossary = Glossary::builtin();
    if let Some(path) = &retrieval.glossary_file {
        let extra = Glossary::parse(&read_file("retrieval.glossary_file", path)?)
            .map_err(|e| setting("retrieval.glossary_file")(e.to_string()))?;
        glossary.extend(extra);
    }
    let dictionary =
        rag::dictionary::Dictionary::load_optional(retrieval.dictionary_dir.as_deref())
            .map(Arc::new);
    let analyzer = Arc::new(Analyzer::with_dictionary(glossary, dictionary));
    let classifier = match &retrieval.intents_file {
        Some(path) => Classifier::from_toml(
            &read_file("retrieval.intents_file", path)?,
            analyzer.clone(),
        )
        .map_err(|e| setting("retrieval.intents_file")(e.to_string()))?,
        None => Classifier::builtin(analyzer.clone()),
    };
    Ok(match retrieval.provider {
        RetrievalProvider::Embedded => {
            let feed_conn =
                crate::redis_conn::connect_blocking(&settings.redis, rag::search::follow::BLOCK)?;
            let search = Arc::new(
                EmbeddedSearch::open(
                    conn,
                    feed_conn,
                    settings.redis.key_prefix.as_str(),
                    retrieval.feed_length,
                    retrieval.index_dir.as_deref(),
                    analyzer.clone(),
                )
                .map_err(|e| setting("retrieval.index_dir")(e.to_string()))?,
            );
            (
                Knowledge::new(search.clone(), analyzer, classifier, retrieval.top_k),
                Some(search),
            )
        }
        RetrievalProvider::Openai => {
            let openai = &settings.openai;
            let embedder = OpenAiClient::new(OpenAiSettings {
                base_url: openai.base_url.clone(),
                api_key: openai.api_key.clone(),
                embeddings_model: openai.embeddings_model.clone(),
                chat_model: openai.chat_model.clone(),
                timeout: openai.timeout,
            })
            .map_err(|e| setting("openai")(e.to_string()))?;
            let qdrant = &settings.qdrant;
            let store = QdrantStore::new(QdrantSettings {
                url: qdrant.url.clone(),
                collection: qdrant.collection.clone(),
                api_key: qdrant.api_key.clone(),
                timeout: qdrant.timeout,
            })
            .map_err(|e| setting("qdrant")(e.to_string()))?;
            let knowledge = Knowledge::new(
                Arc::new(SemanticIndex::new(embedder, store)),
                analyzer,
                classifier,
                retrieval.top_k,
            );
            (knowledge, None)
        }
    })
}

impl Services {
    /// Refuses a Redis that may evict keys (queued jobs among them) unless
    /// `redis.allow_eviction` says otherwise. A Redis out of reach passes
    /// with a warning: processes start during an outage and wait for it.
    pub async fn check_eviction_policy(&self) -> Result<(), ServicesError> {
        let policy = match self.queue.eviction_policy().await {
            Ok(policy) => policy,
            Err(e) => {
                tracing::warn!(error = %e, "could not read Redis' maxmemory-policy; not checked");
                return Ok(());
            }
        };
        if policy == "noeviction" {
            return Ok(());
        }
        if self.settings.redis.allow_eviction {
            tracing::warn!(
                policy,
                "Redis may evict keys (redis.allow_eviction = true): queued jobs can be lost under memory pressure"
            );
            return Ok(());
        }
        Err(ServicesError::Setting {
            key: "redis.allow_eviction",
            message: format!(
                "Redis runs with maxmemory-policy {policy}, which can drop queued jobs; \
                 set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in \
                 redis.conf) or set redis.allow_eviction = true to accept the risk"
            ),
        })
    }

    /// Connects lazily: this succeeds while Redis is down.
    pub fn connect(settings: Settings) -> Result<Self, ServicesError> {
        Self::with_resolver(settings, Arc::new(SystemResolver))
    }

    /// As [`Services::connect`], with the DNS resolver the SSRF checks use
    /// (tests pass a fixed one to play DNS tricks).
    pub fn with_resolver(
        settings: Settings,
        resolver: Arc<dyn NameResolver>,
    ) -> Result<Self, ServicesError> {
        let conn = crate::redis_conn::connect(&settings.redis)?;
        let (knowledge, search) = knowledge(&settings, conn.clone())?;
        let stores = Stores::open(&settings, conn);
        let publisher = Publisher {
            webhooks: stores.webhooks.clone(),
            deliveries: stores.deliveries.clone(),
            queue: stores.queue.clone(),
            sequences: stores.sequences.clone(),
        };
        let policy = SsrfPolicy::new(settings.security.allowed_cidrs.clone());
        let intake = intake(&settings, &stores, &policy, &resolver);
        let chat = Chat::new(&settings, &stores, &publisher);
        Ok(Self {
            settings: Arc::new(settings),
            queue: stores.queue,
            webhooks: stores.webhooks,
            deliveries: stores.deliveries,
            publisher,
            rate_limiter: stores.rate_limiter,
            sessions: stores.sessions,
            documents: stores.documents,
            intake,
            escalator: chat.escalator,
            handover: chat.handover,
            ratings: chat.ratings,
            gaps: stores.gaps,
            chat_stats: stores.chat_stats,
            knowledge,
            search,
            replica_reports: stores.replica_reports,
            policy,
            resolver,
        })
    }
}

/// Everything that reads and writes Redis directly, over one connection.
struct Stores {
    queue: QueueClient,
    webhooks: WebhookStore,
    deliveries: DeliveryStore,
    rate_limiter: RateLimiter,
    sessions: SessionStore,
    documents: DocumentStore,
    chat_stats: ChatStats,
    gaps: GapLog,
    replica_reports: ReplicaReports,
    sequences: Sequences,
}

impl Stores {
    fn open(settings: &Settings, conn: ConnectionManager) -> Self {
        let prefix = settings.redis.key_prefix.clone();
        Self {
            queue: QueueClient::new(conn.clone(), prefix.clone()).with_durability(Durability {
                replicas: settings.redis.wait_replicas,
                timeout: settings.redis.wait_timeout,
            }),
            webhooks: WebhookStore::new(
                conn.clone(),
                &prefix,
                SecretBox::new(settings.secrets.encryption_keys.clone()),
            ),
            sessions: SessionStore::new(
                conn.clone(),
                &prefix,
                settings.chat.session_idle_timeout,
                settings.delivery.history_ttl,
                settings.chat.history_turns,
            ),
            documents: DocumentStore::new(conn.clone(), prefix.clone()),
            chat_stats: ChatStats::new(conn.clone(), &prefix),
            gaps: GapLog::new(conn.clone(), &prefix),
            replica_reports: ReplicaReports::new(conn.clone(), &prefix),
            rate_limiter: RateLimiter::new(conn.clone(), prefix.clone()),
            sequences: Sequences::new(conn.clone(), prefix.clone(), settings.delivery.history_ttl),
            deliveries: DeliveryStore::new(
                conn,
                prefix,
                settings.delivery.history_ttl,
                settings.delivery.history_max_per_webhook,
            ),
        }
    }
}

/// The incoming-webhook intake, with the stores it writes to.
fn intake(
    settings: &Settings,
    stores: &Stores,
    policy: &SsrfPolicy,
    resolver: &Arc<dyn NameResolver>,
) -> Intake {
    Intake {
        webhooks: stores.webhooks.clone(),
        sessions: stores.sessions.clone(),
        documents: stores.documents.clone(),
        queue: stores.queue.clone(),
        policy: policy.clone(),
        resolver: resolver.clone(),
        timestamp_tolerance: settings.signing.timestamp_tolerance,
        idempotency_ttl: settings.incoming.idempotency_ttl,
        webhook_cache: Arc::new(WebhookCache::new(settings.incoming.webhook_cache_ttl)),
    }
}

/// What operators and users do to a chat beyond sending messages.
struct Chat {
    escalator: Escalator,
    handover: Handover,
    ratings: Ratings,
}

impl Chat {
    fn new(settings: &Settings, stores: &Stores, publisher: &Publisher) -> Self {
        Self {
            escalator: Escalator {
                sessions: stores.sessions.clone(),
                publisher: publisher.clone(),
                operators: settings.chat.operators.clone(),
                assignment: settings.chat.operator_assignment,
            },
            handover: Handover {
                sessions: stores.sessions.clone(),
                publisher: publisher.clone(),
                stats: stores.chat_stats.clone(),
                operators: settings.chat.operators.clone(),
            },
            ratings: Ratings {
                sessions: stores.sessions.clone(),
                stats: stores.chat_stats.clone(),
                history_turns: settings.chat.history_turns,
            },
        }
    }
}
