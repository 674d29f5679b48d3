//! PDF text extraction with lopdf, bounded against decompression bombs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::{Document, LoadOptions, Object};

use super::{BlockSink, ParseError, ParseLimits, find, text_limit_error};
use crate::types::{Block, BlockKind};

pub(super) fn parse(
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    // lopdf is large and not written for hostile input; a panic in it must
    // not take the caller down. (Stack overflows and OOM still can: that is
    // what the sandbox is for.)
    catch_unwind(AssertUnwindSafe(|| parse_unguarded(bytes, limits))).unwrap_or_else(|_| {
        Err(ParseError::InvalidPdf(
            "the PDF parser crashed on this file".into(),
        ))
    })
}

fn parse_unguarded(
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    if find(bytes.get(..1024).unwrap_or(bytes), b"%PDF-").is_none() {
        return Err(ParseError::InvalidPdf("no %PDF- header".into()));
    }
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_pdf_decompressed),
        ..LoadOptions::default()
    };
    let doc = match Document::load_mem_with_options(bytes, options) {
        Ok(doc) => doc,
        // lopdf fails in assorted ways on encryption it cannot handle; the
        // useful message for the uploader is that a password is needed.
        Err(_) if find(bytes, b"/Encrypt").is_some() => return Err(encrypted()),
        Err(e) => return Err(ParseError::InvalidPdf(e.to_string())),
    };
    // lopdf loads a file it cannot decrypt as "OK, 0 pages"; a file it could
    // open with the empty user password has an encryption state and reads fine.
    if doc.trailer.get(b"Encrypt").is_ok() && !doc.was_encrypted() {
        return Err(encrypted());
    }

    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ParseError::InvalidPdf(
            "the PDF has no readable pages".into(),
        ));
    }
    if pages.len() > limits.max_pdf_pages {
        return Err(ParseError::Failed(format!(
            "the PDF has {} pages, more than the limit of {}",
            pages.len(),
            limits.max_pdf_pages
        )));
    }

    let mut sink = BlockSink::new(limits);
    for &page_number in pages.keys() {
        let text = doc
            .extract_text_with_limit(&[page_number], limits.max_pdf_decompressed)
            .map_err(|e| ParseError::InvalidPdf(format!("page {page_number}: {e}")))?;
        // Cheap early exit before splitting: the sink would refuse it anyway.
        if text.len() > limits.max_text_chars.saturating_mul(4) {
            return Err(text_limit_error(limits.max_text_chars));
        }
        for paragraph in split_paragraphs(&text) {
            sink.push(BlockKind::Paragraph, &paragraph)?;
        }
        sink.push(BlockKind::PageBreak, "")?;
    }
    Ok((title(&doc), sink.finish()))
}

fn encrypted() -> ParseError {
    ParseError::InvalidPdf("encrypted: a password is needed to read this PDF".into())
}

/// The Info dictionary's /Title, if it is set to something.
fn title(doc: &Document) -> Option<String> {
    let info = match doc.trailer.get(b"Info").ok()? {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        Object::Dictionary(dict) => dict,
        _ => return None,
    };
    let title = lopdf::decode_text_string(info.get(b"Title").ok()?).ok()?;
    Some(title).filter(|t| !t.trim().is_empty())
}

/// Paragraphs of one page: lines separated by blank lines.
fn split_paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.trim().is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}
