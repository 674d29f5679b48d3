//! A question as a tantivy query, built from analysed terms in code (the
//! engine's query-string parser never sees user text, so `AND`, `:`, `*`
//! or quotes are just characters), and the retrieval features the
//! confidence is computed from.
//!
//! Each distinct query term is a group; a group matches through the term
//! itself, one of its glossary alternatives or one of its dictionary
//! translations and scores its best one (an alternative at
//! [`ALTERNATIVE_WEIGHT`], a translation at [`TRANSLATION_WEIGHT`]); a
//! chunk's score is the sum over groups, each BM25 (k1 1.2, b 0.75).

use std::collections::HashMap;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, DisjunctionMaxQuery, Occur, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, DocSet, Score, Searcher, TantivyDocument};

use super::SearchError;
use super::schema::{DOC_KEY, Fields, doc_key};
use crate::confidence::{Features, confidence};
use crate::passage::Weighted;
use crate::text::{Analyzer, Query, TRANSLATION_WEIGHT, TermGroup};
use crate::types::Hit;

/// Weight of a glossary alternative relative to the term the user typed: a
/// translation is good evidence but not as good as the word itself.
pub const ALTERNATIVE_WEIGHT: f32 = 0.8;
/// Query terms beyond this are ignored: no support question needs more,
/// and each costs a posting list.
pub const MAX_GROUPS: usize = 32;
/// Glossary alternatives beyond this per term are ignored, likewise.
pub const MAX_ALTERNATIVES: usize = 8;
/// Only the start of a question is analysed: a 1 MB "question" costs what
/// a long paragraph does.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Hits a search can return.
pub const MAX_LIMIT: usize = 100;
/// Hits ranked to find the best chunk of another document than the top
/// one (for the margin) without a second search, in the common case.
const MARGIN_DEPTH: usize = 20;
/// Hits whose agreement on one document the confidence looks at.
const AGREEMENT_DEPTH: usize = 5;

/// BM25's k1, as tantivy uses it: a term's best possible score is
/// `idf · (k1 + 1)`.
const K1: f32 = 1.2;

/// `text` cut to at most [`MAX_QUERY_BYTES`], on a character boundary.
pub fn bounded(text: &str) -> &str {
    if text.len() <= MAX_QUERY_BYTES {
        return text;
    }
    let mut end = MAX_QUERY_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The analysed query capped to [`MAX_GROUPS`] × [`MAX_ALTERNATIVES`].
pub fn capped(mut query: Query) -> Query {
    query.groups.truncate(MAX_GROUPS);
    for group in &mut query.groups {
        group.alternatives.truncate(MAX_ALTERNATIVES);
    }
    query
}

fn term_query(fields: &Fields, term: &str) -> Box<dyn tantivy::query::Query> {
    Box::new(TermQuery::new(
        fields.term(term),
        IndexRecordOption::WithFreqs,
    ))
}

fn group_query(fields: &Fields, group: &TermGroup) -> Box<dyn tantivy::query::Query> {
    if group.alternatives.is_empty() && group.translations.is_empty() {
        return term_query(fields, &group.term);
    }
    let boosted = |term: &str, weight: f32| -> Box<dyn tantivy::query::Query> {
        Box::new(BoostQuery::new(term_query(fields, term), weight))
    };
    let disjuncts = std::iter::once(term_query(fields, &group.term))
        .chain(
            group
                .alternatives
                .iter()
                .map(|t| boosted(t, ALTERNATIVE_WEIGHT)),
        )
        .chain(
            group
                .translations
                .iter()
                .map(|t| boosted(t, TRANSLATION_WEIGHT)),
        )
        .collect();
    Box::new(DisjunctionMaxQuery::new(disjuncts))
}

/// Groups without alternatives are plain term queries, so a question
/// without glossary words gets tantivy's block-max WAND pruning.
pub fn build(fields: &Fields, query: &Query) -> Box<dyn tantivy::query::Query> {
    Box::new(BooleanQuery::new(
        query
            .groups
            .iter()
            .map(|g| (Occur::Should, group_query(fields, g)))
            .collect(),
    ))
}

/// What a search found, with the features its confidence came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOutcome {
    pub hits: Vec<Hit>,
    pub confidence: f64,
    pub features: Features,
    pub query: Query,
    /// Per query group, its IDF mass (see [`Features`]): what the answer
    /// weighs a sentence's words by.
    pub group_weights: Vec<f64>,
}

impl SearchOutcome {
    pub fn nothing(query: Query) -> Self {
        let features = Features {
            groups: query.groups.len(),
            ..Features::default()
        };
        SearchOutcome {
            hits: Vec::new(),
            confidence: 0.0,
            features,
            query,
            group_weights: Vec::new(),
        }
    }
}

/// Runs `query` on one point-in-time view of the index.
pub fn run(
    searcher: &Searcher,
    fields: &Fields,
    analyzer: &Analyzer,
    query: Query,
    limit: usize,
) -> Result<SearchOutcome, SearchError> {
    let limit = limit.min(MAX_LIMIT);
    if query.is_empty() || limit == 0 {
        return Ok(SearchOutcome::nothing(query));
    }
    let tantivy_query = build(fields, &query);
    let ranked = searcher.search(
        &tantivy_query,
        &TopDocs::with_limit(limit.max(MARGIN_DEPTH)).order_by_score(),
    )?;
    let Some(&top) = ranked.first() else {
        return Ok(SearchOutcome::nothing(query));
    };
    let hits: Vec<Hit> = ranked
        .iter()
        .take(limit)
        .map(|(score, address)| Ok(hit(fields, *score, &searcher.doc(*address)?)))
        .collect::<Result<_, SearchError>>()?;
    let ranking = Ranking {
        searcher,
        fields,
        query: &query,
        tantivy_query: &*tantivy_query,
        ranked: &ranked,
        top,
    };
    let (features, group_weights) = score(&ranking, analyzer, &hits)?;
    Ok(SearchOutcome {
        hits,
        confidence: confidence(&features),
        features,
        query,
        group_weights,
    })
}

/// One search's ranking and what it ran on.
struct Ranking<'a> {
    searcher: &'a Searcher,
    fields: &'a Fields,
    query: &'a Query,
    tantivy_query: &'a dyn tantivy::query::Query,
    ranked: &'a [(Score, DocAddress)],
    /// The first of `ranked`.
    top: (Score, DocAddress),
}

/// The retrieval features the confidence comes from, and per query group
/// the weight the answer gives its words. `hits` is the start of the
/// ranking, at least its top.
#[tracing::instrument(name = "rag.score", skip_all, fields(groups = r.query.groups.len()))]
fn score(
    r: &Ranking<'_>,
    analyzer: &Analyzer,
    hits: &[Hit],
) -> Result<(Features, Vec<f64>), SearchError> {
    let (top_score, top_address) = r.top;
    let top_doc = hits
        .first()
        .map(|h| h.document_id.as_str())
        .unwrap_or_default();
    let other = best_of_another_document(r.searcher, r.fields, r.tantivy_query, r.ranked, top_doc)?;
    let matched = groups_matched(r.searcher, r.fields, r.query, top_address)?;
    let reach = reach(r.searcher, r.fields, r.query)?;
    let mass: f64 = reach.iter().map(|r| r.idf_mass).sum();
    let top = f64::from(top_score);
    let groups = r.query.groups.len();
    let known_mass: f64 = reach.iter().filter(|r| r.known).map(|r| r.idf_mass).sum();
    // A group the corpus lacks can match no sentence: `known` already
    // says how much of the question that is.
    let group_weights: Vec<f64> = reach
        .iter()
        .map(|r| if r.known { r.idf_mass } else { 0.0 })
        .collect();
    let weighted = Weighted::new(r.query, &group_weights);
    let passage = hits
        .iter()
        .filter(|h| h.document_id == top_doc)
        .flat_map(|h| weighted.sentences(analyzer, h.heading.as_deref(), &h.text))
        .map(|s| s.coverage)
        .fold(0.0, f64::max);
    let features = Features {
        top_norm: ratio(top, known_mass),
        coverage: ratio(matched.iter().filter(|m| **m).count() as f64, groups as f64),
        idf_coverage: ratio(
            reach
                .iter()
                .zip(&matched)
                .filter(|(r, m)| r.known && **m)
                .map(|(r, _)| r.idf_mass)
                .sum(),
            known_mass,
        ),
        known: ratio(known_mass, mass),
        margin: ratio(top - other, top),
        agreement: agreement(r.ranked, r.searcher, top_key(r.searcher, top_address)?)?,
        passage,
        groups,
    };
    Ok((features, group_weights))
}

fn hit(fields: &Fields, score: Score, doc: &TantivyDocument) -> Hit {
    Hit {
        document_id: text_of(doc, fields.doc),
        chunk_id: text_of(doc, fields.chunk),
        title: text_of(doc, fields.title),
        heading: doc
            .get_first(fields.heading)
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        text: text_of(doc, fields.text),
        score: f64::from(score),
    }
}

fn text_of(doc: &TantivyDocument, field: tantivy::schema::Field) -> String {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Best score of a chunk of another document than `top_doc`: among the
/// ranked hits if one is there, else by a second search excluding it
/// (when every ranked hit is from the top document).
fn best_of_another_document(
    searcher: &Searcher,
    fields: &Fields,
    query: &dyn tantivy::query::Query,
    ranked: &[(Score, DocAddress)],
    top_doc: &str,
) -> Result<f64, SearchError> {
    let top_key = doc_key(top_doc);
    let mut columns = HashMap::new();
    for (score, address) in ranked.iter().skip(1) {
        let column = match columns.entry(address.segment_ord) {
            std::collections::hash_map::Entry::Occupied(c) => c.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64(DOC_KEY)?,
            ),
        };
        if column.first(address.doc_id) != Some(top_key) {
            return Ok(f64::from(*score));
        }
    }
    let excluding = BooleanQuery::new(vec![
        (Occur::Must, query.box_clone()),
        (
            Occur::MustNot,
            Box::new(TermQuery::new(
                fields.doc_term(top_doc),
                IndexRecordOption::Basic,
            )),
        ),
    ]);
    let best = searcher.search(&excluding, &TopDocs::with_limit(1).order_by_score())?;
    Ok(best.first().map_or(0.0, |(score, _)| f64::from(*score)))
}

/// Per group, whether the chunk at `address` contains one of its terms.
fn groups_matched(
    searcher: &Searcher,
    fields: &Fields,
    query: &Query,
    address: DocAddress,
) -> Result<Vec<bool>, SearchError> {
    let segment = searcher.segment_reader(address.segment_ord);
    let inverted = segment.inverted_index(fields.terms)?;
    let mut matched = Vec::with_capacity(query.groups.len());
    for group in &query.groups {
        let mut found = false;
        for term in group
            .all()
            .chain(group.translations.iter().map(String::as_str))
        {
            // A fresh posting list stands on its first document, and
            // tantivy only seeks forward.
            if let Some(mut postings) = inverted
                .read_postings(&fields.term(term), IndexRecordOption::Basic)
                .map_err(|e| SearchError::Storage(e.to_string()))?
                && postings.doc() <= address.doc_id
                && postings.seek(address.doc_id) == address.doc_id
            {
                found = true;
                break;
            }
        }
        matched.push(found);
    }
    Ok(matched)
}

/// What one query group can contribute to a score.
struct Reach {
    /// The best score the group can add: its best term's
    /// `weight · idf · (k1 + 1)`. A group none of whose terms occur counts
    /// at its own term's idf: the question asks for something the corpus
    /// lacks, and the rarer the better a sign of that.
    idf_mass: f64,
    /// Whether any of its terms (translations included) occurs at all.
    known: bool,
}

fn reach(searcher: &Searcher, fields: &Fields, query: &Query) -> Result<Vec<Reach>, SearchError> {
    // tantivy's BM25 counts every document slot, deleted or not.
    let n: u64 = searcher
        .segment_readers()
        .iter()
        .map(|s| u64::from(s.max_doc()))
        .sum();
    let mut out = Vec::with_capacity(query.groups.len());
    for group in &query.groups {
        let weighted = group
            .all()
            .enumerate()
            .map(|(i, t)| (t, if i == 0 { 1.0 } else { ALTERNATIVE_WEIGHT }))
            .chain(
                group
                    .translations
                    .iter()
                    .map(|t| (t.as_str(), TRANSLATION_WEIGHT)),
            );
        let mut best: Option<f32> = None;
        for (term, weight) in weighted {
            let df = searcher.doc_freq(&fields.term(term))?.min(n);
            if df > 0 {
                let reach = weight * idf(df, n) * (K1 + 1.0);
                best = Some(best.map_or(reach, |b| b.max(reach)));
            }
        }
        out.push(Reach {
            idf_mass: f64::from(best.unwrap_or_else(|| idf(0, n) * (K1 + 1.0))),
            known: best.is_some(),
        });
    }
    Ok(out)
}

/// The document key of the chunk at `address`.
fn top_key(searcher: &Searcher, address: DocAddress) -> Result<Option<u64>, SearchError> {
    Ok(searcher
        .segment_reader(address.segment_ord)
        .fast_fields()
        .u64(DOC_KEY)?
        .first(address.doc_id))
}

/// Share of the score of the first [`AGREEMENT_DEPTH`] hits that goes to
/// chunks of the top document: several passages of one article agreeing
/// is a better sign than one lucky chunk among many articles.
fn agreement(
    ranked: &[(Score, DocAddress)],
    searcher: &Searcher,
    top_key: Option<u64>,
) -> Result<f64, SearchError> {
    let (mut same, mut all) = (0.0, 0.0);
    for (score, address) in ranked.iter().take(AGREEMENT_DEPTH) {
        let key = self::top_key(searcher, *address)?;
        all += f64::from(*score);
        if key == top_key {
            same += f64::from(*score);
        }
    }
    Ok(ratio(same, all))
}

fn idf(doc_freq: u64, docs: u64) -> f32 {
    let x = ((docs - doc_freq) as f32 + 0.5) / (doc_freq as f32 + 0.5);
    (1.0 + x).ln()
}

/// `a / b` clamped to [0, 1]; 0 when it is not a number.
fn ratio(a: f64, b: f64) -> f64 {
    let r = a / b;
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "я".repeat(5000);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_QUERY_BYTES && cut.len() >= MAX_QUERY_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'я'));
    }
}
