//! Typed jobs on Redis Streams: a producer ([`QueueClient`]), a consumer
//! runtime ([`runtime::QueueRunner`] running a [`runtime::Handler`]), a
//! retry schedule ([`RetryPolicy`]) and a dead-letter set that can be
//! listed, replayed and discarded. It knows nothing of what its jobs do:
//! a job type is a serde type with a queue name ([`Job`]), and the ids it
//! is found by are free-form [`Labels`].
//!
//! ```no_run
//! # use queue::{Envelope, Job, KeyPrefix, QueueClient};
//! # async fn demo(conn: redis::aio::ConnectionManager) -> Result<(), queue::QueueError> {
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Resize { image: String }
//! impl Job for Resize { const QUEUE: &'static str = "resize"; }
//!
//! let client = QueueClient::new(conn, KeyPrefix::parse("app").expect("prefix"));
//! client.push(&[Envelope::new(Resize::QUEUE, Resize { image: "a.png".into() }, queue::TraceId::generate())]).await?;
//! // Workers: `QueueRunner { handler, client, .. }.run(stop).await` with a
//! // `Handler<Job = Resize>` that returns `Outcome::Done`, `Failed` or `Later`.
//! # Ok(()) }
//! ```
//!
//! # A job's life (key layout in [`keys`])
//!
//! 1. `push` → `XADD stream` (or `schedule` → `ZADD delayed` with a due
//!    time; `push_once` adds an idempotency key in the same script).
//! 2. A consumer's `read` → `XREADGROUP … COUNT n BLOCK ms`: the entry is
//!    now pending in the group, **owned** by that consumer.
//! 3. The handler's outcome is **settled** by one script that first checks
//!    the entry is still pending *for this consumer*, then acks and deletes
//!    it and writes where it goes next: nowhere (done), the delayed set (a
//!    retry, or a job deferred without an attempt), or the dead-letter set
//!    together with a dead-letter notice on the stream. If the entry is no
//!    longer this consumer's, the script changes nothing and the runtime
//!    logs that it lost the job (counted as `lost` in the queue's stats).
//! 4. A consumer that stops touching its entries for the visibility
//!    timeout (it died, stalled, or lost Redis) has them reclaimed by a
//!    live one, with the entry's delivery counter: each reclaim counts as
//!    an attempt, so a job that keeps killing its worker ends dead-lettered
//!    instead of looping. Live consumers touch their running entries every
//!    third of the timeout.
//! 5. `promote` moves due delayed jobs into the stream in bounded batches.
//! 6. A dead-letter notice is an entry like any other: a consumer runs the
//!    handler's `on_dead` for it and acks it. So `on_dead` runs after the
//!    job is in the dead-letter set, at least once, and once per
//!    dead-lettering (a job that splits can be dead-lettered once only).
//!
//! # Guarantees
//!
//! - **At least once.** A job pushed (the call returned `Ok`) is run until
//!   one attempt returns `Done` or it is dead-lettered, whatever process
//!   dies when, as long as Redis keeps its writes (AOF; `WAIT` replicas
//!   with [`Durability`]). An `Ok` from `push` is never a job lost.
//! - **One terminal place.** Every move between structures (stream,
//!   delayed set, dead-letter set) is one script or transaction, and
//!   every settle is owner-checked, so a job is in exactly one place, and
//!   ends done or dead-lettered, not both, never twice.
//! - **What a duplicate looks like.** A handler can run the same attempt
//!   twice only when its entry was reclaimed while the first run was still
//!   going (the first consumer stalled past the visibility timeout, or its
//!   result was lost with its connection). Both runs see the same job id;
//!   only one of them settles. The number of duplicate runs is bounded by
//!   the number of reclaims (`reclaimed` in the queue's stats); handlers
//!   that have side effects make them idempotent on the job id (or an id
//!   derived from it).
//! - **Bounded work.** No script or reply grows with a backlog: promotion,
//!   reclaim and listing work in pages.

pub mod ids;
pub mod keys;
pub mod runtime;

mod client;
mod dead_letter;
mod envelope;
mod error;
mod retry;
mod scripts;
mod time;
mod trace_id;

use std::collections::BTreeMap;

pub use client::{
    Consumer, Durability, Fetched, FetchedKind, PushOnce, QueueClient, QueueDepth, Settled,
};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterPage};
pub use envelope::{AttemptError, ENVELOPE_VERSION, Envelope};
pub use error::{QueueError, is_unavailable};
pub use ids::{DeadLetterId, JobId};
pub use keys::KeyPrefix;
pub use retry::{RetryPlan, RetryPolicy};
pub use trace_id::{InvalidTraceId, TraceId};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Ids a job is found by in the dead-letter set (`webhook_id` → `…`).
/// Each name and value is indexed, so keep them few and short.
pub type Labels = BTreeMap<String, String>;

/// A kind of job: its payload type and the queue it runs on.
pub trait Job: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The queue's name, also the job type shown to administrators.
    const QUEUE: &'static str;

    /// Ids that let an administrator find this job when it is dead.
    fn labels(&self) -> Labels {
        Labels::new()
    }
}
