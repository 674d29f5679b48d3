//! Talking to addresses the outside world chose: the SSRF policy (which
//! addresses may be reached) and the one egress HTTP client that enforces it
//! at connection time, for webhook deliveries and document fetches alike.
//!
//! Redis keys: none.

pub mod egress;
pub mod ssrf;
