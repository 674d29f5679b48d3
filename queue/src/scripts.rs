//! The queue's Lua scripts. Each touches the keys of one queue (one hash
//! tag), and each is bounded: no reply or loop grows with a backlog.

use std::sync::LazyLock;

use redis::Script;

/// Moves at most ARGV[2] jobs due at or before ARGV[1] (unix ms) from the
/// delayed set into the stream. ZREM goes member by member because a
/// `unpack` of a large batch overflows Lua's stack (apalis' failure mode).
pub static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], member)
  redis.call('ZREM', KEYS[1], member)
end
return #due
",
    )
});

/// Claims up to ARGV[4] entries idle for ARGV[3] ms for consumer ARGV[2] and
/// returns each with its delivery counter (the counter is what tells a
/// crash loop apart).
///
/// Entries whose counter is already 2 or more were in flight in at least
/// two crashes: one of them may be what kills its workers. At most ARGV[6]
/// of those *suspects* are claimed per call (the runner asks for one, and
/// only when it runs no other suspect), so a job that aborts the process
/// can only take fresh bystanders down with it, never the other suspects.
/// Scans at most ARGV[5] pending entries.
/// Reply: { {id, {field, value, ...}, times_delivered}, ... }
pub static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[5])
local want = tonumber(ARGV[4])
local suspects_left = tonumber(ARGV[6])
local out = {}
for _, p in ipairs(pending) do
  if #out >= want then break end
  local times = tonumber(p[4])
  local suspect = times >= 2
  if (not suspect) or suspects_left > 0 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1])
    local entry = claimed[1]
    if entry and entry[2] then
      out[#out + 1] = {entry[1], entry[2], times + 1}
      if suspect then suspects_left = suspects_left - 1 end
    elseif not entry then
      -- Deleted from the stream while pending (older Redis keep it in
      -- the pending list): nothing to run, forget it.
      redis.call('XACK', KEYS[1], ARGV[1], p[1])
    end
  end
end
return out
",
    )
});

/// Resets the idle time of the entries consumer ARGV[2] still owns, so the
/// visibility timeout never takes a job from a live worker. Entries already
/// taken over by someone else are left alone.
pub static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local touched = 0
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    touched = touched + 1
  end
end
return touched
",
    )
});

/// The owner check every settle starts with, as a Lua function: whether
/// entry `id` is pending in `group` for `consumer`.
const OWNED: &str = r"
local function owned(stream, group, consumer, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return p[1] ~= nil and p[1][2] == consumer
end
local function count(stats, rate, ttl, names, n)
  for name in string.gmatch(names, '[^,]+') do
    redis.call('HINCRBY', stats, name, n)
    if name == 'processed' or name == 'failed' then
      redis.call('HINCRBY', rate, name, n)
      redis.call('EXPIRE', rate, ttl)
    end
  end
end
";

/// Acknowledges finished entries that consumer ARGV[2] still owns (XACK +
/// XDEL, counted as processed); the others were reclaimed by someone else
/// and are left to their new owner.
/// KEYS: stream, stats, rate. ARGV: group, consumer, rate ttl, ids…
/// Reply: the ids that were not ours.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{OWNED}
local mine, lost = {{}}, {{}}
for i = 4, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
for i = 1, #mine, 500 do
  local last = math.min(i + 499, #mine)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(mine, i, last))
  redis.call('XDEL', KEYS[1], unpack(mine, i, last))
end
if #mine > 0 then count(KEYS[2], KEYS[3], ARGV[3], 'processed', #mine) end
if #lost > 0 then count(KEYS[2], KEYS[3], ARGV[3], 'lost', #lost) end
return lost
"
    ))
});

/// Settles one entry that consumer ARGV[2] still owns: ack + delete, add one
/// to each counter named in ARGV[5] (comma-separated), and write where the
/// job goes next by ARGV[6]:
/// - `delay`: KEYS[4] delayed set; ARGV[7] due (unix ms), ARGV[8] envelope.
/// - `back`: to the end of the stream; ARGV[7] field, ARGV[8] envelope.
/// - `dead`: KEYS[4] dead hash, KEYS[5..] indexes; ARGV[7] dead-letter id,
///   ARGV[8] record, ARGV[9] failed at (unix ms), ARGV[10] notice field
///   (the record is also added to the stream as a notice).
///
/// Changes nothing and returns 0 when the entry is not pending for ARGV[2]
/// (reclaimed by another consumer, or already settled); 1 when settled.
/// KEYS: stream, stats, rate, …. ARGV: group, consumer, entry id, rate ttl,
/// counters, mode, ….
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{OWNED}
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  count(KEYS[2], KEYS[3], ARGV[4], 'lost', 1)
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local mode = ARGV[6]
if mode == 'delay' then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
elseif mode == 'back' then
  redis.call('XADD', KEYS[1], '*', ARGV[7], ARGV[8])
elseif mode == 'dead' then
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
  for i = 5, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[9], ARGV[7])
  end
  redis.call('XADD', KEYS[1], '*', ARGV[10], ARGV[8])
end
count(KEYS[2], KEYS[3], ARGV[4], ARGV[5], 1)
return 1
"
    ))
});

/// Re-enqueues a dead letter only if it is still in the set, so two replays
/// of the same entry (a double click, two admins) enqueue it once.
/// KEYS: dead, then the stream, then every index holding the id.
/// ARGV: dead letter id, field, envelope.
pub static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
for i = 3, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return 1
",
    )
});

/// Discards a dead letter. KEYS: dead, then every index holding the id.
/// ARGV: dead letter id.
pub static DISCARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 1
",
    )
});

/// Removes consumers other than ARGV[2] that hold no entries and have been
/// idle for ARGV[3] ms. Check and delete happen in one script, so no entry
/// can be handed to a consumer between the check and its deletion (which
/// would drop that entry from the pending list).
/// KEYS: stream. ARGV: group, me, idle ms. Reply: how many were removed.
pub static FORGET_CONSUMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0
      and tonumber(info['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
",
    )
});

/// Enqueues a job unless its idempotency key (KEYS[1]) is already taken;
/// the check, the key and the XADD happen together, so a repeat can never
/// slip in between and a failed XADD never leaves a key that would turn
/// the client's retry into a "duplicate" of nothing.
/// ARGV: ttl ms, the value to remember (what a repeat is answered with),
/// the envelope. Reply: {1, value} when enqueued, {0, first value} if not.
pub static PUSH_ONCE: LazyLock<Script> = LazyLock::new(|| Script::new(PUSH_ONCE_SOURCE));

/// The source of [`PUSH_ONCE`], for the durable path that sends it as
/// `EVAL` in one pipeline with `WAIT` (see `QueueClient::push_once`).
pub const PUSH_ONCE_SOURCE: &str = r"
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return {1, ARGV[2]}
";
