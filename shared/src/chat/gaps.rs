//! Knowledge gaps: the questions the knowledge base could not answer.
//!
//! Every question handed to a person for **low confidence** (not a user
//! asking for a person: that says nothing about the knowledge base) is
//! appended to a capped Redis stream (`P:gaps`, see [`crate::keys`]);
//! `GET /knowledge/gaps` groups the most recent of them by similarity, so
//! whoever writes the documentation sees "refunds to a closed card: 14
//! times this week" rather than 14 rows.
//!
//! Grouping is greedy over at most [`GROUP_WINDOW`] records, newest first:
//! each question joins the group whose first (newest) question it is most
//! like, if the token Jaccard similarity is at least [`SIMILARITY`], or
//! starts a group. Tokens are the retrieval analyzer's terms (lowercased,
//! stop-words dropped, Russian and English stemmed), so "How do I cancel
//! my subscription?" and "cancel subscriptions" share all of theirs and
//! "How do I ..." alone shares nothing. The bounded window keeps the work
//! (at most window × groups small-set comparisons) bounded however long
//! the stream is.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rag::glossary::Glossary;
use rag::text::Analyzer;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamMaxlen, StreamRangeReply};
use serde::Serialize;

use crate::config::KeyPrefix;
use crate::ids::{JobId, SessionId};
use crate::keys;
use crate::store::StoreError;
use crate::time::{from_ms, serde_rfc3339};

/// Records the stream keeps (approximately: `XADD MAXLEN ~` trims whole
/// nodes, which is cheap).
pub const GAP_LOG_MAX: usize = 10_000;
/// Most recent records a grouping looks at.
pub const GROUP_WINDOW: usize = 1_000;
/// Least token Jaccard similarity for a question to join a group.
pub const SIMILARITY: f64 = 0.5;
/// Example sessions and question variants shown per group.
const EXAMPLES: usize = 5;
/// Longest question stored (characters); the rest says nothing more about
/// the gap.
const MAX_QUESTION_CHARS: usize = 1_000;

/// One question handed over for low confidence.
#[derive(Clone, Debug, PartialEq)]
pub struct GapRecord {
    pub question: String,
    pub session_id: SessionId,
    pub confidence: f64,
    /// The chat job it came from: a job redone after a crash records its
    /// question again, and grouping counts it once.
    pub job_id: JobId,
    pub at: DateTime<Utc>,
}

/// Similar gap questions.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GapGroup {
    /// The group's newest question, as asked.
    pub representative: String,
    /// Questions in the group (within the window looked at).
    pub count: u64,
    #[serde(with = "serde_rfc3339")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub last_seen: DateTime<Utc>,
    /// Up to five sessions that asked it, newest first.
    #[schema(value_type = Vec<String>)]
    pub session_ids: Vec<SessionId>,
    /// Up to five distinct wordings, newest first.
    pub questions: Vec<String>,
    /// Mean retrieval confidence of its questions, 2 decimals.
    pub mean_confidence: f64,
}

/// The groups of one look at the log.
#[derive(Clone, Debug, PartialEq)]
pub struct GapReport {
    /// Most frequent first (then most recent).
    pub groups: Vec<GapGroup>,
    /// Records looked at (at most [`GROUP_WINDOW`]).
    pub scanned: usize,
}

#[derive(Clone)]
pub struct GapLog {
    conn: ConnectionManager,
    key: String,
    analyzer: Arc<Analyzer>,
}

impl GapLog {
    pub fn new(conn: ConnectionManager, prefix: &KeyPrefix) -> Self {
        Self {
            conn,
            key: keys::gaps(prefix),
            // Terms only (no query expansion), so no glossary is needed.
            analyzer: Arc::new(Analyzer::new(Glossary::default())),
        }
    }

    /// Appends a low-confidence question. Best effort, as counters are:
    /// the hand-over it belongs to has happened whether or not it is
    /// logged, and failing the chat job for it would send that twice.
    pub async fn record(
        &self,
        question: &str,
        session_id: &SessionId,
        confidence: f64,
        job_id: &JobId,
    ) {
        let question: String = question.chars().take(MAX_QUESTION_CHARS).collect();
        let confidence = format!("{:.4}", confidence.clamp(0.0, 1.0));
        let added: Result<String, _> = self
            .conn
            .clone()
            .xadd_maxlen(
                &self.key,
                StreamMaxlen::Approx(GAP_LOG_MAX),
                "*",
                &[
                    ("q", question.as_str()),
                    ("s", session_id.as_str()),
                    ("c", confidence.as_str()),
                    ("j", job_id.as_str()),
                ],
            )
            .await;
        if let Err(error) = added {
            tracing::warn!(%error, %session_id, "knowledge gap not recorded");
        }
    }

    /// The most recent records (at most [`GROUP_WINDOW`], none before
    /// `since`), newest first.
    pub async fn recent(&self, since: Option<DateTime<Utc>>) -> Result<Vec<GapRecord>, StoreError> {
        let start = since.map_or_else(|| "-".to_owned(), |t| t.timestamp_millis().to_string());
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrevrange_count(&self.key, "+", start, GROUP_WINDOW)
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                // An entry this version cannot read is left out, not fatal.
                let text = |field: &str| entry.get::<String>(field);
                let ms = entry.id.split('-').next()?.parse::<i64>().ok()?;
                Some(GapRecord {
                    question: text("q")?,
                    session_id: SessionId::parse(&text("s")?).ok()?,
                    confidence: text("c")?.parse().ok()?,
                    job_id: JobId::parse(&text("j")?).ok()?,
                    at: from_ms(ms),
                })
            })
            .collect())
    }

    /// The recent gap questions, grouped. The grouping runs off the async
    /// threads: a full window is a million small comparisons at worst.
    pub async fn report(&self, since: Option<DateTime<Utc>>) -> Result<GapReport, GapError> {
        let records = self.recent(since).await?;
        let analyzer = self.analyzer.clone();
        let scanned = records.len();
        let groups =
            tokio::task::spawn_blocking(move || group(&records, |text| analyzer.terms(text)))
                .await
                .map_err(|e| GapError::Grouping(e.to_string()))?;
        Ok(GapReport { groups, scanned })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("grouping gap questions failed: {0}")]
    Grouping(String),
}

/// A group being built: its seed's tokens and its members, newest first.
struct Building<'a> {
    tokens: BTreeSet<String>,
    members: Vec<&'a GapRecord>,
}

/// Groups `records` (newest first) by token similarity; `terms` gives a
/// text's tokens. Pure, so the rule is tested without Redis.
pub fn group(records: &[GapRecord], terms: impl Fn(&str) -> Vec<String>) -> Vec<GapGroup> {
    let mut seen_jobs = HashSet::new();
    let mut building: Vec<Building> = Vec::new();
    for record in records {
        if !seen_jobs.insert(&record.job_id) {
            continue;
        }
        let tokens = tokens(&record.question, &terms);
        let best = building
            .iter_mut()
            .map(|g| (jaccard(&tokens, &g.tokens), g))
            .filter(|(similarity, _)| *similarity >= SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((_, group)) => group.members.push(record),
            None => building.push(Building {
                tokens,
                members: vec![record],
            }),
        }
    }
    let mut groups: Vec<GapGroup> = building.into_iter().map(finish).collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| b.last_seen.cmp(&a.last_seen))
    });
    groups
}

/// A question's tokens: the analyzer's terms, or its lowercased words when
/// it has none (a question of stop-words only still groups with itself).
fn tokens(question: &str, terms: &impl Fn(&str) -> Vec<String>) -> BTreeSet<String> {
    let analysed: BTreeSet<String> = terms(question).into_iter().collect();
    if !analysed.is_empty() {
        return analysed;
    }
    question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        // Two questions without a word (punctuation only) are alike.
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

fn finish(group: Building) -> GapGroup {
    let members = group.members;
    let newest = members[0];
    let mut session_ids: Vec<SessionId> = Vec::new();
    let mut questions: Vec<String> = Vec::new();
    for m in &members {
        if session_ids.len() < EXAMPLES && !session_ids.contains(&m.session_id) {
            session_ids.push(m.session_id.clone());
        }
        let wording = m.question.trim();
        if questions.len() < EXAMPLES && !questions.iter().any(|q| q == wording) {
            questions.push(wording.to_owned());
        }
    }
    let mean = members.iter().map(|m| m.confidence).sum::<f64>() / members.len() as f64;
    GapGroup {
        representative: newest.question.trim().to_owned(),
        count: members.len() as u64,
        first_seen: members.iter().map(|m| m.at).min().unwrap_or(newest.at),
        last_seen: newest.at,
        session_ids,
        questions,
        mean_confidence: (mean * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer() -> Analyzer {
        Analyzer::new(Glossary::default())
    }

    /// Records newest first, one minute apart, each in its own session.
    fn records(questions: &[&str]) -> Vec<GapRecord> {
        let now = Utc::now();
        questions
            .iter()
            .enumerate()
            .map(|(i, q)| GapRecord {
                question: (*q).to_owned(),
                session_id: SessionId::generate(),
                confidence: 0.1,
                job_id: JobId::generate(),
                at: now - chrono::Duration::minutes(i as i64),
            })
            .collect()
    }

    #[test]
    fn similar_questions_group_and_the_biggest_group_comes_first() {
        let a = analyzer();
        let found = group(
            &records(&[
                "How do I cancel my subscription?",
                "What is the weather in Paris?",
                "cancel subscriptions",
                "How can I cancel the subscription",
                "Как отменить подписку?",
                "Как отменить мою подписку",
            ]),
            |t| a.terms(t),
        );
        let summary: Vec<(u64, &str)> = found
            .iter()
            .map(|g| (g.count, g.representative.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (3, "How do I cancel my subscription?"),
                (2, "Как отменить подписку?"),
                (1, "What is the weather in Paris?"),
            ]
        );
        let top = &found[0];
        assert_eq!(top.session_ids.len(), 3);
        assert_eq!(top.questions[1], "cancel subscriptions");
        assert!(top.first_seen < top.last_seen);
        assert_eq!(top.mean_confidence, 0.1);
    }

    #[test]
    fn shared_question_words_alone_do_not_group() {
        let a = analyzer();
        let found = group(
            &records(&["How do I reset my password?", "How do I change my email?"]),
            |t| a.terms(t),
        );
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn a_redone_job_counts_once_and_wordless_questions_group_together() {
        let a = analyzer();
        let mut list = records(&["???", "?!", "refund"]);
        list.push(GapRecord {
            at: list[2].at - chrono::Duration::minutes(1),
            ..list[2].clone()
        });
        let found = group(&list, |t| a.terms(t));
        let counts: Vec<u64> = found.iter().map(|g| g.count).collect();
        assert_eq!(counts, [2, 1]);
        assert_eq!(found[1].representative, "refund");
    }

    #[test]
    fn empty_log_no_groups() {
        assert!(group(&[], |t| analyzer().terms(t)).is_empty());
    }
}
