//! PDF parsing in-process: normal files, bombs, encryption, garbage.
use testkit::documents as common;

use rag::parse::{ParseError, ParseLimits, detect, parse};
use rag::types::{BlockKind, Format};

#[test]
fn text_pdf_parses_to_blocks_with_page_breaks() {
    let pdf = common::text_pdf(
        Some("Refund Guide"),
        &[
            &["Refunds are issued within 14 days."],
            &["Card payments are returned to the card."],
        ],
    );
    assert_eq!(detect(None, None, &pdf).unwrap(), Format::Pdf);
    let doc = parse(Format::Pdf, None, &pdf, &ParseLimits::default()).unwrap();
    assert_eq!(doc.title.as_deref(), Some("Refund Guide"));
    let text: Vec<&str> = doc.blocks.iter().map(|b| b.text.as_str()).collect();
    let all = text.join(" ");
    assert!(all.contains("Refunds are issued within 14 days."), "{all}");
    assert!(
        all.contains("Card payments are returned to the card."),
        "{all}"
    );
    let breaks = doc
        .blocks
        .iter()
        .filter(|b| b.kind == BlockKind::PageBreak)
        .count();
    assert_eq!(
        breaks, 1,
        "one break between two pages, none trailing: {:?}",
        doc.blocks
    );
}

#[test]
fn blank_pdf_is_empty() {
    let pdf = common::text_pdf(None, &[&[], &[]]);
    assert_eq!(
        parse(Format::Pdf, None, &pdf, &ParseLimits::default()),
        Err(ParseError::Empty)
    );
}

#[test]
fn flate_bomb_is_rejected_without_inflating() {
    let pdf = common::flate_bomb_pdf(300);
    assert!(
        pdf.len() < 1_000_000,
        "the bomb itself is small: {}",
        pdf.len()
    );
    let err = parse(Format::Pdf, None, &pdf, &ParseLimits::default()).unwrap_err();
    assert!(matches!(err, ParseError::InvalidPdf(_)), "{err:?}");
}

#[test]
fn encrypted_pdf_needs_a_password() {
    let err = parse(
        Format::Pdf,
        None,
        &common::encrypted_pdf(),
        &ParseLimits::default(),
    )
    .unwrap_err();
    match err {
        ParseError::InvalidPdf(msg) => assert!(msg.contains("encrypted"), "{msg}"),
        other => panic!("expected InvalidPdf, got {other:?}"),
    }
}

#[test]
fn deeply_nested_pdf_fails_cleanly_in_process() {
    // Safe in-process only because lopdf caps nesting at 100 levels; the
    // sandbox test covers the same file in a child.
    let pdf = common::deeply_nested_pdf(100_000);
    // lopdf stops at its nesting cap and keeps a page without content.
    let err = parse(Format::Pdf, None, &pdf, &ParseLimits::default()).unwrap_err();
    assert!(
        matches!(err, ParseError::InvalidPdf(_) | ParseError::Empty),
        "{err:?}"
    );
}

#[test]
fn garbage_is_unsupported_or_invalid_pdf() {
    let garbage = common::random_bytes(64 * 1024, 0x9E37_79B9_7F4A_7C15);
    assert!(matches!(
        detect(None, None, &garbage),
        Err(ParseError::UnsupportedFormat(_))
    ));
    assert!(matches!(
        detect(None, Some("application/octet-stream"), &garbage),
        Err(ParseError::UnsupportedFormat(_))
    ));
    let err = parse(Format::Pdf, None, &garbage, &ParseLimits::default()).unwrap_err();
    assert!(matches!(err, ParseError::InvalidPdf(_)), "{err:?}");
    assert_eq!(err.code(), "INVALID_PDF_FORMAT");
}

#[test]
fn truncated_and_mutated_pdfs_never_panic() {
    let pdf = common::text_pdf(Some("T"), &[&["Some text here."], &["More text."]]);
    for (seed, cut) in (1u64..).zip((0..pdf.len()).step_by(37)) {
        let _ = parse(Format::Pdf, None, &pdf[..cut], &ParseLimits::default());
        let mut mutated = pdf.clone();
        for r in common::random_bytes(8, seed).chunks(2) {
            let at = (usize::from(r[0]) * 31 + cut) % mutated.len();
            mutated[at] = r[1];
        }
        let _ = parse(Format::Pdf, None, &mutated, &ParseLimits::default());
    }
}

#[test]
fn page_limit_is_enforced() {
    let pdf = common::text_pdf(None, &[&["a"], &["b"], &["c"]]);
    let limits = ParseLimits {
        max_pdf_pages: 2,
        ..ParseLimits::default()
    };
    assert!(matches!(
        parse(Format::Pdf, None, &pdf, &limits),
        Err(ParseError::Failed(_))
    ));
}
