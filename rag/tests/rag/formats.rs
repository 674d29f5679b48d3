//! HTML, Markdown, plain text and DOCX parsing, charsets and empty documents.
use testkit::documents as common;

use rag::chunk::{ChunkOptions, chunk};
use rag::parse::{ParseError, ParseLimits, detect, parse};
use rag::types::{BlockKind, Format};

const RU_1: &str = "Возврат средств на банковскую карту занимает от трёх до десяти рабочих дней.";
const RU_2: &str =
    "Если деньги не поступили, обратитесь в службу поддержки и укажите номер заказа.";

fn russian_page(meta: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head>{meta}<title>Возврат средств</title>\
         <script>var menu = 'СКРИПТ';</script><style>.x{{}}</style></head><body>\
         <nav><ul><li><a href=\"/\">Главная навигация</a></li><li><a href=\"/a\">Каталог</a></li></ul></nav>\
         <article><h1>Возврат средств</h1><h2>Банковские карты</h2>\
         <p>{RU_1} {RU_1}</p><p>{RU_2} {RU_2}</p>\
         <ul><li>Номер заказа обязателен для любого обращения в поддержку.</li></ul>\
         <p>{RU_1} {RU_2} {RU_1} {RU_2}</p></article>\
         <footer>Подвал сайта</footer></body></html>"
    )
}

fn all_text(doc: &rag::types::ParsedDocument) -> String {
    doc.blocks
        .iter()
        .map(|b| b.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_russian_html(bytes: &[u8], content_type: Option<&str>) {
    assert_eq!(detect(None, None, bytes).unwrap(), Format::Html);
    let doc = parse(Format::Html, content_type, bytes, &ParseLimits::default()).unwrap();
    let text = all_text(&doc);
    assert!(text.contains(RU_1) && text.contains(RU_2), "{text}");
    assert_eq!(doc.title.as_deref(), Some("Возврат средств"));
    for absent in ["Главная навигация", "СКРИПТ", "Подвал", ".x{"] {
        assert!(!text.contains(absent), "{absent} leaked into {text}");
    }
    assert!(
        doc.blocks
            .iter()
            .any(|b| b.kind == BlockKind::Heading { level: 2 } && b.text == "Банковские карты"),
        "{:?}",
        doc.blocks
    );
}

#[test]
fn html_windows_1251_with_meta_charset() {
    let html = russian_page("<meta charset=\"windows-1251\">");
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&html);
    check_russian_html(&bytes, None);
}

#[test]
fn html_windows_1251_without_declared_charset() {
    let html = russian_page("");
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&html);
    check_russian_html(&bytes, None);
}

#[test]
fn html_charset_from_content_type() {
    let html = russian_page("");
    let (bytes, _, _) = encoding_rs::KOI8_R.encode(&html);
    check_russian_html(&bytes, Some("text/html; charset=KOI8-R"));
}

#[test]
fn html_fallback_when_readability_finds_nothing() {
    let html =
        b"<html><body><nav>Menu</nav><div>Short note.</div><footer>Foot</footer></body></html>";
    let doc = parse(Format::Html, None, html, &ParseLimits::default()).unwrap();
    assert_eq!(all_text(&doc), "Short note.");
}

#[test]
fn markdown_headings_become_chunk_paths() {
    let md = "# A\n\nIntro.\n\n## B\n\nText of B. More text.\n\n### C\n\n- item one\n- item two\n\n## D\n\nBack to D.\n";
    assert_eq!(detect(None, None, md.as_bytes()).unwrap(), Format::Markdown);
    let doc = parse(
        Format::Markdown,
        None,
        md.as_bytes(),
        &ParseLimits::default(),
    )
    .unwrap();
    assert_eq!(doc.title.as_deref(), Some("A"));
    let chunks = chunk(&doc, &ChunkOptions::default());
    let got: Vec<(Option<&str>, &str)> = chunks
        .iter()
        .map(|c| (c.heading.as_deref(), c.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("A"), "Intro."),
            (Some("A > B"), "Text of B. More text."),
            (Some("A > B > C"), "item one\n\nitem two"),
            (Some("A > D"), "Back to D."),
        ]
    );
}

#[test]
fn russian_text_in_three_encodings_is_the_same() {
    let text = format!("ВОЗВРАТ\n\n{RU_1}\n{RU_2}\n\n1. Сроки\n\n{RU_2}\n");
    let utf8 = parse(Format::Text, None, text.as_bytes(), &ParseLimits::default()).unwrap();
    assert!(all_text(&utf8).contains(RU_1));
    for enc in [encoding_rs::KOI8_R, encoding_rs::WINDOWS_1251] {
        let (bytes, _, _) = enc.encode(&text);
        assert_eq!(
            detect(None, None, &bytes).unwrap(),
            Format::Text,
            "{}",
            enc.name()
        );
        let doc = parse(Format::Text, None, &bytes, &ParseLimits::default()).unwrap();
        assert_eq!(doc.blocks, utf8.blocks, "{}", enc.name());
    }
    let mut utf16 = vec![0xfe, 0xff];
    for unit in text.encode_utf16() {
        utf16.extend_from_slice(&unit.to_be_bytes());
    }
    assert_eq!(detect(None, None, &utf16).unwrap(), Format::Text);
    assert_eq!(
        parse(Format::Text, None, &utf16, &ParseLimits::default())
            .unwrap()
            .blocks,
        utf8.blocks
    );
}

#[test]
fn docx_headings_and_paragraphs() {
    let body = r#"<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Support Handbook</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Refunds</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Refunds take </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>14 days</w:t></w:r><w:r><w:t> &amp; more.</w:t></w:r></w:p>
<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr><w:r><w:t>Keep the receipt</w:t></w:r></w:p>
<w:p><w:r><w:instrText>PAGE</w:instrText><w:t>Второй</w:t><w:tab/><w:t>абзац</w:t></w:r></w:p>"#;
    let bytes = common::docx(body);
    assert_eq!(detect(None, None, &bytes).unwrap(), Format::Docx);
    let doc = parse(Format::Docx, None, &bytes, &ParseLimits::default()).unwrap();
    assert_eq!(doc.title.as_deref(), Some("Support Handbook"));
    let got: Vec<_> = doc
        .blocks
        .iter()
        .map(|b| (b.kind, b.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (BlockKind::Heading { level: 1 }, "Support Handbook"),
            (BlockKind::Heading { level: 1 }, "Refunds"),
            (BlockKind::Paragraph, "Refunds take 14 days & more."),
            (BlockKind::ListItem, "Keep the receipt"),
            (BlockKind::Paragraph, "Второй абзац"),
        ]
    );
}

#[test]
fn docx_zip_bombs_fail_fast() {
    // 1 GiB of zeros as word/document.xml, once with honest sizes and once
    // claiming to be tiny.
    for declared in [1u32 << 30, 1000] {
        let bomb = common::docx_bomb(1024, declared);
        assert!(bomb.len() < 4 << 20, "{}", bomb.len());
        assert_eq!(detect(None, None, &bomb).unwrap(), Format::Docx);
        let err = parse(Format::Docx, None, &bomb, &ParseLimits::default()).unwrap_err();
        assert!(matches!(err, ParseError::Failed(_)), "{err:?}");
    }
}

#[test]
fn broken_docx_is_a_failure() {
    let mut bytes = common::docx("<w:p><w:r><w:t>x</w:t></w:r></w:p>");
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        parse(Format::Docx, None, &bytes, &ParseLimits::default()),
        Err(ParseError::Failed(_))
    ));
}

#[test]
fn empty_documents_are_empty() {
    let limits = ParseLimits::default();
    for format in [Format::Text, Format::Markdown, Format::Html] {
        for input in ["", "   \n\t\n  \r\n"] {
            assert_eq!(
                parse(format, None, input.as_bytes(), &limits),
                Err(ParseError::Empty),
                "{format:?} {input:?}"
            );
        }
    }
    let html = b"<html><head><title>Only a title</title></head><body>  <script>x()</script> </body></html>";
    assert_eq!(
        parse(Format::Html, None, html, &limits),
        Err(ParseError::Empty)
    );
    assert_eq!(
        parse(Format::Markdown, None, b"#\n\n---\n", &limits),
        Err(ParseError::Empty)
    );
    let docx = common::docx("<w:p><w:r><w:t>   </w:t></w:r></w:p><w:p/>");
    assert_eq!(
        parse(Format::Docx, None, &docx, &limits),
        Err(ParseError::Empty)
    );
}
