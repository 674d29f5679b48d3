//! Webhook signature rules: how we sign what we send and how we check what we
//! receive.
//!
//! Why one module: a signature only helps if both ends compute the same MAC
//! over the same bytes, and the two schemes we speak differ in small ways
//! (key derivation, message layout, encoding) that are easy to get subtly
//! wrong when they are spread around. Everything that decides those details
//! lives here, and callers only handle headers and bodies.
//!
//! Schemes:
//! - Legacy (our original scheme, also used for incoming requests):
//!   `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//!   with the secret's UTF-8 bytes as key, even when it starts with `whsec_`,
//!   because existing receivers were built that way.
//! - [Standard Webhooks](https://www.standardwebhooks.com/):
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "<msg_id>.<timestamp>.<body>")>`
//!   where the key is the base64-decoded part of a `whsec_` secret (see
//!   [`Secret::key_bytes_standard`]).
//!
//! During a secret rotation's overlap a delivery is signed by every valid
//! secret (see [`sign_outbound_all`]): `webhook-signature` lists one `v1,…`
//! per secret, space-separated, newest first (Standard Webhooks verifiers
//! accept a message if any one matches). The seed's verifier compares
//! `X-Webhook-Signature` to a single value, so that header keeps the
//! signature by the oldest valid secret, the one every receiver had before
//! the rotation, and `X-Webhook-Signature-Next` carries the newer ones
//! (`sha256=…`, comma-separated, newest first) for receivers that already
//! switched: nothing changes for a receiver until it switches or the
//! overlap ends.
//!
//! Bodies are signed as the exact bytes sent. For receivers that re-serialize
//! the parsed JSON before checking, produce the body with
//! [`crate::jsonjs::to_vec`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Header carrying the legacy `sha256=…` signature.
pub const LEGACY_SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// Header carrying, during a rotation's overlap only, the legacy
/// signatures by the secrets newer than the one in
/// [`LEGACY_SIGNATURE_HEADER`], comma-separated, newest first.
pub const LEGACY_NEXT_SIGNATURE_HEADER: &str = "X-Webhook-Signature-Next";
/// Standard Webhooks header carrying the message id (our event id).
pub const STANDARD_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks header carrying the unix-seconds timestamp.
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks header carrying the `v1,…` signature.
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";

const STANDARD_SECRET_PREFIX: &str = "whsec_";
const LEGACY_SIGNATURE_PREFIX: &str = "sha256=";
const SHA256_LEN: usize = 32;

/// Why a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("secret must be at least 16 characters")]
    TooShort,
    #[error("secret must be at most 256 characters")]
    TooLong,
}

/// A webhook's shared secret.
///
/// Holding one means its length has been checked. `Debug` never shows the
/// value, so secrets can sit in structs that get logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Fewest characters accepted; shorter secrets are guessable.
    pub const MIN_CHARS: usize = 16;
    /// Most characters accepted; bounds what we store and hash per request.
    pub const MAX_CHARS: usize = 256;

    /// Accepts a secret of 16 to 256 characters (Unicode scalar values, not
    /// bytes, so the limit reads the same to a person typing it).
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let chars = s.chars().count();
        if chars < Self::MIN_CHARS {
            Err(SigningError::TooShort)
        } else if chars > Self::MAX_CHARS {
            Err(SigningError::TooLong)
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    /// A fresh `whsec_` + base64(32 random bytes) secret, the Standard
    /// Webhooks format, so the same secret serves both schemes.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SHA256_LEN];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{STANDARD_SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// The secret itself, for storage or for showing once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key for the Standard Webhooks scheme: the base64-decoded part
    /// after `whsec_` when the secret has that form, otherwise the secret's
    /// UTF-8 bytes (so hand-chosen secrets still work).
    pub fn key_bytes_standard(&self) -> Vec<u8> {
        self.0
            .strip_prefix(STANDARD_SECRET_PREFIX)
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .unwrap_or_else(|| self.0.as_bytes().to_vec())
    }

    fn key_bytes_legacy(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Stored with the webhook record; the API never serializes a `Secret`
/// into a response except the one that generated it.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        Secret::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The signatures of one outbound delivery; send each in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSignature {
    /// Unix seconds that every signature covers.
    pub timestamp: i64,
    /// Value for [`LEGACY_SIGNATURE_HEADER`]: `sha256=<hex>` by the oldest
    /// valid secret.
    pub legacy: String,
    /// Value for [`LEGACY_NEXT_SIGNATURE_HEADER`] when there are newer
    /// secrets (an overlap): their `sha256=<hex>`, comma-separated, newest
    /// first.
    pub legacy_next: Option<String>,
    /// Value for [`STANDARD_SIGNATURE_HEADER`]: `v1,<base64>` per secret,
    /// space-separated, newest first.
    pub standard: String,
}

/// Signs one outbound delivery under both schemes with one secret.
///
/// `event_id` is the Standard Webhooks message id; `body` must be the exact
/// bytes that will be sent.
pub fn sign_outbound(
    secret: &Secret,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> OutboundSignature {
    sign_outbound_all(&[secret], event_id, timestamp, body)
}

/// Signs one outbound delivery with every valid secret, `secrets` newest
/// first (as [`crate::webhooks::registry::Webhook::valid_secrets`] gives them); see
/// the module documentation for where each signature goes.
pub fn sign_outbound_all(
    secrets: &[&Secret],
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> OutboundSignature {
    let timestamp_text = timestamp.to_string();
    let standard: Vec<String> = secrets
        .iter()
        .map(|secret| {
            let tag = mac_over(
                &secret.key_bytes_standard(),
                &[
                    event_id.as_bytes(),
                    b".",
                    timestamp_text.as_bytes(),
                    b".",
                    body,
                ],
            )
            .finalize()
            .into_bytes();
            format!("v1,{}", BASE64.encode(tag))
        })
        .collect();
    let mut legacy: Vec<String> = secrets
        .iter()
        .map(|secret| sign_incoming_timestamped(secret, timestamp, body))
        .collect();
    let oldest = legacy.pop().unwrap_or_default();
    OutboundSignature {
        timestamp,
        legacy: oldest,
        legacy_next: (!legacy.is_empty()).then(|| legacy.join(",")),
        standard: standard.join(" "),
    }
}

/// How a verified incoming signature was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForm {
    /// Over `"<timestamp>.<body>"`: binds the timestamp, so replays outside
    /// the window fail.
    Timestamped,
    /// Over the body alone (older clients): a captured request can be
    /// replayed with a fresh timestamp, which is why strict mode refuses it.
    BodyOnly,
}

/// Why an incoming request's signature was refused. Messages never contain
/// the secret or the expected signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IncomingSignatureError {
    #[error("signature header is missing or empty")]
    MissingSignature,
    #[error("timestamp header is missing or empty")]
    MissingTimestamp,
    #[error("timestamp header is not an integer number of unix seconds")]
    MalformedTimestamp,
    /// `skew_secs` is server time minus request timestamp: positive when the
    /// request claims to be from the past.
    #[error("timestamp is {skew_secs} seconds off the server clock, outside the allowed window")]
    StaleTimestamp { skew_secs: i64 },
    #[error("signature header must be `sha256=` followed by 64 hex characters")]
    MalformedSignature,
    #[error("signature does not match the request")]
    InvalidSignature,
}

impl IncomingSignatureError {
    /// Stable code for API responses. Deliberately coarse: a caller learns
    /// what to fix without learning how close a forgery came.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature | Self::MissingTimestamp | Self::MalformedTimestamp => {
                "MISSING_SIGNATURE"
            }
            Self::StaleTimestamp { .. } => "STALE_TIMESTAMP",
            Self::MalformedSignature | Self::InvalidSignature => "INVALID_SIGNATURE",
        }
    }
}

/// Checks an incoming request signed with the legacy scheme.
///
/// Order: signature header present, timestamp header present and an integer,
/// timestamp within `±tolerance_secs` of `now_unix` (inclusive), signature
/// well-formed, then the MAC over `"<timestamp>.<body>"`; unless `strict`, a
/// MAC over the body alone is accepted as [`SignatureForm::BodyOnly`].
/// MACs are compared in constant time.
///
/// The timestamp is MACed in its canonical decimal form, so the number the
/// window check saw is the number the signature covers.
pub fn verify_incoming(
    secret: &Secret,
    header_signature: Option<&str>,
    header_timestamp: Option<&str>,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
    strict: bool,
) -> Result<SignatureForm, IncomingSignatureError> {
    let signature = header_signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(IncomingSignatureError::MissingSignature)?;
    let timestamp: i64 = header_timestamp
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(IncomingSignatureError::MissingTimestamp)?
        .parse()
        .map_err(|_| IncomingSignatureError::MalformedTimestamp)?;

    // Saturating, because both values come from outside and must not be
    // able to overflow; a saturated skew is far outside any window anyway.
    let skew_secs = now_unix.saturating_sub(timestamp);
    let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
    if skew_secs.unsigned_abs() > tolerance {
        return Err(IncomingSignatureError::StaleTimestamp { skew_secs });
    }

    let provided = parse_legacy_signature(signature)?;
    let timestamp_text = timestamp.to_string();
    let key = secret.key_bytes_legacy();
    if mac_over(key, &[timestamp_text.as_bytes(), b".", body])
        .verify_slice(&provided)
        .is_ok()
    {
        return Ok(SignatureForm::Timestamped);
    }
    if !strict && mac_over(key, &[body]).verify_slice(&provided).is_ok() {
        return Ok(SignatureForm::BodyOnly);
    }
    Err(IncomingSignatureError::InvalidSignature)
}

/// The `sha256=…` value a client sends for a timestamped request (also our
/// outbound legacy signature).
pub fn sign_incoming_timestamped(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let timestamp_text = timestamp.to_string();
    legacy_header_value(mac_over(
        secret.key_bytes_legacy(),
        &[timestamp_text.as_bytes(), b".", body],
    ))
}

/// The `sha256=…` value an older client sends, covering the body only.
pub fn sign_incoming_body_only(secret: &Secret, body: &[u8]) -> String {
    legacy_header_value(mac_over(secret.key_bytes_legacy(), &[body]))
}

fn legacy_header_value(mac: HmacSha256) -> String {
    format!(
        "{LEGACY_SIGNATURE_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

pub(crate) fn mac_over(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104 hashes long ones and pads short
    // ones); the Result only exists because `KeyInit` is shared with
    // fixed-key ciphers, so no input can reach the error arm.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Parses `sha256=<64 hex>`: prefix in any case, hex in any case.
fn parse_legacy_signature(value: &str) -> Result<[u8; SHA256_LEN], IncomingSignatureError> {
    let (prefix, hex_digits) = value
        .split_at_checked(LEGACY_SIGNATURE_PREFIX.len())
        .ok_or(IncomingSignatureError::MalformedSignature)?;
    if !prefix.eq_ignore_ascii_case(LEGACY_SIGNATURE_PREFIX) {
        return Err(IncomingSignatureError::MalformedSignature);
    }
    let mut bytes = [0u8; SHA256_LEN];
    // Rejects any length other than 64 as well as non-hex characters.
    hex::decode_to_slice(hex_digits, &mut bytes)
        .map_err(|_| IncomingSignatureError::MalformedSignature)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const KAT_SECRET: &str = "my_secret_key_12345";
    const KAT_TIMESTAMP: i64 = 1641038405;
    const KAT_BODY: &[u8] = br#"{"a":1}"#;
    /// node: createHmac('sha256', KAT_SECRET).update('1641038405.{"a":1}').digest('hex')
    const KAT_TIMESTAMPED_HEX: &str =
        "aa25eb632e6bd39903f35c6a90b69a67d9b61499b174244554162f95059e31a6";
    /// node: createHmac('sha256', KAT_SECRET).update('{"a":1}').digest('hex')
    const KAT_BODY_ONLY_HEX: &str =
        "09e5f89b901adcd752063d5de811a5c4d1fd4591c95ed05020498158142ec6eb";

    // Standard Webhooks spec test vector.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    /// node: createHmac('sha256', SW_SECRET).update('1614265330.{"test": 2432232314}').digest('hex')
    const SW_SECRET_LEGACY_HEX: &str =
        "2e37df5d4a028c51a7f3133d64ae1e300d2c2c900f1b1d49d4369ad2530f8964";

    const NOW: i64 = 1_700_000_000;
    const TOLERANCE: i64 = 300;

    fn kat_secret() -> Secret {
        Secret::parse(KAT_SECRET).unwrap()
    }

    fn verify(
        signature: Option<&str>,
        timestamp: Option<&str>,
        strict: bool,
    ) -> Result<SignatureForm, IncomingSignatureError> {
        verify_incoming(
            &kat_secret(),
            signature,
            timestamp,
            KAT_BODY,
            NOW,
            TOLERANCE,
            strict,
        )
    }

    fn signed_at(ts: i64) -> String {
        sign_incoming_timestamped(&kat_secret(), ts, KAT_BODY)
    }

    #[test]
    fn legacy_known_answers() {
        let secret = kat_secret();
        assert_eq!(
            sign_incoming_timestamped(&secret, KAT_TIMESTAMP, KAT_BODY),
            format!("sha256={KAT_TIMESTAMPED_HEX}")
        );
        assert_eq!(
            sign_incoming_body_only(&secret, KAT_BODY),
            format!("sha256={KAT_BODY_ONLY_HEX}")
        );
        let out = sign_outbound(&secret, "evt_1", KAT_TIMESTAMP, KAT_BODY);
        assert_eq!(out.timestamp, KAT_TIMESTAMP);
        assert_eq!(out.legacy, format!("sha256={KAT_TIMESTAMPED_HEX}"));
    }

    #[test]
    fn legacy_known_answer_matches_node() {
        let script = format!(
            "console.log(require('crypto').createHmac('sha256', '{KAT_SECRET}')\
             .update('{KAT_TIMESTAMP}.' + process.argv[1]).digest('hex'))"
        );
        let run = Command::new("/usr/bin/node")
            .args(["-e", &script, "--", std::str::from_utf8(KAT_BODY).unwrap()])
            .output();
        match run {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("NOTE: legacy_known_answer_matches_node skipped: /usr/bin/node not found");
                eprintln!(
                    "NOTE: legacy_known_answer_matches_node skipped: /usr/bin/node not found"
                );
            }
            run => {
                let run = run.unwrap();
                assert!(run.status.success());
                assert_eq!(
                    String::from_utf8(run.stdout).unwrap().trim(),
                    KAT_TIMESTAMPED_HEX
                );
            }
        }
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        let secret = Secret::parse(SW_SECRET).unwrap();
        let out = sign_outbound(&secret, SW_MSG_ID, SW_TIMESTAMP, SW_BODY);
        assert_eq!(out.standard, SW_EXPECTED);
        // The legacy scheme keys with the whole secret, `whsec_` included.
        assert_eq!(out.legacy, format!("sha256={SW_SECRET_LEGACY_HEX}"));
    }

    #[test]
    fn several_secrets_sign_newest_first_and_the_seed_header_keeps_the_oldest() {
        let new = Secret::parse(SW_SECRET).unwrap();
        let mid = Secret::parse("a-middle-secret-value").unwrap();
        let old = kat_secret();
        let all = sign_outbound_all(&[&new, &mid, &old], SW_MSG_ID, SW_TIMESTAMP, SW_BODY);
        let one = |s: &Secret| sign_outbound(s, SW_MSG_ID, SW_TIMESTAMP, SW_BODY);
        assert_eq!(
            all.standard,
            format!(
                "{} {} {}",
                one(&new).standard,
                one(&mid).standard,
                one(&old).standard
            )
        );
        assert!(all.standard.starts_with(SW_EXPECTED));
        assert_eq!(all.legacy, one(&old).legacy);
        assert_eq!(
            all.legacy_next.as_deref(),
            Some(format!("{},{}", one(&new).legacy, one(&mid).legacy).as_str())
        );
        // One secret: no second header.
        assert_eq!(one(&new).legacy_next, None);
        assert!(!one(&new).standard.contains(' '));
    }

    #[test]
    fn standard_key_falls_back_to_utf8_bytes() {
        // node: createHmac('sha256', <secret>).update('msg_1.1700000000.{}').digest('base64')
        let cases = [
            (
                "not_a_whsec_secret!",
                "v1,5oW3XDHCJ4Lo4705eTk21CfbeEJxpHb75FZ0slYh6Rw=",
            ),
            (
                "whsec_not*valid*base64!!",
                "v1,wQ1RasJjyP+9uPZSnHBYVQ9d9onD9SLakROdg+6LjW8=",
            ),
        ];
        for (raw, expected) in cases {
            let secret = Secret::parse(raw).unwrap();
            assert_eq!(secret.key_bytes_standard(), raw.as_bytes());
            assert_eq!(
                sign_outbound(&secret, "msg_1", 1_700_000_000, b"{}").standard,
                expected
            );
        }
        let decoded = Secret::parse(SW_SECRET).unwrap().key_bytes_standard();
        assert_eq!(
            decoded,
            BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
        );
    }

    #[test]
    fn secret_length_counts_chars_not_bytes() {
        assert_eq!(
            Secret::parse(&"a".repeat(15)).unwrap_err(),
            SigningError::TooShort
        );
        assert!(Secret::parse(&"a".repeat(16)).is_ok());
        assert!(Secret::parse(&"a".repeat(256)).is_ok());
        assert_eq!(
            Secret::parse(&"a".repeat(257)).unwrap_err(),
            SigningError::TooLong
        );
        // 15 chars but 30 bytes: still too short.
        assert_eq!(
            Secret::parse(&"é".repeat(15)).unwrap_err(),
            SigningError::TooShort
        );
        // 256 chars but 512 bytes: still fine.
        assert!(Secret::parse(&"é".repeat(256)).is_ok());
        assert_eq!(Secret::parse("").unwrap_err(), SigningError::TooShort);
        assert_eq!(
            SigningError::TooShort.to_string(),
            "secret must be at least 16 characters"
        );
        assert_eq!(
            SigningError::TooLong.to_string(),
            "secret must be at most 256 characters"
        );
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret = kat_secret();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret:#?}"), "Secret(***)");
        assert_eq!(secret.expose(), KAT_SECRET);
    }

    #[test]
    fn generated_secrets_are_standard_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a.expose(), b.expose());
        for secret in [&a, &b] {
            let encoded = secret.expose().strip_prefix("whsec_").unwrap();
            assert_eq!(BASE64.decode(encoded).unwrap().len(), 32);
            assert_eq!(secret.key_bytes_standard().len(), 32);
            assert!(Secret::parse(secret.expose()).is_ok());
        }
    }

    #[test]
    fn timestamped_signature_verifies() {
        let ts = NOW.to_string();
        assert_eq!(
            verify(Some(&signed_at(NOW)), Some(&ts), true),
            Ok(SignatureForm::Timestamped)
        );
        let kat = verify_incoming(
            &kat_secret(),
            Some(&format!("sha256={KAT_TIMESTAMPED_HEX}")),
            Some("1641038405"),
            KAT_BODY,
            KAT_TIMESTAMP,
            0,
            true,
        );
        assert_eq!(kat, Ok(SignatureForm::Timestamped));
    }

    #[test]
    fn uppercase_hex_prefix_case_and_whitespace_are_accepted() {
        let ts = NOW.to_string();
        let sig = signed_at(NOW);
        let hex_part = sig.strip_prefix("sha256=").unwrap();
        for variant in [
            format!("sha256={}", hex_part.to_uppercase()),
            format!("SHA256={hex_part}"),
            format!("Sha256={}", hex_part.to_uppercase()),
            format!("  {sig}\t"),
        ] {
            assert_eq!(
                verify(Some(&variant), Some(&format!(" {ts} ")), true),
                Ok(SignatureForm::Timestamped),
                "{variant:?}"
            );
        }
    }

    #[test]
    fn body_only_depends_on_strict() {
        let body_only = sign_incoming_body_only(&kat_secret(), KAT_BODY);
        let ts = NOW.to_string();
        assert_eq!(
            verify(Some(&body_only), Some(&ts), false),
            Ok(SignatureForm::BodyOnly)
        );
        assert_eq!(
            verify(Some(&body_only), Some(&ts), true),
            Err(IncomingSignatureError::InvalidSignature)
        );
    }

    #[test]
    fn window_edges_are_inclusive() {
        for skew in [-TOLERANCE, 0, TOLERANCE] {
            let ts = NOW - skew;
            assert_eq!(
                verify(Some(&signed_at(ts)), Some(&ts.to_string()), true),
                Ok(SignatureForm::Timestamped),
                "skew {skew}"
            );
        }
        for skew in [-TOLERANCE - 1, TOLERANCE + 1] {
            let ts = NOW - skew;
            assert_eq!(
                verify(Some(&signed_at(ts)), Some(&ts.to_string()), true),
                Err(IncomingSignatureError::StaleTimestamp { skew_secs: skew }),
                "skew {skew}"
            );
        }
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        for ts in [i64::MIN, i64::MAX] {
            let err = verify_incoming(
                &kat_secret(),
                Some(&signed_at(ts)),
                Some(&ts.to_string()),
                KAT_BODY,
                NOW,
                i64::MAX,
                true,
            );
            assert!(err.is_ok(), "{ts}: {err:?}");
            let err = verify(Some(&signed_at(ts)), Some(&ts.to_string()), true);
            assert!(
                matches!(err, Err(IncomingSignatureError::StaleTimestamp { .. })),
                "{ts}: {err:?}"
            );
        }
        // A negative tolerance is treated as zero, not as "anything goes".
        let err = verify_incoming(
            &kat_secret(),
            Some(&signed_at(NOW - 1)),
            Some(&(NOW - 1).to_string()),
            KAT_BODY,
            NOW,
            -5,
            true,
        );
        assert_eq!(
            err,
            Err(IncomingSignatureError::StaleTimestamp { skew_secs: 1 })
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        use IncomingSignatureError::*;
        let ts = NOW.to_string();
        let sig = signed_at(NOW);
        assert_eq!(verify(None, Some(&ts), true), Err(MissingSignature));
        assert_eq!(verify(Some(""), Some(&ts), true), Err(MissingSignature));
        assert_eq!(verify(Some("  "), Some(&ts), true), Err(MissingSignature));
        assert_eq!(verify(None, None, true), Err(MissingSignature));
        assert_eq!(verify(Some(&sig), None, true), Err(MissingTimestamp));
        assert_eq!(verify(Some(&sig), Some(" "), true), Err(MissingTimestamp));
        for bad_ts in ["abc", "1.5", "1e9", "99999999999999999999", "0x10"] {
            assert_eq!(
                verify(Some(&sig), Some(bad_ts), true),
                Err(MalformedTimestamp),
                "{bad_ts}"
            );
        }
        let hex_part = sig.strip_prefix("sha256=").unwrap();
        let malformed = [
            hex_part.to_string(),
            format!("sha1={hex_part}"),
            format!("sha256:{hex_part}"),
            format!("sha256={}", &hex_part[1..]),
            format!("sha256={hex_part}0"),
            format!("sha256= {hex_part}"),
            format!("sha256={}g", &hex_part[1..]),
            "sha256=".to_string(),
            "sha2é".to_string(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string(),
        ];
        for bad in &malformed {
            assert_eq!(
                verify(Some(bad), Some(&ts), false),
                Err(MalformedSignature),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_mac_is_invalid() {
        use IncomingSignatureError::*;
        let ts = NOW.to_string();
        let other = Secret::parse("a-different-secret-value").unwrap();
        let cases = [
            // Right scheme, wrong key.
            sign_incoming_timestamped(&other, NOW, KAT_BODY),
            // Signed for another timestamp.
            signed_at(NOW - 1),
            // Signed over another body.
            sign_incoming_timestamped(&kat_secret(), NOW, b"{\"a\":2}"),
            format!("sha256={}", "0".repeat(64)),
        ];
        for sig in &cases {
            assert_eq!(verify(Some(sig), Some(&ts), false), Err(InvalidSignature));
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        use IncomingSignatureError::*;
        let stale = (NOW - TOLERANCE - 1).to_string();
        // Missing signature wins over a missing timestamp.
        assert_eq!(verify(Some(""), None, true), Err(MissingSignature));
        // The timestamp is parsed before the signature's format is looked at.
        assert_eq!(
            verify(Some("junk"), Some("junk"), true),
            Err(MalformedTimestamp)
        );
        // The window is checked before the signature's format.
        assert_eq!(
            verify(Some("junk"), Some(&stale), true),
            Err(StaleTimestamp {
                skew_secs: TOLERANCE + 1
            })
        );
    }

    #[test]
    fn codes_and_messages() {
        use IncomingSignatureError::*;
        let all = [
            (MissingSignature, "MISSING_SIGNATURE"),
            (MissingTimestamp, "MISSING_SIGNATURE"),
            (MalformedTimestamp, "MISSING_SIGNATURE"),
            (StaleTimestamp { skew_secs: -400 }, "STALE_TIMESTAMP"),
            (MalformedSignature, "INVALID_SIGNATURE"),
            (InvalidSignature, "INVALID_SIGNATURE"),
        ];
        let expected_sig = signed_at(NOW);
        for (err, code) in all {
            assert_eq!(err.code(), code, "{err:?}");
            let message = err.to_string();
            assert!(!message.is_empty());
            assert!(!message.contains(KAT_SECRET));
            assert!(!message.contains(&expected_sig[7..]));
        }
        assert!(
            StaleTimestamp { skew_secs: -400 }
                .to_string()
                .contains("-400")
        );
    }
}
