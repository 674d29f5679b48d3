//! The support chat: sessions and their turns, when an answer is good
//! enough to send (answer policy), escalation to an operator and hand-over,
//! feedback on answers, knowledge gaps (questions handed over for low
//! confidence) and the chat counters.
//!
//! Redis keys (layout in [`crate::keys`]): everything under the session
//! queue's tag `{P:q:session}` (sessions, threads, operators, the escalated
//! sets, feedback), `P:sess:S:turns`, `P:chat:result:J`, `P:gaps` and
//! `P:metrics:chat`.

pub mod answer_policy;
pub mod escalation;
pub mod feedback;
pub mod gaps;
pub mod handover;
pub mod sessions;
pub mod stats;
