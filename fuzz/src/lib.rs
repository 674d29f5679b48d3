//! The fuzz harnesses, as plain functions: each takes arbitrary bytes and
//! panics only if a property breaks. `cargo fuzz` drives them from
//! `fuzz_targets/` (nightly, libFuzzer); `api/tests/api/security_fuzz.rs`
//! includes this file and drives the same functions over a deterministic
//! corpus and every file under `fuzz/regressions/`, so they run on stable
//! in the normal test suite too.
//!
//! Crate names are the library names (`shared`, `api`, `rag`), which both
//! the fuzz crate and the API's tests see.

use api::http::body::decode_json;
use rag::parse::ParseLimits;
use rag::types::Format;
use shared::incoming::{IncomingDocument, IncomingMessage, MessageFields, parse_format};
use shared::net::ssrf::SsrfPolicy;
use shared::webhooks::signing::{
    Secret, SignatureForm, sign_incoming_body_only, sign_incoming_timestamped, verify_incoming,
};

/// The clock the signature harness pretends it is.
pub const NOW: i64 = 1_700_000_000;
pub const TOLERANCE: i64 = 300;

/// Splits `data` at the first `n` newlines (fewer parts if there are fewer).
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n + 1);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// `shared::webhooks::signing::verify_incoming` on arbitrary headers and bodies.
///
/// Layout: `flags \n secret \n signature \n timestamp \n body`; missing
/// parts are absent headers. Properties: never panics; anything accepted is
/// exactly the MAC of that secret over "<timestamp>.<body>" or (not strict)
/// over the body, and the timestamp is inside the window; and the MAC we
/// compute ourselves is always accepted.
pub fn incoming_signature(data: &[u8]) {
    let parts = fields(data, 4);
    let flags = parts.first().and_then(|f| f.first()).copied().unwrap_or(0);
    let strict = flags & 1 == 1;
    let secret_text = String::from_utf8_lossy(parts.get(1).copied().unwrap_or_default());
    let secret = Secret::parse(&secret_text)
        .unwrap_or_else(|_| Secret::parse("fuzz_secret_0123456789").expect("a valid secret"));
    let signature = parts
        .get(2)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let timestamp = parts
        .get(3)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let body = parts.get(4).copied().unwrap_or_default();

    let verdict = verify_incoming(
        &secret,
        signature.as_deref(),
        timestamp.as_deref(),
        body,
        NOW,
        TOLERANCE,
        strict,
    );
    if let Ok(form) = verdict {
        let ts: i64 = timestamp
            .as_deref()
            .map(str::trim)
            .and_then(|t| t.parse().ok())
            .expect("accepted means the timestamp parsed");
        assert!(
            (NOW - ts).abs() <= TOLERANCE,
            "accepted outside the window: {ts}"
        );
        let presented = signature
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let expected = match form {
            SignatureForm::Timestamped => sign_incoming_timestamped(&secret, ts, body),
            SignatureForm::BodyOnly => {
                assert!(!strict, "strict webhook accepted a body-only signature");
                sign_incoming_body_only(&secret, body)
            }
        };
        assert_eq!(
            presented, expected,
            "accepted a signature that is not the MAC"
        );
    }

    // Round trip: a correct signature over this very body is accepted.
    let ts = NOW - i64::from(flags % 200) + 100;
    let good = sign_incoming_timestamped(&secret, ts, body);
    assert_eq!(
        verify_incoming(
            &secret,
            Some(&good),
            Some(&ts.to_string()),
            body,
            NOW,
            TOLERANCE,
            strict
        ),
        Ok(SignatureForm::Timestamped)
    );
}

/// The incoming payload rules: `decode_json` (what the API runs on the raw
/// body) for both incoming types, then the field rules. Properties: never
/// panics; a refusal is a 400 or 422, never a 5xx; accepted fields are
/// trimmed, non-empty and NUL-free; an accepted document URL passes the
/// SSRF policy's syntax and literal-address checks.
pub fn incoming_payload(data: &[u8]) {
    match decode_json::<IncomingMessage>(data) {
        Ok(message) => {
            if let Ok(f) = MessageFields::check(message) {
                for text in [&f.user_id, &f.message] {
                    assert_eq!(text.trim(), text.as_str());
                    assert!(!text.is_empty() && !text.contains('\0'));
                }
                for text in [
                    &f.thread_id,
                    &f.external_message_id,
                    &f.channel,
                    &f.user_name,
                ]
                .into_iter()
                .flatten()
                {
                    assert_eq!(text.trim(), text.as_str());
                    assert!(!text.is_empty() && !text.contains('\0'));
                }
            }
        }
        Err(e) => assert!(
            matches!(e.status().as_u16(), 400 | 422),
            "decode_json refused with {}",
            e.status()
        ),
    }
    match decode_json::<IncomingDocument>(data) {
        Ok(document) => {
            let policy = SsrfPolicy::default();
            if let Ok(checked) = policy.check_url(document.data.document_url.trim()) {
                let url = checked.clone().into_url();
                assert!(matches!(url.scheme(), "http" | "https"));
                assert!(url.username().is_empty() && url.password().is_none());
                // Re-checking is stable.
                assert!(policy.check_url(checked.as_str()).is_ok());
            }
            if let Some(format) = document.data.document_format.as_deref() {
                let _ = parse_format("data.document_format", format);
            }
        }
        Err(e) => assert!(matches!(e.status().as_u16(), 400 | 422)),
    }
}

/// Small limits so a fuzzed input cannot make one run slow.
pub fn fuzz_limits() -> ParseLimits {
    ParseLimits {
        max_text_chars: 1_000_000,
        max_pdf_decompressed: 1 << 20,
        max_pdf_pages: 50,
    }
}

/// One document parser (`rag::parse::parse`) on arbitrary bytes, plus format
/// detection. Properties: never panics; a success has text.
pub fn parse_document(format: Format, data: &[u8]) {
    let _ = rag::parse::detect(None, None, data);
    let _ = rag::parse::detect(Some(format), Some("text/html; charset=utf-8"), data);
    if let Ok(doc) = rag::parse::parse(format, None, data, &fuzz_limits()) {
        assert!(
            doc.blocks.iter().any(|b| !b.text.is_empty()),
            "a parsed {format:?} document without text"
        );
    }
}
