//! The knowledge base's source of truth in Redis: each document's current
//! version, its chunks, and the change feed every search replica tails.
//!
//! # Data layout
//!
//! `P` is the key prefix. Document records and the feed share the hash tag
//! `{P:kb}`, so the one script that switches a document to a new version
//! and announces it stays in one Redis Cluster slot; chunk lists (the bulk
//! of the data) carry a tag per document and spread over the cluster.
//!
//! | key                    | type   | content |
//! |------------------------|--------|---------|
//! | `P:{P:kb}:docs`        | HASH   | document id → record JSON `{"v": version, "title", "n": chunk count}` |
//! | `P:{P:kb}:feed`        | STREAM | change feed: entries `d` (document id), `v` (the new version, or `deleted`); `MAXLEN ~ retrieval.feed_length` |
//! | `P:{P:kb}:seq`         | STRING | version counter (`INCR`): versions never repeat, across documents |
//! | `P:{P:kb:D}:chunks:V`  | LIST   | chunks of version V of document D, JSON `{"i": index, "h": heading, "t": text}` each |
//!
//! # Writing a version
//!
//! 1. `INCR seq` allocates V.
//! 2. The chunks go to `chunks:V` in pieces of at most [`PIECE_CHUNKS`]
//!    chunks and [`PIECE_BYTES`] bytes, one round trip each, so no command
//!    is proportional to the document's size and Redis serves other
//!    clients between pieces. The list expires after [`PENDING_TTL`]
//!    while it is not current, so a writer that dies half way leaves
//!    nothing behind for long.
//! 3. One small script ([`FLIP`]) makes V the document's version and
//!    appends `{d, v}` to the feed, unless the record already holds a newer
//!    version (a stale writer). The feed never announces a version whose
//!    chunks are incomplete, and a replica reads the record, not the entry,
//!    to learn the current version (older entries are simply re-applied as
//!    the current one).
//! 4. `PERSIST chunks:V`, then `UNLINK` the previous version's list (freed
//!    in Redis' background thread).
//!
//! A writer that dies between 3 and 4 leaves the current list expiring;
//! its job is retried and writes a new version. A delete is one small
//! script removing the record and appending `{d, deleted}`, then `UNLINK`
//! of the chunks.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script, Value};
use serde::{Deserialize, Serialize};

use super::SearchError;
use super::feed_id::FeedId;
use crate::types::{Chunk, DocumentMeta};

/// Most chunks written by one command.
pub const PIECE_CHUNKS: usize = 256;
/// Most bytes written (or read) by one command, about.
pub const PIECE_BYTES: usize = 1 << 20;
/// How long a version's chunks survive if their writer never makes them
/// current: far longer than writing any document takes.
pub const PENDING_TTL: Duration = Duration::from_secs(3600);

/// KEYS: docs, feed. ARGV: document id, version, record JSON, feed
/// length. Reply: {previous version (0: none, -1: refused, a newer one is
/// current), feed entry id}.
static FLIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = 0
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then old = tonumber(cjson.decode(raw).v) or 0 end
if old > tonumber(ARGV[2]) then return {-1, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'd', ARGV[1], 'v', ARGV[2])
return {old, id}
",
    )
});

/// KEYS: docs, feed. ARGV: document id, feed length. Reply: {removed
/// version (0: there was none), feed entry id ('' when none)}.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {0, ''} end
local old = tonumber(cjson.decode(raw).v) or 0
redis.call('HDEL', KEYS[1], ARGV[1])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1], 'v', 'deleted')
return {old, id}
",
    )
});

/// A document as the source of truth holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    pub v: u64,
    pub title: String,
    pub n: usize,
}

/// One chunk as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredChunk {
    pub i: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<String>,
    pub t: String,
}

/// What writing a version did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Current now, announced at this feed position.
    Current { version: u64, at: FeedId },
    /// A newer version was already current; nothing changed.
    Stale,
}

/// Where the feed stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedBounds {
    /// The newest id ever given out (`0-0` for no feed at all).
    pub last: FeedId,
    /// The newest id trimmed away, if any: a replica at an older position
    /// has missed entries.
    pub trimmed: Option<FeedId>,
}

#[derive(Clone)]
pub struct KnowledgeStore {
    conn: ConnectionManager,
    prefix: String,
    feed_length: usize,
}

impl KnowledgeStore {
    pub fn new(conn: ConnectionManager, key_prefix: &str, feed_length: usize) -> Self {
        Self {
            conn,
            prefix: key_prefix.to_owned(),
            feed_length: feed_length.max(1),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{p}:{{{p}:kb}}:{name}", p = self.prefix)
    }

    pub fn feed_key(&self) -> String {
        self.key("feed")
    }

    fn chunks_key(&self, document_id: &str, version: u64) -> String {
        format!(
            "{p}:{{{p}:kb:{document_id}}}:chunks:{version}",
            p = self.prefix
        )
    }

    /// Makes `chunks` the document's current version (see the module doc).
    pub async fn put(&self, doc: &DocumentMeta, chunks: &[Chunk]) -> Result<Written, SearchError> {
        let mut conn = self.conn.clone();
        let version: u64 = conn.incr(self.key("seq"), 1).await?;
        let list = self.chunks_key(&doc.document_id, version);
        let stored: Vec<String> = chunks
            .iter()
            .map(|c| {
                serde_json::to_string(&StoredChunk {
                    i: c.index,
                    h: c.heading.clone(),
                    t: c.text.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| SearchError::Corrupt(e.to_string()))?;
        for piece in pieces(&stored) {
            let _: () = redis::pipe()
                .rpush(&list, piece)
                .ignore()
                .pexpire(&list, PENDING_TTL.as_millis() as i64)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        let record = serde_json::to_string(&DocRecord {
            v: version,
            title: doc.title.clone(),
            n: chunks.len(),
        })
        .map_err(|e| SearchError::Corrupt(e.to_string()))?;
        let (previous, at): (i64, String) = FLIP
            .key(self.key("docs"))
            .key(self.feed_key())
            .arg(&doc.document_id)
            .arg(version)
            .arg(record)
            .arg(self.feed_length)
            .invoke_async(&mut conn)
            .await?;
        if previous < 0 {
            let _: i64 = conn.unlink(&list).await?;
            return Ok(Written::Stale);
        }
        let _: i64 = conn.persist(&list).await?;
        if previous > 0 {
            let _: i64 = conn
                .unlink(self.chunks_key(&doc.document_id, previous as u64))
                .await?;
        }
        Ok(Written::Current {
            version,
            at: parse_id(&at)?,
        })
    }

    /// Removes the document; the feed position of the removal, if it was
    /// there.
    pub async fn delete(&self, document_id: &str) -> Result<Option<FeedId>, SearchError> {
        let mut conn = self.conn.clone();
        let (removed, at): (u64, String) = REMOVE
            .key(self.key("docs"))
            .key(self.feed_key())
            .arg(document_id)
            .arg(self.feed_length)
            .invoke_async(&mut conn)
            .await?;
        if removed == 0 {
            return Ok(None);
        }
        let _: i64 = conn.unlink(self.chunks_key(document_id, removed)).await?;
        Ok(Some(parse_id(&at)?))
    }

    /// The current records of these documents (one command).
    pub async fn records(&self, ids: &[String]) -> Result<Vec<Option<DocRecord>>, SearchError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("docs"))
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await?;
        raw.into_iter()
            .map(|r| r.map(|r| parse_record(&r)).transpose())
            .collect()
    }

    /// One page of every document's record (`HSCAN`); cursor 0 starts and
    /// ends the walk.
    pub async fn scan_records(
        &self,
        cursor: u64,
    ) -> Result<(u64, Vec<(String, DocRecord)>), SearchError> {
        let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(self.key("docs"))
            .arg(cursor)
            .arg("COUNT")
            .arg(PIECE_CHUNKS)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(id), Some(raw)) = (it.next(), it.next()) {
            out.push((id, parse_record(&raw)?));
        }
        Ok((next, out))
    }

    /// The chunks of version `record.v` of a document, read in pieces;
    /// `None` if that version is gone or incomplete (it was replaced or
    /// deleted meanwhile: the caller reads the record again).
    pub async fn chunks(
        &self,
        document_id: &str,
        record: &DocRecord,
    ) -> Result<Option<Vec<StoredChunk>>, SearchError> {
        let list = self.chunks_key(document_id, record.v);
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(record.n);
        while out.len() < record.n {
            let start = out.len();
            let stop = (start + PIECE_CHUNKS).min(record.n) - 1;
            let raw: Vec<String> = conn.lrange(&list, start as isize, stop as isize).await?;
            if raw.is_empty() {
                return Ok(None);
            }
            for r in raw {
                out.push(
                    serde_json::from_str(&r).map_err(|e| {
                        SearchError::Corrupt(format!("chunk of {document_id}: {e}"))
                    })?,
                );
            }
        }
        Ok(Some(out))
    }

    /// The chunks of many small documents in one round trip: as
    /// [`Self::chunks`] for each, in order.
    pub async fn chunks_of_many(
        &self,
        docs: &[(&str, &DocRecord)],
    ) -> Result<Vec<Option<Vec<StoredChunk>>>, SearchError> {
        let mut pipe = redis::pipe();
        for (id, record) in docs {
            pipe.lrange(self.chunks_key(id, record.v), 0, record.n as isize - 1);
        }
        let raw: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        raw.into_iter()
            .zip(docs)
            .map(|(raw, (id, record))| {
                if raw.len() != record.n {
                    return Ok(None);
                }
                raw.iter()
                    .map(|r| {
                        serde_json::from_str(r)
                            .map_err(|e| SearchError::Corrupt(format!("chunk of {id}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            })
            .collect()
    }

    /// The feed's newest entry id (`0-0` if it is empty): what a search
    /// waits for its replica to reach.
    pub async fn feed_last(&self) -> Result<FeedId, SearchError> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrevrange_count(self.feed_key(), "+", "-", 1)
            .await?;
        match reply.ids.first() {
            Some(entry) => parse_id(&entry.id),
            None => Ok(FeedId::ZERO),
        }
    }

    /// The newest id given out and the newest trimmed away (`XINFO
    /// STREAM`, Redis 7's `max-deleted-entry-id`; on older servers the
    /// first entry's id stands in, which may rebuild needlessly).
    pub async fn feed_bounds(&self) -> Result<FeedBounds, SearchError> {
        let mut conn = self.conn.clone();
        let exists: bool = conn.exists(self.feed_key()).await?;
        if !exists {
            return Ok(FeedBounds::default());
        }
        let info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.feed_key())
            .query_async(&mut conn)
            .await?;
        let field = |name: &str| -> Option<&Value> {
            match &info {
                Value::Map(pairs) => pairs
                    .iter()
                    .find(|(k, _)| value_str(k).as_deref() == Some(name))
                    .map(|(_, v)| v),
                Value::Array(items) => items
                    .chunks(2)
                    .find(|pair| value_str(&pair[0]).as_deref() == Some(name))
                    .and_then(|pair| pair.get(1)),
                _ => None,
            }
        };
        let id_of = |v: Option<&Value>| -> Result<Option<FeedId>, SearchError> {
            v.and_then(value_str).map(|s| parse_id(&s)).transpose()
        };
        let last = id_of(field("last-generated-id"))?.unwrap_or(FeedId::ZERO);
        let trimmed = match field("max-deleted-entry-id") {
            Some(v) => id_of(Some(v))?.filter(|id| *id > FeedId::ZERO),
            None => {
                let first = match field("first-entry") {
                    Some(Value::Array(entry)) => id_of(entry.first())?,
                    _ => None,
                };
                first.map(|f| FeedId {
                    ms: f.ms,
                    seq: f.seq.saturating_sub(1),
                })
            }
        };
        Ok(FeedBounds { last, trimmed })
    }

    /// Feed entries after `after`, at most `count`, waiting up to `block`
    /// for one on `conn` (a connection of its own: the wait would hold up
    /// every command multiplexed behind it). Each entry: its id and the
    /// document it names.
    pub async fn feed_read(
        &self,
        conn: &mut ConnectionManager,
        after: FeedId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(FeedId, String)>, SearchError> {
        let opts = StreamReadOptions::default()
            .count(count)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[self.feed_key()], &[after.to_string()], &opts)
            .await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let doc: Option<String> = entry.get("d");
                let id = parse_id(&entry.id)?;
                match doc {
                    Some(doc) => out.push((id, doc)),
                    None => {
                        return Err(SearchError::Corrupt(format!(
                            "feed entry {id} names no document"
                        )));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Entries after `after`, counted up to `cap` (`XRANGE` with a bound,
    /// so a far-behind replica costs no more than `cap` small entries).
    pub async fn feed_count_after(&self, after: FeedId, cap: usize) -> Result<usize, SearchError> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(self.feed_key(), format!("({after}"), "+", cap)
            .await?;
        Ok(reply.ids.len())
    }
}

/// Consecutive runs of `items` of at most [`PIECE_CHUNKS`] items and about
/// [`PIECE_BYTES`] bytes (a single larger item is a piece of its own).
fn pieces(items: &[String]) -> impl Iterator<Item = &[String]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= items.len() {
            return None;
        }
        let mut end = start;
        let mut bytes = 0;
        while end < items.len()
            && end - start < PIECE_CHUNKS
            && (end == start || bytes + items[end].len() <= PIECE_BYTES)
        {
            bytes += items[end].len();
            end += 1;
        }
        let piece = &items[start..end];
        start = end;
        Some(piece)
    })
}

fn parse_id(raw: &str) -> Result<FeedId, SearchError> {
    raw.parse()
        .map_err(|e: super::feed_id::BadFeedId| SearchError::Corrupt(e.to_string()))
}

fn parse_record(raw: &str) -> Result<DocRecord, SearchError> {
    serde_json::from_str(raw).map_err(|e| SearchError::Corrupt(format!("document record: {e}")))
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_bounded_by_count_and_bytes() {
        let small: Vec<String> = (0..600).map(|i| i.to_string()).collect();
        let sizes: Vec<usize> = pieces(&small).map(<[String]>::len).collect();
        assert_eq!(sizes, vec![256, 256, 88]);

        let big: Vec<String> = (0..5).map(|_| "x".repeat(400 * 1024)).collect();
        let sizes: Vec<usize> = pieces(&big).map(<[String]>::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);

        let huge = vec!["y".repeat(3 << 20)];
        assert_eq!(pieces(&huge).count(), 1);
        assert_eq!(pieces(&[]).count(), 0);
    }
}
