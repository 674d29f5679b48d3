//! Webhook secrets encrypted at rest (AES-256-GCM).
//!
//! Why: a Redis dump, a replica or an `HGETALL` by an operator must not hand
//! out every integration's signing secret. The keys come from configuration
//! (`secrets.encryption_keys`), never from Redis.
//!
//! Keys carry ids so the key itself can rotate: the first configured key
//! seals, every configured key opens what was sealed under its id, and the
//! start-up migration (`WebhookStore::secure_at_start`) re-seals records
//! under the first one. A sealed value names its key id, so a missing key is
//! reported by name instead of as a mysterious authentication failure.
//!
//! The associated data is the webhook id: a sealed secret copied into
//! another webhook's record does not open there.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;
/// Bytes of a GCM nonce; random per seal (2^-32 collision odds only after
/// 2^32 seals under one key, far beyond a webhook registry's writes).
const NONCE_LEN: usize = 12;
/// Longest key id accepted: it is stored in every sealed value.
const MAX_KEY_ID_CHARS: usize = 32;
/// The only algorithm written today; stored so a later one can coexist.
const ALGORITHM: &str = "A256GCM";

/// One configured key, written `id:base64(32 bytes)`. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    id: String,
    key: [u8; KEY_LEN],
}

impl EncryptionKey {
    /// Parses `id:base64key`; the message never repeats the key material.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, encoded) = text.split_once(':').ok_or_else(|| {
            "a key is written id:base64key (e.g. k1:<openssl rand -base64 32>)".to_owned()
        })?;
        let id = id.trim();
        let id_ok = !id.is_empty()
            && id.chars().count() <= MAX_KEY_ID_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !id_ok {
            return Err(format!(
                "key id {id:?} must be 1-{MAX_KEY_ID_CHARS} characters of A-Z a-z 0-9 - _ ."
            ));
        }
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| format!("key {id:?} is not valid base64"))?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "key {id:?} is {} bytes; AES-256 needs {KEY_LEN} (openssl rand -base64 32)",
                bytes.len()
            )
        })?;
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({}:***)", self.id)
    }
}

/// A secret as stored: key id, nonce and ciphertext (tag included), the
/// last two in base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub alg: String,
    pub kid: String,
    pub nonce: String,
    pub ct: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error(
        "sealed under key id {kid:?}, which is not in secrets.encryption_keys; \
         add that key back (after the new one) and restart"
    )]
    UnknownKey { kid: String },
    #[error(
        "sealed value does not open under key id {kid:?} (wrong key material, or the record was altered)"
    )]
    Tampered { kid: String },
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
}

/// Seals and opens secrets with the configured keys. Without keys it is
/// off: [`SecretBox::seal`] is not called and nothing sealed can be opened.
#[derive(Clone, Default)]
pub struct SecretBox {
    /// The first one seals; all open.
    keys: Vec<EncryptionKey>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(EncryptionKey::id))
            .finish()
    }
}

impl SecretBox {
    pub fn new(keys: Vec<EncryptionKey>) -> Self {
        Self { keys }
    }

    /// The key that seals, if any is configured.
    pub fn primary(&self) -> Option<&str> {
        self.keys.first().map(EncryptionKey::id)
    }

    /// Seals `plain` under the primary key; `None` when no key is set.
    pub fn seal(&self, plain: &str, aad: &[u8]) -> Option<Sealed> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher(key)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad,
                },
            )
            // Encryption fails only for inputs beyond GCM's 64 GiB limit;
            // a secret is at most 256 characters.
            .unwrap_or_default();
        Some(Sealed {
            alg: ALGORITHM.to_owned(),
            kid: key.id.clone(),
            nonce: BASE64.encode(nonce),
            ct: BASE64.encode(ct),
        })
    }

    /// Opens a sealed value with the key it names.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<String, SecretBoxError> {
        if sealed.alg != ALGORITHM {
            return Err(SecretBoxError::Malformed("unknown algorithm"));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.kid)
            .ok_or_else(|| SecretBoxError::UnknownKey {
                kid: sealed.kid.clone(),
            })?;
        let nonce: [u8; NONCE_LEN] = BASE64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SecretBoxError::Malformed("nonce is not 12 base64 bytes"))?;
        let ct = BASE64
            .decode(&sealed.ct)
            .map_err(|_| SecretBoxError::Malformed("ciphertext is not base64"))?;
        let plain = cipher(key)
            .decrypt(&Nonce::from(nonce), Payload { msg: &ct, aad })
            .map_err(|_| SecretBoxError::Tampered {
                kid: sealed.kid.clone(),
            })?;
        String::from_utf8(plain).map_err(|_| SecretBoxError::Malformed("plaintext is not UTF-8"))
    }
}

fn cipher(key: &EncryptionKey) -> Aes256Gcm {
    Aes256Gcm::new(&key.key.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey::parse(&format!("{id}:{}", BASE64.encode([byte; KEY_LEN]))).unwrap()
    }

    #[test]
    fn keys_parse_and_never_show_their_material() {
        let k = key("k1", 7);
        assert_eq!(k.id(), "k1");
        assert_eq!(format!("{k:?}"), "EncryptionKey(k1:***)");
        for bad in [
            "no-colon",
            ":AAAA",
            "k 1:AAAA",
            "k1:not base64!",
            &format!("k1:{}", BASE64.encode([0u8; 16])),
        ] {
            let err = EncryptionKey::parse(bad).unwrap_err();
            assert!(!err.contains("AAAA"), "{err}");
        }
    }

    #[test]
    fn sealed_secrets_open_with_their_key_and_id_only() {
        let one = SecretBox::new(vec![key("k1", 1)]);
        let sealed = one.seal("whsec_top_secret_value", b"webhook_a").unwrap();
        assert_eq!(sealed.kid, "k1");
        assert!(!sealed.ct.contains("top_secret"));
        assert_eq!(
            one.open(&sealed, b"webhook_a").unwrap(),
            "whsec_top_secret_value"
        );
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(
            one.seal("same", b"x").unwrap(),
            one.seal("same", b"x").unwrap()
        );
        // Moved to another webhook's record: refused.
        assert!(matches!(
            one.open(&sealed, b"webhook_b"),
            Err(SecretBoxError::Tampered { .. })
        ));
        // Rotated key: the old id still opens, the new one seals.
        let rotated = SecretBox::new(vec![key("k2", 2), key("k1", 1)]);
        assert_eq!(rotated.primary(), Some("k2"));
        assert_eq!(
            rotated.open(&sealed, b"webhook_a").unwrap(),
            "whsec_top_secret_value"
        );
        assert_eq!(rotated.seal("s", b"a").unwrap().kid, "k2");
        // Key dropped from configuration: named, not a panic.
        let other = SecretBox::new(vec![key("k2", 2)]);
        assert_eq!(
            other.open(&sealed, b"webhook_a"),
            Err(SecretBoxError::UnknownKey { kid: "k1".into() })
        );
        // Same id, other material.
        let wrong = SecretBox::new(vec![key("k1", 9)]);
        assert!(matches!(
            wrong.open(&sealed, b"webhook_a"),
            Err(SecretBoxError::Tampered { .. })
        ));
        // No key: nothing sealed.
        assert!(SecretBox::default().seal("s", b"a").is_none());
        let mut broken = sealed.clone();
        broken.nonce = "AAAA".into();
        assert!(matches!(
            one.open(&broken, b"webhook_a"),
            Err(SecretBoxError::Malformed(_))
        ));
    }
}
