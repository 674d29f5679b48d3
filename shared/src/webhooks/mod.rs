//! Outbound webhooks as integrations: the registry of registered endpoints,
//! which events each one gets (filters), how its requests are signed and
//! how incoming ones are verified (signing, signature profiles), its secrets
//! at rest (secret box), and the protections around sending to it
//! (auto-disable on a failure streak, per-webhook rate limit).
//!
//! Redis keys (layout in [`crate::keys`]): `P:webhooks` (the registry) and,
//! per webhook, `P:{P:wh:W}:streak` (auto-disable) and `P:{P:wh:W}:rate`
//! (rate limit).

pub mod auto_disable;
pub mod filters;
pub mod rate_limit;
pub mod registry;
pub mod secret_box;
pub mod signature_profiles;
pub mod signing;
