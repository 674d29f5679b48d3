//! DOCX: word/document.xml read from the zip with quick-xml. Paragraph
//! styles (resolved through word/styles.xml) and outline levels give headings;
//! numbering gives list items.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{BlockSink, ParseError, ParseLimits};
use crate::types::{Block, BlockKind};

/// XML markup around the text of a DOCX is bulky (run properties, revision
/// ids...), so the uncompressed part may be a few times the text budget. More
/// than that is a zip bomb or a document over the limit anyway.
const XML_BYTES_PER_TEXT_CHAR: usize = 4;
const MAX_STYLES_BYTES: u64 = 8 * 1024 * 1024;

pub(super) fn parse(
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    // A DOCX that is not a readable zip is a broken file of a supported
    // format, not a format we do not know: report it as a parse failure.
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ParseError::Failed(format!("not a readable DOCX (zip) file: {e}")))?;
    let max_xml = limits
        .max_text_chars
        .saturating_mul(XML_BYTES_PER_TEXT_CHAR);
    let document = read_part(&mut archive, "word/document.xml", max_xml as u64)?
        .ok_or_else(|| ParseError::Failed("the DOCX has no word/document.xml".into()))?;
    // Styles are optional; without them the usual built-in style ids still work.
    let styles = read_part(&mut archive, "word/styles.xml", MAX_STYLES_BYTES)
        .ok()
        .flatten()
        .map(|xml| heading_styles(&xml))
        .unwrap_or_default();
    read_document(&document, &styles, limits)
}

/// Reads one part of the archive, refusing to inflate more than `max` bytes
/// whatever the (attacker-controlled) size fields say.
fn read_part(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    max: u64,
) -> Result<Option<String>, ParseError> {
    let file = match archive.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(ParseError::Failed(format!("cannot open {name}: {e}"))),
    };
    let too_large = || {
        ParseError::Failed(format!(
            "{name} inflates to more than {max} bytes (zip bomb or document over the size limit)"
        ))
    };
    if file.size() > max {
        return Err(too_large());
    }
    let mut data = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| ParseError::Failed(format!("cannot read {name}: {e}")))?;
    if data.len() as u64 > max {
        return Err(too_large());
    }
    String::from_utf8(data)
        .map(Some)
        .map_err(|_| ParseError::Failed(format!("{name} is not UTF-8 XML")))
}

/// Maps style ids to heading levels (0 = the document title), by style name,
/// since ids are localised ("Заголовок1") but names are not ("heading 1").
fn heading_styles(xml: &str) -> HashMap<String, u8> {
    let mut map = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current_id: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => match local(&e).as_str() {
                "style" => current_id = attr(&e, "styleId"),
                "name" => {
                    if let (Some(id), Some(name)) = (&current_id, attr(&e, "val"))
                        && let Some(level) = level_from_style_name(&name)
                    {
                        map.insert(id.clone(), level);
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().as_ref() == "style" => current_id = None,
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    map
}

/// "heading 2", "Heading2" -> 2; "Title" -> 0.
fn level_from_style_name(name: &str) -> Option<u8> {
    let lower = name.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(0);
    }
    let level: u8 = lower.strip_prefix("heading")?.parse().ok()?;
    (1..=9).contains(&level).then_some(level)
}

#[derive(Default)]
struct Paragraph {
    text: String,
    style_level: Option<u8>,
    outline_level: Option<u8>,
    numbered: bool,
}

fn read_document(
    xml: &str,
    styles: &HashMap<String, u8>,
    limits: &ParseLimits,
) -> Result<(Option<String>, Vec<Block>), ParseError> {
    let mut sink = BlockSink::new(limits);
    let mut title = None;
    let mut reader = Reader::from_str(xml);
    let mut para: Option<Paragraph> = None;
    // Only w:t carries visible text; field codes (w:instrText) and deleted
    // revisions (w:delText) must not leak into it.
    let mut in_text = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ParseError::Failed(format!("malformed word/document.xml: {e}")))?;
        match event {
            Event::Start(e) => {
                match local(&e).as_str() {
                    "p" => para = Some(Paragraph::default()),
                    "t" => in_text = true,
                    _ => {}
                }
                paragraph_property(&e, para.as_mut(), styles);
            }
            Event::Empty(e) => {
                if let Some(p) = para.as_mut() {
                    match local(&e).as_str() {
                        "tab" | "br" | "cr" => p.text.push(' '),
                        _ => paragraph_property(&e, Some(p), styles),
                    }
                }
            }
            Event::Text(t) if in_text => {
                if let Some(p) = para.as_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) if in_text => {
                if let (Some(p), Some(c)) = (para.as_mut(), resolve_entity(&r)) {
                    p.text.push(c);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => {
                    if let Some(p) = para.take() {
                        finish_paragraph(p, &mut sink, &mut title)?;
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((title, sink.finish()))
}

fn paragraph_property(
    e: &BytesStart<'_>,
    para: Option<&mut Paragraph>,
    styles: &HashMap<String, u8>,
) {
    let Some(p) = para else { return };
    match local(e).as_str() {
        "pStyle" => {
            if let Some(id) = attr(e, "val") {
                p.style_level = styles
                    .get(&id)
                    .copied()
                    .or_else(|| level_from_style_name(&id));
            }
        }
        "outlineLvl" => {
            // w:outlineLvl is 0-based; 9 means "body text".
            p.outline_level = attr(e, "val")
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|&v| v < 9)
                .map(|v| v + 1);
        }
        "numPr" => p.numbered = true,
        _ => {}
    }
}

fn finish_paragraph(
    p: Paragraph,
    sink: &mut BlockSink,
    title: &mut Option<String>,
) -> Result<(), ParseError> {
    let kind = match p.style_level.or(p.outline_level) {
        Some(0) => {
            if title.is_none() {
                *title = Some(p.text.clone());
            }
            BlockKind::Heading { level: 1 }
        }
        Some(level) => BlockKind::Heading {
            level: level.min(6),
        },
        None if p.numbered => BlockKind::ListItem,
        None => BlockKind::Paragraph,
    };
    sink.push(kind, &p.text)
}

fn resolve_entity(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c);
    }
    match r.as_ref() {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

fn local(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_string()
}

/// Value of an attribute by local name (w:val, w:styleId), whatever its prefix.
fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes().with_checks(false).flatten().find_map(|a| {
        (a.key.local_name().as_ref() == name)
            .then(|| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            })
            .flatten()
    })
}
