//! The queue's Lua scripts. Each moves jobs between structures of one queue
//! (one hash tag) atomically, and each is bounded: no reply or loop grows
//! with the size of a backlog.

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

/// Claims up to ARGV[4] jobs idle for ARGV[3] ms for consumer ARGV[2] and
/// returns each with its delivery counter (the counter is what tells a
/// crash loop apart).
///
/// Jobs whose counter is already 2 or more were in flight in at least two
/// crashes: one of them may be what kills its workers. At most ARGV[6] of
/// those *suspects* are claimed per call (the runner asks for one, and only
/// when it runs no other suspect), so a job that aborts the process can only
/// take fresh bystanders down with it, never the other suspects, and no
/// innocent job is dead-lettered for having been reclaimed next to it time
/// after time. Scans at most ARGV[5] pending entries.
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

/// Resets the idle time of the jobs consumer ARGV[2] still owns, so the
/// visibility timeout never takes a job from a live worker. Jobs already
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

/// Re-enqueues a dead letter only if it is still in the set, so two replays
/// of the same entry (a double click, two admins) enqueue it once.
/// KEYS: dead, dead index, stream. ARGV: dead letter id, field, envelope.
pub static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', ARGV[2], ARGV[3])
return 1
",
    )
});

/// Puts a job back at the end of the stream, but only if it is still
/// pending: a job whose retry or dead-letter move reached Redis just before
/// a shutdown cut its task off is already settled and must not be copied.
/// KEYS: stream. ARGV: group, entry id, field, envelope.
pub static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[4])
return 1
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
