//! Incoming signature profiles: which provider's scheme an incoming webhook
//! is signed with, and how each one is checked.
//!
//! A webhook's `signature_profile` picks the scheme its sender speaks, so a
//! sender that already signs its requests the way Slack, Stripe, GitHub or
//! Standard Webhooks define it can post without learning ours:
//!
//! | profile | headers read | MAC (HMAC-SHA256) over | key | window |
//! | --- | --- | --- | --- | --- |
//! | `seed` | `X-Webhook-Timestamp`, `X-Webhook-Signature: sha256=<hex>` | `<ts>.<body>` (or `<body>` unless strict) | secret bytes | yes |
//! | `standard_webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> …` | `<id>.<ts>.<body>` | base64 part of `whsec_…` | yes |
//! | `slack` | `X-Slack-Request-Timestamp`, `X-Slack-Signature: v0=<hex>` | `v0:<ts>:<body>` | secret bytes | yes |
//! | `stripe` | `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` | `<ts>.<body>` | secret bytes (`whsec_` included) | yes |
//! | `github` | `X-Hub-Signature-256: sha256=<hex>` | `<body>` | secret bytes | none |
//!
//! Every check takes a list of secrets and accepts a match by any of them,
//! so a webhook whose secret is being rotated keeps accepting senders that
//! still hold the previous one. Header and timestamp errors do not depend on
//! the secret, so they are reported before any MAC is computed, in the order
//! of [`signing::verify_incoming`]: headers present, timestamp an integer,
//! timestamp in the window, signature well-formed, then the MACs (compared in
//! constant time by `Mac::verify_slice`).
//!
//! The seed scheme itself stays in [`signing`]; this module only routes to it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::webhooks::signing::{self, IncomingSignatureError, Secret};

/// How a webhook's incoming requests are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureProfile {
    /// This system's own scheme (`X-Webhook-Signature: sha256=…`).
    #[default]
    Seed,
    /// <https://www.standardwebhooks.com/> (Svix and others).
    StandardWebhooks,
    /// Slack's request signing, version `v0`.
    Slack,
    /// Stripe's `Stripe-Signature`, scheme `v1`.
    Stripe,
    /// GitHub's `X-Hub-Signature-256`; it carries no timestamp.
    Github,
}

impl SignatureProfile {
    pub const ALL: [SignatureProfile; 5] = [
        Self::Seed,
        Self::StandardWebhooks,
        Self::Slack,
        Self::Stripe,
        Self::Github,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::StandardWebhooks => "standard_webhooks",
            Self::Slack => "slack",
            Self::Stripe => "stripe",
            Self::Github => "github",
        }
    }

    /// Parses a profile name, exactly as [`Self::as_str`] writes it.
    pub fn parse(text: &str) -> Result<Self, UnknownProfile> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or(UnknownProfile)
    }
}

impl fmt::Display for SignatureProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A profile name that is not one of [`SignatureProfile::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be one of seed, standard_webhooks, slack, stripe, github")]
pub struct UnknownProfile;

// Header names as providers document them; lookups are case-insensitive.
const SEED_SIGNATURE: &str = "X-Webhook-Signature";
const SEED_TIMESTAMP: &str = "X-Webhook-Timestamp";
const SLACK_SIGNATURE: &str = "X-Slack-Signature";
const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
const STRIPE_SIGNATURE: &str = "Stripe-Signature";
const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";

const SHA256_LEN: usize = 32;

/// Why an incoming request's signature was refused under its profile.
/// Messages name the header and the expected form, never the secret or the
/// expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Under the `seed` profile: today's errors, unchanged.
    #[error(transparent)]
    Seed(#[from] IncomingSignatureError),
    #[error("{header} header is missing or empty")]
    MissingHeader { header: &'static str },
    #[error("{header} header is not an integer number of unix seconds")]
    MalformedTimestamp { header: &'static str },
    /// `skew_secs` is server time minus request timestamp.
    #[error("timestamp is {skew_secs} seconds off the server clock, outside the allowed window")]
    StaleTimestamp { skew_secs: i64 },
    #[error("{header} header must be {expected}")]
    MalformedSignature {
        header: &'static str,
        expected: &'static str,
    },
    #[error("signature does not match the request")]
    Mismatch,
}

impl SignatureError {
    /// The same coarse codes as the seed scheme's errors, so senders branch
    /// on one set whatever the profile.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Seed(e) => e.code(),
            Self::MissingHeader { .. } | Self::MalformedTimestamp { .. } => "MISSING_SIGNATURE",
            Self::StaleTimestamp { .. } => "STALE_TIMESTAMP",
            Self::MalformedSignature { .. } | Self::Mismatch => "INVALID_SIGNATURE",
        }
    }
}

/// An incoming request as the checks see it: its headers and raw body.
pub struct Presented<'a> {
    /// `(name, value)` pairs as received; names are matched ignoring case.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> Presented<'a> {
    /// The first value of header `name`, trimmed; `None` when absent or blank.
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&'a str, SignatureError> {
        self.header(name)
            .ok_or(SignatureError::MissingHeader { header: name })
    }
}

/// The clock and window the timestamped profiles check against.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub now_unix: i64,
    /// `signing.timestamp_tolerance`, in seconds; negative counts as zero.
    pub tolerance_secs: i64,
}

/// Checks `req` under `profile`, accepting a signature by any of `secrets`.
/// `strict` is the webhook's `strict_signatures` and only concerns `seed`.
pub fn verify(
    profile: SignatureProfile,
    secrets: &[&Secret],
    req: &Presented<'_>,
    window: Window,
    strict: bool,
) -> Result<(), SignatureError> {
    match profile {
        SignatureProfile::Seed => verify_seed(secrets, req, window, strict),
        SignatureProfile::StandardWebhooks => verify_standard(secrets, req, window),
        SignatureProfile::Slack => verify_slack(secrets, req, window),
        SignatureProfile::Stripe => verify_stripe(secrets, req, window),
        SignatureProfile::Github => verify_github(secrets, req),
    }
}

/// The seed scheme, one secret at a time: anything but a wrong MAC is the
/// same for every secret, so it is answered at once.
fn verify_seed(
    secrets: &[&Secret],
    req: &Presented<'_>,
    window: Window,
    strict: bool,
) -> Result<(), SignatureError> {
    for secret in secrets {
        match signing::verify_incoming(
            secret,
            req.header(SEED_SIGNATURE),
            req.header(SEED_TIMESTAMP),
            req.body,
            window.now_unix,
            window.tolerance_secs,
            strict,
        ) {
            Ok(_) => return Ok(()),
            Err(IncomingSignatureError::InvalidSignature) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IncomingSignatureError::InvalidSignature.into())
}

fn verify_standard(
    secrets: &[&Secret],
    req: &Presented<'_>,
    window: Window,
) -> Result<(), SignatureError> {
    let header = signing::STANDARD_SIGNATURE_HEADER;
    let msg_id = req.required(signing::STANDARD_ID_HEADER)?;
    let signatures = req.required(header)?;
    let timestamp = timestamp(req, signing::STANDARD_TIMESTAMP_HEADER, window)?;
    // Space-separated `<version>,<base64>`; versions other than v1 (such as
    // the asymmetric v1a) are not ours to check and are skipped, as the
    // libraries do.
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .filter(|tag| tag.len() == SHA256_LEN)
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::MalformedSignature {
            header,
            expected: "a space-separated list of `v1,<base64 HMAC-SHA256>`",
        });
    }
    let ts = timestamp.to_string();
    any_match(secrets, &candidates, |secret| {
        signing::mac_over(
            &secret.key_bytes_standard(),
            &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", req.body],
        )
    })
}

fn verify_slack(
    secrets: &[&Secret],
    req: &Presented<'_>,
    window: Window,
) -> Result<(), SignatureError> {
    let signature = req.required(SLACK_SIGNATURE)?;
    let timestamp = timestamp(req, SLACK_TIMESTAMP, window)?;
    let tag = hex_after(signature, "v0=").ok_or(SignatureError::MalformedSignature {
        header: SLACK_SIGNATURE,
        expected: "`v0=` followed by 64 hex characters",
    })?;
    let ts = timestamp.to_string();
    any_match(secrets, &[tag], |secret| {
        signing::mac_over(
            secret.expose().as_bytes(),
            &[b"v0:", ts.as_bytes(), b":", req.body],
        )
    })
}

fn verify_stripe(
    secrets: &[&Secret],
    req: &Presented<'_>,
    window: Window,
) -> Result<(), SignatureError> {
    let header = STRIPE_SIGNATURE;
    let malformed = SignatureError::MalformedSignature {
        header,
        expected: "`t=<unix seconds>,v1=<64 hex>` (more `v1=` allowed)",
    };
    let value = req.required(header)?;
    // `key=value` pairs; Stripe's own parser keeps the first `t` and every
    // `v1`, and ignores other schemes (`v0` is a test-mode leftover).
    let mut t = None;
    let mut candidates = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", ts)) if t.is_none() => t = Some(ts),
            Some(("v1", hex_tag)) => candidates.extend(hex_tag_bytes(hex_tag)),
            _ => {}
        }
    }
    let Some(t) = t else {
        return Err(malformed);
    };
    let timestamp = window.check(parse_timestamp(t, header)?)?;
    if candidates.is_empty() {
        return Err(malformed);
    }
    let ts = timestamp.to_string();
    any_match(secrets, &candidates, |secret| {
        signing::mac_over(secret.expose().as_bytes(), &[ts.as_bytes(), b".", req.body])
    })
}

/// GitHub signs the body alone: there is no timestamp, so a captured
/// request can be replayed; the idempotency of message and document ids is
/// what protects against that under this profile.
fn verify_github(secrets: &[&Secret], req: &Presented<'_>) -> Result<(), SignatureError> {
    let signature = req.required(GITHUB_SIGNATURE)?;
    let tag = hex_after(signature, "sha256=").ok_or(SignatureError::MalformedSignature {
        header: GITHUB_SIGNATURE,
        expected: "`sha256=` followed by 64 hex characters",
    })?;
    any_match(secrets, &[tag], |secret| {
        signing::mac_over(secret.expose().as_bytes(), &[req.body])
    })
}

impl Window {
    /// `timestamp` if it is within `±tolerance_secs` of now (inclusive).
    /// Saturating, because the timestamp comes from outside.
    fn check(self, timestamp: i64) -> Result<i64, SignatureError> {
        let skew_secs = self.now_unix.saturating_sub(timestamp);
        let tolerance = u64::try_from(self.tolerance_secs).unwrap_or(0);
        if skew_secs.unsigned_abs() > tolerance {
            return Err(SignatureError::StaleTimestamp { skew_secs });
        }
        Ok(timestamp)
    }
}

/// The timestamp in header `name`, present, an integer and in the window.
/// The caller MACs its canonical decimal form, so the number the window saw
/// is the number the signature covers.
fn timestamp(
    req: &Presented<'_>,
    name: &'static str,
    window: Window,
) -> Result<i64, SignatureError> {
    window.check(parse_timestamp(req.required(name)?, name)?)
}

fn parse_timestamp(text: &str, header: &'static str) -> Result<i64, SignatureError> {
    text.trim()
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp { header })
}

/// The 32 bytes of `<prefix><64 hex>`, or `None` if it is not that form.
fn hex_after(value: &str, prefix: &str) -> Option<Vec<u8>> {
    hex_tag_bytes(value.strip_prefix(prefix)?)
}

fn hex_tag_bytes(hex_digits: &str) -> Option<Vec<u8>> {
    let mut bytes = [0u8; SHA256_LEN];
    // Rejects any length other than 64 as well as non-hex characters.
    hex::decode_to_slice(hex_digits, &mut bytes).ok()?;
    Some(bytes.to_vec())
}

/// Whether any candidate tag is the MAC under any secret.
fn any_match(
    secrets: &[&Secret],
    candidates: &[Vec<u8>],
    mac: impl Fn(&Secret) -> signing::HmacSha256,
) -> Result<(), SignatureError> {
    use hmac::Mac as _;
    for secret in secrets {
        let expected = mac(secret);
        // `verify_slice` compares in constant time; it consumes the MAC, so
        // each candidate gets a clone of the keyed, fed state.
        if candidates
            .iter()
            .any(|tag| expected.clone().verify_slice(tag).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const WINDOW: Window = Window {
        now_unix: NOW,
        tolerance_secs: 300,
    };

    /// Standard Webhooks' own test vector (the spec repository's examples).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: i64 = 1614265330;
    const SW_BODY: &str = r#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// Slack's example from "Verifying requests from Slack".
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_EXAMPLE_TS: i64 = 1531420618;
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE_VALUE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    /// Stripe publishes no vector: this one is stripe-node 18.5.0's
    /// `webhooks.generateTestHeaderString({payload, secret, timestamp})`.
    const STRIPE_SECRET: &str = "whsec_test_secret_0123456789";
    const STRIPE_BODY: &str = r#"{"id":"evt_test_webhook","object":"event"}"#;
    const STRIPE_HEADER: &str =
        "t=1700000000,v1=4f0251e7f4d4cb99466163fc9fcaa540ad89cfd27f93be10042987e88db743ed";

    /// GitHub's example from "Validating webhook deliveries".
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &str = "Hello, World!";
    const GITHUB_SIGNATURE_VALUE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secret(text: &str) -> Secret {
        Secret::parse(text).unwrap()
    }

    fn at(now_unix: i64) -> Window {
        Window {
            now_unix,
            tolerance_secs: 300,
        }
    }

    fn check(
        profile: SignatureProfile,
        secrets: &[&Secret],
        headers: &[(&str, &str)],
        body: &str,
        window: Window,
    ) -> Result<(), SignatureError> {
        let req = Presented {
            headers,
            body: body.as_bytes(),
        };
        verify(profile, secrets, &req, window, true)
    }

    fn other() -> Secret {
        secret("a-completely-different-secret")
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for profile in SignatureProfile::ALL {
            assert_eq!(SignatureProfile::parse(profile.as_str()), Ok(profile));
            let json = serde_json::to_string(&profile).unwrap();
            assert_eq!(json, format!("\"{profile}\""));
        }
        assert_eq!(SignatureProfile::default(), SignatureProfile::Seed);
        for bad in ["", "Slack", "hmac", "standard-webhooks", " seed"] {
            assert_eq!(SignatureProfile::parse(bad), Err(UnknownProfile), "{bad:?}");
        }
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        let key = secret(SW_SECRET);
        let ts = SW_TIMESTAMP.to_string();
        let headers = [
            ("webhook-id", SW_MSG_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", SW_SIGNATURE),
        ];
        let sw = SignatureProfile::StandardWebhooks;
        assert_eq!(
            check(sw, &[&key], &headers, SW_BODY, at(SW_TIMESTAMP)),
            Ok(())
        );
        // Any entry of the list may match; unknown versions are skipped.
        let listed = format!("v1a,AAAA v1,{} {SW_SIGNATURE}", BASE64.encode([0u8; 32]));
        let headers_listed = [
            headers[0],
            headers[1],
            ("Webhook-Signature", listed.as_str()),
        ];
        assert_eq!(
            check(sw, &[&key], &headers_listed, SW_BODY, at(SW_TIMESTAMP)),
            Ok(())
        );
        assert_eq!(
            check(sw, &[&other()], &headers, SW_BODY, at(SW_TIMESTAMP)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(
                sw,
                &[&key],
                &headers,
                r#"{"test": 2432232315}"#,
                at(SW_TIMESTAMP)
            ),
            Err(SignatureError::Mismatch)
        );
        // The message id is signed too.
        let moved = [("webhook-id", "msg_other"), headers[1], headers[2]];
        assert_eq!(
            check(sw, &[&key], &moved, SW_BODY, at(SW_TIMESTAMP)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(sw, &[&key], &headers, SW_BODY, at(SW_TIMESTAMP + 301)),
            Err(SignatureError::StaleTimestamp { skew_secs: 301 })
        );
        for bad in ["g0hM9SsE", "v2,abc", "v1,not base64!", "v1,AAAA"] {
            let headers_bad = [headers[0], headers[1], ("webhook-signature", bad)];
            assert!(
                matches!(
                    check(sw, &[&key], &headers_bad, SW_BODY, at(SW_TIMESTAMP)),
                    Err(SignatureError::MalformedSignature { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            check(sw, &[&key], &headers[1..], SW_BODY, at(SW_TIMESTAMP)),
            Err(SignatureError::MissingHeader {
                header: "webhook-id"
            })
        );
    }

    #[test]
    fn slack_documented_example() {
        let key = secret(SLACK_SECRET);
        let ts = SLACK_EXAMPLE_TS.to_string();
        let headers = [
            ("X-Slack-Request-Timestamp", ts.as_str()),
            ("X-Slack-Signature", SLACK_SIGNATURE_VALUE),
        ];
        let slack = SignatureProfile::Slack;
        let now = at(SLACK_EXAMPLE_TS);
        assert_eq!(check(slack, &[&key], &headers, SLACK_BODY, now), Ok(()));
        assert_eq!(
            check(slack, &[&other()], &headers, SLACK_BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(
                slack,
                &[&key],
                &headers,
                &SLACK_BODY.replace("foobar", "foobaz"),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(
                slack,
                &[&key],
                &headers,
                SLACK_BODY,
                at(SLACK_EXAMPLE_TS - 301)
            ),
            Err(SignatureError::StaleTimestamp { skew_secs: -301 })
        );
        let bare_hex = [
            headers[0],
            ("X-Slack-Signature", &SLACK_SIGNATURE_VALUE[3..]),
        ];
        assert!(matches!(
            check(slack, &[&key], &bare_hex, SLACK_BODY, now),
            Err(SignatureError::MalformedSignature { .. })
        ));
        let bad_ts = [("X-Slack-Request-Timestamp", "yesterday"), headers[1]];
        assert_eq!(
            check(slack, &[&key], &bad_ts, SLACK_BODY, now),
            Err(SignatureError::MalformedTimestamp {
                header: "X-Slack-Request-Timestamp"
            })
        );
    }

    #[test]
    fn stripe_library_vector() {
        let key = secret(STRIPE_SECRET);
        let stripe = SignatureProfile::Stripe;
        let headers = [("Stripe-Signature", STRIPE_HEADER)];
        assert_eq!(
            check(stripe, &[&key], &headers, STRIPE_BODY, WINDOW),
            Ok(())
        );
        // Several v1 (Stripe sends one per active secret), any may match;
        // order of items does not matter.
        let (t, v1) = STRIPE_HEADER.split_once(',').unwrap();
        let several = format!("{v1},v1={},{t},v0=ignored", "0".repeat(64));
        let headers_several = [("stripe-signature", several.as_str())];
        assert_eq!(
            check(stripe, &[&key], &headers_several, STRIPE_BODY, WINDOW),
            Ok(())
        );
        assert_eq!(
            check(stripe, &[&other()], &headers, STRIPE_BODY, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(stripe, &[&key], &headers, "{}", WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(stripe, &[&key], &headers, STRIPE_BODY, at(NOW + 400)),
            Err(SignatureError::StaleTimestamp { skew_secs: 400 })
        );
        for bad in [v1, t, "t=1700000000,v1=abc", "garbage"] {
            assert!(
                matches!(
                    check(
                        stripe,
                        &[&key],
                        &[("Stripe-Signature", bad)],
                        STRIPE_BODY,
                        WINDOW
                    ),
                    Err(SignatureError::MalformedSignature { .. })
                ),
                "{bad:?}"
            );
        }
        let bad_t = format!("t=soon,{v1}");
        assert!(matches!(
            check(
                stripe,
                &[&key],
                &[("Stripe-Signature", &bad_t)],
                STRIPE_BODY,
                WINDOW
            ),
            Err(SignatureError::MalformedTimestamp { .. })
        ));
    }

    #[test]
    fn github_documented_example() {
        let key = secret(GITHUB_SECRET);
        let github = SignatureProfile::Github;
        let headers = [("X-Hub-Signature-256", GITHUB_SIGNATURE_VALUE)];
        // No timestamp: any clock is fine.
        for now in [0, NOW, i64::MAX] {
            assert_eq!(
                check(github, &[&key], &headers, GITHUB_BODY, at(now)),
                Ok(())
            );
        }
        assert_eq!(
            check(github, &[&other()], &headers, GITHUB_BODY, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(github, &[&key], &headers, "Hello, World?", WINDOW),
            Err(SignatureError::Mismatch)
        );
        // The SHA-1 header is not accepted in its place.
        let sha1 = [("X-Hub-Signature", "sha1=0123")];
        assert_eq!(
            check(github, &[&key], &sha1, GITHUB_BODY, WINDOW),
            Err(SignatureError::MissingHeader {
                header: "X-Hub-Signature-256"
            })
        );
        let bad = [("X-Hub-Signature-256", "sha1=abc")];
        assert!(matches!(
            check(github, &[&key], &bad, GITHUB_BODY, WINDOW),
            Err(SignatureError::MalformedSignature { .. })
        ));
    }

    #[test]
    fn any_of_several_secrets_matches_and_none_is_a_mismatch() {
        let key = secret(GITHUB_SECRET);
        let headers = [("X-Hub-Signature-256", GITHUB_SIGNATURE_VALUE)];
        let github = SignatureProfile::Github;
        let stale = other();
        assert_eq!(
            check(github, &[&stale, &key], &headers, GITHUB_BODY, WINDOW),
            Ok(())
        );
        assert_eq!(
            check(github, &[&key, &stale], &headers, GITHUB_BODY, WINDOW),
            Ok(())
        );
        assert_eq!(
            check(github, &[], &headers, GITHUB_BODY, WINDOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn seed_profile_is_the_seed_scheme_for_each_secret() {
        let key = secret(SLACK_SECRET);
        let body = br#"{"a":1}"#;
        let ts = NOW.to_string();
        let timestamped = signing::sign_incoming_timestamped(&key, NOW, body);
        let body_only = signing::sign_incoming_body_only(&key, body);
        let run = |sig: &str, secrets: &[&Secret], strict: bool| {
            let pairs = [
                ("x-webhook-timestamp", ts.as_str()),
                ("x-webhook-signature", sig),
            ];
            let req = Presented {
                headers: &pairs,
                body,
            };
            verify(SignatureProfile::Seed, secrets, &req, WINDOW, strict)
        };
        let stale = other();
        assert_eq!(run(&timestamped, &[&stale, &key], true), Ok(()));
        assert_eq!(run(&body_only, &[&stale, &key], false), Ok(()));
        assert_eq!(
            run(&body_only, &[&stale, &key], true),
            Err(IncomingSignatureError::InvalidSignature.into())
        );
        assert_eq!(
            run("", &[&key], true),
            Err(IncomingSignatureError::MissingSignature.into())
        );
        assert_eq!(
            run(&timestamped, &[&stale], true).unwrap_err().code(),
            "INVALID_SIGNATURE"
        );
    }

    #[test]
    fn codes_match_the_seed_codes_and_messages_name_the_header() {
        use SignatureError::*;
        let cases = [
            (
                MissingHeader {
                    header: SLACK_SIGNATURE,
                },
                "MISSING_SIGNATURE",
            ),
            (
                MalformedTimestamp {
                    header: SLACK_TIMESTAMP,
                },
                "MISSING_SIGNATURE",
            ),
            (StaleTimestamp { skew_secs: 301 }, "STALE_TIMESTAMP"),
            (
                MalformedSignature {
                    header: STRIPE_SIGNATURE,
                    expected: "x",
                },
                "INVALID_SIGNATURE",
            ),
            (Mismatch, "INVALID_SIGNATURE"),
            (
                Seed(IncomingSignatureError::MissingTimestamp),
                "MISSING_SIGNATURE",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
        assert!(
            MissingHeader {
                header: SLACK_SIGNATURE
            }
            .to_string()
            .contains("X-Slack-Signature")
        );
    }
}
