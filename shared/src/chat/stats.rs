//! Chat counters for `/metrics`: how chat turns end (answered, a person
//! offered, handed over), messages forwarded to operators, operator
//! replies, and feedback.
//!
//! Kept in one Redis hash (`P:metrics:chat`, see [`crate::keys`]) rather
//! than in each process's registry, so one scrape of the API covers every
//! worker, as the delivery latency histogram does.
//!
//! Counting is best effort and at least once. A counter that cannot be
//! written is logged and skipped, never an error: the answer or reply it
//! counts has already gone out, and failing (so the job or the client
//! tries again) would send it twice. A chat job redone after a crash
//! counts its turn again, which a rate over minutes does not notice and
//! exact de-duplication would cost a key per job.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::config::KeyPrefix;
use crate::keys;

/// How a chat turn the bot handled ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnOutcome {
    /// Answered with enough confidence.
    Answered,
    /// Answered, with an offer to talk to a person (the confidence band
    /// below "answered" and above "handed over", where the policy has one).
    OfferedPerson,
    /// Handed to a person: low confidence, or the user asked for one.
    HandedOver,
}

impl TurnOutcome {
    pub const ALL: [TurnOutcome; 3] = [
        TurnOutcome::Answered,
        TurnOutcome::OfferedPerson,
        TurnOutcome::HandedOver,
    ];

    /// The field in Redis, and the `outcome` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Answered => "answered",
            TurnOutcome::OfferedPerson => "offered_person",
            TurnOutcome::HandedOver => "handed_over",
        }
    }
}

/// A rating of one answer.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Rating::Up => "feedback_up",
            Rating::Down => "feedback_down",
        }
    }
}

const FORWARDED: &str = "forwarded";
const OPERATOR_REPLIES: &str = "operator_replies";

/// Every counter, read at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatCounts {
    pub answered: u64,
    pub offered_person: u64,
    pub handed_over: u64,
    pub forwarded: u64,
    pub operator_replies: u64,
    pub feedback_up: u64,
    pub feedback_down: u64,
}

impl ChatCounts {
    pub fn outcome(&self, outcome: TurnOutcome) -> u64 {
        match outcome {
            TurnOutcome::Answered => self.answered,
            TurnOutcome::OfferedPerson => self.offered_person,
            TurnOutcome::HandedOver => self.handed_over,
        }
    }

    pub fn feedback(&self, rating: Rating) -> u64 {
        match rating {
            Rating::Up => self.feedback_up,
            Rating::Down => self.feedback_down,
        }
    }
}

#[derive(Clone)]
pub struct ChatStats {
    conn: ConnectionManager,
    key: String,
}

impl ChatStats {
    pub fn new(conn: ConnectionManager, prefix: &KeyPrefix) -> Self {
        Self {
            conn,
            key: keys::chat_metrics(prefix),
        }
    }

    /// Counts how a chat turn ended.
    pub async fn record_outcome(&self, outcome: TurnOutcome) {
        self.incr(outcome.as_str()).await;
    }

    /// Counts a user message forwarded to an operator.
    pub async fn record_forwarded(&self) {
        self.incr(FORWARDED).await;
    }

    /// Counts an operator's reply.
    pub async fn record_operator_reply(&self) {
        self.incr(OPERATOR_REPLIES).await;
    }

    /// Counts a rating given to an answer. `replaced` is the rating it
    /// replaces: giving the same rating again (a retried request, a new
    /// comment) does not count twice; changing it counts the new one.
    pub async fn record_feedback(&self, rating: Rating, replaced: Option<Rating>) {
        if replaced != Some(rating) {
            self.incr(rating.field()).await;
        }
    }

    pub async fn read(&self) -> Result<ChatCounts, redis::RedisError> {
        let fields: std::collections::HashMap<String, u64> =
            self.conn.clone().hgetall(&self.key).await?;
        let get = |name: &str| fields.get(name).copied().unwrap_or(0);
        Ok(ChatCounts {
            answered: get(TurnOutcome::Answered.as_str()),
            offered_person: get(TurnOutcome::OfferedPerson.as_str()),
            handed_over: get(TurnOutcome::HandedOver.as_str()),
            forwarded: get(FORWARDED),
            operator_replies: get(OPERATOR_REPLIES),
            feedback_up: get(Rating::Up.field()),
            feedback_down: get(Rating::Down.field()),
        })
    }

    async fn incr(&self, field: &str) {
        let counted: Result<i64, _> = self.conn.clone().hincr(&self.key, field, 1).await;
        if let Err(error) = counted {
            tracing::warn!(%error, counter = field, "chat counter not updated");
        }
    }
}
