//! HTML: charset decoding, Readability (dom_smoothie) to find the main
//! content, and a walk over the resulting DOM to recover headings,
//! paragraphs and list items.

use dom_query::{Document, NodeRef};
use dom_smoothie::{Config, Readability};

use super::{BlockSink, ParseError, ParseLimits, charset, check_input_size, content_type_charset};
use crate::types::{Block, BlockKind};

/// Markup is typically several times the size of the text it carries.
const HTML_BYTES_PER_TEXT_CHAR: usize = 10;
/// Where browsers look for `<meta charset>`; we are a little more generous.
const META_SCAN_BYTES: usize = 4096;
/// Bounds Readability's work on pathological pages; the fallback walk handles the rest.
const MAX_READABILITY_ELEMENTS: usize = 200_000;

/// Elements whose content is never document text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "header", "footer", "svg", "iframe",
    "object", "canvas", "button", "select", "form", "head", "title",
];

pub(super) fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    check_input_size(bytes.len(), limits.max_text_chars, HTML_BYTES_PER_TEXT_CHAR)?;
    let declared = content_type_charset(content_type).or_else(|| meta_charset(bytes));
    let html = charset::decode(bytes, declared.as_deref());

    let cfg = Config {
        max_elements_to_parse: MAX_READABILITY_ELEMENTS,
        ..Config::default()
    };
    let article = Readability::new(html.as_ref(), None, Some(cfg)).and_then(|mut r| r.parse());
    let original = Document::from(html.as_ref());
    let page_title = original
        .select("title")
        .nodes()
        .first()
        .map(|n| n.text().to_string());

    if let Ok(article) = article {
        let content = Document::from(article.content.as_ref());
        let blocks = walk(&content.root(), limits)?;
        if has_text(&blocks) {
            let title = Some(article.title)
                .filter(|t| !t.trim().is_empty())
                .or(page_title);
            return Ok((title, blocks));
        }
    }
    // Readability gives up on short or oddly built pages; the whole body,
    // minus the obvious chrome, is better than nothing.
    let root = original.body().unwrap_or_else(|| original.root());
    Ok((page_title, walk(&root, limits)?))
}

fn has_text(blocks: &[Block]) -> bool {
    blocks.iter().any(|b| !b.text.is_empty())
}

/// The charset named by a `<meta charset=…>` or `<meta http-equiv … content="…; charset=…">`
/// near the start of the document.
fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = bytes.get(..META_SCAN_BYTES).unwrap_or(bytes);
    // The prefix is ASCII in every encoding a meta tag can declare, so a lossy
    // view is enough to find it.
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = head.as_str();
    while let Some(pos) = rest.find("<meta") {
        let tag_start = rest.get(pos..)?;
        let tag = tag_start.split('>').next()?;
        if let Some(idx) = tag.find("charset=") {
            let value = tag.get(idx + "charset=".len()..)?;
            let value: String = value
                .trim_start_matches(['"', '\'', ' '])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
                .collect();
            if !value.is_empty() {
                return Some(value);
            }
        }
        rest = tag_start.get("<meta".len()..)?;
    }
    None
}

enum Step<'a> {
    Enter(NodeRef<'a>),
    /// Leaves a block element: its text ends here.
    Exit,
}

/// Walks the DOM in document order with an explicit stack (hostile pages nest
/// deeply), turning block elements into blocks and everything inline into
/// their text.
fn walk(root: &NodeRef<'_>, limits: &ParseLimits) -> Result<Vec<Block>, ParseError> {
    let mut sink = BlockSink::new(limits);
    let mut buf = String::new();
    let mut kinds: Vec<BlockKind> = Vec::new();
    let mut stack = vec![Step::Enter(*root)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Exit => {
                sink.flush(&mut buf, kinds.pop())?;
            }
            Step::Enter(node) => {
                if node.is_text() {
                    buf.push_str(&node.text());
                    // The budget check in the sink only runs per block; a block of
                    // endless inline text must not grow without bound either.
                    if buf.len() > limits.max_text_chars.saturating_mul(4) {
                        return Err(super::text_limit_error(limits.max_text_chars));
                    }
                    continue;
                }
                let name = node.node_name().map(|n| n.to_ascii_lowercase());
                if let Some(name) = name.as_deref() {
                    if SKIPPED.contains(&name) {
                        continue;
                    }
                    if name == "br" {
                        buf.push(' ');
                        continue;
                    }
                    if let Some(kind) = block_kind(name, kinds.last().copied()) {
                        sink.flush(&mut buf, kinds.last().copied())?;
                        kinds.push(kind);
                        stack.push(Step::Exit);
                    } else if !is_inline(name) {
                        // Inline elements join their text to the surrounding words
                        // (<b>un</b>done); anything else (div, table, unknown tags) separates it.
                        buf.push(' ');
                        if !buf.trim().is_empty() && is_container(name) {
                            sink.flush(&mut buf, kinds.last().copied())?;
                        }
                    }
                } else if !(node.is_document() || node.is_fragment()) {
                    // Comments, doctypes, processing instructions.
                    continue;
                }
                let children = node.children();
                stack.extend(children.into_iter().rev().map(Step::Enter));
            }
        }
    }
    sink.flush(&mut buf, kinds.last().copied())?;
    Ok(sink.finish())
}

fn block_kind(name: &str, enclosing: Option<BlockKind>) -> Option<BlockKind> {
    Some(match name {
        "h1" => BlockKind::Heading { level: 1 },
        "h2" => BlockKind::Heading { level: 2 },
        "h3" => BlockKind::Heading { level: 3 },
        "h4" => BlockKind::Heading { level: 4 },
        "h5" => BlockKind::Heading { level: 5 },
        "h6" => BlockKind::Heading { level: 6 },
        "li" | "dt" | "dd" => BlockKind::ListItem,
        "pre" => BlockKind::Code,
        "p" | "blockquote" | "td" | "th" | "caption" | "figcaption" => match enclosing {
            // A paragraph inside a list item is still that item.
            Some(BlockKind::ListItem) => BlockKind::ListItem,
            _ => BlockKind::Paragraph,
        },
        _ => return None,
    })
}

fn is_container(name: &str) -> bool {
    matches!(
        name,
        "div"
            | "section"
            | "article"
            | "main"
            | "aside"
            | "table"
            | "tr"
            | "ul"
            | "ol"
            | "dl"
            | "body"
            | "html"
            | "figure"
            | "address"
            | "details"
            | "summary"
            | "hr"
    )
}

fn is_inline(name: &str) -> bool {
    matches!(
        name,
        "a" | "abbr"
            | "b"
            | "bdi"
            | "bdo"
            | "cite"
            | "code"
            | "data"
            | "dfn"
            | "em"
            | "i"
            | "kbd"
            | "mark"
            | "q"
            | "s"
            | "samp"
            | "small"
            | "span"
            | "strong"
            | "sub"
            | "sup"
            | "time"
            | "u"
            | "var"
            | "wbr"
            | "font"
            | "del"
            | "ins"
            | "label"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_meta_charsets() {
        assert_eq!(
            meta_charset(b"<html><head><META CHARSET=\"Windows-1251\">").as_deref(),
            Some("windows-1251")
        );
        assert_eq!(
            meta_charset(
                b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\">"
            )
            .as_deref(),
            Some("koi8-r")
        );
        assert_eq!(meta_charset(b"<meta name=viewport content=x>"), None);
    }

    #[test]
    fn fallback_walk_keeps_structure() {
        let html = "<html><body><nav>Menu</nav><h2>Title</h2><div>Loose <b>bold</b> text</div>\
                    <ul><li>one</li><li><p>two</p></li></ul><script>var x;</script></body></html>";
        let doc = Document::from(html);
        let body = doc.body().unwrap();
        let blocks = walk(&body, &ParseLimits::default()).unwrap();
        let got: Vec<_> = blocks.iter().map(|b| (b.kind, b.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading { level: 2 }, "Title"),
                (BlockKind::Paragraph, "Loose bold text"),
                (BlockKind::ListItem, "one"),
                (BlockKind::ListItem, "two"),
            ]
        );
    }
}
