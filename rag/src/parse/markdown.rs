//! Markdown via pulldown-cmark events.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::{BlockSink, ParseError, ParseLimits, decode_text};
use crate::types::{Block, BlockKind};

pub(super) fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    let text = decode_text(bytes, content_type, limits)?;
    let mut sink = BlockSink::new(limits);
    let mut title = None;
    // Text of the block being read, and what kind of block it is. Nested
    // blocks (a paragraph inside a list item) flush the outer text first.
    let mut buf = String::new();
    let mut kinds: Vec<BlockKind> = Vec::new();

    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    for event in Parser::new_ext(&text, options) {
        match event {
            Event::Start(tag) => {
                let kind = match tag {
                    Tag::Heading { level, .. } => Some(BlockKind::Heading {
                        level: heading_level(level),
                    }),
                    Tag::Paragraph | Tag::TableCell | Tag::BlockQuote(_) => {
                        // A paragraph inside a list item stays part of the item.
                        Some(match kinds.last() {
                            Some(BlockKind::ListItem) => BlockKind::ListItem,
                            _ => BlockKind::Paragraph,
                        })
                    }
                    Tag::Item => Some(BlockKind::ListItem),
                    Tag::CodeBlock(_) => Some(BlockKind::Code),
                    _ => None,
                };
                if let Some(kind) = kind {
                    sink.flush(&mut buf, kinds.last().copied())?;
                    kinds.push(kind);
                }
            }
            Event::End(tag_end) => {
                let closes_block = matches!(
                    tag_end,
                    TagEnd::Heading(_)
                        | TagEnd::Paragraph
                        | TagEnd::TableCell
                        | TagEnd::BlockQuote(_)
                        | TagEnd::Item
                        | TagEnd::CodeBlock
                );
                if closes_block {
                    let kind = kinds.pop();
                    if title.is_none() && kind == Some(BlockKind::Heading { level: 1 }) {
                        let heading = super::normalize_inline(&buf);
                        if !heading.is_empty() {
                            title = Some(heading);
                        }
                    }
                    sink.flush(&mut buf, kind)?;
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                buf.push_str(&t);
            }
            Event::SoftBreak | Event::HardBreak => buf.push('\n'),
            // Raw HTML carries markup, not prose; footnote refs and rules carry nothing.
            _ => {}
        }
    }
    sink.flush(&mut buf, kinds.last().copied())?;
    Ok((title, sink.finish()))
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Markdown heuristics for content without a declared type: ATX headings,
/// code fences, or several Markdown link / list constructs.
pub(super) fn looks_like_markdown(sample: &str) -> bool {
    let mut signals = 0;
    for line in sample.lines().take(500) {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && t.chars().nth(hashes).is_some_and(|c| c == ' ') {
            return true;
        }
        if t.starts_with("```") || t.starts_with("~~~") {
            return true;
        }
        if t.starts_with("- ") || t.starts_with("* ") || t.starts_with("> ") {
            signals += 1;
        }
        if t.contains("](") || t.contains("**") {
            signals += 1;
        }
        if !t.is_empty() && t.chars().all(|c| c == '=') || t.starts_with("---") {
            signals += 1;
        }
    }
    signals >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_title() {
        let md = "# Guide\n\nIntro *text* with `code`.\n\n## Install\n\n- first\n- second\n  continued\n\n```sh\ncargo  build\n  --release\n```\n";
        let (title, blocks) = parse(md.as_bytes(), None, &ParseLimits::default()).unwrap();
        assert_eq!(title.as_deref(), Some("Guide"));
        let got: Vec<_> = blocks.iter().map(|b| (b.kind, b.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading { level: 1 }, "Guide"),
                (BlockKind::Paragraph, "Intro text with code."),
                (BlockKind::Heading { level: 2 }, "Install"),
                (BlockKind::ListItem, "first"),
                (BlockKind::ListItem, "second continued"),
                (BlockKind::Code, "cargo  build\n  --release"),
            ]
        );
    }

    #[test]
    fn heuristics() {
        assert!(looks_like_markdown("text\n## Heading\n"));
        assert!(!looks_like_markdown(
            "#hashtag is not a heading\nplain text"
        ));
        assert!(!looks_like_markdown("Dear customer,\nthanks."));
    }
}
