//! Sentences of retrieved text and how much of a question each one
//! answers: the extractive answer picks them, and the confidence looks at
//! the best one (a question whose key words stand together in one
//! sentence is far more likely answered than one whose words are spread
//! over a chunk).
//!
//! A sentence "covers" a query group when it holds the group's term, a
//! glossary alternative or a dictionary translation; coverage weighs each
//! group by its IDF mass (rare words count more), or equally without
//! weights.

use std::collections::HashSet;

use crate::text::{Analyzer, Query};

/// One sentence of a text: its byte range and the share of the query's
/// weight it covers, with its heading's words counted in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sentence {
    pub start: usize,
    pub end: usize,
    pub coverage: f64,
}

/// The query's groups with their weights; empty or mismatched weights
/// mean every group weighs the same.
pub struct Weighted<'a> {
    query: &'a Query,
    weights: Vec<f64>,
    total: f64,
}

impl<'a> Weighted<'a> {
    pub fn new(query: &'a Query, weights: &[f64]) -> Self {
        let weights: Vec<f64> = if weights.len() == query.groups.len() {
            weights
                .iter()
                .map(|w| if w.is_finite() { w.max(0.0) } else { 0.0 })
                .collect()
        } else {
            vec![1.0; query.groups.len()]
        };
        let total = weights.iter().sum();
        Self {
            query,
            weights,
            total,
        }
    }

    /// Share of the query's weight whose groups occur in `terms`.
    pub fn coverage(&self, terms: &HashSet<String>) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let covered: f64 = self
            .query
            .groups
            .iter()
            .zip(&self.weights)
            .filter(|(g, _)| {
                g.all()
                    .chain(g.translations.iter().map(String::as_str))
                    .any(|t| terms.contains(t))
            })
            .map(|(_, w)| w)
            .sum();
        (covered / self.total).clamp(0.0, 1.0)
    }

    /// The sentences of `text` with their coverage; `heading`'s words
    /// count for each of them (a sentence under "Refunds" is about
    /// refunds even when it does not say so).
    pub fn sentences(
        &self,
        analyzer: &Analyzer,
        heading: Option<&str>,
        text: &str,
    ) -> Vec<Sentence> {
        let heading_terms = heading.map(|h| analyzer.terms(h)).unwrap_or_default();
        spans(text)
            .into_iter()
            .map(|(start, end)| {
                let mut terms: HashSet<String> =
                    analyzer.terms(&text[start..end]).into_iter().collect();
                terms.extend(heading_terms.iter().cloned());
                Sentence {
                    start,
                    end,
                    coverage: self.coverage(&terms),
                }
            })
            .collect()
    }
}

/// Byte ranges of the sentences of `text`: split at line breaks and after
/// `.`, `!`, `?`, `…` followed by whitespace; markdown markers trimmed off.
pub fn spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        let end = if c == '\n' {
            Some(i)
        } else if matches!(c, '.' | '!' | '?' | '…') && next_is_space {
            Some(i + c.len_utf8())
        } else {
            None
        };
        if let Some(end) = end {
            push_span(text, start, end, &mut spans);
            start = end;
        }
    }
    push_span(text, start, text.len(), &mut spans);
    spans
}

fn push_span(text: &str, start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let lead = piece.len()
        - piece
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '#' | '-' | '*' | '>'))
            .len();
    let trail = piece.len() - piece.trim_end().len();
    if start + lead < end - trail {
        spans.push((start + lead, end - trail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glossary::Glossary;

    #[test]
    fn rare_words_weigh_more() {
        let a = Analyzer::new(Glossary::default());
        let q = a.query("refund card");
        let weighted = Weighted::new(&q, &[3.0, 1.0]);
        let s = weighted.sentences(&a, None, "Refunds take a week. Pay by card.");
        assert_eq!(s.len(), 2);
        assert!((s[0].coverage - 0.75).abs() < 1e-9, "{s:?}");
        assert!((s[1].coverage - 0.25).abs() < 1e-9, "{s:?}");
        let even = Weighted::new(&q, &[]);
        let s = even.sentences(&a, Some("Card refunds"), "Nothing here.");
        assert!((s[0].coverage - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn sentences_split_on_stops_and_lines() {
        let text = "# Title\nOne. Two!\n- three";
        let got: Vec<&str> = spans(text).into_iter().map(|(s, e)| &text[s..e]).collect();
        assert_eq!(got, ["Title", "One.", "Two!", "three"]);
    }
}
