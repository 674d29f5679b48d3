//! The development set (`rag/tests/devset/`, described in its README) run
//! through the chat turn the worker makes for every message
//! (`shared::chat::answer_policy::reply_for`: request-for-a-person rule,
//! retrieval, extractive answer, confidence bands), one product at a time,
//! with the figures issue 10 asks for.
//!
//! Each product gets its own key prefix in one private Redis and its own
//! tantivy replica, so products never see each other's articles: a
//! product stands for one customer's knowledge base.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use rag::chunk::{self, ChunkOptions};
use rag::classify::Classifier;
use rag::confidence::Features;
use rag::knowledge::Knowledge;
use rag::parse::{ParseLimits, parse};
use rag::search::EmbeddedSearch;
use rag::text::{Analyzer, is_russian};
use rag::types::{DocumentMeta, Format};
use serde::Deserialize;
use shared::chat::answer_policy::{self, Handover, Thresholds};

use crate::RedisServer;

/// The shipped `retrieval.top_k`.
const TOP_K: usize = 5;

pub fn devset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rag/tests/devset")
}

/// The answer bands `config/default.toml` ships.
pub fn shipped_thresholds() -> anyhow::Result<Thresholds> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/default.toml");
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    let chat = config
        .get("chat")
        .and_then(|c| c.as_table())
        .context("config/default.toml: [chat]")?;
    let get = |key: &str| {
        chat.get(key)
            .and_then(|v| v.as_float())
            .with_context(|| format!("config/default.toml: chat.{key}"))
    };
    Ok(Thresholds::new(
        get("escalation_threshold")?,
        get("offer_person_threshold")?,
    )?)
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May be used to fit anything.
    Fit,
    /// Never used to fit or choose anything; the reported figure.
    Holdout,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Product {
    pub name: String,
    pub path: PathBuf,
    pub questions: PathBuf,
    pub role: Role,
}

#[derive(Deserialize)]
struct Manifest {
    product: Vec<Product>,
}

pub fn products(dir: &Path) -> anyhow::Result<Vec<Product>> {
    let manifest: Manifest = toml::from_str(
        &std::fs::read_to_string(dir.join("manifest.toml")).context("manifest.toml")?,
    )?;
    Ok(manifest.product)
}

#[derive(Deserialize)]
struct Questions {
    #[serde(default)]
    answerable: Vec<Answerable>,
    #[serde(default)]
    off_topic: Vec<OffTopic>,
    #[serde(default)]
    human: Vec<Human>,
}

#[derive(Deserialize)]
struct Answerable {
    q: String,
    doc: String,
    facts: Vec<String>,
}

#[derive(Deserialize)]
struct OffTopic {
    q: String,
    #[serde(default)]
    near_miss: bool,
}

#[derive(Deserialize)]
struct Human {
    q: String,
}

/// What a question expects.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    Answer {
        doc: String,
        facts: Vec<String>,
        /// The question is in another language than the article.
        cross_lingual: bool,
    },
    OffTopic {
        near_miss: bool,
    },
    Person,
}

/// One question as the chat turn handled it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub product: String,
    pub role: Role,
    pub question: String,
    pub expected: Expected,
    pub answer: String,
    pub first_source: Option<String>,
    pub confidence: f64,
    pub features: Features,
    pub handover: Option<Handover>,
    pub millis: f64,
    /// Analysed words of the question no article has (nor their
    /// alternatives or translations).
    pub unknown: Vec<String>,
}

impl Outcome {
    pub fn handed_over(&self) -> bool {
        matches!(
            self.handover,
            Some(Handover::Asked | Handover::LowConfidence(_))
        )
    }

    pub fn right_article(&self) -> bool {
        matches!(&self.expected, Expected::Answer { doc, .. } if self.first_source.as_ref() == Some(doc))
    }

    /// Share of the expected facts the answer text contains (case and
    /// runs of white space ignored).
    pub fn facts_found(&self) -> f64 {
        let Expected::Answer { facts, .. } = &self.expected else {
            return 0.0;
        };
        if facts.is_empty() {
            return 1.0;
        }
        let answer = normalised(&self.answer);
        let found = facts
            .iter()
            .filter(|f| answer.contains(&normalised(f)))
            .count();
        found as f64 / facts.len() as f64
    }
}

fn normalised(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "md" => Some(Format::Markdown),
        "html" | "htm" => Some(Format::Html),
        "txt" => Some(Format::Text),
        _ => None,
    }
}

/// A product's articles indexed in a fresh replica under their own key
/// prefix, and the turn configured as the service ships it.
pub struct ProductBase {
    knowledge: Knowledge,
    search: Arc<EmbeddedSearch>,
    /// Article file name → whether it is in Russian.
    russian: HashMap<String, bool>,
    /// Every term of the articles, to show which words of a question the
    /// knowledge base lacks.
    vocabulary: HashSet<String>,
    analyzer: Arc<Analyzer>,
}

impl ProductBase {
    pub async fn load(
        redis: &RedisServer,
        dir: &Path,
        product: &Product,
        analyzer: &Arc<Analyzer>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis.url())?;
        let search = Arc::new(EmbeddedSearch::open(
            client.get_connection_manager().await?,
            client.get_connection_manager().await?,
            &format!("devset-{}", product.name),
            100_000,
            None,
            analyzer.clone(),
        )?);
        search.follow();
        let mut russian = HashMap::new();
        let mut vocabulary = HashSet::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(&product.path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| format_of(p).is_some())
            .collect();
        files.sort();
        for path in files {
            let Some(format) = format_of(&path) else {
                continue;
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("article name")?
                .to_owned();
            let bytes = std::fs::read(&path)?;
            let parsed = parse(format, None, &bytes, &ParseLimits::default())
                .with_context(|| format!("{}: parse", path.display()))?;
            let text: String = parsed
                .blocks
                .iter()
                .map(|b| b.text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            russian.insert(name.clone(), is_russian(&text));
            vocabulary.extend(analyzer.terms(&text));
            vocabulary.extend(analyzer.terms(parsed.title.as_deref().unwrap_or_default()));
            let chunks = chunk::chunk(&parsed, &ChunkOptions::default());
            let meta = DocumentMeta {
                document_id: name,
                title: parsed.title.clone().unwrap_or_default(),
            };
            search.index(&meta, &chunks).await?;
        }
        if russian.is_empty() {
            bail!("{}: no articles", product.name);
        }
        let knowledge = Knowledge::new(
            search.clone(),
            analyzer.clone(),
            Classifier::builtin(analyzer.clone()),
            TOP_K,
        );
        Ok(Self {
            knowledge,
            search,
            russian,
            vocabulary,
            analyzer: analyzer.clone(),
        })
    }

    /// Every question of the product through the chat turn.
    pub async fn ask_all(
        &self,
        dir: &Path,
        product: &Product,
        thresholds: &Thresholds,
    ) -> anyhow::Result<Vec<Outcome>> {
        let questions: Questions =
            toml::from_str(&std::fs::read_to_string(dir.join(&product.questions))?)
                .with_context(|| format!("{}", product.questions.display()))?;
        let mut asked: Vec<(String, Expected)> = Vec::new();
        for a in questions.answerable {
            let Some(&doc_russian) = self.russian.get(&a.doc) else {
                bail!("{}: no article {}", product.name, a.doc);
            };
            let cross_lingual = is_russian(&a.q) != doc_russian;
            asked.push((
                a.q,
                Expected::Answer {
                    doc: a.doc,
                    facts: a.facts,
                    cross_lingual,
                },
            ));
        }
        for o in questions.off_topic {
            asked.push((
                o.q,
                Expected::OffTopic {
                    near_miss: o.near_miss,
                },
            ));
        }
        for h in questions.human {
            asked.push((h.q, Expected::Person));
        }
        let mut outcomes = Vec::with_capacity(asked.len());
        for (question, expected) in asked {
            let started = Instant::now();
            let (reply, handover) =
                answer_policy::reply_for(&self.knowledge, thresholds, &question).await?;
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            let features = self.search.search(&question, TOP_K).await?.features;
            let unknown = self
                .analyzer
                .query(&question)
                .groups
                .into_iter()
                .filter(|g| {
                    !g.all()
                        .chain(g.translations.iter().map(String::as_str))
                        .any(|t| self.vocabulary.contains(t))
                })
                .map(|g| g.term)
                .collect();
            outcomes.push(Outcome {
                product: product.name.clone(),
                role: product.role,
                question,
                expected,
                answer: reply.answer,
                first_source: reply.sources.first().map(|s| s.document_id.clone()),
                confidence: reply.confidence,
                features,
                handover,
                millis,
                unknown,
            });
        }
        Ok(outcomes)
    }
}

/// Issue 10's figures over a set of outcomes; `None` where the set has no
/// question of that kind.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub questions: usize,
    pub same_language_first: Option<f64>,
    pub cross_lingual_first: Option<f64>,
    pub answerable_handed_over: Option<f64>,
    pub answerable_offered: Option<f64>,
    pub off_topic_handed_over: Option<f64>,
    pub near_miss_handed_over: Option<f64>,
    pub person_requests_honoured: Option<f64>,
    pub facts_in_answer: Option<f64>,
    /// Of the answerable questions answered (not handed over) from the
    /// right article: how good the sentence choice is, apart from
    /// retrieval and confidence.
    pub facts_when_right: Option<f64>,
    pub auc_off_topic: Option<f64>,
    pub auc_near_miss: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn share<'a>(
    outcomes: impl Iterator<Item = &'a Outcome>,
    yes: impl Fn(&Outcome) -> bool,
) -> Option<f64> {
    let (mut n, mut k) = (0usize, 0usize);
    for o in outcomes {
        n += 1;
        k += usize::from(yes(o));
    }
    (n > 0).then(|| k as f64 / n as f64)
}

/// Probability that a random positive scores above a random negative.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for p in positives {
        for n in negatives {
            sum += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(sum / (positives.len() * negatives.len()) as f64)
}

impl Figures {
    pub fn of(outcomes: &[&Outcome]) -> Self {
        let answerable = || {
            outcomes
                .iter()
                .copied()
                .filter(|o| matches!(o.expected, Expected::Answer { .. }))
        };
        let same = || {
            answerable().filter(|o| {
                matches!(
                    o.expected,
                    Expected::Answer {
                        cross_lingual: false,
                        ..
                    }
                )
            })
        };
        let cross = || {
            answerable().filter(|o| {
                matches!(
                    o.expected,
                    Expected::Answer {
                        cross_lingual: true,
                        ..
                    }
                )
            })
        };
        let off = || {
            outcomes
                .iter()
                .copied()
                .filter(|o| matches!(o.expected, Expected::OffTopic { .. }))
        };
        let near =
            || off().filter(|o| matches!(o.expected, Expected::OffTopic { near_miss: true }));
        let person = || {
            outcomes
                .iter()
                .copied()
                .filter(|o| o.expected == Expected::Person)
        };
        let correct: Vec<f64> = answerable()
            .filter(|o| o.right_article())
            .map(|o| o.confidence)
            .collect();
        let off_conf: Vec<f64> = off().map(|o| o.confidence).collect();
        let near_conf: Vec<f64> = near().map(|o| o.confidence).collect();
        let facts: Vec<f64> = answerable().map(Outcome::facts_found).collect();
        let right: Vec<f64> = answerable()
            .filter(|o| o.right_article() && !o.handed_over())
            .map(Outcome::facts_found)
            .collect();
        let mut millis: Vec<f64> = outcomes.iter().map(|o| o.millis).collect();
        millis.sort_by(f64::total_cmp);
        Figures {
            questions: outcomes.len(),
            same_language_first: share(same(), Outcome::right_article),
            cross_lingual_first: share(cross(), Outcome::right_article),
            answerable_handed_over: share(answerable(), Outcome::handed_over),
            answerable_offered: share(answerable(), |o| o.handover == Some(Handover::Offered)),
            off_topic_handed_over: share(off(), Outcome::handed_over),
            near_miss_handed_over: share(near(), Outcome::handed_over),
            person_requests_honoured: share(person(), |o| o.handover == Some(Handover::Asked)),
            facts_in_answer: (!facts.is_empty())
                .then(|| facts.iter().sum::<f64>() / facts.len() as f64),
            facts_when_right: (!right.is_empty())
                .then(|| right.iter().sum::<f64>() / right.len() as f64),
            auc_off_topic: auc(&correct, &off_conf),
            auc_near_miss: auc(&correct, &near_conf),
            p99_ms: (!millis.is_empty())
                .then(|| millis[((millis.len() - 1) as f64 * 0.99).round() as usize]),
        }
    }
}
