//! Chat APIs: ask a question and wait for the worker's
//! answer, list and look at sessions, escalate or end one, and the
//! hand-over: an operator replies, hands the session back to the bot, and
//! users rate answers.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use queue::{Envelope, Job};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::chat::escalation::Request;
use shared::chat::feedback::{Feedback, FeedbackRequest};
use shared::chat::handover::OperatorReply;
use shared::chat::sessions::{
    Escalation, Priority, Session, SessionError, SessionFilter, SessionStatus, Turn,
};
use shared::chat::stats::Rating;
use shared::events::catalog::EventMetadata;
use shared::events::payloads::SourceRef;
use shared::ids::{EventId, JobId, SessionId};
use shared::jobs::{ChatResult, EndReason, ProcessMessage};
use utoipa::{IntoParams, ToSchema};

use crate::http::body::Json;
use crate::http::envelope::{Accepted, Data, Paged, Pagination, Query};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::trace::current_trace_id;
use crate::state::AppState;

/// How often a waiting request looks for its answer.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Longest question accepted (characters).
const MAX_QUESTION_CHARS: usize = 16_000;

#[derive(Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub question: String,
    /// Continue this session (created if new); absent, a new one starts.
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Carried into the events; `correlation_id` lands in their metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// The answer, or (202) where to poll for it.
#[derive(Serialize, ToSchema)]
pub struct Completion {
    pub job_id: String,
    /// `done` (answered), `queued` (still running: poll
    /// `GET /chat/jobs/{job_id}`), `failed`, or `forwarded`: a person has
    /// this conversation (it was escalated), so the bot did not answer;
    /// the question went to the operator as `chat.message.forwarded` and
    /// their reply comes as `chat.operator.replied` (and in the session's
    /// history). A forwarded answer has no `answer`, `sources` or
    /// `confidence`; it has `escalated: true`, `operator_id` and `notice`.
    pub status: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub sources: Option<Vec<SourceRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `forwarded`: the operator who has the conversation (null while it
    /// waits for one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<Option<String>>,
    /// `forwarded`: a sentence for the user saying a person has the
    /// conversation, in the user's language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl Completion {
    fn from_stored(job_id: &JobId, stored: ChatResult) -> Self {
        let blank = |status: &str, session_id: SessionId| Self {
            job_id: job_id.to_string(),
            status: status.to_owned(),
            session_id: session_id.to_string(),
            answer: None,
            sources: None,
            confidence: None,
            escalated: None,
            processing_time_ms: None,
            error: None,
            operator_id: None,
            notice: None,
        };
        match stored {
            ChatResult::Queued { session_id } => blank("queued", session_id),
            ChatResult::Done {
                session_id,
                answer,
                sources,
                confidence,
                escalated,
                processing_time_ms,
            } => Self {
                answer: Some(answer),
                sources: Some(sources),
                confidence: Some(confidence),
                escalated: Some(escalated),
                processing_time_ms: Some(processing_time_ms),
                ..blank("done", session_id)
            },
            ChatResult::Forwarded {
                session_id,
                operator_id,
                notice,
                processing_time_ms,
            } => Self {
                escalated: Some(true),
                operator_id: Some(operator_id),
                notice: Some(notice),
                processing_time_ms: Some(processing_time_ms),
                ..blank("forwarded", session_id)
            },
            ChatResult::Failed { session_id, error } => Self {
                error: Some(error),
                ..blank("failed", session_id)
            },
        }
    }

    fn is_pending(&self) -> bool {
        self.status == "queued"
    }
}

fn respond(completion: Completion) -> Response {
    if completion.is_pending() {
        Accepted(completion).into_response()
    } else {
        Data(completion).into_response()
    }
}

fn field(path: &str, message: &str) -> ApiError {
    ApiError::validation(path, message)
}

/// Ask a question; the answer comes from a worker.
#[utoipa::path(post, path = "/chat/completions", tag = "chat",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "answered within chat.completion_wait", body = Completion),
        (status = 202, description = "still running: poll GET /chat/jobs/{job_id}", body = Completion),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn completions(
    State(state): State<AppState>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    let question = req.question.trim().to_owned();
    if question.is_empty() {
        return Err(field("question", "must not be empty"));
    }
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(field(
            "question",
            &format!("must be at most {MAX_QUESTION_CHARS} characters"),
        ));
    }
    let session_id = match req.session_id.as_deref() {
        Some(id) => SessionId::parse(id.trim()).map_err(|e| field("session_id", &e.to_string()))?,
        None => SessionId::generate(),
    };
    let user_id = req
        .user_id
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "anonymous".into());
    if user_id.chars().count() > 256 {
        return Err(field("user_id", "must be at most 256 characters"));
    }
    let correlation_id = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("correlation_id"))
        .and_then(Value::as_str)
        .map(|c| c.chars().take(256).collect());

    let services = &state.services;
    services.sessions.open_id(&session_id, &user_id).await?;
    let job = Envelope::new(
        ProcessMessage::QUEUE,
        ProcessMessage {
            session_id: session_id.clone(),
            user_id,
            user_name: None,
            message: question,
            webhook_id: None,
            webhook_event_id: None,
            correlation_id,
            channel: None,
            external_message_id: None,
            received_at: Utc::now(),
            reply_expected: true,
        },
        current_trace_id(),
    );
    let job_id = job.id.clone();
    // Written before the job exists, so a poll never mistakes a queued job
    // for an unknown one.
    services
        .sessions
        .put_result(&job_id, &ChatResult::Queued { session_id })
        .await?;
    services.queue.push(&[job]).await?;

    let deadline = Instant::now() + services.settings.chat.completion_wait;
    loop {
        let completion = load(&state, &job_id).await?;
        if !completion.is_pending() || Instant::now() >= deadline {
            return Ok(respond(completion));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn load(state: &AppState, job_id: &JobId) -> Result<Completion, ApiError> {
    let stored = state
        .services
        .sessions
        .get_result(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat job", job_id.as_str()))?;
    Ok(Completion::from_stored(job_id, stored))
}

/// The state (and, when done, the answer) of a `/chat/completions` job.
#[utoipa::path(get, path = "/chat/jobs/{job_id}", tag = "chat",
    params(("job_id" = String, Path)),
    responses((status = 200, body = Completion), (status = 202, body = Completion),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = JobId::parse(&id).map_err(|_| ApiError::not_found("chat job", &id))?;
    Ok(respond(load(&state, &job_id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: Session,
    /// The newest turns, oldest first (`user`, `assistant`, `operator`).
    pub history: Vec<TurnView>,
}

/// A turn, with the feedback on it when it is a rated answer.
#[derive(Serialize, ToSchema)]
pub struct TurnView {
    #[serde(flatten)]
    pub turn: Turn,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

fn session_id(id: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(id).map_err(|_| ApiError::not_found("session", id))
}

async fn load_session(state: &AppState, id: &str) -> Result<Session, ApiError> {
    state
        .services
        .sessions
        .get(&session_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("session", id))
}

async fn view(state: &AppState, session: Session) -> Result<SessionView, ApiError> {
    let services = &state.services;
    let turns = services
        .sessions
        .turns(&session.session_id, services.settings.chat.history_turns)
        .await?;
    let mut feedback = services.ratings.of_session(&session.session_id).await?;
    let history = turns
        .into_iter()
        .map(|turn| TurnView {
            feedback: match turn.role {
                shared::chat::sessions::Role::Assistant => feedback.remove(&turn.job_id),
                _ => None,
            },
            turn,
        })
        .collect();
    Ok(SessionView { session, history })
}

/// Which sessions `GET /chat/sessions` lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// `active` (default): every active session, most recently active
    /// first. `escalated`: the sessions a person has or that wait for one,
    /// longest waiting first.
    #[param(required = false, example = "escalated")]
    pub status: Option<String>,
    /// With `status=escalated`: `false` only those no operator has taken
    /// yet (the queue to pick from), `true` only those with an operator.
    #[param(required = false)]
    pub assigned: Option<String>,
}

impl SessionListQuery {
    fn filter(&self) -> Result<SessionFilter, ApiError> {
        let bad = |name: &str, message: &str| {
            ApiError::bad_request(
                "INVALID_QUERY",
                format!("query parameter '{name}' {message}"),
            )
            .with_details(json!({ "parameter": name }))
        };
        let assigned = match self.assigned.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(bad("assigned", "must be true or false")),
        };
        match (self.status.as_deref(), assigned) {
            (None | Some("active"), None) => Ok(SessionFilter::Active),
            (None | Some("active"), Some(_)) => Err(bad(
                "assigned",
                "applies to status=escalated only (active sessions are not assigned)",
            )),
            (Some("escalated"), assigned) => Ok(SessionFilter::Escalated { assigned }),
            (Some(_), _) => Err(bad("status", "must be active or escalated")),
        }
    }
}

/// Sessions: the active ones, or the escalated ones (the operators'
/// queue), optionally only those nobody has taken. Each page is read from
/// an index; nothing is scanned.
#[utoipa::path(get, path = "/chat/sessions", tag = "chat",
    params(SessionListQuery, Pagination),
    responses((status = 200, body = [Session]), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Query(query): Query<SessionListQuery>,
    page: Pagination,
) -> Result<Paged<Session>, ApiError> {
    let found = state
        .services
        .sessions
        .list(
            query.filter()?,
            usize::try_from(page.offset).unwrap_or(usize::MAX),
            page.limit as usize,
        )
        .await?;
    Ok(Paged::new(found.sessions, page, found.total))
}

/// A session with its history.
#[utoipa::path(get, path = "/chat/sessions/{session_id}", tag = "chat",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<SessionView>, ApiError> {
    let session = load_session(&state, &id).await?;
    Ok(Data(view(&state, session).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct EscalateRequest {
    pub reason: String,
    /// `low`, `medium` (default), `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<Priority>,
}

#[derive(Serialize, ToSchema)]
pub struct Escalated {
    pub session_id: String,
    pub escalated: bool,
    pub escalation: Escalation,
}

/// Hand a session to a human operator (emits `chat.escalated`): from now
/// on the bot does not answer it; the user's messages go to the operator
/// (`chat.message.forwarded`) until it is handed back. Escalating an
/// escalated session keeps its operator.
#[utoipa::path(post, path = "/chat/sessions/{session_id}/escalate", tag = "chat",
    params(("session_id" = String, Path)), request_body = EscalateRequest,
    responses((status = 200, body = Escalated), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn escalate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<EscalateRequest>,
) -> Result<Data<Escalated>, ApiError> {
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(field("reason", "must be 1-1000 characters"));
    }
    let session = load_session(&state, &id).await?;
    if session.status == SessionStatus::Ended {
        return Err(SessionError::Ended(session.session_id).into());
    }
    let escalation = state
        .services
        .escalator
        .escalate(
            &session,
            Request {
                reason,
                priority: req.priority.unwrap_or(Priority::Medium),
                last_message: None,
                sources: Vec::new(),
            },
            EventId::generate(),
            EventMetadata {
                trace_id: current_trace_id(),
                correlation_id: None,
            },
        )
        .await?;
    Ok(Data(Escalated {
        session_id: session.session_id.to_string(),
        escalated: true,
        escalation,
    }))
}

/// End a session (emits `session.ended`); ending an ended one changes
/// nothing.
#[utoipa::path(post, path = "/chat/sessions/{session_id}/end", tag = "chat",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn end_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<SessionView>, ApiError> {
    let session = load_session(&state, &id).await?;
    state
        .services
        .sessions
        .end(
            &session.session_id,
            EndReason::Requested,
            current_trace_id(),
        )
        .await?;
    let session = load_session(&state, &id).await?;
    Ok(Data(view(&state, session).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct ReplyRequest {
    /// What the operator tells the user (1-16000 characters).
    pub message: String,
    /// Who replies. Absent: the operator the session is assigned to. On an
    /// unassigned session it is required, and the session becomes theirs.
    #[serde(default)]
    pub operator_id: Option<String>,
}

/// A reply recorded in the history and queued for delivery.
#[derive(Serialize, ToSchema)]
pub struct ReplyQueued {
    pub session_id: String,
    /// The operator turn's id in the session history.
    pub reply_id: String,
    /// The `chat.operator.replied` event.
    pub event_id: String,
    pub operator_id: String,
    /// `queued`.
    pub status: &'static str,
    /// Deliveries queued, one per webhook subscribed to
    /// `chat.operator.replied`; 0 means no integration will show it.
    pub deliveries: usize,
}

/// An operator's reply to the user of an escalated session: recorded as an
/// `operator` turn and sent as `chat.operator.replied` to the webhooks
/// subscribed to it (the integration that owns the session shows it).
#[utoipa::path(post, path = "/chat/sessions/{session_id}/reply", tag = "chat",
    params(("session_id" = String, Path)), request_body = ReplyRequest,
    responses((status = 202, body = ReplyQueued), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "SESSION_ENDED, or SESSION_NOT_ESCALATED: the bot has this \
            session (escalate it first)", body = ErrorEnvelope),
        (status = 422, description = "a field breaks a rule; operator_id is required on a \
            session no operator has yet", body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn reply(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ReplyRequest>,
) -> Result<Accepted<ReplyQueued>, ApiError> {
    let session_id = session_id(&id)?;
    let reply = OperatorReply::check(&req.message, req.operator_id)?;
    let replied = state
        .services
        .handover
        .reply(
            &session_id,
            reply,
            EventMetadata {
                trace_id: current_trace_id(),
                correlation_id: None,
            },
        )
        .await?;
    Ok(Accepted(ReplyQueued {
        session_id: replied.session_id.to_string(),
        reply_id: replied.reply_id.to_string(),
        event_id: replied.event_id.to_string(),
        operator_id: replied.operator_id,
        status: "queued",
        deliveries: replied.deliveries,
    }))
}

/// Give an escalated session back to the bot: it answers the next message
/// again. The history stays; the operator's load drops.
#[utoipa::path(post, path = "/chat/sessions/{session_id}/handback", tag = "chat",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "SESSION_ENDED, or SESSION_NOT_ESCALATED: the bot has it \
            already", body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn hand_back(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Data<SessionView>, ApiError> {
    state.services.handover.hand_back(&session_id(&id)?).await?;
    let session = load_session(&state, &id).await?;
    Ok(Data(view(&state, session).await?))
}

/// Feedback stored on one answer.
#[derive(Serialize, ToSchema)]
pub struct FeedbackSaved {
    pub session_id: String,
    /// The chat job whose answer was rated.
    pub job_id: String,
    pub rating: Rating,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: String,
    /// Whether it replaced an earlier feedback on the same answer.
    pub replaced: bool,
}

/// Rate one answer of the session, up or down, with an optional comment.
/// Name the answer by `job_id`, by the `event_id` of its
/// `chat.response.generated`, or by `turn` (its index in the history);
/// a second feedback on the same answer replaces the first.
#[utoipa::path(post, path = "/chat/sessions/{session_id}/feedback", tag = "chat",
    params(("session_id" = String, Path)), request_body = FeedbackRequest,
    responses((status = 200, body = FeedbackSaved), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, description = "no such answer in this session, or a field breaks a rule",
            body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn feedback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<FeedbackRequest>,
) -> Result<Data<FeedbackSaved>, ApiError> {
    let rated = state.services.ratings.rate(&session_id(&id)?, req).await?;
    Ok(Data(FeedbackSaved {
        session_id: rated.session_id.to_string(),
        job_id: rated.job_id.to_string(),
        rating: rated.feedback.rating,
        comment: rated.feedback.comment,
        at: shared::time::rfc3339(rated.feedback.at),
        replaced: rated.replaced.is_some(),
    }))
}
