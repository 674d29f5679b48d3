//! Per-webhook rate limits (`rate_limit_per_second`) shared by every
//! worker, and the pause a receiver asks for with `429` + `Retry-After`.
//!
//! The limit is a GCRA (generic cell rate algorithm) kept in Redis, so N
//! workers together send at most the webhook's rate, not N times it. Its
//! state is one hash per webhook (`keys::webhook_rate`):
//!
//! - `tat`, the theoretical arrival time: when the next delivery may go.
//!   Each delivery admitted takes the slot at `max(tat, now)` and moves
//!   `tat` on by one interval (1 / rate). A delivery whose slot is at most
//!   [`horizon`] away is admitted with that wait: the worker sleeps until
//!   its slot and sends, so deliveries leave exactly one interval apart
//!   whichever worker holds them.
//! - `line`: a delivery whose slot would be further away is not admitted
//!   and reserves nothing; it is deferred (back to the queue's delayed
//!   set, not an attempt, not a failure) until a time taken from `line`,
//!   which moves on by one interval per deferral. So a backlog comes back
//!   in single file, about one delivery per slot, instead of every waiting
//!   delivery asking again at the same moment.
//!
//! A `Retry-After` pushes `tat` forward to `now + Retry-After` (capped by
//! `delivery.max_retry_after`): every worker's next deliveries to that
//! webhook wait until then, limited or not. Times are Redis' own clock
//! (`TIME`), the one clock every worker shares.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::config::KeyPrefix;
use crate::ids::WebhookId;
use crate::keys;
use crate::store::StoreError;

/// The longest a worker holds a delivery (and its concurrency slot) while
/// waiting for its slot; beyond it the delivery is deferred instead.
pub const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Deliveries of one webhook that may be waiting for their slots at once,
/// across all workers: a slow limit does not take many slots.
pub const MAX_SLEEPERS: u32 = 8;

/// How long the state outlives the last slot it handed out.
const IDLE_KEEP_MS: u64 = 60_000;

/// How far ahead slots are handed out for a webhook whose deliveries are
/// one `interval` apart (zero: no limit).
pub fn horizon(interval: Duration) -> Duration {
    (interval * MAX_SLEEPERS).min(MAX_SLEEP)
}

/// One interval of a rate, in whole microseconds (at least 1).
pub fn interval(rate_per_second: f64) -> Duration {
    Duration::from_micros(((1_000_000.0 / rate_per_second).round() as u64).max(1))
}

/// What a delivery may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send after this wait (at most [`horizon`]; zero: at once). The slot
    /// is taken: send even if the wait ran a little long.
    Go(Duration),
    /// Not now: come back after this long, having taken no slot.
    Defer(Duration),
}

/// Both scripts' clock, in µs: the test's when it gives one, else Redis'
/// own (`TIME`), so every worker reads the same clock.
const CLOCK: &str = r"
local function clock(given)
  if given == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return tonumber(given)
end";

/// KEYS: the webhook's rate hash. ARGV: interval µs (0: no limit), horizon
/// µs, idle keep ms, now µs ("" for Redis' clock). Returns {0, wait µs}
/// (go) or {1, defer µs}. Lua numbers are doubles: µs since 1970 (~2^51)
/// are exact, but are written with `%d` (Lua's default form keeps 14
/// digits).
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
local now = clock(ARGV[4])
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tat', 'line')
local tat = math.max(tonumber(state[1]) or now, now)
local wait = tat - now
if wait <= horizon then
  if interval > 0 then
    redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat + interval))
    redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((tat + interval - now) / 1000) + keep))
  end
  return {{0, wait}}
end
local line = math.max(tonumber(state[2]) or 0, tat - horizon)
redis.call('HSET', KEYS[1], 'line', string.format('%d', line + interval))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((math.max(tat, line + interval) - now) / 1000) + keep))
return {{1, line - now}}
"
    ))
});

/// KEYS: the webhook's rate hash. ARGV: pause µs, idle keep ms, now µs (""
/// for Redis' clock). Moves `tat` to now + pause unless it is later.
static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{CLOCK}
local now = clock(ARGV[3])
local resume = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat')) or 0
if resume > tat then
  redis.call('HSET', KEYS[1], 'tat', string.format('%d', resume))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((resume - now) / 1000) + tonumber(ARGV[2])))
end
return 0
"
    ))
});

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: KeyPrefix,
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, prefix: KeyPrefix) -> Self {
        Self { conn, prefix }
    }

    /// Whether a delivery to `webhook` (limited to `rate` per second, if
    /// any) may go now, by Redis' clock.
    pub async fn admit(
        &self,
        webhook: &WebhookId,
        rate: Option<f64>,
    ) -> Result<Admission, StoreError> {
        self.admit_at(webhook, rate, None).await
    }

    /// [`RateLimiter::admit`] at a given time (µs since 1970), for tests of
    /// the algorithm; `None` is Redis' clock.
    pub async fn admit_at(
        &self,
        webhook: &WebhookId,
        rate: Option<f64>,
        now_us: Option<u64>,
    ) -> Result<Admission, StoreError> {
        let interval = rate.map_or(Duration::ZERO, interval);
        let (deferred, micros): (u8, u64) = ADMIT
            .key(keys::webhook_rate(&self.prefix, webhook.as_str()))
            .arg(interval.as_micros() as u64)
            .arg(horizon(interval).as_micros() as u64)
            .arg(IDLE_KEEP_MS)
            .arg(now_us.map(|n| n.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let wait = Duration::from_micros(micros);
        Ok(if deferred == 1 {
            Admission::Defer(wait)
        } else {
            Admission::Go(wait)
        })
    }

    /// Holds every delivery to `webhook` back for `pause` from now (a
    /// receiver's `Retry-After`), unless they were held back longer.
    pub async fn pause(&self, webhook: &WebhookId, pause: Duration) -> Result<(), StoreError> {
        self.pause_at(webhook, pause, None).await
    }

    /// [`RateLimiter::pause`] at a given time (µs since 1970).
    pub async fn pause_at(
        &self,
        webhook: &WebhookId,
        pause: Duration,
        now_us: Option<u64>,
    ) -> Result<(), StoreError> {
        let _: i64 = PAUSE
            .key(keys::webhook_rate(&self.prefix, webhook.as_str()))
            .arg(u64::try_from(pause.as_micros()).unwrap_or(u64::MAX / 2))
            .arg(IDLE_KEEP_MS)
            .arg(now_us.map(|n| n.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_horizons() {
        assert_eq!(interval(20.0), Duration::from_millis(50));
        assert_eq!(interval(3.0), Duration::from_micros(333_333));
        assert_eq!(interval(1e9), Duration::from_micros(1));
        // A fast limit keeps at most MAX_SLEEPERS waiting; a slow one waits
        // at most MAX_SLEEP in a worker.
        assert_eq!(horizon(interval(20.0)), Duration::from_millis(400));
        assert_eq!(horizon(interval(1.0)), MAX_SLEEP);
        assert_eq!(horizon(Duration::ZERO), Duration::ZERO);
    }
}
