//! The queue's Redis operations. Stateless apart from the connection:
//! any number of API and worker processes use it at once.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::dead_letter::DeadLetter;
use crate::keys::{
    CONSUMER_GROUP, DEAD_NOTICE_FIELD, JOB_FIELD, KeyPrefix, QueueKeys, RATE_TTL_SECS,
};
use crate::scripts;
use crate::time::now_ms;
use crate::{Envelope, Job, QueueError};

/// What a stream entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchedKind {
    /// A job envelope to run.
    Job,
    /// A dead-letter record whose `on_dead` is still to run.
    DeadNotice,
}

/// One entry handed to this consumer, still in raw form: decoding happens
/// in the runtime so that an undecodable job can be dead-lettered with its
/// bytes.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The stream entry id, what `ack` and the settles take.
    pub entry_id: String,
    pub kind: FetchedKind,
    pub raw: Vec<u8>,
    /// How many times the stream has handed this entry out (1 on the first
    /// read; more after each crash of a worker that held it).
    pub times_delivered: u32,
}

impl Fetched {
    /// Handed out three times or more: in flight in two crashes at least,
    /// so possibly the job that kills its workers. The runtime runs such
    /// jobs one at a time (see [`QueueClient::reclaim`]).
    pub fn is_suspect(&self) -> bool {
        self.times_delivered >= 3
    }
}

/// How many jobs a queue holds, by state, and how fast it moves.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueDepth {
    pub queue: String,
    /// In the stream, not yet handed to a worker.
    pub ready: u64,
    /// Waiting for a retry or a run time.
    pub scheduled: u64,
    /// Handed to a worker, not yet acknowledged.
    pub in_flight: u64,
    pub dead: u64,
    pub processed_total: u64,
    pub failed_total: u64,
    /// Jobs finished per second over about the last minute.
    pub processed_per_second: f64,
    /// Failed attempts per second over about the last minute.
    pub failed_per_second: f64,
    /// Age of the oldest job waiting for a worker.
    pub oldest_ready_age_ms: Option<u64>,
}

/// One worker reading a queue, as its consumer group knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consumer {
    pub name: String,
    /// Jobs handed to it and not yet acknowledged.
    pub pending: u64,
    /// Since it last read or acknowledged (its last sign of life).
    pub idle_ms: u64,
}

/// What a settle did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Settled {
    /// The entry was this consumer's and went where it was sent.
    Moved,
    /// The entry was no longer pending for this consumer (another one
    /// reclaimed it after the visibility timeout, or it was settled
    /// already): nothing was written.
    NotOwned,
}

/// What [`QueueClient::push_once`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOnce {
    Pushed,
    /// Not enqueued: the key was used before; the first caller's value.
    Duplicate(String),
}

/// How many replicas must confirm an enqueue before it counts as done
/// (`redis.wait_replicas`, `redis.wait_timeout`). With `replicas` 0 (the
/// default) an enqueue is as durable as the primary's own persistence
/// (`appendfsync`); above 0 the write is followed by `WAIT replicas
/// timeout` in the same pipeline, and fewer confirmations is an error
/// ([`QueueError::NotReplicated`], which callers answer with 503).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u32,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct QueueClient {
    conn: ConnectionManager,
    prefix: KeyPrefix,
    durability: Durability,
}

impl QueueClient {
    pub fn new(conn: ConnectionManager, prefix: KeyPrefix) -> Self {
        Self {
            conn,
            prefix,
            durability: Durability::default(),
        }
    }

    /// The same client, its enqueues waiting for replicas as `durability`
    /// says.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Appends `WAIT` to a pipeline whose writes must reach replicas, when
    /// that is asked for; returns whether it did.
    fn add_wait(&self, pipe: &mut redis::Pipeline) -> bool {
        if self.durability.replicas == 0 {
            return false;
        }
        pipe.cmd("WAIT").arg(self.durability.replicas).arg(
            u64::try_from(self.durability.timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        true
    }

    fn check_replicated(&self, acked: u64) -> Result<(), QueueError> {
        if acked < u64::from(self.durability.replicas) {
            return Err(QueueError::NotReplicated {
                acked,
                wanted: self.durability.replicas,
            });
        }
        Ok(())
    }

    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.prefix, queue)
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Creates the stream and its consumer group if missing. Reading from
    /// id 0 means jobs added before the group existed are not skipped.
    pub async fn ensure_group(&self, queue: &str) -> Result<(), QueueError> {
        let keys = self.keys(queue);
        let result: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys.stream)
            .arg(CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match result {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Adds jobs to the ready stream in one round trip. Returns once Redis
    /// has them (durable as far as Redis' persistence setting goes).
    pub async fn push<J: Job>(&self, jobs: &[Envelope<J>]) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let keys = self.keys(J::QUEUE);
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("XADD")
                .arg(&keys.stream)
                .arg("*")
                .arg(JOB_FIELD)
                .arg(serde_json::to_vec(job)?)
                .ignore();
        }
        if self.add_wait(&mut pipe) {
            let (acked,): (u64,) = pipe.query_async(&mut self.conn.clone()).await?;
            return self.check_replicated(acked);
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Adds a job unless `once_key` (scoped to this queue) was used within
    /// `ttl`: the answer carries what the first caller stored as `value`.
    pub async fn push_once<J: Job>(
        &self,
        job: &Envelope<J>,
        once_key: &str,
        ttl: Duration,
        value: &str,
    ) -> Result<PushOnce, QueueError> {
        let keys = self.keys(J::QUEUE);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let bytes = serde_json::to_vec(job)?;
        let (pushed, stored): (i64, String) = if self.durability.replicas == 0 {
            scripts::PUSH_ONCE
                .key(keys.once(once_key))
                .key(&keys.stream)
                .arg(ttl_ms)
                .arg(value)
                .arg(bytes)
                .arg(JOB_FIELD)
                .invoke_async(&mut self.conn.clone())
                .await?
        } else {
            // The script and WAIT in one pipeline on one connection: WAIT
            // covers the writes made before it on the same connection, so
            // they must not be split by a reconnect. (A pipeline cannot
            // carry EVALSHA's NOSCRIPT fallback, hence EVAL.)
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(scripts::PUSH_ONCE_SOURCE)
                .arg(2)
                .arg(keys.once(once_key))
                .arg(&keys.stream)
                .arg(ttl_ms)
                .arg(value)
                .arg(bytes)
                .arg(JOB_FIELD);
            self.add_wait(&mut pipe);
            let (reply, acked): ((i64, String), u64) =
                pipe.query_async(&mut self.conn.clone()).await?;
            // A repeat wrote nothing, but the first caller's write may not
            // have reached the replicas either: the same rule applies.
            self.check_replicated(acked)?;
            reply
        };
        Ok(if pushed == 1 {
            PushOnce::Pushed
        } else {
            PushOnce::Duplicate(stored)
        })
    }

    /// What the first [`Self::push_once`] with `once_key` stored, if it
    /// is still remembered.
    pub async fn remembered(
        &self,
        queue: &str,
        once_key: &str,
    ) -> Result<Option<String>, QueueError> {
        Ok(self
            .conn
            .clone()
            .get(self.keys(queue).once(once_key))
            .await?)
    }

    /// Adds raw bytes as a job entry; for tests and tools that need to put
    /// something a worker cannot decode in front of it.
    pub async fn push_raw(&self, queue: &str, raw: &[u8]) -> Result<(), QueueError> {
        let keys = self.keys(queue);
        let _: String = self
            .conn
            .clone()
            .xadd(&keys.stream, "*", &[(JOB_FIELD, raw)])
            .await?;
        Ok(())
    }

    /// Schedules a job to become ready at `due_ms` (unix ms).
    pub async fn schedule<J: Job>(&self, job: &Envelope<J>, due_ms: i64) -> Result<(), QueueError> {
        let keys = self.keys(J::QUEUE);
        let _: i64 = self
            .conn
            .clone()
            .zadd(&keys.delayed, serde_json::to_vec(job)?, due_ms)
            .await?;
        Ok(())
    }

    /// Hands up to `count` new jobs to `consumer`, waiting up to `block` for
    /// the first one. Recreates the group if Redis lost it (a restart
    /// without persistence), instead of failing forever.
    pub async fn read(
        &self,
        conn: &mut ConnectionManager,
        queue: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Fetched>, QueueError> {
        let keys = self.keys(queue);
        let reply: Result<Value, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&keys.stream)
            .arg(">")
            .query_async(conn)
            .await;
        match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(queue).await?;
                Ok(Vec::new())
            }
            other => Ok(stream_entries(other?)),
        }
    }

    /// Takes over up to `count` jobs whose worker has not touched them for
    /// `min_idle` (it died). Each comes with its delivery counter. Of the
    /// jobs already in flight in two crashes or more (suspects, see
    /// [`Fetched::is_suspect`]) at most `suspects` are taken.
    pub async fn reclaim(
        &self,
        queue: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
        suspects: usize,
    ) -> Result<Vec<Fetched>, QueueError> {
        /// Pending entries looked at per call: bounds the script's work.
        const SCAN: usize = 1000;
        let keys = self.keys(queue);
        let reply: Value = scripts::RECLAIM
            .key(&keys.stream)
            .key(&keys.stats)
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(count)
            .arg(SCAN.max(count))
            .arg(suspects)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Value::Array(items) = reply else {
            return Err(QueueError::Reply(format!("reclaim returned {reply:?}")));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(parts) = item else { continue };
            let [id, fields, times] = <[Value; 3]>::try_from(parts)
                .map_err(|p| QueueError::Reply(format!("reclaim entry {p:?}")))?;
            let entry_id = String::from_utf8(value_bytes(&id))
                .map_err(|_| QueueError::Reply("non-UTF-8 stream id".into()))?;
            let (kind, raw) = entry_body(&fields);
            let times_delivered = match times {
                Value::Int(n) => u32::try_from(n).unwrap_or(u32::MAX),
                _ => 1,
            };
            out.push(Fetched {
                entry_id,
                kind,
                raw,
                times_delivered,
            });
        }
        Ok(out)
    }

    /// Keeps the visibility timeout from expiring on jobs still running here.
    pub async fn touch(
        &self,
        queue: &str,
        consumer: &str,
        entry_ids: &[String],
    ) -> Result<(), QueueError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let keys = self.keys(queue);
        let mut invocation = scripts::TOUCH.key(&keys.stream);
        invocation.arg(CONSUMER_GROUP).arg(consumer);
        for id in entry_ids {
            invocation.arg(id);
        }
        let _: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Acknowledges finished entries still owned by `consumer`, all in
    /// one script. Returns the ids that were not (reclaimed by another
    /// consumer meanwhile): their jobs run again there.
    pub async fn ack(
        &self,
        queue: &str,
        consumer: &str,
        entry_ids: &[String],
    ) -> Result<Vec<String>, QueueError> {
        if entry_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut invocation = scripts::ACK.key(&keys.stream);
        invocation
            .key(&keys.stats)
            .key(keys.rate(now_ms() / 60_000))
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(RATE_TTL_SECS)
            .arg(entry_ids);
        Ok(invocation.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Moves a failed job owned by `consumer` into the delayed set, due at
    /// `due_ms`, counting a failure and a retry.
    pub async fn retry_later(
        &self,
        queue: &str,
        consumer: &str,
        entry_id: &str,
        envelope: &[u8],
        due_ms: i64,
    ) -> Result<Settled, QueueError> {
        self.delay(
            queue,
            consumer,
            entry_id,
            envelope,
            due_ms,
            "failed,retried",
        )
        .await
    }

    /// Moves a job that was taken but not attempted (its endpoint is at its
    /// concurrency cap) into the delayed set, due at `due_ms`, counting
    /// neither a failure nor a retry.
    pub async fn defer(
        &self,
        queue: &str,
        consumer: &str,
        entry_id: &str,
        envelope: &[u8],
        due_ms: i64,
    ) -> Result<Settled, QueueError> {
        self.delay(queue, consumer, entry_id, envelope, due_ms, "")
            .await
    }

    /// Takes an entry owned by `consumer` into the delayed set, adding one
    /// to each of `counters` (comma-separated).
    async fn delay(
        &self,
        queue: &str,
        consumer: &str,
        entry_id: &str,
        envelope: &[u8],
        due_ms: i64,
        counters: &str,
    ) -> Result<Settled, QueueError> {
        let keys = self.keys(queue);
        let mut invocation = self.settle(&keys, consumer, entry_id, counters, "delay");
        invocation.key(&keys.delayed).arg(due_ms).arg(envelope);
        self.run_settle(invocation).await
    }

    /// Puts an entry that was taken but not run (shutdown deadline) back at
    /// the end of the stream without counting an attempt.
    pub async fn hand_back(
        &self,
        queue: &str,
        consumer: &str,
        entry_id: &str,
        kind: FetchedKind,
        raw: &[u8],
    ) -> Result<Settled, QueueError> {
        let keys = self.keys(queue);
        let field = match kind {
            FetchedKind::Job => JOB_FIELD,
            FetchedKind::DeadNotice => DEAD_NOTICE_FIELD,
        };
        let mut invocation = self.settle(&keys, consumer, entry_id, "", "back");
        invocation.arg(field).arg(raw);
        self.run_settle(invocation).await
    }

    /// Moves a job out of attempts into the dead-letter set (and indexes it
    /// by its labels), and puts a notice on the stream that makes a
    /// consumer run the handler's `on_dead` for it.
    pub async fn dead_letter(
        &self,
        queue: &str,
        consumer: &str,
        entry_id: &str,
        record: &DeadLetter,
    ) -> Result<Settled, QueueError> {
        let keys = self.keys(queue);
        let mut invocation = self.settle(&keys, consumer, entry_id, "failed,dead", "dead");
        invocation.key(&keys.dead);
        for index in record.index_keys(&keys) {
            invocation.key(index);
        }
        invocation
            .arg(record.dead_letter_id.as_str())
            .arg(serde_json::to_vec(record)?)
            .arg(record.failed_at.timestamp_millis())
            .arg(DEAD_NOTICE_FIELD);
        self.run_settle(invocation).await
    }

    /// The common keys and arguments of [`scripts::SETTLE`].
    fn settle<'a>(
        &self,
        keys: &QueueKeys,
        consumer: &str,
        entry_id: &str,
        counters: &str,
        mode: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = scripts::SETTLE.key(&keys.stream);
        invocation
            .key(&keys.stats)
            .key(keys.rate(now_ms() / 60_000))
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(entry_id)
            .arg(RATE_TTL_SECS)
            .arg(counters)
            .arg(mode);
        invocation
    }

    async fn run_settle(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Settled, QueueError> {
        let moved: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(if moved == 1 {
            Settled::Moved
        } else {
            Settled::NotOwned
        })
    }

    /// Moves due delayed jobs into the stream, at most `batch` per call.
    /// Returns how many moved; a caller loops while it gets a full batch.
    pub async fn promote(&self, queue: &str, batch: usize) -> Result<usize, QueueError> {
        let keys = self.keys(queue);
        let moved: usize = scripts::PROMOTE
            .key(&keys.delayed)
            .key(&keys.stream)
            .arg(now_ms())
            .arg(batch)
            .arg(JOB_FIELD)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(moved)
    }

    /// When the earliest delayed job of `queue` is due (unix ms), if any.
    pub async fn next_due(&self, queue: &str) -> Result<Option<i64>, QueueError> {
        let first: Vec<(Vec<u8>, f64)> = self
            .conn
            .clone()
            .zrange_withscores(self.keys(queue).delayed, 0, 0)
            .await?;
        // Scores are unix ms, exact in an f64.
        Ok(first.first().map(|(_, due)| *due as i64))
    }

    pub async fn depth(&self, queue: &str) -> Result<QueueDepth, QueueError> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let now = now_ms();
        let minute = now / 60_000;
        let (length, scheduled, dead, stats, current, previous): CountsReply = redis::pipe()
            .xlen(&keys.stream)
            .zcard(&keys.delayed)
            .hlen(&keys.dead)
            .hgetall(&keys.stats)
            .hgetall(keys.rate(minute))
            .hgetall(keys.rate(minute - 1))
            .query_async(&mut conn)
            .await?;
        // No stream (nothing ever ready) or no group (no worker yet): every
        // entry is ready and the oldest is the first.
        let group = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.stream)
            .query_async::<Value>(&mut conn)
            .await
        {
            Ok(groups) => our_group(&groups),
            Err(e) if e.code() == Some("ERR") => None,
            Err(e) => return Err(e.into()),
        };
        let (ready, in_flight, after) = match &group {
            Some(g) => (
                g.lag.unwrap_or_else(|| length.saturating_sub(g.pending)),
                g.pending,
                format!("({}", g.last_delivered),
            ),
            None => (length, 0, "-".to_owned()),
        };
        let first_ready: Value = redis::cmd("XRANGE")
            .arg(&keys.stream)
            .arg(&after)
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        // The current minute is partial: count the previous one in
        // proportion to how much of it still lies within the last 60 s.
        let weight = 1.0 - (now % 60_000) as f64 / 60_000.0;
        let per_second = |name: &str| {
            let in_window = current.get(name).copied().unwrap_or(0) as f64
                + previous.get(name).copied().unwrap_or(0) as f64 * weight;
            (in_window / 60.0 * 100.0).round() / 100.0
        };
        Ok(QueueDepth {
            queue: queue.to_owned(),
            ready,
            scheduled,
            in_flight,
            dead,
            processed_total: stats.get("processed").copied().unwrap_or(0),
            failed_total: stats.get("failed").copied().unwrap_or(0),
            processed_per_second: per_second("processed"),
            failed_per_second: per_second("failed"),
            oldest_ready_age_ms: (ready > 0)
                .then(|| oldest_entry_age(&first_ready))
                .flatten(),
        })
    }

    /// The workers that have read `queue`, busiest first: each with its
    /// jobs in flight and how long since it last read or acknowledged.
    /// Empty before any worker started.
    pub async fn consumers(&self, queue: &str) -> Result<Vec<Consumer>, QueueError> {
        let keys = self.keys(queue);
        let reply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&keys.stream)
            .arg(CONSUMER_GROUP)
            .query_async::<Value>(&mut self.conn.clone())
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            // No stream or no group yet: no worker has read it.
            Err(e) if e.code() == Some("ERR") || e.code() == Some("NOGROUP") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let Value::Array(entries) = reply else {
            return Err(QueueError::Reply("XINFO CONSUMERS is not an array".into()));
        };
        let mut consumers: Vec<Consumer> = entries.iter().filter_map(consumer).collect();
        consumers.sort_by(|a, b| b.pending.cmp(&a.pending).then(a.idle_ms.cmp(&b.idle_ms)));
        Ok(consumers)
    }

    /// Removes consumers (workers long gone) that hold no jobs, so the
    /// group's consumer list does not grow with every restart.
    pub async fn forget_idle_consumers(
        &self,
        queue: &str,
        me: &str,
        idle: Duration,
    ) -> Result<usize, QueueError> {
        let keys = self.keys(queue);
        Ok(scripts::FORGET_CONSUMERS
            .key(&keys.stream)
            .arg(CONSUMER_GROUP)
            .arg(me)
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Redis' `maxmemory-policy`. Any policy but `noeviction` lets Redis
    /// drop keys under memory pressure — queued jobs among them — so
    /// callers refuse to start on one unless told to accept it.
    pub async fn eviction_policy(&self) -> Result<String, QueueError> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn.clone())
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("maxmemory_policy:"))
            .map(|policy| policy.trim().to_owned())
            .ok_or_else(|| QueueError::Reply("INFO memory has no maxmemory_policy".into()))
    }

    /// A cheap round trip to tell whether Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// XLEN, ZCARD delayed, HLEN dead, HGETALL stats, this minute's and the
/// last minute's rate counters.
type CountsReply = (
    u64,
    u64,
    u64,
    HashMap<String, u64>,
    HashMap<String, u64>,
    HashMap<String, u64>,
);

fn value_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes.clone(),
        Value::SimpleString(text) => text.clone().into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// The entries of a one-stream XREADGROUP reply, read straight from the
/// reply (this is the hot path: no per-entry maps). The reply is nil on
/// timeout, `[[key, entries]]` in RESP2 or `{key: entries}` in RESP3.
fn stream_entries(reply: Value) -> Vec<Fetched> {
    let entries = match reply {
        Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
            Value::Array(mut pair) if pair.len() == 2 => pair.swap_remove(1),
            _ => return Vec::new(),
        },
        Value::Map(mut streams) if !streams.is_empty() => streams.swap_remove(0).1,
        _ => return Vec::new(),
    };
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            let fields = parts.pop()?;
            let entry_id = String::from_utf8(value_bytes(parts.first()?)).ok()?;
            let (kind, raw) = entry_body(&fields);
            Some(Fetched {
                entry_id,
                kind,
                raw,
                times_delivered: 1,
            })
        })
        .collect()
}

/// What an entry carries: a dead-letter notice, or else a job (an entry
/// with neither field is a job of no bytes, which the runtime
/// dead-letters as undecodable).
fn entry_body(fields: &Value) -> (FetchedKind, Vec<u8>) {
    match field_value(fields, DEAD_NOTICE_FIELD) {
        Some(record) => (FetchedKind::DeadNotice, record),
        None => (
            FetchedKind::Job,
            field_value(fields, JOB_FIELD).unwrap_or_default(),
        ),
    }
}

/// The value of `name` in a flat `[field, value, …]` array.
fn field_value(fields: &Value, name: &str) -> Option<Vec<u8>> {
    let Value::Array(items) = fields else {
        return None;
    };
    items
        .chunks(2)
        .find(|pair| value_bytes(&pair[0]) == name.as_bytes())
        .and_then(|pair| pair.get(1))
        .map(value_bytes)
}

/// Our consumer group's state, as XINFO GROUPS tells it.
struct GroupState {
    /// Entries never handed out; nil from Redis when it cannot tell.
    lag: Option<u64>,
    pending: u64,
    last_delivered: String,
}

/// Our group in an XINFO GROUPS reply (a list of flat field/value arrays,
/// or of maps in RESP3).
/// The field/value pairs of an `XINFO` entry (a flat array in RESP2, a map
/// in RESP3).
fn info_pairs(entry: &Value) -> Option<Vec<(Vec<u8>, &Value)>> {
    match entry {
        Value::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|p| Some((value_bytes(&p[0]), p.get(1)?)))
                .collect(),
        ),
        Value::Map(items) => Some(items.iter().map(|(k, v)| (value_bytes(k), v)).collect()),
        _ => None,
    }
}

fn consumer(entry: &Value) -> Option<Consumer> {
    let pairs = info_pairs(entry)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| *v)
    };
    let int = |name: &str| match get(name) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    Some(Consumer {
        name: String::from_utf8(get("name").map(value_bytes)?).ok()?,
        pending: int("pending").unwrap_or(0),
        // `inactive` (Redis 7.2+) counts from the last successful read;
        // `idle` from any attempt. Prefer the former when present.
        idle_ms: int("inactive").or_else(|| int("idle")).unwrap_or(0),
    })
}

fn our_group(groups: &Value) -> Option<GroupState> {
    let Value::Array(groups) = groups else {
        return None;
    };
    groups.iter().find_map(|group| {
        let pairs = info_pairs(group)?;
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| *v)
        };
        if get("name").map(value_bytes)? != CONSUMER_GROUP.as_bytes() {
            return None;
        }
        let int = |name: &str| match get(name) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        Some(GroupState {
            lag: int("lag"),
            pending: int("pending").unwrap_or(0),
            last_delivered: String::from_utf8(get("last-delivered-id").map(value_bytes)?).ok()?,
        })
    })
}

/// Stream ids start with the unix ms at which the entry was added.
fn oldest_entry_age(xrange: &Value) -> Option<u64> {
    let Value::Array(entries) = xrange else {
        return None;
    };
    let Value::Array(first) = entries.first()? else {
        return None;
    };
    let id = String::from_utf8(value_bytes(first.first()?)).ok()?;
    let added_ms: i64 = id.split('-').next()?.parse().ok()?;
    u64::try_from(now_ms().saturating_sub(added_ms)).ok()
}
