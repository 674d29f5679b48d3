//! The fuzz harnesses of `fuzz/` (issue 5 item 11) as ordinary tests, so
//! they run on stable in every `cargo test`: each harness gets a
//! deterministic corpus of valid inputs, their mutations (bit flips,
//! truncations, splices, interesting bytes) and every file kept under
//! `fuzz/regressions/<target>/` (crashes found by `cargo fuzz`, once fixed).
//! Same functions as the libFuzzer targets; `cargo fuzz` explores far more,
//! this keeps what it found from coming back.

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

use rag::types::Format;
use shared::webhooks::signing::{Secret, sign_incoming_timestamped};

/// splitmix64: a tiny deterministic generator, so every run tests the same
/// inputs and a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b" ",
    b"-1",
    b"1e999",
    b"99999999999999999999",
    b"null",
    b"true",
    b"<",
    b">",
    b"&#0;",
    b"%PDF-",
    b"PK\x03\x04",
    b"stream",
    b"endobj",
    b"sha256=",
    b"SHA256=",
    b"http://127.0.0.1/",
    b"http://[::ffff:7f00:1]/",
    b"\xef\xbb\xbf",
];

/// One mutation of `input`.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => out.truncate(rng.below(len)),
            2 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + rng.below(64)).min(len);
                out.drain(from..to);
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let take = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[take..]);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let byte = out[i];
                let n = rng.below(16);
                out.splice(i..i, std::iter::repeat_n(byte, n));
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, u8::try_from(rng.below(256)).unwrap_or(0));
            }
        }
    }
    out
}

/// Runs `harness` on every seed, `rounds` mutations, and the kept
/// regressions of `target`.
fn drive(target: &str, seeds: Vec<Vec<u8>>, rounds: usize, harness: impl Fn(&[u8])) {
    let mut rng = Rng(0x5EC0_F022 ^ target.len() as u64);
    for seed in &seeds {
        harness(seed);
    }
    for _ in 0..rounds {
        let base = &seeds[rng.below(seeds.len())];
        harness(&mutate(&mut rng, base, &seeds));
    }
    let kept = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    if let Ok(entries) = std::fs::read_dir(&kept) {
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).expect("a regression file");
            harness(&bytes);
        }
    }
}

fn signature_seed(flags: u8, secret: &str, ts: i64, body: &[u8], sign: bool) -> Vec<u8> {
    let signature = if sign {
        let s = Secret::parse(secret).expect("seed secret");
        sign_incoming_timestamped(&s, ts, body)
    } else {
        "sha256=00".to_owned()
    };
    let mut out = vec![flags, b'\n'];
    out.extend_from_slice(secret.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(signature.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(ts.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

#[test]
fn fuzz_incoming_signature() {
    let body = br#"{"event_type":"message.received","data":{"user_id":"U1","message":"hi"}}"#;
    let seeds = vec![
        signature_seed(0, "slack_secret_key_12345", harness::NOW, body, true),
        signature_seed(1, "slack_secret_key_12345", harness::NOW - 299, body, true),
        signature_seed(
            0,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            harness::NOW + 300,
            b"",
            true,
        ),
        signature_seed(0, "slack_secret_key_12345", harness::NOW - 301, body, true),
        signature_seed(1, "short", harness::NOW, body, false),
        b"\x00".to_vec(),
        Vec::new(),
    ];
    drive(
        "incoming_signature",
        seeds,
        20_000,
        harness::incoming_signature,
    );
}

#[test]
fn fuzz_incoming_payload() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"event_type":"message.received","timestamp":"2025-01-09T12:00:00Z","source":"slack","data":{"user_id":"U123456789","user_name":"John Doe","message":"Как работает документирование?","thread_id":"1234567890.123456","channel":"support","external_message_id":"1234567890.123456"},"metadata":{"workspace":"myworkspace","correlation_id":"corr_abc123"}}"#,
        r#"{"event_type":"document.upload","timestamp":"2025-01-09T12:00:00Z","source":"kms","data":{"document_url":"https://company.example.com/docs/policy-2025.pdf","document_name":"Company Policy 2025","document_format":"pdf","external_document_id":"doc_ext_policy_001","metadata":{"category":"policies"}}}"#,
        r#"{"event_type":"document.upload","data":{"document_url":"http://0x7f.1/x","document_format":"MD"}}"#,
        r#"{"event_type":"message.received","data":{"user_id":" ","message":"\u0000"}}"#,
        "[]",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    drive("incoming_payload", seeds, 20_000, harness::incoming_payload);
}

fn parse_seeds(format: Format) -> Vec<Vec<u8>> {
    use testkit::documents::{docx, encrypted_pdf, raw_pdf, text_pdf};
    match format {
        Format::Pdf => vec![
            text_pdf(Some("Policy"), &[&["Refunds take 14 days."], &["Page two."]]),
            encrypted_pdf(),
            raw_pdf(&[b"<< /Type /Catalog /Pages 2 0 R >>".to_vec()], ""),
            b"%PDF-1.4\n%%EOF".to_vec(),
        ],
        Format::Docx => vec![docx("Refunds take 14 days."), b"PK\x03\x04".to_vec()],
        Format::Html => vec![
            b"<!doctype html><html><head><title>T</title><meta charset=koi8-r></head><body><h1>A</h1><p>b&amp;c &#x41; <script>x</script></p><table><tr><td>1</td></tr></table></body></html>".to_vec(),
            b"<p>unclosed <b>bold".to_vec(),
        ],
        Format::Markdown => vec![
            b"# Title\n\nPara *em* [link](http://x) `code`\n\n```\nfence\n```\n\n- a\n- b\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".to_vec(),
            b"Setext\n===\n> quote\n".to_vec(),
        ],
        Format::Text => vec![
            "Plain text.\n\nSecond paragraph — ünïcödé.".as_bytes().to_vec(),
            b"\xff\xfeU\x00T\x00F\x00-\x001\x006\x00".to_vec(),
            b"\xef\xbb\xbfBOM".to_vec(),
        ],
    }
}

fn fuzz_parser(target: &str, format: Format, rounds: usize) {
    drive(target, parse_seeds(format), rounds, |bytes| {
        harness::parse_document(format, bytes)
    });
}

#[test]
fn fuzz_parse_pdf() {
    fuzz_parser("parse_pdf", Format::Pdf, 1_500);
}

#[test]
fn fuzz_parse_docx() {
    fuzz_parser("parse_docx", Format::Docx, 1_500);
}

#[test]
fn fuzz_parse_html() {
    fuzz_parser("parse_html", Format::Html, 3_000);
}

#[test]
fn fuzz_parse_markdown() {
    fuzz_parser("parse_markdown", Format::Markdown, 3_000);
}

#[test]
fn fuzz_parse_text() {
    fuzz_parser("parse_text", Format::Text, 3_000);
}
