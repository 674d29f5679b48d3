//! Extractive answer: the sentences of the retrieved chunks that share the
//! most query terms, so the service can answer without a language model and
//! every word of the answer is traceable to a source.

use std::collections::HashSet;

use serde::Serialize;

use crate::text::{Analyzer, Query};
use crate::types::Hit;

/// Hits whose sentences may enter the answer; lower ones are mostly noise.
const ANSWER_HITS: usize = 3;
const MAX_SOURCES: usize = 3;
const EXCERPT_CHARS: usize = 200;
const ELLIPSIS: char = '…';

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Answer {
    pub text: String,
    pub sources: Vec<Source>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Source {
    pub document_id: String,
    pub title: String,
    pub excerpt: String,
}

/// A sentence of a hit: byte range in the hit text and its query overlap.
struct Sentence {
    rank: usize,
    start: usize,
    end: usize,
    overlap: usize,
}

pub fn extract(analyzer: &Analyzer, query: &Query, hits: &[Hit], max_chars: usize) -> Answer {
    if hits.is_empty() {
        return Answer::default();
    }
    let mut sentences: Vec<Sentence> = Vec::new();
    for (rank, hit) in hits.iter().enumerate().take(ANSWER_HITS) {
        for (start, end) in sentence_spans(&hit.text) {
            let overlap = overlap(analyzer, query, &hit.text[start..end]);
            sentences.push(Sentence {
                rank,
                start,
                end,
                overlap,
            });
        }
    }

    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by_key(|&i| {
        let s = &sentences[i];
        (std::cmp::Reverse(s.overlap), s.rank, s.start)
    });
    let mut chosen: Vec<usize> = Vec::new();
    let mut used = 0;
    for &i in &order {
        let s = &sentences[i];
        if s.overlap == 0 && !chosen.is_empty() {
            break;
        }
        let len = hits[s.rank].text[s.start..s.end].chars().count();
        let sep = usize::from(!chosen.is_empty());
        if used + sep + len <= max_chars {
            chosen.push(i);
            used += sep + len;
        } else if chosen.is_empty() {
            // The best sentence alone is too long: better cut than nothing.
            chosen.push(i);
            break;
        }
    }
    chosen.sort_by_key(|&i| (sentences[i].rank, sentences[i].start));
    let joined = chosen
        .iter()
        .map(|&i| {
            let s = &sentences[i];
            &hits[s.rank].text[s.start..s.end]
        })
        .collect::<Vec<_>>()
        .join(" ");
    let text = cut(&joined, max_chars);

    let mut sources: Vec<Source> = Vec::new();
    for hit in hits {
        if sources.len() == MAX_SOURCES {
            break;
        }
        if sources.iter().any(|s| s.document_id == hit.document_id) {
            continue;
        }
        sources.push(Source {
            document_id: hit.document_id.clone(),
            title: hit.title.clone(),
            excerpt: excerpt(analyzer, query, &hit.text),
        });
    }
    Answer { text, sources }
}

/// Number of query groups (a term or any of its alternatives) in `sentence`.
fn overlap(analyzer: &Analyzer, query: &Query, sentence: &str) -> usize {
    let terms: HashSet<String> = analyzer.terms(sentence).into_iter().collect();
    query
        .groups
        .iter()
        .filter(|g| g.all().any(|t| terms.contains(t)))
        .count()
}

/// ≤ [`EXCERPT_CHARS`] of `text` starting at its best-matching sentence,
/// with an ellipsis on each side where text was left out.
fn excerpt(analyzer: &Analyzer, query: &Query, text: &str) -> String {
    let best = sentence_spans(text)
        .into_iter()
        .map(|(start, end)| (overlap(analyzer, query, &text[start..end]), start))
        .max_by_key(|&(overlap, start)| (overlap, std::cmp::Reverse(start)));
    let Some((_, start)) = best else {
        return String::new();
    };
    let rest = text[start..].trim_end();
    if start == 0 {
        return cut(rest, EXCERPT_CHARS);
    }
    let mut out = String::from(ELLIPSIS);
    out.push_str(&cut(rest, EXCERPT_CHARS - 1));
    out
}

/// `text` in at most `max` chars; when cut, on a word boundary if one is
/// reasonably close, and ending with an ellipsis (counted in `max`).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let keep: String = text.chars().take(max - 1).collect();
    let trimmed = match keep.rfind(char::is_whitespace) {
        Some(i) if i > keep.len() / 2 => keep[..i].trim_end(),
        _ => keep.as_str(),
    };
    let mut out = trimmed.to_owned();
    out.push(ELLIPSIS);
    out
}

/// Byte ranges of the sentences of `text`: split at line breaks and after
/// `.`, `!`, `?`, `…` followed by whitespace; markdown markers trimmed off.
fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
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

    fn hit(doc: &str, text: &str) -> Hit {
        Hit {
            document_id: doc.into(),
            chunk_id: format!("{doc}:1:0"),
            title: format!("Title {doc}"),
            heading: None,
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn empty_hits_give_empty_answer() {
        let a = Analyzer::new(Glossary::default());
        let q = a.query("password");
        assert_eq!(extract(&a, &q, &[], 600), Answer::default());
    }

    #[test]
    fn picks_matching_sentences_in_document_order() {
        let a = Analyzer::new(Glossary::builtin());
        let q = a.query("как сбросить пароль");
        let hits = [
            hit(
                "doc_a",
                "# Вход\nМы любим клиентов. Чтобы сбросить пароль, откройте страницу входа. \
                 Ссылка для сброса пароля действует час.",
            ),
            hit("doc_b", "To reset your password, click Forgot password."),
            hit("doc_a", "Другой кусок про пароль."),
        ];
        let answer = extract(&a, &q, &hits, 600);
        assert!(
            answer.text.starts_with("Чтобы сбросить пароль"),
            "{}",
            answer.text
        );
        assert!(!answer.text.contains("любим"), "{}", answer.text);
        assert_eq!(answer.sources.len(), 2);
        assert_eq!(answer.sources[0].document_id, "doc_a");
        assert!(
            answer.sources[0].excerpt.starts_with('…'),
            "{:?}",
            answer.sources[0]
        );
    }

    #[test]
    fn limits_are_respected_on_char_boundaries() {
        let a = Analyzer::new(Glossary::default());
        let q = a.query("пароль");
        let long = "Пароль ".repeat(200) + ".";
        let answer = extract(&a, &q, &[hit("doc_a", &long)], 50);
        assert!(answer.text.chars().count() <= 50, "{}", answer.text);
        assert!(answer.text.ends_with('…'));
        assert!(answer.sources[0].excerpt.chars().count() <= EXCERPT_CHARS);
        let emoji = "😀".repeat(500);
        let answer = extract(&a, &q, &[hit("doc_a", &emoji)], 7);
        assert!(answer.text.chars().count() <= 7);
    }

    #[test]
    fn at_most_three_sources() {
        let a = Analyzer::new(Glossary::default());
        let q = a.query("refund");
        let hits: Vec<_> = (0..5)
            .map(|i| hit(&format!("doc_{i}"), "Refund rules."))
            .collect();
        assert_eq!(extract(&a, &q, &hits, 600).sources.len(), 3);
    }
}
