//! Extractive answer: the few sentences of the best article that answer
//! the question (see [`crate::passage`]), so the service can answer
//! without a language model and every word of the answer is traceable to
//! a source; and the sources themselves.

use serde::Serialize;

use crate::passage::{Sentence, Weighted};
use crate::text::{Analyzer, Query, is_russian};
use crate::types::Hit;

/// Chunks of the best article whose sentences may enter the answer.
const ANSWER_HITS: usize = 3;
const MAX_SOURCES: usize = 3;
const EXCERPT_CHARS: usize = 200;
const ELLIPSIS: char = '…';
/// A sentence joins the best one when it covers at least this share of
/// what the best one covers: it answers the same question (chosen on the
/// development set's fit products with `rag-eval`).
const COMPANION: f64 = 0.15;
/// A best sentence shorter than this, or ending in a colon, brings the
/// next one along: it is a lead-in ("To do so:") rather than the answer.
const LEAD_IN_CHARS: usize = 60;

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

/// A sentence of one of the hits.
struct Candidate {
    rank: usize,
    index: usize,
    sentence: Sentence,
}

/// The answer from `hits` (best first): sentences of the first hit's
/// article only, so the text agrees with the first source. `weights` are
/// the query groups' weights (IDF mass); empty means equal.
pub fn extract(
    analyzer: &Analyzer,
    query: &Query,
    weights: &[f64],
    hits: &[Hit],
    max_chars: usize,
) -> Answer {
    let Some(first) = hits.first() else {
        return Answer::default();
    };
    let weighted = Weighted::new(query, weights);
    let mut candidates: Vec<Candidate> = Vec::new();
    for (rank, hit) in hits
        .iter()
        .enumerate()
        .filter(|(_, h)| h.document_id == first.document_id)
        .take(ANSWER_HITS)
    {
        let sentences = weighted.sentences(analyzer, hit.heading.as_deref(), &hit.text);
        candidates.extend(
            sentences
                .into_iter()
                .enumerate()
                .map(|(index, sentence)| Candidate {
                    rank,
                    index,
                    sentence,
                }),
        );
    }
    let text_of = |c: &Candidate| &hits[c.rank].text[c.sentence.start..c.sentence.end];

    let chosen = choose(&candidates, &text_of, max_chars);
    let joined = chosen
        .iter()
        .map(|&i| text_of(&candidates[i]))
        .collect::<Vec<_>>()
        .join(" ");
    let text = cut(&joined, max_chars);

    Answer {
        text,
        sources: sources(&weighted, analyzer, hits),
    }
}

/// Which candidates make the answer, in text order: the best-covering
/// sentence, the next one if it is a lead-in, then the others that cover
/// at least [`COMPANION`] of what it covers, best first, while they fit
/// in `max_chars`.
fn choose<'a>(
    candidates: &[Candidate],
    text_of: &impl Fn(&Candidate) -> &'a str,
    max_chars: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&candidates[a], &candidates[b]);
        y.sentence
            .coverage
            .total_cmp(&x.sentence.coverage)
            .then(x.rank.cmp(&y.rank))
            .then(x.index.cmp(&y.index))
    });
    let mut chosen: Vec<usize> = Vec::new();
    let mut used = 0;
    let mut take = |i: usize, chosen: &mut Vec<usize>| {
        if chosen.contains(&i) {
            return;
        }
        let len = text_of(&candidates[i]).chars().count();
        let sep = usize::from(!chosen.is_empty());
        if chosen.is_empty() || used + sep + len <= max_chars {
            chosen.push(i);
            used += sep + len;
        }
    };
    if let Some(&best) = order.first() {
        take(best, &mut chosen);
        let lead_in = {
            let t = text_of(&candidates[best]);
            t.chars().count() < LEAD_IN_CHARS || t.ends_with(':')
        };
        if lead_in
            && let Some(next) = candidates.iter().position(|c| {
                c.rank == candidates[best].rank && c.index == candidates[best].index + 1
            })
        {
            take(next, &mut chosen);
        }
        let floor = candidates[best].sentence.coverage * COMPANION;
        for &i in order.iter().skip(1) {
            if candidates[i].sentence.coverage < floor || candidates[i].sentence.coverage <= 0.0 {
                break;
            }
            take(i, &mut chosen);
        }
    }
    chosen.sort_by_key(|&i| (candidates[i].rank, candidates[i].index));
    chosen
}

/// The first [`MAX_SOURCES`] distinct documents of `hits`, each with an
/// excerpt at its best sentence.
fn sources(weighted: &Weighted, analyzer: &Analyzer, hits: &[Hit]) -> Vec<Source> {
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
            excerpt: excerpt(weighted, analyzer, hit),
        });
    }
    sources
}

/// When the answer is in another language than the question, a line that
/// says so, in the question's language (the user may not read the other).
pub fn language_notice(question: &str, answer: &str) -> Option<&'static str> {
    match (is_russian(question), is_russian(answer)) {
        (true, false) => Some("Ответ найден в статье на английском языке:"),
        (false, true) => Some("This answer comes from an article in Russian:"),
        _ => None,
    }
}

/// ≤ [`EXCERPT_CHARS`] of the hit's text starting at its best-matching
/// sentence, with an ellipsis on each side where text was left out.
fn excerpt(weighted: &Weighted, analyzer: &Analyzer, hit: &Hit) -> String {
    let text = hit.text.as_str();
    let best = weighted
        .sentences(analyzer, None, text)
        .into_iter()
        .reduce(|best, s| if s.coverage > best.coverage { s } else { best });
    let Some(Sentence { start, .. }) = best else {
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
        assert_eq!(extract(&a, &q, &[], &[], 600), Answer::default());
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
        let answer = extract(&a, &q, &[], &hits, 600);
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
        let answer = extract(&a, &q, &[], &[hit("doc_a", &long)], 50);
        assert!(answer.text.chars().count() <= 50, "{}", answer.text);
        assert!(answer.text.ends_with('…'));
        assert!(answer.sources[0].excerpt.chars().count() <= EXCERPT_CHARS);
        let emoji = "😀".repeat(500);
        let answer = extract(&a, &q, &[], &[hit("doc_a", &emoji)], 7);
        assert!(answer.text.chars().count() <= 7);
    }

    #[test]
    fn at_most_three_sources() {
        let a = Analyzer::new(Glossary::default());
        let q = a.query("refund");
        let hits: Vec<_> = (0..5)
            .map(|i| hit(&format!("doc_{i}"), "Refund rules."))
            .collect();
        assert_eq!(extract(&a, &q, &[], &hits, 600).sources.len(), 3);
    }
}
