//! Chat sessions: one per (webhook, thread), their turns, escalations and
//! their end. Key layout in [`crate::keys`] (`SessionKeys`).
//!
//! Every change of a session's state is one Lua script over keys of the
//! session queue's hash tag, so two API processes opening the same thread
//! at once get the same session, and two workers sweeping the same idle
//! session end it once.
//!
//! Hand-over: escalating, an operator's first reply to an
//! unassigned session (the claim), handing back and ending each move the
//! session in or out of the escalated index in the same script that
//! changes its state, so the operators' queue never disagrees with the
//! sessions and listing it is a range read, not a scan.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{KeyPrefix, Operator, OperatorAssignment};
use crate::ids::{JobId, SessionId, TraceId, WebhookId};
use crate::jobs::{ChatResult, EndReason, EndSession};
use queue::keys::{JOB_FIELD, QueueKeys};

use crate::keys::SessionKeys;
use crate::store::StoreError;
use crate::time::{from_ms, now_ms, serde_rfc3339};
use queue::{Envelope, Job};

/// Finds the active session of a thread or starts one. KEYS: thread key,
/// active set, the new session's hash. ARGV: now ms, new id, user id,
/// webhook id, thread ttl ms, session key prefix. Reply: {id, created}.
static OPEN_THREAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', KEYS[1])
if id then
  local skey = ARGV[6] .. id
  if redis.call('HGET', skey, 'status') == 'active' then
    redis.call('HSET', skey, 'last_activity', ARGV[1])
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {id, 0}
  end
end
redis.call('HSET', KEYS[3], 'user_id', ARGV[3], 'webhook_id', ARGV[4], 'status', 'active',
  'started_at', ARGV[1], 'last_activity', ARGV[1], 'messages_count', 0, 'escalated', 0)
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[5])
return {ARGV[2], 1}
",
    )
});

/// Opens a session by id: touches it when active, creates it when new.
/// KEYS: session hash, active set. ARGV: now ms, id, user id.
/// Reply: 1 created, 0 touched, -1 ended.
static OPEN_ID: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'active' then
  redis.call('HSET', KEYS[1], 'last_activity', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  return 0
end
if status then return -1 end
redis.call('HSET', KEYS[1], 'user_id', ARGV[3], 'webhook_id', '', 'status', 'active',
  'started_at', ARGV[1], 'last_activity', ARGV[1], 'messages_count', 0, 'escalated', 0)
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
",
    )
});

/// Ends an active session and queues its EndSession job, atomically.
/// The session keeps its escalation fields (`session.ended` reports
/// `escalated`) but leaves the escalated index.
/// KEYS: session hash, active set, session stream, operator load, the
/// three escalated sets.
/// ARGV: now ms, reason, idle cutoff ms ('' = end whatever its activity),
/// envelope, job field, ended ttl ms, session id. Reply: 1 ended, 0 not.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
if ARGV[3] ~= '' then
  local last = redis.call('ZSCORE', KEYS[2], ARGV[7])
  if last and tonumber(last) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_at', ARGV[1], 'end_reason', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[5], ARGV[7])
redis.call('ZREM', KEYS[6], ARGV[7])
redis.call('ZREM', KEYS[7], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local op = redis.call('HGET', KEYS[1], 'operator_id')
if op and op ~= '' then
  local load = redis.call('ZSCORE', KEYS[4], op)
  if load and tonumber(load) > 0 then redis.call('ZINCRBY', KEYS[4], -1, op) end
end
redis.call('XADD', KEYS[3], '*', ARGV[5], ARGV[4])
return 1
",
    )
});

/// Appends a turn unless a turn of the same job is among the last few (a
/// job redone after a crash), counts user turns, and trims the history.
/// A turn recorded once the session is no longer active (a chat job that
/// ran after the end) gives the list the ended-session expiry: the end
/// already set it on the list if there was one, and would otherwise leave
/// a list that never expires.
/// KEYS: turns list, session hash. ARGV: turn JSON, job id, keep, is user,
/// the turn's role as it appears in its JSON, ended-session TTL ms.
static RECORD_TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local recent = redis.call('LRANGE', KEYS[1], -4, -1)
local marker = '"job_id":"' .. ARGV[2] .. '"'
for _, turn in ipairs(recent) do
  if string.find(turn, marker, 1, true) and string.find(turn, ARGV[5], 1, true) then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
local status = redis.call('HGET', KEYS[2], 'status')
-- Only an existing session is counted: HINCRBY on an expired one would
-- bring back a hash without status or expiry.
if ARGV[4] == '1' and status then redis.call('HINCRBY', KEYS[2], 'messages_count', 1) end
if status ~= 'active' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return 1
"#,
    )
});

/// Escalates an active session: keeps its operator if it is already
/// escalated to one, else picks one from the roster (round robin or least
/// loaded) and counts the session in that operator's load; with an empty
/// roster the session waits unassigned. Picking here, in the script that
/// marks the session, means two escalations racing on one session cannot
/// count two operators for it.
/// KEYS: session hash, escalated set, assigned set, unassigned set,
/// operator load, round-robin counter.
/// ARGV: now ms, session id, reason, priority, assignment mode, then the
/// roster as id, name pairs.
/// Reply: {'ok', escalated_at ms, operator id, operator name} (id and name
/// '' when unassigned), or {'ended'} when the session is not active.
static ESCALATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return {'ended'} end
local op, name, at = '', '', ARGV[1]
if redis.call('HGET', KEYS[1], 'escalated') == '1' then
  op = redis.call('HGET', KEYS[1], 'operator_id') or ''
  name = redis.call('HGET', KEYS[1], 'operator_name') or ''
  at = redis.call('HGET', KEYS[1], 'escalated_at') or ARGV[1]
end
local roster = math.floor((#ARGV - 5) / 2)
if op == '' and roster >= 1 then
  local pick = 1
  if ARGV[5] == 'least_loaded' then
    local best_load = nil
    for i = 1, roster do
      local load = tonumber(redis.call('ZSCORE', KEYS[5], ARGV[4 + 2 * i]) or '0')
      if best_load == nil or load < best_load then pick, best_load = i, load end
    end
  else
    local n = redis.call('INCR', KEYS[6])
    pick = ((n - 1) % roster) + 1
  end
  op, name = ARGV[4 + 2 * pick], ARGV[5 + 2 * pick]
  redis.call('ZINCRBY', KEYS[5], 1, op)
end
redis.call('HSET', KEYS[1], 'escalated', 1, 'reason', ARGV[3], 'priority', ARGV[4],
  'operator_id', op, 'operator_name', name, 'escalated_at', at)
redis.call('ZADD', KEYS[2], at, ARGV[2])
if op == '' then
  redis.call('ZADD', KEYS[4], at, ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
else
  redis.call('ZADD', KEYS[3], at, ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
end
return {'ok', tostring(at), op, name}
",
    )
});

/// Lets an operator write in an escalated session: an unassigned one is
/// assigned to the operator who replies first (and counted in their
/// load). The reply is activity, so it keeps the session from the idle
/// sweep. KEYS: session hash, assigned set, unassigned set, operator
/// load, active set. ARGV: now ms, session id, operator id ('' = the
/// assigned one), operator name.
/// Reply: {'ok', replying operator id} or {'missing' | 'ended' |
/// 'not_escalated' | 'unassigned'}.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'active' then return {'ended'} end
if redis.call('HGET', KEYS[1], 'escalated') ~= '1' then return {'not_escalated'} end
local op = redis.call('HGET', KEYS[1], 'operator_id') or ''
if op == '' then
  if ARGV[3] == '' then return {'unassigned'} end
  op = ARGV[3]
  redis.call('HSET', KEYS[1], 'operator_id', op, 'operator_name', ARGV[4])
  redis.call('ZINCRBY', KEYS[4], 1, op)
  local at = redis.call('HGET', KEYS[1], 'escalated_at') or ARGV[1]
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('ZADD', KEYS[2], at, ARGV[2])
end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then return {'ok', ARGV[3]} end
return {'ok', op}
",
    )
});

/// Gives an escalated session back to the bot: the escalation fields go
/// (the history stays), the operator's load drops as at the end, and the
/// session leaves the escalated index.
/// KEYS: session hash, escalated set, assigned set, unassigned set,
/// operator load, active set. ARGV: now ms, session id.
/// Reply: 'ok', 'missing', 'ended' or 'not_escalated'.
static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'active' then return 'ended' end
if redis.call('HGET', KEYS[1], 'escalated') ~= '1' then return 'not_escalated' end
local op = redis.call('HGET', KEYS[1], 'operator_id')
if op and op ~= '' then
  local load = redis.call('ZSCORE', KEYS[5], op)
  if load and tonumber(load) > 0 then redis.call('ZINCRBY', KEYS[5], -1, op) end
end
redis.call('HDEL', KEYS[1], 'reason', 'priority', 'operator_id', 'operator_name', 'escalated_at')
redis.call('HSET', KEYS[1], 'escalated', 0, 'handed_back_at', ARGV[1], 'last_activity', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[6], ARGV[1], ARGV[2])
return 'ok'
",
    )
});

/// Stores the feedback on one answer, replacing an earlier one; on a
/// session that is no longer active it expires as the history does.
/// KEYS: feedback hash, session hash. ARGV: chat job id, feedback JSON,
/// ended-session TTL ms. Reply: the feedback it replaced, or nil.
static FEEDBACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[2], 'status') ~= 'active' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return old
",
    )
});

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("session {0} has ended")]
    Ended(SessionId),
    #[error("session {0} does not exist")]
    Missing(SessionId),
    #[error("session {0} is not escalated")]
    NotEscalated(SessionId),
    #[error("session {0} has no operator assigned")]
    Unassigned(SessionId),
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        SessionError::Store(e.into())
    }
}

impl From<serde_json::Error> for SessionError {
    fn from(e: serde_json::Error) -> Self {
        SessionError::Store(e.into())
    }
}

/// A stored session, or a session script's reply, this version cannot read.
fn malformed(what: String) -> SessionError {
    SessionError::Store(StoreError::Malformed(what))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }
}

/// A hand-over to a human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Escalation {
    pub reason: String,
    pub priority: Priority,
    /// The operator who has the conversation; null while it waits for one
    /// (an empty `chat.operators` roster: the first operator to reply
    /// takes it).
    pub operator_id: Option<String>,
    pub operator_name: Option<String>,
    /// When the session was first escalated (a second escalation of an
    /// escalated session keeps it, and its place in the queue).
    #[serde(with = "serde_rfc3339")]
    pub escalated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub session_id: SessionId,
    pub user_id: String,
    pub webhook_id: Option<WebhookId>,
    pub status: SessionStatus,
    #[serde(with = "serde_rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339")]
    pub last_activity_at: DateTime<Utc>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub messages_count: u64,
    /// A person has the conversation: the bot does not answer it.
    pub escalated: bool,
    pub escalation: Option<Escalation>,
    /// When an operator last gave the session back to the bot.
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub handed_back_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    /// A person answering after a hand-over.
    Operator,
}

impl Role {
    /// How the role appears in a turn's JSON (the record script looks for
    /// it to add a job's turn of each role once).
    fn marker(self) -> &'static str {
        match self {
            Role::User => "\"role\":\"user\"",
            Role::Assistant => "\"role\":\"assistant\"",
            Role::Operator => "\"role\":\"operator\"",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    #[serde(with = "serde_rfc3339")]
    pub at: DateTime<Utc>,
    /// The chat job that produced it (so a redone job adds it once); for
    /// an operator's reply, the id given to that reply. Feedback names an
    /// answer by it.
    #[schema(value_type = String)]
    pub job_id: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Who wrote an operator turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
}

/// Which sessions a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFilter {
    /// Every active session, most recently active first.
    Active,
    /// Escalated sessions, longest waiting first; `Some(false)` only those
    /// no operator has yet, `Some(true)` only those with one.
    Escalated { assigned: Option<bool> },
}

/// One page of a listing and how many there are in all.
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: u64,
}

/// Where an incoming message belongs: one thread of one integration.
pub struct ThreadKey(String);

impl ThreadKey {
    /// The thread id if the sender has threads, else the user: a sender
    /// without threads gets one running conversation per user.
    pub fn new(webhook: &WebhookId, thread_id: Option<&str>, user_id: &str) -> Self {
        let (kind, value) = match thread_id {
            Some(t) => ("t", t),
            None => ("u", user_id),
        };
        let digest = Sha256::digest(format!("{kind}\0{value}").as_bytes());
        Self(format!("{webhook}:{}", hex::encode(&digest[..16])))
    }
}

#[derive(Clone)]
pub struct SessionStore {
    conn: ConnectionManager,
    keys: SessionKeys,
    stream: String,
    idle_timeout: Duration,
    ended_ttl: Duration,
    history_turns: usize,
}

impl SessionStore {
    pub fn new(
        conn: ConnectionManager,
        prefix: &KeyPrefix,
        idle_timeout: Duration,
        ended_ttl: Duration,
        history_turns: usize,
    ) -> Self {
        Self {
            conn,
            keys: SessionKeys::new(prefix),
            stream: QueueKeys::new(prefix, EndSession::QUEUE).stream,
            idle_timeout,
            ended_ttl,
            history_turns,
        }
    }

    /// The session of a thread: the active one, or a new one if it has
    /// none (or its last one ended).
    pub async fn open_thread(
        &self,
        thread: &ThreadKey,
        webhook: &WebhookId,
        user_id: &str,
    ) -> Result<SessionId, SessionError> {
        let new_id = SessionId::generate();
        // Longer than the idle timeout, so a live thread never loses its
        // session; refreshed on every message.
        let thread_ttl = self.idle_timeout.saturating_mul(2) + Duration::from_secs(3600);
        let (id, _created): (String, i64) = OPEN_THREAD
            .key(self.keys.thread(&thread.0))
            .key(self.keys.active())
            .key(self.keys.session(new_id.as_str()))
            .arg(now_ms())
            .arg(new_id.as_str())
            .arg(user_id)
            .arg(webhook.as_str())
            .arg(millis(thread_ttl))
            .arg(self.keys.session_prefix())
            .invoke_async(&mut self.conn.clone())
            .await?;
        SessionId::parse(&id).map_err(|e| malformed(e.to_string()))
    }

    /// A session named by the caller (`/chat/completions`): continued if
    /// active, started if new; an ended one is not reopened.
    pub async fn open_id(&self, id: &SessionId, user_id: &str) -> Result<(), SessionError> {
        let outcome: i64 = OPEN_ID
            .key(self.keys.session(id.as_str()))
            .key(self.keys.active())
            .arg(now_ms())
            .arg(id.as_str())
            .arg(user_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if outcome < 0 {
            return Err(SessionError::Ended(id.clone()));
        }
        Ok(())
    }

    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let fields: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.session(id.as_str()))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_session(id, &fields).map(Some)
    }

    /// The newest `limit` turns, oldest first.
    pub async fn turns(&self, id: &SessionId, limit: usize) -> Result<Vec<Turn>, SessionError> {
        let start = -isize::try_from(limit.max(1)).unwrap_or(isize::MAX);
        let raw: Vec<String> = self
            .conn
            .clone()
            .lrange(self.keys.turns(id.as_str()), start, -1)
            .await?;
        // A turn that does not decode (written by a future version) is
        // skipped rather than failing the whole conversation.
        Ok(raw
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    /// Adds a turn (once per job and role); on a session that is no longer
    /// active the history expires as an ended session's does.
    pub async fn record_turn(&self, id: &SessionId, turn: &Turn) -> Result<(), SessionError> {
        let _: i64 = RECORD_TURN
            .key(self.keys.turns(id.as_str()))
            .key(self.keys.session(id.as_str()))
            .arg(serde_json::to_string(turn)?)
            .arg(turn.job_id.as_str())
            .arg(self.history_turns)
            .arg(if turn.role == Role::User { "1" } else { "0" })
            .arg(turn.role.marker())
            .arg(millis(self.ended_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Marks an active session escalated, assigning an operator from
    /// `roster` unless it already has one (an empty roster leaves it
    /// unassigned). [`SessionError::Ended`] if it is not active.
    pub async fn escalate(
        &self,
        id: &SessionId,
        reason: &str,
        priority: Priority,
        roster: &[Operator],
        how: OperatorAssignment,
    ) -> Result<Escalation, SessionError> {
        let mut script = ESCALATE.prepare_invoke();
        script
            .key(self.keys.session(id.as_str()))
            .key(self.keys.escalated())
            .key(self.keys.escalated_assigned())
            .key(self.keys.escalated_unassigned())
            .key(self.keys.operators_load())
            .key(self.keys.operators_round_robin())
            .arg(now_ms())
            .arg(id.as_str())
            .arg(reason)
            .arg(priority.as_str())
            .arg(match how {
                OperatorAssignment::RoundRobin => "round_robin",
                OperatorAssignment::LeastLoaded => "least_loaded",
            });
        for op in roster {
            script.arg(&op.id).arg(&op.name);
        }
        let reply: Vec<String> = script.invoke_async(&mut self.conn.clone()).await?;
        match reply.as_slice() {
            [ok, at, op, name] if ok == "ok" => Ok(Escalation {
                reason: reason.to_owned(),
                priority,
                operator_id: Some(op.clone()).filter(|o| !o.is_empty()),
                operator_name: Some(name.clone()).filter(|n| !n.is_empty()),
                escalated_at: from_ms(at.parse().unwrap_or_else(|_| now_ms())),
            }),
            [ended] if ended == "ended" => Err(SessionError::Ended(id.clone())),
            other => Err(malformed(format!("escalate script replied {other:?}"))),
        }
    }

    /// Checks that an operator may write in the session now (it is active
    /// and escalated) and returns who writes: `operator` if given, else the
    /// assigned one. An unassigned session is assigned to `operator` (the
    /// first to reply takes it); without one it is
    /// [`SessionError::Unassigned`].
    pub async fn claim_for_reply(
        &self,
        id: &SessionId,
        operator: Option<&Operator>,
    ) -> Result<String, SessionError> {
        let reply: Vec<String> = CLAIM
            .key(self.keys.session(id.as_str()))
            .key(self.keys.escalated_assigned())
            .key(self.keys.escalated_unassigned())
            .key(self.keys.operators_load())
            .key(self.keys.active())
            .arg(now_ms())
            .arg(id.as_str())
            .arg(operator.map_or("", |o| o.id.as_str()))
            .arg(operator.map_or("", |o| o.name.as_str()))
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_slice() {
            [ok, op] if ok == "ok" => Ok(op.clone()),
            [state] => Err(self.refusal(id, state)),
            other => Err(malformed(format!("claim script replied {other:?}"))),
        }
    }

    /// Gives an escalated session back to the bot (its history stays).
    pub async fn hand_back(&self, id: &SessionId) -> Result<(), SessionError> {
        let state: String = HAND_BACK
            .key(self.keys.session(id.as_str()))
            .key(self.keys.escalated())
            .key(self.keys.escalated_assigned())
            .key(self.keys.escalated_unassigned())
            .key(self.keys.operators_load())
            .key(self.keys.active())
            .arg(now_ms())
            .arg(id.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        match state.as_str() {
            "ok" => Ok(()),
            other => Err(self.refusal(id, other)),
        }
    }

    /// The error for a script's refusal.
    fn refusal(&self, id: &SessionId, state: &str) -> SessionError {
        match state {
            "missing" => SessionError::Missing(id.clone()),
            "ended" => SessionError::Ended(id.clone()),
            "not_escalated" => SessionError::NotEscalated(id.clone()),
            "unassigned" => SessionError::Unassigned(id.clone()),
            other => malformed(format!("session script replied {other:?}")),
        }
    }

    /// One page of sessions. Reads only the page (and the index's size),
    /// however many sessions there are.
    pub async fn list(
        &self,
        filter: SessionFilter,
        offset: usize,
        limit: usize,
    ) -> Result<SessionPage, SessionError> {
        let (index, newest_first) = match filter {
            SessionFilter::Active => (self.keys.active(), true),
            SessionFilter::Escalated { assigned: None } => (self.keys.escalated(), false),
            SessionFilter::Escalated {
                assigned: Some(true),
            } => (self.keys.escalated_assigned(), false),
            SessionFilter::Escalated {
                assigned: Some(false),
            } => (self.keys.escalated_unassigned(), false),
        };
        let mut conn = self.conn.clone();
        let total: u64 = conn.zcard(&index).await?;
        if limit == 0 || offset as u64 >= total {
            return Ok(SessionPage {
                sessions: Vec::new(),
                total,
            });
        }
        let start = isize::try_from(offset).unwrap_or(isize::MAX);
        let stop = start.saturating_add(isize::try_from(limit).unwrap_or(isize::MAX) - 1);
        let ids: Vec<String> = if newest_first {
            conn.zrevrange(&index, start, stop).await?
        } else {
            conn.zrange(&index, start, stop).await?
        };
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.session(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut sessions = Vec::with_capacity(ids.len());
        for (raw, fields) in ids.iter().zip(hashes) {
            // An id that does not parse or whose hash is gone is not
            // listable; it is skipped rather than failing the page.
            let Ok(id) = SessionId::parse(raw) else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            sessions.push(parse_session(&id, &fields)?);
        }
        Ok(SessionPage { sessions, total })
    }

    /// Stores `record` as the feedback on the answer of `job`, replacing
    /// an earlier one; returns the one it replaced.
    pub async fn put_feedback(
        &self,
        id: &SessionId,
        job: &JobId,
        record: &str,
    ) -> Result<Option<String>, SessionError> {
        Ok(FEEDBACK
            .key(self.keys.feedback(id.as_str()))
            .key(self.keys.session(id.as_str()))
            .arg(job.as_str())
            .arg(record)
            .arg(millis(self.ended_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// The feedback on a session's answers: chat job id -> record.
    pub async fn feedback(&self, id: &SessionId) -> Result<HashMap<String, String>, SessionError> {
        Ok(self
            .conn
            .clone()
            .hgetall(self.keys.feedback(id.as_str()))
            .await?)
    }

    /// Ends an active session now and queues its `session.ended`. False if
    /// it was not active.
    pub async fn end(
        &self,
        id: &SessionId,
        reason: EndReason,
        trace_id: TraceId,
    ) -> Result<bool, SessionError> {
        self.end_if(id, reason, None, trace_id).await
    }

    /// Ends the sessions idle for longer than the idle timeout, at most
    /// `limit` per call; safe to run from every worker at once (each
    /// session is ended by exactly one of them). Returns how many ended.
    pub async fn sweep_idle(&self, limit: usize) -> Result<usize, SessionError> {
        let cutoff = now_ms().saturating_sub(millis(self.idle_timeout));
        let idle: Vec<String> = self
            .conn
            .clone()
            .zrangebyscore_limit(self.keys.active(), "-inf", cutoff, 0, limit as isize)
            .await?;
        let mut ended = 0;
        for raw in idle {
            let Ok(id) = SessionId::parse(&raw) else {
                // Not ours to interpret; drop it from the index so the
                // sweep does not trip on it forever.
                let _: i64 = self.conn.clone().zrem(self.keys.active(), &raw).await?;
                continue;
            };
            // Prefixed so a sweep's work can be found in logs by its trace.
            let trace_id = TraceId::parse(&format!("trace_sweep_{}", JobId::generate()))
                .unwrap_or_else(|_| TraceId::generate());
            if self
                .end_if(&id, EndReason::IdleTimeout, Some(cutoff), trace_id)
                .await?
            {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn end_if(
        &self,
        id: &SessionId,
        reason: EndReason,
        idle_cutoff: Option<i64>,
        trace_id: TraceId,
    ) -> Result<bool, SessionError> {
        let job = Envelope::new(
            EndSession::QUEUE,
            EndSession {
                session_id: id.clone(),
                reason,
            },
            trace_id,
        );
        let ended: i64 = END
            .key(self.keys.session(id.as_str()))
            .key(self.keys.active())
            .key(&self.stream)
            .key(self.keys.operators_load())
            .key(self.keys.escalated())
            .key(self.keys.escalated_assigned())
            .key(self.keys.escalated_unassigned())
            .arg(now_ms())
            .arg(reason.as_str())
            .arg(idle_cutoff.map(|c| c.to_string()).unwrap_or_default())
            .arg(serde_json::to_vec(&job)?)
            .arg(JOB_FIELD)
            .arg(millis(self.ended_ttl))
            .arg(id.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ended == 1)
    }

    /// Lets an ended session's history (and the feedback on it) expire
    /// with it.
    pub async fn expire_turns(&self, id: &SessionId) -> Result<(), SessionError> {
        let ttl = millis(self.ended_ttl);
        let _: () = redis::pipe()
            .pexpire(self.keys.turns(id.as_str()), ttl)
            .ignore()
            .pexpire(self.keys.feedback(id.as_str()), ttl)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Stores the answer of a `/chat/completions` job for its waiter.
    pub async fn put_result(&self, job: &JobId, result: &ChatResult) -> Result<(), SessionError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(
                self.keys.chat_result(job.as_str()),
                serde_json::to_string(result)?,
                RESULT_TTL_SECS,
            )
            .await?;
        Ok(())
    }

    pub async fn get_result(&self, job: &JobId) -> Result<Option<ChatResult>, SessionError> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(self.keys.chat_result(job.as_str()))
            .await?;
        raw.map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| malformed(e.to_string()))
    }
}

/// How long a `/chat/completions` answer waits to be collected.
pub const RESULT_TTL_SECS: u64 = 3600;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn parse_session(id: &SessionId, f: &HashMap<String, String>) -> Result<Session, SessionError> {
    let ms = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok());
    let text = |name: &str| f.get(name).filter(|v| !v.is_empty()).cloned();
    let status = match f.get("status").map(String::as_str) {
        Some("active") => SessionStatus::Active,
        Some("ended") => SessionStatus::Ended,
        other => {
            return Err(malformed(format!("session {id} has status {other:?}")));
        }
    };
    let escalated = f.get("escalated").is_some_and(|v| v == "1");
    let escalation = if escalated {
        Some(Escalation {
            reason: text("reason").unwrap_or_default(),
            priority: text("priority")
                .and_then(|p| Priority::parse(&p))
                .unwrap_or(Priority::Medium),
            operator_id: text("operator_id"),
            operator_name: text("operator_name"),
            escalated_at: from_ms(ms("escalated_at").unwrap_or_default()),
        })
    } else {
        None
    };
    let started = ms("started_at").unwrap_or_default();
    Ok(Session {
        session_id: id.clone(),
        user_id: text("user_id").unwrap_or_default(),
        webhook_id: text("webhook_id").and_then(|w| WebhookId::parse(&w).ok()),
        status,
        started_at: from_ms(started),
        last_activity_at: from_ms(ms("last_activity").unwrap_or(started)),
        ended_at: ms("ended_at").map(from_ms),
        end_reason: text("end_reason"),
        messages_count: f
            .get("messages_count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        escalated,
        escalation,
        handed_back_at: ms("handed_back_at").map(from_ms),
    })
}
