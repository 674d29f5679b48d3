//! BM25 index kept in Redis, shared by every worker process.
//!
//! # Data layout
//!
//! Every key is `{P}:{{P}:kb}:…` where `P` is the key prefix: the single hash
//! tag `{P:kb}` puts the whole index in one Redis Cluster slot, which is what
//! makes the Lua scripts below legal there (they build term and chunk keys
//! at run time, all in that slot).
//!
//! | key                     | type   | content |
//! |-------------------------|--------|---------|
//! | `…:stats`               | HASH   | `chunks` (N), `total_len` (sum of chunk lengths in terms) |
//! | `…:t:<term>`            | ZSET   | postings: member chunk id, score = BM25 term weight `tf·(k1+1) / (tf + k1·(1−b+b·len/avglen))`, avglen as of indexing |
//! | `…:c:<chunk id>`        | HASH   | `doc`, `title`, `heading` (absent when none), `text`, `len`, `terms` (distinct terms, space-separated, to remove the postings) |
//! | `…:dc:<document id>`    | SET    | chunk ids of the live version |
//! | `…:d:<document id>`     | HASH   | `version`, `title`, `chunks`: present while the document is indexed |
//! | `…:v:<document id>`     | STRING | version counter, never deleted, so ids never repeat |
//!
//! Chunk ids are `<document id>:<version>:<n>`: a re-index never reuses an
//! id, and the document id is recoverable from a chunk id without a read.
//!
//! Replacing or deleting a document is one Lua script, and so is a search:
//! Redis runs scripts one at a time, so a search sees a document entirely
//! before or entirely after a re-index.
//!
//! Term weights use the average chunk length at the time the chunk was
//! indexed; it drifts as the corpus grows, which moves scores by a few
//! percent and never changes which chunks match. Re-indexing refreshes it.
//!
//! A search reads at most `max_postings_per_term` best postings per term:
//! very common terms were measured at 15–105 ms uncapped against 0.25 ms
//! capped, and their low idf makes the tail irrelevant to the ranking.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Deserializer, Serialize};

use crate::confidence::{Features, confidence};
use crate::text::{Analyzer, Query};
use crate::types::{Chunk, DocumentMeta, Hit};

/// Weight of a glossary alternative relative to the term the user typed: a
/// translation is good evidence but not as good as the word itself.
const ALTERNATIVE_WEIGHT: f64 = 0.8;
/// Query terms beyond this are ignored: each term costs a posting read, and
/// no support question needs more.
const MAX_GROUPS: usize = 32;
/// Glossary alternatives beyond this per term are ignored, for the same reason.
const MAX_ALTERNATIVES: usize = 8;
/// Hits a search can return; the script only loads chunk text for these.
const MAX_LIMIT: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexOptions {
    pub max_postings_per_term: usize,
    pub k1: f64,
    pub b: f64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            max_postings_per_term: 2000,
            k1: 1.2,
            b: 0.75,
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum IndexError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("index data is corrupt: {0}")]
    Corrupt(String),
}

impl IndexError {
    /// Redis cannot be reached right now (retry later / report 503), as
    /// opposed to a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
            Self::Corrupt(_) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchOutcome {
    pub hits: Vec<Hit>,
    pub confidence: f64,
    pub features: Features,
    pub query: Query,
}

#[derive(Clone)]
pub struct LexicalIndex {
    conn: ConnectionManager,
    base: Arc<str>,
    analyzer: Arc<Analyzer>,
    opts: IndexOptions,
}

impl LexicalIndex {
    pub fn new(
        conn: ConnectionManager,
        key_prefix: &str,
        analyzer: Arc<Analyzer>,
        opts: IndexOptions,
    ) -> Self {
        Self {
            conn,
            base: format!("{key_prefix}:{{{key_prefix}:kb}}:").into(),
            analyzer,
            opts,
        }
    }

    pub fn model_name(&self) -> &'static str {
        "bm25"
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.base)
    }

    pub async fn replace_document(
        &self,
        doc: &DocumentMeta,
        chunks: &[Chunk],
    ) -> Result<usize, IndexError> {
        let payload: Vec<ChunkPayload> = chunks
            .iter()
            .map(|chunk| {
                let indexed = format!(
                    "{}\n{}\n{}",
                    doc.title,
                    chunk.heading.as_deref().unwrap_or(""),
                    chunk.text
                );
                let terms = self.analyzer.terms(&indexed);
                let mut tf: BTreeMap<String, u32> = BTreeMap::new();
                for term in &terms {
                    *tf.entry(term.clone()).or_default() += 1;
                }
                ChunkPayload {
                    heading: chunk.heading.as_deref(),
                    text: &chunk.text,
                    len: terms.len(),
                    tf,
                }
            })
            .collect();
        let payload =
            serde_json::to_string(&payload).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let indexed: usize = REPLACE
            .key(self.key("stats", ""))
            .key(self.key("dc:", &doc.document_id))
            .key(self.key("v:", &doc.document_id))
            .key(self.key("d:", &doc.document_id))
            .arg(&*self.base)
            .arg(&doc.document_id)
            .arg(&doc.title)
            .arg(self.opts.k1)
            .arg(self.opts.b)
            .arg(payload)
            .invoke_async(&mut conn)
            .await?;
        Ok(indexed)
    }

    pub async fn delete_document(&self, document_id: &str) -> Result<bool, IndexError> {
        let mut conn = self.conn.clone();
        let existed: i64 = DELETE
            .key(self.key("stats", ""))
            .key(self.key("dc:", document_id))
            .key(self.key("d:", document_id))
            .arg(&*self.base)
            .invoke_async(&mut conn)
            .await?;
        Ok(existed == 1)
    }

    pub async fn search(&self, query: &str, limit: usize) -> Result<SearchOutcome, IndexError> {
        let mut query = self.analyzer.query(query);
        query.groups.truncate(MAX_GROUPS);
        for group in &mut query.groups {
            group.alternatives.truncate(MAX_ALTERNATIVES);
        }
        let limit = limit.min(MAX_LIMIT);
        if query.is_empty() || limit == 0 {
            return Ok(nothing(query));
        }

        let mut invocation = SEARCH.key(self.key("stats", ""));
        invocation
            .arg(&*self.base)
            .arg(self.opts.max_postings_per_term.max(1))
            .arg(limit)
            .arg(self.opts.k1)
            .arg(query.groups.len());
        for (g, group) in query.groups.iter().enumerate() {
            for (i, term) in group.all().enumerate() {
                let weight = if i == 0 { 1.0 } else { ALTERNATIVE_WEIGHT };
                invocation.key(self.key("t:", term)).arg(g + 1).arg(weight);
            }
            for term in &group.translations {
                invocation
                    .key(self.key("t:", term))
                    .arg(g + 1)
                    .arg(f64::from(crate::text::TRANSLATION_WEIGHT));
            }
        }
        let mut conn = self.conn.clone();
        let raw: String = invocation.invoke_async(&mut conn).await?;
        let raw: RawSearch = serde_json::from_str(&raw)
            .map_err(|e| IndexError::Corrupt(format!("search script returned {e}")))?;
        tracing::debug!(
            chunks = raw.n,
            postings_read = raw.read,
            candidates = raw.candidates,
            "lexical search"
        );

        let Some(top) = raw.hits.first() else {
            return Ok(nothing(query));
        };
        let groups = query.groups.len();
        let features = Features {
            top_norm: ratio(top.score, raw.max),
            coverage: ratio(top.groups.len() as f64, groups as f64),
            margin: ratio(top.score - raw.other, top.score),
            groups,
        };
        let hits = raw
            .hits
            .into_iter()
            .map(|h| Hit {
                document_id: h.doc,
                chunk_id: h.id,
                title: h.title,
                heading: h.heading,
                text: h.text,
                score: h.score,
            })
            .collect();
        Ok(SearchOutcome {
            hits,
            confidence: confidence(&features),
            features,
            query,
        })
    }
}

fn nothing(query: Query) -> SearchOutcome {
    let features = Features {
        groups: query.groups.len(),
        ..Features::default()
    };
    SearchOutcome {
        hits: Vec::new(),
        confidence: 0.0,
        features,
        query,
    }
}

/// `a / b` clamped to [0, 1]; 0 when it is not a number.
fn ratio(a: f64, b: f64) -> f64 {
    let r = a / b;
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[derive(Serialize)]
struct ChunkPayload<'a> {
    heading: Option<&'a str>,
    text: &'a str,
    len: usize,
    tf: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct RawSearch {
    n: u64,
    read: u64,
    candidates: u64,
    /// Best score this query could reach.
    max: f64,
    /// Best score of a chunk of another document than the top hit's.
    other: f64,
    /// Lua's cjson writes an empty table as `{}`, hence the lenient reader.
    #[serde(deserialize_with = "lenient_list")]
    hits: Vec<RawHit>,
}

#[derive(Deserialize)]
struct RawHit {
    id: String,
    score: f64,
    doc: String,
    title: String,
    heading: Option<String>,
    text: String,
    /// 1-based indexes of the query groups this chunk matched.
    #[serde(deserialize_with = "lenient_list")]
    groups: Vec<u32>,
}

fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Object(m) if m.is_empty() => Ok(Vec::new()),
        other => serde_json::from_value(other).map_err(serde::de::Error::custom),
    }
}

/// Removes the live version of a document (KEYS[1] stats, KEYS[2] its chunk
/// set; ARGV[1] key base). Shared by replace and delete.
const REMOVE_LUA: &str = r#"
local base = ARGV[1]
local function remove_doc()
  local ids = redis.call('SMEMBERS', KEYS[2])
  local removed_len = 0
  for _, id in ipairs(ids) do
    local ck = base .. 'c:' .. id
    local f = redis.call('HMGET', ck, 'terms', 'len')
    if f[1] then
      for term in string.gmatch(f[1], '%S+') do
        redis.call('ZREM', base .. 't:' .. term, id)
      end
    end
    removed_len = removed_len + (tonumber(f[2]) or 0)
    redis.call('DEL', ck)
  end
  redis.call('DEL', KEYS[2])
  if #ids > 0 then
    redis.call('HINCRBY', KEYS[1], 'chunks', -#ids)
    redis.call('HINCRBY', KEYS[1], 'total_len', -removed_len)
  end
end
"#;

/// KEYS: stats, doc chunk set, doc version counter, doc hash.
/// ARGV: key base, doc id, title, k1, b, chunks as JSON.
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REMOVE_LUA}{}",
        r#"
remove_doc()
local doc, title = ARGV[2], ARGV[3]
local k1, b = tonumber(ARGV[4]), tonumber(ARGV[5])
local chunks = cjson.decode(ARGV[6])
local v = redis.call('INCR', KEYS[3])
local n = (tonumber(redis.call('HGET', KEYS[1], 'chunks')) or 0) + #chunks
local total = tonumber(redis.call('HGET', KEYS[1], 'total_len')) or 0
for _, c in ipairs(chunks) do total = total + c.len end
local avg = 1
if n > 0 and total > 0 then avg = total / n end
for i, c in ipairs(chunks) do
  local id = doc .. ':' .. v .. ':' .. (i - 1)
  local terms = {}
  local norm = k1 * (1 - b + b * c.len / avg)
  for term, tf in pairs(c.tf) do
    terms[#terms + 1] = term
    redis.call('ZADD', base .. 't:' .. term, tf * (k1 + 1) / (tf + norm), id)
  end
  local ck = base .. 'c:' .. id
  redis.call('HSET', ck, 'doc', doc, 'title', title, 'text', c.text, 'len', c.len,
    'terms', table.concat(terms, ' '))
  if c.heading ~= cjson.null then redis.call('HSET', ck, 'heading', c.heading) end
  redis.call('SADD', KEYS[2], id)
end
redis.call('HSET', KEYS[1], 'chunks', n, 'total_len', total)
redis.call('HSET', KEYS[4], 'version', v, 'title', title, 'chunks', #chunks)
return #chunks
"#
    ))
});

/// KEYS: stats, doc chunk set, doc hash. ARGV: key base. Returns 1 if the
/// document was indexed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REMOVE_LUA}{}",
        r#"
local existed = redis.call('EXISTS', KEYS[3])
remove_doc()
redis.call('DEL', KEYS[3])
return existed
"#
    ))
});

/// KEYS: stats, then one key per (group, term). ARGV: key base, cap, limit,
/// k1, group count, then per term key its group (1-based) and weight.
/// Returns JSON: n, read, candidates, max, other, hits.
static SEARCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local N = tonumber(redis.call('HGET', KEYS[1], 'chunks')) or 0
local base = ARGV[1]
local cap, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local k1, ng = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {n = N, read = 0, candidates = 0, max = 0, other = 0, hits = {}}
if N <= 0 then return cjson.encode(out) end

local reachable, unknown, scores = {}, {}, {}
for i = 2, #KEYS do
  local g, w = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local df = math.min(redis.call('ZCARD', KEYS[i]), N)
  local idf = math.log(1 + (N - df + 0.5) / (df + 0.5))
  if df > 0 then
    reachable[g] = math.max(reachable[g] or 0, w * idf * (k1 + 1))
    local p = redis.call('ZREVRANGE', KEYS[i], 0, cap - 1, 'WITHSCORES')
    out.read = out.read + #p / 2
    for j = 1, #p, 2 do
      local id, s = p[j], w * idf * tonumber(p[j + 1])
      local t = scores[id]
      if not t then t = {}; scores[id] = t end
      if s > (t[g] or 0) then t[g] = s end
    end
  elseif w >= 1 then
    unknown[g] = idf * (k1 + 1)
  end
end
-- A group none of whose terms occur still counts in the best possible
-- score (the question asks for something the corpus lacks); one found
-- only through a translation counts at the translation's reach.
for g = 1, ng do out.max = out.max + (reachable[g] or unknown[g] or 0) end

local top = {}
for id, t in pairs(scores) do
  local total = 0
  for _, s in pairs(t) do total = total + s end
  out.candidates = out.candidates + 1
  if #top < limit or total > top[#top][2] or (total == top[#top][2] and id < top[#top][1]) then
    local pos = #top + 1
    while pos > 1 and (total > top[pos - 1][2] or (total == top[pos - 1][2] and id < top[pos - 1][1])) do
      pos = pos - 1
    end
    table.insert(top, pos, {id, total})
    if #top > limit then table.remove(top) end
  end
  scores[id] = {total = total, t = t}
end
if #top == 0 then return cjson.encode(out) end

local function doc_of(id) return string.match(id, '^(.*):[^:]*:[^:]*$') or id end
local top_doc = doc_of(top[1][1])
for id, e in pairs(scores) do
  if e.total > out.other and doc_of(id) ~= top_doc then out.other = e.total end
end

for i, e in ipairs(top) do
  local f = redis.call('HMGET', base .. 'c:' .. e[1], 'doc', 'title', 'heading', 'text')
  local groups = {}
  for g, _ in pairs(scores[e[1]].t) do groups[#groups + 1] = g end
  table.sort(groups)
  local hit = {id = e[1], score = e[2], doc = f[1] or doc_of(e[1]), title = f[2] or '',
    text = f[4] or '', groups = groups}
  if f[3] then hit.heading = f[3] end
  out.hits[i] = hit
end
return cjson.encode(out)
"#,
    )
});
