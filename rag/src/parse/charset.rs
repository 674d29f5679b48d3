//! Character set detection and decoding for the text-based formats.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_8};

/// How much of the input chardetng looks at; more does not change its guess
/// but costs time on large files.
const DETECT_SAMPLE: usize = 256 * 1024;

/// Decodes `bytes` to text. Order of trust: byte-order mark, then a declared
/// charset label (from a Content-Type or `<meta>`), then valid UTF-8, then
/// chardetng's guess (which handles windows-1251, KOI8-R and friends).
/// Malformed sequences become U+FFFD rather than errors.
pub(crate) fn decode<'a>(bytes: &'a [u8], declared: Option<&str>) -> Cow<'a, str> {
    let encoding = pick_encoding(bytes, declared);
    let (text, _) = encoding.decode_with_bom_removal(bytes);
    text
}

fn pick_encoding(bytes: &[u8], declared: Option<&str>) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(bytes) {
        return encoding;
    }
    if let Some(encoding) = declared.and_then(|label| Encoding::for_label(label.trim().as_bytes()))
    {
        // A UTF-16 label without a BOM is almost always a lie in practice
        // (HTML even mandates ignoring it); the bytes decide instead.
        if encoding != encoding_rs::UTF_16LE && encoding != encoding_rs::UTF_16BE {
            return encoding;
        }
    }
    if std::str::from_utf8(bytes).is_ok() {
        return UTF_8;
    }
    let mut detector = chardetng::EncodingDetector::new();
    let sample = bytes.get(..DETECT_SAMPLE).unwrap_or(bytes);
    detector.feed(sample, sample.len() == bytes.len());
    detector.guess(None, true)
}

/// Whether the bytes are plausibly text in some encoding, as opposed to
/// binary data (images, executables, random noise).
pub(crate) fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    if let Some((encoding, _)) = Encoding::for_bom(bytes) {
        if encoding == UTF_8 {
            return looks_like_text(bytes.get(3..).unwrap_or_default());
        }
        // UTF-16 text: judge it after decoding, where NULs no longer appear.
        let (text, _, had_errors) = encoding.decode(bytes);
        return !had_errors && control_ratio_ok(text.chars().map(|c| c as u32));
    }
    let sample = bytes.get(..64 * 1024).unwrap_or(bytes);
    if sample.contains(&0) {
        return false;
    }
    control_ratio_ok(sample.iter().map(|&b| u32::from(b)))
}

/// Text has next to no control characters besides line breaks and tabs;
/// binary data has plenty (about one byte in eight for random data).
fn control_ratio_ok(units: impl Iterator<Item = u32>) -> bool {
    let mut total = 0usize;
    let mut controls = 0usize;
    for u in units {
        total += 1;
        let is_control = (u < 0x20 && !matches!(u, 0x09 | 0x0a | 0x0c | 0x0d)) || u == 0x7f;
        if is_control {
            controls += 1;
        }
    }
    controls * 100 <= total
}

#[cfg(test)]
mod tests {
    use super::*;

    const RU: &str = "Съешь же ещё этих мягких французских булок, да выпей чаю. \
                      Широкая электрификация южных губерний даст мощный толчок подъёму сельского хозяйства.";

    #[test]
    fn decodes_boms_and_legacy_encodings() {
        let mut with_bom = vec![0xef, 0xbb, 0xbf];
        with_bom.extend_from_slice(RU.as_bytes());
        assert_eq!(decode(&with_bom, None), RU);

        // encoding_rs cannot encode to UTF-16, so build it by hand.
        let mut le = vec![0xff, 0xfe];
        for unit in RU.encode_utf16() {
            le.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(decode(&le, None), RU);
        assert!(looks_like_text(&le));

        for enc in [encoding_rs::WINDOWS_1251, encoding_rs::KOI8_R] {
            let (bytes, _, _) = enc.encode(RU);
            assert_eq!(decode(&bytes, None), RU, "{}", enc.name());
            assert_eq!(decode(&bytes, Some(enc.name())), RU);
        }
    }

    #[test]
    fn tells_text_from_binary() {
        assert!(looks_like_text(RU.as_bytes()));
        assert!(looks_like_text(b"plain\r\n\ttext\x0c"));
        assert!(!looks_like_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"));
    }
}
