//! Document parsers: format detection and conversion of raw bytes into a
//! [`ParsedDocument`] of structural blocks.
//!
//! Every parser treats its input as hostile: no panics on malformed data and
//! memory bounded by [`ParseLimits`]. Parsers that drive large third-party code
//! (lopdf, html5ever) are still best run through [`sandbox::parse_isolated`].

mod charset;
mod docx;
mod html;
mod markdown;
mod pdf;
pub mod sandbox;
mod text;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::{Block, BlockKind, Format, ParsedDocument};

impl FromStr for Format {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pdf" => Ok(Format::Pdf),
            "html" | "htm" => Ok(Format::Html),
            "markdown" | "md" => Ok(Format::Markdown),
            "text" | "txt" => Ok(Format::Text),
            "docx" => Ok(Format::Docx),
            _ => Err(ParseError::UnsupportedFormat(format!(
                "unknown format {:?}",
                truncate_for_message(s)
            ))),
        }
    }
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Html => "html",
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Docx => "docx",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseLimits {
    /// Upper bound on the extracted text; a document over it fails rather than
    /// being silently truncated, so nobody answers from half a manual.
    pub max_text_chars: usize,
    /// Upper bound on any single decompressed PDF stream (and on the content of one page).
    pub max_pdf_decompressed: usize,
    pub max_pdf_pages: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_text_chars: 5_000_000,
            max_pdf_decompressed: 8 * 1024 * 1024,
            max_pdf_pages: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ParseError {
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    #[error("invalid PDF: {0}")]
    InvalidPdf(String),
    #[error("the document contains no text")]
    Empty,
    /// The parser crashed, hit a resource limit or timed out.
    #[error("parsing failed: {0}")]
    Failed(String),
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::UnsupportedFormat(_) => "UNSUPPORTED_FORMAT",
            ParseError::InvalidPdf(_) => "INVALID_PDF_FORMAT",
            ParseError::Empty => "EMPTY_DOCUMENT",
            ParseError::Failed(_) => "PARSE_FAILED",
        }
    }
}

const DOCX_CONTENT_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// Declared format wins when given; else content type (text/html, application/pdf, text/markdown, text/plain,
/// application/vnd.openxmlformats-officedocument.wordprocessingml.document, with parameters like ;charset=) ;
/// else magic bytes (%PDF-, PK\x03\x04 with word/document.xml, <html/<!doctype, markdown heuristics, valid text) ;
/// binary garbage -> UnsupportedFormat.
///
/// Only byte sniffing happens here (no archive or PDF parsing), so it is safe to
/// call in-process on hostile input.
pub fn detect(
    declared: Option<Format>,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Format, ParseError> {
    if let Some(format) = declared {
        return Ok(format);
    }
    if let Some(format) = content_type.and_then(format_from_content_type) {
        return Ok(format);
    }
    sniff(bytes)
}

fn format_from_content_type(content_type: &str) -> Option<Format> {
    let mime = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/pdf" | "application/x-pdf" => Some(Format::Pdf),
        "text/html" | "application/xhtml+xml" => Some(Format::Html),
        "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
        "text/plain" => Some(Format::Text),
        DOCX_CONTENT_TYPE => Some(Format::Docx),
        // Generic types (application/octet-stream, ...) say nothing: sniff.
        _ => None,
    }
}

fn sniff(bytes: &[u8]) -> Result<Format, ParseError> {
    // PDF readers accept the header anywhere in the first KiB; so do we.
    let head = bytes.get(..1024).unwrap_or(bytes);
    if find(head, b"%PDF-").is_some() {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        // Entry names are stored uncompressed in both the local headers and
        // the central directory, so a byte search finds them without unzipping.
        return if find(bytes, b"word/document.xml").is_some() {
            Ok(Format::Docx)
        } else {
            Err(ParseError::UnsupportedFormat(
                "a zip archive that is not a DOCX document".into(),
            ))
        };
    }
    if !charset::looks_like_text(bytes) {
        return Err(ParseError::UnsupportedFormat(
            "binary data that is not a supported document".into(),
        ));
    }
    let sample = charset::decode(bytes.get(..64 * 1024).unwrap_or(bytes), None);
    if looks_like_html(&sample) {
        Ok(Format::Html)
    } else if markdown::looks_like_markdown(&sample) {
        Ok(Format::Markdown)
    } else {
        Ok(Format::Text)
    }
}

fn looks_like_html(sample: &str) -> bool {
    let start = sample.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let head: String = start.chars().take(2048).collect::<String>().to_lowercase();
    head.starts_with("<!doctype html")
        || head.starts_with("<html")
        || head.contains("<html")
        || head.contains("<body")
        || (head.starts_with("<?xml") && head.contains("<html"))
}

/// Parses `bytes` as `format`. Returns [`ParseError::Empty`] when no meaningful
/// text results.
pub fn parse(
    format: Format,
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<ParsedDocument, ParseError> {
    let (title, blocks) = match format {
        Format::Pdf => pdf::parse(bytes, limits)?,
        Format::Html => html::parse(bytes, content_type, limits)?,
        Format::Markdown => markdown::parse(bytes, content_type, limits)?,
        Format::Text => text::parse(bytes, content_type, limits)?,
        Format::Docx => docx::parse(bytes, limits)?,
    };
    if !blocks
        .iter()
        .any(|b| b.kind != BlockKind::PageBreak && !b.text.is_empty())
    {
        return Err(ParseError::Empty);
    }
    let title = title
        .map(|t| normalize_inline(&t))
        .filter(|t| !t.is_empty());
    Ok(ParsedDocument {
        format,
        title,
        blocks,
    })
}

/// Collects blocks while enforcing the text budget, so a parser can stop as
/// soon as a document turns out to be too large.
struct BlockSink {
    blocks: Vec<Block>,
    chars: usize,
    max_chars: usize,
}

impl BlockSink {
    fn new(limits: &ParseLimits) -> Self {
        Self {
            blocks: Vec::new(),
            chars: 0,
            max_chars: limits.max_text_chars,
        }
    }

    /// Appends the text gathered in `buf` as one block (a paragraph unless
    /// `kind` says otherwise) and empties `buf`: how the streaming parsers
    /// end a block.
    fn flush(&mut self, buf: &mut String, kind: Option<BlockKind>) -> Result<(), ParseError> {
        if !buf.trim().is_empty() {
            self.push(kind.unwrap_or(BlockKind::Paragraph), buf)?;
        }
        buf.clear();
        Ok(())
    }

    /// Normalises and appends a block; blank text is dropped.
    fn push(&mut self, kind: BlockKind, raw: &str) -> Result<(), ParseError> {
        let text = match kind {
            BlockKind::Code => normalize_code(raw),
            BlockKind::PageBreak => String::new(),
            _ => normalize_inline(raw),
        };
        if kind == BlockKind::PageBreak {
            // Consecutive or leading breaks carry no information for the chunker.
            if self
                .blocks
                .last()
                .is_some_and(|b| b.kind != BlockKind::PageBreak)
            {
                self.blocks.push(Block { kind, text });
            }
            return Ok(());
        }
        if text.is_empty() {
            return Ok(());
        }
        self.chars = self.chars.saturating_add(text.chars().count());
        if self.chars > self.max_chars {
            return Err(text_limit_error(self.max_chars));
        }
        self.blocks.push(Block { kind, text });
        Ok(())
    }

    fn finish(mut self) -> Vec<Block> {
        while self
            .blocks
            .last()
            .is_some_and(|b| b.kind == BlockKind::PageBreak)
        {
            self.blocks.pop();
        }
        self.blocks
    }
}

fn text_limit_error(max_chars: usize) -> ParseError {
    ParseError::Failed(format!(
        "the document text exceeds the limit of {max_chars} characters"
    ))
}

/// Rejects inputs whose size alone shows the text budget will be blown, before
/// decoding them into even larger in-memory structures.
/// The text of a plain-text-like document (text, Markdown): refused when
/// it cannot fit the character budget, decoded from its charset.
fn decode_text(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &ParseLimits,
) -> Result<String, ParseError> {
    check_input_size(bytes.len(), limits.max_text_chars, 4)?;
    let declared = content_type_charset(content_type);
    Ok(charset::decode(bytes, declared.as_deref()).into_owned())
}

fn check_input_size(len: usize, max_chars: usize, bytes_per_char: usize) -> Result<(), ParseError> {
    if len > max_chars.saturating_mul(bytes_per_char) {
        return Err(ParseError::Failed(format!(
            "the document is too large ({len} bytes) for the limit of {max_chars} characters"
        )));
    }
    Ok(())
}

/// Collapses every whitespace run into one space and drops control and
/// invisible formatting characters.
fn normalize_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            // Controls become separators: a stray \x0b or \x0c often stands for a break.
            pending_space = true;
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// Like [`normalize_inline`] but keeps line structure, which carries meaning in code.
fn normalize_code(s: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in s.lines() {
        let cleaned: String = line
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .filter(|c| !c.is_control() && !is_invisible(*c))
            .collect();
        let cleaned = cleaned.trim_end().to_string();
        let blank = cleaned.trim().is_empty();
        if blank && lines.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        lines.push(if blank { String::new() } else { cleaned });
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}' | '\u{00ad}' | '\u{2060}')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The `charset` parameter of a Content-Type header, if any.
fn content_type_charset(content_type: Option<&str>) -> Option<String> {
    content_type?.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(['"', '\'']).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [
            Format::Pdf,
            Format::Html,
            Format::Markdown,
            Format::Text,
            Format::Docx,
        ] {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
        }
        assert_eq!("HTM".parse::<Format>().unwrap(), Format::Html);
        assert_eq!("Md".parse::<Format>().unwrap(), Format::Markdown);
        assert_eq!("TXT".parse::<Format>().unwrap(), Format::Text);
        assert!(matches!(
            "rtf".parse::<Format>(),
            Err(ParseError::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            ParseError::UnsupportedFormat(String::new()).code(),
            "UNSUPPORTED_FORMAT"
        );
        assert_eq!(
            ParseError::InvalidPdf(String::new()).code(),
            "INVALID_PDF_FORMAT"
        );
        assert_eq!(ParseError::Empty.code(), "EMPTY_DOCUMENT");
        assert_eq!(ParseError::Failed(String::new()).code(), "PARSE_FAILED");
    }

    #[test]
    fn detect_prefers_declared_then_content_type_then_bytes() {
        let html = b"<!DOCTYPE html><html><body><p>Hi</p></body></html>";
        assert_eq!(
            detect(Some(Format::Text), Some("text/html"), html).unwrap(),
            Format::Text
        );
        assert_eq!(
            detect(None, Some("text/markdown; charset=utf-8"), html).unwrap(),
            Format::Markdown
        );
        assert_eq!(
            detect(None, Some("application/octet-stream"), html).unwrap(),
            Format::Html
        );
        assert_eq!(
            detect(None, Some(DOCX_CONTENT_TYPE), b"").unwrap(),
            Format::Docx
        );
        assert_eq!(detect(None, None, b"%PDF-1.7\n").unwrap(), Format::Pdf);
        assert_eq!(
            detect(None, None, b"# Title\n\nSome *text*.\n").unwrap(),
            Format::Markdown
        );
        assert_eq!(
            detect(None, None, "Просто текст.\n".as_bytes()).unwrap(),
            Format::Text
        );
        assert!(matches!(
            detect(None, None, b"PK\x03\x04other.txt"),
            Err(ParseError::UnsupportedFormat(_))
        ));
        assert!(matches!(
            detect(None, None, b"\x00\x01\x02\x03\xff\xfe\x00\x00"),
            Err(ParseError::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_inline("  a \t\n b\u{0}c\u{feff} "), "a b c");
        assert_eq!(normalize_code("x = 1  \n\n\n\ty\n\n"), "x = 1\n\n y");
        assert_eq!(
            content_type_charset(Some("text/html; Charset=\"windows-1251\"")),
            Some("windows-1251".into())
        );
    }
}
