//! Every Redis key this system uses, and why it has the shape it has.
//!
//! All keys start with `redis.key_prefix` (`P` below). Keys that a single
//! script or transaction touches together share a `{hash tag}`, so the
//! layout also works on Redis Cluster, where a multi-key command must stay
//! in one slot. Each queue is one tag; each webhook's history is one tag.
//!
//! ```text
//! Queues: the layout of each job type's queue is written in the queue
//! crate (`queue::keys`); the session queue's tag is reused below. What
//! this system puts in a queue's idempotency space (`P:{P:q:Q}:once:K`):
//! on the incoming queues, webhook id + a hash of its message or document
//! id, with the first answer (JSON), for incoming.idempotency_ttl; on the
//! deliver queue, "dlv:" + a delivery id whose job is queued (for
//! publish::REPUBLISH_WINDOW).
//!
//! Chat sessions (tag {P:q:session}, the session queue's, so ending a
//! session and queueing its EndSession job is one script)
//!   P:{P:q:session}:s:S       HASH    session S: user_id, webhook_id,
//!                                     thread, status, started_at,
//!                                     last_activity (unix ms), ended_at,
//!                                     end_reason, messages_count, escalated,
//!                                     operator_id/name, priority, reason.
//!                                     Expires after delivery.history_ttl
//!                                     once ended.
//!   P:{P:q:session}:active    ZSET    active session ids by last activity
//!                                     (unix ms): what the idle sweep scans.
//!   P:{P:q:session}:thread:T  STRING  session id of thread T (webhook id +
//!                                     hash of thread_id or user_id).
//!   P:sess:S:turns            LIST    the session's turns (JSON), newest
//!                                     last, trimmed to chat.history_turns.
//!   P:{P:q:session}:operators:rr    STRING  round-robin counter.
//!   P:{P:q:session}:operators:load  ZSET    operator id -> open escalated
//!                                     sessions (counted by the escalate
//!                                     and claim scripts, decremented by
//!                                     the hand-back and end scripts).
//!   P:{P:q:session}:escalated             ZSET  escalated active session
//!                                     ids by escalation time (unix ms):
//!                                     the operators' queue, listed
//!                                     without a scan.
//!   P:{P:q:session}:escalated:assigned    ZSET  the part of it with an
//!   P:{P:q:session}:escalated:unassigned  ZSET  operator / without one.
//!                                     The three sets are written only by
//!                                     the session scripts (escalate,
//!                                     claim, hand back, end), so a
//!                                     session is in them exactly while it
//!                                     is escalated and active.
//!   P:{P:q:session}:fb:S      HASH    feedback on session S's answers:
//!                                     chat job id -> JSON {rating,
//!                                     comment, at}; one per answer.
//!                                     Expires with the session's turns.
//!   P:chat:result:J           STRING  answer of /chat/completions job J
//!                                     (JSON), for the API waiting on it;
//!                                     expires after an hour.
//!
//! Knowledge documents
//!   P:doc:D             STRING  document record D (JSON: status, format,
//!                               sizes, chunk previews, classifications,
//!                               last error, source URL).
//!   P:doc:D:staging     STRING  the newest upload's staging id (ids sort
//!                               by time); older uploads are skipped.
//!   P:doc:D:lock        STRING  the ingestion job working on D (one at a
//!                               time); renewed while it runs, expires
//!                               if its worker dies.
//!   P:doc:D:deleted     STRING  tombstone of a deleted document, so a
//!                               queued ingestion does not revive it;
//!                               expires after 7 days.
//!   P:docs              ZSET    document ids by creation time (unix ms).
//!   P:docext:W:H        STRING  document id of external document id hash H
//!                               from source W (a webhook id, or "api").
//!   P:staging:S         STRING  bytes of a direct upload until its
//!                               ingestion ends; expires after 7 days.
//!   Document keys are written by scripts that span a document's keys and
//!   the P:docs index, so this part of the layout is for a standalone
//!   Redis (as the client is).
//!   Their searchable chunks, versions and change feed are laid out in
//!   rag's search store (`rag::search::store`, tags {P:kb} and {P:kb:D}).
//!
//! Webhook registry
//!   P:webhooks          HASH    webhook id -> webhook record (JSON, with
//!                               its secret: never returned by the API).
//!
//! Delivery history (tag {P:wh:W} per webhook W)
//!   P:{P:wh:W}:dlv      ZSET    the webhook's delivery ids by creation time
//!                               (unix ms); trimmed to
//!                               delivery.history_max_per_webhook.
//!   P:{P:wh:W}:stats    HASH    attempts, failures, last_delivery.
//!   P:{P:wh:W}:streak   HASH    the current failure streak: since (unix
//!                               ms of its first failed attempt), failures
//!                               (attempts failed since). Deleted by any
//!                               success and by re-enabling; judged by
//!                               `auto_disable`.
//!   P:{P:wh:W}:rate     HASH    the rate limiter's state (`rate_limit`):
//!                               tat (unix µs when the next delivery may
//!                               go), line (unix µs when the next deferred
//!                               delivery comes back). Pushed forward by a
//!                               receiver's Retry-After; expires once idle.
//!   P:{P:wh:W}:ord:S    ZSET    the line of chat session S for an ordered
//!                               webhook (`ordering`): delivery ids by
//!                               sequence number; the head is sent, the
//!                               rest wait. Removed from when a delivery is
//!                               over.
//!   P:{P:wh:W}:ord:S:n  STRING  the last sequence number handed out in
//!                               that line. Both expire
//!                               delivery.history_ttl after the last
//!                               append or send.
//!   P:dlv:D             STRING  delivery record (JSON: status, every
//!                               attempt, the payload sent); expires after
//!                               delivery.history_ttl.
//!
//! Knowledge gaps
//!   P:gaps              STREAM  questions handed over for low confidence:
//!                               q (question), s (session id), c
//!                               (confidence), j (chat job id); entry ids
//!                               are the time. Capped (XADD MAXLEN ~) so
//!                               it stays bounded without a sweep.
//!
//! Metrics kept in Redis so one scrape of the API covers every worker
//!   P:metrics:delivery_latency  HASH  histogram of attempt durations:
//!                               "le_<seconds>" bucket counts, "count",
//!                               "sum_ms".
//!   P:metrics:chat      HASH    chat counters: answered, offered_person,
//!                               handed_over, forwarded, operator_replies,
//!                               feedback_up, feedback_down.
//!   P:metrics:search_replicas  HASH  worker (consumer name) -> where its
//!                               search replica stands (JSON: lag_entries,
//!                               lag_ms, chunks, caught_up, at_ms); a
//!                               report older than a minute is dropped.
//!   P:metrics:ordering  HASH    waits: deliveries deferred because an
//!                               earlier one of their line was not over.
//!   P:dlv:D:retries     STRING  manual retries made of D (for the
//!                               `D_retry_n` ids); same expiry.
//!
//! Admin API idempotency and paced replays
//!   P:idem:H            HASH    Idempotency-Key whose SHA-256 is H: fp
//!                               (request fingerprint), token (while the
//!                               first request runs; expires after
//!                               idempotency.in_progress_ttl), then status,
//!                               ctype, body of the first answer; expires
//!                               idempotency.ttl after that answer.
//!   P:replay:R          STRING  paced replay or recovery run R (JSON:
//!                               kind, filter, rate, total, replayed,
//!                               skipped, failed, state, heartbeat); kept
//!                               7 days after its last update.
//!
//! Operator console
//!   P:console:sess:H    STRING  console session whose id's SHA-256 (hex)
//!                               is H: its CSRF token; expires after
//!                               console.session_ttl. Hashed so that
//!                               reading Redis does not yield a cookie
//!                               to sign in with.
//! ```

use queue::KeyPrefix;

pub fn console_session(prefix: &KeyPrefix, id_hash: &str) -> String {
    format!("{prefix}:console:sess:{id_hash}")
}

pub fn webhooks(prefix: &KeyPrefix) -> String {
    format!("{prefix}:webhooks")
}

pub fn webhook_deliveries(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:dlv")
}

pub fn webhook_stats(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:stats")
}

pub fn webhook_streak(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:streak")
}

pub fn webhook_rate(prefix: &KeyPrefix, webhook_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:rate")
}

pub fn ordering_line(prefix: &KeyPrefix, webhook_id: &str, session_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:ord:{session_id}")
}

pub fn ordering_counter(prefix: &KeyPrefix, webhook_id: &str, session_id: &str) -> String {
    format!("{prefix}:{{{prefix}:wh:{webhook_id}}}:ord:{session_id}:n")
}

pub fn ordering_metrics(prefix: &KeyPrefix) -> String {
    format!("{prefix}:metrics:ordering")
}

pub fn delivery(prefix: &KeyPrefix, delivery_id: &str) -> String {
    format!("{prefix}:dlv:{delivery_id}")
}

pub fn delivery_latency(prefix: &KeyPrefix) -> String {
    format!("{prefix}:metrics:delivery_latency")
}

pub fn chat_metrics(prefix: &KeyPrefix) -> String {
    format!("{prefix}:metrics:chat")
}

pub fn gaps(prefix: &KeyPrefix) -> String {
    format!("{prefix}:gaps")
}

pub fn search_replicas(prefix: &KeyPrefix) -> String {
    format!("{prefix}:metrics:search_replicas")
}

pub fn delivery_retries(prefix: &KeyPrefix, delivery_id: &str) -> String {
    format!("{prefix}:dlv:{delivery_id}:retries")
}

pub fn idempotency(prefix: &KeyPrefix, key_hash: &str) -> String {
    format!("{prefix}:idem:{key_hash}")
}

pub fn replay_run(prefix: &KeyPrefix, replay_id: &str) -> String {
    format!("{prefix}:replay:{replay_id}")
}

/// Keys of chat sessions; see the layout above.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    base: String,
    prefix: String,
}

impl SessionKeys {
    pub fn new(prefix: &KeyPrefix) -> Self {
        Self {
            base: format!("{prefix}:{{{prefix}:q:session}}"),
            prefix: prefix.to_string(),
        }
    }

    pub fn session(&self, id: &str) -> String {
        format!("{}:s:{id}", self.base)
    }

    pub fn active(&self) -> String {
        format!("{}:active", self.base)
    }

    pub fn thread(&self, thread: &str) -> String {
        format!("{}:thread:{thread}", self.base)
    }

    pub fn turns(&self, id: &str) -> String {
        format!("{}:sess:{id}:turns", self.prefix)
    }

    /// What the session hash keys start with: scripts that find a
    /// session id through a thread key build its hash key from this.
    pub fn session_prefix(&self) -> String {
        format!("{}:s:", self.base)
    }

    pub fn operators_round_robin(&self) -> String {
        format!("{}:operators:rr", self.base)
    }

    pub fn operators_load(&self) -> String {
        format!("{}:operators:load", self.base)
    }

    pub fn escalated(&self) -> String {
        format!("{}:escalated", self.base)
    }

    pub fn escalated_assigned(&self) -> String {
        format!("{}:escalated:assigned", self.base)
    }

    pub fn escalated_unassigned(&self) -> String {
        format!("{}:escalated:unassigned", self.base)
    }

    pub fn feedback(&self, id: &str) -> String {
        format!("{}:fb:{id}", self.base)
    }

    pub fn chat_result(&self, job: &str) -> String {
        format!("{}:chat:result:{job}", self.prefix)
    }
}

pub fn document(prefix: &KeyPrefix, id: &str) -> String {
    format!("{prefix}:doc:{id}")
}

pub fn document_staging(prefix: &KeyPrefix, id: &str) -> String {
    format!("{prefix}:doc:{id}:staging")
}

pub fn document_lock(prefix: &KeyPrefix, id: &str) -> String {
    format!("{prefix}:doc:{id}:lock")
}

pub fn document_deleted(prefix: &KeyPrefix, id: &str) -> String {
    format!("{prefix}:doc:{id}:deleted")
}

pub fn documents(prefix: &KeyPrefix) -> String {
    format!("{prefix}:docs")
}

pub fn document_external(prefix: &KeyPrefix, source: &str, hash: &str) -> String {
    format!("{prefix}:docext:{source}:{hash}")
}

pub fn staging(prefix: &KeyPrefix, id: &str) -> String {
    format!("{prefix}:staging:{id}")
}
