//! Plain text: paragraphs separated by blank lines, with a few conservative
//! heading heuristics.

use super::{BlockSink, ParseError, ParseLimits, decode_text};
use crate::types::{Block, BlockKind};

/// A heading is a short line; anything longer is a sentence that happens to
/// stand alone.
const MAX_HEADING_CHARS: usize = 80;

pub(super) fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    let text = decode_text(bytes, content_type, limits)?;
    let mut sink = BlockSink::new(limits);
    for paragraph in split_paragraphs(&text) {
        push_paragraph(&mut sink, &paragraph)?;
    }
    Ok((None, sink.finish()))
}

/// Groups lines into paragraphs on blank lines (lines with only whitespace count as blank).
fn split_paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

fn push_paragraph(sink: &mut BlockSink, lines: &[&str]) -> Result<(), ParseError> {
    match lines {
        [single] if looks_like_heading(single) => sink.push(
            BlockKind::Heading {
                level: heading_level(single),
            },
            single,
        ),
        // A heading line directly on top of its paragraph ("1. Refunds\nText...").
        [first, rest @ ..] if is_numbered_heading(first) || is_caps_heading(first) => {
            sink.push(
                BlockKind::Heading {
                    level: heading_level(first),
                },
                first,
            )?;
            sink.push(BlockKind::Paragraph, &rest.join("\n"))
        }
        _ => sink.push(BlockKind::Paragraph, &lines.join("\n")),
    }
}

/// A short standalone line without sentence-ending punctuation.
fn looks_like_heading(line: &str) -> bool {
    let line = line.trim();
    let chars = line.chars().count();
    if chars == 0 || chars > MAX_HEADING_CHARS {
        return false;
    }
    if is_numbered_heading(line) || is_caps_heading(line) {
        return true;
    }
    let ends_like_sentence = line.ends_with(['.', '!', '?', '…', ',', ';', ':']);
    let starts_upper = line.chars().next().is_some_and(char::is_uppercase);
    starts_upper && !ends_like_sentence && line.split_whitespace().count() <= 10
}

/// "1. Title", "2.3 Title": a section number then a capitalised title.
fn is_numbered_heading(line: &str) -> bool {
    let line = line.trim();
    if line.chars().count() > MAX_HEADING_CHARS || line.ends_with(['.', '!', '?', ',', ';']) {
        return false;
    }
    let Some((number, title)) = line.split_once(' ') else {
        return false;
    };
    let number = number.trim_end_matches('.');
    !number.is_empty()
        && number.split('.').all(|part| {
            !part.is_empty() && part.len() <= 3 && part.chars().all(|c| c.is_ascii_digit())
        })
        && title
            .trim_start()
            .chars()
            .next()
            .is_some_and(char::is_uppercase)
}

fn is_caps_heading(line: &str) -> bool {
    let line = line.trim();
    let letters = line.chars().filter(|c| c.is_alphabetic()).count();
    letters >= 3
        && line.chars().count() <= MAX_HEADING_CHARS
        && line
            .chars()
            .filter(|c| c.is_alphabetic())
            .all(char::is_uppercase)
}

/// Section depth from the numbering ("2.3 Title" is level 2); unnumbered headings are level 1.
fn heading_level(line: &str) -> u8 {
    if !is_numbered_heading(line) {
        return 1;
    }
    let number = line.trim().split(' ').next().unwrap_or_default();
    let depth = number.trim_end_matches('.').split('.').count();
    u8::try_from(depth.clamp(1, 6)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str) -> Vec<Block> {
        parse(text.as_bytes(), None, &ParseLimits::default())
            .unwrap()
            .1
    }

    #[test]
    fn paragraphs_and_headings() {
        let b = blocks(
            "Refund policy\n\nWe refund   within 14 days.\nAsk support.\n\n2.1 Cards\nCard refunds take a week.\n\nNOTES\n\nshort line\n",
        );
        let kinds: Vec<_> = b.iter().map(|b| (b.kind, b.text.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (BlockKind::Heading { level: 1 }, "Refund policy"),
                (
                    BlockKind::Paragraph,
                    "We refund within 14 days. Ask support."
                ),
                (BlockKind::Heading { level: 2 }, "2.1 Cards"),
                (BlockKind::Paragraph, "Card refunds take a week."),
                (BlockKind::Heading { level: 1 }, "NOTES"),
                (BlockKind::Paragraph, "short line"),
            ]
        );
    }

    #[test]
    fn sentences_are_not_headings() {
        let b = blocks("This is a sentence.\n\n3 apples\n");
        assert!(b.iter().all(|b| b.kind == BlockKind::Paragraph));
    }

    #[test]
    fn text_limit_is_enforced() {
        let limits = ParseLimits {
            max_text_chars: 10,
            ..ParseLimits::default()
        };
        let err = parse(b"a much longer text than ten", None, &limits).unwrap_err();
        assert!(matches!(err, ParseError::Failed(_)));
    }
}
